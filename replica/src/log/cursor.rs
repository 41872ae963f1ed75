//! Reading the log's records one at a time from an index on, in chunks, as
//! the proxy's feed and history do (the replication sender ships whole
//! chunks of bytes instead).

use std::io;

use bytes::Bytes;
use proto_common::record::{self, Decoded};
use proto_common::{LogIndex, Position};

use super::table::{LogReader, ReadOutcome};

/// How much of the log one read takes.
const CHUNK: usize = 1 << 20;

/// What the cursor found at its index.
#[derive(Debug)]
pub enum Next {
    /// A record: its position and payload.
    Record(Position, Bytes),
    /// Nothing is written there yet.
    End,
    /// The index was compacted away.
    Compacted,
}

/// Records from an index on.
#[derive(Debug)]
pub struct Cursor {
    reader: LogReader,
    next: LogIndex,
    buf: Bytes,
}

impl Cursor {
    pub fn new(reader: LogReader, from: LogIndex) -> Cursor {
        Cursor {
            reader,
            next: from,
            buf: Bytes::new(),
        }
    }

    /// The index of the record `next` returns.
    pub fn index(&self) -> LogIndex {
        self.next
    }

    /// The next record, reading more of the log when needed.
    pub fn read_next(&mut self) -> io::Result<Next> {
        if self.buf.is_empty() {
            match self.reader.read(self.next, CHUNK)? {
                ReadOutcome::Entries { bytes, .. } => self.buf = bytes,
                ReadOutcome::UpToDate => return Ok(Next::End),
                ReadOutcome::Compacted => return Ok(Next::Compacted),
            }
        }
        let Decoded::Record(r) = record::decode(&self.buf) else {
            return Err(io::Error::other(format!(
                "log record {} cannot be decoded",
                self.next
            )));
        };
        let len = r.encoded_len();
        let payload = self.buf.slice(record::HEADER_LEN..len);
        let position = r.position;
        self.buf = self.buf.slice(len..);
        self.next = position.index.next();
        Ok(Next::Record(position, payload))
    }
}

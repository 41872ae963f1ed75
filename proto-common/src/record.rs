//! The write-log record format, shared by the log on disk and the replication
//! stream (the active ships records byte for byte; the standby checks every
//! checksum before it writes a single one).
//!
//! ```text
//! 0        4        8                16               24
//! +--------+--------+----------------+----------------+------------------+
//! | len    | crc32c | epoch (u64 LE) | index (u64 LE) | payload (len)    |
//! +--------+--------+----------------+----------------+------------------+
//! ```
//!
//! `crc32c` covers `len`, `epoch`, `index` and the payload, so a flipped bit
//! anywhere in a record, its length included, is caught. Payloads are never
//! empty, which makes an all-zero header unambiguous: it is the zero-filled
//! space after the last record of a preallocated segment.

use bytes::BufMut;

use crate::ids::{Epoch, LogIndex, Position};

/// Bytes before the payload.
pub const HEADER_LEN: usize = 24;

/// Hard ceiling on one record's payload. Configured request limits are far
/// below it; this bound only stops a corrupt length from asking for gigabytes.
pub const MAX_PAYLOAD_LEN: usize = 64 * 1024 * 1024;

/// One decoded record, borrowing its payload from the buffer it was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    pub position: Position,
    pub payload: &'a [u8],
}

impl Record<'_> {
    /// Bytes this record takes in a log or a frame.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.payload.len()
    }
}

/// What [`decode`] found at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A whole, checksum-valid record.
    Record(Record<'a>),
    /// The buffer ends inside a record: a torn write at the end of a file, or
    /// more bytes still to come on a stream. Control flow, not a failure.
    Incomplete,
    /// An all-zero header: the unwritten, zero-filled rest of a segment.
    End,
    /// The bytes are not a valid record; the text says why.
    Corrupt(String),
}

/// Appends one record for `payload` at `position` to `buf`.
pub fn encode(buf: &mut impl BufMut, position: Position, payload: &[u8]) {
    assert!(
        !payload.is_empty() && payload.len() <= MAX_PAYLOAD_LEN,
        "record payload of {} bytes is outside 1..={MAX_PAYLOAD_LEN}",
        payload.len()
    );
    let len = (payload.len() as u32).to_le_bytes();
    let epoch = position.epoch.0.to_le_bytes();
    let index = position.index.0.to_le_bytes();
    let crc = checksum(&len, &epoch, &index, payload);
    buf.put_slice(&len);
    buf.put_u32_le(crc);
    buf.put_slice(&epoch);
    buf.put_slice(&index);
    buf.put_slice(payload);
}

fn checksum(len: &[u8], epoch: &[u8], index: &[u8], payload: &[u8]) -> u32 {
    let mut crc = crc32c::crc32c(len);
    crc = crc32c::crc32c_append(crc, epoch);
    crc = crc32c::crc32c_append(crc, index);
    crc32c::crc32c_append(crc, payload)
}

/// Decodes the record at the start of `buf`.
pub fn decode(buf: &[u8]) -> Decoded<'_> {
    if buf.len() < HEADER_LEN {
        return if buf.iter().all(|&b| b == 0) && !buf.is_empty() {
            Decoded::End
        } else {
            Decoded::Incomplete
        };
    }
    let header = &buf[..HEADER_LEN];
    if header.iter().all(|&b| b == 0) {
        return Decoded::End;
    }
    let len = u32::from_le_bytes(header[0..4].try_into().unwrap()) as usize;
    let crc = u32::from_le_bytes(header[4..8].try_into().unwrap());
    if len == 0 || len > MAX_PAYLOAD_LEN {
        return Decoded::Corrupt(format!(
            "record length {len} is outside 1..={MAX_PAYLOAD_LEN}"
        ));
    }
    if buf.len() < HEADER_LEN + len {
        return Decoded::Incomplete;
    }
    let payload = &buf[HEADER_LEN..HEADER_LEN + len];
    let actual = checksum(&header[0..4], &header[8..16], &header[16..24], payload);
    if actual != crc {
        return Decoded::Corrupt(format!(
            "checksum mismatch: stored {crc:#010x}, computed {actual:#010x}"
        ));
    }
    let epoch = u64::from_le_bytes(header[8..16].try_into().unwrap());
    let index = u64::from_le_bytes(header[16..24].try_into().unwrap());
    Decoded::Record(Record {
        position: Position {
            epoch: Epoch(epoch),
            index: LogIndex(index),
        },
        payload,
    })
}

/// Checks that `buf` holds whole, valid records that continue the log after
/// `prev` (each index exactly one more than the last, epochs never going
/// down). Returns the records' positions in order. Used by a standby on every
/// batch it receives, before anything is written.
pub fn check_batch(buf: &[u8], prev: Position) -> Result<Vec<(Position, u32)>, String> {
    let mut out = Vec::new();
    let mut offset = 0;
    let mut last = prev;
    while offset < buf.len() {
        match decode(&buf[offset..]) {
            Decoded::Record(r) => {
                check_successor(last, r.position)
                    .map_err(|e| format!("record at batch offset {offset}: {e}"))?;
                last = r.position;
                out.push((r.position, offset as u32));
                offset += r.encoded_len();
            }
            Decoded::Incomplete => {
                return Err(format!("batch ends inside a record at offset {offset}"))
            }
            Decoded::End => return Err(format!("zero header in batch at offset {offset}")),
            Decoded::Corrupt(why) => return Err(format!("record at batch offset {offset}: {why}")),
        }
    }
    Ok(out)
}

/// The rule that links consecutive records: the index goes up by exactly one
/// and the epoch never goes down.
pub fn check_successor(prev: Position, next: Position) -> Result<(), String> {
    if next.index != prev.index.next() {
        return Err(format!(
            "index {} does not follow {} (expected {})",
            next.index,
            prev.index,
            prev.index.next()
        ));
    }
    if next.epoch < prev.epoch {
        return Err(format!(
            "epoch {} is lower than the previous record's epoch {}",
            next.epoch, prev.epoch
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(pos: Position, payload: &[u8]) -> Vec<u8> {
        let mut buf = Vec::new();
        encode(&mut buf, pos, payload);
        buf
    }

    #[test]
    fn round_trip() {
        let buf = one(Position::new(3, 17), b"hello");
        assert_eq!(buf.len(), HEADER_LEN + 5);
        match decode(&buf) {
            Decoded::Record(r) => {
                assert_eq!(r.position, Position::new(3, 17));
                assert_eq!(r.payload, b"hello");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_truncation_is_incomplete() {
        let buf = one(Position::new(1, 1), b"some payload");
        for cut in 1..buf.len() {
            assert_eq!(decode(&buf[..cut]), Decoded::Incomplete, "cut at {cut}");
        }
    }

    #[test]
    fn every_flipped_bit_is_caught() {
        let buf = one(Position::new(2, 9), b"payload bytes");
        for byte in 0..buf.len() {
            for bit in 0..8 {
                let mut bad = buf.clone();
                bad[byte] ^= 1 << bit;
                match decode(&bad) {
                    Decoded::Record(r) => panic!("flip {byte}:{bit} accepted as {r:?}"),
                    Decoded::Corrupt(_) | Decoded::Incomplete => {}
                    Decoded::End => panic!("flip {byte}:{bit} read as end"),
                }
            }
        }
    }

    #[test]
    fn zero_header_is_end() {
        assert_eq!(decode(&[0u8; 100]), Decoded::End);
        assert_eq!(decode(&[0u8; 5]), Decoded::End);
        assert_eq!(decode(&[]), Decoded::Incomplete);
    }

    #[test]
    fn batches_must_continue_the_log() {
        let mut buf = one(Position::new(1, 5), b"a");
        buf.extend(one(Position::new(2, 6), b"b"));
        let got = check_batch(&buf, Position::new(1, 4)).unwrap();
        assert_eq!(got.len(), 2);
        assert!(check_batch(&buf, Position::new(1, 3)).is_err(), "gap");
        assert!(
            check_batch(&buf, Position::new(3, 4)).is_err(),
            "epoch regression"
        );
        assert!(check_batch(&buf[..buf.len() - 1], Position::new(1, 4)).is_err());
    }
}

//! Receiving a snapshot from the active without waiting for it three times.
//!
//! A snapshot arrives in chunks. One thread takes them in order, writes each
//! to the temporary file (starting the disk writeback every few megabytes,
//! so the final fsync has little left to do) and decodes the same bytes into
//! the state machine as they come. Network, disk and decoding overlap; when
//! the last chunk is in, the state is built and the file is nearly durable.
//! The snapshot's checksum is verified at the end as always; nothing is
//! installed from a snapshot that fails it.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::path::PathBuf;

use bytes::{Buf, Bytes};
use tokio::sync::{mpsc, oneshot};

use crate::snapshot::{self, EpochRuns};
use crate::state::KvState;

/// Start writing back dirty pages after this many bytes.
const WRITEBACK_EVERY: u64 = 32 << 20;

/// A snapshot being received.
pub struct Incoming {
    chunks: mpsc::Sender<Bytes>,
    done: oneshot::Receiver<io::Result<(KvState, EpochRuns)>>,
}

impl Incoming {
    /// Starts the writing-and-decoding thread for a snapshot going to `tmp`.
    pub fn start(tmp: PathBuf) -> io::Result<Incoming> {
        let file = File::create(&tmp)?;
        let (chunks, rx) = mpsc::channel(64);
        let (done_tx, done) = oneshot::channel();
        std::thread::Builder::new()
            .name("snapshot-install".into())
            .spawn(move || {
                let name = tmp.display().to_string();
                let result = receive(file, rx, &name);
                let _ = done_tx.send(result);
            })?;
        Ok(Incoming { chunks, done })
    }

    /// Hands over the next chunk; waits if the disk falls behind.
    pub async fn push(&self, chunk: Bytes) -> Result<(), String> {
        self.chunks
            .send(chunk)
            .await
            .map_err(|_| "the snapshot writer stopped (see the error it reports)".to_string())
    }

    /// All chunks are in: waits for the state and the durable file.
    pub async fn finish(self) -> io::Result<(KvState, EpochRuns)> {
        drop(self.chunks);
        self.done
            .await
            .map_err(|_| io::Error::other("the snapshot writer thread died"))?
    }
}

fn receive(file: File, rx: mpsc::Receiver<Bytes>, name: &str) -> io::Result<(KvState, EpochRuns)> {
    let mut reader = ChunkReader {
        rx,
        current: Bytes::new(),
        file,
        written: 0,
        kicked: 0,
    };
    let decoded = snapshot::decode(&mut reader, name)?;
    reader.file.flush()?;
    reader.file.sync_all()?;
    Ok(decoded)
}

/// Reads the chunks in order, writing each to the file as it is taken.
struct ChunkReader {
    rx: mpsc::Receiver<Bytes>,
    current: Bytes,
    file: File,
    written: u64,
    /// Offset up to which writeback was started.
    kicked: u64,
}

impl ChunkReader {
    fn next_chunk(&mut self) -> io::Result<bool> {
        let Some(chunk) = self.rx.blocking_recv() else {
            return Ok(false);
        };
        self.file.write_all(&chunk)?;
        self.written += chunk.len() as u64;
        if self.written - self.kicked >= WRITEBACK_EVERY {
            // SAFETY: a valid fd and a byte range of it; SYNC_FILE_RANGE_WRITE
            // only starts writeback and never blocks for long.
            unsafe {
                libc::sync_file_range(
                    self.file.as_raw_fd(),
                    self.kicked as i64,
                    (self.written - self.kicked) as i64,
                    libc::SYNC_FILE_RANGE_WRITE,
                );
            }
            self.kicked = self.written;
        }
        self.current = chunk;
        Ok(true)
    }
}

impl Read for &mut ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            if !self.next_chunk()? {
                return Ok(0);
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current.advance(n);
        Ok(n)
    }
}

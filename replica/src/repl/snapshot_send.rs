//! Sending a snapshot without reading one from disk.
//!
//! The active clones its state at the applied position (O(1): the map is
//! persistent) and a blocking thread encodes that clone straight into
//! chunks, in the snapshot file's format, while the connection's task
//! frames them. The standby gets the newest state there is, so only what
//! is written during the transfer follows as log — not everything since
//! the last periodic snapshot — and the active's disk is not touched.
//! Writers go on meanwhile; the clone shares the map's unchanged parts.

use std::io::{self, Write};

use bytes::{Bytes, BytesMut};
use proto_common::Position;
use tokio::sync::mpsc;

use crate::node::Node;
use crate::snapshot::{self, CHUNK};

/// A snapshot being encoded for one standby.
pub struct Outgoing {
    /// The applied position the snapshot holds.
    pub position: Position,
    /// Its exact encoded size, announced before the first chunk.
    pub size: u64,
    chunks: mpsc::Receiver<io::Result<Bytes>>,
}

impl Outgoing {
    /// Clones the applied state and starts encoding it.
    pub fn start(node: &Node) -> io::Result<Outgoing> {
        let state = node.kv.read().clone();
        let position = state.applied();
        let epochs = node.reader.epochs_upto(position.index);
        let size = snapshot::encoded_len(&state, epochs.len());
        // Two chunks ahead: enough to keep the socket busy, little memory.
        let (tx, chunks) = mpsc::channel(2);
        std::thread::Builder::new()
            .name("snapshot-send".into())
            .spawn(move || {
                let mut out = ChunkWriter {
                    buf: BytesMut::with_capacity(CHUNK),
                    tx,
                };
                if let Err(e) = snapshot::encode(&mut out, position, &epochs, state.map()) {
                    // Nobody to tell if the connection already ended.
                    let _ = out.tx.blocking_send(Err(e));
                }
            })?;
        Ok(Outgoing {
            position,
            size,
            chunks,
        })
    }

    /// The next chunk; `None` once the snapshot is complete.
    pub async fn next(&mut self) -> Option<io::Result<Bytes>> {
        self.chunks.recv().await
    }
}

/// Cuts what is written into chunks and hands each over when full.
struct ChunkWriter {
    buf: BytesMut,
    tx: mpsc::Sender<io::Result<Bytes>>,
}

impl ChunkWriter {
    fn send(&mut self) -> io::Result<()> {
        let chunk = std::mem::replace(&mut self.buf, BytesMut::with_capacity(CHUNK)).freeze();
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the standby connection ended"))
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.send()?;
        }
        Ok(())
    }
}

//! The bytes on their way to one standby, shared by the connection's task
//! and the thread that writes the log.
//!
//! Once a standby has caught up, the log's writer ships every new batch to
//! it itself, right after the `write()` and before its fsync: the frame goes
//! onto the socket without waking the connection's task — one thread switch
//! fewer on the path every synchronous write waits for.
//!
//! Every frame, live ones from the writer and catch-up, snapshot and commit
//! frames from the task, is encoded into one buffer under one lock and
//! written from its front, so frames never interleave and never reorder.
//! What the socket does not take at once waits for the task, which sleeps
//! until the socket is writable. Past [`LIVE_LIMIT`] buffered bytes the
//! writer stops shipping, and the task catches the standby up from disk as
//! for any standby that fell behind.

use std::io;
use std::sync::{Arc, Weak};

use bytes::{Buf, BytesMut};
use parking_lot::{Mutex, MutexGuard};
use proto_common::tls::MaybeTls;
use proto_common::wire::{Envelope, Frame, ReplCodec};
use proto_common::{Epoch, LogIndex, NodeId, Position};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::{watch, Notify};
use tokio_util::codec::Encoder;

use super::error::ReplError;
use super::transport::ReplWrite;
use super::Replication;
use crate::commit::{Shipper, WrittenBatch};

/// Buffered bytes beyond which the writer stops shipping live batches.
const LIVE_LIMIT: usize = 8 << 20;

/// What has been framed for the standby, and where the stream stands.
pub struct State {
    /// Encoded frames not yet taken by the socket.
    buf: BytesMut,
    /// Whether the log's writer ships new batches itself.
    live: bool,
    /// The last entry framed (the `prev` of the next `Entries` frame).
    pub prev: Position,
    /// The next index to frame.
    pub next: LogIndex,
    /// The highest commit index framed.
    pub sent_commit: LogIndex,
    /// Why the socket failed, once it has.
    error: Option<ReplError>,
    /// The connection ended: frame nothing more.
    closed: bool,
}

/// Where the framed bytes go.
enum Sink {
    /// The socket itself: whoever frames writes what it takes at once.
    Plain(OwnedWriteHalf),
    /// A TLS session, written by a task of its own: `pump` wakes it when
    /// bytes are buffered, it signals `drained` after each write.
    Pumped { pump: Arc<Notify>, drained: Notify },
}

/// One standby connection's outgoing stream.
pub struct Outbox {
    sink: Sink,
    state: Mutex<State>,
    /// Wakes the task from the writer: bytes were left over, live shipping
    /// stopped, or the socket failed.
    wake: Notify,
    epoch: Epoch,
    codec: ReplCodec,
    commit: watch::Receiver<LogIndex>,
    repl: Arc<Replication>,
    id: NodeId,
}

impl Outbox {
    pub fn new(
        sock: ReplWrite,
        epoch: Epoch,
        codec: ReplCodec,
        repl: Arc<Replication>,
        id: NodeId,
        prev: Position,
        next: LogIndex,
    ) -> Arc<Outbox> {
        let commit = repl.node.commit.commit_index();
        let (sink, tls) = match sock {
            ReplWrite::Plain(w) => (Sink::Plain(w), None),
            ReplWrite::Tls(w) => {
                let pump = Arc::new(Notify::new());
                let sink = Sink::Pumped {
                    pump: pump.clone(),
                    drained: Notify::new(),
                };
                (sink, Some((w, pump)))
            }
        };
        let outbox = Arc::new(Outbox {
            sink,
            state: Mutex::new(State {
                buf: BytesMut::with_capacity(64 << 10),
                live: false,
                prev,
                next,
                sent_commit: LogIndex::ZERO,
                error: None,
                closed: false,
            }),
            wake: Notify::new(),
            epoch,
            codec,
            commit,
            repl,
            id,
        });
        if let Some((w, wake)) = tls {
            tokio::spawn(pump(Arc::downgrade(&outbox), w, wake));
        }
        outbox
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock()
    }

    /// The commit index now (copied out: see `commit_index_now`).
    pub fn commit_now(&self) -> LogIndex {
        *self.commit.borrow()
    }

    /// Frames `frame` behind everything framed before and writes what the
    /// socket takes now.
    pub fn push(&self, st: &mut State, frame: Frame) -> Result<(), ReplError> {
        if let Some(e) = &st.error {
            return Err(e.clone());
        }
        let envelope = Envelope {
            epoch: self.epoch,
            frame,
        };
        if let Err(e) = self.codec.clone().encode(envelope, &mut st.buf) {
            let why = ReplError::send("framing for the standby", e);
            st.error = Some(why.clone());
            return Err(why);
        }
        self.flush(st);
        Ok(())
    }

    /// Writes buffered bytes until the socket is full or the buffer empty
    /// (or, in TLS, wakes the task that writes them).
    fn flush(&self, st: &mut State) {
        let sock = match &self.sink {
            Sink::Plain(sock) => sock,
            Sink::Pumped { pump, .. } => {
                if !st.buf.is_empty() {
                    pump.notify_one();
                }
                return;
            }
        };
        while !st.buf.is_empty() && st.error.is_none() {
            match sock.try_write(&st.buf) {
                Ok(0) => st.error = Some(ReplError::Closed("the standby closed the connection")),
                Ok(n) => st.buf.advance(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => st.error = Some(ReplError::send("send", e.into())),
            }
        }
    }

    /// Starts live shipping if the task has framed everything the log holds;
    /// returns whether shipping is live. Called with the lock held, so no
    /// batch written meanwhile is missed: the log is appended before its
    /// batch is shipped, so a batch not yet in `last` reaches
    /// [`Shipper::ship`] after this.
    pub fn go_live_if_caught_up(&self, st: &mut State, last: LogIndex) -> bool {
        if !st.live && st.error.is_none() && !st.closed && st.next > last {
            st.live = true;
            self.repl.followers.streaming(&self.id, true);
        }
        st.live
    }

    /// Whether there are bytes the socket has not taken, or it failed.
    pub fn check(&self, st: &State) -> Result<bool, ReplError> {
        match &st.error {
            Some(e) => Err(e.clone()),
            None => Ok(!st.buf.is_empty()),
        }
    }

    /// Waits until at most `limit` bytes are buffered.
    pub async fn drain_to(&self, limit: usize) -> Result<(), ReplError> {
        loop {
            {
                let mut st = self.lock();
                self.flush(&mut st);
                if let Some(e) = &st.error {
                    return Err(e.clone());
                }
                if st.buf.len() <= limit {
                    return Ok(());
                }
            }
            self.writable().await?;
        }
    }

    /// Waits until the socket can take bytes (in TLS: until the task
    /// wrote what it had).
    async fn writable(&self) -> Result<(), ReplError> {
        match &self.sink {
            Sink::Plain(sock) => sock
                .writable()
                .await
                .map_err(|e| ReplError::send("send", e.into())),
            Sink::Pumped { drained, .. } => {
                drained.notified().await;
                Ok(())
            }
        }
    }

    /// Whether bytes left in the buffer need the connection's task (a full
    /// socket); in TLS the writing task takes them.
    fn backlog(&self, st: &State) -> bool {
        matches!(self.sink, Sink::Plain(_)) && !st.buf.is_empty()
    }

    /// Waits for a wake-up from the writer.
    pub async fn woken(&self) {
        self.wake.notified().await
    }

    /// Frames nothing more (the connection is ending).
    pub fn close(&self) {
        let mut st = self.lock();
        st.closed = true;
        st.live = false;
        drop(st);
        if let Sink::Pumped { pump, .. } = &self.sink {
            pump.notify_one();
        }
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        if let Sink::Pumped { pump, .. } = &self.sink {
            pump.notify_one();
        }
    }
}

/// Writes a TLS connection's buffered frames, in order, until the
/// connection closes or fails.
async fn pump(
    outbox: Weak<Outbox>,
    mut sock: tokio::io::WriteHalf<MaybeTls<TcpStream>>,
    wake: Arc<Notify>,
) {
    loop {
        wake.notified().await;
        loop {
            let Some(outbox) = outbox.upgrade() else {
                return;
            };
            let chunk = {
                let mut st = outbox.lock();
                if st.closed || st.error.is_some() {
                    return;
                }
                if st.buf.is_empty() {
                    break;
                }
                st.buf.split().freeze()
            };
            let written = async {
                sock.write_all(&chunk).await?;
                sock.flush().await
            }
            .await;
            if let Err(e) = written {
                outbox.lock().error = Some(ReplError::send("send", e.into()));
                outbox.wake.notify_one();
            }
            let Sink::Pumped { drained, .. } = &outbox.sink else {
                return;
            };
            drained.notify_one();
        }
    }
}

impl Shipper for Outbox {
    fn ship(&self, batch: &WrittenBatch) {
        let mut st = self.lock();
        if !st.live || st.closed || batch.last.index < st.next {
            return;
        }
        if batch.first.index != st.next || st.buf.len() > LIVE_LIMIT {
            // A gap, or the standby stopped draining: the task catches it
            // up from disk.
            st.live = false;
            drop(st);
            self.repl.followers.streaming(&self.id, false);
            self.wake.notify_one();
            return;
        }
        let commit = self.commit_now();
        let frame = Frame::Entries {
            prev: st.prev,
            commit,
            records: batch.bytes.clone(),
        };
        if self.push(&mut st, frame).is_err() {
            st.live = false;
            self.wake.notify_one();
            return;
        }
        if self.backlog(&st) {
            // The socket is full: the task waits for it to drain.
            self.wake.notify_one();
        }
        st.prev = batch.last;
        st.next = batch.last.index.next();
        st.sent_commit = st.sent_commit.max(commit);
        drop(st);
        self.repl.followers.shipped(
            &self.id,
            batch.last.index,
            batch.bytes.len(),
            batch.written_at,
        );
    }
}

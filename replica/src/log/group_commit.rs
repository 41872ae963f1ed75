//! Group commit: one thread owns the [`Log`] and turns whatever writes are
//! waiting into one append and one `fdatasync`.
//!
//! There is no timer. The thread blocks for the first request, then takes
//! everything else already queued: requests that arrive while an fsync runs
//! form the next batch, so batches grow with load and a lone writer waits
//! for nothing. Each batch is handed to replication right after the
//! `write()` and *before* the fsync, so the standbys' fsyncs overlap ours.
//!
//! Which epoch client writes may be appended in is the role's to say
//! (`role::Roles`): a write stamped at intake with epoch E is appended only
//! while the published role is the active in E and not handing over, read
//! under the same lock the append takes. [`LogRequest::Barrier`] lets a
//! role change wait until every append that began before it has ended.

use std::io;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use proto_common::record;
use proto_common::{Epoch, LogIndex, Position};
use tokio::sync::{oneshot, watch};

use super::writer::Log;
use crate::command::Command;
use crate::pending::{PendingEntry, Responder, WriteError};
use crate::role::RoleView;

/// Largest batch one fsync covers; bounds the latency a huge burst adds.
const MAX_BATCH_BYTES: usize = 4 << 20;

/// What the group-commit thread reports, in order, for each batch.
pub trait CommitSink: Send + Sync + 'static {
    /// Entries got their positions and are about to be written.
    fn registered(&self, entries: Vec<PendingEntry>);
    /// A batch was written (page cache, not yet durable): ship it now.
    fn written(&self, batch: &Bytes, first: Position, last: Position);
    /// Everything up to `last` is durable on this replica.
    fn durable(&self, last: Position, batch_entries: usize);
    /// The log failed; nothing more will be written.
    fn failed(&self, why: &str);
}

/// Requests to the group-commit thread.
pub enum LogRequest {
    /// A client write on the active, stamped at intake with the epoch the
    /// active was serving; refused if the role no longer writes that epoch.
    Write {
        epoch: Epoch,
        command: Command,
        payload: Bytes,
        responder: Responder,
        received: Instant,
    },
    /// Opens `epoch` for a new term: appends a `Noop` entry at its first
    /// index (unless the log already ends in it) and makes it durable.
    OpenEpoch {
        epoch: Epoch,
        done: oneshot::Sender<io::Result<Position>>,
    },
    /// Answers once every append that began before it has ended (after a
    /// role change: later appends see the new role).
    Barrier { done: oneshot::Sender<()> },
    /// Cut every entry after the index; returns the raw records cut.
    Truncate {
        after: LogIndex,
        done: oneshot::Sender<io::Result<Vec<u8>>>,
    },
    /// Delete segments covered by a durable snapshot, keeping every entry
    /// from `keep_from` on (a standby still needs them).
    Compact {
        snapshot: Position,
        keep_from: Option<LogIndex>,
        done: oneshot::Sender<io::Result<usize>>,
    },
    /// Drop everything; continue right after an installed snapshot whose
    /// epoch history is `history`.
    Reset {
        base: Position,
        history: Vec<(LogIndex, Epoch)>,
        done: oneshot::Sender<io::Result<()>>,
    },
}

/// The group-commit thread is gone (the log failed or the node is closing).
#[derive(Debug)]
pub struct Stopped;

/// Handle for sending requests to the thread.
#[derive(Clone)]
pub struct GroupCommit {
    tx: Sender<LogRequest>,
    direct: DirectLog,
}

impl GroupCommit {
    /// Starts the thread; it runs until every handle is dropped. `role`
    /// says which epoch client writes may be appended in.
    pub fn start(
        log: Log,
        sink: Arc<dyn CommitSink>,
        role: watch::Receiver<Arc<RoleView>>,
    ) -> io::Result<GroupCommit> {
        let (tx, rx) = mpsc::channel();
        let shared = Arc::new(Mutex::new(Shared { log, role }));
        let direct = DirectLog {
            shared: shared.clone(),
            sink: sink.clone(),
        };
        thread::Builder::new()
            .name("group-commit".into())
            .spawn(move || Worker::new(shared, sink).run(rx))?;
        Ok(GroupCommit { tx, direct })
    }

    /// Appends on the caller's thread (see [`DirectLog`]).
    pub fn direct(&self) -> &DirectLog {
        &self.direct
    }

    /// Queues a request. Fails only when the thread has stopped.
    pub fn send(&self, req: LogRequest) -> Result<(), Stopped> {
        self.tx.send(req).map_err(|_| Stopped)
    }
}

/// What the log's writers share: the log, and the role that says which
/// epoch client writes may be appended in.
pub struct Shared {
    log: Log,
    role: watch::Receiver<Arc<RoleView>>,
}

impl Shared {
    /// Whether a client write stamped with `epoch` may be appended now.
    fn takes(&self, epoch: Epoch) -> bool {
        self.role.borrow().state.writable_epoch() == Some(epoch) && self.log.failure().is_none()
    }
}

/// Appends replicated records on the caller's thread.
///
/// A standby's receiver appends what the active sent, fsyncs and acks it
/// without handing the batch to the group-commit thread and waiting to be
/// woken: two thread switches fewer on the path every synchronous write
/// waits for. The log is shared with the thread behind a mutex; on a
/// standby the thread takes no client writes, so the two never contend.
#[derive(Clone)]
pub struct DirectLog {
    shared: Arc<Mutex<Shared>>,
    sink: Arc<dyn CommitSink>,
}

impl DirectLog {
    /// Appends checked records that continue the log, makes them durable,
    /// and reports them to the sink. Blocks for the fsync.
    pub fn append(
        &self,
        bytes: &Bytes,
        entries: &[(Position, u32)],
        pending: Vec<PendingEntry>,
    ) -> io::Result<Position> {
        let mut shared = self.shared.lock();
        let log = &mut shared.log;
        let expected = log.last().index.next();
        match entries.first() {
            None => return Ok(log.last()),
            Some((first, _)) if first.index != expected => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("records start at {first}, the log continues at {expected}"),
                ))
            }
            Some(_) => {}
        }
        commit_batch(log, &*self.sink, bytes, entries, pending)
    }

    /// The last entry written.
    pub fn last(&self) -> Position {
        self.shared.lock().log.last()
    }

    /// Whether a batch is being written right now (a hint: it may change
    /// at once).
    pub fn is_busy(&self) -> bool {
        self.shared.is_locked()
    }

    /// Commits one client write on the caller's thread if no batch is being
    /// written right now; otherwise hands the request back (send it to the
    /// group-commit thread, which batches it with the others waiting).
    ///
    /// A lone writer then pays for no thread switch at all: it appends,
    /// fsyncs and is answered on its own thread. Under load the log is
    /// almost always busy and writes form batches on the thread as before.
    /// Call it where blocking for an fsync is allowed (`block_in_place`).
    pub fn try_write_inline(&self, req: LogRequest) -> Result<(), Box<LogRequest>> {
        let Some(mut shared) = self.shared.try_lock() else {
            return Err(Box::new(req));
        };
        let LogRequest::Write {
            epoch,
            command,
            payload,
            responder,
            received,
        } = req
        else {
            return Err(Box::new(req));
        };
        if !shared.takes(epoch) {
            let _ = responder.send(Err(WriteError::NotWritable(format!(
                "this replica stopped taking writes in epoch {epoch}"
            ))));
            return Ok(());
        }
        let log = &mut shared.log;
        let pos = Position {
            epoch,
            index: log.last().index.next(),
        };
        let mut buf = BytesMut::with_capacity(record::HEADER_LEN + payload.len());
        record::encode(&mut buf, pos, &payload);
        let pending = PendingEntry {
            position: pos,
            command,
            responder: Some(responder),
            received: Some(received),
        };
        let _ = commit_batch(log, &*self.sink, &buf.freeze(), &[(pos, 0)], vec![pending]);
        Ok(())
    }
}

/// Appends, ships, syncs and reports one batch: the order every batch
/// follows, whoever writes it.
fn commit_batch(
    log: &mut Log,
    sink: &dyn CommitSink,
    bytes: &Bytes,
    entries: &[(Position, u32)],
    pending: Vec<PendingEntry>,
) -> io::Result<Position> {
    let first = entries[0].0;
    let last = entries[entries.len() - 1].0;
    sink.registered(pending);
    if let Err(e) = log.append(bytes, entries) {
        sink.failed(&e.to_string());
        return Err(e);
    }
    sink.written(bytes, first, last);
    if let Err(e) = log.sync() {
        sink.failed(&e.to_string());
        return Err(e);
    }
    sink.durable(last, entries.len());
    Ok(last)
}

struct Worker {
    shared: Arc<Mutex<Shared>>,
    sink: Arc<dyn CommitSink>,
    buf: BytesMut,
}

impl Worker {
    fn new(shared: Arc<Mutex<Shared>>, sink: Arc<dyn CommitSink>) -> Worker {
        Worker {
            shared,
            sink,
            buf: BytesMut::with_capacity(MAX_BATCH_BYTES),
        }
    }

    fn run(mut self, rx: Receiver<LogRequest>) {
        let mut carry: Option<LogRequest> = None;
        loop {
            let first = match carry.take() {
                Some(r) => r,
                None => match rx.recv() {
                    Ok(r) => r,
                    Err(_) => return,
                },
            };
            match first {
                LogRequest::Write { .. } => {
                    carry = self.batch(first, &rx);
                }
                control => self.control(control),
            }
        }
    }

    /// Appends `first` and every data request already queued behind it, then
    /// syncs once. Returns a control request met while draining, to be run
    /// next (so ordering with respect to control requests is preserved).
    fn batch(&mut self, first: LogRequest, rx: &Receiver<LogRequest>) -> Option<LogRequest> {
        let shared = self.shared.clone();
        let mut shared = shared.lock();
        self.buf.clear();
        let mut entries: Vec<(Position, u32)> = Vec::new();
        let mut pending: Vec<PendingEntry> = Vec::new();
        let mut last = shared.log.last();
        let mut next = Some(first);
        let mut carry = None;
        while let Some(req) = next.take() {
            match req {
                LogRequest::Write {
                    epoch,
                    command,
                    payload,
                    responder,
                    received,
                } => {
                    if !shared.takes(epoch) {
                        let _ = responder.send(Err(WriteError::NotWritable(format!(
                            "this replica stopped taking writes in epoch {epoch}"
                        ))));
                    } else {
                        let pos = Position {
                            epoch,
                            index: last.index.next(),
                        };
                        entries.push((pos, self.buf.len() as u32));
                        record::encode(&mut self.buf, pos, &payload);
                        pending.push(PendingEntry {
                            position: pos,
                            command,
                            responder: Some(responder),
                            received: Some(received),
                        });
                        last = pos;
                    }
                }
                control => {
                    carry = Some(control);
                    break;
                }
            }
            if self.buf.len() >= MAX_BATCH_BYTES {
                break;
            }
            next = rx.try_recv().ok();
        }
        if entries.is_empty() {
            return carry;
        }
        let bytes = self.buf.split().freeze();
        let _ = commit_batch(&mut shared.log, &*self.sink, &bytes, &entries, pending);
        carry
    }

    fn control(&mut self, req: LogRequest) {
        let shared = self.shared.clone();
        let mut shared = shared.lock();
        let log = &mut shared.log;
        match req {
            LogRequest::OpenEpoch { epoch, done } => {
                let _ = done.send(self.open_epoch(log, epoch));
            }
            LogRequest::Barrier { done } => {
                let _ = done.send(());
            }
            LogRequest::Truncate { after, done } => {
                let _ = done.send(log.truncate_after(after));
            }
            LogRequest::Compact {
                snapshot,
                keep_from,
                done,
            } => {
                let _ = done.send(log.compact(snapshot, keep_from));
            }
            LogRequest::Reset {
                base,
                history,
                done,
            } => {
                let _ = done.send(log.reset(base, history));
            }
            LogRequest::Write { .. } => unreachable!("writes are batched"),
        }
    }

    /// Opens `epoch`: writes a `Noop` at its first index and waits until it
    /// is durable, so the new epoch is visible in this replica's position
    /// at once.
    fn open_epoch(&mut self, log: &mut Log, epoch: Epoch) -> io::Result<Position> {
        let last = log.last();
        if epoch < last.epoch {
            return Err(io::Error::other(format!(
                "cannot write in epoch {epoch}: the log already holds epoch {}",
                last.epoch
            )));
        }
        if last.epoch == epoch {
            return Ok(last);
        }
        let pos = Position {
            epoch,
            index: last.index.next(),
        };
        self.buf.clear();
        record::encode(&mut self.buf, pos, &Command::Noop.encode());
        let bytes = self.buf.split().freeze();
        let noop = PendingEntry {
            position: pos,
            command: Command::Noop,
            responder: None,
            received: None,
        };
        commit_batch(log, &*self.sink, &bytes, &[(pos, 0)], vec![noop])
    }
}

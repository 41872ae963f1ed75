//! The commit rule and visibility (DESIGN.md, "Commit rule and the sync set").
//!
//! An entry is **committed** when it is durable on this replica and, on the
//! active, acknowledged by every member of the sync set (on a standby: when
//! the active says so in its frames). Only committed entries are applied to
//! the readable state and only then is the client answered: a reader never
//! sees a write that a failover could still remove.
//!
//! When the arbiter removes a failed sync standby, the active keeps waiting
//! for it until it *learns* the new set; only then does the rule stop
//! counting it. A newly adopted set is reported back as confirmed only once
//! every member holds everything committed at adoption (see
//! `proto_common::heartbeat::HeartbeatReply::sync_version`).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use proto_common::{LogIndex, NodeId, Position};
use tokio::sync::watch;

use crate::log::group_commit::CommitSink;
use crate::metrics::Metrics;
use crate::pending::{PendingEntry, Responder};
pub use crate::pending::{WriteAck, WriteError, WriteResult};
use crate::role::Term;
use crate::state_machine::StateMachine;
use crate::sync_set::SyncSet;
use crate::unhealthy::Unhealthy;

/// A cut below the commit index reached the commit rule, which only drops
/// uncommitted entries: the state machine must be rewound instead
/// (`repl::cut` does so, in async mode only).
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "the log was cut after {after}, below the commit index {commit}: the state machine must be \
     rewound, not trimmed"
)]
pub struct CutBelowCommit {
    pub after: Position,
    pub commit: LogIndex,
}

/// A batch the active wrote, for the replication senders.
#[derive(Debug, Clone)]
pub struct WrittenBatch {
    pub bytes: Bytes,
    pub first: Position,
    pub last: Position,
    /// `clock::now_nanos()` when written, for lag in milliseconds.
    pub written_at: u64,
}

/// Takes each batch right after it is written, on the log's writer thread
/// (so it must not block, and must not touch the log).
pub trait Shipper: Send + Sync {
    fn ship(&self, batch: &WrittenBatch);
}

/// Who decides what is committed.
#[derive(Debug)]
enum Mode {
    /// The active in a term: local durability plus every sync member's
    /// acknowledgement.
    Leading(SyncState),
    /// A standby: whatever the active says is committed (and is durable here).
    Following { leader_commit: LogIndex },
}

/// The active's view of the sync set.
#[derive(Debug)]
struct SyncState {
    /// The term this replica leads in; writes waiting when its lease runs
    /// out are answered at once (see `role::lapse`).
    term: Arc<Term>,
    set: SyncSet,
    /// Commit index when `set.version` was adopted.
    adopted_at: LogIndex,
    /// Highest version known to be confirmed (members hold every write
    /// committed before adoption).
    confirmed: u64,
    acks: HashMap<NodeId, Position>,
}

struct Inner {
    pending: VecDeque<PendingEntry>,
    durable: Position,
    commit: LogIndex,
    mode: Mode,
    failed: Option<String>,
}

impl Inner {
    /// Leading in a term whose lease ran out (or that ended): writes
    /// reaching the tracker are answered at once, their outcome unknown.
    fn lapsed(&self) -> bool {
        matches!(&self.mode, Mode::Leading(sync) if !sync.term.may_answer())
    }
}

/// Tracks durability and acknowledgements, applies committed entries and
/// answers the clients waiting for them. Implements [`CommitSink`].
pub struct CommitTracker {
    inner: Mutex<Inner>,
    /// What committed entries are applied to.
    sm: Arc<dyn StateMachine>,
    metrics: Arc<Metrics>,
    /// Commit index, for replication senders (frames carry it).
    commit_tx: watch::Sender<LogIndex>,
    /// Replication senders shipping written batches live.
    shippers: RwLock<Vec<Arc<dyn Shipper>>>,
    /// Local durable position, for a standby's acknowledgements.
    durable_tx: watch::Sender<Position>,
}

impl CommitTracker {
    /// `durable` and `commit` come from recovery: everything in the log is
    /// durable; `commit` is the highest index known committed.
    pub fn new(
        sm: Arc<dyn StateMachine>,
        metrics: Arc<Metrics>,
        durable: Position,
        committed: LogIndex,
        pending: Vec<PendingEntry>,
    ) -> CommitTracker {
        let (commit_tx, _) = watch::channel(committed);
        let (durable_tx, _) = watch::channel(durable);
        CommitTracker {
            inner: Mutex::new(Inner {
                pending: pending.into(),
                durable,
                commit: committed,
                mode: Mode::Following {
                    leader_commit: committed,
                },
                failed: None,
            }),
            sm,
            metrics,
            commit_tx,
            shippers: RwLock::new(Vec::new()),
            durable_tx,
        }
    }

    pub fn durable_watch(&self) -> watch::Receiver<Position> {
        self.durable_tx.subscribe()
    }

    pub fn applied(&self) -> watch::Receiver<Position> {
        self.sm.watch_applied()
    }

    /// The last position the state machine applied.
    pub fn applied_position(&self) -> Position {
        self.sm.applied()
    }

    /// Why the state machine cannot apply entries now, if it cannot.
    pub fn state_problem(&self) -> Option<Unhealthy> {
        self.sm.problem().map(Unhealthy::StateMachine)
    }

    pub fn commit_index(&self) -> watch::Receiver<LogIndex> {
        self.commit_tx.subscribe()
    }

    /// The commit index now. Copies it out at once: holding a watch borrow
    /// across another borrow of the same watch can deadlock with a writer.
    pub fn commit_index_now(&self) -> LogIndex {
        *self.commit_tx.borrow()
    }

    /// Ships every batch written from now on to `shipper`.
    pub fn add_shipper(&self, shipper: Arc<dyn Shipper>) {
        self.shippers.write().push(shipper);
    }

    pub fn remove_shipper(&self, shipper: &Arc<dyn Shipper>) {
        self.shippers.write().retain(|s| !Arc::ptr_eq(s, shipper));
    }

    pub fn durable(&self) -> Position {
        self.inner.lock().durable
    }

    /// Why the write log failed, once it has (it takes no more writes).
    pub fn failure(&self) -> Option<Unhealthy> {
        self.inner.lock().failed.clone().map(Unhealthy::LogFailed)
    }

    /// Becomes the committer in `term`: from now on the sync set decides.
    /// A term that already ended is not led (its demotion may have been
    /// carried out before this call).
    pub fn lead(&self, term: Arc<Term>, set: SyncSet) {
        let mut inner = self.inner.lock();
        if term.has_ended() {
            return;
        }
        let adopted_at = inner.commit;
        inner.mode = Mode::Leading(SyncState {
            term,
            set,
            adopted_at,
            confirmed: 0,
            acks: HashMap::new(),
        });
        let abandoned = Self::take_blocked(&mut inner);
        self.maybe_commit(inner);
        answer_blocked(abandoned);
    }

    /// Adopts the sync set and rule from the arbiter's latest reply (active
    /// only). A newer version replaces the members; `sync_standbys` and
    /// `strict` apply at once, whatever the version (they are parameters,
    /// changed without a new set).
    pub fn set_sync_set(&self, set: SyncSet) {
        let mut inner = self.inner.lock();
        let commit = inner.commit;
        if let Mode::Leading(sync) = &mut inner.mode {
            if set.version > sync.set.version {
                sync.set.members = set.members;
                sync.set.version = set.version;
                sync.adopted_at = commit;
            }
            sync.set.required = set.required;
            sync.set.strict = set.strict;
        }
        let abandoned = Self::take_blocked(&mut inner);
        self.maybe_commit(inner);
        answer_blocked(abandoned);
    }

    /// While strict mode blocks commits, the clients still waiting are told
    /// that their write's fate is unknown: it is durable here and may be on
    /// standbys, and it commits when enough standbys are back — unless this
    /// replica's disk is lost first.
    fn take_blocked(inner: &mut Inner) -> Vec<(Responder, String)> {
        let Mode::Leading(sync) = &inner.mode else {
            return Vec::new();
        };
        if !sync.set.blocks() {
            return Vec::new();
        }
        let why = sync.set.blocked_reason();
        inner
            .pending
            .iter_mut()
            .filter_map(|p| p.responder.take().map(|r| (r, why.clone())))
            .collect()
    }

    /// Why new writes are refused at intake right now (strict mode short
    /// of sync standbys), if they are.
    pub fn refuses_writes(&self) -> Option<String> {
        match &self.inner.lock().mode {
            Mode::Leading(sync) if sync.set.blocks() => Some(sync.set.blocked_reason()),
            _ => None,
        }
    }

    /// Whether a write commits on local durability alone (this node leads
    /// with an empty sync set: standalone, async, or degraded).
    pub fn commits_locally(&self) -> bool {
        matches!(&self.inner.lock().mode,
            Mode::Leading(sync) if sync.set.members.is_empty() && !sync.set.blocks())
    }

    /// The sync-set version the active may report as confirmed.
    pub fn confirmed_sync_version(&self) -> u64 {
        match &self.inner.lock().mode {
            Mode::Leading(sync) => sync.confirmed,
            Mode::Following { .. } => 0,
        }
    }

    /// A standby acknowledged everything up to `pos` as durable.
    pub fn ack(&self, node: &NodeId, pos: Position) {
        let mut inner = self.inner.lock();
        if let Mode::Leading(sync) = &mut inner.mode {
            let e = sync.acks.entry(node.clone()).or_default();
            if pos > *e {
                *e = pos;
            }
        }
        self.maybe_commit(inner);
    }

    /// The active's lease ran out: every client still waiting for a commit
    /// is told at once that its write's outcome is unknown, and so is every
    /// write registered while it stays lapsed (`registered`). The entries
    /// stay in the log and commit if the standbys acknowledge them (the
    /// lease may be renewed), or are cut by a new active; either way no
    /// client is left waiting on a commit a cut-off active cannot get.
    pub fn lease_lapsed(&self) {
        let mut inner = self.inner.lock();
        if !inner.lapsed() {
            return;
        }
        let waiting = Self::take_waiting(&mut inner);
        drop(inner);
        answer_lapsed(waiting);
    }

    fn take_waiting(inner: &mut Inner) -> Vec<(Position, Responder)> {
        inner
            .pending
            .iter_mut()
            .filter_map(|p| p.responder.take().map(|r| (p.position, r)))
            .collect()
    }

    /// Stops leading `term` (it ended): clients still waiting are told the
    /// outcome is unknown. Changes nothing when leading another term (a
    /// newer grant was carried out first) or following already.
    pub fn stop_leading(&self, term: &Arc<Term>, why: &str) {
        let mut inner = self.inner.lock();
        if !matches!(&inner.mode, Mode::Leading(sync) if Arc::ptr_eq(&sync.term, term)) {
            return;
        }
        let commit = inner.commit;
        inner.mode = Mode::Following {
            leader_commit: commit,
        };
        let abandoned: Vec<Responder> = inner
            .pending
            .iter_mut()
            .filter_map(|p| p.responder.take())
            .collect();
        drop(inner);
        for r in abandoned {
            let _ = r.send(Err(WriteError::Indeterminate(format!(
                "{why}; this write may or may not survive — read it back from the new active"
            ))));
        }
    }

    /// The active's commit index, from a replication frame.
    pub fn leader_commit(&self, index: LogIndex) {
        let mut inner = self.inner.lock();
        if let Mode::Following { leader_commit } = &mut inner.mode {
            if index > *leader_commit {
                *leader_commit = index;
            }
        }
        self.maybe_commit(inner);
    }

    /// Entries after `new_last` were cut from the log (divergent tail).
    /// Committed entries are never dropped here (`cut.rs` rewinds the state
    /// machine for those, in async mode only).
    pub fn truncated(&self, new_last: Position) -> Result<(), CutBelowCommit> {
        let mut inner = self.inner.lock();
        if new_last.index < inner.commit {
            return Err(CutBelowCommit {
                after: new_last,
                commit: inner.commit,
            });
        }
        while inner
            .pending
            .back()
            .is_some_and(|p| p.position.index > new_last.index)
        {
            let p = inner.pending.pop_back().unwrap();
            if let Some(r) = p.responder {
                let _ = r.send(Err(WriteError::Indeterminate(
                    "this write was cut from the log by a failover".into(),
                )));
            }
        }
        if inner.durable > new_last {
            inner.durable = new_last;
            self.durable_tx.send_replace(new_last);
        }
        Ok(())
    }

    /// The state and the log were replaced from outside the log (a
    /// snapshot install, a rewind, a full resync): both now end at
    /// `applied`, which is committed.
    pub fn reset(&self, applied: Position) {
        let mut inner = self.inner.lock();
        inner.pending.clear();
        inner.durable = applied;
        inner.commit = applied.index;
        self.sm.reset(applied);
        drop(inner);
        self.durable_tx.send_replace(applied);
        self.commit_tx.send_replace(applied.index);
    }

    /// Recomputes the commit index, applies newly committed entries in
    /// order, then answers their clients outside every lock.
    fn maybe_commit(&self, mut inner: parking_lot::MutexGuard<'_, Inner>) {
        let durable = inner.durable.index;
        let target = match &mut inner.mode {
            Mode::Following { leader_commit } => (*leader_commit).min(durable),
            Mode::Leading(sync) => {
                let acked = sync
                    .set
                    .members
                    .iter()
                    .map(|m| sync.acks.get(m).map(|p| p.index).unwrap_or_default())
                    .min()
                    .unwrap_or(durable);
                if sync.confirmed < sync.set.version && acked >= sync.adopted_at {
                    sync.confirmed = sync.set.version;
                }
                if sync.set.blocks() {
                    return;
                }
                acked.min(durable)
            }
        };
        if target <= inner.commit {
            return;
        }
        inner.commit = target;
        let split = inner
            .pending
            .iter()
            .position(|p| p.position.index > target)
            .unwrap_or(inner.pending.len());
        let committed: Vec<PendingEntry> = inner.pending.drain(..split).collect();
        // Handed over under the lock, so batches reach the state machine in
        // log order; it applies them and hands each waiting write its
        // outcome (its client is answered through the role's guard).
        self.sm.apply(committed);
        drop(inner);
        self.commit_tx.send_replace(target);
    }
}

fn answer_lapsed(waiting: Vec<(Position, Responder)>) {
    for (position, r) in waiting {
        let _ = r.send(Err(WriteError::Indeterminate(format!(
            "this active's lease ran out (it cannot reach the arbiter) before write {position} \
             was committed; it may still commit here or be cut by a new active — read it back \
             from the active"
        ))));
    }
}

fn answer_blocked(abandoned: Vec<(Responder, String)>) {
    for (r, why) in abandoned {
        let _ = r.send(Err(WriteError::Indeterminate(format!(
            "{why}. This write is durable on the active but on too few standbys: it commits \
             when they are back, unless the active's disk is lost first — read it back later"
        ))));
    }
}

impl CommitSink for CommitTracker {
    fn registered(&self, entries: Vec<PendingEntry>) {
        let mut inner = self.inner.lock();
        inner.pending.extend(entries);
        // Accepted just before strict mode started blocking, or just
        // before the lease ran out.
        let abandoned = Self::take_blocked(&mut inner);
        let lapsed = if inner.lapsed() {
            Self::take_waiting(&mut inner)
        } else {
            Vec::new()
        };
        drop(inner);
        answer_blocked(abandoned);
        answer_lapsed(lapsed);
    }

    fn written(&self, batch: &Bytes, first: Position, last: Position) {
        self.metrics.log_bytes.inc_by(batch.len() as u64);
        let shippers = self.shippers.read();
        if !shippers.is_empty() {
            let batch = WrittenBatch {
                bytes: batch.clone(),
                first,
                last,
                written_at: proto_common::clock::now_nanos(),
            };
            for s in shippers.iter() {
                s.ship(&batch);
            }
        }
    }

    fn durable(&self, last: Position, batch_entries: usize) {
        self.metrics.fsyncs.inc();
        self.metrics.batch_entries.observe(batch_entries as f64);
        let mut inner = self.inner.lock();
        inner.durable = last;
        self.durable_tx.send_replace(last);
        self.maybe_commit(inner);
    }

    fn failed(&self, why: &str) {
        let mut inner = self.inner.lock();
        inner.failed = Some(why.to_string());
        let waiting: Vec<Responder> = inner
            .pending
            .iter_mut()
            .filter_map(|p| p.responder.take())
            .collect();
        drop(inner);
        // Every waiting write was handed to the log, and may be durable
        // here (a failed fsync says nothing about what reached the disk)
        // and on standbys (batches ship before the fsync): its outcome is
        // unknown, never "failed".
        for r in waiting {
            let _ = r.send(Err(WriteError::Indeterminate(format!(
                "the write log failed ({why}) before this write was known durable; it may be \
                 on a standby and survive a failover, or not — read it back from the active \
                 before retrying. This replica takes no more writes"
            ))));
        }
    }
}

//! A replica node: opens its data directory (snapshot, log, node state),
//! replays, and holds the parts a replica is made of: the log, the commit
//! rule, the state machine, and the role's owner. What a role change does
//! to storage is in `node/role.rs`, the write path in `node/write.rs`.
//!
//! Data directory layout:
//! ```text
//! LOCK                 flock'ed while a replica runs here
//! node-state.json      active_epoch, seen_epoch, commit hint (node_state.rs)
//! log/                 segment files (log/)
//! snapshots/           the latest snapshot (snapshot.rs)
//! checkpoint/, rdb/    proxy mode: the newest checkpoint, which lets old
//!                      log segments go (proxy/checkpoint.rs); RDBs kept to
//!                      fill this replica's upstream (proxy/rdb.rs)
//! quarantine/          entries cut from a divergent tail, never deleted
//! REINIT, discarded/   an operator's reinit order being carried out, and
//!                      the data it moved aside (reinit.rs)
//! ```

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use proto_common::record::{self, Decoded};
use proto_common::Position;

use crate::command::Command;
use crate::commit::CommitTracker;
use crate::config::Settings;
use crate::idle_poll::IdlePoll;
use crate::log::group_commit::GroupCommit;
use crate::log::{Log, LogOptions, LogReader, ReadOutcome};
use crate::metrics::Metrics;
use crate::node_state::NodeState;
use crate::pending::PendingEntry;
use crate::role::Roles;
use crate::snapshot;
use crate::state::KvState;
use crate::state_machine::{Answerer, KvMachine, StateMachine};
use crate::unhealthy::Unhealthy;

pub mod error;
mod role;
mod write;

pub use error::{PromotionError, StartError, StorageError};

/// Whether a snapshot is being written, and how much log has been written
/// since the last one (a snapshot starts when that passes
/// `snapshot_every_bytes`).
#[derive(Debug, Default)]
pub struct SnapshotActivity {
    pub in_progress: std::sync::atomic::AtomicBool,
    /// `metrics.log_bytes` when the last snapshot was taken (or at start).
    pub log_bytes_at_last: std::sync::atomic::AtomicU64,
    /// The data directory as last measured (`disk_use.rs`).
    pub disk: Mutex<Option<proto_common::heartbeat::DiskUse>>,
    /// Held while a checkpoint is taken or one from the active is
    /// installed (proxy mode): each replaces what the log starts from.
    pub checkpoint: tokio::sync::Mutex<()>,
}

/// A running replica's storage and state machine.
pub struct Node {
    pub settings: Settings,
    pub kv: Arc<RwLock<KvState>>,
    pub commit: Arc<CommitTracker>,
    pub log: GroupCommit,
    pub reader: LogReader,
    pub metrics: Arc<Metrics>,
    /// What this replica is now: its one owner (`role::Roles`).
    pub roles: Arc<Roles>,
    /// Persisted node facts; the mutex serializes writers of the file.
    node_state: Mutex<NodeState>,
    /// Snapshot activity, for housekeeping and status.
    pub snapshots: SnapshotActivity,
    /// Keeps a CPU awake while writes are in flight (`idle_poll_us`).
    pub idle_poll: IdlePoll,
    /// One per write accepted and not yet answered (`max_pending_writes`).
    write_permits: tokio::sync::Semaphore,
    /// Proxy mode's parts; `None` with the embedded store.
    pub proxy: Option<Arc<crate::proxy::ProxyCore>>,
    /// Held for the node's lifetime: the flock on `LOCK`.
    _dir_lock: File,
}

impl Node {
    /// Opens the data directory, recovers, and replays. Errors name the
    /// file and what is wrong; the node does not start on damaged data.
    pub fn open(settings: Settings) -> Result<Arc<Node>, StartError> {
        let dir = settings.data_dir.clone();
        std::fs::create_dir_all(&dir).map_err(|source| StartError::CreateDataDir {
            dir: dir.clone(),
            source,
        })?;
        let dir_lock = lock_dir(&dir)?;
        crate::reinit::carry_out(&dir)?;
        let metrics = Arc::new(Metrics::new());

        let node_state = NodeState::load(&dir).map_err(StartError::LoadNodeState)?;
        let snap_dir = dir.join("snapshots");
        let snaps = snapshot::list(&snap_dir).map_err(|source| StartError::ListSnapshots {
            dir: snap_dir.clone(),
            source,
        })?;
        if settings.proxy.is_some() && !snaps.is_empty() {
            return Err(StartError::SnapshotsInProxyMode { dir });
        }
        let (state, mut history) = match snaps.last() {
            Some((_, path)) => snapshot::read(path).map_err(|source| StartError::Snapshot {
                path: path.clone(),
                source,
            })?,
            None => (KvState::default(), Vec::new()),
        };
        // Proxy mode: the newest checkpoint (an RDB and the history before
        // it) covers the log's deleted entries.
        let mut seed = None;
        let snap_pos = match settings.proxy {
            Some(_) => {
                let cp_dir = dir.join("checkpoint");
                let newest = crate::proxy::checkpoint::newest(&cp_dir).map_err(|source| {
                    StartError::Snapshot {
                        path: cp_dir.clone(),
                        source,
                    }
                })?;
                match newest {
                    Some(cp) => {
                        history = cp.epochs;
                        seed = Some(cp.seed);
                        cp.position
                    }
                    None => Position::ZERO,
                }
            }
            None => state.applied(),
        };

        let opts = LogOptions {
            segment_bytes: settings.segment_bytes,
            fsync: settings.fsync,
        };
        let (log, torn) = Log::open(&dir.join("log"), opts, snap_pos, &history)?;
        if let Some(t) = &torn {
            tracing::warn!(file = %t.path.display(), offset = t.offset, "recovered from a torn log tail");
        }
        let reader = log.reader();
        let last = log.last();
        let hint = node_state.commit_hint.min(last.index);

        let kv = Arc::new(RwLock::new(state));
        let answerer = Answerer::new(metrics.clone());
        let (sm, proxy, pending, committed): (Arc<dyn StateMachine>, _, _, _) =
            match settings.proxy.clone() {
                None => {
                    // Replay: entries up to the commit hint are applied now;
                    // the rest wait until something (our own lead, or the
                    // active) says they are committed.
                    let pending = replay(&reader, &kv, hint)?;
                    let committed = kv.read().applied().index;
                    let sm = Arc::new(KvMachine::new(kv.clone(), answerer, metrics.clone()));
                    (sm, None, pending, committed)
                }
                Some(p) => {
                    let hint = hint.max(reader.base().index);
                    let (core, pending, committed) =
                        open_upstream(p, &reader, &dir, hint, answerer, seed)?;
                    (core.machine.clone(), Some(core), pending, committed)
                }
            };
        tracing::info!(
            snapshot = %snap_pos,
            last = %last,
            applied = %sm.applied(),
            pending = pending.len(),
            "replica storage recovered"
        );
        let commit = Arc::new(CommitTracker::new(
            sm,
            metrics.clone(),
            last,
            committed,
            pending,
        ));
        let epoch = node_state.seen_epoch.max(last.epoch);
        let roles = Arc::new(Roles::new(
            settings.node_id.clone(),
            epoch,
            node_state.active_epoch,
        ));
        let log = GroupCommit::start(log, commit.clone(), roles.subscribe()).map_err(|source| {
            StartError::Spawn {
                what: "group-commit thread",
                source,
            }
        })?;
        metrics.epoch.set(epoch.0 as i64);
        metrics
            .quarantined_entries
            .set(node_state.quarantined_entries as i64);
        let idle_poll = IdlePoll::start(settings.idle_poll, metrics.idle_poll_seconds.clone())
            .map_err(|source| StartError::Spawn {
                what: "idle-poll thread",
                source,
            })?;
        let write_permits = settings.limits.max_pending_writes;
        Ok(Arc::new(Node {
            settings,
            kv,
            commit,
            log,
            reader,
            metrics,
            roles,
            node_state: Mutex::new(node_state),
            snapshots: SnapshotActivity::default(),
            idle_poll,
            write_permits: tokio::sync::Semaphore::new(write_permits),
            proxy,
            _dir_lock: dir_lock,
        }))
    }

    /// Why this replica cannot serve now (a failed log, an upstream that
    /// cannot be used), for its health.
    pub fn health_problem(&self) -> Option<Unhealthy> {
        self.commit
            .failure()
            .or_else(|| self.commit.state_problem())
            .or_else(|| self.upstream_problem())
    }

    /// The largest replication frame this replica sends and takes:
    /// `max_frame_bytes`, or in proxy mode enough for the largest command
    /// the upstream takes (one log entry).
    pub fn frame_limit(&self) -> usize {
        let configured = self.settings.max_frame_bytes;
        match &self.proxy {
            Some(core) => core.frame_limit(configured),
            None => configured,
        }
    }

    /// Proxy mode: why the upstream cannot be used now, if it cannot.
    pub fn upstream_problem(&self) -> Option<Unhealthy> {
        self.proxy
            .as_ref()
            .and_then(|p| p.problem())
            .map(Unhealthy::UpstreamUnusable)
    }

    pub fn data_dir(&self) -> &Path {
        &self.settings.data_dir
    }

    /// The role now (see `role::Roles`).
    pub fn role(&self) -> Arc<crate::role::RoleView> {
        self.roles.now()
    }

    /// Replaces the embedded store's whole state (a snapshot install, a
    /// rewind); the log must already end where `state` does.
    pub fn replace_state(&self, state: KvState) {
        let applied = state.applied();
        *self.kv.write() = state;
        self.commit.reset(applied);
    }

    pub fn applied(&self) -> Position {
        self.commit.applied_position()
    }

    /// Runs `f`, which blocks (an fsync), from async code: on a worker of
    /// a multi-threaded runtime the worker's other tasks move to another
    /// thread first, so a slow disk stalls only this task. Elsewhere (the
    /// standby's receiver thread, a blocking thread) it simply runs.
    pub fn run_blocking<R>(&self, f: impl FnOnce() -> R) -> R {
        let multi_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if multi_thread {
            tokio::task::block_in_place(f)
        } else {
            f()
        }
    }

    /// Applies a change to the persisted node state and writes it durably
    /// (see `run_blocking`).
    pub fn update_node_state(&self, f: impl FnOnce(&mut NodeState)) -> Result<(), StorageError> {
        self.run_blocking(|| self.update_node_state_now(f))
    }

    fn update_node_state_now(&self, f: impl FnOnce(&mut NodeState)) -> Result<(), StorageError> {
        let mut s = self.node_state.lock();
        let mut next = s.clone();
        f(&mut next);
        if next != *s {
            next.store(self.data_dir())
                .map_err(|source| StorageError::WriteNodeState {
                    path: NodeState::path(self.data_dir()),
                    source,
                })?;
            *s = next;
        }
        Ok(())
    }

    pub fn node_state(&self) -> NodeState {
        self.node_state.lock().clone()
    }
}

/// Proxy mode: checks the upstream and opens the stream machine on the
/// log (`proxy::start`); returns the core, the entries not yet known
/// committed, and the commit index.
fn open_upstream(
    settings: crate::proxy::ProxySettings,
    reader: &LogReader,
    dir: &Path,
    hint: proto_common::LogIndex,
    answerer: Answerer,
    seed: Option<crate::proxy::history::Seed>,
) -> Result<
    (
        Arc<crate::proxy::ProxyCore>,
        Vec<PendingEntry>,
        proto_common::LogIndex,
    ),
    StartError,
> {
    let core = tokio::runtime::Handle::current()
        .block_on(crate::proxy::start::open(
            settings,
            reader.clone(),
            hint,
            dir,
            answerer,
            seed,
        ))
        .map_err(StartError::Upstream)?;
    let pending = pending_after(reader, hint)?;
    Ok((core, pending, hint))
}

/// The log's entries after `index`, as pending entries.
fn pending_after(
    reader: &LogReader,
    index: proto_common::LogIndex,
) -> Result<Vec<PendingEntry>, StorageError> {
    const DOING: &str = "reading the log's uncommitted entries";
    let mut pending = Vec::new();
    let mut next = index.next().max(reader.base().index.next());
    loop {
        let bytes = match reader.read(next, 8 << 20) {
            Ok(ReadOutcome::Entries { bytes, .. }) => bytes,
            Ok(ReadOutcome::UpToDate) => return Ok(pending),
            Ok(ReadOutcome::Compacted) => {
                return Err(StorageError::Compacted {
                    doing: DOING,
                    index: next,
                })
            }
            Err(source) => {
                return Err(StorageError::ReadLog {
                    doing: DOING,
                    source,
                })
            }
        };
        let mut off = 0;
        while off < bytes.len() {
            let Decoded::Record(r) = record::decode(&bytes[off..]) else {
                return Err(StorageError::BadRecord {
                    doing: DOING,
                    index: next,
                });
            };
            let payload = bytes.slice(off + record::HEADER_LEN..off + r.encoded_len());
            let command = Command::decode(&payload).map_err(|source| StorageError::BadCommand {
                doing: DOING,
                position: r.position,
                source,
            })?;
            pending.push(PendingEntry {
                position: r.position,
                command,
                responder: None,
                received: None,
            });
            off += r.encoded_len();
            next = r.position.index.next();
        }
    }
}

/// Applies log entries after the snapshot up to `commit_hint`; returns the
/// rest as pending entries.
fn replay(
    reader: &LogReader,
    kv: &Arc<RwLock<KvState>>,
    commit_hint: proto_common::LogIndex,
) -> Result<Vec<PendingEntry>, StorageError> {
    const DOING: &str = "replaying the log after the snapshot";
    let mut pending = Vec::new();
    let mut next = kv.read().applied().index.next();
    loop {
        let bytes = match reader.read(next, 8 << 20) {
            Ok(ReadOutcome::Entries { bytes, .. }) => bytes,
            Ok(ReadOutcome::UpToDate) => break,
            Ok(ReadOutcome::Compacted) => {
                return Err(StorageError::Compacted {
                    doing: DOING,
                    index: next,
                })
            }
            Err(source) => {
                return Err(StorageError::ReadLog {
                    doing: DOING,
                    source,
                })
            }
        };
        let mut off = 0;
        let mut kv = kv.write();
        while off < bytes.len() {
            let Decoded::Record(r) = record::decode(&bytes[off..]) else {
                return Err(StorageError::BadRecord {
                    doing: DOING,
                    index: next,
                });
            };
            let payload = bytes.slice(off + record::HEADER_LEN..off + r.encoded_len());
            let command = Command::decode(&payload).map_err(|source| StorageError::BadCommand {
                doing: DOING,
                position: r.position,
                source,
            })?;
            if r.position.index <= commit_hint {
                kv.apply(r.position, &command);
            } else {
                pending.push(PendingEntry {
                    position: r.position,
                    command,
                    responder: None,
                    received: None,
                });
            }
            off += r.encoded_len();
            next = r.position.index.next();
        }
    }
    Ok(pending)
}

/// Takes an exclusive `flock` on `dir/LOCK`, so two replicas never share a
/// data directory.
fn lock_dir(dir: &Path) -> Result<File, StartError> {
    let path: PathBuf = dir.join("LOCK");
    let file = File::create(&path).map_err(|source| StartError::LockFile {
        path: path.clone(),
        source,
    })?;
    // SAFETY: flock on a valid, owned file descriptor.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        return Err(StartError::DataDirInUse {
            dir: dir.to_path_buf(),
            lock: path,
        });
    }
    Ok(file)
}

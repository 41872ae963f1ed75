//! The node's errors: why it could not start or stopped serving
//! ([`StartError`]: `main.rs` prints it and exits with status 2), why its
//! storage refused a step ([`StorageError`]), and why it refused to become
//! the active ([`PromotionError`]).
//!
//! Each has a stable `code()` (logs, tests). Messages name the file, the
//! position or the epoch involved and, where there is one, the fix.
//! A `doing` field is the step that failed, written for a person ("writing
//! snapshot 3.120"); the kind of failure is the variant.

use std::borrow::Cow;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use proto_common::{Epoch, LogIndex, Position};

use crate::command::DecodeError;
use crate::commit::CutBelowCommit;
use crate::log::OpenError;

/// Why the replica could not start, or stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot create data_dir {}: {source}", .dir.display())]
    CreateDataDir { dir: PathBuf, source: io::Error },

    /// The `LOCK` file cannot be created.
    #[error("cannot create {}: {source}", .path.display())]
    LockFile { path: PathBuf, source: io::Error },

    /// Another replica holds the data directory's lock.
    #[error(
        "data_dir {} is in use by another running replica (could not lock {}); stop it or \
         choose another --data-dir",
        .dir.display(), .lock.display()
    )]
    DataDirInUse { dir: PathBuf, lock: PathBuf },

    /// `node-state.json` cannot be read or is damaged (the message names
    /// the file when it is damaged).
    #[error("{0}")]
    LoadNodeState(io::Error),

    /// The `REINIT` marker cannot be read.
    #[error("cannot read {}: {source}", .path.display())]
    ReadReinitMarker { path: PathBuf, source: io::Error },

    /// The `REINIT` marker does not hold an order number.
    #[error(
        "{} is damaged ({source}); delete it to start without reinitializing",
        .path.display()
    )]
    ReinitMarkerDamaged {
        path: PathBuf,
        source: std::num::ParseIntError,
    },

    /// A step of carrying out reinit order `order` failed.
    #[error("reinit {order}: {doing}: {source}")]
    Reinit {
        order: u64,
        doing: String,
        source: io::Error,
    },

    #[error("cannot list snapshots in {}: {source}", .dir.display())]
    ListSnapshots { dir: PathBuf, source: io::Error },

    /// The newest snapshot is unreadable or fails its checks.
    #[error("{source}; refusing to start (the log before it may be deleted)")]
    Snapshot { path: PathBuf, source: io::Error },

    /// Proxy mode in a data directory of the embedded store.
    #[error(
        "data_dir {} holds snapshots of the embedded store, but this replica runs in proxy \
         mode (--upstream): a data directory serves one kind of service; use a new one",
        .dir.display()
    )]
    SnapshotsInProxyMode { dir: PathBuf },

    /// The log is damaged or cannot be opened (see `OpenError`).
    #[error(transparent)]
    Log(#[from] OpenError),

    /// Replaying the log failed.
    #[error(transparent)]
    Storage(#[from] StorageError),

    /// Proxy mode: the upstream cannot be used (`proxy::start`; its message
    /// names the upstream and the fix).
    #[error(transparent)]
    Upstream(#[from] crate::proxy::error::ProxyStartError),

    /// Standalone: opening its epoch failed.
    #[error(transparent)]
    Standalone(#[from] PromotionError),

    /// A thread or runtime of the replica's own could not be started.
    #[error("cannot start the {what}: {source}")]
    Spawn {
        /// "group-commit thread", "heartbeat runtime", …
        what: &'static str,
        source: io::Error,
    },

    /// Opening the data directory panicked (a bug).
    #[error("opening the node panicked: {0}")]
    OpenPanicked(tokio::task::JoinError),

    /// A listener cannot be bound.
    #[error("cannot listen for {purpose} on {addr}: {source}")]
    Listen {
        /// "the client API", "replication", "Redis clients".
        purpose: &'static str,
        addr: SocketAddr,
        source: io::Error,
    },

    /// The client API's listener could not be set up (TLS).
    #[error("client API listener: {0}")]
    ClientListener(io::Error),

    /// Proxy mode's RESP server could not be started.
    #[error(transparent)]
    Proxy(#[from] crate::proxy::error::RespThreadError),

    /// The client API server stopped with an error.
    #[error("client API server failed: {0}")]
    Serve(io::Error),
}

impl StartError {
    /// Stable machine-readable code; never renamed.
    pub fn code(&self) -> &'static str {
        match self {
            StartError::CreateDataDir { .. } => "create_data_dir",
            StartError::LockFile { .. } => "lock_file",
            StartError::DataDirInUse { .. } => "data_dir_in_use",
            StartError::LoadNodeState(_) => "load_node_state",
            StartError::ReadReinitMarker { .. } => "read_reinit_marker",
            StartError::ReinitMarkerDamaged { .. } => "reinit_marker_damaged",
            StartError::Reinit { .. } => "reinit",
            StartError::ListSnapshots { .. } => "list_snapshots",
            StartError::Snapshot { .. } => "snapshot",
            StartError::SnapshotsInProxyMode { .. } => "snapshots_in_proxy_mode",
            StartError::Log(_) => "log",
            StartError::Storage(e) => e.code(),
            StartError::Upstream(_) => "upstream",
            StartError::Standalone(e) => e.code(),
            StartError::Spawn { .. } => "spawn",
            StartError::OpenPanicked(_) => "open_panicked",
            StartError::Listen { .. } => "listen",
            StartError::ClientListener(_) => "client_listener",
            StartError::Proxy(_) => "proxy",
            StartError::Serve(_) => "serve",
        }
    }
}

/// Why a step on the node's storage (log, snapshots, node state,
/// quarantine) failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A file operation failed.
    #[error("{doing}: {source}")]
    Io {
        doing: Cow<'static, str>,
        source: io::Error,
    },

    /// `node-state.json` could not be written.
    #[error("cannot write {}: {source}", .path.display())]
    WriteNodeState { path: PathBuf, source: io::Error },

    /// The log thread is gone (the log failed, or the node is closing).
    #[error("the group-commit thread stopped")]
    LogStopped,

    /// Reading the log failed.
    #[error("{doing}: {source}")]
    ReadLog {
        doing: &'static str,
        source: io::Error,
    },

    /// An entry that should be in the log was compacted away.
    #[error("{doing}: log entry {index} is no longer in the log (compacted)")]
    Compacted {
        doing: &'static str,
        index: LogIndex,
    },

    /// A record of the log does not decode (it was checked at start: a bug).
    #[error("{doing}: log entry {index} cannot be decoded")]
    BadRecord {
        doing: &'static str,
        index: LogIndex,
    },

    /// An entry's payload is not a command of this version.
    #[error("{doing}: log entry {position} holds an unknown command: {source}")]
    BadCommand {
        doing: &'static str,
        position: Position,
        source: DecodeError,
    },

    /// An entry the log should hold up to `index` is not there.
    #[error("{doing}: the log ends before entry {index}")]
    EndsEarly {
        doing: &'static str,
        index: LogIndex,
    },

    /// The thread writing a received snapshot stopped (it reports why).
    #[error("the snapshot writer stopped (see the error it reports)")]
    SnapshotWriterStopped,

    /// A blocking task for a storage step panicked.
    #[error("{task} task failed: {source}")]
    TaskFailed {
        /// "snapshot", "quarantine".
        task: &'static str,
        source: tokio::task::JoinError,
    },

    /// A cut below the commit index reached the commit rule (a bug).
    #[error(transparent)]
    CutBelowCommit(#[from] CutBelowCommit),
}

impl StorageError {
    /// Stable machine-readable code; never renamed.
    pub fn code(&self) -> &'static str {
        match self {
            StorageError::Io { .. } => "io",
            StorageError::WriteNodeState { .. } => "write_node_state",
            StorageError::LogStopped => "log_stopped",
            StorageError::ReadLog { .. } => "read_log",
            StorageError::Compacted { .. } => "compacted",
            StorageError::BadRecord { .. } => "bad_record",
            StorageError::EndsEarly { .. } => "ends_early",
            StorageError::SnapshotWriterStopped => "snapshot_writer_stopped",
            StorageError::BadCommand { .. } => "bad_command",
            StorageError::TaskFailed { .. } => "task_failed",
            StorageError::CutBelowCommit(_) => "cut_below_commit",
        }
    }

    /// A failed file operation, `doing` naming the step (and the file).
    pub fn io(doing: impl Into<Cow<'static, str>>, source: io::Error) -> StorageError {
        StorageError::Io {
            doing: doing.into(),
            source,
        }
    }
}

/// Why this replica refused to become the active in an epoch. The role
/// steps down again and the arbiter is told why (heartbeat `detail`).
#[derive(Debug, thiserror::Error)]
pub enum PromotionError {
    /// It already took writes in this epoch or a later one: it may have
    /// shipped entries it no longer has, so positions could be reused.
    #[error(
        "refusing to become active in epoch {epoch}: this replica already took writes in epoch \
         {active_epoch} before it restarted or stepped down, and may have shipped entries it no \
         longer has; the arbiter must open a new epoch"
    )]
    EpochTaken { epoch: Epoch, active_epoch: Epoch },

    /// Its log already holds a later epoch.
    #[error("refusing to become active in epoch {epoch}: the log already holds epoch {log_epoch}")]
    LogAhead { epoch: Epoch, log_epoch: Epoch },

    /// Proxy mode: its upstream cannot be used now.
    #[error(
        "refusing to become active in epoch {epoch}: this replica's upstream cannot be used \
         ({why}); it is refilled once this replica follows the active"
    )]
    UpstreamUnusable { epoch: Epoch, why: String },

    /// Recording the epoch or writing its first entry failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl PromotionError {
    /// Stable machine-readable code; never renamed.
    pub fn code(&self) -> &'static str {
        match self {
            PromotionError::EpochTaken { .. } => "epoch_taken",
            PromotionError::LogAhead { .. } => "log_ahead",
            PromotionError::UpstreamUnusable { .. } => "upstream_unusable",
            PromotionError::Storage(e) => e.code(),
        }
    }
}

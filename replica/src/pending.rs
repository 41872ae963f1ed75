//! A write on its way from the log to the state machine, and the outcome
//! the task that submitted it waits for. Shared by the log (which assigns
//! positions), the commit rule (which decides when it is committed) and the
//! state machine (which applies it and hands over the outcome).

use std::time::Instant;

use proto_common::Position;
use tokio::sync::oneshot;

use crate::command::Command;
use crate::state::Outcome;

/// An entry on its way to the state machine: its position, its command, and
/// (on the active) the client waiting for its outcome.
pub struct PendingEntry {
    pub position: Position,
    pub command: Command,
    pub responder: Option<Responder>,
    /// When the write arrived, for the latency histogram.
    pub received: Option<Instant>,
}

/// Receives a write's outcome once it is committed and applied (or failed).
pub type Responder = oneshot::Sender<WriteResult>;

/// What a client write ends with.
pub type WriteResult = Result<WriteAck, WriteError>;

/// A committed write: its position and what applying it did.
#[derive(Debug, Clone)]
pub struct WriteAck {
    pub position: Position,
    pub outcome: Outcome,
}

/// Why a write was not acknowledged.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    /// Refused before it was written, or abandoned by a demotion; retryable.
    #[error("{0}")]
    NotWritable(String),
    /// Written, possibly committed, but the lease ended before the answer:
    /// the outcome is unknown to the client.
    #[error("{0}")]
    Indeterminate(String),
    /// The disk failed.
    #[error("{0}")]
    Storage(String),
    /// Strict mode and too few sync standbys: refused before it was
    /// written; retryable once the arbiter has added a standby.
    #[error("{0}")]
    NoSyncStandby(String),
    /// `max_pending_writes` writes are waiting already: refused before it
    /// was written; retryable.
    #[error("{0}")]
    Overloaded(String),
}

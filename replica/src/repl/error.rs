//! `ReplError`: why a replication connection ended, on either side.
//!
//! The active's sender ends a standby's connection with one (after
//! refusing it with the [`RefuseCode`] of [`ReplError::refuse_code`], when
//! there is one); the standby's receiver ends its stream from the active
//! with one and reconnects. Both log it with its [`ReplError::code`] and
//! [`ReplError::is_retryable`]. Some are not failures but the way a
//! session hands over to the next one (a full resync done, local state
//! discarded for one): the next handshake asks for what is needed.
//!
//! A `String` field is a message for a person that comes from elsewhere:
//! a peer's refusal reason, a check in `proto_common` (connecting, a
//! record batch, an implausible epoch), or proxy mode's resync.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use proto_common::wire::{CodecError, RefuseCode};
use proto_common::{Epoch, LogIndex, NodeId, Position};

use crate::command::DecodeError;
use crate::node::StorageError;

/// Why a replication connection ended.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReplError {
    /// The peer refused us with a `Refuse` frame.
    #[error("refused ({code:?}): {reason}")]
    Refused { code: RefuseCode, reason: String },

    /// A standby connected to a replica that is not the active.
    #[error("{node} is not the active{}", .active_url.as_ref().map(|u| format!("; the active is at {u}")).unwrap_or_default())]
    NotActive {
        node: NodeId,
        /// The active's client URL, when known.
        active_url: Option<String>,
    },

    /// The peer belongs to another cluster.
    #[error("{peer} belongs to cluster {theirs:?}, this replica to {ours:?}")]
    WrongCluster {
        /// "standby b", or the active's replication address.
        peer: String,
        theirs: String,
        ours: String,
    },

    /// The peer did not prove it holds the cluster token.
    #[error("{peer} did not prove it holds the cluster token (wrong token?)")]
    BadProof {
        /// "standby b" or "active a".
        peer: String,
    },

    /// Another replica answered at the address the arbiter gave for the
    /// active.
    #[error("expected active {expected} at {addr}, found {found}")]
    WrongActive {
        expected: NodeId,
        addr: String,
        found: NodeId,
    },

    /// A frame from an epoch older than one seen here: its sender was
    /// deposed.
    #[error(
        "frame from epoch {epoch}, but epoch {seen} has been seen: the sender was deposed; \
         nothing from it is applied"
    )]
    StaleEpoch { epoch: Epoch, seen: Epoch },

    /// A standby has seen a newer epoch than this active's: another
    /// replica is active, and this one steps down.
    #[error(
        "standby {standby} has seen epoch {theirs}, newer than ours ({ours}): another replica \
         is active; stepping down"
    )]
    Deposed {
        standby: NodeId,
        theirs: Epoch,
        ours: Epoch,
    },

    /// The peer broke the protocol.
    #[error(transparent)]
    Protocol(#[from] Violation),

    /// The active asked this standby to cut entries it holds as committed,
    /// in sync mode: refused (DESIGN.md, "Divergence and quarantine").
    #[error(
        "the active {active} asks to cut every entry after {after}, but entries up to index \
         {committed} are committed here and the cluster runs with sync_standbys >= 1: cutting \
         them could lose acknowledged writes, so this replica refuses and does not follow. \
         Compare the two replicas' data; to resync this one, stop it, move its data dir aside \
         and start it empty"
    )]
    WouldCutCommitted {
        active: NodeId,
        after: Position,
        committed: LogIndex,
    },

    /// Rewinding found a snapshot past the cut (a full resync was due).
    #[error(
        "rewinding to {after}: the snapshot at {snapshot} holds cut entries (a full resync was \
         due instead)"
    )]
    SnapshotPastCut { snapshot: Position, after: Position },

    /// The snapshot sent was not as long as announced (a bug).
    #[error("the snapshot encoded to {sent} bytes, not the {announced} announced")]
    SnapshotEncoded { sent: u64, announced: u64 },

    /// The local state was set aside; the next handshake asks for all.
    #[error("local state discarded for a full resync; reconnecting")]
    DiscardedForResync,

    /// The peer did not send the frame it owed in time.
    #[error("no {waiting_for} within {after:?}")]
    Timeout {
        waiting_for: &'static str,
        after: Duration,
    },

    /// The connection closed.
    #[error("{0}")]
    Closed(&'static str),

    /// The active could not be reached (its message names the address).
    #[error("{0}")]
    Connect(String),

    /// A frame could not be read.
    #[error("unreadable {what}: {source}")]
    Unreadable {
        /// "hello", "frame", "frame in a snapshot".
        what: &'static str,
        source: Arc<CodecError>,
    },

    /// A frame could not be framed or sent.
    #[error("{what} failed: {source}")]
    Send {
        /// "send", "sending an ack", "framing for the standby".
        what: &'static str,
        source: Arc<CodecError>,
    },

    /// The receiver's thread or runtime could not be started.
    #[error("cannot start the {what}: {source}")]
    Spawn {
        what: &'static str,
        source: Arc<io::Error>,
    },

    /// This replica's own storage failed.
    #[error(transparent)]
    Storage(Arc<StorageError>),
}

/// How a peer broke the replication protocol. The connection ends; the
/// active refuses a standby with `RefuseCode::Protocol`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Violation {
    /// A frame of another kind than the protocol allows here.
    #[error("expected {expected}, got {got}")]
    UnexpectedFrame {
        expected: &'static str,
        got: &'static str,
    },

    /// A standby uses the active's own node id.
    #[error("a standby uses this active's own node id")]
    OwnNodeId,

    /// A standby's hello describes a log that cannot exist.
    #[error(
        "standby {standby} describes an impossible log (epoch {epoch}, base {base}, last {last})"
    )]
    ImpossibleLog {
        standby: NodeId,
        epoch: Epoch,
        base: Position,
        last: Position,
    },

    /// An epoch absurdly far ahead (`Epoch::check_plausible`'s message).
    #[error("{peer} sent {detail}")]
    ImplausibleEpoch { peer: String, detail: String },

    /// Entries that do not continue the log where it ends.
    #[error("entries continue after {prev}, but our log ends at {ours}")]
    Gap { prev: Position, ours: Position },

    /// A batch of records that fails its checks (`record::check_batch`).
    #[error("bad entries: {0}")]
    BadEntries(String),

    /// An entry whose payload is not a command.
    #[error("entry {position} holds an unknown command: {source}")]
    BadEntry {
        position: Position,
        source: DecodeError,
    },

    /// A truncation at a position this log does not hold.
    #[error("asked to truncate after {after} but our log has {ours:?} there")]
    TruncateMismatch {
        after: Position,
        ours: Option<Position>,
    },

    /// A snapshot longer or shorter than announced.
    #[error("the snapshot ran to {got} bytes, not the {announced} announced")]
    SnapshotSize { got: u64, announced: u64 },

    /// A snapshot whose contents end elsewhere than announced.
    #[error("snapshot announced {announced} but holds {holds}")]
    SnapshotPosition {
        announced: Position,
        holds: Position,
    },
}

impl From<StorageError> for ReplError {
    fn from(e: StorageError) -> ReplError {
        ReplError::Storage(Arc::new(e))
    }
}

impl ReplError {
    /// Stable machine-readable code; never renamed.
    pub fn code(&self) -> &'static str {
        match self {
            ReplError::Refused { .. } => "refused",
            ReplError::NotActive { .. } => "not_active",
            ReplError::WrongCluster { .. } => "wrong_cluster",
            ReplError::BadProof { .. } => "bad_proof",
            ReplError::WrongActive { .. } => "wrong_active",
            ReplError::StaleEpoch { .. } => "stale_epoch",
            ReplError::Deposed { .. } => "deposed",
            ReplError::Protocol(_) => "protocol",
            ReplError::WouldCutCommitted { .. } => "would_cut_committed",
            ReplError::SnapshotPastCut { .. } => "snapshot_past_cut",
            ReplError::SnapshotEncoded { .. } => "snapshot_encoded",
            ReplError::DiscardedForResync => "discarded_for_resync",
            ReplError::Timeout { .. } => "timeout",
            ReplError::Closed(_) => "closed",
            ReplError::Connect(_) => "connect",
            ReplError::Unreadable { .. } => "unreadable",
            ReplError::Send { .. } => "send",
            ReplError::Spawn { .. } => "spawn",
            ReplError::Storage(_) => "storage",
        }
    }

    /// The code the active refuses a standby with, for the errors it
    /// refuses with (the others just close the connection).
    pub fn refuse_code(&self) -> Option<RefuseCode> {
        match self {
            ReplError::NotActive { .. } => Some(RefuseCode::NotActive),
            ReplError::WrongCluster { .. } => Some(RefuseCode::WrongCluster),
            ReplError::BadProof { .. } => Some(RefuseCode::BadProof),
            ReplError::Deposed { .. } | ReplError::StaleEpoch { .. } => {
                Some(RefuseCode::StaleEpoch)
            }
            ReplError::Protocol(_) => Some(RefuseCode::Protocol),
            _ => None,
        }
    }

    /// Whether connecting again may succeed without anyone changing
    /// anything (the cluster moves on, a resync completes, the network
    /// heals). Not: a wrong cluster or token, a broken protocol, a refused
    /// cut, a failed disk.
    pub fn is_retryable(&self) -> bool {
        match self {
            ReplError::Refused { code, .. } => matches!(
                code,
                RefuseCode::NotActive | RefuseCode::StaleEpoch | RefuseCode::NeedsResync
            ),
            ReplError::Unreadable { source, .. } | ReplError::Send { source, .. } => {
                matches!(**source, CodecError::Io(_))
            }
            ReplError::NotActive { .. }
            | ReplError::WrongActive { .. }
            | ReplError::StaleEpoch { .. }
            | ReplError::Deposed { .. }
            | ReplError::DiscardedForResync
            | ReplError::Timeout { .. }
            | ReplError::Closed(_)
            | ReplError::Connect(_) => true,
            ReplError::WrongCluster { .. }
            | ReplError::BadProof { .. }
            | ReplError::Protocol(_)
            | ReplError::WouldCutCommitted { .. }
            | ReplError::SnapshotPastCut { .. }
            | ReplError::SnapshotEncoded { .. }
            | ReplError::Spawn { .. }
            | ReplError::Storage(_) => false,
        }
    }

    /// A frame that could not be read.
    pub(super) fn unreadable(what: &'static str, source: CodecError) -> ReplError {
        ReplError::Unreadable {
            what,
            source: Arc::new(source),
        }
    }

    /// A frame that could not be framed or sent.
    pub(super) fn send(what: &'static str, source: CodecError) -> ReplError {
        ReplError::Send {
            what,
            source: Arc::new(source),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> NodeId {
        NodeId::new(s).unwrap()
    }

    #[test]
    fn refusals_carry_the_code_of_their_kind() {
        let cases = [
            (
                ReplError::NotActive {
                    node: id("a"),
                    active_url: Some("http://b".into()),
                },
                RefuseCode::NotActive,
                "a is not the active; the active is at http://b",
            ),
            (
                ReplError::BadProof {
                    peer: "standby b".into(),
                },
                RefuseCode::BadProof,
                "standby b did not prove it holds the cluster token (wrong token?)",
            ),
            (
                ReplError::Protocol(Violation::OwnNodeId),
                RefuseCode::Protocol,
                "a standby uses this active's own node id",
            ),
            (
                ReplError::Deposed {
                    standby: id("b"),
                    theirs: Epoch(7),
                    ours: Epoch(5),
                },
                RefuseCode::StaleEpoch,
                "standby b has seen epoch 7, newer than ours (5): another replica is active; \
                 stepping down",
            ),
        ];
        for (err, code, text) in cases {
            assert_eq!(err.refuse_code(), Some(code), "{err}");
            assert_eq!(err.to_string(), text);
        }
        assert_eq!(ReplError::Closed("closed before hello").refuse_code(), None);
    }

    #[test]
    fn only_what_the_cluster_fixes_by_itself_is_retryable() {
        assert!(ReplError::Refused {
            code: RefuseCode::NotActive,
            reason: "a is not the active".into(),
        }
        .is_retryable());
        assert!(!ReplError::Refused {
            code: RefuseCode::BadProof,
            reason: "wrong token".into(),
        }
        .is_retryable());
        assert!(ReplError::Closed("the active closed the connection").is_retryable());
        assert!(!ReplError::from(StorageError::LogStopped).is_retryable());
        let too_large = CodecError::TooLarge { len: 9, max: 8 };
        assert!(!ReplError::unreadable("frame", too_large).is_retryable());
    }
}

//! Un-applying a cut tail. In async mode (`sync_standbys = 0`) an active
//! commits on its own fsync, so a resurrected old active may have applied
//! entries that the new active never had. Once they are cut from its log
//! (and quarantined, see `cut.rs`), its state machine must forget them too:
//! it is rebuilt from the local snapshot plus the log up to the cut
//! ([`rewind`]), or — when the snapshot itself already contains cut
//! entries — from scratch, by a full resync from the active
//! ([`discard_for_resync`]; the snapshot goes to `quarantine/` whole).

use std::sync::Arc;

use proto_common::record::{self, Decoded};
use proto_common::Position;

use super::error::ReplError;
use super::quarantine;
use crate::command::Command;
use crate::log::group_commit::LogRequest;
use crate::log::ReadOutcome;
use crate::node::{Node, StorageError};
use crate::snapshot;
use crate::state::KvState;

/// Rebuilds the applied state so that it ends at `after` (the log has
/// already been truncated there, and the newest snapshot is not past it).
pub async fn rewind(node: &Arc<Node>, after: Position) -> Result<(), ReplError> {
    const DOING: &str = "rewinding the state machine";
    let dir = node.data_dir().join("snapshots");
    let snaps = snapshot::list(&dir).map_err(|e| StorageError::io("listing snapshots", e))?;
    let mut state = match snaps.last() {
        Some((pos, _)) if pos.index > after.index => {
            return Err(ReplError::SnapshotPastCut {
                snapshot: *pos,
                after,
            })
        }
        Some((_, path)) => {
            snapshot::read(path)
                .map_err(|e| StorageError::io(format!("{DOING}: reading its snapshot"), e))?
                .0
        }
        None => KvState::default(),
    };
    let mut next = state.applied().index.next();
    while next <= after.index {
        let bytes = match node.reader.read(next, 8 << 20) {
            Ok(ReadOutcome::Entries { bytes, .. }) => bytes,
            Ok(ReadOutcome::Compacted) => {
                return Err(StorageError::Compacted {
                    doing: DOING,
                    index: next,
                }
                .into())
            }
            Ok(ReadOutcome::UpToDate) => {
                return Err(StorageError::EndsEarly {
                    doing: DOING,
                    index: next,
                }
                .into())
            }
            Err(source) => {
                return Err(StorageError::ReadLog {
                    doing: DOING,
                    source,
                }
                .into())
            }
        };
        let mut off = 0;
        while off < bytes.len() {
            let Decoded::Record(r) = record::decode(&bytes[off..]) else {
                return Err(StorageError::BadRecord {
                    doing: DOING,
                    index: next,
                }
                .into());
            };
            if r.position.index > after.index {
                break;
            }
            let payload = bytes.slice(off + record::HEADER_LEN..off + r.encoded_len());
            let cmd = Command::decode(&payload).map_err(|source| StorageError::BadCommand {
                doing: DOING,
                position: r.position,
                source,
            })?;
            state.apply(r.position, &cmd);
            next = r.position.index.next();
            off += r.encoded_len();
        }
    }
    tracing::warn!(to = %after, "rewound the state machine past a cut tail");
    node.replace_state(state);
    Ok(())
}

/// The newest snapshot holds entries after `after`: moves every such
/// snapshot into `quarantine/`, drops the rest of the local state and log,
/// and returns the error that ends the connection, so the next handshake
/// asks the active for everything.
pub async fn discard_for_resync(
    node: &Arc<Node>,
    after: Position,
    reason: &str,
) -> Result<(), ReplError> {
    let dir = node.data_dir().join("snapshots");
    let snaps = snapshot::list(&dir).map_err(|e| StorageError::io("listing snapshots", e))?;
    node.update_node_state(|s| s.commit_hint = s.commit_hint.min(after.index))?;
    for (pos, path) in &snaps {
        if pos.index > after.index {
            tracing::warn!(snapshot = %pos, cut_after = %after,
                "the local snapshot holds cut entries; moving it to quarantine/ for a full resync");
            quarantine::store_snapshot(node.data_dir(), path, *pos, after, reason).map_err(
                |e| StorageError::io(format!("moving {} to quarantine/", path.display()), e),
            )?;
        } else {
            // Holds only entries the active has too.
            std::fs::remove_file(path)
                .map_err(|e| StorageError::io(format!("removing {}", path.display()), e))?;
        }
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    node.log
        .send(LogRequest::Reset {
            base: Position::ZERO,
            history: Vec::new(),
            done: tx,
        })
        .map_err(|_| StorageError::LogStopped)?;
    rx.await
        .map_err(|_| StorageError::LogStopped)?
        .map_err(|e| StorageError::io("resetting the log", e))?;
    node.replace_state(KvState::default());
    Err(ReplError::DiscardedForResync)
}

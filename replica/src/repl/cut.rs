//! Cutting a divergent tail on a standby (DESIGN.md, "Divergence and
//! quarantine"): the active found that this replica's log goes on past
//! their common prefix and sent `Truncate { after }`.
//!
//! The order is what makes it safe:
//! 1. **Check** that the cut is one this replica may make. Entries it
//!    holds as committed are never cut in sync mode (`sync_standbys ≥ 1`):
//!    the commit rule says no promoted replica lacks them, so an active
//!    asking for it is wrong (or not who it claims), and obeying would lose
//!    acknowledged writes. The replica refuses, says why, and does not
//!    follow. In async mode committed entries can be cut — that is the loss
//!    async mode accepts, and the arbiter recorded it when it promoted.
//! 2. **Quarantine** the tail, fsynced, before anything is cut: a crash in
//!    between leaves the entries in both places, never in neither.
//! 3. **Cut** the log, then make the state machine forget what was cut:
//!    drop pending entries, or rebuild from the snapshot (`rewind`), or —
//!    when the snapshot itself holds cut entries — set it aside whole and
//!    resync from the active.

use std::sync::Arc;

use proto_common::heartbeat::ActiveInfo;
use proto_common::{LogIndex, Position};

use super::error::{ReplError, Violation};
use super::{quarantine, rewind};
use crate::log::group_commit::LogRequest;
use crate::log::ReadOutcome;
use crate::node::{Node, StorageError};

/// Cuts every entry after `after` (see the module docs).
pub async fn cut_after(
    node: &Arc<Node>,
    active: &ActiveInfo,
    after: Position,
) -> Result<(), ReplError> {
    let base = node.reader.base();
    let last = node.reader.last();
    if after.index >= last.index {
        return Ok(());
    }
    let ours = node.reader.position_of(after.index);
    if ours != Some(after) && after.index > base.index {
        return Err(Violation::TruncateMismatch { after, ours }.into());
    }
    let committed = node.commit.commit_index_now();
    if after.index < committed.max(node.applied().index) && !node.role().async_mode {
        return Err(ReplError::WouldCutCommitted {
            active: active.node_id.clone(),
            after,
            committed,
        });
    }
    let reason = format!(
        "divergent tail after {after}: the active {} (epoch {}) does not have these entries",
        active.node_id,
        node.role().seen
    );

    let tail = read_from(node, after.index.max(base.index).next())?;
    let dir = node.data_dir().to_path_buf();
    let why = reason.clone();
    let count = tokio::task::spawn_blocking(move || quarantine::store(&dir, &tail, &why))
        .await
        .map_err(|source| StorageError::TaskFailed {
            task: "quarantine",
            source,
        })?
        .map_err(|e| StorageError::io("writing quarantine", e))?;
    if count > 0 {
        node.update_node_state(|s| s.quarantined_entries += count)?;
        node.metrics
            .quarantined_entries
            .set(node.node_state().quarantined_entries as i64);
        tracing::warn!(count, after = %after, "set a divergent tail aside in quarantine/");
    }
    if after.index < base.index {
        return rewind::discard_for_resync(node, after, &reason).await;
    }

    node.update_node_state(|s| s.commit_hint = s.commit_hint.min(after.index))?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    node.log
        .send(LogRequest::Truncate {
            after: after.index,
            done: tx,
        })
        .map_err(|_| StorageError::LogStopped)?;
    rx.await
        .map_err(|_| StorageError::LogStopped)?
        .map_err(|e| StorageError::io("truncating the log", e))?;
    if after.index < node.applied().index {
        match &node.proxy {
            // The upstream was fed entries that are cut: the history is
            // rebuilt to the cut, and the upstream, now ahead of it, is
            // refilled at its next PSYNC.
            Some(core) => {
                node.commit.reset(after);
                core.feed.drop_link();
            }
            None => rewind::rewind(node, after).await?,
        }
    } else {
        node.commit.truncated(after).map_err(StorageError::from)?;
    }
    tracing::warn!(count, after = %after, "cut the divergent tail from the log");
    Ok(())
}

/// The raw records of the log from `from` to its end.
pub fn read_from(node: &Node, from: LogIndex) -> Result<Vec<u8>, StorageError> {
    const DOING: &str = "reading the tail to cut";
    let mut out = Vec::new();
    let mut next = from;
    loop {
        match node.reader.read(next, 8 << 20) {
            Ok(ReadOutcome::Entries { bytes, last, .. }) => {
                out.extend_from_slice(&bytes);
                next = last.index.next();
            }
            Ok(ReadOutcome::UpToDate) => return Ok(out),
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
        }
    }
}

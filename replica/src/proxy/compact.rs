//! Compacting the log in proxy mode (DESIGN.md, "Checkpoints and
//! compaction"): the replica takes an RDB of its own upstream (a Redis
//! replica that wants only the RDB: on the active its upstream is the
//! master, on a standby a replica fed committed entries only), waits until
//! the stream is committed up to the RDB's offset, and keeps it as a
//! checkpoint (`checkpoint.rs`) of the log entries wholly before that
//! offset; then the log segments it covers are deleted, except those a
//! connected standby still needs, and older checkpoints with them.
//!
//! An RDB whose position is not on the committed history (a demoted
//! active's upstream ran effects never committed; the upstream is being
//! refilled) is thrown away: nothing is deleted on its account.

use std::sync::Arc;
use std::time::Duration;

use proto_common::{LogIndex, Position};
use tokio::io::AsyncWriteExt;
use tokio::sync::oneshot;

use super::checkpoint;
use super::rdb::{self, RdbError};
use crate::log::group_commit::LogRequest;
use crate::node::{Node, StorageError};

/// How long the stream may take to be committed up to an RDB's offset
/// (the tap logs what the upstream ran right before the fork).
const COMMIT_WAIT: Duration = Duration::from_secs(30);

/// Why no checkpoint was taken.
#[derive(Debug, thiserror::Error)]
pub enum CompactError {
    #[error("taking an RDB of the upstream: {0}")]
    Rdb(#[from] RdbError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(
        "the upstream's RDB at offset {offset} was not committed within {}s",
        COMMIT_WAIT.as_secs()
    )]
    NotCommitted { offset: u64 },
    #[error(
        "the upstream's RDB at {replid} {offset} is not on the committed history (the \
         upstream is being refilled, or holds effects never committed)"
    )]
    NotOnHistory { replid: String, offset: u64 },
    /// A standby whose upstream does not hold a prefix of the committed
    /// history yet (being refilled): not now, and nothing wrong.
    #[error("the upstream is not in step with the log yet")]
    NotInStep,
}

/// What a checkpoint did.
#[derive(Debug)]
pub struct Compacted {
    /// The last log entry it covers.
    pub position: Position,
    /// The RDB's size.
    pub rdb_bytes: u64,
    /// Log segments deleted.
    pub segments: usize,
}

/// Takes a checkpoint and deletes what it covers, keeping entries from
/// `keep_from` on. `Ok(None)` when the log has nothing before the newest
/// possible checkpoint.
pub async fn take(
    node: &Arc<Node>,
    keep_from: Option<LogIndex>,
) -> Result<Option<Compacted>, CompactError> {
    let core = node.proxy.as_ref().expect("proxy mode");
    if node.role().state.term().is_none() && !core.feed.in_step() {
        return Err(CompactError::NotInStep);
    }
    let _only = node.snapshots.checkpoint.lock().await;
    let dir = node.data_dir().join("checkpoint");
    let io = |doing: &'static str| move |e| StorageError::io(doing, e);
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(io("creating checkpoint/"))?;
    let tmp = dir.join("taking.tmp");
    let result = fill(node, &tmp, keep_from).await;
    if !matches!(result, Ok(Some(_))) {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    result
}

async fn fill(
    node: &Arc<Node>,
    tmp: &std::path::Path,
    keep_from: Option<LogIndex>,
) -> Result<Option<Compacted>, CompactError> {
    let core = node.proxy.as_ref().expect("proxy mode");
    let machine = &core.machine;
    let io = |doing: &'static str| move |e| StorageError::io(doing, e);
    let mut file = tokio::fs::File::create(tmp)
        .await
        .map_err(io("creating the checkpoint file"))?;
    let (replid, offset) = rdb::fetch_into(
        &core.settings.upstream,
        core.settings.upstream_password.as_deref(),
        None,
        &mut file,
    )
    .await?;
    file.flush().await.map_err(io("writing the checkpoint"))?;
    let rdb_bytes = file
        .metadata()
        .await
        .map_err(io("writing the checkpoint"))?
        .len();
    drop(file);
    let mut committed = machine.committed_offset();
    let waited = tokio::time::timeout(COMMIT_WAIT, async {
        committed.wait_for(|o| *o >= offset).await.is_ok()
    })
    .await;
    if waited != Ok(true) {
        return Err(CompactError::NotCommitted { offset });
    }
    let seed = machine
        .seed_for(&replid, offset)
        .ok_or_else(|| CompactError::NotOnHistory {
            replid: replid.to_string(),
            offset,
        })?;
    if seed.index <= node.reader.base().index {
        return Ok(None);
    }
    let position = node
        .reader
        .position_of(seed.index)
        .ok_or(StorageError::Compacted {
            doing: "taking a checkpoint",
            index: seed.index,
        })?;
    let epochs = node.reader.epochs_upto(seed.index);
    let trailer = checkpoint::trailer(position, &seed, &epochs, &replid, offset);
    let dir = node.data_dir().join("checkpoint");
    let (d, t) = (dir.clone(), tmp.to_path_buf());
    tokio::task::spawn_blocking(move || checkpoint::publish(&d, &t, position, &trailer))
        .await
        .map_err(|source| StorageError::TaskFailed {
            task: "checkpoint",
            source,
        })?
        .map_err(io("making the checkpoint durable"))?;
    // From here on the log may lose the entries the checkpoint covers.
    machine.set_seed(seed);
    let (tx, rx) = oneshot::channel();
    node.log
        .send(LogRequest::Compact {
            snapshot: position,
            keep_from,
            done: tx,
        })
        .map_err(|_| StorageError::LogStopped)?;
    let segments = rx
        .await
        .map_err(|_| StorageError::LogStopped)?
        .map_err(io("deleting covered log segments"))?;
    machine.forget_upto(node.reader.base().index);
    tokio::task::spawn_blocking(move || checkpoint::remove_older(&dir, position))
        .await
        .map_err(|source| StorageError::TaskFailed {
            task: "checkpoint",
            source,
        })?
        .map_err(io("deleting older checkpoints"))?;
    node.metrics.snapshots_written.inc();
    Ok(Some(Compacted {
        position,
        rdb_bytes,
        segments,
    }))
}

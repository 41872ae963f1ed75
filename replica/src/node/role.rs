//! What a role change does to the node's storage: opening an epoch in the
//! log for a new term (after the checks a promotion must pass), waiting
//! for appends begun under the old role, persisting the epochs seen. The
//! role itself is decided and published by `role::Roles`; these are the
//! executor's steps (`repl::Replication::execute`).

use proto_common::{Epoch, Position};
use tokio::sync::oneshot;

use super::{Node, PromotionError, StorageError};
use crate::log::group_commit::LogRequest;
use crate::sync_set::SyncSet;

impl Node {
    /// Runs as its own active with no arbiter: keeps the log's epoch (1 for
    /// a new log) and acknowledges after local fsync.
    pub async fn start_standalone(&self) -> Result<(), PromotionError> {
        let epoch = self.reader.last().epoch.max(Epoch(1));
        self.open_epoch(epoch).await?;
        let term = self.roles.standalone(epoch);
        self.commit.lead(term, SyncSet::local());
        Ok(())
    }

    /// Opens `epoch` for a new term, after the checks a promotion must pass:
    /// persists it as our active epoch, then has the log thread write its
    /// first entry (a `Noop`) durably.
    pub async fn open_term(&self, epoch: Epoch) -> Result<Position, PromotionError> {
        let active_epoch = self.node_state().active_epoch;
        if epoch <= active_epoch {
            return Err(PromotionError::EpochTaken {
                epoch,
                active_epoch,
            });
        }
        if let Some(why) = self.proxy.as_ref().and_then(|core| core.problem()) {
            return Err(PromotionError::UpstreamUnusable { epoch, why });
        }
        let last = self.reader.last();
        if epoch < last.epoch {
            return Err(PromotionError::LogAhead {
                epoch,
                log_epoch: last.epoch,
            });
        }
        self.open_epoch(epoch).await
    }

    async fn open_epoch(&self, epoch: Epoch) -> Result<Position, PromotionError> {
        self.update_node_state(|s| {
            s.active_epoch = s.active_epoch.max(epoch);
            s.seen_epoch = s.seen_epoch.max(epoch);
        })?;
        self.metrics
            .epoch
            .set(self.roles.now().seen.max(epoch).0 as i64);
        let (tx, rx) = oneshot::channel();
        self.log
            .send(LogRequest::OpenEpoch { epoch, done: tx })
            .map_err(|_| StorageError::LogStopped)?;
        let opened = rx
            .await
            .map_err(|_| StorageError::LogStopped)?
            .map_err(|e| StorageError::io(format!("cannot open epoch {epoch}"), e))?;
        Ok(opened)
    }

    /// Waits until every append that began before now has ended: after the
    /// role stopped a term's writes, a write accepted a moment earlier is
    /// either in the log when this returns or refused (retryable).
    pub async fn log_barrier(&self) {
        let (tx, rx) = oneshot::channel();
        if self.log.send(LogRequest::Barrier { done: tx }).is_ok() {
            let _ = rx.await;
        }
    }

    /// Records an epoch seen from the arbiter or a frame: in the role, and
    /// durably when new. Returns the highest epoch seen so far.
    pub fn note_epoch(&self, epoch: Epoch) -> Result<Epoch, StorageError> {
        if self.roles.note_epoch(epoch) {
            self.persist_epoch(epoch)?;
        }
        Ok(self.roles.now().seen)
    }

    /// Persists an epoch the role has already noted as seen.
    pub fn persist_epoch(&self, epoch: Epoch) -> Result<(), StorageError> {
        self.update_node_state(|s| s.seen_epoch = s.seen_epoch.max(epoch))?;
        self.metrics.epoch.set(self.roles.now().seen.0 as i64);
        Ok(())
    }
}

//! The node's role transitions: becoming active (standalone or granted an
//! epoch), stopping writes, fencing for a switchover, learning epochs, and
//! the standby's view of the active. Each keeps the role view, the log's
//! write epoch, the commit tracker and the lease in step.

use proto_common::heartbeat::Role;
use proto_common::{Epoch, Position};
use tokio::sync::oneshot;

use super::Node;
use crate::log::group_commit::LogRequest;
use crate::sync_set::SyncSet;

impl Node {
    /// Runs as its own active with no arbiter: keeps the log's epoch (1 for
    /// a new log) and acknowledges after local fsync.
    pub async fn start_standalone(&self) -> Result<(), String> {
        self.lease.make_unlimited();
        let epoch = self.reader.last().epoch.max(Epoch(1));
        self.open_epoch(epoch).await?;
        self.commit.lead(SyncSet::local());
        Ok(())
    }

    /// Starts taking writes in `epoch`: persists it as our active epoch,
    /// then has the log thread open it (a `Noop` at the epoch's first index).
    async fn open_epoch(&self, epoch: Epoch) -> Result<Position, String> {
        self.update_node_state(|s| {
            s.active_epoch = s.active_epoch.max(epoch);
            s.seen_epoch = s.seen_epoch.max(epoch);
        })?;
        let (tx, rx) = oneshot::channel();
        self.log
            .send(LogRequest::SetWriteEpoch {
                epoch: Some(epoch),
                done: tx,
            })
            .map_err(|_| "the group-commit thread stopped".to_string())?;
        let pos = rx
            .await
            .map_err(|_| "the group-commit thread stopped".to_string())?
            .map_err(|e| format!("cannot open epoch {epoch}: {e}"))?;
        let mut role = self.role.write();
        role.role = Role::Active;
        role.write_epoch = Some(epoch);
        role.epoch = role.epoch.max(epoch);
        role.active_url = None;
        role.not_writable = None;
        role.fenced_for = None;
        self.metrics.epoch.set(role.epoch.0 as i64);
        drop(role);
        self.active_changed.notify_waiters();
        Ok(pos)
    }

    /// Becomes the active in `epoch` (a grant for the epoch we already write
    /// in is a renewal and changes nothing). Refuses an epoch this replica
    /// was active in before a restart (node_state.rs explains why).
    pub async fn become_active(&self, epoch: Epoch) -> Result<Position, String> {
        if self.role.read().write_epoch == Some(epoch) {
            return Ok(self.commit.durable());
        }
        let persisted = self.node_state().active_epoch;
        if epoch <= persisted {
            return Err(format!(
                "refusing to become active in epoch {epoch}: this replica already took writes in \
                 epoch {persisted} before it restarted or stepped down, and may have shipped entries \
                 it no longer has; the arbiter must open a new epoch"
            ));
        }
        if let Some(core) = &self.proxy {
            if let Some(why) = core.needs_resync() {
                return Err(format!(
                    "refusing to become active in epoch {epoch}: this replica's upstream must \
                     first be filled from the active's ({why})"
                ));
            }
            core.not_fresh();
        }
        let last = self.reader.last();
        if epoch < last.epoch {
            return Err(format!(
                "refusing to become active in epoch {epoch}: the log already holds epoch {}",
                last.epoch
            ));
        }
        self.open_epoch(epoch).await
    }

    /// Stops taking writes at once: the lease is revoked, the log thread
    /// refuses writes of the old epoch, waiting clients are told the outcome
    /// is unknown.
    pub async fn stop_writes(&self, why: &str) {
        self.lease.revoke();
        {
            let mut role = self.role.write();
            role.role = Role::Standby;
            role.write_epoch = None;
            role.fenced_for = None;
            role.not_writable = Some(why.to_string());
        }
        self.set_log_epoch(None).await;
        self.commit.follow(why);
    }

    /// Records an epoch seen from the arbiter or a frame (persisted when
    /// new). Returns the highest epoch seen so far.
    pub fn note_epoch(&self, epoch: Epoch) -> Result<Epoch, String> {
        let current = self.role.read().epoch;
        if epoch <= current {
            return Ok(current);
        }
        self.update_node_state(|s| s.seen_epoch = s.seen_epoch.max(epoch))?;
        let mut role = self.role.write();
        role.epoch = role.epoch.max(epoch);
        self.metrics.epoch.set(role.epoch.0 as i64);
        Ok(role.epoch)
    }

    /// Stops taking new writes for a planned switchover to `target`. New
    /// writes are refused at intake, and the log thread stops its epoch, so
    /// a write accepted a moment earlier is either in the log when this
    /// returns or refused (retryable) — "drained" can then be judged from
    /// the log alone. Writes already in the log still commit and ship.
    pub async fn fence(&self, target: &proto_common::NodeId) {
        {
            let mut role = self.role.write();
            if role.write_epoch.is_none() {
                return;
            }
            role.fenced_for = Some(target.clone());
            role.not_writable = Some(format!(
                "a planned switchover to {target} is under way; retry in a moment"
            ));
        }
        self.set_log_epoch(None).await;
    }

    /// The switchover was cancelled: take writes again in the same epoch.
    pub async fn unfence(&self) {
        let epoch = {
            let mut role = self.role.write();
            role.fenced_for = None;
            if role.write_epoch.is_some() {
                role.not_writable = None;
            }
            role.write_epoch
        };
        if epoch.is_some() {
            self.set_log_epoch(epoch).await;
        }
    }

    async fn set_log_epoch(&self, epoch: Option<Epoch>) {
        let (tx, rx) = oneshot::channel();
        if self
            .log
            .send(LogRequest::SetWriteEpoch { epoch, done: tx })
            .is_ok()
        {
            if let Ok(Err(e)) = rx.await {
                tracing::error!(error = %e, "the log refused the epoch change");
            }
        }
    }

    /// Sets what a standby tells clients about the active.
    pub fn set_standby_view(&self, active_url: Option<String>, not_writable: String) {
        let mut role = self.role.write();
        if role.write_epoch.is_none() {
            let changed = role.active_url != active_url;
            role.active_url = active_url;
            role.not_writable = Some(not_writable);
            drop(role);
            if changed {
                self.active_changed.notify_waiters();
            }
        }
    }
}

//! The write path of a node: the checks a client write passes at intake
//! (the role's guard, a failed log, strict mode, the bound on pending
//! writes), then the commit on the caller's thread or in the group-commit
//! thread's next batch, and the guard's check right before the answer.

use std::time::Instant;

use tokio::sync::oneshot;

use super::Node;
use crate::command::Command;
use crate::commit::{WriteAck, WriteError};
use crate::log::group_commit::LogRequest;
use crate::role::ActiveGuard;

impl Node {
    /// Submits a client write under `guard` (the right to write, taken from
    /// the role at intake) and waits for its commit. The guard is checked
    /// again once the write is committed, right before the answer: a
    /// process paused past its lease answers "outcome unknown", never "ok".
    pub async fn write(
        &self,
        guard: &ActiveGuard,
        command: Command,
    ) -> Result<WriteAck, WriteError> {
        if let Some(why) = self.commit.failure() {
            // Refused before it was written: retrying elsewhere is safe,
            // and another replica takes over once this one stepped down.
            return Err(WriteError::NotWritable(format!(
                "this replica's write log failed ({why}); it takes no more writes and steps \
                 down so that another replica can take over; retry"
            )));
        }
        if let Some(why) = self.commit.refuses_writes() {
            return Err(WriteError::NoSyncStandby(why));
        }
        // Held until the write is answered: bounds what waits in the log's
        // queue and for the commit rule.
        let Ok(_permit) = self.write_permits.try_acquire() else {
            return Err(WriteError::Overloaded(format!(
                "{} writes are already waiting to be committed (max_pending_writes); nothing \
                 was written — retry after a pause",
                self.settings.limits.max_pending_writes
            )));
        };
        let _in_flight = self.idle_poll.busy();
        let payload = command.encode();
        let (tx, rx) = oneshot::channel();
        let mut req = LogRequest::Write {
            epoch: guard.epoch(),
            command,
            payload,
            responder: tx,
            received: Instant::now(),
        };
        // A lone writer whose commit needs only the local fsync commits on
        // its own thread (no handoff each way); when a batch is being
        // written it joins the group-commit thread's next batch instead.
        // With a sync set the answer waits for a standby anyway, and
        // blocking a worker would only slow the acks down.
        // Only a worker of a multi-threaded runtime may block in place (a
        // proxy-mode session runs on a single-threaded one).
        let may_block = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        let answer = 'sent: {
            if may_block && !self.log.direct().is_busy() && self.commit.commits_locally() {
                match tokio::task::block_in_place(|| self.log.direct().try_write_inline(req)) {
                    Ok(()) => break 'sent rx.await,
                    Err(back) => req = *back,
                }
            }
            self.log
                .send(req)
                .map_err(|_| WriteError::Storage("the group-commit thread stopped".into()))?;
            rx.await
        };
        let ack = answer.unwrap_or_else(|_| Err(dropped()))?;
        if guard.check_committed().is_err() {
            return Err(WriteError::Indeterminate(format!(
                "the lease ended before the answer for write {} could be sent; it is committed \
                 here but a failover may be under way — read it back from the active",
                ack.position
            )));
        }
        if let Some(left) = guard.term().lease().remaining_nanos() {
            self.metrics
                .observe_lease_margin(left, guard.term().lease().length_nanos());
        }
        Ok(ack)
    }
}

impl Node {
    /// Queues an entry under `guard` without waiting for its commit (the
    /// proxy's tap, which follows the committed offset instead); it is
    /// written in the group-commit thread's next batch, or refused there
    /// if the term no longer writes.
    pub fn append(
        &self,
        guard: &ActiveGuard,
        command: Command,
    ) -> Result<oneshot::Receiver<crate::pending::WriteResult>, WriteError> {
        if let Some(why) = self.commit.failure() {
            return Err(WriteError::NotWritable(format!(
                "this replica's write log failed ({why})"
            )));
        }
        let payload = command.encode();
        let (tx, rx) = oneshot::channel();
        self.log
            .send(LogRequest::Write {
                epoch: guard.epoch(),
                command,
                payload,
                responder: tx,
                received: Instant::now(),
            })
            .map_err(|_| WriteError::Storage("the group-commit thread stopped".into()))?;
        Ok(rx)
    }
}

/// The log thread dropped a write it had taken without answering: it may
/// have been written.
fn dropped() -> WriteError {
    WriteError::Indeterminate(
        "the write log stopped before answering this write; it may or may not have been \
         written — read it back before retrying"
            .into(),
    )
}

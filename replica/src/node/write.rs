//! The write path of a node: the checks a client write passes at intake
//! (role, switchover fence, lease, a failed log, strict mode, the bound on
//! pending writes), then the commit on the caller's thread or in the
//! group-commit thread's next batch, and the answer.

use std::time::Instant;

use tokio::sync::oneshot;

use super::Node;
use crate::command::Command;
use crate::commit::{WriteAck, WriteError};
use crate::log::group_commit::LogRequest;

impl Node {
    /// Submits a client write and waits for its commit. Checks the lease
    /// on the way in; the commit tracker checks it again on the way out.
    pub async fn write(&self, command: Command) -> Result<WriteAck, WriteError> {
        let epoch =
            {
                let role = self.role.read();
                if role.fenced_for.is_some() {
                    return Err(WriteError::NotWritable(
                        role.not_writable
                            .clone()
                            .unwrap_or_else(|| "a planned switchover is under way".into()),
                    ));
                }
                match role.write_epoch {
                    Some(e) if self.lease.is_valid() => e,
                    Some(_) => return Err(WriteError::NotWritable(
                        "this replica's lease as active has lapsed (it cannot reach the arbiter); \
                         writes resume when the arbiter renews it or another replica takes over"
                            .into(),
                    )),
                    None => {
                        return Err(WriteError::NotWritable(
                            role.not_writable
                                .clone()
                                .unwrap_or_else(|| "this replica is not the active".into()),
                        ))
                    }
                }
            };
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
            epoch,
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
        if may_block && !self.log.direct().is_busy() && self.commit.commits_locally() {
            match tokio::task::block_in_place(|| self.log.direct().try_write_inline(req)) {
                Ok(()) => return rx.await.unwrap_or_else(|_| Err(dropped())),
                Err(back) => req = *back,
            }
        }
        self.log
            .send(req)
            .map_err(|_| WriteError::Storage("the group-commit thread stopped".into()))?;
        rx.await.unwrap_or_else(|_| Err(dropped()))
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

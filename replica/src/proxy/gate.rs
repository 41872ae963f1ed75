//! The reply gate (DESIGN.md, "Proxy mode"): no reply reveals an effect
//! before it is committed. A reply leaves only once the log has committed
//! the stream up to an offset that covers it (the offset probe's, taken
//! after the reply arrived: `probe.rs`), and only while the active's term
//! may answer.
//!
//! One rule, one type; the committed offset comes from a `watch` channel
//! (the stream machine's in a replica, a plain sender in tests).

use tokio::sync::watch;

use crate::role::{ActiveGuard, NotActive};

/// Why a reply may not be released.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Held {
    /// The term ended or its lease ran out before the reply's effects were
    /// committed and answered.
    #[error("{0}")]
    NotActive(#[from] NotActive),
    /// The committed offset stopped being published (the replica is
    /// shutting down or the stream machine was replaced).
    #[error("the replica stopped committing the upstream's stream")]
    Stopped,
}

/// Releases replies once their offset is committed.
#[derive(Clone, Debug)]
pub struct ReplyGate {
    committed: watch::Receiver<u64>,
}

impl ReplyGate {
    pub fn new(committed: watch::Receiver<u64>) -> ReplyGate {
        ReplyGate { committed }
    }

    /// The committed offset now.
    pub fn committed(&self) -> u64 {
        *self.committed.borrow()
    }

    /// Waits until the stream is committed up to `offset`, then checks
    /// `guard` at that moment: `Ok` means the reply may be written now. A
    /// lease that runs out meanwhile ends the wait at once (the commit may
    /// never come: the active is cut off), as does the term's end.
    pub async fn release(&mut self, offset: u64, guard: &ActiveGuard) -> Result<(), Held> {
        loop {
            if *self.committed.borrow_and_update() >= offset {
                guard.check()?;
                return Ok(());
            }
            guard.check()?;
            let lease = guard.term().lease();
            let moved = lease.changed();
            tokio::pin!(moved);
            // Registered before the deadline is read: a revocation in
            // between still wakes this wait.
            moved.as_mut().enable();
            let deadline = async {
                match lease.remaining_nanos() {
                    Some(n) => tokio::time::sleep(std::time::Duration::from_nanos(n)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = self.committed.changed() => r.map_err(|_| Held::Stopped)?,
                _ = &mut moved => {}
                _ = deadline => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::role::Roles;
    use crate::sync_set::SyncSet;
    use proto_common::{clock, Epoch, NodeId};
    use std::time::Duration;

    fn active() -> (Roles, ActiveGuard) {
        let roles = Roles::new(NodeId::new("a").unwrap(), Epoch(0), Epoch(0));
        roles.grant(
            Epoch(1),
            SyncSet::local(),
            (clock::now_nanos(), Duration::from_secs(60)),
        );
        roles.opened(Epoch(1)).unwrap();
        let guard = roles.writer().unwrap();
        (roles, guard)
    }

    #[tokio::test]
    async fn a_reply_waits_for_its_offset_and_no_longer() {
        let (_roles, guard) = active();
        let (committed, rx) = watch::channel(100u64);
        let mut gate = ReplyGate::new(rx);
        // At or below the committed offset: at once.
        gate.release(100, &guard).await.unwrap();
        gate.release(7, &guard).await.unwrap();
        // Above: only once the offset is committed.
        let waiting = {
            let mut gate = gate.clone();
            let guard = guard.clone();
            tokio::spawn(async move { gate.release(150, &guard).await })
        };
        committed.send_replace(149);
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "released below its offset");
        committed.send_replace(150);
        waiting.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn nothing_leaves_once_the_term_has_ended() {
        let (roles, guard) = active();
        let (committed, rx) = watch::channel(0u64);
        let mut gate = ReplyGate::new(rx);
        let waiting = {
            let mut gate = gate.clone();
            let guard = guard.clone();
            tokio::spawn(async move { gate.release(10, &guard).await })
        };
        roles.step_down("the upstream cannot be used");
        committed.send_replace(10);
        assert_eq!(
            waiting.await.unwrap(),
            Err(Held::NotActive(NotActive::LeaseLapsed))
        );
        assert!(gate.release(0, &guard).await.is_err());
    }

    #[tokio::test]
    async fn a_lease_that_runs_out_ends_the_wait_at_once() {
        let roles = Roles::new(NodeId::new("a").unwrap(), Epoch(0), Epoch(0));
        roles.grant(
            Epoch(1),
            SyncSet::local(),
            (clock::now_nanos(), Duration::from_millis(50)),
        );
        roles.opened(Epoch(1)).unwrap();
        let guard = roles.writer().unwrap();
        let (_committed, rx) = watch::channel(0u64);
        let mut gate = ReplyGate::new(rx);
        // Nothing commits: only the lease's end answers the reply.
        let held = tokio::time::timeout(Duration::from_secs(10), gate.release(10, &guard)).await;
        assert_eq!(
            held.expect("answered when the lease ran out"),
            Err(Held::NotActive(NotActive::LeaseLapsed))
        );
    }

    #[tokio::test]
    async fn a_gate_whose_source_is_gone_says_so() {
        let (_roles, guard) = active();
        let (committed, rx) = watch::channel(0u64);
        let mut gate = ReplyGate::new(rx);
        drop(committed);
        assert_eq!(gate.release(5, &guard).await, Err(Held::Stopped));
    }
}

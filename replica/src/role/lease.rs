//! The active's lease: until when may this replica answer as the active?
//!
//! The rule (DESIGN.md, "The lease"): the active may accept and acknowledge
//! writes only until `t_send + lease_ms·(1 − drift)` on its own clock, where
//! `t_send` is when it sent the heartbeat that the arbiter answered with
//! "active, epoch E". The arbiter waits until `t_grant + lease_ms·(1 +
//! drift)` on its clock before naming anyone else; since `t_send < t_grant`
//! and clock rates differ by less than `drift`, this lease has ended before
//! another active begins.
//!
//! Each term (`term.rs`) has a lease of its own; `Term::may_answer` is its
//! only reader for that question, and `lapse.rs` answers the writes that
//! wait for a commit when it runs out.

use std::sync::atomic::{AtomicU64, Ordering};

use proto_common::clock;
use tokio::sync::Notify;

/// Deadline of a term's current grant: the role machine extends it, the
/// term's guards check it.
#[derive(Debug, Default)]
pub struct Lease {
    /// `clock::now_nanos()` value until which writes may be acknowledged;
    /// 0 = no lease; `u64::MAX` = standalone (no arbiter, always own active).
    until: AtomicU64,
    /// The length of the last grant, ns (for the margin metric).
    length: AtomicU64,
    /// Woken whenever the deadline moves.
    changed: Notify,
}

impl Lease {
    /// A lease that never ends: a standalone replica is its own active.
    pub(super) fn unlimited() -> Lease {
        Lease {
            until: AtomicU64::new(u64::MAX),
            length: AtomicU64::new(0),
            changed: Notify::new(),
        }
    }

    /// Extends the lease after a grant for a heartbeat sent at `t_send`.
    /// Never shortens it: an older reply arriving late changes nothing.
    pub(super) fn grant(&self, t_send: u64, duration: std::time::Duration) {
        // Capped below `u64::MAX`, which means "unlimited".
        let until = t_send
            .saturating_add(duration.as_nanos() as u64)
            .min(u64::MAX - 1);
        self.length
            .store(duration.as_nanos() as u64, Ordering::Relaxed);
        self.until.fetch_max(until, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    /// Ends the lease at once (demotion, switchover fence).
    pub(super) fn revoke(&self) {
        self.until.store(0, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    /// Whether writes may be acknowledged now (ask the term: `Term::may_answer`).
    pub(super) fn is_valid(&self) -> bool {
        self.is_valid_at(clock::now_nanos())
    }

    /// Whether writes may be acknowledged at `now` (a `clock::now_nanos()`
    /// reading).
    pub(super) fn is_valid_at(&self, now: u64) -> bool {
        let until = self.until.load(Ordering::SeqCst);
        until == u64::MAX || now < until
    }

    /// Completes when the deadline moves (a grant, a revocation). Register
    /// it (`enable`) before reading the deadline, so no move is missed.
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }

    /// The length of the last grant, ns (0 before any).
    pub fn length_nanos(&self) -> u64 {
        self.length.load(Ordering::Relaxed)
    }

    /// Nanoseconds left (0 when lapsed); `None` when unlimited.
    pub fn remaining_nanos(&self) -> Option<u64> {
        self.remaining_nanos_at(clock::now_nanos())
    }

    /// Nanoseconds left at `now` (0 when lapsed); `None` when unlimited.
    pub fn remaining_nanos_at(&self, now: u64) -> Option<u64> {
        let until = self.until.load(Ordering::SeqCst);
        if until == u64::MAX {
            return None;
        }
        Some(until.saturating_sub(now))
    }
}

#[cfg(test)]
mod tests {
    //! Times here are made up, not read from the clock: the lease's
    //! arithmetic must not depend on how long the machine has been up.

    use super::*;
    use std::time::Duration;

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn grant_extends_and_never_shortens() {
        for now in [5 * SEC, 10 * 365 * 86_400 * SEC] {
            let lease = Lease::default();
            assert!(!lease.is_valid_at(now));
            lease.grant(now, Duration::from_secs(60));
            assert!(lease.is_valid_at(now + 59 * SEC));
            lease.grant(now - 4 * SEC, Duration::from_millis(1));
            assert!(
                lease.is_valid_at(now + 59 * SEC),
                "a stale grant shortened the lease"
            );
            assert!(!lease.is_valid_at(now + 60 * SEC));
            lease.revoke();
            assert!(!lease.is_valid_at(now));
        }
    }

    #[test]
    fn lapsed_grant_is_invalid() {
        let lease = Lease::default();
        lease.grant(3 * SEC, Duration::from_secs(1));
        assert!(lease.is_valid_at(3 * SEC));
        assert_eq!(lease.remaining_nanos_at(3 * SEC + 1), Some(SEC - 1));
        assert!(!lease.is_valid_at(4 * SEC));
        assert_eq!(lease.remaining_nanos_at(5 * SEC), Some(0));
        assert!(Lease::unlimited().is_valid_at(u64::MAX - 1));
        assert_eq!(Lease::unlimited().remaining_nanos_at(0), None);
    }

    #[test]
    fn a_grant_near_the_end_of_the_clock_saturates() {
        let lease = Lease::default();
        lease.grant(u64::MAX - SEC, Duration::from_secs(60));
        assert!(lease.is_valid_at(u64::MAX - 2));
        assert_eq!(
            lease.remaining_nanos_at(u64::MAX - 2),
            Some(1),
            "not unlimited"
        );
    }
}

//! `Term`: one stretch of leadership of this arbiter process, and the one
//! question every grant asks of it — do we still hold it?
//!
//! A term won in etcd is valid until the earliest of:
//!
//! - its **deadline**: `s + ttl·(1 − drift)` on our monotonic clock, where
//!   `s` is when we *sent* the last keep-alive etcd acknowledged (or the
//!   lease grant). etcd restarted the lease's TTL on receiving it, after
//!   `s`; with clock rates within `drift`, etcd cannot have expired the
//!   lease — and nobody else can have created the leader key — before our
//!   deadline (see [`crate::election`] for the whole argument);
//! - an explicit **end**: etcd reports the lease gone, the leader key
//!   changed or vanished, the server is shutting down. The first reason is
//!   kept.
//!
//! [`Term::holds`] is a lock-free check (two atomics and a clock read), so
//! the heartbeat path asks it after building every reply. A file-store
//! arbiter has one [`Term::unbounded`] term for its whole life.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::clock::Clock;
use crate::core::Millis;
use crate::store::etcd::Fence;

/// A deadline that never passes (file store: the lock is ours for life).
const NEVER: u64 = u64::MAX;

/// One term of leadership; clones share it.
#[derive(Clone, Debug)]
pub struct Term {
    /// Shared between the keep-alive task, the watch on our key, the shell
    /// and the server loop.
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// 1, 2, … per process, for logs.
    number: u64,
    /// The leader key as our campaign created it; `None` for an unbounded
    /// (file store) term.
    fence: Option<Fence>,
    /// The clock deadlines are measured on (`CLOCK_BOOTTIME`: keeps counting
    /// while the machine is suspended, so a resumed arbiter sees its term
    /// has run out instead of believing it still holds it).
    clock: Clock,
    /// `Millis` on `clock` until which the term holds; only ever raised.
    valid_until: AtomicU64,
    /// Set once by [`Term::end`]; never cleared.
    ended: AtomicBool,
    /// Why it ended (the first reason given).
    reason: Mutex<Option<String>>,
    /// Wakes [`Term::ended`] waiters.
    ended_tx: watch::Sender<bool>,
}

impl Term {
    /// A term without a deadline, for the single arbiter of a file store.
    pub fn unbounded(clock: Clock) -> Term {
        Term::new(0, None, clock, Millis(NEVER))
    }

    /// Term `number`, won with `fence`, valid until `valid_until` unless
    /// extended by keep-alives.
    pub fn elected(number: u64, fence: Fence, clock: Clock, valid_until: Millis) -> Term {
        Term::new(number, Some(fence), clock, valid_until)
    }

    fn new(number: u64, fence: Option<Fence>, clock: Clock, valid_until: Millis) -> Term {
        let (ended_tx, _) = watch::channel(false);
        Term {
            inner: Arc::new(Inner {
                number,
                fence,
                clock,
                valid_until: AtomicU64::new(valid_until.0),
                ended: AtomicBool::new(false),
                reason: Mutex::new(None),
                ended_tx,
            }),
        }
    }

    /// The term's number in this process (0: unbounded).
    pub fn number(&self) -> u64 {
        self.inner.number
    }

    /// The leader key our campaign created (`None`: unbounded term).
    pub fn fence(&self) -> Option<Fence> {
        self.inner.fence
    }

    /// Whether we still lead: not ended, deadline not passed. A grant may
    /// only be sent if this holds *after* the grant was recorded.
    pub fn holds(&self) -> bool {
        !self.inner.ended.load(Ordering::SeqCst)
            && self.inner.clock.now().0 < self.inner.valid_until.load(Ordering::SeqCst)
    }

    /// Milliseconds until the deadline (0 if passed; `None`: unbounded).
    pub fn left_ms(&self) -> Option<u64> {
        let until = self.inner.valid_until.load(Ordering::SeqCst);
        (until != NEVER).then(|| self.inner.clock.now().until(Millis(until)))
    }

    /// Moves the deadline to `until` if that is later (a keep-alive was
    /// acknowledged). Has no effect once the term ended.
    pub fn extend(&self, until: Millis) {
        self.inner.valid_until.fetch_max(until.0, Ordering::SeqCst);
    }

    /// Ends the term now (idempotent; the first reason is kept and logged).
    pub fn end(&self, reason: impl Into<String>) {
        let reason = reason.into();
        {
            let mut slot = self.inner.reason.lock().unwrap_or_else(|p| p.into_inner());
            if slot.is_some() {
                return;
            }
            tracing::warn!(term = self.inner.number, reason = %reason, "leadership term ends");
            *slot = Some(reason);
        }
        self.inner.ended.store(true, Ordering::SeqCst);
        self.inner.ended_tx.send_replace(true);
    }

    /// Why the term ended, once it has.
    pub fn reason(&self) -> Option<String> {
        self.inner
            .reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Resolves when the term ends — explicitly, or when its deadline
    /// passes without a keep-alive moving it (which then ends it) — with
    /// the reason.
    pub async fn ended(&self) -> String {
        let mut rx = self.inner.ended_tx.subscribe();
        loop {
            if let Some(reason) = self.reason() {
                return reason;
            }
            let until = self.inner.valid_until.load(Ordering::SeqCst);
            let now = self.inner.clock.now();
            if until != NEVER && now.0 >= until {
                self.end(format!(
                    "no keep-alive acknowledged in time: the term's deadline passed {} ms ago",
                    now.since(Millis(until))
                ));
                continue;
            }
            let sleep = std::time::Duration::from_millis(now.until(Millis(until)).max(1));
            tokio::select! {
                _ = rx.changed() => {}
                _ = tokio::time::sleep(sleep), if until != NEVER => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn fence() -> Fence {
        Fence {
            lease_id: 7,
            create_revision: 42,
        }
    }

    #[tokio::test]
    async fn a_term_lapses_at_its_deadline_unless_extended() {
        let clock = Clock::start();
        let term = Term::elected(1, fence(), clock, clock.now() + 40);
        assert!(term.holds());
        term.extend(clock.now() + 80);
        term.extend(clock.now() + 10); // never moves back
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(term.holds(), "extended past 50 ms");
        let reason = tokio::time::timeout(Duration::from_secs(2), term.ended())
            .await
            .expect("the deadline ends the term");
        assert!(reason.contains("deadline passed"), "{reason}");
        assert!(!term.holds());
        term.extend(clock.now() + 10_000);
        assert!(!term.holds(), "an ended term stays ended");
    }

    #[tokio::test]
    async fn the_first_reason_wins_and_wakes_waiters() {
        let clock = Clock::start();
        let term = Term::elected(2, fence(), clock, clock.now() + 60_000);
        let waiter = tokio::spawn({
            let term = term.clone();
            async move { term.ended().await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        term.end("keep-alive failed");
        term.end("shutting down");
        assert_eq!(waiter.await.unwrap(), "keep-alive failed");
        assert_eq!(term.reason().as_deref(), Some("keep-alive failed"));
    }

    #[tokio::test]
    async fn an_unbounded_term_holds_until_ended() {
        let term = Term::unbounded(Clock::start());
        assert!(term.holds());
        assert_eq!(term.left_ms(), None);
        assert_eq!(term.fence(), None);
        term.end("shutting down");
        assert!(!term.holds());
    }
}

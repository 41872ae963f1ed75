//! A term: one epoch in which this replica is the active, with its lease,
//! and the guard every answer of an active is given through.
//!
//! The lease rule (DESIGN.md, "The lease") is checked here and nowhere
//! else: [`Term::may_answer`] is the only reader of [`Lease::is_valid`].
//! Code that answers a client as the active holds an [`ActiveGuard`],
//! obtained from the role ([`super::Roles::writer`] and its siblings), and
//! calls [`ActiveGuard::check`] at the moment of the answer. A term that
//! ended (demotion, a newer epoch seen, a step-down) answers nothing, even
//! if a late grant extended its lease: a new term is a new value.
//!
//! One exception, for writes already committed: a term that ended by a
//! drained handover (a planned switchover whose target acknowledged every
//! entry of the term, and no write was taken after) may still acknowledge
//! them ([`ActiveGuard::check_committed`]): the new active holds each of
//! them, so the late "ok" is only a slow answer, never a lost write. Reads
//! and new writes are refused as after any other end.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use proto_common::{Epoch, NodeId};

use super::lease::Lease;

/// One epoch as the active.
#[derive(Debug)]
pub struct Term {
    epoch: Epoch,
    /// Until when this term may answer; renewed by the arbiter's grants.
    lease: Lease,
    /// Set once when the term ends; never cleared.
    ended: AtomicBool,
    /// Set when it ended by a drained handover (see the module docs).
    handed_over: AtomicBool,
}

impl Term {
    /// A term whose lease starts lapsed (the grant that created it renews it).
    pub fn new(epoch: Epoch) -> Arc<Term> {
        Arc::new(Term {
            epoch,
            lease: Lease::default(),
            ended: AtomicBool::new(false),
            handed_over: AtomicBool::new(false),
        })
    }

    /// A standalone replica's term: its lease never ends.
    pub fn unlimited(epoch: Epoch) -> Arc<Term> {
        Arc::new(Term {
            epoch,
            lease: Lease::unlimited(),
            ended: AtomicBool::new(false),
            handed_over: AtomicBool::new(false),
        })
    }

    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// Whether this term may answer a client now: it has not ended and
    /// its lease holds. The one place the lease is read for that.
    pub fn may_answer(&self) -> bool {
        !self.ended.load(Ordering::SeqCst) && self.lease.is_valid()
    }

    pub fn has_ended(&self) -> bool {
        self.ended.load(Ordering::SeqCst)
    }

    /// The lease, for its deadline (the lapse watch, status, metrics).
    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    /// Extends the lease after a grant for a heartbeat sent at `t_send`.
    pub(super) fn renew(&self, t_send: u64, length: Duration) {
        self.lease.grant(t_send, length);
    }

    /// Ends the term at once: every guard of it fails from now on.
    pub(super) fn end(&self) {
        self.ended.store(true, Ordering::SeqCst);
        self.lease.revoke();
    }

    /// Ends the term by a drained handover: its committed writes are all
    /// held by the new active and may still be acknowledged.
    pub(super) fn end_handed_over(&self) {
        self.handed_over.store(true, Ordering::SeqCst);
        self.end();
    }

    /// Whether a write this term committed may be acknowledged now.
    fn may_acknowledge_committed(&self) -> bool {
        self.may_answer() || self.handed_over.load(Ordering::SeqCst)
    }
}

/// Why this replica may not answer as the active right now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotActive {
    /// A standby (or becoming the active, or stepped down): `why` says
    /// which; `active_url` is the active's client API, when known.
    #[error("{why}")]
    Standby {
        why: String,
        active_url: Option<String>,
    },
    /// Handing over to `target` in a planned switchover.
    #[error("a planned switchover to {target} is under way; retry in a moment")]
    Fenced { target: NodeId },
    /// The lease ran out (the arbiter is unreachable) or the term ended.
    #[error(
        "this active's lease has lapsed (it cannot reach the arbiter); it answers again when \
         the arbiter renews it or another replica takes over; retry"
    )]
    LeaseLapsed,
    /// Active in `epoch`, but its first entry is not applied yet: writes
    /// acknowledged by an earlier active may still wait here.
    #[error(
        "this replica became the active in epoch {epoch} and has not yet committed its first \
         entry, so writes acknowledged before may not be visible yet; retry in a moment"
    )]
    CatchingUp { epoch: Epoch },
}

impl NotActive {
    /// Whether the request should go to the active (this replica is a
    /// standby) rather than be refused here.
    pub fn is_standby(&self) -> bool {
        matches!(self, NotActive::Standby { .. })
    }
}

/// The right to answer one request as the active in one term. Obtained
/// from the role; checked again right before the answer leaves.
#[derive(Debug, Clone)]
pub struct ActiveGuard {
    term: Arc<Term>,
}

impl ActiveGuard {
    pub(super) fn new(term: Arc<Term>) -> ActiveGuard {
        ActiveGuard { term }
    }

    /// The epoch writes under this guard are stamped with.
    pub fn epoch(&self) -> Epoch {
        self.term.epoch
    }

    /// Re-checks the lease at the moment of the answer: a process paused
    /// past its lease (SIGSTOP, a VM stall) answers nothing when it resumes.
    pub fn check(&self) -> Result<(), NotActive> {
        if self.term.may_answer() {
            Ok(())
        } else {
            Err(NotActive::LeaseLapsed)
        }
    }

    /// [`ActiveGuard::check`] for the answer of a write this term has
    /// already committed: also passes once the term ended by a drained
    /// handover (the new active holds the write).
    pub fn check_committed(&self) -> Result<(), NotActive> {
        if self.term.may_acknowledge_committed() {
            Ok(())
        } else {
            Err(NotActive::LeaseLapsed)
        }
    }

    /// The term, for a socket that re-checks it on every write (`api::gate`).
    pub fn term(&self) -> &Arc<Term> {
        &self.term
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto_common::clock;

    #[test]
    fn a_guard_fails_once_its_term_ends_even_if_the_lease_is_renewed() {
        let term = Term::new(Epoch(3));
        let guard = ActiveGuard::new(term.clone());
        assert_eq!(guard.check(), Err(NotActive::LeaseLapsed), "no grant yet");
        term.renew(clock::now_nanos(), Duration::from_secs(60));
        assert_eq!(guard.check(), Ok(()));
        term.end();
        assert_eq!(guard.check(), Err(NotActive::LeaseLapsed));
        term.renew(clock::now_nanos(), Duration::from_secs(60));
        assert_eq!(
            guard.check(),
            Err(NotActive::LeaseLapsed),
            "an ended term stays ended"
        );
        assert!(term.has_ended());
    }

    #[test]
    fn a_term_handed_over_acknowledges_committed_writes_and_nothing_else() {
        let term = Term::new(Epoch(2));
        term.renew(clock::now_nanos(), Duration::from_secs(60));
        let guard = ActiveGuard::new(term.clone());
        term.end_handed_over();
        assert_eq!(guard.check(), Err(NotActive::LeaseLapsed));
        assert_eq!(guard.check_committed(), Ok(()));
        let other = Term::new(Epoch(3));
        other.renew(clock::now_nanos(), Duration::from_secs(60));
        other.end();
        let guard = ActiveGuard::new(other);
        assert_eq!(guard.check_committed(), Err(NotActive::LeaseLapsed));
    }

    #[test]
    fn a_standalone_term_always_answers_until_it_ends() {
        let term = Term::unlimited(Epoch(1));
        let guard = ActiveGuard::new(term.clone());
        assert_eq!(guard.check(), Ok(()));
        assert_eq!(guard.epoch(), Epoch(1));
        term.end();
        assert_eq!(guard.check(), Err(NotActive::LeaseLapsed));
    }
}

//! Arbiter leader election in etcd (DESIGN.md, "Arbiter high
//! availability"): several arbiter processes share one cluster's state in
//! etcd; exactly one of them — the holder of `/<cluster>/arbiter/leader` —
//! decides and answers replicas, the others redirect to it.
//!
//! - [`campaign`]: `Elector`, create-if-absent on the leader key under a
//!   fresh lease; followers watch the key and campaign when it is deleted.
//! - [`keepalive`]: renewing a won term's lease and watching our own key;
//!   either ends the term at once when something is wrong.
//! - [`term`]: `Term`, one stretch of leadership: its fence, its deadline,
//!   and `holds()`, asked after every grant.
//!
//! # Why two arbiters never both let an active's lease overlap another's
//!
//! The rule is DESIGN.md's "The lease rule" and "The arbiter's wait":
//! an active takes writes until `t_send + lease·(1−drift)` (its clock) and
//! the arbiter that granted at `t_grant > t_send` promotes nobody else
//! before `t_grant + lease·(1+drift)` (its clock). A change of arbiter
//! leader must not break it. Write `A` for the old leader, `B` for the new.
//!
//! 1. **A stops granting before B can take office.** A's term has a
//!    deadline `s + ttl·(1−drift)` on A's clock, `s` being when A *sent* the
//!    last keep-alive etcd acknowledged (or the lease grant). etcd restarted
//!    the TTL when it received that message, after `s`, so with clock rates
//!    within `drift` the lease cannot expire in etcd before A's deadline;
//!    until it expires (or is revoked) the leader key exists and B's
//!    create-if-absent campaign cannot succeed. A checks `Term::holds()`
//!    *after* the core recorded each grant (`server::shell`), so every grant
//!    A sends was recorded before A's deadline, hence before B won. etcd
//!    reporting the lease gone or a change of the leader key ends A's term
//!    even earlier; a broken keep-alive stream does not (the lease lives in
//!    all of etcd, not in one member: A opens another and only the deadline
//!    decides); nothing ever extends an ended term.
//! 2. **B waits out every grant A may have sent.** B builds a fresh
//!    `Core::take_office` after winning (`server::tenure`), and a core that
//!    takes office assumes a grant at that moment: it names no new active
//!    before `t_office + lease·(1+drift)` (`core::detector`). Every grant of
//!    A has `t_send < t_grant(A) < t_win(B) ≤ t_office(B)` in real time, so
//!    the old active's lease, at most `lease·(1−drift)` after its `t_send`,
//!    has ended before B's wait does, whatever the clock offsets. B uses the
//!    **stored** parameters (`server::bootstrap`), the ones A's grants
//!    carried; a parameter change that shortens the wait keeps the old one
//!    for the grants already sent (`core::params`).
//! 3. **A deposed arbiter cannot write.** Every state write is one etcd
//!    transaction that also compares the leader key's `create_revision` and
//!    lease with the term's [`Fence`](crate::store::etcd::Fence)
//!    (`store::etcd::store`). Once A's key is gone — or is B's — A's writes
//!    fail with `not_leader`, so A cannot bump an epoch or change the sync
//!    set behind B's back, even while it still believes it leads. B loads
//!    the state *after* winning, so it sees every write A made.
//! 4. **Epoch fencing backs the timing**, as for a single arbiter: epochs
//!    only change by the fenced CAS, and replicas reject lower epochs.
//!
//! What the argument assumes: clock *rates* (not offsets) of arbiters and
//! etcd members differ by less than `drift` (0.1 unless configured higher);
//! etcd never expires a lease early (it only extends leases, e.g. across
//! its own leader changes). What it does not cover: an operator deleting
//! the leader key or revoking its lease by hand. A notices through its
//! watch within milliseconds and steps down, but until then it may still
//! grant while B has already won; epoch fencing still keeps a sync-mode
//! cluster from acknowledging a write on both sides.
//!
//! Deliberately left out: pre-voting or priorities among arbiters (any
//! arbiter may lead; they are alike). etcd is reached in TLS with
//! `etcds://` (`store::etcd::connection`).

pub mod campaign;
pub mod keepalive;
pub mod term;

pub use campaign::{Candidate, Elector};
pub use term::Term;

//! The arbiter's decision core: an I/O-free state machine, fed heartbeats,
//! operator requests and the time, returning replies and state writes.
//!
//! Modelled on toydb's Raft node and openraft: plain structs, no tokio, no
//! clock (`now` is a [`Millis`] the caller passes; tests use a fake clock).
//! The shell (HTTP server, store driver) owns the I/O:
//!
//! ```text
//! heartbeat ──▶ Core::on_heartbeat ──▶ Reply ──▶ send
//!                                  └─▶ Persist(w) ──▶ store.compare_and_swap(w.expected_version, &w.state)
//! every few ms ─▶ Core::tick ──▶ Some(w) ─┘          ├─ Written     ──▶ Core::on_persisted
//!                                                     ├─ Conflict(s) ──▶ Core::on_conflict(s)
//!                                                     └─ Err(e)      ──▶ Core::on_persist_failed(&e)
//! ```
//!
//! # Why no acknowledged write is lost and no two actives overlap
//!
//! The rules are DESIGN.md's ("Commit rule and the sync set", "The lease",
//! "Arbiter decisions"); this is where they are enforced.
//!
//! 1. **Epochs are fenced by the store.** A new active is named only by a
//!    compare-and-swap that bumps the epoch (`epoch_change.rs`). One write is
//!    in flight at a time (`draft.rs`); replies use only what the store
//!    confirmed, so no replica is told about an epoch that might not exist.
//! 2. **Leases never overlap.** A grant (reply `role: Active`) is recorded
//!    at `t_grant = now`, after the heartbeat arrived. Nobody else is named
//!    active, and nobody else is granted, until `t_grant + lease·(1+drift)`
//!    on our clock; by then the holder's own lease (`t_send +
//!    lease·(1−drift)` on its clock, `t_send < t_grant`) is over, whatever
//!    the clock offsets, as long as rates differ by less than `drift`
//!    (`detector.rs`). A process that took office, or adopted someone else's
//!    write after a conflict, assumes a grant at that moment. While a write
//!    naming a new active is in flight the old active is not granted. The
//!    one early end of a lease is a drained switchover handoff: the old
//!    active promised to take no more writes in its epoch (`switchover.rs`).
//! 3. **Only replicas holding every acknowledged write are promoted.** With
//!    `k ≥ 1` a candidate must be in the sync set *and* in its confirmed part
//!    (`candidates.rs`, `sync_set.rs`). The active waits for every member of
//!    the set it enforces; a member removed by the arbiter keeps being waited
//!    for until the active adopts the new set; the active confirms a set only
//!    once each member holds every write acknowledged before; and the
//!    confirmed part shrinks with every change, so a member that left and
//!    returned must be confirmed again. Degraded (empty or unconfirmed set):
//!    nobody is promoted, and the decision says why.
//! 4. **Async mode says what it risks.** With `k = 0` the most caught-up
//!    live standby within `max_lag_on_failover` is promoted, and the
//!    decision records how many entries may be lost.
//!
//! Deliberately left out here: the HTTP shell, arbiter leader election
//! (`crate::election`; a new leader is just a new `Core::take_office`),
//! and acting on an unhealthy (but heartbeating) active — it keeps its
//! grant; only standbys' health is used.
//!
//! Layout:
//! - `arbiter.rs`: the `Core` struct, taking office, write outcomes.
//! - `heartbeat.rs`: `on_heartbeat`, `reply`, the grant rules.
//! - `tick.rs`: the periodic round of decisions.
//! - `epoch_change.rs`: formation, failover, switchover completion.
//! - `detector.rs`: liveness and the grant ledger (lease wait).
//! - `candidates.rs`: who may be made active, and why not.
//! - `sync_set.rs`: sync-set upkeep and the degraded flag.
//! - `membership.rs`: joins, address changes, `remove_after`.
//! - `switchover.rs`, `maintenance.rs`, `params.rs`: operator requests
//!   (`params.rs` also keeps a shortened lease wait safe).
//! - [`decision`]: decision records and the deduplicating log.
//! - `draft.rs`: building and proposing state writes.
//! - `snapshot.rs`: the status snapshot.
//! - [`time`]: `Millis` and the lease arithmetic.

mod arbiter;
mod candidates;
pub mod decision;
mod detector;
mod draft;
mod epoch_change;
mod forced;
mod handover;
mod heartbeat;
mod maintenance;
mod membership;
mod params;
mod snapshot;
mod switchover;
mod sync_set;
mod tick;
pub mod time;

#[cfg(test)]
mod tests;

pub use arbiter::Core;
pub use decision::{DecisionKind, DecisionRecord};
pub use draft::ProposedWrite;
pub use handover::SWITCHOVER_HEARTBEAT_MS;
pub use heartbeat::HeartbeatOutcome;
pub use time::{arbiter_wait_ms, Millis};

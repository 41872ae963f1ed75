//! `Core`: the arbiter's decision state machine — its fields, how it takes
//! office, and how it learns the outcome of its writes.
//!
//! The other files of this module add the entry points: heartbeats
//! (`heartbeat.rs`), ticks (`tick.rs`), epoch changes (`epoch_change.rs`),
//! operator requests (`switchover.rs`, `maintenance.rs`) and the status
//! snapshot (`snapshot.rs`).

use std::collections::BTreeSet;

use proto_common::{Epoch, NodeId};

use super::decision::{DecisionKind, DecisionLog, DecisionRecord, Stamp};
use super::detector::Detector;
use super::draft::ProposedWrite;
use super::handover::Switchover;
use super::time::Millis;
use crate::store::{ClusterState, StoreError};

/// The arbiter's decision core. Plain data, no I/O, no clock: every entry
/// point takes `now` and returns what the shell must do.
#[derive(Debug)]
pub struct Core {
    /// The state last read from or written to the store. Replies and
    /// decisions are computed from it only, never from a write in flight.
    pub(super) state: ClusterState,
    /// The one write in flight, if any: no second write is proposed until
    /// the shell reports this one's outcome.
    pub(super) pending: Option<ProposedWrite>,
    /// Heartbeats heard and grants sent, on our monotonic clock.
    pub(super) detector: Detector,
    /// A planned switchover under way (not persisted: a new arbiter simply
    /// answers the fenced active without `switchover_to`, which cancels it).
    pub(super) switchover: Option<Switchover>,
    /// Recent decisions for status, with repeat suppression.
    pub(super) decisions: DecisionLog,
    /// A write failed with an unknown outcome: the next tick writes the
    /// same state again, so a conflict reveals a write that did land.
    pub(super) verify_store: bool,
    /// `(monotonic, unix ms)` at taking office, to stamp decisions with
    /// wall-clock times for people.
    pub(super) clock_anchor: (Millis, u64),
    /// The members stored when we took office: first formation need not
    /// wait out `initial_wait_ms` once all of them have reported (members
    /// that joined since do not count, or the first replica to heartbeat a
    /// new cluster would end the wait alone).
    pub(super) members_at_start: BTreeSet<NodeId>,
    /// After a failover or switchover, until the new active's first
    /// heartbeat as active: what the write gap is measured from.
    pub(super) serving_watch: Option<ServingWatch>,
}

/// A new active not yet heard serving (see [`Core::serving_watch`]).
#[derive(Clone, Debug)]
pub(super) struct ServingWatch {
    pub node: NodeId,
    pub epoch: Epoch,
    pub kind: DecisionKind,
    /// The old active, and its last heartbeat on our clock (or the
    /// decision's time, when it was never heard in this term).
    pub old: Option<NodeId>,
    pub since: Millis,
}

impl Core {
    /// A core for an arbiter that takes office at `now` (a fresh process, or
    /// a newly elected leader) over `state` as loaded from the store (or
    /// `ClusterState::new` when the store is empty). `unix_ms` is the wall
    /// clock at `now`, used only to stamp decisions.
    ///
    /// It knows no grants, so it names no new active before
    /// `now + lease·(1+drift)` (DESIGN.md, "Arbiter failover"); meanwhile it
    /// keeps granting to the recorded active when that one heartbeats.
    pub fn take_office(state: ClusterState, now: Millis, unix_ms: u64) -> Core {
        let mut detector = Detector::new(now);
        if let Some(active) = state.active_id() {
            let position = state
                .members
                .get(active)
                .map(|m| m.position)
                .unwrap_or_default();
            detector.new_active(active, position);
        }
        let state_members = state.members.keys().cloned().collect();
        let mut core = Core {
            state,
            pending: None,
            detector,
            switchover: None,
            decisions: DecisionLog::default(),
            verify_store: false,
            clock_anchor: (now, unix_ms),
            members_at_start: state_members,
            serving_watch: None,
        };
        let reason = format!(
            "took office at epoch {} (state version {}, active {}); no promotion before {} ms from now",
            core.state.epoch,
            core.state.version,
            core.state.active_id().map_or("none", NodeId::as_str),
            super::time::arbiter_wait_ms(&core.state.params)
        );
        core.decisions
            .record(core.stamp(now).taken(DecisionKind::Store, None, reason));
        core
    }

    /// The state as last persisted (what replies are computed from).
    pub fn state(&self) -> &ClusterState {
        &self.state
    }

    /// The current epoch.
    pub fn epoch(&self) -> Epoch {
        self.state.epoch
    }

    /// Whether a write is waiting for its outcome.
    pub fn write_in_flight(&self) -> bool {
        self.pending.is_some()
    }

    /// The write in flight, if any.
    pub fn pending_write(&self) -> Option<&ProposedWrite> {
        self.pending.as_ref()
    }

    /// Recent decisions, oldest first.
    pub fn recent_decisions(&self) -> impl DoubleEndedIterator<Item = &DecisionRecord> {
        self.decisions.recent()
    }

    /// How many decisions this core has recorded since taking office; the
    /// newest `decisions_recorded() - seen` of [`Core::recent_decisions`]
    /// are new to a caller that saw `seen` (at most the log's bound).
    pub fn decisions_recorded(&self) -> u64 {
        self.decisions.recorded()
    }

    /// The store returned `Written` for the pending write: adopt it.
    pub fn on_persisted(&mut self, now: Millis) {
        let Some(write) = self.pending.take() else {
            tracing::error!("on_persisted called with no write in flight; ignored");
            return;
        };
        let old_active = self.state.active_id().cloned();
        let old_heard = old_active
            .as_ref()
            .and_then(|a| self.detector.observation(a))
            .map(|o| o.last_heartbeat);
        let old_params = std::mem::replace(&mut self.state, write.state).params;
        self.keep_wait_for_old_grants(&old_params, now);
        self.decisions.clear("store");
        for node in &write.forget {
            self.detector.forget(node);
        }
        if write.names_active {
            if write.fences_old_active {
                self.detector.fence_last_grant();
            }
            // The new active gets one full lease to show up before it can be
            // replaced in turn.
            self.detector.restart_lease_clock(now);
            self.switchover = None;
            if let Some(active) = self.state.active_id().cloned() {
                let position = self
                    .detector
                    .observation(&active)
                    .map(|o| o.report.position)
                    .unwrap_or_default();
                self.detector.new_active(&active, position);
            }
            self.decisions.clear_prefix("failover");
            self.decisions.clear_prefix("formation");
            let kind = write
                .decisions
                .iter()
                .map(|d| d.kind)
                .find(|k| matches!(k, DecisionKind::Failover | DecisionKind::Switchover));
            self.serving_watch = match (kind, self.state.active_id()) {
                (Some(kind), Some(node)) => Some(ServingWatch {
                    node: node.clone(),
                    epoch: self.state.epoch,
                    kind,
                    old: old_active,
                    since: old_heard.unwrap_or(now),
                }),
                _ => None,
            };
        }
        for d in write.decisions {
            self.decisions.record(d);
        }
    }

    /// The store returned `Conflict(current)`: someone else wrote (another
    /// arbiter, or a write of ours whose outcome we never learned). Adopt
    /// what is stored; since its writer may have sent grants we do not know
    /// of, restart the lease clock as if taking office again.
    pub fn on_conflict(&mut self, current: Option<ClusterState>, now: Millis) {
        let lost = self.pending.take();
        let expected = lost.as_ref().and_then(|w| w.expected_version);
        let old_active = self.state.active_id().cloned();
        let old_params = self.state.params.clone();
        let reason = match current {
            Some(current) => {
                let reason = format!(
                    "store conflict: expected version {expected:?}, found version {} (epoch {}, active {}); adopted it, no promotion for one lease",
                    current.version,
                    current.epoch,
                    current.active_id().map_or("none", NodeId::as_str)
                );
                self.state = current;
                reason
            }
            None => {
                // The state vanished (deleted by hand?). Keep ours, epoch
                // included, and recreate it: forgetting the epoch could let
                // two replicas be active.
                self.state.version = 0;
                format!(
                    "store conflict: expected version {expected:?} but the store is empty; recreating it from memory at epoch {}",
                    self.state.epoch
                )
            }
        };
        self.detector.restart_lease_clock(now);
        self.keep_wait_for_old_grants(&old_params, now);
        let new_active = self.state.active_id().cloned();
        if new_active != old_active {
            self.switchover = None;
            if let Some(active) = &new_active {
                let position = self
                    .state
                    .members
                    .get(active)
                    .map(|m| m.position)
                    .unwrap_or_default();
                self.detector.new_active(active, position);
            }
        }
        self.verify_store = false;
        let record = self.stamp(now).not_taken(DecisionKind::Store, None, reason);
        self.decisions.record(record);
    }

    /// The store failed (`Err`): the write's outcome is unknown. Drop it; the
    /// next tick writes the current state again so that, if the failed write
    /// did land, the resulting conflict reconciles us.
    pub fn on_persist_failed(&mut self, error: &StoreError, now: Millis) {
        let lost = self.pending.take();
        self.verify_store = true;
        let what = lost
            .as_ref()
            .and_then(|w| w.decisions.first())
            .map_or_else(|| "a state update".to_string(), |d| d.reason.clone());
        let reason = format!(
            "store write failed ({}): {error}; not applied: {what}; will retry",
            error.code()
        );
        let record = self.stamp(now).not_taken(DecisionKind::Store, None, reason);
        self.decisions.not_taken("store", error.code(), record);
    }

    /// Time and epoch for decision records made at `now`.
    pub(super) fn stamp(&self, now: Millis) -> Stamp {
        let (mono, unix) = self.clock_anchor;
        Stamp {
            unix_ms: unix.saturating_add(now.since(mono)),
            epoch: self.state.epoch,
        }
    }

    /// Registers `write` as the one in flight and returns it for the shell.
    pub(super) fn propose(&mut self, write: ProposedWrite) -> ProposedWrite {
        debug_assert!(
            self.pending.is_none(),
            "a second write was proposed while one is in flight"
        );
        self.verify_store = false;
        self.pending = Some(write.clone());
        write
    }

    /// Whether the write in flight names a new active.
    pub(super) fn pending_names_active(&self) -> bool {
        self.pending.as_ref().is_some_and(|w| w.names_active)
    }
}

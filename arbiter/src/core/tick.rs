//! `Core::tick`: the periodic round of decisions. The shell calls it every
//! few milliseconds (a quarter of `heartbeat_ms` is plenty: a failover
//! candidate is promoted inside its own heartbeat anyway).
//!
//! One round, in order:
//!
//! 1. cancel a switchover that timed out or became moot;
//! 2. if no write is in flight: name a new active if one is due (formation,
//!    failover, switchover completion — that write stands alone), else log
//!    why not;
//! 3. otherwise upkeep in one draft: membership (joins, changed addresses),
//!    the sync set from the live active's report, members silent for
//!    `remove_after_ms`, the degraded flag; write it if anything that
//!    matters changed.

use proto_common::heartbeat::{Heartbeat, Role};

use super::arbiter::Core;
use super::draft::{Draft, ProposedWrite};
use super::epoch_change::EpochPlan;
use super::time::{arbiter_wait_ms, suspect_after_ms, Millis};
use super::{membership, sync_set};

impl Core {
    /// Runs one round of decisions; returns the write to make, if any
    /// (compare-and-swap it, then call `on_persisted` / `on_conflict` /
    /// `on_persist_failed`).
    pub fn tick(&mut self, now: Millis) -> Option<ProposedWrite> {
        self.expire_switchover(now);
        if self.pending.is_some() {
            return None;
        }
        match self.plan_epoch_change(now) {
            EpochPlan::Name { kind, node, reason } => {
                return Some(self.propose_epoch_change(kind, &node, reason, now));
            }
            EpochPlan::Blocked { topic, key, record } => {
                self.decisions.not_taken(topic, &key, record);
            }
            EpochPlan::Nothing => {}
        }

        let stamp = self.stamp(now);
        let mut draft = Draft::new(&self.state);
        membership::refresh(&mut draft, &self.detector, now, &stamp);
        if self.state.active.is_some() {
            let report = self.live_active_report(now);
            let adds_allowed = self.switchover.is_none();
            match sync_set::upkeep(
                &mut draft,
                &self.detector,
                now,
                report.as_ref(),
                adds_allowed,
                &stamp,
            ) {
                Some((key, record)) => {
                    self.decisions.not_taken("sync", &key, record);
                }
                None => self.decisions.clear("sync"),
            }
        }
        let protect = self.switchover.as_ref().map(|sw| sw.target.clone());
        membership::remove_silent(
            &mut draft,
            &self.state,
            &self.detector,
            now,
            protect.as_ref(),
            &stamp,
        );
        sync_set::settle_degraded(&mut draft, &stamp);
        if draft.material_change(&self.state) || self.verify_store {
            let write = draft.finish(&self.state);
            return Some(self.propose(write));
        }
        None
    }

    /// The recorded active's last heartbeat, if it is live: fresh (within
    /// `2 · heartbeat_ms`), reporting itself active in the current epoch,
    /// and holding a grant that has not run out. Only such a report may
    /// change the sync set: while the active is missing nobody acknowledges
    /// writes, and removing a member would only take away a candidate.
    pub(super) fn live_active_report(&self, now: Millis) -> Option<Heartbeat> {
        let active = self.state.active_id()?;
        let wait = arbiter_wait_ms(&self.state.params);
        let granted = self
            .detector
            .last_grant()
            .is_some_and(|g| g.node == *active && g.epoch == self.state.epoch && now < g.at + wait);
        let obs = self.detector.observation(active)?;
        let fresh = now.since(obs.last_heartbeat) <= suspect_after_ms(&self.state.params);
        let report = &obs.report;
        (granted && fresh && report.role == Role::Active && report.epoch == self.state.epoch)
            .then(|| report.clone())
    }
}

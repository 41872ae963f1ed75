//! The operator's last resort: `arbiter promote NODE --force
//! --accept-data-loss`, for when the active is dead and no standby can be
//! promoted safely (the only sync standby is gone for good, say), like
//! `patronictl failover --force`.
//!
//! It waives exactly one rule: that the new active holds every
//! acknowledged write (the sync set). It never waives the lease rule, so
//! it can not make two actives: it is refused while the old active may
//! still hold its lease, while the old active is alive (a switchover is
//! the way), and while a safe promotion is possible (the arbiter makes it
//! itself). What may be lost is estimated from the last positions heard
//! and written into the decision.

use proto_common::heartbeat::Role;
use proto_common::NodeId;

use super::arbiter::Core;
use super::decision::DecisionKind;
use super::draft::ProposedWrite;
use super::epoch_change::EpochPlan;
use super::time::{arbiter_wait_ms, suspect_after_ms, Millis};
use crate::error::ArbiterError;

impl Core {
    /// Names `node` the active without the sync-set guarantee, when
    /// nothing safer is possible; every refusal says why and what to do.
    pub fn force_promote(
        &mut self,
        node: &NodeId,
        now: Millis,
    ) -> Result<ProposedWrite, ArbiterError> {
        let refuse = |why: String| ArbiterError::CannotForce {
            node: node.clone(),
            why,
        };
        self.check_member(node, refuse)?;
        let Some(active) = self.state.active_id().cloned() else {
            return Err(refuse(
                "no active is recorded: the arbiter names the first one itself".into(),
            ));
        };
        if active == *node {
            return Err(refuse("it is the active already".into()));
        }
        let params = &self.state.params;
        let silent = self.detector.silence_ms(&active, now);
        if silent < suspect_after_ms(params) {
            return Err(refuse(format!(
                "the active {active} is alive (heard {silent} ms ago); a forced promotion is only \
                 for a dead active: use `arbiter switchover --to {node} --wait`"
            )));
        }
        let wait = arbiter_wait_ms(params);
        let lease_end = self.detector.lease_end(wait);
        if now < lease_end {
            return Err(refuse(format!(
                "the active {active}'s lease may still hold for {} ms (lease·(1+drift) = {wait} ms \
                 after its last grant); promoting before it ends could make two actives: retry \
                 after it",
                now.until(lease_end)
            )));
        }
        if let EpochPlan::Name { node: safe, .. } = self.plan_epoch_change(now) {
            return Err(refuse(format!(
                "{safe} can be promoted without losing acknowledged writes and the arbiter is \
                 doing so: no forced promotion is needed"
            )));
        }
        if self.state.maintenance {
            return Err(refuse(
                "maintenance mode is on: switch it off first (arbiter maintenance off)".into(),
            ));
        }
        let report = self.live_report(node, now, refuse)?;
        if report.role != Role::Standby || !report.healthy {
            return Err(refuse(format!(
                "it reports role {} and healthy {}: only a healthy standby can take the role",
                report.role, report.healthy
            )));
        }
        let ours = report.position;
        let theirs = self
            .detector
            .observation(&active)
            .map(|o| o.report.position)
            .or_else(|| self.state.members.get(&active).map(|m| m.position))
            .unwrap_or_default();
        let behind = theirs.index.0.saturating_sub(ours.index.0);
        let sync: Vec<&str> = self.state.sync_set.iter().map(NodeId::as_str).collect();
        let reason = format!(
            "FORCED promotion of {node} by the operator, accepting data loss: the active {active} \
             has been silent {silent} ms and no standby could be promoted safely; {node}'s log \
             ends at {ours}, {active} was last heard at {theirs} ({behind} entries further); \
             writes acknowledged after {ours} by {active} (sync set [{}]) may be lost",
            sync.join(", ")
        );
        Ok(self.propose_epoch_change(DecisionKind::Failover, node, reason, now))
    }
}

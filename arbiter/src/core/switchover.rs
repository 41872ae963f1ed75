//! Planned switchover: hand the active role to a chosen, caught-up standby
//! without losing a write and without waiting for a lease to run out
//! (DESIGN.md, "Switchover").
//!
//! 1. `Core::switchover` picks the target and starts the handover (in
//!    memory only; see the `Core::switchover` field).
//! 2. Replies to the active carry `switchover_to = target`: it stops taking
//!    writes, lets the target catch up to its exact last position, and
//!    heartbeats at once with `handoff { target, drained: true }`. Both it
//!    and the target are asked to heartbeat every
//!    [`super::handover::SWITCHOVER_HEARTBEAT_MS`] meanwhile.
//! 3. When the active's heartbeat shows the drained handoff and the target's
//!    acknowledged position equal to the active's, the core writes epoch+1
//!    with the target as active. The drained report is the old active's
//!    promise never to write again in its epoch, so its grants stop counting
//!    and the target is granted on its next heartbeat, with no lease wait.
//! 4. If that has not happened within `2 · lease·(1+drift)`, the switchover
//!    is cancelled: the active's next reply has no `switchover_to`, which
//!    lets it take writes again.

use proto_common::NodeId;

use super::arbiter::Core;
use super::candidates::{self, View, Why};
use super::decision::DecisionKind;
use super::handover::Switchover;
use super::time::{arbiter_wait_ms, suspect_after_ms, Millis};
use crate::error::ArbiterError;

impl Core {
    /// Starts a planned switchover to `to`, or to the best candidate. Returns
    /// the target. The handover itself completes through heartbeats.
    pub fn switchover(&mut self, to: Option<NodeId>, now: Millis) -> Result<NodeId, ArbiterError> {
        let wait = arbiter_wait_ms(&self.state.params);
        if let Some(sw) = &self.switchover {
            return Err(ArbiterError::SwitchoverRunning {
                from: sw.from.clone(),
                target: sw.target.clone(),
                elapsed_ms: now.since(sw.started),
                left_ms: now.until(sw.deadline),
            });
        }
        if self.pending_names_active() {
            return Err(ArbiterError::WriteInProgress);
        }
        let Some(active) = self.state.active_id().cloned() else {
            return Err(ArbiterError::NoActive {
                epoch: self.state.epoch,
            });
        };
        if !self.detector.heard_within(&active, now, wait) {
            return Err(ArbiterError::ActiveMissing {
                silent_ms: self.detector.silence_ms(&active, now),
                node: active,
            });
        }
        let target = match to {
            Some(target) => {
                self.check_target(&active, &target, now)?;
                target
            }
            None => self.best_target(&active, now)?,
        };
        let sw = Switchover {
            from: active.clone(),
            target: target.clone(),
            epoch: self.state.epoch,
            started: now,
            deadline: now + 2 * wait,
        };
        let reason = format!(
            "switchover from {active} to {target} started; it is cancelled unless complete within {} ms",
            2 * wait
        );
        self.switchover = Some(sw);
        let record = self
            .stamp(now)
            .taken(DecisionKind::Switchover, Some(&target), reason);
        self.decisions.record(record);
        Ok(target)
    }

    /// Cancels a switchover that timed out or became moot.
    pub(super) fn expire_switchover(&mut self, now: Millis) {
        let Some(sw) = &self.switchover else { return };
        if self.pending_names_active() {
            return; // its completion may be the write in flight
        }
        let wait = arbiter_wait_ms(&self.state.params);
        let why = if self.state.epoch != sw.epoch || !self.state.is_active(&sw.from) {
            format!("the active is no longer {} at epoch {}", sw.from, sw.epoch)
        } else if now >= sw.deadline {
            let drained = self
                .detector
                .observation(&sw.from)
                .and_then(|o| o.report.handoff.as_ref())
                .is_some_and(|h| h.drained);
            format!(
                "not complete after {} ms ({} reported drained: {}); {} keeps the active role",
                now.since(sw.started),
                sw.from,
                if drained { "yes" } else { "no" },
                sw.from
            )
        } else if !self.detector.heard_within(&sw.target, now, wait) {
            format!(
                "target {} silent for {} ms",
                sw.target,
                self.detector.silence_ms(&sw.target, now)
            )
        } else {
            return;
        };
        let reason = format!(
            "switchover from {} to {} cancelled: {why}",
            sw.from, sw.target
        );
        let target = sw.target.clone();
        self.switchover = None;
        let record = self
            .stamp(now)
            .not_taken(DecisionKind::Switchover, Some(&target), reason);
        self.decisions.record(record);
    }

    fn check_target(
        &self,
        active: &NodeId,
        target: &NodeId,
        now: Millis,
    ) -> Result<(), ArbiterError> {
        let state = &self.state;
        if target == active {
            return Err(ArbiterError::TargetIsActive {
                node: target.clone(),
            });
        }
        let known =
            state.members.contains_key(target) || self.detector.observation(target).is_some();
        if !known {
            let members = state
                .members
                .keys()
                .map(NodeId::as_str)
                .collect::<Vec<_>>()
                .join(", ");
            return Err(ArbiterError::UnknownTarget {
                node: target.clone(),
                members,
            });
        }
        let ranking = candidates::for_failover(&self.view(now));
        if let Some((_, why)) = ranking.ineligible.iter().find(|(n, _)| n == target) {
            let node = target.clone();
            return Err(match why {
                Why::PriorityZero => ArbiterError::TargetPriorityZero { node },
                Why::NotInSyncSet => ArbiterError::TargetNotInSyncSet {
                    node,
                    sync_set: state.sync_set.clone(),
                },
                Why::NotConfirmed { .. } | Why::TooFarBehind { .. } => {
                    ArbiterError::TargetNotCaughtUp {
                        detail: why.describe(target),
                        node,
                    }
                }
                Why::NeverHeard
                | Why::Silent { .. }
                | Why::Unhealthy { .. }
                | Why::CannotLead { .. }
                | Why::Reinitializing { .. } => ArbiterError::TargetUnavailable {
                    detail: why.describe(target),
                    node,
                },
            });
        }
        // The handover waits for the target to reach the active's exact
        // position; it must at least be streaming from the active.
        let connected = self.detector.observation(active).is_some_and(|o| {
            o.report
                .standbys
                .iter()
                .any(|s| s.node_id == *target && s.connected)
        });
        if !connected {
            return Err(ArbiterError::TargetNotCaughtUp {
                node: target.clone(),
                detail: format!("the active {active} does not report it connected"),
            });
        }
        Ok(())
    }

    fn best_target(&self, active: &NodeId, now: Millis) -> Result<NodeId, ArbiterError> {
        let ranking = candidates::for_failover(&self.view(now));
        let mut reasons: Vec<String> = ranking
            .ineligible
            .iter()
            .map(|(n, w)| w.describe(n))
            .collect();
        for c in &ranking.eligible {
            match self.check_target(active, &c.node, now) {
                Ok(()) => return Ok(c.node.clone()),
                Err(e) => reasons.push(e.to_string()),
            }
        }
        if reasons.is_empty() {
            reasons.push("there is no standby".into());
        }
        Err(ArbiterError::NoEligibleStandby {
            reasons: reasons.join("; "),
        })
    }

    /// The inputs candidate rankings need.
    pub(super) fn view(&self, now: Millis) -> View<'_> {
        View {
            state: &self.state,
            detector: &self.detector,
            now,
            live_ms: suspect_after_ms(&self.state.params),
        }
    }
}

//! Naming a new active: first formation, failover and switchover
//! completion — the only decisions that bump the epoch.
//!
//! `Core::plan_epoch_change` decides; it is pure, so the heartbeat path
//! and the tick path can both ask it. The tick logs the decisions *not*
//! taken; the heartbeat path acts only when the decision is about the
//! sender (promote the candidate inside its own heartbeat, so the reply can
//! already carry the grant).
//!
//! Every new active is written the same way (DESIGN.md, "Arbiter
//! decisions"): epoch = max(stored epoch, highest epoch any replica
//! reported) + 1; an empty sync set with a new `sync_version` and nothing
//! confirmed (the other standbys must first catch up with the new active;
//! degraded when `k ≥ 1`).

use proto_common::heartbeat::{ActiveInfo, Role};
use proto_common::NodeId;

use super::arbiter::Core;
use super::candidates;
use super::decision::{DecisionKind, DecisionRecord};
use super::draft::{Draft, ProposedWrite};
use super::membership;
use super::time::{arbiter_wait_ms, suspect_after_ms, Millis};
use crate::store::MemberRecord;

/// What `Core::plan_epoch_change` decided.
#[derive(Clone, Debug)]
pub enum EpochPlan {
    /// Nothing to decide.
    Nothing,
    /// A decision deliberately not taken: log it once per `topic`/`key`.
    Blocked {
        /// Repeat-suppression topic.
        topic: &'static str,
        /// Changes only when the cause changes.
        key: String,
        /// The decision not taken.
        record: DecisionRecord,
    },
    /// Name `node` the active.
    Name {
        /// Formation, failover or switchover.
        kind: DecisionKind,
        /// The new active.
        node: NodeId,
        /// Why, for the record.
        reason: String,
    },
}

impl Core {
    /// Decides whether a new active should be named now.
    pub(super) fn plan_epoch_change(&self, now: Millis) -> EpochPlan {
        if self.next_epoch().is_none() {
            let reason = format!(
                "epoch {} is the largest there can be, so no new active can be named; the \
                 store was edited or corrupted: restore it from a backup",
                self.state.epoch.max(self.detector.highest_epoch_seen())
            );
            return EpochPlan::Blocked {
                topic: "failover",
                key: "epoch_overflow".into(),
                record: self
                    .stamp(now)
                    .not_taken(DecisionKind::Anomaly, None, reason),
            };
        }
        let Some(active) = self.state.active_id().cloned() else {
            return self.plan_formation(now);
        };
        let params = &self.state.params;
        let wait = arbiter_wait_ms(params);
        let stamp = self.stamp(now);

        if let Some(sw) = &self.switchover {
            let report = self.detector.observation(&sw.from).map(|o| &o.report);
            if report.is_some_and(|r| sw.is_complete(r)) && sw.epoch == self.state.epoch {
                let position = report.map(|r| r.position).unwrap_or_default();
                return EpochPlan::Name {
                    kind: DecisionKind::Switchover,
                    node: sw.target.clone(),
                    reason: format!(
                        "switchover from {} to {} complete: {} drained at {position} and {} acknowledged it",
                        sw.from, sw.target, sw.from, sw.target
                    ),
                };
            }
        }

        if let Some(plan) = self.plan_after_lost_role(&active, now) {
            return plan;
        }
        let silent = self.detector.silence_ms(&active, now);
        let lease_end = self.detector.lease_end(wait);
        if now < lease_end {
            if silent < suspect_after_ms(params) {
                return EpochPlan::Nothing;
            }
            let reason = format!(
                "active {active} silent for {silent} ms; waiting {} ms more for its lease to end (lease·(1+drift) = {wait} ms after the last grant)",
                now.until(lease_end)
            );
            return EpochPlan::Blocked {
                topic: "failover",
                key: "lease_wait".into(),
                record: stamp.not_taken(DecisionKind::Failover, Some(&active), reason),
            };
        }
        if self.state.maintenance {
            let reason = format!(
                "active {active} missing {silent} ms; maintenance mode is on, so no failover"
            );
            return EpochPlan::Blocked {
                topic: "failover",
                key: "maintenance".into(),
                record: stamp.not_taken(DecisionKind::Failover, Some(&active), reason),
            };
        }
        let ranking = candidates::for_failover(&self.view(now));
        let Some(best) = ranking.best() else {
            let k = params.sync_standbys;
            let mut reason = format!(
                "active {active} missing {silent} ms; no eligible standby: {}",
                ranking.explain()
            );
            if k >= 1 && self.state.confirmed_sync.is_empty() {
                reason.push_str(&format!(
                    " (no confirmed sync-set member: every acknowledged write may exist only on {active}, so nobody is promoted; it is granted again when it returns)"
                ));
            }
            return EpochPlan::Blocked {
                topic: "failover",
                key: format!("none:{}", ranking.key()),
                record: stamp.not_taken(DecisionKind::Failover, Some(&active), reason),
            };
        };
        let mut reason = format!(
            "active {active} missing {silent} ms and its lease has ended; promoting {} at position {}",
            best.node, best.position
        );
        match best.entries_lost {
            Some(lost) => reason.push_str(&format!(
                " (async mode: up to {lost} entries written on {active} may be lost)"
            )),
            None => reason.push_str(&format!(
                " (confirmed member of sync set v{})",
                self.state.sync_version
            )),
        }
        if !ranking.ineligible.is_empty() {
            reason.push_str(&format!("; not eligible: {}", ranking.explain()));
        }
        EpochPlan::Name {
            kind: DecisionKind::Failover,
            node: best.node.clone(),
            reason,
        }
    }

    /// Whether the recorded active said, in a live report, that it lost the
    /// role in the current epoch (see `Heartbeat::active_epoch`).
    pub(super) fn lost_role(&self, active: &NodeId, now: Millis) -> bool {
        let live_ms = 2 * self.state.params.heartbeat_ms;
        self.detector.heard_within(active, now, live_ms)
            && self.detector.observation(active).is_some_and(|o| {
                o.report.role == Role::Standby && o.report.active_epoch >= self.state.epoch
            })
    }

    /// The recorded active says it lost its role for good: name a new
    /// active (possibly itself, in a new epoch) once the lease of the last
    /// grant has ended. The report alone is not proof that nobody holds
    /// the lease (DESIGN.md, "The arbiter's wait"): a second process started
    /// with the active's node id, or an active that believed a forged
    /// epoch, can say "standby" while the process holding the grant still
    /// takes writes.
    fn plan_after_lost_role(&self, active: &NodeId, now: Millis) -> Option<EpochPlan> {
        if !self.lost_role(active, now) {
            return None;
        }
        let stamp = self.stamp(now);
        let epoch = self.state.epoch;
        let wait = arbiter_wait_ms(&self.state.params);
        let lease_end = self.detector.lease_end(wait);
        if now < lease_end {
            let reason = format!(
                "active {active} reports it lost its role in epoch {epoch} (restarted or stepped down); a report does not end a lease, so waiting {} ms more for the last grant's lease (lease·(1+drift) = {wait} ms) to end",
                now.until(lease_end)
            );
            return Some(EpochPlan::Blocked {
                topic: "failover",
                key: "lost_role_lease_wait".into(),
                record: stamp.not_taken(DecisionKind::Failover, Some(active), reason),
            });
        }
        if self.state.maintenance {
            let reason = format!(
                "active {active} lost its role in epoch {epoch} (restarted or stepped down); maintenance mode is on, so no new active is named"
            );
            return Some(EpochPlan::Blocked {
                topic: "failover",
                key: "lost_role_maintenance".into(),
                record: stamp.not_taken(DecisionKind::Failover, Some(active), reason),
            });
        }
        let ranking = candidates::for_lost_role(&self.view(now));
        let Some(best) = ranking.best() else {
            let reason = format!(
                "active {active} lost its role in epoch {epoch}; no eligible replica: {}",
                ranking.explain()
            );
            return Some(EpochPlan::Blocked {
                topic: "failover",
                key: format!("lost_role:{}", ranking.key()),
                record: stamp.not_taken(DecisionKind::Failover, Some(active), reason),
            });
        };
        let mut reason = format!(
            "active {active} reports it lost its role in epoch {epoch} (restarted or stepped down) and the lease of its last grant has ended; naming {} at position {}",
            best.node, best.position
        );
        if best.node == *active {
            reason.push_str(" (it holds every write it acknowledged)");
        }
        Some(EpochPlan::Name {
            kind: DecisionKind::Failover,
            node: best.node.clone(),
            reason,
        })
    }

    fn plan_formation(&self, now: Millis) -> EpochPlan {
        let params = &self.state.params;
        let stamp = self.stamp(now);
        let waited = now.since(self.detector.took_office());
        let recorded = self.members_at_start.len();
        let reported = self
            .members_at_start
            .iter()
            .filter(|n| self.detector.observation(n).is_some())
            .count();
        if waited < params.initial_wait_ms && (recorded == 0 || reported < recorded) {
            let reason = format!(
                "first formation: waiting {} ms more of initial_wait_ms={} ({reported} of {recorded} recorded members reported)",
                params.initial_wait_ms - waited,
                params.initial_wait_ms
            );
            return EpochPlan::Blocked {
                topic: "formation",
                key: "initial_wait".into(),
                record: stamp.not_taken(DecisionKind::Formation, None, reason),
            };
        }
        // Evidence of an earlier active — an epoch in the store without an
        // active (hand-edited?), or replicas reporting epochs the store does
        // not know (a lost store) — means some arbiter may have granted a
        // lease we know nothing of: respect it like a failover would.
        let lease_end = self.detector.lease_end(arbiter_wait_ms(params));
        let earlier_active = self.state.epoch.0 > 0 || self.detector.highest_epoch_seen().0 > 0;
        if earlier_active && now < lease_end {
            let reason = format!(
                "no active recorded, but epoch {} was seen; waiting {} ms for any earlier grant to end",
                self.state.epoch.max(self.detector.highest_epoch_seen()),
                now.until(lease_end)
            );
            return EpochPlan::Blocked {
                topic: "formation",
                key: "lease_wait".into(),
                record: stamp.not_taken(DecisionKind::Formation, None, reason),
            };
        }
        if self.state.maintenance {
            return EpochPlan::Blocked {
                topic: "formation",
                key: "maintenance".into(),
                record: stamp.not_taken(
                    DecisionKind::Formation,
                    None,
                    "no active yet; maintenance mode is on, so none is named",
                ),
            };
        }
        let ranking = candidates::for_formation(&self.view(now));
        let Some(best) = ranking.best() else {
            let reason = format!(
                "first formation: no eligible replica: {}",
                ranking.explain()
            );
            return EpochPlan::Blocked {
                topic: "formation",
                key: format!("none:{}", ranking.key()),
                record: stamp.not_taken(DecisionKind::Formation, None, reason),
            };
        };
        let mut reason = format!(
            "first formation: {} at position {} with priority {} is the most caught-up eligible replica of {}",
            best.node,
            best.position,
            best.priority,
            ranking.eligible.len()
        );
        if !ranking.ineligible.is_empty() {
            reason.push_str(&format!("; not eligible: {}", ranking.explain()));
        }
        EpochPlan::Name {
            kind: DecisionKind::Formation,
            node: best.node.clone(),
            reason,
        }
    }

    /// The epoch a new active would get: one above both the store's and
    /// every epoch a replica reported; `None` if that would overflow.
    fn next_epoch(&self) -> Option<proto_common::Epoch> {
        self.state
            .epoch
            .max(self.detector.highest_epoch_seen())
            .checked_next()
    }

    /// Builds and registers the write naming `node` the active.
    pub(super) fn propose_epoch_change(
        &mut self,
        kind: DecisionKind,
        node: &NodeId,
        reason: String,
        now: Millis,
    ) -> ProposedWrite {
        let mut stamp = self.stamp(now);
        let mut draft = Draft::new(&self.state);
        membership::refresh(&mut draft, &self.detector, now, &stamp);
        let epoch = self
            .next_epoch()
            .expect("plan_epoch_change names no active when the epoch cannot grow");
        if let (false, Some(obs)) = (
            draft.state.members.contains_key(node),
            self.detector.observation(node),
        ) {
            // Only when remove_after_ms is shorter than the liveness window.
            draft.state.members.insert(
                node.clone(),
                MemberRecord {
                    client_url: obs.report.client_url.clone(),
                    repl_addr: obs.report.repl_addr.clone(),
                    priority: obs.report.priority,
                    position: obs.report.position,
                    quarantined_entries: obs.report.quarantined_entries,
                },
            );
        }
        let state = &mut draft.state;
        let member = state
            .members
            .get(node)
            .cloned()
            .unwrap_or_else(|| MemberRecord {
                client_url: String::new(),
                repl_addr: String::new(),
                priority: 0,
                position: Default::default(),
                quarantined_entries: 0,
            });
        state.epoch = epoch;
        state.active = Some(ActiveInfo {
            node_id: node.clone(),
            client_url: member.client_url,
            repl_addr: member.repl_addr,
        });
        state.sync_set.clear();
        state.sync_version += 1;
        state.confirmed_sync.clear();
        state.degraded = state.params.sync_standbys >= 1;
        draft.names_active = true;
        draft.fences_old_active = kind == DecisionKind::Switchover;
        stamp.epoch = epoch;
        draft.decide(stamp.taken(kind, Some(node), format!("epoch {epoch}: {reason}")));
        let write = draft.finish(&self.state);
        self.propose(write)
    }
}

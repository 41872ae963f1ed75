//! Heartbeats in, replies out: `Core::on_heartbeat` and `Core::reply`.
//!
//! A reply is computed from the **persisted** state only. It grants
//! `role: Active` (a lease, see `detector.rs`) to the recorded active of the
//! current epoch, and withholds the grant — answering `role: Standby` with
//! no `active` — when granting could overlap another lease:
//!
//! - a write naming a new active is in flight (if it lands, the new active
//!   is granted at once, so the old one must not get a fresh lease now);
//! - another node's grant may still be live (only after adopting a state
//!   written by someone else);
//! - the replica claims an epoch above the store's (should not happen: the
//!   store fell behind), or reports a lower position than it did earlier in
//!   its term (it lost durable writes: granting it would drop them).
//!
//! Everyone else gets `role: Standby` with the current epoch and the active's
//! addresses; that is how a resurrected old active learns to step down
//! (DESIGN.md, "Arbiter decisions").

use proto_common::heartbeat::{Heartbeat, HeartbeatReply, Role};

use super::arbiter::Core;
use super::decision::DecisionKind;
use super::draft::ProposedWrite;
use super::epoch_change::EpochPlan;
use super::handover::SWITCHOVER_HEARTBEAT_MS;
use super::time::{arbiter_wait_ms, Millis};
use crate::error::ArbiterError;

/// Longest advertised URL or address accepted, in bytes.
const MAX_ADDRESS_LEN: usize = 512;

/// What to do with a heartbeat.
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)] // one per heartbeat, moved once; boxing would only add noise
pub enum HeartbeatOutcome {
    /// Send this reply.
    Reply(HeartbeatReply),
    /// First compare-and-swap this write (it concerns the sender: e.g. its
    /// promotion), report the outcome with `on_persisted` / `on_conflict` /
    /// `on_persist_failed`, then call `on_heartbeat` again with the same
    /// heartbeat. After three rounds, answer with [`Core::reply`].
    Persist(ProposedWrite),
}

impl Core {
    /// Handles a heartbeat: records what it says and either answers it or
    /// asks for a write first.
    pub fn on_heartbeat(
        &mut self,
        hb: &Heartbeat,
        now: Millis,
    ) -> Result<HeartbeatOutcome, ArbiterError> {
        self.check_heartbeat(hb)?;
        if let Err(detail) = self.check_epochs(hb) {
            // Recorded (once per value) and refused before anything of the
            // heartbeat is believed: the detector's highest epoch feeds the
            // next epoch bump.
            let node = &hb.node_id;
            let record = self.stamp(now).not_taken(
                DecisionKind::Anomaly,
                Some(node),
                format!("heartbeat from {node} refused: {detail}"),
            );
            self.decisions.not_taken(
                &format!("implausible:{node}"),
                &hb.epoch.to_string(),
                record,
            );
            return Err(ArbiterError::BadHeartbeat {
                node: node.clone(),
                detail,
            });
        }
        self.detector.observe(hb, now);
        self.note_serving(hb, now);
        let node = &hb.node_id;
        if hb.epoch > self.state.epoch {
            let reason = format!(
                "{node} reports epoch {} but the store is at epoch {}: the store has lost writes (restored from an old backup?); {node} is not granted, and the next epoch bump goes above {}",
                hb.epoch, self.state.epoch, hb.epoch
            );
            let record = self
                .stamp(now)
                .not_taken(DecisionKind::Anomaly, Some(node), reason);
            self.decisions.not_taken(
                &format!("epoch_ahead:{node}"),
                &hb.epoch.to_string(),
                record,
            );
        }
        if self.state.is_active(node) && hb.role == Role::Active && hb.epoch == self.state.epoch {
            let standbys: Vec<_> = self
                .state
                .members
                .keys()
                .chain(self.state.sync_set.iter())
                .filter(|n| *n != node)
                .cloned()
                .collect();
            self.detector.note_active_report(hb, standbys.iter(), now);
        }
        if self.pending.is_none() {
            if let EpochPlan::Name {
                kind,
                node: named,
                reason,
            } = self.plan_epoch_change(now)
            {
                let about_sender = named == *node
                    || (kind == DecisionKind::Switchover && self.state.is_active(node));
                if about_sender {
                    let write = self.propose_epoch_change(kind, &named, reason, now);
                    return Ok(HeartbeatOutcome::Persist(write));
                }
            }
        }
        Ok(HeartbeatOutcome::Reply(self.reply(hb, now)))
    }

    /// Records the end of a failover's or switchover's write gap: the new
    /// active's first heartbeat as active in its epoch.
    fn note_serving(&mut self, hb: &Heartbeat, now: Millis) {
        let Some(watch) = &self.serving_watch else {
            return;
        };
        if hb.node_id != watch.node || hb.role != Role::Active || hb.epoch != watch.epoch {
            return;
        }
        let gap = now.since(watch.since);
        let from = match &watch.old {
            Some(old) => format!("{old}'s last heartbeat"),
            None => "the decision".into(),
        };
        let mut record = self.stamp(now).taken(
            watch.kind,
            Some(&watch.node),
            format!(
                "{} serves as active in epoch {}: writes stopped for about {gap} ms (from {from} \
                 to {}'s first heartbeat as active)",
                watch.node, watch.epoch, watch.node
            ),
        );
        record.write_gap_ms = Some(gap);
        self.decisions.record(record);
        self.serving_watch = None;
    }

    /// The reply to `hb` from the persisted state, recording a grant if it
    /// makes one. Never asks for a write.
    pub fn reply(&mut self, hb: &Heartbeat, now: Millis) -> HeartbeatReply {
        let state = &self.state;
        let node = &hb.node_id;
        let wait = arbiter_wait_ms(&state.params);
        let recorded = state.is_active(node);
        let mut withheld = None;
        if recorded {
            if self.pending_names_active() {
                withheld = Some(("recording", "a new active is being recorded".to_string()));
            } else if hb.role == Role::Standby && hb.active_epoch >= state.epoch {
                withheld = Some((
                    "lost_role",
                    format!(
                        "it lost the role in epoch {} (restarted or stepped down) and may not take writes in it again; a new epoch is being opened",
                        state.epoch
                    ),
                ));
            } else if hb.epoch > state.epoch {
                withheld = Some((
                    "epoch_ahead",
                    format!(
                        "it reports epoch {} above the store's {}",
                        hb.epoch, state.epoch
                    ),
                ));
            } else if let Some(high) = self
                .detector
                .active_high_water(node)
                .filter(|h| hb.position < *h)
            {
                withheld = Some((
                    "regressed",
                    format!(
                        "it reports position {} below the {high} it reported earlier in its term: it lost durable writes",
                        hb.position
                    ),
                ));
            } else if let Err((holder, left)) = self.detector.may_grant(node, now, wait) {
                withheld = Some((
                    "other_grant",
                    format!("the grant sent to {holder} may be live for {left} ms more"),
                ));
            }
        }
        let grant = recorded && withheld.is_none();
        let epoch = state.epoch;
        if grant {
            self.detector.record_grant(node, epoch, now);
            self.detector.raise_active_high_water(node, hb.position);
            self.decisions.clear_prefix("failover");
            self.decisions.clear(&format!("withheld:{node}"));
        } else if let Some((key, why)) = withheld {
            let reason = format!("not granting active {node} epoch {epoch}: {why}");
            let record = self
                .stamp(now)
                .not_taken(DecisionKind::Fencing, Some(node), reason);
            self.decisions
                .not_taken(&format!("withheld:{node}"), key, record);
        } else if hb.role == Role::Active {
            let active = state
                .active_id()
                .map_or("none yet".to_string(), |a| a.to_string());
            let reason = format!(
                "{node} claims to be active at epoch {}, but the active of epoch {epoch} is {active}: told it to stand by",
                hb.epoch
            );
            let record = self
                .stamp(now)
                .taken(DecisionKind::Fencing, Some(node), reason);
            self.decisions
                .not_taken(&format!("fencing:{node}"), &epoch.to_string(), record);
        } else {
            self.decisions.clear(&format!("fencing:{node}"));
        }

        let state = &self.state;
        let switchover = self.switchover.as_ref().filter(|sw| sw.epoch == epoch);
        let switchover_to = switchover
            .filter(|sw| grant && sw.from == *node)
            .map(|sw| sw.target.clone());
        let next_heartbeat_ms =
            if switchover.is_some_and(|sw| sw.from == *node || sw.target == *node) {
                Some(SWITCHOVER_HEARTBEAT_MS)
            } else if grant {
                // A sync member's connection closed: its removal is being
                // recorded, and the active (whose writes wait for the
                // member until then) should hear of it within ms.
                let member_lost = hb
                    .standbys
                    .iter()
                    .any(|p| !p.connected && state.in_sync_set(&p.node_id));
                member_lost.then_some(SWITCHOVER_HEARTBEAT_MS)
            } else {
                self.candidate_hint(hb, now)
            };
        HeartbeatReply {
            seq: hb.seq,
            role: if grant { Role::Active } else { Role::Standby },
            epoch,
            active: if recorded && !grant {
                None
            } else {
                state.active.clone()
            },
            sync_set: state.sync_set.clone(),
            sync_version: state.sync_version,
            params: state.params.clone(),
            switchover_to,
            next_heartbeat_ms,
            leader: None,
            reinit: state
                .reinit
                .get(node)
                .copied()
                .filter(|n| !grant && hb.reinitialized < *n),
        }
    }

    /// For the best failover candidate while the active's lease runs out:
    /// come back right when the wait ends (+1 ms), if that is sooner than
    /// the next regular heartbeat.
    fn candidate_hint(&self, hb: &Heartbeat, now: Millis) -> Option<u64> {
        let state = &self.state;
        if state.active.is_none() || state.maintenance {
            return None;
        }
        // A write naming this node the active is in flight: come back as
        // soon as it can have landed, not a whole heartbeat later.
        if let Some(w) = &self.pending {
            let names_sender = w.names_active
                && w.state
                    .active
                    .as_ref()
                    .is_some_and(|a| a.node_id == hb.node_id);
            return names_sender.then_some(SWITCHOVER_HEARTBEAT_MS);
        }
        let left = now.until(self.detector.lease_end(arbiter_wait_ms(&state.params)));
        if left >= state.params.heartbeat_ms {
            return None;
        }
        let ranking = super::candidates::for_failover(&self.view(now));
        // The wait ends before the next regular heartbeat (or has ended and
        // the promotion is being decided): ask the best candidate back then.
        (ranking.best()?.node == hb.node_id).then_some(if left == 0 {
            SWITCHOVER_HEARTBEAT_MS
        } else {
            left + 1
        })
    }

    /// The epochs a heartbeat reports must be consistent with each other
    /// and plausible against the store's (`Epoch::MAX_LEAP`): one replica
    /// reporting 2^64−1 must not make the next epoch wrap, nor depose
    /// anyone.
    fn check_epochs(&self, hb: &Heartbeat) -> Result<(), String> {
        hb.epoch
            .check_plausible(self.state.epoch.max(self.detector.highest_epoch_seen()))?;
        if hb.active_epoch > hb.epoch || hb.position.epoch > hb.epoch {
            return Err(format!(
                "it reports epoch {} but was active in epoch {} and holds position {}: a \
                 replica's epoch is never below either",
                hb.epoch, hb.active_epoch, hb.position
            ));
        }
        Ok(())
    }

    fn check_heartbeat(&self, hb: &Heartbeat) -> Result<(), ArbiterError> {
        if hb.cluster != self.state.cluster {
            return Err(ArbiterError::WrongCluster {
                node: hb.node_id.clone(),
                got: hb.cluster.clone(),
                want: self.state.cluster.clone(),
            });
        }
        for (field, value) in [("client_url", &hb.client_url), ("repl_addr", &hb.repl_addr)] {
            if value.is_empty() || value.len() > MAX_ADDRESS_LEN {
                return Err(ArbiterError::BadHeartbeat {
                    node: hb.node_id.clone(),
                    detail: format!(
                        "{field}={value:?} must be 1 to {MAX_ADDRESS_LEN} bytes; set the replica's advertised {field}"
                    ),
                });
            }
        }
        Ok(())
    }
}

//! Membership upkeep: replicas join by heartbeating, change address or
//! priority by heartbeating with new values, and are dropped after
//! `remove_after_ms` of silence (DESIGN.md, "Membership": identity is
//! the node id, and no configuration change is needed for any of this).
//!
//! A member is never dropped while it is the recorded active, a member of
//! the stored sync set (it must leave the sync set first, by its own write,
//! so the active stops waiting for it before it disappears), or the target
//! of a running switchover.

use proto_common::heartbeat::Heartbeat;
use proto_common::NodeId;

use super::arbiter::Core;
use super::decision::{DecisionKind, Stamp};
use super::detector::Detector;
use super::draft::{Draft, ProposedWrite};
use super::time::Millis;
use crate::error::ArbiterError;
use crate::store::{ClusterState, MemberRecord};

/// Brings the draft's members up to date with the heartbeats heard: new
/// replicas join; changed addresses or priorities are recorded (and
/// decided); positions and quarantine counts are refreshed silently.
pub fn refresh(draft: &mut Draft, detector: &Detector, now: Millis, stamp: &Stamp) {
    let remove_after = draft.state.params.remove_after_ms;
    for (node, obs) in detector.observed() {
        let r = &obs.report;
        match draft.state.members.get_mut(node) {
            Some(m) => {
                let mut changes = Vec::new();
                if m.client_url != r.client_url {
                    changes.push(format!("client_url {} → {}", m.client_url, r.client_url));
                }
                if m.repl_addr != r.repl_addr {
                    changes.push(format!("repl_addr {} → {}", m.repl_addr, r.repl_addr));
                }
                if m.priority != r.priority {
                    changes.push(format!("priority {} → {}", m.priority, r.priority));
                }
                m.client_url.clone_from(&r.client_url);
                m.repl_addr.clone_from(&r.repl_addr);
                m.priority = r.priority;
                m.position = r.position;
                m.quarantined_entries = r.quarantined_entries;
                if !changes.is_empty() {
                    let reason = format!("{node} changed {}", changes.join(", "));
                    draft.decide(stamp.taken(DecisionKind::Membership, Some(node), reason));
                }
            }
            None => {
                // A replica dropped from membership is forgotten by the
                // detector only once that write lands; until then its stale
                // observation must not make it rejoin.
                if now.since(obs.last_heartbeat) >= remove_after {
                    continue;
                }
                draft.state.members.insert(
                    node.clone(),
                    MemberRecord {
                        client_url: r.client_url.clone(),
                        repl_addr: r.repl_addr.clone(),
                        priority: r.priority,
                        position: r.position,
                        quarantined_entries: r.quarantined_entries,
                    },
                );
                let reason = format!(
                    "{node} joined: client_url {}, repl_addr {}, priority {}, position {}",
                    r.client_url, r.repl_addr, r.priority, r.position
                );
                draft.decide(stamp.taken(DecisionKind::Membership, Some(node), reason));
            }
        }
    }
    // Reinit orders carried out: the standby may rejoin the sync set (once
    // caught up) and be promoted again.
    let done: Vec<(NodeId, u64)> = draft
        .state
        .reinit
        .iter()
        .filter(|(node, order)| {
            detector
                .observation(node)
                .is_some_and(|o| o.report.reinitialized >= **order)
        })
        .map(|(n, o)| (n.clone(), *o))
        .collect();
    for (node, order) in done {
        draft.state.reinit.remove(&node);
        let reason = format!(
            "{node} carried out reinit order {order}: it discarded its data and copies the \
             active's; it rejoins the sync set once caught up"
        );
        draft.decide(stamp.taken(DecisionKind::Membership, Some(&node), reason));
    }
    // The recorded active's addresses follow its member record, so standbys
    // are sent to where it listens now.
    if let Some(active) = &mut draft.state.active {
        if let Some(m) = draft.state.members.get(&active.node_id) {
            active.client_url.clone_from(&m.client_url);
            active.repl_addr.clone_from(&m.repl_addr);
        }
    }
}

/// Drops members silent for `remove_after_ms` (see the module docs for who
/// is never dropped).
pub fn remove_silent(
    draft: &mut Draft,
    base: &ClusterState,
    detector: &Detector,
    now: Millis,
    protect: Option<&NodeId>,
    stamp: &Stamp,
) {
    let remove_after = base.params.remove_after_ms;
    let nodes: Vec<NodeId> = base.members.keys().cloned().collect();
    for node in nodes {
        let kept = base.is_active(&node)
            || draft.state.is_active(&node)
            || base.in_sync_set(&node)
            || draft.state.in_sync_set(&node)
            || protect == Some(&node);
        if kept {
            continue;
        }
        let silent = detector.silence_ms(&node, now);
        if silent < remove_after {
            continue;
        }
        draft.state.members.remove(&node);
        draft.state.confirmed_sync.retain(|n| *n != node);
        let reason = format!(
            "{node} dropped from membership: silent for {silent} ms (remove_after_ms={remove_after}); it rejoins if it heartbeats again"
        );
        draft.decide(stamp.taken(DecisionKind::Membership, Some(&node), reason));
        draft.forget.push(node);
    }
}

impl Core {
    /// For an operator's order about `node`: no write in flight, and `node`
    /// a member; otherwise the error (`refuse` words a refusal).
    pub(super) fn check_member(
        &self,
        node: &NodeId,
        refuse: impl Fn(String) -> ArbiterError,
    ) -> Result<(), ArbiterError> {
        if self.pending.is_some() {
            return Err(ArbiterError::WriteInProgress);
        }
        if !self.state.members.contains_key(node) {
            let members: Vec<&str> = self.state.members.keys().map(NodeId::as_str).collect();
            return Err(refuse(format!(
                "it is not a member (members: {})",
                members.join(", ")
            )));
        }
        Ok(())
    }

    /// `node`'s last report when it heartbeated within two intervals (it is
    /// running and can act on an order); otherwise a refusal naming its
    /// silence.
    pub(super) fn live_report(
        &self,
        node: &NodeId,
        now: Millis,
        refuse: impl Fn(String) -> ArbiterError,
    ) -> Result<Heartbeat, ArbiterError> {
        let live_ms = 2 * self.state.params.heartbeat_ms;
        self.detector
            .observation(node)
            .filter(|_| self.detector.heard_within(node, now, live_ms))
            .map(|o| o.report.clone())
            .ok_or_else(|| {
                refuse(format!(
                    "it is not heartbeating (silent {} ms): it must be running to carry this \
                     out; start it first",
                    self.detector.silence_ms(node, now)
                ))
            })
    }

    /// The operator's `reinit NODE` (see the replica's `reinit.rs`): the
    /// standby leaves the sync set and promotion in this same write, so no
    /// acknowledged write depends on it when it discards its data.
    pub fn reinit_member(
        &mut self,
        node: &NodeId,
        now: Millis,
    ) -> Result<ProposedWrite, ArbiterError> {
        let refuse = |why: String| ArbiterError::CannotReinit {
            node: node.clone(),
            why,
        };
        self.check_member(node, refuse)?;
        if self.state.is_active(node) {
            return Err(refuse(
                "it is the active; hand over first (arbiter switchover --wait), then reinit it"
                    .into(),
            ));
        }
        if self
            .switchover
            .as_ref()
            .is_some_and(|sw| &sw.target == node)
        {
            return Err(refuse("a switchover to it is running".into()));
        }
        if let Some(order) = self.state.reinit.get(node) {
            return Err(refuse(format!(
                "order {order} is still being carried out (arbiter status shows when it is done)"
            )));
        }
        let report = self.live_report(node, now, refuse)?;
        if !report.can_reinit {
            return Err(refuse(
                "it cannot carry out a reinit (proxy mode: its upstream holds the data too); \
                 flush its upstream (FLUSHALL on the upstream's own port) and it resyncs by \
                 itself"
                    .into(),
            ));
        }
        let order = self.state.version + 1;
        let mut draft = Draft::new(&self.state);
        let stamp = self.stamp(now);
        let state = &mut draft.state;
        state.reinit.insert(node.clone(), order);
        let was = state.sync_set.clone();
        if state.in_sync_set(node) {
            state.sync_set.retain(|n| n != node);
            state.confirmed_sync.retain(|n| n != node);
            state.sync_version += 1;
        }
        let k = state.params.sync_standbys as usize;
        let sync_note = if was == state.sync_set {
            String::new()
        } else {
            format!(
                "; it leaves sync set v{} (now {:?}{})",
                state.sync_version,
                state
                    .sync_set
                    .iter()
                    .map(NodeId::as_str)
                    .collect::<Vec<_>>(),
                if state.sync_set.len() < k {
                    ", degraded until another standby catches up"
                } else {
                    ""
                }
            )
        };
        let reason = format!(
            "{node} ordered to reinitialize by the operator (order {order}): it discards its log \
             and snapshots and copies the active's data; out of promotion until done{sync_note}"
        );
        draft.decide(stamp.taken(DecisionKind::Membership, Some(node), reason));
        super::sync_set::settle_degraded(&mut draft, &stamp);
        let write = draft.finish(&self.state);
        Ok(self.propose(write))
    }

    /// The operator's `remove NODE`: drops a member that is gone for good
    /// now, instead of after `remove_after_ms`. The same members are kept
    /// as by the timer (the active, a sync-set member, a switchover's
    /// target), and so is one still heartbeating (it would rejoin at once):
    /// each refusal says what to do instead.
    pub fn remove_member(
        &mut self,
        node: &NodeId,
        now: Millis,
    ) -> Result<ProposedWrite, ArbiterError> {
        let refuse = |why: String| ArbiterError::CannotRemove {
            node: node.clone(),
            why,
        };
        self.check_member(node, refuse)?;
        if self.state.is_active(node) {
            return Err(refuse(
                "it is the active; hand over first (arbiter switchover --wait), then stop it \
                 and remove it"
                    .into(),
            ));
        }
        if self.state.in_sync_set(node) {
            return Err(refuse(
                "it is in the sync set; stop it, and once the arbiter has taken it out of the \
                 sync set (arbiter status), remove it"
                    .into(),
            ));
        }
        if self
            .switchover
            .as_ref()
            .is_some_and(|sw| &sw.target == node)
        {
            return Err(refuse("a switchover to it is running".into()));
        }
        let lease = self.state.params.lease_ms;
        let silent = self.detector.silence_ms(node, now);
        if silent < lease {
            return Err(refuse(format!(
                "it heartbeated {silent} ms ago and would rejoin at once; stop it first"
            )));
        }
        let mut draft = Draft::new(&self.state);
        draft.state.members.remove(node);
        draft.state.confirmed_sync.retain(|n| n != node);
        let reason = format!(
            "{node} removed by the operator (silent for {silent} ms); it rejoins if it \
             heartbeats again"
        );
        draft.decide(
            self.stamp(now)
                .taken(DecisionKind::Membership, Some(node), reason),
        );
        draft.forget.push(node.clone());
        let write = draft.finish(&self.state);
        Ok(self.propose(write))
    }
}

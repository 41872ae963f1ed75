//! `Detector`: what this arbiter process has seen of the replicas (last
//! heartbeat times and reports) and what it has granted, measured only on
//! its own monotonic clock.
//!
//! # The grant ledger
//!
//! A grant (a reply with `role: Active`) lets its holder take writes until
//! `t_send + lease·(1 − drift)` on the holder's clock. The arbiter records
//! `t_grant = now` when it builds the reply — after the heartbeat arrived, so
//! `t_send < t_grant` — and the lease argument (DESIGN.md, "The arbiter's
//! wait") gives: once `now ≥ t_grant + lease·(1 + drift)` that lease
//! is over. Two rules follow, enforced here and nowhere else:
//!
//! - **no promotion** while the last grant may be live ([`Detector::lease_end`]);
//! - **no grant to another node** while the last grant may be live
//!   ([`Detector::may_grant`]) — a belt to the first rule's braces that also
//!   covers adopting another writer's state after a CAS conflict.
//!
//! A grant stops counting early only when its holder *fenced* itself: it
//! reported a drained switchover handoff, after which it never takes another
//! write in that epoch (proto-common `Handoff`). A new process, or one that
//! just lost a CAS race, knows no grants: it treats its start (the *floor*)
//! as a grant to everyone (DESIGN.md, "Arbiter failover").

use std::collections::BTreeMap;

use proto_common::heartbeat::Heartbeat;
use proto_common::{Epoch, NodeId, Position};

use super::time::Millis;

/// The last heartbeat of one replica.
#[derive(Clone, Debug)]
pub struct Observation {
    /// When it arrived, on our clock.
    pub last_heartbeat: Millis,
    /// What it said.
    pub report: Heartbeat,
}

/// The most recent grant this process sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// Who received it.
    pub node: NodeId,
    /// The epoch it granted.
    pub epoch: Epoch,
    /// `t_grant`: when the reply was built.
    pub at: Millis,
    /// The holder reported a drained handoff since: it takes no more writes.
    pub fenced: bool,
}

/// Liveness, grants and the active's view of its standbys.
#[derive(Clone, Debug)]
pub struct Detector {
    /// Last heartbeat per replica, since this process took office.
    observed: BTreeMap<NodeId, Observation>,
    /// When this process took office; silence of a never-heard replica is
    /// measured from here.
    took_office: Millis,
    /// No grant this process does not know about can outlive
    /// `floor + lease·(1+drift)`: set on taking office and on adopting a
    /// state someone else wrote; also on naming a new active, to give it one
    /// lease to show up before it can be replaced.
    floor: Millis,
    /// The last grant sent, if any since taking office.
    last_grant: Option<Grant>,
    /// Per standby: since when the active has reported it disconnected (or
    /// not reported it at all).
    disconnected_since: BTreeMap<NodeId, Millis>,
    /// Highest epoch any replica has reported: the next epoch bump goes above
    /// it even if the store somehow fell behind.
    highest_epoch_seen: Epoch,
    /// The active's position may only grow within its term; a lower report
    /// means it lost durable writes, and it is not granted again.
    active_high_water: Option<(NodeId, Position)>,
}

impl Detector {
    /// A detector for a process that takes office at `now`.
    pub fn new(now: Millis) -> Detector {
        Detector {
            observed: BTreeMap::new(),
            took_office: now,
            floor: now,
            last_grant: None,
            disconnected_since: BTreeMap::new(),
            highest_epoch_seen: Epoch::ZERO,
            active_high_water: None,
        }
    }

    /// Records a heartbeat.
    pub fn observe(&mut self, hb: &Heartbeat, now: Millis) {
        self.highest_epoch_seen = self.highest_epoch_seen.max(hb.epoch);
        self.observed.insert(
            hb.node_id.clone(),
            Observation {
                last_heartbeat: now,
                report: hb.clone(),
            },
        );
    }

    /// The last heartbeat of `node`, if heard since taking office.
    pub fn observation(&self, node: &NodeId) -> Option<&Observation> {
        self.observed.get(node)
    }

    /// Every replica heard since taking office.
    pub fn observed(&self) -> impl Iterator<Item = (&NodeId, &Observation)> {
        self.observed.iter()
    }

    /// Forgets a replica (dropped from membership).
    pub fn forget(&mut self, node: &NodeId) {
        self.observed.remove(node);
        self.disconnected_since.remove(node);
    }

    /// How long `node` has been silent: since its last heartbeat, or since
    /// we took office if we never heard it.
    pub fn silence_ms(&self, node: &NodeId, now: Millis) -> u64 {
        let since = self
            .observed
            .get(node)
            .map_or(self.took_office, |o| o.last_heartbeat);
        now.since(since)
    }

    /// Whether `node` heartbeated within the last `ms`.
    pub fn heard_within(&self, node: &NodeId, now: Millis, ms: u64) -> bool {
        self.observed
            .get(node)
            .is_some_and(|o| now.since(o.last_heartbeat) <= ms)
    }

    /// When this process took office.
    pub fn took_office(&self) -> Millis {
        self.took_office
    }

    /// The earliest time another replica may be named active: no grant can
    /// be live from then on.
    pub fn lease_end(&self, wait_ms: u64) -> Millis {
        let last = self
            .last_grant
            .as_ref()
            .filter(|g| !g.fenced)
            .map_or(self.floor, |g| g.at.max(self.floor));
        last + wait_ms
    }

    /// Whether a grant to `node` is allowed now: `Err((holder, ms_left))`
    /// while another node's grant may still be live.
    pub fn may_grant(&self, node: &NodeId, now: Millis, wait_ms: u64) -> Result<(), (NodeId, u64)> {
        match &self.last_grant {
            Some(g) if !g.fenced && g.node != *node && now < g.at + wait_ms => {
                Err((g.node.clone(), now.until(g.at + wait_ms)))
            }
            _ => Ok(()),
        }
    }

    /// Records `t_grant = now` for a grant to `node` at `epoch`.
    pub fn record_grant(&mut self, node: &NodeId, epoch: Epoch, now: Millis) {
        self.last_grant = Some(Grant {
            node: node.clone(),
            epoch,
            at: now,
            fenced: false,
        });
    }

    /// The last grant sent.
    pub fn last_grant(&self) -> Option<&Grant> {
        self.last_grant.as_ref()
    }

    /// The last grant's holder has fenced itself (drained handoff).
    pub fn fence_last_grant(&mut self) {
        if let Some(g) = &mut self.last_grant {
            g.fenced = true;
        }
    }

    /// Restarts the lease clock at `now` (see the `floor` field).
    pub fn restart_lease_clock(&mut self, now: Millis) {
        self.floor = self.floor.max(now);
    }

    /// Highest epoch any replica reported.
    pub fn highest_epoch_seen(&self) -> Epoch {
        self.highest_epoch_seen
    }

    /// Updates, from the active's heartbeat, since when each of `standbys`
    /// has been disconnected from it.
    pub fn note_active_report<'a>(
        &mut self,
        report: &Heartbeat,
        standbys: impl Iterator<Item = &'a NodeId>,
        now: Millis,
    ) {
        for node in standbys {
            let connected = report
                .standbys
                .iter()
                .any(|s| s.node_id == *node && s.connected);
            if connected {
                self.disconnected_since.remove(node);
            } else {
                self.disconnected_since.entry(node.clone()).or_insert(now);
            }
        }
    }

    /// How long the active has reported `node` disconnected, if it does.
    pub fn disconnected_ms(&self, node: &NodeId, now: Millis) -> Option<u64> {
        self.disconnected_since.get(node).map(|t| now.since(*t))
    }

    /// A new active: its view of the standbys starts from scratch, and its
    /// position starts at `position`.
    pub fn new_active(&mut self, node: &NodeId, position: Position) {
        self.disconnected_since.clear();
        self.active_high_water = Some((node.clone(), position));
    }

    /// The highest position the active `node` has reported in its term.
    pub fn active_high_water(&self, node: &NodeId) -> Option<Position> {
        self.active_high_water
            .as_ref()
            .filter(|(n, _)| n == node)
            .map(|(_, p)| *p)
    }

    /// Raises the active's high-water mark.
    pub fn raise_active_high_water(&mut self, node: &NodeId, position: Position) {
        match &mut self.active_high_water {
            Some((n, p)) if n == node => *p = (*p).max(position),
            _ => self.active_high_water = Some((node.clone(), position)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> NodeId {
        NodeId::new(s).unwrap()
    }

    #[test]
    fn lease_end_counts_from_the_last_grant_or_taking_office() {
        let mut d = Detector::new(Millis(1000));
        assert_eq!(
            d.lease_end(1100),
            Millis(2100),
            "no grant known: from taking office"
        );
        d.record_grant(&id("a"), Epoch(1), Millis(1500));
        assert_eq!(d.lease_end(1100), Millis(2600));
        d.restart_lease_clock(Millis(1700));
        assert_eq!(
            d.lease_end(1100),
            Millis(2800),
            "a conflict restarts the clock"
        );
        d.restart_lease_clock(Millis(1200));
        assert_eq!(
            d.lease_end(1100),
            Millis(2800),
            "the floor never moves back"
        );
    }

    #[test]
    fn no_grant_to_another_node_while_one_may_be_live_unless_fenced() {
        let mut d = Detector::new(Millis(0));
        d.record_grant(&id("a"), Epoch(1), Millis(100));
        assert!(
            d.may_grant(&id("a"), Millis(150), 1100).is_ok(),
            "renewing is fine"
        );
        assert_eq!(
            d.may_grant(&id("b"), Millis(150), 1100),
            Err((id("a"), 1050))
        );
        assert!(d.may_grant(&id("b"), Millis(1200), 1100).is_ok());
        d.fence_last_grant();
        assert!(
            d.may_grant(&id("b"), Millis(150), 1100).is_ok(),
            "a drained: its grant is void"
        );
        assert_eq!(
            d.lease_end(1100),
            Millis(1100),
            "a fenced grant does not delay promotion"
        );
    }

    #[test]
    fn disconnection_is_timed_from_the_first_report_missing_it() {
        let mut d = Detector::new(Millis(0));
        let hb: Heartbeat = serde_json::from_value(serde_json::json!({
            "cluster": "c", "node_id": "a", "seq": 1, "client_url": "http://a", "repl_addr": "a:1",
            "role": "active", "epoch": 1, "position": "1.5", "commit_index": 5, "priority": 1,
            "quarantined_entries": 0, "healthy": true,
            "standbys": [{"node_id": "b", "acked": "1.5", "lag_entries": 0, "lag_ms": 0, "connected": true}]
        }))
        .unwrap();
        let nodes = [id("b"), id("c")];
        d.note_active_report(&hb, nodes.iter(), Millis(10));
        assert_eq!(d.disconnected_ms(&id("b"), Millis(20)), None);
        assert_eq!(
            d.disconnected_ms(&id("c"), Millis(20)),
            Some(10),
            "unreported counts as disconnected"
        );
        d.note_active_report(&hb, nodes.iter(), Millis(500));
        assert_eq!(d.disconnected_ms(&id("c"), Millis(600)), Some(590));
    }
}

//! `Sim`: a fake cluster around one `Core` — simulated replicas that
//! heartbeat on schedule and obey replies, a compare-and-swap store in
//! memory, and a fake clock stepped one millisecond at a time.
//!
//! Replicas are deliberately simple: a live standby that is `caught_up`
//! copies every write of the active at once; the active reports its
//! standbys' progress from their positions and (if `confirms`) echoes the
//! sync-set version it was given; told `switchover_to`, it drains at once
//! (unless `drains` is false) and heartbeats immediately.

use std::collections::BTreeMap;

use proto_common::heartbeat::{Handoff, Heartbeat, HeartbeatReply, Role, StandbyProgress};
use proto_common::params::ClusterParams;
use proto_common::{Epoch, LogIndex, NodeId, Position};

use crate::core::{Core, HeartbeatOutcome, Millis, ProposedWrite};
use crate::store::ClusterState;

/// Wall-clock time the fake clock's zero maps to.
pub const UNIX_AT_ZERO: u64 = 1_700_000_000_000;

pub fn id(s: &str) -> NodeId {
    NodeId::new(s).unwrap()
}

/// One simulated replica.
#[derive(Clone, Debug)]
pub struct Replica {
    pub alive: bool,
    pub role: Role,
    pub epoch: Epoch,
    /// Highest epoch it took writes in (survives restarts).
    pub active_epoch: Epoch,
    pub position: Position,
    pub priority: u32,
    pub healthy: bool,
    /// Why it cannot lead now, though healthy (proxy mode: refilling).
    pub cannot_lead: Option<String>,
    pub next_hb: Millis,
    pub seq: u64,
    /// Whether the active reports a replication connection to it.
    pub connected: bool,
    /// Whether the active reports it at all (it connected to the active at
    /// least once); a replica that never connected is left out.
    pub reported: bool,
    /// Copies the active's writes at once (else lags behind).
    pub caught_up: bool,
    /// As active: echo the sync version it was given.
    pub confirms: bool,
    /// As active: drain when told to switch over.
    pub drains: bool,
    pub sync_version_seen: u64,
    pub switchover_to: Option<NodeId>,
    pub client_url: String,
    pub last_reply: Option<HeartbeatReply>,
}

/// The fake cluster.
pub struct Sim {
    pub core: Core,
    pub now: Millis,
    pub replicas: BTreeMap<NodeId, Replica>,
    /// The simulated store's content.
    pub store: Option<ClusterState>,
    /// Every state written, in order.
    pub writes: Vec<ClusterState>,
    /// Tick the core every ms (else only heartbeats drive it).
    pub auto_tick: bool,
    /// Make the next CAS fail with an I/O error.
    pub fail_next_write: bool,
    pub cluster: String,
}

impl Sim {
    pub fn new(params: ClusterParams) -> Sim {
        Sim::with_state(ClusterState::new("test", params), None, Millis(0))
    }

    /// A core taking office at `now` over `stored` (as loaded).
    pub fn with_state(state: ClusterState, stored: Option<ClusterState>, now: Millis) -> Sim {
        Sim {
            core: Core::take_office(state, now, UNIX_AT_ZERO + now.0),
            now,
            replicas: BTreeMap::new(),
            store: stored,
            writes: Vec::new(),
            auto_tick: true,
            fail_next_write: false,
            cluster: "test".into(),
        }
    }

    /// A cluster of `nodes` (name, priority) at position 0.0, formed with
    /// the first one active and the sync set filled and confirmed.
    pub fn formed(params: ClusterParams, nodes: &[(&str, u32)]) -> Sim {
        let mut sim = Sim::new(params);
        for (n, p) in nodes {
            sim.add(n, Position::ZERO, *p);
        }
        let first = id(nodes[0].0);
        // Make the first one win the formation by having more data.
        sim.replica(nodes[0].0).position = Position::new(0, 1);
        let k = sim.core.state().params.sync_standbys as usize;
        sim.run_until_cond(10_000, |s| {
            let st = s.stored();
            st.is_active(&first)
                && st.confirmed_sync.len() >= k.min(nodes.len() - 1)
                && s.replicas[&first].role == Role::Active
        });
        sim
    }

    pub fn add(&mut self, name: &str, position: Position, priority: u32) {
        self.replicas.insert(
            id(name),
            Replica {
                alive: true,
                role: Role::Standby,
                epoch: position.epoch,
                active_epoch: Epoch::ZERO,
                position,
                priority,
                healthy: true,
                cannot_lead: None,
                next_hb: self.now,
                seq: 0,
                connected: true,
                reported: true,
                caught_up: true,
                confirms: true,
                drains: true,
                sync_version_seen: 0,
                switchover_to: None,
                client_url: format!("http://{name}:7000"),
                last_reply: None,
            },
        );
    }

    pub fn replica(&mut self, name: &str) -> &mut Replica {
        self.replicas.get_mut(&id(name)).unwrap()
    }

    pub fn stored(&self) -> &ClusterState {
        self.core.state()
    }

    pub fn active(&self) -> Option<String> {
        self.stored().active_id().map(|a| a.to_string())
    }

    pub fn kill(&mut self, name: &str) {
        self.replica(name).alive = false;
    }

    /// Brings a replica back; it heartbeats at once, still believing what
    /// it believed when it died (a resurrected old active says "active").
    pub fn revive(&mut self, name: &str) {
        let now = self.now;
        let r = self.replica(name);
        r.alive = true;
        r.next_hb = now;
    }

    /// Restarts a replica: it keeps its data and `active_epoch` but comes back
    /// as a standby (every replica starts as one) and heartbeats at once.
    pub fn restart(&mut self, name: &str) {
        let now = self.now;
        let r = self.replica(name);
        r.alive = true;
        r.role = Role::Standby;
        r.switchover_to = None;
        r.next_hb = now;
    }

    /// The active appends `n` entries; caught-up live standbys copy them.
    pub fn write(&mut self, n: u64) {
        let active = self
            .replicas
            .iter()
            .find(|(_, r)| r.alive && r.role == Role::Active)
            .map(|(k, _)| k.clone());
        let Some(active) = active else {
            panic!("no live active to write to")
        };
        let a = self.replicas.get_mut(&active).unwrap();
        a.position = Position {
            epoch: a.epoch,
            index: LogIndex(a.position.index.0 + n),
        };
        let pos = a.position;
        for (k, r) in self.replicas.iter_mut() {
            if *k != active && r.alive && r.caught_up && r.connected {
                r.position = pos;
            }
        }
    }

    /// Live, connected, caught-up standbys copy the recorded active's log.
    fn replicate(&mut self) {
        let Some(active) = self.stored().active_id().cloned() else {
            return;
        };
        let Some(a) = self
            .replicas
            .get(&active)
            .filter(|r| r.alive && r.role == Role::Active)
        else {
            return;
        };
        let pos = a.position;
        for (k, r) in self.replicas.iter_mut() {
            if *k != active && r.alive && r.caught_up && r.connected && r.role == Role::Standby {
                r.position = pos;
            }
        }
    }

    /// The heartbeat `name` would send now.
    pub fn heartbeat_of(&self, name: &str) -> Heartbeat {
        let node = id(name);
        let r = &self.replicas[&node];
        let mut standbys = Vec::new();
        if r.role == Role::Active {
            for (k, o) in &self.replicas {
                if *k == node || !o.alive || !o.reported || o.role == Role::Active {
                    continue;
                }
                let lag = r.position.index.0.saturating_sub(o.position.index.0);
                standbys.push(StandbyProgress {
                    node_id: k.clone(),
                    acked: o.position,
                    lag_entries: lag,
                    lag_ms: if lag == 0 { 0 } else { 500 },
                    connected: o.connected,
                });
            }
        }
        Heartbeat {
            cluster: self.cluster.clone(),
            node_id: node.clone(),
            seq: r.seq,
            client_url: r.client_url.clone(),
            repl_addr: format!("{name}:7001"),
            role: r.role,
            epoch: r.epoch,
            active_epoch: r.active_epoch,
            position: r.position,
            commit_index: r.position.index,
            priority: r.priority,
            quarantined_entries: 0,
            healthy: r.healthy,
            detail: (!r.healthy).then(|| "disk failed".to_string()),
            following: None,
            sync_version: if r.role == Role::Active && r.confirms {
                r.sync_version_seen
            } else {
                0
            },
            standbys,
            handoff: r
                .switchover_to
                .clone()
                .filter(|_| r.drains)
                .map(|target| Handoff {
                    target,
                    drained: true,
                }),
            reinitialized: 0,
            can_reinit: true,
            upstream: None,
            disk: None,
            cannot_lead: r.cannot_lead.clone(),
        }
    }

    /// Sends `name`'s heartbeat now, handling writes the core asks for, and
    /// applies the reply to the replica.
    pub fn beat(&mut self, name: &str) -> HeartbeatReply {
        let hb = self.heartbeat_of(name);
        let reply = self.send(&hb);
        self.apply_reply(name, &reply);
        reply
    }

    /// Sends an arbitrary heartbeat (without applying the reply).
    pub fn send(&mut self, hb: &Heartbeat) -> HeartbeatReply {
        for _ in 0..3 {
            match self
                .core
                .on_heartbeat(hb, self.now)
                .expect("heartbeat refused")
            {
                HeartbeatOutcome::Reply(reply) => return reply,
                HeartbeatOutcome::Persist(w) => self.persist(w),
            }
        }
        self.core.reply(hb, self.now)
    }

    fn apply_reply(&mut self, name: &str, reply: &HeartbeatReply) {
        let now = self.now;
        let hb_ms = reply.params.heartbeat_ms;
        let r = self.replica(name);
        r.seq += 1;
        // Like the real replica: never active again in an epoch it lost the
        // role in.
        let refuses =
            reply.role == Role::Active && r.role == Role::Standby && reply.epoch <= r.active_epoch;
        r.role = if refuses { Role::Standby } else { reply.role };
        if r.role == Role::Active {
            r.active_epoch = r.active_epoch.max(reply.epoch);
        }
        r.epoch = r.epoch.max(reply.epoch);
        r.sync_version_seen = reply.sync_version;
        if reply.role == Role::Active && reply.switchover_to.is_none() {
            r.switchover_to = None;
        }
        if reply.switchover_to.is_some() {
            r.switchover_to.clone_from(&reply.switchover_to);
        }
        r.next_hb = now + reply.next_heartbeat_ms.unwrap_or(hb_ms);
        r.last_reply = Some(reply.clone());
    }

    /// The simulated store's compare-and-swap, reporting back to the core.
    pub fn persist(&mut self, w: ProposedWrite) {
        if std::mem::take(&mut self.fail_next_write) {
            let err = crate::store::StoreError::Unavailable {
                detail: "injected".into(),
            };
            self.core.on_persist_failed(&err, self.now);
            return;
        }
        if self.store.as_ref().map(|s| s.version) == w.expected_version {
            assert_eq!(w.state.version, w.expected_version.map_or(1, |v| v + 1));
            w.state
                .validate()
                .expect("the core proposed an invalid state");
            self.store = Some(w.state.clone());
            self.writes.push(w.state.clone());
            self.core.on_persisted(self.now);
        } else {
            self.core.on_conflict(self.store.clone(), self.now);
        }
    }

    pub fn tick(&mut self) {
        for _ in 0..5 {
            match self.core.tick(self.now) {
                Some(w) => self.persist(w),
                None => return,
            }
        }
    }

    /// One millisecond: heartbeats due now (in node order), then a tick;
    /// then the clock moves on.
    pub fn step(&mut self) {
        self.replicate();
        let due: Vec<String> = self
            .replicas
            .iter()
            .filter(|(_, r)| r.alive && r.next_hb <= self.now)
            .map(|(k, _)| k.to_string())
            .collect();
        for name in due {
            let drain_now = {
                self.beat(&name);
                let r = &self.replicas[&id(&name)];
                r.switchover_to.is_some() && r.drains && r.role == Role::Active
            };
            if drain_now && self.replicas[&id(&name)].next_hb > self.now + 1 {
                // "heartbeat at once with the handoff"
                let now = self.now;
                self.replica(&name).next_hb = now + 1;
            }
        }
        if self.auto_tick {
            self.tick();
        }
        self.now = self.now + 1;
    }

    /// Steps until the clock reads `t` (exclusive: the last step run is `t - 1`).
    pub fn run_until(&mut self, t: u64) {
        while self.now.0 < t {
            self.step();
        }
    }

    pub fn run_for(&mut self, ms: u64) {
        let t = self.now.0 + ms;
        self.run_until(t);
    }

    /// Steps until `cond` holds (checked before each step), at most `limit` ms.
    pub fn run_until_cond(&mut self, limit: u64, cond: impl Fn(&Sim) -> bool) {
        let end = self.now.0 + limit;
        while !cond(self) {
            assert!(
                self.now.0 < end,
                "condition not reached within {limit} ms (now {}); stored: {:#?}\ndecisions:\n{}",
                self.now,
                self.store,
                self.reasons().join("\n")
            );
            self.step();
        }
    }

    /// Reasons of all decisions this core recorded, oldest first.
    pub fn reasons(&self) -> Vec<String> {
        self.core
            .recent_decisions()
            .map(|d| d.reason.clone())
            .collect()
    }

    /// Asserts some decision's reason contains every one of `parts`.
    #[track_caller]
    pub fn assert_decision(&self, parts: &[&str]) {
        let reasons = self.reasons();
        assert!(
            reasons.iter().any(|r| parts.iter().all(|p| r.contains(p))),
            "no decision contains {parts:?}; decisions:\n{}",
            reasons.join("\n")
        );
    }

    /// How many decisions contain `part`.
    pub fn count_decisions(&self, part: &str) -> usize {
        self.reasons().iter().filter(|r| r.contains(part)).count()
    }

    /// When `name` was last granted, per the core.
    pub fn last_grant_at(&self) -> Option<Millis> {
        self.core.detector.last_grant().map(|g| g.at)
    }
}

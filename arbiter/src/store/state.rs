//! `ClusterState`: everything the arbiter must remember across restarts and
//! hand to the next leader — the epoch, the active, the members, the sync
//! set and what the active last confirmed of it, the mode flags, the
//! parameters and a bounded history of decisions.
//!
//! It is one JSON document written only by compare-and-swap on `version`
//! (see [`super::StateStore`]). What is *not* here is on purpose: heartbeat
//! times, grants and leases are monotonic-clock facts of one arbiter process
//! and mean nothing to another (DESIGN.md, "Arbiter failover").

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use proto_common::heartbeat::ActiveInfo;
use proto_common::params::ClusterParams;
use proto_common::{Epoch, NodeId, Position};
use serde::{Deserialize, Serialize};

use crate::core::DecisionRecord;

/// Layout version of the stored document. A reader refuses a newer layout
/// instead of silently dropping fields it does not know on its next write.
pub const STATE_FORMAT: u32 = 1;

/// How many decisions the persisted history keeps (oldest dropped first).
pub const HISTORY_LIMIT: usize = 100;

/// The arbiter's persisted view of one cluster.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClusterState {
    /// Layout version ([`STATE_FORMAT`]), so an old arbiter never rewrites
    /// a newer document with fields missing.
    pub format: u32,
    /// Compare-and-swap token: 0 for a state never written, then +1 on every
    /// write. Two writers from the same version cannot both succeed.
    pub version: u64,
    /// Cluster name; heartbeats naming another cluster are refused.
    pub cluster: String,
    /// The current epoch; bumped (with this whole record) each time a new
    /// active is named. 0 = no active was ever named (first formation).
    pub epoch: Epoch,
    /// The active of `epoch` and its addresses as last recorded, so a new
    /// arbiter can point standbys at it before it heartbeats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<ActiveInfo>,
    /// Every known replica by id (identity is the id, never the address).
    #[serde(default)]
    pub members: BTreeMap<NodeId, MemberRecord>,
    /// The standbys the active must wait for before acknowledging a write.
    #[serde(default)]
    pub sync_set: Vec<NodeId>,
    /// Bumped on every change of `sync_set` (and on every epoch change), so
    /// the active can say which set it enforces.
    #[serde(default)]
    pub sync_version: u64,
    /// Members that hold every write the active has acknowledged: the set the
    /// active last confirmed (heartbeat `sync_version` equal to ours),
    /// intersected with every later `sync_set`. Always a subset of
    /// `sync_set`. With `k ≥ 1` only these may be promoted.
    #[serde(default)]
    pub confirmed_sync: Vec<NodeId>,
    /// The `sync_version` the active last confirmed.
    #[serde(default)]
    pub confirmed_sync_version: u64,
    /// `sync_standbys ≥ 1` and the sync set has fewer members than that:
    /// writes are acknowledged with less redundancy than configured (or, in
    /// strict mode, refused). Shown in status and metrics.
    #[serde(default)]
    pub degraded: bool,
    /// Operator switch: no automatic failover while on.
    #[serde(default)]
    pub maintenance: bool,
    /// Timing and policy. Stored so a new leader uses the same lease numbers
    /// as the replicas it inherits.
    #[serde(default)]
    pub params: ClusterParams,
    /// The last [`HISTORY_LIMIT`] decisions that changed this record, so
    /// "why did it fail over?" survives an arbiter restart.
    #[serde(default)]
    pub history: VecDeque<DecisionRecord>,
    /// Standbys ordered to reinitialize (`arbiter reinit`), with the order's
    /// number; kept out of the sync set and of promotion until they report
    /// it carried out.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub reinit: BTreeMap<NodeId, u64>,
}

/// What the arbiter remembers of one replica.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    /// Advertised client API URL, handed to clients and standbys.
    pub client_url: String,
    /// Advertised replication address, handed to standbys of this active.
    pub repl_addr: String,
    /// Promotion priority; 0 = never made active.
    pub priority: u32,
    /// Last reported log position as of the last write of this record (the
    /// live value is in memory); seeds a new arbiter's view of progress.
    pub position: Position,
    /// Entries this replica has moved to quarantine, for the operator.
    #[serde(default)]
    pub quarantined_entries: u64,
}

impl ClusterState {
    /// A state that was never written (version 0): no epoch, no members.
    pub fn new(cluster: impl Into<String>, params: ClusterParams) -> ClusterState {
        ClusterState {
            format: STATE_FORMAT,
            version: 0,
            cluster: cluster.into(),
            epoch: Epoch::ZERO,
            active: None,
            members: BTreeMap::new(),
            sync_set: Vec::new(),
            sync_version: 0,
            confirmed_sync: Vec::new(),
            confirmed_sync_version: 0,
            degraded: false,
            maintenance: false,
            params,
            history: VecDeque::new(),
            reinit: BTreeMap::new(),
        }
    }

    /// The version a compare-and-swap replacing this state must expect:
    /// `None` for a state never written.
    pub fn expected_version(&self) -> Option<u64> {
        (self.version > 0).then_some(self.version)
    }

    /// The recorded active's id.
    pub fn active_id(&self) -> Option<&NodeId> {
        self.active.as_ref().map(|a| &a.node_id)
    }

    /// Whether `node` is the recorded active.
    pub fn is_active(&self, node: &NodeId) -> bool {
        self.active_id() == Some(node)
    }

    /// Whether `node` is in the current sync set.
    pub fn in_sync_set(&self, node: &NodeId) -> bool {
        self.sync_set.contains(node)
    }

    /// Whether `node` is in the confirmed part of the sync set.
    pub fn is_confirmed(&self, node: &NodeId) -> bool {
        self.confirmed_sync.contains(node) && self.in_sync_set(node)
    }

    /// Appends a decision, dropping the oldest past [`HISTORY_LIMIT`].
    pub fn push_history(&mut self, record: DecisionRecord) {
        self.history.push_back(record);
        while self.history.len() > HISTORY_LIMIT {
            self.history.pop_front();
        }
    }

    /// Checks the rules that tie the fields together. A store refuses to
    /// load a state that breaks them; the message says which rule.
    pub fn validate(&self) -> Result<(), String> {
        if self.format > STATE_FORMAT {
            return Err(format!(
                "format={} is newer than this arbiter understands ({STATE_FORMAT}); upgrade the arbiter",
                self.format
            ));
        }
        if self.cluster.is_empty() {
            return Err("cluster name is empty".into());
        }
        self.params.validate().map_err(|e| format!("params: {e}"))?;
        if let Some(active) = &self.active {
            if self.epoch == Epoch::ZERO {
                return Err(format!(
                    "active {} is recorded at epoch 0; an active always has epoch ≥ 1",
                    active.node_id
                ));
            }
            if !self.members.contains_key(&active.node_id) {
                return Err(format!("active {} is not a member", active.node_id));
            }
        }
        let mut seen = BTreeSet::new();
        for node in &self.sync_set {
            if !seen.insert(node) {
                return Err(format!("sync_set lists {node} twice"));
            }
            if !self.members.contains_key(node) {
                return Err(format!("sync_set member {node} is not a member"));
            }
            if self.is_active(node) {
                return Err(format!("sync_set contains the active {node}"));
            }
        }
        if let Some(stray) = self.confirmed_sync.iter().find(|n| !self.in_sync_set(n)) {
            return Err(format!(
                "confirmed_sync member {stray} is not in sync_set {:?}",
                self.sync_set
            ));
        }
        if self.confirmed_sync_version > self.sync_version {
            return Err(format!(
                "confirmed_sync_version={} is above sync_version={}",
                self.confirmed_sync_version, self.sync_version
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::DecisionKind;

    fn id(s: &str) -> NodeId {
        NodeId::new(s).unwrap()
    }

    fn member() -> MemberRecord {
        MemberRecord {
            client_url: "http://127.0.0.1:7000".into(),
            repl_addr: "127.0.0.1:7001".into(),
            priority: 1,
            position: Position::new(1, 5),
            quarantined_entries: 0,
        }
    }

    #[test]
    fn round_trips_through_json_with_node_ids_as_keys() {
        let mut s = ClusterState::new("c1", ClusterParams::default());
        s.version = 3;
        s.epoch = Epoch(2);
        s.members.insert(id("a"), member());
        s.members.insert(id("b"), member());
        s.active = Some(ActiveInfo {
            node_id: id("a"),
            client_url: "http://127.0.0.1:7000".into(),
            repl_addr: "127.0.0.1:7001".into(),
        });
        s.sync_set = vec![id("b")];
        s.sync_version = 4;
        s.confirmed_sync = vec![id("b")];
        s.confirmed_sync_version = 4;
        s.validate().unwrap();
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains("\"b\":{"), "{json}");
        let back: ClusterState = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn validate_names_the_broken_rule() {
        let mut s = ClusterState::new("c1", ClusterParams::default());
        s.sync_set = vec![id("ghost")];
        let err = s.validate().unwrap_err();
        assert!(
            err.contains("ghost") && err.contains("not a member"),
            "{err}"
        );

        let mut s = ClusterState::new("c1", ClusterParams::default());
        s.members.insert(id("a"), member());
        s.sync_set = vec![id("a")];
        s.confirmed_sync = vec![id("a")];
        s.confirmed_sync_version = 2;
        s.sync_version = 1;
        let err = s.validate().unwrap_err();
        assert!(err.contains("confirmed_sync_version=2"), "{err}");

        let mut s = ClusterState::new("c1", ClusterParams::default());
        s.format = STATE_FORMAT + 1;
        assert!(s.validate().unwrap_err().contains("upgrade"));
    }

    #[test]
    fn history_is_bounded() {
        let mut s = ClusterState::new("c1", ClusterParams::default());
        for i in 0..(HISTORY_LIMIT as u64 + 7) {
            s.push_history(DecisionRecord {
                unix_ms: i,
                epoch: Epoch(1),
                kind: DecisionKind::Membership,
                taken: true,
                node: None,
                reason: format!("#{i}"),
                write_gap_ms: None,
            });
        }
        assert_eq!(s.history.len(), HISTORY_LIMIT);
        assert_eq!(s.history.front().unwrap().unix_ms, 7);
    }
}

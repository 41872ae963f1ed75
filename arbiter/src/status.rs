//! The status snapshot served at `GET /v1/status`: enough for an operator to
//! see who is active, how far behind each standby is, what the sync set is,
//! and why the arbiter did or did not fail over.
//!
//! Built by `Core::status` on the leading arbiter (the HTTP layer only adds
//! `leader` and `is_leader`), or by [`ClusterStatus::from_stored`] on a
//! follower, which knows only what the store holds.

use proto_common::heartbeat::{Following, Role};
use proto_common::params::ClusterParams;
use proto_common::{Epoch, LogIndex, NodeId, Position};
use serde::{Deserialize, Serialize};

use crate::core::DecisionRecord;
use crate::store::ClusterState;

/// The whole cluster as the arbiter sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// Cluster name.
    pub cluster: String,
    /// The arbiter leader's URL (filled in by the HTTP layer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    /// Whether the arbiter that answered is the leader, i.e. this snapshot
    /// is the deciding arbiter's own view (filled in by the HTTP layer).
    #[serde(default)]
    pub is_leader: bool,
    /// Current epoch.
    pub epoch: Epoch,
    /// The recorded active.
    pub active: Option<NodeId>,
    /// Version of the stored state (the CAS token).
    pub state_version: u64,
    /// Maintenance mode: no automatic failover.
    pub maintenance: bool,
    /// Fewer sync-set members than `sync_standbys`.
    pub degraded: bool,
    /// The standbys the active waits for.
    pub sync_set: Vec<NodeId>,
    /// Version of `sync_set`.
    pub sync_version: u64,
    /// Sync-set members confirmed to hold every acknowledged write.
    pub confirmed_sync: Vec<NodeId>,
    /// Version the active last confirmed.
    pub confirmed_sync_version: u64,
    /// Timing and policy in force.
    pub params: ClusterParams,
    /// Every known replica, by node id.
    pub replicas: Vec<ReplicaStatus>,
    /// What a failover would do right now.
    pub failover: FailoverStatus,
    /// A planned switchover under way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switchover: Option<SwitchoverStatus>,
    /// A state write is waiting for the store.
    pub write_in_flight: bool,
    /// Decisions of this arbiter process, taken or not, oldest first.
    pub recent_decisions: Vec<DecisionRecord>,
    /// Persisted history of state-changing decisions (survives restarts).
    pub history: Vec<DecisionRecord>,
    /// The arbiter's wall clock when the snapshot was taken, for ages.
    pub now_unix_ms: u64,
}

/// One replica.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReplicaStatus {
    /// Identity.
    pub node_id: NodeId,
    /// The role the arbiter assigns it.
    pub role: Role,
    /// The role it last reported (None: not heard since the arbiter started).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported_role: Option<Role>,
    /// The highest epoch it last reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported_epoch: Option<Epoch>,
    /// Client API URL.
    pub client_url: String,
    /// Replication address.
    pub repl_addr: String,
    /// Last reported log position (stored one if not heard since start).
    pub position: Position,
    /// Last reported commit index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_index: Option<LogIndex>,
    /// Entries behind the active (from the active's report when it has one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_entries: Option<u64>,
    /// Whether the active reports a replication connection to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connected_to_active: Option<bool>,
    /// Milliseconds since its last heartbeat (None: not heard since start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat_age_ms: Option<u64>,
    /// In the sync set.
    pub in_sync_set: bool,
    /// In the confirmed part of the sync set (a failover candidate).
    pub sync_confirmed: bool,
    /// Promotion priority (0 = never).
    pub priority: u32,
    /// Entries it has moved to quarantine.
    pub quarantined_entries: u64,
    /// Its own health report.
    pub healthy: bool,
    /// Its own explanation, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// What it follows, as it reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub following: Option<Following>,
    /// Why it could not be promoted right now (None: it could, or it is the active).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_eligible: Option<String>,
    /// Proxy mode: its upstream, as it last reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<proto_common::heartbeat::UpstreamHealth>,
    /// Its data directory, as it last reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<proto_common::heartbeat::DiskUse>,
}

/// What a failover would do now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailoverStatus {
    /// Milliseconds until the active's lease has surely ended (0: ended).
    pub lease_wait_left_ms: u64,
    /// Milliseconds since the active last heartbeated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_silent_ms: Option<u64>,
    /// Who would be promoted if the active were lost now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate: Option<NodeId>,
    /// Async mode: entries that promoting `candidate` now could lose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entries_at_risk: Option<u64>,
}

/// A planned switchover under way.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitchoverStatus {
    /// The active handing over.
    pub from: NodeId,
    /// The standby taking over.
    pub target: NodeId,
    /// Time since it started.
    pub elapsed_ms: u64,
    /// Time until it is cancelled.
    pub time_left_ms: u64,
}

impl ClusterStatus {
    /// The status a non-leading arbiter can give: the stored state as read
    /// from the store (possibly a moment old), without anything only the
    /// leader's memory holds — heartbeat ages, reported roles, what a
    /// failover would do now, the leader's recent decisions (the persisted
    /// `history` is there). `leader` and `is_leader` are the caller's.
    pub fn from_stored(state: &ClusterState, now_unix_ms: u64) -> ClusterStatus {
        let active_index = state
            .active_id()
            .and_then(|a| state.members.get(a))
            .map(|m| m.position.index.0);
        let replicas = state
            .members
            .iter()
            .map(|(node, m)| {
                let is_active = state.is_active(node);
                ReplicaStatus {
                    node_id: node.clone(),
                    role: if is_active {
                        Role::Active
                    } else {
                        Role::Standby
                    },
                    reported_role: None,
                    reported_epoch: None,
                    client_url: m.client_url.clone(),
                    repl_addr: m.repl_addr.clone(),
                    position: m.position,
                    commit_index: None,
                    lag_entries: (!is_active)
                        .then(|| active_index.map(|a| a.saturating_sub(m.position.index.0)))
                        .flatten(),
                    connected_to_active: None,
                    last_heartbeat_age_ms: None,
                    in_sync_set: state.in_sync_set(node),
                    sync_confirmed: state.is_confirmed(node),
                    priority: m.priority,
                    quarantined_entries: m.quarantined_entries,
                    healthy: true,
                    detail: None,
                    following: None,
                    not_eligible: None,
                    upstream: None,
                    disk: None,
                }
            })
            .collect();
        ClusterStatus {
            cluster: state.cluster.clone(),
            leader: None,
            is_leader: false,
            epoch: state.epoch,
            active: state.active_id().cloned(),
            state_version: state.version,
            maintenance: state.maintenance,
            degraded: state.degraded,
            sync_set: state.sync_set.clone(),
            sync_version: state.sync_version,
            confirmed_sync: state.confirmed_sync.clone(),
            confirmed_sync_version: state.confirmed_sync_version,
            params: state.params.clone(),
            replicas,
            failover: FailoverStatus {
                lease_wait_left_ms: 0,
                active_silent_ms: None,
                candidate: None,
                entries_at_risk: None,
            },
            switchover: None,
            write_in_flight: false,
            recent_decisions: Vec::new(),
            history: state.history.iter().cloned().collect(),
            now_unix_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemberRecord;
    use proto_common::heartbeat::ActiveInfo;

    #[test]
    fn a_followers_status_shows_the_stored_state() {
        let id = |s: &str| NodeId::new(s).unwrap();
        let mut state = ClusterState::new("c", ClusterParams::default());
        state.version = 9;
        state.epoch = Epoch(3);
        for (n, index) in [("a", 50), ("b", 45)] {
            state.members.insert(
                id(n),
                MemberRecord {
                    client_url: format!("http://{n}"),
                    repl_addr: format!("{n}:1"),
                    priority: 1,
                    position: Position::new(3, index),
                    quarantined_entries: 0,
                },
            );
        }
        state.active = Some(ActiveInfo {
            node_id: id("a"),
            client_url: "http://a".into(),
            repl_addr: "a:1".into(),
        });
        state.sync_set = vec![id("b")];
        let s = ClusterStatus::from_stored(&state, 1);
        assert_eq!(
            (s.epoch, s.state_version, s.is_leader),
            (Epoch(3), 9, false)
        );
        assert_eq!(s.active, Some(id("a")));
        assert_eq!(s.replicas[0].role, Role::Active);
        assert_eq!(s.replicas[1].lag_entries, Some(5));
        assert!(s.replicas[1].in_sync_set);
        assert_eq!(s.replicas[1].last_heartbeat_age_ms, None);
    }
}

//! The status snapshot served at `GET /v1/status`: enough for an operator to
//! see who is active, how far behind each standby is, what the sync set is,
//! and why the arbiter did or did not fail over.
//!
//! Built by `Core::status`; the HTTP layer only adds `leader` and `is_leader`.

use proto_common::heartbeat::{Following, Role};
use proto_common::params::ClusterParams;
use proto_common::{Epoch, LogIndex, NodeId, Position};
use serde::{Deserialize, Serialize};

use crate::core::DecisionRecord;

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

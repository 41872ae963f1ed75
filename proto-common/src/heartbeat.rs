//! Heartbeats (replica → arbiter, `POST /v1/heartbeat`) and their replies.
//!
//! The reply is the only way a replica learns its role: every replica starts
//! as a standby and becomes active only when a reply says "active, epoch E".
//! The lease rule built on these messages (DESIGN.md, "The lease rule") is
//! implemented next to its users: `replica::role::lease` on the replica
//! side and the arbiter's failure detector on the other.

use serde::{Deserialize, Serialize};

use crate::ids::{Epoch, LogIndex, NodeId, Position};
use crate::params::ClusterParams;

/// What a replica currently is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Takes writes and streams its log to standbys.
    Active,
    /// Follows the active; serves reads.
    Standby,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Active => "active",
            Role::Standby => "standby",
        })
    }
}

/// A replica's report to the arbiter, sent every `heartbeat_ms`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Cluster name; an arbiter refuses heartbeats for another cluster.
    pub cluster: String,
    /// The sender's identity (never inferred from its address).
    pub node_id: NodeId,
    /// Sequence number of this heartbeat, echoed in the reply so the replica
    /// can tell which send time (`t_send`) a grant belongs to.
    pub seq: u64,
    /// Advertised client API base URL, e.g. `http://10.0.0.5:7000`.
    pub client_url: String,
    /// Advertised replication address, `host:port`.
    pub repl_addr: String,
    /// What the replica believes it is right now.
    pub role: Role,
    /// Highest epoch the replica has seen.
    pub epoch: Epoch,
    /// Highest epoch the replica ever took writes in (persisted). A replica
    /// never takes writes again in an epoch it lost the role in (a restart,
    /// a demotion): its earlier self may have shipped entries it no longer
    /// has. So the recorded active reporting `role: Standby` with
    /// `active_epoch` equal to the current epoch has lost the role for good,
    /// and the arbiter opens a new epoch at once (it takes no writes, so no
    /// lease needs to run out).
    #[serde(default)]
    pub active_epoch: Epoch,
    /// Position of the last entry in its log (durable).
    pub position: Position,
    /// Highest index the replica knows to be committed.
    pub commit_index: LogIndex,
    /// Promotion priority; 0 means "never promote this replica".
    pub priority: u32,
    /// Entries this replica moved to `quarantine/` (cut divergent tails).
    pub quarantined_entries: u64,
    /// False when the replica cannot take part (e.g. its disk failed).
    pub healthy: bool,
    /// Why it is unhealthy, or other state worth showing an operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// On a standby: the active it streams from and whether the stream is up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub following: Option<Following>,
    /// On the active: the sync-set version it is enforcing (see
    /// [`HeartbeatReply::sync_version`]).
    #[serde(default)]
    pub sync_version: u64,
    /// On the active: what each connected standby has acknowledged.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub standbys: Vec<StandbyProgress>,
    /// On the active, during a switchover it was ordered to perform (see
    /// [`HeartbeatReply::switchover_to`]): it has stopped taking writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handoff: Option<Handoff>,
    /// The last reinit order (see [`HeartbeatReply::reinit`]) this replica
    /// carried out; 0 for none.
    #[serde(default)]
    pub reinitialized: u64,
    /// Whether this replica can carry out a reinit order (false in proxy
    /// mode, where the upstream's data would have to go too).
    #[serde(default)]
    pub can_reinit: bool,
    /// Proxy mode: its upstream as last read (`INFO`, every second).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<UpstreamHealth>,
    /// Its data directory as it last measured it (once a second).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<DiskUse>,
    /// On a healthy standby: why it cannot be made active now (proxy mode:
    /// its upstream is being refilled with an RDB, so it could not serve
    /// the committed data yet). It stays in the sync set: its log is whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cannot_lead: Option<String>,
}

/// A replica's data directory: what compaction bounds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskUse {
    /// Bytes of the files under it (log, snapshots or checkpoints, RDBs).
    pub data_dir_bytes: u64,
    /// Seconds since its newest snapshot (in proxy mode: checkpoint) was
    /// written; `None` while it has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_age_secs: Option<u64>,
}

/// A proxy-mode replica's upstream, as it last read it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamHealth {
    /// Whether its last `INFO` was answered (the numbers below are from
    /// the last one that was).
    pub up: bool,
    pub used_memory: u64,
    /// 0: no limit.
    pub maxmemory: u64,
    pub connected_clients: u64,
    pub maxclients: u64,
    /// Loading an RDB (serving nothing meanwhile).
    pub loading: bool,
    /// On the active: stream bytes the upstream has and the tap has not
    /// logged yet.
    pub tap_lag_bytes: u64,
}

/// The active's report while it hands over to a switchover target.
///
/// Once the active has sent `drained: true` it never takes another write in
/// this epoch: it only leaves the fenced state by a reply that makes it a
/// standby, or by a reply that cancels the switchover (`role: Active` with no
/// `switchover_to`) for a heartbeat sent after this one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handoff {
    /// The standby taking over.
    pub target: NodeId,
    /// True once every write the active accepted is committed and the target
    /// has acknowledged the active's last position (`Heartbeat::position`).
    pub drained: bool,
}

/// A standby's view of its replication stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Following {
    pub active: NodeId,
    pub connected: bool,
}

/// The active's view of one standby.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StandbyProgress {
    pub node_id: NodeId,
    /// Last position the standby acknowledged as durable.
    pub acked: Position,
    /// Entries the standby is behind the active's log.
    pub lag_entries: u64,
    /// Age of the oldest entry the standby has not yet acknowledged, in ms
    /// (0 when it is caught up).
    pub lag_ms: u64,
    /// Whether the replication connection is up.
    pub connected: bool,
}

/// Where to find the active.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveInfo {
    pub node_id: NodeId,
    pub client_url: String,
    pub repl_addr: String,
}

/// The arbiter's answer to a heartbeat.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeartbeatReply {
    /// The heartbeat's `seq`, echoed.
    pub seq: u64,
    /// The role the arbiter assigns. `Active` is a **grant**: the replica may
    /// take writes until `t_send + lease_ms·(1 − drift)` on its own
    /// monotonic clock, where `t_send` is when it sent heartbeat `seq`.
    pub role: Role,
    /// The cluster's current epoch.
    pub epoch: Epoch,
    /// The active, if there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<ActiveInfo>,
    /// The standbys the active must wait for before acknowledging a write.
    pub sync_set: Vec<NodeId>,
    /// Version of `sync_set`; bumped on every change.
    ///
    /// The active adopts a new set as soon as it sees it (every write not yet
    /// acknowledged then waits for the new members), remembers its commit
    /// index at that moment, and reports the version back in
    /// [`Heartbeat::sync_version`] only once every member has acknowledged at
    /// least that index. Only then does each member hold every acknowledged
    /// write, so the arbiter promotes only members of the *confirmed* set that
    /// are still in the current set (a member being removed is never a candidate).
    pub sync_version: u64,
    /// Timing and policy; replicas take the timing from here (hot update).
    pub params: ClusterParams,
    /// To the active only: a planned switchover to this standby is under
    /// way. Stop taking new writes at once (answer 503 `not_writable`), let
    /// the target catch up to the exact last position, and heartbeat again
    /// immediately with [`Heartbeat::handoff`] set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switchover_to: Option<NodeId>,
    /// Send the next heartbeat after this many ms instead of `heartbeat_ms`:
    /// the arbiter asks a promotion candidate or a switchover target to come
    /// back the moment a decision can be made, which shortens failover.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_heartbeat_ms: Option<u64>,
    /// The URL of the arbiter that answered (the leader).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    /// An operator's reinit order for this standby (`arbiter reinit`): it
    /// discards its log and snapshots, keeps its epochs, restarts, copies
    /// the active's data, and then reports this number in
    /// [`Heartbeat::reinitialized`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reinit: Option<u64>,
}

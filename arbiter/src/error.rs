//! `ArbiterError`: what the arbiter's API answers when it cannot do what was
//! asked (a heartbeat it refuses, a switchover it cannot start).
//!
//! Each variant has a stable [`ArbiterError::code`] (logs, metrics, tests)
//! and maps to a wire [`ErrorCode`] for the JSON body. Messages name the
//! values involved and what to do about them.

use proto_common::{Epoch, ErrorBody, ErrorCode, NodeId};

use crate::store::StoreError;

/// Why an arbiter operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum ArbiterError {
    /// A heartbeat for another cluster (misconfigured replica, or two
    /// clusters sharing an arbiter address).
    #[error(
        "heartbeat from {node} is for cluster {got:?} but this arbiter serves {want:?}; \
         fix the replica's cluster name or point it at its own arbiter"
    )]
    WrongCluster {
        /// The sender.
        node: NodeId,
        /// The cluster it named.
        got: String,
        /// The cluster this arbiter serves.
        want: String,
    },

    /// A heartbeat with unusable fields.
    #[error("heartbeat from {node} is invalid: {detail}")]
    BadHeartbeat {
        /// The sender.
        node: NodeId,
        /// What is wrong and how to fix it.
        detail: String,
    },

    /// No active is recorded.
    #[error("there is no active (epoch {epoch}); a switchover needs one — wait for first formation or failover")]
    NoActive {
        /// The current epoch.
        epoch: Epoch,
    },

    /// The active is not heartbeating; a planned switchover needs it alive.
    #[error(
        "the active {node} has been silent for {silent_ms} ms; a switchover needs a live active \
         (automatic failover replaces a dead one)"
    )]
    ActiveMissing {
        /// The recorded active.
        node: NodeId,
        /// How long it has been silent.
        silent_ms: u64,
    },

    /// The named switchover target is not a member.
    #[error("switchover target {node} is not a member of this cluster (members: {members})")]
    UnknownTarget {
        /// The requested target.
        node: NodeId,
        /// The members, for the operator to pick from.
        members: String,
    },

    /// The named target is already the active.
    #[error("switchover target {node} is already the active")]
    TargetIsActive {
        /// The requested target.
        node: NodeId,
    },

    /// The named target has priority 0.
    #[error(
        "switchover target {node} has priority 0 and is never made active; \
         pick another standby, or restart it with a priority of at least 1"
    )]
    TargetPriorityZero {
        /// The requested target.
        node: NodeId,
    },

    /// The named target is not in the sync set (`k ≥ 1`).
    #[error(
        "switchover target {node} is not in the sync set {:?}; wait until it has caught \
         up and been added (see GET /v1/status), or pick a sync-set member",
        .sync_set.iter().map(NodeId::as_str).collect::<Vec<_>>()
    )]
    TargetNotInSyncSet {
        /// The requested target.
        node: NodeId,
        /// The current sync set.
        sync_set: Vec<NodeId>,
    },

    /// The named target does not yet hold every acknowledged write.
    #[error("switchover target {node} is not caught up: {detail}; retry once it is")]
    TargetNotCaughtUp {
        /// The requested target.
        node: NodeId,
        /// What is missing.
        detail: String,
    },

    /// The named target is silent or unhealthy.
    #[error("switchover target {node} cannot take over: {detail}")]
    TargetUnavailable {
        /// The requested target.
        node: NodeId,
        /// Why.
        detail: String,
    },

    /// No standby qualifies as a switchover target.
    #[error("no standby is eligible for a switchover: {reasons}")]
    NoEligibleStandby {
        /// Why each standby is ruled out.
        reasons: String,
    },

    /// A switchover is already under way.
    #[error(
        "a switchover from {from} to {target} is already running ({elapsed_ms} ms so far; \
         it completes or times out within {left_ms} ms)"
    )]
    SwitchoverRunning {
        /// The active handing over.
        from: NodeId,
        /// The standby taking over.
        target: NodeId,
        /// Time since it started.
        elapsed_ms: u64,
        /// Time until it times out.
        left_ms: u64,
    },

    /// This arbiter does not lead (etcd store): another arbiter decides.
    #[error(
        "this arbiter is not the leader{}; send the request to the leader (the API answers \
         307 with its URL when it is known)",
        .leader.as_ref().map(|l| format!(" (leader: {l})")).unwrap_or_else(|| " and no leader is known right now".into())
    )]
    NotLeader {
        /// The leader's URL, when known.
        leader: Option<String>,
    },

    /// `POST /v1/params` asked for parameters that break a rule.
    #[error("invalid cluster parameters: {detail}; nothing was changed")]
    InvalidParams {
        /// The rule broken, naming the values.
        detail: String,
    },

    /// `remove` of a member that must not be removed now.
    #[error("{node} cannot be removed: {why}")]
    CannotRemove {
        /// The member named.
        node: NodeId,
        /// Why not, and what to do instead.
        why: String,
    },

    /// `promote --force` refused: the promotion is not the last resort.
    #[error("{node} cannot be promoted by force: {why}")]
    CannotForce {
        /// The standby named.
        node: NodeId,
        /// Why not, and what to do instead.
        why: String,
    },

    /// `reinit` of a member that cannot carry it out now.
    #[error("{node} cannot be reinitialized: {why}")]
    CannotReinit {
        /// The member named.
        node: NodeId,
        /// Why not, and what to do instead.
        why: String,
    },

    /// Another write to the state store is in flight.
    #[error("another change to the cluster state is being written; retry in a moment")]
    WriteInProgress,

    /// The state store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ArbiterError {
    /// Stable machine-readable code; never renamed.
    pub fn code(&self) -> &'static str {
        match self {
            ArbiterError::WrongCluster { .. } => "wrong_cluster",
            ArbiterError::BadHeartbeat { .. } => "bad_heartbeat",
            ArbiterError::NoActive { .. } => "no_active",
            ArbiterError::ActiveMissing { .. } => "active_missing",
            ArbiterError::UnknownTarget { .. } => "unknown_target",
            ArbiterError::TargetIsActive { .. } => "target_is_active",
            ArbiterError::TargetPriorityZero { .. } => "target_priority_zero",
            ArbiterError::TargetNotInSyncSet { .. } => "target_not_in_sync_set",
            ArbiterError::TargetNotCaughtUp { .. } => "target_not_caught_up",
            ArbiterError::TargetUnavailable { .. } => "target_unavailable",
            ArbiterError::NoEligibleStandby { .. } => "no_eligible_standby",
            ArbiterError::SwitchoverRunning { .. } => "switchover_running",
            ArbiterError::NotLeader { .. } => "not_leader",
            ArbiterError::InvalidParams { .. } => "invalid_params",
            ArbiterError::CannotRemove { .. } => "cannot_remove",
            ArbiterError::CannotForce { .. } => "cannot_force",
            ArbiterError::CannotReinit { .. } => "cannot_reinit",
            ArbiterError::WriteInProgress => "write_in_progress",
            ArbiterError::Store(e) => e.code(),
        }
    }

    /// The wire code for the JSON error body.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            ArbiterError::UnknownTarget { .. } => ErrorCode::NotFound,
            ArbiterError::WrongCluster { .. }
            | ArbiterError::BadHeartbeat { .. }
            | ArbiterError::TargetIsActive { .. }
            | ArbiterError::TargetPriorityZero { .. }
            | ArbiterError::InvalidParams { .. } => ErrorCode::BadRequest,
            ArbiterError::NotLeader { .. } => ErrorCode::NotLeader,
            ArbiterError::Store(e) => e.error_code(),
            _ => ErrorCode::Conflict,
        }
    }

    /// Whether the same request may succeed later without anyone changing
    /// anything (the cluster moves on by itself).
    pub fn is_retryable(&self) -> bool {
        match self {
            ArbiterError::WriteInProgress
            | ArbiterError::SwitchoverRunning { .. }
            | ArbiterError::TargetNotCaughtUp { .. }
            | ArbiterError::TargetNotInSyncSet { .. }
            | ArbiterError::NoActive { .. }
            | ArbiterError::NotLeader { .. } => true,
            ArbiterError::Store(e) => e.is_retryable(),
            _ => false,
        }
    }

    /// The leader's URL, when this error says another arbiter leads.
    pub fn leader(&self) -> Option<&str> {
        match self {
            ArbiterError::NotLeader { leader }
            | ArbiterError::Store(StoreError::NotLeader { leader }) => leader.as_deref(),
            _ => None,
        }
    }

    /// Whether this error says this arbiter does not lead.
    pub fn is_not_leader(&self) -> bool {
        self.error_code() == ErrorCode::NotLeader
    }

    /// The JSON error body (with `leader` when another arbiter leads).
    pub fn to_body(&self) -> ErrorBody {
        let mut body = ErrorBody::new(self.error_code(), self.to_string());
        body.retryable = self.is_retryable();
        body.leader = self.leader().map(str::to_owned);
        body
    }
}

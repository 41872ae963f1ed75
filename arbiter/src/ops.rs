//! The operator API's request and answer bodies (`POST /v1/switchover`,
//! `POST /v1/maintenance`), shared by the server and the CLI so the two
//! can never disagree on a field.

use proto_common::NodeId;
use serde::{Deserialize, Serialize};

/// `POST /v1/switchover` body: `{"to": "id"}`, or `{}` (or no body) for the
/// best candidate.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwitchoverRequest {
    /// The standby to hand over to; absent: the best candidate. Kept as
    /// text so a malformed id gets a 400 naming it, not a JSON error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}

/// `POST /v1/maintenance` body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceRequest {
    /// On (no automatic failover) or off.
    pub enabled: bool,
}

/// Answer to a started switchover. It completes through heartbeats; watch
/// `GET /v1/status` (`switchover`, then the new `active`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitchoverStarted {
    /// The standby taking over.
    pub target: NodeId,
    /// The active handing over.
    pub from: Option<NodeId>,
    /// The epoch it started in (the target becomes active in the next).
    pub epoch: u64,
    /// What happens next, for people.
    pub message: String,
}

/// Answer to a maintenance request, once the change is stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaintenanceState {
    /// Maintenance mode as now stored.
    pub maintenance: bool,
    /// Whether this request changed it (false: it already was so).
    pub changed: bool,
    /// The stored state's version after the request.
    pub state_version: u64,
    /// The current epoch.
    pub epoch: u64,
}

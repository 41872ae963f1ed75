//! Health, role and metrics endpoints for load balancers and monitoring.
//!
//! - `GET /healthz`: 200 while the process can do its job (storage works).
//! - `GET /readyz`: 200 once the node serves its role (active and within its
//!   lease, or a standby).
//! - `GET /v1/role`: 200 on the active only, 503 otherwise — point a load
//!   balancer's health check here to send writes to the active.
//! - `GET /v1/status`: this replica's own view (role, epoch, positions).
//! - `GET /metrics`: Prometheus (OpenMetrics) text.

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use proto_common::heartbeat::Role;
use proto_common::{Epoch, LogIndex, Position};
use serde::Serialize;

use super::Shared;
use crate::node::Node;

/// A replica's own view of itself.
#[derive(Serialize)]
pub struct ReplicaStatus {
    pub node_id: String,
    pub role: Role,
    /// Whether a write sent here now would be accepted.
    pub writable: bool,
    pub epoch: Epoch,
    /// Last entry in the local log (durable).
    pub position: Position,
    /// Last applied (committed) entry: the data version reads see.
    pub applied: Position,
    pub commit_index: LogIndex,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active_url: Option<String>,
    /// Milliseconds of lease left; absent when standalone or not active.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_remaining_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_writable: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_failure: Option<String>,
    /// Entries this replica moved to `quarantine/` (cut divergent tails).
    pub quarantined_entries: u64,
    /// A snapshot is being written right now.
    pub snapshot_in_progress: bool,
    /// Log bytes written since the last snapshot (one starts at
    /// `snapshot_every_bytes`).
    pub log_bytes_since_snapshot: u64,
    /// On the active during a planned switchover: the standby taking over.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handing_over_to: Option<String>,
}

pub fn status_of(node: &Node) -> ReplicaStatus {
    let role = node.role();
    let term = role.state.term();
    let writable = node.roles.holds_lease() && node.commit.failure().is_none();
    ReplicaStatus {
        node_id: node.settings.node_id.to_string(),
        role: role.state.role(),
        writable,
        epoch: role.seen,
        position: node.commit.durable(),
        applied: node.applied(),
        commit_index: node.commit.commit_index_now(),
        active_url: role.active_url().map(str::to_string),
        lease_remaining_ms: term
            .and_then(|t| t.lease().remaining_nanos())
            .map(|n| n / 1_000_000),
        not_writable: role.not_writable(),
        storage_failure: node.commit.failure().map(|why| why.to_string()),
        quarantined_entries: node.node_state().quarantined_entries,
        snapshot_in_progress: node.snapshots.in_progress.load(Ordering::Relaxed),
        log_bytes_since_snapshot: node
            .metrics
            .log_bytes
            .get()
            .saturating_sub(node.snapshots.log_bytes_at_last.load(Ordering::Relaxed)),
        handing_over_to: role.state.fenced_for().map(|t| t.to_string()),
    }
}

pub async fn status(State(api): State<Shared>) -> Json<ReplicaStatus> {
    Json(status_of(&api.node))
}

pub async fn healthz(State(api): State<Shared>) -> Response {
    match api.node.commit.failure() {
        None => (StatusCode::OK, Json(serde_json::json!({"status": "ok"}))).into_response(),
        Some(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"status": "failed", "reason": why.to_string()})),
        )
            .into_response(),
    }
}

pub async fn readyz(State(api): State<Shared>) -> Response {
    let s = status_of(&api.node);
    let ready = s.storage_failure.is_none() && (s.role == Role::Standby || s.writable);
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(s)).into_response()
}

pub async fn role(State(api): State<Shared>) -> Response {
    let s = status_of(&api.node);
    let code = if s.role == Role::Active && s.writable {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(s)).into_response()
}

pub async fn metrics(State(api): State<Shared>, headers: HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let (content_type, body) =
        proto_common::exposition::negotiate(accept, api.node.metrics.render());
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

//! The arbiter's HTTP API (DESIGN.md, "Arbiter HTTP API"):
//!
//! | route | auth | what |
//! |---|---|---|
//! | `POST /v1/heartbeat` | bearer | a replica's heartbeat → `HeartbeatReply` |
//! | `GET /v1/status` | – | the cluster as this arbiter sees it |
//! | `POST /v1/switchover` | bearer | `{"to": "id"}` or `{}`: start a planned switchover |
//! | `POST /v1/maintenance` | bearer | `{"enabled": bool}`: no automatic failover while on |
//! | `GET /` | – | the live dashboard |
//! | `GET /healthz`, `GET /metrics` | – | liveness, Prometheus text |
//!
//! Errors are JSON `ErrorBody`s with stable codes; unknown routes are 404
//! `unknown_route`. Reads need no token: the status shows no secrets, and
//! operators and dashboards should not need the cluster token to look.

use std::sync::Arc;

use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use proto_common::auth::Token;
use proto_common::heartbeat::{Heartbeat, HeartbeatReply};
use proto_common::{ErrorCode, NodeId};
use tracing::Instrument;

use super::api_error::ApiError;
use super::dashboard::DASHBOARD_HTML;
use super::metrics::CONTENT_TYPE;
use super::request::{authorize, parse_json, MAX_BODY_BYTES};
use super::shell::Shell;
use crate::ops::{MaintenanceRequest, MaintenanceState, SwitchoverRequest, SwitchoverStarted};
use crate::status::ClusterStatus;

/// What every handler needs.
#[derive(Clone)]
pub struct App {
    /// The core's I/O shell.
    pub shell: Arc<Shell>,
    /// Required on heartbeats and operator calls; `None` on loopback only.
    pub token: Option<Token>,
}

/// The API router.
pub fn router(app: App) -> Router {
    Router::new()
        .route("/", get(dashboard))
        .route("/v1/heartbeat", post(heartbeat))
        .route("/v1/status", get(status))
        .route("/v1/switchover", post(switchover))
        .route("/v1/maintenance", post(maintenance))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .fallback(unknown_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(app)
}

async fn heartbeat(
    State(app): State<App>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<HeartbeatReply>, ApiError> {
    let metrics = app.shell.metrics();
    let hb: Heartbeat = authorize(app.token.as_ref(), &headers)
        .and_then(|()| parse_json(body, "heartbeat", false))
        .inspect_err(|e| {
            metrics.count_heartbeat(e.code().as_str());
            tracing::warn!(code = %e.code(), "heartbeat refused: {}", e.body.message);
        })?;
    let span =
        tracing::debug_span!("heartbeat", node = %hb.node_id, seq = hb.seq, epoch = %hb.epoch);
    match app.shell.heartbeat(&hb).instrument(span).await {
        Ok(reply) => {
            tracing::debug!(node = %hb.node_id, role = %reply.role, epoch = %reply.epoch, "heartbeat answered");
            Ok(Json(reply))
        }
        Err(e) => {
            tracing::warn!(node = %hb.node_id, code = e.code(), "heartbeat refused: {e}");
            Err(e.into())
        }
    }
}

async fn status(State(app): State<App>) -> Json<ClusterStatus> {
    Json(app.shell.status().await)
}

async fn switchover(
    State(app): State<App>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<SwitchoverStarted>, ApiError> {
    authorize(app.token.as_ref(), &headers)?;
    let req: SwitchoverRequest = parse_json(body, "switchover request", true)?;
    let to = req
        .to
        .map(NodeId::new)
        .transpose()
        .map_err(|e| ApiError::new(ErrorCode::BadRequest, format!("to: {e}")))?;
    let asked = to.as_ref().map_or("best", |t| t.as_str()).to_string();
    let span = tracing::info_span!("switchover_request", to = %asked);
    match app.shell.switchover(to).instrument(span).await {
        Ok(started) => Ok(Json(started)),
        Err(e) => {
            tracing::warn!(to = %asked, code = e.code(), "switchover refused: {e}");
            Err(e.into())
        }
    }
}

async fn maintenance(
    State(app): State<App>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<MaintenanceState>, ApiError> {
    authorize(app.token.as_ref(), &headers)?;
    let req: MaintenanceRequest = parse_json(body, "maintenance request", false)?;
    let span = tracing::info_span!("maintenance_request", enabled = req.enabled);
    match app
        .shell
        .set_maintenance(req.enabled)
        .instrument(span)
        .await
    {
        Ok(state) => Ok(Json(state)),
        Err(e) => {
            tracing::warn!(
                enabled = req.enabled,
                code = e.code(),
                "maintenance change refused: {e}"
            );
            Err(e.into())
        }
    }
}

async fn dashboard() -> Html<&'static str> {
    Html(DASHBOARD_HTML)
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn metrics(State(app): State<App>) -> Response {
    let status = app.shell.status().await;
    let metrics = app.shell.metrics();
    metrics.observe(&status);
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], metrics.render()).into_response()
}

async fn unknown_route(req: Request) -> ApiError {
    ApiError::new(
        ErrorCode::UnknownRoute,
        format!(
            "no such endpoint: {} {}; the arbiter serves POST /v1/heartbeat, GET /v1/status, \
             POST /v1/switchover, POST /v1/maintenance, GET /, /healthz and /metrics",
            req.method(),
            req.uri().path()
        ),
    )
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
    )
}

//! The arbiter's HTTP API (DESIGN.md, "Arbiter HTTP API"):
//!
//! | route | auth | what |
//! |---|---|---|
//! | `POST /v1/heartbeat` | bearer | a replica's heartbeat → `HeartbeatReply` |
//! | `GET /v1/status` | read | the cluster as this arbiter sees it |
//! | `POST /v1/switchover` | bearer | `{"to": "id"}` or `{}`: start a planned switchover |
//! | `POST /v1/maintenance` | bearer | `{"enabled": bool}`: no automatic failover while on |
//! | `POST /v1/remove` | bearer | `{"node": "id"}`: drop a member that is gone for good |
//! | `POST /v1/reinit` | bearer | `{"node": "id"}`: a standby discards its data and copies the active's |
//! | `POST /v1/promote` | bearer | `{"node": "id", "accept_data_loss": true}`: forced promotion, the last resort |
//! | `POST /v1/params` | bearer | any subset of the cluster parameters: validated, stored |
//! | `GET /` | read | the live dashboard |
//! | `GET /metrics` | read | Prometheus text |
//! | `GET /healthz` | – | liveness |
//!
//! Errors are JSON `ErrorBody`s with stable codes; unknown routes are 404
//! `unknown_route`. "bearer" is the cluster token; "read" is the cluster
//! token or the read-only token (`--read-token-file`), as a bearer token
//! or as a browser's `Basic` password. Without a cluster token (loopback
//! only) nothing needs a credential.
//!
//! Only the leading arbiter serves heartbeats and the mutating calls; any
//! other answers them (after checking the token) with **307** to the same
//! path on the leader — `Location` header, JSON `not_leader` body with the
//! `leader` field — or 503 `not_leader` while no leader is known. `GET
//! /v1/status` works on every arbiter and says who leads (`leader`,
//! `is_leader`); a follower shows the stored state.

use std::sync::Arc;

use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use proto_common::auth::{Access, Token};
use proto_common::exposition;
use proto_common::heartbeat::{Heartbeat, HeartbeatReply};
use proto_common::tls::Peer;
use proto_common::{ErrorCode, NodeId};
use tokio::sync::watch;
use tracing::Instrument;

use super::api_error::{ApiError, RejectedCredential};
use super::dashboard::DASHBOARD_HTML;
use super::metrics::Metrics;
use super::office::Office;
use super::request::{authorize, parse_json, MAX_BODY_BYTES};
use super::shell::Shell;
use crate::error::ArbiterError;
use crate::ops::{
    MaintenanceRequest, MaintenanceState, ParamsChanged, ParamsUpdate, PromoteRequest, Promoted,
    ReinitOrdered, ReinitRequest, RemoveRequest, Removed, SwitchoverRequest, SwitchoverStarted,
};
use crate::status::ClusterStatus;

/// What every handler needs.
#[derive(Clone)]
pub struct App {
    /// What this process is now (leading: the shell; following: where to
    /// redirect). Read once per request.
    pub office: watch::Receiver<Office>,
    /// Required on heartbeats and operator calls; `None` on loopback only.
    pub token: Option<Token>,
    /// Who may read the status, the metrics and the dashboard (the cluster
    /// token or the read-only token; nobody needs one without a token).
    pub reads: Access,
    /// The process's metrics (one set across terms).
    pub metrics: Arc<Metrics>,
}

impl App {
    /// The shell if this arbiter leads, else the answer to give for `path`.
    fn leading(&self, path: &str) -> Result<Arc<Shell>, ApiError> {
        let office = self.office.borrow().clone();
        match office {
            Office::Leading(shell) => Ok(shell),
            other => Err(other
                .refusal(path)
                .unwrap_or_else(|| ApiError::new(ErrorCode::Internal, "no office"))),
        }
    }

    /// An error from the shell as an answer: "not the leader" (the term
    /// ended mid-request, or the store refused a deposed write) becomes a
    /// redirect to whoever leads now.
    fn refused(&self, e: ArbiterError, path: &str) -> ApiError {
        if !e.is_not_leader() {
            return e.into();
        }
        let leader = e
            .leader()
            .map(str::to_owned)
            .or_else(|| self.office.borrow().leader_url());
        ApiError::not_leader(leader.as_deref(), path, "its leadership term ended")
    }
}

/// The API router.
pub fn router(app: App) -> Router {
    Router::new()
        .route("/", get(dashboard))
        .route("/v1/heartbeat", post(heartbeat))
        .route("/v1/status", get(status))
        .route("/v1/switchover", post(switchover))
        .route("/v1/maintenance", post(maintenance))
        .route("/v1/remove", post(remove))
        .route("/v1/promote", post(promote))
        .route("/v1/reinit", post(reinit))
        .route("/v1/params", post(params))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .fallback(unknown_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(app.clone(), log_rejections))
        .with_state(app)
}

/// Logs every refused credential once, with the peer's address, and
/// counts it: a wrong token in a config file shows at once, and so does
/// someone trying tokens.
async fn log_rejections(State(app): State<App>, request: Request, next: Next) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<Peer>>()
        .map(|c| c.0 .0.to_string())
        .unwrap_or_else(|| "unknown".into());
    let (method, path) = (request.method().clone(), request.uri().path().to_string());
    let response = next.run(request).await;
    if let Some(RejectedCredential(why)) = response.extensions().get::<RejectedCredential>() {
        app.metrics.rejected_credentials.inc();
        tracing::warn!(%peer, %method, %path, "rejected a credential: {why}");
    }
    response
}

async fn heartbeat(
    State(app): State<App>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<HeartbeatReply>, ApiError> {
    const PATH: &str = "/v1/heartbeat";
    let metrics = app.metrics.clone();
    // A refusal is logged (once, with the peer) by `log_rejections`.
    authorize(app.token.as_ref(), &headers).inspect_err(|e| {
        metrics.count_heartbeat(e.code().as_str());
    })?;
    // A follower answers before reading the body: the replica only needs
    // to know where to go.
    let shell = app.leading(PATH).inspect_err(|e| {
        metrics.count_heartbeat(e.code().as_str());
        tracing::debug!(leader = ?e.body.leader, "heartbeat redirected: not the leader");
    })?;
    let hb: Heartbeat = parse_json(body, "heartbeat", false).inspect_err(|e| {
        metrics.count_heartbeat(e.code().as_str());
        tracing::warn!(code = %e.code(), "heartbeat refused: {}", e.body.message);
    })?;
    let span =
        tracing::debug_span!("heartbeat", node = %hb.node_id, seq = hb.seq, epoch = %hb.epoch);
    match shell.heartbeat(&hb).instrument(span).await {
        Ok(reply) => {
            tracing::debug!(node = %hb.node_id, role = %reply.role, epoch = %reply.epoch, "heartbeat answered");
            Ok(Json(reply))
        }
        Err(e) => {
            tracing::warn!(node = %hb.node_id, code = e.code(), "heartbeat refused: {e}");
            Err(app.refused(e, PATH))
        }
    }
}

async fn status(
    State(app): State<App>,
    headers: HeaderMap,
) -> Result<Json<ClusterStatus>, ApiError> {
    authorize_read(&app, &headers)?;
    current_status(&app).await.map(Json)
}

/// Reads (status, metrics, dashboard) need the cluster token or the
/// read-only token when a token is configured; a browser asked with
/// `Basic` sends the token as the password.
fn authorize_read(app: &App, headers: &HeaderMap) -> Result<(), ApiError> {
    if !app.reads.required() {
        return Ok(());
    }
    let given = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
    app.reads
        .grant_for_header(given)
        .map(|_| ())
        .map_err(|why| {
            ApiError::new(
                ErrorCode::Unauthorized,
                format!(
                    "{why}; reading the status, the metrics or the dashboard needs the cluster \
                 token or the read-only token (--read-token-file): `Authorization: Bearer \
                 <token>`, or in a browser any user name with the token as password"
                ),
            )
        })
}

/// The status from whichever office this arbiter holds.
async fn current_status(app: &App) -> Result<ClusterStatus, ApiError> {
    let office = app.office.borrow().clone();
    match office {
        Office::Leading(shell) => Ok(shell.status().await),
        Office::Following(follower) => follower.status().await,
        Office::Closed => Err(Office::Closed
            .refusal("/v1/status")
            .expect("a closed office refuses")),
    }
}

async fn switchover(
    State(app): State<App>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<SwitchoverStarted>, ApiError> {
    const PATH: &str = "/v1/switchover";
    authorize(app.token.as_ref(), &headers)?;
    let shell = app.leading(PATH)?;
    let req: SwitchoverRequest = parse_json(body, "switchover request", true)?;
    let to = req
        .to
        .map(NodeId::new)
        .transpose()
        .map_err(|e| ApiError::new(ErrorCode::BadRequest, format!("to: {e}")))?;
    let asked = to.as_ref().map_or("best", |t| t.as_str()).to_string();
    let span = tracing::info_span!("switchover_request", to = %asked);
    match shell.switchover(to).instrument(span).await {
        Ok(started) => Ok(Json(started)),
        Err(e) => {
            tracing::warn!(to = %asked, code = e.code(), "switchover refused: {e}");
            Err(app.refused(e, PATH))
        }
    }
}

async fn maintenance(
    State(app): State<App>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<MaintenanceState>, ApiError> {
    const PATH: &str = "/v1/maintenance";
    authorize(app.token.as_ref(), &headers)?;
    let shell = app.leading(PATH)?;
    let req: MaintenanceRequest = parse_json(body, "maintenance request", false)?;
    let span = tracing::info_span!("maintenance_request", enabled = req.enabled);
    match shell.set_maintenance(req.enabled).instrument(span).await {
        Ok(state) => Ok(Json(state)),
        Err(e) => {
            tracing::warn!(
                enabled = req.enabled,
                code = e.code(),
                "maintenance change refused: {e}"
            );
            Err(app.refused(e, PATH))
        }
    }
}

/// A node id from a request body; 400 naming it when malformed.
fn node_id(text: &str) -> Result<NodeId, ApiError> {
    NodeId::new(text.to_string()).map_err(|e| {
        ApiError::new(
            ErrorCode::BadRequest,
            format!("node {text:?} is not a valid node id: {e}"),
        )
    })
}

async fn remove(
    State(app): State<App>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Removed>, ApiError> {
    const PATH: &str = "/v1/remove";
    authorize(app.token.as_ref(), &headers)?;
    let shell = app.leading(PATH)?;
    let req: RemoveRequest = parse_json(body, "remove request", false)?;
    let node = node_id(&req.node)?;
    let span = tracing::info_span!("remove_request", node = %node);
    match shell.remove_member(node.clone()).instrument(span).await {
        Ok(removed) => Ok(Json(removed)),
        Err(e) => {
            tracing::warn!(node = %node, code = e.code(), "remove refused: {e}");
            Err(app.refused(e, PATH))
        }
    }
}

async fn reinit(
    State(app): State<App>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ReinitOrdered>, ApiError> {
    const PATH: &str = "/v1/reinit";
    authorize(app.token.as_ref(), &headers)?;
    let shell = app.leading(PATH)?;
    let req: ReinitRequest = parse_json(body, "reinit request", false)?;
    let node = node_id(&req.node)?;
    let span = tracing::info_span!("reinit_request", node = %node);
    match shell.reinit_member(node.clone()).instrument(span).await {
        Ok(ordered) => Ok(Json(ordered)),
        Err(e) => {
            tracing::warn!(node = %node, code = e.code(), "reinit refused: {e}");
            Err(app.refused(e, PATH))
        }
    }
}

async fn promote(
    State(app): State<App>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Promoted>, ApiError> {
    const PATH: &str = "/v1/promote";
    authorize(app.token.as_ref(), &headers)?;
    let shell = app.leading(PATH)?;
    let req: PromoteRequest = parse_json(body, "promote request", false)?;
    let node = node_id(&req.node)?;
    if !req.accept_data_loss {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            "a forced promotion may lose acknowledged writes: send \"accept_data_loss\": true \
             to confirm (arbiter promote NODE --force --accept-data-loss)",
        ));
    }
    let span = tracing::info_span!("promote_request", node = %node);
    match shell.force_promote(node.clone()).instrument(span).await {
        Ok(promoted) => Ok(Json(promoted)),
        Err(e) => {
            tracing::warn!(node = %node, code = e.code(), "forced promotion refused: {e}");
            Err(app.refused(e, PATH))
        }
    }
}

async fn params(
    State(app): State<App>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ParamsChanged>, ApiError> {
    const PATH: &str = "/v1/params";
    authorize(app.token.as_ref(), &headers)?;
    let shell = app.leading(PATH)?;
    let update: ParamsUpdate = parse_json(body, "parameter update", false)?;
    let asked = serde_json::to_string(&update).unwrap_or_default();
    let span = tracing::info_span!("params_request", update = %asked);
    match shell.set_params(&update).instrument(span).await {
        Ok(changed) => {
            tracing::info!(changed = %changed.changed.join(", "), version = changed.state_version, "cluster parameters updated");
            Ok(Json(changed))
        }
        Err(e) => {
            tracing::warn!(update = %asked, code = e.code(), "parameter update refused: {e}");
            Err(app.refused(e, PATH))
        }
    }
}

async fn dashboard(State(app): State<App>, headers: HeaderMap) -> Response {
    match authorize_read(&app, &headers) {
        Ok(()) => Html(DASHBOARD_HTML).into_response(),
        Err(e) => {
            // Makes a browser ask for the token (as the password); the
            // page's own requests then carry it.
            let mut response = e.into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Basic realm=\"understudy\", charset=\"UTF-8\""),
            );
            response
        }
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn metrics(State(app): State<App>, headers: HeaderMap) -> Response {
    if let Err(e) = authorize_read(&app, &headers) {
        return e.into_response();
    }
    // A follower that cannot read the store still exports its counters.
    if let Ok(status) = current_status(&app).await {
        app.metrics.observe(&status);
    }
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let (content_type, body) = exposition::negotiate(accept, app.metrics.render());
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

async fn unknown_route(req: Request) -> ApiError {
    ApiError::new(
        ErrorCode::UnknownRoute,
        format!(
            "no such endpoint: {} {}; the arbiter serves POST /v1/heartbeat, GET /v1/status, \
             POST /v1/switchover, POST /v1/maintenance, POST /v1/params, GET /, /healthz and \
             /metrics",
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

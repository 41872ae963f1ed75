//! Routes of the client API, the layer that bounds requests in progress,
//! and the layer that stamps `X-Data-Version` on every answer, errors and
//! unknown routes included.

use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use proto_common::auth::Grant;
use proto_common::ErrorCode;

use super::error::ApiError;
use super::forward::Forwarder;
use super::gate::ConnGate;
use super::kv::header;
use super::{health, kv, txn, ApiState, Shared, DATA_VERSION};
use crate::node::Node;

/// The client API router for `node`.
pub fn router(node: Arc<Node>) -> Router {
    let max_requests = node.settings.limits.max_requests;
    let state: Shared = Arc::new(ApiState {
        forwarder: Forwarder::new(node.settings.tls.clone()),
        node,
        requests: tokio::sync::Semaphore::new(max_requests),
    });
    Router::new()
        .route("/v1/kv", get(kv::list))
        .route(
            "/v1/kv/",
            get(kv::empty_key).put(kv::empty_key).delete(kv::empty_key),
        )
        .route(
            "/v1/kv/{*key}",
            get(kv::get_key).put(kv::put_key).delete(kv::delete_key),
        )
        .route("/v1/txn", post(txn::txn))
        .route("/v1/role", get(health::role))
        .route("/v1/status", get(health::status))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .fallback(unknown_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            limit_requests,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), stamp_version))
        .layer(middleware::from_fn_with_state(state.clone(), check_access))
        .with_state(state)
}

/// Endpoints a load balancer or orchestrator calls: answered without a
/// credential (they tell only whether this replica is up and its role).
const OPEN: [&str; 3] = ["/healthz", "/readyz", "/v1/role"];

/// With a token configured, every other request needs a credential: the
/// cluster token or the read-write client token for everything, the
/// read-only client token for `GET` (reads, `/v1/status`, `/metrics`).
async fn check_access(State(api): State<Shared>, req: Request, next: Next) -> Response {
    let access = &api.node.settings.access;
    if !access.required() || OPEN.contains(&req.uri().path()) {
        return next.run(req).await;
    }
    let need = if matches!(*req.method(), Method::GET | Method::HEAD) {
        Grant::ReadOnly
    } else {
        Grant::ReadWrite
    };
    let given = req.headers().get(AUTHORIZATION).map(|v| v.as_bytes());
    let refusal = match access.grant_for_header(given) {
        Ok(grant) if grant >= need => return next.run(req).await,
        Ok(_) => ApiError::new(
            ErrorCode::Forbidden,
            "the read-only client token allows reads only; send the read-write client token \
             (or the cluster token) to write",
        ),
        Err(why) => ApiError::new(
            ErrorCode::Unauthorized,
            format!(
                "{why}; send `Authorization: Bearer <token>` with the cluster token or a client \
                 token (--client-token-file for reads and writes, --read-token-file for reads)"
            ),
        ),
    };
    let peer = req
        .extensions()
        .get::<ConnectInfo<ConnGate>>()
        .map(|c| c.0.peer);
    // The route, not the key: keys stay out of the log.
    let path = req.uri().path();
    let route = if path.starts_with("/v1/kv/") {
        "/v1/kv/{key}"
    } else {
        path
    };
    let what = format!("{} {route}", req.method());
    api.node
        .metrics
        .credential_rejected("http", peer, &what, &refusal.body.message);
    let mut response = refusal.into_response();
    if response.status() == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"understudy\""),
        );
    }
    response
}

/// Endpoints a load balancer or monitor calls: never refused for load, so
/// an overloaded active is not mistaken for a dead one.
const UNLIMITED: [&str; 5] = ["/healthz", "/readyz", "/v1/role", "/v1/status", "/metrics"];

/// At most `max_requests` requests are served at once; the next one is
/// answered 503 `overloaded` at once instead of queueing without bound.
async fn limit_requests(State(api): State<Shared>, req: Request, next: Next) -> Response {
    if UNLIMITED.contains(&req.uri().path()) {
        return next.run(req).await;
    }
    if let Some(p) = &api.node.settings.proxy {
        return ApiError::new(
            ErrorCode::BadRequest,
            format!(
                "this replica fronts a Redis server (proxy mode): its data is served on the RESP \
                 port {}, not by the key-value API",
                p.advertise_resp
            ),
        )
        .into_response();
    }
    let Ok(_permit) = api.requests.try_acquire() else {
        let max = api.node.settings.limits.max_requests;
        return ApiError::new(
            ErrorCode::Overloaded,
            format!("{max} requests are in progress (max_requests); nothing was done — retry after a pause"),
        )
        .into_response();
    };
    next.run(req).await
}

async fn stamp_version(State(api): State<Shared>, req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    if !resp.headers().contains_key(DATA_VERSION) {
        resp.headers_mut()
            .insert(DATA_VERSION, header(api.node.applied()));
    }
    resp
}

async fn unknown_route(req: Request) -> ApiError {
    ApiError::new(
        ErrorCode::UnknownRoute,
        format!(
            "no such endpoint: {} {}; see the API list in the README",
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

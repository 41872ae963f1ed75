//! Routes of the client API, the layer that bounds requests in progress,
//! and the layer that stamps `X-Data-Version` on every answer, errors and
//! unknown routes included.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use proto_common::ErrorCode;

use super::error::ApiError;
use super::forward::Forwarder;
use super::kv::header;
use super::{health, kv, txn, ApiState, Shared, DATA_VERSION};
use crate::node::Node;

/// The client API router for `node`.
pub fn router(node: Arc<Node>) -> Router {
    let max_requests = node.settings.limits.max_requests;
    let state: Shared = Arc::new(ApiState {
        node,
        forwarder: Forwarder::default(),
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
        .with_state(state)
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

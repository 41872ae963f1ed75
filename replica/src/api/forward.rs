//! What happens to a write (or a linearizable read) that reaches a replica
//! which is not the active: proxied to the active (default) or answered
//! with a 307 redirect, per `forward` in the configuration.
//!
//! A proxied request carries `X-Forwarded-By`; a replica that receives a
//! forwarded request while not active does not forward it again (no
//! loops while roles change) and answers 503 with the active it knows.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::Full;
use proto_common::http_client::{HttpClient, HttpError};
use proto_common::ErrorCode;

use super::error::ApiError;
use crate::config::ForwardMode;
use crate::node::Node;

/// Marks a request relayed by another replica.
pub const FORWARDED_BY: &str = "x-forwarded-by";
/// Longest a proxied request may take.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a forwarded request may still wait for the old active's answer
/// once another active is named: a live one handing over (a switchover)
/// answers within milliseconds; a frozen or cut-off one never does.
pub const ACTIVE_CHANGED_GRACE: Duration = Duration::from_millis(100);
/// Longest connecting to the active may take; shorter than
/// `FORWARD_TIMEOUT`, so a timeout of the whole means the request was sent.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest answer relayed back (answers to writes are small JSON).
const MAX_ANSWER: usize = 1 << 20;

/// The parts of a request needed to send it on.
pub struct Relay<'a> {
    pub method: &'a Method,
    pub path_and_query: &'a str,
    pub headers: &'a HeaderMap,
    pub body: Bytes,
}

impl<'a> Relay<'a> {
    pub fn new(method: &'a Method, uri: &'a Uri, headers: &'a HeaderMap, body: Bytes) -> Self {
        Relay {
            method,
            path_and_query: uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"),
            headers,
            body,
        }
    }
}

/// A pooled HTTP client for relaying to the active.
#[derive(Clone)]
pub struct Forwarder {
    client: HttpClient,
}

impl Forwarder {
    /// Speaks TLS to an active whose URL is `https://` with `tls`.
    pub fn new(tls: Option<std::sync::Arc<proto_common::tls::Tls>>) -> Forwarder {
        Forwarder {
            client: HttpClient::new(CONNECT_TIMEOUT, tls).with_max_answer(MAX_ANSWER),
        }
    }
}

impl Forwarder {
    /// Sends `req` to the active (or redirects), for a replica that is not it.
    pub async fn relay(&self, node: &Node, req: Relay<'_>) -> Result<Response, ApiError> {
        let role = node.role();
        let active_changed = node.roles.active_moved(role.active_url());
        tokio::pin!(active_changed);
        let why = role
            .not_writable()
            .unwrap_or_else(|| "this replica is not the active".into());
        let active_url = role.active_url().map(str::to_string);
        if req.headers.contains_key(FORWARDED_BY) {
            return Err(ApiError::new(
                ErrorCode::NotWritable,
                format!("{why}; this request was already forwarded once, so it is not sent on"),
            )
            .with_active(active_url));
        }
        let Some(active) = active_url else {
            return Err(ApiError::new(
                ErrorCode::NotWritable,
                format!("{why}; no active is known right now — retry shortly"),
            ));
        };
        let target = format!("{}{}", active.trim_end_matches('/'), req.path_and_query);
        if node.settings.forward == ForwardMode::Redirect {
            return Ok(redirect(&target, &active, &why));
        }
        let mut builder = hyper::Request::builder()
            .method(req.method.clone())
            .uri(&target)
            .header(FORWARDED_BY, node.settings.node_id.as_str());
        // The client's credential goes along: the active checks it too.
        for name in ["content-type", "x-min-version", "authorization"] {
            if let Some(v) = req.headers.get(name) {
                builder = builder.header(name, v);
            }
        }
        let request = builder.body(Full::new(req.body)).map_err(|e| {
            ApiError::new(
                ErrorCode::Internal,
                format!("cannot build the forwarded request: {e}"),
            )
        })?;
        // A request that never left (no connection to the active) failed
        // for sure, and retrying it is safe. One that was sent and then got
        // no answer may have been carried out: for a write that is
        // "outcome unknown", never "failed, retry". The connect timeout is
        // shorter than FORWARD_TIMEOUT, so running out of the latter means
        // the connection was made and the request went out.
        let is_read = *req.method == Method::GET || *req.method == Method::HEAD;
        let failed = |sent: bool, what: String| {
            let (code, tail) = if !sent {
                (
                    ErrorCode::ForwardFailed,
                    "it was not sent; retrying is safe",
                )
            } else if is_read {
                (ErrorCode::ForwardFailed, "retry")
            } else {
                (
                    ErrorCode::OutcomeUnknown,
                    "it was sent and may have been carried out: read it back before retrying",
                )
            };
            ApiError::new(
                code,
                format!("forwarding to the active at {active} failed: {what}; {tail}"),
            )
            .with_active(Some(active.clone()))
        };
        // When the arbiter names another active meanwhile, the old one may
        // be cut off or frozen and never answer (a partition drops it), or
        // it may be handing over and answer at once: it gets
        // ACTIVE_CHANGED_GRACE more, then the client is told, rather than
        // after the whole timeout.
        let relayed = self.client.send(request, FORWARD_TIMEOUT);
        tokio::pin!(relayed);
        let answer = tokio::select! {
            answer = &mut relayed => answer,
            _ = &mut active_changed => {
                match tokio::time::timeout(ACTIVE_CHANGED_GRACE, &mut relayed).await {
                    Ok(answer) => answer,
                    Err(_) => {
                        return Err(failed(
                            true,
                            format!(
                                "the arbiter named another active while the request was on its \
                                 way, and the old one did not answer within \
                                 {ACTIVE_CHANGED_GRACE:?} more"
                            ),
                        ))
                    }
                }
            }
        };
        let answer = answer.map_err(|e| match e {
            HttpError::NotSent(what) => failed(false, what),
            HttpError::Failed(what) => failed(true, what),
            HttpError::Timeout(_) => failed(true, format!("no answer within {FORWARD_TIMEOUT:?}")),
        })?;
        let mut resp = (answer.status, answer.body).into_response();
        for name in [
            "content-type",
            "x-data-version",
            "x-key-version",
            "x-active-url",
        ] {
            if let Some(v) = answer.headers.get(name) {
                resp.headers_mut().insert(name, v.clone());
            }
        }
        Ok(resp)
    }
}

fn redirect(target: &str, active: &str, why: &str) -> Response {
    let body = ApiError::new(
        ErrorCode::NotWritable,
        format!("{why}; send it to the active at {active}"),
    )
    .with_active(Some(active.to_string()));
    let mut resp = body.into_response();
    *resp.status_mut() = StatusCode::TEMPORARY_REDIRECT;
    if let Ok(v) = HeaderValue::from_str(target) {
        resp.headers_mut().insert(axum::http::header::LOCATION, v);
    }
    resp
}

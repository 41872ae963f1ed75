//! Single-key reads and writes and range reads:
//! `GET/PUT/DELETE /v1/kv/{key}` and `GET /v1/kv?prefix=&start_after=&limit=`.

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use bytes::Bytes;
use proto_common::{ErrorCode, Position};
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::forward::Relay;
use super::gate::ConnGate;
use super::input::{check_value, key_from_path, read_body};
use super::versions::wait_for_min_version;
use super::{ApiState, Shared, DATA_VERSION, KEY_VERSION};
use crate::command::Command;
use crate::commit::WriteAck;
use crate::node::Node;
use crate::state::Outcome;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GetParams {
    consistency: Option<String>,
}

/// `GET /v1/kv/{key}[?consistency=linearizable]`: the raw value, with the
/// key's version. Served locally (after `X-Min-Version`, if given); a
/// linearizable read is served by the active within its lease.
pub async fn get_key(
    State(api): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let node = &api.node;
    let key = key_from_path(uri.path(), &node.settings.limits)?;
    let params: GetParams = serde_urlencoded::from_str(uri.query().unwrap_or(""))
        .map_err(|e| ApiError::new(ErrorCode::BadRequest, format!("bad query: {e}")))?;
    let guard = match params.consistency.as_deref() {
        None | Some("local") => {
            wait_for_min_version(node, &headers).await?;
            None
        }
        Some("linearizable") => match node.roles.reader(node.applied()) {
            Ok(guard) => Some(guard),
            Err(e) if e.is_standby() => {
                let relay = Relay::new(&method, &uri, &headers, Bytes::new());
                return api.forwarder.relay(node, relay).await;
            }
            Err(e) => return Err(e.into()),
        },
        Some(other) => {
            return Err(ApiError::new(
                ErrorCode::BadRequest,
                format!("consistency={other:?}; use \"local\" (default) or \"linearizable\""),
            ))
        }
    };
    node.metrics.reads.inc();
    let (entry, applied) = {
        let kv = node.kv.read();
        (kv.get(&key).cloned(), kv.applied())
    };
    // A linearizable read was served under the lease only if the lease
    // still holds once it has been read (a pause in between could have let
    // another active take writes).
    if let Some(guard) = &guard {
        guard.check()?;
    }
    match entry {
        Some(e) => {
            let mut resp = e.value.into_response();
            let h = resp.headers_mut();
            h.insert(DATA_VERSION, header(applied));
            h.insert(KEY_VERSION, header(e.version));
            h.insert(
                axum::http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            Ok(resp)
        }
        None => Err(ApiError::new(
            ErrorCode::NotFound,
            format!("no key {:?}", String::from_utf8_lossy(&key)),
        )),
    }
}

/// `PUT /v1/kv/{key}`: the body is the value.
pub async fn put_key(
    State(api): State<Shared>,
    ConnectInfo(gate): ConnectInfo<ConnGate>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let limits = &api.node.settings.limits;
    let key = key_from_path(uri.path(), limits)?;
    let value = read_body(
        &headers,
        body,
        limits.max_value_bytes,
        ErrorCode::ValueTooLarge,
        "value",
    )
    .await?;
    check_value(&value, limits)?;
    let relay = Relay::new(&method, &uri, &headers, value.clone());
    submit(&api, &gate, relay, Command::Put { key, value }, None).await
}

/// `DELETE /v1/kv/{key}`: 404 when the key did not exist.
pub async fn delete_key(
    State(api): State<Shared>,
    ConnectInfo(gate): ConnectInfo<ConnGate>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let key = key_from_path(uri.path(), &api.node.settings.limits)?;
    let name = String::from_utf8_lossy(&key).into_owned();
    let relay = Relay::new(&method, &uri, &headers, Bytes::new());
    submit(&api, &gate, relay, Command::Delete { key }, Some(&name)).await
}

/// Writes on the active; anywhere else, relays to the active (or redirects).
pub async fn submit(
    api: &ApiState,
    gate: &ConnGate,
    relay: Relay<'_>,
    command: Command,
    key: Option<&str>,
) -> Result<Response, ApiError> {
    let guard = match api.node.roles.writer() {
        Ok(guard) => guard,
        Err(e) if e.is_standby() => return api.forwarder.relay(&api.node, relay).await,
        Err(e) => return Err(e.into()),
    };
    // Checked again once committed (`Node::write`), and by the connection's
    // gate on every write to the socket until the answer is out.
    let ack = api.node.write(&guard, command).await?;
    gate.gate.arm(&guard);
    write_response(&api.node, ack, key)
}

/// `PUT`/`DELETE /v1/kv/` with nothing after the slash.
pub async fn empty_key() -> ApiError {
    ApiError::new(
        ErrorCode::InvalidKey,
        "the key is empty; use /v1/kv/{key} with a non-empty key",
    )
}

#[derive(Serialize)]
struct Written {
    version: Position,
}

/// Turns a committed write's outcome into the answer.
pub fn write_response(node: &Node, ack: WriteAck, key: Option<&str>) -> Result<Response, ApiError> {
    let code = match ack.outcome {
        Outcome::Written => {
            node.metrics.count_write("ok");
            let mut resp = Json(Written {
                version: ack.position,
            })
            .into_response();
            resp.headers_mut()
                .insert(DATA_VERSION, header(ack.position));
            return Ok(resp);
        }
        Outcome::NotFound => {
            node.metrics.count_write("not_found");
            ApiError::new(
                ErrorCode::NotFound,
                format!("no key {:?}", key.unwrap_or_default()),
            )
        }
        Outcome::CompareFailed(why) => {
            node.metrics.count_write("compare_failed");
            ApiError::new(
                ErrorCode::CompareFailed,
                format!("{why}; nothing was written"),
            )
        }
        Outcome::Mismatch(why) => ApiError::new(ErrorCode::Internal, why),
    };
    let mut resp = code.into_response();
    resp.headers_mut()
        .insert(DATA_VERSION, header(ack.position));
    Ok(resp)
}

pub fn header(p: Position) -> HeaderValue {
    HeaderValue::from_str(&p.to_string()).expect("a position is ASCII")
}

/// Query parameters of a range read, percent-decoded to bytes so that a
/// prefix that is not UTF-8 is refused rather than mangled.
struct ListParams {
    prefix: Vec<u8>,
    start_after: Option<Vec<u8>>,
    limit: Option<String>,
}

fn list_params(query: &str, limits: &crate::config::Limits) -> Result<ListParams, ApiError> {
    let mut p = ListParams {
        prefix: Vec::new(),
        start_after: None,
        limit: None,
    };
    let mut seen = Vec::new();
    for pair in query.split('&').filter(|s| !s.is_empty()) {
        let (name, raw) = pair.split_once('=').unwrap_or((pair, ""));
        if seen.contains(&name) {
            return Err(ApiError::new(
                ErrorCode::BadRequest,
                format!("query parameter {name:?} is given twice"),
            ));
        }
        seen.push(name);
        let value: Vec<u8> =
            percent_encoding::percent_decode(raw.replace('+', " ").as_bytes()).collect();
        let text = |what: &str, v: Vec<u8>| {
            String::from_utf8(v).map_err(|_| {
                ApiError::new(
                    ErrorCode::InvalidKey,
                    format!(
                        "{what} is not valid UTF-8 (after percent-decoding); keys are UTF-8 text"
                    ),
                )
            })
        };
        match name {
            "prefix" => {
                let v = text("prefix", value)?;
                if v.len() > limits.max_key_bytes {
                    return Err(ApiError::new(
                        ErrorCode::KeyTooLarge,
                        format!(
                            "the prefix is {} bytes; the limit is max_key_bytes={}",
                            v.len(),
                            limits.max_key_bytes
                        ),
                    ));
                }
                p.prefix = v.into_bytes();
            }
            "start_after" => {
                let v = text("start_after", value)?;
                p.start_after = Some(v.into_bytes());
            }
            "limit" => p.limit = Some(String::from_utf8_lossy(&value).into_owned()),
            other => {
                return Err(ApiError::new(
                    ErrorCode::BadRequest,
                    format!("unknown query parameter {other:?}; use prefix, start_after and limit"),
                ))
            }
        }
    }
    Ok(p)
}

#[derive(Serialize)]
struct ListItem {
    key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value_base64: Option<String>,
    version: Position,
}

#[derive(Serialize)]
struct ListPage {
    items: Vec<ListItem>,
    /// True when more keys match after the last item: ask again with
    /// `start_after` set to its key.
    more: bool,
}

/// `GET /v1/kv?prefix=&start_after=&limit=` (limit defaults to 100).
pub async fn list(
    State(api): State<Shared>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let node = &api.node;
    let limits = &node.settings.limits;
    let params = list_params(uri.query().unwrap_or(""), limits)?;
    let limit = match params.limit.as_deref() {
        None => 100.min(limits.max_list_limit),
        Some(text) => match text.parse::<usize>() {
            Ok(n) if n >= 1 && n <= limits.max_list_limit => n,
            _ => {
                return Err(ApiError::new(
                    ErrorCode::BadRequest,
                    format!(
                        "limit={text:?} must be a number from 1 to max_list_limit={}",
                        limits.max_list_limit
                    ),
                ))
            }
        },
    };
    wait_for_min_version(node, &headers).await?;
    node.metrics.reads.inc();
    let (page, more, applied) = {
        let kv = node.kv.read();
        let (page, more) = kv.range(&params.prefix, params.start_after.as_deref(), limit);
        (page, more, kv.applied())
    };
    let items = page
        .into_iter()
        .map(|(k, e)| {
            let (value, value_base64) = text_or_base64(e.value);
            ListItem {
                key: String::from_utf8_lossy(&k).into_owned(),
                value,
                value_base64,
                version: e.version,
            }
        })
        .collect();
    let mut resp = (StatusCode::OK, Json(ListPage { items, more })).into_response();
    resp.headers_mut().insert(DATA_VERSION, header(applied));
    Ok(resp)
}

fn text_or_base64(v: Bytes) -> (Option<String>, Option<String>) {
    match String::from_utf8(v.to_vec()) {
        Ok(s) => (Some(s), None),
        Err(_) => (
            None,
            Some(base64::engine::general_purpose::STANDARD.encode(&v)),
        ),
    }
}

//! `POST /v1/txn`: compare, then write, atomically.
//!
//! ```json
//! {"compare": [{"key": "a", "version": "3.17"},
//!              {"key": "b", "exists": false},
//!              {"key": "c", "value": "x"}],
//!  "ops":     [{"op": "put", "key": "a", "value": "1"},
//!              {"op": "delete", "key": "c"}]}
//! ```
//!
//! Compares are evaluated when the transaction is applied, in log order, so
//! the result is the same on every replica. All hold → every op is applied
//! (200 with the version); one fails → nothing is written (409 naming it).

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;
use bytes::Bytes;
use proto_common::{ErrorCode, Position};
use serde::Deserialize;

use super::error::ApiError;
use super::forward::Relay;
use super::gate::ConnGate;
use super::input::{check_key, check_value, json_value, read_body};
use super::kv::submit;
use super::Shared;
use crate::command::{Command, Compare, Op};
use crate::config::Limits;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TxnRequest {
    #[serde(default)]
    compare: Vec<CompareJson>,
    #[serde(default)]
    ops: Vec<OpJson>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CompareJson {
    key: String,
    version: Option<Position>,
    exists: Option<bool>,
    value: Option<String>,
    value_base64: Option<String>,
}

#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
enum OpJson {
    Put {
        key: String,
        value: Option<String>,
        value_base64: Option<String>,
    },
    Delete {
        key: String,
    },
}

/// `POST /v1/txn`.
pub async fn txn(
    State(api): State<Shared>,
    ConnectInfo(gate): ConnectInfo<ConnGate>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let limits = &api.node.settings.limits;
    let body = read_body(
        &headers,
        body,
        limits.max_body_bytes,
        ErrorCode::BodyTooLarge,
        "request body",
    )
    .await?;
    let command = parse(&body, limits)?;
    let relay = Relay::new(&method, &uri, &headers, body);
    submit(&api, &gate, relay, command, None).await
}

/// Parses and checks a transaction body into a command.
fn parse(body: &[u8], limits: &Limits) -> Result<Command, ApiError> {
    let req: TxnRequest = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidJson,
            format!("the transaction is not valid JSON of the expected shape: {e}"),
        )
    })?;
    let total = req.compare.len() + req.ops.len();
    if total == 0 {
        return Err(ApiError::new(
            ErrorCode::InvalidJson,
            "the transaction has no compare and no ops",
        ));
    }
    if total > limits.max_txn_ops {
        return Err(ApiError::new(
            ErrorCode::BodyTooLarge,
            format!(
                "the transaction has {total} compares and ops; the limit is max_txn_ops={}",
                limits.max_txn_ops
            ),
        ));
    }
    let mut compares = Vec::with_capacity(req.compare.len());
    for (i, c) in req.compare.into_iter().enumerate() {
        let what = format!("compare {i}");
        let key = checked_key(c.key, limits)?;
        let given = [
            c.version.is_some(),
            c.exists.is_some(),
            c.value.is_some() || c.value_base64.is_some(),
        ];
        if given.iter().filter(|g| **g).count() != 1 {
            return Err(ApiError::new(
                ErrorCode::InvalidJson,
                format!("{what}: give exactly one of version, exists, value or value_base64"),
            ));
        }
        compares.push(if let Some(version) = c.version {
            Compare::Version { key, version }
        } else if let Some(exists) = c.exists {
            Compare::Exists { key, exists }
        } else {
            let value = json_value(c.value, c.value_base64, &what)?;
            check_value(&value, limits)?;
            Compare::Value { key, value }
        });
    }
    let mut ops = Vec::with_capacity(req.ops.len());
    for (i, op) in req.ops.into_iter().enumerate() {
        ops.push(match op {
            OpJson::Put {
                key,
                value,
                value_base64,
            } => {
                let value = json_value(value, value_base64, &format!("op {i}"))?;
                check_value(&value, limits)?;
                Op::Put {
                    key: checked_key(key, limits)?,
                    value,
                }
            }
            OpJson::Delete { key } => Op::Delete {
                key: checked_key(key, limits)?,
            },
        });
    }
    Ok(Command::Txn { compares, ops })
}

fn checked_key(key: String, limits: &Limits) -> Result<Bytes, ApiError> {
    check_key(key.as_bytes(), limits)?;
    Ok(Bytes::from(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_key_bytes: 16,
            max_value_bytes: 8,
            max_body_bytes: 4096,
            max_txn_ops: 5,
            max_list_limit: 10,
            max_requests: 8,
            max_pending_writes: 8,
        }
    }

    fn code(body: &str) -> ErrorCode {
        parse(body.as_bytes(), &limits()).unwrap_err().code()
    }

    #[test]
    fn parses_every_form() {
        let cmd = parse(
            br#"{"compare":[{"key":"a","version":"3.17"},{"key":"b","exists":false},
                {"key":"c","value_base64":"eA=="}],
                "ops":[{"op":"put","key":"a","value":"1"},{"op":"delete","key":"c"}]}"#,
            &limits(),
        )
        .unwrap();
        let Command::Txn { compares, ops } = cmd else {
            panic!()
        };
        assert_eq!(compares.len(), 3);
        assert_eq!(ops.len(), 2);
        assert_eq!(
            compares[2],
            Compare::Value {
                key: Bytes::from("c"),
                value: Bytes::from("x")
            }
        );
    }

    #[test]
    fn rejects_bad_input_with_the_right_code() {
        assert_eq!(code("{not json"), ErrorCode::InvalidJson);
        assert_eq!(code("{}"), ErrorCode::InvalidJson);
        assert_eq!(
            code(r#"{"ops":[{"op":"frob","key":"a"}]}"#),
            ErrorCode::InvalidJson
        );
        assert_eq!(
            code(r#"{"ops":[{"op":"put","key":"a"}]}"#),
            ErrorCode::InvalidJson
        );
        assert_eq!(
            code(r#"{"compare":[{"key":"a","exists":true,"value":"x"}]}"#),
            ErrorCode::InvalidJson
        );
        assert_eq!(
            code(r#"{"compare":[{"key":"a","version":"x"}]}"#),
            ErrorCode::InvalidJson
        );
        assert_eq!(
            code(r#"{"ops":[{"op":"delete","key":""}]}"#),
            ErrorCode::InvalidKey
        );
        assert_eq!(
            code(r#"{"ops":[{"op":"put","key":"a","value":"123456789"}]}"#),
            ErrorCode::ValueTooLarge
        );
        assert_eq!(
            code(
                r#"{"ops":[{"op":"delete","key":"a"},{"op":"delete","key":"a"},{"op":"delete","key":"a"},{"op":"delete","key":"a"},{"op":"delete","key":"a"},{"op":"delete","key":"a"}]}"#
            ),
            ErrorCode::BodyTooLarge
        );
        assert_eq!(code(r#"{"ops":[],"extra":1}"#), ErrorCode::InvalidJson);
    }
}

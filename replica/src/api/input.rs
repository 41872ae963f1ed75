//! Turning raw request parts into checked input: keys from the path, bodies
//! read with a hard limit, values from JSON. Every failure is an
//! [`ApiError`] naming the limit or the rule.

use axum::body::Body;
use axum::http::HeaderMap;
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use proto_common::ErrorCode;

use super::error::ApiError;
use crate::config::Limits;

/// Path prefix of single-key requests.
pub const KV_PREFIX: &str = "/v1/kv/";

/// Extracts and checks the key from a `/v1/kv/{key}` path. The key is the
/// percent-decoded rest of the path and must be non-empty UTF-8.
pub fn key_from_path(path: &str, limits: &Limits) -> Result<Bytes, ApiError> {
    let raw = path.strip_prefix(KV_PREFIX).unwrap_or("");
    let bytes: Vec<u8> = percent_encoding::percent_decode_str(raw).collect();
    check_key(&bytes, limits)?;
    Ok(Bytes::from(bytes))
}

/// Checks a key: non-empty, UTF-8, within `max_key_bytes`.
pub fn check_key(key: &[u8], limits: &Limits) -> Result<(), ApiError> {
    if key.is_empty() {
        return Err(ApiError::new(
            ErrorCode::InvalidKey,
            "the key is empty; use /v1/kv/{key} with a non-empty key",
        ));
    }
    if key.len() > limits.max_key_bytes {
        return Err(ApiError::new(
            ErrorCode::KeyTooLarge,
            format!(
                "the key is {} bytes; the limit is max_key_bytes={}",
                key.len(),
                limits.max_key_bytes
            ),
        ));
    }
    if std::str::from_utf8(key).is_err() {
        return Err(ApiError::new(
            ErrorCode::InvalidKey,
            "the key is not valid UTF-8 (after percent-decoding); keys must be UTF-8 text",
        ));
    }
    Ok(())
}

/// Checks a value's size.
pub fn check_value(value: &[u8], limits: &Limits) -> Result<(), ApiError> {
    if value.len() > limits.max_value_bytes {
        return Err(ApiError::new(
            ErrorCode::ValueTooLarge,
            format!(
                "the value is {} bytes; the limit is max_value_bytes={}",
                value.len(),
                limits.max_value_bytes
            ),
        ));
    }
    Ok(())
}

/// Reads a body of at most `limit` bytes; `code` is the error for a longer
/// one. A `Content-Length` over the limit is refused before reading.
pub async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    code: ErrorCode,
    what: &str,
) -> Result<Bytes, ApiError> {
    let too_large = |n: Option<u64>| {
        let size = n
            .map(|n| format!("{n} bytes"))
            .unwrap_or_else(|| "longer".into());
        ApiError::new(
            code,
            format!("the {what} is {size}; the limit is {limit} bytes"),
        )
    };
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(n) = declared {
        if n > limit as u64 {
            return Err(too_large(Some(n)));
        }
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large(None)),
        Err(e) => Err(ApiError::new(
            ErrorCode::BadRequest,
            format!("could not read the request body: {e}"),
        )),
    }
}

/// A value given in JSON either as text (`value`) or as base64 (`value_base64`).
pub fn json_value(
    text: Option<String>,
    b64: Option<String>,
    what: &str,
) -> Result<Bytes, ApiError> {
    match (text, b64) {
        (Some(t), None) => Ok(Bytes::from(t)),
        (None, Some(b)) => base64::engine::general_purpose::STANDARD
            .decode(b.as_bytes())
            .map(Bytes::from)
            .map_err(|e| {
                ApiError::new(
                    ErrorCode::InvalidJson,
                    format!("{what}: value_base64 is not valid base64: {e}"),
                )
            }),
        (Some(_), Some(_)) => Err(ApiError::new(
            ErrorCode::InvalidJson,
            format!("{what}: give either value or value_base64, not both"),
        )),
        (None, None) => Err(ApiError::new(
            ErrorCode::InvalidJson,
            format!("{what}: value (text) or value_base64 is required"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_key_bytes: 8,
            max_value_bytes: 4,
            max_body_bytes: 1024,
            max_txn_ops: 4,
            max_list_limit: 10,
            max_requests: 8,
            max_pending_writes: 8,
        }
    }

    #[test]
    fn keys_are_decoded_and_checked() {
        let l = limits();
        assert_eq!(
            key_from_path("/v1/kv/a%2Fb", &l).unwrap(),
            Bytes::from("a/b")
        );
        assert_eq!(key_from_path("/v1/kv/a/b", &l).unwrap(), Bytes::from("a/b"));
        assert_eq!(
            key_from_path("/v1/kv/", &l).unwrap_err().code(),
            ErrorCode::InvalidKey
        );
        assert_eq!(
            key_from_path("/v1/kv/%FF", &l).unwrap_err().code(),
            ErrorCode::InvalidKey
        );
        assert_eq!(
            key_from_path("/v1/kv/123456789", &l).unwrap_err().code(),
            ErrorCode::KeyTooLarge
        );
    }

    #[test]
    fn json_values() {
        assert_eq!(
            json_value(Some("x".into()), None, "op 0").unwrap(),
            Bytes::from("x")
        );
        assert_eq!(
            json_value(None, Some("/w==".into()), "op 0").unwrap(),
            Bytes::from_static(&[0xff])
        );
        assert!(json_value(None, Some("!!".into()), "op 0").is_err());
        assert!(json_value(None, None, "op 0").is_err());
    }
}

//! Checks every mutating request goes through before it reaches the
//! shell: the bearer token, then the body (size, then JSON shape). Each
//! failure is a JSON error that says what was wrong and how to fix it.

use axum::extract::rejection::BytesRejection;
use axum::http::{header, HeaderMap, StatusCode};
use bytes::Bytes;
use proto_common::auth::Token;
use proto_common::ErrorCode;
use serde::de::DeserializeOwned;

use super::api_error::ApiError;

/// Largest request body accepted; a heartbeat from a replica with many
/// standbys is a few KiB.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Checks the `Authorization: Bearer` header against the cluster token.
/// Without a token (loopback only, enforced by the configuration) every
/// caller is accepted.
pub fn authorize(token: Option<&Token>, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(token) = token else {
        return Ok(());
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or(""));
    if token.check_bearer(given) {
        return Ok(());
    }
    let why = match given {
        None => "no Authorization header was sent",
        Some(v) if !v.starts_with("Bearer ") => "the Authorization header is not `Bearer <token>`",
        Some(_) => "the bearer token does not match this arbiter's cluster token",
    };
    Err(ApiError::new(
        ErrorCode::Unauthorized,
        format!(
            "{why}; send `Authorization: Bearer <cluster token>` with the token from \
             --token-file or UNDERSTUDY_TOKEN"
        ),
    ))
}

/// Parses a JSON body as `what`. An empty body counts as `{}` when
/// `empty_ok` (e.g. `POST /v1/switchover` without a target).
pub fn parse_json<T: DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
    what: &str,
    empty_ok: bool,
) -> Result<T, ApiError> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                ErrorCode::BodyTooLarge,
                format!("the body is larger than {MAX_BODY_BYTES} bytes; a {what} is far smaller"),
            )
        } else {
            ApiError::new(
                ErrorCode::BadRequest,
                format!("cannot read the body: {}", e.body_text()),
            )
        }
    })?;
    let text: &[u8] = if empty_ok && body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        &body
    };
    serde_json::from_slice(text).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidJson,
            format!("the body is not a valid {what}: {e}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn authorization_says_what_was_wrong() {
        let token = Token::new("0123456789abcdef0123").unwrap();
        let mut headers = HeaderMap::new();
        assert!(authorize(None, &headers).is_ok());
        let err = authorize(Some(&token), &headers).unwrap_err();
        assert_eq!(err.code(), ErrorCode::Unauthorized);
        assert!(
            err.body.message.contains("no Authorization header"),
            "{:?}",
            err.body
        );
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer nope"),
        );
        let err = authorize(Some(&token), &headers).unwrap_err();
        assert!(
            err.body.message.contains("does not match"),
            "{:?}",
            err.body
        );
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&token.bearer()).unwrap(),
        );
        assert!(authorize(Some(&token), &headers).is_ok());
    }

    #[test]
    fn bodies_are_parsed_with_useful_errors() {
        #[derive(serde::Deserialize, Debug)]
        struct Req {
            #[allow(dead_code)] // read only by the parser under test
            enabled: bool,
        }
        let err = parse_json::<Req>(Ok(Bytes::from_static(b"{\"enabled\":")), "request", false)
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidJson);
        assert!(err.body.message.contains("line 1"), "{:?}", err.body);
        let err = parse_json::<Req>(Ok(Bytes::new()), "request", true).unwrap_err();
        assert!(err.body.message.contains("enabled"), "{:?}", err.body);
        let ok = parse_json::<serde_json::Value>(Ok(Bytes::from_static(b" ")), "request", true);
        assert_eq!(ok.unwrap(), serde_json::json!({}));
    }
}

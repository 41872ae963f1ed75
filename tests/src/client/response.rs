//! What the replica answered: status, the headers the API defines, the body,
//! and helpers that read the API's JSON shapes out of it.
//!
//! Parsing is lenient on purpose. Tests look at answers to malformed
//! requests and at answers from half-started nodes, so accessors return
//! `Option`/`Result` instead of assuming the contract held; the raw header
//! text and body stay available for assertions about exactly what was sent.

use base64::Engine;
use bytes::Bytes;
use hyper::{HeaderMap, StatusCode};
use proto_common::{ErrorBody, Position};
use serde::de::DeserializeOwned;
use serde::Deserialize;

/// One HTTP answer from a replica.
#[derive(Clone, Debug)]
pub struct KvResponse {
    /// The HTTP status code (200, 307, 404, 409, 503, ...).
    pub status: u16,
    /// `X-Data-Version` as sent (`E.I`): the replica's applied position when
    /// it answered; on every answer, success or error.
    pub data_version: Option<String>,
    /// `X-Key-Version` as sent: the position of the key's last write (GET).
    pub key_version: Option<String>,
    /// `Location` of a 307 redirect to the active.
    pub location: Option<String>,
    /// `X-Active-Url`: the active's client URL, when the replica knows it.
    pub active_url: Option<String>,
    /// All headers, for assertions on anything else.
    pub headers: HeaderMap,
    /// The complete body.
    pub body: Bytes,
}

/// One page of a list (range) read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListPage {
    /// Keys in ascending order.
    pub items: Vec<ListItem>,
    /// Whether more keys follow; continue with `start_after` = last key.
    pub more: bool,
}

/// One key of a [`ListPage`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListItem {
    /// The key.
    pub key: String,
    /// The value, decoded from `value` or `value_base64`.
    pub value: Bytes,
    /// Position of the key's last write.
    pub version: Position,
}

/// The list item as it is on the wire.
#[derive(Deserialize)]
struct WireItem {
    key: String,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    value_base64: Option<String>,
    version: Position,
}

/// The list page as it is on the wire.
#[derive(Deserialize)]
struct WirePage {
    items: Vec<WireItem>,
    #[serde(default)]
    more: bool,
}

impl KvResponse {
    pub(crate) fn new(status: StatusCode, headers: HeaderMap, body: Bytes) -> KvResponse {
        let text = |name: &str| {
            headers
                .get(name)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        };
        KvResponse {
            status: status.as_u16(),
            data_version: text("x-data-version"),
            key_version: text("x-key-version"),
            location: text("location"),
            active_url: text("x-active-url"),
            body,
            headers,
        }
    }

    /// 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// `X-Data-Version` parsed; `None` if absent or malformed.
    pub fn data_position(&self) -> Option<Position> {
        self.data_version.as_deref()?.parse().ok()
    }

    /// `X-Key-Version` parsed; `None` if absent or malformed.
    pub fn key_position(&self) -> Option<Position> {
        self.key_version.as_deref()?.parse().ok()
    }

    /// The body as text (lossy), for messages and assertions.
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON of type `T`.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }

    /// The `version` of a write's `{"version":"E.I"}` answer.
    pub fn write_version(&self) -> Option<Position> {
        let value: serde_json::Value = self.json().ok()?;
        value.get("version")?.as_str()?.parse().ok()
    }

    /// The error body, when the body is one with a code this build knows.
    pub fn error_body(&self) -> Option<ErrorBody> {
        self.json().ok()
    }

    /// The `error` code as text, also for codes newer than this build.
    pub fn error_code(&self) -> Option<String> {
        let value: serde_json::Value = self.json().ok()?;
        Some(value.get("error")?.as_str()?.to_string())
    }

    /// The error body says the same request may succeed later, possibly at
    /// another replica (`not_writable`, `forward_failed`, ...).
    pub fn is_retryable(&self) -> bool {
        if self.is_success() {
            return false;
        }
        let Ok(value) = self.json::<serde_json::Value>() else {
            return false;
        };
        value.get("retryable").and_then(|r| r.as_bool()) == Some(true)
    }

    /// The `active` URL named in an error body.
    pub fn active_hint(&self) -> Option<String> {
        let value: serde_json::Value = self.json().ok()?;
        Some(value.get("active")?.as_str()?.to_string())
    }

    /// The page of a list read; values in `value_base64` are decoded.
    pub fn list_page(&self) -> Result<ListPage, String> {
        let page: WirePage = self
            .json()
            .map_err(|e| format!("list body is not a page ({e}): {}", self.body_text()))?;
        let mut items = Vec::with_capacity(page.items.len());
        for item in page.items {
            let value = match (item.value, item.value_base64) {
                (Some(text), None) => Bytes::from(text),
                (None, Some(b64)) => base64::engine::general_purpose::STANDARD
                    .decode(&b64)
                    .map(Bytes::from)
                    .map_err(|e| format!("key {:?}: bad value_base64: {e}", item.key))?,
                _ => {
                    return Err(format!(
                        "key {:?} must have exactly one of value and value_base64",
                        item.key
                    ))
                }
            };
            items.push(ListItem {
                key: item.key,
                value,
                version: item.version,
            });
        }
        Ok(ListPage {
            items,
            more: page.more,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, headers: &[(&'static str, &'static str)], body: &str) -> KvResponse {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(*name, value.parse().unwrap());
        }
        KvResponse::new(
            StatusCode::from_u16(status).unwrap(),
            map,
            Bytes::from(body.to_string()),
        )
    }

    #[test]
    fn versions_come_from_headers_and_body() {
        let r = response(
            200,
            &[("x-data-version", "3.17"), ("x-key-version", "2.5")],
            r#"{"version":"3.17"}"#,
        );
        assert_eq!(r.data_position(), Some(Position::new(3, 17)));
        assert_eq!(r.key_position(), Some(Position::new(2, 5)));
        assert_eq!(r.write_version(), Some(Position::new(3, 17)));
        assert!(!r.is_retryable());
    }

    #[test]
    fn errors_are_read_even_with_unknown_codes() {
        let r = response(
            503,
            &[],
            r#"{"error":"not_writable","message":"standby","retryable":true,"active":"http://a"}"#,
        );
        assert!(r.is_retryable());
        assert_eq!(r.error_code().as_deref(), Some("not_writable"));
        assert_eq!(r.active_hint().as_deref(), Some("http://a"));
        assert!(r.error_body().is_some());

        let r = response(
            503,
            &[],
            r#"{"error":"brand_new","message":"?","retryable":false}"#,
        );
        assert!(!r.is_retryable());
        assert_eq!(r.error_code().as_deref(), Some("brand_new"));
        assert!(r.error_body().is_none());

        let r = response(503, &[], "<html>proxy</html>");
        assert!(!r.is_retryable());
        assert_eq!(r.error_code(), None);
    }

    #[test]
    fn list_pages_decode_base64_values() {
        let r = response(
            200,
            &[],
            r#"{"items":[{"key":"a","value":"x","version":"1.1"},
                         {"key":"b","value_base64":"/wA=","version":"1.2"}],"more":true}"#,
        );
        let page = r.list_page().unwrap();
        assert!(page.more);
        assert_eq!(page.items[0].value, Bytes::from_static(b"x"));
        assert_eq!(page.items[1].value, Bytes::from_static(&[0xff, 0x00]));
        assert_eq!(page.items[1].version, Position::new(1, 2));

        let bad = response(200, &[], r#"{"items":[{"key":"a","version":"1.1"}]}"#);
        assert!(bad.list_page().is_err());
    }
}

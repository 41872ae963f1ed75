//! How keys and list parameters are written into request paths.
//!
//! A key is raw bytes and becomes exactly one path segment: everything but
//! RFC 3986 unreserved characters is percent-encoded, so keys with `/`,
//! spaces, `?`, `%` or non-ASCII text (or bytes that are not UTF-8, for
//! tests of invalid keys) reach the server intact.

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Characters left as they are in a query value: RFC 3986 unreserved.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes a key for use as the last segment of `/v1/kv/{key}`.
///
/// Bytes that are not UTF-8 are encoded too, so tests can send invalid keys.
pub fn encode_key(key: &[u8]) -> String {
    let mut out = String::with_capacity(key.len() * 3);
    for &b in key {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'~') {
            out.push(b as char);
        } else if b == b'.' && !key.iter().all(|&c| c == b'.') {
            // "." and ".." alone would be path navigation to a normalizing proxy.
            out.push('.');
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The path of one key: `/v1/kv/{percent-encoded key}`.
pub fn key_path(key: &[u8]) -> String {
    format!("/v1/kv/{}", encode_key(key))
}

/// `/v1/kv?prefix=P&start_after=K&limit=N`; absent arguments are left out.
pub fn list_path(prefix: &str, start_after: Option<&str>, limit: Option<usize>) -> String {
    let mut path = format!("/v1/kv?prefix={}", utf8_percent_encode(prefix, UNRESERVED));
    if let Some(after) = start_after {
        let after = utf8_percent_encode(after, UNRESERVED);
        path.push_str(&format!("&start_after={after}"));
    }
    if let Some(limit) = limit {
        path.push_str(&format!("&limit={limit}"));
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_one_path_segment() {
        assert_eq!(key_path(b"a/b c"), "/v1/kv/a%2Fb%20c");
        assert_eq!(key_path("é".as_bytes()), "/v1/kv/%C3%A9");
        assert_eq!(encode_key(b"v1.2-x_y~z"), "v1.2-x_y~z");
        assert_eq!(encode_key(b".."), "%2E%2E");
        assert_eq!(encode_key(&[0xff, b'?', b'%']), "%FF%3F%25");
    }

    #[test]
    fn list_queries_encode_their_values() {
        assert_eq!(list_path("", None, None), "/v1/kv?prefix=");
        assert_eq!(
            list_path("a/b", Some("a/b c&"), Some(10)),
            "/v1/kv?prefix=a%2Fb&start_after=a%2Fb%20c%26&limit=10"
        );
    }
}

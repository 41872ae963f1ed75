//! Why a request got no HTTP answer.
//!
//! HTTP errors (404, 409, 503, ...) are answers and come back as a
//! `KvResponse`; this type is only for the request-level failures, each with
//! a short stable `kind` that loadgen counts and histories record, and the
//! one fact a consistency checker needs: could the request have been applied?

use std::fmt;
use std::time::Duration;

/// A transport failure: the request got no HTTP answer.
#[derive(Debug)]
pub enum ClientError {
    /// The base URL or a header given by the caller is unusable.
    InvalidRequest(String),
    /// The TCP connection could not be opened.
    Connect(std::io::Error),
    /// No complete answer within the timeout; the request may have been applied.
    Timeout(Duration),
    /// The connection failed while the request was in flight; it may have
    /// been applied.
    Http(hyper::Error),
}

impl ClientError {
    /// A short stable name for counting errors by kind.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientError::InvalidRequest(_) => "invalid_request",
            ClientError::Connect(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                "connect_refused"
            }
            ClientError::Connect(_) => "connect_failed",
            ClientError::Timeout(_) => "timeout",
            ClientError::Http(e) if e.is_incomplete_message() || e.is_closed() => {
                "connection_closed"
            }
            ClientError::Http(_) => "http_error",
        }
    }

    /// Whether the server certainly never saw the request.
    pub fn never_sent(&self) -> bool {
        matches!(
            self,
            ClientError::InvalidRequest(_) | ClientError::Connect(_)
        )
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::InvalidRequest(m) => write!(f, "invalid request: {m}"),
            ClientError::Connect(e) => write!(f, "cannot connect: {e}"),
            ClientError::Timeout(t) => write!(f, "no answer within {t:?}"),
            ClientError::Http(e) => write!(f, "connection failed: {e}"),
        }
    }
}

impl std::error::Error for ClientError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_whether_the_request_was_sent() {
        let refused = ClientError::Connect(std::io::ErrorKind::ConnectionRefused.into());
        assert_eq!(refused.kind(), "connect_refused");
        assert!(refused.never_sent());
        let timeout = ClientError::Timeout(Duration::from_millis(5));
        assert_eq!(timeout.kind(), "timeout");
        assert!(!timeout.never_sent());
        assert_eq!(timeout.to_string(), "no answer within 5ms");
    }
}

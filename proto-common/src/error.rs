//! The error shape that crosses the wire: `{ "error": code, "message": text,
//! "active": url? }`, with a stable code, an HTTP status and a retry hint.
//!
//! Codes are part of the API: clients branch on them, so they are never
//! renamed. Messages are for people and say what was wrong and what to do.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Stable error codes shared by the replica and the arbiter APIs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request is malformed (bad query parameter, bad header, bad path).
    BadRequest,
    /// The key is empty, not UTF-8, or otherwise unusable.
    InvalidKey,
    /// The body is not the JSON the endpoint expects.
    InvalidJson,
    /// The key is longer than `max_key_bytes`.
    KeyTooLarge,
    /// The value is longer than `max_value_bytes`.
    ValueTooLarge,
    /// The body is longer than `max_body_bytes`.
    BodyTooLarge,
    /// The key does not exist.
    NotFound,
    /// No such endpoint.
    UnknownRoute,
    /// The endpoint exists but not with this method.
    MethodNotAllowed,
    /// A transaction's comparison did not hold; nothing was written.
    CompareFailed,
    /// This node does not take writes now (standby, lease lapsed, a
    /// switchover under way). Retry, possibly at the `active` address.
    NotWritable,
    /// Strict mode: the active has fewer sync standbys than
    /// `sync_standbys`, so it refuses writes (nothing was written). Retry
    /// once a standby has caught up and joined the sync set.
    NoSyncStandby,
    /// Too many requests or writes in progress (`max_requests`,
    /// `max_pending_writes`); nothing was done. Retry after a pause.
    Overloaded,
    /// A standby has not yet applied the `X-Min-Version` the client asked for.
    VersionNotReached,
    /// The `X-Min-Version` names a write that was cut from the log (it was
    /// never committed); the client's token is from a history that no longer exists.
    VersionCut,
    /// Missing or wrong credential (cluster token or client token).
    Unauthorized,
    /// The credential is valid but does not allow this (a read-only
    /// client token sent with a write).
    Forbidden,
    /// The write reached the log but its acknowledgement could not be given
    /// (the lease ended or the node was demoted first): it may or may not
    /// survive. Read it back before retrying a non-idempotent request.
    OutcomeUnknown,
    /// A write forwarded to the active could not be delivered.
    ForwardFailed,
    /// This arbiter is not the leader; see the `leader` field / Location.
    NotLeader,
    /// The node is shutting down.
    ShuttingDown,
    /// A switchover or other operation could not proceed now.
    Conflict,
    /// Storage failed (disk full, I/O error). The node stops taking writes.
    Storage,
    /// A bug or unexpected state; the message has the details.
    Internal,
}

impl ErrorCode {
    /// The HTTP status this code is answered with.
    pub fn http_status(self) -> u16 {
        use ErrorCode::*;
        match self {
            BadRequest | InvalidKey | InvalidJson => 400,
            Unauthorized => 401,
            Forbidden => 403,
            NotFound | UnknownRoute => 404,
            MethodNotAllowed => 405,
            CompareFailed | VersionCut | Conflict => 409,
            KeyTooLarge | ValueTooLarge | BodyTooLarge => 413,
            Internal | Storage => 500,
            ForwardFailed => 502,
            NotWritable | NoSyncStandby | Overloaded | VersionNotReached | NotLeader
            | ShuttingDown | OutcomeUnknown => 503,
        }
    }

    /// Whether the same request may succeed if simply sent again later.
    pub fn is_retryable(self) -> bool {
        use ErrorCode::*;
        matches!(
            self,
            NotWritable
                | NoSyncStandby
                | Overloaded
                | VersionNotReached
                | ForwardFailed
                | NotLeader
                | ShuttingDown
        )
    }

    pub fn as_str(self) -> &'static str {
        use ErrorCode::*;
        match self {
            BadRequest => "bad_request",
            InvalidKey => "invalid_key",
            InvalidJson => "invalid_json",
            KeyTooLarge => "key_too_large",
            ValueTooLarge => "value_too_large",
            BodyTooLarge => "body_too_large",
            NotFound => "not_found",
            UnknownRoute => "unknown_route",
            MethodNotAllowed => "method_not_allowed",
            CompareFailed => "compare_failed",
            NotWritable => "not_writable",
            NoSyncStandby => "no_sync_standby",
            Overloaded => "overloaded",
            VersionNotReached => "version_not_reached",
            VersionCut => "version_cut",
            Unauthorized => "unauthorized",
            Forbidden => "forbidden",
            OutcomeUnknown => "outcome_unknown",
            ForwardFailed => "forward_failed",
            NotLeader => "not_leader",
            ShuttingDown => "shutting_down",
            Conflict => "conflict",
            Storage => "storage",
            Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The JSON body of every error response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Stable machine-readable code.
    pub error: ErrorCode,
    /// What went wrong and what to do about it.
    pub message: String,
    /// Whether retrying the same request later may succeed.
    pub retryable: bool,
    /// The active replica's client URL, when the error is about writability.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<String>,
    /// The leading arbiter's URL, when this arbiter is not the leader.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
}

impl ErrorBody {
    pub fn new(error: ErrorCode, message: impl Into<String>) -> Self {
        ErrorBody {
            error,
            message: message.into(),
            retryable: error.is_retryable(),
            active: None,
            leader: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_serialize_as_their_stable_names() {
        for code in [
            ErrorCode::BadRequest,
            ErrorCode::NotWritable,
            ErrorCode::VersionCut,
            ErrorCode::BodyTooLarge,
        ] {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }

    #[test]
    fn body_omits_absent_addresses() {
        let body = ErrorBody::new(ErrorCode::NotFound, "no key \"a\"");
        let json = serde_json::to_string(&body).unwrap();
        assert_eq!(
            json,
            r#"{"error":"not_found","message":"no key \"a\"","retryable":false}"#
        );
    }
}

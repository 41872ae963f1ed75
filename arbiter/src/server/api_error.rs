//! `ApiError`: every error answer of the arbiter's HTTP API — the JSON
//! [`ErrorBody`] with its stable code, answered with the code's status —
//! and the one answer that is not an error status: a non-leader's **307**
//! to the leader, with a `Location` header and the `leader` field.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use proto_common::{ErrorBody, ErrorCode};

use crate::error::ArbiterError;

/// An error answer.
#[derive(Clone, Debug)]
pub struct ApiError {
    /// What goes on the wire.
    pub body: ErrorBody,
    /// Set on a redirect to the leader: answered as 307 with this
    /// `Location` (the same path on the leader).
    pub location: Option<String>,
}

impl ApiError {
    /// An error with `code` and a message that says what to do.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            body: ErrorBody::new(code, message),
            location: None,
        }
    }

    /// "Not the leader" for a request to `path`: a 307 to the same path on
    /// `leader` when it is known (replicas and the CLI follow the `leader`
    /// field), else a retryable 503 — nobody leads right now.
    pub fn not_leader(leader: Option<&str>, path: &str, why: &str) -> ApiError {
        match leader {
            Some(url) => {
                let url = url.trim_end_matches('/');
                let mut e = ApiError::new(
                    ErrorCode::NotLeader,
                    format!(
                        "this arbiter does not lead ({why}); {url} leads: send the request there"
                    ),
                );
                e.body.leader = Some(url.to_string());
                e.location = Some(format!("{url}{path}"));
                e
            }
            None => ApiError::new(
                ErrorCode::NotLeader,
                format!(
                    "this arbiter does not lead ({why}) and no leader is known yet; retry in a \
                     moment, or ask another arbiter"
                ),
            ),
        }
    }

    /// The wire code.
    pub fn code(&self) -> ErrorCode {
        self.body.error
    }

    /// The HTTP status it is answered with.
    pub fn status(&self) -> StatusCode {
        if self.location.is_some() {
            return StatusCode::TEMPORARY_REDIRECT;
        }
        StatusCode::from_u16(self.body.error.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl From<ArbiterError> for ApiError {
    fn from(e: ArbiterError) -> ApiError {
        ApiError {
            body: e.to_body(),
            location: None,
        }
    }
}

/// Put on a 401 response so the logging layer (which sees the peer) can say
/// why the credential was refused.
#[derive(Clone, Debug)]
pub struct RejectedCredential(pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let rejected = (self.code() == ErrorCode::Unauthorized).then(|| self.body.message.clone());
        let mut response = match self.location {
            Some(location) => {
                (status, [(header::LOCATION, location)], Json(self.body)).into_response()
            }
            None => (status, Json(self.body)).into_response(),
        };
        if let Some(why) = rejected {
            response.extensions_mut().insert(RejectedCredential(why));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto_common::NodeId;

    #[test]
    fn arbiter_errors_keep_their_wire_code_and_status() {
        let e: ApiError = ArbiterError::UnknownTarget {
            node: NodeId::new("zz").unwrap(),
            members: "a, b".into(),
        }
        .into();
        assert_eq!(e.code(), ErrorCode::NotFound);
        assert_eq!(e.into_response().status(), StatusCode::NOT_FOUND);
        let e: ApiError = ArbiterError::WriteInProgress.into();
        assert_eq!(e.code(), ErrorCode::Conflict);
        assert!(e.body.retryable);
        assert_eq!(e.into_response().status(), StatusCode::CONFLICT);
    }

    #[test]
    fn a_known_leader_gets_a_307_with_location_and_leader_field() {
        let e = ApiError::not_leader(Some("http://10.0.0.2:7700/"), "/v1/heartbeat", "follower");
        assert_eq!(e.body.leader.as_deref(), Some("http://10.0.0.2:7700"));
        assert!(e.body.retryable);
        let r = e.into_response();
        assert_eq!(r.status(), StatusCode::TEMPORARY_REDIRECT);
        assert_eq!(
            r.headers()[header::LOCATION],
            "http://10.0.0.2:7700/v1/heartbeat"
        );
        let e = ApiError::not_leader(None, "/v1/heartbeat", "campaigning");
        assert_eq!(e.code(), ErrorCode::NotLeader);
        assert_eq!(e.body.leader, None);
        assert_eq!(e.into_response().status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}

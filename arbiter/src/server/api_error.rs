//! `ApiError`: every error answer of the arbiter's HTTP API — the JSON
//! [`ErrorBody`] with its stable code, answered with the code's status.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use proto_common::{ErrorBody, ErrorCode};

use crate::error::ArbiterError;

/// An error answer.
#[derive(Clone, Debug)]
pub struct ApiError {
    /// What goes on the wire.
    pub body: ErrorBody,
}

impl ApiError {
    /// An error with `code` and a message that says what to do.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            body: ErrorBody::new(code, message),
        }
    }

    /// The wire code.
    pub fn code(&self) -> ErrorCode {
        self.body.error
    }
}

impl From<ArbiterError> for ApiError {
    fn from(e: ArbiterError) -> ApiError {
        ApiError { body: e.to_body() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.body.error.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(self.body)).into_response()
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
}

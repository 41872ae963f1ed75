//! API errors: a stable code, a message that says what to do, the right
//! HTTP status, and the active's address when that helps the client.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use proto_common::{ErrorBody, ErrorCode};

use crate::commit::WriteError;
use crate::role::NotActive;

/// An error answer of the client API.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub body: ErrorBody,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            body: ErrorBody::new(code, message),
        }
    }

    pub fn with_active(mut self, url: Option<String>) -> ApiError {
        self.body.active = url;
        self
    }

    pub fn code(&self) -> ErrorCode {
        self.body.error
    }
}

impl From<WriteError> for ApiError {
    fn from(e: WriteError) -> ApiError {
        match e {
            WriteError::NotWritable(m) => ApiError::new(ErrorCode::NotWritable, m),
            WriteError::Indeterminate(m) => ApiError::new(ErrorCode::OutcomeUnknown, m),
            WriteError::Storage(m) => ApiError::new(ErrorCode::Storage, m),
            WriteError::NoSyncStandby(m) => ApiError::new(ErrorCode::NoSyncStandby, m),
            WriteError::Overloaded(m) => ApiError::new(ErrorCode::Overloaded, m),
        }
    }
}

impl From<NotActive> for ApiError {
    fn from(e: NotActive) -> ApiError {
        let active = match &e {
            NotActive::Standby { active_url, .. } => active_url.clone(),
            _ => None,
        };
        ApiError::new(ErrorCode::NotWritable, e.to_string()).with_active(active)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.body.error.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let active = self.body.active.clone();
        let mut resp = (status, Json(self.body)).into_response();
        if let Some(url) = active.and_then(|u| HeaderValue::from_str(&u).ok()) {
            resp.headers_mut().insert("x-active-url", url);
        }
        resp
    }
}

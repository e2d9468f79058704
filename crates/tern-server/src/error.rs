//! The one error type of the server's request paths, and its mapping to wire codes and HTTP
//! statuses — in one place, so the socket and REST always agree.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tern_proto::ErrorCode;

use crate::store::StoreError;

/// A request failed. Carries a stable code and a sentence for humans.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    /// Stable code.
    pub code: ErrorCode,
    /// What went wrong.
    pub message: String,
    /// For `rate_limited`: when to try again, in seconds (sent as `Retry-After`).
    pub retry_after_secs: Option<u64>,
}

impl Error {
    /// An error with a code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), retry_after_secs: None }
    }

    /// The same error, telling the client when to retry (`Retry-After` on REST).
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    /// `bad_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    /// `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    /// `forbidden`.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }

    /// `unauthorized`.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthorized, message)
    }

    /// The HTTP status for this error's code.
    pub fn status(&self) -> StatusCode {
        match self.code {
            ErrorCode::BadRequest | ErrorCode::UnknownOp => StatusCode::BAD_REQUEST,
            ErrorCode::WeakPassword => StatusCode::BAD_REQUEST,
            ErrorCode::FrameTooLarge | ErrorCode::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden | ErrorCode::Blocked | ErrorCode::NotFriends | ErrorCode::Muted => {
                StatusCode::FORBIDDEN
            }
            ErrorCode::RecallExpired | ErrorCode::GroupFull => StatusCode::CONFLICT,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::Conflict => StatusCode::CONFLICT,
            ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(m) => Error::new(ErrorCode::Conflict, m),
            StoreError::Denied(e) => e,
            StoreError::Closed => Error::new(ErrorCode::Unavailable, "the server is shutting down"),
            StoreError::Unavailable(m) => {
                tracing::error!(error = %m, "storage unavailable");
                Error::new(
                    ErrorCode::Unavailable,
                    "storage cannot take writes right now (disk full or failing); the request was not applied, retry later",
                )
                .retry_after(5)
            }
            StoreError::Backend(m) => {
                tracing::error!(error = %m, "store failure");
                Error::new(ErrorCode::Internal, "storage failure; the request was not applied, retry it")
            }
        }
    }
}

/// REST error body: `{"error": {"code": "...", "message": "..."}}`.
impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": { "code": self.code, "message": self.message } });
        let mut resp = (self.status(), axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after_secs {
            resp.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from(secs));
        }
        resp
    }
}

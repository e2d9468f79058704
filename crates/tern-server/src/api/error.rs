//! How a request error reads over HTTP: its status and the `{"error": {"code", "message"}}`
//! body, with `Retry-After` when the error says when to retry.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tern_proto::ErrorCode;

use crate::error::Error;

/// The HTTP status for an error code.
pub fn status(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::BadRequest | ErrorCode::UnknownOp => StatusCode::BAD_REQUEST,
        ErrorCode::WeakPassword => StatusCode::BAD_REQUEST,
        ErrorCode::FrameTooLarge | ErrorCode::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorCode::Forbidden | ErrorCode::Blocked | ErrorCode::NotFriends | ErrorCode::Muted => StatusCode::FORBIDDEN,
        ErrorCode::RecallExpired | ErrorCode::GroupFull => StatusCode::CONFLICT,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::Conflict => StatusCode::CONFLICT,
        ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        // tus 1.0's checksum extension: 460 Checksum Mismatch.
        ErrorCode::ChecksumMismatch => StatusCode::from_u16(460).unwrap_or(StatusCode::BAD_REQUEST),
        ErrorCode::Locked => StatusCode::LOCKED,
    }
}

/// REST error body: `{"error": {"code": "...", "message": "..."}}`.
impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": { "code": self.code, "message": self.message } });
        let mut resp = (status(self.code), axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after_secs {
            resp.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from(secs));
        }
        resp
    }
}

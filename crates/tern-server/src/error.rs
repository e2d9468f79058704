//! The error of the server's request paths: a stable wire code, a sentence for humans and,
//! for retryable refusals, when to retry. A leaf: logic and the gateway return it, the store
//! carries its rules' refusals in it, and only `api/` turns it into an HTTP response
//! (`api/error.rs`), so the socket and REST always agree on the code.

use tern_proto::ErrorCode;

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
}

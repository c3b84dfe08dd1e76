//! What a request can fail with, and the HTTP status each failure is
//! answered with: the caller's mistakes are 4xx with a sentence saying what
//! was wrong; only a ledger that cannot be read is a 5xx.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

/// A failed request. Every variant's message names what was being done and
/// to what (which world, run or parameter).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebError {
    /// A parameter that does not parse or is out of range (400).
    #[error("{0}")]
    BadRequest(String),
    /// No such world or run (404).
    #[error("{0}")]
    NotFound(String),
    /// An action without a token (401).
    #[error(
        "this action needs the dashboard's token (an `Authorization: Bearer TOKEN` header; `autoresearch serve` prints it)"
    )]
    Unauthorized,
    /// An action with a wrong token, or on a read-only dashboard (403).
    #[error("{0}")]
    Forbidden(String),
    /// An action the ledger refuses as asked (a run without a commit, a
    /// taken fork name, an unknown run): 409.
    #[error("{0}")]
    Conflict(String),
    /// The ledger could not be read or written (503: the server is fine,
    /// the file is not).
    #[error("{doing}: {message}")]
    Ledger {
        /// What was being done, and to which world.
        doing: String,
        /// The ledger's error.
        message: String,
    },
    /// A failure of the server itself (a task that did not finish): 500.
    #[error("{0}")]
    Internal(String),
}

impl WebError {
    /// A ledger error while `doing` something.
    pub fn ledger(doing: impl Into<String>, e: impl std::fmt::Display) -> WebError {
        WebError::Ledger {
            doing: doing.into(),
            message: e.to_string(),
        }
    }

    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            WebError::BadRequest(_) => StatusCode::BAD_REQUEST,
            WebError::NotFound(_) => StatusCode::NOT_FOUND,
            WebError::Unauthorized => StatusCode::UNAUTHORIZED,
            WebError::Forbidden(_) => StatusCode::FORBIDDEN,
            WebError::Conflict(_) => StatusCode::CONFLICT,
            WebError::Ledger { .. } => StatusCode::SERVICE_UNAVAILABLE,
            WebError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// Errors answer in JSON (`{"error": ..., "status": ...}`): the dashboard's
/// script and API clients read it, and a browser shows it legibly.
impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!("{self}");
        }
        let body = serde_json::json!({ "error": self.to_string(), "status": status.as_u16() });
        let mut resp = (status, axum::Json(body)).into_response();
        if matches!(self, WebError::Unauthorized) {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        resp
    }
}

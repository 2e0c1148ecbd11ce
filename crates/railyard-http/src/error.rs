//! The one error shape of every route: a status and `{"error", "detail", "path"}` saying what
//! is wrong, where, and what to do.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An HTTP error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiError {
    /// The status code.
    #[serde(skip)]
    pub status: u16,
    /// What is wrong, in a few words.
    pub error: String,
    /// Details and what to do.
    pub detail: String,
    /// Where: a key path, header or field; empty when it is the whole request.
    pub path: String,
}

impl ApiError {
    /// An error with `status`.
    pub fn new(
        status: StatusCode,
        error: impl Into<String>,
        detail: impl Into<String>,
        path: impl Into<String>,
    ) -> ApiError {
        ApiError {
            status: status.as_u16(),
            error: error.into(),
            detail: detail.into(),
            path: path.into(),
        }
    }

    /// 400: the request cannot be parsed.
    pub fn malformed(detail: impl Into<String>, path: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "malformed request", detail, path)
    }

    /// 401: no valid credentials.
    pub fn unauthenticated(detail: impl Into<String>, path: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", detail, path)
    }

    /// 403: authenticated but the role is missing.
    pub fn forbidden(detail: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "role missing",
            detail,
            "Authorization",
        )
    }

    /// 403: authenticated, with the role, but a rule refuses this identity this action;
    /// `rule` names it in a few words (`requester cannot approve`).
    pub fn refused(rule: impl Into<String>, detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, rule, detail, "Authorization")
    }

    /// 404: nothing there.
    pub fn not_found(detail: impl Into<String>, path: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not found", detail, path)
    }

    /// 409: the target's state forbids it.
    pub fn conflict(detail: impl Into<String>, path: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, "conflict", detail, path)
    }

    /// 413: over the size limit.
    pub fn too_large(limit: usize) -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request too large",
            format!(
                "the body is over the limit of {limit} bytes: send a smaller body or raise the limit"
            ),
            "",
        )
    }

    /// 422: parsed but semantically invalid.
    pub fn invalid(detail: impl Into<String>, path: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", detail, path)
    }

    /// 503: a dependency (NATS) is not reachable; retry later.
    pub fn unavailable(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", detail, "")
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status, self.error, self.detail)?;
        if !self.path.is_empty() {
            write!(f, " (at {})", self.path)?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status(), Json(self)).into_response()
    }
}

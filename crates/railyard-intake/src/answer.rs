//! What intake answers (INTERFACES §6): `202 {"outcome", "reason", "event_id"}` for accepted,
//! ignored and duplicate inputs, and a [`Refused`] with its status and `{error, detail, path}`
//! otherwise; both render for HTTP and as the NATS reply `{"status": ..., ...}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use railyard_http::ApiError;
use serde::Serialize;
use uuid::Uuid;

/// What became of an input that was not refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Recorded in the event stream.
    Accepted,
    /// Valid but nothing Railyard acts on; `reason` says why.
    Ignored,
    /// Seen before, stored once: the same delivery id as a signal still in the stream, or as
    /// another input within 7 days.
    Duplicate,
}

impl Outcome {
    /// The outcome's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Ignored => "ignored",
            Outcome::Duplicate => "duplicate",
        }
    }
}

/// A `202` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Answer {
    /// What became of the input.
    pub outcome: Outcome,
    /// Why, in words.
    pub reason: String,
    /// The event recorded, when one was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<Uuid>,
}

impl Answer {
    /// An accepted input, recorded as `event_id`.
    pub fn accepted(event_id: Uuid, reason: impl Into<String>) -> Answer {
        Answer {
            outcome: Outcome::Accepted,
            reason: reason.into(),
            event_id: Some(event_id),
        }
    }

    /// An input Railyard does not act on.
    pub fn ignored(reason: impl Into<String>) -> Answer {
        Answer {
            outcome: Outcome::Ignored,
            reason: reason.into(),
            event_id: None,
        }
    }

    /// A redelivery.
    pub fn duplicate(key: &str) -> Answer {
        Answer {
            outcome: Outcome::Duplicate,
            reason: format!("delivery {key} was already received; it is stored once"),
            event_id: None,
        }
    }

    /// The NATS reply: `{"status": 202, "outcome": ..., "reason": ..., "event_id": ...}`.
    pub fn to_reply(&self) -> serde_json::Value {
        let mut value = serde_json::to_value(self).unwrap_or_default();
        if let Some(object) = value.as_object_mut() {
            object.insert("status".into(), 202.into());
        }
        value
    }
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        (StatusCode::ACCEPTED, Json(self)).into_response()
    }
}

/// An input refused with a 4xx (or a 503 when NATS is unreachable): nothing reached the event
/// stream. 4xx refusals are recorded in the rejection log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub ApiError);

impl Refused {
    /// The status code.
    pub fn status(&self) -> u16 {
        self.0.status
    }

    /// Whether the sender is at fault (4xx) rather than Railyard's dependencies (5xx).
    pub fn is_client_error(&self) -> bool {
        (400..500).contains(&self.0.status)
    }

    /// 400.
    pub fn malformed(detail: impl Into<String>, path: impl Into<String>) -> Refused {
        Refused(ApiError::malformed(detail, path))
    }

    /// 401.
    pub fn unauthenticated(detail: impl Into<String>, path: impl Into<String>) -> Refused {
        Refused(ApiError::unauthenticated(detail, path))
    }

    /// 413.
    pub fn too_large(limit: usize) -> Refused {
        Refused(ApiError::too_large(limit))
    }

    /// 422.
    pub fn invalid(detail: impl Into<String>, path: impl Into<String>) -> Refused {
        Refused(ApiError::invalid(detail, path))
    }

    /// 409.
    pub fn conflict(detail: impl Into<String>, path: impl Into<String>) -> Refused {
        Refused(ApiError::conflict(detail, path))
    }

    /// 503.
    pub fn unavailable(detail: impl Into<String>) -> Refused {
        Refused(ApiError::unavailable(detail))
    }

    /// The NATS reply: `{"status": 422, "error": ..., "detail": ..., "path": ...}`.
    pub fn to_reply(&self) -> serde_json::Value {
        let mut value = serde_json::to_value(&self.0).unwrap_or_default();
        if let Some(object) = value.as_object_mut() {
            object.insert("status".into(), self.0.status.into());
        }
        value
    }
}

impl From<ApiError> for Refused {
    fn from(error: ApiError) -> Refused {
        Refused(error)
    }
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        self.0.into_response()
    }
}

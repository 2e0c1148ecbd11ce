//! [`AuditError`], what the audit library returns; the HTTP layer maps it to a status.

use railyard_bus::BusError;
use railyard_store::{RunError, StoreError};

/// Why an audit operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Following or replaying the stream failed.
    #[error(transparent)]
    Run(#[from] RunError),
    /// The bus failed.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// A stored record or index entry does not decode.
    #[error(
        "stored audit data at {key} does not decode: run `railyard audit verify`, then `railyard audit rebuild`"
    )]
    Corrupt {
        /// Which key.
        key: String,
        /// What serde said.
        #[source]
        source: serde_json::Error,
    },
    /// A query parameter is wrong.
    #[error("{field}: {problem}")]
    InvalidQuery {
        /// The parameter.
        field: &'static str,
        /// What is wrong and what to do.
        problem: String,
    },
    /// The thing asked for does not exist.
    #[error("{0}")]
    NotFound(String),
}

impl AuditError {
    pub(crate) fn invalid(field: &'static str, problem: impl Into<String>) -> AuditError {
        AuditError::InvalidQuery {
            field,
            problem: problem.into(),
        }
    }
}

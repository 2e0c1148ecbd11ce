//! [`AuditError`], what the audit library returns; the HTTP layer maps it to a status.

use railyard_bus::{AppendError, BusError};
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
    /// A setting (an environment variable) has a value it cannot take.
    #[error("{name}={value:?}: {problem}")]
    Setting {
        /// The setting.
        name: &'static str,
        /// The value given.
        value: String,
        /// What is wrong and what to do.
        problem: String,
    },
    /// The thing asked for does not exist.
    #[error("{0}")]
    NotFound(String),
    /// Appending a checkpoint failed.
    #[error(transparent)]
    Append(#[from] AppendError),
    /// The sealer would not sign: says why and what to do.
    #[error("{0}")]
    Seal(String),
    /// The signing key or a public key cannot be used.
    #[error(transparent)]
    Key(#[from] crate::seal::KeyError),
    /// An export file cannot be read or written.
    #[error("{path}: cannot {action} the export")]
    Export {
        /// The file.
        path: String,
        /// Read or write.
        action: &'static str,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
}

impl AuditError {
    pub(crate) fn invalid(field: &'static str, problem: impl Into<String>) -> AuditError {
        AuditError::InvalidQuery {
            field,
            problem: problem.into(),
        }
    }
}

//! Errors of starting and running intake (input refusals are [`crate::Refused`] answers,
//! not errors).

use std::path::PathBuf;

use railyard_bus::BusError;

/// A configuration intake cannot start with.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file could not be read.
    #[error("cannot read {path}: check the path and its permissions")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The catalog does not parse.
    #[error("catalog {path} is not valid")]
    Catalog {
        /// The file.
        path: PathBuf,
        /// What is wrong, with its key path.
        source: railyard_core::ParseError,
    },
    /// The tokens file does not parse.
    #[error("{path}")]
    Tokens {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: railyard_http::TokensError,
    },
    /// `RAILYARD_INTAKE_BODY_LIMIT` is not a number.
    #[error("RAILYARD_INTAKE_BODY_LIMIT={value:?} is not a number of bytes: set it like 1048576")]
    BodyLimit {
        /// The value given.
        value: String,
    },
    /// `RAILYARD_TRUSTED_PROXIES` does not parse.
    #[error("RAILYARD_TRUSTED_PROXIES")]
    TrustedProxies(#[source] railyard_http::TrustedProxiesError),
    /// A rejection sampling rate does not parse.
    #[error("{variable}: {problem}")]
    Rate {
        /// The variable.
        variable: &'static str,
        /// What is wrong and how to write it.
        problem: String,
    },
}

/// Intake stopped.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// NATS failed (at start, or the subscription broke).
    #[error("intake lost nats")]
    Bus(#[from] BusError),
    /// The request/reply subscription could not be made.
    #[error("cannot subscribe to {subject}: check the nats user's permissions for it")]
    Subscribe {
        /// The subject.
        subject: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The subscription ended while intake was still meant to run.
    #[error("the subscription to {subject} ended: nats closed the connection; restart intake")]
    SubscriptionEnded {
        /// The subject.
        subject: String,
    },
}

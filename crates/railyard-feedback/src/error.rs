//! Why a feedback service stops. What GitHub or a CDEvents sink refuses is not an error of the
//! service: it is logged and counted, and the service goes on.

use railyard_bus::BusError;
use railyard_store::StoreError;

/// Why [`github::run`](crate::github::run) or [`cdevents::run`](crate::cdevents::run)
/// returned an error.
#[derive(Debug, thiserror::Error)]
pub enum FeedbackError {
    /// The configuration cannot work.
    #[error("{0}")]
    Config(String),
    /// The ledger failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// NATS failed.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// The ledger holds a record the service cannot read.
    #[error(
        "the ledger holds an unreadable {what}: {detail} (stop the service, move its store directory away and start it again)"
    )]
    Ledger {
        /// Which record.
        what: String,
        /// Why.
        detail: String,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the http client: {0}")]
    Http(#[source] reqwest::Error),
}

impl FeedbackError {
    /// Whether waiting may mend it: NATS did not answer or failed on the way
    /// ([`BusError::is_transient`]). The service that runs it starts it again after a pause
    /// on such a failure, and ends on any other.
    pub fn is_transient(&self) -> bool {
        matches!(self, FeedbackError::Bus(error) if error.is_transient())
    }
}

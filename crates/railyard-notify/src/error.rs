//! Why the notifier stops. Slack's own refusals are not errors of the notifier: they are
//! logged and dead-lettered, and the notifier goes on.

use railyard_bus::BusError;
use railyard_store::StoreError;

/// Why [`run`](crate::run) returned an error.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The configuration cannot work.
    #[error("notifier configuration: {0}")]
    Config(String),
    /// The ledger failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// NATS failed.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// The ledger holds a record the notifier cannot read.
    #[error(
        "the notifier's ledger holds an unreadable {what}: {detail} (stop the notifier, move its store directory away and start it again)"
    )]
    Ledger {
        /// Which record.
        what: String,
        /// Why.
        detail: String,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the http client for slack")]
    Http(#[source] reqwest::Error),
}

impl NotifyError {
    /// Whether waiting may mend it: NATS did not answer or failed on the way
    /// ([`BusError::is_transient`]). The service that runs the notifier starts it again
    /// after a pause on such a failure, and ends on any other.
    pub fn is_transient(&self) -> bool {
        matches!(self, NotifyError::Bus(error) if error.is_transient())
    }
}

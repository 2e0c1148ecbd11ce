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

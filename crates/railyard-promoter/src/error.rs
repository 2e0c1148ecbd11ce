//! The promoter's errors: why a worker stopped ([`PromoterError`]).

use railyard_core::ReleaseId;

/// Why a promotion worker stopped.
#[derive(Debug, thiserror::Error)]
pub enum PromoterError {
    /// The configuration cannot work.
    #[error("promoter configuration: {0}")]
    Config(String),
    /// The read model failed.
    #[error(transparent)]
    Store(#[from] railyard_store::StoreError),
    /// Following the stream failed.
    #[error(transparent)]
    Run(#[from] railyard_store::RunError),
    /// NATS failed.
    #[error(transparent)]
    Bus(#[from] railyard_bus::BusError),
    /// Recording a decision failed for another reason than a conflict.
    #[error(transparent)]
    Append(#[from] railyard_bus::AppendError),
    /// A release's events do not fold.
    #[error(
        "release {release} does not fold ({source}): its events break the release rules; inspect them with the audit log"
    )]
    Fold {
        /// The release.
        release: ReleaseId,
        /// Why.
        source: railyard_core::TransitionError,
    },
    /// A task of the worker ended unexpectedly.
    #[error("promoter task {task} ended unexpectedly: {detail}")]
    Task {
        /// Which task.
        task: &'static str,
        /// What happened.
        detail: String,
    },
}

impl PromoterError {
    /// Whether waiting may mend it: NATS did not answer or failed on the way
    /// ([`railyard_bus::BusError::is_transient`]), directly or while following the stream.
    pub fn is_transient(&self) -> bool {
        match self {
            PromoterError::Bus(error) => error.is_transient(),
            PromoterError::Append(error) => error.is_transient(),
            PromoterError::Run(railyard_store::RunError::Bus(error)) => error.is_transient(),
            _ => false,
        }
    }
}

//! Railyard's domain, with no IO: validated names, the contract model, the catalog, release
//! and inventory files, the plan as data, the event catalog and the release aggregate's fold.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod audit;
pub mod authority;
pub mod catalog;
#[cfg(feature = "clock")]
pub mod clock;
pub mod contract;
pub mod duration;
pub mod event;
pub mod inventory;
pub mod names;
pub mod parse;
pub mod plan;
pub mod redact;
pub mod release;
pub mod release_state;
pub mod schema;
pub mod step;

pub use catalog::Catalog;
#[cfg(feature = "clock")]
pub use clock::{Clock, ManualClock, SharedClock, SystemClock};
pub use contract::{Range, Version};
pub use event::{AggregateId, Envelope, Event};
pub use inventory::Inventory;
pub use names::{ApiName, DatabaseName, EnvName, QueueName, ReleaseId, ServiceName};
pub use parse::ParseError;
pub use plan::{Action, Edge, ExternalEdge, Plan, Refusal, Step, StepId};
pub use release::{Change, Migration, ReleaseFile, check_artifact, check_version};
pub use release_state::{ReleaseState, Status, TransitionError};

//! The only crate that touches sled: read models (projections) of the event stream, each in
//! its own sled tree, with the last applied stream sequence committed in the same atomic
//! batch as the writes it caused, so a redelivery, a replay or a crash applies nothing twice
//! and loses nothing half-way. [`run_projection`] drives a projection from the bus;
//! [`rebuild`] drops it and replays the stream into it. A store whose sled log was damaged
//! and cut short on disk says so when a projection opens ([`ProjectionStore::cut_short`]).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod error;
pub mod key;
mod layout;
mod marks;
mod projection;
mod run;
mod store;

pub use error::{BoxError, ProjectionError, StoreError, display_key};
pub use key::{KeyBuf, KeyError, KeyReader, u64_from_key, u64_key};
pub use projection::{Applied, Entry, Projection, Update};
pub use run::{BatchApplied, Progress, RunError, RunOptions, RunReport, rebuild, run_projection};
pub use store::{CutShort, DEFAULT_CACHE_CAPACITY, ProjectionStore, Store, StoreConfig};

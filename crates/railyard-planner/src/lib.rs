//! Railyard's planner service: the NATS/sled shell around the pure planning core
//! (`railyard-plan`), which it re-exports so callers of the service need one crate.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod service;

pub use railyard_plan::*;

//! Railyard's planning core: catalog + release + inventory (+ the releases already in flight)
//! in, an explained plan or an explained refusal out (INTERFACES §2, §11).
//!
//! The crate is pure: no IO, no clock, no NATS, sled or tokio (the tidy test in
//! `crates/railyard-core/tests/tidy.rs` checks its dependency tree). The planner service
//! (`railyard-planner`) is the IO shell around it. [`plan`] derives every step of a release
//! per environment, adds the edges the named rules require so that *every* topological order
//! keeps the safety invariant, and refuses — with every reason and its remedy — when no order
//! can. [`revalidate`] answers, before an environment or a migration, whether the rest of a
//! plan is still safe against what runs now. [`render`] and [`render_refusals`] print plans
//! and refusals as text, JSON, Mermaid or DOT, byte-identical for the same input.
//!
//! The rules are described with examples in `docs/planning-rules.md`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod analysis;
mod estate;
mod fix;
mod graph;
mod input;
mod planning;
mod refusal;
mod render;
mod revalidate;
mod rollback;
mod rule;

pub use fix::{ContractKey, Fix, Remedy, apply_fixes};
pub use input::{InFlight, PlanInput};
pub use planning::plan;
pub use refusal::{Refusals, Refused};
pub use render::{Format, UnknownFormat, render, render_refusals};
pub use revalidate::revalidate;
pub use rollback::{LiveEnv, contract_breaks};
pub use rule::Rule;

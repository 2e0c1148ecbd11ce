//! The audit projection and the read side (issue 5): every event of `RAILYARD_EVENTS`
//! becomes one hash-chained record in sled, indexed by release, service, environment, actor,
//! type and time; release status and live events (SSE) for operators; compliance queries and
//! the production change report for auditors; and `verify`, which names the first record that
//! was altered, removed or reordered, or the first stream event without one. The service
//! seals its chain as signed checkpoints appended to the stream (`seal.rs`, `sealer.rs`);
//! `export.rs` writes the record as a file and verifies such a file with only a public key.
//!
//! Wiring (the binary does this): open an [`Audit`] with an [`AuditConfig`], serve
//! [`router`] (merged with the ops routes), and spawn [`Audit::run`]. The `railyard audit ...`
//! and `railyard release status|watch` subcommands are the binary's (`crates/railyard`).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod console_api;
pub mod dora;
mod error;
pub mod export;
pub mod format;
mod http;
pub mod items;
mod keys;
mod projection;
pub mod queries;
mod query;
pub mod record;
pub mod releases;
pub mod report;
pub mod seal;
pub mod sealer;
mod service;
pub mod status;
pub mod verify;

pub use console_api::{PREVIEW_BURST, PREVIEW_REFILL, console_routes};
pub use error::AuditError;
pub use http::{DEFAULT_LIMIT, router};
pub use projection::{AuditProjection, Deployment, Head, PROJECTION_NAME};
pub use query::{Filter, MAX_LIMIT, Page, Reader, parse_time};
pub use seal::{AuditKey, Keys, PublicKey, SealSummary};
pub use sealer::SealConfig;
pub use service::{
    Audit, AuditConfig, DEFAULT_CACHE_MB, MAX_CACHE_MB, open_store, open_store_with_cache,
    parse_cache_mb, run,
};
pub use verify::{
    Problem, ProblemKind, StoreCutShort, VerifyReport, verify, verify_live, verify_live_signed,
    verify_signed,
};

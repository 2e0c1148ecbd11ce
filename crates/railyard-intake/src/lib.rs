//! Trigger intake, the front door for CI systems and operators: CDEvents (v0.4.1 and v0.5.1)
//! over the CloudEvents HTTP binding and NATS request/reply, GitHub and GitLab webhooks, and
//! release submissions. Inputs are authenticated, validated against the official schemas,
//! de-duplicated by their delivery id, mapped to signal, inventory and incident events, and
//! turned into exactly one `release.requested` once a change (or a group of changes) is ready
//! (INTERFACES §6–§8). Refused inputs go to the rejection log, never to the event stream.
//!
//! The binary wires it: build an [`Intake`] from an [`IntakeConfig`] and a `Bus`, merge
//! [`router`] with `railyard_http::ops_router`, and run [`serve_nats`] beside it (or [`run`],
//! which does both halves' NATS part from a config).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod answer;
mod cdevents;
mod config;
mod error;
#[doc(hidden)]
pub mod fuzz;
mod github;
mod gitlab;
mod glob;
mod http;
mod intake;
mod mapped;
mod nats;
pub mod policy;
mod sample;
mod schemas;

pub use answer::{Answer, Outcome, Refused};
pub use config::{
    DEFAULT_BODY_LIMIT, DEFAULT_DELIVERY_CLAIM_TTL, IntakeConfig, REJECTION_SAMPLE_ENV,
    REJECTION_SAMPLE_TOTAL_ENV, Secret,
};
pub use error::{ConfigError, IntakeError};
pub use github::sign as github_signature;
pub use http::router;
pub use intake::{Door, Headers, Intake};
pub use nats::{INTAKE_SUBJECT, run, serve_nats};
pub use railyard_http::{Origin, TrustedProxies};
pub use sample::{Rate, RejectionSampling};

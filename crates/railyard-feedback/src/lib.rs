//! Railyard talking back to the tools teams already use, as two services that follow the
//! event stream like the Slack notifier — each with its own NATS user, its own ledger and its
//! own consumer name:
//!
//! - [`github`] (`railyard github`): GitHub Deployments, deployment statuses and commit
//!   statuses for releases whose changes come from GitHub repositories;
//! - [`cdevents`] (`railyard cdevents`): CDEvents (v0.4.1 or v0.5.1) for what Railyard does,
//!   over the CloudEvents HTTP binding and on a NATS subject.
//!
//! Both turn each stream message into a list of outside calls that depends only on their
//! views before the message, and record every call in their ledger ([`ledger`]) before the
//! next one, so a graceful restart repeats nothing and a crash at most the call in flight.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cdevents;
mod error;
mod follow;
pub mod github;
pub mod ledger;
mod retry;
mod secret;

pub use error::FeedbackError;
pub use follow::{Flow, History};
pub use retry::Backoff;
pub use secret::Secret;

//! Promotion workers (issue 6): carry a `release.planned` out step by step. Ready steps are
//! offered on `RAILYARD_WORK`; a worker takes one only by winning its lease (KV with TTL,
//! renewed on the clock while it runs) and appending `step.started` with optimistic
//! concurrency, so no step runs twice under two live workers and a dead worker's step is
//! resumed by another. Deploy adapters (`simulated`, `command`, `http`), gates (`http`,
//! `prometheus`, `command`, `soak`, `incident`), strategies (rolling, canary, blue-green),
//! the failure policies (`rollback`, `hold`), freeze windows, re-validation against the live inventory, and the
//! operator and approver routes (and approvals from Slack, [`slack`]) live here (their CLI is the binary's, `crates/railyard`).
//!
//! The binary wires [`run`] (a worker) and [`router`] (the routes of INTERFACES §6).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod adapter;
mod cache;
mod config;
mod ctx;
pub mod decide;
mod deployed;
mod dispatch;
mod error;
mod exec;
pub mod freeze;
pub mod gate;
pub mod inventory;
mod lease;
mod recorder;
mod retire;
mod revalidate;
mod rollback;
mod routes;
pub mod slack;
mod strategy;
mod verify;
pub mod view;
pub mod work;
mod worker;

pub use config::{Environment, PromoterConfig, Secrets};
pub use error::PromoterError;
pub use routes::{CommandAnswer, CommandBody, RouteState, router};
pub use worker::run;

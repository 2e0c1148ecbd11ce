//! Railyard's bus, the only crate that speaks NATS: the JetStream topology, the event store
//! (append with optimistic concurrency and dedupe, load), durable consumers with confirmed acks
//! and backoff, dead letters, the work queue, external delivery ids, leases, leader leases of
//! replicated services, the rejection log, and W3C trace context in headers.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod append;
mod bus;
mod config;
mod consumer;
mod direct;
mod dlq;
mod error;
mod kv;
mod lease;
pub mod names;
mod rejected;
mod requests;
mod tls;
mod topology;
mod trace;

pub use append::{Appended, Expected, Loaded, message_id};
pub use bus::Bus;
pub use config::{BusConfig, NatsCredentials};
pub use consumer::{ConsumerSpec, DeliverFrom, Delivery, EventConsumer, WorkConsumer, WorkItem};
pub use dlq::{DeadLetter, run_dlq_forwarder};
pub use error::{Actual, AppendError, BoxError, BusError, error_chain};
pub use kv::{ClaimedDelivery, DeliveryClaim, Lease, LeaseRecord};
pub use lease::{
    Campaign, DEFAULT_LEADER_TTL, HandoffWatch, LeaderConfig, LeaderLease, LeaderRecord,
    Leadership, default_replica_id,
};
pub use names::event_subject;
pub use rejected::{Rejection, StoredRejection};
pub use requests::{Request, Requests};
pub use tls::servers_without_tls;
pub use trace::{extract_trace, extract_trace_with, follow_trace, inject_context, inject_trace};

/// The NATS header map used by [`inject_trace`] and [`extract_trace`].
pub use async_nats::HeaderMap;

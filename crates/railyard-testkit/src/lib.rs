//! Real NATS for Railyard's tests: [`NatsServer`] runs one `nats-server -js` on a dynamic
//! loopback port with a temporary store, [`NatsCluster`] runs a 3-node JetStream cluster (also
//! from the production configurations in `deploy/nats/`, see [`deploy`]), both kill and reap
//! their processes on drop (started through `railyard-nats-server`, the one launcher of
//! `nats-server`, which `railyard dev` uses too), [`refusal`] asks whether a NATS user may use
//! a subject, [`TestTls`] makes the certificates the `deploy/nats` configurations need,
//! [`disk`] damages a store's files as a bad disk would, and [`standin`] serves stand-ins such
//! as Slack's Web API ([`SlackStandIn`]), and [`services`] runs Railyard's services as their
//! own processes on such a cluster. Every wait is bounded.
#![forbid(unsafe_code)]

mod cluster;
pub mod deploy;
pub mod disk;
mod permissions;
mod server;
pub mod services;
pub mod slack;
pub mod standin;
mod tls;
mod wait;

pub use cluster::NatsCluster;
pub use permissions::{Probe, refusal};
pub use railyard_nats_server::{NATS_SERVER_BIN, process_alive};
pub use server::{NatsServer, locate_nats_server};
pub use services::{Deployment, ServiceProcess, rss_anon_kib, vm_rss_kib};
pub use slack::{SlackCall, SlackStandIn, SlackThread};
pub use standin::{Served, serve};
pub use tls::TestTls;
pub use wait::{
    STARTUP_TIMEOUT, connect_options, wait_for_jetstream, wait_for_jetstream_as, wait_until,
};

//! How a service command runs as one of several replicas: its name among them and how long
//! its leader lease lasts (`railyard planner`, `railyard notify`, `railyard audit serve`).

use std::sync::Arc;
use std::time::Duration;

use railyard_bus::{LeaderConfig, default_replica_id};
use railyard_core::SharedClock;
use railyard_http::Metrics;

/// Flags of a service that runs as replicas, one leading.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplicaArgs {
    /// This replica's name among the service's replicas, unique (default: hostname-pid).
    #[arg(long, env = "RAILYARD_REPLICA_ID")]
    pub replica_id: Option<String>,
    /// How long the leader lease lasts without renewal (renewed every third of it): a standby
    /// takes over a leader that died within this time.
    #[arg(
        long,
        env = "RAILYARD_LEADER_TTL",
        default_value = "10s",
        value_parser = humantime::parse_duration
    )]
    pub leader_ttl: Duration,
}

impl ReplicaArgs {
    /// The campaign for `role`'s lease on `clock`, reporting to `railyard_leader{role}`.
    pub fn leader(&self, role: &str, clock: SharedClock, metrics: &Metrics) -> LeaderConfig {
        let gauge = metrics.leader(role);
        LeaderConfig {
            role: role.to_owned(),
            replica: self.replica_id.clone().unwrap_or_else(default_replica_id),
            ttl: self.leader_ttl,
            clock,
            on_change: Some(Arc::new(move |leading| {
                gauge.set(i64::from(leading));
            })),
        }
    }
}

//! `railyard planner`: the planner service on its own, against a NATS cluster — consumes
//! `release.requested`, appends `release.planned` or `release.rejected`; as one of several
//! replicas, only while it holds the planner's leader lease.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Flags of `railyard planner`.
#[derive(Debug, clap::Args)]
#[command(after_help = crate::env_help::SERVICE)]
pub struct PlannerArgs {
    /// The NATS server or cluster.
    #[arg(
        long,
        env = "RAILYARD_NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub nats_url: String,
    /// The catalog.
    #[arg(long, env = "RAILYARD_CATALOG", default_value = "railyard.toml")]
    pub catalog: PathBuf,
    /// Where the planner's read model lives.
    #[arg(long, default_value = ".railyard/planner")]
    pub store: PathBuf,
    /// HTTP listener for /healthz, /readyz, /metrics.
    #[arg(long, default_value = "127.0.0.1:7810")]
    pub listen: SocketAddr,
    /// Replicas: only the holder of the planner's leader lease decides.
    #[command(flatten)]
    pub replica: crate::replica::ReplicaArgs,
}

/// Runs the planner until Ctrl-C or SIGTERM.
pub async fn run(args: PlannerArgs) -> anyhow::Result<()> {
    crate::authority_cmd::setup("planner", Some(railyard_core::authority::Writer::Planner))?;
    let catalog = crate::dev::load_catalog(&args.catalog)?;
    let bus = crate::stack::connect(&args.nats_url).await?;
    let metrics = railyard_http::Metrics::default();
    let mut config = crate::stack::planner_config(catalog, args.store.clone());
    config.kept_store = Some(crate::stack::keep_store_open(&args.store).await?);
    let leader = args
        .replica
        .leader("planner", config.clock.clone(), &metrics);
    let (clock, task_metrics) = (config.clock.clone(), metrics.clone());
    crate::stack::run_one(
        "planner",
        bus,
        metrics,
        args.listen,
        clock,
        move |bus, stop| {
            crate::stack::planner_replica_task(
                config.clone(),
                Some(leader.clone()),
                &task_metrics,
                bus,
                stop,
            )
        },
    )
    .await
}

//! `railyard intake`: the front door on its own — CDEvents, GitHub and GitLab webhooks and
//! release submissions over HTTP, CloudEvents over NATS request/reply — plus the intake
//! building blocks `railyard dev` reuses.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use railyard_bus::Bus;
use railyard_core::SystemClock;
use railyard_intake::{Intake, IntakeConfig};

use crate::stack::Services;

/// Flags of `railyard intake`.
#[derive(Debug, clap::Args)]
#[command(after_help = crate::env_help::INTAKE)]
pub struct IntakeArgs {
    /// The NATS server or cluster.
    #[arg(
        long,
        env = "RAILYARD_NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub nats_url: String,
    /// The catalog (tokens and webhook secrets come from RAILYARD_TOKENS_FILE,
    /// RAILYARD_GITHUB_WEBHOOK_SECRET[_FILE] and RAILYARD_GITLAB_WEBHOOK_TOKEN[_FILE]).
    #[arg(long, env = "RAILYARD_CATALOG", default_value = "railyard.toml")]
    pub catalog: PathBuf,
    /// HTTP listener for the intake routes and /healthz, /readyz, /metrics.
    #[arg(long, default_value = "127.0.0.1:7800")]
    pub listen: SocketAddr,
}

/// Starts intake's NATS door as a task of `services` and returns its HTTP routes.
pub fn start(services: &mut Services, config: IntakeConfig, bus: Bus) -> axum::Router {
    let intake = Intake::new(config, bus);
    let routes = railyard_intake::router(intake.clone());
    let stop = services.shutdown();
    let serving = intake.clone();
    services.spawn_restarting("intake", SystemClock::shared(), move || {
        let serve = railyard_intake::serve_nats(serving.clone(), stop.clone());
        async move { serve.await.context("intake") }
    });
    routes
}

/// Runs intake until Ctrl-C or SIGTERM.
pub async fn run(args: IntakeArgs) -> anyhow::Result<()> {
    crate::authority_cmd::setup("intake", None)?;
    let config = IntakeConfig::from_env(&args.catalog)
        .with_context(|| args.catalog.display().to_string())?;
    let metrics = config.metrics.clone();
    let bus = crate::stack::connect(&args.nats_url).await?;
    let mut services = Services::new();
    let routes = start(&mut services, config, bus.clone());
    crate::stack::run_service("intake", services, bus, metrics, args.listen, routes).await
}

//! `railyard audit ...` and `railyard release ...`: the audit service on its own, its
//! offline tools and queries, and release submission (intake) with status and live watch
//! (audit) under one `release` command.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use railyard_bus::Bus;

use crate::services::Services;

/// `railyard audit ...`.
#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// Run the audit projection and its read routes against a NATS server or cluster.
    Serve(ServeArgs),
    #[command(flatten)]
    Tool(railyard_audit::cli::AuditCommand),
}

/// `railyard release ...`.
#[derive(Debug, Subcommand)]
pub enum ReleaseCmd {
    /// Submit a release file (TOML, or JSON by its .json extension) as your token's identity.
    Submit(railyard_intake::cli::ReleaseSubmitArgs),
    #[command(flatten)]
    Read(railyard_audit::cli::ReleaseCommand),
}

/// Flags of `railyard audit serve`.
#[derive(Debug, clap::Args)]
#[command(after_help = crate::env_help::SERVICE)]
pub struct ServeArgs {
    /// The NATS server or cluster.
    #[arg(
        long,
        env = "RAILYARD_NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub nats_url: String,
    /// Where the audit records live.
    #[arg(long, default_value = ".railyard/audit")]
    pub store: PathBuf,
    /// The tokens file (TOML of SHA-256 hashes, INTERFACES §7).
    #[arg(long, env = "RAILYARD_TOKENS_FILE")]
    pub tokens_file: Option<PathBuf>,
    /// HTTP listener for the read routes and /healthz, /readyz, /metrics.
    #[arg(long, default_value = "127.0.0.1:7813")]
    pub listen: SocketAddr,
}

/// Opens the audit store, starts its projection as a task of `services`, returns its routes.
pub async fn start(
    services: &mut Services,
    store: PathBuf,
    tokens: railyard_http::Tokens,
    metrics: railyard_http::Metrics,
    bus: Bus,
) -> anyhow::Result<axum::Router> {
    let mut config = railyard_audit::AuditConfig::new(store, tokens);
    config.run.progress = Some(crate::services::reader_progress(&metrics, "audit"));
    config.metrics = metrics;
    let audit = railyard_audit::Audit::open(config, bus, services.shutdown())
        .await
        .context("cannot open the audit store")?;
    let routes = railyard_audit::router(audit.clone());
    services.spawn("audit", async move { audit.run().await.context("audit") });
    Ok(routes)
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let tokens = crate::promoter_cmd::load_tokens(args.tokens_file.as_deref())?;
    let bus = crate::stack::connect(&args.nats_url).await?;
    let metrics = railyard_http::Metrics::default();
    let mut services = Services::new();
    let routes = start(
        &mut services,
        args.store.clone(),
        tokens,
        metrics.clone(),
        bus.clone(),
    )
    .await?;
    services.spawn_release_metrics(bus.clone(), metrics.clone());
    let app = railyard_http::ops_router(bus.clone(), metrics).merge(routes);
    services.serve_http(args.listen, app).await?;
    let result = services.run_until_signal().await;
    bus.close()
        .await
        .context("cannot flush and close the NATS connection")?;
    result
}

fn exit(code: u8) -> ExitCode {
    ExitCode::from(code)
}

/// Runs `railyard audit ...`.
pub async fn run_audit(command: AuditCmd) -> anyhow::Result<ExitCode> {
    match command {
        AuditCmd::Serve(args) => serve(args).await.map(|()| ExitCode::SUCCESS),
        AuditCmd::Tool(tool) => {
            let mut out = std::io::stdout();
            Ok(exit(railyard_audit::cli::run_audit(tool, &mut out).await?))
        }
    }
}

/// Runs `railyard release ...`.
pub async fn run_release(command: ReleaseCmd) -> anyhow::Result<ExitCode> {
    match command {
        ReleaseCmd::Submit(submit) => {
            println!("{}", submit.run().await?);
            Ok(ExitCode::SUCCESS)
        }
        ReleaseCmd::Read(read) => {
            let mut out = std::io::stdout();
            Ok(exit(
                railyard_audit::cli::run_release(read, &mut out).await?,
            ))
        }
    }
}

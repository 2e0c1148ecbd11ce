//! `railyard github` and `railyard cdevents`: the feedback services on their own, against a
//! NATS cluster, each as its own NATS user (`github`, `cdevents` in
//! `deploy/nats/accounts.conf`), configured by `RAILYARD_GITHUB_*` / `RAILYARD_CDEVENTS_*`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use railyard_feedback::cdevents::{self, CdeventsConfig};
use railyard_feedback::github::{self, GithubConfig};

use railyard_core::SystemClock;

/// Flags of `railyard github`.
#[derive(Debug, clap::Args)]
#[command(after_help = crate::env_help::FEEDBACK)]
pub struct GithubArgs {
    /// The NATS server or cluster.
    #[arg(
        long,
        env = "RAILYARD_NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub nats_url: String,
    /// The catalog (each service's `match.repository` names its GitHub repository).
    #[arg(long, env = "RAILYARD_CATALOG", default_value = "railyard.toml")]
    pub catalog: PathBuf,
    /// Where its ledger of deployments and statuses lives.
    #[arg(long, default_value = ".railyard/github")]
    pub store: PathBuf,
    /// HTTP listener for /healthz, /readyz, /metrics.
    #[arg(long, default_value = "127.0.0.1:7815")]
    pub listen: SocketAddr,
}

/// Flags of `railyard cdevents`.
#[derive(Debug, clap::Args)]
#[command(after_help = crate::env_help::FEEDBACK)]
pub struct CdeventsArgs {
    /// The NATS server or cluster.
    #[arg(
        long,
        env = "RAILYARD_NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub nats_url: String,
    /// Where its ledger of what was emitted lives.
    #[arg(long, default_value = ".railyard/cdevents")]
    pub store: PathBuf,
    /// HTTP listener for /healthz, /readyz, /metrics.
    #[arg(long, default_value = "127.0.0.1:7816")]
    pub listen: SocketAddr,
}

/// Runs the GitHub write-back until Ctrl-C or SIGTERM.
pub async fn run_github(args: GithubArgs) -> anyhow::Result<()> {
    crate::authority_cmd::setup("github", None)?;
    let catalog = crate::dev::load_catalog(&args.catalog)?;
    let mut config = GithubConfig::from_env(catalog, args.store.clone())
        .context("the github write-back's settings")?
        .context("GitHub is not configured: set RAILYARD_GITHUB_TOKEN, RAILYARD_GITHUB_APP_ID with RAILYARD_GITHUB_APP_KEY_FILE, or RAILYARD_GITHUB_AUTH_FILE")?;
    let bus = crate::stack::connect(&args.nats_url).await?;
    let metrics = railyard_http::Metrics::default();
    config.metrics = Some(metrics.clone());
    config.kept_store = Some(crate::stack::keep_store_open(&args.store).await?);
    let clock = SystemClock::shared();
    crate::stack::run_one(
        "github",
        bus,
        metrics,
        args.listen,
        clock,
        move |bus, stop| {
            let run = github::run(config.clone(), bus, stop);
            async move { run.await.context("github write-back") }
        },
    )
    .await
}

/// Runs CDEvents out until Ctrl-C or SIGTERM.
pub async fn run_cdevents(args: CdeventsArgs) -> anyhow::Result<()> {
    crate::authority_cmd::setup("cdevents", None)?;
    let mut config = CdeventsConfig::from_env(args.store.clone())
        .context("CDEvents out's settings")?
        .context("CDEvents out has nowhere to go: set RAILYARD_CDEVENTS_SINK_URL or RAILYARD_CDEVENTS_SUBJECT")?;
    let bus = crate::stack::connect(&args.nats_url).await?;
    let metrics = railyard_http::Metrics::default();
    config.metrics = Some(metrics.clone());
    config.kept_store = Some(crate::stack::keep_store_open(&args.store).await?);
    let clock = SystemClock::shared();
    crate::stack::run_one(
        "cdevents",
        bus,
        metrics,
        args.listen,
        clock,
        move |bus, stop| {
            let run = cdevents::run(config.clone(), bus, stop);
            async move { run.await.context("CDEvents out") }
        },
    )
    .await
}

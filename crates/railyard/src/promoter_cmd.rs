//! `railyard promoter`: one promotion worker against a NATS server or cluster (run as many
//! as you like, on any machines), and the operator routes it serves.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use railyard_bus::Bus;
use railyard_core::{Catalog, SystemClock};
use railyard_promoter::{PromoterConfig, RouteState, Secrets};

use crate::stack::Services;

/// Flags of `railyard promoter`.
#[derive(Debug, clap::Args)]
#[command(after_help = crate::env_help::PROMOTER)]
pub struct PromoterArgs {
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
    /// Where this worker's read model lives (one per worker).
    #[arg(long, default_value = ".railyard/promoter")]
    pub store: PathBuf,
    /// This worker's id, unique among live workers (default: host name and process id).
    #[arg(long)]
    pub worker_id: Option<String>,
    /// The tokens file (TOML of SHA-256 hashes, INTERFACES §7) for the operator routes.
    #[arg(long, env = "RAILYARD_TOKENS_FILE")]
    pub tokens_file: Option<PathBuf>,
    /// HTTP listener for the operator routes and /healthz, /readyz, /metrics.
    #[arg(long, default_value = "127.0.0.1:7812")]
    pub listen: SocketAddr,
    /// How many bytes of the end of a command's output are kept (while it runs, and in its
    /// step event), secrets masked.
    #[arg(long, env = "RAILYARD_OUTPUT_TAIL_BYTES", default_value_t = OUTPUT_TAIL_BYTES)]
    pub output_tail_bytes: usize,
}

/// The default of `--output-tail-bytes`.
pub const OUTPUT_TAIL_BYTES: usize = 2048;

/// A worker id from the host name and the process id.
pub fn default_worker_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "host".into());
    format!("{host}-{}", std::process::id())
}

/// Reads the tokens file, or an empty table (every route then answers 401).
pub fn load_tokens(path: Option<&std::path::Path>) -> anyhow::Result<railyard_http::Tokens> {
    match path {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the tokens file {}", path.display()))?;
            railyard_http::Tokens::from_toml(&text).with_context(|| path.display().to_string())
        }
        None => Ok(railyard_http::Tokens::default()),
    }
}

/// A promotion worker as a service task, on `store` (kept open across its restarts).
pub fn promoter_task(
    catalog: Catalog,
    worker_id: String,
    store: railyard_store::Store,
    bus: Bus,
    metrics: Option<&railyard_http::Metrics>,
    output_tail_bytes: usize,
    shutdown: tokio_util::sync::CancellationToken,
) -> impl std::future::Future<Output = anyhow::Result<()>> + Send + use<> {
    let mut config = PromoterConfig::new(catalog, worker_id, store.path());
    config.kept_store = Some(store);
    config.output_tail_bytes = output_tail_bytes;
    config.secrets = Secrets::from_env();
    config.progress = metrics.map(|m| crate::stack::reader_progress(m, "promoter"));
    async move {
        railyard_promoter::run(config, bus, shutdown)
            .await
            .context("promoter")
    }
}

/// The operator and approver routes.
pub fn promoter_routes(bus: Bus, catalog: Catalog, tokens: railyard_http::Tokens) -> axum::Router {
    railyard_promoter::router(RouteState {
        bus,
        catalog: Arc::new(catalog),
        tokens,
        clock: SystemClock::shared(),
    })
}

/// Runs one worker until Ctrl-C or SIGTERM.
pub async fn run(args: PromoterArgs) -> anyhow::Result<()> {
    crate::authority_cmd::setup("promoter", Some(railyard_core::authority::Writer::Promoter))?;
    let catalog = crate::dev::load_catalog(&args.catalog)?;
    let tokens = load_tokens(args.tokens_file.as_deref())?;
    let worker_id = args.worker_id.clone().unwrap_or_else(default_worker_id);
    let bus =
        crate::stack::connect_named(&args.nats_url, &format!("railyard-promoter {worker_id}"))
            .await?;
    let mut services = Services::new();
    let metrics = railyard_http::Metrics::default();
    {
        let (catalog, store, bus, stop) = (
            catalog.clone(),
            crate::stack::keep_store_open(&args.store).await?,
            bus.clone(),
            services.shutdown(),
        );
        let (metrics, output_tail_bytes) = (metrics.clone(), args.output_tail_bytes);
        services.spawn_restarting("promoter", SystemClock::shared(), move || {
            promoter_task(
                catalog.clone(),
                worker_id.clone(),
                store.clone(),
                bus.clone(),
                Some(&metrics),
                output_tail_bytes,
                stop.clone(),
            )
        });
    }
    // Every promotion worker also copies dead letters into RAILYARD_DLQ (max-deliveries
    // advisories through one shared durable consumer: several forwarders split the work and
    // store each dead letter once), so `railyard dlq` sees them in production too.
    {
        let (bus, stop) = (bus.clone(), services.shutdown());
        services.spawn_restarting("dead-letters", SystemClock::shared(), move || {
            let run = railyard_bus::run_dlq_forwarder(bus.clone(), stop.clone().cancelled_owned());
            async move { run.await.context("dead-letter forwarder") }
        });
    }
    let routes = promoter_routes(bus.clone(), catalog, tokens);
    crate::stack::run_service("promoter", services, bus, metrics, args.listen, routes).await
}

/// Runs an operator command over HTTP and prints the answer to `out`.
pub async fn operator(
    command: crate::operator_cli::OperatorCommand,
    out: &mut (dyn std::io::Write + Send),
) -> anyhow::Result<u8> {
    let answer = crate::operator_cli::run(&command).await?;
    writeln!(out, "{}", answer.detail)?;
    Ok(0)
}

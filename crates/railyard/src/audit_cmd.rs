//! `railyard audit ...` and `railyard release ...`: the audit service on its own, its
//! offline tools and queries, and release submission (intake) with status and live watch
//! (audit) under one `release` command.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use railyard_bus::Bus;

use crate::stack::Services;

/// `railyard audit ...`.
#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// Run the audit projection and its read routes against a NATS server or cluster.
    Serve(ServeArgs),
    #[command(flatten)]
    Tool(crate::audit_cli::AuditCommand),
}

/// `railyard release ...`.
#[derive(Debug, Subcommand)]
pub enum ReleaseCmd {
    /// Submit a release file (TOML, or JSON by its .json extension) as your token's identity.
    Submit(crate::intake_cli::ReleaseSubmitArgs),
    #[command(flatten)]
    Read(crate::audit_cli::ReleaseCommand),
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
    /// The key that signs the checkpoints sealing the audit chain (created when absent,
    /// readable by its owner only; `railyard audit key` prints its public key) [default:
    /// audit-signing.key beside the store].
    #[arg(long, env = "RAILYARD_AUDIT_SIGNING_KEY")]
    pub signing_key: Option<PathBuf>,
    /// Seal the chain with a signed checkpoint every this many records.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub seal_every_records: u64,
    /// Also seal this often what arrived since the last checkpoint.
    #[arg(long, default_value = "1m", value_parser = humantime::parse_duration)]
    pub seal_every: Duration,
    /// The catalog: the console's plan preview plans with it, and the DORA metrics and the
    /// release page's banner name each service's owning team from it (without it, neither).
    #[arg(long, env = "RAILYARD_CATALOG")]
    pub catalog: Option<PathBuf>,
    /// The audit store's sled page cache, in MiB (the store grows with the history; pages
    /// that do not fit are read again through the file cache, which slows queries).
    #[arg(
        long,
        env = "RAILYARD_AUDIT_CACHE_MB",
        default_value_t = railyard_audit::DEFAULT_CACHE_MB,
        value_parser = clap::value_parser!(u64).range(1..=railyard_audit::MAX_CACHE_MB)
    )]
    pub cache_mb: u64,
    /// Replicas: every replica keeps its own record; only the holder of the audit-sealer
    /// leader lease seals.
    #[command(flatten)]
    pub replica: crate::replica::ReplicaArgs,
}

/// `audit-signing.key` in the directory that holds the store (for the default store,
/// `.railyard/audit-signing.key`, where `railyard audit key` looks).
fn key_beside(store: &std::path::Path) -> PathBuf {
    store.with_file_name("audit-signing.key")
}

/// How the audit service seals its chain: where its signing key is and how often.
#[derive(Debug, Clone)]
pub struct Sealing {
    /// The signing key file, created when absent.
    pub key_file: PathBuf,
    /// Seal every this many records.
    pub every_records: u64,
    /// And this often.
    pub every: Duration,
}

impl Sealing {
    /// For a store at `store` (as `railyard dev` and the demo run it): the key in
    /// `$RAILYARD_AUDIT_SIGNING_KEY`, else `audit-signing.key` beside the store; every 1,000
    /// records and every minute.
    pub fn beside(store: &std::path::Path) -> Sealing {
        Sealing {
            key_file: std::env::var_os("RAILYARD_AUDIT_SIGNING_KEY")
                .map(PathBuf::from)
                .unwrap_or_else(|| key_beside(store)),
            every_records: 1000,
            every: Duration::from_secs(60),
        }
    }

    /// Reads (or creates) the key; logs where it is and its public half, never the key.
    pub fn load(&self) -> anyhow::Result<railyard_audit::SealConfig> {
        let (key, created) = railyard_audit::AuditKey::load_or_create(&self.key_file)
            .context("cannot load the audit signing key")?;
        let public = key.public();
        if created {
            tracing::warn!(
                key_file = %self.key_file.display(),
                key_id = %public.id(),
                public_key = %public,
                "created a new audit signing key: keep this file (on storage that outlives the service, readable only by it) and give its public key to whoever verifies exports; checkpoints signed by an earlier key verify only with that key's public half"
            );
        } else {
            tracing::info!(
                key_file = %self.key_file.display(),
                key_id = %public.id(),
                public_key = %public,
                "audit checkpoints are signed with this key"
            );
        }
        Ok(railyard_audit::SealConfig {
            key,
            every_records: self.every_records,
            every: self.every,
        })
    }
}

/// Opens the audit store, starts its projection as a task of `services`, returns its routes
/// (the console's among them; its plan preview plans with `catalog`).
pub async fn start(
    services: &mut Services,
    config: railyard_audit::AuditConfig,
    bus: Bus,
    catalog: Option<railyard_core::Catalog>,
) -> anyhow::Result<axum::Router> {
    let audit = railyard_audit::Audit::open(config, bus, services.shutdown())
        .await
        .context("cannot open the audit store")?;
    let routes = railyard_audit::router(audit.clone())
        .merge(railyard_audit::console_routes(audit.clone(), catalog));
    services.spawn("audit", async move { audit.run().await.context("audit") });
    Ok(routes)
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    crate::authority_cmd::setup("audit", None)?;
    let tokens = crate::promoter_cmd::load_tokens(args.tokens_file.as_deref())?;
    let bus = crate::stack::connect(&args.nats_url).await?;
    let metrics = railyard_http::Metrics::default();
    let mut services = Services::new();
    let sealing = Sealing {
        key_file: args
            .signing_key
            .clone()
            .unwrap_or_else(|| key_beside(&args.store)),
        every_records: args.seal_every_records,
        every: args.seal_every,
    };
    let catalog = match &args.catalog {
        Some(path) => Some(crate::dev::load_catalog(path)?),
        None => None,
    };
    let mut config = railyard_audit::AuditConfig::new(args.store.clone(), tokens);
    config.run.progress = Some(crate::stack::reader_progress(&metrics, "audit"));
    config.metrics = metrics.clone();
    config.cache_mb = args.cache_mb;
    config.seal = Some(sealing.load()?);
    config.leader = Some(
        args.replica
            .leader("audit-sealer", config.clock.clone(), &metrics),
    );
    if let Some(catalog) = &catalog {
        config.owners = catalog
            .services
            .iter()
            .filter_map(|(name, service)| Some((name.to_string(), service.owner.clone()?)))
            .collect();
    }
    let routes = start(&mut services, config, bus.clone(), catalog).await?;
    crate::stack::run_service("audit", services, bus, metrics, args.listen, routes).await
}

/// Runs `railyard audit ...`; queries and tools print to `out`.
pub async fn run_audit(command: AuditCmd, out: &mut (dyn Write + Send)) -> anyhow::Result<u8> {
    match command {
        AuditCmd::Serve(args) => serve(args).await.map(|()| 0),
        AuditCmd::Tool(tool) => Ok(crate::audit_cli::run_audit(tool, out).await?),
    }
}

/// Runs `railyard release ...`, printing to `out`.
pub async fn run_release(command: ReleaseCmd, out: &mut (dyn Write + Send)) -> anyhow::Result<u8> {
    match command {
        ReleaseCmd::Submit(submit) => {
            writeln!(out, "{}", submit.run().await?)?;
            Ok(0)
        }
        ReleaseCmd::Read(read) => Ok(crate::audit_cli::run_release(read, out).await?),
    }
}

//! The NATS side of the stack, which every in-process command shares: the embedded `nats-server` (unless a URL
//! is given), a connected [`Bus`], the NATS user it connects as (from the environment), and
//! `railyard admin init`, which creates the streams and buckets that services only check.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use railyard_bus::{Bus, BusConfig, BusError, NatsCredentials};

use super::embedded_nats::EmbeddedNats;

/// How long the embedded NATS may take to start and to stop.
const NATS_STARTUP: Duration = Duration::from_secs(20);
const NATS_GRACE: Duration = Duration::from_secs(10);

/// The NATS user every command connects as (`deploy/nats/accounts.conf`).
pub const NATS_USER_ENV: &str = "RAILYARD_NATS_USER";
/// Its password.
pub const NATS_PASSWORD_ENV: &str = "RAILYARD_NATS_PASSWORD";
/// A file holding its password (for secrets mounted as files); wins over the variable.
pub const NATS_PASSWORD_FILE_ENV: &str = "RAILYARD_NATS_PASSWORD_FILE";
/// A PEM file of the CA that signed the NATS servers' certificates; with it, TLS is required.
pub const NATS_CA_ENV: &str = "RAILYARD_NATS_CA";

/// The NATS user and password from `RAILYARD_NATS_USER` and `RAILYARD_NATS_PASSWORD_FILE` or
/// `RAILYARD_NATS_PASSWORD`; `None` when no user is set.
pub fn credentials_from_env() -> anyhow::Result<Option<NatsCredentials>> {
    let Some(user) = std::env::var(NATS_USER_ENV)
        .ok()
        .filter(|user| !user.is_empty())
    else {
        return Ok(None);
    };
    let password = match std::env::var_os(NATS_PASSWORD_FILE_ENV).filter(|path| !path.is_empty()) {
        Some(path) => {
            let path = PathBuf::from(path);
            std::fs::read_to_string(&path)
                .with_context(|| {
                    format!(
                        "cannot read {NATS_PASSWORD_FILE_ENV}={}: point it at a readable file \
                         holding the password of nats user {user}",
                        path.display()
                    )
                })?
                .trim_end_matches(['\r', '\n'])
                .to_owned()
        }
        None => std::env::var(NATS_PASSWORD_ENV).with_context(|| {
            format!(
                "{NATS_USER_ENV}={user} is set but neither {NATS_PASSWORD_FILE_ENV} nor \
                 {NATS_PASSWORD_ENV}: set one of them to the password of nats user {user}"
            )
        })?,
    };
    Ok(Some(NatsCredentials { user, password }))
}

/// The CA certificate file from `RAILYARD_NATS_CA`, checked to be readable; `None` when unset.
pub fn tls_ca_from_env() -> anyhow::Result<Option<PathBuf>> {
    let Some(path) = std::env::var_os(NATS_CA_ENV).filter(|path| !path.is_empty()) else {
        return Ok(None);
    };
    let path = PathBuf::from(path);
    std::fs::metadata(&path).with_context(|| {
        format!(
            "cannot read {NATS_CA_ENV}={}: point it at the PEM certificate of the CA that \
             signed the nats servers' certificates",
            path.display()
        )
    })?;
    Ok(Some(path))
}

/// The bus configuration of a command: credentials and the CA to trust from the environment,
/// and whether it may create and change streams (`manage_topology`).
pub fn bus_config(manage_topology: bool) -> anyhow::Result<BusConfig> {
    Ok(BusConfig {
        manage_topology,
        credentials: credentials_from_env()?,
        tls_ca: tls_ca_from_env()?,
        ..BusConfig::default()
    })
}

/// Connects a service to NATS at `url` as the user in the environment and checks that
/// Railyard's streams and buckets exist, without creating or changing them: a service runs
/// as a least-privilege user, and the topology is `railyard admin init`'s job.
pub async fn connect(url: &str) -> anyhow::Result<Bus> {
    connect_with(url, bus_config(false)?).await
}

/// [`connect`], naming the connection `name` (what `nats-server`'s `/connz` and the server's
/// logs show, so an operator can tell which process a connection belongs to).
pub async fn connect_named(url: &str, name: &str) -> anyhow::Result<Bus> {
    let config = BusConfig {
        connection_name: name.to_owned(),
        ..bus_config(false)?
    };
    connect_with(url, config).await
}

/// How long a starting service keeps asking about the streams while NATS does not answer: a
/// cluster that has just lost a node answers again once it has elected new stream leaders.
/// The 30-minute chaos soak saw a worker started at a node loss get no answer for about 100 s
/// (each of the checks' requests timing out), and exit on the 30 s this once was; a missing
/// stream still ends it at once, saying to run `admin init`.
const TOPOLOGY_PATIENCE: Duration = Duration::from_secs(300);

async fn connect_with(url: &str, config: BusConfig) -> anyhow::Result<Bus> {
    let manage = config.manage_topology;
    let clock = config.clock.clone();
    let bus = Bus::connect(url, config)
        .await
        .context("cannot connect to NATS")?;
    let since = clock.now();
    let ensured = loop {
        match bus.ensure_topology().await {
            // No answer (a timeout, no responders, a stream without a leader) is not a missing
            // stream: ask again rather than tell the operator to run `admin init`.
            Err(error @ (BusError::Timeout { .. } | BusError::Nats { .. }))
                if (clock.now() - since).to_std().unwrap_or_default() < TOPOLOGY_PATIENCE =>
            {
                tracing::warn!(%error, "nats did not answer about Railyard's streams; asking again");
                clock.sleep(Duration::from_secs(1)).await;
            }
            other => break other,
        }
    };
    if let Err(error) = ensured {
        let _ = bus.close().await;
        return Err(error).context(if manage {
            "cannot create Railyard's streams and buckets (this needs a nats user allowed to \
             create streams, e.g. `admin` in deploy/nats/accounts.conf)"
        } else {
            "Railyard's streams and buckets are not in place: run `railyard admin init` once as \
             the nats admin user, then start the services"
        });
    }
    Ok(bus)
}

/// `railyard admin ...`.
#[derive(Debug, clap::Subcommand)]
pub enum AdminCmd {
    /// Create Railyard's streams and buckets, or update them to this version's configuration.
    /// Run it once per install and after upgrades, as a NATS user allowed to create streams;
    /// the services only check that they exist.
    Init(AdminInitArgs),
}

/// Flags of `railyard admin init`.
#[derive(Debug, clap::Args)]
pub struct AdminInitArgs {
    /// The NATS server or cluster (user and password from RAILYARD_NATS_USER and
    /// RAILYARD_NATS_PASSWORD[_FILE], or in the URL).
    #[arg(
        long,
        env = "RAILYARD_NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub nats_url: String,
    /// Replicas of every stream and bucket: 1 for a single server, 3 for a 3-node cluster.
    #[arg(long, env = "RAILYARD_NATS_REPLICAS", default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=5))]
    pub replicas: u8,
    /// Run against a server that does not use TLS (the admin password then crosses the network
    /// in clear): only for a server on this machine, such as a test server. Without it, a
    /// server without TLS is refused before anything is sent to it.
    #[arg(long)]
    pub insecure: bool,
}

/// Runs `railyard admin ...`.
pub async fn run_admin(command: AdminCmd) -> anyhow::Result<()> {
    match command {
        AdminCmd::Init(args) => {
            let replicas = usize::from(args.replicas);
            let config = BusConfig {
                event_stream_replicas: replicas,
                replicas,
                require_tls: !args.insecure,
                ..bus_config(true)?
            };
            if !args.insecure {
                refuse_plain_servers(&args.nats_url, config.request_timeout).await?;
            }
            let bus = connect_with(&args.nats_url, config).await?;
            bus.close()
                .await
                .context("cannot flush and close the NATS connection")?;
            println!(
                "railyard streams and buckets are in place ({replicas} replica{})",
                if replicas == 1 { "" } else { "s" }
            );
            Ok(())
        }
    }
}

/// Fails, naming them, when any server of `url` answers without requiring TLS.
async fn refuse_plain_servers(url: &str, timeout: Duration) -> anyhow::Result<()> {
    let plain = railyard_bus::servers_without_tls(url, timeout)
        .await
        .context("cannot check whether NATS uses TLS")?;
    if plain.is_empty() {
        return Ok(());
    }
    anyhow::bail!(
        "refusing to run admin init against nats at {}: the server does not use tls, so the admin \
         password would cross the network in clear; give nats-server a certificate (the `tls {{}}` \
         block of deploy/nats/single.conf or cluster-*.conf; see the README, \"Running across \
         machines\"), then connect with tls://host:4222 and {NATS_CA_ENV}=<the CA's certificate>, \
         or pass --insecure for a server on this machine",
        plain.join(", ")
    )
}

/// A connected bus, with the embedded server it runs on when there is one.
pub struct Nats {
    /// The bus, topology ensured.
    pub bus: Bus,
    /// The NATS URL in use.
    pub url: String,
    embedded: Option<EmbeddedNats>,
}

impl Nats {
    /// Connects to `nats_url`, or starts an embedded server storing under `data_dir`, as the
    /// bus `config` says (with `manage_topology`, the streams and buckets are created).
    pub async fn start(
        nats_url: Option<&str>,
        data_dir: &Path,
        nats_port: u16,
        config: BusConfig,
    ) -> anyhow::Result<Nats> {
        let embedded = match nats_url {
            Some(_) => None,
            None => Some(EmbeddedNats::start(data_dir, nats_port, NATS_STARTUP).await?),
        };
        let url = match (nats_url, &embedded) {
            (Some(url), _) => url.to_owned(),
            (None, Some(nats)) => nats.url(),
            (None, None) => unreachable!("an embedded server is started when no url is given"),
        };
        match connect_with(&url, config).await {
            Ok(bus) => Ok(Nats { bus, url, embedded }),
            Err(error) => {
                if let Some(nats) = embedded {
                    nats.shutdown(NATS_GRACE).await?;
                }
                Err(error)
            }
        }
    }

    /// The embedded server's process id, when there is one.
    pub fn nats_pid(&self) -> Option<u32> {
        self.embedded.as_ref().map(EmbeddedNats::pid)
    }

    /// Drains the connection (everything published is flushed), then stops and reaps the
    /// embedded server.
    pub async fn stop(self) -> anyhow::Result<()> {
        let closed = self
            .bus
            .close()
            .await
            .context("cannot flush and close the NATS connection");
        if let Some(nats) = self.embedded {
            nats.shutdown(NATS_GRACE).await?;
        }
        closed
    }
}

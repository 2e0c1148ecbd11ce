//! The one wiring of Railyard: what `railyard dev`, `railyard demo` and the scenario tests
//! (`tests/`) start, so the tests run what `dev` runs. [`StackConfig::new`] holds every
//! service's configuration with its defaults; callers change values (timings, tokens, the
//! listener, Slack), never the wiring; [`StackConfig::start`] then starts, in order:
//!
//! 1. NATS: an embedded `nats-server` ([`embedded_nats`]) or an external server, one
//!    connection (`Bus`) that every service shares, the topology ensured ([`nats`]);
//! 2. the inventory to record first, if any (`service.deployed` events);
//! 3. the tasks: the dead-letter forwarder, the planner, each promotion worker, the notifier
//!    (when Slack is configured), the release metrics, intake's NATS door, the audit
//!    projection, then every optional service ([`Optional`]);
//! 4. the routes, on one listener: ops (`/healthz`, `/readyz`, `/metrics`), intake, audit, the
//!    operator and approver routes, and the optional services' routes; plus any extra
//!    listener ([`Listener`], e.g. the example's health endpoints).
//!
//! [`Running::run_until_signal`] and [`Running::stop`] shut it down: the services first, then
//! the NATS connection is drained, then the embedded server is stopped and reaped.

pub mod embedded_nats;
pub mod feedback;
pub mod health;
mod nats;
pub mod services;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use futures::future::BoxFuture;
use railyard_bus::{Bus, BusConfig};
use railyard_core::{Catalog, Inventory, SharedClock, SystemClock};
use railyard_http::{Metrics, Tokens};
use tokio_util::sync::CancellationToken;

pub use nats::{
    AdminCmd, AdminInitArgs, NATS_CA_ENV, NATS_PASSWORD_ENV, NATS_PASSWORD_FILE_ENV, NATS_USER_ENV,
    Nats, bus_config, connect, connect_named, credentials_from_env, run_admin, tls_ca_from_env,
};
pub use services::{Services, reader_progress};

use crate::audit_cmd::Sealing;

/// Where NATS comes from.
#[derive(Debug, Clone)]
pub enum NatsSource {
    /// Start `nats-server` as a child storing under `<data_dir>/nats`, on this port (0 picks a
    /// free one).
    Embedded {
        /// The client port.
        port: u16,
    },
    /// Use the server (or cluster) at this URL as the stack's own.
    External(String),
}

/// An HTTP listener besides the main one.
pub struct Listener {
    /// What it serves, for messages.
    pub name: String,
    /// Where.
    pub addr: SocketAddr,
    /// What.
    pub router: axum::Router,
    /// When it cannot bind: fail the start (`true`) or warn and go on (`false`).
    pub required: bool,
}

/// What an optional service gets to start with: the shared connection, catalog, tokens and
/// metrics, its own store directory under the data directory, and the shutdown token.
pub struct ServiceContext {
    /// The shared NATS connection.
    pub bus: Bus,
    /// The catalog.
    pub catalog: Catalog,
    /// The tokens every route admits.
    pub tokens: Tokens,
    /// The process's metrics.
    pub metrics: Metrics,
    /// `<data_dir>/<name>`.
    pub store: PathBuf,
    /// Fires when the stack stops.
    pub shutdown: CancellationToken,
}

/// What an optional service starts: a task that runs until shutdown, and routes for the main
/// listener; either may be absent.
#[derive(Default)]
pub struct Started {
    /// The task.
    pub task: Option<BoxFuture<'static, anyhow::Result<()>>>,
    /// Its HTTP routes.
    pub routes: Option<axum::Router>,
}

/// A service the stack starts only when configured (an integration such as the GitHub or
/// CDEvents feedback): started after the core services, its task named `name`, its routes
/// merged into the main listener.
pub struct Optional {
    /// The task's name.
    pub name: String,
    /// Starts it.
    pub start: Box<dyn FnOnce(ServiceContext) -> anyhow::Result<Started> + Send>,
}

/// The Slack notifier's settings, when Slack is configured.
pub type NotifyConfig = railyard_notify::NotifyConfig;

/// Everything the stack starts, with the settings of each service.
pub struct StackConfig {
    /// Where NATS comes from.
    pub nats: NatsSource,
    /// The shared connection's settings (`manage_topology` creates the streams).
    pub bus: BusConfig,
    /// Where the embedded NATS and every read model keep their data.
    pub data_dir: PathBuf,
    /// The catalog every service uses.
    pub catalog: Catalog,
    /// The tokens every route admits (only their hashes).
    pub tokens: Tokens,
    /// The process's metrics, shared by every service.
    pub metrics: Metrics,
    /// The main HTTP listener.
    pub listen: SocketAddr,
    /// What runs now, recorded as `service.deployed` events (by `actor`) before the services
    /// start.
    pub inventory: Option<(Inventory, String)>,
    /// The planner.
    pub planner: railyard_planner::service::PlannerConfig,
    /// The promotion workers, one task each.
    pub workers: Vec<railyard_promoter::PromoterConfig>,
    /// Intake (HTTP and NATS).
    pub intake: railyard_intake::IntakeConfig,
    /// The audit projection and its routes.
    pub audit: railyard_audit::AuditConfig,
    /// How the audit chain is sealed (its key is read or created at start); `None` seals
    /// nothing.
    pub sealing: Option<Sealing>,
    /// The Slack notifier; `None` runs none.
    pub notify: Option<NotifyConfig>,
    /// Listeners besides the main one.
    pub listeners: Vec<Listener>,
    /// Optional services, started after the core ones.
    pub optional: Vec<Optional>,
}

impl StackConfig {
    /// Every service with its defaults: an embedded NATS on a free port that the stack owns
    /// (topology created, NATS user from the environment), stores under `data_dir`, one
    /// promotion worker named after the host and process, no inventory, no Slack, the main
    /// listener on `127.0.0.1:7800`, the audit chain sealed with the key beside its store.
    pub fn new(catalog: Catalog, data_dir: PathBuf, tokens: Tokens) -> anyhow::Result<StackConfig> {
        let metrics = Metrics::default();
        let planner = planner_config(catalog.clone(), data_dir.join("planner"));
        let mut worker = railyard_promoter::PromoterConfig::new(
            catalog.clone(),
            crate::promoter_cmd::default_worker_id(),
            data_dir.join("promoter"),
        );
        worker.secrets = railyard_promoter::Secrets::from_env();
        let audit_store = data_dir.join("audit");
        let mut audit = railyard_audit::AuditConfig::new(audit_store.clone(), tokens.clone());
        if let Ok(cache_mb) = std::env::var("RAILYARD_AUDIT_CACHE_MB") {
            audit.cache_mb = railyard_audit::parse_cache_mb(&cache_mb)?;
        }
        // DORA metrics per team.
        audit.owners = catalog
            .services
            .iter()
            .filter_map(|(name, service)| Some((name.to_string(), service.owner.clone()?)))
            .collect();
        Ok(StackConfig {
            nats: NatsSource::Embedded { port: 0 },
            bus: bus_config(true)?,
            intake: railyard_intake::IntakeConfig::new(catalog.clone(), tokens.clone()),
            sealing: Some(Sealing::beside(&audit_store)),
            audit,
            planner,
            workers: vec![worker],
            catalog,
            tokens,
            metrics,
            listen: ([127, 0, 0, 1], 7800).into(),
            inventory: None,
            notify: None,
            listeners: Vec::new(),
            optional: Vec::new(),
            data_dir,
        })
    }

    /// Promotion workers named `names`, each with its own store under the data directory and
    /// the settings of the first worker configured.
    pub fn name_workers(&mut self, names: &[&str]) {
        let template = self.workers.first().cloned();
        self.workers = names
            .iter()
            .map(|name| {
                let mut worker = template.clone().unwrap_or_else(|| {
                    railyard_promoter::PromoterConfig::new(self.catalog.clone(), *name, "")
                });
                worker.worker_id = (*name).to_owned();
                worker.store = self.data_dir.join(name);
                worker
            })
            .collect();
    }

    /// Starts NATS, records the inventory, starts every service and binds the listeners.
    /// On failure, whatever was started is stopped again.
    pub async fn start(self) -> anyhow::Result<Running> {
        let (url, port) = match &self.nats {
            NatsSource::Embedded { port } => (None, *port),
            NatsSource::External(url) => (Some(url.clone()), 0),
        };
        let nats = Nats::start(url.as_deref(), &self.data_dir, port, self.bus.clone()).await?;
        let mut services = Services::new();
        match self.wire(&nats.bus, &mut services).await {
            Ok((addr, imported)) => Ok(Running {
                bus: nats.bus.clone(),
                url: nats.url.clone(),
                addr,
                imported,
                services,
                nats,
            }),
            Err(error) => {
                let _ = services.stop(Duration::from_secs(15)).await;
                let _ = nats.stop().await;
                Err(error)
            }
        }
    }

    async fn wire(self, bus: &Bus, services: &mut Services) -> anyhow::Result<(SocketAddr, usize)> {
        let StackConfig {
            catalog,
            tokens,
            metrics,
            data_dir,
            listen,
            inventory,
            planner,
            workers,
            mut intake,
            mut audit,
            sealing,
            notify,
            listeners,
            optional,
            ..
        } = self;
        let imported = match &inventory {
            Some((inventory, actor)) => crate::inventory_cmd::import(bus, inventory, actor).await?,
            None => 0,
        };
        let stop = services.shutdown();

        // Every process that runs workers also copies dead letters into RAILYARD_DLQ.
        {
            let (bus, stop) = (bus.clone(), stop.clone());
            services.spawn_restarting("dead-letters", SystemClock::shared(), move || {
                let run =
                    railyard_bus::run_dlq_forwarder(bus.clone(), stop.clone().cancelled_owned());
                async move { run.await.context("dead-letter forwarder") }
            });
        }
        services.spawn(
            "planner",
            planner_task(planner, &metrics, bus.clone(), stop.clone()),
        );
        for mut worker in workers {
            worker.progress = Some(reader_progress(&metrics, "promoter"));
            let name = worker.worker_id.clone();
            let (bus, stop) = (bus.clone(), stop.clone());
            services.spawn(&name, async move {
                railyard_promoter::run(worker, bus, stop)
                    .await
                    .context("promoter")
            });
        }
        match notify {
            Some(mut config) => {
                config.metrics = Some(metrics.clone());
                config.kept_store = Some(keep_store_open(&config.store).await?);
                let (bus, stop) = (bus.clone(), stop.clone());
                services.spawn_restarting("notify", config.clock.clone(), move || {
                    let run = railyard_notify::run(config.clone(), bus.clone(), stop.clone());
                    async move { run.await.context("notify") }
                });
            }
            None => tracing::info!(
                "slack is not configured (RAILYARD_SLACK_TOKEN or --slack-webhook): the notifier does not run"
            ),
        }
        services.spawn_release_metrics(bus.clone(), metrics.clone());

        intake.tokens = tokens.clone();
        intake.metrics = metrics.clone();
        let intake_routes = crate::intake_cmd::start(services, intake, bus.clone());
        audit.tokens = tokens.clone();
        audit.metrics = metrics.clone();
        audit.run.progress = Some(reader_progress(&metrics, "audit"));
        if let Some(sealing) = &sealing {
            audit.seal = Some(sealing.load()?);
        }
        let audit_routes =
            crate::audit_cmd::start(services, audit, bus.clone(), Some(catalog.clone())).await?;
        let mut app: axum::Router = railyard_http::ops_router(bus.clone(), metrics.clone())
            .merge(intake_routes)
            .merge(audit_routes)
            .merge(crate::promoter_cmd::promoter_routes(
                bus.clone(),
                catalog.clone(),
                tokens.clone(),
            ));
        for service in optional {
            let context = ServiceContext {
                bus: bus.clone(),
                catalog: catalog.clone(),
                tokens: tokens.clone(),
                metrics: metrics.clone(),
                store: data_dir.join(&service.name),
                shutdown: stop.clone(),
            };
            let started = (service.start)(context)
                .with_context(|| format!("cannot start {}", service.name))?;
            if let Some(task) = started.task {
                services.spawn(&service.name, task);
            }
            if let Some(routes) = started.routes {
                app = app.merge(routes);
            }
        }
        for listener in listeners {
            let bound = services.serve_http(listener.addr, listener.router).await;
            match bound {
                Ok(_) => {}
                Err(error) if listener.required => {
                    return Err(error).with_context(|| format!("cannot serve {}", listener.name));
                }
                Err(error) => tracing::warn!(
                    listen = %listener.addr,
                    error = %format!("{error:#}"),
                    "cannot serve {}", listener.name
                ),
            }
        }
        let addr = services.serve_http(listen, app).await?;
        Ok((addr, imported))
    }
}

/// Tokens for `identities` (identity, roles, aliases): the table that admits them (only their
/// hashes) and the tokens themselves, in the order given, to hand out once.
pub fn generate_tokens(
    identities: &[(&str, &[railyard_http::Role], &[&str])],
) -> (Tokens, Vec<String>) {
    let mut entries = Vec::new();
    let mut tokens = Vec::new();
    for (identity, roles, aliases) in identities {
        let aliases = aliases.iter().map(|alias| (*alias).to_owned()).collect();
        let (token, entry) =
            railyard_http::generate_token(identity, roles.iter().copied().collect(), aliases);
        tokens.push(token);
        entries.push(entry);
    }
    let table = Tokens::from_entries(entries).expect("generated hashes are valid");
    (table, tokens)
}

/// Opens the store at `path` once for a service that [`Services::spawn_restarting`] may start
/// again in this process: every start is given it (the configurations' `kept_store`) instead
/// of opening the directory again, which leaves heap behind each time
/// ([`railyard_store::Store::kept_or_open`]).
pub async fn keep_store_open(path: &std::path::Path) -> anyhow::Result<railyard_store::Store> {
    Ok(railyard_store::Store::open(railyard_store::StoreConfig::new(path)).await?)
}

/// The planner's configuration: the system clock, 30 s to catch up with the stream.
pub fn planner_config(
    catalog: Catalog,
    store: PathBuf,
) -> railyard_planner::service::PlannerConfig {
    railyard_planner::service::PlannerConfig {
        catalog,
        store,
        kept_store: None,
        clock: SystemClock::shared(),
        catch_up_timeout: Duration::from_secs(30),
    }
}

/// The planner service as a task body; its projection counts into `metrics` as the reader
/// `planner`.
pub fn planner_task(
    config: railyard_planner::service::PlannerConfig,
    metrics: &Metrics,
    bus: Bus,
    shutdown: CancellationToken,
) -> impl std::future::Future<Output = anyhow::Result<()>> + Send + use<> {
    planner_replica_task(config, None, metrics, bus, shutdown)
}

/// [`planner_task`] as one of several replicas when `leader` is given: it decides only while
/// it holds the planner's leader lease.
pub fn planner_replica_task(
    config: railyard_planner::service::PlannerConfig,
    leader: Option<railyard_bus::LeaderConfig>,
    metrics: &Metrics,
    bus: Bus,
    shutdown: CancellationToken,
) -> impl std::future::Future<Output = anyhow::Result<()>> + Send + use<> {
    let options = railyard_store::RunOptions {
        progress: Some(reader_progress(metrics, "planner")),
        ..railyard_store::RunOptions::default()
    };
    async move {
        railyard_planner::service::run_replica(config, leader, bus, shutdown, options)
            .await
            .context("planner")
    }
}

/// Runs one long-running service as a process of its own: the service `make` builds on the
/// shared connection (built again after a pause when it fails on NATS:
/// [`Services::spawn_restarting`]), the release metrics, and `/healthz`, `/readyz` and
/// `/metrics` on `listen`, until Ctrl-C, SIGTERM or the service ending. `railyard planner`,
/// `notify`, `github` and `cdevents` are this.
pub async fn run_one<M, F>(
    name: &str,
    bus: Bus,
    metrics: Metrics,
    listen: SocketAddr,
    clock: SharedClock,
    mut make: M,
) -> anyhow::Result<()>
where
    M: FnMut(Bus, CancellationToken) -> F + Send + 'static,
    F: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let mut services = Services::new();
    let (stop, service_bus) = (services.shutdown(), bus.clone());
    services.spawn_restarting(name, clock, move || make(service_bus.clone(), stop.clone()));
    run_service(name, services, bus, metrics, listen, axum::Router::new()).await
}

/// Runs one service on its own (`railyard planner`, `promoter`, `intake`, `notify`, `audit
/// serve`): its tasks in `services`, the release metrics, and on `listen` the ops routes merged
/// with `routes`, until Ctrl-C, SIGTERM or a task ending; then drains the connection.
pub async fn run_service(
    name: &str,
    mut services: Services,
    bus: Bus,
    metrics: Metrics,
    listen: SocketAddr,
    routes: axum::Router,
) -> anyhow::Result<()> {
    services.spawn_release_metrics(bus.clone(), metrics.clone());
    let app = railyard_http::ops_router(bus.clone(), metrics).merge(routes);
    let addr = services.serve_http(listen, app).await?;
    tracing::info!(%addr, "{name} serving its routes and /healthz, /readyz, /metrics");
    let result = services.run_until_signal().await;
    bus.close()
        .await
        .context("cannot flush and close the NATS connection")?;
    result
}

/// A started stack.
pub struct Running {
    /// The shared connection.
    pub bus: Bus,
    /// The NATS URL in use.
    pub url: String,
    /// Where the main listener is bound.
    pub addr: SocketAddr,
    /// How many running services the inventory recorded.
    pub imported: usize,
    services: Services,
    nats: Nats,
}

impl Running {
    /// The token every service stops on.
    pub fn shutdown(&self) -> CancellationToken {
        self.services.shutdown()
    }

    /// The embedded server's process id, when there is one.
    pub fn nats_pid(&self) -> Option<u32> {
        self.nats.nats_pid()
    }

    /// Runs one more task until shutdown, as a service of the stack.
    pub fn spawn<F>(&mut self, name: &str, task: F)
    where
        F: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        self.services.spawn(name, task);
    }

    /// Fails, naming it, when a service has ended.
    pub fn check(&mut self) -> anyhow::Result<()> {
        self.services.check()
    }

    /// Runs until Ctrl-C, SIGTERM or a service ending; then stops the services, drains the
    /// connection and stops the embedded server.
    pub async fn run_until_signal(self) -> anyhow::Result<()> {
        let served = self.services.run_until_signal().await;
        let stopped = self.nats.stop().await;
        served.and(stopped)
    }

    /// Stops the services (waiting at most `timeout`), drains the connection and stops the
    /// embedded server; what failed while stopping is the error.
    pub async fn stop(self, timeout: Duration) -> anyhow::Result<()> {
        let services = self.services.stop(timeout).await;
        let nats = self.nats.stop().await;
        services.and(nats)
    }
}

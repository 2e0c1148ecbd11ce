//! The audit service: [`AuditConfig`], and [`Audit`], which owns the audit store and the bus
//! handle that the projection task ([`Audit::run`]), the sealer (when
//! [`AuditConfig::seal`] is set) and the HTTP routes ([`crate::router`]) share.
//!
//! Replicas: every replica is an active reader. Its projection writes only its own sled
//! store, so each replica keeps its own copy of the record, equal to the stream's, and serves
//! queries from it; no lease is needed for that. What writes to the bus — the sealer's
//! `audit.checkpoint` — runs only on the replica holding the `audit-sealer` leader lease
//! ([`AuditConfig::leader`]), so the checkpoints form one sequence across leader changes (and
//! its append expects the audit aggregate's last sequence, so a deposed sealer that still
//! runs gets a conflict, not a second checkpoint).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use railyard_bus::{Bus, LeaderConfig, Leadership};
use railyard_core::{SharedClock, SystemClock};
use railyard_http::{Metrics, Tokens};
use railyard_store::{
    ProjectionStore, RunError, RunOptions, RunReport, StoreConfig, StoreError, rebuild,
    run_projection,
};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::error::AuditError;
use crate::projection::AuditProjection;
use crate::query::Reader;
use crate::seal::Keys;
use crate::sealer::{SealConfig, Sealer, Trigger};
use crate::verify::{VerifyReport, verify_live_signed};

/// How the audit service runs.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// The sled directory of the audit store.
    pub store: PathBuf,
    /// Who may read.
    pub tokens: Tokens,
    /// Where time comes from (waits between retries, keep-alives, verify stamps).
    pub clock: SharedClock,
    /// The process's metrics registry.
    pub metrics: Metrics,
    /// The environment the change report covers when none is asked for.
    pub report_env: String,
    /// How the projection reads and batches the stream.
    pub run: RunOptions,
    /// First pause before following the stream again after a failure (doubles up to
    /// `retry_max`).
    pub retry_initial: Duration,
    /// Longest pause between attempts.
    pub retry_max: Duration,
    /// How often an idle event stream (SSE) sends a keep-alive comment.
    pub keep_alive: Duration,
    /// How often the store flushes in the background (`None`: only on shutdown).
    pub flush_every: Option<Duration>,
    /// How long `verify` waits for the projection to apply the stream's last message before
    /// it reports the record as behind.
    pub verify_catch_up: Duration,
    /// Signed checkpoints: the key and how often (`None`: the chain is not sealed).
    pub seal: Option<SealConfig>,
    /// Each service's owning team (the catalog's `owner`), for DORA metrics per team.
    pub owners: std::collections::BTreeMap<String, String>,
    /// How long after a deployment an incident for its service counts as its failure (DORA).
    pub dora_incident_window: chrono::Duration,
    /// How often the `railyard_dora_*` gauges are computed again, over the last
    /// `dora_gauge_window` (`None`: no gauges).
    pub dora_gauges_every: Option<Duration>,
    /// The window the DORA gauges cover (default 30 days).
    pub dora_gauge_window: chrono::Duration,
    /// Run as one of several replicas: the sealer seals only while this replica holds the
    /// leader lease `audit-sealer` (campaigning as this configuration's replica, with its ttl
    /// and clock; its role is replaced). `None`: the only audit service, always sealing.
    pub leader: Option<LeaderConfig>,
    /// The audit store's sled page cache, in MiB (default [`DEFAULT_CACHE_MB`]; the binary
    /// reads `RAILYARD_AUDIT_CACHE_MB` or `--cache-mb`, see [`parse_cache_mb`]).
    pub cache_mb: u64,
}

/// The audit store's page cache unless configured, in MiB. The audit store is the one store
/// that grows with history, and its queries read pages that fall out of the cache again
/// through the file cache; the other stores keep `railyard_store::DEFAULT_CACHE_CAPACITY`
/// (64 MiB). The figures behind it are in BENCHMARKS.md (audit).
pub const DEFAULT_CACHE_MB: u64 = 512;

/// The largest page cache [`parse_cache_mb`] takes, in MiB (64 GiB).
pub const MAX_CACHE_MB: u64 = 65_536;

/// Reads a page cache size in MiB, as `RAILYARD_AUDIT_CACHE_MB` gives it: a whole number
/// from 1 to [`MAX_CACHE_MB`].
pub fn parse_cache_mb(value: &str) -> Result<u64, AuditError> {
    match value.trim().parse::<u64>() {
        Ok(mb) if (1..=MAX_CACHE_MB).contains(&mb) => Ok(mb),
        _ => Err(AuditError::Setting {
            name: "RAILYARD_AUDIT_CACHE_MB",
            value: value.to_owned(),
            problem: format!(
                "not a page cache size: give the audit store's page cache in MiB, a whole number from 1 to {MAX_CACHE_MB} (default {DEFAULT_CACHE_MB})"
            ),
        }),
    }
}

impl AuditConfig {
    /// Defaults for a store at `store`, read with `tokens`.
    pub fn new(store: impl Into<PathBuf>, tokens: Tokens) -> AuditConfig {
        AuditConfig {
            store: store.into(),
            tokens,
            clock: SystemClock::shared(),
            metrics: Metrics::default(),
            report_env: "production".into(),
            run: RunOptions::default(),
            retry_initial: Duration::from_millis(500),
            retry_max: Duration::from_secs(30),
            keep_alive: Duration::from_secs(15),
            flush_every: Some(Duration::from_millis(500)),
            verify_catch_up: Duration::from_secs(10),
            seal: None,
            owners: std::collections::BTreeMap::new(),
            dora_incident_window: chrono::Duration::hours(24),
            dora_gauges_every: Some(Duration::from_secs(300)),
            dora_gauge_window: chrono::Duration::days(30),
            leader: None,
            cache_mb: DEFAULT_CACHE_MB,
        }
    }
}

/// The audit service: its store, its reader and the bus. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Audit {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: AuditConfig,
    bus: Bus,
    reader: Reader,
    shutdown: CancellationToken,
    checkpoint: Gauge<i64, AtomicI64>,
    records: Gauge<i64, AtomicI64>,
    lost: Gauge<i64, AtomicI64>,
    dora: crate::dora::DoraGauges,
    sealer: Option<Sealer>,
}

/// The leader lease the sealers of audit replicas share.
const SEALER_ROLE: &str = "audit-sealer";

/// A task aborted when dropped.
struct AbortOnDrop(Option<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

/// Opens the audit projection's store at `path` with the default page cache
/// ([`DEFAULT_CACHE_MB`]), as the offline tools do.
pub async fn open_store(
    path: impl Into<PathBuf>,
    flush_every: Option<Duration>,
) -> Result<ProjectionStore<AuditProjection>, StoreError> {
    open_store_with_cache(path, flush_every, DEFAULT_CACHE_MB).await
}

/// Opens the audit projection's store at `path` with a page cache of `cache_mb` MiB.
pub async fn open_store_with_cache(
    path: impl Into<PathBuf>,
    flush_every: Option<Duration>,
    cache_mb: u64,
) -> Result<ProjectionStore<AuditProjection>, StoreError> {
    ProjectionStore::open(
        StoreConfig::new(path)
            .flush_every(flush_every)
            .cache_capacity(cache_mb.saturating_mul(1 << 20)),
        AuditProjection,
    )
    .await
}

impl Audit {
    /// Opens the store. `shutdown` ends [`Audit::run`] and every open event stream.
    pub async fn open(
        config: AuditConfig,
        bus: Bus,
        shutdown: CancellationToken,
    ) -> Result<Audit, AuditError> {
        let store =
            open_store_with_cache(&config.store, config.flush_every, config.cache_mb).await?;
        Ok(Audit::with_store(config, bus, store, shutdown))
    }

    /// The service over an already opened store.
    pub fn with_store(
        config: AuditConfig,
        bus: Bus,
        store: ProjectionStore<AuditProjection>,
        shutdown: CancellationToken,
    ) -> Audit {
        let checkpoint = config.metrics.register(
            "audit_checkpoint",
            "Last stream sequence applied to the audit record.",
            Gauge::<i64, AtomicI64>::default(),
        );
        let records = config.metrics.register(
            "audit_records",
            "Records in the audit chain.",
            Gauge::<i64, AtomicI64>::default(),
        );
        let lost = config.metrics.register(
            "audit_store_lost_sequences",
            "Stream sequences the audit store had made durable but lost when it was opened (its log was damaged and cut short) and has not applied again yet; 0 when whole.",
            Gauge::<i64, AtomicI64>::default(),
        );
        let dora = crate::dora::DoraGauges::register(&config.metrics);
        let sealed = config.metrics.register(
            "audit_sealed_records",
            "Records sealed by the last signed checkpoint this audit service appended.",
            Gauge::<i64, AtomicI64>::default(),
        );
        if let Some(cut) = store.cut_short() {
            warn!(
                store = %config.store.display(),
                durable = cut.durable,
                recovered = cut.recovered,
                "the audit store was cut short: it serves a shorter history, and verify fails, until the projection has applied the lost events again from the stream; run `railyard audit rebuild` to redo it all"
            );
        }
        let reader = Reader::new(store);
        let sealer = config.seal.clone().map(|seal| {
            Sealer::new(
                seal,
                reader.clone(),
                bus.clone(),
                config.clock.clone(),
                sealed,
            )
        });
        let audit = Audit {
            inner: Arc::new(Inner {
                config,
                bus,
                reader,
                shutdown,
                checkpoint,
                records,
                lost,
                dora,
                sealer,
            }),
        };
        audit.track_lost(*audit.inner.reader.store().watch_checkpoint().borrow());
        audit
    }

    /// Sets the lost-sequences gauge for checkpoint `checkpoint`; says when the last lost
    /// event was applied again.
    fn track_lost(&self, checkpoint: u64) {
        let Some(cut) = self.inner.reader.store().cut_short() else {
            self.inner.lost.set(0);
            return;
        };
        let lost = i64::try_from(cut.durable.saturating_sub(checkpoint)).unwrap_or(i64::MAX);
        if lost == 0 && self.inner.lost.get() > 0 {
            warn!(
                durable = cut.durable,
                recovered = cut.recovered,
                "the audit store applied again, from the stream, the events it had lost when it was cut short; `railyard audit verify` compares them with the stream"
            );
        }
        self.inner.lost.set(lost);
    }

    /// Its configuration.
    pub fn config(&self) -> &AuditConfig {
        &self.inner.config
    }

    /// The reader over the audit store.
    pub fn reader(&self) -> &Reader {
        &self.inner.reader
    }

    /// The bus.
    pub fn bus(&self) -> &Bus {
        &self.inner.bus
    }

    /// The token that stops the service.
    pub fn shutdown(&self) -> &CancellationToken {
        &self.inner.shutdown
    }

    /// Runs the sealer until `stop`: always, or with [`AuditConfig::leader`] only while this
    /// replica holds the `audit-sealer` lease (resigned on stop).
    async fn seal(&self, stop: CancellationToken) {
        let Some(sealer) = &self.inner.sealer else {
            return;
        };
        let Some(leader) = &self.inner.config.leader else {
            sealer.run(stop).await;
            return;
        };
        let leader = leader.for_role(SEALER_ROLE);
        let leadership = Leadership::start(self.inner.bus.clone(), leader.clone());
        let (mut leading, mut deposed) = (leadership.watch(), leadership.watch());
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                changed = leading.wait_for(|leads| *leads) => if changed.is_err() { break },
            }
            let term = stop.child_token();
            tokio::select! {
                () = async {
                    sealer.catch_up().await;
                    sealer.run(term.clone()).await;
                } => {}
                _ = deposed.wait_for(|leads| !*leads) => {
                    info!(replica = %leader.replica, "this audit replica no longer leads the sealer: it stops sealing and keeps its record");
                }
            }
            term.cancel();
            if stop.is_cancelled() {
                break;
            }
        }
        leadership.stop().await;
    }

    /// Follows the event stream until shutdown: see [`Audit::follow`].
    pub async fn run(self) -> Result<(), AuditError> {
        let stop = self.inner.shutdown.child_token();
        self.follow(&stop).await
    }

    /// Keeps the projection following the stream from its checkpoint until `stop` or the
    /// service's shutdown, following again (with a doubling pause) after a bus or store
    /// failure, and the sealer sealing the chain meanwhile (when configured). Returns an error
    /// only when another task already drives the projection.
    pub async fn follow(&self, stop: &CancellationToken) -> Result<(), AuditError> {
        let config = &self.inner.config;
        let store = self.inner.reader.store();
        let mut pause = config.retry_initial;
        let gauges = self.track_progress(stop.clone());
        let dora = self.track_dora(stop.clone());
        let sealing = CancellationToken::new();
        // Aborted when this future is dropped, so a dropped service leaves no sealer behind.
        let sealer = self.inner.sealer.is_some().then(|| {
            let (audit, sealing) = (self.clone(), sealing.clone());
            AbortOnDrop(Some(tokio::spawn(async move {
                audit.seal(sealing).await;
            })))
        });
        let outcome = loop {
            if stop.is_cancelled() || self.inner.shutdown.is_cancelled() {
                break Ok(());
            }
            let stopped = async {
                tokio::select! {
                    () = stop.cancelled() => {},
                    () = self.inner.shutdown.cancelled() => {},
                }
            };
            match run_projection(&self.inner.bus, store, &config.run, stopped).await {
                Ok(report) => {
                    info!(
                        checkpoint = report.checkpoint,
                        committed = report.committed,
                        "audit projection stopped"
                    );
                    break Ok(());
                }
                Err(RunError::Store(error @ StoreError::Busy(_))) => break Err(error.into()),
                Err(error) => {
                    warn!(error = %error, retry_in = ?pause, "audit projection failed; following the stream again");
                    tokio::select! {
                        () = config.clock.sleep(pause) => {},
                        () = stop.cancelled() => break Ok(()),
                        () = self.inner.shutdown.cancelled() => break Ok(()),
                    }
                    pause = (pause * 2).min(config.retry_max);
                }
            }
        };
        gauges.abort();
        dora.abort();
        // Wait for the tasks to drop their handles on the store, so the caller can close it.
        let _ = gauges.await;
        let _ = dora.await;
        sealing.cancel();
        if let Some(mut sealer) = sealer {
            if let Some(task) = sealer.0.take() {
                let _ = task.await;
            }
        }
        outcome
    }

    /// Computes the DORA metrics over the last `dora_gauge_window` every `dora_gauges_every`
    /// (on the service's clock) into the `railyard_dora_*` gauges while the projection runs.
    fn track_dora(&self, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        let audit = self.clone();
        tokio::spawn(async move {
            let config = &audit.inner.config;
            let Some(every) = config.dora_gauges_every else {
                return;
            };
            loop {
                let now = config.clock.now();
                let window = crate::dora::DoraWindow {
                    since: now - config.dora_gauge_window,
                    until: now,
                    incident_window: config.dora_incident_window,
                    env: None,
                    service: None,
                };
                match crate::queries::dora_log(&audit, &window).await {
                    Ok(log) => audit.inner.dora.set(&log.rows(&window, &config.owners)),
                    Err(error) => {
                        warn!(error = %error, "cannot compute the DORA gauges; trying again at the next interval")
                    }
                }
                tokio::select! {
                    () = config.clock.sleep(every) => {},
                    () = stop.cancelled() => break,
                }
            }
        })
    }

    /// Keeps the checkpoint and record gauges current while the projection runs.
    fn track_progress(&self, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        let audit = self.clone();
        let mut committed = self.inner.reader.store().watch_checkpoint();
        tokio::spawn(async move {
            loop {
                let checkpoint = *committed.borrow_and_update();
                audit
                    .inner
                    .checkpoint
                    .set(i64::try_from(checkpoint).unwrap_or(i64::MAX));
                audit.track_lost(checkpoint);
                if let Ok(head) = audit.inner.reader.head().await {
                    audit
                        .inner
                        .records
                        .set(i64::try_from(head.n).unwrap_or(i64::MAX));
                }
                tokio::select! {
                    changed = committed.changed() => if changed.is_err() { break },
                    () = stop.cancelled() => break,
                }
            }
        })
    }

    /// Verifies the chain and cross-checks it with the stream up to the stream's last
    /// message, once the projection has applied it (waiting up to
    /// [`AuditConfig::verify_catch_up`]).
    /// Checkpoints are checked with the service's own key.
    pub async fn verify(&self) -> Result<VerifyReport, AuditError> {
        verify_live_signed(
            &self.inner.reader,
            &self.inner.bus,
            self.inner.config.verify_catch_up,
            self.inner.config.clock.as_ref(),
            &self.keys(),
        )
        .await
    }

    /// The keys the service checks checkpoints with: its own.
    pub fn keys(&self) -> Keys {
        Keys::new(self.inner.sealer.as_ref().map(Sealer::public))
    }

    /// Seals the chain's head now, for an export: returns the checkpoint that seals every
    /// record up to the one the export should end with (the latest checkpoint when nothing
    /// but checkpoints came since it), `None` when the service does not seal or holds no
    /// record yet.
    pub async fn seal_for_export(
        &self,
    ) -> Result<Option<railyard_core::audit::AuditCheckpoint>, AuditError> {
        match &self.inner.sealer {
            Some(sealer) => sealer.seal(Trigger::Export).await,
            None => Ok(None),
        }
    }

    /// Drops the projection and replays the stream into it. Refused while [`Audit::run`]
    /// follows the stream.
    pub async fn rebuild(&self) -> Result<RunReport, AuditError> {
        Ok(rebuild(
            &self.inner.bus,
            self.inner.reader.store(),
            &self.inner.config.run,
        )
        .await?)
    }
}

/// Opens the audit store at `config.store` and follows the event stream until `shutdown`:
/// the projection alone, for a process that serves no HTTP. A process that also serves the
/// routes opens an [`Audit`] and gives clones to [`crate::router`] and [`Audit::run`].
pub async fn run(
    config: AuditConfig,
    bus: Bus,
    shutdown: CancellationToken,
) -> Result<(), AuditError> {
    Audit::open(config, bus, shutdown).await?.run().await
}

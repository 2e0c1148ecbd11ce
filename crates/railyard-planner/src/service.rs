//! The planner service: the IO shell around the pure core. It keeps a sled projection of
//! what it needs to decide — each environment's inventory (from `service.deployed`), the
//! releases in flight with their remaining steps, and the releases requested but not yet
//! decided — and, for each undecided release in request order, folds the release from the
//! stream, plans it against the projection, and appends `release.planned` or
//! `release.rejected` with optimistic concurrency. Undecided releases live in the
//! projection, so a crash between a request and its decision loses nothing: on restart the
//! decision is made then.
//!
//! Replicas: run with a [`LeaderConfig`] ([`run_replica`]), every replica keeps its projection current
//! (a hot standby), and only the holder of the `planner` leader lease records the catalog
//! and decides. A deposed leader that still runs cannot decide twice either: a decision is
//! appended only while the release is `requested`, expecting the aggregate's last sequence,
//! so a second `release.planned` for one release is a conflict, never a duplicate.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use railyard_bus::{AppendError, Bus, Expected, LeaderConfig, Leadership};
use railyard_core::event::{CatalogApplied, ReleasePlanned, ReleaseRejected};
use railyard_core::inventory::EnvInventory;
use railyard_core::{
    AggregateId, Catalog, Change, EnvName, Envelope, Event, Inventory, ReleaseId, ReleaseState,
    SharedClock, Status, StepId,
};
use railyard_store::{
    Projection, ProjectionError, ProjectionStore, RunOptions, Store, StoreConfig, Update,
};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, warn};

use railyard_plan::{InFlight, PlanInput};

/// The actor of the planner's events.
pub const ACTOR: &str = "railyard-planner";

/// How the planner service runs.
#[derive(Debug, Clone)]
pub struct PlannerConfig {
    /// The catalog in force.
    pub catalog: Catalog,
    /// Where the planner's read model lives (a sled directory).
    pub store: PathBuf,
    /// The store at `store` when this process already has it open: a service started again
    /// after NATS failed reuses it instead of opening the directory again
    /// ([`railyard_store::Store::kept_or_open`]). `None`: opened at each start.
    pub kept_store: Option<railyard_store::Store>,
    /// The clock events are stamped with.
    pub clock: SharedClock,
    /// How long a decision waits for the projection to catch up with the previous one.
    pub catch_up_timeout: Duration,
}

/// Why the planner service stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The read model failed.
    #[error(transparent)]
    Store(#[from] railyard_store::StoreError),
    /// Following the stream failed.
    #[error(transparent)]
    Run(#[from] railyard_store::RunError),
    /// NATS failed.
    #[error(transparent)]
    Bus(#[from] railyard_bus::BusError),
    /// Recording a decision failed for another reason than a conflict.
    #[error(transparent)]
    Append(#[from] AppendError),
    /// A release's events do not fold.
    #[error("release {release}")]
    Fold {
        /// The release.
        release: ReleaseId,
        /// Why.
        source: railyard_core::TransitionError,
    },
    /// The projection did not catch up with a decision in time.
    #[error(
        "the planner's read model did not reach stream sequence {sequence} within {waited:?}: check that its projection runs"
    )]
    Behind {
        /// The sequence waited for.
        sequence: u64,
        /// How long.
        waited: Duration,
    },
}

impl ServiceError {
    /// Whether deciding again later may succeed: NATS failing or not answering (a node lost,
    /// a leader being elected), or the read model not catching up in time meanwhile. The
    /// store or a release that does not fold will not mend by waiting.
    fn is_transient(&self) -> bool {
        match self {
            ServiceError::Bus(error) => error.is_transient(),
            ServiceError::Append(error) => error.is_transient(),
            ServiceError::Run(railyard_store::RunError::Bus(error)) => error.is_transient(),
            ServiceError::Behind { .. } => true,
            ServiceError::Store(_) | ServiceError::Run(_) | ServiceError::Fold { .. } => false,
        }
    }
}

/// The longest pause before the leader decides again after NATS failed.
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(5);

/// What the planner remembers of a release that has not ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Tracked {
    sequence: u64,
    changes: Vec<Change>,
    /// What later releases touching the same services still wait for.
    remaining: BTreeSet<StepId>,
    decided: bool,
    /// The plan's steps by environment, to know what a failure there puts back in play.
    #[serde(default)]
    by_env: BTreeMap<EnvName, BTreeSet<StepId>>,
}

/// The planner's read model.
#[derive(Debug, Default)]
pub struct PlannerView;

const INVENTORY: &str = "inventory/";
const RELEASE: &str = "release/";
const PENDING: &str = "pending/";
const CATALOG: &str = "catalog";

fn pending_key(sequence: u64, release: &ReleaseId) -> String {
    // Zero-padded so keys sort in request order.
    format!("{PENDING}{sequence:020}/{release}")
}

impl Projection for PlannerView {
    fn name(&self) -> &str {
        "planner"
    }

    fn apply(
        &mut self,
        update: &mut Update<'_>,
        sequence: u64,
        envelopes: &[Envelope],
    ) -> Result<(), ProjectionError> {
        for envelope in envelopes {
            let release = match &envelope.aggregate {
                AggregateId::Release(id) => Some(id),
                _ => None,
            };
            // A release event on another aggregate, or naming another release than its
            // aggregate, is refused: the store dead-letters it with this reason.
            let misrouted = |named: Option<&ReleaseId>| {
                ProjectionError::rejected(format!(
                    "{} arrived on the aggregate {}{}: a release's events belong on release.<id> of that release; the event was set aside, see `railyard dlq list`",
                    envelope.event.type_name(),
                    envelope.aggregate,
                    named.map_or_else(String::new, |id| format!(" but names release {id}"))
                ))
            };
            let release_key = |named: Option<&ReleaseId>| match (release, named) {
                (Some(id), Some(named)) if id != named => Err(misrouted(Some(named))),
                (Some(id), _) => Ok((id, format!("{RELEASE}{id}"))),
                (None, named) => Err(misrouted(named)),
            };
            match &envelope.event {
                Event::ServiceDeployed(d) => {
                    let key = format!("{INVENTORY}{}", d.env);
                    let mut env: EnvInventory = update.get_json(&key)?.unwrap_or_default();
                    match &d.running {
                        Some(running) => {
                            env.services.insert(d.service.clone(), running.clone());
                        }
                        None => {
                            env.services.remove(&d.service);
                        }
                    }
                    env.databases
                        .extend(d.databases.iter().map(|(k, v)| (k.clone(), *v)));
                    update.put_json(key, &env)?;
                }
                Event::CatalogApplied(c) => update.put_json(CATALOG, &c.hash)?,
                Event::ReleaseRequested(r) => {
                    release_key(Some(&r.release))?;
                    let tracked = Tracked {
                        sequence,
                        changes: r.changes.clone(),
                        remaining: BTreeSet::new(),
                        decided: false,
                        by_env: BTreeMap::new(),
                    };
                    update.put_json(format!("{RELEASE}{}", r.release), &tracked)?;
                    update.put(pending_key(sequence, &r.release), r.release.as_str());
                }
                Event::ReleasePlanned(p) => {
                    let (_, key) = release_key(Some(&p.plan.release))?;
                    if let Some(mut tracked) = update.get_json::<Tracked>(&key)? {
                        update.remove(pending_key(tracked.sequence, &p.plan.release));
                        tracked.remaining = p.plan.steps.iter().map(|s| s.id.clone()).collect();
                        tracked.decided = true;
                        tracked.by_env = BTreeMap::new();
                        for step in &p.plan.steps {
                            tracked
                                .by_env
                                .entry(step.env.clone())
                                .or_default()
                                .insert(step.id.clone());
                        }
                        update.put_json(key, &tracked)?;
                    }
                }
                Event::StepSucceeded(o) => {
                    let (_, key) = release_key(None)?;
                    if let Some(mut tracked) = update.get_json::<Tracked>(&key)? {
                        tracked.remaining.remove(&o.step);
                        update.put_json(key, &tracked)?;
                    }
                }
                // A failure in an environment is followed by undoing it there (or by a hold
                // until someone decides), and a step undone means the environment is being
                // rolled back: every step of the release in that environment is in play again,
                // so a later release touching the same services waits until this one has
                // ended, rather than deploying beside its rollback (the promoter's
                // re-validation held such a release in the chaos soak). The same rule as
                // `ReleaseState::unfinished_steps`, which the promoter applies.
                Event::StepFailed(o) | Event::StepRolledBack(o) => {
                    let (_, key) = release_key(None)?;
                    if let Some(mut tracked) = update.get_json::<Tracked>(&key)? {
                        let again = tracked
                            .by_env
                            .values()
                            .find(|steps| steps.contains(&o.step))
                            .cloned()
                            .unwrap_or_else(|| BTreeSet::from([o.step.clone()]));
                        tracked.remaining.extend(again);
                        update.put_json(key, &tracked)?;
                    }
                }
                Event::ReleaseRejected(_)
                | Event::ReleaseCancelled(_)
                | Event::ReleaseCompleted(_)
                | Event::ReleaseRolledBack(_) => {
                    let (id, key) = release_key(None)?;
                    if let Some(tracked) = update.get_json::<Tracked>(&key)? {
                        update.remove(pending_key(tracked.sequence, id));
                        update.remove(key);
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// Runs the planner until `shutdown`: the projection follows the stream, the decider plans
/// every undecided release in request order.
pub async fn run(
    config: PlannerConfig,
    bus: Bus,
    shutdown: CancellationToken,
) -> Result<(), ServiceError> {
    run_with(config, bus, shutdown, RunOptions::default()).await
}

/// [`run`], with the projection following the stream under `options` (e.g. a progress hook
/// for metrics).
pub async fn run_with(
    config: PlannerConfig,
    bus: Bus,
    shutdown: CancellationToken,
    options: RunOptions,
) -> Result<(), ServiceError> {
    run_replica(config, None, bus, shutdown, options).await
}

/// [`run_with`] as one of several replicas when `leader` is given: the projection always
/// follows the stream, and the catalog is recorded and releases decided only while this
/// replica holds the lease `leader` names (`None`: the only planner, always deciding).
pub async fn run_replica(
    config: PlannerConfig,
    leader: Option<LeaderConfig>,
    bus: Bus,
    shutdown: CancellationToken,
    options: RunOptions,
) -> Result<(), ServiceError> {
    let store =
        Store::kept_or_open(config.kept_store.as_ref(), StoreConfig::new(&config.store)).await?;
    let view = store.projection(PlannerView).await?;
    // Ends the projection when deciding ends, without stopping the caller's other services.
    let shutdown = shutdown.child_token();
    let follower = {
        let (bus, view, stop) = (bus.clone(), view.clone(), shutdown.clone());
        tokio::spawn(async move {
            railyard_store::run_projection(&bus, &view, &options, stop.cancelled_owned()).await
        })
    };
    let decided = match &leader {
        None => match record_catalog(&config, &bus).await {
            Ok(()) => decide_loop(&config, &bus, &view, &shutdown).await,
            Err(error) => Err(error),
        },
        Some(leader) => lead(&config, leader, &bus, &view, &shutdown).await,
    };
    shutdown.cancel();
    let followed = follower
        .await
        .expect("the planner projection task does not panic");
    view.flush().await?;
    decided?;
    followed?;
    Ok(())
}

/// Decides while this replica holds the planner's lease, stands by (its projection following
/// the stream) while another does, until `shutdown`; then resigns the lease.
async fn lead(
    config: &PlannerConfig,
    leader: &LeaderConfig,
    bus: &Bus,
    view: &ProjectionStore<PlannerView>,
    shutdown: &CancellationToken,
) -> Result<(), ServiceError> {
    let leadership = Leadership::start(bus.clone(), leader.clone());
    let mut leading = leadership.watch();
    let mut deposed = leadership.watch();
    let mut pause = Duration::from_millis(100);
    let outcome = loop {
        tokio::select! {
            () = shutdown.cancelled() => break Ok(()),
            changed = leading.wait_for(|leads| *leads) => if changed.is_err() { break Ok(()) },
        }
        let term = shutdown.child_token();
        let decided = tokio::select! {
            decided = async {
                record_catalog(config, bus).await?;
                decide_loop(config, bus, view, &term).await
            } => decided,
            _ = deposed.wait_for(|leads| !*leads) => {
                // The decision under way (if any) was dropped: its append either landed or
                // not, and the new leader re-reads the release before deciding it.
                info!(replica = %leader.replica, "planner no longer leads: it stops deciding and stands by");
                Ok(())
            }
        };
        term.cancel();
        match decided {
            Ok(()) => pause = Duration::from_millis(100),
            // NATS failing under a decision (a node lost mid-read) is no reason to stop the
            // service: every decision re-reads its release, so deciding again is safe.
            Err(error) if error.is_transient() => {
                warn!(
                    error = %railyard_bus::error_chain(&error),
                    pause = ?pause,
                    "deciding failed on NATS; the planner decides again after a pause"
                );
                tokio::select! {
                    () = shutdown.cancelled() => break Ok(()),
                    () = config.clock.sleep(pause) => {}
                }
                pause = (pause * 2).min(MAX_RETRY_PAUSE);
            }
            Err(error) => break Err(error),
        }
    };
    leadership.stop().await;
    outcome
}

/// Appends `catalog.applied` when the catalog differs from the last one recorded.
async fn record_catalog(config: &PlannerConfig, bus: &Bus) -> Result<(), ServiceError> {
    let hash = config.catalog.hash();
    let loaded = bus.load(&AggregateId::Catalog).await?;
    let last = loaded.events.iter().rev().find_map(|e| match &e.event {
        Event::CatalogApplied(c) => Some(c.hash.as_str()),
        _ => None,
    });
    if last == Some(hash.as_str()) {
        return Ok(());
    }
    let event = Envelope::new(
        AggregateId::Catalog,
        ACTOR,
        config.clock.now(),
        Event::CatalogApplied(CatalogApplied { hash: hash.clone() }),
    );
    match bus
        .append(&AggregateId::Catalog, loaded.expected(), &[event])
        .await
    {
        Ok(_) => info!(%hash, "catalog applied"),
        // Another planner recorded a catalog meanwhile; the projection will show which.
        Err(AppendError::Conflict { .. }) => {
            warn!(%hash, "another process recorded a catalog at the same time")
        }
        Err(error) => return Err(error.into()),
    }
    Ok(())
}

async fn decide_loop(
    config: &PlannerConfig,
    bus: &Bus,
    view: &ProjectionStore<PlannerView>,
    shutdown: &CancellationToken,
) -> Result<(), ServiceError> {
    let mut committed = view.watch_checkpoint();
    loop {
        let pending = view.scan_prefix(PENDING).await?;
        for entry in pending {
            if shutdown.is_cancelled() {
                return Ok(());
            }
            let Ok(id) = ReleaseId::new(String::from_utf8_lossy(&entry.1).into_owned()) else {
                continue;
            };
            if let Some(sequence) = decide(config, bus, view, &id).await? {
                wait_for(config, view, sequence, shutdown).await?;
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            changed = committed.changed() => if changed.is_err() { return Ok(()) },
        }
    }
}

/// Waits until the read model applied `sequence` (the decision just appended), at most
/// `catch_up_timeout` on the config's clock; a shutdown ends the wait (the projection stops
/// with it, so waiting on would only delay the stop).
async fn wait_for(
    config: &PlannerConfig,
    view: &ProjectionStore<PlannerView>,
    sequence: u64,
    shutdown: &CancellationToken,
) -> Result<(), ServiceError> {
    let mut committed = view.watch_checkpoint();
    tokio::select! {
        reached = committed.wait_for(|c| *c >= sequence) => match reached {
            Ok(_) => Ok(()),
            Err(_) => Err(ServiceError::Behind {
                sequence,
                waited: config.catch_up_timeout,
            }),
        },
        () = shutdown.cancelled() => Ok(()),
        () = config.clock.sleep(config.catch_up_timeout) => Err(ServiceError::Behind {
            sequence,
            waited: config.catch_up_timeout,
        }),
    }
}

/// Decides one release; returns the stream sequence of the decision when one was appended.
async fn decide(
    config: &PlannerConfig,
    bus: &Bus,
    view: &ProjectionStore<PlannerView>,
    id: &ReleaseId,
) -> Result<Option<u64>, ServiceError> {
    let aggregate = AggregateId::Release(id.clone());
    loop {
        let loaded = bus.load(&aggregate).await?;
        // One span per attempt, in the release's trace (the request's), so the decision's
        // append carries that trace on to the promoter.
        let span = tracing::info_span!(
            "planner.decide",
            service = "planner",
            release = %id,
            outcome = tracing::field::Empty,
        );
        railyard_bus::follow_trace(&span, loaded.trace());
        let attempt = attempt(config, bus, view, id, &aggregate, loaded)
            .instrument(span)
            .await?;
        if let Some(decided) = attempt {
            return Ok(decided);
        }
    }
}

/// One decision attempt on what `loaded` holds: `None` when another append got there first
/// (read again and decide again), else the sequence of the decision when one was appended.
async fn attempt(
    config: &PlannerConfig,
    bus: &Bus,
    view: &ProjectionStore<PlannerView>,
    id: &ReleaseId,
    aggregate: &AggregateId,
    loaded: railyard_bus::Loaded,
) -> Result<Option<Option<u64>>, ServiceError> {
    let state = ReleaseState::fold(&loaded.events).map_err(|source| ServiceError::Fold {
        release: id.clone(),
        source,
    })?;
    let Some(state) = state else {
        return Ok(Some(None));
    };
    if state.status != Status::Requested {
        tracing::Span::current().record("outcome", "decided already");
        return Ok(Some(None)); // decided already; the projection will catch up.
    }
    let requested = loaded
        .events
        .iter()
        .find(|e| matches!(e.event, Event::ReleaseRequested(_)))
        .expect("a requested release has its request");
    let Event::ReleaseRequested(request) = &requested.event else {
        unreachable!()
    };

    let inventory = read_inventory(view).await?;
    let in_flight = read_in_flight(view, id).await?;
    let input = PlanInput {
        catalog: &config.catalog,
        release: request,
        inventory: &inventory,
        in_flight: &in_flight,
    };
    let decision = match railyard_plan::plan(&input) {
        Ok(plan) => {
            tracing::Span::current().record("outcome", "planned");
            info!(release = %id, steps = plan.steps.len(), waves = plan.waves.len(), "planned");
            Event::ReleasePlanned(ReleasePlanned { plan })
        }
        Err(refusals) => {
            tracing::Span::current().record("outcome", "refused");
            info!(release = %id, reasons = refusals.reasons.len(), "refused");
            Event::ReleaseRejected(ReleaseRejected {
                catalog_hash: refusals.catalog_hash.clone(),
                reasons: refusals.refusals(),
            })
        }
    };
    let event =
        Envelope::new(aggregate.clone(), ACTOR, config.clock.now(), decision).caused_by(requested);
    match bus
        .append(
            aggregate,
            Expected::Sequence(loaded.last_sequence),
            &[event],
        )
        .await
    {
        Ok(appended) => Ok(Some(Some(appended.sequence))),
        Err(AppendError::Conflict { .. }) => Ok(None), // re-read and decide again
        Err(error) => Err(error.into()),
    }
}

async fn read_inventory(view: &ProjectionStore<PlannerView>) -> Result<Inventory, ServiceError> {
    let mut inventory = BTreeMap::new();
    for entry in view.scan_prefix(INVENTORY).await? {
        let name = String::from_utf8_lossy(&entry.0[INVENTORY.len()..]).into_owned();
        let (Ok(env), Ok(value)) = (EnvName::new(name), serde_json::from_slice(&entry.1)) else {
            continue;
        };
        inventory.insert(env, value);
    }
    Ok(Inventory(inventory))
}

/// Every release requested before `id` that has not ended, in request order.
async fn read_in_flight(
    view: &ProjectionStore<PlannerView>,
    id: &ReleaseId,
) -> Result<Vec<InFlight>, ServiceError> {
    let own: Option<Tracked> = view.get_json(format!("{RELEASE}{id}")).await?;
    let before = own.map_or(u64::MAX, |t| t.sequence);
    let mut out = Vec::new();
    for entry in view.scan_prefix(RELEASE).await? {
        let name = String::from_utf8_lossy(&entry.0[RELEASE.len()..]).into_owned();
        let (Ok(release), Ok(tracked)) = (
            ReleaseId::new(name),
            serde_json::from_slice::<Tracked>(&entry.1),
        ) else {
            continue;
        };
        if tracked.sequence < before {
            out.push(InFlight {
                release,
                sequence: tracked.sequence,
                changes: tracked.changes,
                remaining: tracked.remaining,
            });
        }
    }
    out.sort_by_key(|f| f.sequence);
    Ok(out)
}

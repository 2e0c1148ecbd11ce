//! [`run`]: one promotion worker. Three tasks: the read model of releases in flight follows the
//! event stream; the dispatcher looks at each release the stream touches (and sweeps every
//! release in flight on the clock) and offers work; the work loop takes offered steps and
//! rollbacks from the shared work-queue consumer and runs them, at most
//! `max_concurrent_steps` at a time. Dropping or cancelling the worker stops every step it
//! runs; their leases then expire and other workers resume them.

use std::collections::BTreeSet;
use std::sync::Arc;

use futures::StreamExt;
use railyard_bus::{Bus, ConsumerSpec, WorkItem};
use railyard_core::ReleaseId;
use railyard_store::{ProjectionStore, RunOptions, Store, StoreConfig};
use tokio::sync::Semaphore;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, warn};

use crate::config::PromoterConfig;
use crate::dispatch::evaluate;
use crate::error::PromoterError;
use crate::exec::{Ctx, NotTaken, execute, take_step};
use crate::rollback::{RollbackEnd, roll_back};
use crate::view::{self, PromoterView};
use crate::work::{WORK_CONSUMER, WORK_FILTER, WorkOrder};

/// Releases the dispatcher looks at concurrently.
const DISPATCH_CONCURRENCY: usize = 8;

fn check(config: &PromoterConfig, bus: &Bus) -> Result<(), PromoterError> {
    let ttl = bus.config().lease_ttl;
    if config.lease_renew_interval.is_zero() || config.lease_renew_interval * 2 > ttl {
        return Err(PromoterError::Config(format!(
            "lease_renew_interval {:?} must be above zero and at most half the bus's lease_ttl {ttl:?}: renew more often or raise lease_ttl",
            config.lease_renew_interval
        )));
    }
    if config.worker_id.trim().is_empty() {
        return Err(PromoterError::Config(
            "worker_id is empty: give each worker a unique id (host and process id work)"
                .to_owned(),
        ));
    }
    for (i, env) in config.catalog.environments.iter().enumerate() {
        for (j, window) in env.freeze.iter().enumerate() {
            crate::freeze::validate(window).map_err(|error| {
                PromoterError::Config(format!(
                    "catalog.environments[{i}].freeze[{j}] ({}): {error}",
                    env.name
                ))
            })?;
        }
    }
    if config.max_concurrent_steps == 0 || config.sweep_interval.is_zero() {
        return Err(PromoterError::Config(
            "max_concurrent_steps and sweep_interval must be above zero".to_owned(),
        ));
    }
    Ok(())
}

/// Runs one promotion worker until `shutdown` is cancelled. Any number may run against one
/// NATS, each with its own `worker_id` and `store`.
pub async fn run(
    config: PromoterConfig,
    bus: Bus,
    shutdown: CancellationToken,
) -> Result<(), PromoterError> {
    check(&config, &bus)?;
    let store = Store::open(StoreConfig::new(&config.store)).await?;
    let (hints, hinted) = tokio::sync::mpsc::unbounded_channel();
    let view = store.projection(PromoterView::new(Some(hints))).await?;
    let ctx = Ctx::new(config, bus.clone());
    info!(worker = ctx.worker(), "promotion worker starting");
    let stop = shutdown.child_token();
    let mut tasks: JoinSet<(&'static str, Result<(), PromoterError>)> = JoinSet::new();
    {
        let (bus, view, stop) = (bus.clone(), view.clone(), stop.clone());
        tasks.spawn(async move {
            let run = railyard_store::run_projection(
                &bus,
                &view,
                &RunOptions::default(),
                stop.cancelled_owned(),
            )
            .await;
            ("read model", run.map(|_| ()).map_err(PromoterError::from))
        });
    }
    {
        let (ctx, view, stop) = (ctx.clone(), view.clone(), stop.clone());
        tasks.spawn(async move { ("dispatcher", dispatch_loop(ctx, view, hinted, stop).await) });
    }
    {
        let (ctx, stop) = (ctx.clone(), stop.clone());
        tasks.spawn(async move { ("work loop", work_loop(ctx, stop).await) });
    }
    let mut outcome = Ok(());
    tokio::select! {
        () = shutdown.cancelled() => {}
        Some(ended) = tasks.join_next() => {
            outcome = match ended {
                Ok((_, Err(error))) => Err(error),
                Ok((task, Ok(()))) if !shutdown.is_cancelled() => Err(PromoterError::Task {
                    task,
                    detail: "it stopped although the worker was not shut down (was the bus closed?)".to_owned(),
                }),
                Ok(_) => Ok(()),
                Err(error) => Err(PromoterError::Task { task: "promoter", detail: error.to_string() }),
            };
        }
    }
    stop.cancel();
    while let Some(ended) = tasks.join_next().await {
        if let Ok((task, Err(error))) = ended {
            warn!(task, %error, "promoter task failed while stopping");
        }
    }
    info!(worker = ctx.worker(), "promotion worker stopped");
    outcome
}

async fn dispatch_loop(
    ctx: Arc<Ctx>,
    view: ProjectionStore<PromoterView>,
    mut hints: UnboundedReceiver<ReleaseId>,
    stop: CancellationToken,
) -> Result<(), PromoterError> {
    let clock = ctx.config.clock.clone();
    let mut tick = 0i64;
    sweep(&ctx, &view, tick).await?;
    let mut next_sweep = clock.sleep(ctx.config.sweep_interval);
    loop {
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            hint = hints.recv() => {
                let Some(first) = hint else { return Ok(()) };
                let mut batch = BTreeSet::from([first]);
                while let Ok(more) = hints.try_recv() {
                    batch.insert(more);
                }
                futures::stream::iter(batch)
                    .for_each_concurrent(DISPATCH_CONCURRENCY, |id| {
                        let ctx = ctx.clone();
                        async move {
                            if let Err(error) = evaluate(&ctx, &id, None).await {
                                warn!(release = %id, %error, "cannot look at the release; the next sweep tries again");
                            }
                        }
                    })
                    .await;
            }
            () = &mut next_sweep => {
                tick = clock.now().timestamp_millis();
                if let Err(error) = sweep(&ctx, &view, tick).await {
                    warn!(%error, "sweep failed; trying again at the next one");
                }
                next_sweep = clock.sleep(ctx.config.sweep_interval);
            }
        }
    }
}

async fn sweep(
    ctx: &Arc<Ctx>,
    view: &ProjectionStore<PromoterView>,
    tick: i64,
) -> Result<(), PromoterError> {
    let active = view::active(view).await?;
    debug!(releases = active.len(), "sweeping releases in flight");
    futures::stream::iter(active)
        .for_each_concurrent(DISPATCH_CONCURRENCY, |(id, _)| {
            let ctx = ctx.clone();
            async move {
                if let Err(error) = evaluate(&ctx, &id, Some(tick)).await {
                    warn!(release = %id, %error, "cannot look at the release during the sweep");
                }
            }
        })
        .await;
    Ok(())
}

async fn work_loop(ctx: Arc<Ctx>, stop: CancellationToken) -> Result<(), PromoterError> {
    let mut consumer = ctx
        .bus
        .work_consumer(ConsumerSpec::new(WORK_CONSUMER).filter(WORK_FILTER))
        .await?;
    let permits = Arc::new(Semaphore::new(ctx.config.max_concurrent_steps));
    let mut running = JoinSet::new();
    loop {
        while let Some(done) = running.try_join_next() {
            if let Err(error) = done {
                warn!(%error, "a step task panicked");
            }
        }
        let permit = tokio::select! {
            () = stop.cancelled() => return Ok(()),
            permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
        };
        let item = tokio::select! {
            () = stop.cancelled() => return Ok(()),
            next = consumer.next() => match next? {
                Some(item) => item,
                None => return Ok(()),
            },
        };
        let span = item.span();
        let ctx = ctx.clone();
        running.spawn(
            async move {
                handle(ctx, item).await;
                drop(permit);
            }
            .instrument(span),
        );
    }
}

async fn handle(ctx: Arc<Ctx>, item: WorkItem) {
    let order: WorkOrder = match serde_json::from_slice(&item.payload) {
        Ok(order) => order,
        Err(error) => {
            let reason = format!(
                "not a promoter work order ({error}): only railyard-promoter publishes on railyard.work.promoter.>"
            );
            if let Err(error) = item.dead_letter(&reason).await {
                warn!(%error, "cannot dead-letter an unreadable work item");
            }
            return;
        }
    };
    match order {
        WorkOrder::Step { release, step } => match take_step(&ctx, &release, &step).await {
            Ok(Ok(started)) => {
                if let Err(error) = item.ack().await {
                    debug!(%error, "work item ack failed; a duplicate offer will be skipped");
                }
                if let Err(error) = execute(ctx, started).await {
                    warn!(release = %release, step = %step, %error, "step interrupted; it will be resumed");
                }
            }
            Ok(Err(NotTaken::Skip(why))) => {
                debug!(release = %release, step = %step, why, "work item skipped");
                if let Err(error) = item.ack().await {
                    debug!(%error, "work item ack failed");
                }
            }
            Err(error) => {
                warn!(release = %release, step = %step, %error, "cannot take the step; retrying later");
                let _ = item.nak(&error.to_string()).await;
            }
        },
        WorkOrder::Rollback {
            release,
            env,
            reason,
            actor,
        } => {
            let reason = if actor == ctx.worker() || actor.starts_with("railyard") {
                reason
            } else {
                format!("{reason} (rollback requested by {actor})")
            };
            match roll_back(&ctx, &release, &env, &reason).await {
                Ok(RollbackEnd::Done) => {
                    let _ = item.ack().await;
                }
                Ok(RollbackEnd::Busy(why)) => {
                    debug!(release = %release, why, "rollback waits");
                    let _ = item.nak(&why).await;
                }
                Err(error) => {
                    warn!(release = %release, %error, "rollback interrupted; retrying later");
                    let _ = item.nak(&error.to_string()).await;
                }
            }
        }
    }
}

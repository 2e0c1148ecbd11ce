//! [`run`]: one promotion worker. Three tasks: the read model of releases in flight follows the
//! event stream (for sweeps, and to know who waits for whom); the dispatcher reads each
//! release event once across all workers (a shared durable consumer), looks at that release
//! and the ones waiting for it, offers work, and sweeps every release in flight on the
//! clock; the work loop takes offered steps and rollbacks from the shared work-queue consumer
//! and runs them, at most `max_concurrent_steps` at a time, and after each step decides what
//! comes next itself instead of waiting for its event to come back, taking the steps of the
//! release that became ready itself, without a hop through the queue (`run_steps`). Dropping
//! or cancelling the worker stops every step it runs; their leases then expire and other
//! workers resume them.

use std::sync::Arc;

use futures::StreamExt;
use railyard_bus::{Bus, ConsumerSpec, DeliverFrom, Delivery, WorkItem};
use railyard_core::release_state::StepStatus;
use railyard_core::{EnvName, Event, Plan, ReleaseId, StepId};
use railyard_store::{ProjectionStore, RunOptions, Store, StoreConfig};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, warn};

use crate::cache::Current;
use crate::config::PromoterConfig;
use crate::ctx::Ctx;
use crate::dispatch::{Kept, Sweep, evaluate, evaluate_from, offer_step};
use crate::error::PromoterError;
use crate::exec::{Prior, Started, Taken, execute, take_step};
use crate::retire::retire;
use crate::rollback::{RollbackEnd, roll_back};
use crate::view::{self, PromoterView};
use crate::work::{WORK_CONSUMER, WORK_FILTER, WorkOrder};

/// Releases the dispatcher looks at concurrently.
const DISPATCH_CONCURRENCY: usize = 32;
/// The durable consumer the workers share to look at each release event once.
const DISPATCH_CONSUMER: &str = "railyard-promoter-dispatch";
/// What the dispatcher reads.
const DISPATCH_FILTER: &str = "railyard.events.release.>";

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
    let store =
        Store::kept_or_open(config.kept_store.as_ref(), StoreConfig::new(&config.store)).await?;
    let view = store.projection(PromoterView).await?;
    let ctx = Ctx::new(config, bus.clone());
    info!(worker = ctx.worker(), "promotion worker starting");
    let stop = shutdown.child_token();
    let mut tasks: JoinSet<(&'static str, Result<(), PromoterError>)> = JoinSet::new();
    {
        let (bus, view, stop) = (bus.clone(), view.clone(), stop.clone());
        let options = RunOptions {
            progress: ctx.config.progress.clone(),
            ..RunOptions::default()
        };
        let clock = ctx.config.clock.clone();
        tasks.spawn(async move {
            let mut backoff = Backoff::default();
            loop {
                let run = railyard_store::run_projection(
                    &bus,
                    &view,
                    &options,
                    stop.clone().cancelled_owned(),
                )
                .await
                .map(|_| ())
                .map_err(PromoterError::from);
                match run {
                    Err(error) if error.is_transient() => {
                        warn!(%error, pause = ?backoff.pause, "the read model lost nats; it reads on from its checkpoint after a pause");
                        if !backoff.wait(&clock, &stop).await {
                            return ("read model", Ok(()));
                        }
                    }
                    ended => return ("read model", ended),
                }
            }
        });
    }
    {
        let (ctx, view, stop) = (ctx.clone(), view.clone(), stop.clone());
        tasks.spawn(async move { ("dispatcher", dispatch_loop(ctx, view, stop).await) });
    }
    {
        let (ctx, view, stop) = (ctx.clone(), view.clone(), stop.clone());
        tasks.spawn(async move { ("work loop", work_loop(ctx, view, stop).await) });
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
    stop: CancellationToken,
) -> Result<(), PromoterError> {
    let clock = ctx.config.clock.clone();
    let open = || {
        ctx.bus.durable(
            // From the beginning when first created, so that an event appended while the
            // first worker starts is not missed; afterwards the consumer keeps its place.
            ConsumerSpec::new(DISPATCH_CONSUMER)
                .filter(DISPATCH_FILTER)
                .deliver(DeliverFrom::All),
        )
    };
    let mut backoff = Backoff::default();
    let Some(mut consumer) =
        open_patiently("dispatcher", &clock, &stop, &mut backoff, open).await?
    else {
        return Ok(());
    };
    // The first sweep, as the worker starts, is a backstop; so is every BACKSTOP_EVERY-th,
    // and the one after a backstop that failed.
    let mut sweeps = 0u64;
    let mut backstop_owed = false;
    if let Err(error) = sweep(
        &ctx,
        &view,
        Sweep {
            tick: 0,
            backstop: true,
        },
    )
    .await
    {
        warn!(%error, "the first sweep failed; the next one looks at every release");
        backstop_owed = true;
    }
    let mut next_sweep = clock.sleep(ctx.config.sweep_interval);
    let permits = Arc::new(Semaphore::new(DISPATCH_CONCURRENCY));
    let mut running = JoinSet::new();
    loop {
        while running.try_join_next().is_some() {}
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            next = consumer.next() => {
                let delivery = match next {
                    Ok(Some(delivery)) => delivery,
                    Ok(None) => return Ok(()),
                    // The events it has not acked come again from the new consumer; the
                    // deliveries being looked at, and every step this worker runs, go on.
                    Err(error) => {
                        let Some(again) =
                            reopen("dispatcher", error, &clock, &stop, &mut backoff, open).await?
                        else {
                            return Ok(());
                        };
                        consumer = again;
                        continue;
                    }
                };
                backoff = Backoff::default();
                let permit = tokio::select! {
                    () = stop.cancelled() => return Ok(()),
                    permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
                };
                let (ctx, view) = (ctx.clone(), view.clone());
                let span = delivery.span();
                running.spawn(
                    async move {
                        dispatch_delivery(&ctx, &view, delivery).await;
                        drop(permit);
                    }
                    .instrument(span),
                );
            }
            () = &mut next_sweep => {
                sweeps += 1;
                let at = Sweep {
                    tick: clock.now().timestamp_millis(),
                    backstop: backstop_owed || sweeps % BACKSTOP_EVERY == 0,
                };
                match sweep_once(&ctx, &view, at).await {
                    Ok(()) => backstop_owed = false,
                    Err(error) => {
                        warn!(%error, "sweep failed; trying again at the next one");
                        backstop_owed |= at.backstop;
                    }
                }
                next_sweep = clock.sleep(ctx.config.sweep_interval);
            }
        }
    }
}

/// Looks at the release an event belongs to, and at the releases waiting for it; acks (without
/// waiting) when done, or gives the event back to be looked at again after the backoff.
async fn dispatch_delivery(
    ctx: &Arc<Ctx>,
    view: &ProjectionStore<PromoterView>,
    delivery: Delivery,
) {
    // Acks here are not waited for (`ack_unconfirmed`): one lost on the way only brings the
    // event back, and looking at a release again re-offers what was offered, under the same
    // message ids. Most events are left alone, so a confirmed ack was a round trip to NATS
    // for nothing (about 2.7 per step).
    let Some(release) = delivery.release() else {
        let _ = delivery.ack_unconfirmed().await;
        return;
    };
    if left_alone(&delivery.envelopes) {
        let _ = delivery.ack_unconfirmed().await;
        return;
    }
    let mut releases = vec![release.clone()];
    if delivery.envelopes.iter().any(|e| unblocks_others(&e.event)) {
        match view::waiters(view, &release).await {
            Ok(waiters) => releases.extend(waiters),
            Err(error) => {
                warn!(release = %release, %error, "cannot read who waits for the release; the next sweep looks at them")
            }
        }
    }
    for id in &releases {
        if let Err(error) = evaluate(ctx, id, None).await {
            warn!(release = %id, %error, "cannot look at the release; it is looked at again");
            let _ = delivery.nak(&error.to_string()).await;
            return;
        }
    }
    if let Err(error) = delivery.ack_unconfirmed().await {
        debug!(%error, "dispatch ack failed; the event will be looked at again");
    }
}

/// Whether the dispatcher leaves the events of one append alone:
/// - a step starting, a gate result along the way, an approval being asked for cannot change
///   what a release does next (and half of a release's events are steps starting: looking
///   again would only re-offer, deduplicated, what was already offered);
/// - a step's outcome recorded by the worker that ran it (`step.succeeded` or `step.failed`,
///   with the hold its failure policy adds) is looked at by that worker right after it
///   recorded it, together with the releases waiting for it ([`run_order`]); looking again
///   here would read the release a second time and offer what that worker just offered. A
///   worker that dies in between leaves it to the next sweep (within `sweep_interval`).
///   Outcomes other writers record come with the event that explains them (an approval, a
///   denial), so they are not left alone.
fn left_alone(envelopes: &[railyard_core::Envelope]) -> bool {
    let nothing_next = |event: &Event| {
        matches!(
            event,
            Event::StepStarted(_) | Event::GateEvaluated(_) | Event::ApprovalRequested(_)
        )
    };
    let worker_outcome = |event: &Event| {
        matches!(
            event,
            Event::StepSucceeded(_) | Event::StepFailed(_) | Event::ReleaseHeld(_)
        )
    };
    envelopes.iter().all(|e| nothing_next(&e.event))
        || (envelopes
            .iter()
            .any(|e| matches!(e.event, Event::StepSucceeded(_) | Event::StepFailed(_)))
            && envelopes.iter().all(|e| worker_outcome(&e.event)))
}

/// Whether an event may let a release that waits for this one go on.
fn unblocks_others(event: &Event) -> bool {
    matches!(
        event,
        Event::StepSucceeded(_)
            | Event::ReleaseCompleted(_)
            | Event::ReleaseRolledBack(_)
            | Event::ReleaseCancelled(_)
            | Event::ReleaseRejected(_)
    )
}

/// One worker sweeps at a time (the holder of the `sweep` lease): every worker looking at
/// every release in flight each interval multiplies the reads by the number of workers and
/// finds nothing more. A worker that dies mid-sweep leaves the lease to expire.
async fn sweep_once(
    ctx: &Arc<Ctx>,
    view: &ProjectionStore<PromoterView>,
    at: Sweep,
) -> Result<(), PromoterError> {
    let Some(lease) = ctx.leases.acquire(SWEEP_LEASE).await? else {
        debug!("another worker is sweeping");
        return Ok(());
    };
    let swept = sweep(ctx, view, at).await;
    if let Err(error) = lease.release().await {
        debug!(%error, "sweep lease already gone");
    }
    swept
}

/// The lease the sweeping worker holds.
const SWEEP_LEASE: &str = "sweep";

/// Every how many sweeps of a worker one re-offers ready steps even while the queue holds
/// an offer for their release (see [`Sweep::backstop`]).
const BACKSTOP_EVERY: u64 = 4;

async fn sweep(
    ctx: &Arc<Ctx>,
    view: &ProjectionStore<PromoterView>,
    at: Sweep,
) -> Result<(), PromoterError> {
    let active = view::active(view).await?;
    debug!(releases = active.len(), "sweeping releases in flight");
    futures::stream::iter(active)
        .for_each_concurrent(DISPATCH_CONCURRENCY, |(id, _)| {
            let ctx = ctx.clone();
            async move {
                if let Err(error) = evaluate(&ctx, &id, Some(at)).await {
                    warn!(release = %id, %error, "cannot look at the release during the sweep");
                }
            }
        })
        .await;
    Ok(())
}

async fn work_loop(
    ctx: Arc<Ctx>,
    view: ProjectionStore<PromoterView>,
    stop: CancellationToken,
) -> Result<(), PromoterError> {
    let clock = ctx.config.clock.clone();
    let open = || {
        ctx.bus
            .work_consumer(ConsumerSpec::new(WORK_CONSUMER).filter(WORK_FILTER))
    };
    let mut backoff = Backoff::default();
    let Some(mut consumer) = open_patiently("work loop", &clock, &stop, &mut backoff, open).await?
    else {
        return Ok(());
    };
    let permits = ctx.step_permits.clone();
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
            next = consumer.next() => match next {
                Ok(Some(item)) => item,
                Ok(None) => return Ok(()),
                // The steps running go on: only taking new ones waits.
                Err(error) => {
                    let Some(again) =
                        reopen("work loop", error, &clock, &stop, &mut backoff, open).await?
                    else {
                        return Ok(());
                    };
                    consumer = again;
                    continue;
                }
            },
        };
        backoff = Backoff::default();
        let span = item.span();
        let (ctx, view) = (ctx.clone(), view.clone());
        running.spawn(handle(ctx, view, item, permit).instrument(span));
    }
}

/// Handles one work item under `permit`, which is given back when what it started ends.
async fn handle(
    ctx: Arc<Ctx>,
    view: ProjectionStore<PromoterView>,
    item: WorkItem,
    permit: OwnedSemaphorePermit,
) {
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
    let span = match &order {
        WorkOrder::Step { release, step, .. } => tracing::info_span!(
            "promoter.step",
            service = "promoter",
            release = %release,
            step = %step,
            worker = ctx.worker()
        ),
        WorkOrder::Rollback { release, env, .. } => tracing::info_span!(
            "promoter.rollback",
            service = "promoter",
            release = %release,
            env = %env,
            worker = ctx.worker()
        ),
        WorkOrder::Retire { release } => tracing::info_span!(
            "promoter.retire",
            service = "promoter",
            release = %release,
            worker = ctx.worker()
        ),
    };
    // Every step of a release, on any worker, joins the release's one trace.
    railyard_bus::follow_trace(&span, &ctx.releases.trace_of(order.release()).await);
    run_order(ctx, view, item, order, permit)
        .instrument(span)
        .await;
}

async fn run_order(
    ctx: Arc<Ctx>,
    view: ProjectionStore<PromoterView>,
    item: WorkItem,
    order: WorkOrder,
    permit: OwnedSemaphorePermit,
) {
    match order {
        WorkOrder::Step {
            release,
            step,
            with,
        } => match take_step(&ctx, &release, &step, None).await {
            // Not waited for: a second delivery of the offer finds the step taken and skips it.
            Ok(Taken::Started(started)) => {
                if let Err(error) = item.ack_unconfirmed().await {
                    debug!(%error, "work item ack failed; a duplicate offer will be skipped");
                }
                run_steps(&ctx, &view, &release, Some((*started, permit)), with).await;
            }
            Ok(Taken::Skipped(why)) => {
                debug!(release = %release, step = %step, why, "work item skipped");
                if let Err(error) = item.ack_unconfirmed().await {
                    debug!(%error, "work item ack failed");
                }
                // The steps ready with it may start all the same (its environment frozen,
                // theirs not): each is taken under a permit of its own, this item's given back.
                drop(permit);
                if !with.is_empty() {
                    run_steps(&ctx, &view, &release, None, with).await;
                }
            }
            Err(error) => {
                warn!(release = %release, step = %step, error = %railyard_bus::error_chain(&error), "cannot take the step; retrying later");
                let _ = item.nak(&error.to_string()).await;
            }
        },
        WorkOrder::Rollback {
            release,
            env,
            reason,
            actor,
            partial,
        } => {
            let reason = if actor == ctx.worker() || actor.starts_with("railyard") {
                reason
            } else {
                format!("{reason} (rollback requested by {actor})")
            };
            match roll_back(&ctx, &release, &env, &reason, partial).await {
                Ok(RollbackEnd::Done) => {
                    let _ = item.ack().await;
                }
                Ok(RollbackEnd::Busy(why)) => {
                    debug!(release = %release, why, "rollback waits");
                    let _ = item.nak(&why).await;
                }
                Err(error) => {
                    warn!(release = %release, error = %railyard_bus::error_chain(&error), "rollback interrupted; retrying later");
                    let _ = item.nak(&error.to_string()).await;
                }
            }
        }
        WorkOrder::Retire { release } => match retire(&ctx, &release).await {
            Ok(()) => {
                let _ = item.ack().await;
                // Every old colour is down: the release completes now.
                if let Err(error) = evaluate(&ctx, &release, None).await {
                    debug!(release = %release, %error, "cannot look at the release after retiring its old colours; the dispatcher will");
                }
            }
            Err(error) => {
                warn!(release = %release, error = %railyard_bus::error_chain(&error), "retiring old colours interrupted; retrying later");
                let _ = item.nak(&error.to_string()).await;
            }
        },
    }
}

/// The pause before a task of the worker tries NATS again: 100 ms, doubling to 5 s. A task
/// that lost NATS waits on its own, so the steps the worker runs meanwhile go on (restarting
/// the whole worker would stop them, and another worker would run them again).
#[derive(Debug)]
struct Backoff {
    pause: std::time::Duration,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff {
            pause: std::time::Duration::from_millis(100),
        }
    }
}

impl Backoff {
    /// Waits the pause on `clock` and doubles it; `false` when the worker stops meanwhile.
    async fn wait(&mut self, clock: &railyard_core::SharedClock, stop: &CancellationToken) -> bool {
        tokio::select! {
            () = stop.cancelled() => return false,
            () = clock.sleep(self.pause) => {}
        }
        self.pause = (self.pause * 2).min(std::time::Duration::from_secs(5));
        true
    }
}

/// Opens a consumer with `open`, trying again after a pause while NATS fails on the way;
/// `None` when the worker stops first. Any other failure is the caller's.
async fn open_patiently<T, F, Fut>(
    task: &'static str,
    clock: &railyard_core::SharedClock,
    stop: &CancellationToken,
    backoff: &mut Backoff,
    mut open: F,
) -> Result<Option<T>, PromoterError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, railyard_bus::BusError>>,
{
    loop {
        match open().await {
            Ok(consumer) => return Ok(Some(consumer)),
            Err(error) if error.is_transient() => {
                warn!(task, %error, pause = ?backoff.pause, "cannot open the consumer; trying again after a pause");
            }
            Err(error) => return Err(error.into()),
        }
        if !backoff.wait(clock, stop).await {
            return Ok(None);
        }
    }
}

/// After the consumer failed with `error`: [`open_patiently`] after a pause when NATS failed on
/// the way (the task goes on), the error itself otherwise.
async fn reopen<T, F, Fut>(
    task: &'static str,
    error: railyard_bus::BusError,
    clock: &railyard_core::SharedClock,
    stop: &CancellationToken,
    backoff: &mut Backoff,
    open: F,
) -> Result<Option<T>, PromoterError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, railyard_bus::BusError>>,
{
    if !error.is_transient() {
        return Err(error.into());
    }
    warn!(task, %error, "the consumer lost nats; the task reads on after a pause");
    if !backoff.wait(clock, stop).await {
        return Ok(None);
    }
    open_patiently(task, clock, stop, backoff, open).await
}

/// Runs `first` (under `permit`), then what follows it on this worker. The worker that
/// recorded a step's outcome decides what comes next at once, from the copy of the release it
/// appended (no read), for the release and the ones waiting for it (the dispatcher leaves that
/// to it, see `left_alone`). The steps of the release that became ready it takes itself,
/// without a hop through the work queue: the first runs next under the same permit, each
/// other one under a permit of its own when one is free (else it is offered), in a task of
/// its own here. So a release's parallel steps run on one worker, which appends on its own
/// copy of the release instead of reading it after another worker's append. The releases
/// waiting for this one are looked at while that step runs (nothing comes between a step's
/// start and its body). A worker that dies before a step it kept is started leaves it to the
/// next sweep, as it would an unoffered step; once started, it is a step like any other (its
/// lease expires and a sweep re-offers it). `with`, the steps of `release` offered together
/// with `first` (or with a step this worker skipped, when there is no `first`), are taken the
/// same way as the other steps an outcome made ready. Returns when every step started here has
/// ended; dropping it stops them all.
async fn run_steps(
    ctx: &Arc<Ctx>,
    view: &ProjectionStore<PromoterView>,
    release: &ReleaseId,
    first: Option<(Started, OwnedSemaphorePermit)>,
    with: Vec<StepId>,
) {
    let (spawner, mut spawned) = tokio::sync::mpsc::unbounded_channel::<Task>();
    let prior = match &first {
        Some((started, _)) => Some(started.prior()),
        // Read once for all of them (each take would read the release otherwise).
        None if !with.is_empty() => match ctx.releases.load(release).await {
            Ok(Some(current)) => Some(Prior {
                current,
                externals: Default::default(),
            }),
            Ok(None) => {
                debug!(release = %release, "steps offered for a release with no events; nothing to take");
                return;
            }
            Err(error) => {
                debug!(release = %release, %error, "cannot read the release to take the steps offered with a skipped one; each take reads it");
                None
            }
        },
        None => None,
    };
    spawn_take_others(&spawner, ctx, view, release, with, prior);
    let first = async move {
        if let Some((started, permit)) = first {
            run_chain(
                ctx.clone(),
                view.clone(),
                started,
                tracing::Span::current(),
                permit,
                spawner,
            )
            .await;
        }
    };
    let others = async move {
        let mut tasks = JoinSet::new();
        loop {
            tokio::select! {
                next = spawned.recv() => match next {
                    Some(task) => {
                        tasks.spawn(task);
                    }
                    // Every chain (the senders) has ended.
                    None => break,
                },
                Some(done) = tasks.join_next(), if !tasks.is_empty() => log_panic(done),
            }
        }
        while let Some(done) = tasks.join_next().await {
            log_panic(done);
        }
    };
    tokio::join!(first, others);
}

fn log_panic(done: Result<(), tokio::task::JoinError>) {
    if let Err(error) = done {
        warn!(%error, "a step task panicked");
    }
}

/// What a chain of steps hands to [`run_steps`] to run beside it: taking the other steps an
/// outcome made ready, and running each.
type Task = futures::future::BoxFuture<'static, ()>;

/// Where a chain sends its [`Task`]s.
type Spawner = tokio::sync::mpsc::UnboundedSender<Task>;

/// Runs `started`, then the next step of its release its outcome made ready, and so on, under
/// `permit`; the other steps made ready are handed to `spawner` ([`take_others`]).
/// (Boxed: a chain's task may start further chains.)
fn run_chain(
    ctx: Arc<Ctx>,
    view: ProjectionStore<PromoterView>,
    started: Started,
    span: tracing::Span,
    permit: OwnedSemaphorePermit,
    spawner: Spawner,
) -> futures::future::BoxFuture<'static, ()> {
    Box::pin(chain(ctx, view, started, span, permit, spawner))
}

async fn chain(
    ctx: Arc<Ctx>,
    view: ProjectionStore<PromoterView>,
    started: Started,
    span: tracing::Span,
    permit: OwnedSemaphorePermit,
    spawner: Spawner,
) {
    let mut next = Some((started, span));
    let mut waiting: Option<Waiting> = None;
    while let Some((started, span)) = next.take() {
        let release = started.release().clone();
        let step = started.step().to_owned();
        let look = waiting.take();
        let (executed, ()) = tokio::join!(
            execute(ctx.clone(), started).instrument(span.clone()),
            async {
                if let Some(look) = look {
                    look_at_waiters(&ctx, &view, look).await;
                }
            }
        );
        let known = match executed {
            Ok(Some(known)) => known,
            Ok(None) => return,
            Err(error) => {
                let _enter = span.enter();
                warn!(release = %release, step = %step, error = %railyard_bus::error_chain(&error), "step interrupted; it will be resumed");
                return;
            }
        };
        // Only a success can let a waiting release go on, and only for the edges it waits on
        // in this step's environment (`external_done`: a step succeeded, in an environment not
        // failed or undone).
        let succeeded_in = known
            .state
            .plan
            .clone()
            .zip(
                known
                    .state
                    .plan
                    .as_ref()
                    .and_then(|p| p.step(&step))
                    .map(|s| s.env.clone()),
            )
            .filter(|_| known.state.steps.get(&step) == Some(&StepStatus::Succeeded));
        let look = Waiting {
            release: release.clone(),
            succeeded_in,
        };
        let kept = async {
            match evaluate_from(&ctx, &release, None, Some(known), Some(step.as_str())).await {
                Ok(kept) => kept,
                Err(error) => {
                    warn!(release = %release, %error, "cannot look at the release after its step; the next sweep will");
                    None
                }
            }
        }
        .instrument(span)
        .await;
        next = match kept {
            Some(Kept { steps, prior }) => {
                let mut steps = steps.into_iter();
                let first = steps.next().expect("kept steps are never empty");
                let next = hand_over(&ctx, &release, first, Some(prior.clone())).await;
                spawn_take_others(
                    &spawner,
                    &ctx,
                    &view,
                    &release,
                    steps.collect(),
                    Some(prior),
                );
                next
            }
            None => None,
        };
        if next.is_some() {
            waiting = Some(look); // looked at while the next step runs
        } else {
            look_at_waiters(&ctx, &view, look).await;
        }
    }
    drop(permit);
}

/// Hands [`take_others`] of `steps` (when there are any) to `spawner`.
fn spawn_take_others(
    spawner: &Spawner,
    ctx: &Arc<Ctx>,
    view: &ProjectionStore<PromoterView>,
    release: &ReleaseId,
    steps: Vec<StepId>,
    prior: Option<Prior>,
) {
    if steps.is_empty() {
        return;
    }
    let task = take_others(
        ctx.clone(),
        view.clone(),
        release.clone(),
        steps,
        prior,
        spawner.clone(),
    );
    // Fails only once `run_steps` is gone, and then nothing runs any more.
    let _ = spawner.send(Box::pin(task));
}

/// Takes `steps` of `release` (made ready by one outcome, or offered together, after the
/// first, which its chain took) one after the other, each under a permit of its own, deciding
/// on `prior` when given, and hands each one started to `spawner` to run as a chain of its
/// own. A step for which no permit is free is offered to every worker, as is one that cannot
/// be taken for an error.
async fn take_others(
    ctx: Arc<Ctx>,
    view: ProjectionStore<PromoterView>,
    release: ReleaseId,
    steps: Vec<StepId>,
    prior: Option<Prior>,
    spawner: Spawner,
) {
    let mut seen = std::collections::BTreeSet::new();
    for step in steps {
        // A step twice, or one not in the plan (`with` is read from the work queue), is
        // neither taken nor offered: nothing is read or sent for it.
        let planned = |prior: &Prior| {
            prior
                .current
                .state
                .plan
                .as_ref()
                .is_some_and(|plan| plan.step(&step).is_some())
        };
        if !seen.insert(step.clone()) || prior.as_ref().is_some_and(|p| !planned(p)) {
            debug!(release = %release, step = %step, "not a step of the release to take (again)");
            continue;
        }
        let Ok(permit) = ctx.step_permits.clone().try_acquire_owned() else {
            debug!(release = %release, step = %step, "no permit free for another step; offering it");
            offer_or_leave(&ctx, &release, prior.as_ref().map(|p| &p.current), step).await;
            continue;
        };
        // Each take appends on this worker's copy, which the take before it moved on
        // (`Releases::freshest`).
        if let Some((started, span)) = hand_over(&ctx, &release, step, prior.clone()).await {
            let chain = run_chain(
                ctx.clone(),
                view.clone(),
                started,
                span,
                permit,
                spawner.clone(),
            );
            let _ = spawner.send(chain);
        }
    }
}

/// The releases waiting for `release` to look at after one of its steps, and where that step
/// succeeded (`None`: it did not, or its environment is unknown; every waiter is looked at).
struct Waiting {
    release: ReleaseId,
    succeeded_in: Option<(Arc<Plan>, EnvName)>,
}

/// Looks at the releases waiting for `look.release` that may go on ([`may_go_on`]).
async fn look_at_waiters(ctx: &Arc<Ctx>, view: &ProjectionStore<PromoterView>, look: Waiting) {
    let Waiting {
        release,
        succeeded_in,
    } = look;
    match view::waiters(view, &release).await {
        Ok(waiters) => {
            for waiter in waiters {
                if let Some((plan, env)) = &succeeded_in {
                    if !may_go_on(ctx, &waiter, &release, plan, env) {
                        continue;
                    }
                }
                if let Err(error) = evaluate(ctx, &waiter, None).await {
                    warn!(release = %waiter, %error, "cannot look at a release waiting for this one; the next sweep will");
                }
            }
        }
        Err(error) => {
            warn!(release = %release, %error, "cannot read who waits for the release; the next sweep looks at them");
        }
    }
}

/// Whether `waiter` may go on now that a step of `release` (whose plan is `plan`) succeeded
/// in `env`: when this worker's copy of it shows an external edge from a step of `release` in
/// `env`, or when it keeps no copy with a plan (then it is looked at). The plan of a release
/// never changes once planned, so an old copy tells.
fn may_go_on(
    ctx: &Ctx,
    waiter: &ReleaseId,
    release: &ReleaseId,
    plan: &Plan,
    env: &EnvName,
) -> bool {
    ctx.releases
        .cached(waiter, |current| {
            current.state.plan.as_ref().map(|waiting| {
                waiting.external_edges.iter().any(|edge| {
                    &edge.release == release
                        && plan.step(&edge.from).is_none_or(|from| &from.env == env)
                })
            })
        })
        .flatten()
        .unwrap_or(true)
}

/// Takes `step`, a step of `release` an outcome made ready (or offered with another), on this
/// worker, deciding on `prior` when given (else reading the release); offers it to every
/// worker when it cannot be taken for an error (a step skipped is skipped as its work item
/// would be).
async fn hand_over(
    ctx: &Arc<Ctx>,
    release: &ReleaseId,
    step: StepId,
    prior: Option<Prior>,
) -> Option<(Started, tracing::Span)> {
    let span = step_span(ctx, release, &step);
    let trace = match &prior {
        Some(prior) => prior.current.trace.clone(),
        None => ctx.releases.trace_of(release).await,
    };
    railyard_bus::follow_trace(&span, &trace);
    let current = prior.as_ref().map(|p| p.current.clone());
    match take_step(ctx, release, &step, prior)
        .instrument(span.clone())
        .await
    {
        Ok(Taken::Started(started)) => Some((*started, span)),
        Ok(Taken::Skipped(why)) => {
            debug!(release = %release, step = %step, why, "next step not taken");
            None
        }
        Err(error) => {
            warn!(release = %release, step = %step, %error, "cannot take the next step; offering it to every worker");
            offer_or_leave(ctx, release, current.as_ref(), step).await;
            None
        }
    }
}

/// Offers `step` to every worker, as of `current` (this worker's copy of the release, read
/// when not given); a failure leaves it to the next sweep.
async fn offer_or_leave(ctx: &Ctx, release: &ReleaseId, current: Option<&Current>, step: StepId) {
    let offered = match current {
        Some(current) => offer_step(ctx, current, step, "").await,
        None => match ctx.releases.load(release).await {
            Ok(Some(current)) => offer_step(ctx, &current, step, "").await,
            Ok(None) => Ok(()),
            Err(error) => Err(error),
        },
    };
    if let Err(error) = offered {
        warn!(release = %release, %error, "cannot offer the next step; the next sweep will");
    }
}

/// The span of one step on this worker, outside any other (the caller joins it to the
/// release's trace).
fn step_span(ctx: &Ctx, release: &ReleaseId, step: &str) -> tracing::Span {
    tracing::info_span!(
        parent: None,
        "promoter.step",
        service = "promoter",
        release = %release,
        step = %step,
        worker = ctx.worker()
    )
}

//! The dispatcher: looks at a release after each of its events (and at every release in flight
//! on each sweep) and does what [`decide::next`] says — offers ready steps on `RAILYARD_WORK`
//! (those of one release ready at once as one work item, for one worker to take them all),
//! records `release.completed`, or offers the rollback of an environment. Offers carry message
//! ids derived from the state they answer, so every worker may dispatch and each offer is stored
//! once; sweeps also re-offer steps whose worker died (their lease is free) and lost work,
//! and resume releases a freeze held once the freeze has ended on the clock.

use std::sync::Arc;

use railyard_core::event::{Reasoned, ReleaseCompleted};
use railyard_core::release_state::StepStatus;
use railyard_core::{Action, Event, ReleaseId, ReleaseState, Status, StepId};
use tracing::{debug, info};

use crate::cache::{Current, external_done};
use crate::ctx::Ctx;
use crate::decide::{self, Next};
use crate::error::PromoterError;
use crate::exec::Prior;
use crate::freeze;
use crate::retire;
use crate::work::{WorkOrder, step_lease, work_subject};

/// A sweep's look at a release in flight.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sweep {
    /// Makes the sweep's offers new messages (not deduplicated against earlier offers).
    pub(crate) tick: i64,
    /// Re-offer ready steps even while an offer of the release waits in the queue: the
    /// backstop for an item that stays there without being delivered any more (it used up
    /// its deliveries while no dead-letter forwarder ran to take it out).
    pub(crate) backstop: bool,
}

/// Looks at `release` and acts; a `sweep` also re-offers orphaned work.
pub(crate) async fn evaluate(
    ctx: &Arc<Ctx>,
    release: &ReleaseId,
    sweep: Option<Sweep>,
) -> Result<(), PromoterError> {
    evaluate_from(ctx, release, sweep, None, None)
        .await
        .map(|_| ())
}

/// The ready steps [`evaluate_from`] did not offer, for its caller to take itself
/// ([`crate::exec::take_step`]) or offer, with what it decided on.
#[derive(Debug)]
pub(crate) struct Kept {
    /// In plan order; never empty.
    pub(crate) steps: Vec<StepId>,
    pub(crate) prior: Prior,
}

/// [`evaluate`], deciding first on `known` (this worker's copy of the release, as it just
/// appended it) instead of reading the release; a conflict reads it.
///
/// With `finished`, the step whose outcome this worker just recorded: only the steps it made
/// ready (those it precedes) are looked at, and they are not offered but handed back to the
/// caller, which takes them or offers them. The other ready steps were made ready by an
/// earlier event, and whoever handled that one offered them (a sweep offers what a worker
/// that died in between did not).
pub(crate) async fn evaluate_from(
    ctx: &Arc<Ctx>,
    release: &ReleaseId,
    sweep: Option<Sweep>,
    mut known: Option<Current>,
    finished: Option<&str>,
) -> Result<Option<Kept>, PromoterError> {
    loop {
        let current = match known.take() {
            Some(current) => ctx.releases.freshest(current),
            None => match ctx.releases.load(release).await? {
                Some(current) => current,
                None => return Ok(None),
            },
        };
        let state = &current.state;
        if state.status == Status::Held {
            if let Some(reason) = freeze_ended(ctx, state) {
                let event = ctx
                    .writer
                    .envelope(release, Event::ReleaseResumed(Reasoned { reason }));
                if ctx
                    .writer
                    .append_at(release, current.sequence, &[event])
                    .await?
                    .is_none()
                {
                    continue;
                }
                info!(release = %release, "release resumed: the freeze ended");
            }
            return Ok(None);
        }
        let externals = ctx.releases.others(state).await?;
        let tick = sweep
            .map(|s| format!("/sweep-{}", s.tick))
            .unwrap_or_default();
        let next = decide::next(state, &ctx.config.catalog, &external_done(&externals));
        match next {
            Next::Wait => {}
            Next::Complete => {
                if !retire::pending(&ctx.config.catalog, state).is_empty() {
                    let id = format!("{release}/retire/{}{tick}", current.sequence);
                    let order = WorkOrder::Retire {
                        release: release.clone(),
                    };
                    offer(ctx, order, &id).await?;
                    return Ok(None);
                }
                let event = ctx
                    .writer
                    .envelope(release, Event::ReleaseCompleted(ReleaseCompleted {}));
                if ctx
                    .writer
                    .append_at(release, current.sequence, &[event])
                    .await?
                    .is_none()
                {
                    continue;
                }
                info!(release = %release, "release completed");
                return Ok(None);
            }
            Next::Offer(steps) if finished.is_some() => {
                let plan = state
                    .plan
                    .as_ref()
                    .expect("a release with steps to offer has a plan");
                let made_ready: Vec<StepId> = steps
                    .into_iter()
                    .filter(|step| {
                        plan.predecessors(step)
                            .any(|p| Some(p.as_str()) == finished)
                    })
                    .collect();
                if !made_ready.is_empty() {
                    return Ok(Some(Kept {
                        steps: made_ready,
                        prior: Prior { current, externals },
                    }));
                }
            }
            Next::Offer(steps) => {
                // A sweep re-offers only what may have been lost: while an offer of the
                // release still waits in the queue (or is being handled), the worker that takes
                // it looks at the release again, and re-offering every ready step of every
                // release each sweep would flood the queue when it is long.
                let queued = sweep.is_some_and(|s| !s.backstop)
                    && ctx.bus.work_waiting(&work_subject(release)).await?;
                // One offer for the wave: the worker that takes it takes the rest too.
                if !queued {
                    offer_wave(ctx, &current, steps, &tick).await?;
                }
            }
            Next::RollBack { env, reason } => {
                let id = format!("{release}/rollback/{env}/{}{tick}", current.sequence);
                offer(
                    ctx,
                    WorkOrder::Rollback {
                        release: release.clone(),
                        env,
                        reason,
                        actor: ctx.worker().to_owned(),
                        partial: false,
                    },
                    &id,
                )
                .await?;
                return Ok(None);
            }
        }
        if sweep.is_some() && state.status == Status::Planned {
            resume_orphans(ctx, &current, &tick).await?;
        }
        return Ok(None);
    }
}

/// The reason to resume `state` when it is held by a freeze (see
/// [`crate::freeze::hold_reason`]) and no window of that environment covers the clock's
/// now any more. Other holds (operator, failure, re-validation) are left to operators.
fn freeze_ended(ctx: &Ctx, state: &ReleaseState) -> Option<String> {
    let hold = state.hold.as_ref()?;
    let env = hold.frozen.as_ref()?;
    let windows = ctx
        .config
        .catalog
        .environment(env)
        .map(|e| e.freeze.as_slice())
        .unwrap_or_default();
    let now = ctx.config.clock.now();
    if freeze::active_freeze(windows, now).is_some() {
        return None;
    }
    let was = hold.reason.split(';').next().unwrap_or(&hold.reason);
    Some(format!(
        "the freeze of {env} ended (it was: {was}); promotion continues automatically at {}",
        now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    ))
}

/// Re-offers running steps whose lease is free: their worker died.
async fn resume_orphans(
    ctx: &Arc<Ctx>,
    current: &Current,
    tick: &str,
) -> Result<(), PromoterError> {
    let state = &current.state;
    let Some(plan) = &state.plan else {
        return Ok(());
    };
    for step in &plan.steps {
        if !matches!(state.steps.get(&step.id), Some(StepStatus::Running { .. })) {
            continue;
        }
        if step.action == Action::Approve && state.approvals.contains_key(&step.id) {
            continue; // waits for an approver, not for a worker
        }
        if ctx
            .bus
            .lease_holder(&step_lease(&state.id, &step.id))
            .await?
            .is_some()
        {
            continue;
        }
        let attempts = current.attempts(&step.id);
        let id = format!("{}/{}/{attempts}/resume{tick}", state.id, step.id);
        debug!(release = %state.id, step = %step.id, "re-offering a step whose worker is gone");
        offer(
            ctx,
            WorkOrder::Step {
                release: state.id.clone(),
                step: step.id.clone(),
                with: Vec::new(),
            },
            &id,
        )
        .await?;
    }
    Ok(())
}

/// Offers `step` of the release `current` is a copy of, with the message id of the state it
/// answers (the step and how often it was started), so every offer of that state is stored
/// once. Not waited for (`Bus::publish_work_unconfirmed`): an offer lost on the way (a node
/// going down) leaves the step ready with no offer of its release waiting, which the next
/// sweep offers again (or, while another offer of the release waits, the next backstop sweep,
/// every `BACKSTOP_EVERY`-th).
pub(crate) async fn offer_step(
    ctx: &Ctx,
    current: &Current,
    step: StepId,
    tick: &str,
) -> Result<(), PromoterError> {
    let release = &current.state.id;
    let attempts = current.attempts(&step);
    let id = format!("{release}/{step}/{attempts}{tick}");
    let order = WorkOrder::Step {
        release: release.clone(),
        step,
        with: Vec::new(),
    };
    ctx.bus
        .publish_work_unconfirmed(&order.subject(), order.payload(), &id)
        .await?;
    Ok(())
}

/// Offers the ready `steps` of the release `current` is a copy of as one work item: the first,
/// with the others for the worker that takes it to take too (`WorkOrder::Step::with`). Its
/// message id names every step and how often each was started, so the same wave is stored
/// once and a different one (a step more, or one started since) is a new offer; a sweep's
/// offer adds its `tick`. Not waited for, as [`offer_step`].
async fn offer_wave(
    ctx: &Ctx,
    current: &Current,
    steps: Vec<StepId>,
    tick: &str,
) -> Result<(), PromoterError> {
    let mut steps = steps.into_iter();
    let Some(first) = steps.next() else {
        return Ok(());
    };
    let with: Vec<StepId> = steps.collect();
    if with.is_empty() {
        return offer_step(ctx, current, first, tick).await;
    }
    let release = &current.state.id;
    let id = std::iter::once(&first)
        .chain(&with)
        .map(|step| format!("{step}/{}", current.attempts(step)))
        .collect::<Vec<_>>()
        .join("+");
    let id = format!("{release}/{id}{tick}");
    let order = WorkOrder::Step {
        release: release.clone(),
        step: first,
        with,
    };
    ctx.bus
        .publish_work_unconfirmed(&order.subject(), order.payload(), &id)
        .await?;
    Ok(())
}

async fn offer(ctx: &Ctx, order: WorkOrder, id: &str) -> Result<(), PromoterError> {
    ctx.bus
        .publish_work(&order.subject(), order.payload(), id)
        .await?;
    Ok(())
}

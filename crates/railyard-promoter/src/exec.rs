//! Taking and running one step. [`take_step`] starts a step only by winning its lease and
//! appending `step.started` against the release's last sequence (an approval step asks for its
//! approval and ends there), after the checks a fresh step needs: ready; outside a freeze no
//! approver overrode, or the release is held; the rest of the plan re-validated when the step
//! enters an environment the release has not touched or runs a migration. A conflict re-reads the release and decides
//! again. [`execute`] runs the step's body while renewing the lease — a migration, a deploy with
//! its strategy (`strategy.rs`), a verify step's gates (`verify.rs`) — and records its outcome
//! only while the fold still says the step is its own (`recorder.rs`): `step.succeeded` after
//! the inventory change (`deployed.rs`), or `step.failed`, with `release.held` under a `hold`
//! policy. What comes next is decided by the worker that recorded it (`worker.rs`, which may
//! hand [`take_step`] the copy it appended, so that the next step is taken without a read) or
//! by the dispatcher.

use std::collections::BTreeMap;
use std::sync::Arc;

use railyard_bus::Lease;
use railyard_core::catalog::{OnFailure, Service};
use railyard_core::event::{ApprovalRequested, ReleaseHeld, StepOutcome, StepStarted, StepWaiting};
use railyard_core::release_state::StepStatus;
use railyard_core::{Action, Catalog, Envelope, Event, ReleaseId, ReleaseState, Status, Step};
use tracing::{debug, info, warn};

use crate::adapter::{Form, Outcome, Target};
use crate::cache::{Current, Other, external_done};
use crate::ctx::Ctx;
use crate::decide;
use crate::deployed;
use crate::error::PromoterError;
use crate::freeze;
use crate::lease::{Claim, release_then};
use crate::recorder::{Lost, Recorder};
use crate::revalidate::{Verdict, revalidate};
use crate::strategy;
use crate::verify;
use crate::work::step_lease;

/// A step this worker started: the lease it holds and what it needs to run the step.
#[derive(Debug)]
pub(crate) struct Started {
    lease: Lease,
    _claim: Claim,
    release: ReleaseId,
    step: Step,
    attempt: u32,
    cause: Envelope,
    current: Current,
    /// The releases it waits for, as read to decide it was ready.
    externals: BTreeMap<ReleaseId, Other>,
}

/// What became of a step offered to this worker.
#[derive(Debug)]
pub(crate) enum Taken {
    /// This worker started it: run it with [`execute`].
    Started(Box<Started>),
    /// Nothing to do, for the reason given (logged by the caller).
    Skipped(String),
}

/// What a caller already holds of a release when it hands a step over to [`take_step`]: this
/// worker's copy (the one it just appended, or just read) and the releases it waits for, read
/// with it. Deciding on it needs no read; `step.started` is appended against its sequence, so
/// a copy the release has moved past is a conflict, and the release is read then.
#[derive(Debug, Clone)]
pub(crate) struct Prior {
    pub(crate) current: Current,
    pub(crate) externals: BTreeMap<ReleaseId, Other>,
}

/// Takes `step` of `release` if it may start (or resume) and this worker wins its lease;
/// decides on `prior` first when given, else reads the release.
pub(crate) async fn take_step(
    ctx: &Arc<Ctx>,
    release: &ReleaseId,
    step_id: &str,
    prior: Option<Prior>,
) -> Result<Taken, PromoterError> {
    let skip = |why: String| Ok(Taken::Skipped(why));
    let key = step_lease(release, step_id);
    let Some(claim) = ctx.leases.claim(&key) else {
        return skip("this worker is running it".to_owned());
    };
    let mut lease: Option<Lease> = None;
    // The other releases this one waits for, read once: a pass after a conflict follows within
    // moments and re-reads only this release (their state could change between that read and
    // the step's start either way).
    let (mut known, mut externals) = match prior {
        Some(prior) => (Some(prior.current), Some(prior.externals)),
        None => (None, None),
    };
    let catalog = &ctx.config.catalog;
    loop {
        // Decided on and appended to by one task of this worker at a time: another that just
        // appended (a parallel step's outcome) has moved this worker's copy on, and deciding on
        // that copy spares a conflict.
        let _writing = ctx.releases.writing(release).await;
        let current = match known.take() {
            Some(current) => ctx.releases.freshest(current),
            None => match ctx.releases.load(release).await? {
                Some(current) => current,
                None => return skip("the release has no events".to_owned()),
            },
        };
        let state = &current.state;
        if state.status != Status::Planned {
            return release_then(lease, skip(format!("the release is {}", state.status))).await;
        }
        let Some(step) = state.plan.as_ref().and_then(|p| p.step(step_id)).cloned() else {
            return release_then(lease, skip("the step is not in the plan".to_owned())).await;
        };
        let fresh = match state.steps.get(step_id) {
            Some(StepStatus::Pending) => true,
            Some(StepStatus::Failed { .. })
                if decide::on_failure(&ctx.config.catalog, &step.env) == OnFailure::Hold =>
            {
                true
            }
            Some(StepStatus::Running { .. })
                if step.action == Action::Approve && state.approvals.contains_key(step_id) =>
            {
                return release_then(lease, skip("it waits for an approval".to_owned())).await;
            }
            Some(StepStatus::Running { .. }) => false,
            Some(other) => {
                return release_then(lease, skip(format!("the step is {other:?}"))).await;
            }
            None => return release_then(lease, skip("unknown step".to_owned())).await,
        };
        if fresh {
            let missing = |read: &BTreeMap<ReleaseId, Other>| {
                decide::still_waits_on(state)
                    .iter()
                    .any(|other| !read.contains_key(other))
            };
            if externals.as_ref().is_none_or(missing) {
                externals = Some(ctx.releases.others(state).await?);
            }
            let done = external_done(externals.as_ref().expect("read above"));
            if !decide::ready(state, step_id, &done) {
                return release_then(lease, skip("it waits for other steps".to_owned())).await;
            }
            // An approver's emergency override (`freeze.overridden`) lets the environment's
            // steps start inside the window it overrode, until that window ends; the override
            // stays on the release's record.
            let now = ctx.config.clock.now();
            let overridden = state
                .freeze_overrides
                .get(&step.env)
                .is_some_and(|o| o.until.is_none_or(|until| now < until));
            if let Some(reason) =
                freeze::hold_reason(catalog, ctx.config.clock.now(), &step.env, release)
                    .filter(|_| !overridden)
            {
                if freeze::elsewhere_moving(catalog, ctx.config.clock.now(), state, &done) {
                    // Hold only when nothing outside frozen environments can move: staging
                    // goes on while production waits. Sweeps offer this step again.
                    debug!(release = %release, step = %step.id, %reason, "step waits for a freeze");
                    return release_then(lease, skip("its environment is frozen".to_owned())).await;
                }
                let held = Event::ReleaseHeld(ReleaseHeld {
                    reason: reason.clone(),
                    step: Some(step.id.clone()),
                    owner: None,
                    frozen: Some(step.env.clone()),
                });
                let envelope = ctx.writer.envelope(release, held);
                match ctx
                    .writer
                    .append(release, current.sequence, &[envelope])
                    .await?
                {
                    true => {
                        info!(release = %release, step = %step.id, %reason, "release held: its environment is frozen");
                        return release_then(lease, skip("held by a freeze".to_owned())).await;
                    }
                    false => continue, // someone else moved the release (or held it first)
                }
            }
        }
        if lease.is_none() {
            // Not read again once the lease is won: `step.started` is appended against the
            // sequence of the copy decided on, so a release that moved meanwhile is a
            // conflict, and the next pass reads it.
            match ctx.leases.acquire(&key).await? {
                Some(won) => lease = Some(won),
                None => return skip("another worker holds its lease".to_owned()),
            }
        }
        if fresh && (decide::env_untouched(state, &step.env) || step.action == Action::Migrate) {
            let reason = match revalidate(
                &ctx.config.catalog,
                &ctx.releases,
                &ctx.live,
                &current,
                &step,
            )
            .await?
            {
                Verdict::Safe => None,
                Verdict::Wait(waiting_for, reason) => {
                    // Recorded once per set of releases waited for: the console, Slack and the
                    // audit show why the step stands still; looking again appends nothing.
                    let known = state
                        .waiting
                        .get(step_id)
                        .is_some_and(|w| w.waiting_for == waiting_for);
                    if !known {
                        let waiting = Event::StepWaiting(StepWaiting {
                            step: step.id.clone(),
                            waiting_for,
                            reason: reason.clone(),
                        });
                        let envelope = ctx.writer.envelope(release, waiting);
                        if !ctx
                            .writer
                            .append(release, current.sequence, &[envelope])
                            .await?
                        {
                            continue; // someone else moved the release: decide again
                        }
                        info!(release = %release, step = %step.id, %reason, "step waits for an earlier release");
                    } else {
                        debug!(release = %release, step = %step.id, %reason, "step still waits for an earlier release");
                    }
                    return release_then(lease, skip(reason)).await;
                }
                Verdict::Hold(reason) => Some(reason),
            };
            if let Some(reason) = reason {
                let held = Event::ReleaseHeld(ReleaseHeld {
                    reason: reason.clone(),
                    step: Some(step.id.clone()),
                    owner: decide::owner(catalog, &step),
                    frozen: None,
                });
                let envelope = ctx.writer.envelope(release, held);
                match ctx
                    .writer
                    .append(release, current.sequence, &[envelope])
                    .await?
                {
                    true => {
                        warn!(release = %release, step = %step.id, %reason, "release held: the rest of the plan is no longer safe");
                        return release_then(lease, skip("held after re-validation".to_owned()))
                            .await;
                    }
                    false => continue,
                }
            }
        }
        let attempt = current.attempts(step_id) + 1;
        let mut events = vec![ctx.writer.envelope(
            release,
            Event::StepStarted(StepStarted {
                step: step.id.clone(),
                worker: ctx.worker().to_owned(),
                attempt,
            }),
        )];
        if step.action == Action::Approve {
            let approvers = ctx.config.catalog.approvers(&step.env).to_vec();
            // The approval placed before a point of no return tells the approver what it guards.
            let reason = state.plan.as_ref().and_then(|plan| {
                plan.points_of_no_return
                    .iter()
                    .find(|point| point.approval.as_deref() == Some(step.id.as_str()))
                    .map(|point| {
                        format!("{} is a point of no return: {}", point.step, point.reason)
                    })
            });
            events.push(ctx.writer.envelope(
                release,
                Event::ApprovalRequested(ApprovalRequested {
                    step: step.id.clone(),
                    env: step.env.clone(),
                    approvers,
                    reason,
                }),
            ));
        }
        let cause = events[0].clone();
        let Some(sequence) = ctx
            .writer
            .append_at(release, current.sequence, &events)
            .await?
        else {
            continue; // someone else moved the release: decide again
        };
        info!(release = %release, step = %step.id, attempt, worker = ctx.worker(), "step started");
        let lease = lease.expect("taken above");
        if step.action == Action::Approve {
            // Nothing runs while an approval is awaited: the route completes the step.
            let _ = lease.release_unconfirmed().await;
            return skip("approval requested".to_owned());
        }
        let mut after = current.clone();
        for event in &events {
            after.state = ReleaseState::apply(Some(after.state), event).map_err(|source| {
                PromoterError::Fold {
                    release: release.clone(),
                    source,
                }
            })?;
        }
        after.sequence = sequence;
        after.events.extend(events.into_iter().map(Arc::new));
        ctx.releases.remember(&after);
        return Ok(Taken::Started(Box::new(Started {
            lease,
            _claim: claim,
            release: release.clone(),
            step,
            attempt,
            cause,
            current: after,
            externals: externals.unwrap_or_default(),
        })));
    }
}

impl Started {
    /// The release of the step.
    pub(crate) fn release(&self) -> &ReleaseId {
        &self.release
    }

    /// The step.
    pub(crate) fn step(&self) -> &str {
        &self.step.id
    }

    /// What this worker knows of the release as it started the step, for taking the
    /// release's other ready steps on it (a release waited for but not read here is read
    /// then).
    pub(crate) fn prior(&self) -> Prior {
        Prior {
            current: self.current.clone(),
            externals: self.externals.clone(),
        }
    }
}

/// Runs a started step to its end and records the outcome. The release as this worker
/// appended its outcome, when it did (`None`: the step stopped unrecorded, or is no longer
/// this worker's).
pub(crate) async fn execute(
    ctx: Arc<Ctx>,
    started: Started,
) -> Result<Option<Current>, PromoterError> {
    let Started {
        mut lease,
        _claim,
        release,
        step,
        attempt,
        cause,
        current,
        externals: _,
    } = started;
    let mut recorder = Recorder::new(
        &ctx.writer,
        &ctx.releases,
        current.clone(),
        step.id.clone(),
        attempt,
        cause.clone(),
    );
    let mut target = target_for(&current.state, &step, attempt);
    if step.action == Action::Deploy && strategy::blue_green(&ctx.config.catalog, &step).is_some() {
        target.colour = Some(strategy::idle_colour(&ctx.live, &step).await?);
    }
    let body = run_body(&ctx, &current, &step, &target, &mut recorder);
    let outcome = match ctx.leases.guarded(&mut lease, body).await {
        None => return Ok(None), // another worker resumes it
        Some(Err(Lost)) => {
            info!(release = %release, step = %step.id, "step no longer ours; stopping");
            let _ = lease.release().await;
            return Ok(None);
        }
        Some(Ok(outcome)) => outcome,
    };
    let recorded;
    if outcome.ok {
        let inventory = deployed::record(
            &ctx.writer,
            &ctx.live,
            &current.state,
            &step,
            &target,
            &cause,
        )
        .await;
        if let Err(error) = inventory {
            warn!(release = %release, step = %step.id, %error, "cannot record the inventory change; the step will be resumed");
            let _ = lease.release().await;
            return Ok(None);
        }
        let detail = outcome.detail.clone();
        let id = step.id.clone();
        recorded = recorder
            .record(|_| {
                Some(vec![Event::StepSucceeded(StepOutcome {
                    step: id.clone(),
                    detail: detail.clone(),
                })])
            })
            .await?;
        info!(release = %release, step = %step.id, attempt, "step succeeded");
    } else {
        let catalog = &ctx.config.catalog;
        let policy = decide::on_failure(catalog, &step.env);
        let owner = decide::owner(catalog, &step);
        let detail = outcome.detail.clone();
        let id = step.id.clone();
        recorded = recorder
            .record(|state| {
                let mut events = vec![Event::StepFailed(StepOutcome {
                    step: id.clone(),
                    detail: detail.clone(),
                })];
                if policy == OnFailure::Hold && state.status == Status::Planned {
                    let who = owner
                        .as_ref()
                        .map(|o| format!("{o} (owner of {}) should look at it; ", step.target))
                        .unwrap_or_default();
                    events.push(Event::ReleaseHeld(ReleaseHeld {
                        reason: format!(
                            "{id} failed in {}, whose policy is to hold: {detail}. {who}{}",
                            step.env,
                            decide::operator_commands(&state.id, Some(&id))
                        ),
                        step: Some(id.clone()),
                        owner: owner.clone(),
                        frozen: None,
                    }));
                }
                Some(events)
            })
            .await?;
        warn!(release = %release, step = %step.id, attempt, detail = %outcome.detail, ?policy, "step failed");
    }
    // Not waited for: the outcome is recorded, so nothing depends on the answer; a release
    // lost on the way leaves the lease to expire (`Lease::release_unconfirmed`).
    if let Err(error) = lease.release_unconfirmed().await {
        debug!(%error, "cannot send the lease's release; it expires");
    }
    Ok(recorded.then(|| recorder.into_known()).flatten())
}

/// The placeholder values of a step.
pub(crate) fn target_for(state: &ReleaseState, step: &Step, attempt: u32) -> Target {
    let mut target = Target {
        release: Some(state.id.clone()),
        step: step.id.clone(),
        env: Some(step.env.clone()),
        attempt,
        weight: 100,
        ..Target::default()
    };
    match step.action {
        Action::Deploy | Action::Verify => {
            let change = state
                .changes
                .iter()
                .find(|c| c.service.as_str() == step.target);
            target.service = Some(step.target.clone());
            target.version = step
                .version
                .clone()
                .or_else(|| change.map(|c| c.version.clone()));
            target.artifact = change.and_then(|c| c.artifact.clone());
        }
        Action::Migrate => {
            target.to = decide::migration(step).ok().map(|(_, to)| to);
        }
        Action::Approve => {}
    }
    target
}

/// Runs the body of `step`: a migration, a deploy with its service's strategy, a verify
/// step's gates, or the check that an approval was given.
async fn run_body(
    ctx: &Ctx,
    current: &Current,
    step: &Step,
    target: &Target,
    recorder: &mut Recorder<'_>,
) -> Result<Outcome, Lost> {
    let catalog = &ctx.config.catalog;
    match step.action {
        Action::Migrate => {
            let database = match decide::migration(step) {
                Ok((database, _)) => database,
                Err(error) => return Ok(Outcome::failed(error.to_string())),
            };
            let Some(db) = catalog.databases.get(&database) else {
                return Ok(Outcome::failed(format!(
                    "database {database} is not in the catalog: add [databases.{database}] with a migrate adapter"
                )));
            };
            Ok(ctx.runner.deploy(&db.migrate, Form::Run, target).await)
        }
        Action::Deploy => match service_of(catalog, step) {
            Ok(service) => {
                strategy::deploy(&ctx.runner, &ctx.bus, recorder, service, &step.env, target).await
            }
            Err(missing) => Ok(missing),
        },
        Action::Verify => match service_of(catalog, step) {
            Ok(service) => {
                let gates = service.gates_in(&step.env);
                verify::verify(&ctx.runner, &ctx.bus, recorder, gates, target).await
            }
            Err(missing) => Ok(missing),
        },
        Action::Approve => Ok(Outcome {
            ok: current.state.approvals.contains_key(&step.id),
            detail: "approvals are decided by approvers".to_owned(),
        }),
    }
}

/// The catalog entry of a deploy or verify step's service, or the failed outcome saying it is
/// missing.
fn service_of<'a>(catalog: &'a Catalog, step: &Step) -> Result<&'a Service, Outcome> {
    catalog
        .services
        .iter()
        .find(|(name, _)| name.as_str() == step.target)
        .map(|(_, s)| s)
        .ok_or_else(|| {
            Outcome::failed(format!(
                "service {} is not in the catalog: add [services.{}]",
                step.target, step.target
            ))
        })
}

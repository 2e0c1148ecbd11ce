//! Rolling a release back in one environment: the failed step first, then every step the
//! release applied there in reverse plan order, each with the adapter's rollback form, else by
//! redeploying what the inventory had before, else (a service new to the environment) its
//! remove form — or the release is held for an operator. Migrations are undone only when their
//! adapter has a rollback form. Once a point of no return of the plan has started there, a
//! rollback is not carried out blindly: the release is held with the reason and the owner,
//! unless an operator asked for a partial rollback, which undoes only the steps still safely
//! reversible. Every step is re-checked against the live inventory before it is undone.
//! Ends in `release.rolled_back` naming what was undone and what stays. The work is guarded by
//! a lease and resumable: each undone step is recorded as it happens.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use railyard_core::catalog::{Catalog, Deploy, Strategy};
use railyard_core::event::{ReleaseHeld, ReleaseRolledBack, ServiceDeployed, StepOutcome};
use railyard_core::inventory::EnvInventory;
use railyard_core::release_state::StepStatus;
use railyard_core::{Action, EnvName, Event, ReleaseId, ReleaseState, Status, Step, StepId};
use railyard_plan::{LiveEnv, contract_breaks};
use tracing::{info, warn};

use crate::adapter::{DEFAULT_TIMEOUT, Form, Target};
use crate::ctx::Ctx;
use crate::decide;
use crate::error::PromoterError;
use crate::exec::target_for;
use crate::inventory;
use crate::work::{rollback_lease, step_lease};

/// How a rollback order ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RollbackEnd {
    /// Finished (rolled back, held, or nothing to do any more).
    Done,
    /// Steps of the environment are still running under a live lease: try again later.
    Busy(String),
}

enum Undo {
    Undone {
        detail: String,
        inventory: Option<Box<ServiceDeployed>>,
    },
    Hold(String),
}

/// A point of no return of the plan that has started in an environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PassedPoint {
    /// Its step.
    pub step: StepId,
    /// Why it is one (from the plan).
    pub reason: String,
    /// The catalog owners of the release's services that use the database it migrates.
    pub owner: Option<String>,
}

impl PassedPoint {
    /// Why a rollback requested for `why` holds `release` instead.
    pub fn hold_reason(&self, why: &str, release: &ReleaseId) -> String {
        format!(
            "{why}; not rolled back: {} has run and is a point of no return ({}); roll forward (retry the failed step, or resume once fixed), or force a partial rollback of the steps still safely reversible (`rollback` with `partial`, e.g. `railyard rollback {release} --partial`)",
            self.step, self.reason
        )
    }
}

/// The first point of no return of the plan that has started (running, done or failed) in
/// `env`, if any.
pub(crate) fn passed_point_of_no_return(
    state: &ReleaseState,
    catalog: &Catalog,
    env: &EnvName,
) -> Option<PassedPoint> {
    let plan = state.plan.as_ref()?;
    let point = plan.points_of_no_return.iter().find(|p| {
        plan.step(&p.step).is_some_and(|s| &s.env == env)
            && matches!(
                state.steps.get(&p.step),
                Some(
                    StepStatus::Running { .. } | StepStatus::Succeeded | StepStatus::Failed { .. }
                )
            )
    })?;
    let database = plan
        .step(&point.step)
        .and_then(|s| decide::migration(s).ok())
        .map(|(database, _)| database.to_string())
        .unwrap_or_default();
    let users: Vec<String> = catalog
        .databases
        .iter()
        .find(|(name, _)| name.as_str() == database)
        .map(|(_, db)| {
            db.users
                .iter()
                .filter(|u| state.changes.iter().any(|c| &c.service == *u))
                .filter_map(|u| catalog.services.get(u).and_then(|s| s.owner.clone()))
                .collect::<BTreeSet<String>>()
                .into_iter()
                .collect()
        })
        .unwrap_or_default();
    Some(PassedPoint {
        step: point.step.clone(),
        reason: point.reason.clone(),
        owner: (!users.is_empty()).then(|| users.join(", ")),
    })
}

/// The contracts undoing `step` would break that the live inventory does not break already:
/// checked while it is undone (old and new version, or both schemas, side by side) and after.
fn undo_breaks(
    catalog: &Catalog,
    live: &EnvInventory,
    before: &EnvInventory,
    step: &Step,
) -> Vec<String> {
    let now = LiveEnv::from_inventory(live);
    let (mut during, mut after) = (now.clone(), now.clone());
    match step.action {
        Action::Deploy => {
            let Some(name) = catalog.services.keys().find(|n| n.as_str() == step.target) else {
                return Vec::new();
            };
            match before.services.get(name) {
                Some(previous) => {
                    during
                        .services
                        .entry(name.clone())
                        .or_default()
                        .push(previous.clone());
                    after.services.insert(name.clone(), vec![previous.clone()]);
                }
                None => {
                    after.services.remove(name);
                }
            }
        }
        Action::Migrate => {
            let Ok((database, _)) = decide::migration(step) else {
                return Vec::new();
            };
            let Some((name, previous)) = before.databases.get_key_value(&database) else {
                return Vec::new();
            };
            during
                .databases
                .entry(name.clone())
                .or_default()
                .push(*previous);
            after.databases.insert(name.clone(), vec![*previous]);
        }
        Action::Verify | Action::Approve => return Vec::new(),
    }
    let already: BTreeSet<String> = contract_breaks(catalog, &now).into_iter().collect();
    let mut out: BTreeSet<String> = BTreeSet::new();
    out.extend(contract_breaks(catalog, &during));
    out.extend(contract_breaks(catalog, &after));
    out.retain(|b| !already.contains(b));
    out.into_iter().collect()
}

/// Rolls `release` back in `env`; `partial` (an operator's explicit choice) undoes, past a
/// point of no return, only the steps still safely reversible.
pub(crate) async fn roll_back(
    ctx: &Arc<Ctx>,
    release: &ReleaseId,
    env: &EnvName,
    reason: &str,
    partial: bool,
) -> Result<RollbackEnd, PromoterError> {
    // Nothing to do when another worker is rolling it back.
    let work = undo_all(ctx, release, env, reason, partial);
    Ok(ctx
        .leases
        .exclusively(&rollback_lease(release), work)
        .await?
        .unwrap_or(RollbackEnd::Done))
}

fn migration_has_rollback(ctx: &Ctx, step: &Step) -> bool {
    decide::migration(step).is_ok_and(|(database, _)| {
        ctx.config
            .catalog
            .databases
            .get(&database)
            .is_some_and(|db| db.migrate.has_rollback())
    })
}

async fn undo_all(
    ctx: &Ctx,
    release: &ReleaseId,
    env: &EnvName,
    reason: &str,
    partial: bool,
) -> Result<RollbackEnd, PromoterError> {
    // Steps a partial rollback leaves applied, with why.
    let mut stays: BTreeMap<StepId, String> = BTreeMap::new();
    loop {
        let Some(current) = ctx.releases.load(release).await? else {
            return Ok(RollbackEnd::Done);
        };
        let state = &current.state;
        if !matches!(state.status, Status::Planned | Status::Held) {
            return Ok(RollbackEnd::Done);
        }
        let plan = state.plan.as_ref().expect("a planned release has a plan");
        for s in plan.steps.iter().filter(|s| &s.env == env) {
            let waiting_approval = s.action == Action::Approve;
            if matches!(state.steps.get(&s.id), Some(StepStatus::Running { .. }))
                && !waiting_approval
                && ctx
                    .bus
                    .lease_holder(&step_lease(release, &s.id))
                    .await?
                    .is_some()
            {
                return Ok(RollbackEnd::Busy(format!(
                    "{} is still running; the rollback waits for it",
                    s.id
                )));
            }
        }
        let catalog = &ctx.config.catalog;
        let passed = passed_point_of_no_return(state, catalog, env);
        if let (false, Some(point)) = (partial, &passed) {
            let why = point.hold_reason(reason, release);
            if state.status == Status::Planned {
                let event = ctx.writer.envelope(
                    release,
                    Event::ReleaseHeld(ReleaseHeld {
                        reason: why.clone(),
                        step: Some(point.step.clone()),
                        owner: point.owner.clone(),
                        frozen: None,
                    }),
                );
                if ctx
                    .writer
                    .append_at(release, current.sequence, &[event])
                    .await?
                    .is_none()
                {
                    continue;
                }
            }
            warn!(release = %release, env = %env, step = %point.step, reason = %why, "past a point of no return: release held instead of rolled back");
            return Ok(RollbackEnd::Done);
        }
        let (order, kept): (Vec<StepId>, Vec<StepId>) = decide::rollback_order(state, env)
            .into_iter()
            .filter(|id| !stays.contains_key(id))
            .partition(|id| {
                plan.step(id)
                    .is_some_and(|s| s.action != Action::Migrate || migration_has_rollback(ctx, s))
            });
        let Some(next) = order.first() else {
            let undone: Vec<StepId> = current
                .events
                .iter()
                .filter_map(|e| match &e.event {
                    Event::StepRolledBack(o)
                        if plan.step(&o.step).is_some_and(|s| &s.env == env) =>
                    {
                        Some(o.step.clone())
                    }
                    _ => None,
                })
                .collect();
            let mut text = format!("{reason}; undone in {env}, in this order: ");
            text.push_str(&if undone.is_empty() {
                "nothing".to_owned()
            } else {
                undone.join(", ")
            });
            for id in &kept {
                text.push_str(&format!(
                    "; {id} was not rolled back: its database has no rollback form, so the schema stays migrated"
                ));
            }
            if let Some(point) = &passed {
                text.push_str(&format!(
                    "; a partial rollback past the point of no return {}",
                    point.step
                ));
            }
            for (id, why) in &stays {
                text.push_str(&format!("; {id} stays applied: {why}"));
            }
            let event = ctx.writer.envelope(
                release,
                Event::ReleaseRolledBack(ReleaseRolledBack {
                    reason: text.clone(),
                    undone,
                }),
            );
            if ctx
                .writer
                .append_at(release, current.sequence, &[event])
                .await?
                .is_some()
            {
                info!(release = %release, env = %env, reason = %text, "release rolled back");
                return Ok(RollbackEnd::Done);
            }
            continue;
        };
        let step = plan.step(next).expect("ordered from the plan").clone();
        // Re-validation covers the way back: undo nothing the live estate cannot take now.
        let live = inventory::env_inventory(&ctx.bus, env, None).await?;
        let before = inventory::env_inventory(&ctx.bus, env, Some(release)).await?;
        let breaks = undo_breaks(catalog, &live, &before, &step);
        if !breaks.is_empty() {
            let why = format!("undoing it now would break: {}", breaks.join("; "));
            if partial {
                info!(release = %release, step = %step.id, %why, "partial rollback leaves the step applied");
                stays.insert(step.id.clone(), why);
                continue;
            }
            let text = format!(
                "{reason}; the rollback stopped before {}: re-checked against what runs in {env}, {why}; roll forward, or force a partial rollback of the steps still safely reversible (`rollback` with `partial`)",
                step.id
            );
            if state.status == Status::Planned {
                let event = ctx.writer.envelope(
                    release,
                    Event::ReleaseHeld(ReleaseHeld {
                        reason: text.clone(),
                        step: Some(step.id.clone()),
                        owner: decide::owner(&ctx.config.catalog, &step),
                        frozen: None,
                    }),
                );
                if ctx
                    .writer
                    .append_at(release, current.sequence, &[event])
                    .await?
                    .is_none()
                {
                    continue;
                }
            }
            warn!(release = %release, step = %step.id, reason = %text, "rollback step re-validation failed; release held");
            return Ok(RollbackEnd::Done);
        }
        match undo(ctx, &current.state, &step).await? {
            Undo::Undone {
                detail,
                inventory: change,
            } => {
                let event = ctx.writer.envelope(
                    release,
                    Event::StepRolledBack(StepOutcome {
                        step: step.id.clone(),
                        detail: detail.clone(),
                    }),
                );
                if let Some(change) = change {
                    inventory::record(
                        &ctx.bus,
                        ctx.worker(),
                        ctx.config.clock.now(),
                        &event,
                        2,
                        *change,
                    )
                    .await?;
                }
                // The undo ran: record it, on top of whatever else the release recorded
                // meanwhile (a step of another environment finishing), never by undoing the
                // step again — the 30-minute chaos soak saw a rollback command run three
                // times when each record of it lost the race to such an append.
                let mut at = current;
                loop {
                    let appended = ctx
                        .writer
                        .append_at(release, at.sequence, std::slice::from_ref(&event))
                        .await?;
                    if let Some(sequence) = appended {
                        info!(release = %release, step = %step.id, %detail, "step rolled back");
                        // Remember it: the next read may be served by a stream replica that
                        // has not caught up with this append yet, and must not undo the step
                        // again (the chaos soak saw a rollback command run twice on a 3-node
                        // cluster).
                        if let Ok(state) = ReleaseState::apply(Some(at.state.clone()), &event) {
                            let mut after = at;
                            after.state = state;
                            after.events.push(Arc::new(event));
                            after.sequence = sequence;
                            ctx.releases.remember(&after);
                        }
                        break;
                    }
                    let Some(again) = ctx.releases.load(release).await? else {
                        break;
                    };
                    let undone = again.state.steps.get(&step.id) == Some(&StepStatus::RolledBack);
                    if undone || !matches!(again.state.status, Status::Planned | Status::Held) {
                        break;
                    }
                    at = again;
                }
            }
            Undo::Hold(why) => {
                if state.status == Status::Planned {
                    let event = ctx.writer.envelope(
                        release,
                        Event::ReleaseHeld(ReleaseHeld {
                            reason: why.clone(),
                            step: Some(step.id.clone()),
                            owner: decide::owner(&ctx.config.catalog, &step),
                            frozen: None,
                        }),
                    );
                    if ctx
                        .writer
                        .append_at(release, current.sequence, &[event])
                        .await?
                        .is_none()
                    {
                        continue;
                    }
                }
                warn!(release = %release, step = %step.id, reason = %why, "rollback stopped; release held");
                return Ok(RollbackEnd::Done);
            }
        }
    }
}

async fn undo(
    ctx: &Ctx,
    state: &railyard_core::ReleaseState,
    step: &Step,
) -> Result<Undo, PromoterError> {
    let release = &state.id;
    let attempt = decide_attempt(state, &step.id);
    let target = target_for(state, step, attempt);
    let before = inventory::env_inventory(&ctx.bus, &step.env, Some(release)).await?;
    let hold_after = |what: String| {
        Undo::Hold(format!(
            "{what}; fix it by hand, then run `railyard rollback {release}` again (or `railyard resume {release}` to go on)"
        ))
    };
    match step.action {
        Action::Approve | Action::Verify => Ok(Undo::Undone {
            detail: format!(
                "nothing to undo ({} steps change nothing)",
                step.action.as_str()
            ),
            inventory: None,
        }),
        Action::Deploy => {
            let Some((name, service)) = ctx
                .config
                .catalog
                .services
                .iter()
                .find(|(name, _)| name.as_str() == step.target)
            else {
                return Ok(hold_after(format!(
                    "cannot roll back {}: it is not in the catalog",
                    step.target
                )));
            };
            let deploy = service.deploy_in(&step.env);
            let previous = inventory::running(&before, &step.target).cloned();
            let inventory = Some(Box::new(ServiceDeployed {
                env: step.env.clone(),
                service: name.clone(),
                running: previous.clone(),
                databases: BTreeMap::new(),
                release: Some(release.clone()),
            }));
            // Blue-green keeps the old colour until the release completes: switching traffic
            // back to it is the whole rollback.
            if let (Strategy::BlueGreen { switch, .. }, Some(prev)) =
                (service.strategy_in(&step.env), &previous)
                && let Some(old) = &prev.colour
            {
                let at = Target {
                    colour: Some(old.clone()),
                    version: Some(prev.version.clone()),
                    from_version: target.version.clone(),
                    artifact: prev.artifact.clone(),
                    ..target.clone()
                };
                let outcome = ctx.runner.command(switch, &at, DEFAULT_TIMEOUT).await;
                if !outcome.ok {
                    return Ok(hold_after(format!(
                        "switching {} in {} back to {old} failed: {}",
                        step.target, step.env, outcome.detail
                    )));
                }
                return Ok(Undo::Undone {
                    detail: format!(
                        "{} back to {} by switching traffic back to {old}, which still runs it: {}",
                        step.target, prev.version, outcome.detail
                    ),
                    inventory,
                });
            }
            let (form, at, how) = match (&previous, deploy.has_rollback(), deploy) {
                (_, true, _) => {
                    // `{version}` is what it goes back to (nothing when it is new here),
                    // `{from_version}` what is undone.
                    let at = Target {
                        version: previous.as_ref().map(|p| p.version.clone()),
                        artifact: previous.as_ref().and_then(|p| p.artifact.clone()),
                        from_version: target.version.clone(),
                        ..target.clone()
                    };
                    (
                        Form::Rollback,
                        at,
                        "with the adapter's rollback form".to_owned(),
                    )
                }
                (Some(prev), false, _) => {
                    let at = Target {
                        version: Some(prev.version.clone()),
                        from_version: target.version.clone(),
                        artifact: prev.artifact.clone(),
                        ..target.clone()
                    };
                    (Form::Run, at, format!("by redeploying {}", prev.version))
                }
                (
                    None,
                    false,
                    Deploy::Command {
                        remove: Some(_), ..
                    },
                ) => (
                    Form::Remove,
                    Target {
                        from_version: target.version.clone(),
                        ..target.clone()
                    },
                    "with the remove form (it is new here)".to_owned(),
                ),
                (None, false, _) => {
                    return Ok(hold_after(format!(
                        "cannot roll back {} in {}: it did not run there before this release and its deploy adapter has no rollback or remove form",
                        step.target, step.env
                    )));
                }
            };
            let outcome = ctx.runner.deploy(deploy, form, &at).await;
            if !outcome.ok {
                return Ok(hold_after(format!(
                    "rolling back {} in {} failed: {}",
                    step.target, step.env, outcome.detail
                )));
            }
            let version = previous
                .as_ref()
                .map_or_else(|| "nothing (removed)".to_owned(), |p| p.version.clone());
            Ok(Undo::Undone {
                detail: format!(
                    "{} back to {version} {how}: {}",
                    step.target, outcome.detail
                ),
                inventory,
            })
        }
        Action::Migrate => {
            let database = match decide::migration(step) {
                Ok((database, _)) => database,
                Err(error) => {
                    return Ok(hold_after(format!("cannot roll back {}: {error}", step.id)));
                }
            };
            let Some((db_name, db)) = ctx.config.catalog.databases.get_key_value(&database) else {
                return Ok(hold_after(format!(
                    "cannot roll back {}: database {database} is not in the catalog",
                    step.id
                )));
            };
            let previous = before.databases.get(db_name).copied();
            let at = Target {
                to: previous,
                ..target.clone()
            };
            let outcome = ctx.runner.deploy(&db.migrate, Form::Rollback, &at).await;
            if !outcome.ok {
                return Ok(hold_after(format!(
                    "rolling back migration {} failed: {}",
                    step.id, outcome.detail
                )));
            }
            let owner_change = state.changes.iter().find(|c| {
                c.migrations
                    .iter()
                    .any(|m| &m.database == db_name && Some(m.to) == target.to)
            });
            let inventory = match (owner_change, previous) {
                (Some(change), Some(previous)) => Some(Box::new(ServiceDeployed {
                    env: step.env.clone(),
                    service: change.service.clone(),
                    running: ctx.live.service(&step.env, change.service.as_str()).await?,
                    databases: BTreeMap::from([(db_name.clone(), previous)]),
                    release: Some(release.clone()),
                })),
                _ => None,
            };
            Ok(Undo::Undone {
                detail: format!(
                    "{database} back to {}: {}",
                    previous.map_or_else(|| "its previous version".to_owned(), |p| p.to_string()),
                    outcome.detail
                ),
                inventory,
            })
        }
    }
}

fn decide_attempt(state: &railyard_core::ReleaseState, step: &str) -> u32 {
    match state.steps.get(step) {
        Some(StepStatus::Running { attempt, .. }) => *attempt,
        _ => 1,
    }
}

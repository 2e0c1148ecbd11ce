//! The operator and approver routes (INTERFACES §6–7): `POST /v1/releases/{id}/approve|deny`
//! (approver role) and `hold|resume|rollback|cancel|retry` (operator role). Each command is
//! decided against the release's folded state and appended with optimistic concurrency, the
//! authenticated identity as actor; a command the state does not allow answers 409 with the
//! reason and appends nothing. An approval counts only from an identity the environment lists
//! (directly or through a group) that neither requested the release nor authored a change.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRef, Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use railyard_bus::{AppendError, Bus, Expected};
use railyard_core::catalog::OnFailure;
use railyard_core::event::{
    ApprovalDecision, FreezeOverridden, Reasoned, ReleaseHeld, StepOutcome,
};
use railyard_core::release_state::{ApprovalState, StepStatus};
use railyard_core::{AggregateId, Catalog, EnvName, Envelope, Event, ReleaseId, ReleaseState};
use railyard_core::{SharedClock, Status, StepId};
use railyard_http::{ApiError, Authenticated, Identity, Role, Tokens};
use serde::{Deserialize, Serialize};
use tracing::Instrument;
use tracing::info;

use crate::decide;
use crate::work::WorkOrder;

/// What the routes need.
#[derive(Debug, Clone)]
pub struct RouteState {
    /// The bus.
    pub bus: Bus,
    /// The catalog in force (approvers, groups, failure policies).
    pub catalog: Arc<Catalog>,
    /// Known tokens.
    pub tokens: Tokens,
    /// The clock events are stamped with.
    pub clock: SharedClock,
}

impl FromRef<RouteState> for Tokens {
    fn from_ref(state: &RouteState) -> Tokens {
        state.tokens.clone()
    }
}

/// The routes `POST /v1/releases/{id}/{approve|deny|hold|resume|rollback|cancel|retry}`.
pub fn router(state: RouteState) -> Router {
    Router::new()
        .route("/v1/releases/{id}/{command}", post(command))
        .with_state(state.clone())
        .merge(crate::slack::router(state))
}

/// The optional body of a command.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandBody {
    /// The step it concerns (an approve step, or the failed step to retry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<StepId>,
    /// The environment it concerns (approvals, rollbacks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// Why, in the caller's words.
    #[serde(default, alias = "reason", skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// With `approve` and `env`: an emergency override of that environment's freeze windows
    /// (a reason is required; the release is marked with who overrode, why and when).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub override_freeze: bool,
    /// With `rollback`, once a point of no return of the plan has started in that
    /// environment: undo only the steps still safely reversible (each re-checked against the
    /// live inventory); without it such a rollback holds the release instead.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub partial: bool,
}

/// The answer to an accepted command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandAnswer {
    /// The release.
    pub release: String,
    /// The command.
    pub command: String,
    /// `accepted`.
    pub outcome: String,
    /// What happened, in words.
    pub detail: String,
    /// Ids of the events appended.
    pub event_ids: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Command {
    Approve,
    Deny,
    Hold,
    Resume,
    Rollback,
    Cancel,
    Retry,
}

impl Command {
    fn parse(s: &str) -> Option<Command> {
        Some(match s {
            "approve" => Command::Approve,
            "deny" => Command::Deny,
            "hold" => Command::Hold,
            "resume" => Command::Resume,
            "rollback" => Command::Rollback,
            "cancel" => Command::Cancel,
            "retry" => Command::Retry,
            _ => return None,
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            Command::Approve => "approve",
            Command::Deny => "deny",
            Command::Hold => "hold",
            Command::Resume => "resume",
            Command::Rollback => "rollback",
            Command::Cancel => "cancel",
            Command::Retry => "retry",
        }
    }

    pub(crate) fn role(self) -> Role {
        match self {
            Command::Approve | Command::Deny => Role::Approver,
            _ => Role::Operator,
        }
    }
}

/// What a command decided.
struct Decision {
    events: Vec<Event>,
    offer: Option<WorkOrder>,
    detail: String,
}

async fn command(
    State(state): State<RouteState>,
    Path((id, name)): Path<(String, String)>,
    Authenticated(who): Authenticated,
    body: Bytes,
) -> Result<(StatusCode, Json<CommandAnswer>), ApiError> {
    let Some(cmd) = Command::parse(&name) else {
        return Err(ApiError::not_found(
            format!(
                "unknown command {name:?}: use approve, deny, hold, resume, rollback, cancel or retry"
            ),
            "command",
        ));
    };
    who.require(cmd.role())?;
    let release =
        ReleaseId::new(id.clone()).map_err(|error| ApiError::invalid(error.to_string(), "id"))?;
    let body: CommandBody = if body.iter().all(u8::is_ascii_whitespace) {
        CommandBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|error| {
            ApiError::malformed(
                format!("the body is not a command ({error}): send {{\"step\", \"env\", \"comment\"}}, each optional"),
                "body",
            )
        })?
    };
    let answer = run_command(&state, cmd, release, &who, &body).await?;
    Ok((StatusCode::ACCEPTED, Json(answer)))
}

/// Decides `cmd` by `who` (whose role the caller checked) against the release's folded state
/// and appends what it decided as `who`, sealed by this process: the one path of the HTTP route
/// and of Slack interactions ([`crate::slack`]).
pub(crate) async fn run_command(
    state: &RouteState,
    cmd: Command,
    release: ReleaseId,
    who: &Identity,
    body: &CommandBody,
) -> Result<CommandAnswer, ApiError> {
    let name = cmd.as_str();
    let aggregate = AggregateId::Release(release.clone());
    for _ in 0..5 {
        let loaded = state.bus.load(&aggregate).await.map_err(|error| {
            ApiError::unavailable(format!("cannot read release {release}: {error}"))
        })?;
        let folded = ReleaseState::fold(&loaded.events).map_err(|error| {
            ApiError::conflict(format!("release {release} does not fold: {error}"), "id")
        })?;
        let Some(current) = folded else {
            return Err(ApiError::not_found(
                format!(
                    "release {release} does not exist: check the id (`railyard release list` lists them)"
                ),
                "id",
            ));
        };
        let authors = verified_authors(&state.bus, &current).await?;
        let now = state.clock.now();
        let decision = decide(cmd, &current, who, body, &state.catalog, &authors, now)?;
        let cause = loaded.events.last().expect("a folded release has events");
        let envelopes: Vec<Envelope> = decision
            .events
            .into_iter()
            .map(|event| {
                Envelope::new(
                    aggregate.clone(),
                    who.name.clone(),
                    state.clock.now(),
                    event,
                )
                .caused_by(cause)
            })
            .collect();
        // The decision joins the release's trace, and so do the events it appends.
        let span = tracing::info_span!(
            "promoter.command",
            service = "promoter",
            release = %release,
            command = name,
            actor = %who.name
        );
        railyard_bus::follow_trace(&span, loaded.trace());
        if !envelopes.is_empty() {
            match state
                .bus
                .append(
                    &aggregate,
                    Expected::Sequence(loaded.last_sequence),
                    &envelopes,
                )
                .instrument(span.clone())
                .await
            {
                Ok(_) => {}
                Err(AppendError::Conflict { .. }) => continue,
                Err(error) => {
                    return Err(ApiError::unavailable(format!(
                        "cannot record the {name} of {release}: {error}"
                    )));
                }
            }
        }
        if let Some(order) = &decision.offer {
            let id = format!(
                "{release}/operator-{name}/{}",
                envelopes.first().map_or_else(
                    || loaded.last_sequence.to_string(),
                    |e| e.event_id.to_string()
                )
            );
            state
                .bus
                .publish_work(&order.subject(), order.payload(), &id)
                .instrument(span.clone())
                .await
                .map_err(|error| {
                    ApiError::unavailable(format!("cannot hand the {name} to the workers: {error}"))
                })?;
        }
        info!(release = %release, command = name, actor = %who.name, detail = %decision.detail, "operator command accepted");
        return Ok(CommandAnswer {
            release: release.to_string(),
            command: name.to_owned(),
            outcome: "accepted".to_owned(),
            detail: decision.detail,
            event_ids: envelopes.iter().map(|e| e.event_id.to_string()).collect(),
        });
    }
    Err(ApiError::conflict(
        format!("release {release} kept changing while the {name} was decided: try again"),
        "id",
    ))
}

fn comment(body: &CommandBody) -> String {
    body.comment.clone().unwrap_or_default()
}

fn said(who: &Identity, body: &CommandBody) -> String {
    match body.comment.as_deref() {
        Some(c) if !c.trim().is_empty() => format!("{}: {}", who.name, c.trim()),
        _ => who.name.clone(),
    }
}

fn decide(
    cmd: Command,
    state: &ReleaseState,
    who: &Identity,
    body: &CommandBody,
    catalog: &Catalog,
    authors: &[VerifiedAuthor],
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Decision, ApiError> {
    let id = &state.id;
    let refuse = |detail: String| Err(ApiError::conflict(detail, "id"));
    match cmd {
        Command::Approve if body.override_freeze => {
            override_freeze(state, who, body, catalog, authors, now)
        }
        Command::Approve | Command::Deny => {
            if !matches!(state.status, Status::Planned | Status::Held) {
                return refuse(format!(
                    "release {id} is {}: it has no approval to decide",
                    state.status
                ));
            }
            let (step, approvers) = pending_approval(state, body)?;
            let env = state
                .plan
                .as_ref()
                .and_then(|p| p.step(&step))
                .map(|s| s.env.to_string())
                .unwrap_or_default();
            check_approver(state, who, &env, &step, &approvers, catalog, authors)?;
            // Whoever overrode this environment's freeze is not also its approval.
            let overrider = EnvName::new(env.as_str())
                .ok()
                .and_then(|name| state.freeze_overrides.get(&name));
            if let (Command::Approve, Some(o)) = (cmd, overrider.filter(|o| who.is(&o.by))) {
                return Err(ApiError::refused(
                    "overrider cannot approve",
                    format!(
                        "{} overrode the freeze of {env} for release {id} ({}) and may not also approve it: another approver must",
                        who.name, o.reason
                    ),
                ));
            }
            if cmd == Command::Approve {
                Ok(Decision {
                    events: vec![
                        Event::ApprovalGranted(ApprovalDecision {
                            step: step.clone(),
                            comment: comment(body),
                        }),
                        Event::StepSucceeded(StepOutcome {
                            step: step.clone(),
                            detail: format!("approved by {}", said(who, body)),
                        }),
                    ],
                    offer: None,
                    detail: format!("{} approved {id} for {env}", who.name),
                })
            } else {
                let reason = format!("denied for {env} by {}", said(who, body));
                Ok(Decision {
                    events: vec![
                        Event::ApprovalDenied(ApprovalDecision {
                            step: step.clone(),
                            comment: comment(body),
                        }),
                        Event::StepFailed(StepOutcome {
                            step,
                            detail: reason.clone(),
                        }),
                        Event::ReleaseCancelled(Reasoned {
                            reason: reason.clone(),
                        }),
                    ],
                    offer: None,
                    detail: format!("release {id} {reason}; it is cancelled"),
                })
            }
        }
        Command::Hold => {
            if state.status != Status::Planned {
                return refuse(format!(
                    "release {id} is {}: only a release under way can be held",
                    state.status
                ));
            }
            let reason = format!(
                "held by {}; {}",
                said(who, body),
                decide::operator_commands(id, None)
            );
            Ok(Decision {
                events: vec![Event::ReleaseHeld(ReleaseHeld {
                    reason,
                    step: body.step.clone(),
                    owner: Some(who.name.clone()),
                    frozen: None,
                })],
                offer: None,
                detail: format!("release {id} is held: running steps finish, no new step starts"),
            })
        }
        Command::Resume => {
            if state.status != Status::Held {
                return refuse(format!(
                    "release {id} is {}: only a held release can be resumed",
                    state.status
                ));
            }
            if let Some(failed) = failed_steps(state, catalog, OnFailure::Hold).first() {
                return refuse(format!(
                    "step {failed} of release {id} failed: `railyard retry {id}` runs it again, `railyard rollback {id}` undoes the environment"
                ));
            }
            Ok(Decision {
                events: vec![Event::ReleaseResumed(Reasoned {
                    reason: format!("resumed by {}", said(who, body)),
                })],
                offer: None,
                detail: format!("release {id} resumed"),
            })
        }
        Command::Retry => {
            if state.status != Status::Held {
                return refuse(format!(
                    "release {id} is {}: only a held release with a failed step can be retried",
                    state.status
                ));
            }
            let failed = failed_steps(state, catalog, OnFailure::Hold);
            if let Some(step) = &body.step {
                if !failed.contains(step) {
                    return refuse(format!(
                        "step {step} of release {id} has not failed (failed: {}): name a failed step",
                        list(&failed)
                    ));
                }
            }
            if failed.is_empty() {
                return refuse(format!(
                    "no step of release {id} failed: use `railyard resume {id}` to go on"
                ));
            }
            Ok(Decision {
                events: vec![Event::ReleaseResumed(Reasoned {
                    reason: format!(
                        "retry of {} requested by {}",
                        list(&failed),
                        said(who, body)
                    ),
                })],
                offer: None,
                detail: format!("release {id} resumed; {} will run again", list(&failed)),
            })
        }
        Command::Rollback => {
            if !matches!(state.status, Status::Planned | Status::Held) {
                return refuse(format!(
                    "release {id} is {}: only a release under way or held can be rolled back",
                    state.status
                ));
            }
            let env = match &body.env {
                Some(env) => env
                    .parse::<EnvName>()
                    .map_err(|error| ApiError::invalid(error.to_string(), "env"))?,
                None => match decide::latest_applied_env(state, catalog) {
                    Some(env) => env,
                    None => {
                        return refuse(format!(
                            "nothing of release {id} has been applied yet: cancel it instead (`railyard cancel {id}`)"
                        ));
                    }
                },
            };
            let reason = format!("rollback of {env} requested by {}", said(who, body));
            if let (false, Some(point)) = (
                body.partial,
                crate::rollback::passed_point_of_no_return(state, catalog, &env),
            ) {
                let why = point.hold_reason(&reason, id);
                if state.status != Status::Planned {
                    return refuse(why);
                }
                return Ok(Decision {
                    events: vec![Event::ReleaseHeld(ReleaseHeld {
                        reason: why,
                        step: Some(point.step.clone()),
                        owner: point.owner.clone(),
                        frozen: None,
                    })],
                    offer: None,
                    detail: format!(
                        "release {id} is held, not rolled back: {} has run in {env} and is a point of no return",
                        point.step
                    ),
                });
            }
            let events = if state.status == Status::Planned {
                vec![Event::ReleaseHeld(ReleaseHeld {
                    reason: format!("{reason}; no new step starts while it is undone"),
                    step: None,
                    owner: Some(who.name.clone()),
                    frozen: None,
                })]
            } else {
                Vec::new()
            };
            Ok(Decision {
                events,
                offer: Some(WorkOrder::Rollback {
                    release: id.clone(),
                    env: env.clone(),
                    reason: reason.clone(),
                    actor: who.name.clone(),
                    partial: body.partial,
                }),
                detail: format!("the rollback of {id} in {env} is handed to the workers"),
            })
        }
        Command::Cancel => {
            if !matches!(
                state.status,
                Status::Requested | Status::Planned | Status::Held
            ) {
                return refuse(format!(
                    "release {id} is {}: a finished release cannot be cancelled",
                    state.status
                ));
            }
            Ok(Decision {
                events: vec![Event::ReleaseCancelled(Reasoned {
                    reason: format!("cancelled by {}", said(who, body)),
                })],
                offer: None,
                detail: format!("release {id} cancelled; what it deployed stays"),
            })
        }
    }
}

fn list(items: &[StepId]) -> String {
    if items.is_empty() {
        "none".to_owned()
    } else {
        items.join(", ")
    }
}

fn failed_steps(state: &ReleaseState, catalog: &Catalog, policy: OnFailure) -> Vec<StepId> {
    let Some(plan) = &state.plan else {
        return Vec::new();
    };
    plan.steps
        .iter()
        .filter(|s| matches!(state.steps.get(&s.id), Some(StepStatus::Failed { .. })))
        .filter(|s| decide::on_failure(catalog, &s.env) == policy)
        .map(|s| s.id.clone())
        .collect()
}

/// The approval the command decides and who may decide it.
fn pending_approval(
    state: &ReleaseState,
    body: &CommandBody,
) -> Result<(StepId, Vec<String>), ApiError> {
    let id = &state.id;
    let pending: Vec<(&StepId, &Vec<String>)> = state
        .approvals
        .iter()
        .filter_map(|(step, a)| match a {
            ApprovalState::Requested { approvers } => Some((step, approvers)),
            _ => None,
        })
        .filter(|(step, _)| body.step.as_ref().is_none_or(|s| s == *step))
        .filter(|(step, _)| {
            body.env.as_ref().is_none_or(|env| {
                state
                    .plan
                    .as_ref()
                    .and_then(|p| p.step(step))
                    .is_some_and(|s| s.env.as_str() == env)
            })
        })
        .collect();
    match pending.as_slice() {
        [(step, approvers)] => Ok(((*step).clone(), (*approvers).clone())),
        [] => Err(ApiError::conflict(
            format!(
                "release {id} has no approval waiting{}: approvals are asked when the release reaches an environment that requires one",
                match (&body.step, &body.env) {
                    (Some(step), _) => format!(" for {step}"),
                    (None, Some(env)) => format!(" in {env}"),
                    _ => String::new(),
                }
            ),
            "id",
        )),
        many => Err(ApiError::conflict(
            format!(
                "several approvals of release {id} wait ({}): name one with --step",
                many.iter()
                    .map(|(s, _)| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            "step",
        )),
    }
}

/// INTERFACES §7: listed (directly or through a group), not the requester, not an author.
/// An emergency override of `env`'s freeze: only an approver listed for that environment who
/// neither requested nor authored the release, only with a reason; a release held by that
/// freeze resumes at once.
fn override_freeze(
    state: &ReleaseState,
    who: &Identity,
    body: &CommandBody,
    catalog: &Catalog,
    authors: &[VerifiedAuthor],
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Decision, ApiError> {
    let id = &state.id;
    if !matches!(state.status, Status::Planned | Status::Held) {
        return Err(ApiError::conflict(
            format!(
                "release {id} is {}: there is nothing left to let through a freeze",
                state.status
            ),
            "id",
        ));
    }
    let Some(env_name) = body.env.as_deref() else {
        return Err(ApiError::invalid(
            "an emergency override names the frozen environment: add --env (body: \"env\")",
            "env",
        ));
    };
    let Some(env) = EnvName::new(env_name)
        .ok()
        .and_then(|name| catalog.environment(&name))
    else {
        return Err(ApiError::invalid(
            format!("environment {env_name} is not in the catalog"),
            "env",
        ));
    };
    let reason = body.comment.as_deref().map(str::trim).unwrap_or_default();
    if reason.is_empty() {
        return Err(ApiError::invalid(
            "an emergency override of a freeze needs a reason: add --reason \"...\" (body: \"comment\")",
            "comment",
        ));
    }
    if env.freeze.is_empty() {
        return Err(ApiError::conflict(
            format!("{env_name} has no freeze windows: there is nothing to override"),
            "env",
        ));
    }
    let approvers = catalog.approvers(&env.name).to_vec();
    if approvers.is_empty() {
        return Err(ApiError::refused(
            format!("no approvers for {env_name}"),
            format!(
                "{env_name} lists no approvers, so nobody may override its freeze: add [environments.approval] approvers to the catalog"
            ),
        ));
    }
    let what = format!("the freeze of {env_name}");
    check_approver(state, who, env_name, &what, &approvers, catalog, authors)?;
    // Only a freeze in force (or starting within the environment's lead time) is overridden,
    // and only until that window ends.
    let lead = env
        .freeze_override_lead
        .map_or(chrono::Duration::zero(), |d| {
            chrono::Duration::from_std(d.0).unwrap_or(chrono::Duration::zero())
        });
    let Some(window) = crate::freeze::active_freeze(&env.freeze, now)
        .or_else(|| crate::freeze::active_freeze(&env.freeze, now + lead))
    else {
        return Err(ApiError::conflict(
            format!(
                "{env_name} is not frozen now{}: an emergency override is filed while the freeze it overrides is in force{}",
                if lead.is_zero() {
                    String::new()
                } else {
                    format!(
                        " and no freeze starts within {}",
                        crate::adapter::humanize(lead.to_std().unwrap_or_default())
                    )
                },
                if lead.is_zero() {
                    " (or set freeze_override_lead on the environment to allow it shortly before)"
                } else {
                    ""
                }
            ),
            "env",
        ));
    };
    // Whoever approved this environment is not also the one who lifts its freeze.
    let approved_by = state
        .approvals
        .iter()
        .find_map(|(step, approval)| match approval {
            railyard_core::release_state::ApprovalState::Granted { by, .. }
                if who.is(by)
                    && state
                        .plan
                        .as_ref()
                        .and_then(|p| p.step(step))
                        .is_some_and(|s| s.env == env.name) =>
            {
                Some(step.clone())
            }
            _ => None,
        });
    if let Some(step) = approved_by {
        return Err(ApiError::refused(
            "approver cannot override",
            format!(
                "{} approved {step} of release {id} and may not also override the freeze of {env_name}: another approver must",
                who.name
            ),
        ));
    }
    let mut events = vec![Event::FreezeOverridden(FreezeOverridden {
        env: env.name.clone(),
        reason: reason.to_owned(),
        until: Some(window.ends_at),
    })];
    let held_by_freeze = state.status == Status::Held
        && state
            .hold
            .as_ref()
            .is_some_and(|h| h.frozen.as_ref() == Some(&env.name));
    if held_by_freeze {
        events.push(Event::ReleaseResumed(Reasoned {
            reason: format!(
                "emergency override of the freeze of {env_name} by {}: {reason}",
                who.name
            ),
        }));
    }
    Ok(Decision {
        events,
        offer: None,
        detail: format!(
            "{} overrode the freeze of {env_name} for {id} (emergency: {reason})",
            who.name
        ),
    })
}

/// Refusals name their rule in `error` (`requester cannot approve`) and say why and what to do
/// in `detail`.
fn check_approver(
    state: &ReleaseState,
    who: &Identity,
    env: &str,
    step: &str,
    approvers: &[String],
    catalog: &Catalog,
    authors: &[VerifiedAuthor],
) -> Result<(), ApiError> {
    let listed = approvers
        .iter()
        .any(|entry| match entry.strip_prefix("group:") {
            Some(group) => catalog
                .groups
                .get(group)
                .is_some_and(|members| members.iter().any(|m| who.is(m))),
            None => who.is(entry),
        });
    if !listed {
        return Err(ApiError::refused(
            format!("not an approver for {env}"),
            format!(
                "{} may not decide {step}: the approvers are {} — ask one of them",
                who.name,
                approvers.join(", ")
            ),
        ));
    }
    if who.is(&state.requested_by) {
        return Err(ApiError::refused(
            "requester cannot approve",
            format!(
                "{} requested release {} and may not approve it: another approver must",
                who.name, state.id
            ),
        ));
    }
    if let Some(change) = state
        .changes
        .iter()
        .find(|c| c.authors.iter().any(|a| who.is(a)))
    {
        return Err(ApiError::refused(
            "author cannot approve",
            format!(
                "{} authored {} {} in release {} and may not approve it: another approver must",
                who.name, change.service, change.version, state.id
            ),
        ));
    }
    if let Some(found) = authors.iter().find(|a| who.is(&a.author)) {
        return Err(ApiError::refused(
            "author cannot approve",
            format!(
                "{} authored commit {} of {} {} ({}) in release {} and may not approve it: another approver must",
                who.name, found.commit, found.service, found.version, found.source, state.id
            ),
        ));
    }
    Ok(())
}

/// An author of a commit in a release, as a verified source reported it (not as the release
/// declares it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VerifiedAuthor {
    pub(crate) service: String,
    pub(crate) version: String,
    pub(crate) commit: String,
    pub(crate) author: String,
    /// Where the author comes from, for the refusal.
    pub(crate) source: String,
}

/// The authors of the commits of `state`'s changes, from the pushes intake recorded on each
/// service's signals (GitHub and GitLab push webhooks and merged GitHub pull requests, whose
/// signatures intake checked, and CDEvents `change.merged` from an authenticated publisher):
/// for a change built from commit C, the authors of every commit of the push that brought C,
/// up to and including C.
async fn verified_authors(
    bus: &Bus,
    state: &ReleaseState,
) -> Result<Vec<VerifiedAuthor>, ApiError> {
    let mut signals = Vec::new();
    for change in state.changes.iter().filter(|c| c.commit.is_some()) {
        let aggregate = AggregateId::Signal(change.service.clone());
        let loaded = bus.load(&aggregate).await.map_err(|error| {
            ApiError::unavailable(format!(
                "cannot read the pushes of {}: {error}",
                change.service
            ))
        })?;
        signals.push(loaded.events);
    }
    Ok(authors_of_commits(state, signals.iter().flatten()))
}

/// The pure part of [`verified_authors`]: `events` are the services' signal events.
pub(crate) fn authors_of_commits<'a>(
    state: &ReleaseState,
    events: impl IntoIterator<Item = &'a Envelope> + Clone,
) -> Vec<VerifiedAuthor> {
    // A release may name a commit by a prefix of its id (7 characters at least).
    let same =
        |a: &str, b: &str| a.len().min(b.len()) >= 7 && (a.starts_with(b) || b.starts_with(a));
    let mut found = Vec::new();
    for change in &state.changes {
        let Some(commit) = change.commit.as_deref() else {
            continue;
        };
        for envelope in events.clone() {
            let (Event::CommitsPushed(push), AggregateId::Signal(service)) =
                (&envelope.event, &envelope.aggregate)
            else {
                continue;
            };
            if service != &change.service {
                continue;
            }
            // The last entry of C: a merged change lists one entry per author of C.
            let upto = match push.commits.iter().rposition(|c| same(&c.id, commit)) {
                Some(index) => index + 1,
                None if same(&push.after, commit) => push.commits.len(),
                None => continue,
            };
            for pushed in &push.commits[..upto] {
                if let Some(author) = &pushed.author {
                    found.push(VerifiedAuthor {
                        service: change.service.to_string(),
                        version: change.version.clone(),
                        commit: pushed.id.chars().take(12).collect(),
                        author: author.clone(),
                        source: format!(
                            "{} reported it reaching {} of {}",
                            push.origin.door, push.branch, push.origin.source
                        ),
                    });
                }
            }
        }
    }
    found.sort_by(|a, b| (&a.author, &a.commit).cmp(&(&b.author, &b.commit)));
    found.dedup();
    found
}

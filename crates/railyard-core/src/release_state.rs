//! The release aggregate: a pure fold of a release's events with explicit legal transitions.
//! An event that the current state does not allow is a [`TransitionError`], never a panic;
//! deciders check a command against the folded state before appending.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Serialize, Serializer};

use crate::event::{AggregateId, ColourRetired, Envelope, Event};
use crate::names::{EnvName, ReleaseId};
use crate::plan::{Action, Plan, Refusal, StepId};
use crate::release::Change;

/// Where a release is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Asked for, waiting for the planner.
    Requested,
    /// Planned; workers carry it out.
    Planned,
    /// Stopped; waits for an operator.
    Held,
    /// Every step succeeded.
    Completed,
    /// Undone.
    RolledBack,
    /// Refused by the planner.
    Rejected,
    /// Cancelled by an operator.
    Cancelled,
    /// Ended by an approver's denial.
    Denied,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Requested => "requested",
            Status::Planned => "planned",
            Status::Held => "held",
            Status::Completed => "completed",
            Status::RolledBack => "rolled back",
            Status::Rejected => "rejected",
            Status::Cancelled => "cancelled",
            Status::Denied => "denied",
        })
    }
}

impl Status {
    /// Whether nothing can happen to the release any more.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Status::Completed
                | Status::RolledBack
                | Status::Rejected
                | Status::Cancelled
                | Status::Denied
        )
    }
}

/// Where a step is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum StepStatus {
    /// Not started.
    Pending,
    /// Held by a worker.
    Running {
        /// The worker.
        worker: String,
        /// Attempt number.
        attempt: u32,
    },
    /// Done.
    Succeeded,
    /// Failed, with why.
    Failed {
        /// Why.
        detail: String,
    },
    /// Undone.
    RolledBack,
}

impl StepStatus {
    fn name(&self) -> &'static str {
        match self {
            StepStatus::Pending => "pending",
            StepStatus::Running { .. } => "running",
            StepStatus::Succeeded => "succeeded",
            StepStatus::Failed { .. } => "failed",
            StepStatus::RolledBack => "rolled back",
        }
    }
}

/// An approval's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ApprovalState {
    /// Waiting for one of `approvers`.
    Requested {
        /// Who may approve.
        approvers: Vec<String>,
    },
    /// Approved.
    Granted {
        /// By whom.
        by: String,
        /// Their comment.
        comment: String,
    },
    /// Denied.
    Denied {
        /// By whom.
        by: String,
        /// Their comment.
        comment: String,
    },
}

/// One recorded gate result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GateResult {
    /// The verify step.
    pub step: StepId,
    /// Which gate.
    pub gate: String,
    /// Whether it passed.
    pub passed: bool,
    /// What was observed.
    pub observed: String,
    /// What was expected.
    pub expected: String,
}

fn shared_plan<S: Serializer>(plan: &Option<Arc<Plan>>, serializer: S) -> Result<S::Ok, S::Error> {
    plan.as_deref().serialize(serializer)
}

/// The folded state of one release.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReleaseState {
    /// The release id.
    pub id: ReleaseId,
    /// Where it is.
    pub status: Status,
    /// Who asked for it.
    pub requested_by: String,
    /// Its changes.
    pub changes: Vec<Change>,
    /// The plan, once planned (shared: a state is cloned far more often than planned).
    #[serde(serialize_with = "shared_plan")]
    pub plan: Option<Arc<Plan>>,
    /// Why it was refused, when it was.
    pub refusals: Vec<Refusal>,
    /// Each step's status, by id (plan order kept in `plan`).
    pub steps: BTreeMap<StepId, StepStatus>,
    /// Approvals by approve step.
    pub approvals: BTreeMap<StepId, ApprovalState>,
    /// Emergency overrides of freeze windows, by environment.
    pub freeze_overrides: BTreeMap<EnvName, FreezeOverride>,
    /// Old colours of blue-green deploy steps taken down as the release completed, by step.
    pub colours_retired: BTreeMap<StepId, ColourRetired>,
    /// Gate results in the order they arrived.
    pub gates: Vec<GateResult>,
    /// Why it is (or was last) held, and who must act.
    pub hold: Option<Hold>,
    /// Steps ready by the plan that wait for releases requested earlier and still in flight
    /// (`step.waiting`), by step; a step leaves this map when it starts.
    pub waiting: BTreeMap<StepId, Waiting>,
    /// Why it ended, for rolled back and cancelled releases.
    pub ended_because: Option<String>,
    /// Events applied.
    pub events: u64,
    /// When the last event happened.
    pub updated_at: DateTime<Utc>,
}

/// An emergency override of an environment's freeze: who allowed it, why, when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FreezeOverride {
    /// The approver.
    pub by: String,
    /// Their reason.
    pub reason: String,
    /// When.
    pub at: DateTime<Utc>,
    /// When the window it overrides ends (it counts until then); `None` on overrides recorded
    /// before windows were remembered.
    pub until: Option<DateTime<Utc>>,
}

/// A step waiting for earlier releases: which, why, since when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Waiting {
    /// The releases it waits for.
    pub waiting_for: Vec<ReleaseId>,
    /// Why, in words.
    pub reason: String,
    /// When the wait (for these releases) was recorded.
    pub since: DateTime<Utc>,
}

/// A hold and who must act.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hold {
    /// Why.
    pub reason: String,
    /// The step it stopped at.
    pub step: Option<StepId>,
    /// Who must act.
    pub owner: Option<String>,
    /// The environment whose freeze window holds it (it resumes when the window ends).
    pub frozen: Option<EnvName>,
}

/// An event the release's state does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[serde(tag = "error", rename_all = "snake_case")]
pub enum TransitionError {
    /// The event does not belong to a release.
    #[error("{event_type} is not a release event: append it to its own aggregate")]
    NotAReleaseEvent {
        /// The event's type.
        event_type: String,
    },
    /// The envelope names another aggregate than the release folded.
    #[error("event for {got} folded into release {expected}: fold each release's own subject")]
    WrongAggregate {
        /// The release folded.
        expected: String,
        /// The envelope's aggregate.
        got: String,
    },
    /// The first event of a release must be `release.requested`.
    #[error("release has not been requested yet: {event_type} cannot be its first event")]
    NotRequested {
        /// The event's type.
        event_type: String,
    },
    /// The event is not allowed in the release's status.
    #[error("release {release} is {status}: {event_type} is not allowed ({hint})")]
    IllegalInStatus {
        /// The release.
        release: String,
        /// Its status.
        status: Status,
        /// The event's type.
        event_type: String,
        /// What is allowed instead.
        hint: &'static str,
    },
    /// The step is not in the plan.
    #[error("step {step} is not in the plan of release {release}")]
    UnknownStep {
        /// The release.
        release: String,
        /// The step.
        step: StepId,
    },
    /// The step's status forbids the event.
    #[error("step {step} is {state}: {event_type} is not allowed")]
    IllegalForStep {
        /// The step.
        step: StepId,
        /// Its state.
        state: String,
        /// The event's type.
        event_type: String,
    },
    /// The step cannot start before the steps it waits for succeeded.
    #[error("step {step} cannot start: it waits for {waiting:?}, which have not succeeded")]
    Waiting {
        /// The step.
        step: StepId,
        /// Predecessors not yet succeeded.
        waiting: Vec<StepId>,
    },
    /// An approve step needs a granted approval to succeed.
    #[error("approve step {step} cannot succeed without a granted approval")]
    NotApproved {
        /// The step.
        step: StepId,
    },
    /// An approval decision with no approval requested, or already decided.
    #[error("approval for {step} is not awaiting a decision")]
    NoPendingApproval {
        /// The step.
        step: StepId,
    },
    /// The release cannot complete while steps are unfinished.
    #[error("release {release} cannot complete: steps {unfinished:?} have not succeeded")]
    Unfinished {
        /// The release.
        release: String,
        /// Steps not succeeded.
        unfinished: Vec<StepId>,
    },
}

impl ReleaseState {
    /// The steps a later release touching the same services still has to wait for: those
    /// that have not succeeded, and every step of an environment where a step failed or was
    /// rolled back — a failure is followed by undoing that environment (or by a hold until
    /// someone decides), so what succeeded there is in play again until the release ends.
    /// The planner's read model applies the same rule (docs/planning-rules.md#cross-release).
    pub fn unfinished_steps(&self) -> BTreeSet<StepId> {
        let envs: BTreeMap<&StepId, &EnvName> = self
            .plan
            .iter()
            .flat_map(|plan| plan.steps.iter().map(|step| (&step.id, &step.env)))
            .collect();
        let troubled: BTreeSet<&EnvName> = self
            .steps
            .iter()
            .filter(|(_, status)| {
                matches!(status, StepStatus::Failed { .. } | StepStatus::RolledBack)
            })
            .filter_map(|(id, _)| envs.get(id).copied())
            .collect();
        self.steps
            .iter()
            .filter(|(id, status)| {
                **status != StepStatus::Succeeded
                    || envs.get(id).is_some_and(|env| troubled.contains(env))
            })
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Folds a release's events from the start. `Ok(None)` for no events.
    pub fn fold<'a>(
        events: impl IntoIterator<Item = &'a Envelope>,
    ) -> Result<Option<ReleaseState>, TransitionError> {
        let mut state = None;
        for envelope in events {
            state = Some(ReleaseState::apply(state, envelope)?);
        }
        Ok(state)
    }

    /// Applies one event to the state; `None` is the state before the first event.
    ///
    /// An event read without a trusted writer's seal ([`Envelope::untrusted`], see
    /// [`crate::authority`]) leaves the state as it was.
    pub fn apply(
        state: Option<ReleaseState>,
        envelope: &Envelope,
    ) -> Result<ReleaseState, TransitionError> {
        let state = match (state, &envelope.untrusted) {
            (Some(current), Some(_)) => return Ok(current),
            (state, _) => state,
        };
        let event_type = envelope.event.type_name().to_owned();
        let AggregateId::Release(aggregate) = &envelope.aggregate else {
            return Err(TransitionError::NotAReleaseEvent { event_type });
        };
        let Some(mut state) = state else {
            return match &envelope.event {
                Event::ReleaseRequested(r) if &r.release == aggregate => Ok(ReleaseState {
                    id: r.release.clone(),
                    status: Status::Requested,
                    requested_by: r.requested_by.clone(),
                    changes: r.changes.clone(),
                    plan: None,
                    refusals: Vec::new(),
                    steps: BTreeMap::new(),
                    approvals: BTreeMap::new(),
                    freeze_overrides: BTreeMap::new(),
                    colours_retired: BTreeMap::new(),
                    gates: Vec::new(),
                    hold: None,
                    waiting: BTreeMap::new(),
                    ended_because: None,
                    events: 1,
                    updated_at: envelope.occurred_at,
                }),
                Event::ReleaseRequested(r) => Err(TransitionError::WrongAggregate {
                    expected: aggregate.to_string(),
                    got: r.release.to_string(),
                }),
                _ if is_release_event(&envelope.event) => {
                    Err(TransitionError::NotRequested { event_type })
                }
                _ => Err(TransitionError::NotAReleaseEvent { event_type }),
            };
        };
        if aggregate != &state.id {
            return Err(TransitionError::WrongAggregate {
                expected: state.id.to_string(),
                got: aggregate.to_string(),
            });
        }
        state.step(envelope)?;
        if state.status.is_final() {
            state.waiting.clear();
        }
        state.events += 1;
        state.updated_at = envelope.occurred_at;
        Ok(state)
    }

    fn illegal(&self, event_type: &str, hint: &'static str) -> TransitionError {
        TransitionError::IllegalInStatus {
            release: self.id.to_string(),
            status: self.status,
            event_type: event_type.to_owned(),
            hint,
        }
    }

    fn require(
        &self,
        allowed: &[Status],
        event_type: &str,
        hint: &'static str,
    ) -> Result<(), TransitionError> {
        if allowed.contains(&self.status) {
            Ok(())
        } else {
            Err(self.illegal(event_type, hint))
        }
    }

    fn step_status(&self, step: &StepId) -> Result<&StepStatus, TransitionError> {
        self.steps
            .get(step)
            .ok_or_else(|| TransitionError::UnknownStep {
                release: self.id.to_string(),
                step: step.clone(),
            })
    }

    fn step(&mut self, envelope: &Envelope) -> Result<(), TransitionError> {
        use Status::*;
        let ty = envelope.event.type_name();
        let for_step = |state: &StepStatus, step: &StepId| TransitionError::IllegalForStep {
            step: step.clone(),
            state: state.name().to_owned(),
            event_type: ty.to_owned(),
        };
        match &envelope.event {
            Event::ReleaseRequested(_) => {
                return Err(
                    self.illegal(ty, "a release is requested once; submit a new release id")
                );
            }
            Event::ReleasePlanned(p) => {
                self.require(&[Requested], ty, "only a requested release is planned")?;
                if p.plan.release != self.id {
                    return Err(TransitionError::WrongAggregate {
                        expected: self.id.to_string(),
                        got: p.plan.release.to_string(),
                    });
                }
                self.steps = p
                    .plan
                    .steps
                    .iter()
                    .map(|s| (s.id.clone(), StepStatus::Pending))
                    .collect();
                self.plan = Some(Arc::new(p.plan.clone()));
                self.status = Planned;
            }
            Event::ReleaseRejected(r) => {
                self.require(&[Requested], ty, "only a requested release is refused")?;
                self.refusals = r.reasons.clone();
                self.status = Rejected;
            }
            Event::ReleaseCancelled(r) => {
                self.require(
                    &[Requested, Planned, Held],
                    ty,
                    "a finished release cannot be cancelled",
                )?;
                self.ended_because = Some(r.reason.clone());
                // A release ends with a denial (the approver's decision and the end are
                // appended together) as denied, not as an operator's cancel.
                let denied = self
                    .approvals
                    .values()
                    .any(|a| matches!(a, ApprovalState::Denied { .. }));
                self.status = if denied { Denied } else { Cancelled };
            }
            Event::ReleaseHeld(h) => {
                self.require(&[Planned], ty, "only a release under way can be held")?;
                self.hold = Some(Hold {
                    reason: h.reason.clone(),
                    step: h.step.clone(),
                    owner: h.owner.clone(),
                    frozen: h.frozen.clone(),
                });
                self.status = Held;
            }
            Event::ReleaseResumed(_) => {
                self.require(&[Held], ty, "only a held release can be resumed")?;
                self.status = Planned;
            }
            Event::ReleaseCompleted(_) => {
                self.require(&[Planned], ty, "only a release under way completes")?;
                let unfinished: Vec<StepId> = self
                    .steps
                    .iter()
                    .filter(|(_, s)| **s != StepStatus::Succeeded)
                    .map(|(id, _)| id.clone())
                    .collect();
                if !unfinished.is_empty() {
                    return Err(TransitionError::Unfinished {
                        release: self.id.to_string(),
                        unfinished,
                    });
                }
                self.status = Completed;
            }
            Event::ReleaseRolledBack(r) => {
                self.require(
                    &[Planned, Held],
                    ty,
                    "only a release under way or held can be rolled back",
                )?;
                self.ended_because = Some(r.reason.clone());
                self.status = RolledBack;
            }
            Event::StepWaiting(w) => {
                self.require(
                    &[Planned],
                    ty,
                    "a step waits only while the release is under way",
                )?;
                let current = self.step_status(&w.step)?;
                if !matches!(current, StepStatus::Pending | StepStatus::Failed { .. }) {
                    return Err(for_step(current, &w.step));
                }
                self.waiting.insert(
                    w.step.clone(),
                    Waiting {
                        waiting_for: w.waiting_for.clone(),
                        reason: w.reason.clone(),
                        since: envelope.occurred_at,
                    },
                );
            }
            Event::StepStarted(s) => {
                self.require(
                    &[Planned],
                    ty,
                    "steps start only while the release is under way: resume it first",
                )?;
                let current = self.step_status(&s.step)?;
                match current {
                    StepStatus::Pending
                    | StepStatus::Failed { .. }
                    | StepStatus::Running { .. } => {}
                    other => return Err(for_step(other, &s.step)),
                }
                let plan = self.plan.as_ref().expect("a planned release has a plan");
                let waiting: Vec<StepId> = plan
                    .predecessors(&s.step)
                    .filter(|p| self.steps.get(*p) != Some(&StepStatus::Succeeded))
                    .cloned()
                    .collect();
                if !waiting.is_empty() {
                    return Err(TransitionError::Waiting {
                        step: s.step.clone(),
                        waiting,
                    });
                }
                self.waiting.remove(&s.step);
                self.steps.insert(
                    s.step.clone(),
                    StepStatus::Running {
                        worker: s.worker.clone(),
                        attempt: s.attempt,
                    },
                );
            }
            Event::GateEvaluated(g) => {
                self.require(
                    &[Planned, Held],
                    ty,
                    "gates are evaluated only while the release is under way",
                )?;
                let current = self.step_status(&g.step)?;
                if !matches!(current, StepStatus::Running { .. }) {
                    return Err(for_step(current, &g.step));
                }
                self.gates.push(GateResult {
                    step: g.step.clone(),
                    gate: g.gate.clone(),
                    passed: g.passed,
                    observed: g.observed.clone(),
                    expected: g.expected.clone(),
                });
            }
            Event::StepSucceeded(o) | Event::StepFailed(o) => {
                self.require(
                    &[Planned, Held],
                    ty,
                    "steps finish only while the release is under way",
                )?;
                let current = self.step_status(&o.step)?;
                if !matches!(current, StepStatus::Running { .. }) {
                    return Err(for_step(current, &o.step));
                }
                let succeeded = matches!(envelope.event, Event::StepSucceeded(_));
                let is_approve = self
                    .plan
                    .as_ref()
                    .and_then(|p| p.step(&o.step))
                    .map(|s| s.action)
                    == Some(Action::Approve);
                if succeeded
                    && is_approve
                    && !matches!(
                        self.approvals.get(&o.step),
                        Some(ApprovalState::Granted { .. })
                    )
                {
                    return Err(TransitionError::NotApproved {
                        step: o.step.clone(),
                    });
                }
                let next = if succeeded {
                    StepStatus::Succeeded
                } else {
                    StepStatus::Failed {
                        detail: o.detail.clone(),
                    }
                };
                self.steps.insert(o.step.clone(), next);
            }
            Event::StepRolledBack(o) => {
                self.require(
                    &[Planned, Held],
                    ty,
                    "steps are rolled back only while the release is under way or held",
                )?;
                let current = self.step_status(&o.step)?;
                if !matches!(
                    current,
                    StepStatus::Succeeded | StepStatus::Failed { .. } | StepStatus::Running { .. }
                ) {
                    return Err(for_step(current, &o.step));
                }
                self.steps.insert(o.step.clone(), StepStatus::RolledBack);
            }
            Event::ApprovalRequested(a) => {
                self.require(
                    &[Planned],
                    ty,
                    "approvals are requested only while the release is under way",
                )?;
                let current = self.step_status(&a.step)?;
                if !matches!(current, StepStatus::Running { .. }) {
                    return Err(for_step(current, &a.step));
                }
                self.approvals.insert(
                    a.step.clone(),
                    ApprovalState::Requested {
                        approvers: a.approvers.clone(),
                    },
                );
            }
            Event::ColourRetired(r) => {
                self.require(
                    &[Planned],
                    ty,
                    "an old colour is retired only as the release completes",
                )?;
                let current = self.step_status(&r.step)?;
                if !matches!(current, StepStatus::Succeeded) {
                    return Err(for_step(current, &r.step));
                }
                self.colours_retired.insert(r.step.clone(), r.clone());
            }
            Event::FreezeOverridden(f) => {
                self.require(
                    &[Planned, Held],
                    ty,
                    "a freeze is overridden only while the release is under way",
                )?;
                self.freeze_overrides.insert(
                    f.env.clone(),
                    FreezeOverride {
                        by: envelope.actor.clone(),
                        reason: f.reason.clone(),
                        at: envelope.occurred_at,
                        until: f.until,
                    },
                );
            }
            Event::ApprovalGranted(d) | Event::ApprovalDenied(d) => {
                self.require(
                    &[Planned, Held],
                    ty,
                    "approvals are decided only while the release is under way",
                )?;
                if !matches!(
                    self.approvals.get(&d.step),
                    Some(ApprovalState::Requested { .. })
                ) {
                    return Err(TransitionError::NoPendingApproval {
                        step: d.step.clone(),
                    });
                }
                let by = envelope.actor.clone();
                let comment = d.comment.clone();
                let next = if matches!(envelope.event, Event::ApprovalGranted(_)) {
                    ApprovalState::Granted { by, comment }
                } else {
                    ApprovalState::Denied { by, comment }
                };
                self.approvals.insert(d.step.clone(), next);
            }
            Event::ServiceDeployed(_)
            | Event::CatalogApplied(_)
            | Event::ArtifactPublished(_)
            | Event::SuiteFinished(_)
            | Event::CommitsPushed(_)
            | Event::IncidentOpened(_)
            | Event::IncidentResolved(_)
            | Event::AuditCheckpoint(_) => {
                return Err(TransitionError::NotAReleaseEvent {
                    event_type: ty.to_owned(),
                });
            }
        }
        Ok(())
    }
}

fn is_release_event(event: &Event) -> bool {
    !matches!(
        event,
        Event::ServiceDeployed(_)
            | Event::CatalogApplied(_)
            | Event::ArtifactPublished(_)
            | Event::SuiteFinished(_)
            | Event::CommitsPushed(_)
            | Event::IncidentOpened(_)
            | Event::IncidentResolved(_)
            | Event::AuditCheckpoint(_)
    )
}

//! A release's status as operators see it: the core's [`ReleaseState`] folded from the
//! release's audit records (events the fold refuses are listed as anomalies, never hidden),
//! with each plan step's status, gates, approvals with who/when/why, the hold and its
//! reason, and who must act now.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use railyard_core::release_state::{ApprovalState, GateResult, Hold, StepStatus};
use railyard_core::{Change, Envelope, Refusal, ReleaseState, Status, StepId};
use serde::{Deserialize, Serialize};

use crate::record::Record;

/// An event the release fold did not accept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anomaly {
    /// Its record.
    pub n: u64,
    /// Its type.
    #[serde(rename = "type")]
    pub kind: String,
    /// Why the fold refused it.
    pub error: String,
}

/// The release state folded from records, and what the fold refused.
#[derive(Debug, Clone)]
pub struct Folded {
    /// The state, `None` when no record started the release.
    pub state: Option<ReleaseState>,
    /// Records the fold refused.
    pub anomalies: Vec<Anomaly>,
}

/// Folds a release's records in order with the core's fold, skipping (and listing) events it
/// refuses.
///
/// Only the release's own events are folded: the release index also holds events of other
/// aggregates that concern the release (`service.deployed` on `inventory.<env>`, INTERFACES
/// §9); they belong to its timeline, not to its state, and are not anomalies.
pub fn fold_records(records: &[Record]) -> Folded {
    let mut state: Option<ReleaseState> = None;
    let mut anomalies = Vec::new();
    for record in records.iter().filter(|record| is_own_event(record)) {
        let envelope = match serde_json::from_value::<Envelope>(record.envelope.clone()) {
            Ok(envelope) => envelope,
            Err(error) => {
                anomalies.push(Anomaly {
                    n: record.n,
                    kind: record.facets.kind.clone(),
                    error: format!("not an event this version knows: {error}"),
                });
                continue;
            }
        };
        match ReleaseState::apply(state.clone(), &envelope) {
            Ok(next) => state = Some(next),
            Err(error) => anomalies.push(Anomaly {
                n: record.n,
                kind: record.facets.kind.clone(),
                error: error.to_string(),
            }),
        }
    }
    Folded { state, anomalies }
}

/// Whether `record` is on the aggregate of the release it is indexed under (the audit indexes
/// a record under its aggregate's release, else under the `release` its data names).
fn is_own_event(record: &Record) -> bool {
    match crate::record::release_of_aggregate(&record.facets.aggregate) {
        Some(release) => Some(release) == record.facets.release.as_deref(),
        None => false,
    }
}

/// One plan step and where it is.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepView {
    /// Step id.
    pub id: StepId,
    /// Environment.
    pub env: String,
    /// `migrate`, `deploy`, `verify` or `approve`.
    pub action: String,
    /// What it acts on.
    pub target: String,
    /// The version, for deploy and verify.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Its status.
    pub status: StepStatus,
    /// Steps it waits for, with why.
    pub waits_for: Vec<Waiting>,
}

/// A predecessor of a step and the reason for the edge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Waiting {
    /// The step that goes first.
    pub step: StepId,
    /// The rule.
    pub rule: String,
    /// Why.
    pub reason: String,
}

/// One approve step's approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApprovalView {
    /// The approve step.
    pub step: StepId,
    /// `requested`, `granted` or `denied`.
    pub state: String,
    /// Who may approve.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub approvers: Vec<String>,
    /// Who decided.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// Why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// When it was requested or decided.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at: Option<DateTime<Utc>>,
}

/// Who must act, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OwnerToAct {
    /// Who.
    pub who: String,
    /// Why and what to do.
    pub why: String,
}

/// `GET /v1/releases/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReleaseStatus {
    /// The release id.
    pub release: String,
    /// Where it is.
    pub status: Status,
    /// Who asked.
    pub requested_by: String,
    /// Its changes.
    pub changes: Vec<Change>,
    /// Plan steps in plan order with their status.
    pub steps: Vec<StepView>,
    /// Waves of the plan.
    pub waves: Vec<Vec<StepId>>,
    /// Gate results, in order.
    pub gates: Vec<GateResult>,
    /// Approvals by approve step.
    pub approvals: Vec<ApprovalView>,
    /// The current hold, while held.
    pub hold: Option<Hold>,
    /// Steps ready by the plan that wait for releases requested earlier and still in flight
    /// (`step.waiting`), by step; no operator needs to act.
    pub waiting: BTreeMap<StepId, railyard_core::release_state::Waiting>,
    /// Why it was refused.
    pub refusals: Vec<Refusal>,
    /// Why it ended (rolled back, cancelled).
    pub ended_because: Option<String>,
    /// Who must act now.
    pub owner_to_act: Option<OwnerToAct>,
    /// Events folded.
    pub events: u64,
    /// The stream sequence of the last event (resume the event stream after it: `?after=` or
    /// `Last-Event-ID`).
    pub last_event: u64,
    /// When the last event happened.
    pub updated_at: DateTime<Utc>,
    /// Events the fold refused.
    pub anomalies: Vec<Anomaly>,
}

/// The status of the release whose records are `records`; `None` when it was never requested.
pub fn release_status(records: &[Record]) -> Option<ReleaseStatus> {
    let Folded { state, anomalies } = fold_records(records);
    let state = state?;
    let decided_at = |step: &str| {
        records
            .iter()
            .rev()
            .find(|r| {
                r.facets.family == "approval"
                    && r.data().get("step").and_then(|s| s.as_str()) == Some(step)
            })
            .map(|r| r.facets.at)
    };
    let steps = state
        .plan
        .as_ref()
        .map(|plan| {
            plan.steps
                .iter()
                .map(|step| StepView {
                    id: step.id.clone(),
                    env: step.env.to_string(),
                    action: step.action.as_str().to_owned(),
                    target: step.target.clone(),
                    version: step.version.clone(),
                    status: state
                        .steps
                        .get(&step.id)
                        .cloned()
                        .unwrap_or(StepStatus::Pending),
                    waits_for: plan
                        .edges
                        .iter()
                        .filter(|edge| edge.to == step.id)
                        .map(|edge| Waiting {
                            step: edge.from.clone(),
                            rule: edge.rule.clone(),
                            reason: edge.reason.clone(),
                        })
                        .collect(),
                })
                .collect()
        })
        .unwrap_or_default();
    let approvals: Vec<ApprovalView> = state
        .approvals
        .iter()
        .map(|(step, approval)| {
            let at = decided_at(step);
            match approval {
                ApprovalState::Requested { approvers } => ApprovalView {
                    step: step.clone(),
                    state: "requested".into(),
                    approvers: approvers.clone(),
                    by: None,
                    comment: None,
                    at,
                },
                ApprovalState::Granted { by, comment } | ApprovalState::Denied { by, comment } => {
                    ApprovalView {
                        step: step.clone(),
                        state: if matches!(approval, ApprovalState::Granted { .. }) {
                            "granted".into()
                        } else {
                            "denied".into()
                        },
                        approvers: Vec::new(),
                        by: Some(by.clone()),
                        comment: Some(comment.clone()),
                        at,
                    }
                }
            }
        })
        .collect();
    let owner_to_act = owner_to_act(&state, &approvals);
    Some(ReleaseStatus {
        release: state.id.to_string(),
        status: state.status,
        requested_by: state.requested_by.clone(),
        changes: state.changes.clone(),
        waves: state
            .plan
            .as_ref()
            .map(|plan| plan.waves.clone())
            .unwrap_or_default(),
        steps,
        gates: state.gates.clone(),
        approvals,
        hold: if state.status == Status::Held {
            state.hold.clone()
        } else {
            None
        },
        waiting: state.waiting.clone(),
        refusals: state.refusals.clone(),
        ended_because: state.ended_because.clone(),
        owner_to_act,
        events: state.events,
        last_event: records.last().map_or(0, |r| r.sequence),
        updated_at: state.updated_at,
        anomalies,
    })
}

fn owner_to_act(state: &ReleaseState, approvals: &[ApprovalView]) -> Option<OwnerToAct> {
    match state.status {
        Status::Held => {
            let hold = state.hold.as_ref();
            Some(OwnerToAct {
                who: hold
                    .and_then(|hold| hold.owner.clone())
                    .unwrap_or_else(|| "an operator".into()),
                why: format!(
                    "held{}: {}; resume, roll back or cancel it",
                    hold.and_then(|h| h.step.as_ref())
                        .map(|step| format!(" at {step}"))
                        .unwrap_or_default(),
                    hold.map(|h| h.reason.as_str()).unwrap_or("no reason given")
                ),
            })
        }
        Status::Rejected => Some(OwnerToAct {
            who: state.requested_by.clone(),
            why: format!(
                "refused: {}",
                state
                    .refusals
                    .iter()
                    .map(|r| format!("{} ({})", r.reason, r.remedy))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        }),
        Status::Planned => approvals
            .iter()
            .find(|a| a.state == "requested")
            .map(|a| OwnerToAct {
                who: a.approvers.join(", "),
                why: format!("{} waits for an approval", a.step),
            }),
        _ => None,
    }
}

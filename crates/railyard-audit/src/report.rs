//! The production change report: one row per deployment to an environment (production by
//! default) with service, version, artifact, commit range, requester, approvers, gates and
//! verdicts, outcome, start and end. The projection notes each deployment when its deploy
//! step first starts (with the commit running there then); the rest comes from folding the
//! release's records with the core's fold.

use chrono::{DateTime, Utc};
use railyard_core::release_state::{ApprovalState, StepStatus};
use railyard_core::step::StepId;
use railyard_core::{Action, ReleaseState, Status};
use serde::{Deserialize, Serialize};

use crate::projection::Deployment;
use crate::record::Record;
use crate::status::fold_records;

/// An approver's decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approver {
    /// Who.
    pub by: String,
    /// When.
    pub at: Option<DateTime<Utc>>,
    /// Why.
    pub comment: String,
}

/// A gate and its verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// Which gate.
    pub gate: String,
    /// Whether it passed.
    pub passed: bool,
    /// What was observed.
    pub observed: String,
}

/// One deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportRow {
    /// The release.
    pub release: String,
    /// The environment.
    pub env: String,
    /// The service.
    pub service: String,
    /// The version deployed.
    pub version: String,
    /// The artifact deployed.
    pub artifact: Option<String>,
    /// The commit running before.
    pub commit_from: Option<String>,
    /// The commit deployed.
    pub commit_to: Option<String>,
    /// `from..to` (or just `to` for a first deployment).
    pub commit_range: String,
    /// Who asked for the release.
    pub requested_by: String,
    /// Who approved it for this environment.
    pub approvers: Vec<Approver>,
    /// The gates of the service's verify step, with verdicts.
    pub gates: Vec<Verdict>,
    /// `succeeded`, `failed`, `rolled_back`, `cancelled` or `in_progress`.
    pub outcome: String,
    /// When the deploy step first started.
    pub started_at: DateTime<Utc>,
    /// When the deployment reached its outcome.
    pub ended_at: Option<DateTime<Utc>>,
}

fn step_of(record: &Record) -> Option<&str> {
    record.data().get("step").and_then(|step| step.as_str())
}

/// The report row of `deployment`, from its release's records.
pub fn report_row(deployment: &Deployment, records: &[Record]) -> ReportRow {
    let folded = fold_records(records);
    let state = folded.state.as_ref();
    let env = &deployment.env;
    let service = &deployment.service;
    // The deployment's deploy step parsed (the projection writes only ones that parse).
    let verify_step: String = StepId::parse(&deployment.step)
        .ok()
        .and_then(|deploy| deploy.with_action(Action::Verify))
        .map(String::from)
        .unwrap_or_default();
    let change = state.and_then(|s| s.changes.iter().find(|c| c.service.as_str() == service));
    let planned_version = state
        .and_then(|s| s.plan.as_ref())
        .and_then(|plan| plan.step(&deployment.step))
        .and_then(|step| step.version.clone());
    let version = change
        .map(|c| c.version.clone())
        .or(planned_version)
        .unwrap_or_default();
    let commit_to = change.and_then(|c| c.commit.clone());
    let commit_range = match (&deployment.from_commit, &commit_to) {
        (Some(from), Some(to)) => format!("{from}..{to}"),
        (None, Some(to)) => to.clone(),
        (Some(from), None) => format!("{from}.."),
        (None, None) => String::new(),
    };
    let approvers = state
        .map(|s| approvers(s, env, records))
        .unwrap_or_default();
    let gates = state
        .map(|s| {
            s.gates
                .iter()
                .filter(|g| g.step == verify_step)
                .map(|g| Verdict {
                    gate: g.gate.clone(),
                    passed: g.passed,
                    observed: g.observed.clone(),
                })
                .collect()
        })
        .unwrap_or_default();
    let (outcome, ended_at) = outcome(state, deployment, &verify_step, records);
    ReportRow {
        release: deployment.release.clone(),
        env: env.clone(),
        service: service.clone(),
        version,
        artifact: change.and_then(|c| c.artifact.clone()),
        commit_from: deployment.from_commit.clone(),
        commit_to,
        commit_range,
        requested_by: state.map(|s| s.requested_by.clone()).unwrap_or_default(),
        approvers,
        gates,
        outcome: outcome.into(),
        started_at: deployment.started_at,
        ended_at,
    }
}

fn approvers(state: &ReleaseState, env: &str, records: &[Record]) -> Vec<Approver> {
    let Some(plan) = &state.plan else {
        return Vec::new();
    };
    plan.steps
        .iter()
        .filter(|step| step.action == Action::Approve && step.env.as_str() == env)
        .filter_map(|step| match state.approvals.get(&step.id) {
            Some(ApprovalState::Granted { by, comment }) => Some(Approver {
                by: by.clone(),
                at: records
                    .iter()
                    .rev()
                    .find(|r| r.facets.kind == "approval.granted" && step_of(r) == Some(&step.id))
                    .map(|r| r.facets.at),
                comment: comment.clone(),
            }),
            _ => None,
        })
        .collect()
}

fn outcome(
    state: Option<&ReleaseState>,
    deployment: &Deployment,
    verify_step: &str,
    records: &[Record],
) -> (&'static str, Option<DateTime<Utc>>) {
    let Some(state) = state else {
        return ("in_progress", None);
    };
    let deploy = state.steps.get(&deployment.step);
    let verify = state.steps.get(verify_step);
    let ours = |r: &&Record| {
        step_of(r).is_some_and(|step| step == deployment.step || step == verify_step)
            || (r.facets.family == "release"
                && matches!(
                    r.facets.kind.as_str(),
                    "release.rolled_back" | "release.cancelled"
                ))
    };
    let last_of = |kinds: &[&str]| {
        records
            .iter()
            .filter(ours)
            .filter(|r| kinds.contains(&r.facets.kind.as_str()))
            .map(|r| r.facets.at)
            .max()
    };
    let is = |status: Option<&StepStatus>, f: fn(&StepStatus) -> bool| status.is_some_and(f);
    if state.status == Status::RolledBack
        || is(deploy, |s| matches!(s, StepStatus::RolledBack))
        || is(verify, |s| matches!(s, StepStatus::RolledBack))
    {
        return (
            "rolled_back",
            last_of(&["step.rolled_back", "release.rolled_back"]),
        );
    }
    if is(deploy, |s| matches!(s, StepStatus::Failed { .. }))
        || is(verify, |s| matches!(s, StepStatus::Failed { .. }))
    {
        return ("failed", last_of(&["step.failed"]));
    }
    if is(deploy, |s| matches!(s, StepStatus::Succeeded))
        && verify.is_none_or(|s| matches!(s, StepStatus::Succeeded))
    {
        return ("succeeded", last_of(&["step.succeeded"]));
    }
    if state.status == Status::Cancelled {
        return ("cancelled", last_of(&["release.cancelled"]));
    }
    if state.status == Status::Denied {
        return ("denied", last_of(&["release.cancelled"]));
    }
    ("in_progress", None)
}

//! The release list (`GET /v1/releases`, `railyard release list`): one [`ReleaseSummary`] per
//! release, kept up to date by the projection from the release's own typed events (a pure
//! [`ReleaseSummary::apply`]), and [`ReleaseFilter`] for the list's filters. Small on purpose:
//! the full status of one release is `status.rs`, folded from its records on demand.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use railyard_core::step::StepId;
use railyard_core::{Envelope, Event, Status};
use serde::{Deserialize, Serialize};

/// What the list shows of one release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseSummary {
    /// The release id.
    pub release: String,
    /// Where it is.
    pub status: Status,
    /// Who asked.
    pub requested_by: String,
    /// When it was requested.
    pub requested_at: DateTime<Utc>,
    /// When its last event happened.
    pub updated_at: DateTime<Utc>,
    /// The services of its changes, sorted.
    pub services: Vec<String>,
    /// The environments of its plan, in promotion order.
    pub envs: Vec<String>,
    /// The environment of the step that moved last, once one moved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_env: Option<String>,
    /// What it waits for now, in words (an approval, an operator after a hold), if anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
    /// Its own events so far.
    pub events: u64,
    /// Whether an approver denied one of its approvals (it then ends `denied`, not
    /// `cancelled`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub approval_denied: bool,
}

impl ReleaseSummary {
    /// Applies one of the release's own events; `None` is the summary before its first event.
    /// Events that cannot start a release leave `None` (the status view lists them as
    /// anomalies; the list only shows requested releases).
    pub fn apply(summary: Option<ReleaseSummary>, envelope: &Envelope) -> Option<ReleaseSummary> {
        let at = envelope.occurred_at;
        let mut summary = match (summary, &envelope.event) {
            (None, Event::ReleaseRequested(r)) => {
                let services: BTreeSet<String> =
                    r.changes.iter().map(|c| c.service.to_string()).collect();
                return Some(ReleaseSummary {
                    release: r.release.to_string(),
                    status: Status::Requested,
                    requested_by: r.requested_by.clone(),
                    requested_at: at,
                    updated_at: at,
                    services: services.into_iter().collect(),
                    envs: Vec::new(),
                    current_env: None,
                    waiting_for: Some("the planner".into()),
                    events: 1,
                    approval_denied: false,
                });
            }
            (None, _) => return None,
            (Some(summary), _) => summary,
        };
        summary.events += 1;
        summary.updated_at = at;
        let env_of = |step: &str| StepId::parse(step).ok().map(|id| id.env().to_string());
        match &envelope.event {
            Event::ReleasePlanned(p) => {
                summary.status = Status::Planned;
                let mut envs: Vec<String> = Vec::new();
                for step in &p.plan.steps {
                    let env = step.env.to_string();
                    if !envs.contains(&env) {
                        envs.push(env);
                    }
                }
                summary.envs = envs;
                summary.waiting_for = None;
            }
            Event::ReleaseRejected(r) => {
                summary.status = Status::Rejected;
                summary.waiting_for = Some(format!(
                    "a new release: refused for {} reason{}",
                    r.reasons.len(),
                    if r.reasons.len() == 1 { "" } else { "s" }
                ));
            }
            Event::ReleaseHeld(h) => {
                summary.status = Status::Held;
                summary.waiting_for = Some(match (&h.frozen, &h.owner) {
                    (Some(env), _) => format!("the end of {env}'s freeze window"),
                    (None, Some(owner)) => format!("{owner}: {}", h.reason),
                    (None, None) => format!("an operator: {}", h.reason),
                });
            }
            Event::ReleaseResumed(_) => {
                summary.status = Status::Planned;
                summary.waiting_for = None;
            }
            Event::ApprovalRequested(a) => {
                summary.current_env = Some(a.env.to_string());
                summary.waiting_for = Some(format!(
                    "approval for {} from {}",
                    a.env,
                    a.approvers.join(", ")
                ));
            }
            Event::ApprovalGranted(a) => {
                summary.current_env = env_of(&a.step);
                if summary.status != Status::Held {
                    summary.waiting_for = None;
                }
            }
            Event::ApprovalDenied(a) => {
                summary.current_env = env_of(&a.step);
                summary.approval_denied = true;
            }
            Event::ReleaseCancelled(_) => {
                // As the release fold: a release that ends after a denial ends denied.
                summary.status = if summary.approval_denied {
                    Status::Denied
                } else {
                    Status::Cancelled
                };
                summary.waiting_for = None;
            }
            Event::ReleaseCompleted(_) => {
                summary.status = Status::Completed;
                summary.waiting_for = None;
            }
            Event::ReleaseRolledBack(_) => {
                summary.status = Status::RolledBack;
                summary.waiting_for = None;
            }
            Event::StepStarted(s) => summary.current_env = env_of(&s.step),
            Event::StepSucceeded(o) | Event::StepFailed(o) | Event::StepRolledBack(o) => {
                summary.current_env = env_of(&o.step);
            }
            _ => {}
        }
        Some(summary)
    }
}

/// Which releases the list wants; every field narrows it
/// (`?service=&env=&status=&requester=&since=&until=`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseFilter {
    /// Releases changing this service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Releases whose plan reaches this environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// Releases in this status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// Releases requested by this identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requester: Option<String>,
    /// Requested at or after this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<DateTime<Utc>>,
    /// Requested before this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<DateTime<Utc>>,
}

impl ReleaseFilter {
    /// Whether `summary` passes every field.
    pub fn matches(&self, summary: &ReleaseSummary) -> bool {
        self.service
            .as_ref()
            .is_none_or(|s| summary.services.contains(s))
            && self.env.as_ref().is_none_or(|e| summary.envs.contains(e))
            && self.status.is_none_or(|s| summary.status == s)
            && self
                .requester
                .as_ref()
                .is_none_or(|r| &summary.requested_by == r)
            && self.since.is_none_or(|t| summary.requested_at >= t)
            && self.until.is_none_or(|t| summary.requested_at < t)
    }
}

/// Parses a status as the list's filter takes it (`held`, `rolled_back`).
pub fn parse_status(text: &str) -> Option<Status> {
    serde_json::from_value(serde_json::Value::String(text.replace([' ', '-'], "_"))).ok()
}

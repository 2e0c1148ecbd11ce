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
    /// The step whose `step.waiting` set `waiting_for`: its start ends the wait.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_step: Option<String>,
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
                    waiting_step: None,
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
        // Kept only while a step's wait is what it shows (rare), not copied for every event.
        let step_wait = summary
            .waiting_step
            .is_some()
            .then(|| summary.waiting_for.clone());
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
            Event::StepWaiting(w) => {
                summary.current_env = env_of(&w.step);
                let releases: Vec<String> = w.waiting_for.iter().map(|r| r.to_string()).collect();
                summary.waiting_for = Some(format!(
                    "{} to finish first (requested earlier, same services): {} waits",
                    releases.join(", "),
                    w.step
                ));
                summary.waiting_step = Some(w.step.to_string());
            }
            Event::StepStarted(s) => {
                summary.current_env = env_of(&s.step);
                if summary.waiting_step.as_deref() == Some(s.step.as_str()) {
                    summary.waiting_for = None;
                }
            }
            Event::StepSucceeded(o) | Event::StepFailed(o) | Event::StepRolledBack(o) => {
                summary.current_env = env_of(&o.step);
            }
            _ => {}
        }
        // A step's wait is over once anything else is what the release waits for.
        if step_wait.is_some_and(|text| text != summary.waiting_for)
            && !matches!(envelope.event, Event::StepWaiting(_))
        {
            summary.waiting_step = None;
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

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};
    use railyard_core::event::{ReleaseHeld, ReleaseRequested, StepStarted, StepWaiting};
    use railyard_core::{AggregateId, Change, Envelope, Event};

    use super::ReleaseSummary;

    fn envelope(event: Event) -> Envelope {
        let at: DateTime<Utc> = "2026-11-02T09:00:00Z".parse().unwrap();
        Envelope::new(
            AggregateId::Release("rel-2".parse().unwrap()),
            "railyard",
            at,
            event,
        )
    }

    fn waiting(step: &str) -> Event {
        Event::StepWaiting(StepWaiting {
            step: step.into(),
            waiting_for: vec!["rel-1".parse().unwrap()],
            reason: "rel-1 is being undone in staging".into(),
        })
    }

    fn started(step: &str) -> Event {
        Event::StepStarted(StepStarted {
            step: step.into(),
            worker: "w1".into(),
            attempt: 1,
        })
    }

    fn requested() -> Option<ReleaseSummary> {
        let change: Change = serde_json::from_value(serde_json::json!({
            "service": "billing-worker", "version": "1.6.0"
        }))
        .unwrap();
        ReleaseSummary::apply(
            None,
            &envelope(Event::ReleaseRequested(ReleaseRequested {
                release: "rel-2".parse().unwrap(),
                requested_by: "carol".into(),
                changes: vec![change],
            })),
        )
    }

    /// A step's wait says which release and which step; it ends when that step starts, not
    /// when another one does.
    #[test]
    fn a_step_wait_names_the_release_and_ends_when_the_step_starts() {
        let step = "staging:deploy:billing-worker";
        let summary = ReleaseSummary::apply(requested(), &envelope(waiting(step)));
        let text = summary.as_ref().unwrap().waiting_for.clone().unwrap();
        assert!(text.contains("rel-1") && text.contains(step), "{text}");
        let other = ReleaseSummary::apply(summary, &envelope(started("staging:migrate:billing")));
        assert_eq!(other.as_ref().unwrap().waiting_for.as_deref(), Some(&*text));
        let done = ReleaseSummary::apply(other, &envelope(started(step))).unwrap();
        assert_eq!(done.waiting_for, None);
        assert_eq!(done.waiting_step, None);
    }

    /// A hold after a wait replaces it: the step starting later does not clear the hold's text.
    #[test]
    fn a_hold_after_a_wait_is_not_cleared_by_the_step_starting() {
        let step = "staging:deploy:billing-worker";
        let summary = ReleaseSummary::apply(requested(), &envelope(waiting(step)));
        let held = ReleaseSummary::apply(
            summary,
            &envelope(Event::ReleaseHeld(ReleaseHeld {
                reason: "manual hold".into(),
                step: None,
                owner: None,
                frozen: None,
            })),
        );
        assert_eq!(held.as_ref().unwrap().waiting_step, None);
        let after = ReleaseSummary::apply(held, &envelope(started(step))).unwrap();
        assert_eq!(
            after.waiting_for.as_deref(),
            Some("an operator: manual hold")
        );
    }
}

//! What queries answer: [`EventItem`] (timelines, changes, an actor's doings),
//! [`ApprovalItem`], [`GateItem`] and [`RejectionItem`], each built from stored records, with
//! a one-line description of every event in words, read from the typed event (a refused
//! record, or one this version cannot read, shows its type and JSON).

use chrono::{DateTime, Utc};
use railyard_bus::StoredRejection;
use railyard_core::Event;
use railyard_core::step::StepId;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::record::Record;

/// One event, as timelines show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventItem {
    /// Record number.
    pub n: u64,
    /// Stream sequence.
    pub sequence: u64,
    /// When it happened.
    pub at: DateTime<Utc>,
    /// Event type.
    #[serde(rename = "type")]
    pub kind: String,
    /// Aggregate.
    pub aggregate: String,
    /// Who caused it.
    pub actor: String,
    /// The release it concerns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
    /// The services it concerns.
    #[serde(default)]
    pub services: Vec<String>,
    /// The environments it concerns.
    #[serde(default)]
    pub envs: Vec<String>,
    /// The event id.
    #[serde(default)]
    pub event_id: String,
    /// What happened, in words.
    pub summary: String,
    /// The event's payload.
    pub data: Value,
}

impl From<&Record> for EventItem {
    fn from(record: &Record) -> EventItem {
        EventItem {
            n: record.n,
            sequence: record.sequence,
            at: record.facets.at,
            kind: record.facets.kind.clone(),
            aggregate: record.facets.aggregate.clone(),
            actor: record.facets.actor.clone(),
            release: record.facets.release.clone(),
            services: record.facets.services.clone(),
            envs: record.facets.envs.clone(),
            event_id: record.event_id().unwrap_or_default().to_owned(),
            summary: summary(record),
            data: record.data().clone(),
        }
    }
}

fn with_detail(head: String, detail: &str) -> String {
    if detail.is_empty() {
        head
    } else {
        format!("{head}: {detail}")
    }
}

/// What `record`'s event did, in one line.
fn summary(record: &Record) -> String {
    let facets = &record.facets;
    match record.event() {
        // A refused record keeps its event under `refused:<type>`: shown as it was sent.
        Ok(event) if facets.kind == event.type_name() => {
            describe(&event, &facets.actor, record.data())
        }
        _ => raw(&facets.kind, record.data()),
    }
}

/// An event's type and its payload's JSON, cut at 200 bytes.
fn raw(kind: &str, data: &Value) -> String {
    let mut payload = data.to_string();
    if payload.len() > 200 {
        let mut cut = 200;
        while !payload.is_char_boundary(cut) {
            cut -= 1;
        }
        payload.truncate(cut);
        payload.push('…');
    }
    format!("{kind} {payload}")
}

/// One line saying what `event` by `actor` did; `data` is its stored payload, shown as it
/// is for the events that have no words of their own.
pub fn describe(event: &Event, actor: &str, data: &Value) -> String {
    match event {
        Event::ReleaseRequested(r) => {
            let changes: Vec<String> = r
                .changes
                .iter()
                .map(|c| format!("{} {}", c.service, c.version))
                .collect();
            format!("requested by {}: {}", r.requested_by, changes.join(", "))
        }
        Event::ReleasePlanned(p) => format!(
            "planned: {} steps in {} waves",
            p.plan.steps.len(),
            p.plan.waves.len()
        ),
        Event::ReleaseRejected(r) => {
            let reasons: Vec<&str> = r.reasons.iter().map(|r| r.reason.as_str()).collect();
            format!("refused: {}", reasons.join("; "))
        }
        Event::ReleaseCancelled(r) => with_detail("cancelled".into(), &r.reason),
        Event::ReleaseResumed(r) => with_detail("resumed".into(), &r.reason),
        Event::ReleaseHeld(h) => {
            let at = match h.step.as_deref() {
                Some(step) if !step.is_empty() => format!(" at {step}"),
                _ => String::new(),
            };
            let owner = h
                .owner
                .as_ref()
                .map(|owner| format!(" (owner: {owner})"))
                .unwrap_or_default();
            format!("held{at}: {}{owner}", h.reason)
        }
        Event::ReleaseCompleted(_) => "completed".into(),
        Event::ReleaseRolledBack(r) => with_detail("rolled back".into(), &r.reason),
        Event::StepWaiting(w) => {
            let releases: Vec<String> = w.waiting_for.iter().map(|r| r.to_string()).collect();
            format!("{} waits for {}: {}", w.step, releases.join(", "), w.reason)
        }
        Event::StepStarted(s) => format!(
            "{} started by worker {} (attempt {})",
            s.step, s.worker, s.attempt
        ),
        Event::GateEvaluated(g) => format!(
            "gate {} on {} {}: observed {}, expected {}",
            g.gate,
            g.step,
            if g.passed { "passed" } else { "failed" },
            g.observed,
            g.expected
        ),
        Event::StepSucceeded(o) => with_detail(format!("{} succeeded", o.step), &o.detail),
        Event::StepFailed(o) => with_detail(format!("{} failed", o.step), &o.detail),
        Event::StepRolledBack(o) => with_detail(format!("{} rolled back", o.step), &o.detail),
        Event::ApprovalRequested(a) => with_detail(
            format!(
                "approval of {} requested from {}",
                a.step,
                a.approvers.join(", ")
            ),
            a.reason.as_deref().unwrap_or_default(),
        ),
        Event::ApprovalGranted(d) => {
            with_detail(format!("{} approved by {actor}", d.step), &d.comment)
        }
        Event::ApprovalDenied(d) => {
            with_detail(format!("{} denied by {actor}", d.step), &d.comment)
        }
        Event::FreezeOverridden(f) => with_detail(
            format!("EMERGENCY: the freeze of {} overridden by {actor}", f.env),
            &f.reason,
        ),
        Event::ColourRetired(c) => with_detail(
            if c.ok {
                format!("old colour {} of {} retired", c.colour, c.step)
            } else {
                format!(
                    "old colour {} of {} NOT retired: it is still running",
                    c.colour, c.step
                )
            },
            &c.detail,
        ),
        Event::ServiceDeployed(d) => match &d.running {
            Some(running) => format!("{} now runs {} in {}", d.service, running.version, d.env),
            None => format!("{} removed from {}", d.service, d.env),
        },
        Event::CatalogApplied(c) => format!("catalog {} applied", c.hash),
        Event::AuditCheckpoint(c) => format!(
            "records 1 to {} sealed by key {} (head {}…)",
            c.records,
            c.key_id,
            c.head.get(..16).unwrap_or_default()
        ),
        Event::ArtifactPublished(_)
        | Event::SuiteFinished(_)
        | Event::CommitsPushed(_)
        | Event::IncidentOpened(_)
        | Event::IncidentResolved(_) => raw(event.type_name(), data),
    }
}

/// One approval request or decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalItem {
    /// Record number.
    pub n: u64,
    /// When.
    pub at: DateTime<Utc>,
    /// The release.
    pub release: String,
    /// The approve step.
    pub step: String,
    /// Its environment.
    pub env: String,
    /// `requested`, `granted` or `denied`.
    pub decision: String,
    /// Who decided (a grant or denial); empty for a request, which nobody has decided yet.
    pub by: String,
    /// Why, as the approver wrote it.
    pub comment: String,
    /// Who was asked: the identities and groups that may approve (requests only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvers: Vec<String>,
    /// Who recorded the event: the worker that asked, or the approver who decided.
    pub recorded_by: String,
}

impl ApprovalItem {
    /// The approval item of an `approval.*` record.
    pub fn from_record(record: &Record) -> ApprovalItem {
        let event = record.event().ok();
        let (step, asked_in, comment, approvers) = match &event {
            Some(Event::ApprovalRequested(a)) => {
                (a.step.as_str(), Some(&a.env), "", a.approvers.clone())
            }
            Some(Event::ApprovalGranted(d) | Event::ApprovalDenied(d)) => {
                (d.step.as_str(), None, d.comment.as_str(), Vec::new())
            }
            _ => ("", None, "", Vec::new()),
        };
        let env = StepId::parse(step)
            .ok()
            .map(|id| id.env().to_string())
            .or_else(|| asked_in.map(ToString::to_string))
            .unwrap_or_default();
        ApprovalItem {
            n: record.n,
            at: record.facets.at,
            release: record.facets.release.clone().unwrap_or_default(),
            step: step.to_owned(),
            env,
            decision: record
                .facets
                .kind
                .strip_prefix("approval.")
                .unwrap_or(&record.facets.kind)
                .to_owned(),
            by: if record.facets.kind == "approval.requested" {
                String::new()
            } else {
                record.facets.actor.clone()
            },
            recorded_by: record.facets.actor.clone(),
            comment: comment.to_owned(),
            approvers,
        }
    }
}

/// One gate result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateItem {
    /// Record number.
    pub n: u64,
    /// When.
    pub at: DateTime<Utc>,
    /// The release.
    pub release: String,
    /// The verify step.
    pub step: String,
    /// Its environment.
    pub env: String,
    /// The service verified.
    pub service: String,
    /// Which gate.
    pub gate: String,
    /// Whether it passed.
    pub passed: bool,
    /// What was observed.
    pub observed: String,
    /// What was expected.
    pub expected: String,
}

impl GateItem {
    /// The gate item of a `gate.evaluated` record.
    pub fn from_record(record: &Record) -> GateItem {
        let gate = match record.event() {
            Ok(Event::GateEvaluated(gate)) => Some(gate),
            _ => None,
        };
        let step = gate.as_ref().and_then(|g| StepId::parse(&g.step).ok());
        GateItem {
            n: record.n,
            at: record.facets.at,
            release: record.facets.release.clone().unwrap_or_default(),
            step: gate.as_ref().map(|g| g.step.clone()).unwrap_or_default(),
            env: step
                .as_ref()
                .map(|s| s.env().to_string())
                .unwrap_or_default(),
            service: step.map(|s| s.target().to_string()).unwrap_or_default(),
            gate: gate.as_ref().map(|g| g.gate.clone()).unwrap_or_default(),
            passed: gate.as_ref().is_some_and(|g| g.passed),
            observed: gate
                .as_ref()
                .map(|g| g.observed.clone())
                .unwrap_or_default(),
            expected: gate.map(|g| g.expected).unwrap_or_default(),
        }
    }
}

/// One refused input from the rejection log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectionItem {
    /// Its sequence in the rejection log.
    pub sequence: u64,
    /// When it arrived.
    pub received_at: DateTime<Utc>,
    /// Which door it came through.
    pub source: String,
    /// Where from.
    pub origin: String,
    /// Why it was refused.
    pub reason: String,
    /// The body as received (cut at 64 KiB).
    pub body: String,
}

impl From<StoredRejection> for RejectionItem {
    fn from(stored: StoredRejection) -> RejectionItem {
        RejectionItem {
            sequence: stored.sequence,
            received_at: stored.rejection.received_at,
            source: stored.rejection.source,
            origin: stored.rejection.origin,
            reason: stored.rejection.reason,
            body: stored.rejection.body,
        }
    }
}

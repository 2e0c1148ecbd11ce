//! What queries answer: [`EventItem`] (timelines, changes, an actor's doings),
//! [`ApprovalItem`], [`GateItem`] and [`RejectionItem`], each built from stored records, with
//! a one-line description of every event in words (any unknown type falls back to its JSON).

use chrono::{DateTime, Utc};
use railyard_bus::StoredRejection;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::record::{Record, split_step};

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
            summary: describe(&record.facets.kind, &record.facets.actor, record.data()),
            data: record.data().clone(),
        }
    }
}

fn text<'a>(data: &'a Value, key: &str) -> &'a str {
    data.get(key).and_then(Value::as_str).unwrap_or_default()
}

fn with_detail(head: String, detail: &str) -> String {
    if detail.is_empty() {
        head
    } else {
        format!("{head}: {detail}")
    }
}

/// One line saying what an event of `kind` by `actor` with payload `data` did.
pub fn describe(kind: &str, actor: &str, data: &Value) -> String {
    let step = text(data, "step");
    let list = |key: &str| -> Vec<String> {
        data.get(key)
            .and_then(Value::as_array)
            .map(|items| {
                items
                    .iter()
                    .map(|item| match item {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    match kind {
        "release.requested" => {
            let changes: Vec<String> = data
                .get("changes")
                .and_then(Value::as_array)
                .map(|changes| {
                    changes
                        .iter()
                        .map(|c| format!("{} {}", text(c, "service"), text(c, "version")))
                        .collect()
                })
                .unwrap_or_default();
            format!(
                "requested by {}: {}",
                text(data, "requested_by"),
                changes.join(", ")
            )
        }
        "release.planned" => {
            let steps = data
                .pointer("/plan/steps")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            let waves = data
                .pointer("/plan/waves")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            format!("planned: {steps} steps in {waves} waves")
        }
        "release.rejected" => {
            let reasons: Vec<&str> = data
                .get("reasons")
                .and_then(Value::as_array)
                .map(|reasons| reasons.iter().map(|r| text(r, "reason")).collect())
                .unwrap_or_default();
            format!("refused: {}", reasons.join("; "))
        }
        "release.cancelled" => with_detail("cancelled".into(), text(data, "reason")),
        "release.resumed" => with_detail("resumed".into(), text(data, "reason")),
        "release.held" => {
            let at = if step.is_empty() {
                String::new()
            } else {
                format!(" at {step}")
            };
            let owner = data
                .get("owner")
                .and_then(Value::as_str)
                .map(|owner| format!(" (owner: {owner})"))
                .unwrap_or_default();
            format!("held{at}: {}{owner}", text(data, "reason"))
        }
        "release.completed" => "completed".into(),
        "release.rolled_back" => with_detail("rolled back".into(), text(data, "reason")),
        "step.started" => format!(
            "{step} started by worker {} (attempt {})",
            text(data, "worker"),
            data.get("attempt").and_then(Value::as_u64).unwrap_or(1)
        ),
        "gate.evaluated" => format!(
            "gate {} on {step} {}: observed {}, expected {}",
            text(data, "gate"),
            if data.get("passed").and_then(Value::as_bool) == Some(true) {
                "passed"
            } else {
                "failed"
            },
            text(data, "observed"),
            text(data, "expected")
        ),
        "step.succeeded" => with_detail(format!("{step} succeeded"), text(data, "detail")),
        "step.failed" => with_detail(format!("{step} failed"), text(data, "detail")),
        "step.rolled_back" => with_detail(format!("{step} rolled back"), text(data, "detail")),
        "approval.requested" => with_detail(
            format!(
                "approval of {step} requested from {}",
                list("approvers").join(", ")
            ),
            text(data, "reason"),
        ),
        "approval.granted" => {
            with_detail(format!("{step} approved by {actor}"), text(data, "comment"))
        }
        "approval.denied" => {
            with_detail(format!("{step} denied by {actor}"), text(data, "comment"))
        }
        "freeze.overridden" => with_detail(
            format!(
                "EMERGENCY: the freeze of {} overridden by {actor}",
                text(data, "env")
            ),
            text(data, "reason"),
        ),
        "colour.retired" => with_detail(
            if data.get("ok").and_then(Value::as_bool) == Some(true) {
                format!("old colour {} of {step} retired", text(data, "colour"))
            } else {
                format!(
                    "old colour {} of {step} NOT retired: it is still running",
                    text(data, "colour")
                )
            },
            text(data, "detail"),
        ),
        "service.deployed" => match data.get("running").filter(|r| !r.is_null()) {
            Some(running) => format!(
                "{} now runs {} in {}",
                text(data, "service"),
                text(running, "version"),
                text(data, "env")
            ),
            None => format!(
                "{} removed from {}",
                text(data, "service"),
                text(data, "env")
            ),
        },
        "catalog.applied" => format!("catalog {} applied", text(data, "hash")),
        "audit.checkpoint" => format!(
            "records 1 to {} sealed by key {} (head {}…)",
            data.get("records")
                .and_then(Value::as_u64)
                .unwrap_or_default(),
            text(data, "key_id"),
            text(data, "head").get(..16).unwrap_or_default()
        ),
        other => {
            let mut payload = data.to_string();
            if payload.len() > 200 {
                let mut cut = 200;
                while !payload.is_char_boundary(cut) {
                    cut -= 1;
                }
                payload.truncate(cut);
                payload.push('…');
            }
            format!("{other} {payload}")
        }
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
        let data = record.data();
        let step = text(data, "step").to_owned();
        let env = split_step(&step)
            .map(|(env, _, _)| env.to_owned())
            .unwrap_or_else(|| text(data, "env").to_owned());
        ApprovalItem {
            n: record.n,
            at: record.facets.at,
            release: record.facets.release.clone().unwrap_or_default(),
            step,
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
            comment: text(data, "comment").to_owned(),
            approvers: data
                .get("approvers")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
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
        let data = record.data();
        let step = text(data, "step").to_owned();
        let (env, service) = split_step(&step)
            .map(|(env, _, target)| (env.to_owned(), target.to_owned()))
            .unwrap_or_default();
        GateItem {
            n: record.n,
            at: record.facets.at,
            release: record.facets.release.clone().unwrap_or_default(),
            step,
            env,
            service,
            gate: text(data, "gate").to_owned(),
            passed: data.get("passed").and_then(Value::as_bool) == Some(true),
            observed: text(data, "observed").to_owned(),
            expected: text(data, "expected").to_owned(),
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

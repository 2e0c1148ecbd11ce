//! Which CDEvents Railyard's own events become, as a pure function of the service's views
//! (what runs where, what each release deploys) and one event. No IO.
//!
//! - `release.requested` → `pipelinerun.queued`; `release.planned` → `pipelinerun.started`;
//!   `release.completed`, `release.rolled_back`, `release.rejected`, `release.cancelled` →
//!   `pipelinerun.finished` with outcome `success`, `failure`, `failure`, `cancel` (the
//!   pipeline run is the release; its id is the release id, its url the console page).
//! - `service.deployed` (the inventory) → `environment.created` the first time an environment
//!   is seen, then `service.deployed` (new to the environment), `service.upgraded` (another
//!   version ran), `service.rolledback` (the release that did it puts back a version other
//!   than its own) or `service.removed`, then `environment.modified`.
//!
//! Every event carries `customData.railyardEmitted` (the release and the Railyard event it
//! tells): intake ignores such events, so a sink that loops back into Railyard changes
//! nothing.

use std::collections::BTreeMap;

use railyard_core::event::Event;
use railyard_core::{AggregateId, Envelope};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The CDEvents release emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum SpecVersion {
    /// v0.4.1 (`context.version`, `subject.type`, `url`).
    #[default]
    V0_4_1,
    /// v0.5.1 (`context.specversion`, no `subject.type`, `uri`).
    V0_5_1,
}

impl SpecVersion {
    /// `0.4.1` or `0.5.1`.
    pub fn as_str(self) -> &'static str {
        match self {
            SpecVersion::V0_4_1 => "0.4.1",
            SpecVersion::V0_5_1 => "0.5.1",
        }
    }

    /// The version of the event type `<subject>.<predicate>` in this release.
    fn type_version(self) -> &'static str {
        match self {
            SpecVersion::V0_4_1 => "0.2.0",
            SpecVersion::V0_5_1 => "0.3.0",
        }
    }
}

impl std::str::FromStr for SpecVersion {
    type Err = String;
    fn from_str(s: &str) -> Result<SpecVersion, String> {
        match s.trim() {
            "0.4.1" | "0.4" => Ok(SpecVersion::V0_4_1),
            "0.5.1" | "0.5" => Ok(SpecVersion::V0_5_1),
            other => Err(format!(
                "cdevents version {other:?} is not emitted: use 0.4.1 or 0.5.1"
            )),
        }
    }
}

/// What a service runs in an environment, as far as this service saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Running {
    /// Version.
    pub version: String,
    /// Artifact, when known.
    pub artifact: Option<String>,
}

/// The views the builder reads and keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Views {
    /// Environments already announced.
    pub environments: Vec<String>,
    /// What runs in the environment of the event at hand: service → running.
    pub inventory: BTreeMap<String, Running>,
    /// The versions the release at hand deploys: service → version.
    pub release: BTreeMap<String, String>,
}

/// Where events come from and point to.
#[derive(Debug, Clone)]
pub struct Origin<'a> {
    /// `context.source` of every event.
    pub source: &'a str,
    /// The console's base URL (pipeline run urls).
    pub console_url: &'a str,
    /// The release emitted.
    pub version: SpecVersion,
}

fn artifact_id(service: &str, running: &Running) -> String {
    running
        .artifact
        .clone()
        .filter(|a| !a.trim().is_empty())
        .unwrap_or_else(|| format!("pkg:generic/{service}@{}", running.version))
}

/// The subject of one CDEvent.
struct Subject<'a> {
    /// `service.deployed`.
    kind: &'a str,
    /// `service` (v0.4.1's `subject.type`).
    of: &'a str,
    /// `subject.id`.
    id: &'a str,
    /// `subject.content`.
    content: Value,
}

/// One CDEvent about `envelope`, the `n`th it becomes.
fn cdevent(
    origin: &Origin<'_>,
    envelope: &Envelope,
    n: usize,
    subject: Subject<'_>,
    release: Option<&str>,
) -> Value {
    let Subject {
        kind,
        of: subject_type,
        id: subject_id,
        content,
    } = subject;
    let version = origin.version;
    let mut context = json!({
        "id": format!("{}-{n}", envelope.event_id),
        "source": origin.source,
        "type": format!("dev.cdevents.{kind}.{}", version.type_version()),
        "timestamp": envelope.occurred_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "chainId": envelope.correlation_id.to_string(),
    });
    let mut subject = json!({
        "id": subject_id,
        "source": origin.source,
        "content": content,
    });
    match version {
        SpecVersion::V0_4_1 => {
            context["version"] = json!("0.4.1");
            subject["type"] = json!(subject_type);
        }
        SpecVersion::V0_5_1 => {
            context["specversion"] = json!("0.5.1");
        }
    }
    let mut emitted =
        json!({"event": envelope.event_id.to_string(), "type": envelope.event.type_name()});
    if let Some(release) = release {
        emitted["release"] = json!(release);
    }
    json!({
        "context": context,
        "subject": subject,
        "customData": {"railyardEmitted": emitted},
        "customDataContentType": "application/json",
    })
}

/// The pipeline run url (`url` in 0.4.1, `uri` in 0.5.1) under `content`.
fn with_url(origin: &Origin<'_>, mut content: Value, release: &str) -> Value {
    let url = format!(
        "{}/releases/{release}",
        origin.console_url.trim_end_matches('/')
    );
    let key = match origin.version {
        SpecVersion::V0_4_1 => "url",
        SpecVersion::V0_5_1 => "uri",
    };
    content[key] = json!(url);
    content
}

/// The kinds of event `envelope` may need views for: `Some(env)` for an inventory change.
pub fn inventory_env(envelope: &Envelope) -> Option<&str> {
    match &envelope.event {
        Event::ServiceDeployed(d) => Some(d.env.as_str()),
        _ => None,
    }
}

/// The CDEvents `envelope` becomes, updating `views`.
pub fn build(origin: &Origin<'_>, views: &mut Views, envelope: &Envelope) -> Vec<Value> {
    let release = match &envelope.aggregate {
        AggregateId::Release(id) => Some(id.to_string()),
        _ => None,
    };
    let run = |n: usize, kind: &str, content: Value| {
        let id = release.as_deref().unwrap_or_default();
        let subject = Subject {
            kind,
            of: "pipelineRun",
            id,
            content: with_url(origin, content, id),
        };
        cdevent(origin, envelope, n, subject, release.as_deref())
    };
    let name = json!({"pipelineName": "railyard release"});
    let finished = |outcome: &str, errors: Option<String>| {
        let mut content = json!({"pipelineName": "railyard release", "outcome": outcome});
        if let Some(errors) = errors.filter(|e| !e.is_empty()) {
            content["errors"] = json!(errors);
        }
        run(0, "pipelinerun.finished", content)
    };
    match &envelope.event {
        Event::ReleaseRequested(requested) => {
            views.release = requested
                .changes
                .iter()
                .map(|c| (c.service.to_string(), c.version.clone()))
                .collect();
            vec![run(0, "pipelinerun.queued", name)]
        }
        Event::ReleasePlanned(_) => vec![run(0, "pipelinerun.started", name)],
        Event::ReleaseCompleted(_) => vec![finished("success", None)],
        Event::ReleaseRolledBack(r) => vec![finished("failure", Some(r.reason.clone()))],
        Event::ReleaseRejected(r) => vec![finished(
            "failure",
            Some(
                r.reasons
                    .iter()
                    .map(|r| r.reason.clone())
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
        )],
        Event::ReleaseCancelled(r) => vec![finished("cancel", Some(r.reason.clone()))],
        Event::ServiceDeployed(deployed) => {
            let env = deployed.env.as_str();
            let service = deployed.service.as_str();
            let by = deployed.release.as_ref().map(|r| r.to_string());
            let mut out = Vec::new();
            let env_event = |n: usize, kind: &str| {
                let mut content = json!({"name": env});
                if kind == "environment.created" || kind == "environment.modified" {
                    let key = match origin.version {
                        SpecVersion::V0_4_1 => "url",
                        SpecVersion::V0_5_1 => "uri",
                    };
                    content[key] = json!(format!(
                        "{}/environments/{env}",
                        origin.console_url.trim_end_matches('/')
                    ));
                }
                let subject = Subject {
                    kind,
                    of: "environment",
                    id: env,
                    content,
                };
                cdevent(origin, envelope, n, subject, by.as_deref())
            };
            if !views.environments.iter().any(|e| e == env) {
                views.environments.push(env.to_owned());
                out.push(env_event(out.len(), "environment.created"));
            }
            let before = views.inventory.get(service).cloned();
            let environment = json!({"id": env, "source": origin.source});
            let service_event = |n: usize, kind: &str, running: Option<&Running>| {
                let mut content = json!({"environment": environment});
                if let Some(running) = running {
                    content["artifactId"] = json!(artifact_id(service, running));
                }
                let subject = Subject {
                    kind,
                    of: "service",
                    id: service,
                    content,
                };
                cdevent(origin, envelope, n, subject, by.as_deref())
            };
            match &deployed.running {
                None => {
                    views.inventory.remove(service);
                    out.push(service_event(out.len(), "service.removed", None));
                }
                Some(now) => {
                    let running = Running {
                        version: now.version.clone(),
                        artifact: now.artifact.clone(),
                    };
                    let own = views.release.get(service);
                    let kind = if by.is_some() && own.is_some_and(|v| v != &running.version) {
                        "service.rolledback"
                    } else if before.is_none() {
                        "service.deployed"
                    } else {
                        "service.upgraded"
                    };
                    out.push(service_event(out.len(), kind, Some(&running)));
                    views.inventory.insert(service.to_owned(), running);
                }
            }
            out.push(env_event(out.len(), "environment.modified"));
            out
        }
        _ => Vec::new(),
    }
}

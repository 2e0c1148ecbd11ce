//! CDEvents intake: the CloudEvents binding (structured `application/cloudevents+json`,
//! binary `ce-*` headers) or a bare CDEvent, validated against the official v0.4.1 / v0.5.1
//! schema of its type, then mapped (INTERFACES §8): `artifact.published` and suite results
//! become signals, `service.*` inventory updates, `incident.*` incidents; other types are
//! ignored with the reason.

use railyard_core::event::{
    ArtifactPublished, CommitsPushed, IncidentOpened, IncidentResolved, Origin, PushedCommit,
    SuiteFinished,
};
use railyard_core::{Change, ServiceName};
use serde_json::Value;

use crate::answer::Refused;
use crate::intake::Headers;
use crate::mapped::{
    Mapped, Parsed, RailyardData, Resolver, Running, Signal, purl_name, purl_version,
};
use crate::schemas::{Schemas, VERSIONS, kind_of};

/// Parses, validates and maps one CDEvent input.
pub fn parse(resolver: &Resolver<'_>, headers: &Headers, body: &[u8]) -> Result<Parsed, Refused> {
    let value = json_body(body)?;
    let content_type = headers.content_type();
    let (event, cloud_type) = if content_type == "application/cloudevents+json" {
        structured(value)?
    } else if let Some(specversion) = headers.get("ce-specversion") {
        if specversion != "1.0" {
            return Err(Refused::invalid(
                format!(
                    "cloudevents specversion {specversion:?} is not supported: send ce-specversion: 1.0"
                ),
                "ce-specversion",
            ));
        }
        for header in ["ce-id", "ce-source", "ce-type"] {
            if headers.get(header).is_none_or(str::is_empty) {
                return Err(Refused::malformed(
                    format!(
                        "binary-mode cloudevents need the {header} header: add it (it mirrors the CDEvent context)"
                    ),
                    header,
                ));
            }
        }
        (value, headers.get("ce-type").map(str::to_owned))
    } else if value.get("specversion").is_some() && value.get("data").is_some() {
        structured(value)?
    } else {
        (value, None)
    };
    cdevent(resolver, &event, cloud_type.as_deref())
}

/// The body as JSON: 400 when it is not UTF-8 or not JSON.
pub fn json_body(body: &[u8]) -> Result<Value, Refused> {
    let text = std::str::from_utf8(body).map_err(|error| {
        Refused::malformed(
            format!(
                "the body is not valid utf-8 (at byte {}): send json encoded as utf-8",
                error.valid_up_to()
            ),
            "",
        )
    })?;
    serde_json::from_str(text).map_err(|error| {
        Refused::malformed(
            format!(
                "the body is not json: {} at line {}, column {}: send a complete json document",
                strip_position(&error.to_string()),
                error.line(),
                error.column()
            ),
            "",
        )
    })
}

fn strip_position(message: &str) -> &str {
    message
        .rfind(" at line ")
        .map_or(message, |i| &message[..i])
}

/// A structured CloudEvent: its `data` is the CDEvent.
fn structured(value: Value) -> Result<(Value, Option<String>), Refused> {
    let Value::Object(mut object) = value else {
        return Err(Refused::invalid(
            "a structured cloudevent is a json object: send {specversion, id, source, type, data}",
            "",
        ));
    };
    match object.get("specversion").and_then(Value::as_str) {
        Some("1.0") => {}
        Some(other) => {
            return Err(Refused::invalid(
                format!("cloudevents specversion {other:?} is not supported: use \"1.0\""),
                "specversion",
            ));
        }
        None => {
            return Err(Refused::invalid(
                "specversion is missing: set it to \"1.0\"",
                "specversion",
            ));
        }
    }
    if object.contains_key("data_base64") {
        return Err(Refused::invalid(
            "data_base64 is not supported: send the CDEvent as json in data",
            "data_base64",
        ));
    }
    let cloud_type = object
        .get("type")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let Some(data) = object.remove("data") else {
        return Err(Refused::invalid(
            "data is missing: put the CDEvent in data",
            "data",
        ));
    };
    Ok((data, cloud_type))
}

fn str_at<'v>(value: &'v Value, pointer: &str) -> Option<&'v str> {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// Validates and maps a CDEvent.
fn cdevent(
    resolver: &Resolver<'_>,
    event: &Value,
    cloud_type: Option<&str>,
) -> Result<Parsed, Refused> {
    if !event.is_object() {
        return Err(Refused::invalid(
            "a CDEvent is a json object: send {context, subject}",
            "",
        ));
    }
    let context = event
        .get("context")
        .filter(|c| c.is_object())
        .ok_or_else(|| {
            Refused::invalid(
                "context is missing: a CDEvent has a context and a subject",
                "context",
            )
        })?;
    let (version, version_path) = match (context.get("specversion"), context.get("version")) {
        (Some(v), _) => (v, "context.specversion"),
        (None, Some(v)) => (v, "context.version"),
        (None, None) => {
            return Err(Refused::invalid(
                "the CDEvents version is missing: set context.specversion (0.5.1) or context.version (0.4.1)",
                "context.specversion",
            ));
        }
    };
    let version = version.as_str().filter(|v| VERSIONS.contains(v)).ok_or_else(|| {
        Refused::invalid(
            format!("CDEvents version {version} is not supported: send 0.4.1 (context.version) or 0.5.1 (context.specversion)"),
            version_path,
        )
    })?;
    let event_type = context.get("type").and_then(Value::as_str).ok_or_else(|| {
        Refused::invalid("context.type is missing: set it to the CDEvent type (dev.cdevents.<subject>.<predicate>.<version>)", "context.type")
    })?;
    if let Some(cloud_type) = cloud_type {
        if cloud_type != event_type {
            return Err(Refused::invalid(
                format!(
                    "the cloudevent type {cloud_type:?} differs from context.type {event_type:?}: send the same type in both"
                ),
                "type",
            ));
        }
    }
    let Some(kind) = kind_of(event_type) else {
        return Ok(ignored(format!(
            "{event_type:?} is not a CDEvents type (dev.cdevents.<subject>.<predicate>.<version>)"
        )));
    };
    let Some(schema) = Schemas::get().schema(version, &kind) else {
        return Ok(ignored(format!(
            "{event_type} is not a CDEvents {version} event type railyard knows"
        )));
    };
    // The valid case (nearly every input) takes the validator's fast path, which builds no
    // errors; only an invalid event is walked again for what to say.
    let errors: Vec<_> = if schema.validator.is_valid(event) {
        Vec::new()
    } else {
        schema.validator.iter_errors(event).take(3).collect()
    };
    if let Some(first) = errors.first() {
        let mut path = pointer_to_path(first.instance_path().as_str());
        if let jsonschema::error::ValidationErrorKind::Required { property } = first.kind() {
            if let Some(property) = property.as_str() {
                path = if path.is_empty() {
                    property.to_owned()
                } else {
                    format!("{path}.{property}")
                };
            }
        }
        let details: Vec<String> = errors
            .iter()
            .map(|e| {
                format!(
                    "{}: {}",
                    display_path(&pointer_to_path(e.instance_path().as_str())),
                    e
                )
            })
            .collect();
        return Err(Refused::invalid(
            format!(
                "not a valid CDEvents {version} {kind} event: {}; fix it to match the schema ({})",
                details.join("; "),
                schema.types.join(", ")
            ),
            path,
        ));
    }
    // What `railyard cdevents` emits tells what Railyard already did: taking it back in would
    // record it twice, or loop. It is ignored, with the reason, whoever sends it back.
    if event.pointer("/customData/railyardEmitted").is_some() {
        return Ok(ignored(format!(
            "this {kind} event was emitted by railyard itself (customData.railyardEmitted): it tells what railyard already did, so it is not taken as input"
        )));
    }
    let source = str_at(event, "/context/source")
        .unwrap_or_default()
        .to_owned();
    let id = str_at(event, "/context/id").unwrap_or_default().to_owned();
    let delivery = Some(format!("cdevents:{source}:{id}"));
    let origin = Origin {
        door: "cdevents".to_owned(),
        id,
        source,
    };
    let data = match event.pointer("/customData/railyard") {
        Some(value) => RailyardData::parse(value, "customData.railyard")?,
        None => RailyardData::default(),
    };
    let mapped = map(resolver, &kind, event, data, origin)?;
    Ok(Parsed { mapped, delivery })
}

fn ignored(reason: String) -> Parsed {
    Parsed {
        mapped: Mapped::Ignored(reason),
        delivery: None,
    }
}

fn pointer_to_path(pointer: &str) -> String {
    pointer.trim_start_matches('/').replace('/', ".")
}

fn display_path(path: &str) -> &str {
    if path.is_empty() { "(the event)" } else { path }
}

fn map(
    resolver: &Resolver<'_>,
    kind: &str,
    event: &Value,
    data: RailyardData,
    origin: Origin,
) -> Result<Mapped, Refused> {
    let named = |data: &RailyardData| -> Result<Option<ServiceName>, Refused> {
        data.service
            .as_deref()
            .map(|s| resolver.named(s, "customData.railyard.service"))
            .transpose()
    };
    let chain_id = str_at(event, "/context/chainId").map(str::to_owned);
    match kind {
        "artifact.published" => {
            let purl = str_at(event, "/subject/id").unwrap_or_default().to_owned();
            let service = match named(&data)? {
                Some(service) => service,
                None => {
                    let by_repo = data
                        .repository
                        .as_deref()
                        .and_then(|r| resolver.by_repository(r));
                    match resolver.by_artifact(&purl).or(by_repo) {
                        Some(service) => service,
                        None => {
                            return Ok(Mapped::Ignored(format!(
                                "no service matches artifact {:?}: add match.artifact = {:?} to its service in the catalog, or send customData.railyard.service",
                                purl,
                                purl_name(&purl)
                            )));
                        }
                    }
                }
            };
            let version = data.version.clone().or_else(|| purl_version(&purl)).filter(|v| !v.trim().is_empty()).ok_or_else(|| {
                Refused::invalid(
                    format!("the artifact {purl:?} has no version: put it in the purl (name@version) or in customData.railyard.version"),
                    "subject.id",
                )
            })?;
            // The version and the artifact reach deploy commands and URLs: data, never code.
            let version_path = if data.version.is_some() {
                "customData.railyard.version"
            } else {
                "subject.id"
            };
            railyard_core::check_version(&version)
                .map_err(|problem| Refused::invalid(problem, version_path))?;
            railyard_core::check_artifact(&purl)
                .map_err(|problem| Refused::invalid(problem, "subject.id"))?;
            if data.release.is_none() && !data.expected_changes.is_empty() {
                return Err(Refused::invalid(
                    "expected_changes groups changes into a release: set customData.railyard.release too",
                    "customData.railyard.release",
                ));
            }
            for (i, expected) in data.expected_changes.iter().enumerate() {
                resolver.named(
                    expected.as_str(),
                    &format!("customData.railyard.expected_changes[{i}]"),
                )?;
            }
            let change = Change {
                service: service.clone(),
                version,
                artifact: Some(purl),
                commit: data.commit,
                branch: data.branch,
                authors: data.authors,
                produces: data.produces,
                consumes: data.consumes,
                provides: data.provides,
                requires: data.requires,
                schema: data.schema,
                migrations: data.migrations,
                after: data.after,
            };
            let artifact = ArtifactPublished {
                change,
                release: data.release,
                expected_changes: data.expected_changes,
                chain_id,
                repository: data.repository,
                origin,
            };
            Ok(Mapped::Signal {
                service,
                signal: Signal::Artifact(Box::new(artifact)),
            })
        }
        "testsuiterun.finished" | "pipelinerun.finished" => {
            let (suite, outcome) = if kind == "testsuiterun.finished" {
                (
                    str_at(event, "/subject/content/testSuite/id"),
                    str_at(event, "/subject/content/outcome"),
                )
            } else {
                (
                    str_at(event, "/subject/content/pipelineName"),
                    str_at(event, "/subject/content/outcome"),
                )
            };
            let Some(suite) = suite else {
                let field = if kind == "testsuiterun.finished" {
                    "subject.content.testSuite.id"
                } else {
                    "subject.content.pipelineName"
                };
                return Ok(Mapped::Ignored(format!(
                    "{kind} without {field}: railyard cannot tell which suite finished"
                )));
            };
            let Some(outcome) = outcome else {
                return Ok(Mapped::Ignored(format!(
                    "{kind} without subject.content.outcome: railyard cannot tell whether it passed"
                )));
            };
            let result = SuiteFinished {
                suite: suite.to_owned(),
                passed: matches!(outcome, "success" | "pass"),
                outcome: outcome.to_owned(),
                version: data.version.clone(),
                chain_id: chain_id.clone(),
                commit: data.commit.clone(),
                branch: data.branch.clone(),
                origin,
            };
            match named(&data)? {
                Some(service)
                    if result.version.is_some()
                        || result.chain_id.is_some()
                        || result.commit.is_some() =>
                {
                    Ok(Mapped::Signal {
                        service,
                        signal: Signal::Suite(result),
                    })
                }
                Some(service) => Ok(Mapped::Ignored(format!(
                    "the result of suite {suite:?} for {service} names no change: send customData.railyard.version (or commit), or a chainId shared with the artifact event"
                ))),
                None if chain_id.is_some() => Ok(Mapped::ChainSuite(result)),
                None => Ok(Mapped::Ignored(format!(
                    "no service for the result of suite {suite:?}: send customData.railyard.{{service, version}}, or a chainId shared with the artifact event"
                ))),
            }
        }
        "service.deployed" | "service.upgraded" | "service.rolledback" | "service.removed" => {
            let env_id = str_at(event, "/subject/content/environment/id").unwrap_or_default();
            let env = match resolver.environment(env_id) {
                Ok(env) => env,
                Err(reason) => return Ok(Mapped::Ignored(reason)),
            };
            let artifact = str_at(event, "/subject/content/artifactId").map(str::to_owned);
            let subject = str_at(event, "/subject/id").unwrap_or_default();
            let service = match named(&data)? {
                Some(service) => Some(service),
                None => resolver
                    .by_name(subject)
                    .or_else(|| artifact.as_deref().and_then(|a| resolver.by_artifact(a))),
            };
            let Some(service) = service else {
                return Ok(Mapped::Ignored(format!(
                    "no service matches {kind} of {subject:?}{}: name it in the catalog, set match.artifact, or send customData.railyard.service",
                    artifact
                        .as_deref()
                        .map(|a| format!(" ({a})"))
                        .unwrap_or_default()
                )));
            };
            let running = (kind != "service.removed").then(|| Running {
                version: data
                    .version
                    .clone()
                    .or_else(|| artifact.as_deref().and_then(purl_version)),
                artifact,
                commit: data.commit.clone(),
            });
            // What runs reaches rollback commands (`{version}`, `{artifact}`): same grammar.
            if let Some(running) = &running {
                if let Some(version) = &running.version {
                    railyard_core::check_version(version).map_err(|problem| {
                        Refused::invalid(
                            problem,
                            if data.version.is_some() {
                                "customData.railyard.version"
                            } else {
                                "subject.content.artifactId"
                            },
                        )
                    })?;
                }
                if let Some(artifact) = &running.artifact {
                    railyard_core::check_artifact(artifact).map_err(|problem| {
                        Refused::invalid(problem, "subject.content.artifactId")
                    })?;
                }
            }
            Ok(Mapped::Deployed {
                env,
                service,
                running,
            })
        }
        "incident.detected" | "incident.reported" | "incident.resolved" => {
            let env_id = str_at(event, "/subject/content/environment/id").unwrap_or_default();
            let env = match resolver.environment(env_id) {
                Ok(env) => env,
                Err(reason) => return Ok(Mapped::Ignored(reason)),
            };
            let service = match named(&data)? {
                Some(service) => Some(service),
                None => str_at(event, "/subject/content/service/id")
                    .and_then(|s| resolver.by_name(s))
                    .or_else(|| {
                        str_at(event, "/subject/content/artifactId")
                            .and_then(|a| resolver.by_artifact(a))
                    }),
            };
            let incident = str_at(event, "/subject/id").unwrap_or_default().to_owned();
            if kind == "incident.resolved" {
                Ok(Mapped::IncidentResolved(IncidentResolved {
                    incident,
                    env,
                    service,
                    origin,
                }))
            } else {
                let description = str_at(event, "/subject/content/description")
                    .unwrap_or_default()
                    .to_owned();
                Ok(Mapped::IncidentOpened(IncidentOpened {
                    incident,
                    env,
                    service,
                    description,
                    origin,
                }))
            }
        }
        // A change merged into a branch: its commit and the authors the (authenticated)
        // publisher vouches for, as a push would record them. CDEvents' change content names
        // only the repository, so the rest comes from customData.railyard.
        "change.merged" => {
            let repository = data
                .repository
                .as_deref()
                .or_else(|| str_at(event, "/subject/content/repository/source"));
            let service = match named(&data)? {
                Some(service) => service,
                None => match repository.and_then(|r| resolver.by_repository(r)) {
                    Some(service) => service,
                    None => {
                        return Ok(Mapped::Ignored(format!(
                            "no service matches the merged change's repository {}: set match.repository in the catalog, or send customData.railyard.service",
                            repository
                                .map_or_else(|| "(none given)".to_owned(), |r| format!("{r:?}"))
                        )));
                    }
                },
            };
            let Some(commit) = data.commit.clone().filter(|c| !c.trim().is_empty()) else {
                return Ok(Mapped::Ignored(format!(
                    "change.merged for {service} names no commit: send customData.railyard.commit (and authors) so railyard can tell who wrote what reaches {service}"
                )));
            };
            let Some(branch) = data.branch.clone() else {
                return Ok(Mapped::Ignored(format!(
                    "change.merged for {service} names no branch: send customData.railyard.branch (the branch it was merged into)"
                )));
            };
            if !resolver.protected(&branch) {
                return Ok(Mapped::Ignored(format!(
                    "change merged into {branch:?}, which is not protected (policy.protected_branches: {}): only protected branches are released",
                    resolver.catalog().policy.protected_branches.join(", ")
                )));
            }
            let subject = str_at(event, "/subject/id").unwrap_or_default();
            let commits = data
                .authors
                .iter()
                .map(|author| PushedCommit {
                    id: commit.clone(),
                    author: Some(author.clone()),
                    message: format!("change {subject}"),
                    timestamp: None,
                })
                .collect();
            Ok(Mapped::Signal {
                service,
                signal: Signal::Commits(CommitsPushed {
                    branch,
                    before: String::new(),
                    after: commit,
                    commits,
                    origin,
                }),
            })
        }
        other => Ok(Mapped::Ignored(format!(
            "railyard does not act on {other} events (it acts on artifact.published, testsuiterun.finished, pipelinerun.finished, change.merged, service.* and incident.*)"
        ))),
    }
}

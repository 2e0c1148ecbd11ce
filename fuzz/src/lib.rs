//! What the fuzz targets share: the input framing of a delivery (header lines, an empty line,
//! the body), the catalog intake maps against, and the properties every parse must keep —
//! refusals are the sender's fault (4xx) and name a path, accepted values obey the grammar
//! that keeps them data, and whatever is accepted reads back from the event stream as written.
#![forbid(unsafe_code)]

use std::sync::OnceLock;

use railyard_core::event::AggregateId;
use railyard_core::{Catalog, Envelope, Event, ParseError, check_artifact, check_version};
use railyard_intake::fuzz::{Mapped, Parsed, Signal};
use railyard_intake::{Headers, Refused};

/// The catalog of `fuzz/catalog.toml`.
pub fn catalog() -> &'static Catalog {
    static CATALOG: OnceLock<Catalog> = OnceLock::new();
    CATALOG.get_or_init(|| {
        Catalog::from_toml(include_str!("../catalog.toml")).expect("fuzz/catalog.toml parses")
    })
}

/// Splits a fuzz input into headers and body: `name: value` lines, an empty line, then the body
/// (as an HTTP request is framed). An input whose first line is not a header is all body.
pub fn split_delivery(data: &[u8]) -> (Headers, &[u8]) {
    let mut pairs: Vec<(String, String)> = Vec::new();
    let mut rest = data;
    while let Some(end) = rest.iter().position(|&b| b == b'\n') {
        let line = &rest[..end];
        if line.is_empty() {
            return (Headers::new(pairs), &rest[end + 1..]);
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            break;
        };
        let name = &line[..colon];
        if name.is_empty() || !name.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-') {
            break;
        }
        pairs.push((
            String::from_utf8_lossy(name).into_owned(),
            String::from_utf8_lossy(&line[colon + 1..])
                .trim()
                .to_owned(),
        ));
        rest = &rest[end + 1..];
    }
    (Headers::default(), data)
}

/// The properties of one intake parse through `door` (`cdevents`, `github`, `gitlab`).
pub fn check_intake(door: &str, result: &Result<Parsed, Refused>) {
    let parsed = match result {
        Err(refused) => {
            assert!(
                refused.is_client_error(),
                "a parse refusal is the sender's (4xx), got {}: {refused}",
                refused.status()
            );
            assert!(!refused.to_string().is_empty(), "a refusal says why");
            let _ = refused.to_reply();
            return;
        }
        Ok(parsed) => parsed,
    };
    if let Some(delivery) = &parsed.delivery {
        assert!(
            delivery.starts_with(&format!("{door}:")),
            "the dedupe key {delivery:?} is not scoped to its door {door}"
        );
    }
    let catalog = catalog();
    let known = |service: &railyard_core::ServiceName| catalog.services.contains_key(service);
    let known_env = |env: &railyard_core::EnvName| catalog.environment(env).is_some();
    match &parsed.mapped {
        Mapped::Signal { service, signal } => {
            assert!(known(service), "signal for {service}, not in the catalog");
            let aggregate = AggregateId::Signal(service.clone());
            match signal {
                Signal::Artifact(artifact) => {
                    let change = &artifact.change;
                    assert_eq!(&change.service, service);
                    // Values that reach deploy commands and URLs obey the grammar.
                    check_version(&change.version).expect("an accepted version is valid");
                    if let Some(purl) = &change.artifact {
                        check_artifact(purl).expect("an accepted artifact is valid");
                    }
                    for expected in &artifact.expected_changes {
                        assert!(
                            known(expected),
                            "expected change {expected} not in the catalog"
                        );
                    }
                    reads_back(aggregate, Event::ArtifactPublished((**artifact).clone()));
                }
                Signal::Suite(suite) => {
                    assert!(
                        suite.version.is_some()
                            || suite.chain_id.is_some()
                            || suite.commit.is_some(),
                        "a suite signal names its change"
                    );
                    reads_back(aggregate, Event::SuiteFinished(suite.clone()));
                }
                Signal::Commits(commits) => {
                    for commit in &commits.commits {
                        assert!(
                            !commit.message.contains('\n'),
                            "only a commit's first line is kept"
                        );
                    }
                    reads_back(aggregate, Event::CommitsPushed(commits.clone()));
                }
            }
        }
        Mapped::ChainSuite(suite) => {
            assert!(suite.chain_id.is_some(), "a chain suite has a chain id");
        }
        Mapped::Deployed {
            env,
            service,
            running,
        } => {
            assert!(
                known_env(env) && known(service),
                "{service} in {env}: not in the catalog"
            );
            if let Some(running) = running {
                if let Some(version) = &running.version {
                    check_version(version).expect("an accepted running version is valid");
                }
                if let Some(artifact) = &running.artifact {
                    check_artifact(artifact).expect("an accepted running artifact is valid");
                }
            }
        }
        Mapped::IncidentOpened(incident) => {
            assert!(known_env(&incident.env));
            assert!(incident.service.as_ref().is_none_or(known));
            reads_back(
                AggregateId::Incident(incident.env.clone()),
                Event::IncidentOpened(incident.clone()),
            );
        }
        Mapped::IncidentResolved(incident) => {
            assert!(known_env(&incident.env));
            assert!(incident.service.as_ref().is_none_or(known));
            reads_back(
                AggregateId::Incident(incident.env.clone()),
                Event::IncidentResolved(incident.clone()),
            );
        }
        Mapped::Ignored(reason) => assert!(!reason.is_empty(), "an ignored input says why"),
    }
}

/// An event intake would append decodes from its bytes to the same event.
pub fn reads_back(aggregate: AggregateId, event: Event) {
    let at = chrono::DateTime::from_timestamp(1_800_000_000, 0).expect("a valid time");
    let envelope = Envelope::new(aggregate, "fuzz", at, event);
    let bytes = serde_json::to_vec(&envelope).expect("an envelope serializes");
    let back: Envelope = serde_json::from_slice(&bytes)
        .unwrap_or_else(|error| panic!("an appended event does not decode: {error}"));
    assert_eq!(back, envelope, "an appended event reads back changed");
}

/// The properties of a file parse error: rooted at the file kind, a sane position, a message.
pub fn check_parse_error(error: &ParseError, root: &str, text: &str) {
    assert!(
        error.path == root || error.path.starts_with(&format!("{root}.")),
        "error path {:?} is not under {root}",
        error.path
    );
    if let Some((line, column)) = error.position {
        assert!(
            line >= 1 && column >= 1,
            "position {line}:{column} is 1-based"
        );
        assert!(
            line <= text.lines().count() + 1,
            "line {line} is past the end of the text"
        );
    }
    assert!(!error.message.is_empty(), "an error says what is wrong");
    let _ = error.to_string();
}

//! CDEvents out: what Railyard does, as CDEvents delivered to a local HTTP sink (binary and
//! structured CloudEvents) and on a NATS subject — every event valid against the official
//! schemas of the release emitted, the NATS copy the same as the HTTP copy, a sink's 503 with
//! `Retry-After` waited out on the clock, and intake ignoring Railyard's own events.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use common::*;
use futures::StreamExt as _;
use railyard_core::ManualClock;
use railyard_feedback::cdevents::{CdeventsConfig, CloudEvent, Mode, Sink, SpecVersion};
use railyard_feedback::{Backoff, History};
use railyard_testkit::NatsServer;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The official schemas of CDEvents `version`: the corpus beside the repository when it is
/// there, else the copy vendored in `schemas/cdevents` (the same files).
fn schema_dir(version: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let corpus = root.join(format!("../shared/corpus/cdevents/v{version}/schemas"));
    if corpus.is_dir() {
        corpus
    } else {
        root.join(format!("schemas/cdevents/{version}"))
    }
}

/// Validators by `<subject>.<predicate>` for CDEvents `version`.
fn validators(version: &str) -> BTreeMap<String, jsonschema::Validator> {
    let dir = schema_dir(version);
    let mut files: Vec<(String, Value)> = Vec::new();
    for sub in ["", "links"] {
        for entry in std::fs::read_dir(dir.join(sub)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "json") {
                let value: Value =
                    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
                files.push((path.display().to_string(), value));
            }
        }
    }
    let mut registry = jsonschema::Registry::new();
    for (_, value) in &files {
        if let Some(id) = value["$id"].as_str() {
            registry = registry.add(id, value.clone()).unwrap();
        }
    }
    let registry = registry.prepare().unwrap();
    let mut out = BTreeMap::new();
    for (path, value) in &files {
        let Some(kind) = value
            .pointer("/properties/context/properties/type/enum/0")
            .and_then(Value::as_str)
            .and_then(|t| t.strip_prefix("dev.cdevents."))
            .map(|t| t.split('.').take(2).collect::<Vec<_>>().join("."))
        else {
            continue;
        };
        let validator = jsonschema::options()
            .with_registry(&registry)
            .should_validate_formats(true)
            .build(value)
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        out.insert(kind, validator);
    }
    assert!(
        out.len() >= 40,
        "{} schemas found in {}",
        out.len(),
        dir.display()
    );
    out
}

/// One request the sink received.
#[derive(Debug, Clone)]
struct Posted {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

#[derive(Clone)]
struct FakeSink {
    posted: Arc<Mutex<Vec<Posted>>>,
    /// Answers 503 with `Retry-After` to this many requests first.
    unavailable: Arc<Mutex<usize>>,
    count: watch::Sender<usize>,
    url: String,
}

/// The headers a CloudEvent travels with (content-type and ce-*), sorted.
fn cloud_headers(pairs: impl IntoIterator<Item = (String, String)>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = pairs
        .into_iter()
        .map(|(k, v)| (k.to_lowercase(), v))
        .filter(|(k, _)| k == "content-type" || k.starts_with("ce-"))
        .collect();
    out.sort();
    out
}

async fn receive(
    State(sink): State<FakeSink>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    sink.count.send_modify(|c| *c += 1);
    {
        let mut unavailable = sink.unavailable.lock().unwrap();
        if *unavailable > 0 {
            *unavailable -= 1;
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                [("retry-after", "5")],
                "busy",
            )
                .into_response();
        }
    }
    if headers.get("authorization").and_then(|v| v.to_str().ok())
        != Some("Bearer sink-token-0123456789")
    {
        return (StatusCode::UNAUTHORIZED, "who are you").into_response();
    }
    let pairs = headers.iter().map(|(k, v)| {
        (
            k.as_str().to_owned(),
            v.to_str().unwrap_or_default().to_owned(),
        )
    });
    sink.posted.lock().unwrap().push(Posted {
        headers: cloud_headers(pairs),
        body: body.to_vec(),
    });
    StatusCode::ACCEPTED.into_response()
}

impl FakeSink {
    async fn start(unavailable: usize) -> anyhow::Result<FakeSink> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let sink = FakeSink {
            posted: Arc::default(),
            unavailable: Arc::new(Mutex::new(unavailable)),
            count: watch::channel(0).0,
            url: format!("http://{}/events", listener.local_addr()?),
        };
        let app = Router::new()
            .route("/events", post(receive))
            .with_state(sink.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Ok(sink)
    }
}

fn start(
    nats: &NatsServer,
    sink: &FakeSink,
    clock: &ManualClock,
    dir: &Path,
    version: SpecVersion,
    mode: Mode,
) -> Running {
    let (tx, rx) = watch::channel(0);
    let mut config =
        CdeventsConfig::new("https://railyard.example.com", dir.join("cdevents-ledger"));
    config.source = "https://railyard.example.com/cdevents".to_owned();
    config.version = version;
    config.mode = mode;
    config.sink = Some(Sink {
        url: sink.url.clone(),
        token: Some(railyard_feedback::Secret::new("sink token", "sink-token-0123456789").unwrap()),
    });
    config.clock = clock.shared();
    config.history = History::Send;
    config.backoff = Backoff {
        initial: Duration::from_secs(1),
        max: Duration::from_secs(4),
    };
    config.handled = Some(tx);
    let stop = CancellationToken::new();
    let url = nats.url();
    let token = stop.clone();
    let task = tokio::spawn(async move {
        let bus = railyard_bus::Bus::connect(&url, railyard_bus::BusConfig::default()).await?;
        railyard_feedback::cdevents::run(config, bus, token).await?;
        Ok(())
    });
    Running {
        stop,
        task,
        handled: rx,
    }
}

/// The CDEvent inside what was sent.
fn cdevent_of(event: &CloudEvent, mode: Mode) -> Value {
    let body: Value = serde_json::from_slice(&event.body).unwrap();
    match mode {
        Mode::Binary => body,
        Mode::Structured => {
            assert_eq!(body["specversion"], "1.0");
            assert_eq!(body["id"], body["data"]["context"]["id"]);
            assert_eq!(body["type"], body["data"]["context"]["type"]);
            body["data"].clone()
        }
    }
}

/// Plays a release story and returns the CDEvents emitted, as the sink and NATS received them.
async fn story(version: SpecVersion, mode: Mode) -> anyhow::Result<Vec<CloudEvent>> {
    let dir = tempfile::tempdir()?;
    let clock = ManualClock::new(start_time());
    let sink = FakeSink::start(1).await?;
    let nats = NatsServer::start().await?;
    let bus = bus(&nats).await?;
    let client = async_nats::connect(nats.url()).await?;
    let mut subscription = client.subscribe("railyard.out.cdevents").await?;
    client.flush().await?;
    let mut service = start(&nats, &sink, &clock, dir.path(), version, mode);

    let t = start_time();
    // Something else put orders-api 1.0.0 in staging; the sink is busy at first.
    deployed(&bus, t, "staging", "orders-api", Some("1.0.0"), None).await?;
    tokio::time::timeout(WAIT, sink.count.subscribe().wait_for(|c| *c >= 1)).await??;
    advance_when_sleeping(&clock, Duration::from_secs(5)).await?;
    // rel-1 upgrades staging, is new to production, then is rolled back.
    append(
        &bus,
        "rel-1",
        "carol",
        t,
        vec![requested("rel-1", &[("orders-api", "2.0.0", "bbb222")])],
    )
    .await?;
    append(
        &bus,
        "rel-1",
        "railyard-planner",
        t,
        vec![planned("rel-1", &[("orders-api", "2.0.0")])],
    )
    .await?;
    deployed(
        &bus,
        t,
        "staging",
        "orders-api",
        Some("2.0.0"),
        Some("rel-1"),
    )
    .await?;
    deployed(
        &bus,
        t,
        "production",
        "orders-api",
        Some("2.0.0"),
        Some("rel-1"),
    )
    .await?;
    deployed(&bus, t, "production", "orders-api", None, Some("rel-1")).await?;
    deployed(
        &bus,
        t,
        "staging",
        "orders-api",
        Some("1.0.0"),
        Some("rel-1"),
    )
    .await?;
    append(
        &bus,
        "rel-1",
        "railyard-promoter",
        t,
        vec![event(
            "release.rolled_back",
            json!({"reason": "production:verify:orders-api failed", "undone": []}),
        )],
    )
    .await?;
    // rel-2 is refused, rel-3 completes, rel-4 is cancelled.
    append(
        &bus,
        "rel-2",
        "carol",
        t,
        vec![requested("rel-2", &[("gadget", "3.0.0", "e3")])],
    )
    .await?;
    append(&bus, "rel-2", "railyard-planner", t, vec![event("release.rejected", json!({"catalog_hash": "sha256:test", "reasons": [{"rule": "api", "reason": "gadget 3.0.0 requires pricing-api >=7", "remedy": "release pricing first"}]}))]).await?;
    append(
        &bus,
        "rel-3",
        "carol",
        t,
        vec![requested("rel-3", &[("gadget", "3.1.0", "e4")])],
    )
    .await?;
    append(
        &bus,
        "rel-3",
        "railyard-planner",
        t,
        vec![planned("rel-3", &[("gadget", "3.1.0")])],
    )
    .await?;
    append(&bus, "rel-3", "railyard-promoter", t, vec![completed()]).await?;
    append(
        &bus,
        "rel-4",
        "carol",
        t,
        vec![requested("rel-4", &[("gadget", "3.2.0", "e5")])],
    )
    .await?;
    let last = append(
        &bus,
        "rel-4",
        "alice",
        t,
        vec![event("release.cancelled", json!({"reason": "superseded"}))],
    )
    .await?;
    service.wait_handled(last).await?;
    service.stop().await?;

    // The NATS copy of each event is the HTTP copy: same headers, same bytes.
    let posted = sink.posted.lock().unwrap().clone();
    let mut out = Vec::new();
    for http in &posted {
        let message = tokio::time::timeout(WAIT, subscription.next())
            .await?
            .expect("a nats copy");
        let headers = message
            .headers
            .as_ref()
            .map(|h| {
                h.iter()
                    .flat_map(|(k, vs)| vs.iter().map(move |v| (k.to_string(), v.to_string())))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        assert_eq!(cloud_headers(headers), http.headers);
        assert_eq!(message.payload.as_ref(), http.body.as_slice());
        out.push(CloudEvent {
            headers: http.headers.clone(),
            body: http.body.clone(),
        });
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(200), subscription.next())
            .await
            .is_err(),
        "nats got nothing the sink did not"
    );
    Ok(out)
}

fn kinds(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            let t = e["context"]["type"].as_str().unwrap();
            let t = t.strip_prefix("dev.cdevents.").unwrap();
            let parts: Vec<&str> = t.split('.').collect();
            format!(
                "{}.{} {}",
                parts[0],
                parts[1],
                e["subject"]["id"].as_str().unwrap()
            )
        })
        .collect()
}

const EXPECTED: [&str; 17] = [
    "environment.created staging",
    "service.deployed orders-api",
    "environment.modified staging",
    "pipelinerun.queued rel-1",
    "pipelinerun.started rel-1",
    "service.upgraded orders-api",
    "environment.modified staging",
    "environment.created production",
    "service.deployed orders-api",
    "environment.modified production",
    "service.removed orders-api",
    "environment.modified production",
    "service.rolledback orders-api",
    "environment.modified staging",
    "pipelinerun.finished rel-1",
    "pipelinerun.queued rel-2",
    "pipelinerun.finished rel-2",
];

fn check(events: &[CloudEvent], version: &str, mode: Mode) {
    let validators = validators(version);
    let cdevents: Vec<Value> = events.iter().map(|e| cdevent_of(e, mode)).collect();
    let kinds = kinds(&cdevents);
    assert_eq!(&kinds[..EXPECTED.len()], EXPECTED);
    assert_eq!(
        &kinds[EXPECTED.len()..],
        [
            "pipelinerun.queued rel-3",
            "pipelinerun.started rel-3",
            "pipelinerun.finished rel-3",
            "pipelinerun.queued rel-4",
            "pipelinerun.finished rel-4"
        ]
    );
    let outcomes: Vec<&str> = cdevents
        .iter()
        .filter(|e| {
            e["context"]["type"]
                .as_str()
                .unwrap()
                .contains("pipelinerun.finished")
        })
        .map(|e| e["subject"]["content"]["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["failure", "failure", "success", "cancel"]);
    let mut ids = std::collections::BTreeSet::new();
    for (event, cdevent) in events.iter().zip(&cdevents) {
        let kind = kinds[ids.len()].split(' ').next().unwrap().to_owned();
        let validator = &validators[&kind];
        let errors: Vec<String> = validator
            .iter_errors(cdevent)
            .map(|e| format!("{}: {e}", e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{kind} is not a valid CDEvents {version} event: {errors:?}\n{cdevent:#}"
        );
        assert!(
            ids.insert(cdevent["context"]["id"].as_str().unwrap().to_owned()),
            "ids are unique"
        );
        assert_eq!(
            cdevent["context"]["source"],
            "https://railyard.example.com/cdevents"
        );
        assert!(cdevent["customData"]["railyardEmitted"].is_object());
        if mode == Mode::Binary {
            let header = |name: &str| {
                event
                    .headers
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.as_str())
            };
            assert_eq!(header("ce-specversion"), Some("1.0"));
            assert_eq!(header("ce-id"), cdevent["context"]["id"].as_str());
            assert_eq!(header("ce-type"), cdevent["context"]["type"].as_str());
            assert_eq!(header("ce-source"), cdevent["context"]["source"].as_str());
            assert_eq!(header("content-type"), Some("application/json"));
        } else {
            assert_eq!(
                event.headers,
                [(
                    "content-type".to_owned(),
                    "application/cloudevents+json".to_owned()
                )]
            );
        }
    }
    // The rollback puts back 1.0.0 by the release that brought 2.0.0.
    let rolled = cdevents
        .iter()
        .find(|e| {
            e["context"]["type"]
                .as_str()
                .unwrap()
                .contains("service.rolledback")
        })
        .unwrap();
    assert_eq!(
        rolled["subject"]["content"]["artifactId"],
        "pkg:oci/orders-api@sha256%3A100"
    );
    assert_eq!(rolled["subject"]["content"]["environment"]["id"], "staging");
}

/// Intake takes none of them as input, and says why.
fn intake_ignores(events: &[CloudEvent]) {
    let catalog = catalog();
    for event in events {
        let headers = railyard_intake::Headers::new(
            event.headers.iter().map(|(k, v)| (k.as_str(), v.clone())),
        );
        let parsed = railyard_intake::fuzz::cdevent(&catalog, &headers, &event.body)
            .unwrap_or_else(|refused| panic!("intake refused railyard's own event: {refused:?}"));
        match parsed.mapped {
            railyard_intake::fuzz::Mapped::Ignored(reason) => {
                assert!(reason.contains("emitted by railyard itself"), "{reason}")
            }
            other => panic!("intake took railyard's own event as input: {other:?}"),
        }
    }
}

#[tokio::test]
async fn binary_cdevents_0_4_1_reach_the_sink_and_nats_alike_and_validate() -> anyhow::Result<()> {
    let events = story(SpecVersion::V0_4_1, Mode::Binary).await?;
    check(&events, "0.4.1", Mode::Binary);
    intake_ignores(&events);
    Ok(())
}

#[tokio::test]
async fn structured_cdevents_0_5_1_reach_the_sink_and_nats_alike_and_validate() -> anyhow::Result<()>
{
    let events = story(SpecVersion::V0_5_1, Mode::Structured).await?;
    check(&events, "0.5.1", Mode::Structured);
    intake_ignores(&events);
    Ok(())
}

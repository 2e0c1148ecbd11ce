//! Intake loses nothing: a delivery id counts as seen only once its events are stored. A
//! client that disconnects while its append is lost on the wire gets everything stored and
//! its retry answered `duplicate`; a delivery whose intake died mid-append is answered 503
//! (not `duplicate`) while the dead claim lasts, then accepted; concurrent copies of one
//! delivery are appended once; a signal's delivery is remembered by the signal itself (no write
//! of its own), across a NATS restart and by an intake that never saw it. NATS is real, HTTP
//! goes over a real socket, and the append is broken by a proxy that drops its message on the
//! wire.

mod common;

use std::time::Duration;

use common::proxy::NatsProxy;
use common::{Harness, Setup, WAIT, artifact};
use railyard_bus::{Bus, BusConfig};
use railyard_core::ManualClock;
use railyard_http::Tokens;
use railyard_intake::{Door, Headers, Intake, Origin};
use railyard_testkit::NatsServer;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

fn incident(id: &str) -> Value {
    json!({
        "context": {
            "specversion": "0.5.1",
            "id": id,
            "source": "/monitoring",
            "type": "dev.cdevents.incident.detected.0.3.0",
            "timestamp": "2026-11-25T10:00:00Z"
        },
        "subject": {
            "id": format!("INC-{id}"),
            "source": "/monitoring",
            "content": {
                "description": "error rate above 5%",
                "environment": { "id": "production" },
                "service": { "id": "email-worker" }
            }
        }
    })
}

/// Sends `event` as the publisher over a connection of its own and returns the connection
/// without reading the answer (dropping it is the client going away).
async fn send_and_leave(harness: &Harness, event: &Value) -> anyhow::Result<tokio::net::TcpStream> {
    let body = serde_json::to_vec(event)?;
    let mut connection = tokio::net::TcpStream::connect(harness.addr).await?;
    let head = format!(
        "POST /v1/cdevents HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        harness.addr,
        harness.publisher,
        body.len()
    );
    connection.write_all(head.as_bytes()).await?;
    connection.write_all(&body).await?;
    Ok(connection)
}

async fn types_since(harness: &Harness, after: u64) -> anyhow::Result<Vec<String>> {
    Ok(harness
        .events_since(after)
        .await?
        .iter()
        .map(|e| e.event.type_name().to_owned())
        .collect())
}

#[tokio::test]
async fn a_client_that_disconnects_mid_append_loses_nothing() -> anyhow::Result<()> {
    let server = NatsServer::start().await?;
    let proxy = NatsProxy::start(&server.url()).await?;
    let harness = Harness::with(
        server,
        Setup {
            nats_url: Some(proxy.url()),
            // A lost append is sent again after this long (with the same message id).
            bus: BusConfig {
                request_timeout: Duration::from_secs(1),
                ..BusConfig::default()
            },
            ..Setup::default()
        },
    )
    .await?;
    let cases = [
        // An inventory-like event appended as is.
        (incident("lost-1"), vec!["incident.opened"]),
        // A signal that completes a change: the release it completes must be requested too.
        (
            artifact(
                "lost-2",
                "email-worker",
                "7.0.0",
                json!({ "branch": "main" }),
            ),
            vec!["change.artifact_published", "release.requested"],
        ),
    ];
    for (event, expected) in cases {
        let before = harness.last_sequence().await?;
        let swallowed = proxy.swallow_next("railyard.events.");
        let connection = send_and_leave(&harness, &event).await?;
        let subject = tokio::time::timeout(WAIT, swallowed).await??;
        // The append is on its way and its message is lost; the client gives up.
        drop(connection);

        let (status, answer) = harness.cdevent(&event).await?;
        assert_eq!(status, 202, "the retry of {subject}: {answer}");
        assert_eq!(
            answer["outcome"], "duplicate",
            "the first attempt finished storing it: {answer}"
        );
        assert_eq!(
            types_since(&harness, before).await?,
            expected,
            "everything the delivery causes is stored, once"
        );
        // And a later redelivery stays a duplicate.
        let (_, again) = harness.cdevent(&event).await?;
        assert_eq!(again["outcome"], "duplicate", "{again}");
        assert_eq!(types_since(&harness, before).await?.len(), expected.len());
    }
    // Only the incident's delivery id was claimed in KV; the signal is the record of its own.
    assert_eq!(
        harness
            .metric("railyard_intake_delivery_claims_total{outcome=\"stored\"}")
            .await?,
        1.0
    );
    Ok(())
}

/// Messages in the delivery-claims bucket's stream, read over a connection of the test's own.
async fn claims_written(server: &NatsServer) -> anyhow::Result<u64> {
    let client = async_nats::connect(server.url()).await?;
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream("KV_railyard-deliveries").await?;
    Ok(stream.info().await?.state.last_sequence)
}

#[tokio::test]
async fn a_signal_is_stored_in_one_write_and_its_redelivery_is_a_duplicate_after_a_restart()
-> anyhow::Result<()> {
    let mut harness = Harness::start().await?;
    let event = artifact(
        "restart-1",
        "email-worker",
        "9.0.0",
        json!({ "branch": "main" }),
    );
    let suite = json!({
        "context": {
            "specversion": "0.5.1",
            "id": "restart-2",
            "source": "/ci/pipelines",
            "type": "dev.cdevents.testsuiterun.finished.0.3.0",
            "timestamp": "2026-11-25T10:00:00Z"
        },
        "subject": {
            "id": "run-restart-2",
            "source": "/ci/pipelines",
            "content": {
                "outcome": "success",
                "environment": { "id": "ci" },
                "testSuite": { "id": "unit" }
            }
        },
        "customData": { "railyard": { "service": "billing-worker", "version": "3.0.0" } }
    });
    let before = harness.last_sequence().await?;
    let claims_before = claims_written(&harness.server).await?;
    for input in [&event, &suite] {
        let (status, answer) = harness.cdevent(input).await?;
        assert_eq!(
            (status, answer["outcome"].as_str()),
            (202, Some("accepted")),
            "{answer}"
        );
    }
    let stored = [
        "change.artifact_published",
        "release.requested",
        "change.suite_finished",
    ];
    assert_eq!(types_since(&harness, before).await?, stored);
    assert_eq!(
        claims_written(&harness.server).await?,
        claims_before,
        "de-duplicating a signal writes nothing besides the signal"
    );

    // NATS restarts; a second intake that has never seen either delivery starts on it.
    harness.server.restart().await?;
    let fresh = Intake::new(
        common::config(Tokens::default())?,
        Bus::connect(&harness.server.url(), BusConfig::default()).await?,
    );
    let headers = Headers::new([("content-type", "application/json")]);
    let origin = Origin::named("test");
    for input in [&event, &suite] {
        let body = serde_json::to_vec(input)?;
        let answer = fresh
            .cdevent(Door::CdEvents, "ci-bot", &origin, &headers, &body)
            .await
            .map_err(|refused| anyhow::anyhow!("{refused}"))?;
        assert_eq!(answer.outcome.as_str(), "duplicate", "{answer:?}");
        // And the intake that stored them, over HTTP and over NATS.
        let (status, answer) = harness.cdevent(input).await?;
        assert_eq!(
            (status, answer["outcome"].as_str()),
            (202, Some("duplicate")),
            "{answer}"
        );
        let reply = harness
            .nats(&[("content-type", "application/json")], body)
            .await?;
        assert_eq!(reply["outcome"], "duplicate", "{reply}");
    }
    assert_eq!(types_since(&harness, before).await?, stored);
    Ok(())
}

#[tokio::test]
async fn a_delivery_whose_intake_died_mid_append_is_answered_503_then_accepted()
-> anyhow::Result<()> {
    let server = NatsServer::start().await?;
    let clock = ManualClock::new("2026-11-25T10:00:00Z".parse()?);
    let ttl = Duration::from_secs(120);
    let shared = clock.shared();
    let harness = Harness::with(
        server,
        Setup {
            configure: Box::new(move |config| {
                config.clock = shared;
                config.delivery_claim_ttl = ttl;
            }),
            ..Setup::default()
        },
    )
    .await?;

    // Another intake, behind a proxy: it claims the delivery, its append is lost on the
    // wire, and then it loses NATS for good (it died) without settling its claim.
    let proxy = NatsProxy::start(&harness.server.url()).await?;
    let dying_bus = Bus::connect(
        &proxy.url(),
        BusConfig {
            request_timeout: Duration::from_secs(1),
            append_timeout: Duration::from_secs(2),
            ..BusConfig::default()
        },
    )
    .await?;
    let mut config = common::config(Tokens::default())?;
    config.clock = clock.shared();
    config.delivery_claim_ttl = ttl;
    let dying = Intake::new(config, dying_bus);
    let event = incident("orphan-1");
    let body = serde_json::to_vec(&event)?;
    let before = harness.last_sequence().await?;
    let swallowed = proxy.swallow_next("railyard.events.");
    let attempt = tokio::spawn(async move {
        let headers = Headers::new([("content-type", "application/json")]);
        dying
            .cdevent(
                Door::CdEvents,
                "ci-bot",
                &Origin::named("test"),
                &headers,
                &body,
            )
            .await
    });
    tokio::time::timeout(WAIT, swallowed).await??;
    proxy.cut();

    // The retry reaches a live intake: not a duplicate (nothing is stored), but busy.
    let (status, answer) = harness.cdevent(&event).await?;
    assert_eq!(status, 503, "{answer}");
    let detail = answer["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("is being stored by intake-") && detail.contains("send it again later"),
        "{detail}"
    );
    assert!(types_since(&harness, before).await?.is_empty());

    // Once the dead claim expires, the next retry takes it over and is stored.
    clock.advance(ttl + Duration::from_secs(1));
    let (status, answer) = harness.cdevent(&event).await?;
    assert_eq!(
        (status, answer["outcome"].as_str()),
        (202, Some("accepted")),
        "{answer}"
    );
    let (_, again) = harness.cdevent(&event).await?;
    assert_eq!(again["outcome"], "duplicate", "{again}");
    assert_eq!(types_since(&harness, before).await?, ["incident.opened"]);
    attempt.abort();
    Ok(())
}

#[tokio::test]
async fn concurrent_copies_of_a_delivery_are_appended_once() -> anyhow::Result<()> {
    let harness = Harness::start().await?;
    // A second intake on the same stream.
    let other = Intake::new(
        common::config(Tokens::default())?,
        Bus::connect(&harness.server.url(), BusConfig::default()).await?,
    );
    let event = artifact(
        "twice-1",
        "email-worker",
        "8.0.0",
        json!({ "branch": "main" }),
    );
    let body = serde_json::to_vec(&event)?;
    let before = harness.last_sequence().await?;
    let headers = Headers::new([("content-type", "application/json")]);
    let origin = Origin::named("test");
    let over_http = futures::future::join_all((0..12).map(|_| harness.cdevent(&event)));
    let over_other = futures::future::join_all(
        (0..4).map(|_| other.cdevent(Door::CdEvents, "ci-bot", &origin, &headers, &body)),
    );
    let (over_http, over_other) = tokio::join!(over_http, over_other);
    let mut outcomes = Vec::new();
    for answer in over_http {
        let (status, answer) = answer?;
        outcomes.push(match status {
            202 => answer["outcome"].as_str().unwrap_or_default().to_owned(),
            status => status.to_string(),
        });
    }
    for answer in over_other {
        outcomes.push(match answer {
            Ok(answer) => answer.outcome.as_str().to_owned(),
            Err(refused) => refused.status().to_string(),
        });
    }
    let count = |outcome: &str| outcomes.iter().filter(|o| *o == outcome).count();
    // One intake stores it; copies that reach it meanwhile wait and are duplicates, copies
    // that reach the other intake meanwhile are told to come back later (503).
    assert_eq!(count("accepted"), 1, "{outcomes:?}");
    assert_eq!(
        count("accepted") + count("duplicate") + count("503"),
        16,
        "{outcomes:?}"
    );
    assert_eq!(
        types_since(&harness, before).await?,
        ["change.artifact_published", "release.requested"]
    );
    // Whoever was told to come back later is told it is a duplicate.
    for _ in 0..count("503") {
        let (_, answer) = harness.cdevent(&event).await?;
        assert_eq!(answer["outcome"], "duplicate", "{answer}");
        let answer = other
            .cdevent(Door::CdEvents, "ci-bot", &origin, &headers, &body)
            .await
            .map_err(|refused| anyhow::anyhow!("{refused}"))?;
        assert_eq!(answer.outcome.as_str(), "duplicate");
    }
    assert_eq!(types_since(&harness, before).await?.len(), 2);
    Ok(())
}

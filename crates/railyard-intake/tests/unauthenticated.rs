//! Nobody can flush the rejection log: 10,000 unauthenticated requests (bad GitHub signatures,
//! wrong GitLab tokens, no token, the wrong role), each with a made-up `X-Forwarded-For`, are
//! all answered and counted in the metrics, while only a per-origin sample reaches the log —
//! so the real rejections logged before the flood are still there. The sample budget refills
//! on the intake's clock (a manual one here). And the origin recorded is the socket's peer,
//! unless that peer is a configured trusted proxy.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use common::{Harness, Setup, artifact};
use futures::StreamExt;
use railyard_bus::BusConfig;
use railyard_core::ManualClock;
use railyard_intake::RejectionSampling;
use railyard_testkit::NatsServer;
use serde_json::json;

const FLOOD: usize = 10_000;
const DOORS: [&str; 4] = ["github", "gitlab", "cdevents", "releases"];

/// Request `n` of the flood: never authenticated, each claiming another origin.
fn flood_request(harness: &Harness, n: usize) -> reqwest::RequestBuilder {
    let spoofed = format!("198.18.{}.{}", n / 256 % 256, n % 256);
    let request = match n % 4 {
        0 => harness
            .http
            .post(format!("{}/v1/webhooks/github", harness.url))
            .header("x-github-event", "workflow_run")
            .header("x-github-delivery", format!("flood-{n}"))
            .header("x-hub-signature-256", format!("sha256={}", "0".repeat(64)))
            .body("{}"),
        1 => harness
            .http
            .post(format!("{}/v1/webhooks/gitlab", harness.url))
            .header("x-gitlab-event", "Pipeline Hook")
            .header("x-gitlab-token", "guessed")
            .body("{}"),
        2 => harness
            .http
            .post(format!("{}/v1/cdevents", harness.url))
            .body("{}"),
        // A valid token without the publisher role: 403.
        _ => harness
            .http
            .post(format!("{}/v1/releases", harness.url))
            .bearer_auth(&harness.auditor)
            .body("id = \"rel-1\""),
    };
    request.header("x-forwarded-for", spoofed)
}

#[tokio::test]
async fn a_flood_of_unauthenticated_requests_is_counted_but_cannot_evict_real_rejections()
-> anyhow::Result<()> {
    let server = NatsServer::start().await?;
    let clock = ManualClock::new("2026-11-25T10:00:00Z".parse()?);
    let shared = clock.shared();
    let harness = Harness::with(
        server,
        Setup {
            configure: Box::new(move |config| {
                config.clock = shared;
                config.rejection_sampling = RejectionSampling::default();
            }),
            // A log smaller than the flood: were the flood written, it would evict the rest.
            topology: BusConfig {
                rejected_max_messages: 1_000,
                ..BusConfig::default()
            },
            ..Setup::default()
        },
    )
    .await?;

    // Real rejections: a publisher's CDEvents naming services the catalog does not have.
    let mut real = Vec::new();
    for n in 0..3 {
        let mut event = artifact(&format!("real-{n}"), "orders-api", "1.0.0", json!({}));
        event["customData"]["railyard"]["service"] = json!(format!("ghost-{n}"));
        let (status, answer) = harness.cdevent(&event).await?;
        assert_eq!(status, 422, "{answer}");
        real.push(answer["detail"].as_str().unwrap_or_default().to_owned());
    }

    let started = Instant::now();
    let statuses: Vec<u16> = futures::stream::iter(0..FLOOD)
        .map(|n| {
            let request = flood_request(&harness, n);
            async move { Ok::<_, reqwest::Error>(request.send().await?.status().as_u16()) }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    let took = started.elapsed();
    let refused = statuses
        .iter()
        .filter(|status| **status == 401 || **status == 403)
        .count();
    assert_eq!(refused, FLOOD, "every request is refused");
    eprintln!(
        "{FLOOD} unauthenticated requests answered in {took:?} ({:.0}/s)",
        FLOOD as f64 / took.as_secs_f64()
    );

    // The real rejections are all still there...
    let log = harness.rejections().await?;
    eprintln!("rejection log after the flood: {} entries", log.len());
    assert!(
        log.len() >= real.len(),
        "the log holds {} entries",
        log.len()
    );
    for (entry, detail) in log.iter().zip(&real) {
        assert_eq!(entry.rejection.source, "cdevents");
        assert!(
            entry.rejection.reason.contains(detail.as_str()),
            "{entry:?}"
        );
    }

    // ...because only a sample of the flood was logged, under the socket's address (the
    // header is not believed)...
    let sampled = RejectionSampling::default().per_origin.count as usize;
    assert_eq!(
        log.len(),
        real.len() + sampled,
        "the log holds {} entries",
        log.len()
    );
    for entry in &log[real.len()..] {
        let origin: SocketAddr = entry.rejection.origin.parse()?;
        assert_eq!(origin.ip(), IpAddr::from([127, 0, 0, 1]));
    }

    // ...while every one of them is counted.
    let mut counted = 0.0;
    let mut unlogged = 0.0;
    for door in DOORS {
        let label = format!("{{door=\"{door}\"}}");
        let at_door = harness
            .metric(&format!("railyard_intake_unauthenticated_total{label}"))
            .await?;
        assert_eq!(at_door, (FLOOD / 4) as f64, "{door}");
        counted += at_door;
        unlogged += harness
            .metric(&format!("railyard_intake_rejections_unlogged_total{label}"))
            .await?;
    }
    assert_eq!(counted, FLOOD as f64);
    assert_eq!(unlogged, (FLOOD - sampled) as f64);

    // The sample goes on as time does: a minute later, the origin is logged again.
    clock.advance(Duration::from_secs(60));
    let status = flood_request(&harness, 0).send().await?.status().as_u16();
    assert_eq!(status, 401);
    assert_eq!(harness.rejections().await?.len(), log.len() + 1);
    Ok(())
}

/// A client bound to `source` (any 127.0.0.0/8 address is this machine).
fn client_from(source: [u8; 4]) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .local_address(IpAddr::from(source))
        .build()?)
}

#[tokio::test]
async fn x_forwarded_for_is_believed_only_from_a_trusted_proxy() -> anyhow::Result<()> {
    let server = NatsServer::start().await?;
    let harness = Harness::with(
        server,
        Setup {
            configure: Box::new(|config| {
                config.trusted_proxies = "127.0.0.2".parse().expect("an address");
            }),
            ..Setup::default()
        },
    )
    .await?;
    let spoof = |client: &reqwest::Client, forwarded: &str| {
        client
            .post(format!("{}/v1/cdevents", harness.url))
            .header("x-forwarded-for", forwarded)
            .body("{}")
            .send()
    };
    // A client that is no proxy claims to be someone else: its socket address is recorded.
    let direct = client_from([127, 0, 0, 1])?;
    assert_eq!(spoof(&direct, "203.0.113.66").await?.status(), 401);
    // The trusted proxy forwards a client (which tried to prepend a spoof of its own).
    let proxy = client_from([127, 0, 0, 2])?;
    assert_eq!(
        spoof(&proxy, "203.0.113.66, 198.51.100.7").await?.status(),
        401
    );
    let log = harness.rejections().await?;
    let origins: Vec<&str> = log.iter().map(|e| e.rejection.origin.as_str()).collect();
    assert_eq!(origins.len(), 2, "{origins:?}");
    assert!(
        origins[0].starts_with("127.0.0.1:"),
        "the socket's address, not the header: {origins:?}"
    );
    let (forwarded, via) = origins[1].split_once(" via ").expect("forwarded");
    assert_eq!(forwarded, "198.51.100.7");
    assert_eq!(
        via.parse::<SocketAddr>()?.ip(),
        IpAddr::from([127, 0, 0, 2])
    );
    Ok(())
}

//! What every intake test shares: a real nats-server, a bus with the topology, a catalog,
//! tokens, intake served over HTTP on 127.0.0.1:0 and over NATS, and helpers to read back what
//! reached the event stream and the rejection log.
#![allow(dead_code)]

pub mod proxy;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use railyard_bus::{Bus, BusConfig};
use railyard_core::{Catalog, Envelope};
use railyard_http::{Role, Tokens, generate_token};
use railyard_intake::{Intake, IntakeConfig, Secret};
use railyard_testkit::NatsServer;
use tokio_util::sync::CancellationToken;

/// The GitHub webhook secret of the tests (GitHub's documented example).
pub const GITHUB_SECRET: &str = "It's a Secret to Everybody";
/// The GitLab webhook token of the tests.
pub const GITLAB_TOKEN: &str = "gitlab-test-token";
/// Bound on every wait of a test.
pub const WAIT: Duration = Duration::from_secs(20);

/// The catalog the tests run against.
pub const CATALOG: &str = r#"
[policy]
protected_branches = ["main"]
allowed_sources = ["https://github.com/acme/*", "/ci/*"]

[[environments]]
name = "staging"

[[environments]]
name = "production"
after = "staging"

[services.orders-api]
match = { repository = "https://github.com/acme/orders-api", artifact = "pkg:oci/orders-api" }
required_suites = ["unit", "e2e"]
deploy = { kind = "simulated", duration = "1s" }

[services.billing-worker]
match = { repository = "https://github.com/acme/billing-worker", artifact = "pkg:oci/billing-worker" }
required_suites = ["unit"]
deploy = { kind = "simulated", duration = "1s" }

[services.email-worker]
match = { artifact = "pkg:oci/email-worker", repository = "https://gitlab.com/acme/email-worker" }
deploy = { kind = "simulated", duration = "1s" }
"#;

/// How a harness's intake differs from the default one.
pub struct Setup {
    /// Where the intake's bus connects (a [`proxy::NatsProxy`]); the server by default.
    pub nats_url: Option<String>,
    /// The intake's bus configuration.
    pub bus: BusConfig,
    /// Changes to the intake's configuration.
    pub configure: Box<dyn FnOnce(&mut IntakeConfig) + Send>,
    /// The configuration the streams are made with (and the harness reads back with).
    pub topology: BusConfig,
}

impl Default for Setup {
    fn default() -> Setup {
        Setup {
            nats_url: None,
            bus: BusConfig::default(),
            configure: Box::new(|_| {}),
            topology: BusConfig::default(),
        }
    }
}

/// One running intake over a real NATS.
pub struct Harness {
    pub server: NatsServer,
    pub bus: Bus,
    pub intake: Intake,
    pub addr: SocketAddr,
    pub url: String,
    pub publisher: String,
    pub auditor: String,
    pub http: reqwest::Client,
    pub shutdown: CancellationToken,
}

impl Harness {
    pub async fn start() -> anyhow::Result<Harness> {
        let server = NatsServer::start().await?;
        Harness::on(server).await
    }

    pub async fn on(server: NatsServer) -> anyhow::Result<Harness> {
        Harness::with(server, Setup::default()).await
    }

    /// An intake set up as `setup` says; `bus` (for reading back) connects to the server
    /// directly.
    pub async fn with(server: NatsServer, setup: Setup) -> anyhow::Result<Harness> {
        let bus = Bus::connect(&server.url(), setup.topology).await?;
        bus.ensure_topology().await?;
        let intake_url = setup.nats_url.clone().unwrap_or_else(|| server.url());
        let intake_bus = Bus::connect(&intake_url, setup.bus).await?;
        let (publisher, publisher_entry) =
            generate_token("ci-bot", [Role::Publisher].into(), vec![]);
        let (auditor, auditor_entry) = generate_token("audrey", [Role::Auditor].into(), vec![]);
        let tokens = Tokens::from_entries(vec![publisher_entry, auditor_entry])?;
        let mut config = config(tokens)?;
        (setup.configure)(&mut config);
        let metrics = config.metrics.clone();
        let intake = Intake::new(config, intake_bus);
        let shutdown = CancellationToken::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = railyard_http::ops_router(bus.clone(), metrics)
            .merge(railyard_intake::router(intake.clone()));
        let stop = shutdown.clone();
        tokio::spawn(railyard_http::serve(listener, app, stop.cancelled_owned()));
        let nats_intake = intake.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move { railyard_intake::serve_nats(nats_intake, stop).await });
        let harness = Harness {
            server,
            bus,
            intake,
            addr,
            url: format!("http://{addr}"),
            publisher,
            auditor,
            http: reqwest::Client::new(),
            shutdown,
        };
        harness.wait_for_responder().await?;
        Ok(harness)
    }

    /// Waits until the NATS responder answers (its subscription is registered).
    async fn wait_for_responder(&self) -> anyhow::Result<()> {
        // An event of a type nobody acts on: answered `ignored`, recorded nowhere.
        let probe = br#"{"context": {"specversion": "0.5.1", "type": "com.example.probe"}}"#;
        railyard_testkit::wait_until("the intake responder to answer", WAIT, || async {
            let answered = self
                .bus
                .request("railyard.intake.cdevents", &[], probe.as_slice().into())
                .await
                .is_ok();
            Ok(answered.then_some(()))
        })
        .await
    }

    /// POSTs `body` to `path` with `headers`; returns the status and the JSON answer.
    pub async fn post(
        &self,
        path: &str,
        headers: &[(&str, String)],
        body: impl Into<reqwest::Body>,
    ) -> anyhow::Result<(u16, serde_json::Value)> {
        let mut request = self.http.post(format!("{}{path}", self.url)).body(body);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let response = tokio::time::timeout(WAIT, request.send())
            .await
            .context("http answer in time")??;
        let status = response.status().as_u16();
        let text = response.text().await?;
        let json =
            serde_json::from_str(&text).with_context(|| format!("answer is not json: {text}"))?;
        Ok((status, json))
    }

    /// A CDEvent from the publisher.
    pub async fn cdevent(
        &self,
        event: &serde_json::Value,
    ) -> anyhow::Result<(u16, serde_json::Value)> {
        self.post(
            "/v1/cdevents",
            &[
                ("authorization", format!("Bearer {}", self.publisher)),
                ("content-type", "application/json".into()),
            ],
            serde_json::to_vec(event)?,
        )
        .await
    }

    /// A signed GitHub delivery.
    pub async fn github(
        &self,
        event: &str,
        delivery: &str,
        body: &[u8],
    ) -> anyhow::Result<(u16, serde_json::Value)> {
        let signature = railyard_intake::github_signature(GITHUB_SECRET.as_bytes(), body);
        self.post(
            "/v1/webhooks/github",
            &[
                ("x-github-event", event.to_owned()),
                ("x-github-delivery", delivery.to_owned()),
                ("x-hub-signature-256", signature),
                ("content-type", "application/json".into()),
            ],
            body.to_vec(),
        )
        .await
    }

    /// A NATS request on `railyard.intake.cdevents`.
    pub async fn nats(
        &self,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> anyhow::Result<serde_json::Value> {
        let reply = tokio::time::timeout(
            WAIT,
            self.bus
                .request("railyard.intake.cdevents", headers, body.into()),
        )
        .await
        .context("nats reply in time")??;
        Ok(serde_json::from_slice(&reply)?)
    }

    /// The last sequence of the event stream.
    pub async fn last_sequence(&self) -> anyhow::Result<u64> {
        Ok(self.bus.stream_last_sequence().await?)
    }

    /// Every event appended after stream sequence `after`.
    pub async fn events_since(&self, after: u64) -> anyhow::Result<Vec<Envelope>> {
        events_since(&self.bus, after).await
    }

    /// The value of a sample in `GET /metrics` (`railyard_intake_unauthenticated_total{door="github"}`),
    /// 0 when it is not there.
    pub async fn metric(&self, sample: &str) -> anyhow::Result<f64> {
        let text = self
            .http
            .get(format!("{}/metrics", self.url))
            .send()
            .await?
            .text()
            .await?;
        Ok(text
            .lines()
            .find_map(|line| {
                line.strip_prefix(sample)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or(0.0))
    }

    /// How many rejections the log holds.
    pub async fn rejections(&self) -> anyhow::Result<Vec<railyard_bus::StoredRejection>> {
        Ok(self.bus.rejections(1, 10_000).await?)
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The intake configuration of the tests.
pub fn config(tokens: Tokens) -> anyhow::Result<IntakeConfig> {
    let mut config = IntakeConfig::new(Catalog::from_toml(CATALOG)?, tokens);
    config.github_secret = Some(Secret::new(GITHUB_SECRET));
    config.gitlab_token = Some(Secret::new(GITLAB_TOKEN));
    Ok(config)
}

/// Every event appended to `bus` after stream sequence `after`.
pub async fn events_since(bus: &Bus, after: u64) -> anyhow::Result<Vec<Envelope>> {
    let last = bus.stream_last_sequence().await?;
    let mut events = Vec::new();
    if last <= after {
        return Ok(events);
    }
    let mut replay = bus.replay(after + 1).await?;
    loop {
        let delivery = tokio::time::timeout(WAIT, replay.next())
            .await
            .context("replay delivers in time")??
            .context("replay ended")?;
        events.extend(delivery.envelopes);
        if delivery.stream_sequence >= last {
            return Ok(events);
        }
    }
}

/// Envelopes as JSON with ids and timestamps redacted (for snapshots).
pub fn normalised(events: &[Envelope]) -> serde_json::Value {
    let mut value = serde_json::to_value(events).expect("events serialize");
    for event in value.as_array_mut().into_iter().flatten() {
        for key in ["event_id", "occurred_at", "correlation_id", "causation_id"] {
            if let Some(slot) = event.get_mut(key) {
                *slot = format!("[{key}]").into();
            }
        }
    }
    value
}

/// An `artifact.published` CDEvent (v0.5.1) for `service` at `version` with railyard data.
pub fn artifact(
    id: &str,
    service: &str,
    version: &str,
    railyard: serde_json::Value,
) -> serde_json::Value {
    serde_json::json!({
        "context": {
            "specversion": "0.5.1",
            "id": id,
            "source": "/ci/pipelines",
            "type": "dev.cdevents.artifact.published.0.3.0",
            "timestamp": "2026-11-25T10:00:00Z",
            "chainId": format!("chain-{service}-{version}")
        },
        "subject": {
            "id": format!("pkg:oci/{service}@{version}"),
            "source": "/ci/pipelines",
            "content": {}
        },
        "customData": { "railyard": railyard }
    })
}

/// A `testsuiterun.finished` CDEvent (v0.5.1) naming the service and version.
pub fn suite(
    id: &str,
    service: &str,
    version: &str,
    suite: &str,
    outcome: &str,
) -> serde_json::Value {
    serde_json::json!({
        "context": {
            "specversion": "0.5.1",
            "id": id,
            "source": "/ci/tests",
            "type": "dev.cdevents.testsuiterun.finished.0.3.0",
            "timestamp": "2026-11-25T10:00:00Z"
        },
        "subject": {
            "id": format!("run-{id}"),
            "source": "/ci/tests",
            "content": {
                "outcome": outcome,
                "environment": { "id": "ci" },
                "testSuite": { "id": suite }
            }
        },
        "customData": { "railyard": { "service": service, "version": version } }
    })
}

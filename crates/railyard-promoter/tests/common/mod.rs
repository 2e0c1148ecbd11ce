//! Shared harness of the promoter tests: a real nats-server, a bus on a manual clock, releases
//! planned by the real planner core, workers started and killed as tasks, local HTTP servers
//! for gates and deploy APIs, and bounded waits that drive the manual clock.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use railyard_bus::{Bus, BusConfig, Expected};
use railyard_core::event::{ReleasePlanned, ReleaseRequested};
use railyard_core::release_state::StepStatus;
use railyard_core::step::StepId;
use railyard_core::{
    AggregateId, Catalog, Clock, Envelope, Event, Inventory, ManualClock, ReleaseFile, ReleaseId,
    ReleaseState, Status,
};
use railyard_promoter::{PromoterConfig, run};
use railyard_testkit::{NatsServer, wait_until};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const START: &str = "2026-03-02T09:00:00Z";
pub const LEASE_TTL: Duration = Duration::from_secs(60);

/// The id of the deploy step of `service` in `env`, as core's one formatter writes it.
pub fn deploy_step(env: &str, service: &str) -> String {
    StepId::deploy(&env.parse().unwrap(), &service.parse().unwrap()).to_string()
}

/// The id of the verify step of `service` in `env`, as core's one formatter writes it.
pub fn verify_step(env: &str, service: &str) -> String {
    StepId::verify(&env.parse().unwrap(), &service.parse().unwrap()).to_string()
}

pub fn clock() -> ManualClock {
    ManualClock::new(START.parse().unwrap())
}

pub fn bus_config(clock: &ManualClock) -> BusConfig {
    BusConfig {
        clock: clock.shared(),
        lease_ttl: LEASE_TTL,
        ack_wait: Duration::from_secs(5),
        backoff: vec![Duration::from_millis(50), Duration::from_millis(200)],
        max_deliver: 20,
        ..BusConfig::default()
    }
}

pub struct Harness {
    pub nats: NatsServer,
    pub bus: Bus,
    pub clock: ManualClock,
    pub catalog: Catalog,
    pub dir: tempfile::TempDir,
}

impl Harness {
    pub async fn start(catalog: &str) -> anyhow::Result<Harness> {
        let nats = NatsServer::start().await?;
        let clock = clock();
        let bus = Bus::connect(&nats.url(), bus_config(&clock)).await?;
        bus.ensure_topology().await?;
        Ok(Harness {
            nats,
            bus,
            clock,
            catalog: Catalog::from_toml(catalog)?,
            dir: tempfile::tempdir()?,
        })
    }

    pub fn worker_config(&self, id: &str) -> PromoterConfig {
        let mut config = PromoterConfig::new(
            self.catalog.clone(),
            id,
            self.dir.path().join(format!("store-{id}")),
        );
        config.clock = self.clock.shared();
        config.lease_renew_interval = Duration::from_secs(5);
        config.sweep_interval = Duration::from_secs(10);
        config.poll_interval = Duration::from_secs(1);
        config
    }

    /// Starts a worker on its own bus connection.
    pub fn worker(&self, id: &str) -> Worker {
        self.worker_with(self.worker_config(id))
    }

    pub fn worker_with(&self, config: PromoterConfig) -> Worker {
        let stop = CancellationToken::new();
        let url = self.nats.url();
        let bus_config = bus_config(&self.clock);
        let token = stop.clone();
        let task = tokio::spawn(async move {
            let bus = Bus::connect(&url, bus_config).await?;
            run(config, bus, token).await?;
            Ok(())
        });
        Worker { stop, task }
    }

    /// Requests `release_toml` as `carol` and plans it with the planner core against `inventory`.
    pub async fn submit(
        &self,
        release_toml: &str,
        inventory: &Inventory,
    ) -> anyhow::Result<ReleaseId> {
        self.submit_after(release_toml, inventory, &[]).await
    }

    /// [`Harness::submit`], planned after the releases `in_flight` (as the planner service
    /// would with the releases requested before it that have not ended).
    pub async fn submit_after(
        &self,
        release_toml: &str,
        inventory: &Inventory,
        in_flight: &[railyard_plan::InFlight],
    ) -> anyhow::Result<ReleaseId> {
        let file = ReleaseFile::from_toml(release_toml)?;
        let aggregate = AggregateId::Release(file.id.clone());
        let request = ReleaseRequested {
            release: file.id.clone(),
            requested_by: "carol".into(),
            changes: file.changes,
        };
        let plan = railyard_plan::plan(&railyard_plan::PlanInput {
            catalog: &self.catalog,
            release: &request,
            inventory,
            in_flight,
        })
        .map_err(|refused| anyhow::anyhow!("the test release is refused: {refused:?}"))?;
        let requested = Envelope::new(
            aggregate.clone(),
            "carol",
            self.clock.now(),
            Event::ReleaseRequested(request),
        );
        let planned = Envelope::new(
            aggregate.clone(),
            "railyard-planner",
            self.clock.now(),
            Event::ReleasePlanned(ReleasePlanned { plan }),
        )
        .caused_by(&requested);
        let first = self
            .bus
            .append(&aggregate, Expected::NoEvents, &[requested])
            .await?;
        self.bus
            .append(&aggregate, Expected::Sequence(first.sequence), &[planned])
            .await?;
        Ok(file.id)
    }

    pub async fn events(&self, id: &ReleaseId) -> anyhow::Result<Vec<Envelope>> {
        Ok(self
            .bus
            .load(&AggregateId::Release(id.clone()))
            .await?
            .events)
    }

    pub async fn state(&self, id: &ReleaseId) -> anyhow::Result<ReleaseState> {
        let events = self.events(id).await?;
        Ok(ReleaseState::fold(&events)?.expect("the release exists"))
    }

    /// Waits (bounded, 60 s real time) until `done` holds for the release, advancing the manual
    /// clock by `tick` before each look so clock-driven work (sweeps, soaks, durations) moves.
    pub async fn drive_until(
        &self,
        id: &ReleaseId,
        tick: Duration,
        what: &str,
        done: impl Fn(&ReleaseState) -> bool,
    ) -> anyhow::Result<ReleaseState> {
        let done = &done;
        wait_until(what, Duration::from_secs(60), || async move {
            self.clock.advance(tick);
            let state = self.state(id).await?;
            Ok(done(&state).then_some(state))
        })
        .await
    }

    pub async fn wait_status(
        &self,
        id: &ReleaseId,
        status: Status,
    ) -> anyhow::Result<ReleaseState> {
        self.drive_until(
            id,
            Duration::from_millis(500),
            &format!("release {id} {status}"),
            |s| s.status == status,
        )
        .await
    }
}

pub struct Worker {
    pub stop: CancellationToken,
    pub task: JoinHandle<anyhow::Result<()>>,
}

impl Worker {
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(20), self.task).await???;
        Ok(())
    }

    /// Kills the worker as a crash would: its task and every step it runs are dropped at once.
    pub async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// Type names of the events, in order.
pub fn types(events: &[Envelope]) -> Vec<&'static str> {
    events.iter().map(|e| e.event.type_name()).collect()
}

/// How many times each step was started, succeeded, rolled back.
pub fn count(events: &[Envelope], ty: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for e in events {
        let step = match &e.event {
            Event::StepStarted(s) if ty == "step.started" => &s.step,
            Event::StepSucceeded(o) if ty == "step.succeeded" => &o.step,
            Event::StepFailed(o) if ty == "step.failed" => &o.step,
            Event::StepRolledBack(o) if ty == "step.rolled_back" => &o.step,
            _ => continue,
        };
        *out.entry(step.clone()).or_insert(0) += 1;
    }
    out
}

pub fn all_succeeded(state: &ReleaseState) -> bool {
    state.steps.values().all(|s| *s == StepStatus::Succeeded)
}

/// A step of `state` that is running (the first by step id), if any.
pub fn running(state: &ReleaseState) -> Option<String> {
    state
        .steps
        .iter()
        .find(|(_, s)| matches!(s, StepStatus::Running { .. }))
        .map(|(step, _)| step.clone())
}

/// A local HTTP server for gates and deploy APIs: `/health` answers 200 `{"status":"ok"}`
/// or, when `status` is set to something else, that status with `{"status":"failing"}`;
/// `/deploy` records each POST body and answers 202.
#[derive(Clone)]
pub struct Fake {
    pub addr: SocketAddr,
    pub status: Arc<AtomicU16>,
    /// The value `/api/v1/query` answers, as f64 bits; NaN answers an empty result.
    pub metric: Arc<std::sync::atomic::AtomicU64>,
    pub deploys: Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
}

impl Fake {
    pub async fn start() -> anyhow::Result<Fake> {
        use axum::routing::{get, post};
        let status = Arc::new(AtomicU16::new(200));
        let deploys = Arc::new(std::sync::Mutex::new(Vec::new()));
        let metric = Arc::new(std::sync::atomic::AtomicU64::new(0f64.to_bits()));
        let (s, d, m) = (status.clone(), deploys.clone(), metric.clone());
        let app = axum::Router::new()
            .route(
                "/health",
                get(move || {
                    let s = s.clone();
                    async move {
                        let code = s.load(Ordering::SeqCst);
                        let body = if code == 200 { "ok" } else { "failing" };
                        (
                            axum::http::StatusCode::from_u16(code).unwrap(),
                            axum::Json(serde_json::json!({ "status": body })),
                        )
                    }
                }),
            )
            .route(
                "/api/v1/query",
                get(move || {
                    let m = m.clone();
                    async move {
                        let value = f64::from_bits(m.load(Ordering::SeqCst));
                        let result = if value.is_nan() {
                            serde_json::json!([])
                        } else {
                            serde_json::json!([{"metric": {}, "value": [1772442000.0, value.to_string()]}])
                        };
                        axum::Json(serde_json::json!({
                            "status": "success",
                            "data": {"resultType": "vector", "result": result}
                        }))
                    }
                }),
            )
            .route(
                "/deploy",
                post(move |axum::Json(body): axum::Json<serde_json::Value>| {
                    let d = d.clone();
                    async move {
                        d.lock().unwrap().push(body);
                        axum::http::StatusCode::ACCEPTED
                    }
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Fake {
            addr,
            status,
            metric,
            deploys,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// A file every command deploy appends one line to, so tests count adapter invocations.
pub fn counter_file(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("invocations.log")
}

pub fn invocations(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The estate of most tests: orders-api produces orders-events, billing-worker and
/// email-worker consume it; both environments run orders-api 1.0.0 emitting version 2.
pub fn estate(deploy: &str, production_extra: &str) -> String {
    format!(
        r#"
[groups]
release-managers = ["alice", "bob", "ivan"]

[[environments]]
name = "staging"

[[environments]]
name = "production"
after = "staging"
{production_extra}

[services.orders-api]
owner = "team-orders"
deploy = {deploy}

[services.billing-worker]
owner = "team-billing"
deploy = {deploy}

[services.email-worker]
owner = "team-email"
deploy = {deploy}

[services.audit-worker]
owner = "team-audit"
deploy = {deploy}

[queues.orders-events]
producers = ["orders-api"]
consumers = ["billing-worker", "email-worker", "audit-worker"]
"#
    )
}

/// orders-api starts emitting version 3; both consumers learn to read it.
pub const RELEASE: &str = r#"
id = "rel-1"
[[changes]]
service = "orders-api"
version = "2.0.0"
authors = ["dave"]
produces = { orders-events = 3 }
[[changes]]
service = "billing-worker"
version = "1.5.0"
consumes = { orders-events = "2..=3" }
[[changes]]
service = "email-worker"
version = "3.2.0"
consumes = { orders-events = "2..=3" }
"#;

pub fn inventory() -> Inventory {
    let env = serde_json::json!({
        "services": {
            "orders-api": {"version": "1.0.0", "produces": {"orders-events": 2}},
            "billing-worker": {"version": "1.4.0", "consumes": {"orders-events": "1..=2"}},
            "email-worker": {"version": "3.1.0", "consumes": {"orders-events": "1..=2"}}
        },
        "databases": {}
    });
    serde_json::from_value(serde_json::json!({"staging": env, "production": env})).unwrap()
}

impl Harness {
    /// Records `inventory` as `service.deployed` events, as an outside deploy would.
    pub async fn seed(&self, inventory: &Inventory) -> anyhow::Result<()> {
        for (env, content) in &inventory.0 {
            for (service, running) in &content.services {
                let aggregate = AggregateId::Inventory(env.clone());
                let event = Event::ServiceDeployed(railyard_core::event::ServiceDeployed {
                    env: env.clone(),
                    service: service.clone(),
                    running: Some(running.clone()),
                    databases: Default::default(),
                    release: None,
                });
                let envelope = Envelope::new(aggregate.clone(), "ci", self.clock.now(), event);
                self.bus
                    .append(&aggregate, Expected::Any, &[envelope])
                    .await?;
            }
        }
        Ok(())
    }

    /// A command deploy that appends `<env> <service> <version>` to the counter file.
    pub fn counting_deploy(&self) -> String {
        format!(
            r#"{{ kind = "command", run = ["sh", "-c", "echo $RAILYARD_ENV $RAILYARD_SERVICE $RAILYARD_VERSION >> {}"] }}"#,
            counter_file(&self.dir).display()
        )
    }
}

/// Operator and approver routes served on a local port, with one token per identity.
pub struct Api {
    pub url: String,
    pub tokens: BTreeMap<String, String>,
}

impl Api {
    pub async fn start(h: &Harness) -> anyhow::Result<Api> {
        use railyard_http::{Role, Tokens, generate_token};
        let people: [(&str, &[Role], &[&str]); 7] = [
            ("ops", &[Role::Operator], &[]),
            ("alice", &[Role::Approver], &["github:alice"]),
            ("carol", &[Role::Approver], &[]),
            ("dave", &[Role::Approver], &["github:dave"]),
            ("eve", &[Role::Approver], &[]),
            ("bob", &[Role::Approver, Role::Operator], &[]),
            ("ivan", &[Role::Approver], &[]),
        ];
        let mut tokens = BTreeMap::new();
        let mut entries = Vec::new();
        for (name, roles, aliases) in people {
            let (token, entry) = generate_token(
                name,
                roles.iter().copied().collect(),
                aliases.iter().map(|a| a.to_string()).collect(),
            );
            tokens.insert(name.to_owned(), token);
            entries.push(entry);
        }
        let state = railyard_promoter::RouteState {
            bus: h.bus.clone(),
            catalog: Arc::new(h.catalog.clone()),
            tokens: Tokens::from_entries(entries)?,
            clock: h.clock.shared(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let app = railyard_promoter::router(state);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Api { url, tokens })
    }

    /// POSTs a command as `who`; the status and the JSON answer.
    pub async fn command(
        &self,
        who: &str,
        release: &ReleaseId,
        command: &str,
        body: serde_json::Value,
    ) -> anyhow::Result<(u16, serde_json::Value)> {
        let response = reqwest::Client::new()
            .post(format!("{}/v1/releases/{release}/{command}", self.url))
            .bearer_auth(&self.tokens[who])
            .json(&body)
            .send()
            .await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await?))
    }
}

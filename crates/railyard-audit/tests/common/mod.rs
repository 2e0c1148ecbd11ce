//! Shared test support: a real nats-server, an audit service on a temporary store served on
//! `127.0.0.1:0`, tokens for each kind of caller, and a scripted set of releases appended
//! straight to the bus as the promoter would, with fixed timestamps; and a way to tamper with a
//! closed store (without importing sled).
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use railyard_audit::open_store;
use railyard_audit::{Audit, AuditConfig};
use railyard_bus::{Bus, BusConfig, Expected, Rejection};
use railyard_core::event::{
    ApprovalDecision, ApprovalRequested, GateEvaluated, ReleaseCompleted, ReleaseHeld,
    ReleasePlanned, ReleaseRejected, ReleaseRequested, ReleaseRolledBack, ServiceDeployed,
    StepOutcome, StepStarted,
};
use railyard_core::inventory::RunningService;
use railyard_core::step::{StepId, Target};
use railyard_core::{
    Action, AggregateId, Change, Edge, Envelope, Event, ManualClock, Plan, Refusal, Step,
};
use railyard_http::{Role, Tokens, generate_token};
use railyard_store::{KeyBuf, Projection, ProjectionError, ProjectionStore, StoreConfig, Update};
use railyard_testkit::NatsServer;
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Bound on every wait.
pub const WAIT: Duration = Duration::from_secs(30);

pub async fn connect(server: &NatsServer) -> anyhow::Result<Bus> {
    let config = BusConfig {
        request_timeout: Duration::from_secs(5),
        append_timeout: Duration::from_secs(15),
        ..BusConfig::default()
    };
    let bus = Bus::connect(&server.url(), config).await?;
    bus.ensure_topology().await?;
    Ok(bus)
}

/// Bearer tokens: an auditor, a caller with another role, and the tokens file admitting both.
pub struct Callers {
    pub auditor: String,
    pub operator: String,
    pub tokens: Tokens,
}

pub fn callers() -> Callers {
    let (auditor, auditor_entry) =
        generate_token("dora", BTreeSet::from([Role::Auditor]), Vec::new());
    let (operator, operator_entry) =
        generate_token("olga", BTreeSet::from([Role::Operator]), Vec::new());
    Callers {
        auditor,
        operator,
        tokens: Tokens::from_entries(vec![auditor_entry, operator_entry]).unwrap(),
    }
}

pub fn start() -> DateTime<Utc> {
    "2026-03-02T09:00:00Z".parse().unwrap()
}

/// A running audit service: projection task and HTTP listener.
pub struct Service {
    pub audit: Audit,
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    pub projection_stop: CancellationToken,
    pub projection: Option<JoinHandle<()>>,
    http: Option<JoinHandle<()>>,
}

/// Runs `open` until it succeeds, for at most [`WAIT`]: sled releases its directory lock a
/// moment after the last handle is dropped (its background threads and deferred frees end
/// asynchronously), and nothing signals when, so reopening a store in the same process polls.
pub async fn reopen<T, F, Fut>(what: &str, mut open: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    railyard_testkit::wait_until(what, WAIT, || {
        let attempt = open();
        async move { attempt.await.map(Some) }
    })
    .await
}

impl Service {
    pub async fn start(bus: &Bus, store: &Path, tokens: Tokens) -> anyhow::Result<Service> {
        let mut config = AuditConfig::new(store, tokens);
        config.clock = ManualClock::new(start()).shared();
        Service::start_config(bus, config).await
    }

    /// A service as `config` says (its clock, sealing, ...).
    pub async fn start_config(bus: &Bus, config: AuditConfig) -> anyhow::Result<Service> {
        let shutdown = CancellationToken::new();
        let audit = reopen("the audit store to open", || {
            let (config, bus, shutdown) = (config.clone(), bus.clone(), shutdown.clone());
            async move { Ok(Audit::open(config, bus, shutdown).await?) }
        })
        .await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = railyard_audit::router(audit.clone());
        let stop = shutdown.clone();
        let http = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
                .expect("the test server serves");
        });
        let mut service = Service {
            audit,
            addr,
            shutdown,
            projection_stop: CancellationToken::new(),
            projection: None,
            http: Some(http),
        };
        service.start_projection();
        Ok(service)
    }

    pub fn start_projection(&mut self) {
        self.projection_stop = CancellationToken::new();
        let audit = self.audit.clone();
        let stop = self.projection_stop.clone();
        self.projection = Some(tokio::spawn(async move {
            audit.follow(&stop).await.expect("the projection follows");
        }));
    }

    pub async fn stop_projection(&mut self) {
        self.projection_stop.cancel();
        if let Some(task) = self.projection.take() {
            tokio::time::timeout(WAIT, task)
                .await
                .expect("the projection stops in time")
                .expect("the projection task ends cleanly");
        }
    }

    /// Waits until the projection has applied stream sequence `sequence`.
    pub async fn caught_up(&self, sequence: u64) {
        let mut committed = self.audit.reader().store().watch_checkpoint();
        tokio::time::timeout(WAIT, committed.wait_for(|c| *c >= sequence))
            .await
            .expect("the projection catches up in time")
            .expect("the store stays open");
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stops everything and releases the store.
    pub async fn stop(mut self) {
        self.stop_projection().await;
        self.shutdown.cancel();
        if let Some(http) = self.http.take() {
            tokio::time::timeout(WAIT, http)
                .await
                .expect("the server stops in time")
                .expect("the server task ends cleanly");
        }
    }
}

pub fn temp_store() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix("railyard-audit-test-")
        .tempdir()
        .unwrap();
    let path = dir.path().join("audit");
    (dir, path)
}

/// Appends events with fixed, increasing timestamps.
pub struct Script {
    pub bus: Bus,
    pub at: DateTime<Utc>,
    pub last_sequence: u64,
    pub appended: Vec<Envelope>,
}

impl Script {
    pub fn new(bus: &Bus) -> Script {
        Script {
            bus: bus.clone(),
            at: start(),
            last_sequence: 0,
            appended: Vec::new(),
        }
    }

    /// Appends one event by `actor` on `aggregate`, one minute after the previous one.
    pub async fn append(&mut self, aggregate: &str, actor: &str, event: Event) -> u64 {
        self.at += chrono::Duration::minutes(1);
        let aggregate: AggregateId = aggregate.parse().unwrap();
        let envelope = Envelope::new(aggregate.clone(), actor, self.at, event);
        let appended = self
            .bus
            .append(&aggregate, Expected::Any, std::slice::from_ref(&envelope))
            .await
            .expect("the append is stored");
        self.appended.push(envelope);
        self.last_sequence = appended.sequence;
        appended.sequence
    }

    pub async fn release(&mut self, id: &str, actor: &str, event: Event) -> u64 {
        self.append(&format!("release.{id}"), actor, event).await
    }

    pub async fn run_step(&mut self, id: &str, step: &str) {
        self.release(id, "promoter", started(step)).await;
        self.release(id, "promoter", succeeded(step, "")).await;
    }
}

pub fn change(service: &str, version: &str, commit: &str) -> Change {
    Change {
        service: service.parse().unwrap(),
        version: version.into(),
        artifact: Some(format!("pkg:oci/{service}@sha256%3A{commit}")),
        commit: Some(commit.into()),
        branch: Some("main".into()),
        authors: vec!["carol".into()],
        produces: Default::default(),
        consumes: Default::default(),
        provides: Default::default(),
        requires: Default::default(),
        schema: Default::default(),
        migrations: Vec::new(),
        after: Vec::new(),
    }
}

/// A plan whose steps run one after the other.
pub fn plan(release: &str, steps: &[(&str, Action, &str, Option<&str>)]) -> Plan {
    let steps: Vec<Step> = steps
        .iter()
        .map(|(env, action, target, version)| {
            let target = Target::parse(*action, target).unwrap();
            let id = StepId::new(env.parse().unwrap(), *action, target).unwrap();
            Step::new(id, version.map(str::to_owned))
        })
        .collect();
    let edges = steps
        .windows(2)
        .map(|pair| Edge {
            from: pair[0].id.clone(),
            to: pair[1].id.clone(),
            rule: "step-order".into(),
            reason: format!("{} goes first", pair[0].id),
        })
        .collect();
    Plan {
        release: release.parse().unwrap(),
        catalog_hash: "sha256:00".into(),
        waves: steps.iter().map(|s| vec![s.id.clone()]).collect(),
        critical_path: steps.iter().map(|s| s.id.clone()).collect(),
        steps,
        edges,
        external_edges: Vec::new(),
        points_of_no_return: Vec::new(),
    }
}

pub fn started(step: &str) -> Event {
    Event::StepStarted(StepStarted {
        step: step.into(),
        worker: "w1".into(),
        attempt: 1,
    })
}

pub fn succeeded(step: &str, detail: &str) -> Event {
    Event::StepSucceeded(StepOutcome {
        step: step.into(),
        detail: detail.into(),
    })
}

pub fn gate(step: &str, gate: &str, passed: bool, observed: &str) -> Event {
    Event::GateEvaluated(GateEvaluated {
        step: step.into(),
        gate: gate.into(),
        passed,
        observed: observed.into(),
        expected: "200".into(),
    })
}

pub fn requested(id: &str, changes: Vec<Change>) -> Event {
    Event::ReleaseRequested(ReleaseRequested {
        release: id.parse().unwrap(),
        requested_by: "carol".into(),
        changes,
    })
}

pub fn deployed(
    env: &str,
    service: &str,
    version: &str,
    commit: &str,
    release: Option<&str>,
) -> Event {
    let mut running = RunningService::from(&change(service, version, commit));
    running.commit = Some(commit.into());
    Event::ServiceDeployed(ServiceDeployed {
        env: env.parse().unwrap(),
        service: service.parse().unwrap(),
        running: Some(running),
        databases: Default::default(),
        release: release.map(|r| r.parse().unwrap()),
    })
}

/// The scripted estate: a completed release with approvals and gates, a rolled-back one, a
/// refused one and a held one, plus a refused input in the rejection log.
pub async fn script_releases(script: &mut Script) {
    use Action::*;
    // What production ran before.
    script
        .append(
            "inventory.production",
            "promoter",
            deployed("production", "orders-api", "2.3.0", "a1b2c3d", None),
        )
        .await;
    script
        .append(
            "inventory.production",
            "promoter",
            deployed("production", "billing-worker", "1.7.2", "0f0f0f0", None),
        )
        .await;

    // rel-1: planned, promoted through staging, approved, deployed to production, verified.
    script
        .release(
            "rel-1",
            "carol",
            requested("rel-1", vec![change("orders-api", "2.4.0", "d4e5f6a")]),
        )
        .await;
    script
        .release(
            "rel-1",
            "planner",
            Event::ReleasePlanned(ReleasePlanned {
                plan: plan(
                    "rel-1",
                    &[
                        ("staging", Deploy, "orders-api", Some("2.4.0")),
                        ("staging", Verify, "orders-api", Some("2.4.0")),
                        ("production", Approve, "rel-1", None),
                        ("production", Deploy, "orders-api", Some("2.4.0")),
                        ("production", Verify, "orders-api", Some("2.4.0")),
                    ],
                ),
            }),
        )
        .await;
    script.run_step("rel-1", "staging:deploy:orders-api").await;
    script
        .append(
            "inventory.staging",
            "promoter",
            deployed("staging", "orders-api", "2.4.0", "d4e5f6a", Some("rel-1")),
        )
        .await;
    script
        .release("rel-1", "promoter", started("staging:verify:orders-api"))
        .await;
    script
        .release(
            "rel-1",
            "promoter",
            gate("staging:verify:orders-api", "http#0", true, "200"),
        )
        .await;
    script
        .release(
            "rel-1",
            "promoter",
            succeeded("staging:verify:orders-api", ""),
        )
        .await;
    script
        .release("rel-1", "promoter", started("production:approve:rel-1"))
        .await;
    script
        .release(
            "rel-1",
            "promoter",
            Event::ApprovalRequested(ApprovalRequested {
                step: "production:approve:rel-1".into(),
                env: "production".parse().unwrap(),
                approvers: vec!["alice".into(), "bob".into()],
                reason: None,
            }),
        )
        .await;
    script
        .release(
            "rel-1",
            "alice",
            Event::ApprovalGranted(ApprovalDecision {
                step: "production:approve:rel-1".into(),
                comment: "ship it".into(),
            }),
        )
        .await;
    script
        .release(
            "rel-1",
            "promoter",
            succeeded("production:approve:rel-1", ""),
        )
        .await;
    script
        .release("rel-1", "promoter", started("production:deploy:orders-api"))
        .await;
    script
        .release(
            "rel-1",
            "promoter",
            succeeded("production:deploy:orders-api", "orders-api 2.4.0 running"),
        )
        .await;
    script
        .append(
            "inventory.production",
            "promoter",
            deployed(
                "production",
                "orders-api",
                "2.4.0",
                "d4e5f6a",
                Some("rel-1"),
            ),
        )
        .await;
    script
        .release("rel-1", "promoter", started("production:verify:orders-api"))
        .await;
    script
        .release(
            "rel-1",
            "promoter",
            gate("production:verify:orders-api", "http#0", true, "200"),
        )
        .await;
    script
        .release(
            "rel-1",
            "promoter",
            gate(
                "production:verify:orders-api",
                "soak#1",
                true,
                "10m without errors",
            ),
        )
        .await;
    script
        .release(
            "rel-1",
            "promoter",
            succeeded("production:verify:orders-api", ""),
        )
        .await;
    script
        .release(
            "rel-1",
            "promoter",
            Event::ReleaseCompleted(ReleaseCompleted {}),
        )
        .await;

    // rel-2: approved, deployed, a gate fails, rolled back.
    script
        .release(
            "rel-2",
            "carol",
            requested("rel-2", vec![change("billing-worker", "1.8.0", "9e9e9e9")]),
        )
        .await;
    script
        .release(
            "rel-2",
            "planner",
            Event::ReleasePlanned(ReleasePlanned {
                plan: plan(
                    "rel-2",
                    &[
                        ("production", Approve, "rel-2", None),
                        ("production", Deploy, "billing-worker", Some("1.8.0")),
                        ("production", Verify, "billing-worker", Some("1.8.0")),
                    ],
                ),
            }),
        )
        .await;
    script
        .release("rel-2", "promoter", started("production:approve:rel-2"))
        .await;
    script
        .release(
            "rel-2",
            "promoter",
            Event::ApprovalRequested(ApprovalRequested {
                step: "production:approve:rel-2".into(),
                env: "production".parse().unwrap(),
                approvers: vec!["alice".into(), "bob".into()],
                reason: None,
            }),
        )
        .await;
    script
        .release(
            "rel-2",
            "bob",
            Event::ApprovalGranted(ApprovalDecision {
                step: "production:approve:rel-2".into(),
                comment: "low risk, off-peak".into(),
            }),
        )
        .await;
    script
        .release(
            "rel-2",
            "promoter",
            succeeded("production:approve:rel-2", ""),
        )
        .await;
    script
        .release(
            "rel-2",
            "promoter",
            started("production:deploy:billing-worker"),
        )
        .await;
    script
        .release(
            "rel-2",
            "promoter",
            succeeded("production:deploy:billing-worker", ""),
        )
        .await;
    script
        .append(
            "inventory.production",
            "promoter",
            deployed(
                "production",
                "billing-worker",
                "1.8.0",
                "9e9e9e9",
                Some("rel-2"),
            ),
        )
        .await;
    script
        .release(
            "rel-2",
            "promoter",
            started("production:verify:billing-worker"),
        )
        .await;
    script
        .release(
            "rel-2",
            "promoter",
            gate(
                "production:verify:billing-worker",
                "prometheus#0",
                false,
                "0.07 errors/s",
            ),
        )
        .await;
    script
        .release(
            "rel-2",
            "promoter",
            Event::StepFailed(StepOutcome {
                step: "production:verify:billing-worker".into(),
                detail: "gate prometheus#0 failed".into(),
            }),
        )
        .await;
    script
        .release(
            "rel-2",
            "promoter",
            Event::StepRolledBack(StepOutcome {
                step: "production:deploy:billing-worker".into(),
                detail: "back to 1.7.2".into(),
            }),
        )
        .await;
    script
        .append(
            "inventory.production",
            "promoter",
            deployed(
                "production",
                "billing-worker",
                "1.7.2",
                "0f0f0f0",
                Some("rel-2"),
            ),
        )
        .await;
    script
        .release(
            "rel-2",
            "promoter",
            Event::ReleaseRolledBack(ReleaseRolledBack {
                reason: "gate prometheus#0 failed on production:verify:billing-worker".into(),
                undone: vec!["production:deploy:billing-worker".into()],
            }),
        )
        .await;

    // rel-3: refused by the planner.
    script
        .release(
            "rel-3",
            "carol",
            requested("rel-3", vec![change("email-worker", "3.2.0", "7a7a7a7")]),
        )
        .await;
    script
        .release(
            "rel-3",
            "planner",
            Event::ReleaseRejected(ReleaseRejected {
                catalog_hash: "sha256:00".into(),
                reasons: vec![Refusal {
                    rule: "queue".into(),
                    env: Some("production".parse().unwrap()),
                    reason: "email-worker 3.2.0 reads orders-events 4..=4 but orders-api emits 3"
                        .into(),
                    remedy: "accept 3..=4 in email-worker".into(),
                    release: None,
                }],
            }),
        )
        .await;

    // rel-4: production approval denied, then held for the owner.
    script
        .release(
            "rel-4",
            "carol",
            requested("rel-4", vec![change("orders-api", "2.5.0", "b5b5b5b")]),
        )
        .await;
    script
        .release(
            "rel-4",
            "planner",
            Event::ReleasePlanned(ReleasePlanned {
                plan: plan(
                    "rel-4",
                    &[
                        ("production", Approve, "rel-4", None),
                        ("production", Deploy, "orders-api", Some("2.5.0")),
                    ],
                ),
            }),
        )
        .await;
    script
        .release("rel-4", "promoter", started("production:approve:rel-4"))
        .await;
    script
        .release(
            "rel-4",
            "promoter",
            Event::ApprovalRequested(ApprovalRequested {
                step: "production:approve:rel-4".into(),
                env: "production".parse().unwrap(),
                approvers: vec!["alice".into(), "bob".into()],
                reason: None,
            }),
        )
        .await;
    script
        .release(
            "rel-4",
            "alice",
            Event::ApprovalDenied(ApprovalDecision {
                step: "production:approve:rel-4".into(),
                comment: "incident open on payments".into(),
            }),
        )
        .await;
    script
        .release(
            "rel-4",
            "promoter",
            Event::ReleaseHeld(ReleaseHeld {
                reason: "approval denied by alice".into(),
                step: Some("production:approve:rel-4".into()),
                owner: Some("team-orders".into()),
                frozen: None,
            }),
        )
        .await;
}

/// A refused input in the rejection log.
pub async fn reject_input(bus: &Bus) {
    let mut rejection = Rejection::new(
        "github",
        "https://github.com/evil/fork",
        "source https://github.com/evil/fork is not allowed: add it to policy.allowed_sources",
        b"{\"action\":\"completed\"}",
    );
    rejection.received_at = "2026-03-02T09:30:00Z".parse().unwrap();
    bus.record_rejection(&rejection).await.unwrap();
}

pub fn record_key(n: u64) -> Vec<u8> {
    KeyBuf::new().str("r").u64(n).into_vec()
}

pub fn head_key() -> Vec<u8> {
    KeyBuf::new().str("head").into_vec()
}

/// A projection over the audit tree that writes what the test says: how a test tampers with
/// the store without importing sled.
pub struct Tamper {
    pub writes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl Projection for Tamper {
    fn name(&self) -> &str {
        railyard_audit::PROJECTION_NAME
    }

    fn apply(
        &mut self,
        update: &mut Update<'_>,
        _: u64,
        _: &[Envelope],
    ) -> Result<(), ProjectionError> {
        for (key, value) in self.writes.drain(..) {
            match value {
                Some(value) => update.put(key, value),
                None => update.remove(key),
            }
        }
        Ok(())
    }
}

/// Writes (or, for `None`, removes) `writes` in the closed audit store at `path`, as one
/// committed batch (which moves its checkpoint one past where it was).
pub async fn tamper(path: &Path, writes: Vec<(Vec<u8>, Option<Vec<u8>>)>) -> anyhow::Result<()> {
    let store = reopen("the store to open for tampering", || {
        let writes = writes.clone();
        async move { Ok(ProjectionStore::open(StoreConfig::new(path), Tamper { writes }).await?) }
    })
    .await?;
    let checkpoint = store.checkpoint().await?;
    store.apply(checkpoint + 1, Vec::new()).await?;
    store.flush().await?;
    Ok(())
}

/// Opens the closed audit store at `path`.
pub async fn open(path: &Path) -> anyhow::Result<ProjectionStore<railyard_audit::AuditProjection>> {
    reopen("the audit store to open", || async {
        Ok(open_store(path, None).await?)
    })
    .await
}

/// Record `n` of the closed store at `path`, as stored.
pub async fn record_value(path: &Path, n: u64) -> anyhow::Result<Value> {
    let store = open(path).await?;
    let bytes = store.get(record_key(n)).await?.expect("the record exists");
    Ok(serde_json::from_slice(&bytes)?)
}

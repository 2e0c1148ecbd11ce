//! The web console's live path and plan preview (issue 16), over real NATS and real HTTP, in
//! one run, on an audit record holding 1,000 releases (`RAILYARD_BENCH_RELEASES`): each
//! requested, planned by the real planner against the example estate, every step started and
//! succeeded, each deploy recorded as `service.deployed`, completed; the last 10 left in
//! flight (planned, nothing run).
//!
//! Scenarios, each for at least 2 s per round (`RAILYARD_BENCH_SECONDS`), `RAILYARD_BENCH_ROUNDS`
//! rounds (default 3), their order shuffled per round:
//!
//! - `raw-delivery` (baseline): an append to the bus until a bare replay consumer receives it —
//!   the floor under anything a read model can show;
//! - `live`: what a release's page waits for after an event is appended (a hold or a resume,
//!   alternately): the append's ack, the audit's commit of it (its checkpoint), the SSE frame
//!   of `GET /v1/releases/{id}/events` carrying it, then `GET /v1/releases/{id}` answering the
//!   new status (the page's refresh), each timed from the start of the append;
//! - `whoami` (baseline): `GET /v1/whoami`, the HTTP floor of a request;
//! - `plan-only` (baseline): `railyard_plan::plan` on the previewed file against the example
//!   inventory, nothing read;
//! - `preview`: `POST /v1/plan/preview` of `deploy/examples/release-pricing-6.toml`, which
//!   folds the recorded inventory and the releases in flight from the record, then plans;
//! - `estate`: `GET /v1/estate`, the recorded inventory's fold alone (the preview's first part).
//!
//! Run with `cargo bench -p railyard-audit --bench console` (add `--profile dev` for a debug
//! build, as the browser test runs).

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use futures::StreamExt;
use railyard_audit::{Audit, AuditConfig, console_routes, router};
use railyard_bus::{Bus, BusConfig, Expected};
use railyard_core::event::{
    Reasoned, ReleaseCompleted, ReleaseHeld, ReleasePlanned, ReleaseRequested, ServiceDeployed,
    StepOutcome, StepStarted,
};
use railyard_core::{
    Action, AggregateId, Catalog, Change, Envelope, Event, Inventory, ManualClock, ReleaseFile,
};
use railyard_http::{Role, Tokens, generate_token};
use railyard_plan::PlanInput;
use railyard_testkit::NatsServer;
use tokio_util::sync::CancellationToken;

const IN_FLIGHT: usize = 10;

fn examples() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/examples")
}

fn example(file: &str) -> String {
    std::fs::read_to_string(examples().join(file)).expect("the example file reads")
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A tiny xorshift, seeded from the clock: the scenario order per round.
struct Shuffle(u64);

impl Shuffle {
    fn new() -> Shuffle {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1;
        Shuffle(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let at = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[at]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

/// p50 and p99 of `samples`.
fn summary(samples: &mut [Duration]) -> (Duration, Duration) {
    samples.sort();
    (percentile(samples, 0.5), percentile(samples, 0.99))
}

/// The change release `i` makes: the next service of the estate, at a new version, with the
/// contracts it runs with now (so every release plans).
fn change_of(inventory: &Inventory, i: usize) -> Change {
    let production = inventory
        .0
        .values()
        .last()
        .expect("the example inventory has environments");
    let services: Vec<_> = production.services.iter().collect();
    let (service, running) = services[i % services.len()];
    Change {
        service: service.clone(),
        version: format!("{}.{i}.0", 100 + i % services.len()),
        artifact: None,
        commit: Some(format!("{i:07x}")),
        branch: Some("main".into()),
        authors: vec!["bench".into()],
        produces: running.produces.clone(),
        consumes: running.consumes.clone(),
        provides: running.provides.clone(),
        requires: running.requires.clone(),
        schema: running.schema.clone(),
        migrations: Vec::new(),
        after: Vec::new(),
    }
}

struct Seeded {
    /// A planned release the `live` scenario holds and resumes.
    live: String,
    in_flight: Vec<String>,
}

/// Appends `events` on `aggregate` in one append.
async fn append(bus: &Bus, aggregate: &AggregateId, actor: &str, events: Vec<Event>) -> u64 {
    let now = chrono::Utc::now();
    let envelopes: Vec<Envelope> = events
        .into_iter()
        .map(|event| Envelope::new(aggregate.clone(), actor, now, event))
        .collect();
    bus.append(aggregate, Expected::Any, &envelopes)
        .await
        .expect("the append is stored")
        .sequence
}

/// The history: `releases` releases (see the module's documentation) and the example estate.
async fn seed(bus: &Bus, catalog: &Catalog, inventory: &Inventory, releases: usize) -> Seeded {
    railyard::inventory_cmd::import(bus, inventory, "bench-import")
        .await
        .expect("the inventory imports");
    let mut in_flight = Vec::new();
    for i in 0..releases {
        let id = format!("hist-{i:04}");
        let aggregate: AggregateId = format!("release.{id}").parse().unwrap();
        let request = ReleaseRequested {
            release: id.parse().unwrap(),
            requested_by: "bench".into(),
            changes: vec![change_of(inventory, i)],
        };
        let plan = railyard_plan::plan(&PlanInput {
            catalog,
            release: &request,
            inventory,
            in_flight: &[],
        })
        .unwrap_or_else(|refused| panic!("release {id} plans: {refused:?}"));
        append(
            bus,
            &aggregate,
            "bench",
            vec![Event::ReleaseRequested(request.clone())],
        )
        .await;
        let mut events = vec![Event::ReleasePlanned(ReleasePlanned { plan: plan.clone() })];
        let ends_in_flight = i + IN_FLIGHT >= releases;
        if ends_in_flight {
            in_flight.push(id.clone());
        } else {
            for step in &plan.steps {
                events.push(Event::StepStarted(StepStarted {
                    step: step.id.clone(),
                    worker: "bench".into(),
                    attempt: 1,
                }));
                events.push(Event::StepSucceeded(StepOutcome {
                    step: step.id.clone(),
                    detail: String::new(),
                }));
                if step.action == Action::Deploy {
                    let change = &request.changes[0];
                    let Some(mut running) = inventory
                        .0
                        .get(&step.env)
                        .and_then(|env| env.services.get(&change.service))
                        .cloned()
                    else {
                        continue;
                    };
                    running.version = change.version.clone();
                    running.commit = change.commit.clone();
                    events.push(Event::ServiceDeployed(ServiceDeployed {
                        env: step.env.clone(),
                        service: change.service.clone(),
                        running: Some(running),
                        databases: Default::default(),
                        release: Some(request.release.clone()),
                    }));
                }
            }
            events.push(Event::ReleaseCompleted(ReleaseCompleted::default()));
        }
        append(bus, &aggregate, "bench", events).await;
    }
    Seeded {
        live: in_flight[0].clone(),
        in_flight,
    }
}

/// One open Server-Sent Events response.
struct Sse {
    body: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: String,
}

impl Sse {
    async fn open(http: &reqwest::Client, url: &str, token: &str, after: u64) -> Sse {
        let response = http
            .get(url)
            .bearer_auth(token)
            .header("last-event-id", after.to_string())
            .send()
            .await
            .expect("the event stream answers");
        assert_eq!(response.status(), 200);
        Sse {
            body: response.bytes_stream().boxed(),
            buffer: String::new(),
        }
    }

    /// Reads frames until one whose id is at least `sequence`.
    async fn until(&mut self, sequence: u64) {
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let frame: String = self.buffer.drain(..end + 2).collect();
                let id = frame
                    .lines()
                    .find_map(|line| line.strip_prefix("id: "))
                    .and_then(|id| id.parse::<u64>().ok());
                if id.is_some_and(|id| id >= sequence) {
                    return;
                }
            }
            let chunk = tokio::time::timeout(Duration::from_secs(30), self.body.next())
                .await
                .expect("a frame arrives within 30 s")
                .expect("the stream goes on")
                .expect("the stream reads");
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

struct Stack {
    bus: Bus,
    audit: Audit,
    http: reqwest::Client,
    base: String,
    token: String,
    catalog: Catalog,
    inventory: Inventory,
    seeded: Seeded,
    preview_body: String,
    /// The audit's clock: the preview scenario moves it on by a refill of the preview limit
    /// before each preview.
    clock: ManualClock,
}

/// Runs `once` until `seconds` have passed (at least 5 times); its samples.
async fn for_seconds<F, Fut>(seconds: u64, mut once: F) -> Vec<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Duration>,
{
    let started = Instant::now();
    let mut samples = Vec::new();
    while started.elapsed() < Duration::from_secs(seconds) || samples.len() < 5 {
        samples.push(once().await);
    }
    samples
}

async fn raw_delivery(stack: &Stack, seconds: u64) -> Vec<Duration> {
    let from = stack.bus.stream_last_sequence().await.unwrap() + 1;
    let mut consumer = stack.bus.replay(from).await.expect("a replay consumer");
    let aggregate: AggregateId = "release.raw-delivery".parse().unwrap();
    let started = Instant::now();
    let mut samples = Vec::new();
    while started.elapsed() < Duration::from_secs(seconds) || samples.len() < 5 {
        let sent = Instant::now();
        let sequence = append(
            &stack.bus,
            &aggregate,
            "bench",
            vec![Event::StepStarted(StepStarted {
                step: "staging:deploy:raw".into(),
                worker: "bench".into(),
                attempt: 1,
            })],
        )
        .await;
        loop {
            let delivery = consumer.next().await.unwrap().expect("a delivery");
            if delivery.stream_sequence >= sequence {
                break;
            }
        }
        samples.push(sent.elapsed());
    }
    samples
}

/// Per sample: ack, commit, SSE frame, status answered.
async fn live(stack: &Stack, seconds: u64) -> Vec<[Duration; 4]> {
    let id = &stack.seeded.live;
    let aggregate: AggregateId = format!("release.{id}").parse().unwrap();
    let head = stack.bus.stream_last_sequence().await.unwrap();
    let url = format!("{}/v1/releases/{id}/events", stack.base);
    let mut sse = Sse::open(&stack.http, &url, &stack.token, head).await;
    let mut committed = stack.audit.reader().store().watch_checkpoint();
    let mut held = false;
    let started = Instant::now();
    let mut samples = Vec::new();
    while started.elapsed() < Duration::from_secs(seconds) || samples.len() < 5 {
        held = !held;
        let event = if held {
            Event::ReleaseHeld(ReleaseHeld {
                reason: "bench".into(),
                step: None,
                owner: None,
                frozen: None,
            })
        } else {
            Event::ReleaseResumed(Reasoned {
                reason: "bench".into(),
            })
        };
        let want = if held { "held" } else { "planned" };
        let sent = Instant::now();
        let acked = async {
            let sequence = append(&stack.bus, &aggregate, "bench", vec![event]).await;
            (sequence, sent.elapsed())
        };
        // Only this scenario appends while it runs: the append gets the next sequence.
        let expected = stack.bus.stream_last_sequence().await.unwrap() + 1;
        let commit = async {
            committed
                .wait_for(|c| *c >= expected)
                .await
                .expect("the store stays open");
            sent.elapsed()
        };
        let frame = async {
            sse.until(expected).await;
            sent.elapsed()
        };
        let ((sequence, ack), commit, frame) = tokio::join!(acked, commit, frame);
        assert_eq!(sequence, expected, "nothing else appends during the bench");
        let status: serde_json::Value = stack
            .http
            .get(format!("{}/v1/releases/{id}", stack.base))
            .bearer_auth(&stack.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let shown = sent.elapsed();
        assert_eq!(status["status"], want, "the status after the frame");
        samples.push([ack, commit, frame, shown]);
    }
    samples
}

async fn whoami(stack: &Stack, seconds: u64) -> Vec<Duration> {
    for_seconds(seconds, || async {
        let started = Instant::now();
        let answer = stack
            .http
            .get(format!("{}/v1/whoami", stack.base))
            .bearer_auth(&stack.token)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
        answer.bytes().await.unwrap();
        started.elapsed()
    })
    .await
}

async fn plan_only(stack: &Stack, seconds: u64) -> Vec<Duration> {
    let file = ReleaseFile::from_toml(&stack.preview_body).unwrap();
    let request = ReleaseRequested {
        release: file.id.clone(),
        requested_by: "bench".into(),
        changes: file.changes.clone(),
    };
    for_seconds(seconds, || async {
        let started = Instant::now();
        let planned = railyard_plan::plan(&PlanInput {
            catalog: &stack.catalog,
            release: &request,
            inventory: &stack.inventory,
            in_flight: &[],
        });
        std::hint::black_box(planned).ok();
        started.elapsed()
    })
    .await
}

async fn preview(stack: &Stack, seconds: u64) -> Vec<Duration> {
    for_seconds(seconds, || async {
        // The token's next preview is due: the cost is measured, not the rate limit.
        stack.clock.advance(railyard_audit::PREVIEW_REFILL);
        let started = Instant::now();
        let answer = stack
            .http
            .post(format!("{}/v1/plan/preview", stack.base))
            .bearer_auth(&stack.token)
            .header("content-type", "application/toml")
            .body(stack.preview_body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
        let body: serde_json::Value = answer.json().await.unwrap();
        assert_eq!(
            body["against"]["in_flight"].as_array().map(Vec::len),
            Some(stack.seeded.in_flight.len()),
            "{body}"
        );
        started.elapsed()
    })
    .await
}

async fn estate(stack: &Stack, seconds: u64) -> Vec<Duration> {
    for_seconds(seconds, || async {
        let started = Instant::now();
        let answer = stack
            .http
            .get(format!("{}/v1/estate", stack.base))
            .bearer_auth(&stack.token)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
        answer.bytes().await.unwrap();
        started.elapsed()
    })
    .await
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Scenario {
    RawDelivery,
    Live,
    Whoami,
    PlanOnly,
    Preview,
    Estate,
}

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let releases = env_number("RAILYARD_BENCH_RELEASES", 1000) as usize;
    let rounds = env_number("RAILYARD_BENCH_ROUNDS", 3);
    let seconds = env_number("RAILYARD_BENCH_SECONDS", 2);
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    println!(
        "console bench ({profile} build): {releases} releases in history, {rounds} rounds, >= {seconds} s per scenario"
    );
    let server = NatsServer::start().await?;
    let bus = Bus::connect(
        &server.url(),
        BusConfig {
            request_timeout: Duration::from_secs(5),
            append_timeout: Duration::from_secs(15),
            ..BusConfig::default()
        },
    )
    .await?;
    bus.ensure_topology().await?;
    let catalog = Catalog::from_toml(&example("railyard.toml"))?;
    let inventory = Inventory::from_json(&example("inventory.json"))?;
    let dir = tempfile::tempdir()?;
    let (token, entry) = generate_token("bench", BTreeSet::from([Role::Operator]), Vec::new());
    let mut config = AuditConfig::new(dir.path().join("audit"), Tokens::from_entries(vec![entry])?);
    let clock = ManualClock::new(chrono::Utc::now());
    config.clock = clock.shared();
    let shutdown = CancellationToken::new();
    let audit = Audit::open(config, bus.clone(), shutdown.clone()).await?;
    let follower = {
        let audit = audit.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move { audit.follow(&stop).await })
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let app = router(audit.clone()).merge(console_routes(audit.clone(), Some(catalog.clone())));
    let serving = {
        let stop = shutdown.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
        })
    };

    let seeding = Instant::now();
    let seeded = seed(&bus, &catalog, &inventory, releases).await;
    let last = bus.stream_last_sequence().await?;
    let mut committed = audit.reader().store().watch_checkpoint();
    committed.wait_for(|c| *c >= last).await?;
    println!(
        "seeded {} records ({last} appends) in {:.1} s",
        audit.reader().head().await?.n,
        seeding.elapsed().as_secs_f64()
    );

    let stack = Stack {
        bus,
        audit,
        http: reqwest::Client::new(),
        base,
        token,
        catalog,
        inventory,
        seeded,
        preview_body: example("release-pricing-6.toml"),
        clock,
    };
    let mut order = [
        Scenario::RawDelivery,
        Scenario::Live,
        Scenario::Whoami,
        Scenario::PlanOnly,
        Scenario::Preview,
        Scenario::Estate,
    ];
    let mut shuffle = Shuffle::new();
    let mut p50s: std::collections::BTreeMap<&str, Vec<Duration>> = Default::default();
    for round in 1..=rounds {
        shuffle.shuffle(&mut order);
        println!("round {round}: {order:?}");
        for scenario in order {
            match scenario {
                Scenario::Live => {
                    let samples = live(&stack, seconds).await;
                    let names = ["live ack", "live commit", "live sse", "live status"];
                    for (i, name) in names.into_iter().enumerate() {
                        let mut column: Vec<Duration> = samples.iter().map(|s| s[i]).collect();
                        let (p50, p99) = summary(&mut column);
                        println!(
                            "  {name:<14} n={:<5} p50 {} ms  p99 {} ms",
                            column.len(),
                            ms(p50),
                            ms(p99)
                        );
                        p50s.entry(name).or_default().push(p50);
                    }
                }
                other => {
                    let (name, mut samples) = match other {
                        Scenario::RawDelivery => {
                            ("raw-delivery", raw_delivery(&stack, seconds).await)
                        }
                        Scenario::Whoami => ("whoami", whoami(&stack, seconds).await),
                        Scenario::PlanOnly => ("plan-only", plan_only(&stack, seconds).await),
                        Scenario::Preview => ("preview", preview(&stack, seconds).await),
                        Scenario::Estate => ("estate", estate(&stack, seconds).await),
                        Scenario::Live => unreachable!("handled above"),
                    };
                    let (p50, p99) = summary(&mut samples);
                    println!(
                        "  {name:<14} n={:<5} p50 {} ms  p99 {} ms",
                        samples.len(),
                        ms(p50),
                        ms(p99)
                    );
                    p50s.entry(name).or_default().push(p50);
                }
            }
        }
    }
    println!("p50 over the rounds (min / median / max):");
    let raw = p50s.get("raw-delivery").cloned().unwrap_or_default();
    for (name, mut values) in p50s {
        values.sort();
        let median = percentile(&values, 0.5);
        let ratio = if raw.is_empty()
            || name.starts_with("plan")
            || name == "preview"
            || name == "estate"
            || name == "whoami"
        {
            String::new()
        } else {
            let mut raw = raw.clone();
            raw.sort();
            format!(
                "  ({:.1}x raw-delivery)",
                median.as_secs_f64() / percentile(&raw, 0.5).as_secs_f64()
            )
        };
        println!(
            "  {name:<14} {} / {} / {} ms{ratio}",
            ms(values[0]),
            ms(median),
            ms(values[values.len() - 1])
        );
    }
    shutdown.cancel();
    follower.await??;
    serving.await??;
    Ok(())
}

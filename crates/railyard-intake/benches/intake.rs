//! Intake throughput and latency (`cargo bench -p railyard-intake --bench intake`), all against
//! one nats-server in the same run. Distinct `testsuiterun.finished` CDEvents (each naming one
//! of 16 services and a version, so each is schema-validated, de-duplicated and recorded as one
//! signal) go through four scenarios, in a random order in every round:
//!
//! - `raw`: raw JetStream publish of the same payload bytes, pipelined (at most 4,096 acks
//!   outstanding), no headers, no checks, for at least `RAILYARD_BENCH_BASELINE_SECONDS` (2);
//! - `nats`: the NATS intake (`railyard.intake.cdevents` request/reply) from a load generator in
//!   a separate process (this binary run again, with its own NATS connection), 64 requests in
//!   flight;
//! - `http`: `POST /v1/cdevents` from the same load generator, 64 requests in flight;
//! - `http-rate`: the same load generator open-loop at a fixed 1,000 requests/s; each latency
//!   is measured from the request's intended send time, so a stall delays every request behind
//!   it in the numbers too (no coordinated omission).
//!
//! Environment: `RAILYARD_BENCH_ROUNDS` (3), `RAILYARD_BENCH_SECONDS` (3, for `nats` and
//! `http`), `RAILYARD_BENCH_BASELINE_SECONDS` (2), `RAILYARD_BENCH_RATE` (1000 requests/s),
//! `RAILYARD_BENCH_RATE_SECONDS` (5), `RAILYARD_BENCH_CONCURRENCY` (64), `RAILYARD_BENCH_SEED`
//! (the scenario order; printed), `RAILYARD_BENCH_SCENARIOS` (all; e.g. `nats,raw` to profile
//! one path).
//!
//! Run without `--bench` (`cargo test -p railyard-intake --bench intake`), it is a smoke test:
//! the defaults become 1 round of 1 s per scenario (the raw baseline still 2 s).

use std::future::IntoFuture;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt as _, StreamExt};
use railyard_bus::{Bus, BusConfig};
use railyard_core::Catalog;
use railyard_http::{Role, Tokens, generate_token};
use railyard_intake::{Intake, IntakeConfig};
use railyard_testkit::NatsServer;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

const SERVICES: usize = 16;
/// Set in the environment of the load generator process.
const LOADGEN_ENV: &str = "RAILYARD_BENCH_LOADGEN";

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn catalog() -> anyhow::Result<Catalog> {
    let mut text = String::from("[[environments]]\nname = \"staging\"\n");
    for i in 0..SERVICES {
        text.push_str(&format!(
            "[services.svc-{i}]\nrequired_suites = [\"unit\"]\ndeploy = {{ kind = \"simulated\", duration = \"1s\" }}\n"
        ));
    }
    Ok(Catalog::from_toml(&text)?)
}

/// Event `i` of a phase (ids never repeat across phases and rounds).
fn payload(phase: &str, i: usize) -> Vec<u8> {
    format!(
        r#"{{"context":{{"specversion":"0.5.1","id":"{phase}-{i}","source":"/bench","type":"dev.cdevents.testsuiterun.finished.0.3.0","timestamp":"2026-11-25T10:00:00Z"}},"subject":{{"id":"run-{phase}-{i}","source":"/bench","content":{{"outcome":"success","environment":{{"id":"ci"}},"testSuite":{{"id":"unit"}}}}}},"customData":{{"railyard":{{"service":"svc-{}","version":"1.0.{}"}}}}}}"#,
        i % SERVICES,
        i / SERVICES
    )
    .into_bytes()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A small deterministic generator for the scenario order (xorshift64*).
struct Shuffle(u64);

impl Shuffle {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
    }
}

/// Raw pipelined JetStream publish for at least `seconds`: messages acked per second.
async fn raw_publish(server: &NatsServer, seconds: usize) -> anyhow::Result<f64> {
    let client = async_nats::connect(server.url()).await?;
    let js = async_nats::jetstream::new(client);
    let bodies: Vec<bytes::Bytes> = (0..1024).map(|i| payload("raw", i).into()).collect();
    let subjects: Vec<String> = (0..SERVICES)
        .map(|i| format!("railyard.events.signal.raw-{i}"))
        .collect();
    let minimum = Duration::from_secs(seconds as u64);
    let start = Instant::now();
    let mut acks = FuturesUnordered::new();
    let mut acked = 0usize;
    let mut i = 0usize;
    while start.elapsed() < minimum {
        let subject = subjects[i % SERVICES].clone();
        acks.push(
            js.publish(subject, bodies[i % bodies.len()].clone())
                .await?
                .into_future(),
        );
        i += 1;
        while acks.len() >= 4096 {
            acks.next().await.context("ack")??;
            acked += 1;
        }
    }
    while let Some(ack) = acks.next().await {
        ack?;
        acked += 1;
    }
    Ok(acked as f64 / start.elapsed().as_secs_f64())
}

/// What the load generator was asked to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Load {
    /// `concurrency` requests in flight, each sent when the previous one of its worker ended.
    Closed { concurrency: usize },
    /// One request every `1 / rate` s, whatever the answers do.
    Open { rate: usize },
}

/// Which door of intake the load generator knocks on.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Door {
    /// `POST /v1/cdevents` at `url`, with a bearer `token`.
    Http { url: String, token: String },
    /// Request/reply on `railyard.intake.cdevents` through the nats-server at `url`.
    Nats { url: String },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct LoadJob {
    door: Door,
    phase: String,
    seconds: usize,
    load: Load,
}

/// What the load generator measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LoadReport {
    requests: usize,
    errors: usize,
    first_error: Option<String>,
    elapsed_s: f64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    max_ms: f64,
    /// Sends that left more than 1 ms after their intended time (open loop only).
    late_sends: usize,
}

/// Runs `job` in a separate process (this binary, again) and reads its report.
/// A closed-loop scenario (`concurrency` requests in flight for `seconds`) through `door`,
/// from the load generator in its own process; any failed request fails the bench.
async fn closed_load(
    door: &Door,
    name: &str,
    round: usize,
    seconds: usize,
    concurrency: usize,
) -> anyhow::Result<LoadReport> {
    let report = load_in_child(&LoadJob {
        door: door.clone(),
        phase: format!("{name}-{round}"),
        seconds,
        load: Load::Closed { concurrency },
    })
    .await?;
    anyhow::ensure!(report.errors == 0, "{name} errors: {report:?}");
    Ok(report)
}

async fn load_in_child(job: &LoadJob) -> anyhow::Result<LoadReport> {
    let exe = std::env::current_exe()?;
    let output = tokio::process::Command::new(exe)
        .env(LOADGEN_ENV, serde_json::to_string(job)?)
        .kill_on_drop(true)
        .output()
        .await?;
    anyhow::ensure!(
        output.status.success(),
        "the load generator failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout)?;
    let line = text
        .lines()
        .last()
        .context("the load generator printed nothing")?;
    Ok(serde_json::from_str(line)?)
}

/// Sends one event through a door and checks that intake accepted it.
type Sender = Arc<dyn Fn(Vec<u8>) -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// Connects to `door` (inside the load generator's runtime).
async fn sender(door: &Door) -> anyhow::Result<Sender> {
    Ok(match door.clone() {
        Door::Http { url, token } => {
            let http = reqwest::Client::builder()
                .pool_max_idle_per_host(1024)
                .tcp_nodelay(true)
                .build()?;
            Arc::new(move |body: Vec<u8>| {
                let (http, url, token) = (http.clone(), url.clone(), token.clone());
                async move {
                    let response = http
                        .post(&url)
                        .bearer_auth(&token)
                        .header("content-type", "application/json")
                        .body(body)
                        .send()
                        .await
                        .map_err(|error| format!("{error}"))?;
                    let status = response.status();
                    let text = response.text().await.map_err(|error| format!("{error}"))?;
                    if status != 202 || !text.contains("\"accepted\"") {
                        return Err(format!("{status}: {text}"));
                    }
                    Ok(())
                }
                .boxed()
            })
        }
        Door::Nats { url } => {
            let bus = Bus::connect(&url, BusConfig::default()).await?;
            Arc::new(move |body: Vec<u8>| {
                let bus = bus.clone();
                async move {
                    let reply = bus
                        .request("railyard.intake.cdevents", &[], body.into())
                        .await
                        .map_err(|error| format!("{error}"))?;
                    let answer: serde_json::Value =
                        serde_json::from_slice(&reply).map_err(|error| format!("{error}"))?;
                    if answer["outcome"] != "accepted" {
                        return Err(format!("not accepted: {answer}"));
                    }
                    Ok(())
                }
                .boxed()
            })
        }
    })
}

/// The load generator's side: runs the job, prints its report as one JSON line.
fn loadgen(job: &str) -> anyhow::Result<()> {
    let job: LoadJob = serde_json::from_str(job)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let send = runtime.block_on(sender(&job.door))?;
    // Warm the connection pool up (these events are accepted like the others).
    runtime.block_on(async {
        let warm = (0..32).map(|i| send(payload(&format!("{}-warm", job.phase), i)));
        futures::future::join_all(warm).await;
    });
    let seconds = Duration::from_secs(job.seconds as u64);
    let (outcomes, elapsed, late_sends) = match job.load {
        Load::Closed { concurrency } => runtime.block_on(async {
            let next = Arc::new(AtomicUsize::new(0));
            let start = Instant::now();
            let deadline = start + seconds;
            let workers: Vec<_> = (0..concurrency)
                .map(|_| {
                    let (next, send, phase) = (next.clone(), send.clone(), job.phase.clone());
                    tokio::spawn(async move {
                        let mut outcomes = Vec::new();
                        while Instant::now() < deadline {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            let sent = Instant::now();
                            let result = send(payload(&phase, i)).await;
                            outcomes.push(result.map(|()| sent.elapsed()));
                        }
                        outcomes
                    })
                })
                .collect();
            let mut outcomes = Vec::new();
            for worker in workers {
                outcomes.extend(worker.await.unwrap_or_default());
            }
            (outcomes, start.elapsed(), 0)
        }),
        Load::Open { rate } => {
            let interval = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
            let n = rate * job.seconds;
            let handle = runtime.handle().clone();
            let mut tasks = Vec::with_capacity(n);
            let mut late = 0;
            let start = Instant::now();
            // Paced by this thread (std sleep is finer than tokio's 1 ms timer); each request
            // runs on the runtime and is timed from when it should have been sent.
            for i in 0..n {
                let intended = start + interval * i as u32;
                let now = Instant::now();
                if intended > now {
                    std::thread::sleep(intended - now);
                } else if now - intended > Duration::from_millis(1) {
                    late += 1;
                }
                let request = send(payload(&job.phase, i));
                tasks.push(handle.spawn(async move { request.await.map(|()| intended.elapsed()) }));
            }
            let outcomes = runtime.block_on(async {
                let mut outcomes = Vec::with_capacity(tasks.len());
                for task in tasks {
                    outcomes.push(task.await.unwrap_or_else(|error| Err(error.to_string())));
                }
                outcomes
            });
            (outcomes, start.elapsed(), late)
        }
    };
    let mut latencies = Vec::with_capacity(outcomes.len());
    let mut errors = 0;
    let mut first_error = None;
    for outcome in outcomes {
        match outcome {
            Ok(latency) => latencies.push(latency),
            Err(error) => {
                errors += 1;
                first_error.get_or_insert(error);
            }
        }
    }
    latencies.sort();
    let report = LoadReport {
        requests: latencies.len(),
        errors,
        first_error,
        elapsed_s: elapsed.as_secs_f64(),
        p50_ms: ms(percentile(&latencies, 0.5)),
        p90_ms: ms(percentile(&latencies, 0.9)),
        p99_ms: ms(percentile(&latencies, 0.99)),
        p999_ms: ms(percentile(&latencies, 0.999)),
        max_ms: ms(latencies.last().copied().unwrap_or_default()),
        late_sends,
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    Raw,
    Nats,
    Http,
    HttpRate,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Raw => "raw",
            Scenario::Nats => "nats",
            Scenario::Http => "http",
            Scenario::HttpRate => "http-rate",
        }
    }
}

/// One round's results.
#[derive(Debug, Default)]
struct Round {
    raw: f64,
    nats: f64,
    /// The `nats` scenario's report (closed loop: latencies under saturation).
    nats_latency: Option<LoadReport>,
    http: f64,
    rate: Option<LoadReport>,
    load: String,
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// min / median / max of `values`.
fn spread(mut values: Vec<f64>) -> (f64, f64, f64) {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return (0.0, 0.0, 0.0);
    }
    let median = if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    };
    (values[0], median, values[n - 1])
}

fn main() -> anyhow::Result<()> {
    if let Ok(job) = std::env::var(LOADGEN_ENV) {
        return loadgen(&job);
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(bench())
}

async fn bench() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; `cargo test` runs this binary as a short smoke test.
    let full = std::env::args().any(|arg| arg == "--bench");
    let (rounds, seconds, rate_seconds) = if full { (3, 3, 5) } else { (1, 1, 1) };
    let rounds = env("RAILYARD_BENCH_ROUNDS", rounds).max(1);
    let seconds = env("RAILYARD_BENCH_SECONDS", seconds).max(1);
    let baseline_seconds = env("RAILYARD_BENCH_BASELINE_SECONDS", 2).max(2);
    let rate = env("RAILYARD_BENCH_RATE", 1000);
    let rate_seconds = env("RAILYARD_BENCH_RATE_SECONDS", rate_seconds).max(1);
    let concurrency = env("RAILYARD_BENCH_CONCURRENCY", 64);
    let seed = std::env::var("RAILYARD_BENCH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        })
        .max(1);
    let server = NatsServer::start().await?;
    let bus = Bus::connect(&server.url(), BusConfig::default()).await?;
    bus.ensure_topology().await?;
    let (token, entry) = generate_token("bench", [Role::Publisher].into(), vec![]);
    let intake = Intake::new(
        IntakeConfig::new(catalog()?, Tokens::from_entries(vec![entry])?),
        bus.clone(),
    );
    let shutdown = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/v1/cdevents", listener.local_addr()?);
    let app = railyard_intake::router(intake.clone());
    tokio::spawn(railyard_http::serve(
        listener,
        app,
        shutdown.clone().cancelled_owned(),
    ));
    tokio::spawn(railyard_intake::serve_nats(intake, shutdown.clone()));
    // Warm-up: the responder is up once it answers, and every service's signals are loaded.
    let mut ready = false;
    for i in 0..200 {
        let reply = bus
            .request("railyard.intake.cdevents", &[], payload("warm", i).into())
            .await;
        if reply.is_ok() {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    anyhow::ensure!(ready, "the nats intake did not answer");
    let nats_door = Door::Nats { url: server.url() };
    let http_door = Door::Http {
        url: url.clone(),
        token: token.clone(),
    };
    let warm = load_in_child(&LoadJob {
        door: nats_door.clone(),
        phase: "warm-all".to_owned(),
        seconds: 1,
        load: Load::Closed {
            concurrency: SERVICES,
        },
    })
    .await?;
    anyhow::ensure!(warm.errors == 0, "nats warm-up errors: {warm:?}");

    println!(
        "intake bench: {rounds} rounds, seed {seed}; raw >= {baseline_seconds} s, nats and http {seconds} s at concurrency {concurrency}, http-rate {rate} req/s for {rate_seconds} s; {SERVICES} services"
    );
    let only_text = std::env::var("RAILYARD_BENCH_SCENARIOS").ok();
    let only: Option<Vec<&str>> = only_text.as_deref().map(|s| s.split(',').collect());
    let mut shuffle = Shuffle(seed);
    let mut results = Vec::new();
    for round in 1..=rounds {
        let mut order: Vec<Scenario> = [
            Scenario::Raw,
            Scenario::Nats,
            Scenario::Http,
            Scenario::HttpRate,
        ]
        .into_iter()
        .filter(|s| only.as_ref().is_none_or(|only| only.contains(&s.name())))
        .collect();
        shuffle.shuffle(&mut order);
        let names: Vec<&str> = order.iter().map(|s| s.name()).collect();
        println!(
            "round {round}: {}; load average before: {}",
            names.join(", "),
            loadavg()
        );
        let mut result = Round::default();
        let mut loads = Vec::new();
        for scenario in order {
            match scenario {
                Scenario::Raw => {
                    result.raw = raw_publish(&server, baseline_seconds).await?;
                    println!(
                        "  raw jetstream publish (pipelined): {:>9.0} msgs/s",
                        result.raw
                    );
                }
                Scenario::Nats => {
                    let report =
                        closed_load(&nats_door, "nats", round, seconds, concurrency).await?;
                    result.nats = report.requests as f64 / report.elapsed_s;
                    println!(
                        "  nats intake (request/reply):       {:>9.0} events/s (p50 {:.2} ms, p99 {:.2} ms)",
                        result.nats, report.p50_ms, report.p99_ms
                    );
                    result.nats_latency = Some(report);
                }
                Scenario::Http => {
                    let report =
                        closed_load(&http_door, "http", round, seconds, concurrency).await?;
                    result.http = report.requests as f64 / report.elapsed_s;
                    println!(
                        "  http intake (POST /v1/cdevents):   {:>9.0} events/s (p50 {:.2} ms, p99 {:.2} ms)",
                        result.http, report.p50_ms, report.p99_ms
                    );
                }
                Scenario::HttpRate => {
                    let report = load_in_child(&LoadJob {
                        door: http_door.clone(),
                        phase: format!("rate-{round}"),
                        seconds: rate_seconds,
                        load: Load::Open { rate },
                    })
                    .await?;
                    anyhow::ensure!(report.errors == 0, "http errors: {report:?}");
                    println!(
                        "  http at {rate} req/s, open loop:   p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms ({} requests, {} sent > 1 ms late)",
                        report.p50_ms,
                        report.p90_ms,
                        report.p99_ms,
                        report.p999_ms,
                        report.max_ms,
                        report.requests,
                        report.late_sends
                    );
                    result.rate = Some(report);
                }
            }
            loads.push(loadavg());
        }
        result.load = loads.join(" | ");
        println!(
            "  nats / raw {:.1} %, http / raw {:.1} %; load average after each: {}",
            100.0 * result.nats / result.raw,
            100.0 * result.http / result.raw,
            result.load
        );
        results.push(result);
    }
    let line = |name: &str, values: Vec<f64>, unit: &str| {
        let (min, median, max) = spread(values);
        let digits = if unit == "ms" { 2 } else { 1 };
        println!("  {name:<28} {min:>9.digits$} {median:>9.digits$} {max:>9.digits$}  {unit}");
    };
    println!("summary over {rounds} rounds:          min    median       max");
    line(
        "raw publish",
        results.iter().map(|r| r.raw).collect(),
        "msgs/s",
    );
    line(
        "nats intake",
        results.iter().map(|r| r.nats).collect(),
        "events/s",
    );
    line(
        "http intake",
        results.iter().map(|r| r.http).collect(),
        "events/s",
    );
    line(
        "nats / raw (same round)",
        results.iter().map(|r| 100.0 * r.nats / r.raw).collect(),
        "%",
    );
    line(
        "http / raw (same round)",
        results.iter().map(|r| 100.0 * r.http / r.raw).collect(),
        "%",
    );
    let nats: Vec<&LoadReport> = results
        .iter()
        .filter_map(|r| r.nats_latency.as_ref())
        .collect();
    line(
        &format!("nats ({concurrency} in flight) p50"),
        nats.iter().map(|r| r.p50_ms).collect(),
        "ms",
    );
    line(
        &format!("nats ({concurrency} in flight) p99"),
        nats.iter().map(|r| r.p99_ms).collect(),
        "ms",
    );
    let rates: Vec<&LoadReport> = results.iter().filter_map(|r| r.rate.as_ref()).collect();
    line(
        &format!("http @{rate}/s p50"),
        rates.iter().map(|r| r.p50_ms).collect(),
        "ms",
    );
    line(
        &format!("http @{rate}/s p99"),
        rates.iter().map(|r| r.p99_ms).collect(),
        "ms",
    );
    line(
        &format!("http @{rate}/s max"),
        rates.iter().map(|r| r.max_ms).collect(),
        "ms",
    );
    shutdown.cancel();
    Ok(())
}

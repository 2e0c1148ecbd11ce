//! Intake throughput and latency (`cargo bench -p railyard-intake --bench intake`): the same
//! `testsuiterun.finished` CDEvents (each naming one of 16 services and a version, so each is
//! accepted and recorded as one signal) go through raw JetStream publish (the ceiling: no
//! validation, no dedupe, no concurrency control), the NATS intake (`railyard.intake.cdevents`
//! request/reply) and HTTP (`POST /v1/cdevents`), all against one nats-server in the same run.
//! Then HTTP latency at a fixed 1,000 requests/s. Environment: `RAILYARD_BENCH_EVENTS`
//! (default 8000), `RAILYARD_BENCH_CONCURRENCY` (64), `RAILYARD_BENCH_SECONDS` (5, for the
//! fixed-rate phase).

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use railyard_bus::{Bus, BusConfig};
use railyard_core::Catalog;
use railyard_http::{Role, Tokens, generate_token};
use railyard_intake::{Intake, IntakeConfig};
use railyard_testkit::NatsServer;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

const SERVICES: usize = 16;

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

/// `n` distinct events (ids never repeat across phases).
fn payloads(phase: &str, n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            serde_json::to_vec(&serde_json::json!({
                "context": {
                    "specversion": "0.5.1",
                    "id": format!("{phase}-{i}"),
                    "source": "/bench",
                    "type": "dev.cdevents.testsuiterun.finished.0.3.0",
                    "timestamp": "2026-11-25T10:00:00Z"
                },
                "subject": {
                    "id": format!("run-{phase}-{i}"),
                    "source": "/bench",
                    "content": { "outcome": "success", "environment": { "id": "ci" }, "testSuite": { "id": "unit" } }
                },
                "customData": { "railyard": { "service": format!("svc-{}", i % SERVICES), "version": format!("1.0.{}", i / SERVICES) } }
            }))
            .expect("json")
        })
        .collect()
}

fn rate(n: usize, elapsed: Duration) -> f64 {
    n as f64 / elapsed.as_secs_f64()
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

async fn raw_publish(server: &NatsServer, payloads: Vec<Vec<u8>>) -> anyhow::Result<f64> {
    let client = async_nats::connect(server.url()).await?;
    let js = async_nats::jetstream::new(client);
    let n = payloads.len();
    let start = Instant::now();
    let mut acks = FuturesUnordered::new();
    for (i, payload) in payloads.into_iter().enumerate() {
        let subject = format!("railyard.events.signal.raw-{}", i % SERVICES);
        acks.push(js.publish(subject, payload.into()).await?.into_future());
        // Keep at most 4096 acks outstanding (the client's own pipelining limit is similar).
        while acks.len() >= 4096 {
            acks.next().await.context("ack")??;
        }
    }
    while let Some(ack) = acks.next().await {
        ack?;
    }
    Ok(rate(n, start.elapsed()))
}

async fn nats_intake(bus: &Bus, payloads: Vec<Vec<u8>>, concurrency: usize) -> anyhow::Result<f64> {
    let n = payloads.len();
    let permits = Arc::new(Semaphore::new(concurrency));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for payload in payloads {
        let permit = permits.clone().acquire_owned().await?;
        let bus = bus.clone();
        tasks.push(tokio::spawn(async move {
            let reply = bus
                .request("railyard.intake.cdevents", &[], payload.into())
                .await?;
            drop(permit);
            let answer: serde_json::Value = serde_json::from_slice(&reply)?;
            anyhow::ensure!(answer["outcome"] == "accepted", "not accepted: {answer}");
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(rate(n, start.elapsed()))
}

async fn post(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    payload: Vec<u8>,
) -> anyhow::Result<()> {
    let response = http
        .post(url)
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(payload)
        .send()
        .await?;
    anyhow::ensure!(response.status() == 202, "status {}", response.status());
    Ok(())
}

async fn http_intake(
    url: &str,
    token: &str,
    payloads: Vec<Vec<u8>>,
    concurrency: usize,
) -> anyhow::Result<f64> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()?;
    let n = payloads.len();
    let permits = Arc::new(Semaphore::new(concurrency));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for payload in payloads {
        let permit = permits.clone().acquire_owned().await?;
        let (http, url, token) = (http.clone(), url.to_owned(), token.to_owned());
        tasks.push(tokio::spawn(async move {
            let result = post(&http, &url, &token, payload).await;
            drop(permit);
            result
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(rate(n, start.elapsed()))
}

async fn http_fixed_rate(
    url: &str,
    token: &str,
    payloads: Vec<Vec<u8>>,
) -> anyhow::Result<(Duration, Duration, Duration, usize)> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;
    let mut ticker = tokio::time::interval(Duration::from_millis(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = Vec::with_capacity(payloads.len());
    for payload in payloads {
        ticker.tick().await;
        let (http, url, token) = (http.clone(), url.to_owned(), token.to_owned());
        tasks.push(tokio::spawn(async move {
            let start = Instant::now();
            post(&http, &url, &token, payload).await?;
            anyhow::Ok(start.elapsed())
        }));
    }
    let mut latencies = Vec::with_capacity(tasks.len());
    for task in tasks {
        latencies.push(task.await??);
    }
    latencies.sort();
    let n = latencies.len();
    Ok((
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        *latencies.last().unwrap_or(&Duration::ZERO),
        n,
    ))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let events = env("RAILYARD_BENCH_EVENTS", 8000);
    let concurrency = env("RAILYARD_BENCH_CONCURRENCY", 64);
    let seconds = env("RAILYARD_BENCH_SECONDS", 5);
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
    let stop = shutdown.clone();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
    });
    tokio::spawn(railyard_intake::serve_nats(intake, shutdown.clone()));
    // Warm-up: the responder is up once it answers, and every service's signals are loaded.
    let warm = payloads("warm", SERVICES * 4);
    let mut ready = false;
    for _ in 0..200 {
        if nats_intake(&bus, warm[..1].to_vec(), 1).await.is_ok() {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    anyhow::ensure!(ready, "the nats intake did not answer");
    nats_intake(&bus, warm[1..].to_vec(), concurrency).await?;

    println!(
        "intake bench: {events} testsuiterun.finished events per phase, {SERVICES} services, concurrency {concurrency}"
    );
    let raw = raw_publish(&server, payloads("raw", events)).await?;
    println!("raw jetstream publish (pipelined):   {raw:>9.0} msgs/s");
    let nats = nats_intake(&bus, payloads("nats", events), concurrency).await?;
    println!(
        "nats intake (request/reply):         {nats:>9.0} events/s  = {:.1} % of raw",
        100.0 * nats / raw
    );
    let http = http_intake(&url, &token, payloads("http", events), concurrency).await?;
    println!(
        "http intake (POST /v1/cdevents):     {http:>9.0} events/s  = {:.1} % of raw",
        100.0 * http / raw
    );
    let (p50, p99, max, n) =
        http_fixed_rate(&url, &token, payloads("rate", seconds * 1000)).await?;
    println!(
        "http at a fixed 1000 req/s for {seconds}s:  p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({n} requests)",
        ms(p50),
        ms(p99),
        ms(max)
    );
    shutdown.cancel();
    Ok(())
}

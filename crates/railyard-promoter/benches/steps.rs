//! Promotion: issue 6's two scenarios with 4 promotion workers (one process), `simulated`
//! deploys of zero duration, no gates, no approvals, each release changing 5 services of its
//! own across staging and production (20 steps), on a nats-server the benchmark starts itself,
//! against a raw JetStream baseline measured in the same run.
//!
//! `cargo bench -p railyard-promoter --bench steps` (release build).
//! `RAILYARD_BENCH_RELEASES` (default 1,000), `RAILYARD_BENCH_RATE` (default 20 releases/s),
//! `RAILYARD_BENCH_SCENARIO` (`a`, `b` or `both`, the default).
//!
//! - (a) steady: releases are appended (requested + planned) at the rate; the latency is the
//!   first `step.started`'s timestamp minus the `release.planned` timestamp, both written by
//!   the same machine's clock.
//! - (b) burst: every release appended at once; the time until the last `release.completed`
//!   is read back.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use bytes::Bytes;
use railyard_bus::{Bus, BusConfig, Expected};
use railyard_core::event::{ReleasePlanned, ReleaseRequested};
use railyard_core::{AggregateId, Catalog, Change, Envelope, Event, Inventory, ReleaseId};
use railyard_promoter::{PromoterConfig, run};
use railyard_testkit::NatsServer;
use tokio_util::sync::CancellationToken;

const SERVICES_PER_RELEASE: usize = 5;
const WORKERS: usize = 4;

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn catalog(releases: usize) -> Catalog {
    let mut text = String::from(
        "[[environments]]\nname = \"staging\"\n\n[[environments]]\nname = \"production\"\nafter = \"staging\"\n",
    );
    for i in 0..releases * SERVICES_PER_RELEASE {
        text.push_str(&format!(
            "\n[services.svc-{i}]\ndeploy = {{ kind = \"simulated\" }}\n"
        ));
    }
    Catalog::from_toml(&text).expect("the benchmark catalog parses")
}

/// The planned releases (requested event, plan) of the run, planned with the planner core.
fn releases_of(
    catalog: &Catalog,
    count: usize,
) -> Vec<(ReleaseId, ReleaseRequested, ReleasePlanned)> {
    (0..count)
        .map(|r| {
            let id = ReleaseId::new(format!("bench-{r}")).expect("valid id");
            let changes = (0..SERVICES_PER_RELEASE)
                .map(|s| {
                    serde_json::from_value::<Change>(serde_json::json!({
                        "service": format!("svc-{}", r * SERVICES_PER_RELEASE + s),
                        "version": "2.0.0",
                    }))
                    .expect("valid change")
                })
                .collect();
            let request = ReleaseRequested {
                release: id.clone(),
                requested_by: "bench".into(),
                changes,
            };
            let plan = railyard_plan::plan(&railyard_plan::PlanInput {
                catalog,
                release: &request,
                inventory: &Inventory::default(),
                in_flight: &[],
            })
            .expect("the benchmark release plans");
            (id, request, ReleasePlanned { plan })
        })
        .collect()
}

/// Appends `release.requested` and `release.planned`, stamped now.
async fn submit(
    bus: &Bus,
    (id, request, planned): &(ReleaseId, ReleaseRequested, ReleasePlanned),
) -> anyhow::Result<()> {
    let aggregate = AggregateId::Release(id.clone());
    let requested = Envelope::new(
        aggregate.clone(),
        "bench",
        chrono::Utc::now(),
        Event::ReleaseRequested(request.clone()),
    );
    let first = bus
        .append(
            &aggregate,
            Expected::NoEvents,
            std::slice::from_ref(&requested),
        )
        .await?;
    let planned = Envelope::new(
        aggregate.clone(),
        "bench",
        chrono::Utc::now(),
        Event::ReleasePlanned(planned.clone()),
    )
    .caused_by(&requested);
    bus.append(&aggregate, Expected::Sequence(first.sequence), &[planned])
        .await?;
    Ok(())
}

struct Run {
    elapsed: Duration,
    events: usize,
}

/// Starts the workers, submits every release (all at once, or at `rate` per second), and
/// waits for the last `release.completed`.
async fn promote(
    nats: &NatsServer,
    dir: &std::path::Path,
    catalog: &Catalog,
    work: &[(ReleaseId, ReleaseRequested, ReleasePlanned)],
    rate: Option<f64>,
) -> anyhow::Result<Run> {
    let bus = Bus::connect(&nats.url(), BusConfig::default()).await?;
    bus.ensure_topology().await?;
    let stop = CancellationToken::new();
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let mut config = PromoterConfig::new(
            catalog.clone(),
            format!("bench-{w}"),
            dir.join(format!("w{w}")),
        );
        config.max_concurrent_steps = 64;
        let url = nats.url();
        let token = stop.clone();
        workers.push(tokio::spawn(async move {
            let bus = Bus::connect(&url, BusConfig::default()).await?;
            let ended = run(config, bus, token).await;
            if let Err(error) = &ended {
                eprintln!("worker bench-{w} stopped: {error}");
            }
            ended.map_err(anyhow::Error::from)
        }));
    }
    let from = bus.stream_last_sequence().await? + 1;
    let mut completions = bus.replay(from).await?;
    let started = Instant::now();
    let submitter = {
        let bus = bus.clone();
        let work = work.to_vec();
        tokio::spawn(async move {
            for (i, release) in work.iter().enumerate() {
                if let Some(rate) = rate {
                    let due = started + Duration::from_secs_f64(i as f64 / rate);
                    tokio::time::sleep_until(due.into()).await;
                }
                submit(&bus, release).await?;
            }
            anyhow::Ok(())
        })
    };
    let mut done = 0;
    let mut events = 0;
    let mut report = Instant::now();
    while done < work.len() {
        if report.elapsed() > Duration::from_secs(5) {
            eprintln!(
                "  … {:.0} s: {done} of {} releases completed, {events} release events",
                started.elapsed().as_secs_f64(),
                work.len()
            );
            report = Instant::now();
        }
        let Ok(next) = tokio::time::timeout(Duration::from_secs(30), completions.next()).await
        else {
            stalled(&bus, work).await?;
            anyhow::bail!(
                "no release event for 30 s with {done} of {} releases completed",
                work.len()
            );
        };
        let delivery = next?.ok_or_else(|| anyhow::anyhow!("the replay ended"))?;
        for envelope in &delivery.envelopes {
            if matches!(envelope.aggregate, AggregateId::Release(_)) {
                events += 1;
            }
            if matches!(envelope.event, Event::ReleaseCompleted(_)) {
                done += 1;
            }
        }
    }
    let elapsed = started.elapsed();
    submitter.await??;
    stop.cancel();
    for worker in workers {
        worker.await??;
    }
    Ok(Run { elapsed, events })
}

/// What the releases that did not complete are waiting for.
async fn stalled(
    bus: &Bus,
    work: &[(ReleaseId, ReleaseRequested, ReleasePlanned)],
) -> anyhow::Result<()> {
    eprintln!("stalled: looking at the releases that did not complete");
    let mut shown = 0;
    for (id, _, _) in work {
        let loaded = bus.load(&AggregateId::Release(id.clone())).await?;
        let Some(state) = railyard_core::ReleaseState::fold(&loaded.events)? else {
            continue;
        };
        if state.status.is_final() || shown >= 5 {
            continue;
        }
        shown += 1;
        eprintln!(
            "{id}: {} (last sequence {})",
            state.status, loaded.last_sequence
        );
        for (step, status) in &state.steps {
            if !matches!(status, railyard_core::release_state::StepStatus::Succeeded) {
                eprintln!("  {step}: {status:?}");
            }
        }
        for e in loaded.events.iter().rev().take(3) {
            eprintln!(
                "  last: {} by {} at {}",
                e.event.type_name(),
                e.actor,
                e.occurred_at
            );
        }
    }
    Ok(())
}

fn percentiles(mut values: Vec<i64>) -> String {
    values.sort_unstable();
    let at = |q: f64| values[((values.len() - 1) as f64 * q) as usize];
    format!(
        "p50 {} ms, p99 {} ms, max {} ms (n = {})",
        at(0.5),
        at(0.99),
        at(1.0),
        values.len()
    )
}

/// `release.planned` → first `step.started`, per release, from the events' timestamps.
async fn first_step_latencies(
    bus: &Bus,
    work: &[(ReleaseId, ReleaseRequested, ReleasePlanned)],
) -> anyhow::Result<Vec<i64>> {
    let mut out = Vec::new();
    for (id, _, _) in work {
        let loaded = bus.load(&AggregateId::Release(id.clone())).await?;
        let planned = loaded
            .events
            .iter()
            .find(|e| matches!(e.event, Event::ReleasePlanned(_)))
            .map(|e| e.occurred_at);
        let first = loaded
            .events
            .iter()
            .find(|e| matches!(e.event, Event::StepStarted(_)))
            .map(|e| e.occurred_at);
        if let (Some(p), Some(f)) = (planned, first) {
            out.push((f - p).num_milliseconds());
        }
    }
    Ok(out)
}

/// Where the time goes, from the events' timestamps: a step's run (started → succeeded) and
/// the hand-over to the next step (a predecessor succeeded → the step started).
async fn latencies(
    bus: &Bus,
    work: &[(ReleaseId, ReleaseRequested, ReleasePlanned)],
) -> anyhow::Result<()> {
    let mut run = Vec::new();
    let mut handover = Vec::new();
    for (id, _, _) in work {
        let loaded = bus.load(&AggregateId::Release(id.clone())).await?;
        let mut started = BTreeMap::new();
        let mut succeeded = BTreeMap::new();
        let mut plan = None;
        for e in &loaded.events {
            match &e.event {
                Event::ReleasePlanned(p) => plan = Some(p.plan.clone()),
                Event::StepStarted(s) => {
                    started.insert(s.step.clone(), e.occurred_at);
                }
                Event::StepSucceeded(o) => {
                    succeeded.insert(o.step.clone(), e.occurred_at);
                }
                _ => {}
            }
        }
        let plan = plan.expect("planned");
        for step in &plan.steps {
            let (Some(s), Some(d)) = (started.get(&step.id), succeeded.get(&step.id)) else {
                continue;
            };
            run.push((*d - *s).num_milliseconds());
            if let Some(ready) = plan
                .predecessors(&step.id)
                .filter_map(|p| succeeded.get(p))
                .max()
            {
                handover.push((*s - *ready).num_milliseconds());
            }
        }
    }
    println!("  step run (started → succeeded): {}", percentiles(run));
    println!(
        "  hand-over (last predecessor succeeded → started): {}",
        percentiles(handover)
    );
    Ok(())
}

async fn raw_publish(nats: &NatsServer, count: usize) -> anyhow::Result<Duration> {
    let client = async_nats::connect(nats.url()).await?;
    let js = jetstream::new(client);
    let payload = Bytes::from(vec![b'x'; 300]);
    let started = Instant::now();
    // Pipelined, with at most RAW_WINDOW acks outstanding: async-nats lets 5,000 publishes
    // wait for their acks and makes the next one wait for a free slot, so holding every ack
    // future until the end deadlocks past 5,000 events (what stalled earlier 300-release runs).
    let mut acks = std::collections::VecDeque::with_capacity(RAW_WINDOW);
    for i in 0..count {
        if acks.len() == RAW_WINDOW
            && let Some(ack) = acks.pop_front()
        {
            ack.await?;
        }
        acks.push_back(
            js.publish(
                format!("railyard.events.release.raw-{}", i % 1000),
                payload.clone(),
            )
            .await?,
        );
    }
    for ack in acks {
        ack.await?;
    }
    Ok(started.elapsed())
}

/// Publish acks the raw baseline leaves outstanding at most.
const RAW_WINDOW: usize = 1_000;

async fn scenario(
    name: &str,
    catalog: &Catalog,
    work: &[(ReleaseId, ReleaseRequested, ReleasePlanned)],
    rate: Option<f64>,
) -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let dir = tempfile::tempdir()?;
    let releases = work.len();
    let steps = releases * SERVICES_PER_RELEASE * 4;
    let how = match rate {
        Some(rate) => format!("submitted at {rate} releases/s"),
        None => "submitted at once".to_owned(),
    };
    let run = promote(&nats, dir.path(), catalog, work, rate).await?;
    let bus = Bus::connect(&nats.url(), BusConfig::default()).await?;
    let raw = raw_publish(&nats, run.events).await?;
    let raw_per_s = run.events as f64 / raw.as_secs_f64();
    let events_per_s = run.events as f64 / run.elapsed.as_secs_f64();
    println!(
        "({name}) {releases} releases × {SERVICES_PER_RELEASE} services × 2 environments = {steps} steps, {WORKERS} workers, {how}: all completed in {:.2} s ({:.0} steps/s, {} release events, {events_per_s:.0} events/s)",
        run.elapsed.as_secs_f64(),
        steps as f64 / run.elapsed.as_secs_f64(),
        run.events,
    );
    println!(
        "  release.planned → first step.started: {}",
        percentiles(first_step_latencies(&bus, work).await?)
    );
    latencies(&bus, work).await?;
    println!(
        "  raw JetStream publish of {} events (pipelined, no checks), same server: {:.3} s, {raw_per_s:.0} events/s; promotion records events at {:.2} % of it",
        run.events,
        raw.as_secs_f64(),
        100.0 * events_per_s / raw_per_s
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let releases = env_number("RAILYARD_BENCH_RELEASES", 1000);
    let rate = env_number("RAILYARD_BENCH_RATE", 20) as f64;
    let which = std::env::var("RAILYARD_BENCH_SCENARIO").unwrap_or_else(|_| "both".to_owned());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let catalog = catalog(releases);
    let work = releases_of(&catalog, releases);
    runtime.block_on(async {
        if which == "a" || which == "both" {
            scenario("a", &catalog, &work, Some(rate)).await?;
        }
        if which == "b" || which == "both" {
            scenario("b", &catalog, &work, None).await?;
        }
        Ok(())
    })
}

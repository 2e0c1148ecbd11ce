//! Promotion throughput: steps per second carried out by 4 promotion workers (one process)
//! with `simulated` deploys of zero duration and no gates, against a raw JetStream baseline
//! that publishes the same number of events with no decisions at all, on a nats-server the
//! benchmark starts itself.
//!
//! `cargo bench -p railyard-promoter --bench steps` (release build). `RELEASES` releases, each
//! changing 5 services of its own across staging and production (20 steps each), are planned
//! with the planner core and appended at once; the clock starts when the first
//! `release.planned` is stored and stops when the last `release.completed` is read back.

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

const RELEASES: usize = 100;
const SERVICES_PER_RELEASE: usize = 5;
const WORKERS: usize = 4;

fn catalog() -> Catalog {
    let mut text = String::from(
        "[[environments]]\nname = \"staging\"\n\n[[environments]]\nname = \"production\"\nafter = \"staging\"\n",
    );
    for i in 0..RELEASES * SERVICES_PER_RELEASE {
        text.push_str(&format!(
            "\n[services.svc-{i}]\ndeploy = {{ kind = \"simulated\" }}\n"
        ));
    }
    Catalog::from_toml(&text).expect("the benchmark catalog parses")
}

fn releases(catalog: &Catalog) -> Vec<(ReleaseId, Vec<Envelope>)> {
    (0..RELEASES)
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
            let plan = railyard_planner::plan(&railyard_planner::PlanInput {
                catalog,
                release: &request,
                inventory: &Inventory::default(),
                in_flight: &[],
            })
            .expect("the benchmark release plans");
            let aggregate = AggregateId::Release(id.clone());
            let now = chrono::Utc::now();
            let requested = Envelope::new(
                aggregate.clone(),
                "bench",
                now,
                Event::ReleaseRequested(request),
            );
            let planned = Envelope::new(
                aggregate,
                "bench",
                now,
                Event::ReleasePlanned(ReleasePlanned { plan }),
            )
            .caused_by(&requested);
            (id, vec![requested, planned])
        })
        .collect()
}

async fn promote(
    nats: &NatsServer,
    dir: &std::path::Path,
) -> anyhow::Result<(Duration, usize, usize)> {
    let bus = Bus::connect(&nats.url(), BusConfig::default()).await?;
    bus.ensure_topology().await?;
    let catalog = catalog();
    let work = releases(&catalog);
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
            run(config, bus, token).await.map_err(anyhow::Error::from)
        }));
    }
    let from = bus.stream_last_sequence().await? + 1;
    let mut completions = bus.replay(from).await?;
    let started = Instant::now();
    for (id, events) in &work {
        let aggregate = AggregateId::Release(id.clone());
        let first = bus
            .append(&aggregate, Expected::NoEvents, &events[..1])
            .await?;
        bus.append(&aggregate, Expected::Sequence(first.sequence), &events[1..])
            .await?;
    }
    let mut done = 0;
    let mut events = 0;
    while done < RELEASES {
        let delivery = tokio::time::timeout(Duration::from_secs(120), completions.next())
            .await??
            .ok_or_else(|| anyhow::anyhow!("the replay ended"))?;
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
    latencies(&bus, &work).await?;
    stop.cancel();
    for worker in workers {
        worker.await??;
    }
    let steps = RELEASES * SERVICES_PER_RELEASE * 4;
    Ok((elapsed, steps, events))
}

/// Where the time goes, from the events' timestamps: a step's run (started → succeeded) and
/// the hand-over to the next step (a predecessor succeeded → the step started).
async fn latencies(bus: &Bus, work: &[(ReleaseId, Vec<Envelope>)]) -> anyhow::Result<()> {
    let mut run = Vec::new();
    let mut handover = Vec::new();
    for (id, _) in work {
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
    for (name, mut values) in [
        ("step run (started → succeeded)", run),
        ("hand-over (predecessor succeeded → started)", handover),
    ] {
        values.sort_unstable();
        let at = |q: f64| values[((values.len() - 1) as f64 * q) as usize];
        println!(
            "{name}: p50 {} ms, p99 {} ms, max {} ms",
            at(0.5),
            at(0.99),
            at(1.0)
        );
    }
    Ok(())
}

async fn raw_publish(nats: &NatsServer, count: usize) -> anyhow::Result<Duration> {
    let client = async_nats::connect(nats.url()).await?;
    let js = jetstream::new(client);
    let payload = Bytes::from(vec![b'x'; 300]);
    let started = Instant::now();
    let mut acks = Vec::with_capacity(count);
    for i in 0..count {
        acks.push(
            js.publish(
                format!("railyard.events.release.raw-{}", i % RELEASES),
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

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let nats = NatsServer::start().await?;
        let dir = tempfile::tempdir()?;
        let (elapsed, steps, events) = promote(&nats, dir.path()).await?;
        let raw = raw_publish(&nats, events).await?;
        let steps_per_s = steps as f64 / elapsed.as_secs_f64();
        let raw_per_s = events as f64 / raw.as_secs_f64();
        let promoted_events_per_s = events as f64 / elapsed.as_secs_f64();
        println!(
            "promotion: {RELEASES} releases × {SERVICES_PER_RELEASE} services × 2 environments = {steps} steps, {WORKERS} workers: {:.2} s, {steps_per_s:.0} steps/s, {events} release events ({promoted_events_per_s:.0} events/s)",
            elapsed.as_secs_f64()
        );
        println!(
            "raw JetStream publish of {events} events (pipelined, no checks): {:.3} s, {raw_per_s:.0} events/s",
            raw.as_secs_f64()
        );
        println!(
            "ratio: promotion records events at {:.1} % of the raw publish rate",
            100.0 * promoted_events_per_s / raw_per_s
        );
        Ok(())
    })
}

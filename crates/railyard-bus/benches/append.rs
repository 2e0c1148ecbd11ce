//! Append throughput and latency: `Bus::append` with optimistic concurrency against raw
//! JetStream publishes of the same payloads, on a nats-server the benchmark starts itself.
//!
//! `cargo bench -p railyard-bus --bench append` (release build). Scenarios, each run in
//! several rounds on the same server, interleaved:
//! - raw async publish: every payload published back to back, acks awaited as they arrive
//!   (the throughput ceiling, no checks);
//! - raw publish, 64 concurrent: one task per aggregate, each publish awaits its ack;
//! - raw publish + expected sequence, 64 concurrent: the same with `Nats-Msg-Id` and
//!   `Nats-Expected-Last-Subject-Sequence`, which is what `append` sends;
//! - `Bus::append`, 64 concurrent: one task per aggregate appending with `Expected::Sequence`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::header::{NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, NATS_MESSAGE_ID};
use async_nats::jetstream::{self, message::PublishMessage};
use bytes::Bytes;
use railyard_bus::{Bus, BusConfig, Expected, event_subject};
use railyard_core::event::Reasoned;
use railyard_core::{AggregateId, Envelope, Event};
use railyard_testkit::NatsServer;

const AGGREGATES: usize = 64;
const APPENDS_PER_AGGREGATE: usize = 150;
const ROUNDS: usize = 3;

struct Sample {
    name: &'static str,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Sample {
    fn throughput(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }
}

/// One aggregate's events for one run: one event per append, fresh ids.
fn workload(run: &str) -> Vec<(AggregateId, Vec<Envelope>)> {
    (0..AGGREGATES)
        .map(|index| {
            let aggregate: AggregateId = format!("release.{run}-{index}").parse().expect("valid");
            let events = (0..APPENDS_PER_AGGREGATE)
                .map(|step| {
                    Envelope::new(
                        aggregate.clone(),
                        "bench",
                        chrono::Utc::now(),
                        Event::ReleaseCancelled(Reasoned {
                            reason: format!("step {step} of a benchmark release"),
                        }),
                    )
                })
                .collect();
            (aggregate, events)
        })
        .collect()
}

fn payload(event: &Envelope) -> Bytes {
    Bytes::from(serde_json::to_vec(&serde_json::json!({ "events": [event] })).expect("json"))
}

async fn bus_appends(bus: &Bus, run: &str) -> Sample {
    let work = workload(run);
    let started = Instant::now();
    let tasks: Vec<_> = work
        .into_iter()
        .map(|(aggregate, events)| {
            let bus = bus.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(events.len());
                let mut expected = Expected::NoEvents;
                for event in events {
                    let begin = Instant::now();
                    let appended = bus
                        .append(&aggregate, expected, std::slice::from_ref(&event))
                        .await
                        .expect("append");
                    latencies.push(begin.elapsed());
                    expected = Expected::Sequence(appended.sequence);
                }
                latencies
            })
        })
        .collect();
    collect("Bus::append, 64 concurrent", started, tasks).await
}

async fn raw_concurrent(js: &jetstream::Context, run: &str, with_checks: bool) -> Sample {
    let work = workload(run);
    let started = Instant::now();
    let tasks: Vec<_> = work
        .into_iter()
        .map(|(aggregate, events)| {
            let js = js.clone();
            tokio::spawn(async move {
                let subject = event_subject(&aggregate);
                let mut latencies = Vec::with_capacity(events.len());
                let mut last = 0u64;
                for event in events {
                    let begin = Instant::now();
                    let mut message = PublishMessage::build().payload(payload(&event));
                    if with_checks {
                        let mut headers = HeaderMap::new();
                        headers.insert(NATS_MESSAGE_ID, event.event_id.to_string().as_str());
                        headers.insert(
                            NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
                            last.to_string().as_str(),
                        );
                        message = message.headers(headers);
                    }
                    let ack = js
                        .send_publish(subject.clone(), message)
                        .await
                        .expect("publish")
                        .await
                        .expect("ack");
                    latencies.push(begin.elapsed());
                    last = ack.sequence;
                }
                latencies
            })
        })
        .collect();
    let name = if with_checks {
        "raw publish + expected seq, 64 concurrent"
    } else {
        "raw publish, 64 concurrent"
    };
    collect(name, started, tasks).await
}

async fn raw_pipelined(js: &jetstream::Context, run: &str) -> Sample {
    let work = workload(run);
    // Interleave aggregates the way concurrent writers would.
    let mut messages = Vec::with_capacity(AGGREGATES * APPENDS_PER_AGGREGATE);
    for step in 0..APPENDS_PER_AGGREGATE {
        for (aggregate, events) in &work {
            messages.push((event_subject(aggregate), payload(&events[step])));
        }
    }
    let (acks_tx, mut acks_rx) = tokio::sync::mpsc::unbounded_channel();
    let started = Instant::now();
    let publisher = {
        let js = js.clone();
        tokio::spawn(async move {
            for (subject, payload) in messages {
                let begin = Instant::now();
                let ack = js.publish(subject, payload).await.expect("publish");
                let _ = acks_tx.send((begin, ack));
            }
        })
    };
    let mut latencies = Vec::with_capacity(AGGREGATES * APPENDS_PER_AGGREGATE);
    while let Some((begin, ack)) = acks_rx.recv().await {
        ack.await.expect("ack");
        latencies.push(begin.elapsed());
    }
    publisher.await.expect("publisher");
    Sample {
        name: "raw async publish, pipelined",
        elapsed: started.elapsed(),
        latencies,
    }
}

async fn collect(
    name: &'static str,
    started: Instant,
    tasks: Vec<tokio::task::JoinHandle<Vec<Duration>>>,
) -> Sample {
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("task"));
    }
    Sample {
        name,
        elapsed: started.elapsed(),
        latencies,
    }
}

struct Summary {
    name: &'static str,
    throughput: f64,
    p50: Duration,
    p99: Duration,
}

fn summarize(samples: &[Sample]) -> Summary {
    let mut throughputs: Vec<f64> = samples.iter().map(Sample::throughput).collect();
    throughputs.sort_by(f64::total_cmp);
    let mut latencies: Vec<Duration> = samples
        .iter()
        .flat_map(|sample| sample.latencies.clone())
        .collect();
    latencies.sort_unstable();
    let at = |percent: usize| latencies[(latencies.len() * percent / 100).min(latencies.len() - 1)];
    Summary {
        name: samples[0].name,
        throughput: throughputs[throughputs.len() / 2],
        p50: at(50),
        p99: at(99),
    }
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let server = NatsServer::start().await?;
        let bus = Bus::connect(&server.url(), BusConfig::default()).await?;
        bus.ensure_topology().await?;
        let raw = async_nats::connect(server.url()).await?;
        let js = jetstream::new(raw);
        let version = Arc::new(bus.server_info().version);

        // Warm up the server, the connections and the allocator.
        raw_concurrent(&js, "warmup-raw", true).await;
        bus_appends(&bus, "warmup-bus").await;

        let mut pipelined = Vec::new();
        let mut concurrent = Vec::new();
        let mut checked = Vec::new();
        let mut appends = Vec::new();
        for round in 0..ROUNDS {
            pipelined.push(raw_pipelined(&js, &format!("pipe{round}")).await);
            concurrent.push(raw_concurrent(&js, &format!("raw{round}"), false).await);
            checked.push(raw_concurrent(&js, &format!("chk{round}"), true).await);
            appends.push(bus_appends(&bus, &format!("bus{round}")).await);
        }
        let summaries = [
            summarize(&pipelined),
            summarize(&concurrent),
            summarize(&checked),
            summarize(&appends),
        ];
        let sample_payload = payload(&workload("size")[0].1[0]).len();
        println!(
            "railyard-bus append: {AGGREGATES} aggregates x {APPENDS_PER_AGGREGATE} appends of 1 event \
             (~{sample_payload} B payload), nats-server {version}, file storage, median of {ROUNDS} rounds"
        );
        println!("{:<44} {:>10} {:>9} {:>9}", "scenario", "msgs/s", "p50 ms", "p99 ms");
        for summary in &summaries {
            println!(
                "{:<44} {:>10.0} {:>9.3} {:>9.3}",
                summary.name,
                summary.throughput,
                ms(summary.p50),
                ms(summary.p99)
            );
        }
        let [pipelined, _, checked, appends] = &summaries;
        println!(
            "Bus::append throughput = {:.1}% of raw async publish (goal >= 25%), {:.1}% of raw publish + expected seq",
            100.0 * appends.throughput / pipelined.throughput,
            100.0 * appends.throughput / checked.throughput
        );
        println!(
            "Bus::append p99 = {:.2}x raw publish + expected seq p99 at 64 concurrent (goal <= 1.5x); p50 = {:.2}x",
            ms(appends.p99) / ms(checked.p99),
            ms(appends.p50) / ms(checked.p50)
        );
        anyhow::Ok(())
    })
}

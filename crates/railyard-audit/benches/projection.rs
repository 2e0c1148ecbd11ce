//! Audit projection throughput and query latency, in one run:
//!
//! 1. replay N events (default 1,000,000; `RAILYARD_BENCH_EVENTS`) into the audit projection
//!    through `ProjectionStore::apply_many`, 256 deliveries per batch as a rebuild does;
//! 2. baseline: write the very same keys and values (records, index entries, scopes,
//!    deployments) into a fresh store through a pass-through projection, in as many batches
//!    of the same average size — sled's batched writes plus the store's checkpoint, without
//!    the audit logic (sled itself may only be imported by railyard-store);
//! 3. p50/p99 of a service + environment + time-range query (100 items) on the N-event store.
//!
//! Run with `cargo bench -p railyard-audit --bench projection`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use railyard_audit::{AuditProjection, Filter, Reader};
use railyard_core::event::{
    GateEvaluated, ReleaseCompleted, ReleaseRequested, ServiceDeployed, StepOutcome, StepStarted,
};
use railyard_core::inventory::RunningService;
use railyard_core::{AggregateId, Change, Envelope, Event};
use railyard_store::{Applied, Projection, ProjectionError, ProjectionStore, StoreConfig, Update};

const BATCH: usize = 256;
const SERVICES: u64 = 200;
const ENVS: [&str; 2] = ["staging", "production"];

fn base() -> DateTime<Utc> {
    "2026-01-01T00:00:00Z".parse().unwrap()
}

/// The `i`-th event: releases of 8 events each, cycling through services and environments.
fn event(i: u64) -> Envelope {
    let release = format!("rel-{}", i / 8);
    let service = format!("svc-{}", (i / 8) % SERVICES);
    let env = ENVS[((i / 8 / SERVICES) % 2) as usize];
    let at = base() + chrono::Duration::seconds(i as i64);
    let release_aggregate: AggregateId = format!("release.{release}").parse().unwrap();
    let change = Change {
        service: service.parse().unwrap(),
        version: format!("1.{}.0", i / 8),
        artifact: Some(format!("pkg:oci/{service}@sha256%3A{i:08x}")),
        commit: Some(format!("{i:07x}")),
        branch: Some("main".into()),
        authors: vec!["carol".into()],
        produces: Default::default(),
        consumes: Default::default(),
        provides: Default::default(),
        requires: Default::default(),
        schema: Default::default(),
        migrations: Vec::new(),
        after: Vec::new(),
    };
    let deploy = format!("{env}:deploy:{service}");
    let verify = format!("{env}:verify:{service}");
    let (aggregate, actor, event) = match i % 8 {
        0 => (
            release_aggregate,
            "carol",
            Event::ReleaseRequested(ReleaseRequested {
                release: release.parse().unwrap(),
                requested_by: "carol".into(),
                changes: vec![change],
            }),
        ),
        1 => (
            release_aggregate,
            "promoter",
            Event::StepStarted(StepStarted {
                step: deploy,
                worker: "w1".into(),
                attempt: 1,
            }),
        ),
        2 => (
            release_aggregate,
            "promoter",
            Event::StepSucceeded(StepOutcome {
                step: deploy,
                detail: String::new(),
            }),
        ),
        3 => (
            format!("inventory.{env}").parse().unwrap(),
            "promoter",
            Event::ServiceDeployed(ServiceDeployed {
                env: env.parse().unwrap(),
                service: service.parse().unwrap(),
                running: Some(RunningService::from(&change)),
                databases: Default::default(),
                release: Some(release.parse().unwrap()),
            }),
        ),
        4 => (
            release_aggregate,
            "promoter",
            Event::StepStarted(StepStarted {
                step: verify,
                worker: "w2".into(),
                attempt: 1,
            }),
        ),
        5 => (
            release_aggregate,
            "promoter",
            Event::GateEvaluated(GateEvaluated {
                step: verify,
                gate: "http#0".into(),
                passed: true,
                observed: "200".into(),
                expected: "200".into(),
            }),
        ),
        6 => (
            release_aggregate,
            "promoter",
            Event::StepSucceeded(StepOutcome {
                step: verify,
                detail: String::new(),
            }),
        ),
        _ => (
            release_aggregate,
            "promoter",
            Event::ReleaseCompleted(ReleaseCompleted {}),
        ),
    };
    Envelope::new(aggregate, actor, at, event)
}

/// Writes whatever entries it is handed: the baseline.
struct PassThrough {
    chunks: VecDeque<Vec<(Vec<u8>, Vec<u8>)>>,
}

impl Projection for PassThrough {
    fn name(&self) -> &str {
        "baseline"
    }
    fn apply(
        &mut self,
        update: &mut Update<'_>,
        _: u64,
        _: &[Envelope],
    ) -> Result<(), ProjectionError> {
        for (key, value) in self.chunks.pop_front().unwrap_or_default() {
            update.put(key, value);
        }
        Ok(())
    }
}

fn dir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("a temporary directory")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let events: u64 = std::env::var("RAILYARD_BENCH_EVENTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    let audit_dir = dir("railyard-audit-bench-");
    let audit = ProjectionStore::open(
        StoreConfig::new(audit_dir.path().join("audit")).flush_every(None),
        AuditProjection,
    )
    .await
    .expect("the audit store opens");

    // 1. The audit projection.
    let mut writes = 0usize;
    let mut batches = 0usize;
    let mut elapsed = Duration::ZERO;
    let mut sequence = 0;
    while sequence < events {
        let deliveries: Vec<(u64, Vec<Envelope>)> = (sequence
            ..(sequence + BATCH as u64).min(events))
            .map(|i| (i + 1, vec![event(i)]))
            .collect();
        sequence += deliveries.len() as u64;
        let started = Instant::now();
        let outcomes = audit
            .apply_many(deliveries)
            .await
            .expect("the batch commits");
        elapsed += started.elapsed();
        batches += 1;
        for outcome in outcomes {
            if let Ok(Applied::Committed { writes: w, .. }) = outcome {
                writes += w;
            }
        }
    }
    let flush = Instant::now();
    audit.flush().await.expect("the store flushes");
    let audit_flush = flush.elapsed();
    let audit_rate = events as f64 / elapsed.as_secs_f64();
    println!(
        "events: {events} in {batches} batches of up to {BATCH} deliveries; {writes} key writes"
    );
    println!(
        "audit projection: {:.1} s, {:.0} events/s (+ final flush {:.1} s)",
        elapsed.as_secs_f64(),
        audit_rate,
        audit_flush.as_secs_f64()
    );

    // 2. The same keys through a pass-through projection, in as many batches.
    let base_dir = dir("railyard-audit-bench-raw-");
    let per_batch = writes.div_ceil(batches).max(1);
    let mut raw_elapsed = Duration::ZERO;
    let raw_keys: usize;
    {
        let mut after: Option<Vec<u8>> = None;
        let mut pending: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut chunks = VecDeque::new();
        loop {
            let page = audit
                .scan_page(b"", after.as_ref(), 100_000)
                .await
                .expect("the audit store reads");
            let done = page.len() < 100_000;
            after = page.last().map(|(key, _)| key.clone());
            for entry in page {
                pending.push(entry);
                if pending.len() == per_batch {
                    chunks.push_back(std::mem::take(&mut pending));
                }
            }
            if done {
                break;
            }
        }
        if !pending.is_empty() {
            chunks.push_back(pending);
        }
        let count = chunks.len() as u64;
        raw_keys = chunks.iter().map(Vec::len).sum();
        let baseline = ProjectionStore::open(
            StoreConfig::new(base_dir.path().join("raw")).flush_every(None),
            PassThrough { chunks },
        )
        .await
        .expect("the baseline store opens");
        for n in 1..=count {
            let started = Instant::now();
            baseline
                .apply(n, Vec::new())
                .await
                .expect("the baseline commits");
            raw_elapsed += started.elapsed();
        }
        baseline.flush().await.expect("the baseline flushes");
    }
    let raw_rate = events as f64 / raw_elapsed.as_secs_f64();
    println!(
        "baseline, the same {raw_keys} final keys batched through the store: {:.1} s, {:.0} events/s",
        raw_elapsed.as_secs_f64(),
        raw_rate
    );
    println!("ratio audit/baseline: {:.2}", audit_rate / raw_rate);

    // 3. Query latency: service + environment + a one-hour window, first 100 items.
    let reader = Reader::new(audit);
    let mut latencies = Vec::new();
    let span_hours = (events / 3600).max(1);
    for q in 0..1000u64 {
        let service = format!("svc-{}", (q * 37) % SERVICES);
        let env = ENVS[(q % 2) as usize];
        let since = base() + chrono::Duration::hours(((q * 7919) % span_hours) as i64);
        let filter = Filter {
            service: Some(service),
            env: Some(env.into()),
            since: Some(since),
            until: Some(since + chrono::Duration::hours(1)),
            ..Filter::default()
        };
        let started = Instant::now();
        let page = reader
            .records(&filter, None, 100)
            .await
            .expect("the query runs");
        latencies.push(started.elapsed());
        std::hint::black_box(page);
    }
    latencies.sort();

    println!(
        "query service+env+1h window (limit 100), 1000 runs: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().unwrap().as_secs_f64() * 1e3
    );
}

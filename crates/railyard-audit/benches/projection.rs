//! Audit projection throughput and query latency, in one run:
//!
//! 1. replay N events (default 1,000,000; `RAILYARD_BENCH_EVENTS`) into the audit projection
//!    through `ProjectionStore::apply_many`, 256 deliveries per batch as a rebuild does;
//! 2. baseline: write the very same keys and values (records, index entries, scopes,
//!    deployments) into a fresh store through a pass-through projection, in as many batches
//!    of the same average size — sled's batched writes plus the store's checkpoint, without
//!    the audit logic (sled itself may only be imported by railyard-store);
//! 3. p50/p99 of three queries on the N-event store, `RAILYARD_BENCH_ROUNDS` rounds (default
//!    3) of `RAILYARD_BENCH_QUERIES` (default 1000) of each, the order of the kinds shuffled
//!    per round: (a) service + environment + one-hour window, (b) an actor over a day,
//!    (c) approvals in production over a day, each the first page of at most 100 records;
//!    and as the raw floor, one store range read of 100 consecutive records (no decoding),
//!    repeated for at least 2 s per round.
//!
//! Both stores open with `StoreConfig`'s default page cache
//! (`railyard_store::DEFAULT_CACHE_CAPACITY`, as the services run) unless
//! `RAILYARD_BENCH_CACHE_MB` sets another.
//!
//! Run with `cargo bench -p railyard-audit --bench projection`.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

mod common;

use common::{APPROVERS, DEVELOPERS, ENVS, SERVICES, base, event};
use railyard_audit::{AuditProjection, Filter, Reader};
use railyard_core::Envelope;
use railyard_store::{
    Applied, Entry, KeyBuf, Projection, ProjectionError, ProjectionStore, StoreConfig, Update,
};

const BATCH: usize = 256;
/// Writes whatever entries it is handed: the baseline. The bench puts the next batch in
/// `next` (read from the audit store page by page) just before each apply, so only one batch
/// is ever in memory.
struct PassThrough {
    next: Arc<Mutex<Vec<Entry>>>,
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
        let batch = std::mem::take(&mut *self.next.lock().unwrap_or_else(PoisonError::into_inner));
        for (key, value) in batch {
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

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

/// xorshift64*: the query parameters and the order of the kinds, seeded per run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    ServiceEnvHour,
    ActorDay,
    ApprovalsProductionDay,
    RawRecords,
}

impl Kind {
    const ALL: [Kind; 4] = [
        Kind::ServiceEnvHour,
        Kind::ActorDay,
        Kind::ApprovalsProductionDay,
        Kind::RawRecords,
    ];

    fn name(self) -> &'static str {
        match self {
            Kind::ServiceEnvHour => "(a) service + env + 1 h window",
            Kind::ActorDay => "(b) actor + 1 day window",
            Kind::ApprovalsProductionDay => "(c) approvals, env=production, 1 day",
            Kind::RawRecords => "raw: one range read of 100 records",
        }
    }
}

/// Runs one query of `kind` and says how many items it gave.
async fn query(reader: &Reader, kind: Kind, rng: &mut Rng, events: u64) -> usize {
    let span = events as i64;
    let window = |rng: &mut Rng, seconds: i64| {
        let since =
            base() + chrono::Duration::seconds(rng.below((span - seconds).max(1) as u64) as i64);
        (
            Some(since),
            Some(since + chrono::Duration::seconds(seconds)),
        )
    };
    let filter = match kind {
        Kind::ServiceEnvHour => {
            let (since, until) = window(rng, 3600);
            Filter {
                service: Some(format!("svc-{}", rng.below(SERVICES))),
                env: Some(ENVS[rng.below(2) as usize].into()),
                since,
                until,
                ..Filter::default()
            }
        }
        Kind::ActorDay => {
            let (since, until) = window(rng, 86_400);
            let actor = if rng.below(2) == 0 {
                format!("dev-{}", rng.below(DEVELOPERS))
            } else {
                format!("approver-{}", rng.below(APPROVERS))
            };
            Filter {
                actor: Some(actor),
                since,
                until,
                ..Filter::default()
            }
        }
        Kind::ApprovalsProductionDay => {
            let (since, until) = window(rng, 86_400);
            Filter {
                family: Some("approval".into()),
                env: Some("production".into()),
                since,
                until,
                ..Filter::default()
            }
        }
        Kind::RawRecords => {
            let prefix = KeyBuf::new().str("r").into_vec();
            let after = KeyBuf::new()
                .str("r")
                .u64(rng.below(events.saturating_sub(100)))
                .into_vec();
            let page = reader
                .store()
                .scan_page(&prefix, Some(&after), 100)
                .await
                .expect("the store reads");
            return std::hint::black_box(page).len();
        }
    };
    let page = reader
        .records(&filter, None, 100)
        .await
        .expect("the query runs");
    std::hint::black_box(page).items.len()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let events = env_u64("RAILYARD_BENCH_EVENTS", 1_000_000);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average at the start: {}", load.trim());
    let cache = std::env::var("RAILYARD_BENCH_CACHE_MB")
        .ok()
        .and_then(|mb| mb.parse::<u64>().ok())
        .map_or(railyard_store::DEFAULT_CACHE_CAPACITY, |mb| mb << 20);
    println!("sled page cache per store: {} MiB", cache >> 20);
    let config = |path: std::path::PathBuf| {
        StoreConfig::new(path)
            .flush_every(None)
            .cache_capacity(cache)
    };
    let audit_dir = dir("railyard-audit-bench-");
    let audit = ProjectionStore::open(config(audit_dir.path().join("audit")), AuditProjection)
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
    let mut raw_keys = 0usize;
    {
        // Each batch is the next `per_batch` keys of the audit store, read just before it is
        // applied (outside the timing): the same batches as reading the whole store first,
        // with only one of them in memory.
        let next = Arc::new(Mutex::new(Vec::new()));
        let baseline = ProjectionStore::open(
            config(base_dir.path().join("raw")),
            PassThrough {
                next: Arc::clone(&next),
            },
        )
        .await
        .expect("the baseline store opens");
        let mut after: Option<Vec<u8>> = None;
        for n in 1.. {
            let page = audit
                .scan_page(b"", after.as_ref(), per_batch)
                .await
                .expect("the audit store reads");
            if page.is_empty() {
                break;
            }
            let last = page.len() < per_batch;
            after = page.last().map(|(key, _)| key.clone());
            raw_keys += page.len();
            *next.lock().unwrap_or_else(PoisonError::into_inner) = page;
            let started = Instant::now();
            baseline
                .apply(n, Vec::new())
                .await
                .expect("the baseline commits");
            raw_elapsed += started.elapsed();
            if last {
                break;
            }
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

    // 3. Query latency, the kinds in a new order each round.
    let reader = Reader::new(audit);
    let rounds = env_u64("RAILYARD_BENCH_ROUNDS", 3);
    let per_round = env_u64("RAILYARD_BENCH_QUERIES", 1000);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|since| since.as_nanos() as u64)
        .unwrap_or(1)
        | 1;
    let mut rng = Rng(seed);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average before the queries: {}", load.trim());
    println!("queries: {rounds} rounds of {per_round} per kind, first page of at most 100");
    for round in 1..=rounds {
        let mut order = Kind::ALL.to_vec();
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i as u64 + 1) as usize);
        }
        for kind in order {
            let mut latencies = Vec::with_capacity(per_round as usize);
            let mut items = 0;
            let started = Instant::now();
            // The raw floor runs for at least 2 s, as a baseline should.
            let at_least = match kind {
                Kind::RawRecords => Duration::from_secs(2),
                _ => Duration::ZERO,
            };
            while (latencies.len() as u64) < per_round || started.elapsed() < at_least {
                let one = Instant::now();
                items += query(&reader, kind, &mut rng, events).await;
                latencies.push(one.elapsed());
            }
            let total = started.elapsed();
            let count = latencies.len();
            latencies.sort();
            println!(
                "round {round} {:<38} p50 {:6.2} ms  p99 {:6.2} ms  max {:6.2} ms  ({:.1} items/query, {count} queries, {:.1} s)",
                kind.name(),
                ms(percentile(&latencies, 0.5)),
                ms(percentile(&latencies, 0.99)),
                ms(*latencies.last().unwrap()),
                items as f64 / count as f64,
                total.as_secs_f64(),
            );
        }
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average at the end: {}", load.trim());
}

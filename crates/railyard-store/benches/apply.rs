//! Projection apply throughput against raw sled, in the same run: the `Ledger` test
//! projection applied through `ProjectionStore::apply` (blocking pool, read-modify-write,
//! one batch with the checkpoint) versus inserting the very same key/value bytes into a sled
//! tree directly; then a rebuild end to end through a real nats-server. Run with
//! `cargo bench -p railyard-store --bench apply`; set `RAILYARD_BENCH_DELIVERIES` to change
//! the size.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{Ledger, delivery, ledger_entries};
use railyard_core::Envelope;
use railyard_store::{ProjectionStore, StoreConfig};

struct Row {
    name: &'static str,
    deliveries: u64,
    events: u64,
    elapsed: Duration,
}

impl Row {
    fn per_second(&self) -> f64 {
        self.deliveries as f64 / self.elapsed.as_secs_f64()
    }
}

fn fresh_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("railyard-store-bench-")
        .tempdir()
        .expect("a temporary directory")
}

fn stream(deliveries: u64) -> Vec<(u64, Vec<Envelope>)> {
    (1..=deliveries)
        .map(|sequence| (sequence, delivery(sequence)))
        .collect()
}

/// The bytes `Ledger` writes per delivery, computed up front so the baselines time sled only.
fn writes(stream: &[(u64, Vec<Envelope>)]) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut count = 0;
    stream
        .iter()
        .map(|(sequence, envelopes)| {
            let entries = ledger_entries(*sequence, envelopes, count);
            count += envelopes.len() as u64;
            entries
        })
        .collect()
}

fn events(stream: &[(u64, Vec<Envelope>)]) -> u64 {
    stream
        .iter()
        .map(|(_, envelopes)| envelopes.len() as u64)
        .sum()
}

fn raw_tree(dir: &tempfile::TempDir) -> sled::Tree {
    sled::Config::new()
        .path(dir.path())
        .open()
        .and_then(|db| db.open_tree("raw"))
        .expect("sled opens")
}

/// Raw sled, one `insert` per key, no checkpoint; `flush` after every delivery when asked.
fn raw_inserts(name: &'static str, stream: &[(u64, Vec<Envelope>)], flush_each: bool) -> Row {
    let writes = writes(stream);
    let dir = fresh_dir();
    let tree = raw_tree(&dir);
    let started = Instant::now();
    for entries in &writes {
        for (key, value) in entries {
            tree.insert(key.as_slice(), value.as_slice())
                .expect("insert");
        }
        if flush_each {
            tree.flush().expect("flush");
        }
    }
    Row {
        name,
        deliveries: stream.len() as u64,
        events: events(stream),
        elapsed: started.elapsed(),
    }
}

/// Raw sled, one batch per delivery with the checkpoint key: what the store does, minus the
/// projection, the reads and the blocking pool.
fn raw_batches(name: &'static str, stream: &[(u64, Vec<Envelope>)]) -> Row {
    let writes = writes(stream);
    let dir = fresh_dir();
    let tree = raw_tree(&dir);
    let started = Instant::now();
    for ((sequence, _), entries) in stream.iter().zip(&writes) {
        let mut batch = sled::Batch::default();
        for (key, value) in entries {
            batch.insert(key.as_slice(), value.as_slice());
        }
        batch.insert(&b"\x00checkpoint"[..], &sequence.to_be_bytes()[..]);
        tree.apply_batch(batch).expect("batch");
    }
    Row {
        name,
        deliveries: stream.len() as u64,
        events: events(stream),
        elapsed: started.elapsed(),
    }
}

/// `ProjectionStore::apply` for every delivery; `flush` after every delivery when asked (the
/// price of making each delivery durable before acknowledging it).
async fn projection(name: &'static str, stream: &[(u64, Vec<Envelope>)], flush_each: bool) -> Row {
    let dir = fresh_dir();
    let store = ProjectionStore::open(StoreConfig::new(dir.path()), Ledger::new("ledger"))
        .await
        .expect("the store opens");
    let owned = stream.to_vec();
    let started = Instant::now();
    for (sequence, envelopes) in owned {
        store.apply(sequence, envelopes).await.expect("apply");
        if flush_each {
            store.flush().await.expect("flush");
        }
    }
    Row {
        name,
        deliveries: stream.len() as u64,
        events: events(stream),
        elapsed: started.elapsed(),
    }
}

/// The floor of any async store call: one `spawn_blocking` round trip doing nothing.
async fn handoff(name: &'static str, stream: &[(u64, Vec<Envelope>)]) -> Row {
    let started = Instant::now();
    for (sequence, _) in stream {
        let sequence = *sequence;
        let echoed = tokio::task::spawn_blocking(move || sequence)
            .await
            .expect("the no-op task");
        assert_eq!(echoed, sequence);
    }
    Row {
        name,
        deliveries: stream.len() as u64,
        events: events(stream),
        elapsed: started.elapsed(),
    }
}

/// `ProjectionStore::apply_many` with `chunk` deliveries per call: how a replay applies.
async fn projection_chunked(
    name: &'static str,
    stream: &[(u64, Vec<Envelope>)],
    chunk: usize,
) -> Row {
    let dir = fresh_dir();
    let store = ProjectionStore::open(StoreConfig::new(dir.path()), Ledger::new("ledger"))
        .await
        .expect("the store opens");
    let chunks: Vec<Vec<(u64, Vec<Envelope>)>> = stream.chunks(chunk).map(<[_]>::to_vec).collect();
    let started = Instant::now();
    for deliveries in chunks {
        for outcome in store.apply_many(deliveries).await.expect("apply_many") {
            outcome.expect("every delivery applies");
        }
    }
    Row {
        name,
        deliveries: stream.len() as u64,
        events: events(stream),
        elapsed: started.elapsed(),
    }
}

/// End to end through a real nats-server: `rebuild` of a projection over `appends` appends
/// (the bus's ordered replay, batches of up to 256 deliveries, one flush at the end).
async fn rebuild_over_nats(name: &'static str, appends: u64) -> anyhow::Result<Row> {
    let server = railyard_testkit::NatsServer::start().await?;
    let bus = railyard_bus::Bus::connect(&server.url(), railyard_bus::BusConfig::default()).await?;
    bus.ensure_topology().await?;
    let mut events = 0;
    for sequence in 1..=appends {
        // One aggregate per append, as the bus requires; the test stream's events otherwise.
        let mut envelopes = delivery(sequence);
        let aggregate = envelopes[0].aggregate.clone();
        for envelope in &mut envelopes {
            envelope.aggregate = aggregate.clone();
        }
        events += envelopes.len() as u64;
        bus.append(&aggregate, railyard_bus::Expected::Any, &envelopes)
            .await?;
    }
    let dir = fresh_dir();
    let store = ProjectionStore::open(StoreConfig::new(dir.path()), Ledger::new("ledger")).await?;
    let started = Instant::now();
    let report =
        railyard_store::rebuild(&bus, &store, &railyard_store::RunOptions::default()).await?;
    let elapsed = started.elapsed();
    anyhow::ensure!(
        report.committed == appends && report.events == events,
        "the rebuild applied {report:?} of {appends} appends"
    );
    Ok(Row {
        name,
        deliveries: appends,
        events,
        elapsed,
    })
}

fn print(title: &str, rows: &[Row]) {
    let baseline = rows[0].per_second();
    println!("\n{title}");
    println!(
        "{:<46} {:>10} {:>8} {:>10} {:>14} {:>12} {:>9}",
        "case", "deliveries", "events", "ms", "deliveries/s", "events/s", "vs first"
    );
    for row in rows {
        println!(
            "{:<46} {:>10} {:>8} {:>10.1} {:>14.0} {:>12.0} {:>8.2}x",
            row.name,
            row.deliveries,
            row.events,
            row.elapsed.as_secs_f64() * 1000.0,
            row.per_second(),
            row.events as f64 / row.elapsed.as_secs_f64(),
            row.per_second() / baseline,
        );
    }
}

fn main() {
    let deliveries: u64 = std::env::var("RAILYARD_BENCH_DELIVERIES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(50_000);
    let durable = (deliveries / 50).max(100);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");

    let hot = stream(deliveries);
    let warmup = stream(deliveries / 10);
    let _ = raw_inserts("warm-up", &warmup, false);
    let _ = runtime.block_on(projection("warm-up", &warmup, false));

    let rows = vec![
        raw_inserts("raw sled insert, same bytes", &hot, false),
        raw_batches("raw sled batch + checkpoint, same bytes", &hot),
        runtime.block_on(projection("ProjectionStore::apply", &hot, false)),
        runtime.block_on(projection_chunked(
            "ProjectionStore::apply_many, 256 per call",
            &hot,
            256,
        )),
        runtime.block_on(handoff("spawn_blocking round trip alone", &hot)),
    ];
    print(
        "in-memory commit (sled flushes every 500 ms in the background)",
        &rows,
    );

    let few = stream(durable);
    let rows = vec![
        raw_inserts("raw sled insert + flush per delivery", &few, true),
        runtime.block_on(projection("ProjectionStore::apply + flush", &few, true)),
    ];
    print("durable (fsync) per delivery", &rows);

    let appends = (deliveries / 5).max(100);
    match runtime.block_on(rebuild_over_nats(
        "rebuild over NATS (replay, 256/batch)",
        appends,
    )) {
        Ok(row) => print("end to end through a real nats-server", &[row]),
        Err(error) => println!("\nend to end through a real nats-server: not run: {error:#}"),
    }
}

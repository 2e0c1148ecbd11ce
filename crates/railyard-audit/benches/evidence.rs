//! What signed checkpoints cost, in one run:
//!
//! 1. project N events (default 100,000; `RAILYARD_BENCH_EVENTS`) into the audit store, 250
//!    per batch, sealing a checkpoint every 1,000 records as the service does (read and
//!    re-check the window, sign, and apply the checkpoint as the next event); report the seal
//!    against projecting the 1,000 events it seals, and the checkpoint's size;
//! 2. `verify` of the store (chain and checkpoints, no stream) against reading and decoding
//!    every record the same way (pages of 1,024);
//! 3. `export` of the store to a file, and `verify --offline` of the file against reading and
//!    parsing its lines.
//!
//! Run with `cargo bench -p railyard-audit --bench evidence`.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use railyard_audit::export::{lines, verify_export};
use railyard_audit::record::Record;
use railyard_audit::sealer::seal_locally;
use railyard_audit::{AuditKey, AuditProjection, Keys, Reader, verify_signed};
use railyard_core::event::{GateEvaluated, ReleaseRequested, StepOutcome, StepStarted};
use railyard_core::{AggregateId, Change, Envelope, Event};
use railyard_store::{KeyBuf, ProjectionStore, StoreConfig};
use tokio::io::AsyncBufReadExt;

const BATCH: u64 = 250;
const EVERY: u64 = 1000;

fn base() -> DateTime<Utc> {
    "2026-01-01T00:00:00Z".parse().unwrap()
}

/// The `i`-th event: releases of 4 events (requested, deploy started, gate, succeeded).
fn event(i: u64) -> Envelope {
    let release = format!("rel-{}", i / 4);
    let service = format!("svc-{}", (i / 4) % 200);
    let step = format!("production:deploy:{service}");
    let aggregate: AggregateId = format!("release.{release}").parse().unwrap();
    let at = base() + chrono::Duration::seconds(i as i64);
    let event = match i % 4 {
        0 => Event::ReleaseRequested(ReleaseRequested {
            release: release.parse().unwrap(),
            requested_by: "carol".into(),
            changes: vec![Change {
                service: service.parse().unwrap(),
                version: format!("1.{i}.0"),
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
            }],
        }),
        1 => Event::StepStarted(StepStarted {
            step,
            worker: "w1".into(),
            attempt: 1,
        }),
        2 => Event::GateEvaluated(GateEvaluated {
            step,
            gate: "http#0".into(),
            passed: true,
            observed: "200".into(),
            expected: "200".into(),
        }),
        _ => Event::StepSucceeded(StepOutcome {
            step,
            detail: String::new(),
        }),
    };
    Envelope::new(aggregate, "promoter", at, event)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let events: u64 = std::env::var("RAILYARD_BENCH_EVENTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000);
    let dir = tempfile::Builder::new()
        .prefix("railyard-evidence-bench-")
        .tempdir()
        .expect("a temporary directory");
    let store = ProjectionStore::open(
        StoreConfig::new(dir.path().join("audit")).flush_every(None),
        AuditProjection,
    )
    .await
    .expect("the audit store opens");
    let reader = Reader::new(store.clone());
    let key = AuditKey::generate();

    // 1. Project and seal every EVERY events.
    let (mut projecting, mut sealing) = (Duration::ZERO, Vec::new());
    let (mut sequence, mut applied, mut size) = (0u64, 0u64, 0usize);
    while applied < events {
        let take = BATCH.min(events - applied);
        let deliveries: Vec<(u64, Vec<Envelope>)> = (applied..applied + take)
            .map(|i| (sequence + 1 + (i - applied), vec![event(i)]))
            .collect();
        sequence += take;
        applied += take;
        let started = Instant::now();
        store
            .apply_many(deliveries)
            .await
            .expect("the batch commits");
        projecting += started.elapsed();
        if applied % EVERY == 0 {
            let started = Instant::now();
            let checkpoint = seal_locally(&reader, &key, base())
                .await
                .expect("the window holds")
                .expect("records to seal");
            sealing.push(started.elapsed());
            size = serde_json::to_vec(&checkpoint).unwrap().len();
            sequence += 1;
            let envelope = Envelope::new(
                AggregateId::Audit,
                "audit",
                base(),
                Event::AuditCheckpoint(checkpoint),
            );
            store
                .apply(sequence, vec![envelope])
                .await
                .expect("the checkpoint is recorded");
        }
    }
    let records = reader.head().await.unwrap().n;
    let per_thousand = projecting / (events / EVERY).max(1) as u32;
    sealing.sort();
    let seal_mean = sealing.iter().sum::<Duration>() / sealing.len().max(1) as u32;
    println!(
        "{events} events, {records} records with {} checkpoints",
        sealing.len()
    );
    println!(
        "projecting 1,000 events: {:.2} ms; sealing them: mean {:.2} ms, p99 {:.2} ms ({:.1} % of projecting); checkpoint {size} bytes ({:.1} bytes per record sealed)",
        ms(per_thousand),
        ms(seal_mean),
        ms(sealing[(sealing.len() - 1) * 99 / 100]),
        100.0 * seal_mean.as_secs_f64() / per_thousand.as_secs_f64(),
        size as f64 / EVERY as f64
    );

    // 2. verify (chain and checkpoints) against reading and decoding every record.
    let started = Instant::now();
    let prefix = KeyBuf::new().str("r").into_vec();
    let mut after: Option<Vec<u8>> = None;
    let mut decoded = 0u64;
    loop {
        let page = store
            .scan_page(&prefix, after.as_ref(), 1024)
            .await
            .unwrap();
        let Some((last, _)) = page.last() else { break };
        after = Some(last.clone());
        for (_, bytes) in &page {
            let record: Record = serde_json::from_slice(bytes).unwrap();
            decoded += record.n.min(1);
        }
    }
    let baseline = started.elapsed();
    assert_eq!(decoded, records);
    let keys = Keys::new([key.public()]);
    let started = Instant::now();
    let report = verify_signed(&reader, None, &keys, base()).await.unwrap();
    let verifying = started.elapsed();
    assert!(
        report.ok && report.seals.verified == sealing.len() as u64,
        "{report:?}"
    );
    println!(
        "verify (store, no stream): {:.0} ms = {:.1} µs per record; reading and decoding every record: {:.0} ms; ratio {:.2}",
        ms(verifying),
        verifying.as_secs_f64() * 1e6 / records as f64,
        ms(baseline),
        verifying.as_secs_f64() / baseline.as_secs_f64()
    );

    // 3. export, then verify --offline against reading and parsing the lines.
    let file = dir.path().join("export.jsonl");
    let started = Instant::now();
    let trailer = seal_locally(&reader, &key, base()).await.unwrap();
    let mut out = Vec::new();
    let mut chunks = std::pin::pin!(lines(reader.clone(), base(), records, trailer));
    while let Some(chunk) = chunks.next().await {
        out.extend(chunk.unwrap());
    }
    std::fs::write(&file, &out).unwrap();
    let exporting = started.elapsed();
    let started = Instant::now();
    let mut parsed = 0u64;
    let mut read = tokio::io::BufReader::new(tokio::fs::File::open(&file).await.unwrap()).lines();
    while let Some(line) = read.next_line().await.unwrap() {
        let _: serde_json::Value = serde_json::from_str(&line).unwrap();
        parsed += 1;
    }
    let parsing = started.elapsed();
    let started = Instant::now();
    let input = tokio::io::BufReader::new(tokio::fs::File::open(&file).await.unwrap());
    let report = verify_export(input, "export.jsonl", keys).await.unwrap();
    let offline = started.elapsed();
    assert!(report.complete, "{report:?}");
    println!(
        "export: {:.0} ms, {:.1} MB ({parsed} lines); verify --offline: {:.0} ms = {:.1} µs per record; reading and parsing the lines: {:.0} ms; ratio {:.2}",
        ms(exporting),
        out.len() as f64 / 1e6,
        ms(offline),
        offline.as_secs_f64() * 1e6 / records as f64,
        ms(parsing),
        offline.as_secs_f64() / parsing.as_secs_f64()
    );
}

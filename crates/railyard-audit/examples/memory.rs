//! The audit store's memory as its history grows: applies the audit benchmarks' synthetic
//! history to an audit store `RAILYARD_PROBE_BATCH` deliveries at a time (default 1, as the
//! live projection does when events trickle in; a replay applies 256), with the store's
//! background flush on, and prints the process's anonymous resident memory
//! (`RssAnon`) and the store's size on disk every `RAILYARD_PROBE_EVERY` events (default
//! 5,000) up to `RAILYARD_PROBE_EVENTS` (default 30,000). `RAILYARD_PROBE_CACHE_MB` sets
//! sled's page cache (default 8 MiB, so the cache's own growth stays out of the figures).
//!
//! This is how the growth behind the chaos soak's failed memory check was found and its fix
//! checked (ARCHITECTURE.md, "Chaos soak"). Linux only (`/proc/self/status`).
//!
//! Run with `cargo run --release -p railyard-audit --example memory`.

#[allow(dead_code)] // the benchmarks use more of it
#[path = "../benches/common/mod.rs"]
mod common;

use std::path::Path;
use std::time::Instant;

use railyard_audit::AuditProjection;
use railyard_core::Envelope;
use railyard_store::{ProjectionStore, StoreConfig};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// The process's anonymous resident memory, in KiB.
fn rss_anon_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("RssAnon:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap_or(0)
}

fn size_on_disk(path: &Path) -> u64 {
    std::fs::read_dir(path)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => size_on_disk(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}

fn mib(bytes: f64) -> String {
    format!("{:.1} MiB", bytes / f64::from(1 << 20))
}

#[tokio::main]
async fn main() {
    let events = env_u64("RAILYARD_PROBE_EVENTS", 30_000);
    let every = env_u64("RAILYARD_PROBE_EVERY", 5_000).max(1);
    let cache = env_u64("RAILYARD_PROBE_CACHE_MB", 8) << 20;
    let batch = env_u64("RAILYARD_PROBE_BATCH", 1).max(1);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = ProjectionStore::open(
        StoreConfig::new(dir.path().join("audit")).cache_capacity(cache),
        AuditProjection,
    )
    .await
    .expect("the audit store opens");
    println!(
        "{events} events, {batch} deliveries per apply, sled page cache {}",
        mib(cache as f64)
    );
    println!("start: RssAnon {}", mib(rss_anon_kib() as f64 * 1024.0));
    let started = Instant::now();
    let mut next = 0;
    while next < events {
        let deliveries: Vec<(u64, Vec<Envelope>)> = (next..(next + batch).min(events))
            .map(|i| (i + 1, vec![common::event(i)]))
            .collect();
        let before = next;
        next += deliveries.len() as u64;
        store
            .apply_many(deliveries)
            .await
            .expect("the batch commits");
        if next / every > before / every || next == events {
            println!(
                "{:>8} events {:>7.1} s  RssAnon {:>10}  on disk {:>10}",
                next,
                started.elapsed().as_secs_f64(),
                mib(rss_anon_kib() as f64 * 1024.0),
                mib(size_on_disk(dir.path()) as f64)
            );
        }
    }
}

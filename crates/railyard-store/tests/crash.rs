//! A real crash: a child process applies deliveries as fast as it can while another of its
//! threads aborts it (no destructor, no flush: whatever sled had not written is lost), and the
//! parent checks what survives. The invariant a projection relies on is that a write is never
//! there without its checkpoint nor a checkpoint without its writes; and a crash never looks
//! like a damaged log (the store's record of what it made durable stays below what survives).
//!
//! The child is this same test binary, run with `--exact` on this test and an environment
//! variable that tells it to play the child.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use common::{Indexed, Ledger, count_key, delivery, event_key, events_in, events_through};
use railyard_store::{Applied, KeyBuf, KeyReader, ProjectionStore, StoreConfig};

const TEST_NAME: &str = "a_crash_never_separates_writes_from_their_checkpoint";
const CHILD_DIR: &str = "RAILYARD_STORE_CRASH_DIR";
const CHILD_ABORT_AFTER: &str = "RAILYARD_STORE_CRASH_ABORT_AFTER";
const CHILD_CHUNK: &str = "RAILYARD_STORE_CRASH_CHUNK";
/// The signal `std::process::abort` raises.
const SIGABRT: i32 = 6;
/// The stream the child works through; it is aborted long before the end.
const STREAM_END: u64 = 1_000_000;

fn config(dir: &str) -> StoreConfig {
    // Flush every millisecond, so the crash lands with some deliveries durable and some not.
    StoreConfig::new(dir).flush_every(Some(Duration::from_millis(1)))
}

/// The child: continues the stream from its checkpoint, `chunk` deliveries per batch
/// (`apply` when 1, else `apply_many`); a second thread aborts the process once
/// `abort_after` more deliveries were committed, while the applying goes on.
async fn child(dir: String, abort_after: u64, chunk: u64) {
    let store = ProjectionStore::open(config(&dir), Ledger::new("ledger"))
        .await
        .expect("the child opens the store");
    let start = store.checkpoint().await.expect("a checkpoint") + 1;
    let (committed_tx, committed_rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        for _ in 0..abort_after {
            if committed_rx.recv().is_err() {
                break;
            }
        }
        std::process::abort();
    });
    for first in (start..=STREAM_END).step_by(chunk as usize) {
        let outcomes = if chunk == 1 {
            vec![store.apply(first, delivery(first)).await]
        } else {
            let deliveries = (first..first + chunk)
                .map(|sequence| (sequence, delivery(sequence)))
                .collect();
            store
                .apply_many(deliveries)
                .await
                .expect("the child applies")
        };
        for outcome in outcomes {
            assert!(matches!(outcome, Ok(Applied::Committed { .. })));
            // The receiver is gone once the abort is under way; keep applying until it lands.
            let _ = committed_tx.send(());
        }
    }
    unreachable!("the child must be aborted before the end of the stream");
}

/// Checks the invariant on the store in `dir` and returns its checkpoint.
async fn check(dir: &str) -> u64 {
    let store = ProjectionStore::open(config(dir), Ledger::new("ledger"))
        .await
        .expect("the store reopens after the crash");
    let checkpoint = store.checkpoint().await.unwrap();
    assert_eq!(
        store.cut_short(),
        None,
        "a crash loses only what no flush had recorded as durable, so the store is not cut short"
    );
    let count: u64 = store.get_json(count_key()).await.unwrap().unwrap_or(0);
    assert_eq!(
        count,
        events_through(checkpoint),
        "the event count must be exactly that of deliveries 1..={checkpoint}"
    );
    let indexed = store.scan_prefix(KeyBuf::new().str("event")).await.unwrap();
    let positions: Vec<(u64, u64)> = indexed
        .iter()
        .map(|(key, value)| {
            let mut reader = KeyReader::new(key);
            reader.str().unwrap();
            let position = (reader.u64().unwrap(), reader.u64().unwrap());
            let entry: Indexed = serde_json::from_slice(value).unwrap();
            assert_eq!(
                entry.event_id,
                delivery(position.0)[position.1 as usize].event_id
            );
            position
        })
        .collect();
    let expected: Vec<(u64, u64)> = (1..=checkpoint)
        .flat_map(|sequence| (0..events_in(sequence)).map(move |index| (sequence, index)))
        .collect();
    assert_eq!(
        positions, expected,
        "the index must hold exactly the events of deliveries 1..={checkpoint}"
    );
    assert_eq!(
        store
            .scan_prefix(KeyBuf::new().str("aggregate"))
            .await
            .unwrap()
            .len() as u64,
        count
    );
    checkpoint
}

#[tokio::test]
async fn a_crash_never_separates_writes_from_their_checkpoint() {
    if let Ok(dir) = std::env::var(CHILD_DIR) {
        let abort_after = std::env::var(CHILD_ABORT_AFTER)
            .expect("the parent says when to abort")
            .parse()
            .expect("a number");
        let chunk = std::env::var(CHILD_CHUNK)
            .expect("the parent says how many deliveries per batch")
            .parse()
            .expect("a number");
        return child(dir, abort_after, chunk).await;
    }

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().expect("a UTF-8 temp path").to_owned();
    let mut checkpoints = Vec::new();
    // Each round crashes the child after a different number of commits (single deliveries or
    // chunks of them per batch), then checks the
    // survivor; the next round continues the stream from the survivor's checkpoint, as a
    // restarted service would once the bus redelivers what was not acknowledged.
    for (abort_after, chunk) in [(300, 1), (1, 1), (2_000, 64), (50, 1), (700, 16)] {
        let child = tokio::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
            .env(CHILD_DIR, &path)
            .env(CHILD_ABORT_AFTER, abort_after.to_string())
            .env(CHILD_CHUNK, chunk.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the child starts");
        let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .expect("the child is aborted within 60 s")
            .unwrap();
        assert_eq!(
            output.status.signal(),
            Some(SIGABRT),
            "the child must die by its abort: {}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        let checkpoint = check(&path).await;
        assert!(
            checkpoints.last().is_none_or(|last| checkpoint >= *last),
            "a checkpoint that was durable stays durable: {checkpoints:?} then {checkpoint}"
        );
        checkpoints.push(checkpoint);
    }
    assert!(
        *checkpoints.last().unwrap() > 0,
        "some deliveries must have become durable across the rounds: {checkpoints:?}"
    );

    // A clean finish: the rest of a bounded stream applies, and every event counts once.
    let store = ProjectionStore::open(config(&path), Ledger::new("ledger"))
        .await
        .unwrap();
    let end = checkpoints.last().unwrap() + 100;
    for sequence in 1..=end {
        store.apply(sequence, delivery(sequence)).await.unwrap();
    }
    assert_eq!(
        store.get_json::<u64>(count_key()).await.unwrap(),
        Some(events_through(end))
    );
    assert_eq!(
        store
            .get_json::<Indexed>(event_key(end, 0))
            .await
            .unwrap()
            .map(|entry| entry.event_id),
        Some(delivery(end)[0].event_id)
    );
}

//! A store whose sled log was damaged on disk: bytes of one delivery's writes altered in a
//! copy of the directory, sled's own checksums left alone. sled stops recovering its log at
//! that message and opens without complaint, serving what came before as the whole store; the
//! store compares that with the checkpoint its last flush recorded and says the projection was
//! cut short (an error in the log, [`ProjectionStore::cut_short`]) until a reset. An undamaged
//! copy opens clean; so do stores that crashed (`crash.rs` checks that on every round).

mod common;

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use common::{Ledger, delivery};
use railyard_store::{CutShort, ProjectionStore, StoreConfig, StoreError};

fn copy_dir(from: &Path, to: &Path) {
    railyard_testkit::disk::copy_dir(from, to).expect("the store directory copies");
}

fn damage(store: &Path, needle: &[u8]) -> usize {
    railyard_testkit::disk::flip_log_bytes(store, needle).expect("the log is rewritten")
}

/// The log lines written while `work` runs (on this thread: the test runtime is
/// single-threaded, and the store logs from the task that opens it).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn config(path: &Path) -> StoreConfig {
    StoreConfig::new(path).flush_every(None)
}

async fn open(path: &Path) -> ProjectionStore<Ledger> {
    ProjectionStore::open(config(path), Ledger::new("ledger"))
        .await
        .expect("the store opens")
}

#[tokio::test]
async fn a_store_cut_short_by_a_damaged_log_says_so_until_it_is_reset() {
    let dir = tempfile::tempdir().unwrap();
    let (original, honest, damaged) = (
        dir.path().join("original"),
        dir.path().join("honest"),
        dir.path().join("damaged"),
    );
    // One delivery per batch, flushed: the store records checkpoint 100 as durable. Copied
    // while open and idle, as a backup would.
    let store = open(&original).await;
    for sequence in 1..=100 {
        store.apply(sequence, delivery(sequence)).await.unwrap();
    }
    store.flush().await.unwrap();
    copy_dir(&original, &honest);
    copy_dir(&original, &damaged);
    drop(store);

    let store = open(&honest).await;
    assert_eq!(store.cut_short(), None);
    assert_eq!(store.checkpoint().await.unwrap(), 100);
    drop(store);

    // Delivery 60's first event, as its index entry holds it.
    let needle = delivery(60)[0].event_id.to_string();
    assert!(
        damage(&damaged, needle.as_bytes()) >= 1,
        "the entry is in the log"
    );
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer({
            let logs = logs.clone();
            move || logs.clone()
        })
        .with_ansi(false)
        .finish();
    let store = {
        let _logging = tracing::subscriber::set_default(subscriber);
        open(&damaged).await
    };
    let cut = CutShort {
        durable: 100,
        recovered: 59,
    };
    assert_eq!(store.cut_short(), Some(cut));
    assert_eq!(store.checkpoint().await.unwrap(), 59, "sled ends before it");
    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let line = logs
        .lines()
        .find(|line| line.contains("store opened cut short"))
        .unwrap_or_else(|| panic!("an error is logged: {logs}"));
    for expected in [
        "ERROR",
        "projection=ledger",
        "durable=100",
        "recovered=59",
        "error=projection ledger in the store at",
        "rebuild the projection from the stream",
    ] {
        assert!(line.contains(expected), "{expected:?} in {line}");
    }

    // Flushing or reopening does not forget it; applying the lost deliveries again (as
    // following the stream does) brings the data back but the finding stays until a reset.
    store.flush().await.unwrap();
    drop(store);
    let store = open(&damaged).await;
    assert_eq!(store.cut_short(), Some(cut));
    for sequence in 60..=100 {
        store.apply(sequence, delivery(sequence)).await.unwrap();
    }
    assert_eq!(store.cut_short(), Some(cut));

    // A reset (what a rebuild starts with) clears it, and the store opens clean again.
    store.reset().await.unwrap();
    assert_eq!(store.cut_short(), None);
    for sequence in 1..=100 {
        store.apply(sequence, delivery(sequence)).await.unwrap();
    }
    store.flush().await.unwrap();
    drop(store);
    let store = open(&damaged).await;
    assert_eq!(store.cut_short(), None);
    assert_eq!(store.checkpoint().await.unwrap(), 100);
}

#[tokio::test]
async fn a_reset_that_is_not_flushed_does_not_look_like_damage() {
    // The mark goes down before the reset does, so a store that loses what followed a reset
    // (a crash before the next flush) opens below nothing it had claimed.
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    for sequence in 1..=10 {
        store.apply(sequence, delivery(sequence)).await.unwrap();
    }
    store.flush().await.unwrap();
    store.reset().await.unwrap();
    store.apply(1, delivery(1)).await.unwrap();
    drop(store);
    let marks: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("railyard-durable.json")).unwrap())
            .unwrap();
    assert_eq!(marks, serde_json::json!({"checkpoints": {"ledger": 0}}));
    let store = open(dir.path()).await;
    assert_eq!(store.cut_short(), None);
}

#[tokio::test]
async fn a_store_sled_cannot_recover_says_its_files_are_damaged() {
    // Damage further back than the log's last segments: sled 0.34 does not cut there, its
    // recovery panics. The open fails saying what is wrong and what to do.
    let dir = tempfile::tempdir().unwrap();
    let (original, copy) = (dir.path().join("original"), dir.path().join("copy"));
    let store = open(&original).await;
    let deliveries = (1..=3_000)
        .map(|sequence| (sequence, delivery(sequence)))
        .collect::<Vec<_>>();
    for chunk in deliveries.chunks(10) {
        store.apply_many(chunk.to_vec()).await.unwrap();
    }
    store.flush().await.unwrap();
    copy_dir(&original, &copy);
    drop(store);
    let log_len = std::fs::metadata(copy.join("db")).unwrap().len();
    assert!(
        log_len > 2 * 512 * 1024,
        "the log spans several segments: {log_len}"
    );
    assert!(damage(&copy, delivery(100)[0].event_id.to_string().as_bytes()) >= 1);
    let error = ProjectionStore::open(config(&copy), Ledger::new("ledger"))
        .await
        .expect_err("sled cannot recover it");
    assert!(
        matches!(error, StoreError::Unrecoverable { .. }),
        "{error:?}"
    );
    assert!(
        error.to_string().ends_with(
            "its files are damaged: move the directory aside (keep it for inspection) and rebuild the projections from the stream into a new one"
        ),
        "{error}"
    );
}

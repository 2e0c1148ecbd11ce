//! The projection store without a bus: deliveries apply once and in order, a refused delivery
//! writes nothing, reads inside an update see its own writes, reset + replay rebuilds the
//! same bytes, and the store's API answers and fails as documented.

mod common;

use common::{Ledger, count_key, delivery, event_key, events_through, poison};
use railyard_core::Envelope;
use railyard_store::{
    Applied, KeyBuf, KeyReader, Projection, ProjectionError, ProjectionStore, Store, StoreConfig,
    StoreError, Update,
};

async fn open_ledger(dir: &tempfile::TempDir) -> ProjectionStore<Ledger> {
    ProjectionStore::open(StoreConfig::new(dir.path()), Ledger::new("ledger"))
        .await
        .expect("the store opens")
}

/// Runs `script` (one delivery per line: `<sequence>` applies the test stream's delivery at
/// that sequence) and renders what happened, one line per delivery.
async fn transcript(script: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let store = open_ledger(&dir).await;
    let mut out = String::new();
    for line in script
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
    {
        let sequence: u64 = line.parse().expect("a sequence number");
        let outcome = match store.apply(sequence, delivery(sequence)).await.unwrap() {
            Applied::Committed { sequence, writes } => {
                format!("{sequence} committed {writes} writes")
            }
            Applied::Skipped {
                sequence,
                checkpoint,
            } => format!("{sequence} skipped at checkpoint {checkpoint}"),
        };
        let count: u64 = store.get_json(count_key()).await.unwrap().unwrap_or(0);
        let checkpoint = store.checkpoint().await.unwrap();
        out.push_str(&format!(
            "{outcome}; checkpoint {checkpoint}, {count} events\n"
        ));
    }
    out
}

#[tokio::test]
async fn deliveries_apply_once_in_stream_order() {
    // (what it shows, deliveries, expected transcript). Delivery n of the test stream carries
    // n % 3 + 1 events; each event writes the count plus two index entries.
    let cases = [
        (
            "a redelivery of the applied sequence is skipped",
            "1\n1\n2\n2\n2",
            "1 committed 5 writes; checkpoint 1, 2 events\n\
             1 skipped at checkpoint 1; checkpoint 1, 2 events\n\
             2 committed 7 writes; checkpoint 2, 5 events\n\
             2 skipped at checkpoint 2; checkpoint 2, 5 events\n\
             2 skipped at checkpoint 2; checkpoint 2, 5 events\n",
        ),
        (
            "an older sequence after a newer one is skipped",
            "1\n3\n2\n3\n4",
            "1 committed 5 writes; checkpoint 1, 2 events\n\
             3 committed 3 writes; checkpoint 3, 3 events\n\
             2 skipped at checkpoint 3; checkpoint 3, 3 events\n\
             3 skipped at checkpoint 3; checkpoint 3, 3 events\n\
             4 committed 5 writes; checkpoint 4, 5 events\n",
        ),
        (
            "gaps (other subjects of the stream) are not an error",
            "2\n9\n1000",
            "2 committed 7 writes; checkpoint 2, 3 events\n\
             9 committed 3 writes; checkpoint 9, 4 events\n\
             1000 committed 5 writes; checkpoint 1000, 6 events\n",
        ),
        (
            "sequence 0 never exists in a stream and is never applied",
            "0\n1",
            "0 skipped at checkpoint 0; checkpoint 0, 0 events\n\
             1 committed 5 writes; checkpoint 1, 2 events\n",
        ),
    ];
    for (what, script, expected) in cases {
        assert_eq!(transcript(script).await, expected, "{what}");
    }
}

#[tokio::test]
async fn a_refused_delivery_writes_nothing_and_keeps_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_ledger(&dir).await;
    store.apply(1, delivery(1)).await.unwrap();
    let before = store.raw_entries().await.unwrap();

    // The poison comes after a good event of the same delivery: that one must not land either.
    let mixed = vec![common::envelope(99), poison()];
    let error = store.apply(2, mixed).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        "projection ledger failed at stream sequence 2, nothing was written: fix the projection or dead-letter the event"
    );
    let StoreError::Projection { source, .. } = &error else {
        panic!("expected a projection error, got {error:?}");
    };
    assert_eq!(
        source.to_string(),
        "catalog.applied sha256:poison is poisoned: dead-letter it"
    );
    assert_eq!(store.raw_entries().await.unwrap(), before);
    assert_eq!(store.checkpoint().await.unwrap(), 1);

    // The stream moves on (the bus dead-letters sequence 2); later deliveries apply.
    assert!(matches!(
        store.apply(3, delivery(3)).await.unwrap(),
        Applied::Committed { sequence: 3, .. }
    ));
    assert_eq!(
        store.get_json::<u64>(count_key()).await.unwrap(),
        Some(events_through(1) + 1)
    );
}

#[tokio::test]
async fn reset_then_replay_rebuilds_byte_identical_state() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_ledger(&dir).await;
    for sequence in 1..=50 {
        store.apply(sequence, delivery(sequence)).await.unwrap();
    }
    let built = store.raw_entries().await.unwrap();
    assert_eq!(
        store.get_json::<u64>(count_key()).await.unwrap(),
        Some(events_through(50))
    );

    let removed = store.reset().await.unwrap();
    assert_eq!(removed, built.len());
    assert_eq!(store.raw_entries().await.unwrap(), Vec::new());
    assert_eq!(store.checkpoint().await.unwrap(), 0);

    for sequence in 1..=50 {
        store.apply(sequence, delivery(sequence)).await.unwrap();
    }
    assert_eq!(store.raw_entries().await.unwrap(), built);
}

/// The test stream's deliveries `sequences`, with `poison` appended to those in `poisoned`.
fn deliveries(sequences: &[u64], poisoned: &[u64]) -> Vec<(u64, Vec<Envelope>)> {
    sequences
        .iter()
        .map(|&sequence| {
            let mut envelopes = delivery(sequence);
            if poisoned.contains(&sequence) {
                envelopes.push(poison());
            }
            (sequence, envelopes)
        })
        .collect()
}

fn outcome(result: &Result<Applied, StoreError>) -> String {
    match result {
        Ok(Applied::Committed { sequence, .. }) => format!("{sequence} committed"),
        Ok(Applied::Skipped { sequence, .. }) => format!("{sequence} skipped"),
        Err(StoreError::Projection { sequence, .. }) => format!("{sequence} refused"),
        Err(other) => panic!("unexpected error: {other}"),
    }
}

/// One `apply_many` case: the chunks of deliveries passed, in order, which of them carry the
/// poison, and the expected outcomes, one line per chunk.
struct Chunks {
    what: &'static str,
    chunks: &'static [&'static [u64]],
    poisoned: &'static [u64],
    expected: &'static [&'static str],
}

#[tokio::test]
async fn apply_many_equals_applying_one_by_one() {
    let cases = [
        Chunks {
            what: "one chunk",
            chunks: &[&[1, 2, 3, 4, 5]],
            poisoned: &[],
            expected: &["1 committed, 2 committed, 3 committed, 4 committed, 5 committed"],
        },
        Chunks {
            what: "a refused delivery drops only its own writes",
            chunks: &[&[1, 2, 3, 4]],
            poisoned: &[2],
            expected: &["1 committed, 2 refused, 3 committed, 4 committed"],
        },
        Chunks {
            what: "a refused last delivery leaves the checkpoint below it",
            chunks: &[&[1, 2], &[3]],
            poisoned: &[2, 3],
            expected: &["1 committed, 2 refused", "3 refused"],
        },
        Chunks {
            what: "overlapping chunks: what is at or below the checkpoint is skipped",
            chunks: &[&[1, 2, 3], &[2, 3, 4, 4, 5], &[1]],
            poisoned: &[],
            expected: &[
                "1 committed, 2 committed, 3 committed",
                "2 skipped, 3 skipped, 4 committed, 4 skipped, 5 committed",
                "1 skipped",
            ],
        },
    ];
    for Chunks {
        what,
        chunks,
        poisoned,
        expected,
    } in cases
    {
        let many_dir = tempfile::tempdir().unwrap();
        let many = open_ledger(&many_dir).await;
        let single_dir = tempfile::tempdir().unwrap();
        let single = open_ledger(&single_dir).await;
        let mut outcomes = Vec::new();
        for chunk in chunks {
            let results = many.apply_many(deliveries(chunk, poisoned)).await.unwrap();
            outcomes.push(results.iter().map(outcome).collect::<Vec<_>>().join(", "));
            let mut one_by_one = Vec::new();
            for (sequence, envelopes) in deliveries(chunk, poisoned) {
                one_by_one.push(outcome(&single.apply(sequence, envelopes).await));
            }
            assert_eq!(outcomes.last().unwrap(), &one_by_one.join(", "), "{what}");
        }
        assert_eq!(&outcomes, expected, "{what}");
        assert_eq!(
            many.raw_entries().await.unwrap(),
            single.raw_entries().await.unwrap(),
            "{what}: the same bytes either way"
        );
    }
}

#[tokio::test]
async fn reopening_the_store_shows_what_was_committed() {
    let dir = tempfile::tempdir().unwrap();
    let built = {
        let store = open_ledger(&dir).await;
        for sequence in 1..=10 {
            store.apply(sequence, delivery(sequence)).await.unwrap();
        }
        store.raw_entries().await.unwrap()
    };
    let store = open_ledger(&dir).await;
    assert_eq!(store.raw_entries().await.unwrap(), built);
    assert_eq!(store.checkpoint().await.unwrap(), 10);
}

/// A projection whose `apply` is a closure, to exercise [`Update`] directly.
struct FnProjection<F>(F);

impl<F> Projection for FnProjection<F>
where
    F: FnMut(&mut Update<'_>, u64) -> Result<(), ProjectionError> + Send + 'static,
{
    fn name(&self) -> &str {
        "scratch"
    }

    fn apply(
        &mut self,
        update: &mut Update<'_>,
        sequence: u64,
        _envelopes: &[Envelope],
    ) -> Result<(), ProjectionError> {
        (self.0)(update, sequence)
    }
}

fn render(entries: &[(Vec<u8>, Vec<u8>)]) -> Vec<String> {
    entries
        .iter()
        .map(|(key, value)| {
            format!(
                "{}={}",
                String::from_utf8_lossy(key),
                String::from_utf8_lossy(value)
            )
        })
        .collect()
}

#[tokio::test]
async fn reads_inside_an_update_see_its_own_writes_and_removals() {
    let dir = tempfile::tempdir().unwrap();
    let projection = FnProjection(|update: &mut Update<'_>, sequence: u64| {
        if sequence == 1 {
            update.put("a/1", "one");
            update.put("a/2", "two");
            update.put("b/1", "other");
            return Ok(());
        }
        // Sequence 2 reads the committed state through its own pending writes.
        assert_eq!(update.get("a/1")?, Some(b"one".to_vec()));
        update.put("a/1", "uno");
        update.remove("a/2");
        update.put("a/3", "three");
        update.remove("absent");
        assert_eq!(update.get("a/1")?, Some(b"uno".to_vec()));
        assert_eq!(update.get("a/2")?, None);
        let seen = update.scan_prefix("a/")?;
        assert_eq!(render(&seen), ["a/1=uno", "a/3=three"]);
        assert_eq!(update.len(), 4);
        Ok(())
    });
    let store = ProjectionStore::open(StoreConfig::new(dir.path()), projection)
        .await
        .unwrap();
    store.apply(1, Vec::new()).await.unwrap();
    assert_eq!(
        store.apply(2, Vec::new()).await.unwrap(),
        Applied::Committed {
            sequence: 2,
            writes: 4
        }
    );
    assert_eq!(
        render(&store.scan_prefix("").await.unwrap()),
        ["a/1=uno", "a/3=three", "b/1=other"]
    );
}

#[tokio::test]
async fn scan_pages_follow_a_cursor_within_the_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_ledger(&dir).await;
    for sequence in 1..=4 {
        store.apply(sequence, delivery(sequence)).await.unwrap();
    }
    let prefix = KeyBuf::new().str("event").into_vec();
    let mut positions = Vec::new();
    let mut cursor: Option<Vec<u8>> = None;
    loop {
        let page = store.scan_page(&prefix, cursor.as_ref(), 3).await.unwrap();
        assert!(page.len() <= 3);
        let Some((last, _)) = page.last() else { break };
        cursor = Some(last.clone());
        for (key, _) in &page {
            let mut reader = KeyReader::new(key);
            assert_eq!(reader.str().unwrap(), "event");
            positions.push((reader.u64().unwrap(), reader.u64().unwrap()));
            reader.finish().unwrap();
        }
    }
    let expected: Vec<(u64, u64)> = (1..=4u64)
        .flat_map(|sequence| (0..common::events_in(sequence)).map(move |index| (sequence, index)))
        .collect();
    assert_eq!(positions, expected);
    assert_eq!(
        store.scan_prefix(&prefix).await.unwrap().len(),
        expected.len()
    );
    // A cursor before the prefix starts at the prefix.
    let first = store.scan_page(&prefix, Some(b"a"), 1).await.unwrap();
    assert_eq!(first[0].0, event_key(1, 0));
}

#[tokio::test]
async fn get_many_answers_each_key_in_the_order_asked() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_ledger(&dir).await;
    for sequence in 1..=4 {
        store.apply(sequence, delivery(sequence)).await.unwrap();
    }
    // Out of key order, a key repeated, keys that were never written (one past the last
    // event of a delivery, a sequence not applied), and the empty key.
    let keys = [
        event_key(4, 0),
        event_key(1, 0),
        event_key(9, 0),
        count_key(),
        event_key(1, common::events_in(1) as usize),
        event_key(1, 0),
        Vec::new(),
    ];
    let many = store.get_many(&keys).await.unwrap();
    let mut one_by_one = Vec::new();
    for key in &keys {
        one_by_one.push(store.get(key).await.unwrap());
    }
    assert_eq!(many, one_by_one);
    let found: Vec<bool> = many.iter().map(Option::is_some).collect();
    assert_eq!(found, [true, true, false, true, false, true, false]);
    let count: u64 = serde_json::from_slice(many[3].as_ref().unwrap()).unwrap();
    assert_eq!(count, events_through(4));
    assert!(
        store
            .get_many(std::iter::empty::<&[u8]>())
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn store_misuse_is_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreConfig::new(dir.path())).await.unwrap();
    let ledger = store.projection(Ledger::new("ledger")).await.unwrap();

    let twice = store.projection(Ledger::new("ledger")).await.unwrap_err();
    assert_eq!(
        twice.to_string(),
        "projection ledger is already open in this store: clone the ProjectionStore you have instead of opening it again"
    );
    let bad = store
        .projection(Ledger::new("Ledger v2"))
        .await
        .unwrap_err();
    assert_eq!(
        bad.to_string(),
        "projection name \"Ledger v2\" is invalid: use 1 to 63 characters from a-z, 0-9, '-', '_' and '.', starting with a letter or digit"
    );

    ledger.apply(1, delivery(1)).await.unwrap();
    let wrong_type = ledger.get_json::<String>(count_key()).await.unwrap_err();
    assert_eq!(
        wrong_type.to_string(),
        "projection ledger: value at key count\\x00\\x01 is not the expected JSON: rebuild the projection if its format changed"
    );

    // Dropping the projection frees its name; reopening sees its data.
    drop(ledger);
    let again = store.projection(Ledger::new("ledger")).await.unwrap();
    assert_eq!(again.checkpoint().await.unwrap(), 1);

    // Two projections in one store keep separate trees and checkpoints.
    let other = store.projection(Ledger::new("other")).await.unwrap();
    assert_eq!(other.checkpoint().await.unwrap(), 0);
    assert_eq!(other.get(count_key()).await.unwrap(), None);

    // A second process (here: a second open, not waiting for the lock) cannot take the same
    // directory.
    let locked = Store::open(StoreConfig::new(dir.path()).lock_wait(std::time::Duration::ZERO))
        .await
        .unwrap_err();
    assert!(
        locked.to_string().starts_with("cannot open the store at "),
        "{locked}"
    );
}

#[tokio::test]
async fn opening_waits_for_the_lock_of_a_handle_being_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let first = Store::open(StoreConfig::new(dir.path())).await.unwrap();
    // While the first handle lives, a second open without waiting fails and names the lock.
    let refused = Store::open(StoreConfig::new(dir.path()).lock_wait(std::time::Duration::ZERO))
        .await
        .expect_err("the directory is locked");
    assert!(
        refused
            .to_string()
            .contains(&dir.path().display().to_string()),
        "{refused}"
    );
    assert!(
        format!("{refused:?}").contains("could not acquire lock"),
        "{refused:?}"
    );
    // Dropped while a second open waits: the second one gets the directory.
    let dropper = tokio::spawn(async move {
        tokio::task::yield_now().await;
        drop(first);
    });
    let second = Store::open(StoreConfig::new(dir.path())).await;
    dropper.await.unwrap();
    assert!(second.is_ok(), "{:?}", second.err());
}

#[tokio::test]
async fn a_kept_store_is_reused_instead_of_opening_its_directory_again() {
    let dir = tempfile::tempdir().unwrap();
    let kept = Store::open(StoreConfig::new(dir.path())).await.unwrap();
    // Without waiting for the lock: opening the directory again would fail while `kept`
    // holds it, so succeeding means the kept store was given back.
    let no_wait = || StoreConfig::new(dir.path()).lock_wait(std::time::Duration::ZERO);
    assert!(
        Store::open(no_wait()).await.is_err(),
        "the directory is held"
    );

    // A service's first start applies a delivery and ends (its projection dropped)...
    let first = Store::kept_or_open(Some(&kept), no_wait()).await.unwrap();
    let ledger = first.projection(Ledger::new("ledger")).await.unwrap();
    ledger.apply(1, delivery(1)).await.unwrap();
    drop((ledger, first));
    // ...and its next start, on the same store, carries on from it.
    let again = Store::kept_or_open(Some(&kept), no_wait()).await.unwrap();
    let ledger = again.projection(Ledger::new("ledger")).await.unwrap();
    assert_eq!(ledger.checkpoint().await.unwrap(), 1);

    // A store kept for another directory is refused, naming both.
    let elsewhere = tempfile::tempdir().unwrap();
    let refused = Store::kept_or_open(Some(&kept), StoreConfig::new(elsewhere.path()))
        .await
        .expect_err("another directory");
    let message = format!("{refused:#}");
    assert!(
        message.contains(&elsewhere.path().display().to_string()),
        "{message}"
    );
    assert!(
        format!("{refused:?}").contains(&dir.path().display().to_string()),
        "{refused:?}"
    );

    // Nothing kept: the directory is opened, as `Store::open` does.
    drop((ledger, again, kept));
    let opened = Store::kept_or_open(None, StoreConfig::new(dir.path()))
        .await
        .unwrap();
    let ledger = opened.projection(Ledger::new("ledger")).await.unwrap();
    assert_eq!(ledger.checkpoint().await.unwrap(), 1);
}

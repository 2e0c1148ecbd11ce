//! The projection driven from a real NATS (railyard-testkit): stopped and restarted mid-stream
//! it applies every event exactly once, a refused delivery is dead-lettered, and `rebuild`
//! reproduces the tree byte for byte.

mod common;

use std::time::Duration;

use common::{Indexed, Ledger, POISON, count_key};
use railyard_bus::{Bus, BusConfig, Expected};
use railyard_core::event::{CatalogApplied, Reasoned, ReleaseHeld};
use railyard_core::{AggregateId, Envelope, Event};
use railyard_store::{
    KeyBuf, KeyReader, ProjectionStore, RunError, RunOptions, RunReport, StoreConfig, StoreError,
    rebuild, run_projection,
};
use railyard_testkit::NatsServer;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

/// Bound on every wait.
const WAIT: Duration = Duration::from_secs(30);

async fn connect(server: &NatsServer) -> anyhow::Result<Bus> {
    let config = BusConfig {
        request_timeout: Duration::from_secs(5),
        append_timeout: Duration::from_secs(15),
        ..BusConfig::default()
    };
    let bus = Bus::connect(&server.url(), config).await?;
    bus.ensure_topology().await?;
    Ok(bus)
}

/// One stored append: its stream sequence and its events' ids, in order.
#[derive(Debug, Clone)]
struct Stored {
    sequence: u64,
    event_ids: Vec<uuid::Uuid>,
}

/// Appends the `n`-th test append: 1 to 3 events of release `rel-<n % 4>`.
async fn append(bus: &Bus, n: u64) -> anyhow::Result<Stored> {
    let aggregate: AggregateId = format!("release.rel-{}", n % 4).parse()?;
    let events: Vec<Envelope> = (0..n % 3 + 1)
        .map(|index| {
            let event = if index % 2 == 0 {
                Event::ReleaseHeld(ReleaseHeld {
                    reason: format!("append {n} event {index}"),
                    step: None,
                    owner: None,
                    frozen: None,
                })
            } else {
                Event::ReleaseResumed(Reasoned {
                    reason: format!("append {n} event {index}"),
                })
            };
            Envelope::new(aggregate.clone(), "tester", chrono::Utc::now(), event)
        })
        .collect();
    let appended = bus.append(&aggregate, Expected::Any, &events).await?;
    Ok(Stored {
        sequence: appended.sequence,
        event_ids: events.iter().map(|envelope| envelope.event_id).collect(),
    })
}

/// Appends the `catalog.applied` the `Ledger` refuses.
async fn append_poison(bus: &Bus) -> anyhow::Result<u64> {
    let event = Envelope::new(
        AggregateId::Catalog,
        "tester",
        chrono::Utc::now(),
        Event::CatalogApplied(CatalogApplied {
            hash: POISON.into(),
        }),
    );
    Ok(bus
        .append(&AggregateId::Catalog, Expected::Any, &[event])
        .await?
        .sequence)
}

/// A running `run_projection` and the means to stop it.
struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<RunReport, RunError>>,
}

fn start(bus: &Bus, store: &ProjectionStore<Ledger>) -> Running {
    let (stop, stopped) = oneshot::channel::<()>();
    let bus = bus.clone();
    let store = store.clone();
    let options = RunOptions {
        max_batch: 8,
        ..RunOptions::default()
    };
    let task = tokio::spawn(async move {
        run_projection(&bus, &store, &options, async {
            let _ = stopped.await;
        })
        .await
    });
    Running { stop, task }
}

impl Running {
    async fn stop(self) -> anyhow::Result<RunReport> {
        let _ = self.stop.send(());
        Ok(tokio::time::timeout(WAIT, self.task).await???)
    }
}

/// Waits until the ledger has applied stream sequence `sequence`.
async fn reach(progress: &mut watch::Receiver<u64>, sequence: u64) -> anyhow::Result<()> {
    tokio::time::timeout(WAIT, progress.wait_for(|applied| *applied >= sequence))
        .await
        .map_err(|_| {
            anyhow::anyhow!("the projection did not reach sequence {sequence} within {WAIT:?}")
        })??;
    Ok(())
}

/// Checks that the ledger holds exactly the events of `stored`, each once.
async fn assert_exactly_once(
    store: &ProjectionStore<Ledger>,
    stored: &[Stored],
) -> anyhow::Result<()> {
    let expected_events: usize = stored.iter().map(|append| append.event_ids.len()).sum();
    assert_eq!(
        store.get_json::<u64>(count_key()).await?,
        Some(expected_events as u64),
        "the applied-event count equals the stream's event count"
    );
    let mut indexed = Vec::new();
    for (key, value) in store.scan_prefix(KeyBuf::new().str("event")).await? {
        let mut reader = KeyReader::new(&key);
        reader.str()?;
        let sequence = reader.u64()?;
        let index = reader.u64()?;
        let entry: Indexed = serde_json::from_slice(&value)?;
        indexed.push((sequence, index, entry.event_id));
    }
    let expected: Vec<(u64, u64, uuid::Uuid)> = stored
        .iter()
        .flat_map(|append| {
            append
                .event_ids
                .iter()
                .enumerate()
                .map(|(index, id)| (append.sequence, index as u64, *id))
        })
        .collect();
    assert_eq!(indexed, expected, "every event indexed once, at its place");
    Ok(())
}

#[tokio::test]
async fn a_projection_stopped_and_restarted_mid_stream_applies_every_event_once()
-> anyhow::Result<()> {
    let server = NatsServer::start().await?;
    let bus = connect(&server).await?;
    let dir = tempfile::tempdir()?;
    let mut stored = Vec::new();
    for n in 0..40 {
        stored.push(append(&bus, n).await?);
    }

    // Run 1, stopped on purpose mid-stream while appends go on.
    let (ledger, mut progress) = Ledger::with_progress("ledger");
    let store = ProjectionStore::open(StoreConfig::new(dir.path()), ledger).await?;
    let running = start(&bus, &store);
    reach(&mut progress, stored[19].sequence).await?;
    for n in 40..80 {
        stored.push(append(&bus, n).await?);
    }
    let first = running.stop().await?;
    assert!(first.checkpoint >= stored[19].sequence, "{first:?}");
    assert_eq!(first.skipped + first.refused, 0, "{first:?}");

    // The process restarts: the store is reopened from disk.
    drop(store);
    let (ledger, mut progress) = Ledger::with_progress("ledger");
    let store = ProjectionStore::open(StoreConfig::new(dir.path()), ledger).await?;
    assert_eq!(store.checkpoint().await?, first.checkpoint);

    // Run 2, killed (task aborted) as soon as it made progress, with no shutdown at all.
    for n in 80..120 {
        stored.push(append(&bus, n).await?);
    }
    let running = start(&bus, &store);
    reach(&mut progress, first.checkpoint + 1).await?;
    running.task.abort();
    let aborted = tokio::time::timeout(WAIT, running.task).await?;
    assert!(
        aborted.as_ref().is_err_and(|error| error.is_cancelled()),
        "the run must still have been running when it was killed: {aborted:?}"
    );

    // Run 3 goes to the end of the stream.
    let running = start(&bus, &store);
    let last = stored.last().expect("appends").sequence;
    reach(&mut progress, last).await?;
    let third = running.stop().await?;
    assert_eq!(third.checkpoint, last);
    assert_eq!(bus.stream_last_sequence().await?, last);

    assert_exactly_once(&store, &stored).await?;
    Ok(())
}

#[tokio::test]
async fn rebuild_reproduces_the_tree_byte_for_byte() -> anyhow::Result<()> {
    let server = NatsServer::start().await?;
    let bus = connect(&server).await?;
    let dir = tempfile::tempdir()?;
    let mut stored = Vec::new();
    let mut poison = 0;
    for n in 0..30 {
        if n == 10 {
            poison = append_poison(&bus).await?;
        }
        stored.push(append(&bus, n).await?);
    }
    let last = stored.last().expect("appends").sequence;

    let (ledger, mut progress) = Ledger::with_progress("ledger");
    let store = ProjectionStore::open(StoreConfig::new(dir.path()), ledger).await?;
    let running = start(&bus, &store);
    reach(&mut progress, last).await?;

    // A rebuild cannot start while the projection runs.
    let busy = rebuild(&bus, &store, &RunOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(busy, RunError::Store(StoreError::Busy(_))),
        "{busy:?}"
    );
    assert_eq!(
        busy.to_string(),
        "projection ledger is already driven by run_projection or rebuild: stop that one first"
    );

    let live = running.stop().await?;
    assert_eq!(
        (live.committed, live.refused, live.checkpoint),
        (30, 1, last),
        "{live:?}"
    );
    assert_exactly_once(&store, &stored).await?;

    // The refused delivery went to the dead-letter stream with the projection's reason.
    let dead = bus.dead_letters().await?;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].source_sequence, poison);
    assert_eq!(
        dead[0].reason,
        format!(
            "projection ledger failed at stream sequence {poison}, nothing was written: fix the projection or dead-letter the event: catalog.applied {POISON} is poisoned: dead-letter it"
        )
    );

    let built = store.raw_entries().await?;
    let rebuilt = rebuild(&bus, &store, &RunOptions::default()).await?;
    assert_eq!(
        (rebuilt.committed, rebuilt.refused, rebuilt.checkpoint),
        (30, 1, last),
        "{rebuilt:?}"
    );
    assert_eq!(rebuilt.events, live.events);
    assert!(
        store.raw_entries().await? == built,
        "the rebuilt tree differs from the live one"
    );
    assert_eq!(
        bus.dead_letters().await?.len(),
        1,
        "a rebuild dead-letters nothing again"
    );

    // After the rebuild the projection follows the stream again from its checkpoint.
    stored.push(append(&bus, 30).await?);
    let running = start(&bus, &store);
    reach(&mut progress, stored.last().expect("appends").sequence).await?;
    running.stop().await?;
    assert_exactly_once(&store, &stored).await?;
    Ok(())
}

#[tokio::test]
async fn rebuilding_an_empty_stream_leaves_an_empty_projection() -> anyhow::Result<()> {
    let server = NatsServer::start().await?;
    let bus = connect(&server).await?;
    let dir = tempfile::tempdir()?;
    let store = ProjectionStore::open(StoreConfig::new(dir.path()), Ledger::new("ledger")).await?;
    store.apply(7, common::delivery(7)).await?;
    let report = rebuild(&bus, &store, &RunOptions::default()).await?;
    assert_eq!(report, RunReport::default());
    assert_eq!(store.raw_entries().await?, Vec::new());
    Ok(())
}

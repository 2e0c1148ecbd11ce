//! The glue between the bus and a [`ProjectionStore`]: [`run_projection`] keeps a projection
//! following `RAILYARD_EVENTS` from its own checkpoint, [`rebuild`] resets it and replays the
//! stream into it up to the stream's last message.
//!
//! The projection's checkpoint is its position in the stream: both read with an ordered
//! consumer ([`Bus::replay`]) that starts just after the checkpoint, so events arrive in
//! stream order, none is skipped after a crash or restart (whatever was not committed is
//! read again), and none is applied twice (the checkpoint check). Deliveries that arrive
//! back to back are applied in one batch. A delivery the projection refuses is copied to the
//! dead-letter stream with the projection's error and the projection moves on, exactly as a
//! rebuild will (a rebuild skips it again, without a second dead letter). A storage or bus
//! failure stops the run with the error, having committed nothing of the delivery at hand.
//!
//! Each delivery is applied inside a `<projection>.apply` span whose parent is the trace the
//! append carried, so a projection's work shows in the trace of the release it concerns; a
//! [`Progress`] hook in [`RunOptions`] reports what was applied and how far behind the
//! stream the projection is (for metrics).

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use railyard_bus::{Bus, BusError, Delivery, EventConsumer, follow_trace};
use railyard_core::Envelope;
use tracing::{Instrument, debug, error, info, warn};

use crate::error::StoreError;
use crate::projection::{Applied, Projection};
use crate::store::ProjectionStore;

/// What a run applied in one batch, as told to a [`Progress`] hook.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchApplied {
    /// Deliveries (appends) settled in the batch: committed, skipped or refused.
    pub deliveries: u64,
    /// Events in the committed deliveries.
    pub events: u64,
    /// Deliveries refused by the projection (dead-lettered by a run).
    pub refused: u64,
    /// Messages still waiting in the stream behind the batch's last delivery: the
    /// projection's lag.
    pub pending: u64,
}

/// Called after every batch a run or a rebuild settled; cheap and non-blocking, e.g. counters.
#[derive(Clone)]
pub struct Progress(Arc<dyn Fn(BatchApplied) + Send + Sync>);

impl Progress {
    /// A hook calling `report`.
    pub fn new(report: impl Fn(BatchApplied) + Send + Sync + 'static) -> Progress {
        Progress(Arc::new(report))
    }
}

impl fmt::Debug for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Progress(..)")
    }
}

/// How [`run_projection`] and [`rebuild`] read and batch.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Most deliveries applied in one batch while more are already waiting (default 256; 0
    /// counts as 1).
    pub max_batch: usize,
    /// How long to wait for a message the stream reported as waiting before applying the
    /// batch gathered so far (default 100 ms).
    pub gather_wait: Duration,
    /// How long a rebuild waits for a message it knows the stream holds before it fails
    /// (default 60 s).
    pub stall_timeout: Duration,
    /// Told what each batch applied and the lag behind it (default: nobody).
    pub progress: Option<Progress>,
}

impl Default for RunOptions {
    fn default() -> RunOptions {
        RunOptions {
            max_batch: 256,
            gather_wait: Duration::from_millis(100),
            stall_timeout: Duration::from_secs(60),
            progress: None,
        }
    }
}

/// What a run or a rebuild did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunReport {
    /// Deliveries committed.
    pub committed: u64,
    /// Events in the committed deliveries.
    pub events: u64,
    /// Deliveries at or below the checkpoint, so not applied again.
    pub skipped: u64,
    /// Deliveries the projection refused (dead-lettered by a run, skipped by a rebuild).
    pub refused: u64,
    /// The checkpoint when the run or rebuild ended.
    pub checkpoint: u64,
}

/// Why a run or a rebuild stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The store failed; nothing of the delivery at hand was committed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The bus failed.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// A rebuild waited in vain for a message the stream holds.
    #[error(
        "rebuild of projection {projection} got nothing after stream sequence {after} within {waited:?} although the stream holds up to {target}: check the NATS connection, then rebuild again"
    )]
    Stalled {
        /// The projection.
        projection: String,
        /// The last sequence read.
        after: u64,
        /// The stream's last sequence when the rebuild started.
        target: u64,
        /// How long it waited.
        waited: Duration,
    },
    /// The bus connection was closed before a rebuild reached the end of the stream.
    #[error(
        "rebuild of projection {projection} stopped after stream sequence {after} of {target}: the bus connection was closed; rebuild again"
    )]
    Closed {
        /// The projection.
        projection: String,
        /// The last sequence read.
        after: u64,
        /// The stream's last sequence when the rebuild started.
        target: u64,
    },
}

/// Follows `RAILYARD_EVENTS` from the projection's checkpoint until `shutdown` completes or the
/// bus is closed, applying every delivery once, in stream order. Refused deliveries are
/// dead-lettered with the projection's error. Flushes the store, and records the checkpoint
/// as durable, before it returns.
pub async fn run_projection<P: Projection>(
    bus: &Bus,
    store: &ProjectionStore<P>,
    options: &RunOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<RunReport, RunError> {
    let _driving = store.try_drive()?;
    let from = store.checkpoint().await? + 1;
    let mut consumer = bus.replay(from).await?;
    info!(projection = %store.name(), from, "projection following the event stream");
    let mut report = RunReport::default();
    tokio::pin!(shutdown);
    loop {
        let first = tokio::select! {
            biased;
            () = &mut shutdown => break,
            next = consumer.next() => match next? {
                Some(delivery) => delivery,
                None => break,
            },
        };
        let mut batch = vec![first];
        let mut failed = None;
        while batch.len() < options.max_batch.max(1)
            && batch.last().is_some_and(|last| last.pending > 0)
        {
            match tokio::time::timeout(options.gather_wait, consumer.next()).await {
                Ok(Ok(Some(delivery))) => batch.push(delivery),
                Ok(Ok(None)) | Err(_) => break,
                Ok(Err(error)) => {
                    failed = Some(error);
                    break;
                }
            }
        }
        // What was gathered is applied before a read failure stops the run.
        apply_batch(store, batch, Refusals::DeadLetter, options, &mut report).await?;
        if let Some(error) = failed {
            return Err(error.into());
        }
    }
    store.flush_and_record().await?;
    report.checkpoint = store.checkpoint().await?;
    info!(projection = %store.name(), checkpoint = report.checkpoint, committed = report.committed, events = report.events, refused = report.refused, "projection stopped");
    Ok(report)
}

/// Resets the projection and replays `RAILYARD_EVENTS` into it from sequence 1 up to the
/// stream's last sequence when the rebuild starts. Deliveries the projection refuses are
/// skipped (they were dead-lettered when they first arrived). Stop the projection's
/// [`run_projection`] first: a rebuild refuses to start while one drives it.
pub async fn rebuild<P: Projection>(
    bus: &Bus,
    store: &ProjectionStore<P>,
    options: &RunOptions,
) -> Result<RunReport, RunError> {
    let _driving = store.try_drive()?;
    let target = bus.stream_last_sequence().await?;
    let removed = store.reset().await?;
    info!(projection = %store.name(), removed, target, "rebuilding projection");
    let mut report = RunReport::default();
    let mut after = 0;
    if target > 0 {
        let mut consumer = bus.replay(1).await?;
        while after < target {
            let mut batch = Vec::new();
            while batch.len() < options.max_batch.max(1) && after < target {
                let delivery =
                    next_known(&mut consumer, store.name(), after, target, options).await?;
                after = delivery.stream_sequence;
                batch.push(delivery);
            }
            apply_batch(store, batch, Refusals::Skip, options, &mut report).await?;
        }
    }
    store.flush_and_record().await?;
    report.checkpoint = store.checkpoint().await?;
    info!(projection = %store.name(), checkpoint = report.checkpoint, committed = report.committed, events = report.events, refused = report.refused, "projection rebuilt");
    Ok(report)
}

/// The next delivery of a replay that knows the stream holds more, bounded.
async fn next_known(
    consumer: &mut EventConsumer,
    projection: &str,
    after: u64,
    target: u64,
    options: &RunOptions,
) -> Result<Delivery, RunError> {
    match tokio::time::timeout(options.stall_timeout, consumer.next()).await {
        Err(_) => Err(RunError::Stalled {
            projection: projection.to_owned(),
            after,
            target,
            waited: options.stall_timeout,
        }),
        Ok(next) => next?.ok_or_else(|| RunError::Closed {
            projection: projection.to_owned(),
            after,
            target,
        }),
    }
}

/// What to do with a delivery the projection refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusals {
    /// Copy it to the dead-letter stream with the error (the live path).
    DeadLetter,
    /// Log it and go on (a rebuild: it was dead-lettered when it first arrived).
    Skip,
}

/// The span a delivery is applied in: `<projection>.apply` in the trace its append carried,
/// with the release it concerns (so every log line about it names the release).
fn apply_span(projection: &str, delivery: &Delivery) -> tracing::Span {
    let span = tracing::info_span!(
        "projection.apply",
        otel.name = format!("{projection}.apply"),
        service = projection,
        release = tracing::field::Empty,
        sequence = delivery.stream_sequence,
        subject = %delivery.subject,
    );
    if let Some(release) = delivery.release() {
        span.record("release", release.as_str());
    }
    follow_trace(&span, &delivery.trace);
    span
}

/// Applies `batch` in one store call and settles each delivery by its outcome.
async fn apply_batch<P: Projection>(
    store: &ProjectionStore<P>,
    mut batch: Vec<Delivery>,
    refusals: Refusals,
    options: &RunOptions,
    report: &mut RunReport,
) -> Result<(), RunError> {
    // A rebuild re-reads history: its work belongs to no release's trace.
    let spans: Vec<tracing::Span> = batch
        .iter()
        .map(|delivery| match refusals {
            Refusals::DeadLetter => apply_span(store.name(), delivery),
            Refusals::Skip => tracing::Span::none(),
        })
        .collect();
    let pending = batch.last().map_or(0, |last| last.pending);
    let before = *report;
    let deliveries: Vec<(u64, Vec<Envelope>)> = batch
        .iter_mut()
        .map(|delivery| {
            (
                delivery.stream_sequence,
                std::mem::take(&mut delivery.envelopes),
            )
        })
        .collect();
    let events: Vec<usize> = deliveries
        .iter()
        .map(|(_, envelopes)| envelopes.len())
        .collect();
    let outcomes = store.apply_many(deliveries).await?;
    for (((delivery, outcome), events), span) in
        batch.into_iter().zip(outcomes).zip(events).zip(spans)
    {
        match outcome {
            Ok(Applied::Committed { sequence, writes }) => {
                span.in_scope(|| debug!(projection = %store.name(), sequence, writes, events, "delivery applied"));
                report.committed += 1;
                report.events += events as u64;
            }
            Ok(Applied::Skipped {
                sequence,
                checkpoint,
            }) => {
                span.in_scope(|| debug!(projection = %store.name(), sequence, checkpoint, "delivery already applied"));
                report.skipped += 1;
            }
            Err(refused @ StoreError::Projection { .. }) => {
                report.refused += 1;
                let sequence = delivery.stream_sequence;
                let reason = railyard_bus::error_chain(&refused);
                match refusals {
                    Refusals::Skip => span.in_scope(|| {
                        warn!(projection = %store.name(), sequence, error = %reason, "refused delivery skipped in the rebuild")
                    }),
                    Refusals::DeadLetter => {
                        span.in_scope(|| {
                            error!(projection = %store.name(), sequence, error = %reason, "delivery refused; moving it to the dead-letter stream")
                        });
                        delivery.dead_letter(&reason).instrument(span).await?;
                    }
                }
            }
            Err(other) => return Err(other.into()),
        }
    }
    if let Some(progress) = &options.progress {
        (progress.0)(BatchApplied {
            deliveries: (report.committed + report.skipped + report.refused)
                - (before.committed + before.skipped + before.refused),
            events: report.events - before.events,
            refused: report.refused - before.refused,
            pending,
        });
    }
    Ok(())
}

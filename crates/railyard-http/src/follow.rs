//! Release metrics read from the event stream, the source of truth: events in by type,
//! releases by outcome, step durations, gate failures, and how far behind the stream this
//! reader is. Every process that serves `/metrics` can run [`follow_release_metrics`]; the
//! counters cover what happened since the process started.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use railyard_bus::{Bus, BusError};
use railyard_core::step::StepId;
use railyard_core::{AggregateId, Event};
use tokio_util::sync::CancellationToken;

use crate::ops::Metrics;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TypeLabel {
    r#type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabel {
    action: String,
    result: String,
}

/// Follows `RAILYARD_EVENTS` from its current end until `shutdown`, updating `metrics`.
pub async fn follow_release_metrics(
    bus: Bus,
    metrics: Metrics,
    shutdown: CancellationToken,
) -> Result<(), BusError> {
    // Position first, register after: once the metrics show, every later event is counted.
    let start = bus.stream_last_sequence().await? + 1;
    let mut consumer = bus.replay_as("metrics", start).await?;
    let events = metrics.register(
        "events",
        "Events recorded, by type",
        Family::<TypeLabel, Counter>::default(),
    );
    let releases = metrics.register(
        "releases_ended",
        "Releases that ended, by outcome (completed, rolled_back, rejected, cancelled, denied)",
        Family::<OutcomeLabel, Counter>::default(),
    );
    let steps = metrics.register(
        "step_duration_seconds",
        "From step.started to its success or failure, by action and result",
        Family::<StepLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.05, 2.0, 16))
        }),
    );
    let gate_failures = metrics.register(
        "gate_failures",
        "Gate evaluations that failed",
        Counter::<u64>::default(),
    );
    let lag = metrics.register(
        "metrics_reader_lag",
        "Messages in RAILYARD_EVENTS this reader has not read yet",
        Gauge::<i64>::default(),
    );

    let reader = metrics.reader("release-metrics");

    let mut started: HashMap<(String, String), DateTime<Utc>> = HashMap::new();
    loop {
        let delivery = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            next = consumer.next() => next?,
        };
        let Some(delivery) = delivery else {
            return Ok(());
        };
        lag.set(i64::try_from(delivery.pending).unwrap_or(i64::MAX));
        reader.handled(1, delivery.envelopes.len() as u64, delivery.pending);
        let denied = delivery
            .envelopes
            .iter()
            .any(|e| matches!(e.event, Event::ApprovalDenied(_)));
        for envelope in &delivery.envelopes {
            events
                .get_or_create(&TypeLabel {
                    r#type: envelope.event.type_name().to_owned(),
                })
                .inc();
            let release = match &envelope.aggregate {
                AggregateId::Release(id) => id.to_string(),
                _ => String::new(),
            };
            let outcome = match &envelope.event {
                Event::ReleaseCompleted(_) => Some("completed"),
                Event::ReleaseRolledBack(_) => Some("rolled_back"),
                Event::ReleaseRejected(_) => Some("rejected"),
                Event::ReleaseCancelled(_) if denied => Some("denied"),
                Event::ReleaseCancelled(_) => Some("cancelled"),
                _ => None,
            };
            if let Some(outcome) = outcome {
                releases
                    .get_or_create(&OutcomeLabel {
                        outcome: outcome.to_owned(),
                    })
                    .inc();
                started.retain(|(r, _), _| *r != release);
            }
            match &envelope.event {
                Event::StepStarted(s) => {
                    started.insert((release, s.step.clone()), envelope.occurred_at);
                }
                Event::StepSucceeded(o) | Event::StepFailed(o) => {
                    if let Some(at) = started.remove(&(release, o.step.clone())) {
                        let seconds =
                            (envelope.occurred_at - at).num_milliseconds().max(0) as f64 / 1000.0;
                        let action = StepId::parse(&o.step)
                            .map_or("unknown", |id| id.action().as_str())
                            .to_owned();
                        let result = if matches!(envelope.event, Event::StepSucceeded(_)) {
                            "succeeded"
                        } else {
                            "failed"
                        };
                        steps
                            .get_or_create(&StepLabel {
                                action,
                                result: result.to_owned(),
                            })
                            .observe(seconds);
                    }
                }
                Event::GateEvaluated(g) if !g.passed => {
                    gate_failures.inc();
                }
                _ => {}
            }
        }
    }
}

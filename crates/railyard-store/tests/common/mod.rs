//! Test support shared by the store's tests and benchmark: `Ledger`, a projection that
//! counts events and indexes them by stream position and by aggregate, and a deterministic
//! event stream to feed it.
#![allow(dead_code)]

use chrono::{DateTime, Utc};
use railyard_core::event::{CatalogApplied, Reasoned};
use railyard_core::{AggregateId, Envelope, Event, ReleaseId};
use railyard_store::{KeyBuf, Projection, ProjectionError, Update};
use serde::{Deserialize, Serialize};

/// The `catalog.applied` hash that `Ledger` refuses, to exercise the failure path.
pub const POISON: &str = "sha256:poison";

/// Counts events and indexes them; every delivery costs a read-modify-write of `count` plus
/// two index writes per event, so a delivery that is applied twice, or half, shows.
pub struct Ledger {
    name: String,
    progress: Option<tokio::sync::watch::Sender<u64>>,
}

impl Ledger {
    pub fn new(name: &str) -> Ledger {
        Ledger {
            name: name.into(),
            progress: None,
        }
    }

    /// A ledger that publishes the last sequence it applied (just before the store commits
    /// it), so a test can wait for a point in the stream without polling.
    pub fn with_progress(name: &str) -> (Ledger, tokio::sync::watch::Receiver<u64>) {
        let (sender, receiver) = tokio::sync::watch::channel(0);
        let ledger = Ledger {
            name: name.into(),
            progress: Some(sender),
        };
        (ledger, receiver)
    }
}

/// The value of each `event` index entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Indexed {
    pub event_id: uuid::Uuid,
    pub r#type: String,
    pub aggregate: String,
}

pub fn count_key() -> Vec<u8> {
    KeyBuf::new().str("count").into_vec()
}

pub fn event_key(sequence: u64, index: usize) -> Vec<u8> {
    KeyBuf::new()
        .str("event")
        .u64(sequence)
        .u64(index as u64)
        .into_vec()
}

/// The entries `Ledger` writes for one delivery, given the event count before it: the new
/// count, then per event its `event` and `aggregate` index entries. The benchmark inserts the
/// same bytes into raw sled as its baseline.
pub fn ledger_entries(
    sequence: u64,
    envelopes: &[Envelope],
    count_before: u64,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut entries = Vec::with_capacity(1 + 2 * envelopes.len());
    let count = count_before + envelopes.len() as u64;
    entries.push((
        count_key(),
        serde_json::to_vec(&count).expect("a u64 encodes"),
    ));
    for (index, envelope) in envelopes.iter().enumerate() {
        let aggregate = envelope.aggregate.to_string();
        let indexed = Indexed {
            event_id: envelope.event_id,
            r#type: envelope.event.type_name().to_owned(),
            aggregate: aggregate.clone(),
        };
        entries.push((
            event_key(sequence, index),
            serde_json::to_vec(&indexed).expect("an index entry encodes"),
        ));
        entries.push((
            KeyBuf::new()
                .str("aggregate")
                .str(&aggregate)
                .u64(sequence)
                .u64(index as u64)
                .into_vec(),
            envelope.event_id.as_bytes().to_vec(),
        ));
    }
    entries
}

impl Projection for Ledger {
    fn name(&self) -> &str {
        &self.name
    }

    fn apply(
        &mut self,
        update: &mut Update<'_>,
        sequence: u64,
        envelopes: &[Envelope],
    ) -> Result<(), ProjectionError> {
        for envelope in envelopes {
            if let Event::CatalogApplied(CatalogApplied { hash }) = &envelope.event {
                if hash == POISON {
                    return Err(ProjectionError::rejected(format!(
                        "catalog.applied {hash} is poisoned: dead-letter it"
                    )));
                }
            }
        }
        let count: u64 = update.get_json(count_key())?.unwrap_or(0);
        for (key, value) in ledger_entries(sequence, envelopes, count) {
            update.put(key, value);
        }
        if let Some(progress) = &self.progress {
            progress.send_replace(sequence);
        }
        Ok(())
    }
}

fn at() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
        .expect("a valid timestamp")
        .with_timezone(&Utc)
}

/// Event `n` of the test stream: deterministic ids, a mix of aggregates.
pub fn envelope(n: u64) -> Envelope {
    let (aggregate, event) = match n % 3 {
        0 => (
            AggregateId::Catalog,
            Event::CatalogApplied(CatalogApplied {
                hash: format!("sha256:{n:064x}"),
            }),
        ),
        1 => (
            AggregateId::Release(ReleaseId::new(format!("rel-{}", n % 5)).expect("a valid id")),
            Event::ReleaseHeld(railyard_core::event::ReleaseHeld {
                reason: format!("held {n}"),
                step: None,
                owner: None,
                frozen: None,
            }),
        ),
        _ => (
            AggregateId::Release(ReleaseId::new(format!("rel-{}", n % 5)).expect("a valid id")),
            Event::ReleaseResumed(Reasoned {
                reason: format!("resumed {n}"),
            }),
        ),
    };
    let mut envelope = Envelope::new(aggregate, "tester", at(), event);
    envelope.event_id = uuid::Uuid::from_u128(u128::from(n) + 1);
    envelope.correlation_id = envelope.event_id;
    envelope
}

/// The `catalog.applied` event that `Ledger` refuses.
pub fn poison() -> Envelope {
    Envelope::new(
        AggregateId::Catalog,
        "tester",
        at(),
        Event::CatalogApplied(CatalogApplied {
            hash: POISON.into(),
        }),
    )
}

/// How many events the delivery at `sequence` of the test stream carries (1 to 3).
pub fn events_in(sequence: u64) -> u64 {
    sequence % 3 + 1
}

/// The envelopes of the delivery at `sequence` of the test stream.
pub fn delivery(sequence: u64) -> Vec<Envelope> {
    (0..events_in(sequence))
        .map(|index| envelope(sequence * 10 + index))
        .collect()
}

/// How many events deliveries `1..=last` carry.
pub fn events_through(last: u64) -> u64 {
    (1..=last).map(events_in).sum()
}

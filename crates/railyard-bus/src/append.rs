//! The event store's write and read: [`Bus::append`] stores one decision (one or more events)
//! as one message on `railyard.events.<aggregate>` under optimistic concurrency, and
//! [`Bus::load`] reads an aggregate's events back with the sequence to expect next time.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::header::{NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, NATS_MESSAGE_ID};
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use bytes::Bytes;
use railyard_core::{AggregateId, Envelope};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tracing::Instrument;

use crate::bus::Bus;
use crate::error::{Actual, AppendError, BusError};
use crate::names::{EVENT_TYPES_HEADER, EVENTS_STREAM, event_subject};
use crate::trace::{extract_trace, inject_trace};

/// What the aggregate must look like for an append to be stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    /// The aggregate has no events yet.
    NoEvents,
    /// The aggregate's last message is at this stream sequence ([`Loaded::last_sequence`] or
    /// [`Appended::sequence`]).
    Sequence(u64),
    /// No check: for aggregates whose events never depend on earlier ones.
    Any,
}

impl fmt::Display for Expected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expected::NoEvents => f.write_str("no events yet"),
            Expected::Sequence(sequence) => write!(f, "last sequence {sequence}"),
            Expected::Any => f.write_str("any sequence"),
        }
    }
}

impl Expected {
    /// `Sequence(n)`, or `NoEvents` for 0 (what [`Loaded::last_sequence`] holds for an
    /// aggregate without events).
    pub fn after(last_sequence: u64) -> Expected {
        if last_sequence == 0 {
            Expected::NoEvents
        } else {
            Expected::Sequence(last_sequence)
        }
    }

    fn header(self) -> Option<u64> {
        match self {
            Expected::NoEvents => Some(0),
            Expected::Sequence(sequence) => Some(sequence),
            Expected::Any => None,
        }
    }
}

/// A stored append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The stream sequence of the message; pass it back as [`Expected::Sequence`].
    pub sequence: u64,
    /// The same append (same first event id) was already stored; nothing new was written.
    pub duplicate: bool,
}

/// An aggregate's events, read from the stream.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// Every event, in the order they were appended.
    pub events: Vec<Envelope>,
    /// The stream sequence of the aggregate's last message; 0 when it has none.
    pub last_sequence: u64,
    /// The trace context the aggregate's first message carried.
    first_trace: opentelemetry::Context,
}

impl Loaded {
    /// What the next append expects: `Expected::after(last_sequence)`.
    pub fn expected(&self) -> Expected {
        Expected::after(self.last_sequence)
    }

    /// The trace the aggregate was started in (for a release: the request's, so every span
    /// that decides about it joins the release's one trace); empty when its first message
    /// carried none. Pass it to [`crate::follow_trace`].
    pub fn trace(&self) -> &opentelemetry::Context {
        &self.first_trace
    }
}

/// The payload of one event message.
#[derive(Serialize)]
struct EventBatchRef<'a> {
    events: &'a [Envelope],
}

/// The payload of one event message, as read.
#[derive(Deserialize)]
pub(crate) struct EventBatch {
    pub(crate) events: Vec<Envelope>,
}

/// Decodes an event message's payload.
pub(crate) fn decode_batch(
    subject: &str,
    sequence: u64,
    payload: &[u8],
) -> Result<Vec<Envelope>, BusError> {
    serde_json::from_slice::<EventBatch>(payload)
        .map(|batch| batch.events)
        .map_err(|source| BusError::Decode {
            subject: subject.to_owned(),
            sequence,
            source,
        })
}

/// The `Nats-Msg-Id` of an append: its first event's id, so retrying the same append dedupes.
pub fn message_id(events: &[Envelope]) -> Option<String> {
    events.first().map(|event| event.event_id.to_string())
}

impl Bus {
    /// Stores `events` as one message on `railyard.events.<aggregate>`: all of them or none.
    ///
    /// The message carries `Nats-Msg-Id` (the first event's id), the expected last subject
    /// sequence (except for [`Expected::Any`]), `traceparent`/`tracestate` of the current span
    /// and `Railyard-Event-Types`. It returns once JetStream acknowledged it. When another append
    /// got there first the result is [`AppendError::Conflict`]: re-read with [`Bus::load`],
    /// decide again, append again. Retrying the same append (after a timeout or reconnect) is
    /// safe: it reports `duplicate: true` instead of storing it twice.
    pub async fn append(
        &self,
        aggregate: &AggregateId,
        expected: Expected,
        events: &[Envelope],
    ) -> Result<Appended, AppendError> {
        let span = tracing::debug_span!(
            "railyard.append",
            aggregate = %aggregate,
            events = events.len(),
            otel.kind = "producer",
        );
        self.append_inner(aggregate, expected, events)
            .instrument(span)
            .await
    }

    async fn append_inner(
        &self,
        aggregate: &AggregateId,
        expected: Expected,
        events: &[Envelope],
    ) -> Result<Appended, AppendError> {
        let message_id = message_id(events).ok_or_else(|| AppendError::Empty {
            aggregate: aggregate.to_string(),
        })?;
        if let Some(stranger) = events.iter().find(|event| &event.aggregate != aggregate) {
            return Err(AppendError::WrongAggregate {
                aggregate: aggregate.to_string(),
                event_aggregate: stranger.aggregate.to_string(),
                event_id: stranger.event_id,
            });
        }
        let payload =
            encode_batch(events)
                .map(Bytes::from)
                .map_err(|source| AppendError::Encode {
                    aggregate: aggregate.to_string(),
                    source,
                })?;
        let mut headers = HeaderMap::new();
        headers.insert(NATS_MESSAGE_ID, message_id.as_str());
        if let Some(sequence) = expected.header() {
            headers.insert(
                NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
                sequence.to_string().as_str(),
            );
        }
        let types = events
            .iter()
            .map(|event| event.event.type_name())
            .collect::<Vec<_>>()
            .join(",");
        headers.insert(EVENT_TYPES_HEADER, types.as_str());
        inject_trace(&mut headers);

        let subject = event_subject(aggregate);
        let deadline = Instant::now() + self.config().append_timeout;
        let mut pause = Duration::from_millis(20);
        loop {
            let error = match self.publish_once(&subject, &headers, &payload).await {
                Ok(ack) => {
                    return Ok(Appended {
                        sequence: ack.sequence,
                        duplicate: ack.duplicate,
                    });
                }
                Err(error) => error,
            };
            match error.kind() {
                PublishErrorKind::WrongLastSequence => {
                    return self
                        .resolve_conflict(aggregate, &subject, expected, &message_id, &error)
                        .await;
                }
                PublishErrorKind::MaxPayloadExceeded => {
                    return Err(AppendError::TooLarge {
                        aggregate: aggregate.to_string(),
                        size: payload.len(),
                    });
                }
                // The server is restarting, the connection is back but JetStream is not yet,
                // the ack was lost, or the cluster answered with an error of its own while a
                // node rejoins or a stream elects its leader (the chaos soak saw a step's
                // outcome refused that way 12 s after a node came back, and the step run
                // again): the message id, and the conflict resolution above, make sending it
                // again harmless. A lasting refusal is reported once `append_timeout` passed.
                PublishErrorKind::TimedOut
                | PublishErrorKind::BrokenPipe
                | PublishErrorKind::StreamNotFound
                | PublishErrorKind::MaxAckPending
                | PublishErrorKind::Other
                    if Instant::now() + pause < deadline =>
                {
                    tracing::debug!(aggregate = %aggregate, error = %crate::error::error_chain(&error), "append not acknowledged; sending it again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
                PublishErrorKind::StreamNotFound => {
                    return Err(BusError::MissingTopology {
                        what: format!("stream {EVENTS_STREAM}"),
                    }
                    .into());
                }
                _ => {
                    return Err(self
                        .nats_error(format!("appending to {aggregate}"), error)
                        .into());
                }
            }
        }
    }

    async fn publish_once(
        &self,
        subject: &str,
        headers: &HeaderMap,
        payload: &Bytes,
    ) -> Result<
        async_nats::jetstream::publish::PublishAck,
        async_nats::jetstream::context::PublishError,
    > {
        let message = PublishMessage::build()
            .payload(payload.clone())
            .headers(headers.clone());
        self.inner
            .js
            .send_publish(subject.to_owned(), message)
            .await?
            .await
    }

    /// JetStream checks the expected sequence before the message id, so a retry of an append
    /// that was stored looks like a conflict. The append that moved the aggregate past
    /// `expected` is the first message after it; if that one carries our message id, the
    /// append is a duplicate of what is stored.
    async fn resolve_conflict(
        &self,
        aggregate: &AggregateId,
        subject: &str,
        expected: Expected,
        message_id: &str,
        error: &async_nats::jetstream::context::PublishError,
    ) -> Result<Appended, AppendError> {
        let after = match expected {
            Expected::NoEvents => 0,
            Expected::Sequence(sequence) => sequence,
            // Not sent with an expectation, so the server has no sequence to refuse; report
            // what it said.
            Expected::Any => {
                return Err(AppendError::Conflict {
                    aggregate: aggregate.to_string(),
                    expected,
                    actual: Actual(actual_sequence(&error.to_string())),
                });
            }
        };
        let first_after = self
            .inner
            .js
            .get_stream_no_info(EVENTS_STREAM)
            .await
            .map_err(|error| self.nats_error("reading the aggregate after a conflict", error))?
            .raw_message_builder()
            .sequence(after + 1)
            .next_by_subject(subject)
            .send()
            .await;
        if let Ok(stored) = first_after {
            let stored_id = stored
                .headers
                .get(NATS_MESSAGE_ID)
                .map(|value| value.as_str());
            if stored_id == Some(message_id) {
                return Ok(Appended {
                    sequence: stored.sequence,
                    duplicate: true,
                });
            }
        }
        Err(AppendError::Conflict {
            aggregate: aggregate.to_string(),
            expected,
            actual: Actual(actual_sequence(&error.to_string())),
        })
    }

    /// Every event of `aggregate` in order, and the sequence to pass back as
    /// [`Expected::Sequence`] (0 when it has none; use [`Loaded::expected`]).
    ///
    /// Reads with batched direct gets. In a cluster a replica may answer that has not yet
    /// applied the latest append; an append based on such a read fails with a conflict, so
    /// decisions stay correct.
    pub async fn load(&self, aggregate: &AggregateId) -> Result<Loaded, BusError> {
        self.load_after(aggregate, 0).await
    }

    /// The events of `aggregate` stored after stream sequence `after` (all of them for 0), for
    /// readers that keep a folded state and catch up instead of re-reading the whole
    /// aggregate: one request when nothing is new or the one new message was appended on
    /// `after`, two (the last message, then a scan) otherwise. `last_sequence` is `after` when nothing newer exists; the trace is
    /// the aggregate's first message's only when `after` is 0 (empty otherwise).
    pub async fn load_after(
        &self,
        aggregate: &AggregateId,
        after: u64,
    ) -> Result<Loaded, BusError> {
        let subject = event_subject(aggregate);
        if after > 0 {
            // Asking for "the next message of this subject after `after`" makes the server
            // walk the stream from there, which costs the length of the stream when nothing
            // new exists — the common case for a reader that is up to date. The subject's last
            // message comes from the per-subject index instead.
            let newest = self.direct_last(EVENTS_STREAM, &subject).await?;
            let Some(last) = newest.filter(|last| last.sequence > after) else {
                return Ok(Loaded {
                    events: Vec::new(),
                    last_sequence: after,
                    first_trace: opentelemetry::Context::new(),
                });
            };
            // The last message is the only new one when it was appended expecting `after` as
            // the subject's last sequence: the server stored it only because that held. Then
            // it is the whole answer, with no scan (the common case: one append since).
            if follows(&last, after) {
                return Ok(Loaded {
                    events: decode_batch(&last.subject, last.sequence, &last.payload)?,
                    last_sequence: last.sequence,
                    first_trace: opentelemetry::Context::new(),
                });
            }
        }
        let messages = self
            .direct_scan(EVENTS_STREAM, &subject, after + 1, None)
            .await?;
        let mut loaded = Loaded {
            events: Vec::new(),
            last_sequence: after,
            first_trace: messages
                .first()
                .filter(|_| after == 0)
                .map(|first| extract_trace(&first.headers))
                .unwrap_or_default(),
        };
        for message in messages {
            loaded.events.extend(decode_batch(
                &message.subject,
                message.sequence,
                &message.payload,
            )?);
            loaded.last_sequence = message.sequence;
        }
        Ok(loaded)
    }
}

/// Whether `message` was appended expecting `after` as its subject's last sequence (the
/// header JetStream checked before storing it), so nothing lies between the two.
fn follows(message: &crate::direct::StoredMessage, after: u64) -> bool {
    message
        .headers
        .get(NATS_EXPECTED_LAST_SUBJECT_SEQUENCE)
        .and_then(|value| value.as_str().parse::<u64>().ok())
        == Some(after)
}

/// The sequence in JetStream's "wrong last sequence: 11" error.
fn actual_sequence(error: &str) -> Option<u64> {
    let (_, rest) = error.rsplit_once("wrong last sequence: ")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// The payload of one event message: the events through the process's redaction layer
/// ([`railyard_core::redact`]; no secret the process holds, in any encoded form, and no URL
/// password reaches the stream), then sealed by the writer this process is
/// ([`railyard_core::authority`]; the seal covers what is stored). The common case, nothing
/// to mask and nothing to seal, costs one serialization and one scan of the bytes.
fn encode_batch(events: &[Envelope]) -> Result<Vec<u8>, serde_json::Error> {
    let payload = serde_json::to_vec(&EventBatchRef { events })?;
    let clean = std::str::from_utf8(&payload)
        .map(|text| matches!(railyard_core::redact::redact(text), Cow::Borrowed(_)))
        .unwrap_or(false);
    let mut owned = if clean {
        None
    } else {
        // Every string is masked on its own, so the JSON stays well-formed.
        let mut value: serde_json::Value = serde_json::from_slice(&payload)?;
        railyard_core::redact::redact_json(&mut value);
        Some(serde_json::from_value::<EventBatch>(value)?.events)
    };
    let sealing = railyard_core::authority::holds_any()
        && events
            .iter()
            .any(|e| railyard_core::authority::writer_of(&e.event).is_some());
    if sealing {
        let events = owned.get_or_insert_with(|| events.to_vec());
        events.iter_mut().for_each(railyard_core::authority::seal);
    }
    match owned {
        Some(events) => serde_json::to_vec(&EventBatchRef { events: &events }),
        None => Ok(payload),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_after_zero_is_no_events() {
        assert_eq!(Expected::after(0), Expected::NoEvents);
        assert_eq!(Expected::after(7), Expected::Sequence(7));
        assert_eq!(Expected::NoEvents.header(), Some(0));
        assert_eq!(Expected::Any.header(), None);
    }

    #[test]
    fn the_actual_sequence_is_read_from_the_server_error() {
        assert_eq!(
            actual_sequence(
                "wrong last sequence: wrong last sequence: 11 (code 400, error code 10071)"
            ),
            Some(11)
        );
        assert_eq!(actual_sequence("something else"), None);
    }
}

//! Dead letters. JetStream publishes a max-deliveries advisory when a consumer gives up on a
//! message; `RAILYARD_ADVISORIES` keeps those, so [`run_dlq_forwarder`] sees them even if it
//! was down when they fired. The forwarder copies the original message (fetched by sequence)
//! into `RAILYARD_DLQ` with where it came from and why it failed; operators list and replay
//! them with [`Bus::dead_letters`] and [`Bus::replay_dead_letter`].

use std::future::Future;

use async_nats::HeaderMap;
use async_nats::header::NATS_MESSAGE_ID;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::message::PublishMessage;
use bytes::Bytes;
use serde::Deserialize;

use crate::bus::Bus;
use crate::consumer::{NakRecord, RawConsumer, reason_key};
use crate::direct::StoredMessage;
use crate::error::BusError;
use crate::names::{
    ADVISORIES_STREAM, DLQ_AT, DLQ_CONSUMER, DLQ_DELIVERIES, DLQ_FORWARDER, DLQ_PREFIX, DLQ_REASON,
    DLQ_SOURCE_SEQUENCE, DLQ_SOURCE_STREAM, DLQ_SOURCE_SUBJECT, DLQ_STREAM, EVENTS_STREAM,
    REPLAY_OF_HEADER, WORK_STREAM, header_value,
};

/// A message a consumer gave up on, as stored in `RAILYARD_DLQ`.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// Its sequence in `RAILYARD_DLQ` (what `railyard dlq replay` takes).
    pub sequence: u64,
    /// The stream the message came from.
    pub source_stream: String,
    /// Its sequence there.
    pub source_sequence: u64,
    /// Its subject there.
    pub source_subject: String,
    /// The consumer that gave up.
    pub consumer: String,
    /// How often it was delivered.
    pub deliveries: u64,
    /// Why it failed: the last nak reason, or that it was never acknowledged.
    pub reason: String,
    /// When it was dead-lettered (RFC 3339).
    pub dead_at: String,
    /// The original payload (empty if the original was already gone).
    pub payload: Bytes,
    /// The original headers (`traceparent`, `Railyard-Event-Types`, ...) and the dead-letter
    /// headers.
    pub headers: HeaderMap,
}

/// What a dead letter is made of, before it is written.
pub(crate) struct DeadLetterDraft<'a> {
    pub(crate) stream: &'a str,
    pub(crate) consumer: &'a str,
    pub(crate) sequence: u64,
    pub(crate) subject: &'a str,
    pub(crate) deliveries: u64,
    pub(crate) reason: &'a str,
    /// The original headers, when the original still exists.
    pub(crate) headers: Option<&'a HeaderMap>,
    pub(crate) payload: Bytes,
}

/// `$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.<stream>.<consumer>`.
#[derive(Debug, Deserialize)]
struct MaxDeliveriesAdvisory {
    stream: String,
    consumer: String,
    stream_seq: u64,
    deliveries: u64,
}

/// Copies headers that are not NATS's own (`Nats-*` set by the server or for publishing).
fn copy_user_headers(from: &HeaderMap, to: &mut HeaderMap) {
    for (name, values) in from.iter() {
        let name: &str = name.as_ref();
        if name.to_ascii_lowercase().starts_with("nats-") || name.starts_with("Railyard-Dlq-") {
            continue;
        }
        for value in values {
            to.append(name, value.as_str());
        }
    }
}

impl Bus {
    /// Writes a dead letter to `railyard.dlq.<stream>.<consumer>`; its message id makes a second
    /// copy of the same delivery (another forwarder, a retry) a duplicate.
    pub(crate) async fn write_dead_letter(
        &self,
        draft: DeadLetterDraft<'_>,
    ) -> Result<u64, BusError> {
        let mut headers = HeaderMap::new();
        if let Some(original) = draft.headers {
            copy_user_headers(original, &mut headers);
        }
        headers.insert(
            NATS_MESSAGE_ID,
            format!("dlq.{}.{}.{}", draft.stream, draft.consumer, draft.sequence).as_str(),
        );
        headers.insert(DLQ_SOURCE_STREAM, draft.stream);
        headers.insert(DLQ_SOURCE_SEQUENCE, draft.sequence.to_string().as_str());
        headers.insert(DLQ_SOURCE_SUBJECT, draft.subject);
        headers.insert(DLQ_CONSUMER, draft.consumer);
        headers.insert(DLQ_DELIVERIES, draft.deliveries.to_string().as_str());
        headers.insert(DLQ_REASON, header_value(draft.reason).as_str());
        headers.insert(
            DLQ_AT,
            chrono::Utc::now()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                .as_str(),
        );
        let subject = format!("{DLQ_PREFIX}{}.{}", draft.stream, draft.consumer);
        let operation = || {
            format!(
                "writing dead letter for message {} of {} (RAILYARD_DLQ may be full: replay or \
                 remove dead letters)",
                draft.sequence, draft.stream
            )
        };
        let ack = self
            .inner
            .js
            .send_publish(
                subject,
                PublishMessage::build()
                    .payload(draft.payload)
                    .headers(headers),
            )
            .await
            .map_err(|error| self.nats_error(operation(), error))?
            .await
            .map_err(|error| self.nats_error(operation(), error))?;
        tracing::warn!(
            stream = draft.stream,
            consumer = draft.consumer,
            sequence = draft.sequence,
            deliveries = draft.deliveries,
            reason = draft.reason,
            dead_letter = ack.sequence,
            duplicate = ack.duplicate,
            "message dead-lettered"
        );
        Ok(ack.sequence)
    }

    /// Why a delivery failed: its last nak reason if the last delivery was nak'd, else that it
    /// was not acknowledged in time (with the last nak reason, if an earlier delivery had one).
    async fn dead_letter_reason(
        &self,
        stream: &str,
        consumer: &str,
        sequence: u64,
        deliveries: u64,
    ) -> String {
        let timed_out = format!(
            "not acknowledged within ack_wait after {deliveries} deliveries (consumer crashed or timed out)"
        );
        let record = match self.reasons_bucket().await {
            Ok(bucket) => bucket.get(reason_key(stream, consumer, sequence)).await,
            Err(error) => {
                tracing::warn!(error = %error, "cannot read nak reasons");
                return timed_out;
            }
        };
        let record = match record {
            Ok(Some(value)) => serde_json::from_slice::<NakRecord>(&value).ok(),
            Ok(None) => None,
            Err(error) => {
                tracing::warn!(error = %error, "cannot read a nak reason");
                None
            }
        };
        match record {
            Some(record) if record.delivered >= deliveries => record.reason,
            Some(record) => format!(
                "{timed_out}; delivery {} had failed with: {}",
                record.delivered, record.reason
            ),
            None => timed_out,
        }
    }

    /// Copies the message an advisory names into `RAILYARD_DLQ`; a work item is then removed
    /// from the work queue (it would otherwise stay there unacknowledged).
    async fn forward(&self, advisory: &MaxDeliveriesAdvisory) -> Result<u64, BusError> {
        let original = self
            .direct_get(&advisory.stream, advisory.stream_seq)
            .await?;
        let mut reason = self
            .dead_letter_reason(
                &advisory.stream,
                &advisory.consumer,
                advisory.stream_seq,
                advisory.deliveries,
            )
            .await;
        if original.is_none() {
            reason.push_str(&format!(
                " (the original message is gone from {}: only its coordinates are kept)",
                advisory.stream
            ));
        }
        let subject = original
            .as_ref()
            .map(|message| message.subject.clone())
            .unwrap_or_default();
        let sequence = self
            .write_dead_letter(DeadLetterDraft {
                stream: &advisory.stream,
                consumer: &advisory.consumer,
                sequence: advisory.stream_seq,
                subject: &subject,
                deliveries: advisory.deliveries,
                reason: &reason,
                headers: original.as_ref().map(|message| &message.headers),
                payload: original
                    .as_ref()
                    .map(|message| message.payload.clone())
                    .unwrap_or_default(),
            })
            .await?;
        if advisory.stream == WORK_STREAM && original.is_some() {
            let work = self
                .inner
                .js
                .get_stream_no_info(WORK_STREAM)
                .await
                .map_err(|error| self.nats_error("opening the work stream", error))?;
            if let Err(error) = work.delete_message(advisory.stream_seq).await {
                tracing::warn!(sequence = advisory.stream_seq, error = %error, "dead work item could not be removed from the work queue");
            }
        }
        Ok(sequence)
    }

    /// Every dead letter in `RAILYARD_DLQ`, oldest first.
    pub async fn dead_letters(&self) -> Result<Vec<DeadLetter>, BusError> {
        let messages = self
            .direct_scan(DLQ_STREAM, &format!("{DLQ_PREFIX}>"), 1, None)
            .await?;
        Ok(messages.into_iter().map(dead_letter_from).collect())
    }

    /// How many dead letters `RAILYARD_DLQ` holds (replayed ones included: they stay as a
    /// record).
    pub async fn dead_letter_count(&self) -> Result<u64, BusError> {
        Ok(self.stream_info(DLQ_STREAM).await?.state.messages)
    }

    /// The dead letter at `sequence` in `RAILYARD_DLQ`.
    pub async fn dead_letter(&self, sequence: u64) -> Result<DeadLetter, BusError> {
        self.direct_get(DLQ_STREAM, sequence)
            .await?
            .map(dead_letter_from)
            .ok_or(BusError::DeadLetterNotFound { sequence })
    }

    /// Publishes a dead letter's original payload (and its headers) to its original subject
    /// again, with `Railyard-Replay-Of: <sequence>`; returns the new message's sequence. The
    /// dead letter stays in `RAILYARD_DLQ` as a record; replaying the same one twice within the
    /// dedupe window stores it once.
    ///
    /// Dead events from `RAILYARD_EVENTS` are refused ([`BusError::ReplayRefused`]): appending
    /// them again would make their aggregate fold them twice.
    pub async fn replay_dead_letter(&self, sequence: u64) -> Result<u64, BusError> {
        let letter = self.dead_letter(sequence).await?;
        if letter.source_stream == EVENTS_STREAM {
            return Err(BusError::ReplayRefused {
                sequence,
                source_sequence: letter.source_sequence,
                consumer: letter.consumer,
            });
        }
        if letter.source_subject.is_empty() {
            return Err(BusError::Nats {
                operation: format!("replaying dead letter {sequence}"),
                source: "its original message was already gone when it was dead-lettered, so there is nothing to replay".into(),
            });
        }
        let mut headers = HeaderMap::new();
        copy_user_headers(&letter.headers, &mut headers);
        headers.insert(NATS_MESSAGE_ID, format!("replay.dlq.{sequence}").as_str());
        headers.insert(REPLAY_OF_HEADER, sequence.to_string().as_str());
        let operation = || {
            format!(
                "replaying dead letter {sequence} to {}",
                letter.source_subject
            )
        };
        let ack = self
            .inner
            .js
            .send_publish(
                letter.source_subject.clone(),
                PublishMessage::build()
                    .payload(letter.payload.clone())
                    .headers(headers),
            )
            .await
            .map_err(|error| self.nats_error(operation(), error))?
            .await
            .map_err(|error| self.nats_error(operation(), error))?;
        tracing::info!(dead_letter = sequence, subject = %letter.source_subject, sequence = ack.sequence, "dead letter replayed");
        Ok(ack.sequence)
    }
}

fn dead_letter_from(message: StoredMessage) -> DeadLetter {
    let text = |name: &str| message.header(name).unwrap_or_default().to_owned();
    let number = |name: &str| {
        message
            .header(name)
            .and_then(|value| value.parse().ok())
            .unwrap_or(0)
    };
    DeadLetter {
        sequence: message.sequence,
        source_stream: text(DLQ_SOURCE_STREAM),
        source_sequence: number(DLQ_SOURCE_SEQUENCE),
        source_subject: text(DLQ_SOURCE_SUBJECT),
        consumer: text(DLQ_CONSUMER),
        deliveries: number(DLQ_DELIVERIES),
        reason: text(DLQ_REASON),
        dead_at: text(DLQ_AT),
        payload: message.payload,
        headers: message.headers,
    }
}

/// Copies dead letters into `RAILYARD_DLQ` until `shutdown` completes.
///
/// Reads the max-deliveries advisories kept in `RAILYARD_ADVISORIES` through the shared durable
/// consumer `railyard-dlq-forwarder`, so several forwarders split the work, and one that was
/// down catches up. An advisory is acknowledged only once its dead letter is stored; failures
/// are retried with backoff, forever. Returns an error only when the server stays unreachable
/// for `consumer_error_budget`.
pub async fn run_dlq_forwarder(bus: Bus, shutdown: impl Future) -> Result<(), BusError> {
    let config = bus.config();
    let consumer_config = pull::Config {
        durable_name: Some(DLQ_FORWARDER.to_owned()),
        description: Some("Copies dead letters into RAILYARD_DLQ".to_owned()),
        deliver_policy: DeliverPolicy::All,
        ack_policy: AckPolicy::Explicit,
        ack_wait: config.ack_wait,
        max_deliver: -1,
        ..Default::default()
    };
    let mut advisories = RawConsumer::durable(&bus, ADVISORIES_STREAM, consumer_config).await?;
    tracing::info!("dead-letter forwarder started");
    tokio::pin!(shutdown);
    loop {
        let next = tokio::select! {
            _ = &mut shutdown => {
                tracing::info!("dead-letter forwarder stopped");
                return Ok(());
            }
            next = advisories.next() => next?,
        };
        let Some(delivery) = next else {
            return Ok(());
        };
        let advisory =
            match serde_json::from_slice::<MaxDeliveriesAdvisory>(&delivery.message.payload) {
                Ok(advisory) => advisory,
                Err(error) => {
                    tracing::error!(
                        subject = %delivery.message.subject,
                        error = %error,
                        "unreadable max-deliveries advisory; it stays in RAILYARD_ADVISORIES"
                    );
                    delivery.acking.dead_letter_advisory().await;
                    continue;
                }
            };
        match bus.forward(&advisory).await {
            Ok(_) => {
                if let Err(error) = delivery.acking.ack_advisory().await {
                    tracing::warn!(error = %error, "advisory not acknowledged; its dead letter will be written again and deduplicated");
                }
            }
            Err(error) => {
                tracing::error!(
                    stream = %advisory.stream,
                    consumer = %advisory.consumer,
                    sequence = advisory.stream_seq,
                    error = %error,
                    "cannot write a dead letter; retrying"
                );
                if let Err(error) = delivery.acking.nak_advisory().await {
                    tracing::warn!(error = %error, "advisory not given back; it is retried after ack_wait");
                }
            }
        }
    }
}

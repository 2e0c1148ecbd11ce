//! The rejection log and the work queue's publish side: refused inputs (why, from where, what)
//! go to `RAILYARD_REJECTED`, never to the event stream; work items go to `RAILYARD_WORK`.

use async_nats::HeaderMap;
use async_nats::header::NATS_MESSAGE_ID;
use async_nats::jetstream::message::PublishMessage;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::bus::Bus;
use crate::error::BusError;
use crate::names::{
    REJECTED_PREFIX, REJECTED_STREAM, WORK_PREFIX, WORK_STREAM, check_subject, check_token,
};
use crate::trace::inject_trace;

/// Bodies longer than this are cut in the rejection log.
const MAX_REJECTED_BODY: usize = 64 * 1024;

/// A refused input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    /// Which door it came through: `github`, `gitlab`, `cdevents`, `nats`, `http`, ...
    /// (`[A-Za-z0-9_-]`, it becomes the subject token).
    pub source: String,
    /// Where from: remote address, repository, CloudEvents source.
    pub origin: String,
    /// Why it was refused, as answered to the sender.
    pub reason: String,
    /// When it arrived.
    pub received_at: DateTime<Utc>,
    /// The body as received (cut at 64 KiB, invalid UTF-8 replaced).
    pub body: String,
}

impl Rejection {
    /// A rejection received now, keeping at most 64 KiB of `body`.
    pub fn new(
        source: impl Into<String>,
        origin: impl Into<String>,
        reason: impl Into<String>,
        body: &[u8],
    ) -> Rejection {
        let body = &body[..body.len().min(MAX_REJECTED_BODY)];
        Rejection {
            source: source.into(),
            origin: origin.into(),
            reason: reason.into(),
            received_at: Utc::now(),
            body: String::from_utf8_lossy(body).into_owned(),
        }
    }
}

/// A rejection as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRejection {
    /// Its sequence in `RAILYARD_REJECTED` (a cursor for the next page).
    pub sequence: u64,
    /// The rejection.
    pub rejection: Rejection,
}

impl Bus {
    /// Appends a rejection to `railyard.rejected.<source>`; returns its sequence.
    pub async fn record_rejection(&self, rejection: &Rejection) -> Result<u64, BusError> {
        check_token("rejection source", &rejection.source)?;
        let payload = serde_json::to_vec(rejection).map_err(|error| BusError::Nats {
            operation: "encoding a rejection".to_owned(),
            source: Box::new(error),
        })?;
        let subject = format!("{REJECTED_PREFIX}{}", rejection.source);
        let operation = || format!("recording a rejection from {}", rejection.source);
        let ack = self
            .inner
            .js
            .publish(subject, payload.into())
            .await
            .map_err(|error| self.nats_error(operation(), error))?
            .await
            .map_err(|error| self.nats_error(operation(), error))?;
        Ok(ack.sequence)
    }

    /// Up to `limit` rejections from sequence `from` on (1 for the oldest kept), oldest first.
    /// Entries that do not decode are skipped with a warning.
    pub async fn rejections(
        &self,
        from: u64,
        limit: usize,
    ) -> Result<Vec<StoredRejection>, BusError> {
        let messages = self
            .direct_scan(
                REJECTED_STREAM,
                &format!("{REJECTED_PREFIX}>"),
                from,
                Some(limit),
            )
            .await?;
        Ok(messages
            .into_iter()
            .filter_map(|message| match serde_json::from_slice(&message.payload) {
                Ok(rejection) => Some(StoredRejection {
                    sequence: message.sequence,
                    rejection,
                }),
                Err(error) => {
                    tracing::warn!(sequence = message.sequence, error = %error, "undecodable rejection skipped");
                    None
                }
            })
            .collect())
    }

    /// Publishes a work item to `subject` (`railyard.work.<...>`, no wildcards) with the
    /// current trace context; `message_id` makes a repeated publish within the dedupe window a
    /// no-op. Returns its sequence in `RAILYARD_WORK`.
    pub async fn publish_work(
        &self,
        subject: &str,
        payload: Bytes,
        message_id: &str,
    ) -> Result<u64, BusError> {
        let headers = work_headers(subject, message_id)?;
        let operation = || format!("publishing work to {subject}");
        let ack = self
            .inner
            .js
            .send_publish(
                subject.to_owned(),
                PublishMessage::build().payload(payload).headers(headers),
            )
            .await
            .map_err(|error| self.nats_error(operation(), error))?
            .await
            .map_err(|error| self.nats_error(operation(), error))?;
        Ok(ack.sequence)
    }

    /// [`Bus::publish_work`] without waiting for JetStream's answer: one message, no round
    /// trip, and no sequence back. The message id deduplicates it as before. A publish lost on
    /// the way (a node going down, the queue's leader being elected) stores nothing and says
    /// nothing, so only for work that is offered again when it is not done (the promoter's
    /// steps: a sweep offers a ready step that no offer waits for). The error is only a
    /// failure to send.
    pub async fn publish_work_unconfirmed(
        &self,
        subject: &str,
        payload: Bytes,
        message_id: &str,
    ) -> Result<(), BusError> {
        let headers = work_headers(subject, message_id)?;
        self.inner
            .client
            .publish_with_headers(subject.to_owned(), headers, payload)
            .await
            .map_err(|error| self.nats_error(format!("publishing work to {subject}"), error))
    }

    /// Whether a work item published to `subject` is still in the work queue (waiting, or
    /// taken and not yet acknowledged): one read of the queue's per-subject index.
    pub async fn work_waiting(&self, subject: &str) -> Result<bool, BusError> {
        check_subject("work subject", subject, WORK_PREFIX, false)?;
        Ok(self.direct_last(WORK_STREAM, subject).await?.is_some())
    }
}

/// The headers of a work item offered on `subject` (checked to be a work subject): its message
/// id, which deduplicates offers of the same state, and the trace it continues.
fn work_headers(subject: &str, message_id: &str) -> Result<HeaderMap, BusError> {
    check_subject("work subject", subject, WORK_PREFIX, false)?;
    let mut headers = HeaderMap::new();
    headers.insert(NATS_MESSAGE_ID, message_id);
    inject_trace(&mut headers);
    Ok(headers)
}

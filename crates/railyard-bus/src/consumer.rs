//! Reading streams: durable pull consumers ([`Bus::durable`], [`Bus::work_consumer`]) that
//! survive reconnects and server restarts, the ordered replay used to rebuild projections
//! ([`Bus::replay`]), and the acknowledgement of each [`Delivery`]: confirmed acks, naks with
//! backoff that remember their reason for the dead-letter queue.

use std::fmt;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{self, AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::message::Acker;
use async_nats::jetstream::{self, AckKind};
use bytes::Bytes;
use futures::StreamExt;
use railyard_core::{AggregateId, Envelope};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::append::decode_batch;
use crate::bus::Bus;
use crate::dlq::DeadLetterDraft;
use crate::error::BusError;
use crate::names::{
    EVENTS_PREFIX, EVENTS_STREAM, WORK_PREFIX, WORK_STREAM, check_subject, check_token,
};
use crate::trace::extract_trace;

/// Where a new durable consumer starts (an existing one resumes where it was).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeliverFrom {
    /// From the first message in the stream.
    #[default]
    All,
    /// Only messages stored after the consumer is created.
    New,
    /// From this stream sequence on.
    Sequence(u64),
}

/// A durable consumer: its name, what it reads and where it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerSpec {
    /// Durable name, shared by every instance of a service (`[A-Za-z0-9_-]{1,64}`).
    pub durable: String,
    /// Full subjects to read (`railyard.events.release.>`); empty reads the whole stream.
    pub filter_subjects: Vec<String>,
    /// Where a new consumer starts.
    pub deliver: DeliverFrom,
}

impl ConsumerSpec {
    /// A consumer named `durable` that reads the whole stream from the start.
    pub fn new(durable: impl Into<String>) -> ConsumerSpec {
        ConsumerSpec {
            durable: durable.into(),
            filter_subjects: Vec::new(),
            deliver: DeliverFrom::All,
        }
    }

    /// Adds a subject filter (wildcards allowed).
    pub fn filter(mut self, subject: impl Into<String>) -> ConsumerSpec {
        self.filter_subjects.push(subject.into());
        self
    }

    /// Sets where a new consumer starts.
    pub fn deliver(mut self, deliver: DeliverFrom) -> ConsumerSpec {
        self.deliver = deliver;
        self
    }
}

/// A nak reason as remembered for the dead-letter forwarder.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct NakRecord {
    pub(crate) reason: String,
    pub(crate) delivered: u64,
}

/// The key of a delivery's nak reason in `railyard-dlq-reasons`.
pub(crate) fn reason_key(stream: &str, consumer: &str, sequence: u64) -> String {
    format!("{stream}.{consumer}.{sequence}")
}

/// What every delivery needs to settle itself.
pub(crate) struct Acking {
    bus: Bus,
    /// `None` for replayed messages, whose consumer needs no acks.
    acker: Option<Acker>,
    stream: &'static str,
    consumer: String,
    stream_sequence: u64,
    delivered: u64,
    subject: String,
    headers: HeaderMap,
    payload: Bytes,
}

impl fmt::Debug for Acking {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Acking")
            .field("stream", &self.stream)
            .field("consumer", &self.consumer)
            .field("stream_sequence", &self.stream_sequence)
            .field("delivered", &self.delivered)
            .field("acks", &self.acker.is_some())
            .finish_non_exhaustive()
    }
}

impl Acking {
    async fn ack(self) -> Result<(), BusError> {
        let Some(acker) = &self.acker else {
            return Ok(());
        };
        acker
            .double_ack_with(AckKind::Ack)
            .await
            .map_err(|error| self.error("acknowledging", error))
    }

    async fn ack_unconfirmed(self) -> Result<(), BusError> {
        let Some(acker) = &self.acker else {
            return Ok(());
        };
        acker
            .ack_with(AckKind::Ack)
            .await
            .map_err(|error| self.error("acknowledging", error))
    }

    async fn nak(self, reason: &str) -> Result<(), BusError> {
        let Some(acker) = &self.acker else {
            tracing::debug!(
                sequence = self.stream_sequence,
                reason,
                "nak of a replayed message ignored"
            );
            return Ok(());
        };
        // Remember the reason first: if this was the last allowed delivery, the forwarder may
        // read it as soon as the nak lands.
        if let Err(error) = self.remember_reason(reason).await {
            tracing::warn!(
                stream = self.stream,
                consumer = %self.consumer,
                sequence = self.stream_sequence,
                error = %error,
                "cannot remember the nak reason; a dead letter would say only that it was not acknowledged"
            );
        }
        let delay = self.bus.config().nak_delay(self.delivered);
        acker
            .double_ack_with(AckKind::Nak(delay))
            .await
            .map_err(|error| self.error("rejecting (nak)", error))
    }

    async fn remember_reason(&self, reason: &str) -> Result<(), BusError> {
        let record = NakRecord {
            reason: reason.to_owned(),
            delivered: self.delivered,
        };
        let value = serde_json::to_vec(&record).map_err(|error| BusError::Nats {
            operation: "encoding a nak reason".to_owned(),
            source: Box::new(error),
        })?;
        self.bus
            .reasons_bucket()
            .await?
            .put(
                reason_key(self.stream, &self.consumer, self.stream_sequence),
                value.into(),
            )
            .await
            .map(|_| ())
            .map_err(|error| self.bus.nats_error("remembering a nak reason", error))
    }

    async fn in_progress(&self) -> Result<(), BusError> {
        let Some(acker) = &self.acker else {
            return Ok(());
        };
        acker
            .ack_with(AckKind::Progress)
            .await
            .map_err(|error| self.error("extending the ack deadline", error))
    }

    async fn dead_letter(self, reason: &str) -> Result<u64, BusError> {
        let sequence = self
            .bus
            .write_dead_letter(DeadLetterDraft {
                stream: self.stream,
                consumer: &self.consumer,
                sequence: self.stream_sequence,
                subject: &self.subject,
                deliveries: self.delivered,
                reason,
                headers: Some(&self.headers),
                payload: self.payload.clone(),
            })
            .await?;
        if let Some(acker) = &self.acker {
            acker
                .double_ack_with(AckKind::Term)
                .await
                .map_err(|error| self.error("terminating", error))?;
        }
        Ok(sequence)
    }

    /// Acknowledges an advisory (the forwarder's own consumer).
    pub(crate) async fn ack_advisory(self) -> Result<(), BusError> {
        self.ack().await
    }

    /// Gives an advisory back for a retry after the backoff, without recording a reason.
    pub(crate) async fn nak_advisory(self) -> Result<(), BusError> {
        let Some(acker) = &self.acker else {
            return Ok(());
        };
        let delay = self.bus.config().nak_delay(self.delivered);
        acker
            .double_ack_with(AckKind::Nak(delay))
            .await
            .map_err(|error| self.error("rejecting (nak)", error))
    }

    /// Stops redelivering an advisory that cannot be read; it stays in the stream.
    pub(crate) async fn dead_letter_advisory(self) {
        if let Some(acker) = &self.acker {
            if let Err(error) = acker.double_ack_with(AckKind::Term).await {
                tracing::warn!(error = %self.error("terminating", error), "unreadable advisory will be delivered again");
            }
        }
    }

    fn error(&self, what: &str, error: async_nats::Error) -> BusError {
        self.bus.nats_error(
            format!(
                "{what} message {} of {} for consumer {}",
                self.stream_sequence, self.stream, self.consumer
            ),
            error,
        )
    }
}

/// One delivery of an event message: the events of one append.
#[derive(Debug)]
pub struct Delivery {
    /// The message's sequence in `RAILYARD_EVENTS`; a projection stores it as its checkpoint.
    pub stream_sequence: u64,
    /// The consumer's own sequence of this delivery.
    pub consumer_sequence: u64,
    /// `railyard.events.<aggregate>`.
    pub subject: String,
    /// The events of the append, in order.
    pub envelopes: Vec<Envelope>,
    /// Which attempt this is (1 for the first delivery).
    pub delivered: u64,
    /// Messages still waiting for this consumer after this one.
    pub pending: u64,
    /// The trace context the append carried.
    pub trace: opentelemetry::Context,
    acking: Acking,
}

impl Delivery {
    /// The aggregate the events belong to.
    pub fn aggregate(&self) -> Option<AggregateId> {
        self.subject.strip_prefix(EVENTS_PREFIX)?.parse().ok()
    }

    /// The release the events belong to, when they belong to one.
    pub fn release(&self) -> Option<railyard_core::ReleaseId> {
        match self.aggregate()? {
            AggregateId::Release(id) => Some(id),
            _ => None,
        }
    }

    /// A `railyard.consume` span whose parent is the appender's span, for handling this
    /// delivery inside the same trace.
    pub fn span(&self) -> tracing::Span {
        consume_span(
            &self.subject,
            self.stream_sequence,
            self.delivered,
            &self.trace,
        )
    }

    /// Acknowledges it and waits for the server to confirm, so it is not delivered again.
    pub async fn ack(self) -> Result<(), BusError> {
        self.acking.ack().await
    }

    /// Acknowledges it without waiting for the server's confirmation: one message out, no
    /// round trip. An ack lost on the way (a node going down) lets the message be delivered
    /// again after the ack wait, so only a consumer for which handling a message twice is
    /// harmless uses it (the promoter's dispatcher: looking at a release again re-offers, with
    /// the same message ids, what was offered). The error is only a failure to send.
    pub async fn ack_unconfirmed(self) -> Result<(), BusError> {
        self.acking.ack_unconfirmed().await
    }

    /// Gives it back after a failure: it is redelivered after the backoff for this attempt,
    /// and `reason` is remembered so that, after the last allowed delivery, the dead letter
    /// says why.
    pub async fn nak(self, reason: &str) -> Result<(), BusError> {
        self.acking.nak(reason).await
    }

    /// Tells the server the handler is still working, restarting the ack wait.
    pub async fn in_progress(&self) -> Result<(), BusError> {
        self.acking.in_progress().await
    }

    /// Gives up on it now: copies it to `RAILYARD_DLQ` with `reason` and stops redelivery.
    /// Returns its sequence in the dead-letter stream.
    pub async fn dead_letter(self, reason: &str) -> Result<u64, BusError> {
        self.acking.dead_letter(reason).await
    }
}

/// One delivery of a work item from `RAILYARD_WORK`.
#[derive(Debug)]
pub struct WorkItem {
    /// Its sequence in `RAILYARD_WORK`.
    pub stream_sequence: u64,
    /// `railyard.work.<...>`.
    pub subject: String,
    /// What the publisher sent.
    pub payload: Bytes,
    /// Which attempt this is (1 for the first delivery).
    pub delivered: u64,
    /// Items still waiting for this consumer after this one.
    pub pending: u64,
    /// The trace context the publisher carried.
    pub trace: opentelemetry::Context,
    acking: Acking,
}

impl WorkItem {
    /// A `railyard.consume` span in the publisher's trace.
    pub fn span(&self) -> tracing::Span {
        consume_span(
            &self.subject,
            self.stream_sequence,
            self.delivered,
            &self.trace,
        )
    }

    /// Acknowledges it (removing it from the work queue) and waits for the confirmation.
    pub async fn ack(self) -> Result<(), BusError> {
        self.acking.ack().await
    }

    /// Acknowledges it without waiting for the confirmation (one message, no round trip); an
    /// ack lost on the way lets the item be delivered again after the ack wait, so only for
    /// work that a second delivery finds done (see [`Delivery::ack_unconfirmed`]).
    pub async fn ack_unconfirmed(self) -> Result<(), BusError> {
        self.acking.ack_unconfirmed().await
    }

    /// Gives it back after a failure, to be retried after the backoff; `reason` goes into the
    /// dead letter if this was the last allowed attempt.
    pub async fn nak(self, reason: &str) -> Result<(), BusError> {
        self.acking.nak(reason).await
    }

    /// Restarts the ack wait while the work goes on.
    pub async fn in_progress(&self) -> Result<(), BusError> {
        self.acking.in_progress().await
    }

    /// Gives up on it now: copies it to `RAILYARD_DLQ` with `reason` and stops redelivery.
    pub async fn dead_letter(self, reason: &str) -> Result<u64, BusError> {
        self.acking.dead_letter(reason).await
    }
}

fn consume_span(
    subject: &str,
    sequence: u64,
    delivered: u64,
    parent: &opentelemetry::Context,
) -> tracing::Span {
    let span = tracing::info_span!(
        "railyard.consume",
        subject,
        sequence,
        delivered,
        otel.kind = "consumer"
    );
    // Fails only when no OpenTelemetry layer is installed, where there is nothing to link.
    let _ = span.set_parent(parent.clone());
    span
}

/// The pull loop shared by every consumer kind.
pub(crate) struct RawConsumer {
    bus: Bus,
    stream: &'static str,
    name: String,
    kind: Kind,
}

enum Kind {
    Durable(Box<DurableState>),
    Replay(Box<ReplayState>),
}

/// An ordered read of the event stream kept by hand rather than with async-nats' ordered
/// consumer: that one stops waking up after a missed heartbeat (a killed node takes its
/// single-replica consumer with it), so a read model could stall until restarted. Here any
/// pull error, missed heartbeat or gap in the consumer's sequence drops the ephemeral
/// consumer and creates a new one just after the last message handed out.
struct ReplayState {
    /// The stream sequence the next consumer starts at.
    next_sequence: u64,
    /// The consumer sequence of the last message handed out by the current consumer.
    consumer_sequence: u64,
    /// The current ephemeral consumer's name, deleted when it is replaced.
    consumer_name: Option<String>,
    /// `next_sequence` when the last stall check found it stored but not delivered.
    suspect: Option<u64>,
    messages: Option<pull::Stream>,
}

struct DurableState {
    config: pull::Config,
    consumer: consumer::PullConsumer,
    messages: Option<pull::Stream>,
}

/// A raw message with what its delivery needs.
pub(crate) struct RawDelivery {
    pub(crate) message: async_nats::Message,
    pub(crate) stream_sequence: u64,
    pub(crate) consumer_sequence: u64,
    pub(crate) delivered: u64,
    pub(crate) pending: u64,
    pub(crate) acking: Acking,
}

impl RawConsumer {
    pub(crate) async fn durable(
        bus: &Bus,
        stream: &'static str,
        config: pull::Config,
    ) -> Result<RawConsumer, BusError> {
        let name = config.durable_name.clone().unwrap_or_default();
        let mut patience = Patience::new();
        let consumer = loop {
            match create_durable(bus, stream, &config).await {
                Ok(consumer) => break consumer,
                Err(error) => patience.pause_or(bus, &name, error).await?,
            }
        };
        Ok(RawConsumer {
            bus: bus.clone(),
            stream,
            name,
            kind: Kind::Durable(Box::new(DurableState {
                config,
                consumer,
                messages: None,
            })),
        })
    }

    /// Waits for the next message; `None` once the connection is closed. Pull failures
    /// (server restart, lost heartbeats, deleted consumer) are retried for
    /// `consumer_error_budget` before the error is returned.
    pub(crate) async fn next(&mut self) -> Result<Option<RawDelivery>, BusError> {
        let mut failing_since: Option<Instant> = None;
        let mut last_failure: Option<Instant> = None;
        // A pull that ran this long without an error was healthy (heartbeats came), even
        // though no message did: a failure after it starts a new episode with the whole
        // budget. Without this, a consumer idle for longer than the budget after one failure
        // gave up at its next failure (the chaos soak saw services exit on a node loss).
        let healthy_after = 3 * self.bus.config().idle_heartbeat;
        let mut pause = Duration::from_millis(50);
        loop {
            if self.bus.is_closed() {
                return Ok(None);
            }
            let outcome = self.pull().await;
            let error = match outcome {
                Ok(None) => return Ok(None),
                Ok(Some(message)) => return self.delivery(message).map(Some),
                Err(error) => error,
            };
            let now = Instant::now();
            if last_failure.is_some_and(|last| now.duration_since(last) > healthy_after) {
                failing_since = None;
                pause = Duration::from_millis(50);
            }
            last_failure = Some(now);
            let since = *failing_since.get_or_insert(now);
            if since.elapsed() >= self.bus.config().consumer_error_budget {
                return Err(error);
            }
            tracing::warn!(
                stream = self.stream,
                consumer = %self.name,
                error = %crate::error::error_chain(&error),
                "pulling messages failed; pulling again"
            );
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }

    async fn pull(&mut self) -> Result<Option<jetstream::Message>, BusError> {
        match &mut self.kind {
            Kind::Durable(state) => {
                let DurableState {
                    config: consumer_config,
                    consumer,
                    messages,
                } = state.as_mut();
                if messages.is_none() {
                    let config = self.bus.config();
                    let stream = consumer
                        .stream()
                        .max_messages_per_batch(config.consumer_batch)
                        .expires(config.pull_expires)
                        .heartbeat(config.idle_heartbeat)
                        .messages()
                        .await
                        .map_err(|error| {
                            self.bus
                                .nats_error(format!("pulling from consumer {}", self.name), error)
                        })?;
                    *messages = Some(stream);
                }
                let Some(stream) = messages.as_mut() else {
                    return Ok(None);
                };
                match stream.next().await {
                    None => Ok(None),
                    Some(Ok(message)) => Ok(Some(message)),
                    Some(Err(error)) => {
                        // Start a fresh pull next time; recreate the consumer if it is gone.
                        *messages = None;
                        if error.kind() == pull::MessagesErrorKind::ConsumerDeleted {
                            *consumer =
                                create_durable(&self.bus, self.stream, consumer_config).await?;
                        }
                        Err(self
                            .bus
                            .nats_error(format!("pulling from consumer {}", self.name), error))
                    }
                }
            }
            Kind::Replay(state) => {
                if state.messages.is_none() {
                    state.start(&self.bus).await?;
                }
                let config = self.bus.config();
                let next = loop {
                    let Some(messages) = state.messages.as_mut() else {
                        return Ok(None);
                    };
                    tokio::select! {
                        next = messages.next() => break next,
                        () = config.clock.sleep(2 * config.idle_heartbeat) => {}
                    }
                    if let Some(error) = state.stalled(&self.bus, self.stream).await {
                        state.messages = None;
                        return Err(error);
                    }
                };
                let error = match next {
                    None => return Ok(None),
                    Some(Ok(message)) => match message.info() {
                        Ok(info) if info.consumer_sequence == state.consumer_sequence + 1 => {
                            state.consumer_sequence = info.consumer_sequence;
                            state.next_sequence = info.stream_sequence + 1;
                            state.suspect = None;
                            return Ok(Some(message));
                        }
                        Ok(info) => self.bus.nats_error(
                            format!(
                                "replaying {}: message {} of the replay arrived after {}",
                                self.stream, info.consumer_sequence, state.consumer_sequence
                            ),
                            "a message was lost on the way; the replay starts again after the \
                             last message it delivered",
                        ),
                        Err(error) => self.bus.nats_error(
                            format!(
                                "reading the delivery info of a replayed message from {}",
                                self.stream
                            ),
                            error,
                        ),
                    },
                    Some(Err(error)) => self
                        .bus
                        .nats_error(format!("replaying {}", self.stream), error),
                };
                // Start again after the last message handed out.
                state.messages = None;
                Err(error)
            }
        }
    }

    fn delivery(&self, message: jetstream::Message) -> Result<RawDelivery, BusError> {
        let info = message.info().map_err(|error| {
            self.bus.nats_error(
                format!(
                    "reading the delivery info of a message from {}",
                    self.stream
                ),
                error,
            )
        })?;
        let stream_sequence = info.stream_sequence;
        let consumer_sequence = info.consumer_sequence;
        let delivered = u64::try_from(info.delivered).unwrap_or(1);
        let pending = info.pending;
        let replayed = matches!(self.kind, Kind::Replay(_));
        let (message, acker) = message.split();
        let acking = Acking {
            bus: self.bus.clone(),
            acker: (!replayed).then_some(acker),
            stream: self.stream,
            consumer: self.name.clone(),
            stream_sequence,
            delivered,
            subject: message.subject.to_string(),
            headers: message.headers.clone().unwrap_or_default(),
            payload: message.payload.clone(),
        };
        Ok(RawDelivery {
            message,
            stream_sequence,
            consumer_sequence,
            delivered,
            pending,
            acking,
        })
    }
}

async fn create_durable(
    bus: &Bus,
    stream: &'static str,
    config: &pull::Config,
) -> Result<consumer::PullConsumer, BusError> {
    let name = config.durable_name.clone().unwrap_or_default();
    let handle = bus
        .inner
        .js
        .get_stream_no_info(stream)
        .await
        .map_err(|error| bus.nats_error(format!("opening stream {stream}"), error))?;
    handle
        .create_consumer(config.clone())
        .await
        .map_err(|error| {
            if crate::error::is_stream_not_found(&error) {
                BusError::MissingTopology {
                    what: format!("stream {stream}"),
                }
            } else {
                bus.nats_error(
                    format!(
                        "creating durable consumer {name} on {stream} (if it exists with settings \
                     that cannot change, such as where it starts, delete it or use another name)"
                    ),
                    error,
                )
            }
        })
}

impl ReplayState {
    /// Called after two heartbeat intervals without a message: asks the stream's leader for
    /// its last sequence, and when a message the replay has not seen was already stored at
    /// the previous check, says the consumer went silent. A consumer re-created while a
    /// cluster loses a node can go on sending heartbeats without ever delivering (the chaos
    /// soak saw a leading planner plan nothing for minutes); heartbeats alone do not show
    /// that. Two checks in a row, so a message on its way at the first is not taken for a
    /// stall. `None` while there is nothing to read, or when the leader cannot be asked (the
    /// pull's own errors cover a lost connection).
    async fn stalled(&mut self, bus: &Bus, stream: &str) -> Option<BusError> {
        let last = match bus.stream_last_sequence().await {
            Ok(last) => last,
            Err(error) => {
                tracing::debug!(error = %crate::error::error_chain(&error), "cannot check whether the replay is behind");
                return None;
            }
        };
        if last < self.next_sequence {
            self.suspect = None;
            return None;
        }
        if self.suspect != Some(self.next_sequence) {
            self.suspect = Some(self.next_sequence);
            return None;
        }
        self.suspect = None;
        Some(bus.nats_error(
            format!("replaying {stream}"),
            format!(
                "message {} is stored but the replay consumer delivered nothing for {:?}; \
                     a new consumer starts after the last message it delivered",
                self.next_sequence,
                4 * bus.config().idle_heartbeat
            ),
        ))
    }

    /// Replaces the consumer with a new one starting at `next_sequence`.
    async fn start(&mut self, bus: &Bus) -> Result<(), BusError> {
        if let Some(old) = self.consumer_name.take() {
            // The old consumer may live on a node that is gone: do not wait on it; its
            // inactivity threshold removes it otherwise.
            let js = bus.inner.js.clone();
            tokio::spawn(async move {
                let _ = js.delete_consumer_from_stream(old, EVENTS_STREAM).await;
            });
        }
        self.messages = None;
        let consumer = create_replay(bus, self.next_sequence).await?;
        self.consumer_name = Some(consumer.cached_info().name.clone());
        self.consumer_sequence = 0;
        let config = bus.config();
        let messages = consumer
            .stream()
            .max_messages_per_batch(REPLAY_BATCH)
            .expires(config.pull_expires)
            .heartbeat(config.idle_heartbeat)
            .messages()
            .await
            .map_err(|error| bus.nats_error(format!("replaying {EVENTS_STREAM}"), error))?;
        self.messages = Some(messages);
        Ok(())
    }
}

/// Creating a consumer while NATS does not answer in time (a cluster electing leaders after
/// losing a node; the chaos soak saw services that started then exit): each timeout pauses as
/// a failing pull does and is tried again, until `consumer_error_budget` has passed; any other
/// failure (a missing stream, settings that cannot change) is reported at once.
struct Patience {
    since: Instant,
    pause: Duration,
}

impl Patience {
    fn new() -> Patience {
        Patience {
            since: Instant::now(),
            pause: Duration::from_millis(50),
        }
    }

    /// Pauses before the next attempt, or gives `error` back when it is not worth another.
    async fn pause_or(
        &mut self,
        bus: &Bus,
        consumer: &str,
        error: BusError,
    ) -> Result<(), BusError> {
        let unanswered = matches!(error, BusError::Timeout { .. });
        if !unanswered || self.since.elapsed() >= bus.config().consumer_error_budget {
            return Err(error);
        }
        tracing::warn!(
            consumer,
            error = %crate::error::error_chain(&error),
            "creating the consumer failed; trying again"
        );
        tokio::time::sleep(self.pause).await;
        self.pause = (self.pause * 2).min(Duration::from_secs(1));
        Ok(())
    }
}

/// Messages one replay pull asks for.
const REPLAY_BATCH: usize = 500;

/// An ephemeral, unacknowledged, in-memory consumer of the whole event stream from `start`.
async fn create_replay(bus: &Bus, start: u64) -> Result<consumer::PullConsumer, BusError> {
    let stream = bus
        .inner
        .js
        .get_stream_no_info(EVENTS_STREAM)
        .await
        .map_err(|error| bus.nats_error(format!("opening stream {EVENTS_STREAM}"), error))?;
    let config = bus.config();
    stream
        .create_consumer(pull::Config {
            deliver_policy: if start <= 1 {
                DeliverPolicy::All
            } else {
                DeliverPolicy::ByStartSequence {
                    start_sequence: start,
                }
            },
            filter_subject: format!("{EVENTS_PREFIX}>"),
            ack_policy: AckPolicy::None,
            max_deliver: 1,
            // Long enough to outlive a slow handler between pulls; a consumer left behind by
            // a dead reader is removed by the server after it.
            inactive_threshold: (config.pull_expires * 2).max(Duration::from_secs(30)),
            num_replicas: 1,
            memory_storage: true,
            ..Default::default()
        })
        .await
        .map_err(|error| {
            if crate::error::is_stream_not_found(&error) {
                BusError::MissingTopology {
                    what: format!("stream {EVENTS_STREAM}"),
                }
            } else {
                bus.nats_error("creating the replay consumer", error)
            }
        })
}

/// The pull consumer configuration for `spec` on a stream whose subjects start with `prefix`.
pub(crate) fn durable_config(
    bus: &Bus,
    spec: &ConsumerSpec,
    prefix: &str,
) -> Result<pull::Config, BusError> {
    check_token("durable consumer name", &spec.durable)?;
    for filter in &spec.filter_subjects {
        check_subject("filter subject", filter, prefix, true)?;
    }
    let config = bus.config();
    let (filter_subject, filter_subjects) = match spec.filter_subjects.as_slice() {
        [one] => (one.clone(), Vec::new()),
        many => (String::new(), many.to_vec()),
    };
    Ok(pull::Config {
        durable_name: Some(spec.durable.clone()),
        deliver_policy: match spec.deliver {
            DeliverFrom::All => DeliverPolicy::All,
            DeliverFrom::New => DeliverPolicy::New,
            DeliverFrom::Sequence(start_sequence) => DeliverPolicy::ByStartSequence {
                start_sequence: start_sequence.max(1),
            },
        },
        ack_policy: AckPolicy::Explicit,
        ack_wait: config.ack_wait,
        max_deliver: config.max_deliver,
        backoff: config.consumer_backoff(),
        filter_subject,
        filter_subjects,
        num_replicas: 0,
        ..Default::default()
    })
}

/// Reads event messages: a durable consumer or a replay.
pub struct EventConsumer {
    raw: RawConsumer,
}

impl fmt::Debug for EventConsumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventConsumer")
            .field("stream", &self.raw.stream)
            .field("name", &self.raw.name)
            .finish_non_exhaustive()
    }
}

impl EventConsumer {
    /// The next delivery; `None` only once the connection is closed ([`Bus::close`]).
    ///
    /// Waits for a message to arrive (wrap it in `tokio::time::timeout` to bound it); pull
    /// failures are retried for `consumer_error_budget`. A message that is not an event batch
    /// is moved to the dead-letter queue and skipped.
    pub async fn next(&mut self) -> Result<Option<Delivery>, BusError> {
        loop {
            let Some(raw) = self.raw.next().await? else {
                return Ok(None);
            };
            let subject = raw.message.subject.to_string();
            match decode_batch(&subject, raw.stream_sequence, &raw.message.payload) {
                Ok(envelopes) => {
                    let trace = raw
                        .message
                        .headers
                        .as_ref()
                        .map(extract_trace)
                        .unwrap_or_default();
                    return Ok(Some(Delivery {
                        stream_sequence: raw.stream_sequence,
                        consumer_sequence: raw.consumer_sequence,
                        subject,
                        envelopes,
                        delivered: raw.delivered,
                        pending: raw.pending,
                        trace,
                        acking: raw.acking,
                    }));
                }
                Err(error) => {
                    tracing::error!(
                        consumer = %self.raw.name,
                        sequence = raw.stream_sequence,
                        error = %error,
                        "undecodable event message; moving it to the dead-letter queue"
                    );
                    raw.acking
                        .dead_letter(&format!("payload is not a railyard event batch: {error}"))
                        .await?;
                }
            }
        }
    }
}

/// Reads work items from `RAILYARD_WORK`.
pub struct WorkConsumer {
    raw: RawConsumer,
}

impl fmt::Debug for WorkConsumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkConsumer")
            .field("name", &self.raw.name)
            .finish_non_exhaustive()
    }
}

impl WorkConsumer {
    /// The next work item; `None` only once the connection is closed.
    pub async fn next(&mut self) -> Result<Option<WorkItem>, BusError> {
        let Some(raw) = self.raw.next().await? else {
            return Ok(None);
        };
        let trace = raw
            .message
            .headers
            .as_ref()
            .map(extract_trace)
            .unwrap_or_default();
        Ok(Some(WorkItem {
            stream_sequence: raw.stream_sequence,
            subject: raw.message.subject.to_string(),
            payload: raw.message.payload,
            delivered: raw.delivered,
            pending: raw.pending,
            trace,
            acking: raw.acking,
        }))
    }
}

impl Bus {
    /// A durable pull consumer on `RAILYARD_EVENTS` (created, or updated to `spec`): explicit
    /// acks, `ack_wait`, `max_deliver` and backoff from the [`crate::BusConfig`]. Every
    /// instance of a service uses the same durable name and they share the messages.
    pub async fn durable(&self, spec: ConsumerSpec) -> Result<EventConsumer, BusError> {
        let config = durable_config(self, &spec, EVENTS_PREFIX)?;
        Ok(EventConsumer {
            raw: RawConsumer::durable(self, EVENTS_STREAM, config).await?,
        })
    }

    /// Reads `RAILYARD_EVENTS` in order from `from_sequence` (1 or 0 for the beginning) with an
    /// ephemeral ordered consumer, for rebuilding a projection; acks and naks are no-ops. It
    /// keeps following new messages: compare [`Delivery::stream_sequence`] with
    /// [`Bus::stream_last_sequence`] (or watch [`Delivery::pending`] reach 0) to know when it
    /// has caught up. Dead letters written from its deliveries name the consumer `replay`; use
    /// [`Bus::replay_as`] to give them the projection's name.
    pub async fn replay(&self, from_sequence: u64) -> Result<EventConsumer, BusError> {
        self.replay_as("replay", from_sequence).await
    }

    /// [`Bus::replay`] under a name (`[A-Za-z0-9_-]{1,64}`, usually the projection's), which
    /// its dead letters carry as their consumer.
    pub async fn replay_as(
        &self,
        name: &str,
        from_sequence: u64,
    ) -> Result<EventConsumer, BusError> {
        check_token("replay name", name)?;
        let mut raw = RawConsumer {
            bus: self.clone(),
            stream: EVENTS_STREAM,
            name: name.to_owned(),
            kind: Kind::Replay(Box::new(ReplayState {
                next_sequence: from_sequence.max(1),
                consumer_sequence: 0,
                consumer_name: None,
                suspect: None,
                messages: None,
            })),
        };
        // Create the first consumer now so that a missing stream is reported here; while NATS
        // does not answer (a cluster electing leaders after losing a node), ask again within
        // the error budget rather than fail the service that is starting.
        if let Kind::Replay(state) = &mut raw.kind {
            let mut patience = Patience::new();
            while let Err(error) = state.start(self).await {
                patience.pause_or(self, name, error).await?;
            }
        }
        Ok(EventConsumer { raw })
    }

    /// A durable pull consumer on `RAILYARD_WORK` (filters start with `railyard.work.`). A work
    /// queue allows one consumer per subject: give each worker kind its own filter.
    pub async fn work_consumer(&self, spec: ConsumerSpec) -> Result<WorkConsumer, BusError> {
        let config = durable_config(self, &spec, WORK_PREFIX)?;
        Ok(WorkConsumer {
            raw: RawConsumer::durable(self, WORK_STREAM, config).await?,
        })
    }
}

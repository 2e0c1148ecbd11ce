//! The notifier's loop: reads `RAILYARD_EVENTS` in order from its ledger's checkpoint, folds
//! each release into its view, renders the messages its events call for, and delivers them
//! one call at a time — paced per destination, waiting out `Retry-After`, retrying 5xx and
//! timeouts with backoff, dead-lettering what Slack refuses for good — committing each
//! call's effect before the next one.
//!
//! When calls are paced and the notifier is behind (the stream already holds the next
//! messages), it tells a run of one release's messages as one batch: step updates waiting for
//! the same thread go out as one digest, and each root message is updated once, at the end,
//! instead of after every message. Exceptions and milestones are never merged.
//!
//! Replicas ([`run_replica`]): every replica follows the stream and keeps its views; only the
//! holder of the `notify` leader lease calls Slack. After each call it commits its ledger as
//! before, then hands its progress to the standbys through the `railyard-leaders` bucket
//! (`handoff.notify`: the last message done and the progress of the one under way, written at
//! the revision it read, so a deposed leader's write is refused and it stops; and each
//! release's root message per channel). A standby tells a message (quietly: views only) once
//! the leader's handoff says it is done; a new leader resumes at the first call the handoff
//! does not record. So a leader change repeats at most the call in flight, like a crash.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use railyard_bus::{Bus, BusError, Delivery, HandoffWatch, LeaderConfig, Leadership};
use railyard_core::event::Event;
use railyard_core::{AggregateId, Catalog, ReleaseId, SharedClock};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, warn};

use crate::config::{History, NotifyConfig, Transport};
use crate::error::NotifyError;
use crate::ledger::{Ledger, Progress, Thread};
use crate::render::{self, Note, RenderContext, StepUpdate};
use crate::slack::{Call, Outcome, Slack};
use crate::view::{ReleaseView, Running, channels, hears, verbosity};

/// The name the notifier reads the stream under (its dead letters carry it).
pub const CONSUMER: &str = "railyard-notify";

/// Counters in the process's metrics registry.
#[derive(Debug, Clone, Default)]
struct Counters {
    sent: Counter,
    rate_limited: Counter,
    retried: Counter,
    refused: Counter,
}

impl Counters {
    fn new(metrics: Option<&railyard_http::Metrics>) -> Counters {
        let counters = Counters::default();
        if let Some(metrics) = metrics {
            metrics.register(
                "notify_slack_calls_sent",
                "Slack calls that succeeded.",
                counters.sent.clone(),
            );
            metrics.register(
                "notify_slack_rate_limited",
                "Slack answers 429 (resent after Retry-After).",
                counters.rate_limited.clone(),
            );
            metrics.register(
                "notify_slack_retries",
                "Slack calls retried after a 5xx, a timeout or a connection error.",
                counters.retried.clone(),
            );
            metrics.register(
                "notify_slack_refused",
                "Slack calls refused for good (logged and dead-lettered).",
                counters.refused.clone(),
            );
        }
        counters
    }
}

/// When each destination may be called next.
#[derive(Debug)]
struct Pacer {
    clock: SharedClock,
    every: Duration,
    next: HashMap<String, DateTime<Utc>>,
}

impl Pacer {
    /// Waits until `destination` may be called; `false` when `shutdown` came first.
    async fn wait(&self, destination: &str, shutdown: &CancellationToken) -> bool {
        loop {
            let Some(next) = self.next.get(destination) else {
                return !shutdown.is_cancelled();
            };
            let now = self.clock.now();
            if now >= *next {
                return !shutdown.is_cancelled();
            }
            let wait = (*next - now).to_std().unwrap_or_default();
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return false,
                () = self.clock.sleep(wait) => {}
            }
        }
    }

    fn later(&mut self, destination: &str, wait: Duration) {
        let at =
            self.clock.now() + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX);
        let next = self.next.entry(destination.to_owned()).or_insert(at);
        if *next < at {
            *next = at;
        }
    }
}

/// How one call ended.
enum Delivered {
    Sent {
        channel_id: Option<String>,
        ts: Option<String>,
    },
    Refused(String),
    Stopped,
    /// Not made: this replica no longer leads.
    Deposed,
}

/// One call the batch at hand needs.
#[derive(Debug, Clone)]
enum Op {
    /// Post notes `notes` in `channel` (in the release's thread with the Web API): one note
    /// as it is, several step updates as one digest.
    Post { notes: Vec<usize>, channel: String },
    /// Bring the root message's summary in `channel` up to date.
    Sync { channel: String },
}

/// Most stream messages told as one batch.
const MAX_BATCH: usize = 200;
/// Most step updates in one digest.
const MAX_DIGEST: usize = 20;

/// A note and the stream message it tells.
struct Told {
    note: Note,
    sequence: u64,
}

#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Go,
    Stop,
    /// This replica stopped leading in the middle of a message: follow again as a standby.
    Deposed,
}

/// The leader lease every notifier replica campaigns for.
const ROLE: &str = "notify";

/// What the leading notifier hands to its standbys (`handoff.notify`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Handoff {
    /// The replica that wrote it.
    holder: String,
    /// The last stream sequence whose calls are all made.
    done: u64,
    /// The message (or batch) under way, as the leader's ledger records it.
    progress: Option<Progress>,
}

/// The name of the handoff holding release `id`'s root message in `channel`.
fn thread_handoff(id: &ReleaseId, channel: &str) -> String {
    format!("notify-thread/{id}/{channel}")
}

/// This replica's part in the notifier's leader lease.
struct Replica {
    bus: Bus,
    replica: String,
    leadership: Leadership,
    leading: tokio::sync::watch::Receiver<bool>,
    /// The latest handoff seen.
    handoff: Handoff,
    /// While leading: the handoff's revision to write at (`Some(None)`: create it).
    term: Option<Option<u64>>,
    /// While standing by: the leader's handoffs as they are written.
    watch: Option<HandoffWatch>,
}

impl Replica {
    fn leads(&self) -> bool {
        *self.leading.borrow()
    }
}

struct Notifier {
    catalog: Catalog,
    slack: Slack,
    ledger: Ledger,
    pacer: Pacer,
    counters: Counters,
    backoff: crate::config::Backoff,
    render: RenderContext,
    shutdown: CancellationToken,
    handled: Option<tokio::sync::watch::Sender<u64>>,
    handled_gauge: Gauge,
    replica: Option<Replica>,
}

fn check(config: &NotifyConfig) -> Result<(), NotifyError> {
    let bad = |message: String| Err(NotifyError::Config(message));
    match &config.transport {
        Transport::Webhooks { urls } => {
            if urls.is_empty() {
                return bad(
                    "no webhook urls: give at least the default channel's incoming webhook url"
                        .to_owned(),
                );
            }
            for (channel, url) in urls {
                if !(url.starts_with("https://") || url.starts_with("http://")) {
                    return bad(format!(
                        "the webhook url of {channel} is not an http(s) url: copy it from the slack app's incoming webhooks page"
                    ));
                }
            }
        }
        Transport::WebApi { base_url, .. } => {
            if !(base_url.starts_with("https://") || base_url.starts_with("http://")) {
                return bad(format!(
                    "slack api base url {base_url:?} is not an http(s) url: use {}",
                    crate::config::SLACK_API
                ));
            }
        }
    }
    Ok(())
}

/// Runs the notifier until `shutdown` is cancelled or the bus is closed. A graceful stop
/// waits for the Slack call in flight and records it, so nothing is lost or repeated; it
/// never waits out a pacing, `Retry-After` or backoff delay.
pub async fn run(
    config: NotifyConfig,
    bus: Bus,
    shutdown: CancellationToken,
) -> Result<(), NotifyError> {
    run_replica(config, None, bus, shutdown).await
}

/// [`run`] as one of several replicas when `leader` is given: every replica follows the
/// stream, only the holder of the `notify` lease (the role of `leader` is replaced) calls
/// Slack, and a standby resumes where the leader's handoff says it stopped (see the module's
/// documentation). The lease is resigned on a graceful stop.
pub async fn run_replica(
    config: NotifyConfig,
    leader: Option<LeaderConfig>,
    bus: Bus,
    shutdown: CancellationToken,
) -> Result<(), NotifyError> {
    check(&config)?;
    let slack = Slack::new(config.transport.clone(), config.request_timeout)?;
    let ledger = Ledger::open(&config.store, config.kept_store.as_ref()).await?;
    let all_services: Vec<&str> = config.catalog.services.keys().map(|s| s.as_str()).collect();
    for channel in channels(&config.catalog, &all_services) {
        if !slack.reaches(&channel) {
            warn!(%channel, "no incoming webhook url for this channel: it will hear nothing");
        }
    }
    let replica = match leader {
        None => None,
        Some(leader) => {
            let leader = leader.for_role(ROLE);
            let handoff = read_handoff(&bus).await?;
            let leadership = Leadership::start(bus.clone(), leader.clone());
            Some(Replica {
                bus: bus.clone(),
                replica: leader.replica,
                leading: leadership.watch(),
                leadership,
                handoff: handoff.map(|(handoff, _)| handoff).unwrap_or_default(),
                term: None,
                watch: None,
            })
        }
    };
    // A lost (or new) ledger skips what the stream held at start, unless a leader handed over
    // how far it got: then a standby tells quietly what it told.
    let handed_over = replica
        .as_ref()
        .is_some_and(|replica| !replica.handoff.holder.is_empty());
    let quiet_through = if ledger.is_empty() && config.history == History::Skip && !handed_over {
        bus.stream_last_sequence().await?
    } else {
        0
    };
    let from = ledger.next_sequence();
    let mut consumer = bus.replay_as(CONSUMER, from).await?;
    info!(
        from,
        quiet_through,
        threads = slack.threads(),
        "notifier following the event stream"
    );
    let batching = !config.pacing.is_zero();
    let mut notifier = Notifier {
        catalog: config.catalog.clone(),
        slack,
        ledger,
        pacer: Pacer {
            clock: config.clock,
            every: config.pacing,
            next: HashMap::new(),
        },
        counters: Counters::new(config.metrics.as_ref()),
        backoff: config.backoff,
        render: RenderContext {
            ui_url: config.ui_url,
            catalog: config.catalog.clone(),
            approval_buttons: config.approval_buttons,
        },
        shutdown: shutdown.clone(),
        handled: config.handled,
        handled_gauge: Gauge::default(),
        replica,
    };
    let reader = config
        .metrics
        .as_ref()
        .map(|metrics| metrics.reader("notify"));
    if let Some(metrics) = &config.metrics {
        metrics.register(
            "notify_handled_sequence",
            "Stream sequence of the last event message the notifier finished with.",
            notifier.handled_gauge.clone(),
        );
    }
    let mut peeked: Option<Delivery> = None;
    // The last stream sequence the stream was seen to hold.
    let mut stream_last = 0u64;
    'messages: loop {
        let delivery = match peeked.take() {
            Some(delivery) => delivery,
            None => tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                next = consumer.next() => match next? {
                    Some(delivery) => delivery,
                    None => break,
                },
            },
        };
        if delivery.stream_sequence < notifier.ledger.next_sequence() {
            continue;
        }
        let quiet = match notifier.replica.is_some() {
            false => delivery.stream_sequence <= quiet_through,
            true if delivery.stream_sequence <= quiet_through => true,
            true => match notifier.gate(delivery.stream_sequence).await? {
                Some(quiet) => quiet,
                None => break,
            },
        };
        // A batch in progress before a restart is rebuilt as it was; a new one takes what the
        // stream already holds of the same release, when calls are paced.
        let recorded = notifier.ledger.progress(delivery.stream_sequence).await?;
        let through = recorded.through;
        let coalesce = if recorded.done > 0 || through.is_some() {
            recorded.coalesced
        } else {
            batching && !quiet
        };
        let mut batch = vec![delivery];
        loop {
            let last = batch.last().expect("a batch holds a message");
            let more = match through {
                Some(through) => last.stream_sequence < through,
                None if !coalesce || batch.len() >= MAX_BATCH => false,
                // `pending` is counted when the server sends a message, which may be well
                // before it is handled here: ask the stream what it holds now.
                None if last.pending > 0 || stream_last > last.stream_sequence => true,
                None => {
                    stream_last = match bus.stream_last_sequence().await {
                        Ok(sequence) => sequence,
                        Err(error) => {
                            warn!(%error, "cannot read where the event stream ends; telling what is at hand");
                            0
                        }
                    };
                    stream_last > last.stream_sequence
                }
            };
            if !more {
                break;
            }
            let next = tokio::select! {
                biased;
                () = shutdown.cancelled() => break 'messages,
                next = consumer.next() => match next? {
                    Some(next) => next,
                    None => break 'messages,
                },
            };
            let joins = match through {
                Some(through) => next.stream_sequence <= through,
                None => same_release(&batch, &next),
            };
            if joins {
                batch.push(next);
            } else {
                peeked = Some(next);
                break;
            }
        }
        let first = batch[0].stream_sequence;
        let last = batch.last().map_or(first, |d| d.stream_sequence);
        let span = tracing::info_span!(
            "notify.handle",
            service = "notify",
            release = tracing::field::Empty,
            sequence = first,
            through = last,
            subject = %batch[0].subject,
        );
        if let Some(release) = batch.iter().find_map(Delivery::release) {
            span.record("release", release.as_str());
        }
        railyard_bus::follow_trace(&span, &batch[0].trace);
        let messages = batch.len() as u64;
        let events: u64 = batch.iter().map(|d| d.envelopes.len() as u64).sum();
        let pending = batch.last().map_or(0, |d| d.pending);
        match notifier
            .handle(batch, quiet, coalesce)
            .instrument(span)
            .await?
        {
            Flow::Go => {}
            Flow::Stop => break,
            Flow::Deposed => {
                // Follow again from the ledger, as a standby: the new leader makes the calls
                // of this message that the handoff does not record.
                if let Some(replica) = &mut notifier.replica {
                    replica.term = None;
                }
                info!(
                    next = notifier.ledger.next_sequence(),
                    "this notifier no longer leads: it stops calling slack and follows as a standby"
                );
                peeked = None;
                consumer = bus
                    .replay_as(CONSUMER, notifier.ledger.next_sequence())
                    .await?;
                continue;
            }
        }
        if let Some(reader) = &reader {
            reader.handled(messages, events, pending);
        }
    }
    notifier.ledger.flush().await?;
    if let Some(replica) = notifier.replica.take() {
        replica.leadership.stop().await;
    }
    info!(next = notifier.ledger.next_sequence(), "notifier stopped");
    Ok(())
}

/// The notifier's handoff and its revision, if a leader wrote one.
async fn read_handoff(bus: &Bus) -> Result<Option<(Handoff, u64)>, NotifyError> {
    Ok(bus
        .read_handoff(ROLE)
        .await?
        .map(|(bytes, revision)| (serde_json::from_slice(&bytes).unwrap_or_default(), revision)))
}

impl Notifier {
    /// For a replica, whether stream message `sequence` is told quietly (`Some(true)`: the
    /// leader told it) or aloud (`Some(false)`: this replica leads and the handoff does not
    /// record it done); a standby waits here for the leader's handoff or for the lease.
    /// `None` on shutdown.
    async fn gate(&mut self, sequence: u64) -> Result<Option<bool>, NotifyError> {
        loop {
            let Some(replica) = self.replica.as_mut() else {
                return Ok(Some(false));
            };
            if replica.leads() {
                if replica.term.is_none() {
                    // A new term: resume from what the last leader handed over.
                    replica.watch = None;
                    let read = read_handoff(&replica.bus).await?;
                    replica.term = Some(read.as_ref().map(|(_, revision)| *revision));
                    if let Some((handoff, _)) = read {
                        replica.handoff = handoff;
                    }
                    info!(
                        replica = %replica.replica,
                        done = replica.handoff.done,
                        previous = %replica.handoff.holder,
                        "notifier leading: slack calls resume after what the last leader handed over"
                    );
                }
                let handoff = replica.handoff.clone();
                if sequence <= handoff.done {
                    return Ok(Some(true));
                }
                // The last leader stopped in the middle of this message: take on its progress.
                if let Some(progress) = handoff.progress.filter(|p| p.sequence == sequence) {
                    if self.ledger.progress(sequence).await?.done < progress.done {
                        self.ledger.put_progress(&progress);
                        self.ledger.commit_step(sequence).await?;
                    }
                }
                return Ok(Some(false));
            }
            replica.term = None;
            let recorded = self.ledger.progress(sequence).await?;
            let through = recorded.through.unwrap_or(sequence);
            if through <= replica.handoff.done {
                return Ok(Some(true));
            }
            if replica.watch.is_none() {
                replica.watch = Some(replica.bus.watch_handoff(ROLE).await?);
            }
            let watch = replica.watch.as_mut().expect("just set");
            tokio::select! {
                biased;
                () = self.shutdown.cancelled() => return Ok(None),
                changed = replica.leading.changed() => {
                    if changed.is_err() {
                        return Ok(None);
                    }
                }
                next = watch.next() => match next {
                    Some(Ok(bytes)) => {
                        if let Ok(handoff) = serde_json::from_slice::<Handoff>(&bytes) {
                            replica.handoff = handoff;
                        }
                    }
                    Some(Err(error)) => return Err(error.into()),
                    None => replica.watch = None,
                },
            }
        }
    }

    /// Whether this notifier may call Slack: always alone, while it leads as a replica.
    fn may_call(&self) -> bool {
        self.replica
            .as_ref()
            .is_none_or(|replica| replica.leads() && replica.term.is_some())
    }

    /// Hands the ledger's state to the standbys after a commit: `done` the last message
    /// finished, `progress` the one under way. `false` when another replica wrote the handoff
    /// meanwhile: it leads now, and this one must stop calling.
    async fn hand_over(
        &mut self,
        done: u64,
        progress: Option<&Progress>,
    ) -> Result<bool, NotifyError> {
        let Some(replica) = self.replica.as_mut() else {
            return Ok(true);
        };
        let Some(revision) = replica.term else {
            return Ok(false);
        };
        let handoff = Handoff {
            holder: replica.replica.clone(),
            done,
            progress: progress.cloned(),
        };
        let bytes = serde_json::to_vec(&handoff).expect("a handoff serializes");
        match replica
            .bus
            .write_handoff(ROLE, &replica.replica, bytes, revision)
            .await
        {
            Ok(revision) => {
                replica.term = Some(Some(revision));
                replica.handoff = handoff;
                Ok(true)
            }
            Err(error @ BusError::LeaseLost { .. }) => {
                warn!(%error, "another notifier wrote the handoff: it leads now");
                replica.term = None;
                Ok(false)
            }
            Err(error) => {
                // What this replica did is in its ledger; following again, it hands over
                // from there if it still leads, and otherwise the leader redoes at most this
                // message's last call.
                warn!(%error, "could not hand the notifier's progress over; following again from the ledger");
                replica.term = None;
                Ok(false)
            }
        }
    }

    /// The root message of release `id` in `channel`: a replica's leader reads it from the
    /// handoff (where a previous leader may have recorded it), then its ledger.
    async fn thread(&self, id: &ReleaseId, channel: &str) -> Result<Option<Thread>, NotifyError> {
        if let Some(replica) = &self.replica {
            if let Some((bytes, _)) = replica
                .bus
                .read_handoff(&thread_handoff(id, channel))
                .await?
            {
                if let Ok(thread) = serde_json::from_slice::<Thread>(&bytes) {
                    return Ok(Some(thread));
                }
            }
        }
        self.ledger.thread(id, channel).await
    }

    /// Records a root message in the next commit, and for a replica in the handoff.
    async fn put_thread(
        &mut self,
        id: &ReleaseId,
        channel: &str,
        thread: &Thread,
    ) -> Result<(), NotifyError> {
        self.ledger.put_thread(id, channel, thread);
        if let Some(replica) = &self.replica {
            let bytes = serde_json::to_vec(thread).expect("a thread serializes");
            replica
                .bus
                .put_handoff(&thread_handoff(id, channel), bytes)
                .await?;
        }
        Ok(())
    }

    /// Handles a batch of stream messages (one, or a run of one release's messages) from where
    /// the ledger says it got to.
    async fn handle(
        &mut self,
        batch: Vec<Delivery>,
        quiet: bool,
        coalesce: bool,
    ) -> Result<Flow, NotifyError> {
        let sequence = batch[0].stream_sequence;
        let last = batch.last().map_or(sequence, |d| d.stream_sequence);
        let mut running: Option<Running> = None;
        let mut running_changed = false;
        let mut view: Option<ReleaseView> = match batch.iter().find_map(Delivery::release) {
            Some(id) => self.ledger.release(&id).await?,
            None => None,
        };
        let mut told: Vec<Told> = Vec::new();
        for delivery in &batch {
            for envelope in &delivery.envelopes {
                match (&envelope.event, &envelope.aggregate) {
                    (Event::ServiceDeployed(d), _) => {
                        if running.is_none() {
                            running = Some(self.ledger.running().await?);
                        }
                        let env = running
                            .get_or_insert_with(Running::new)
                            .entry(d.env.to_string())
                            .or_default();
                        match d.running.as_ref().and_then(|r| r.commit.clone()) {
                            Some(commit) => env.insert(d.service.to_string(), commit),
                            None => env.remove(d.service.as_str()),
                        };
                        running_changed = true;
                    }
                    (event, AggregateId::Release(id)) => {
                        if matches!(event, Event::ReleasePlanned(_)) && running.is_none() {
                            running = Some(self.ledger.running().await?);
                        }
                        let current =
                            view.get_or_insert_with(|| ReleaseView::new(id.clone(), &self.catalog));
                        if &current.id != id {
                            continue;
                        }
                        current.apply(
                            envelope,
                            &self.catalog,
                            running.as_ref().unwrap_or(&Running::new()),
                        );
                        if let Some(note) = render::event_note(current, envelope, &self.render) {
                            told.push(Told {
                                note,
                                sequence: delivery.stream_sequence,
                            });
                        }
                    }
                    _ => {}
                }
            }
        }
        let ops = if quiet {
            Vec::new()
        } else {
            self.ops(view.as_ref(), &told, coalesce)
        };
        if !ops.is_empty() {
            let release = view.as_ref().map(|v| v.id.to_string()).unwrap_or_default();
            debug!(%release, sequence, through = last, calls = ops.len(), "delivering");
        }
        let mut progress = self.ledger.progress(sequence).await?;
        progress.through = Some(last);
        progress.coalesced = coalesce;
        for (index, op) in ops.iter().enumerate().skip(progress.done) {
            let Some(view) = view.as_ref() else { break };
            let outcome = match op {
                Op::Post { notes, channel } => {
                    let notes: Vec<&Note> = notes.iter().map(|i| &told[*i].note).collect();
                    self.post(&progress, view, channel, &notes).await?
                }
                Op::Sync { channel } => self.sync(view, channel).await?,
            };
            match outcome {
                None => continue,
                Some(Delivered::Stopped) => return Ok(Flow::Stop),
                Some(Delivered::Deposed) => return Ok(Flow::Deposed),
                Some(Delivered::Refused(reason)) => {
                    let sequences: Vec<u64> = match op {
                        Op::Post { notes, .. } => {
                            let mut sequences: Vec<u64> =
                                notes.iter().map(|i| told[*i].sequence).collect();
                            sequences.dedup();
                            sequences
                        }
                        Op::Sync { .. } => vec![last],
                    };
                    progress
                        .failures
                        .push(format!("{}: {reason}", op_channel(op)));
                    progress.failed_sequences.push(sequences);
                }
                Some(Delivered::Sent { .. }) => {}
            }
            progress.done = index + 1;
            self.ledger.put_progress(&progress);
            self.ledger.commit_step(sequence).await?;
            let done = self.replica.as_ref().map_or(0, |r| r.handoff.done);
            if !self.hand_over(done, Some(&progress)).await? {
                return Ok(Flow::Deposed);
            }
        }
        if !progress.failures.is_empty() {
            for delivery in batch {
                let reasons: Vec<&str> = progress
                    .failures
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| match progress.failed_sequences.get(*i) {
                        Some(sequences) => sequences.contains(&delivery.stream_sequence),
                        // Written before batches: the failure is the one message's.
                        None => delivery.stream_sequence == sequence,
                    })
                    .map(|(_, reason)| reason.as_str())
                    .collect();
                if !reasons.is_empty() {
                    delivery.dead_letter(&reasons.join("; ")).await?;
                }
            }
        }
        if let Some(view) = &view {
            self.ledger.put_release(view);
        }
        if let (true, Some(running)) = (running_changed, &running) {
            self.ledger.put_running(running);
        }
        self.ledger.commit_done(last).await?;
        if !quiet && !self.hand_over(last, None).await? {
            return Ok(Flow::Deposed);
        }
        self.handled_gauge
            .set(i64::try_from(last).unwrap_or(i64::MAX));
        if let Some(handled) = &self.handled {
            handled.send_replace(last);
        }
        Ok(Flow::Go)
    }

    /// The calls a batch needs: each note in each channel that hears it — step updates
    /// waiting in a row for one thread as one digest when `coalesce` — then (with threads)
    /// each channel's root summary, once.
    fn ops(&self, view: Option<&ReleaseView>, told: &[Told], coalesce: bool) -> Vec<Op> {
        let Some(view) = view else {
            return Vec::new();
        };
        let channels: Vec<&String> = view
            .channels
            .iter()
            .filter(|c| self.slack.reaches(c))
            .collect();
        // Per channel, the posts it needs, each keyed by its first note.
        let mut posts: Vec<(usize, usize, Vec<usize>)> = Vec::new();
        for (c, channel) in channels.iter().enumerate() {
            let level = verbosity(&self.catalog, channel);
            let mut open: Option<Vec<usize>> = None;
            for (index, t) in told.iter().enumerate() {
                if !hears(level, t.note.class) {
                    continue;
                }
                let mergeable = coalesce && t.note.update.is_some();
                match &mut open {
                    Some(run) if mergeable && run.len() < MAX_DIGEST => {
                        run.push(index);
                        continue;
                    }
                    _ => {}
                }
                if let Some(run) = open.take() {
                    posts.push((run[0], c, run));
                }
                if mergeable {
                    open = Some(vec![index]);
                } else {
                    posts.push((index, c, vec![index]));
                }
            }
            if let Some(run) = open.take() {
                posts.push((run[0], c, run));
            }
        }
        // Note by note, channel by channel, as the events happened.
        posts.sort_by_key(|(first, c, _)| (*first, *c));
        let mut ops: Vec<Op> = posts
            .into_iter()
            .map(|(_, c, notes)| Op::Post {
                notes,
                channel: channels[c].clone(),
            })
            .collect();
        if self.slack.threads() {
            ops.extend(
                channels
                    .into_iter()
                    .map(|c| Op::Sync { channel: c.clone() }),
            );
        }
        ops
    }

    /// Posts `notes` (one note, or step updates as one digest) in `channel`: with threads,
    /// under the release's root message, posting (and recording) the root first when the
    /// channel has none.
    async fn post(
        &mut self,
        progress: &Progress,
        view: &ReleaseView,
        channel: &str,
        notes: &[&Note],
    ) -> Result<Option<Delivered>, NotifyError> {
        let mut thread_ts = None;
        if self.slack.threads() {
            match self.thread(&view.id, channel).await? {
                Some(thread) => thread_ts = Some(thread.ts),
                None => {
                    let call = Call::Post {
                        channel: channel.to_owned(),
                        thread_ts: None,
                        message: render::root(view),
                    };
                    match self.deliver(&call, &view.id).await {
                        Delivered::Sent {
                            channel_id,
                            ts: Some(ts),
                        } => {
                            let thread = Thread {
                                channel_id: channel_id.unwrap_or_else(|| channel.to_owned()),
                                ts: ts.clone(),
                                status_line: render::summary(view),
                            };
                            self.put_thread(&view.id, channel, &thread).await?;
                            self.ledger.put_progress(progress);
                            self.ledger.commit_step(progress.sequence).await?;
                            info!(release = %view.id, %channel, "release thread started");
                            thread_ts = Some(ts);
                        }
                        Delivered::Sent { ts: None, .. } => {
                            warn!(release = %view.id, %channel, "slack accepted the root message but returned no ts: this reply starts no thread");
                        }
                        other => return Ok(Some(other)),
                    }
                }
            }
        }
        let message = match notes {
            [note] => note.message.clone(),
            notes => {
                let updates: Vec<&StepUpdate> =
                    notes.iter().filter_map(|n| n.update.as_ref()).collect();
                render::digest(view, &updates)
            }
        };
        let call = Call::Post {
            channel: channel.to_owned(),
            thread_ts,
            message,
        };
        Ok(Some(self.deliver(&call, &view.id).await))
    }

    /// Updates the root message in `channel` when its summary (status and exception lines)
    /// changed; `None` when there was nothing to do.
    async fn sync(
        &mut self,
        view: &ReleaseView,
        channel: &str,
    ) -> Result<Option<Delivered>, NotifyError> {
        let Some(thread) = self.thread(&view.id, channel).await? else {
            return Ok(None);
        };
        let line = render::summary(view);
        if thread.status_line == line {
            return Ok(None);
        }
        let call = Call::Update {
            channel: channel.to_owned(),
            channel_id: thread.channel_id.clone(),
            ts: thread.ts.clone(),
            message: render::root(view),
        };
        let delivered = self.deliver(&call, &view.id).await;
        if let Delivered::Sent { .. } = delivered {
            let thread = Thread {
                status_line: line,
                ..thread
            };
            self.put_thread(&view.id, channel, &thread).await?;
        }
        Ok(Some(delivered))
    }

    /// Makes one call until Slack accepts or refuses it for good, or shutdown comes first.
    async fn deliver(&mut self, call: &Call, release: &ReleaseId) -> Delivered {
        let payload = self.slack.payload(call);
        let destination = self.slack.destination(call);
        let channel = call.channel().to_owned();
        let mut attempt = 0u32;
        loop {
            if !self.pacer.wait(&destination, &self.shutdown).await {
                info!(%release, %channel, "shutdown before the slack call; it is made after restart");
                return Delivered::Stopped;
            }
            if !self.may_call() {
                info!(%release, %channel, "no longer leading: the new leader makes this slack call");
                return Delivered::Deposed;
            }
            let outcome = self.slack.send(call, &payload).await;
            let every = self.pacer.every;
            self.pacer.later(&destination, every);
            match outcome {
                Outcome::Sent { channel_id, ts } => {
                    self.counters.sent.inc();
                    debug!(%release, %channel, "slack call delivered");
                    return Delivered::Sent { channel_id, ts };
                }
                Outcome::RateLimited(wait) => {
                    self.counters.rate_limited.inc();
                    warn!(%release, %channel, retry_after = ?wait, "slack rate limit: sending the same message again after Retry-After");
                    self.pacer.later(&destination, wait);
                }
                Outcome::Transient(reason) => {
                    attempt += 1;
                    self.counters.retried.inc();
                    let wait = self.backoff.delay(attempt);
                    warn!(%release, %channel, attempt, retry_in = ?wait, error = %reason, "slack call failed; retrying");
                    self.pacer.later(&destination, wait);
                }
                Outcome::Permanent(reason) => {
                    self.counters.refused.inc();
                    error!(%release, %channel, error = %reason, "slack refused the message; it goes to the dead-letter stream");
                    return Delivered::Refused(reason);
                }
            }
        }
    }
}

fn op_channel(op: &Op) -> &str {
    match op {
        Op::Post { channel, .. } | Op::Sync { channel } => channel,
    }
}

/// Whether `next` may join `batch`: it belongs to the batch's release (or the batch has none
/// yet), or to no release at all (inventory, signals: they only feed commit ranges).
fn same_release(batch: &[Delivery], next: &Delivery) -> bool {
    match (batch.iter().find_map(Delivery::release), next.release()) {
        (_, None) | (None, Some(_)) => true,
        (Some(release), Some(other)) => release == other,
    }
}

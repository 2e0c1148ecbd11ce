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

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use railyard_bus::{Bus, Delivery};
use railyard_core::event::Event;
use railyard_core::{AggregateId, Catalog, ReleaseId, SharedClock};
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
    check(&config)?;
    let slack = Slack::new(config.transport.clone(), config.request_timeout)?;
    let ledger = Ledger::open(&config.store).await?;
    let all_services: Vec<&str> = config.catalog.services.keys().map(|s| s.as_str()).collect();
    for channel in channels(&config.catalog, &all_services) {
        if !slack.reaches(&channel) {
            warn!(%channel, "no incoming webhook url for this channel: it will hear nothing");
        }
    }
    let quiet_through = if ledger.is_empty() && config.history == History::Skip {
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
        let quiet = delivery.stream_sequence <= quiet_through;
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
        if notifier
            .handle(batch, quiet, coalesce)
            .instrument(span)
            .await?
            == Flow::Stop
        {
            break;
        }
        if let Some(reader) = &reader {
            reader.handled(messages, events, pending);
        }
    }
    notifier.ledger.flush().await?;
    info!(next = notifier.ledger.next_sequence(), "notifier stopped");
    Ok(())
}

impl Notifier {
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
            match self.ledger.thread(&view.id, channel).await? {
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
                            self.ledger.put_thread(&view.id, channel, &thread);
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
        let Some(thread) = self.ledger.thread(&view.id, channel).await? else {
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
            self.ledger.put_thread(
                &view.id,
                channel,
                &Thread {
                    status_line: line,
                    ..thread
                },
            );
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

//! CDEvents out (`railyard cdevents`): Railyard tells other tools what it does in the CD
//! Foundation's vocabulary ([`build`]), over the CloudEvents HTTP binding (binary or
//! structured mode) to a configured sink and on a NATS subject — the same CloudEvent, headers
//! and body, on both. Each event's `context.id` is derived from the Railyard event it tells
//! (`<event id>-<n>`), so a repeat after a crash carries the same id and a sink that dedupes
//! on `source` + `id` (Railyard's intake does) drops it.
//!
//! It reads the stream like the notifier ([`crate::follow`]): a 429 or 503 waits
//! `Retry-After`, other 5xx answers and timeouts back off, and a sink's other refusals are
//! logged and counted, and the service goes on.

pub mod build;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use railyard_bus::{Bus, Delivery};
use railyard_core::{AggregateId, SharedClock, SystemClock};
use railyard_http::Metrics;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::error::FeedbackError;
use crate::follow::{Flow, Handler, History, follow};
use crate::ledger::Ledger;
use crate::retry::{Backoff, pause, rate_limit_wait};
use crate::secret::Secret;
pub use build::SpecVersion;
use build::{Origin, Views};

/// The name the service reads the stream under.
pub const CONSUMER: &str = "railyard-cdevents";

/// The NATS subject CDEvents go to by default.
pub const SUBJECT: &str = "railyard.out.cdevents";

/// The CloudEvents HTTP content mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// The CDEvent is the body (`content-type: application/json`), its context in `ce-*`
    /// headers.
    #[default]
    Binary,
    /// The body is a CloudEvent (`application/cloudevents+json`) whose `data` is the CDEvent.
    Structured,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Mode, String> {
        match s.trim() {
            "binary" => Ok(Mode::Binary),
            "structured" => Ok(Mode::Structured),
            other => Err(format!(
                "cloudevents mode {other:?} is unknown: use binary or structured"
            )),
        }
    }
}

/// An HTTP sink.
#[derive(Debug, Clone)]
pub struct Sink {
    /// Where events are POSTed (`RAILYARD_CDEVENTS_SINK_URL`).
    pub url: String,
    /// Sent as `Authorization: Bearer …` when set (`RAILYARD_CDEVENTS_SINK_TOKEN`).
    pub token: Option<Secret>,
}

/// Everything `railyard cdevents` needs.
#[derive(Debug, Clone)]
pub struct CdeventsConfig {
    /// `context.source` of every event (`RAILYARD_CDEVENTS_SOURCE`, default the console URL).
    pub source: String,
    /// The console's base URL: pipeline runs link to `{console_url}/releases/{id}`.
    pub console_url: String,
    /// The CDEvents release emitted (`RAILYARD_CDEVENTS_VERSION`: 0.4.1 or 0.5.1).
    pub version: SpecVersion,
    /// Binary or structured (`RAILYARD_CDEVENTS_MODE`).
    pub mode: Mode,
    /// The HTTP sink, if any.
    pub sink: Option<Sink>,
    /// The NATS subject, if any (`RAILYARD_CDEVENTS_SUBJECT`, default [`SUBJECT`]).
    pub subject: Option<String>,
    /// The service's ledger (a sled directory).
    pub store: PathBuf,
    /// The store at `store` when this process already has it open: a service started again
    /// after NATS failed reuses it instead of opening the directory again
    /// ([`railyard_store::Store::kept_or_open`]). `None`: opened at each start.
    pub kept_store: Option<railyard_store::Store>,
    /// Every wait goes through it.
    pub clock: SharedClock,
    /// Waits between retries of 5xx answers and timeouts.
    pub backoff: Backoff,
    /// How long one HTTP call may take.
    pub request_timeout: Duration,
    /// Where an empty ledger starts.
    pub history: History,
    /// The process's metrics registry, when it has one.
    pub metrics: Option<Metrics>,
    /// Told the stream sequence of every message the service has finished with.
    pub handled: Option<watch::Sender<u64>>,
}

impl CdeventsConfig {
    /// A configuration with the defaults: v0.4.1, binary mode, subject [`SUBJECT`], no HTTP
    /// sink, backoff 1 s doubling to 60 s, 10 s timeout, the system clock, history skipped.
    pub fn new(console_url: impl Into<String>, store: impl Into<PathBuf>) -> CdeventsConfig {
        let console_url = console_url.into();
        CdeventsConfig {
            source: console_url.clone(),
            console_url,
            version: SpecVersion::default(),
            mode: Mode::default(),
            sink: None,
            subject: Some(SUBJECT.to_owned()),
            store: store.into(),
            kept_store: None,
            clock: SystemClock::shared(),
            backoff: Backoff::default(),
            request_timeout: Duration::from_secs(10),
            history: History::Skip,
            metrics: None,
            handled: None,
        }
    }

    /// The configuration from the environment (`RAILYARD_CDEVENTS_SINK_URL`,
    /// `RAILYARD_CDEVENTS_SINK_TOKEN`, `RAILYARD_CDEVENTS_MODE`, `RAILYARD_CDEVENTS_VERSION`,
    /// `RAILYARD_CDEVENTS_SUBJECT` — default [`SUBJECT`], `off` for none —,
    /// `RAILYARD_CDEVENTS_SOURCE`, `RAILYARD_UI_URL`). `Ok(None)` when neither a sink URL
    /// nor a subject is set: the service is not configured.
    pub fn from_env(store: impl Into<PathBuf>) -> Result<Option<CdeventsConfig>, FeedbackError> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let sink_url = var("RAILYARD_CDEVENTS_SINK_URL");
        let subject = var("RAILYARD_CDEVENTS_SUBJECT");
        if sink_url.is_none() && subject.is_none() {
            return Ok(None);
        }
        let console = var("RAILYARD_UI_URL").unwrap_or_else(|| "http://127.0.0.1:7800".to_owned());
        let mut config = CdeventsConfig::new(console, store);
        if let Some(subject) = subject {
            config.subject = (subject.trim() != "off").then(|| subject.trim().to_owned());
        }
        if let Some(url) = sink_url {
            let token = var("RAILYARD_CDEVENTS_SINK_TOKEN")
                .map(|t| Secret::new("RAILYARD_CDEVENTS_SINK_TOKEN", t))
                .transpose()?;
            config.sink = Some(Sink { url, token });
        }
        if let Some(mode) = var("RAILYARD_CDEVENTS_MODE") {
            config.mode = mode
                .parse()
                .map_err(|e| FeedbackError::Config(format!("RAILYARD_CDEVENTS_MODE: {e}")))?;
        }
        if let Some(version) = var("RAILYARD_CDEVENTS_VERSION") {
            config.version = version
                .parse()
                .map_err(|e| FeedbackError::Config(format!("RAILYARD_CDEVENTS_VERSION: {e}")))?;
        }
        if let Some(source) = var("RAILYARD_CDEVENTS_SOURCE") {
            config.source = source;
        }
        Ok(Some(config))
    }

    fn check(&self) -> Result<(), FeedbackError> {
        if self.sink.is_none() && self.subject.is_none() {
            return Err(FeedbackError::Config(
                "cdevents go nowhere: set RAILYARD_CDEVENTS_SINK_URL or RAILYARD_CDEVENTS_SUBJECT"
                    .to_owned(),
            ));
        }
        if let Some(subject) = &self.subject {
            let valid = !subject.starts_with("railyard.events.")
                && subject.split('.').all(|token| {
                    !token.is_empty()
                        && !token
                            .chars()
                            .any(|c| c.is_whitespace() || c == '*' || c == '>')
                })
                && !subject.is_empty();
            if !valid {
                return Err(FeedbackError::Config(format!(
                    "RAILYARD_CDEVENTS_SUBJECT {subject:?} is not a subject to publish on: give dot-separated tokens without spaces or wildcards, outside railyard.events. (the cdevents nats user may publish on railyard.out.cdevents and below)"
                )));
            }
        }
        if let Some(sink) = &self.sink {
            if !(sink.url.starts_with("https://") || sink.url.starts_with("http://")) {
                return Err(FeedbackError::Config(format!(
                    "RAILYARD_CDEVENTS_SINK_URL {:?} is not an http(s) url: give the sink's full url",
                    sink.url
                )));
            }
        }
        if !(self.console_url.starts_with("https://") || self.console_url.starts_with("http://")) {
            return Err(FeedbackError::Config(format!(
                "RAILYARD_UI_URL {:?} is not an http(s) url: pipeline run urls must be absolute",
                self.console_url
            )));
        }
        if self.source.trim().is_empty() {
            return Err(FeedbackError::Config(
                "RAILYARD_CDEVENTS_SOURCE is empty: give a uri reference naming this railyard"
                    .to_owned(),
            ));
        }
        Ok(())
    }
}

/// A CloudEvent ready to send: its headers and body, the same over HTTP and NATS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudEvent {
    /// `content-type` and, in binary mode, `ce-*`.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

/// `cdevent` as a CloudEvent in `mode`.
pub fn cloud_event(cdevent: &Value, mode: Mode) -> CloudEvent {
    let context = &cdevent["context"];
    let field = |key: &str| context[key].as_str().unwrap_or_default().to_owned();
    match mode {
        Mode::Binary => CloudEvent {
            headers: vec![
                ("content-type".to_owned(), "application/json".to_owned()),
                ("ce-specversion".to_owned(), "1.0".to_owned()),
                ("ce-id".to_owned(), field("id")),
                ("ce-source".to_owned(), field("source")),
                ("ce-type".to_owned(), field("type")),
                ("ce-time".to_owned(), field("timestamp")),
            ],
            body: serde_json::to_vec(cdevent).expect("json serializes"),
        },
        Mode::Structured => CloudEvent {
            headers: vec![(
                "content-type".to_owned(),
                "application/cloudevents+json".to_owned(),
            )],
            body: serde_json::to_vec(&json!({
                "specversion": "1.0",
                "id": field("id"),
                "source": field("source"),
                "type": field("type"),
                "time": field("timestamp"),
                "datacontenttype": "application/json",
                "data": cdevent,
            }))
            .expect("json serializes"),
        },
    }
}

#[derive(Debug, Clone, Default)]
struct Counters {
    sent: Counter,
    retried: Counter,
    refused: Counter,
}

struct Emitter {
    bus: Bus,
    http: reqwest::Client,
    config: CdeventsConfig,
    counters: Counters,
}

const ENVIRONMENTS: &str = "environments";

fn inventory_key(env: &str) -> String {
    format!("inventory/{env}")
}

fn release_key(id: &str) -> String {
    format!("release/{id}")
}

/// The view under `key`: as this message left it, else as committed, else empty.
async fn read<T: serde::de::DeserializeOwned + Default>(
    ledger: &Ledger,
    seen: &BTreeMap<String, Value>,
    key: &str,
) -> Result<T, FeedbackError> {
    match seen.get(key) {
        Some(value) => {
            serde_json::from_value(value.clone()).map_err(|error| FeedbackError::Ledger {
                what: key.to_owned(),
                detail: error.to_string(),
            })
        }
        None => Ok(ledger.read(key).await?.unwrap_or_default()),
    }
}

impl Handler for Emitter {
    type Call = CloudEvent;

    async fn plan(
        &mut self,
        ledger: &mut Ledger,
        delivery: &Delivery,
    ) -> Result<Vec<CloudEvent>, FeedbackError> {
        let origin = Origin {
            source: &self.config.source,
            console_url: &self.config.console_url,
            version: self.config.version,
        };
        let mut out = Vec::new();
        let mut seen: BTreeMap<String, Value> = BTreeMap::new();
        for envelope in &delivery.envelopes {
            if let Some(why) = &envelope.untrusted {
                warn!(reason = %why, "an event that does not count is not emitted");
                continue;
            }
            let release = match (&envelope.aggregate, &envelope.event) {
                (AggregateId::Release(id), _) => Some(id.to_string()),
                (_, railyard_core::Event::ServiceDeployed(d)) => {
                    d.release.as_ref().map(|r| r.to_string())
                }
                _ => None,
            };
            let env = build::inventory_env(envelope).map(str::to_owned);
            // An earlier envelope of this message may have changed a view: its writes wait in
            // `seen` (and the ledger's deferred writes) until the message is done.
            let mut views = Views {
                environments: read(ledger, &seen, ENVIRONMENTS).await?,
                inventory: match &env {
                    Some(env) => read(ledger, &seen, &inventory_key(env)).await?,
                    None => Default::default(),
                },
                release: match &release {
                    Some(id) => read(ledger, &seen, &release_key(id)).await?,
                    None => Default::default(),
                },
            };
            let before = views.clone();
            for cdevent in build::build(&origin, &mut views, envelope) {
                out.push(cloud_event(&cdevent, self.config.mode));
            }
            let mut keep = |key: String, value: Value| {
                ledger.defer(key.clone(), &value);
                seen.insert(key, value);
            };
            if views.environments != before.environments {
                keep(ENVIRONMENTS.to_owned(), json!(views.environments));
            }
            if let Some(env) = &env {
                if views.inventory != before.inventory {
                    keep(inventory_key(env), json!(views.inventory));
                }
            }
            if let Some(id) = &release {
                if views.release != before.release {
                    keep(release_key(id), json!(views.release));
                }
            }
        }
        Ok(out)
    }

    async fn call(
        &mut self,
        _ledger: &mut Ledger,
        event: &CloudEvent,
        shutdown: &CancellationToken,
    ) -> Result<Flow, FeedbackError> {
        if shutdown.is_cancelled() {
            return Ok(Flow::Stopped);
        }
        if let Some(subject) = &self.config.subject {
            self.bus
                .publish_plain(subject, &event.headers, Bytes::from(event.body.clone()))
                .await?;
        }
        let Some(sink) = self.config.sink.clone() else {
            self.counters.sent.inc();
            return Ok(Flow::Done);
        };
        let mut attempt = 0u32;
        loop {
            let mut request = self.http.post(&sink.url).body(event.body.clone());
            for (name, value) in &event.headers {
                request = request.header(name, value);
            }
            if let Some(token) = &sink.token {
                request = request.bearer_auth(token.expose());
            }
            let wait = match request.send().await {
                Ok(response) if response.status().is_success() => {
                    self.counters.sent.inc();
                    debug!(status = response.status().as_u16(), "cdevent delivered");
                    return Ok(Flow::Done);
                }
                Ok(response)
                    if matches!(response.status().as_u16(), 429 | 503)
                        && response.headers().contains_key("retry-after") =>
                {
                    rate_limit_wait(
                        response.headers(),
                        self.config.clock.now(),
                        self.config.backoff.initial,
                    )
                }
                Ok(response) if response.status().is_server_error() => {
                    attempt += 1;
                    self.config.backoff.delay(attempt)
                }
                Ok(response) => {
                    let status = response.status().as_u16();
                    let text = response.text().await.unwrap_or_default();
                    let text: String = railyard_core::redact::redact(&text)
                        .chars()
                        .take(300)
                        .collect();
                    self.counters.refused.inc();
                    error!(status, answer = %text, "the cdevents sink refused an event; going on without it");
                    return Ok(Flow::Done);
                }
                Err(error) => {
                    attempt += 1;
                    let error = railyard_core::redact::redact(&error.to_string()).into_owned();
                    warn!(%error, attempt, "the cdevents sink did not answer; retrying");
                    self.config.backoff.delay(attempt)
                }
            };
            self.counters.retried.inc();
            if !pause(&self.config.clock, wait, shutdown).await {
                return Ok(Flow::Stopped);
            }
        }
    }
}

/// Runs CDEvents out until `shutdown` is cancelled or the bus is closed.
pub async fn run(
    config: CdeventsConfig,
    bus: Bus,
    shutdown: CancellationToken,
) -> Result<(), FeedbackError> {
    config.check()?;
    let http = reqwest::Client::builder()
        .timeout(config.request_timeout)
        .user_agent("railyard")
        .build()
        .map_err(FeedbackError::Http)?;
    let counters = Counters::default();
    if let Some(metrics) = &config.metrics {
        metrics.register("cdevents_sent", "CDEvents emitted.", counters.sent.clone());
        metrics.register(
            "cdevents_retries",
            "CDEvents sink calls retried (5xx, 429, timeouts).",
            counters.retried.clone(),
        );
        metrics.register(
            "cdevents_refused",
            "CDEvents the sink refused for good (logged).",
            counters.refused.clone(),
        );
    }
    let ledger = Ledger::open(&config.store, config.kept_store.as_ref(), "cdevents-ledger").await?;
    info!(
        version = config.version.as_str(),
        sink = config
            .sink
            .as_ref()
            .map(|s| s.url.as_str())
            .unwrap_or("none"),
        subject = config.subject.as_deref().unwrap_or("none"),
        "cdevents out starting"
    );
    let history = config.history;
    let handled = config.handled.clone();
    let mut emitter = Emitter {
        bus: bus.clone(),
        http,
        config,
        counters,
    };
    follow(
        &bus,
        ledger,
        &mut emitter,
        CONSUMER,
        history,
        handled,
        shutdown,
    )
    .await
}

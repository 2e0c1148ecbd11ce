//! The harness of Railyard's full-flow scenarios: one real `nats-server`
//! ([`railyard_testkit::NatsServer`]) and every service in this process — intake (HTTP and
//! NATS), the planner, two promotion workers, the audit projection, the operator routes and
//! the Slack notifier — each on its own NATS connection, behind one HTTP listener on
//! `127.0.0.1:0` with generated tokens, plus two stand-ins on their own listeners: a health
//! server whose failing `<service>/<env>` pairs a test controls, and a Slack Web API
//! ([`SlackStandIn`]) that records every `chat.postMessage` and `chat.update`.
//!
//! Scenarios drive it only through public interfaces: `POST /v1/releases`, the GitHub webhook
//! and CDEvents routes, the `railyard` CLI ([`Stack::cli`]: `approve`, `deny`, `hold`,
//! `resume`, `retry`, `rollback`, `cancel`, `release submit|status|watch`), the audit queries
//! and SSE, and what Slack was told ([`Stack::slack_threads`]). They observe progress by
//! reading the release's events with [`Bus::load`] in a bounded loop
//! ([`Stack::wait_release`]); every wait has a hard timeout and fails early, naming the
//! service, when a service task dies.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use railyard_bus::{Bus, BusConfig, Expected};
use railyard_core::event::ServiceDeployed;
use railyard_core::{
    AggregateId, Catalog, Clock, Envelope, Event, Inventory, ReleaseId, ReleaseState, SystemClock,
};
use railyard_http::{Role, generate_token};
use railyard_testkit::NatsServer;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// The GitHub webhook secret intake is configured with.
pub const GITHUB_SECRET: &str = "scenario webhook secret";
/// How often a wait looks again.
pub const POLL: Duration = Duration::from_millis(100);
/// Default bound of a wait for a release to reach a state.
pub const RELEASE_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound of one CLI command (the CLI's own HTTP client has no timeout).
pub const CLI_TIMEOUT: Duration = Duration::from_secs(20);

/// The catalog of the scenarios: two environments, an approval for production, one queue with
/// one producer and one consumer, simulated deploys and http gates against the health server;
/// Slack: every release in `#releases` (milestones and exceptions), billing-worker's also in
/// `#payments-releases` (every step).
/// `ON_FAILURE`, `DURATION` and `HEALTH` are filled in by [`catalog`].
const CATALOG: &str = r##"
[policy]
protected_branches = ["main"]
allowed_sources = ["https://github.com/acme/*", "/ci/*"]

[groups]
release-managers = ["alice", "bob"]

[[environments]]
name = "staging"
on_failure = "ON_FAILURE"

[[environments]]
name = "production"
after = "staging"
approval = { required = true, approvers = ["group:release-managers"] }
on_failure = "ON_FAILURE"

[services.orders-api]
owner = "team-orders"
match = { repository = "https://github.com/acme/orders-api", artifact = "pkg:oci/orders-api" }
required_suites = ["unit"]
deploy = { kind = "simulated", duration = "DURATION" }
gates = [{ kind = "http", url = "HEALTH/health/orders-api/{env}", expect_status = 200, timeout = "2s" }]

[services.billing-worker]
owner = "team-payments"
slack_channel = "#payments-releases"
match = { repository = "https://github.com/acme/billing-worker", artifact = "pkg:oci/billing-worker" }
deploy = { kind = "simulated", duration = "DURATION" }
gates = [{ kind = "http", url = "HEALTH/health/billing-worker/{env}", expect_status = 200, timeout = "2s" }]

[queues.orders-events]
producers = ["orders-api"]
consumers = ["billing-worker"]

[notify.slack]
default_channel = "#releases"
verbosity = { "#releases" = "changes", "#payments-releases" = "all" }
"##;

/// The catalog text with its placeholders filled in.
pub fn catalog(on_failure: &str, duration: &str, health: &str) -> String {
    CATALOG
        .replace("ON_FAILURE", on_failure)
        .replace("DURATION", duration)
        .replace("HEALTH", health)
}

/// What runs in staging and production before every scenario: orders-api emits orders-events 2,
/// billing-worker reads 1..=2.
pub fn inventory() -> Inventory {
    let service = |version: &str, produces: Value, consumes: Value| {
        json!({
            "artifact": format!("pkg:oci/x@{version}"),
            "commit": "0000001",
            "consumes": consumes,
            "produces": produces,
            "provides": {},
            "requires": {},
            "schema": {},
            "version": version,
        })
    };
    let env = json!({
        "databases": {},
        "services": {
            "orders-api": service("2.3.0", json!({"orders-events": 2}), json!({})),
            "billing-worker": service("1.4.0", json!({}), json!({"orders-events": "1..=2"})),
        }
    });
    let text = json!({ "staging": env, "production": env }).to_string();
    Inventory::from_json(&text).expect("the scenario inventory parses")
}

/// A release that is safe against [`inventory`]: billing-worker learns to read v3, then
/// orders-api starts emitting it.
pub fn safe_release(id: &str) -> String {
    format!(
        r#"id = "{id}"
[[changes]]
service = "billing-worker"
version = "1.5.0"
commit = "b1b1b1b"
branch = "main"
authors = ["frank"]
consumes = {{ orders-events = "1..=3" }}

[[changes]]
service = "orders-api"
version = "2.4.0"
commit = "a2a2a2a"
branch = "main"
authors = ["carol"]
produces = {{ orders-events = 3 }}
"#
    )
}

/// A one-service release: billing-worker 1.5.0, still reading 1..=2.
pub fn billing_release(id: &str) -> String {
    format!(
        r#"id = "{id}"
[[changes]]
service = "billing-worker"
version = "1.5.0"
commit = "b1b1b1b"
branch = "main"
authors = ["frank"]
consumes = {{ orders-events = "1..=2" }}
"#
    )
}

/// A release the planner must refuse: orders-api emits v3 while billing-worker 1.4.0 (running,
/// not in the release) reads only 1..=2.
pub fn unsafe_release(id: &str) -> String {
    format!(
        r#"id = "{id}"
[[changes]]
service = "orders-api"
version = "2.4.0"
commit = "a2a2a2a"
branch = "main"
authors = ["carol"]
produces = {{ orders-events = 3 }}
"#
    )
}

/// How a stack is started.
#[derive(Debug, Clone)]
pub struct Options {
    /// `on_failure` of both environments (`rollback` or `hold`).
    pub on_failure: &'static str,
    /// Duration of every simulated deploy (`0s`, `1s`, ...).
    pub deploy_duration: &'static str,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            on_failure: "rollback",
            deploy_duration: "0s",
        }
    }
}

/// The tokens of the scenarios, each with one identity.
#[derive(Debug, Clone)]
pub struct Tokens {
    /// `ci:github-actions`, publisher.
    pub publisher: String,
    /// `ops`, operator.
    pub operator: String,
    /// `alice`, approver, in `release-managers`.
    pub alice: String,
    /// `bob`, publisher and approver, in `release-managers` (a requester who could approve).
    pub bob: String,
    /// `auditor`, auditor.
    pub auditor: String,
}

/// Health of every `<service>/<env>` the gates ask about: healthy unless marked failing.
#[derive(Clone, Default)]
pub struct Health(Arc<Mutex<BTreeSet<String>>>);

impl Health {
    /// Makes `service` in `env` answer 500 (`failing = true`) or 200.
    pub fn set_failing(&self, service: &str, env: &str, failing: bool) {
        let key = format!("{service}/{env}");
        let mut set = self.0.lock().expect("health lock");
        if failing {
            set.insert(key);
        } else {
            set.remove(&key);
        }
    }
}

async fn health(
    State(state): State<Health>,
    Path((service, env)): Path<(String, String)>,
) -> (StatusCode, String) {
    let failing = state
        .0
        .lock()
        .expect("health lock")
        .contains(&format!("{service}/{env}"));
    if failing {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            r#"{"status":"error"}"#.into(),
        )
    } else {
        (StatusCode::OK, r#"{"status":"ok"}"#.into())
    }
}

/// The bot token the notifier is given and the Slack stand-in expects.
pub const SLACK_BOT_TOKEN: &str = "xoxb-scenario";

/// One Web API call the Slack stand-in received.
#[derive(Debug, Clone)]
pub struct SlackCall {
    /// `chat.postMessage`, `chat.update`, or another method (refused with `unknown_method`).
    pub method: String,
    /// The JSON body as sent.
    pub body: Value,
    /// The channel id the call was for (`#releases` and its id `CRELEASES` are the same).
    pub channel: String,
    /// The `ts` of the message posted or updated, when accepted.
    pub ts: Option<String>,
    /// The `ok: false` error the stand-in answered, as Slack would; `None` when accepted.
    pub error: Option<String>,
}

/// One release's thread in one channel, as Slack shows it.
#[derive(Debug, Clone)]
pub struct SlackThread {
    /// The channel id.
    pub channel: String,
    /// The root message's `ts` (the `thread_ts` of every reply).
    pub ts: String,
    /// The root message's notification text as it reads now, after every `chat.update`.
    pub root_text: String,
    /// The root message's blocks as they read now.
    pub root_blocks: Value,
    /// How many times the root was updated.
    pub updates: usize,
    /// The replies' notification texts, in the order they were posted.
    pub replies: Vec<String>,
    /// The replies' blocks, in the same order.
    pub reply_blocks: Vec<Value>,
}

impl SlackThread {
    /// Everything the thread shows (root and replies, text and blocks) as one string, for
    /// `contains` checks.
    pub fn shown(&self) -> String {
        let mut out = format!("{}\n{}\n", self.root_text, self.root_blocks);
        for (text, blocks) in self.replies.iter().zip(&self.reply_blocks) {
            out.push_str(&format!("{text}\n{blocks}\n"));
        }
        out
    }

    /// The reply whose text starts with `prefix`, if any.
    pub fn reply(&self, prefix: &str) -> Option<&str> {
        self.replies
            .iter()
            .map(String::as_str)
            .find(|r| r.starts_with(prefix))
    }
}

#[derive(Debug, Default)]
struct SlackRecord {
    calls: Vec<SlackCall>,
    next_ts: u64,
    /// `(channel id, ts)` of every message Slack holds.
    messages: BTreeSet<(String, String)>,
}

/// A stand-in for Slack's Web API on `127.0.0.1:0`: it checks the bot token, answers
/// `chat.postMessage` with a channel id and a fresh `ts` (refusing a reply to a thread it does
/// not hold with `thread_not_found`), answers `chat.update` of a message it holds, and records
/// every call.
#[derive(Clone, Default)]
pub struct SlackStandIn(Arc<Mutex<SlackRecord>>);

/// The channel id the stand-in gives `#name` (`CNAME`, without dashes); ids pass unchanged.
pub fn slack_channel_id(channel: &str) -> String {
    match channel.strip_prefix('#') {
        Some(name) => format!("C{}", name.to_uppercase().replace('-', "")),
        None => channel.to_owned(),
    }
}

async fn slack_api(
    State(slack): State<SlackStandIn>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: String,
) -> axum::Json<Value> {
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let channel = slack_channel_id(body["channel"].as_str().unwrap_or_default());
    let mut record = slack.0.lock().expect("slack lock");
    let authorized = headers.get("authorization").and_then(|v| v.to_str().ok())
        == Some(format!("Bearer {SLACK_BOT_TOKEN}").as_str());
    let has_text = body["text"].as_str().is_some_and(|t| !t.is_empty())
        || body["blocks"].as_array().is_some_and(|b| !b.is_empty());
    let answer: Result<Value, &str> = if !authorized {
        Err("invalid_auth")
    } else if channel.is_empty() {
        Err("channel_not_found")
    } else if !has_text {
        Err("no_text")
    } else {
        match method.as_str() {
            "chat.postMessage" => match body["thread_ts"].as_str() {
                Some(thread)
                    if !record
                        .messages
                        .contains(&(channel.clone(), thread.to_owned())) =>
                {
                    Err("thread_not_found")
                }
                _ => {
                    record.next_ts += 1;
                    let ts = format!("1700000000.{:06}", record.next_ts);
                    record.messages.insert((channel.clone(), ts.clone()));
                    Ok(json!({"ok": true, "channel": channel, "ts": ts}))
                }
            },
            "chat.update" => {
                let ts = body["ts"].as_str().unwrap_or_default().to_owned();
                if record.messages.contains(&(channel.clone(), ts.clone())) {
                    Ok(json!({"ok": true, "channel": channel, "ts": ts}))
                } else {
                    Err("message_not_found")
                }
            }
            _ => Err("unknown_method"),
        }
    };
    record.calls.push(SlackCall {
        method,
        body,
        channel,
        ts: answer
            .as_ref()
            .ok()
            .and_then(|a| a["ts"].as_str())
            .map(str::to_owned),
        error: answer.as_ref().err().map(|e| (*e).to_owned()),
    });
    axum::Json(answer.unwrap_or_else(|error| json!({"ok": false, "error": error})))
}

impl SlackStandIn {
    fn router(&self) -> axum::Router {
        axum::Router::new()
            .route("/api/{method}", axum::routing::post(slack_api))
            .with_state(self.clone())
    }

    /// Every call received so far, in order.
    pub fn calls(&self) -> Vec<SlackCall> {
        self.0.lock().expect("slack lock").calls.clone()
    }

    /// The calls the stand-in refused, as `method channel: error`.
    pub fn refused(&self) -> Vec<String> {
        self.calls()
            .iter()
            .filter_map(|c| {
                c.error
                    .as_ref()
                    .map(|e| format!("{} {}: {e}", c.method, c.channel))
            })
            .collect()
    }

    /// Every thread Slack holds, by the release its root names (`Release <id>: …`), each
    /// with its replies and the root as last updated. Fails on a reply or an update that
    /// belongs to no root the stand-in accepted.
    pub fn threads(&self) -> anyhow::Result<BTreeMap<String, Vec<SlackThread>>> {
        let mut threads: Vec<(String, SlackThread)> = Vec::new();
        for call in self.calls().into_iter().filter(|c| c.error.is_none()) {
            let text = call.body["text"].as_str().unwrap_or_default().to_owned();
            let blocks = call.body["blocks"].clone();
            let find = |threads: &mut Vec<(String, SlackThread)>, ts: &str| {
                threads
                    .iter()
                    .position(|(_, t)| t.channel == call.channel && t.ts == ts)
            };
            match (call.method.as_str(), call.body["thread_ts"].as_str()) {
                ("chat.postMessage", None) => {
                    let release = text
                        .strip_prefix("Release ")
                        .and_then(|rest| rest.split(':').next())
                        .with_context(|| format!("a root message names no release: {text}"))?
                        .to_owned();
                    let ts = call.ts.clone().unwrap_or_default();
                    threads.push((
                        release,
                        SlackThread {
                            channel: call.channel.clone(),
                            ts,
                            root_text: text,
                            root_blocks: blocks,
                            updates: 0,
                            replies: Vec::new(),
                            reply_blocks: Vec::new(),
                        },
                    ));
                }
                ("chat.postMessage", Some(thread_ts)) => {
                    let at = find(&mut threads, thread_ts).with_context(|| {
                        format!(
                            "a reply in {} to no known root {thread_ts}: {text}",
                            call.channel
                        )
                    })?;
                    threads[at].1.replies.push(text);
                    threads[at].1.reply_blocks.push(blocks);
                }
                ("chat.update", _) => {
                    let ts = call.body["ts"].as_str().unwrap_or_default();
                    let at = find(&mut threads, ts).with_context(|| {
                        format!(
                            "an update in {} of no known root {ts}: {text}",
                            call.channel
                        )
                    })?;
                    let thread = &mut threads[at].1;
                    thread.root_text = text;
                    thread.root_blocks = blocks;
                    thread.updates += 1;
                }
                (method, _) => bail!("slack was called with {method}"),
            }
        }
        let mut out: BTreeMap<String, Vec<SlackThread>> = BTreeMap::new();
        for (release, thread) in threads {
            out.entry(release).or_default().push(thread);
        }
        Ok(out)
    }

    /// Release `id`'s one thread in each of `channels` (names, `#releases`), keyed by name.
    /// Fails when Slack refused a call, when the release has a thread elsewhere or more than
    /// one in a channel, or when a thread holds the same reply twice.
    pub fn release(
        &self,
        id: &str,
        channels: &[&str],
    ) -> anyhow::Result<BTreeMap<String, SlackThread>> {
        let refused = self.refused();
        ensure!(refused.is_empty(), "slack refused calls: {refused:?}");
        let threads = self.threads()?.remove(id).unwrap_or_default();
        let mut out = BTreeMap::new();
        for thread in threads {
            let name = channels
                .iter()
                .find(|c| slack_channel_id(c) == thread.channel)
                .with_context(|| {
                    format!(
                        "release {id} has a thread in {}, not one of {channels:?}",
                        thread.channel
                    )
                })?;
            let mut seen = BTreeSet::new();
            for (text, blocks) in thread.replies.iter().zip(&thread.reply_blocks) {
                ensure!(
                    seen.insert((text.clone(), blocks.to_string())),
                    "release {id}: {name} got this reply twice: {text}"
                );
            }
            ensure!(
                out.insert((*name).to_owned(), thread).is_none(),
                "release {id} has more than one thread in {name}"
            );
        }
        for channel in channels {
            ensure!(
                out.contains_key(*channel),
                "release {id} has no thread in {channel}; threads: {:?}",
                out.keys().collect::<Vec<_>>()
            );
        }
        Ok(out)
    }
}

/// What one `railyard` command printed and how it exited, as the binary would: stdout, and on
/// error `error: <message>` on stderr with exit code 1.
#[derive(Debug, Clone)]
pub struct CliRun {
    /// The exit code.
    pub code: u8,
    /// What it printed on stdout.
    pub stdout: String,
    /// What it printed on stderr.
    pub stderr: String,
}

/// Every service over one real NATS, and the handles a scenario needs.
pub struct Stack {
    /// The NATS server (restart it with `nats.restart()`).
    pub nats: NatsServer,
    /// The test's own connection, for reading events.
    pub bus: Bus,
    /// The public HTTP base URL (`http://127.0.0.1:<port>`).
    pub base: String,
    /// The tokens.
    pub tokens: Tokens,
    /// The gates' health server state.
    pub health: Health,
    /// What the notifier told Slack.
    pub slack: SlackStandIn,
    /// The HTTP client.
    pub http: reqwest::Client,
    /// The stream sequence of the last event message the notifier finished with.
    notified: watch::Receiver<u64>,
    stop: CancellationToken,
    tasks: Mutex<JoinSet<(String, anyhow::Result<()>)>>,
    dir: tempfile::TempDir,
}

/// The bus settings of every service: fast redelivery and reconnects, short leases.
pub fn bus_config(name: &str) -> BusConfig {
    BusConfig {
        ack_wait: Duration::from_secs(5),
        backoff: vec![Duration::from_millis(100), Duration::from_millis(500)],
        max_deliver: 20,
        lease_ttl: Duration::from_secs(10),
        reconnect_max_delay: Duration::from_millis(250),
        idle_heartbeat: Duration::from_secs(1),
        pull_expires: Duration::from_secs(5),
        connection_name: format!("railyard-scenario-{name}"),
        ..BusConfig::default()
    }
}

async fn connect(url: &str, name: &str) -> anyhow::Result<Bus> {
    Bus::connect(url, bus_config(name))
        .await
        .with_context(|| format!("{name} cannot connect to {url}"))
}

async fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(stop.cancelled_owned())
    .await
    .context("http listener")
}

impl Stack {
    /// Starts NATS, the health server and every service; records [`inventory`].
    pub async fn start(options: Options) -> anyhow::Result<Stack> {
        let nats = NatsServer::start().await?;
        let url = nats.url();
        let dir = tempfile::tempdir()?;
        let bus = connect(&url, "test").await?;
        bus.ensure_topology().await?;
        let stop = CancellationToken::new();
        let mut tasks = JoinSet::new();

        // The health server the gates call.
        let health_state = Health::default();
        let health_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let health_url = format!("http://{}", health_listener.local_addr()?);
        let health_app = axum::Router::new()
            .route("/health/{service}/{env}", axum::routing::get(health))
            .with_state(health_state.clone());
        tasks.spawn({
            let stop = stop.clone();
            async move {
                (
                    "health".to_owned(),
                    serve(health_listener, health_app, stop).await,
                )
            }
        });

        let catalog = Catalog::from_toml(&catalog(
            options.on_failure,
            options.deploy_duration,
            &health_url,
        ))
        .context("the scenario catalog")?;

        // Tokens: only their hashes reach the services.
        let mut entries = Vec::new();
        let mut token = |identity: &str, roles: &[Role]| {
            let (token, entry) =
                generate_token(identity, roles.iter().copied().collect(), Vec::new());
            entries.push(entry);
            token
        };
        let tokens = Tokens {
            publisher: token("ci:github-actions", &[Role::Publisher]),
            operator: token("ops", &[Role::Operator]),
            alice: token("alice", &[Role::Approver]),
            bob: token("bob", &[Role::Publisher, Role::Approver]),
            auditor: token("auditor", &[Role::Auditor]),
        };
        let table = railyard_http::Tokens::from_entries(entries)?;

        import_inventory(&bus, &inventory()).await?;

        // Planner.
        {
            let config = railyard_planner::service::PlannerConfig {
                catalog: catalog.clone(),
                store: dir.path().join("planner"),
                clock: SystemClock::shared(),
                catch_up_timeout: Duration::from_secs(30),
            };
            let bus = connect(&url, "planner").await?;
            let stop = stop.clone();
            tasks.spawn(async move {
                let result = railyard_planner::service::run(config, bus, stop)
                    .await
                    .context("planner");
                ("planner".to_owned(), result)
            });
        }
        // Two promotion workers.
        for worker in ["worker-a", "worker-b"] {
            let mut config = railyard_promoter::PromoterConfig::new(
                catalog.clone(),
                worker,
                dir.path().join(worker),
            );
            config.poll_interval = Duration::from_millis(100);
            config.sweep_interval = Duration::from_millis(500);
            config.lease_renew_interval = Duration::from_secs(1);
            let bus = connect(&url, worker).await?;
            let stop = stop.clone();
            tasks.spawn(async move {
                let result = railyard_promoter::run(config, bus, stop)
                    .await
                    .context("promoter");
                (worker.to_owned(), result)
            });
        }
        // The notifier, pointed at the Slack stand-in. It sends for everything in the stream
        // (`History::Send`): with the default `Skip` a release submitted before the task has
        // read where the stream ends would go unannounced. No pacing: the stand-in has no
        // rate limit, and the scenarios wait on what the notifier has handled, not on time.
        let slack = SlackStandIn::default();
        let slack_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let slack_url = format!("http://{}/api", slack_listener.local_addr()?);
        tasks.spawn({
            let stop = stop.clone();
            let app = slack.router();
            async move { ("slack".to_owned(), serve(slack_listener, app, stop).await) }
        });
        let (notified_tx, notified) = watch::channel(0);
        {
            let transport = railyard_notify::Transport::WebApi {
                base_url: slack_url,
                token: railyard_notify::BotToken::new(SLACK_BOT_TOKEN)?,
            };
            let mut config = railyard_notify::NotifyConfig::new(
                catalog.clone(),
                transport,
                dir.path().join("notify"),
            );
            config.pacing = Duration::ZERO;
            config.backoff = railyard_notify::Backoff {
                initial: Duration::from_millis(100),
                max: Duration::from_millis(500),
            };
            config.request_timeout = Duration::from_secs(5);
            config.history = railyard_notify::History::Send;
            config.handled = Some(notified_tx);
            let bus = connect(&url, "notify").await?;
            let stop = stop.clone();
            tasks.spawn(async move {
                let result = railyard_notify::run(config, bus, stop)
                    .await
                    .context("notify");
                ("notify".to_owned(), result)
            });
        }
        // Intake: HTTP routes and the NATS door.
        let metrics = railyard_http::Metrics::default();
        let mut intake_config = railyard_intake::IntakeConfig::new(catalog.clone(), table.clone());
        intake_config.github_secret = Some(railyard_intake::Secret::new(GITHUB_SECRET));
        intake_config.metrics = metrics.clone();
        let intake_bus = connect(&url, "intake").await?;
        let intake = railyard_intake::Intake::new(intake_config, intake_bus.clone());
        let intake_routes = railyard_intake::router(intake.clone());
        tasks.spawn({
            let stop = stop.clone();
            async move {
                let result = railyard_intake::serve_nats(intake, stop)
                    .await
                    .context("intake");
                ("intake".to_owned(), result)
            }
        });
        // Audit.
        let mut audit_config =
            railyard_audit::AuditConfig::new(dir.path().join("audit"), table.clone());
        audit_config.metrics = metrics.clone();
        audit_config.retry_initial = Duration::from_millis(100);
        audit_config.retry_max = Duration::from_millis(500);
        let audit_bus = connect(&url, "audit").await?;
        let audit = railyard_audit::Audit::open(audit_config, audit_bus, stop.clone())
            .await
            .context("cannot open the audit store")?;
        let audit_routes = railyard_audit::router(audit.clone());
        tasks.spawn(async move { ("audit".to_owned(), audit.run().await.context("audit")) });
        // Operator and approver routes.
        let routes_bus = connect(&url, "routes").await?;
        let promoter_routes = railyard_promoter::router(railyard_promoter::RouteState {
            bus: routes_bus.clone(),
            catalog: Arc::new(catalog.clone()),
            tokens: table.clone(),
            clock: SystemClock::shared(),
        });
        let app = railyard_http::ops_router(intake_bus, metrics)
            .merge(intake_routes)
            .merge(audit_routes)
            .merge(promoter_routes);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        tasks.spawn({
            let stop = stop.clone();
            async move { ("http".to_owned(), serve(listener, app, stop).await) }
        });

        Ok(Stack {
            nats,
            bus,
            base,
            tokens,
            health: health_state,
            slack,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(15))
                .build()?,
            notified,
            stop,
            tasks: Mutex::new(tasks),
            dir,
        })
    }

    /// Fails when a service task has ended (every service runs until the stack stops).
    pub fn check_services(&self) -> anyhow::Result<()> {
        let mut tasks = self.tasks.lock().expect("tasks lock");
        if let Some(done) = tasks.try_join_next() {
            match done {
                Ok((name, Ok(()))) => bail!("service {name} stopped on its own"),
                Ok((name, Err(error))) => bail!("service {name} failed: {error:#}"),
                Err(error) => bail!("a service panicked: {error}"),
            }
        }
        Ok(())
    }

    /// Stops every service and waits (bounded) for them; errors while stopping are returned.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        let mut tasks = std::mem::take(&mut *self.tasks.lock().expect("tasks lock"));
        let mut failures = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            match tokio::time::timeout_at(deadline, tasks.join_next()).await {
                Ok(None) => break,
                Ok(Some(Ok((_, Ok(()))))) => {}
                Ok(Some(Ok((name, Err(error))))) => failures.push(format!("{name}: {error:#}")),
                Ok(Some(Err(error))) => failures.push(format!("panic: {error}")),
                Err(_) => {
                    failures.push("services did not stop within 15s".into());
                    break;
                }
            }
        }
        ensure!(
            failures.is_empty(),
            "services stopped with errors: {failures:?}"
        );
        Ok(())
    }

    /// `POST path` with a bearer token and a JSON body; the status and the JSON answer.
    pub async fn post_json(
        &self,
        path: &str,
        token: &str,
        body: &Value,
    ) -> anyhow::Result<(u16, Value)> {
        let answer = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .with_context(|| format!("POST {path}"))?;
        answer_json(answer).await
    }

    /// `GET path` with a bearer token; the status and the JSON answer.
    pub async fn get_json(&self, path: &str, token: &str) -> anyhow::Result<(u16, Value)> {
        let answer = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .with_context(|| format!("GET {path}"))?;
        answer_json(answer).await
    }

    /// Submits a release file (TOML) through `POST /v1/releases` as `token`; fails unless 2xx.
    pub async fn submit_as(&self, token: &str, release_toml: &str) -> anyhow::Result<ReleaseId> {
        let id = railyard_core::ReleaseFile::from_toml(release_toml)
            .context("the scenario release parses")?
            .id;
        let answer = self
            .http
            .post(format!("{}/v1/releases", self.base))
            .bearer_auth(token)
            .header("content-type", "application/toml")
            .body(release_toml.to_owned())
            .send()
            .await?;
        let (status, body) = answer_json(answer).await?;
        ensure!(
            (200..300).contains(&status),
            "POST /v1/releases answered {status}: {body}"
        );
        Ok(id)
    }

    /// Submits a release file (TOML) as the publisher.
    pub async fn submit(&self, release_toml: &str) -> anyhow::Result<ReleaseId> {
        self.submit_as(&self.tokens.publisher, release_toml).await
    }

    /// A signed GitHub webhook delivery to `POST /v1/webhooks/github`.
    pub async fn github(
        &self,
        event: &str,
        delivery: &str,
        body: &[u8],
    ) -> anyhow::Result<(u16, Value)> {
        let signature = railyard_intake::github_signature(GITHUB_SECRET.as_bytes(), body);
        let answer = self
            .http
            .post(format!("{}/v1/webhooks/github", self.base))
            .header("x-github-event", event)
            .header("x-github-delivery", delivery)
            .header("x-hub-signature-256", signature)
            .header("content-type", "application/json")
            .body(body.to_vec())
            .send()
            .await?;
        answer_json(answer).await
    }

    /// A CDEvent (structured JSON) to `POST /v1/cdevents` as the publisher.
    pub async fn cdevent(&self, event: &Value) -> anyhow::Result<(u16, Value)> {
        self.post_json("/v1/cdevents", &self.tokens.publisher, event)
            .await
    }

    /// An operator or approver command: `POST /v1/releases/{id}/{command}` with `body`.
    pub async fn command(
        &self,
        token: &str,
        id: &ReleaseId,
        command: &str,
        body: Value,
    ) -> anyhow::Result<(u16, Value)> {
        self.post_json(&format!("/v1/releases/{id}/{command}"), token, &body)
            .await
    }

    /// Approves production as alice, with the CLI (`railyard approve <id> --env production`);
    /// fails unless it succeeds.
    pub async fn approve(&self, id: &ReleaseId) -> anyhow::Result<()> {
        self.cli_ok(
            &self.tokens.alice,
            &[
                "approve",
                id.as_str(),
                "--env",
                "production",
                "--comment",
                "change window agreed",
            ],
        )
        .await?;
        Ok(())
    }

    /// Runs `railyard <args> --url <base> --token <token>` as a user would type it: parsed and
    /// run by the binary's own library (`railyard::parse`, `railyard::run`), in this process.
    /// (`--url` and `--token` rather than `RAILYARD_URL` and `RAILYARD_TOKEN`: scenarios run
    /// in parallel in one process, which shares one environment.) Fails when the arguments
    /// do not parse or the command takes longer than [`CLI_TIMEOUT`]; a command that fails
    /// is a [`CliRun`] with code 1.
    pub async fn cli(&self, token: &str, args: &[&str]) -> anyhow::Result<CliRun> {
        self.cli_within(token, args, CLI_TIMEOUT).await
    }

    async fn cli_within(
        &self,
        token: &str,
        args: &[&str],
        timeout: Duration,
    ) -> anyhow::Result<CliRun> {
        let mut argv = vec!["railyard"];
        argv.extend_from_slice(args);
        argv.extend_from_slice(&["--url", &self.base, "--token", token]);
        let cli = railyard::parse(&argv)
            .map_err(|error| anyhow::anyhow!("`{}` does not parse: {error}", argv.join(" ")))?;
        let mut stdout = Vec::new();
        let run = tokio::time::timeout(timeout, railyard::run(cli, &mut stdout))
            .await
            .with_context(|| format!("`{}` did not end within {timeout:?}", argv.join(" ")))?;
        let stdout = String::from_utf8(stdout)?;
        Ok(match run {
            Ok(code) => CliRun {
                code,
                stdout,
                stderr: String::new(),
            },
            Err(error) => CliRun {
                code: 1,
                stdout,
                stderr: format!("{}\n", railyard::error_line(&error)),
            },
        })
    }

    /// [`Stack::cli`], failing unless it exits 0; what it printed.
    pub async fn cli_ok(&self, token: &str, args: &[&str]) -> anyhow::Result<String> {
        let run = self.cli(token, args).await?;
        ensure!(
            run.code == 0,
            "`railyard {}` exited {}: {}{}",
            args.join(" "),
            run.code,
            run.stdout,
            run.stderr
        );
        Ok(run.stdout)
    }

    /// `railyard release status <id>` as the auditor, once the audit caught up: what it printed.
    pub async fn status_text(&self, id: &ReleaseId) -> anyhow::Result<String> {
        // The status comes from the audit projection: let it catch up with the stream first,
        // or a loaded machine shows the state before the last command.
        self.wait_audit(id).await?;
        self.cli_ok(&self.tokens.auditor, &["release", "status", id.as_str()])
            .await
    }

    /// `railyard release watch <id>` as the auditor, bounded by `timeout`: it follows the
    /// release's events over SSE until one ends it, and exits 0 when it completed.
    pub async fn watch(&self, id: &ReleaseId, timeout: Duration) -> anyhow::Result<CliRun> {
        self.cli_within(
            &self.tokens.auditor,
            &["release", "watch", id.as_str()],
            timeout,
        )
        .await
    }

    /// Writes `toml` to a file of the stack's directory for `railyard release submit`.
    pub fn release_file(&self, name: &str, toml: &str) -> anyhow::Result<String> {
        let path = self.dir.path().join(name);
        std::fs::write(&path, toml)?;
        Ok(path.display().to_string())
    }

    /// Waits (bounded) until the notifier has finished with every message the event stream
    /// holds now, so what Slack was told about them is final.
    pub async fn wait_notified(&self) -> anyhow::Result<()> {
        let last = self.bus.stream_last_sequence().await?;
        let mut notified = self.notified.clone();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            self.check_services()?;
            if tokio::time::timeout(POLL, notified.wait_for(|n| *n >= last))
                .await
                .is_ok()
            {
                return Ok(());
            }
            ensure!(
                tokio::time::Instant::now() < deadline,
                "the notifier did not handle stream message {last} within 20s (it is at {})",
                *notified.borrow()
            );
        }
    }

    /// What Slack shows of release `id` once the notifier has caught up:
    /// [`SlackStandIn::release`].
    pub async fn slack_release(
        &self,
        id: &ReleaseId,
        channels: &[&str],
    ) -> anyhow::Result<BTreeMap<String, SlackThread>> {
        self.wait_notified().await?;
        self.slack.release(id.as_str(), channels)
    }

    /// Every event of the release, from the stream.
    pub async fn events(&self, id: &ReleaseId) -> anyhow::Result<Vec<Envelope>> {
        Ok(self
            .bus
            .load(&AggregateId::Release(id.clone()))
            .await?
            .events)
    }

    /// Waits (bounded by `timeout`, looking every [`POLL`]) until the release's folded state
    /// satisfies `done`; the error names `what` and the event types seen so far.
    pub async fn wait_release(
        &self,
        id: &ReleaseId,
        what: &str,
        timeout: Duration,
        done: impl Fn(&ReleaseState) -> bool,
    ) -> anyhow::Result<ReleaseState> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut seen = Vec::new();
        let mut last_error = None;
        loop {
            self.check_services()?;
            match self.events(id).await {
                Ok(events) => {
                    seen = types(&events);
                    if let Some(state) = ReleaseState::fold(&events)?
                        && done(&state)
                    {
                        return Ok(state);
                    }
                }
                // NATS may be restarting: keep looking until the deadline.
                Err(error) => last_error = Some(error),
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "release {id}: timed out after {timeout:?} waiting for {what}; events so far: {seen:?}; last read error: {last_error:?}"
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until production asks for an approval, then approves it as alice.
    pub async fn approve_when_asked(&self, id: &ReleaseId) -> anyhow::Result<()> {
        self.wait_release(
            id,
            "the production approval request",
            RELEASE_TIMEOUT,
            |s| !s.approvals.is_empty() || s.status.is_final(),
        )
        .await?;
        self.approve(id).await
    }

    /// Waits until the release has reached a final status (completed, rolled back, rejected,
    /// cancelled) and returns its state.
    pub async fn wait_end(
        &self,
        id: &ReleaseId,
        timeout: Duration,
    ) -> anyhow::Result<ReleaseState> {
        self.wait_release(id, "the release to end", timeout, |s| s.status.is_final())
            .await
    }

    /// `GET /v1/audit/{query}?{params}` as the auditor; fails unless 200.
    pub async fn audit(&self, query: &str, params: &str) -> anyhow::Result<Value> {
        let (status, body) = self
            .get_json(&format!("/v1/audit/{query}?{params}"), &self.tokens.auditor)
            .await?;
        ensure!(status == 200, "GET /v1/audit/{query}: {status} {body}");
        Ok(body)
    }

    /// Waits (bounded) until the audit record holds every event the stream holds for the
    /// release (by `GET /v1/releases/{id}`: same number of events, same status); returns that
    /// status document.
    pub async fn wait_audit(&self, id: &ReleaseId) -> anyhow::Result<Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            self.check_services()?;
            let events = self.events(id).await?;
            let (status, body) = self
                .get_json(&format!("/v1/releases/{id}"), &self.tokens.auditor)
                .await?;
            if status == 200 && body["events"].as_u64() == Some(events.len() as u64) {
                return Ok(body);
            }
            ensure!(
                tokio::time::Instant::now() < deadline,
                "the audit record of {id} did not catch up with the stream's {} events within 20s: {body}",
                events.len()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// The release's audit timeline (`GET /v1/audit/timeline?release=`), every page, keeping
    /// only the events of the release's own aggregate (the timeline also shows the
    /// `service.deployed` events the release caused in `inventory.<env>`).
    pub async fn timeline(&self, id: &ReleaseId) -> anyhow::Result<Vec<Value>> {
        let aggregate = format!("release.{id}");
        Ok(self
            .audit_pages("timeline", &format!("release={id}"))
            .await?
            .into_iter()
            .filter(|item| item["aggregate"].as_str() == Some(aggregate.as_str()))
            .collect())
    }

    /// Every item of an audit query, following `next_cursor`.
    pub async fn audit_pages(&self, query: &str, params: &str) -> anyhow::Result<Vec<Value>> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut params = format!("{params}&limit=1000");
            if let Some(cursor) = &cursor {
                params.push_str(&format!("&cursor={cursor}"));
            }
            let page = self.audit(query, &params).await?;
            items.extend(
                page["items"]
                    .as_array()
                    .context("an audit page has items")?
                    .iter()
                    .cloned(),
            );
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return Ok(items),
            }
        }
    }

    /// Every event in `RAILYARD_EVENTS`, in stream order.
    pub async fn stream_events(&self) -> anyhow::Result<Vec<Envelope>> {
        let last = self.bus.stream_last_sequence().await?;
        let mut events = Vec::new();
        if last == 0 {
            return Ok(events);
        }
        let mut replay = self.bus.replay(1).await?;
        loop {
            let delivery = tokio::time::timeout(Duration::from_secs(10), replay.next())
                .await
                .context("the replay delivers in time")??
                .context("the replay ended early")?;
            events.extend(delivery.envelopes);
            if delivery.stream_sequence >= last {
                return Ok(events);
            }
        }
    }

    /// Follows the release's Server-Sent Events (`GET /v1/releases/{id}/events`) until an
    /// event of type `until` arrives (bounded); returns `(id, event type)` of each event.
    pub async fn sse_until(
        &self,
        id: &ReleaseId,
        until: &str,
        timeout: Duration,
    ) -> anyhow::Result<Vec<(u64, String)>> {
        use futures::StreamExt;
        let answer = self
            .http
            .get(format!("{}/v1/releases/{id}/events", self.base))
            .bearer_auth(&self.tokens.auditor)
            .timeout(timeout)
            .send()
            .await?;
        ensure!(
            answer.status().is_success(),
            "SSE answered {}",
            answer.status()
        );
        let mut body = answer.bytes_stream();
        let mut buffer = String::new();
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let chunk = tokio::time::timeout_at(deadline, body.next())
                .await
                .with_context(|| {
                    format!("no {until} on the event stream within {timeout:?}: {seen:?}")
                })?
                .context("the event stream ended")??;
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buffer.find("\n\n") {
                let frame: String = buffer.drain(..end + 2).collect();
                let mut sse_id = None;
                let mut kind = None;
                for line in frame.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        sse_id = v.trim().parse::<u64>().ok();
                    } else if let Some(v) = line.strip_prefix("event:") {
                        kind = Some(v.trim().to_owned());
                    }
                }
                if let (Some(n), Some(kind)) = (sse_id, kind) {
                    let last = kind == until;
                    seen.push((n, kind));
                    if last {
                        return Ok(seen);
                    }
                }
            }
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn answer_json(answer: reqwest::Response) -> anyhow::Result<(u16, Value)> {
    let status = answer.status().as_u16();
    let text = answer.text().await?;
    let body = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    Ok((status, body))
}

/// The dotted type names of `events`, in order.
pub fn types(events: &[Envelope]) -> Vec<&'static str> {
    events.iter().map(|e| e.event.type_name()).collect()
}

/// How many of `events` have type `kind`.
pub fn count(events: &[Envelope], kind: &str) -> usize {
    events
        .iter()
        .filter(|e| e.event.type_name() == kind)
        .count()
}

/// Records what runs now as `service.deployed` events, one append per environment (what
/// `railyard inventory import` does).
pub async fn import_inventory(bus: &Bus, inventory: &Inventory) -> anyhow::Result<usize> {
    let clock = SystemClock;
    let mut count = 0;
    for (env, state) in &inventory.0 {
        let aggregate = AggregateId::Inventory(env.clone());
        let mut databases = state.databases.clone();
        let events: Vec<Envelope> = state
            .services
            .iter()
            .map(|(service, running)| {
                Envelope::new(
                    aggregate.clone(),
                    "operator:import",
                    clock.now(),
                    Event::ServiceDeployed(ServiceDeployed {
                        env: env.clone(),
                        service: service.clone(),
                        running: Some(running.clone()),
                        databases: std::mem::take(&mut databases),
                        release: None,
                    }),
                )
            })
            .collect();
        if events.is_empty() {
            continue;
        }
        count += events.len();
        bus.append(&aggregate, Expected::Any, &events).await?;
    }
    Ok(count)
}

/// An `artifact.published` CDEvent (v0.5.1) for `service` at `version`, built on `main`.
pub fn artifact_cdevent(id: &str, service: &str, version: &str) -> Value {
    json!({
        "context": {
            "specversion": "0.5.1",
            "id": id,
            "source": "/ci/pipelines",
            "type": "dev.cdevents.artifact.published.0.3.0",
            "timestamp": "2026-11-25T10:00:00Z",
            "chainId": format!("chain-{service}-{version}")
        },
        "subject": {
            "id": format!("pkg:oci/{service}@{version}"),
            "source": "/ci/pipelines",
            "content": {}
        },
        "customData": { "railyard": { "branch": "main" } }
    })
}

#[cfg(test)]
mod tests {
    //! The Slack stand-in catches what the scenarios rely on it to catch.

    use super::*;

    struct Client {
        slack: SlackStandIn,
        url: String,
        http: reqwest::Client,
        _stop: tokio_util::sync::DropGuard,
    }

    impl Client {
        async fn start() -> anyhow::Result<Client> {
            let slack = SlackStandIn::default();
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let url = format!("http://{}/api", listener.local_addr()?);
            let stop = CancellationToken::new();
            tokio::spawn(serve(listener, slack.router(), stop.clone()));
            Ok(Client {
                slack,
                url,
                http: reqwest::Client::new(),
                _stop: stop.drop_guard(),
            })
        }

        async fn call(&self, method: &str, token: &str, body: Value) -> anyhow::Result<Value> {
            Ok(self
                .http
                .post(format!("{}/{method}", self.url))
                .bearer_auth(token)
                .json(&body)
                .send()
                .await?
                .json()
                .await?)
        }

        async fn post(&self, channel: &str, text: &str, thread: Option<&str>) -> String {
            let mut body = json!({"channel": channel, "text": text});
            if let Some(thread) = thread {
                body["thread_ts"] = json!(thread);
            }
            let answer = self
                .call("chat.postMessage", SLACK_BOT_TOKEN, body)
                .await
                .expect("the stand-in answers");
            answer["ts"].as_str().unwrap_or_default().to_owned()
        }
    }

    #[tokio::test]
    async fn a_thread_reads_as_slack_shows_it() -> anyhow::Result<()> {
        let slack = Client::start().await?;
        let root = slack.post("#releases", "Release r1: Planned", None).await;
        slack.post("#releases", "r1: planned", Some(&root)).await;
        slack.post("CRELEASES", "r1: completed", Some(&root)).await;
        let answer = slack
            .call(
                "chat.update",
                SLACK_BOT_TOKEN,
                json!({"channel": "CRELEASES", "ts": root, "text": "Release r1: Completed"}),
            )
            .await?;
        assert_eq!(answer["ok"], json!(true), "{answer}");
        let threads = slack.slack.release("r1", &["#releases"])?;
        let thread = &threads["#releases"];
        assert_eq!(thread.root_text, "Release r1: Completed");
        assert_eq!(thread.updates, 1);
        assert_eq!(thread.replies, ["r1: planned", "r1: completed"]);
        Ok(())
    }

    #[tokio::test]
    async fn a_repeated_reply_a_second_root_and_a_refused_call_are_caught() -> anyhow::Result<()> {
        let slack = Client::start().await?;
        let root = slack.post("#releases", "Release r1: Planned", None).await;
        slack.post("#releases", "r1: completed", Some(&root)).await;
        slack.post("#releases", "r1: completed", Some(&root)).await;
        let error = slack.slack.release("r1", &["#releases"]).unwrap_err();
        assert!(error.to_string().contains("twice"), "{error}");

        let slack = Client::start().await?;
        slack.post("#releases", "Release r1: Planned", None).await;
        slack.post("#releases", "Release r1: Planned", None).await;
        let error = slack.slack.release("r1", &["#releases"]).unwrap_err();
        assert!(error.to_string().contains("more than one"), "{error}");

        let slack = Client::start().await?;
        slack.post("#releases", "Release r1: Planned", None).await;
        let error = slack
            .slack
            .release("r1", &["#releases", "#payments-releases"])
            .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("no thread in #payments-releases")
        );

        let slack = Client::start().await?;
        slack
            .post("#releases", "r1: orphan", Some("1700000000.000099"))
            .await;
        let answer = slack
            .call(
                "chat.postMessage",
                "xoxb-wrong",
                json!({"channel": "#releases", "text": "x"}),
            )
            .await?;
        assert_eq!(answer["error"], json!("invalid_auth"));
        assert_eq!(
            slack.slack.refused(),
            [
                "chat.postMessage CRELEASES: thread_not_found",
                "chat.postMessage CRELEASES: invalid_auth"
            ]
        );
        assert!(slack.slack.release("r1", &["#releases"]).is_err());
        Ok(())
    }
}

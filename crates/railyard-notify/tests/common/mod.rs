//! Test support: a real local HTTP server standing in for Slack (Web API and incoming
//! webhooks) that records every call and, like Slack, refuses payloads over the block and
//! text limits with Slack's error codes and can be told to answer 429 with `Retry-After`;
//! a real nats-server; the notifier run as a task; the events of a release, appended as
//! the planner and the promoter would; and a simulated clock that moves when the notifier
//! waits, appending a release's events as they fall due.
#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chrono::{DateTime, Utc};
use railyard_bus::{Bus, BusConfig, Expected};
use railyard_core::clock::Sleep;
use railyard_core::event::*;
use railyard_core::inventory::RunningService;
use railyard_core::plan::{Action, Edge, Plan, Refusal, Step};
use railyard_core::step::{StepId, Target};
use railyard_core::{
    AggregateId, Catalog, Change, Clock, Envelope, Event, ManualClock, ReleaseId, SharedClock,
};
use railyard_notify::{BotToken, History, NotifyConfig, Transport};
use railyard_testkit::NatsServer;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Every bounded wait in these tests.
pub const WAIT: Duration = Duration::from_secs(30);

/// One call the stand-in received.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Received {
    /// `chat.postMessage`, `chat.update` or `webhook:<channel>`.
    pub method: String,
    /// The JSON body.
    pub body: Value,
    /// What the stand-in answered (200, 429, ...), and Slack's error when it refused.
    pub status: u16,
    pub error: Option<String>,
}

/// A scripted answer for the next call.
#[derive(Debug, Clone, Copy)]
pub enum Script {
    /// 429 with `Retry-After: <secs>`.
    RateLimit(u64),
    /// 500.
    ServerError,
    /// Answer as Slack normally would.
    Normal,
}

#[derive(Debug, Default)]
struct SlackState {
    received: Vec<Received>,
    script: VecDeque<Script>,
    next_ts: u64,
    messages: BTreeMap<(String, String), Value>,
}

/// The stand-in for Slack.
#[derive(Clone)]
pub struct FakeSlack {
    state: Arc<Mutex<SlackState>>,
    count: watch::Sender<usize>,
    pub url: String,
    _server: Arc<tokio::task::JoinHandle<()>>,
}

/// The channel id the stand-in gives a channel name.
pub fn channel_id(name: &str) -> String {
    format!(
        "C{}",
        name.trim_start_matches('#').to_uppercase().replace('-', "")
    )
}

fn text_len(value: &Value) -> usize {
    value.as_str().map_or(0, |s| s.chars().count())
}

/// A Block Kit button as Slack accepts it: plain-text label of at most 75 characters,
/// `action_id` and `value` within 255 and 2,000 characters, `style` primary or danger, and a
/// confirm dialog with plain-text title (100), text (300) and labels (30).
fn button_ok(button: &Value) -> bool {
    let plain = |v: &Value, max: usize| {
        v["type"] == "plain_text" && (1..=max).contains(&text_len(&v["text"]))
    };
    let confirm = &button["confirm"];
    button["type"] == "button"
        && plain(&button["text"], 75)
        && (1..=255).contains(&text_len(&button["action_id"]))
        && text_len(&button["value"]) <= 2000
        && button
            .get("style")
            .is_none_or(|s| s == "primary" || s == "danger")
        && confirm.get("title").is_none_or(|t| plain(t, 100))
        && confirm
            .get("text")
            .is_none_or(|t| (1..=300).contains(&text_len(&t["text"])))
        && confirm.get("confirm").is_none_or(|t| plain(t, 30))
        && confirm.get("deny").is_none_or(|t| plain(t, 30))
}

/// What Slack would refuse in `body`, with its error code.
pub fn slack_refusal(body: &Value) -> Option<&'static str> {
    if text_len(&body["text"]) > 40_000 {
        return Some("msg_too_long");
    }
    let blocks = body["blocks"].as_array();
    if body["text"].as_str().is_none_or(str::is_empty) && blocks.is_none_or(Vec::is_empty) {
        return Some("no_text");
    }
    let blocks = blocks.cloned().unwrap_or_default();
    if blocks.len() > 50 {
        return Some("invalid_blocks");
    }
    for block in &blocks {
        let ok = match block["type"].as_str() {
            Some("header") => {
                block["text"]["type"] == "plain_text"
                    && (1..=150).contains(&text_len(&block["text"]["text"]))
            }
            Some("section") => {
                let text_ok = block
                    .get("text")
                    .is_none_or(|t| (1..=3000).contains(&text_len(&t["text"])));
                let fields_ok = block.get("fields").is_none_or(|f| {
                    f.as_array().is_some_and(|f| {
                        f.len() <= 10
                            && f.iter().all(|x| (1..=2000).contains(&text_len(&x["text"])))
                    })
                });
                text_ok
                    && fields_ok
                    && (block.get("text").is_some() || block.get("fields").is_some())
            }
            Some("context") => block["elements"].as_array().is_some_and(|e| {
                !e.is_empty()
                    && e.len() <= 10
                    && e.iter().all(|x| (1..=3000).contains(&text_len(&x["text"])))
            }),
            Some("divider") => true,
            Some("actions") => block["elements"].as_array().is_some_and(|e| {
                !e.is_empty()
                    && e.len() <= 25
                    && text_len(&block["block_id"]) <= 255
                    && e.iter().all(button_ok)
            }),
            _ => false,
        };
        if !ok {
            return Some("invalid_blocks");
        }
    }
    None
}

impl FakeSlack {
    pub async fn start() -> anyhow::Result<FakeSlack> {
        let state = Arc::new(Mutex::new(SlackState {
            next_ts: 100,
            ..SlackState::default()
        }));
        let count = watch::channel(0).0;
        let app = Router::new()
            .route("/api/{method}", post(web_api))
            .route("/hooks/{channel}", post(webhook))
            .with_state((Arc::clone(&state), count.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .await
                .expect("the stand-in serves");
        });
        Ok(FakeSlack {
            state,
            count,
            url,
            _server: Arc::new(server),
        })
    }

    /// Answers the next calls as scripted, in order, before answering normally again.
    pub fn script(&self, answers: &[Script]) {
        self.state
            .lock()
            .unwrap()
            .script
            .extend(answers.iter().copied());
    }

    /// Every call received so far, refused ones included.
    pub fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }

    /// The calls accepted so far.
    pub fn accepted(&self) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.status == 200 && r.error.is_none())
            .collect()
    }

    /// Waits until at least `n` calls were received.
    pub async fn wait_for_calls(&self, n: usize) -> anyhow::Result<()> {
        let mut rx = self.count.subscribe();
        tokio::time::timeout(WAIT, rx.wait_for(|c| *c >= n))
            .await
            .map_err(|_| anyhow::anyhow!("the stand-in did not get {n} calls within {WAIT:?}"))??;
        Ok(())
    }

    pub fn web_api(&self) -> Transport {
        Transport::WebApi {
            base_url: format!("{}/api", self.url),
            token: BotToken::new("xoxb-test").unwrap(),
        }
    }

    pub fn webhooks(&self, channels: &[&str]) -> Transport {
        Transport::Webhooks {
            urls: channels
                .iter()
                .map(|c| {
                    (
                        c.to_string(),
                        format!("{}/hooks/{}", self.url, c.trim_start_matches('#')),
                    )
                })
                .collect(),
        }
    }
}

type AppState = (Arc<Mutex<SlackState>>, watch::Sender<usize>);

fn record(state: &AppState, received: Received) {
    state.0.lock().unwrap().received.push(received);
    state.1.send_modify(|c| *c += 1);
}

fn scripted(state: &AppState, method: &str, body: &Value) -> Option<Response> {
    let next = state.0.lock().unwrap().script.pop_front()?;
    let (status, response) = match next {
        Script::Normal => return None,
        Script::RateLimit(secs) => (
            429,
            (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", secs.to_string())],
                "",
            )
                .into_response(),
        ),
        Script::ServerError => (
            500,
            (StatusCode::INTERNAL_SERVER_ERROR, "oops").into_response(),
        ),
    };
    record(
        state,
        Received {
            method: method.to_owned(),
            body: body.clone(),
            status,
            error: None,
        },
    );
    Some(response)
}

async fn web_api(
    State(state): State<AppState>,
    UrlPath(method): UrlPath<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    if let Some(response) = scripted(&state, &method, &body) {
        return response;
    }
    let answer = |error: Option<&str>, extra: Value| {
        record(
            &state,
            Received {
                method: method.clone(),
                body: body.clone(),
                status: 200,
                error: error.map(str::to_owned),
            },
        );
        let mut out = match error {
            Some(error) => json!({"ok": false, "error": error}),
            None => json!({"ok": true}),
        };
        if let (Some(out), Some(extra)) = (out.as_object_mut(), extra.as_object()) {
            out.extend(extra.clone());
        }
        axum::Json(out).into_response()
    };
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer xoxb-test") {
        return answer(Some("invalid_auth"), json!({}));
    }
    if let Some(error) = slack_refusal(&body) {
        return answer(Some(error), json!({}));
    }
    match method.as_str() {
        "chat.postMessage" => {
            let Some(channel) = body["channel"].as_str() else {
                return answer(Some("channel_not_found"), json!({}));
            };
            let id = channel_id(channel);
            let ts = {
                let mut s = state.0.lock().unwrap();
                s.next_ts += 1;
                let ts = format!("1700000000.{:06}", s.next_ts);
                s.messages.insert((id.clone(), ts.clone()), body.clone());
                ts
            };
            if let Some(thread) = body["thread_ts"].as_str() {
                if !state
                    .0
                    .lock()
                    .unwrap()
                    .messages
                    .contains_key(&(id.clone(), thread.to_owned()))
                {
                    return answer(Some("thread_not_found"), json!({}));
                }
            }
            answer(None, json!({"channel": id, "ts": ts}))
        }
        "chat.update" => {
            let key = (
                body["channel"].as_str().unwrap_or_default().to_owned(),
                body["ts"].as_str().unwrap_or_default().to_owned(),
            );
            if !state.0.lock().unwrap().messages.contains_key(&key) {
                return answer(Some("message_not_found"), json!({}));
            }
            answer(None, json!({"channel": key.0, "ts": key.1}))
        }
        _ => answer(Some("unknown_method"), json!({})),
    }
}

async fn webhook(
    State(state): State<AppState>,
    UrlPath(channel): UrlPath<String>,
    body: String,
) -> Response {
    let method = format!("webhook:#{channel}");
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    if let Some(response) = scripted(&state, &method, &body) {
        return response;
    }
    let error = slack_refusal(&body);
    record(
        &state,
        Received {
            method,
            body,
            status: if error.is_some() { 400 } else { 200 },
            error: error.map(str::to_owned),
        },
    );
    match error {
        Some(error) => (StatusCode::BAD_REQUEST, error).into_response(),
        None => "ok".into_response(),
    }
}

/// The estate the tests release into.
pub const CATALOG: &str = r##"
[groups]
release-managers = ["alice", "bob"]

[[environments]]
name = "staging"

[[environments]]
name = "production"
after = "staging"
approval = { required = true, approvers = ["alice", "group:release-managers"] }

[services.orders-api]
owner = "team-orders"
slack_channel = "#orders-releases"
match = { repository = "https://github.com/acme/orders-api" }
deploy = { kind = "simulated" }

[services.billing-worker]
owner = "team-billing"
deploy = { kind = "simulated" }

[services.orders-worker]
owner = "team-orders"
deploy = { kind = "simulated" }

[services.legacy-cron]
deploy = { kind = "simulated" }

[notify.slack]
default_channel = "#releases"
verbosity = { "#releases" = "changes", "#orders-releases" = "all" }
"##;

pub fn catalog() -> Catalog {
    Catalog::from_toml(CATALOG).unwrap()
}

/// A running notifier.
pub struct Running {
    pub stop: CancellationToken,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
    pub handled: watch::Receiver<u64>,
}

impl Running {
    /// Waits until the notifier finished with stream message `sequence`.
    pub async fn wait_handled(&mut self, sequence: u64) -> anyhow::Result<()> {
        tokio::time::timeout(WAIT, self.handled.wait_for(|h| *h >= sequence))
            .await
            .map_err(|_| {
                anyhow::anyhow!("the notifier did not handle sequence {sequence} within {WAIT:?}")
            })??;
        Ok(())
    }

    /// Stops it gracefully and waits for it.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        tokio::time::timeout(WAIT, self.task).await???;
        Ok(())
    }
}

/// Starts the notifier on `nats` with `transport`, its ledger in `store`, no pacing.
pub fn start_notifier(
    nats: &NatsServer,
    transport: Transport,
    store: &Path,
    clock: SharedClock,
    pacing: Duration,
) -> Running {
    let (tx, rx) = watch::channel(0);
    let mut config = NotifyConfig::new(catalog(), transport, store);
    config.clock = clock;
    config.pacing = pacing;
    config.history = History::Send;
    config.ui_url = Some("https://railyard.example.com".to_owned());
    config.backoff = railyard_notify::Backoff {
        initial: Duration::from_millis(10),
        max: Duration::from_millis(100),
    };
    config.handled = Some(tx);
    let stop = CancellationToken::new();
    let url = nats.url();
    let token = stop.clone();
    let task = tokio::spawn(async move {
        let bus = Bus::connect(&url, BusConfig::default()).await?;
        railyard_notify::run(config, bus, token).await?;
        Ok(())
    });
    Running {
        stop,
        task,
        handled: rx,
    }
}

pub async fn bus(nats: &NatsServer) -> anyhow::Result<Bus> {
    let bus = Bus::connect(&nats.url(), BusConfig::default()).await?;
    bus.ensure_topology().await?;
    Ok(bus)
}

fn at() -> chrono::DateTime<chrono::Utc> {
    "2026-03-02T10:00:00Z".parse().unwrap()
}

/// Appends `events` to release `id` in one message, as one actor; returns its sequence.
pub async fn append(bus: &Bus, id: &str, actor: &str, events: Vec<Event>) -> anyhow::Result<u64> {
    let aggregate = AggregateId::Release(id.parse()?);
    let envelopes: Vec<Envelope> = events
        .into_iter()
        .map(|e| Envelope::new(aggregate.clone(), actor, at(), e))
        .collect();
    Ok(bus
        .append(&aggregate, Expected::Any, &envelopes)
        .await?
        .sequence)
}

/// Records that `service` runs `commit` in `env`.
pub async fn deployed(
    bus: &Bus,
    env: &str,
    service: &str,
    version: &str,
    commit: &str,
    release: Option<&str>,
) -> anyhow::Result<u64> {
    let aggregate = AggregateId::Inventory(env.parse()?);
    let running: RunningService =
        serde_json::from_value(json!({"version": version, "commit": commit}))?;
    let event = Event::ServiceDeployed(ServiceDeployed {
        env: env.parse()?,
        service: service.parse()?,
        running: Some(running),
        databases: Default::default(),
        release: release.map(|r| r.parse()).transpose()?,
    });
    let envelope = Envelope::new(aggregate.clone(), "railyard-promoter", at(), event);
    Ok(bus
        .append(&aggregate, Expected::Any, &[envelope])
        .await?
        .sequence)
}

pub fn change(service: &str, version: &str, commit: &str) -> Change {
    serde_json::from_value(json!({"service": service, "version": version, "commit": commit}))
        .unwrap()
}

pub fn requested(id: &str, changes: Vec<Change>) -> Event {
    Event::ReleaseRequested(ReleaseRequested {
        release: id.parse().unwrap(),
        requested_by: "carol".into(),
        changes,
    })
}

fn step(env: &str, action: Action, target: &str, version: Option<&str>) -> Step {
    let target = Target::parse(action, target).unwrap();
    let id = StepId::new(env.parse().unwrap(), action, target).unwrap();
    Step::new(id, version.map(str::to_owned))
}

fn edge(from: &str, to: &str, rule: &str, reason: &str) -> Edge {
    Edge {
        from: from.into(),
        to: to.into(),
        rule: rule.into(),
        reason: reason.into(),
    }
}

/// The plan of release `id` moving orders-api to 2.4.0 through staging and production.
pub fn plan(id: &str) -> Plan {
    let steps = vec![
        step("staging", Action::Deploy, "orders-api", Some("2.4.0")),
        step("staging", Action::Verify, "orders-api", Some("2.4.0")),
        step("production", Action::Approve, id, None),
        step("production", Action::Deploy, "orders-api", Some("2.4.0")),
        step("production", Action::Verify, "orders-api", Some("2.4.0")),
    ];
    let s: Vec<String> = steps.iter().map(|s| s.id.clone()).collect();
    Plan {
        release: id.parse().unwrap(),
        catalog_hash: "sha256:test".into(),
        edges: vec![
            edge(
                &s[0],
                &s[1],
                "step-order",
                "orders-api is verified after it is deployed",
            ),
            edge(
                &s[1],
                &s[2],
                "environment-order",
                "orders-api 2.4.0 passes staging before it goes to production",
            ),
            edge(
                &s[2],
                &s[3],
                "step-order",
                "production needs an approval (alice, group:release-managers) before this release starts there",
            ),
            edge(
                &s[3],
                &s[4],
                "step-order",
                "orders-api is verified after it is deployed",
            ),
        ],
        waves: s.iter().map(|id| vec![id.clone()]).collect(),
        critical_path: s.clone(),
        steps,
        external_edges: vec![],
        points_of_no_return: vec![],
    }
}

pub fn started(step: &str) -> Event {
    Event::StepStarted(StepStarted {
        step: step.into(),
        worker: "worker-1".into(),
        attempt: 1,
    })
}

pub fn succeeded(step: &str) -> Event {
    Event::StepSucceeded(StepOutcome {
        step: step.into(),
        detail: String::new(),
    })
}

pub fn failed(step: &str, detail: &str) -> Event {
    Event::StepFailed(StepOutcome {
        step: step.into(),
        detail: detail.into(),
    })
}

pub fn gate_failed(step: &str) -> Event {
    Event::GateEvaluated(GateEvaluated {
        step: step.into(),
        gate: "http#0".into(),
        passed: false,
        observed: "status 503, /status = \"degraded\"".into(),
        expected: "status 200, /status = \"ok\"".into(),
    })
}

pub fn refusal(rule: &str, env: Option<&str>, reason: &str, remedy: &str) -> Refusal {
    Refusal {
        rule: rule.into(),
        env: env.map(|e| e.parse().unwrap()),
        reason: reason.into(),
        remedy: remedy.into(),
        release: None,
    }
}

/// What the stand-in accepted, with ts redacted, as the snapshots show it.
pub fn accepted_json(slack: &FakeSlack) -> Value {
    json!(
        slack
            .accepted()
            .into_iter()
            .map(|r| json!({"method": r.method, "body": r.body}))
            .collect::<Vec<_>>()
    )
}

pub fn release_id(id: &str) -> ReleaseId {
    id.parse().unwrap()
}

/// One append of a scenario.
pub enum Append {
    /// Events of the release, by an actor.
    Release(&'static str, Vec<Event>),
    /// orders-api now runs `version` at `commit` in `env`.
    Deployed(&'static str, &'static str, &'static str),
}

/// Appends `script` for release `id`; returns the last sequence.
pub async fn play(bus: &Bus, id: &str, script: Vec<Append>) -> anyhow::Result<u64> {
    let mut last = 0;
    for step in script {
        last = match step {
            Append::Release(actor, events) => append(bus, id, actor, events).await?,
            Append::Deployed(env, version, commit) => {
                let release = (version == "2.4.0").then_some(id);
                deployed(bus, env, "orders-api", version, commit, release).await?
            }
        };
    }
    Ok(last)
}

/// Inventory before, the request and the plan of release `id` (orders-api to 2.4.0).
pub fn request_and_plan(id: &str) -> Vec<Append> {
    vec![
        Append::Deployed("staging", "2.3.0", "1a2b3c4d5e"),
        Append::Deployed("production", "2.3.0", "1a2b3c4d5e"),
        Append::Release(
            "carol",
            vec![requested(
                id,
                vec![change("orders-api", "2.4.0", "d4e5f6a7b8")],
            )],
        ),
        Append::Release(
            "railyard-planner",
            vec![Event::ReleasePlanned(ReleasePlanned { plan: plan(id) })],
        ),
    ]
}

/// Everything of a release that goes through: request, plan, staging, approval,
/// production, completion.
pub fn full_release(id: &str) -> Vec<Append> {
    let p = plan(id);
    let s: Vec<&str> = p.steps.iter().map(|s| s.id.as_str()).collect();
    let mut out = request_and_plan(id);
    out.extend([
        Append::Release("railyard-promoter", vec![started(s[0])]),
        Append::Release("railyard-promoter", vec![succeeded(s[0])]),
        Append::Deployed("staging", "2.4.0", "d4e5f6a7b8"),
        Append::Release("railyard-promoter", vec![started(s[1])]),
        Append::Release("railyard-promoter", vec![succeeded(s[1])]),
        Append::Release(
            "railyard-promoter",
            vec![
                started(s[2]),
                Event::ApprovalRequested(ApprovalRequested {
                    step: s[2].into(),
                    env: "production".parse().unwrap(),
                    approvers: vec!["alice".into(), "group:release-managers".into()],
                    reason: None,
                }),
            ],
        ),
        Append::Release(
            "alice",
            vec![Event::ApprovalGranted(ApprovalDecision {
                step: s[2].into(),
                comment: "go".into(),
            })],
        ),
        Append::Release("railyard-promoter", vec![succeeded(s[2])]),
        Append::Release("railyard-promoter", vec![started(s[3])]),
        Append::Release("railyard-promoter", vec![succeeded(s[3])]),
        Append::Deployed("production", "2.4.0", "d4e5f6a7b8"),
        Append::Release("railyard-promoter", vec![started(s[4])]),
        Append::Release("railyard-promoter", vec![succeeded(s[4])]),
        Append::Release(
            "railyard-promoter",
            vec![Event::ReleaseCompleted(ReleaseCompleted {})],
        ),
    ]);
    out
}

pub fn clone_append(append: &Append) -> Append {
    match append {
        Append::Release(actor, events) => Append::Release(actor, events.clone()),
        Append::Deployed(env, version, commit) => Append::Deployed(env, version, commit),
    }
}

/// The plan of release `id` moving `services` through staging (deploy, verify) and, after an
/// approval, production.
pub fn plan_of(id: &str, services: &[&str]) -> Plan {
    let mut steps = Vec::new();
    for env in ["staging", "production"] {
        if env == "production" {
            steps.push(step(env, Action::Approve, id, None));
        }
        for service in services {
            steps.push(step(env, Action::Deploy, service, Some("1.0.0")));
            steps.push(step(env, Action::Verify, service, Some("1.0.0")));
        }
    }
    let ids: Vec<String> = steps.iter().map(|s| s.id.clone()).collect();
    Plan {
        release: id.parse().unwrap(),
        catalog_hash: "sha256:test".into(),
        edges: vec![],
        waves: ids.iter().map(|id| vec![id.clone()]).collect(),
        critical_path: ids,
        steps,
        external_edges: vec![],
        points_of_no_return: vec![],
    }
}

/// When the simulated clock starts.
pub fn sim_start() -> DateTime<Utc> {
    "2026-03-02T10:00:00Z".parse().unwrap()
}

/// The appends of a release still to come, each at its time, and the last one made.
pub struct Schedule {
    pub bus: Option<Bus>,
    pub id: String,
    pub due: VecDeque<(DateTime<Utc>, Append)>,
    pub last: u64,
    pub last_at: DateTime<Utc>,
}

/// A clock for measuring pacing without waiting: it moves only when the notifier waits, by
/// exactly the wait (so a wait costs simulated time, never real time), and appends the events
/// of its schedule that fall due on the way, before the notifier wakes — a discrete-event
/// simulation of a release moving while Slack is paced. Waits longer than `block_over` are
/// not simulated: they wait for the test to move the clock, like a [`ManualClock`].
#[derive(Clone)]
pub struct SimClock {
    pub manual: ManualClock,
    pub schedule: Arc<tokio::sync::Mutex<Schedule>>,
    pub block_over: Option<Duration>,
}

impl std::fmt::Debug for SimClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimClock")
            .field("now", &self.manual.now())
            .finish_non_exhaustive()
    }
}

impl SimClock {
    /// A clock with nothing scheduled.
    pub fn new() -> SimClock {
        SimClock {
            manual: ManualClock::new(sim_start()),
            schedule: Arc::new(tokio::sync::Mutex::new(Schedule {
                bus: None,
                id: String::new(),
                due: VecDeque::new(),
                last: 0,
                last_at: sim_start(),
            })),
            block_over: None,
        }
    }

    /// A clock that appends `script` for release `id`, one append every `every` from the
    /// start.
    pub fn scheduled(bus: Bus, id: &str, script: Vec<Append>, every: Duration) -> SimClock {
        let clock = SimClock::new();
        let step = chrono::Duration::from_std(every).unwrap();
        {
            let mut schedule = clock.schedule.try_lock().unwrap();
            schedule.bus = Some(bus);
            schedule.id = id.to_owned();
            schedule.due = script
                .into_iter()
                .enumerate()
                .map(|(i, append)| (sim_start() + step * i32::try_from(i).unwrap(), append))
                .collect();
        }
        clock
    }

    pub fn shared(&self) -> SharedClock {
        Arc::new(self.clone())
    }

    /// Moves to `target`, appending everything due by then at its time.
    pub async fn run_to(&self, target: DateTime<Utc>) -> anyhow::Result<()> {
        let mut schedule = self.schedule.lock().await;
        while schedule.due.front().is_some_and(|(at, _)| *at <= target) {
            let (at, append) = schedule.due.pop_front().unwrap();
            self.move_to(at);
            let bus = schedule.bus.clone().expect("a scheduled clock has a bus");
            let id = schedule.id.clone();
            schedule.last = play(&bus, &id, vec![append]).await?;
            schedule.last_at = at;
        }
        self.move_to(target);
        Ok(())
    }

    /// Appends the next scheduled append at its time (moving the clock there); `false` when
    /// nothing is left.
    pub async fn next_append(&self) -> anyhow::Result<bool> {
        let at = match self.schedule.lock().await.due.front() {
            Some((at, _)) => *at,
            None => return Ok(false),
        };
        self.run_to(at).await?;
        Ok(true)
    }

    pub fn move_to(&self, at: DateTime<Utc>) {
        let now = self.manual.now();
        if at > now {
            self.manual.advance((at - now).to_std().unwrap());
        }
    }
}

impl Clock for SimClock {
    fn now(&self) -> DateTime<Utc> {
        self.manual.now()
    }

    fn sleep(&self, duration: Duration) -> Sleep {
        if self.block_over.is_some_and(|over| duration > over) {
            return self.manual.sleep(duration);
        }
        let clock = self.clone();
        Box::pin(async move {
            let target = clock.now() + chrono::Duration::from_std(duration).unwrap();
            clock
                .run_to(target)
                .await
                .expect("the simulated release appends its events");
        })
    }
}

/// Plays `clock`'s schedule against `notifier` — appending the next event whenever the
/// notifier has handled everything appended so far, and letting its waits append what falls
/// due meanwhile — until everything is appended and handled.
pub async fn play_scheduled(clock: &SimClock, notifier: &mut Running) -> anyhow::Result<()> {
    loop {
        let last = clock.schedule.lock().await.last;
        notifier.wait_handled(last).await?;
        if clock.schedule.lock().await.last != last {
            continue; // appended while the notifier waited
        }
        if !clock.next_append().await? {
            return Ok(());
        }
    }
}

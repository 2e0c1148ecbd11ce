//! The harness of Railyard's full-flow scenarios: one real `nats-server`
//! ([`railyard_testkit::NatsServer`]) and, in this process, what `railyard dev` runs, started
//! by the same wiring (`railyard::stack`): every service on one shared NATS connection —
//! the dead-letter forwarder, intake (HTTP and NATS), the planner, two promotion workers, the
//! audit projection, the operator routes, the release metrics and the Slack notifier — behind
//! one HTTP listener on `127.0.0.1:0` with generated tokens; plus two stand-ins on their own
//! listeners: the health endpoints ([`Health`], `railyard dev`'s own) whose failing
//! `<service>/<env>` pairs a test controls, and a Slack Web API ([`SlackStandIn`], from
//! `railyard-testkit`) that records every `chat.postMessage` and `chat.update`.
//!
//! Scenarios drive it only through public interfaces: `POST /v1/releases`, the GitHub webhook
//! and CDEvents routes, the `railyard` CLI ([`Stack::cli`]: `approve`, `deny`, `hold`,
//! `resume`, `retry`, `rollback`, `cancel`, `release submit|status|watch`), the audit queries
//! and SSE, and what Slack was told ([`Stack::slack_release`]). They observe progress by
//! reading the release's events with [`Bus::load`] in a bounded loop
//! ([`Stack::wait_release`]); every wait has a hard timeout and fails early, naming the
//! service, when a service task dies.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use railyard::stack::{NatsSource, Running, StackConfig};
use railyard_bus::{Bus, BusConfig};
use railyard_core::{AggregateId, Catalog, Envelope, Inventory, ReleaseId, ReleaseState};
use railyard_http::Role;
use railyard_testkit::{NatsServer, Served};
use serde_json::{Value, json};
use tokio::sync::watch;

pub use railyard::stack::health::Health;
pub use railyard_testkit::slack::{
    SLACK_BOT_TOKEN, SlackCall, SlackStandIn, SlackThread, slack_channel_id,
};

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
    /// What `railyard dev` runs, started by the same wiring (`railyard::stack`).
    running: Mutex<Option<Running>>,
    _stand_ins: [Served; 2],
    dir: tempfile::TempDir,
}

/// The bus settings of the stack and of the test's own connection: fast redelivery and
/// reconnects, short leases.
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

impl Stack {
    /// Starts NATS and the stand-ins (health, Slack), then what `railyard dev` runs, through
    /// the same wiring (`railyard::stack::StackConfig`) with the scenarios' timings: one
    /// shared NATS connection, the dead-letter forwarder, the planner, two promotion workers,
    /// the notifier pointed at the Slack stand-in, the release metrics, intake (HTTP and NATS),
    /// the audit projection (sealed), the operator routes; [`inventory`] recorded first.
    pub async fn start(options: Options) -> anyhow::Result<Stack> {
        let nats = NatsServer::start().await?;
        let url = nats.url();
        let dir = tempfile::tempdir()?;
        let bus = Bus::connect(&url, bus_config("test"))
            .await
            .with_context(|| format!("the test cannot connect to {url}"))?;

        // The health server the gates call, and Slack.
        let health = Health::default();
        let health_server = railyard_testkit::serve(health.router()).await?;
        let slack = SlackStandIn::default();
        let slack_server = slack.serve().await?;

        let catalog = Catalog::from_toml(&catalog(
            options.on_failure,
            options.deploy_duration,
            &health_server.url,
        ))
        .context("the scenario catalog")?;

        // Tokens: only their hashes reach the services.
        let (table, generated) = railyard::stack::generate_tokens(&[
            ("ci:github-actions", &[Role::Publisher], &[]),
            ("ops", &[Role::Operator], &[]),
            ("alice", &[Role::Approver], &[]),
            ("bob", &[Role::Publisher, Role::Approver], &[]),
            ("auditor", &[Role::Auditor], &[]),
        ]);
        let [publisher, operator, alice, bob, auditor] =
            <[String; 5]>::try_from(generated).expect("five tokens");
        let tokens = Tokens {
            publisher,
            operator,
            alice,
            bob,
            auditor,
        };

        let mut config = StackConfig::new(catalog.clone(), dir.path().to_owned(), table)?;
        config.nats = NatsSource::External(url.clone());
        config.bus = bus_config("stack");
        config.listen = ([127, 0, 0, 1], 0).into();
        config.inventory = Some((inventory(), "operator:import".into()));
        for worker in &mut config.workers {
            worker.poll_interval = Duration::from_millis(100);
            worker.sweep_interval = Duration::from_millis(500);
            worker.lease_renew_interval = Duration::from_secs(1);
        }
        config.name_workers(&["worker-a", "worker-b"]);
        config.intake.github_secret = Some(railyard_intake::Secret::new(GITHUB_SECRET));
        config.audit.retry_initial = Duration::from_millis(100);
        config.audit.retry_max = Duration::from_millis(500);
        // The notifier sends for everything in the stream (`History::Send`): with the default
        // `Skip` a release submitted before the task has read where the stream ends would go
        // unannounced. No pacing: the stand-in has no rate limit, and the scenarios wait on
        // what the notifier has handled, not on time.
        let (notified_tx, notified) = watch::channel(0);
        let transport = railyard_notify::Transport::WebApi {
            base_url: slack_server.url.clone(),
            token: railyard_notify::BotToken::new(SLACK_BOT_TOKEN)?,
        };
        let mut notify =
            railyard_notify::NotifyConfig::new(catalog, transport, dir.path().join("notify"));
        notify.pacing = Duration::ZERO;
        notify.backoff = railyard_notify::Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(500),
        };
        notify.request_timeout = Duration::from_secs(5);
        notify.history = railyard_notify::History::Send;
        notify.handled = Some(notified_tx);
        config.notify = Some(notify);
        let running = config.start().await?;

        Ok(Stack {
            nats,
            bus,
            base: format!("http://{}", running.addr),
            tokens,
            health,
            slack,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(15))
                .build()?,
            notified,
            running: Mutex::new(Some(running)),
            _stand_ins: [health_server, slack_server],
            dir,
        })
    }

    /// Fails when a service task has ended (every service runs until the stack stops).
    pub fn check_services(&self) -> anyhow::Result<()> {
        match self.running.lock().expect("stack lock").as_mut() {
            Some(running) => running.check(),
            None => bail!("the stack was stopped"),
        }
    }

    /// Stops every service and waits (bounded) for them; errors while stopping are returned.
    pub async fn stop(self) -> anyhow::Result<()> {
        let running = self.running.lock().expect("stack lock").take();
        match running {
            Some(running) => running.stop(Duration::from_secs(15)).await,
            None => Ok(()),
        }
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
        if let Some(running) = self.running.lock().expect("stack lock").as_ref() {
            running.shutdown().cancel();
        }
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

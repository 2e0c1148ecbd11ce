//! GitHub write-back (`railyard github`): for every release whose changes come from GitHub
//! repositories — the catalog's `match.repository` of each changed service, which is how
//! webhooks, CDEvents sources and release files are matched to services in the first place —
//! per environment and repository, a GitHub Deployment of the head commit with statuses that
//! follow the plan's steps (`queued` when planned, `in_progress` at the first step,
//! `success` once every deploy and verify step of that repository's services succeeded,
//! `failure` at a failed step, `inactive` for the deployment it replaced, and for its own
//! after a rollback, when the one it replaced is marked `success` again), each pointing at
//! the console's release page; and a commit status (context `railyard`) on each head commit
//! saying what the release does: planned, waiting for approval, held, refused with the
//! planner's reasons, released, rolled back, cancelled.
//!
//! # Why a restart creates no second deployment
//!
//! The service reads the stream like the notifier ([`crate::follow`]): the calls of a stream
//! message are a pure function of its view of the release before the message
//! ([`decide::ReleaseView::apply`]); each call's effect is committed to the ledger with the
//! call count before the next call. A deployment id is recorded under (release, environment,
//! repository) as soon as GitHub returns it, and "create the deployment" first looks there.
//! For the window between GitHub creating a deployment and that commit reaching disk (a
//! crash, not a graceful stop), "create" first asks GitHub for the deployments of that
//! commit, environment and task `deploy:railyard` and takes the one whose payload names the
//! release; a 5xx or a timeout on "create" (GitHub may have acted before the answer was lost)
//! is not retried blindly: the lookup runs again first. What can still repeat after a crash
//! is the one status call in flight.

mod api;
pub mod auth;
pub mod decide;

use std::path::PathBuf;
use std::time::Duration;

use railyard_bus::{Bus, Delivery};
use railyard_core::{AggregateId, Catalog, ReleaseId, SharedClock, SystemClock};
use railyard_http::Metrics;
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::error::FeedbackError;
use crate::follow::{Flow, Handler, History, follow};
use crate::ledger::Ledger;
use crate::retry::Backoff;
use crate::secret::Secret;
use api::{Answer, Api, Counters};
pub use auth::{App, Auth, Auths};
use decide::{Call, Context, DeploymentState, ReleaseView, Repo};

/// The name the service reads the stream under.
pub const CONSUMER: &str = "railyard-github";

/// The deployment `task` Railyard's deployments carry (and are found again by).
pub const TASK: &str = "deploy:railyard";

/// GitHub's API.
pub const GITHUB_API: &str = "https://api.github.com";

/// GitHub's web address: repository URLs under it are GitHub repositories.
pub const GITHUB_WEB: &str = "https://github.com";

/// Everything `railyard github` needs.
#[derive(Debug, Clone)]
pub struct GithubConfig {
    /// The catalog in force: services' `match.repository`, the promotion path.
    pub catalog: Catalog,
    /// The REST API base: [`GITHUB_API`], or `https://<host>/api/v3` for GitHub Enterprise
    /// Server (`RAILYARD_GITHUB_API_URL`).
    pub api_url: String,
    /// Where repositories live: [`GITHUB_WEB`] or `https://<host>` (`RAILYARD_GITHUB_WEB_URL`).
    pub web_url: String,
    /// The console's base URL; statuses link to `{console_url}/releases/{id}`
    /// (`RAILYARD_UI_URL`).
    pub console_url: String,
    /// Credentials per repository owner.
    pub auths: Auths,
    /// The commit status context (`railyard`).
    pub context: String,
    /// The service's ledger (a sled directory).
    pub store: PathBuf,
    /// The store at `store` when this process already has it open: a service started again
    /// after NATS failed reuses it instead of opening the directory again
    /// ([`railyard_store::Store::kept_or_open`]). `None`: opened at each start.
    pub kept_store: Option<railyard_store::Store>,
    /// Every wait (rate limits, backoff) goes through it; JWTs are issued at its time.
    pub clock: SharedClock,
    /// Waits between retries of 5xx answers and timeouts.
    pub backoff: Backoff,
    /// How long one HTTP call may take before it counts as timed out (and is retried).
    pub request_timeout: Duration,
    /// Where an empty ledger starts.
    pub history: History,
    /// The process's metrics registry, when it has one.
    pub metrics: Option<Metrics>,
    /// Told the stream sequence of every message the service has finished with.
    pub handled: Option<watch::Sender<u64>>,
}

impl GithubConfig {
    /// A configuration with the defaults: github.com, context `railyard`, backoff 1 s doubling
    /// to 60 s, 10 s request timeout, the system clock, history skipped, no metrics.
    pub fn new(
        catalog: Catalog,
        auths: Auths,
        console_url: impl Into<String>,
        store: impl Into<PathBuf>,
    ) -> GithubConfig {
        GithubConfig {
            catalog,
            api_url: GITHUB_API.to_owned(),
            web_url: GITHUB_WEB.to_owned(),
            console_url: console_url.into(),
            auths,
            context: "railyard".to_owned(),
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

    /// The configuration from the environment: `RAILYARD_GITHUB_TOKEN` (default token, any
    /// owner), `RAILYARD_GITHUB_APP_ID` with `RAILYARD_GITHUB_APP_KEY_FILE` (and optionally
    /// `RAILYARD_GITHUB_APP_INSTALLATION_ID`) for a default App, `RAILYARD_GITHUB_AUTH_FILE`
    /// (per owner, see [`Auths::from_file`]), `RAILYARD_GITHUB_API_URL`,
    /// `RAILYARD_GITHUB_WEB_URL`, `RAILYARD_UI_URL` (default `http://127.0.0.1:7800`).
    /// `Ok(None)` when none of the credentials is set: the service is not configured.
    pub fn from_env(
        catalog: Catalog,
        store: impl Into<PathBuf>,
    ) -> Result<Option<GithubConfig>, FeedbackError> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let mut auths = match var("RAILYARD_GITHUB_AUTH_FILE") {
            Some(path) => Auths::from_file(std::path::Path::new(&path))?,
            None => Auths::default(),
        };
        match (
            var("RAILYARD_GITHUB_APP_ID"),
            var("RAILYARD_GITHUB_APP_KEY_FILE"),
        ) {
            (Some(app_id), Some(key)) => {
                let installation = match var("RAILYARD_GITHUB_APP_INSTALLATION_ID") {
                    Some(id) => Some(id.trim().parse::<u64>().map_err(|_| {
                        FeedbackError::Config(format!(
                            "RAILYARD_GITHUB_APP_INSTALLATION_ID={id:?} is not a number: copy it from the installation's settings url"
                        ))
                    })?),
                    None => None,
                };
                auths.default = Some(Auth::App(App::from_key_file(
                    app_id,
                    std::path::Path::new(&key),
                    installation,
                )?));
            }
            (Some(_), None) | (None, Some(_)) => {
                return Err(FeedbackError::Config(
                    "a github app needs both RAILYARD_GITHUB_APP_ID and RAILYARD_GITHUB_APP_KEY_FILE".to_owned(),
                ));
            }
            (None, None) => {
                if let Some(token) = var("RAILYARD_GITHUB_TOKEN") {
                    auths.default = Some(Auth::Token(Secret::new("RAILYARD_GITHUB_TOKEN", token)?));
                }
            }
        }
        if auths.is_empty() {
            return Ok(None);
        }
        let mut config = GithubConfig::new(
            catalog,
            auths,
            var("RAILYARD_UI_URL").unwrap_or_else(|| "http://127.0.0.1:7800".to_owned()),
            store,
        );
        if let Some(url) = var("RAILYARD_GITHUB_API_URL") {
            config.api_url = url;
        }
        if let Some(url) = var("RAILYARD_GITHUB_WEB_URL") {
            config.web_url = url;
        }
        Ok(Some(config))
    }

    fn check(&self) -> Result<(), FeedbackError> {
        for (what, url) in [
            ("RAILYARD_GITHUB_API_URL", &self.api_url),
            ("RAILYARD_GITHUB_WEB_URL", &self.web_url),
            ("RAILYARD_UI_URL", &self.console_url),
        ] {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err(FeedbackError::Config(format!(
                    "{what} {url:?} is not an http(s) url: give the full url, e.g. https://github.example.com/api/v3"
                )));
            }
        }
        if self.auths.is_empty() {
            return Err(FeedbackError::Config(
                "no github credentials: set RAILYARD_GITHUB_TOKEN, RAILYARD_GITHUB_APP_ID with RAILYARD_GITHUB_APP_KEY_FILE, or RAILYARD_GITHUB_AUTH_FILE".to_owned(),
            ));
        }
        Ok(())
    }
}

/// The deployment that runs in an environment, as far as Railyard knows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Current {
    id: u64,
    release: String,
}

fn release_key(id: &ReleaseId) -> String {
    format!("release/{id}")
}

fn deployment_key(release: &ReleaseId, env: &str, repo: &Repo) -> String {
    format!("deployment/{release}/{env}/{}/{}", repo.owner, repo.name)
}

fn current_key(env: &str, repo: &Repo) -> String {
    format!("current/{env}/{}/{}", repo.owner, repo.name)
}

fn replaced_key(release: &ReleaseId, env: &str, repo: &Repo) -> String {
    format!("replaced/{release}/{env}/{}/{}", repo.owner, repo.name)
}

/// What a deployment status says: the environment, the release whose page it links to, and
/// the description.
#[derive(Debug, Clone, Copy)]
struct About<'a> {
    env: &'a str,
    release: &'a str,
    description: &'a str,
}

struct Github {
    catalog: Catalog,
    web_url: String,
    console_url: String,
    context: String,
    api: Api,
}

impl Github {
    fn release_url(&self, release: &str) -> String {
        format!(
            "{}/releases/{release}",
            self.console_url.trim_end_matches('/')
        )
    }

    /// Logs an answer that is not a success; `true` when the call counts as done.
    fn settled(&self, answer: &Answer, what: &str, repo: &Repo) -> Option<Value> {
        match answer {
            Answer::Ok(value) => Some(value.clone()),
            Answer::Refused(status, message) => {
                error!(%repo, status, error = %message, "github refused {what}; going on without it");
                None
            }
            Answer::Transient(reason) => {
                error!(%repo, error = %reason, "github did not answer {what}; going on without it");
                None
            }
            Answer::Stopped => None,
        }
    }

    async fn post_status(
        &mut self,
        repo: &Repo,
        id: u64,
        state: DeploymentState,
        about: About<'_>,
        shutdown: &CancellationToken,
    ) -> Flow {
        let About {
            env,
            release,
            description,
        } = about;
        let body = json!({
            "state": state.as_str(),
            "description": description,
            "environment": env,
            "environment_url": self.release_url(release),
            "log_url": self.release_url(release),
            "auto_inactive": false,
        });
        let path = format!(
            "/repos/{}/{}/deployments/{id}/statuses",
            repo.owner, repo.name
        );
        let answer = self
            .api
            .call(
                &repo.owner,
                &repo.name,
                Method::POST,
                &path,
                Some(&body),
                shutdown,
            )
            .await;
        if matches!(answer, Answer::Stopped) {
            return Flow::Stopped;
        }
        self.settled(&answer, "a deployment status", repo);
        debug!(%repo, deployment = id, state = state.as_str(), "deployment status posted");
        Flow::Done
    }

    /// The id of the deployment of (release, env, repo): the ledger's, else one GitHub already
    /// holds for it (created before a crash), else a new one.
    async fn ensure_deployment(
        &mut self,
        ledger: &mut Ledger,
        call: &Call,
        shutdown: &CancellationToken,
    ) -> Result<Flow, FeedbackError> {
        let Call::CreateDeployment {
            release,
            env,
            repo,
            sha,
            production,
            description,
        } = call
        else {
            unreachable!("called with a CreateDeployment");
        };
        let key = deployment_key(release, env, repo);
        if ledger.read::<u64>(&key).await?.is_some() {
            return Ok(Flow::Done);
        }
        let list = format!(
            "/repos/{}/{}/deployments?sha={sha}&environment={env}&task={TASK}&per_page=100",
            repo.owner, repo.name
        );
        let body = json!({
            "ref": sha,
            "task": TASK,
            "auto_merge": false,
            "required_contexts": [],
            "environment": env,
            "description": description,
            "production_environment": production,
            "transient_environment": false,
            "payload": {"railyard": {"release": release.as_str(), "env": env}},
        });
        let path = format!("/repos/{}/{}/deployments", repo.owner, repo.name);
        let mut attempt = 0u32;
        loop {
            // GitHub may hold it already: created before a crash, or by a create whose answer
            // was lost (a 5xx or a timeout after GitHub acted).
            let found = match self
                .api
                .call(&repo.owner, &repo.name, Method::GET, &list, None, shutdown)
                .await
            {
                Answer::Stopped => return Ok(Flow::Stopped),
                Answer::Ok(Value::Array(deployments)) => deployments.iter().find_map(|d| {
                    (d.pointer("/payload/railyard/release")
                        .and_then(Value::as_str)
                        == Some(release.as_str()))
                    .then(|| d.get("id").and_then(Value::as_u64))
                    .flatten()
                }),
                answer => {
                    self.settled(&answer, "the list of deployments", repo);
                    None
                }
            };
            if let Some(id) = found {
                info!(%release, %env, %repo, deployment = id, "github already holds this release's deployment; using it");
                ledger.write(key, &id);
                return Ok(Flow::Done);
            }
            // Created once: a transient failure is not retried blindly but looked up again.
            let answer = self
                .api
                .call_once(
                    &repo.owner,
                    &repo.name,
                    Method::POST,
                    &path,
                    Some(&body),
                    shutdown,
                )
                .await;
            match answer {
                Answer::Stopped => return Ok(Flow::Stopped),
                Answer::Transient(reason) => {
                    attempt += 1;
                    self.api.counters.retried.inc();
                    let wait = self.api.backoff().delay(attempt);
                    warn!(%release, %env, %repo, attempt, retry_in = ?wait, error = %reason, "creating the github deployment failed; looking for it again before retrying");
                    let clock = self.api.clock().clone();
                    if !crate::retry::pause(&clock, wait, shutdown).await {
                        return Ok(Flow::Stopped);
                    }
                }
                answer => {
                    match self
                        .settled(&answer, "the deployment", repo)
                        .and_then(|v| v.get("id").and_then(Value::as_u64))
                    {
                        Some(id) => {
                            info!(%release, %env, %repo, deployment = id, "github deployment created");
                            ledger.write(key, &id);
                        }
                        None => {
                            warn!(%release, %env, %repo, "no github deployment: its statuses are skipped")
                        }
                    }
                    return Ok(Flow::Done);
                }
            }
        }
    }
}

impl Handler for Github {
    type Call = Call;

    async fn plan(
        &mut self,
        ledger: &mut Ledger,
        delivery: &Delivery,
    ) -> Result<Vec<Call>, FeedbackError> {
        let mut calls = Vec::new();
        let mut view: Option<(ReleaseId, ReleaseView)> = None;
        let ctx = Context {
            catalog: &self.catalog,
            web_url: &self.web_url,
        };
        for envelope in &delivery.envelopes {
            let AggregateId::Release(id) = &envelope.aggregate else {
                continue;
            };
            if let Some(why) = &envelope.untrusted {
                warn!(release = %id, reason = %why, "an event that does not count is not told to github");
                continue;
            }
            if view.as_ref().is_none_or(|(v, _)| v != id) {
                if let Some((old, current)) = view.take() {
                    ledger.defer(release_key(&old), &current);
                }
                let current = ledger.read(&release_key(id)).await?.unwrap_or_default();
                view = Some((id.clone(), current));
            }
            let (_, current) = view.as_mut().expect("set above");
            calls.extend(current.apply(id, &envelope.event, &ctx));
        }
        if let Some((id, current)) = view {
            ledger.defer(release_key(&id), &current);
        }
        Ok(calls)
    }

    async fn call(
        &mut self,
        ledger: &mut Ledger,
        call: &Call,
        shutdown: &CancellationToken,
    ) -> Result<Flow, FeedbackError> {
        match call {
            Call::CommitStatus {
                release,
                repo,
                sha,
                state,
                description,
            } => {
                let body = json!({
                    "state": state.as_str(),
                    "target_url": self.release_url(release.as_str()),
                    "description": description,
                    "context": self.context,
                });
                let path = format!("/repos/{}/{}/statuses/{sha}", repo.owner, repo.name);
                let answer = self
                    .api
                    .call(
                        &repo.owner,
                        &repo.name,
                        Method::POST,
                        &path,
                        Some(&body),
                        shutdown,
                    )
                    .await;
                if matches!(answer, Answer::Stopped) {
                    return Ok(Flow::Stopped);
                }
                self.settled(&answer, "the commit status", repo);
                Ok(Flow::Done)
            }
            Call::CreateDeployment { .. } => self.ensure_deployment(ledger, call, shutdown).await,
            Call::Status {
                release,
                env,
                repo,
                state,
                description,
            } => {
                let Some(id) = ledger
                    .read::<u64>(&deployment_key(release, env, repo))
                    .await?
                else {
                    debug!(%release, %env, %repo, "no deployment recorded: status skipped");
                    return Ok(Flow::Done);
                };
                let about = About {
                    env,
                    release: release.as_str(),
                    description,
                };
                Ok(self.post_status(repo, id, *state, about, shutdown).await)
            }
            Call::Replace { release, env, repo } => {
                let Some(id) = ledger
                    .read::<u64>(&deployment_key(release, env, repo))
                    .await?
                else {
                    return Ok(Flow::Done);
                };
                let previous: Option<Current> = ledger.read(&current_key(env, repo)).await?;
                if let Some(previous) = previous.as_ref().filter(|p| p.id != id) {
                    let text = decide::describe(&format!("replaced by release {release}"));
                    let flow = self
                        .post_status(
                            repo,
                            previous.id,
                            DeploymentState::Inactive,
                            About {
                                env,
                                release: &previous.release,
                                description: &text,
                            },
                            shutdown,
                        )
                        .await;
                    if flow == Flow::Stopped {
                        return Ok(flow);
                    }
                }
                ledger.write(replaced_key(release, env, repo), &previous);
                ledger.write(
                    current_key(env, repo),
                    &Current {
                        id,
                        release: release.to_string(),
                    },
                );
                Ok(Flow::Done)
            }
            Call::Restore { release, env, repo } => {
                let replaced: Option<Current> = ledger
                    .read::<Option<Current>>(&replaced_key(release, env, repo))
                    .await?
                    .flatten();
                let Some(previous) = replaced else {
                    return Ok(Flow::Done);
                };
                let text =
                    decide::describe(&format!("running again: release {release} was rolled back"));
                let flow = self
                    .post_status(
                        repo,
                        previous.id,
                        DeploymentState::Success,
                        About {
                            env,
                            release: &previous.release,
                            description: &text,
                        },
                        shutdown,
                    )
                    .await;
                if flow == Flow::Done {
                    ledger.write(current_key(env, repo), &previous);
                }
                Ok(flow)
            }
        }
    }
}

/// Runs the GitHub write-back until `shutdown` is cancelled or the bus is closed. A graceful
/// stop lets the call in flight finish and records it; it never waits out a rate limit or a
/// backoff.
pub async fn run(
    config: GithubConfig,
    bus: Bus,
    shutdown: CancellationToken,
) -> Result<(), FeedbackError> {
    config.check()?;
    let api = Api::new(
        &config.api_url,
        config.auths.clone(),
        config.clock.clone(),
        config.backoff,
        config.request_timeout,
        Counters::new(config.metrics.as_ref()),
    )?;
    let ledger = Ledger::open(&config.store, config.kept_store.as_ref(), "github-ledger").await?;
    let mut github = Github {
        catalog: config.catalog.clone(),
        web_url: config.web_url.clone(),
        console_url: config.console_url.clone(),
        context: config.context.clone(),
        api,
    };
    let repositories = config
        .catalog
        .services
        .values()
        .filter_map(|s| s.match_.repository.as_deref())
        .filter(|url| Repo::parse(url, &config.web_url).is_some())
        .count();
    info!(api = %config.api_url, repositories, "github write-back starting");
    follow(
        &bus,
        ledger,
        &mut github,
        CONSUMER,
        config.history,
        config.handled,
        shutdown,
    )
    .await
}

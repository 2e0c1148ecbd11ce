//! GitHub's REST API as the service uses it: one logical call at a time, authenticated per
//! repository owner, retried until GitHub answers for good. A primary rate limit
//! (`x-ratelimit-remaining: 0`) waits until `x-ratelimit-reset`; a secondary one (403 or 429
//! with `Retry-After`, or GitHub's "secondary rate limit" message) waits `Retry-After`, else a
//! minute; 5xx answers, timeouts and connection errors back off. Every wait is on the
//! [`Clock`](railyard_core::Clock) and abandoned at shutdown. A 401 for an App drops its
//! cached installation token and tries once more with a new one.

use std::collections::HashMap;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use railyard_core::SharedClock;
use reqwest::Method;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::error::FeedbackError;
use crate::github::auth::{Auth, Auths, InstallationToken};
use crate::retry::{Backoff, pause, rate_limit_wait};
use crate::secret::Secret;

/// How a logical call ended.
#[derive(Debug)]
pub(crate) enum Answer {
    /// 2xx, with the JSON body (`Null` when empty).
    Ok(Value),
    /// GitHub refused it for good (a 4xx other than a rate limit): status and message.
    Refused(u16, String),
    /// A 5xx, a timeout or a connection error, from [`Api::call_once`] only (which does not
    /// retry them): the call may or may not have taken effect.
    Transient(String),
    /// Shutdown came first.
    Stopped,
}

/// Counters in the process's metrics registry.
#[derive(Debug, Clone, Default)]
pub(crate) struct Counters {
    pub sent: Counter,
    pub rate_limited: Counter,
    pub retried: Counter,
    pub refused: Counter,
}

impl Counters {
    pub fn new(metrics: Option<&railyard_http::Metrics>) -> Counters {
        let counters = Counters::default();
        if let Some(metrics) = metrics {
            metrics.register(
                "github_calls_sent",
                "GitHub API calls that succeeded.",
                counters.sent.clone(),
            );
            metrics.register(
                "github_rate_limited",
                "GitHub answers that asked to wait (primary or secondary rate limit).",
                counters.rate_limited.clone(),
            );
            metrics.register(
                "github_retries",
                "GitHub calls retried after a 5xx, a timeout or a connection error.",
                counters.retried.clone(),
            );
            metrics.register(
                "github_refused",
                "GitHub calls refused for good (logged).",
                counters.refused.clone(),
            );
        }
        counters
    }
}

/// One attempt's outcome, classified.
enum Class {
    Ok(Value),
    RateLimited(Duration),
    Transient(String),
    Unauthorized(String),
    Refused(u16, String),
}

/// The client.
pub(crate) struct Api {
    http: reqwest::Client,
    api_url: String,
    auths: Auths,
    clock: SharedClock,
    backoff: Backoff,
    pub counters: Counters,
    /// Installation tokens by (App id, installation id).
    tokens: HashMap<(String, u64), InstallationToken>,
    /// Installation ids found per repository (`owner/name`).
    installations: HashMap<String, u64>,
}

impl Api {
    pub fn new(
        api_url: &str,
        auths: Auths,
        clock: SharedClock,
        backoff: Backoff,
        timeout: Duration,
        counters: Counters,
    ) -> Result<Api, FeedbackError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent("railyard")
            .build()
            .map_err(FeedbackError::Http)?;
        Ok(Api {
            http,
            api_url: api_url.trim_end_matches('/').to_owned(),
            auths,
            clock,
            backoff,
            counters,
            tokens: HashMap::new(),
            installations: HashMap::new(),
        })
    }

    /// Makes `method path` for repository `owner/repo` with `body` until GitHub answers for
    /// good.
    pub async fn call(
        &mut self,
        owner: &str,
        repo: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
        shutdown: &CancellationToken,
    ) -> Answer {
        self.call_with(owner, repo, method, path, body, shutdown, true)
            .await
    }

    /// [`Api::call`], but a 5xx, a timeout or a connection error is returned as
    /// [`Answer::Transient`] instead of being retried: for a call that must not be repeated
    /// blindly (creating a deployment), whose caller first looks whether it took effect.
    pub async fn call_once(
        &mut self,
        owner: &str,
        repo: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
        shutdown: &CancellationToken,
    ) -> Answer {
        self.call_with(owner, repo, method, path, body, shutdown, false)
            .await
    }

    /// The backoff of transient failures.
    pub fn backoff(&self) -> Backoff {
        self.backoff
    }

    /// The clock every wait is on.
    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    #[allow(clippy::too_many_arguments)]
    async fn call_with(
        &mut self,
        owner: &str,
        repo: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
        shutdown: &CancellationToken,
        retry: bool,
    ) -> Answer {
        let mut renewed = false;
        loop {
            let bearer = match self.bearer(owner, repo, shutdown).await {
                Ok(bearer) => bearer,
                Err(answer) => return answer,
            };
            match self
                .exchange(method.clone(), path, &bearer, body, shutdown, retry)
                .await
            {
                Err(answer) => return answer,
                Ok(Class::Ok(value)) => return Answer::Ok(value),
                Ok(Class::Transient(reason)) => return Answer::Transient(reason),
                Ok(Class::Unauthorized(message)) => {
                    let app = matches!(self.auths.for_owner(owner), Some(Auth::App(_)));
                    if app && !renewed {
                        renewed = true;
                        self.forget_tokens(owner, repo);
                        continue;
                    }
                    self.counters.refused.inc();
                    return Answer::Refused(401, message);
                }
                Ok(Class::Refused(status, message)) => {
                    self.counters.refused.inc();
                    return Answer::Refused(status, message);
                }
                Ok(Class::RateLimited(_)) => unreachable!("exchange waits these out"),
            }
        }
    }

    fn forget_tokens(&mut self, owner: &str, repo: &str) {
        if let Some(Auth::App(app)) = self.auths.for_owner(owner) {
            let key = format!("{owner}/{repo}");
            if let Some(id) = app
                .installation_id
                .or(self.installations.get(&key).copied())
            {
                self.tokens.remove(&(app.app_id.clone(), id));
            }
        }
    }

    /// The bearer token for `owner/repo`: the owner's token, or an installation token of its
    /// App (fetched or refreshed as needed).
    async fn bearer(
        &mut self,
        owner: &str,
        repo: &str,
        shutdown: &CancellationToken,
    ) -> Result<String, Answer> {
        let app = match self.auths.for_owner(owner) {
            None => {
                return Err(Answer::Refused(
                    401,
                    format!(
                        "no github credentials for owner {owner}: add it to RAILYARD_GITHUB_AUTH_FILE or set RAILYARD_GITHUB_TOKEN"
                    ),
                ));
            }
            Some(Auth::Token(token)) => return Ok(token.expose().to_owned()),
            Some(Auth::App(app)) => app.clone(),
        };
        let key = format!("{owner}/{repo}");
        let installation = match app
            .installation_id
            .or(self.installations.get(&key).copied())
        {
            Some(id) => id,
            None => {
                let jwt = app.jwt(self.clock.now());
                let path = format!("/repos/{owner}/{repo}/installation");
                let value = self
                    .exchange_ok(Method::GET, &path, &jwt, None, shutdown)
                    .await?;
                let Some(id) = value.get("id").and_then(Value::as_u64) else {
                    return Err(Answer::Refused(
                        502,
                        format!("github answered {path} without an installation id"),
                    ));
                };
                self.installations.insert(key, id);
                id
            }
        };
        let now = self.clock.now();
        if let Some(token) = self.tokens.get(&(app.app_id.clone(), installation)) {
            if token.fresh(now) {
                return Ok(token.token.expose().to_owned());
            }
        }
        let jwt = app.jwt(now);
        let path = format!("/app/installations/{installation}/access_tokens");
        let value = self
            .exchange_ok(Method::POST, &path, &jwt, Some(&json!({})), shutdown)
            .await?;
        let token = value.get("token").and_then(Value::as_str);
        let expires_at = value
            .get("expires_at")
            .and_then(Value::as_str)
            .and_then(|t| t.parse::<chrono::DateTime<chrono::Utc>>().ok());
        let (Some(token), Some(expires_at)) = (token, expires_at) else {
            return Err(Answer::Refused(
                502,
                format!("github answered {path} without a token and its expires_at"),
            ));
        };
        let token = Secret::new("a github installation token", token).map_err(|error| {
            Answer::Refused(
                502,
                format!("github answered {path} with a bad token: {error}"),
            )
        })?;
        let bearer = token.expose().to_owned();
        self.tokens.insert(
            (app.app_id.clone(), installation),
            InstallationToken { token, expires_at },
        );
        Ok(bearer)
    }

    /// [`Api::exchange`] where anything but a 2xx is a refusal.
    async fn exchange_ok(
        &mut self,
        method: Method,
        path: &str,
        bearer: &str,
        body: Option<&Value>,
        shutdown: &CancellationToken,
    ) -> Result<Value, Answer> {
        match self
            .exchange(method, path, bearer, body, shutdown, true)
            .await?
        {
            Class::Ok(value) => Ok(value),
            Class::Unauthorized(message) => {
                self.counters.refused.inc();
                Err(Answer::Refused(401, message))
            }
            Class::Refused(status, message) => {
                self.counters.refused.inc();
                Err(Answer::Refused(status, message))
            }
            Class::RateLimited(_) | Class::Transient(_) => unreachable!("exchange retries these"),
        }
    }

    /// One request, repeated through rate limits and (when `retry`) transient failures.
    async fn exchange(
        &mut self,
        method: Method,
        path: &str,
        bearer: &str,
        body: Option<&Value>,
        shutdown: &CancellationToken,
        retry: bool,
    ) -> Result<Class, Answer> {
        let url = format!("{}{path}", self.api_url);
        let mut attempt = 0u32;
        loop {
            if shutdown.is_cancelled() {
                return Err(Answer::Stopped);
            }
            let mut request = self
                .http
                .request(method.clone(), &url)
                .header("accept", "application/vnd.github+json")
                .header("x-github-api-version", "2022-11-28")
                .bearer_auth(bearer);
            if let Some(body) = body {
                request = request.json(body);
            }
            let class = match request.send().await {
                Err(error) => {
                    Class::Transient(railyard_core::redact::redact(&error.to_string()).into_owned())
                }
                Ok(response) => {
                    let status = response.status().as_u16();
                    let headers = response.headers().clone();
                    let text = response.text().await.unwrap_or_default();
                    let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                    let message = value
                        .get("message")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                        .unwrap_or_else(|| text.chars().take(200).collect());
                    let message = railyard_core::redact::redact(&message).into_owned();
                    let limited = headers.contains_key("retry-after")
                        || headers
                            .get("x-ratelimit-remaining")
                            .is_some_and(|v| v.as_bytes() == b"0")
                        || message.to_lowercase().contains("rate limit");
                    match status {
                        200..=299 => Class::Ok(value),
                        403 | 429 if limited => Class::RateLimited(rate_limit_wait(
                            &headers,
                            self.clock.now(),
                            Duration::from_secs(60),
                        )),
                        401 => Class::Unauthorized(message),
                        500..=599 => Class::Transient(format!("{status}: {message}")),
                        _ => Class::Refused(status, message),
                    }
                }
            };
            let wait = match &class {
                Class::RateLimited(wait) => {
                    self.counters.rate_limited.inc();
                    warn!(%path, retry_in = ?wait, "github rate limit: waiting, then the same call again");
                    *wait
                }
                Class::Transient(_) if !retry => return Ok(class),
                Class::Transient(error) => {
                    attempt += 1;
                    self.counters.retried.inc();
                    let wait = self.backoff.delay(attempt);
                    warn!(%path, attempt, retry_in = ?wait, %error, "github call failed; retrying");
                    wait
                }
                _ => {
                    if matches!(class, Class::Ok(_)) {
                        self.counters.sent.inc();
                    }
                    return Ok(class);
                }
            };
            if !pause(&self.clock, wait, shutdown).await {
                return Err(Answer::Stopped);
            }
        }
    }
}

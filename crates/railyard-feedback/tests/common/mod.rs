//! Test support: a real nats-server, the events of releases appended as the planner and the
//! promoter would, a simulated clock the tests move, and a real local HTTP server standing in
//! for GitHub's REST API — it enforces the request shapes and auth headers GitHub does
//! (`Accept`, `X-GitHub-Api-Version`, `User-Agent`; an App JWT signed RS256 and verified with
//! the App's public key, within its validity at the clock's time; installation tokens it
//! issued, refused once expired; a token), keeps deployments and statuses as GitHub would,
//! and can be scripted to answer a secondary rate limit (403 with `Retry-After`), a primary
//! one (`x-ratelimit-remaining: 0`) or a 502 once.
#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use railyard_bus::{Bus, BusConfig, Expected};
use railyard_core::{AggregateId, Catalog, Clock, Envelope, Event, ManualClock};
use railyard_testkit::NatsServer;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Every bounded wait in these tests.
pub const WAIT: Duration = Duration::from_secs(30);

/// The App of these tests.
pub const APP_ID: &str = "4242";
/// Its installation on `acme`.
pub const INSTALLATION: u64 = 77;
/// The token the stand-in accepts for owner `widgets`.
pub const TOKEN: &str = "ghp_testtokenforwidgets0123456789";

pub fn key_path() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/test-app-key.pem")
}

pub fn start_time() -> DateTime<Utc> {
    "2026-03-02T10:00:00Z".parse().unwrap()
}

/// One request the stand-in received.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub status: u16,
    pub body: Value,
}

/// A scripted answer for the next call to the repository API.
#[derive(Debug, Clone, Copy)]
pub enum Script {
    /// 403 "secondary rate limit" with `Retry-After: <secs>`.
    SecondaryLimit(u64),
    /// 403 with `x-ratelimit-remaining: 0` and a reset `<secs>` after the clock's now.
    PrimaryLimit(i64),
    /// 502.
    ServerError,
}

#[derive(Debug, Clone)]
pub struct Deployment {
    pub id: u64,
    pub repo: String,
    pub sha: String,
    pub environment: String,
    pub task: String,
    pub payload: Value,
    pub production: bool,
    /// States posted, in order.
    pub statuses: Vec<String>,
    pub descriptions: Vec<String>,
}

/// A commit status: state, description, context.
type CommitStatus = (String, String, String);

#[derive(Debug, Default)]
struct GithubState {
    received: Vec<Received>,
    script: VecDeque<Script>,
    next_id: u64,
    deployments: Vec<Deployment>,
    /// (repo, sha) → (state, description, context) in order.
    commit_statuses: BTreeMap<(String, String), Vec<CommitStatus>>,
    /// Installation tokens issued → expiry.
    tokens: BTreeMap<String, DateTime<Utc>>,
    tokens_issued: usize,
    /// The next created deployment's answer is a 502 (GitHub acted, the answer was lost).
    lose_next_create: bool,
}

/// The stand-in for GitHub.
#[derive(Clone)]
pub struct FakeGithub {
    state: Arc<Mutex<GithubState>>,
    count: watch::Sender<usize>,
    clock: ManualClock,
    public_key: Arc<Vec<u8>>,
    pub url: String,
    _server: Arc<tokio::task::JoinHandle<()>>,
}

type AppState = FakeGithub;

impl FakeGithub {
    pub async fn start(clock: ManualClock) -> anyhow::Result<FakeGithub> {
        let pem = std::fs::read_to_string(key_path())?;
        let der: String = pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect::<String>();
        let der = base64::engine::general_purpose::STANDARD.decode(der)?;
        let pair = ring::signature::RsaKeyPair::from_der(&der)
            .map_err(|e| anyhow::anyhow!("test key: {e}"))?;
        use ring::signature::KeyPair as _;
        let public_key = pair.public_key().as_ref().to_vec();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let (tx, _) = watch::channel(0);
        let mut github = FakeGithub {
            state: Arc::new(Mutex::new(GithubState {
                next_id: 1000,
                ..GithubState::default()
            })),
            count: tx,
            clock,
            public_key: Arc::new(public_key),
            url,
            _server: Arc::new(tokio::spawn(async {})),
        };
        let app = Router::new()
            .route("/repos/{owner}/{repo}/installation", get(installation))
            .route("/app/installations/{id}/access_tokens", post(access_tokens))
            .route(
                "/repos/{owner}/{repo}/deployments",
                post(create_deployment).get(list_deployments),
            )
            .route(
                "/repos/{owner}/{repo}/deployments/{id}/statuses",
                post(deployment_status),
            )
            .route("/repos/{owner}/{repo}/statuses/{sha}", post(commit_status))
            .with_state(github.clone());
        github._server = Arc::new(tokio::spawn(async move {
            axum::serve(listener, app)
                .await
                .expect("the stand-in serves");
        }));
        Ok(github)
    }

    pub fn script(&self, answers: &[Script]) {
        self.state
            .lock()
            .unwrap()
            .script
            .extend(answers.iter().copied());
    }

    /// The next deployment is created but answered with a 502, as when a gateway times out
    /// after GitHub acted.
    pub fn lose_next_create(&self) {
        self.state.lock().unwrap().lose_next_create = true;
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }

    pub fn deployments(&self) -> Vec<Deployment> {
        self.state.lock().unwrap().deployments.clone()
    }

    pub fn tokens_issued(&self) -> usize {
        self.state.lock().unwrap().tokens_issued
    }

    /// Commit statuses of `repo` at `sha`: (state, description).
    pub fn commit_statuses(&self, repo: &str, sha: &str) -> Vec<(String, String)> {
        self.state
            .lock()
            .unwrap()
            .commit_statuses
            .get(&(repo.to_owned(), sha.to_owned()))
            .map(|v| v.iter().map(|(s, d, _)| (s.clone(), d.clone())).collect())
            .unwrap_or_default()
    }

    /// A deployment made before the test's service ran (as if its creator crashed before
    /// recording it).
    pub fn seed_deployment(&self, repo: &str, sha: &str, env: &str, payload: Value) -> u64 {
        let mut s = self.state.lock().unwrap();
        s.next_id += 1;
        let id = s.next_id;
        s.deployments.push(Deployment {
            id,
            repo: repo.to_owned(),
            sha: sha.to_owned(),
            environment: env.to_owned(),
            task: "deploy:railyard".to_owned(),
            payload,
            production: false,
            statuses: vec![],
            descriptions: vec![],
        });
        id
    }

    /// Waits until at least `n` requests were received.
    pub async fn wait_for_requests(&self, n: usize) -> anyhow::Result<()> {
        let mut rx = self.count.subscribe();
        tokio::time::timeout(WAIT, rx.wait_for(|c| *c >= n))
            .await
            .map_err(|_| {
                anyhow::anyhow!("the stand-in did not get {n} requests within {WAIT:?}")
            })??;
        Ok(())
    }

    fn record(&self, method: &str, path: &str, status: u16, body: &Value) {
        self.state.lock().unwrap().received.push(Received {
            method: method.to_owned(),
            path: path.to_owned(),
            status,
            body: body.clone(),
        });
        self.count.send_modify(|c| *c += 1);
    }

    fn refuse(&self, method: &str, path: &str, status: StatusCode, message: &str) -> Response {
        self.record(method, path, status.as_u16(), &json!({"refused": message}));
        (status, axum::Json(json!({"message": message}))).into_response()
    }

    /// GitHub's common request checks: `None` when the request may go on.
    fn common(&self, method: &str, path: &str, headers: &HeaderMap) -> Option<Response> {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        if header("user-agent").is_none_or(str::is_empty) {
            return Some(self.refuse(method, path, StatusCode::FORBIDDEN, "Request forbidden by administrative rules. Please make sure your request has a User-Agent header"));
        }
        if header("accept") != Some("application/vnd.github+json") {
            return Some(self.refuse(
                method,
                path,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "expected Accept: application/vnd.github+json",
            ));
        }
        if header("x-github-api-version") != Some("2022-11-28") {
            return Some(self.refuse(
                method,
                path,
                StatusCode::BAD_REQUEST,
                "unsupported X-GitHub-Api-Version",
            ));
        }
        None
    }

    /// Verifies an App JWT at the clock's time.
    fn check_jwt(&self, headers: &HeaderMap) -> Result<(), String> {
        let bearer = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or("A JSON web token could not be decoded")?;
        let parts: Vec<&str> = bearer.split('.').collect();
        let [header, claims, signature] = parts[..] else {
            return Err("A JSON web token could not be decoded".into());
        };
        let header: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
        if header["alg"] != "RS256" {
            return Err("'alg' must be RS256".into());
        }
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|e| e.to_string())?;
        ring::signature::UnparsedPublicKey::new(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            self.public_key.as_slice(),
        )
        .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature)
        .map_err(|_| "'Signature verification failed'".to_owned())?;
        let claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
        if claims["iss"] != APP_ID {
            return Err(format!(
                "'Issuer' claim ('iss') must be the app id, got {}",
                claims["iss"]
            ));
        }
        let now = self.clock.now().timestamp();
        let (iat, exp) = (
            claims["iat"].as_i64().ok_or("'iat' missing")?,
            claims["exp"].as_i64().ok_or("'exp' missing")?,
        );
        if iat > now {
            return Err(
                "'Issued at' claim ('iat') must be an Integer representing a time in the past"
                    .into(),
            );
        }
        if exp <= now || exp - iat > 600 {
            return Err(
                "'Expiration time' claim ('exp') is too far in the future or in the past".into(),
            );
        }
        Ok(())
    }

    /// A token for a repository call: an unexpired installation token for `acme`, the PAT
    /// for `widgets`.
    fn check_token(&self, owner: &str, headers: &HeaderMap) -> Result<(), String> {
        let bearer = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("token "))
            })
            .ok_or("Requires authentication")?;
        match owner {
            "acme" => {
                let expiry = self.state.lock().unwrap().tokens.get(bearer).copied();
                match expiry {
                    Some(at) if at > self.clock.now() => Ok(()),
                    Some(_) => Err("Bad credentials (the installation token expired)".into()),
                    None => Err("Bad credentials".into()),
                }
            }
            "widgets" if bearer == TOKEN => Ok(()),
            _ => Err("Bad credentials".into()),
        }
    }

    fn scripted(&self, method: &str, path: &str) -> Option<Response> {
        let next = self.state.lock().unwrap().script.pop_front()?;
        let message = match next {
            Script::SecondaryLimit(_) => {
                "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."
            }
            Script::PrimaryLimit(_) => "API rate limit exceeded for installation ID 77.",
            Script::ServerError => "Server Error",
        };
        let status = match next {
            Script::ServerError => StatusCode::BAD_GATEWAY,
            _ => StatusCode::FORBIDDEN,
        };
        self.record(method, path, status.as_u16(), &json!({"scripted": message}));
        let mut response = (status, axum::Json(json!({"message": message}))).into_response();
        let headers = response.headers_mut();
        match next {
            Script::SecondaryLimit(secs) => {
                headers.insert("retry-after", secs.to_string().parse().unwrap());
            }
            Script::PrimaryLimit(secs) => {
                headers.insert("x-ratelimit-remaining", "0".parse().unwrap());
                let reset = self.clock.now().timestamp() + secs;
                headers.insert("x-ratelimit-reset", reset.to_string().parse().unwrap());
            }
            Script::ServerError => {}
        }
        Some(response)
    }

    /// Common checks, the script, and the token of a repository call.
    fn gate(&self, method: &str, path: &str, owner: &str, headers: &HeaderMap) -> Option<Response> {
        if let Some(response) = self.common(method, path, headers) {
            return Some(response);
        }
        if let Some(response) = self.scripted(method, path) {
            return Some(response);
        }
        if let Err(why) = self.check_token(owner, headers) {
            return Some(self.refuse(method, path, StatusCode::UNAUTHORIZED, &why));
        }
        None
    }
}

fn is_url(value: &Value) -> bool {
    value
        .as_str()
        .is_some_and(|s| s.starts_with("http://") || s.starts_with("https://"))
}

async fn installation(
    State(gh): State<AppState>,
    UrlPath((owner, repo)): UrlPath<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let path = format!("/repos/{owner}/{repo}/installation");
    if let Some(response) = gh.common("GET", &path, &headers) {
        return response;
    }
    if let Err(why) = gh.check_jwt(&headers) {
        return gh.refuse("GET", &path, StatusCode::UNAUTHORIZED, &why);
    }
    if owner != "acme" {
        return gh.refuse("GET", &path, StatusCode::NOT_FOUND, "Not Found");
    }
    gh.record("GET", &path, 200, &Value::Null);
    axum::Json(json!({"id": INSTALLATION, "account": {"login": owner}, "app_id": 4242}))
        .into_response()
}

async fn access_tokens(
    State(gh): State<AppState>,
    UrlPath(id): UrlPath<u64>,
    headers: HeaderMap,
) -> Response {
    let path = format!("/app/installations/{id}/access_tokens");
    if let Some(response) = gh.common("POST", &path, &headers) {
        return response;
    }
    if let Err(why) = gh.check_jwt(&headers) {
        return gh.refuse("POST", &path, StatusCode::UNAUTHORIZED, &why);
    }
    if id != INSTALLATION {
        return gh.refuse("POST", &path, StatusCode::NOT_FOUND, "Not Found");
    }
    let expires = gh.clock.now() + chrono::Duration::hours(1);
    let token = {
        let mut s = gh.state.lock().unwrap();
        s.tokens_issued += 1;
        let token = format!("ghs_installationtoken{:04}", s.tokens_issued);
        s.tokens.insert(token.clone(), expires);
        token
    };
    gh.record("POST", &path, 201, &Value::Null);
    (
        StatusCode::CREATED,
        axum::Json(json!({"token": token, "expires_at": expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)})),
    )
        .into_response()
}

async fn create_deployment(
    State(gh): State<AppState>,
    UrlPath((owner, repo)): UrlPath<(String, String)>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let path = format!("/repos/{owner}/{repo}/deployments");
    if let Some(response) = gh.gate("POST", &path, &owner, &headers) {
        return response;
    }
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let ok = body["ref"].as_str().is_some_and(|r| !r.is_empty())
        && body["environment"].as_str().is_some_and(|r| !r.is_empty())
        && body["task"].is_string()
        && body["auto_merge"].is_boolean()
        && body["required_contexts"].is_array()
        && body["payload"].is_object()
        && body["production_environment"].is_boolean()
        && body["description"]
            .as_str()
            .is_some_and(|d| d.chars().count() <= 140);
    if !ok {
        return gh.refuse(
            "POST",
            &path,
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid request.",
        );
    }
    let id = {
        let mut s = gh.state.lock().unwrap();
        s.next_id += 1;
        let id = s.next_id;
        s.deployments.push(Deployment {
            id,
            repo: format!("{owner}/{repo}"),
            sha: body["ref"].as_str().unwrap().to_owned(),
            environment: body["environment"].as_str().unwrap().to_owned(),
            task: body["task"].as_str().unwrap().to_owned(),
            payload: body["payload"].clone(),
            production: body["production_environment"].as_bool().unwrap(),
            statuses: vec![],
            descriptions: vec![],
        });
        id
    };
    if std::mem::take(&mut gh.state.lock().unwrap().lose_next_create) {
        gh.record("POST", &path, 502, &body);
        return (
            StatusCode::BAD_GATEWAY,
            axum::Json(json!({"message": "Server Error"})),
        )
            .into_response();
    }
    gh.record("POST", &path, 201, &body);
    (
        StatusCode::CREATED,
        axum::Json(
            json!({"id": id, "sha": body["ref"], "ref": body["ref"], "task": body["task"],
            "environment": body["environment"], "payload": body["payload"]}),
        ),
    )
        .into_response()
}

async fn list_deployments(
    State(gh): State<AppState>,
    UrlPath((owner, repo)): UrlPath<(String, String)>,
    Query(query): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let path = format!("/repos/{owner}/{repo}/deployments");
    if let Some(response) = gh.gate("GET", &path, &owner, &headers) {
        return response;
    }
    let full = format!("{owner}/{repo}");
    let list: Vec<Value> = gh
        .deployments()
        .into_iter()
        .filter(|d| d.repo == full)
        .filter(|d| query.get("sha").is_none_or(|s| s == &d.sha))
        .filter(|d| query.get("environment").is_none_or(|e| e == &d.environment))
        .filter(|d| query.get("task").is_none_or(|t| t == &d.task))
        .map(|d| json!({"id": d.id, "sha": d.sha, "environment": d.environment, "task": d.task, "payload": d.payload}))
        .collect();
    gh.record("GET", &path, 200, &json!(query));
    axum::Json(Value::Array(list)).into_response()
}

async fn deployment_status(
    State(gh): State<AppState>,
    UrlPath((owner, repo, id)): UrlPath<(String, String, u64)>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let path = format!("/repos/{owner}/{repo}/deployments/{id}/statuses");
    if let Some(response) = gh.gate("POST", &path, &owner, &headers) {
        return response;
    }
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let states = [
        "error",
        "failure",
        "inactive",
        "in_progress",
        "queued",
        "pending",
        "success",
    ];
    let ok = body["state"].as_str().is_some_and(|s| states.contains(&s))
        && is_url(&body["environment_url"])
        && is_url(&body["log_url"])
        && body["description"]
            .as_str()
            .is_some_and(|d| d.chars().count() <= 140);
    if !ok {
        return gh.refuse(
            "POST",
            &path,
            StatusCode::UNPROCESSABLE_ENTITY,
            "Validation Failed",
        );
    }
    let full = format!("{owner}/{repo}");
    {
        let mut s = gh.state.lock().unwrap();
        let Some(d) = s
            .deployments
            .iter_mut()
            .find(|d| d.id == id && d.repo == full)
        else {
            drop(s);
            return gh.refuse("POST", &path, StatusCode::NOT_FOUND, "Not Found");
        };
        d.statuses.push(body["state"].as_str().unwrap().to_owned());
        d.descriptions
            .push(body["description"].as_str().unwrap().to_owned());
    }
    gh.record("POST", &path, 201, &body);
    (
        StatusCode::CREATED,
        axum::Json(json!({"id": 1, "state": body["state"]})),
    )
        .into_response()
}

async fn commit_status(
    State(gh): State<AppState>,
    UrlPath((owner, repo, sha)): UrlPath<(String, String, String)>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let path = format!("/repos/{owner}/{repo}/statuses/{sha}");
    if let Some(response) = gh.gate("POST", &path, &owner, &headers) {
        return response;
    }
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let ok = body["state"]
        .as_str()
        .is_some_and(|s| ["error", "failure", "pending", "success"].contains(&s))
        && is_url(&body["target_url"])
        && body["context"].as_str().is_some_and(|c| !c.is_empty())
        && body["description"]
            .as_str()
            .is_some_and(|d| d.chars().count() <= 140);
    if !ok {
        return gh.refuse(
            "POST",
            &path,
            StatusCode::UNPROCESSABLE_ENTITY,
            "Validation Failed",
        );
    }
    gh.state
        .lock()
        .unwrap()
        .commit_statuses
        .entry((format!("{owner}/{repo}"), sha))
        .or_default()
        .push((
            body["state"].as_str().unwrap().to_owned(),
            body["description"].as_str().unwrap().to_owned(),
            body["context"].as_str().unwrap().to_owned(),
        ));
    gh.record("POST", &path, 201, &body);
    (
        StatusCode::CREATED,
        axum::Json(json!({"state": body["state"]})),
    )
        .into_response()
}

/// The estate of these tests: two services in `acme` (an App), one in `widgets` (a token),
/// one on GitLab (never told to GitHub).
pub const CATALOG: &str = r##"
[[environments]]
name = "staging"

[[environments]]
name = "production"
after = "staging"

[services.orders-api]
match = { repository = "https://github.com/acme/orders-api" }
deploy = { kind = "simulated" }

[services.billing-worker]
match = { repository = "https://github.com/acme/billing-worker.git" }
deploy = { kind = "simulated" }

[services.gadget]
match = { repository = "https://github.com/widgets/gadget" }
deploy = { kind = "simulated" }

[services.legacy-cron]
match = { repository = "https://gitlab.com/acme/legacy-cron" }
deploy = { kind = "simulated" }
"##;

pub fn catalog() -> Catalog {
    Catalog::from_toml(CATALOG).unwrap()
}

pub async fn bus(nats: &NatsServer) -> anyhow::Result<Bus> {
    let bus = Bus::connect(&nats.url(), BusConfig::default()).await?;
    bus.ensure_topology().await?;
    Ok(bus)
}

/// A running service.
pub struct Running {
    pub stop: CancellationToken,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
    pub handled: watch::Receiver<u64>,
}

impl Running {
    /// Waits until the service finished with stream message `sequence`.
    pub async fn wait_handled(&mut self, sequence: u64) -> anyhow::Result<()> {
        tokio::time::timeout(WAIT, self.handled.wait_for(|h| *h >= sequence))
            .await
            .map_err(|_| {
                anyhow::anyhow!("the service did not handle sequence {sequence} within {WAIT:?}")
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

/// Appends `events` to release `id` in one message at `at`; returns its sequence.
pub async fn append(
    bus: &Bus,
    id: &str,
    actor: &str,
    at: DateTime<Utc>,
    events: Vec<Event>,
) -> anyhow::Result<u64> {
    let aggregate = AggregateId::Release(id.parse()?);
    let envelopes: Vec<Envelope> = events
        .into_iter()
        .map(|e| Envelope::new(aggregate.clone(), actor, at, e))
        .collect();
    Ok(bus
        .append(&aggregate, Expected::Any, &envelopes)
        .await?
        .sequence)
}

/// Records that `service` runs `version` (`None`: removed) in `env`, by `release`.
pub async fn deployed(
    bus: &Bus,
    at: DateTime<Utc>,
    env: &str,
    service: &str,
    version: Option<&str>,
    release: Option<&str>,
) -> anyhow::Result<u64> {
    let aggregate = AggregateId::Inventory(env.parse()?);
    let event: Event = serde_json::from_value(json!({
        "type": "service.deployed",
        "data": {
            "env": env,
            "service": service,
            "running": version.map(|v| json!({"version": v, "artifact": format!("pkg:oci/{service}@sha256%3A{}", v.replace('.', ""))})),
            "release": release,
        }
    }))?;
    let envelope = Envelope::new(aggregate.clone(), "railyard-promoter", at, event);
    Ok(bus
        .append(&aggregate, Expected::Any, &[envelope])
        .await?
        .sequence)
}

/// An event from its type and data.
pub fn event(kind: &str, data: Value) -> Event {
    serde_json::from_value(json!({"type": kind, "data": data})).unwrap()
}

pub fn requested(id: &str, changes: &[(&str, &str, &str)]) -> Event {
    event(
        "release.requested",
        json!({
            "release": id,
            "requested_by": "carol",
            "changes": changes.iter().map(|(s, v, c)| json!({"service": s, "version": v, "commit": c})).collect::<Vec<_>>(),
        }),
    )
}

/// The plan of release `id` deploying and verifying `services` (name, version) in staging,
/// then an approval, then production.
pub fn planned(id: &str, services: &[(&str, &str)]) -> Event {
    let mut steps = Vec::new();
    for env in ["staging", "production"] {
        if env == "production" {
            steps.push(json!({"id": format!("production:approve:{id}"), "env": env, "action": "approve", "target": id}));
        }
        for (service, version) in services {
            for action in ["deploy", "verify"] {
                steps.push(json!({"id": format!("{env}:{action}:{service}"), "env": env, "action": action, "target": service, "version": version}));
            }
        }
    }
    let ids: Vec<Value> = steps.iter().map(|s| s["id"].clone()).collect();
    event(
        "release.planned",
        json!({"plan": {"release": id, "catalog_hash": "sha256:test", "steps": steps, "edges": [],
            "waves": ids.iter().map(|i| json!([i])).collect::<Vec<_>>(), "critical_path": ids}}),
    )
}

pub fn started(step: &str) -> Event {
    event(
        "step.started",
        json!({"step": step, "worker": "worker-1", "attempt": 1}),
    )
}

pub fn succeeded(step: &str) -> Event {
    event("step.succeeded", json!({"step": step, "detail": ""}))
}

pub fn failed(step: &str, detail: &str) -> Event {
    event("step.failed", json!({"step": step, "detail": detail}))
}

pub fn completed() -> Event {
    event("release.completed", json!({}))
}

/// Moves `clock` by `by` once the service sleeps on it (waits in real time, bounded).
pub async fn advance_when_sleeping(clock: &ManualClock, by: Duration) -> anyhow::Result<()> {
    tokio::time::timeout(WAIT, clock.wait_for_sleepers(1))
        .await
        .map_err(|_| anyhow::anyhow!("the service did not wait on the clock within {WAIT:?}"))?;
    clock.advance(by);
    Ok(())
}

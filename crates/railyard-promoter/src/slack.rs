//! Approvals from Slack (issue 18): `POST /v1/slack/interactions`, where a Slack app's
//! interactivity requests land when someone presses Approve or Deny on the approval request
//! the notifier posted in a release's thread. A request counts only when Slack signed it
//! (`X-Slack-Signature`, v0 HMAC-SHA256 over `v0:{timestamp}:{raw body}` with the app's signing
//! secret), its timestamp is within five minutes of the clock, and its signature was not seen
//! before (a replay). The Slack user becomes the Railyard identity whose tokens-file entry
//! carries the alias `slack:<user id>`; the decision then takes the path of the HTTP route
//! ([`crate::routes::run_command`]: approver role, listed for the environment, neither requester
//! nor author, appended and sealed by this process). The message is replaced through the
//! interaction's `response_url` to say who decided; a refusal is answered there ephemerally,
//! to the presser only, with its reason. A release held by a freeze carries an Override freeze
//! button: a mapped approver's press opens a modal asking the reason (`views.open`, with the
//! bot token), and its submission is decided like `approve --override-freeze --reason`.
//!
//! The button's value (`{"release", "step", "env"}`) is data chosen by whoever posted the
//! message: it only says which pending approval is meant, and is looked up like the HTTP
//! route's body. Replays are remembered in this process for the five minutes a signature is
//! valid; see SECURITY.md for what that means with several promoters.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequest, State};
use axum::http::{HeaderMap, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use hmac::{Hmac, Mac};
use railyard_core::ReleaseId;
use railyard_http::ApiError;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use crate::routes::{Command, CommandBody, RouteState, run_command};

/// Where Slack's interactivity requests are served.
pub const PATH: &str = "/v1/slack/interactions";
/// The largest request body accepted (Slack's interaction payloads are a few KiB).
pub const BODY_LIMIT: usize = 64 * 1024;
/// How far a request's timestamp may be from the clock, either way.
pub const WINDOW: Duration = Duration::from_secs(5 * 60);
/// The `action_id` of the Approve button.
pub const APPROVE_ACTION: &str = "railyard.approve";
/// The `action_id` of the Deny button.
pub const DENY_ACTION: &str = "railyard.deny";
/// The `action_id` of the Override freeze button (opens the modal asking the reason).
pub const OVERRIDE_ACTION: &str = "railyard.override_freeze";
/// The `callback_id` of the modal asking for the reason of a freeze override.
pub const OVERRIDE_MODAL: &str = "railyard.override_freeze";
/// The modal's reason input (its `block_id` and `action_id`).
pub const REASON_INPUT: &str = "reason";
/// Slack's Web API.
pub const SLACK_API: &str = "https://slack.com/api";
/// Where Slack's `response_url`s point, unless configured otherwise.
pub const SLACK_RESPONSE_URLS: &str = "https://hooks.slack.com/";

const SECRET_VAR: &str = "RAILYARD_SLACK_SIGNING_SECRET";
const RESPONSE_URL_VAR: &str = "RAILYARD_SLACK_RESPONSE_URL_PREFIX";
const TOKEN_VAR: &str = "RAILYARD_SLACK_TOKEN";
const API_VAR: &str = "RAILYARD_SLACK_API_URL";

/// What Slack approvals need: the app's signing secret, and where answers may be posted.
#[derive(Clone)]
pub struct SlackApprovals {
    secret: Arc<Vec<u8>>,
    response_url_prefix: String,
    /// Slack's Web API and the bot token, for `views.open` (the freeze override's modal).
    api: Option<(String, Arc<String>)>,
    http: reqwest::Client,
    /// The signatures seen, by SHA-256, with their timestamps (seconds), while they are valid.
    seen: Arc<Mutex<HashMap<[u8; 32], i64>>>,
}

impl std::fmt::Debug for SlackApprovals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackApprovals")
            .field("secret", &"<redacted>")
            .field("response_url_prefix", &self.response_url_prefix)
            .field("api", &self.api.as_ref().map(|(url, _)| url))
            .finish()
    }
}

impl SlackApprovals {
    /// Approvals verified with `signing_secret` (registered for redaction), answering only
    /// `response_url`s under [`SLACK_RESPONSE_URLS`].
    pub fn new(signing_secret: &str) -> SlackApprovals {
        railyard_core::redact::register([signing_secret]);
        SlackApprovals {
            secret: Arc::new(signing_secret.as_bytes().to_vec()),
            response_url_prefix: SLACK_RESPONSE_URLS.to_owned(),
            api: None,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()
                .unwrap_or_default(),
            seen: Arc::default(),
        }
    }

    /// Answers only `response_url`s starting with `prefix` (a stand-in for Slack in tests, a
    /// proxy): any other is not posted to, so a payload cannot make the promoter call
    /// elsewhere.
    pub fn with_response_url_prefix(mut self, prefix: impl Into<String>) -> SlackApprovals {
        self.response_url_prefix = prefix.into();
        self
    }

    /// Opens the freeze override's modal through Slack's Web API at `base_url` with the bot
    /// token (registered for redaction); without it an override is answered with the CLI
    /// command to use instead.
    pub fn with_api(mut self, base_url: impl Into<String>, bot_token: &str) -> SlackApprovals {
        railyard_core::redact::register([bot_token]);
        self.api = Some((base_url.into(), Arc::new(bot_token.to_owned())));
        self
    }

    /// From `RAILYARD_SLACK_SIGNING_SECRET` (or `RAILYARD_SLACK_SIGNING_SECRET_FILE`, a file
    /// holding it), `RAILYARD_SLACK_RESPONSE_URL_PREFIX` (default [`SLACK_RESPONSE_URLS`]) and,
    /// for the freeze override's modal, the notifier's bot token `RAILYARD_SLACK_TOKEN` (or
    /// `_FILE`) with `RAILYARD_SLACK_API_URL` (default [`SLACK_API`]); `None` when no signing
    /// secret is set.
    pub fn from_env() -> Result<Option<SlackApprovals>, String> {
        let Some(secret) = secret_from_env(SECRET_VAR)? else {
            return Ok(None);
        };
        let mut slack = SlackApprovals::new(&secret);
        if let Some(token) = secret_from_env(TOKEN_VAR)? {
            let base = std::env::var(API_VAR).unwrap_or_else(|_| SLACK_API.to_owned());
            slack = slack.with_api(base, &token);
        }
        if let Ok(prefix) = std::env::var(RESPONSE_URL_VAR) {
            if !(prefix.starts_with("https://") || prefix.starts_with("http://")) {
                return Err(format!(
                    "{RESPONSE_URL_VAR}: {prefix:?} is not an http(s) URL prefix (default {SLACK_RESPONSE_URLS})"
                ));
            }
            slack = slack.with_response_url_prefix(prefix);
        }
        Ok(Some(slack))
    }

    /// Checks the signature, the timestamp against `now` (unix seconds) and that the request
    /// is not a replay; remembers its signature when it passes.
    fn verify(&self, headers: &HeaderMap, body: &[u8], now: i64) -> Result<(), ApiError> {
        let unauthenticated = |detail: String, path: &str| ApiError::unauthenticated(detail, path);
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
        };
        let Some(timestamp) = header("x-slack-request-timestamp") else {
            return Err(unauthenticated(
                "no X-Slack-Request-Timestamp header: only Slack's signed interactivity requests are accepted here".into(),
                "X-Slack-Request-Timestamp",
            ));
        };
        let Ok(seconds) = timestamp.parse::<i64>() else {
            return Err(unauthenticated(
                format!("X-Slack-Request-Timestamp {timestamp:?} is not a number of seconds"),
                "X-Slack-Request-Timestamp",
            ));
        };
        let window = WINDOW.as_secs() as i64;
        if (now - seconds).abs() > window {
            return Err(unauthenticated(
                format!(
                    "the request is {}s away from this server's clock (at most {window}s is accepted): a stale or replayed request, or a clock to fix",
                    (now - seconds).abs()
                ),
                "X-Slack-Request-Timestamp",
            ));
        }
        let Some(signature) = header("x-slack-signature") else {
            return Err(unauthenticated(
                "no X-Slack-Signature header: only Slack's signed interactivity requests are accepted here".into(),
                "X-Slack-Signature",
            ));
        };
        let expected = signature
            .strip_prefix("v0=")
            .and_then(|hex| hex::decode(hex).ok());
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.secret).expect("HMAC takes a key of any length");
        mac.update(b"v0:");
        mac.update(timestamp.as_bytes());
        mac.update(b":");
        mac.update(body);
        let matches = expected.is_some_and(|sig| mac.verify_slice(&sig).is_ok());
        if !matches {
            return Err(unauthenticated(
                "X-Slack-Signature does not match the body: check that RAILYARD_SLACK_SIGNING_SECRET is the Slack app's signing secret".into(),
                "X-Slack-Signature",
            ));
        }
        let key: [u8; 32] = Sha256::digest(signature.as_bytes()).into();
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.retain(|_, at| (now - *at).abs() <= window);
        if seen.insert(key, seconds).is_some() {
            return Err(unauthenticated(
                "this signed request was already received: a replay is refused".into(),
                "X-Slack-Signature",
            ));
        }
        Ok(())
    }

    /// Posts `message` to the interaction's `response_url`, when it is Slack's.
    async fn respond(&self, response_url: Option<&str>, message: serde_json::Value) {
        let Some(url) = response_url else {
            return;
        };
        if !url.starts_with(&self.response_url_prefix) {
            warn!(
                prefix = %self.response_url_prefix,
                "slack interaction: the response_url is not Slack's; nothing is posted to it"
            );
            return;
        }
        match self.http.post(url).json(&message).send().await {
            Ok(response) if response.status().is_success() => {}
            Ok(response) => {
                warn!(status = %response.status(), "slack interaction: the response_url refused the answer")
            }
            Err(error) => warn!(%error, "slack interaction: cannot post to the response_url"),
        }
    }
}

/// `NAME`, else the content of the file `NAME_FILE` (trailing newline trimmed); `None` when
/// neither is set or it is empty.
fn secret_from_env(name: &str) -> Result<Option<String>, String> {
    let value = match std::env::var(name) {
        Ok(value) => value,
        Err(_) => match std::env::var_os(format!("{name}_FILE")) {
            None => return Ok(None),
            Some(path) => std::fs::read_to_string(&path)
                .map_err(|error| {
                    format!(
                        "{name}_FILE: cannot read {}: {error}",
                        std::path::Path::new(&path).display()
                    )
                })?
                .trim_end_matches(['\n', '\r'])
                .to_owned(),
        },
    };
    Ok(Some(value).filter(|v| !v.is_empty()))
}

/// Whether the route is served, and with what.
#[derive(Debug, Clone)]
enum Door {
    Closed,
    Broken(String),
    Open(SlackApprovals),
}

#[derive(Debug, Clone)]
struct SlackState {
    routes: RouteState,
    door: Door,
}

/// `POST /v1/slack/interactions`, configured from the environment
/// ([`SlackApprovals::from_env`]): without a signing secret it answers 404 saying how to
/// enable it.
pub fn router(state: RouteState) -> Router {
    let door = match SlackApprovals::from_env() {
        Ok(Some(slack)) => Door::Open(slack),
        Ok(None) => Door::Closed,
        Err(error) => {
            tracing::error!(%error, "slack approvals are misconfigured: every interaction is refused");
            Door::Broken(error)
        }
    };
    serve(state, door)
}

/// `POST /v1/slack/interactions` with `slack`.
pub fn router_with(state: RouteState, slack: SlackApprovals) -> Router {
    serve(state, Door::Open(slack))
}

fn serve(routes: RouteState, door: Door) -> Router {
    Router::new()
        .route(PATH, post(interaction))
        .with_state(SlackState { routes, door })
}

/// What a button carries: which pending approval it is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionValue {
    /// The release.
    pub release: String,
    /// The approve step.
    pub step: String,
    /// Its environment.
    pub env: String,
}

#[derive(Debug, Deserialize)]
struct Form {
    payload: String,
}

#[derive(Debug, Deserialize)]
struct Payload {
    #[serde(rename = "type")]
    kind: String,
    user: SlackUser,
    #[serde(default)]
    actions: Vec<Action>,
    #[serde(default)]
    response_url: Option<String>,
    #[serde(default)]
    trigger_id: Option<String>,
    #[serde(default)]
    view: Option<View>,
}

#[derive(Debug, Deserialize)]
struct View {
    #[serde(default)]
    callback_id: String,
    #[serde(default)]
    private_metadata: String,
    #[serde(default)]
    state: ViewState,
}

#[derive(Debug, Default, Deserialize)]
struct ViewState {
    #[serde(default)]
    values: serde_json::Value,
}

/// What the Override freeze button carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverrideValue {
    /// The release.
    pub release: String,
    /// The frozen environment.
    pub env: String,
}

/// What the modal keeps between the press and the submission (its `private_metadata`).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OverrideMeta {
    release: String,
    env: String,
    #[serde(default)]
    response_url: Option<String>,
}

#[derive(Debug, Deserialize)]
struct SlackUser {
    id: String,
}

#[derive(Debug, Deserialize)]
struct Action {
    action_id: String,
    #[serde(default)]
    value: String,
}

/// The answer to Slack (which only needs a 200) and to whoever reads the logs or tests.
#[derive(Debug, Serialize)]
struct Answer {
    outcome: &'static str,
    detail: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    event_ids: Vec<String>,
}

async fn interaction(
    State(state): State<SlackState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let slack = match &state.door {
        Door::Open(slack) => slack,
        Door::Closed => {
            return Err(ApiError::not_found(
                "slack approvals are not enabled here: set RAILYARD_SLACK_SIGNING_SECRET (or _FILE) on the promoter",
                "",
            ));
        }
        Door::Broken(error) => {
            return Err(ApiError::unavailable(format!(
                "slack approvals are misconfigured: {error}"
            )));
        }
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !content_type
        .to_ascii_lowercase()
        .starts_with("application/x-www-form-urlencoded")
    {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported media type",
            format!(
                "Content-Type {content_type:?}: Slack sends interactions as application/x-www-form-urlencoded with a payload field"
            ),
            "Content-Type",
        ));
    }
    let bytes = axum::body::to_bytes(body, BODY_LIMIT)
        .await
        .map_err(|_| ApiError::too_large(BODY_LIMIT))?;
    slack.verify(&headers, &bytes, state.routes.clock.now().timestamp())?;

    let request = Request::builder()
        .method(axum::http::Method::POST)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(bytes))
        .map_err(|error| ApiError::malformed(error.to_string(), "body"))?;
    let axum::Form(form) = axum::Form::<Form>::from_request(request, &())
        .await
        .map_err(|error| {
            ApiError::malformed(
                format!("the body is not a Slack interaction ({error}): expected payload=<json>"),
                "body",
            )
        })?;
    let payload: Payload = serde_json::from_str(&form.payload).map_err(|error| {
        ApiError::malformed(
            format!("the payload is not a Slack interaction ({error})"),
            "payload",
        )
    })?;
    let user = &payload.user.id;
    if user.is_empty() || user.len() > 32 || !user.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(ApiError::malformed(
            format!("{user:?} is not a Slack user id"),
            "payload.user.id",
        ));
    }
    match payload.kind.as_str() {
        "block_actions"
            if payload
                .actions
                .first()
                .is_some_and(|a| a.action_id == OVERRIDE_ACTION) =>
        {
            return Ok(Json(open_override(&state.routes, slack, &payload).await).into_response());
        }
        "block_actions" => {}
        "view_submission" => return submit_override(&state.routes, slack, &payload).await,
        other => {
            return Err(ApiError::invalid(
                format!(
                    "interactions of type {other:?} are not handled: only the buttons of approval requests and freeze holds, and the override's modal, are"
                ),
                "payload.type",
            ));
        }
    }
    let decided = decide(&state.routes, &payload).await;
    let response_url = payload.response_url.as_deref();
    let answer = match decided {
        Ok((who, answer, value, cmd)) => {
            let verb = if cmd == Command::Approve {
                ":white_check_mark: *Approved*"
            } else {
                ":no_entry_sign: *Denied*"
            };
            let text = format!(
                "{verb} for *{}* by *{}* (<@{user}>) in Slack — release *{}*",
                esc(&value.env),
                esc(&who),
                esc(&value.release)
            );
            info!(release = %answer.release, command = %answer.command, actor = %who, slack_user = %user, "slack interaction accepted");
            slack
                .respond(
                    response_url,
                    json!({
                        "replace_original": true,
                        "text": plain(&text),
                        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}],
                    }),
                )
                .await;
            Answer {
                outcome: "accepted",
                detail: answer.detail,
                event_ids: answer.event_ids,
            }
        }
        Err(refusal) => refuse(slack, user, response_url, &refusal).await,
    };
    // Slack only needs the 200; the refusal reached the presser through the response_url.
    Ok((StatusCode::OK, Json(answer)).into_response())
}

/// `refusal` in words, answered ephemerally to the presser.
async fn refuse(
    slack: &SlackApprovals,
    user: &str,
    response_url: Option<&str>,
    refusal: &ApiError,
) -> Answer {
    let detail = refusal_text(refusal);
    info!(slack_user = %user, status = refusal.status, %detail, "slack interaction refused");
    slack
        .respond(
            response_url,
            json!({
                "response_type": "ephemeral",
                "replace_original": false,
                "text": format!("Railyard refused: {detail}"),
            }),
        )
        .await;
    Answer {
        outcome: "refused",
        detail,
        event_ids: Vec::new(),
    }
}

fn refusal_text(refusal: &ApiError) -> String {
    if refusal.error.is_empty() {
        refusal.detail.clone()
    } else {
        format!("{}: {}", refusal.error, refusal.detail)
    }
}

/// The Railyard identity whose tokens-file entry carries `slack:<user>`.
fn identify(routes: &RouteState, user: &str) -> Result<railyard_http::Identity, ApiError> {
    let alias = format!("slack:{user}");
    routes
        .tokens
        .by_alias(&alias)
        .map_err(|problem| ApiError::refused("ambiguous slack user", problem))?
        .ok_or_else(|| {
            ApiError::refused(
                "slack user not mapped",
                format!(
                    "Slack user {user} is not mapped to a Railyard identity: an administrator adds the alias \"{alias}\" to your entry in the tokens file"
                ),
            )
        })
}

/// Override freeze pressed: a listed approver is asked for the reason in a modal
/// (`views.open` with the press's `trigger_id`); the override is decided when it is submitted.
async fn open_override(routes: &RouteState, slack: &SlackApprovals, payload: &Payload) -> Answer {
    let opened = async {
        let who = identify(routes, &payload.user.id)?;
        who.require(Command::Approve.role())?;
        let value = payload.actions.first().map_or("", |a| a.value.as_str());
        let value: OverrideValue = serde_json::from_str(value).map_err(|error| {
            ApiError::malformed(
                format!("the button's value is not {{\"release\", \"env\"}} ({error})"),
                "payload.actions.0.value",
            )
        })?;
        let release = ReleaseId::new(value.release.clone()).map_err(|error| {
            ApiError::invalid(error.to_string(), "payload.actions.0.value.release")
        })?;
        let Some((base, token)) = &slack.api else {
            return Err(ApiError::conflict(
                format!(
                    "an override from Slack needs the promoter to hold the bot token (RAILYARD_SLACK_TOKEN) to ask for the reason: meanwhile run `railyard approve {release} --env {} --override-freeze --reason \"...\"`",
                    value.env
                ),
                "",
            ));
        };
        let Some(trigger) = payload.trigger_id.as_deref().filter(|t| !t.is_empty()) else {
            return Err(ApiError::malformed(
                "the press has no trigger_id to open the modal with",
                "payload.trigger_id",
            ));
        };
        let metadata = serde_json::to_string(&OverrideMeta {
            release: release.to_string(),
            env: value.env.clone(),
            response_url: payload.response_url.clone(),
        })
        .unwrap_or_default();
        let view = json!({
            "type": "modal",
            "callback_id": OVERRIDE_MODAL,
            "private_metadata": metadata,
            "title": {"type": "plain_text", "text": "Override a freeze"},
            "submit": {"type": "plain_text", "text": "Override"},
            "close": {"type": "plain_text", "text": "Cancel"},
            "blocks": [
                {"type": "section", "text": {"type": "mrkdwn", "text": format!(
                    ":rotating_light: Let release *{}* through the freeze of *{}*? This is an emergency override: it is recorded with your name and reason, and another approver must approve.",
                    esc(release.as_str()), esc(&value.env)
                )}},
                {"type": "input", "block_id": REASON_INPUT, "label": {"type": "plain_text", "text": "Reason"},
                 "element": {"type": "plain_text_input", "action_id": REASON_INPUT, "multiline": true, "min_length": 1}},
            ],
        });
        let answer: serde_json::Value = slack
            .http
            .post(format!("{}/views.open", base.trim_end_matches('/')))
            .bearer_auth(token.as_str())
            .json(&json!({"trigger_id": trigger, "view": view}))
            .send()
            .await
            .map_err(|error| ApiError::unavailable(format!("cannot reach Slack to ask for the reason: {error}")))?
            .json()
            .await
            .map_err(|error| ApiError::unavailable(format!("Slack's answer to views.open is not JSON: {error}")))?;
        if answer["ok"] != true {
            return Err(ApiError::unavailable(format!(
                "Slack did not open the modal asking for the reason ({}): run `railyard approve {release} --env {} --override-freeze --reason \"...\"` instead",
                answer["error"].as_str().unwrap_or("no error given"),
                value.env
            )));
        }
        Ok(format!("asked {} for the reason of the override", who.name))
    }
    .await;
    match opened {
        Ok(detail) => Answer {
            outcome: "asked",
            detail,
            event_ids: Vec::new(),
        },
        Err(refusal) => {
            refuse(
                slack,
                &payload.user.id,
                payload.response_url.as_deref(),
                &refusal,
            )
            .await
        }
    }
}

/// The override's modal submitted: decided like `approve --override-freeze --reason`; a
/// refusal is shown in the modal, on the reason, and the thread is told of an override.
async fn submit_override(
    routes: &RouteState,
    slack: &SlackApprovals,
    payload: &Payload,
) -> Result<Response, ApiError> {
    let Some(view) = payload
        .view
        .as_ref()
        .filter(|v| v.callback_id == OVERRIDE_MODAL)
    else {
        return Err(ApiError::invalid(
            "this view submission is not Railyard's freeze override",
            "payload.view.callback_id",
        ));
    };
    let meta: OverrideMeta = serde_json::from_str(&view.private_metadata).map_err(|error| {
        ApiError::malformed(
            format!("the modal's private_metadata is not Railyard's ({error})"),
            "payload.view.private_metadata",
        )
    })?;
    let reason = view.state.values[REASON_INPUT][REASON_INPUT]["value"]
        .as_str()
        .unwrap_or_default()
        .trim()
        .to_owned();
    let decided = async {
        let who = identify(routes, &payload.user.id)?;
        who.require(Command::Approve.role())?;
        if reason.is_empty() {
            return Err(ApiError::invalid(
                "an emergency override of a freeze needs a reason",
                REASON_INPUT,
            ));
        }
        let release = ReleaseId::new(meta.release.clone())
            .map_err(|error| ApiError::invalid(error.to_string(), "private_metadata.release"))?;
        let body = CommandBody {
            env: Some(meta.env.clone()),
            comment: Some(reason.clone()),
            override_freeze: true,
            ..CommandBody::default()
        };
        let answer = run_command(routes, Command::Approve, release, &who, &body).await?;
        Ok((who.name, answer))
    }
    .await;
    match decided {
        Ok((who, answer)) => {
            info!(release = %answer.release, actor = %who, slack_user = %payload.user.id, "slack freeze override accepted");
            let text = format!(
                ":rotating_light: *{}* (<@{}>) overrode the freeze of *{}* for release *{}* from Slack — {}",
                esc(&who),
                payload.user.id,
                esc(&meta.env),
                esc(&meta.release),
                esc(&reason)
            );
            slack
                .respond(
                    meta.response_url.as_deref(),
                    json!({
                        "response_type": "in_channel",
                        "replace_original": false,
                        "text": plain(&text),
                        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}],
                    }),
                )
                .await;
            // An empty 200 closes the modal.
            Ok(StatusCode::OK.into_response())
        }
        Err(refusal) => {
            let detail = refusal_text(&refusal);
            info!(slack_user = %payload.user.id, status = refusal.status, %detail, "slack freeze override refused");
            Ok(Json(json!({
                "response_action": "errors",
                "errors": {REASON_INPUT: format!("Railyard refused: {detail}")},
            }))
            .into_response())
        }
    }
}

/// The Railyard identity of the presser, and what the press decided.
async fn decide(
    routes: &RouteState,
    payload: &Payload,
) -> Result<(String, crate::CommandAnswer, ActionValue, Command), ApiError> {
    let who = identify(routes, &payload.user.id)?;
    let [action] = payload.actions.as_slice() else {
        return Err(ApiError::invalid(
            format!(
                "expected one action, got {}: press Approve or Deny on an approval request",
                payload.actions.len()
            ),
            "payload.actions",
        ));
    };
    let cmd = match action.action_id.as_str() {
        APPROVE_ACTION => Command::Approve,
        DENY_ACTION => Command::Deny,
        other => {
            return Err(ApiError::invalid(
                format!(
                    "unknown action {other:?}: only {APPROVE_ACTION} and {DENY_ACTION} are handled"
                ),
                "payload.actions.0.action_id",
            ));
        }
    };
    who.require(cmd.role())?;
    let value: ActionValue = serde_json::from_str(&action.value).map_err(|error| {
        ApiError::malformed(
            format!("the button's value is not {{\"release\", \"step\", \"env\"}} ({error})"),
            "payload.actions.0.value",
        )
    })?;
    let release = ReleaseId::new(value.release.clone())
        .map_err(|error| ApiError::invalid(error.to_string(), "payload.actions.0.value.release"))?;
    let body = CommandBody {
        step: Some(value.step.clone()),
        env: Some(value.env.clone()),
        comment: Some("via Slack".to_owned()),
        ..CommandBody::default()
    };
    let answer = run_command(routes, cmd, release, &who, &body).await?;
    Ok((who.name, answer, value, cmd))
}

/// Escapes Slack's mrkdwn control characters.
fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The notification text: the mrkdwn without its markup.
fn plain(text: &str) -> String {
    text.replace('*', "")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed(secret: &str, timestamp: i64, body: &[u8]) -> HeaderMap {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("v0:{timestamp}:").as_bytes());
        mac.update(body);
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-slack-signature",
            format!("v0={}", hex::encode(mac.finalize().into_bytes()))
                .parse()
                .unwrap(),
        );
        headers.insert(
            "x-slack-request-timestamp",
            timestamp.to_string().parse().unwrap(),
        );
        headers
    }

    #[test]
    fn slacks_documented_example_verifies() {
        // The example of https://api.slack.com/authentication/verifying-requests-from-slack.
        let body = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
        let slack = SlackApprovals::new("8f742231b10e8888abcd99yyyzzz85a5");
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-slack-signature",
            "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
                .parse()
                .unwrap(),
        );
        headers.insert("x-slack-request-timestamp", "1531420618".parse().unwrap());
        slack.verify(&headers, body, 1_531_420_618 + 10).unwrap();
    }

    #[test]
    fn stale_forged_and_replayed_requests_are_refused() {
        let slack = SlackApprovals::new("a-signing-secret-of-the-app");
        let now = 1_800_000_000;
        let body = b"payload=%7B%7D";
        let fresh = signed("a-signing-secret-of-the-app", now - 10, body);
        slack.verify(&fresh, body, now).unwrap();
        let replay = slack.verify(&fresh, body, now).unwrap_err();
        assert!(replay.detail.contains("replay"), "{replay}");
        let stale = signed("a-signing-secret-of-the-app", now - 301, body);
        let error = slack.verify(&stale, body, now).unwrap_err();
        assert!(error.detail.contains("301s away"), "{error}");
        let future = signed("a-signing-secret-of-the-app", now + 301, body);
        assert!(slack.verify(&future, body, now).is_err());
        let forged = signed("another-secret-entirely", now, body);
        let error = slack.verify(&forged, body, now).unwrap_err();
        assert_eq!(error.status, 401);
        assert!(error.detail.contains("does not match"), "{error}");
        let altered = signed("a-signing-secret-of-the-app", now - 5, body);
        assert!(slack.verify(&altered, b"payload=%7B%7D%20", now).is_err());
        // A replay is remembered only while its timestamp is valid; afterwards it is stale.
        let later = now + 400;
        assert!(
            slack
                .verify(&fresh, body, later)
                .unwrap_err()
                .detail
                .contains("away")
        );
    }
}

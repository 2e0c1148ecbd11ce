//! How the notifier runs: the catalog (channels, verbosity, owners, repositories), the Slack
//! transport (incoming webhooks or the Web API with a bot token), pacing and retry waits (all
//! read through the [`Clock`](railyard_core::Clock)), where its ledger lives, and an optional
//! UI URL for approval links.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use railyard_core::{Catalog, SharedClock, SystemClock};
use railyard_http::Metrics;

use crate::error::NotifyError;

/// Slack's Web API base URL.
pub const SLACK_API: &str = "https://slack.com/api";

/// A Slack bot token (`xoxb-…`); its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct BotToken(String);

impl fmt::Debug for BotToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BotToken(<redacted>)")
    }
}

impl BotToken {
    /// A token given as a value.
    pub fn new(token: impl Into<String>) -> Result<BotToken, NotifyError> {
        let token = token.into().trim().to_owned();
        if token.is_empty() {
            return Err(NotifyError::Config(
                "the slack bot token is empty: set it to the bot's xoxb-… token".to_owned(),
            ));
        }
        Ok(BotToken(token))
    }

    /// The token from environment variable `var`, else from the file `file` (its whole
    /// content, trimmed), in that order.
    pub fn from_env_or_file(var: &str, file: Option<&Path>) -> Result<BotToken, NotifyError> {
        if let Ok(value) = std::env::var(var) {
            if !value.trim().is_empty() {
                return BotToken::new(value);
            }
        }
        match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|error| {
                    NotifyError::Config(format!(
                        "cannot read the slack bot token file {}: {error} (set {var} or fix the path)",
                        path.display()
                    ))
                })?;
                BotToken::new(text)
            }
            None => Err(NotifyError::Config(format!(
                "no slack bot token: set {var} or give a token file"
            ))),
        }
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

/// How messages reach Slack.
#[derive(Debug, Clone)]
pub enum Transport {
    /// Incoming webhooks, one URL per channel (a webhook posts to the channel it was made
    /// for). No threads and no updates: every message stands alone. Channels without a URL
    /// hear nothing (logged at start).
    Webhooks {
        /// Channel (as the catalog names it, `#releases`) to webhook URL.
        urls: BTreeMap<String, String>,
    },
    /// The Web API with a bot token: one root message per release in each channel, replies
    /// in its thread, the root's status line kept current with `chat.update`.
    WebApi {
        /// Base URL, [`SLACK_API`] in production.
        base_url: String,
        /// The bot token (scope `chat:write`; the bot must be in the channels).
        token: BotToken,
    },
}

/// Where a notifier with an empty ledger starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum History {
    /// Reads the stream from the start but sends nothing for what was already in it when the
    /// notifier started: a lost ledger never re-posts old releases (the default).
    #[default]
    Skip,
    /// Sends messages for everything in the stream (tests, a first run on a fresh stream).
    Send,
}

/// Waits between retries of a failed delivery (5xx, timeouts, connection errors).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first wait.
    pub initial: Duration,
    /// The longest wait; doubling stops here.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
        }
    }
}

impl Backoff {
    /// The wait before retry number `attempt` (1 for the first retry).
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(20));
        self.initial.saturating_mul(factor).min(self.max)
    }
}

/// Everything `railyard notify` needs.
#[derive(Debug, Clone)]
pub struct NotifyConfig {
    /// The catalog in force: `[notify.slack]`, services' `slack_channel`, `owner` and
    /// `match.repository`, environments and approvers.
    pub catalog: Catalog,
    /// How messages reach Slack.
    pub transport: Transport,
    /// The least time between two calls to one destination (a channel, or a webhook URL);
    /// Slack allows about one message per second per channel. Default 1 s. When it is not
    /// zero, a notifier that is behind tells a release's waiting step updates together (see
    /// the crate's documentation); zero tells every event on its own, at once.
    pub pacing: Duration,
    /// Waits between retries of 5xx answers and timeouts.
    pub backoff: Backoff,
    /// How long one HTTP call to Slack may take before it counts as timed out (and is
    /// retried). Default 10 s.
    pub request_timeout: Duration,
    /// The notifier's ledger (a sled directory).
    pub store: PathBuf,
    /// The store at `store` when this process already has it open: a service started again
    /// after NATS failed reuses it instead of opening the directory again
    /// ([`railyard_store::Store::kept_or_open`]). `None`: opened at each start.
    pub kept_store: Option<railyard_store::Store>,
    /// Every wait (pacing, `Retry-After`, backoff) goes through it.
    pub clock: SharedClock,
    /// The Railyard UI, for links in approval requests (`{ui_url}/releases/{id}`).
    pub ui_url: Option<String>,
    /// Whether approval requests carry Approve and Deny buttons (default on). They work once
    /// the Slack app's interactivity request URL is the promoter's `/v1/slack/interactions`
    /// and the promoter has the app's signing secret (README, "Approvals from Slack").
    pub approval_buttons: bool,
    /// Where an empty ledger starts.
    pub history: History,
    /// The process's metrics registry, when it has one.
    pub metrics: Option<Metrics>,
    /// Told the stream sequence of every message the notifier has finished with (all its
    /// Slack calls made and recorded): for lag reporting, and for tests to wait on.
    pub handled: Option<tokio::sync::watch::Sender<u64>>,
}

impl NotifyConfig {
    /// A configuration with the defaults: 1 s pacing, backoff 1 s doubling to 60 s, 10 s
    /// request timeout, the system clock, no UI link, approval buttons, history skipped, no
    /// metrics.
    pub fn new(catalog: Catalog, transport: Transport, store: impl Into<PathBuf>) -> NotifyConfig {
        NotifyConfig {
            catalog,
            transport,
            pacing: Duration::from_secs(1),
            backoff: Backoff::default(),
            request_timeout: Duration::from_secs(10),
            store: store.into(),
            kept_store: None,
            clock: SystemClock::shared(),
            ui_url: None,
            approval_buttons: true,
            history: History::Skip,
            metrics: None,
            handled: None,
        }
    }
}

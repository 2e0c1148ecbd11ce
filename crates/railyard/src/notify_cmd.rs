//! Slack settings shared by `railyard notify` and `railyard dev`, and the notifier as a
//! service task. The bot token comes from `RAILYARD_SLACK_TOKEN` or a file, never from
//! the catalog or a flag.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use railyard_core::Catalog;
use railyard_notify::{BotToken, NotifyConfig, Transport};

/// How the notifier reaches Slack.
#[derive(Debug, Clone, clap::Args)]
pub struct SlackArgs {
    /// Slack Web API base URL (threads and status updates); the bot token comes from
    /// RAILYARD_SLACK_TOKEN or --slack-token-file.
    #[arg(long, env = "RAILYARD_SLACK_API_URL")]
    pub slack_api_url: Option<String>,
    /// A file holding the bot token (xoxb-…), when RAILYARD_SLACK_TOKEN is not set.
    #[arg(long)]
    pub slack_token_file: Option<PathBuf>,
    /// Incoming webhooks instead of the Web API: `#channel=https://hooks.slack.com/…`,
    /// repeated per channel.
    #[arg(long = "slack-webhook", value_name = "CHANNEL=URL")]
    pub slack_webhooks: Vec<String>,
    /// Railyard UI base URL for links in approval requests.
    #[arg(long, env = "RAILYARD_UI_URL")]
    pub ui_url: Option<String>,
    /// The least time between two Slack calls to one channel (`1s`, `250ms`; `0s` paces
    /// nothing). Slack allows about one message per second per channel; while the notifier
    /// is behind, step updates waiting for a thread are told together.
    #[arg(
        long,
        env = "RAILYARD_SLACK_PACING",
        default_value = "1s",
        value_parser = humantime::parse_duration
    )]
    pub slack_pacing: Duration,
}

impl SlackArgs {
    /// The transport, or `None` when Slack is not configured.
    pub fn transport(&self) -> anyhow::Result<Option<Transport>> {
        if !self.slack_webhooks.is_empty() {
            let mut urls = BTreeMap::new();
            for entry in &self.slack_webhooks {
                let (channel, url) = entry.split_once('=').with_context(|| {
                    format!(
                        "--slack-webhook {entry:?}: write it as #channel=https://hooks.slack.com/…"
                    )
                })?;
                urls.insert(channel.to_owned(), url.to_owned());
            }
            return Ok(Some(Transport::Webhooks { urls }));
        }
        let token_given =
            std::env::var_os("RAILYARD_SLACK_TOKEN").is_some() || self.slack_token_file.is_some();
        if self.slack_api_url.is_none() && !token_given {
            return Ok(None);
        }
        let token =
            BotToken::from_env_or_file("RAILYARD_SLACK_TOKEN", self.slack_token_file.as_deref())?;
        let base_url = self
            .slack_api_url
            .clone()
            .unwrap_or_else(|| railyard_notify::SLACK_API.to_owned());
        Ok(Some(Transport::WebApi { base_url, token }))
    }

    /// The notifier's configuration: `transport`, and the UI link and pacing of these flags.
    pub fn config(&self, catalog: Catalog, transport: Transport, store: PathBuf) -> NotifyConfig {
        let mut config = NotifyConfig::new(catalog, transport, store);
        config.ui_url = self.ui_url.clone();
        config.pacing = self.slack_pacing;
        config
    }
}

/// Flags of `railyard notify`.
#[derive(Debug, clap::Args)]
#[command(after_help = crate::env_help::NOTIFY)]
pub struct NotifyArgs {
    /// The NATS server or cluster.
    #[arg(
        long,
        env = "RAILYARD_NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub nats_url: String,
    /// The catalog.
    #[arg(long, env = "RAILYARD_CATALOG", default_value = "railyard.toml")]
    pub catalog: PathBuf,
    /// Where the notifier's ledger lives.
    #[arg(long, default_value = ".railyard/notify")]
    pub store: PathBuf,
    /// HTTP listener for /healthz, /readyz, /metrics.
    #[arg(long, default_value = "127.0.0.1:7814")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub slack: SlackArgs,
    /// Replicas: only the holder of the notifier's leader lease calls Slack.
    #[command(flatten)]
    pub replica: crate::replica::ReplicaArgs,
}

/// Runs the notifier until Ctrl-C or SIGTERM.
pub async fn run(args: NotifyArgs) -> anyhow::Result<()> {
    crate::authority_cmd::setup("notify", None)?;
    let catalog = crate::dev::load_catalog(&args.catalog)?;
    let transport = args.slack.transport()?.context(
        "Slack is not configured: set RAILYARD_SLACK_TOKEN (Web API) or pass --slack-webhook #channel=URL",
    )?;
    let bus = crate::stack::connect(&args.nats_url).await?;
    let metrics = railyard_http::Metrics::default();
    let mut config = args.slack.config(catalog, transport, args.store.clone());
    config.metrics = Some(metrics.clone());
    config.kept_store = Some(crate::stack::keep_store_open(&args.store).await?);
    let leader = args
        .replica
        .leader("notify", config.clock.clone(), &metrics);
    let clock = config.clock.clone();
    crate::stack::run_one(
        "notify",
        bus,
        metrics,
        args.listen,
        clock,
        move |bus, stop| {
            let run = railyard_notify::run_replica(config.clone(), Some(leader.clone()), bus, stop);
            async move { run.await.context("notify") }
        },
    )
    .await
}

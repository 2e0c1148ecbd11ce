//! A stand-in for Slack's Web API, for tests of the notifier and the full-flow scenarios: it
//! checks the bot token, answers `chat.postMessage` and `chat.update` as Slack does (channel
//! ids, fresh `ts`, `thread_not_found`, `message_not_found`), records every call, and reads
//! the calls back as the threads Slack would show.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail, ensure};
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use serde_json::{Value, json};

use crate::standin::Served;

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
    /// Serves the stand-in on `127.0.0.1:0` until the returned handle is dropped; its URL is
    /// the Web API base (`http://127.0.0.1:<port>/api`).
    pub async fn serve(&self) -> anyhow::Result<Served> {
        let mut served = crate::standin::serve(self.router()).await?;
        served.url.push_str("/api");
        Ok(served)
    }

    /// The routes (`POST /api/{method}`).
    pub fn router(&self) -> axum::Router {
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

#[cfg(test)]
mod tests {
    //! The Slack stand-in catches what the scenarios rely on it to catch.

    use super::*;

    struct Client {
        slack: SlackStandIn,
        url: String,
        http: reqwest::Client,
        _served: Served,
    }

    impl Client {
        async fn start() -> anyhow::Result<Client> {
            let slack = SlackStandIn::default();
            let served = slack.serve().await?;
            Ok(Client {
                slack,
                url: served.url.clone(),
                http: reqwest::Client::new(),
                _served: served,
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

//! Slack over HTTP: the two transports (incoming webhooks, the Web API's `chat.postMessage`
//! and `chat.update`), the exact JSON each call sends, and what Slack's answer means for the
//! caller — sent, rate limited (wait `Retry-After`), worth retrying (5xx, timeouts, Slack's
//! transient errors) or refused for good (any other 4xx or `ok: false`). The notifier's own
//! secrets (the bot token, the webhook URLs) are cut out of every payload, whatever text
//! an event carried.

use std::time::Duration;

use serde_json::{Value, json};

use crate::blocks::Message;
use crate::config::{BotToken, Transport};
use crate::error::NotifyError;

/// The `Retry-After` assumed when a 429 carries none.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Web API errors that say "try again later" rather than "this will never work".
const TRANSIENT_ERRORS: &[&str] = &[
    "internal_error",
    "fatal_error",
    "service_unavailable",
    "request_timeout",
    "team_added_to_org",
];

/// One call to Slack.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    /// Post a message to `channel`, in the thread of `thread_ts` when given.
    Post {
        /// The channel as the catalog names it.
        channel: String,
        /// The root message's `ts`.
        thread_ts: Option<String>,
        /// What to post.
        message: Message,
    },
    /// Replace the message `ts` in `channel_id` (Web API only).
    Update {
        /// The channel as the catalog names it (for pacing and logs).
        channel: String,
        /// The channel id Slack returned when the message was posted.
        channel_id: String,
        /// The message.
        ts: String,
        /// Its new content.
        message: Message,
    },
}

impl Call {
    /// The channel as the catalog names it.
    pub fn channel(&self) -> &str {
        match self {
            Call::Post { channel, .. } | Call::Update { channel, .. } => channel,
        }
    }
}

/// What Slack's answer means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Delivered; the Web API says where (`channel` id and `ts`).
    Sent {
        /// The channel id.
        channel_id: Option<String>,
        /// The message's ts.
        ts: Option<String>,
    },
    /// 429: send the same payload again after this wait.
    RateLimited(Duration),
    /// Worth retrying after a backoff.
    Transient(String),
    /// Refused for good, with Slack's error.
    Permanent(String),
}

/// A Slack client for one transport.
#[derive(Debug, Clone)]
pub struct Slack {
    client: reqwest::Client,
    transport: Transport,
}

impl Slack {
    /// A client whose calls time out after `timeout`.
    pub fn new(transport: Transport, timeout: Duration) -> Result<Slack, NotifyError> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent("railyard-notify")
            .build()
            .map_err(NotifyError::Http)?;
        let slack = Slack { client, transport };
        // Every log line, span and payload of the process masks them from now on.
        railyard_core::redact::register(slack.secrets());
        Ok(slack)
    }

    /// Whether messages go to threads (the Web API) or stand alone (webhooks).
    pub fn threads(&self) -> bool {
        matches!(self.transport, Transport::WebApi { .. })
    }

    /// Whether `channel` can be reached at all (webhooks need a URL per channel).
    pub fn reaches(&self, channel: &str) -> bool {
        match &self.transport {
            Transport::Webhooks { urls } => urls.contains_key(channel),
            Transport::WebApi { .. } => true,
        }
    }

    /// The destination paced as one: the webhook URL, or the channel.
    pub fn destination(&self, call: &Call) -> String {
        match &self.transport {
            Transport::Webhooks { urls } => urls
                .get(call.channel())
                .cloned()
                .unwrap_or_else(|| call.channel().to_owned()),
            Transport::WebApi { .. } => call.channel().to_owned(),
        }
    }

    /// The secrets no payload may carry: the bot token, the webhook URLs (and their paths,
    /// which are the secret part).
    fn secrets(&self) -> Vec<&str> {
        match &self.transport {
            Transport::WebApi { token, .. } => vec![token.expose()],
            Transport::Webhooks { urls } => urls
                .values()
                .flat_map(|url| {
                    let path = url
                        .split_once("://")
                        .and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..]))
                        .filter(|path| path.len() > 8);
                    std::iter::once(url.as_str()).chain(path)
                })
                .collect(),
        }
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect()
    }

    /// The exact JSON body of `call`, through the process's redaction layer: the notifier's
    /// secrets (and every other secret the process holds) are cut out of every string.
    pub fn payload(&self, call: &Call) -> Value {
        let mut body = self.body(call);
        railyard_core::redact::redact_json(&mut body);
        body
    }

    fn body(&self, call: &Call) -> Value {
        match (call, &self.transport) {
            (Call::Post { message, .. }, Transport::Webhooks { .. }) => json!({
                "text": message.text,
                "blocks": message.blocks,
                "unfurl_links": false,
                "unfurl_media": false,
            }),
            (
                Call::Post {
                    channel,
                    thread_ts,
                    message,
                },
                Transport::WebApi { .. },
            ) => {
                let mut body = json!({
                    "channel": channel,
                    "text": message.text,
                    "blocks": message.blocks,
                    "unfurl_links": false,
                    "unfurl_media": false,
                });
                if let Some(ts) = thread_ts {
                    body["thread_ts"] = json!(ts);
                }
                body
            }
            (
                Call::Update {
                    channel_id,
                    ts,
                    message,
                    ..
                },
                _,
            ) => json!({
                "channel": channel_id,
                "ts": ts,
                "text": message.text,
                "blocks": message.blocks,
            }),
        }
    }

    /// Sends `payload` (from [`Slack::payload`]) for `call` once and says what the answer means.
    pub async fn send(&self, call: &Call, payload: &Value) -> Outcome {
        let request = match (&self.transport, call) {
            (Transport::Webhooks { urls }, Call::Post { channel, .. }) => match urls.get(channel) {
                Some(url) => self.client.post(url),
                None => {
                    return Outcome::Permanent(format!(
                        "no webhook url for channel {channel}: add one to the notifier's configuration"
                    ));
                }
            },
            (Transport::Webhooks { .. }, Call::Update { .. }) => {
                return Outcome::Permanent(
                    "incoming webhooks cannot update messages: use the web api transport"
                        .to_owned(),
                );
            }
            (Transport::WebApi { base_url, token }, call) => {
                let method = match call {
                    Call::Post { .. } => "chat.postMessage",
                    Call::Update { .. } => "chat.update",
                };
                let url = format!("{}/{method}", base_url.trim_end_matches('/'));
                self.client.post(url).bearer_auth(BotToken::expose(token))
            }
        };
        let response = match request.json(payload).send().await {
            Ok(response) => response,
            Err(error) if error.is_timeout() => {
                return Outcome::Transient(format!("slack did not answer in time: {error}"));
            }
            Err(error) => return Outcome::Transient(format!("cannot reach slack: {error}")),
        };
        let status = response.status();
        if status.as_u16() == 429 {
            let wait = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs)
                .unwrap_or(DEFAULT_RETRY_AFTER);
            return Outcome::RateLimited(wait);
        }
        let body = match response.text().await {
            Ok(body) => body,
            Err(error) => return Outcome::Transient(format!("reading slack's answer: {error}")),
        };
        let body_text = body.trim().chars().take(500).collect::<String>();
        if status.is_server_error() {
            return Outcome::Transient(format!("slack answered {status}: {body_text}"));
        }
        if status.is_client_error() {
            return Outcome::Permanent(format!("slack answered {status}: {body_text}"));
        }
        match &self.transport {
            Transport::Webhooks { .. } => Outcome::Sent {
                channel_id: None,
                ts: None,
            },
            Transport::WebApi { .. } => web_api_outcome(&body, &body_text),
        }
    }
}

fn web_api_outcome(body: &str, body_text: &str) -> Outcome {
    let Ok(answer) = serde_json::from_str::<Value>(body) else {
        return Outcome::Transient(format!("slack's answer is not json: {body_text}"));
    };
    if answer["ok"] == json!(true) {
        return Outcome::Sent {
            channel_id: answer["channel"].as_str().map(str::to_owned),
            ts: answer["ts"].as_str().map(str::to_owned),
        };
    }
    let error = answer["error"].as_str().unwrap_or("unknown_error");
    if error == "ratelimited" {
        return Outcome::RateLimited(DEFAULT_RETRY_AFTER);
    }
    let detail = match answer
        .get("response_metadata")
        .and_then(|m| m.get("messages"))
    {
        Some(messages) => format!("{error} ({messages})"),
        None => error.to_owned(),
    };
    if TRANSIENT_ERRORS.contains(&error) {
        Outcome::Transient(format!("slack answered {detail}"))
    } else {
        Outcome::Permanent(format!("slack refused the message: {detail}"))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::blocks::Blocks;

    fn post(text: &str) -> Call {
        let mut blocks = Blocks::new();
        blocks.section(text);
        Call::Post {
            channel: "#releases".into(),
            thread_ts: None,
            message: blocks.finish(text),
        }
    }

    #[test]
    fn the_bot_token_and_webhook_urls_never_reach_a_payload() {
        let token = "xoxb-1234-secret";
        let web = Slack::new(
            Transport::WebApi {
                base_url: "http://127.0.0.1:1/api".into(),
                token: BotToken::new(token).unwrap(),
            },
            Duration::from_secs(1),
        )
        .unwrap();
        let body = web.payload(&post(&format!("curl -H 'Authorization: Bearer {token}'")));
        assert!(!body.to_string().contains(token), "{body}");
        assert!(body.to_string().contains("Bearer ***"), "{body}");

        let url = "https://hooks.slack.com/services/T000/B000/XXXXSECRET";
        let hooks = Slack::new(
            Transport::Webhooks {
                urls: BTreeMap::from([("#releases".to_owned(), url.to_owned())]),
            },
            Duration::from_secs(1),
        )
        .unwrap();
        let body = hooks.payload(&post(&format!(
            "posted to {url} and /services/T000/B000/XXXXSECRET"
        )));
        assert!(!body.to_string().contains("XXXXSECRET"), "{body}");
    }
}

//! Reading stored messages with JetStream's direct get: one message by sequence, or every
//! message matching a subject filter in batches (one request per batch, answered by any
//! replica; the batch ends with an `EOB` status carrying how many remain).

use async_nats::{HeaderMap, StatusCode};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::json;

use crate::bus::Bus;
use crate::error::BusError;

/// Messages per direct-get batch request.
const BATCH: usize = 256;
/// The status that ends a batch.
const END_OF_BATCH: u16 = 204;

/// A message as stored in a stream.
#[derive(Debug, Clone)]
pub(crate) struct StoredMessage {
    pub(crate) sequence: u64,
    pub(crate) subject: String,
    pub(crate) headers: HeaderMap,
    pub(crate) payload: Bytes,
}

impl StoredMessage {
    fn from_reply(stream: &str, message: async_nats::Message) -> Result<StoredMessage, BusError> {
        let headers = message.headers.unwrap_or_default();
        let sequence = headers
            .get("Nats-Sequence")
            .and_then(|value| value.as_str().parse::<u64>().ok());
        let subject = headers
            .get("Nats-Subject")
            .map(|value| value.as_str().to_owned());
        match (sequence, subject) {
            (Some(sequence), Some(subject)) => Ok(StoredMessage {
                sequence,
                subject,
                headers,
                payload: message.payload,
            }),
            _ => Err(BusError::Nats {
                operation: format!("reading a message of stream {stream}"),
                source: "the direct-get reply lacks Nats-Sequence or Nats-Subject (is the server older than 2.11?)".into(),
            }),
        }
    }

    /// A header of the original message.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|value| value.as_str())
    }
}

impl Bus {
    /// The message at `sequence` in `stream`; `None` when there is none (never written,
    /// deleted, or removed by retention).
    pub(crate) async fn direct_get(
        &self,
        stream: &str,
        sequence: u64,
    ) -> Result<Option<StoredMessage>, BusError> {
        self.direct_request(
            stream,
            json!({ "seq": sequence }),
            format!("reading message {sequence} of stream {stream}"),
        )
        .await
    }

    /// The last message of `subject` in `stream`, found through the server's per-subject
    /// index (cheap however long the stream is); `None` when the subject has none.
    pub(crate) async fn direct_last(
        &self,
        stream: &str,
        subject: &str,
    ) -> Result<Option<StoredMessage>, BusError> {
        self.direct_request(
            stream,
            json!({ "last_by_subj": subject }),
            format!("reading the last message of {subject} in stream {stream}"),
        )
        .await
    }

    async fn direct_request(
        &self,
        stream: &str,
        body: serde_json::Value,
        what: String,
    ) -> Result<Option<StoredMessage>, BusError> {
        let operation = || what.clone();
        let request = async_nats::Request::new()
            .payload(body.to_string().into())
            .timeout(Some(self.timeout()));
        let reply = self
            .inner
            .client
            .send_request(format!("$JS.API.DIRECT.GET.{stream}"), request)
            .await;
        let reply = match reply {
            Ok(reply) => reply,
            Err(error) if error.kind() == async_nats::RequestErrorKind::NoResponders => {
                return Err(self.no_responders(stream, operation()).await);
            }
            Err(error) => return Err(self.request_error(operation(), error)),
        };
        match reply.status {
            None => StoredMessage::from_reply(stream, reply).map(Some),
            Some(status) if status == StatusCode::OK => {
                StoredMessage::from_reply(stream, reply).map(Some)
            }
            Some(status) if status == StatusCode::NOT_FOUND => Ok(None),
            Some(status) => Err(BusError::Nats {
                operation: operation(),
                source: format!("status {status}: {}", reply.description.unwrap_or_default())
                    .into(),
            }),
        }
    }

    /// Every message of `stream` matching `filter` from sequence `from` on, in order, at most
    /// `limit` when given.
    pub(crate) async fn direct_scan(
        &self,
        stream: &str,
        filter: &str,
        from: u64,
        limit: Option<usize>,
    ) -> Result<Vec<StoredMessage>, BusError> {
        let client = &self.inner.client;
        let operation = || format!("reading {filter} from stream {stream}");
        let inbox = client.new_inbox();
        let mut replies = client
            .subscribe(inbox.clone())
            .await
            .map_err(|error| self.nats_error(operation(), error))?;
        let mut messages = Vec::new();
        let mut next = from.max(1);
        loop {
            let want = limit.map_or(BATCH, |limit| {
                limit.saturating_sub(messages.len()).min(BATCH)
            });
            if want == 0 {
                break;
            }
            let request = json!({ "seq": next, "next_by_subj": filter, "batch": want });
            client
                .publish_with_reply(
                    format!("$JS.API.DIRECT.GET.{stream}"),
                    inbox.clone(),
                    request.to_string().into(),
                )
                .await
                .map_err(|error| self.nats_error(operation(), error))?;
            let mut received = 0usize;
            let remaining = loop {
                let reply = match tokio::time::timeout(self.timeout(), replies.next()).await {
                    Err(_) => {
                        return Err(BusError::Timeout {
                            operation: operation(),
                            timeout: self.timeout(),
                        });
                    }
                    Ok(None) => {
                        return Err(BusError::Nats {
                            operation: operation(),
                            source: "the connection closed".into(),
                        });
                    }
                    Ok(Some(reply)) => reply,
                };
                match reply.status.map(|status| status.as_u16()) {
                    None | Some(200) => {
                        let message = StoredMessage::from_reply(stream, reply)?;
                        next = message.sequence + 1;
                        received += 1;
                        messages.push(message);
                    }
                    Some(END_OF_BATCH) => {
                        break reply
                            .headers
                            .as_ref()
                            .and_then(|headers| headers.get("Nats-Num-Pending"))
                            .and_then(|value| value.as_str().parse::<u64>().ok())
                            .unwrap_or(0);
                    }
                    Some(404) => break 0,
                    Some(503) => return Err(self.no_responders(stream, operation()).await),
                    Some(status) => {
                        return Err(BusError::Nats {
                            operation: operation(),
                            source: format!(
                                "status {status}: {}",
                                reply.description.unwrap_or_default()
                            )
                            .into(),
                        });
                    }
                }
            };
            if remaining == 0 || received == 0 {
                break;
            }
        }
        let _ = replies.unsubscribe().await;
        Ok(messages)
    }

    /// Nobody answered a direct get of `stream`: it does not exist (missing topology: run
    /// `admin init`), or it does and none of its replicas serves reads at this moment (a node
    /// restarting, JetStream not ready yet, a cluster electing) — a NATS failure that waiting
    /// mends ([`BusError::is_transient`]), which callers retry instead of stopping.
    async fn no_responders(&self, stream: &str, operation: String) -> BusError {
        match self.stream_info(stream).await {
            Ok(_) => BusError::Nats {
                operation,
                source: format!(
                    "no server answered for stream {stream}, which exists: a node is restarting or the cluster is electing a leader"
                )
                .into(),
            },
            Err(BusError::MissingTopology { .. }) => BusError::MissingTopology {
                what: format!("stream {stream} (or jetstream)"),
            },
            Err(other) => other,
        }
    }

    fn request_error(&self, operation: String, error: async_nats::RequestError) -> BusError {
        match error.kind() {
            async_nats::RequestErrorKind::TimedOut => BusError::Timeout {
                operation,
                timeout: self.timeout(),
            },
            _ => self.nats_error(operation, error),
        }
    }
}

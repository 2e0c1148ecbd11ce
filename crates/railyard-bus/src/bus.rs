//! [`Bus`]: one connection to NATS and a JetStream context, shared by clones; connect, close,
//! the client escape hatch, and the handles every other module uses.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use async_nats::{ConnectOptions, ServerAddr};
use tokio::sync::OnceCell;

use crate::config::BusConfig;
use crate::error::{BusError, is_stream_not_found};
use crate::names::{
    DELIVERIES_BUCKET, DLQ_REASONS_BUCKET, EVENTS_STREAM, LEADERS_BUCKET, LEASES_BUCKET,
};

/// Railyard's connection to NATS JetStream. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct Bus {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) client: async_nats::Client,
    pub(crate) js: jetstream::Context,
    pub(crate) config: BusConfig,
    pub(crate) url: String,
    closed: AtomicBool,
    deliveries: OnceCell<kv::Store>,
    leases: OnceCell<kv::Store>,
    leaders: OnceCell<kv::Store>,
    reasons: OnceCell<kv::Store>,
}

impl fmt::Debug for Bus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bus")
            .field("url", &self.inner.url)
            .field("state", &self.inner.client.connection_state())
            .finish_non_exhaustive()
    }
}

impl Bus {
    /// Connects to `url` (`nats://host:port`, comma-separated for a cluster). The connection
    /// reconnects by itself after a server restart; requests made meanwhile wait, bounded by
    /// `config.request_timeout`.
    pub async fn connect(url: &str, config: BusConfig) -> Result<Bus, BusError> {
        config.validate()?;
        let shown = redact_url(url);
        let addresses = url
            .split(',')
            .map(|address| address.trim().parse::<ServerAddr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| BusError::InvalidUrl {
                url: shown.clone(),
                source: Box::new(error),
            })?;
        let max_delay = config.reconnect_max_delay;
        // Credentials from the configuration, else from the first URL that carries them
        // (`nats://user:password@host:port`): the client does not read them from the URL.
        let credentials = config.credentials.clone().or_else(|| {
            addresses.iter().find_map(|address| {
                Some(crate::NatsCredentials {
                    user: address.username()?.to_owned(),
                    password: address.password().unwrap_or_default().to_owned(),
                })
            })
        });
        let options = match credentials {
            Some(credentials) => {
                // The process's logs, spans and records mask it from now on.
                railyard_core::redact::register([credentials.password.as_str()]);
                ConnectOptions::with_user_and_password(credentials.user, credentials.password)
            }
            None => ConnectOptions::new(),
        };
        let options = match &config.tls_ca {
            Some(ca) => options.add_root_certificates(ca.clone()).require_tls(true),
            None => options.require_tls(config.require_tls),
        };
        let tls = config.require_tls || config.tls_ca.is_some();
        let client = options
            .name(&config.connection_name)
            .request_timeout(Some(config.request_timeout))
            .connection_timeout(config.request_timeout)
            .reconnect_delay_callback(move |attempts| reconnect_delay(attempts, max_delay))
            .event_callback(|event| async move {
                match event {
                    async_nats::Event::Connected => tracing::info!("connected to nats"),
                    async_nats::Event::Disconnected => {
                        tracing::warn!("disconnected from nats; reconnecting")
                    }
                    async_nats::Event::Draining | async_nats::Event::Closed => {
                        tracing::debug!(event = %event, "nats connection closing")
                    }
                    other => tracing::warn!(event = %other, "nats connection event"),
                }
            })
            .connect(addresses)
            .await
            .map_err(|error| match tls {
                true => BusError::ConnectTls {
                    url: shown.clone(),
                    source: Box::new(error),
                },
                false => BusError::Connect {
                    url: shown.clone(),
                    source: Box::new(error),
                },
            })?;
        let js = jetstream::ContextBuilder::new()
            .timeout(config.request_timeout)
            .build(client.clone());
        Ok(Bus {
            inner: Arc::new(Inner {
                client,
                js,
                config,
                url: shown,
                closed: AtomicBool::new(false),
                deliveries: OnceCell::new(),
                leases: OnceCell::new(),
                leaders: OnceCell::new(),
                reasons: OnceCell::new(),
            }),
        })
    }

    /// The underlying NATS client; it does not leave the crate.
    pub(crate) fn raw_client(&self) -> &async_nats::Client {
        &self.inner.client
    }

    /// Publishes `payload` with `headers` on the plain NATS subject `subject` (no stream, no
    /// acknowledgement) and flushes it to the server: for messages Railyard hands to other
    /// tools, such as the CDEvents it emits. `subject` may not start with `railyard.events.`
    /// nor hold wildcards.
    pub async fn publish_plain(
        &self,
        subject: &str,
        headers: &[(String, String)],
        payload: bytes::Bytes,
    ) -> Result<(), BusError> {
        self.check_plain_subject(subject)?;
        let mut map = async_nats::HeaderMap::new();
        for (name, value) in headers {
            map.insert(name.as_str(), value.as_str());
        }
        let operation = || format!("publishing to {subject}");
        self.inner
            .client
            .publish_with_headers(subject.to_owned(), map, payload)
            .await
            .map_err(|error| self.nats_error(operation(), error))?;
        self.inner
            .client
            .flush()
            .await
            .map_err(|error| self.nats_error(operation(), error))
    }

    /// Refuses a subject that is empty, inside `railyard.events.` or holds wildcards.
    pub(crate) fn check_plain_subject(&self, subject: &str) -> Result<(), BusError> {
        let valid = !subject.is_empty()
            && !subject.starts_with(crate::names::EVENTS_PREFIX)
            && subject.split('.').all(|token| {
                !token.is_empty()
                    && !token
                        .chars()
                        .any(|c| c.is_whitespace() || c == '*' || c == '>')
            });
        if valid {
            Ok(())
        } else {
            Err(BusError::InvalidName {
                what: "plain subject",
                value: subject.to_owned(),
                rule: "dot-separated tokens without spaces or wildcards, outside railyard.events.",
            })
        }
    }

    /// The configuration it was connected with.
    pub fn config(&self) -> &BusConfig {
        &self.inner.config
    }

    /// Flushes what was published and closes the connection; consumers then end with `None`.
    pub async fn close(&self) -> Result<(), BusError> {
        self.inner.closed.store(true, Ordering::SeqCst);
        self.inner
            .client
            .drain()
            .await
            .map_err(|error| self.nats_error("draining the connection", error))
    }

    /// The sequence of the last message in `RAILYARD_EVENTS` (0 when empty): a projection
    /// rebuilt with [`Bus::replay`] has caught up once it has seen this sequence.
    pub async fn stream_last_sequence(&self) -> Result<u64, BusError> {
        let info = self.stream_info(EVENTS_STREAM).await?;
        Ok(info.state.last_sequence)
    }

    /// `RAILYARD_EVENTS`'s configuration and state as the server reports them (replicas,
    /// cluster leader, sequences), for operators' checks and tests.
    pub async fn events_stream_info(
        &self,
    ) -> Result<async_nats::jetstream::stream::Info, BusError> {
        self.stream_info(EVENTS_STREAM).await
    }

    /// A stream's info, with a missing stream reported as missing topology.
    pub(crate) async fn stream_info(
        &self,
        stream: &str,
    ) -> Result<jetstream::stream::Info, BusError> {
        let handle = self
            .inner
            .js
            .get_stream_no_info(stream)
            .await
            .map_err(|error| self.nats_error(format!("looking up stream {stream}"), error))?;
        match handle.get_info().await {
            Ok(info) => Ok(info),
            Err(error) => {
                if is_stream_not_found(&error) {
                    Err(BusError::MissingTopology {
                        what: format!("stream {stream}"),
                    })
                } else {
                    Err(self.nats_error(format!("reading the info of stream {stream}"), error))
                }
            }
        }
    }

    /// Whether [`Bus::close`] was called (on any clone).
    pub(crate) fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::SeqCst)
    }

    pub(crate) fn timeout(&self) -> Duration {
        self.inner.config.request_timeout
    }

    pub(crate) fn nats_error(
        &self,
        operation: impl Into<String>,
        source: impl Into<crate::error::BoxError>,
    ) -> BusError {
        BusError::nats(operation, self.timeout(), source)
    }

    pub(crate) async fn deliveries_bucket(&self) -> Result<&kv::Store, BusError> {
        self.bucket(&self.inner.deliveries, DELIVERIES_BUCKET).await
    }

    pub(crate) async fn leases_bucket(&self) -> Result<&kv::Store, BusError> {
        self.bucket(&self.inner.leases, LEASES_BUCKET).await
    }

    pub(crate) async fn leaders_bucket(&self) -> Result<&kv::Store, BusError> {
        self.bucket(&self.inner.leaders, LEADERS_BUCKET).await
    }

    pub(crate) async fn reasons_bucket(&self) -> Result<&kv::Store, BusError> {
        self.bucket(&self.inner.reasons, DLQ_REASONS_BUCKET).await
    }

    async fn bucket<'a>(
        &'a self,
        cell: &'a OnceCell<kv::Store>,
        bucket: &'static str,
    ) -> Result<&'a kv::Store, BusError> {
        cell.get_or_try_init(|| async {
            self.inner.js.get_key_value(bucket).await.map_err(|error| {
                if is_stream_not_found(&error) {
                    BusError::MissingTopology {
                        what: format!("key-value bucket {bucket}"),
                    }
                } else {
                    self.nats_error(format!("opening key-value bucket {bucket}"), error)
                }
            })
        })
        .await
    }
}

/// `url` with any password replaced by `***`, for logs and errors.
pub(crate) fn redact_url(url: &str) -> String {
    url.split(',')
        .map(|address| {
            let (scheme, rest) = address.split_once("://").unwrap_or(("", address));
            let rest = match rest.split_once('@') {
                Some((user_info, host)) => match user_info.split_once(':') {
                    Some((user, _password)) => format!("{user}:***@{host}"),
                    None => format!("{user_info}@{host}"),
                },
                None => rest.to_owned(),
            };
            if scheme.is_empty() {
                rest
            } else {
                format!("{scheme}://{rest}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Reconnect pause: 50ms doubling per attempt, at most `max`.
fn reconnect_delay(attempts: usize, max: Duration) -> Duration {
    let exponent = u32::try_from(attempts.min(16)).unwrap_or(16);
    Duration::from_millis(50)
        .saturating_mul(2u32.saturating_pow(exponent))
        .min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_urls_are_redacted() {
        assert_eq!(
            redact_url("nats://planner:s3cret@nats-1:4222, nats://nats-2:4222"),
            "nats://planner:***@nats-1:4222, nats://nats-2:4222"
        );
        assert_eq!(redact_url("127.0.0.1:4222"), "127.0.0.1:4222");
    }

    #[test]
    fn reconnect_delay_grows_to_the_maximum() {
        let max = Duration::from_secs(2);
        assert_eq!(reconnect_delay(0, max), Duration::from_millis(50));
        assert_eq!(reconnect_delay(2, max), Duration::from_millis(200));
        assert_eq!(reconnect_delay(50, max), max);
    }
}

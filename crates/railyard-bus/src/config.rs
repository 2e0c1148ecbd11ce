//! [`BusConfig`]: every limit, window and wait the bus uses, so tests can run redelivery,
//! backoff and dead-lettering in milliseconds (INTERFACES §10).

use std::path::PathBuf;
use std::time::Duration;

use railyard_core::{SharedClock, SystemClock};

use crate::error::BusError;

/// How the bus sets up and uses JetStream.
#[derive(Debug, Clone)]
pub struct BusConfig {
    /// Whether [`crate::Bus::ensure_topology`] may create and update streams and buckets
    /// (`railyard admin init`, `railyard dev`, tests). When `false` it only checks that they
    /// exist: a service running as a least-privilege NATS user neither can nor should change
    /// them (it would also reset the replicas of a cluster's streams to its own setting).
    pub manage_topology: bool,
    /// The NATS user and password to connect as; `None` connects as the URL says (a
    /// `nats://user:password@host:port` URL also works) or anonymously.
    pub credentials: Option<NatsCredentials>,
    /// A PEM file of the CA certificate(s) that signed the NATS servers' certificates (a
    /// private CA), trusted besides the system's roots; setting it also requires TLS.
    pub tls_ca: Option<PathBuf>,
    /// Refuse to talk to a server that does not use TLS, before sending it any credentials
    /// (a `tls://` URL requires it too; otherwise TLS is used when the server requires it).
    pub require_tls: bool,
    /// Replicas of `RAILYARD_EVENTS` (3 in a production cluster).
    pub event_stream_replicas: usize,
    /// Replicas of every other stream and KV bucket.
    pub replicas: usize,
    /// Window in which a repeated `Nats-Msg-Id` is recognised as a duplicate (events and work).
    pub dedupe_window: Duration,
    /// How often a message is delivered to a durable consumer before it is dead-lettered.
    pub max_deliver: i64,
    /// How long a first delivery may stay unacknowledged before it counts as lost and is
    /// delivered again.
    pub ack_wait: Duration,
    /// Redelivery backoff: after the n-th failed attempt (nak) the message waits `backoff[n-1]`
    /// (the last value repeats); a lost delivery (no ack) gets `ack_wait + backoff[n-1]` on its
    /// next attempt.
    pub backoff: Vec<Duration>,
    /// Size of `RAILYARD_DLQ` in messages; when full, forwarding stops (loudly) instead of
    /// dropping old dead letters.
    pub dlq_max_messages: i64,
    /// Window in which two forwarders copying the same dead letter store it once.
    pub dlq_dedupe_window: Duration,
    /// Size of the rejection log in messages (oldest are dropped).
    pub rejected_max_messages: i64,
    /// Size of the rejection log in bytes (oldest are dropped).
    pub rejected_max_bytes: i64,
    /// How long external delivery ids are remembered (`railyard-deliveries`).
    pub delivery_ttl: Duration,
    /// Lease time to live (`railyard-leases`); a holder renews well before it ends.
    pub lease_ttl: Duration,
    /// How long max-deliveries advisories and nak reasons are kept for the dead-letter forwarder.
    pub advisory_max_age: Duration,
    /// Bound on every request to the server: API calls, publish acks, double acks, direct gets.
    pub request_timeout: Duration,
    /// Bound on one `append`, retries across a reconnect included.
    pub append_timeout: Duration,
    /// Messages a consumer pulls ahead of the one being handled.
    pub consumer_batch: usize,
    /// How long one pull request waits on the server.
    pub pull_expires: Duration,
    /// Heartbeat the server sends on an idle pull; two missed ones mean the pull is lost.
    pub idle_heartbeat: Duration,
    /// How long a consumer keeps retrying a failing pull before `next` returns the error.
    pub consumer_error_budget: Duration,
    /// Longest pause between reconnect attempts.
    pub reconnect_max_delay: Duration,
    /// Client connection name shown in the server's monitoring.
    pub connection_name: String,
    /// The clock lease expiry is read from.
    pub clock: SharedClock,
}

impl Default for BusConfig {
    fn default() -> BusConfig {
        BusConfig {
            manage_topology: true,
            credentials: None,
            tls_ca: None,
            require_tls: false,
            event_stream_replicas: 1,
            replicas: 1,
            dedupe_window: Duration::from_secs(120),
            max_deliver: 5,
            ack_wait: Duration::from_secs(30),
            backoff: vec![
                Duration::from_secs(1),
                Duration::from_secs(5),
                Duration::from_secs(30),
            ],
            dlq_max_messages: 100_000,
            dlq_dedupe_window: Duration::from_secs(24 * 60 * 60),
            rejected_max_messages: 100_000,
            rejected_max_bytes: 256 * 1024 * 1024,
            delivery_ttl: Duration::from_secs(7 * 24 * 60 * 60),
            lease_ttl: Duration::from_secs(30),
            advisory_max_age: Duration::from_secs(7 * 24 * 60 * 60),
            request_timeout: Duration::from_secs(10),
            append_timeout: Duration::from_secs(30),
            consumer_batch: 64,
            pull_expires: Duration::from_secs(30),
            idle_heartbeat: Duration::from_secs(5),
            consumer_error_budget: Duration::from_secs(60),
            reconnect_max_delay: Duration::from_secs(2),
            connection_name: "railyard".to_owned(),
            clock: SystemClock::shared(),
        }
    }
}

/// A NATS user and its password (the password never appears in `Debug` output).
#[derive(Clone, PartialEq, Eq)]
pub struct NatsCredentials {
    /// The NATS user (`intake`, `planner`, … in `deploy/nats/accounts.conf`).
    pub user: String,
    /// Its password.
    pub password: String,
}

impl std::fmt::Debug for NatsCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsCredentials")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl BusConfig {
    /// Checks the values JetStream would refuse, with the field to fix.
    pub fn validate(&self) -> Result<(), BusError> {
        let invalid = |field: &'static str, problem: &str| {
            Err(BusError::Config {
                field,
                problem: problem.to_owned(),
            })
        };
        if !(1..=5).contains(&self.event_stream_replicas) {
            return invalid("event_stream_replicas", "must be between 1 and 5");
        }
        if !(1..=5).contains(&self.replicas) {
            return invalid("replicas", "must be between 1 and 5");
        }
        if self.max_deliver == 0 || self.max_deliver < -1 {
            return invalid("max_deliver", "must be at least 1 (or -1 for unlimited)");
        }
        for (field, value) in [
            ("ack_wait", self.ack_wait),
            ("dedupe_window", self.dedupe_window),
            ("dlq_dedupe_window", self.dlq_dedupe_window),
            ("delivery_ttl", self.delivery_ttl),
            ("lease_ttl", self.lease_ttl),
            ("advisory_max_age", self.advisory_max_age),
            ("request_timeout", self.request_timeout),
            ("append_timeout", self.append_timeout),
            ("pull_expires", self.pull_expires),
            ("idle_heartbeat", self.idle_heartbeat),
        ] {
            if value.is_zero() {
                return invalid(field, "must be longer than zero");
            }
        }
        if self.idle_heartbeat * 2 > self.pull_expires {
            return invalid("idle_heartbeat", "must be at most half of pull_expires");
        }
        if self.consumer_batch == 0 {
            return invalid("consumer_batch", "must be at least 1");
        }
        if self.dlq_max_messages < 1 || self.rejected_max_messages < 1 {
            return invalid(
                "dlq_max_messages/rejected_max_messages",
                "must be at least 1",
            );
        }
        Ok(())
    }

    /// The delay before redelivering after a nak of delivery `delivered` (1 for the first).
    pub fn nak_delay(&self, delivered: u64) -> Option<Duration> {
        let index = usize::try_from(delivered.saturating_sub(1)).unwrap_or(usize::MAX);
        self.backoff
            .get(index)
            .or_else(|| self.backoff.last())
            .copied()
    }

    /// The consumer `backoff` list (ack wait per delivery): `ack_wait` for the first delivery,
    /// then `ack_wait + backoff[n-1]`; JetStream wants fewer entries than `max_deliver`.
    pub fn consumer_backoff(&self) -> Vec<Duration> {
        if self.backoff.is_empty() {
            return Vec::new();
        }
        let limit = if self.max_deliver > 0 {
            usize::try_from(self.max_deliver - 1).unwrap_or(usize::MAX)
        } else {
            usize::MAX
        };
        std::iter::once(self.ack_wait)
            .chain(self.backoff.iter().map(|backoff| self.ack_wait + *backoff))
            .take(limit)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(values: &[u64]) -> Vec<Duration> {
        values
            .iter()
            .map(|value| Duration::from_millis(*value))
            .collect()
    }

    #[test]
    fn defaults_are_valid_and_match_the_brief() {
        let config = BusConfig::default();
        config.validate().unwrap();
        assert_eq!(config.ack_wait, Duration::from_secs(30));
        assert_eq!(config.max_deliver, 5);
        assert_eq!(config.dedupe_window, Duration::from_secs(120));
        assert_eq!(config.backoff, ms(&[1000, 5000, 30000]));
    }

    #[test]
    fn nak_delay_follows_backoff_and_repeats_the_last_value() {
        let config = BusConfig {
            backoff: ms(&[10, 20]),
            ..BusConfig::default()
        };
        assert_eq!(config.nak_delay(1), Some(Duration::from_millis(10)));
        assert_eq!(config.nak_delay(2), Some(Duration::from_millis(20)));
        assert_eq!(config.nak_delay(9), Some(Duration::from_millis(20)));
        let no_backoff = BusConfig {
            backoff: Vec::new(),
            ..BusConfig::default()
        };
        assert_eq!(no_backoff.nak_delay(1), None);
    }

    #[test]
    fn consumer_backoff_starts_at_ack_wait_and_stays_below_max_deliver() {
        let config = BusConfig {
            ack_wait: Duration::from_millis(100),
            backoff: ms(&[10, 20, 30, 40]),
            max_deliver: 3,
            ..BusConfig::default()
        };
        assert_eq!(config.consumer_backoff(), ms(&[100, 110]));
        let unlimited = BusConfig {
            max_deliver: -1,
            ..config.clone()
        };
        assert_eq!(unlimited.consumer_backoff(), ms(&[100, 110, 120, 130, 140]));
        let single = BusConfig {
            max_deliver: 1,
            ..config
        };
        assert!(single.consumer_backoff().is_empty());
    }

    #[test]
    fn credentials_never_show_the_password() {
        let config = BusConfig {
            credentials: Some(NatsCredentials {
                user: "planner".to_owned(),
                password: "s3cret".to_owned(),
            }),
            ..BusConfig::default()
        };
        let shown = format!("{config:?}");
        assert!(shown.contains("planner"), "{shown}");
        assert!(!shown.contains("s3cret"), "{shown}");
    }

    #[test]
    fn invalid_values_name_the_field() {
        let error = BusConfig {
            max_deliver: 0,
            ..BusConfig::default()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(error.contains("max_deliver"), "{error}");
        let error = BusConfig {
            idle_heartbeat: Duration::from_secs(20),
            ..BusConfig::default()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(error.contains("idle_heartbeat"), "{error}");
    }
}

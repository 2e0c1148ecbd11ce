//! `ensure_topology`: creates or updates every stream and KV bucket the bus uses (twice or
//! concurrently with other processes is fine), or, for services running as least-privilege
//! NATS users, `check_topology`: only checks that they exist.

use std::time::Duration;

use async_nats::jetstream::context::CreateStreamErrorKind;
use async_nats::jetstream::{kv, stream};

use crate::bus::Bus;
use crate::error::{BoxError, BusError};
use crate::names::{
    ADVISORIES_STREAM, DELIVERIES_BUCKET, DLQ_PREFIX, DLQ_REASONS_BUCKET, DLQ_STREAM,
    EVENTS_PREFIX, EVENTS_STREAM, LEADERS_BUCKET, LEASES_BUCKET, MAX_DELIVERIES_ADVISORY,
    REJECTED_PREFIX, REJECTED_STREAM, WORK_PREFIX, WORK_STREAM,
};

/// JetStream's "stream name already in use with a different configuration".
const STREAM_NAME_EXISTS: u64 = 10058;
/// Attempts when a concurrent process creates or deletes a stream between two requests.
const ATTEMPTS: usize = 5;

impl Bus {
    /// Creates every stream and bucket the bus uses, or updates them to this configuration:
    /// `RAILYARD_EVENTS` (`railyard.events.>`, limits, file, deletes and purges denied),
    /// `RAILYARD_WORK` (work queue, `railyard.work.>`), `RAILYARD_DLQ` (`railyard.dlq.>`),
    /// `RAILYARD_REJECTED` (`railyard.rejected.>`, size-limited), `RAILYARD_ADVISORIES` (the
    /// max-deliveries advisories the dead-letter forwarder reads) and the KV buckets
    /// `railyard-deliveries`, `railyard-leases`, `railyard-dlq-reasons` and `railyard-leaders`.
    ///
    /// Idempotent: calling it twice, or from several processes at once, succeeds.
    ///
    /// With `manage_topology` off (services running as least-privilege NATS users) it only
    /// checks that every stream and bucket exists, see [`Bus::check_topology`].
    pub async fn ensure_topology(&self) -> Result<(), BusError> {
        if !self.config().manage_topology {
            return self.check_topology().await;
        }
        let streams = self.stream_configs();
        futures::future::try_join_all(streams.into_iter().map(|config| self.ensure_stream(config)))
            .await?;
        let buckets = self.bucket_configs();
        futures::future::try_join_all(buckets.into_iter().map(|config| self.ensure_bucket(config)))
            .await?;
        tracing::debug!("nats topology is in place");
        Ok(())
    }

    /// Checks that every stream and bucket [`Bus::ensure_topology`] would create exists,
    /// reading only their info (`$JS.API.STREAM.INFO.<stream>`), so it needs no right to create
    /// or change anything. A missing one is [`BusError::MissingTopology`].
    pub async fn check_topology(&self) -> Result<(), BusError> {
        let streams = self
            .stream_configs()
            .into_iter()
            .map(|config| config.name)
            .chain(
                self.bucket_configs()
                    .into_iter()
                    .map(|config| format!("KV_{}", config.bucket)),
            );
        for stream in streams {
            self.stream_info(&stream).await?;
        }
        tracing::debug!("nats topology is in place (checked, not changed)");
        Ok(())
    }

    fn stream_configs(&self) -> Vec<stream::Config> {
        let config = self.config();
        vec![
            stream::Config {
                name: EVENTS_STREAM.to_owned(),
                description: Some("Railyard's event store: one subject per aggregate".to_owned()),
                subjects: vec![format!("{EVENTS_PREFIX}>")],
                retention: stream::RetentionPolicy::Limits,
                storage: stream::StorageType::File,
                num_replicas: config.event_stream_replicas,
                duplicate_window: config.dedupe_window,
                allow_direct: true,
                deny_delete: true,
                deny_purge: true,
                ..Default::default()
            },
            stream::Config {
                name: WORK_STREAM.to_owned(),
                description: Some("Work items for promotion workers".to_owned()),
                subjects: vec![format!("{WORK_PREFIX}>")],
                retention: stream::RetentionPolicy::WorkQueue,
                storage: stream::StorageType::File,
                num_replicas: config.replicas,
                duplicate_window: config.dedupe_window,
                allow_direct: true,
                ..Default::default()
            },
            stream::Config {
                name: DLQ_STREAM.to_owned(),
                description: Some("Messages a consumer gave up on, with the reason".to_owned()),
                subjects: vec![format!("{DLQ_PREFIX}>")],
                retention: stream::RetentionPolicy::Limits,
                storage: stream::StorageType::File,
                num_replicas: config.replicas,
                max_messages: config.dlq_max_messages,
                // Full means forwarding stops and says so; old dead letters are never dropped.
                discard: stream::DiscardPolicy::New,
                duplicate_window: config.dlq_dedupe_window,
                allow_direct: true,
                ..Default::default()
            },
            stream::Config {
                name: REJECTED_STREAM.to_owned(),
                description: Some("Refused inputs, with why and from where".to_owned()),
                subjects: vec![format!("{REJECTED_PREFIX}>")],
                retention: stream::RetentionPolicy::Limits,
                storage: stream::StorageType::File,
                num_replicas: config.replicas,
                max_messages: config.rejected_max_messages,
                max_bytes: config.rejected_max_bytes,
                discard: stream::DiscardPolicy::Old,
                allow_direct: true,
                ..Default::default()
            },
            stream::Config {
                name: ADVISORIES_STREAM.to_owned(),
                description: Some(
                    "Max-deliveries advisories, kept until the dead-letter forwarder copies them"
                        .to_owned(),
                ),
                subjects: [EVENTS_STREAM, WORK_STREAM]
                    .iter()
                    .map(|stream| format!("{MAX_DELIVERIES_ADVISORY}.{stream}.*"))
                    .collect(),
                retention: stream::RetentionPolicy::Limits,
                storage: stream::StorageType::File,
                num_replicas: config.replicas,
                max_age: config.advisory_max_age,
                allow_direct: true,
                ..Default::default()
            },
        ]
    }

    fn bucket_configs(&self) -> Vec<kv::Config> {
        let config = self.config();
        let bucket = |name: &str, description: &str, max_age: Duration| kv::Config {
            bucket: name.to_owned(),
            description: description.to_owned(),
            history: 1,
            max_age,
            storage: stream::StorageType::File,
            num_replicas: config.replicas,
            ..Default::default()
        };
        vec![
            bucket(
                DELIVERIES_BUCKET,
                "External delivery ids already seen (GitHub, GitLab, CDEvents)",
                config.delivery_ttl,
            ),
            bucket(
                LEASES_BUCKET,
                "Step leases held by promotion workers",
                config.lease_ttl,
            ),
            bucket(
                DLQ_REASONS_BUCKET,
                "The last nak reason of each delivery, for dead letters",
                config.advisory_max_age,
            ),
            // No max age: a lease ends by the deadline it stores, read through the clock, and
            // what a leader hands over must outlive any pause.
            bucket(
                LEADERS_BUCKET,
                "Leader leases of replicated services and what a leader hands to its standbys",
                Duration::ZERO,
            ),
        ]
    }

    async fn ensure_stream(&self, config: stream::Config) -> Result<(), BusError> {
        let name = config.name.clone();
        for _ in 0..ATTEMPTS {
            let error = match self.inner.js.create_stream(config.clone()).await {
                Ok(_) => return Ok(()),
                Err(error) => error,
            };
            let exists = matches!(
                error.kind(),
                CreateStreamErrorKind::JetStream(ref jetstream) if jetstream.error_code().0 == STREAM_NAME_EXISTS
            );
            if !exists {
                return Err(self.nats_error(format!("creating stream {name}"), error));
            }
            match self.inner.js.update_stream(&config).await {
                Ok(_) => return Ok(()),
                // Deleted between our create and update: create it again.
                Err(error) if error.kind() == CreateStreamErrorKind::NotFound => continue,
                Err(error) => {
                    return Err(self.nats_error(
                        format!(
                            "updating stream {name} to this version's configuration (if a \
                             setting cannot change, e.g. retention or storage, move the data and \
                             delete the stream)"
                        ),
                        error,
                    ));
                }
            }
        }
        Err(BusError::Nats {
            operation: format!("creating stream {name}"),
            source: "another process kept deleting it while it was being created".into(),
        })
    }

    async fn ensure_bucket(&self, config: kv::Config) -> Result<(), BusError> {
        let name = config.bucket.clone();
        let mut last_error = None;
        for _ in 0..ATTEMPTS {
            // create-or-update races with another process doing the same: its update finds
            // nothing, both create; the loser's create then fails and the retry updates.
            match self
                .inner
                .js
                .create_or_update_key_value(config.clone())
                .await
            {
                Ok(_) => return Ok(()),
                Err(error) => last_error = Some(error),
            }
        }
        Err(self.nats_error(
            format!("creating key-value bucket {name}"),
            last_error.map_or_else(
                || BoxError::from("no attempt was made"),
                |error| BoxError::from(error),
            ),
        ))
    }
}

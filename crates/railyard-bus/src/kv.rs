//! The KV buckets behind intake dedupe and step leases: external delivery ids remembered for
//! `delivery_ttl` (`railyard-deliveries`), and leases with an expiry read from the bus's clock,
//! taken over by compare-and-set once expired (`railyard-leases`, whose TTL also removes
//! abandoned ones).

use async_nats::jetstream::kv::{CreateErrorKind, Operation, UpdateErrorKind};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::bus::Bus;
use crate::error::BusError;
use crate::names::kv_key;

/// Attempts at acquiring a lease while its entry changes under us.
const LEASE_ATTEMPTS: usize = 5;

impl Bus {
    /// Remembers an external delivery id (GitHub `X-GitHub-Delivery`, a CDEvents source+id);
    /// `true` the first time, `false` when it was seen within `delivery_ttl` (a duplicate).
    /// Atomic: of two intakes racing on one id, exactly one gets `true`.
    pub async fn remember_delivery(&self, id: &str) -> Result<bool, BusError> {
        let bucket = self.deliveries_bucket().await?;
        let seen_at = Utc::now().to_rfc3339();
        match bucket.create(kv_key(id), Bytes::from(seen_at)).await {
            Ok(_) => Ok(true),
            Err(error) if error.kind() == CreateErrorKind::AlreadyExists => Ok(false),
            Err(error) => Err(self.nats_error(format!("remembering delivery {id:?}"), error)),
        }
    }

    /// Forgets a delivery id, so the same delivery is accepted again (for an intake whose
    /// append failed after it remembered the id).
    pub async fn forget_delivery(&self, id: &str) -> Result<(), BusError> {
        self.deliveries_bucket()
            .await?
            .purge(kv_key(id))
            .await
            .map_err(|error| self.nats_error(format!("forgetting delivery {id:?}"), error))
    }

    /// Takes the lease `key` for `holder` until `now + lease_ttl` on the bus's clock: when it
    /// is free, expired, or already `holder`'s. `None` when someone else holds it.
    pub async fn acquire_lease(&self, key: &str, holder: &str) -> Result<Option<Lease>, BusError> {
        let bucket = self.leases_bucket().await?;
        let encoded = kv_key(key);
        for _ in 0..LEASE_ATTEMPTS {
            let record = LeaseRecord::new(self, holder);
            let value = record.to_bytes();
            let error = match bucket.create(&encoded, value.clone()).await {
                Ok(revision) => return Ok(Some(Lease::new(self, key, encoded, record, revision))),
                Err(error) => error,
            };
            if error.kind() != CreateErrorKind::AlreadyExists {
                return Err(self.nats_error(format!("acquiring lease {key}"), error));
            }
            let entry = bucket
                .entry(&encoded)
                .await
                .map_err(|error| self.nats_error(format!("reading lease {key}"), error))?;
            let Some(entry) = entry.filter(|entry| entry.operation == Operation::Put) else {
                // Released or expired in between: try creating it again.
                continue;
            };
            if let Ok(current) = serde_json::from_slice::<LeaseRecord>(&entry.value) {
                if current.holder != holder && current.expires_at > self.config().clock.now() {
                    return Ok(None);
                }
            }
            match bucket.update(&encoded, value, entry.revision).await {
                Ok(revision) => return Ok(Some(Lease::new(self, key, encoded, record, revision))),
                // Someone else took it over first: look again.
                Err(error) if error.kind() == UpdateErrorKind::WrongLastRevision => continue,
                Err(error) => {
                    return Err(self.nats_error(format!("taking over lease {key}"), error));
                }
            }
        }
        Ok(None)
    }

    /// Who holds lease `key` now, if anyone (an expired lease counts as free).
    pub async fn lease_holder(&self, key: &str) -> Result<Option<LeaseRecord>, BusError> {
        let entry = self
            .leases_bucket()
            .await?
            .entry(kv_key(key))
            .await
            .map_err(|error| self.nats_error(format!("reading lease {key}"), error))?;
        let now = self.config().clock.now();
        Ok(entry
            .filter(|entry| entry.operation == Operation::Put)
            .and_then(|entry| serde_json::from_slice::<LeaseRecord>(&entry.value).ok())
            .filter(|record| record.expires_at > now))
    }
}

/// Who holds a lease and until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// The worker holding it.
    pub holder: String,
    /// When it was taken or last renewed.
    pub renewed_at: DateTime<Utc>,
    /// When it ends unless renewed.
    pub expires_at: DateTime<Utc>,
}

impl LeaseRecord {
    fn new(bus: &Bus, holder: &str) -> LeaseRecord {
        let now = bus.config().clock.now();
        let ttl =
            chrono::Duration::from_std(bus.config().lease_ttl).unwrap_or(chrono::Duration::MAX);
        LeaseRecord {
            holder: holder.to_owned(),
            renewed_at: now,
            expires_at: now + ttl,
        }
    }

    fn to_bytes(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }
}

/// A held lease. Renew it well within `lease_ttl`; once renewing fails with
/// [`BusError::LeaseLost`], stop the guarded work.
#[derive(Debug)]
pub struct Lease {
    bus: Bus,
    key: String,
    encoded: String,
    record: LeaseRecord,
    revision: u64,
}

impl Lease {
    fn new(bus: &Bus, key: &str, encoded: String, record: LeaseRecord, revision: u64) -> Lease {
        Lease {
            bus: bus.clone(),
            key: key.to_owned(),
            encoded,
            record,
            revision,
        }
    }

    /// The lease key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Holder and expiry as last written.
    pub fn record(&self) -> &LeaseRecord {
        &self.record
    }

    /// Extends it to `now + lease_ttl`, if nobody took it over.
    pub async fn renew(&mut self) -> Result<(), BusError> {
        let record = LeaseRecord::new(&self.bus, &self.record.holder);
        let bucket = self.bus.leases_bucket().await?;
        match bucket
            .update(&self.encoded, record.to_bytes(), self.revision)
            .await
        {
            Ok(revision) => {
                self.revision = revision;
                self.record = record;
                Ok(())
            }
            Err(error) if error.kind() == UpdateErrorKind::WrongLastRevision => Err(self.lost()),
            Err(error) => Err(self
                .bus
                .nats_error(format!("renewing lease {}", self.key), error)),
        }
    }

    /// Gives it up so another worker can take it at once.
    pub async fn release(self) -> Result<(), BusError> {
        let bucket = self.bus.leases_bucket().await?;
        match bucket
            .delete_expect_revision(&self.encoded, Some(self.revision))
            .await
        {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == UpdateErrorKind::WrongLastRevision => Err(self.lost()),
            Err(error) => Err(self
                .bus
                .nats_error(format!("releasing lease {}", self.key), error)),
        }
    }

    fn lost(&self) -> BusError {
        BusError::LeaseLost {
            key: self.key.clone(),
            holder: self.record.holder.clone(),
        }
    }
}

//! The KV buckets behind intake dedupe and step leases: external delivery ids remembered for
//! `delivery_ttl` (`railyard-deliveries`) — claimed while their events are being appended and
//! marked stored only after — and leases with an expiry read from the bus's clock, taken over
//! by compare-and-set once expired (`railyard-leases`, whose TTL also removes abandoned ones).

use async_nats::jetstream::kv::{self, CreateErrorKind, Operation, UpdateErrorKind};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::bus::Bus;
use crate::error::BusError;
use crate::names::kv_key;

/// Attempts at acquiring a lease while its entry changes under us.
const LEASE_ATTEMPTS: usize = 5;
/// Attempts at claiming a delivery while its entry changes under us.
const CLAIM_ATTEMPTS: usize = 5;

/// A delivery id's entry in `railyard-deliveries`. Entries written by
/// [`Bus::remember_delivery`] (a bare timestamp) read as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
enum DeliveryRecord {
    /// Someone is appending its events.
    Pending {
        holder: String,
        claimed_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    },
    /// Its events are in the stream.
    Stored { stored_at: DateTime<Utc> },
}

impl DeliveryRecord {
    fn read(value: &[u8]) -> DeliveryRecord {
        serde_json::from_slice(value).unwrap_or(DeliveryRecord::Stored {
            stored_at: DateTime::<Utc>::MIN_UTC,
        })
    }

    fn to_bytes(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }
}

/// What [`Bus::claim_delivery`] found.
#[derive(Debug)]
pub enum DeliveryClaim {
    /// The caller holds the delivery now: append its events, then
    /// [`Bus::delivery_stored`]; or, when the append failed, [`Bus::release_delivery`].
    Claimed(ClaimedDelivery),
    /// Its events were stored: a redelivery.
    Stored,
    /// Someone else is appending its events; their claim ends at `expires_at` unless they
    /// settle it first.
    Pending {
        /// Who claimed it.
        holder: String,
        /// When the claim may be taken over.
        expires_at: DateTime<Utc>,
    },
}

/// A delivery id claimed by this caller (see [`Bus::claim_delivery`]).
#[derive(Debug)]
pub struct ClaimedDelivery {
    id: String,
    encoded: String,
    holder: String,
    revision: u64,
}

impl ClaimedDelivery {
    /// The delivery id.
    pub fn id(&self) -> &str {
        &self.id
    }
}

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

    /// Claims delivery `id` for `holder` until `now + ttl`, so that exactly one caller appends
    /// its events: [`DeliveryClaim::Claimed`] when it is new, was released, or its previous
    /// claim expired or is `holder`'s own (taken over by compare-and-set: a holder claims an id
    /// again only once it is no longer storing it); [`DeliveryClaim::Stored`] for a
    /// redelivery; [`DeliveryClaim::Pending`] while someone else holds it. The id counts as
    /// seen only once [`Bus::delivery_stored`] settles the claim, so a caller that fails (or
    /// dies) before its events are stored never makes a retry look like a duplicate.
    pub async fn claim_delivery(
        &self,
        id: &str,
        holder: &str,
        now: DateTime<Utc>,
        ttl: std::time::Duration,
    ) -> Result<DeliveryClaim, BusError> {
        let bucket = self.deliveries_bucket().await?;
        let encoded = kv_key(id);
        let claim = DeliveryRecord::Pending {
            holder: holder.to_owned(),
            claimed_at: now,
            expires_at: now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX),
        };
        let claimed = |revision| {
            DeliveryClaim::Claimed(ClaimedDelivery {
                id: id.to_owned(),
                encoded: encoded.clone(),
                holder: holder.to_owned(),
                revision,
            })
        };
        let operation = || format!("claiming delivery {id:?}");
        let mut last_holder = None;
        for _ in 0..CLAIM_ATTEMPTS {
            if let Some(revision) =
                write_if(self, bucket, &encoded, claim.to_bytes(), None, operation).await?
            {
                return Ok(claimed(revision));
            }
            let entry = bucket
                .entry(&encoded)
                .await
                .map_err(|error| self.nats_error(operation(), error))?;
            let Some(entry) = entry.filter(|entry| entry.operation == Operation::Put) else {
                // Released in between: try creating it again.
                continue;
            };
            match DeliveryRecord::read(&entry.value) {
                DeliveryRecord::Stored { .. } => return Ok(DeliveryClaim::Stored),
                DeliveryRecord::Pending {
                    holder: current,
                    expires_at,
                    ..
                } if expires_at > now && current != holder => {
                    return Ok(DeliveryClaim::Pending {
                        holder: current,
                        expires_at,
                    });
                }
                DeliveryRecord::Pending {
                    holder: current, ..
                } => {
                    tracing::warn!(delivery = id, holder = %current, "taking over an expired delivery claim (or our own, left by a settling that failed)");
                    last_holder = Some(current);
                    // `None`: someone else took it over or settled it first: look again.
                    let written = write_if(
                        self,
                        bucket,
                        &encoded,
                        claim.to_bytes(),
                        Some(entry.revision),
                        operation,
                    )
                    .await?;
                    if let Some(revision) = written {
                        return Ok(claimed(revision));
                    }
                }
            }
        }
        // The entry kept changing under us: someone else is busy with it.
        Ok(DeliveryClaim::Pending {
            holder: last_holder.unwrap_or_else(|| "another caller".to_owned()),
            expires_at: now,
        })
    }

    /// Settles a claim once the delivery's events are stored: from now on (for
    /// `delivery_ttl`) the id is a redelivery. [`BusError::DeliveryClaimLost`] when the claim
    /// expired and someone else took it over.
    pub async fn delivery_stored(
        &self,
        claim: ClaimedDelivery,
        now: DateTime<Utc>,
    ) -> Result<(), BusError> {
        let record = DeliveryRecord::Stored { stored_at: now };
        let bucket = self.deliveries_bucket().await?;
        let operation = || format!("marking delivery {:?} stored", claim.id);
        match write_if(
            self,
            bucket,
            &claim.encoded,
            record.to_bytes(),
            Some(claim.revision),
            operation,
        )
        .await?
        {
            Some(_) => Ok(()),
            None => Err(claim.lost()),
        }
    }

    /// Gives a claim up without storing anything (the append failed), so the delivery's
    /// retry is accepted at once.
    pub async fn release_delivery(&self, claim: ClaimedDelivery) -> Result<(), BusError> {
        let bucket = self.deliveries_bucket().await?;
        let operation = || format!("releasing delivery {:?}", claim.id);
        if delete_if(self, bucket, &claim.encoded, claim.revision, operation).await? {
            Ok(())
        } else {
            Err(claim.lost())
        }
    }

    /// Takes the lease `key` for `holder` until `now + lease_ttl` on the bus's clock: when it
    /// is free, expired, or already `holder`'s. `None` when someone else holds it.
    pub async fn acquire_lease(&self, key: &str, holder: &str) -> Result<Option<Lease>, BusError> {
        let bucket = self.leases_bucket().await?;
        let encoded = kv_key(key);
        for _ in 0..LEASE_ATTEMPTS {
            let record = LeaseRecord::new(self, holder);
            let value = record.to_bytes();
            let operation = || format!("acquiring lease {key}");
            if let Some(revision) =
                write_if(self, bucket, &encoded, value.clone(), None, operation).await?
            {
                return Ok(Some(Lease::new(self, key, encoded, record, revision)));
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
            let operation = || format!("taking over lease {key}");
            // `None`: someone else took it over first: look again.
            if let Some(revision) = write_if(
                self,
                bucket,
                &encoded,
                value,
                Some(entry.revision),
                operation,
            )
            .await?
            {
                return Ok(Some(Lease::new(self, key, encoded, record, revision)));
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

impl ClaimedDelivery {
    fn lost(&self) -> BusError {
        BusError::DeliveryClaimLost {
            id: self.id.clone(),
            holder: self.holder.clone(),
        }
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
        let holder = &self.record.holder;
        let renewed = renew_if(
            &self.bus,
            bucket,
            &self.encoded,
            record.to_bytes(),
            &mut self.revision,
            |value| {
                serde_json::from_slice::<LeaseRecord>(value)
                    .is_ok_and(|current| &current.holder == holder)
            },
            || format!("renewing lease {}", self.key),
        )
        .await?;
        if !renewed {
            return Err(self.lost());
        }
        self.record = record;
        Ok(())
    }

    /// Gives it up so another worker can take it at once.
    pub async fn release(self) -> Result<(), BusError> {
        let bucket = self.bus.leases_bucket().await?;
        let operation = || format!("releasing lease {}", self.key);
        if delete_if(&self.bus, bucket, &self.encoded, self.revision, operation).await? {
            Ok(())
        } else {
            Err(self.lost())
        }
    }

    /// Gives it up without waiting for the answer: one message to NATS, no round trip, for a
    /// holder that has nothing to do with the answer but log it. The delete is conditional on
    /// this holder's revision as [`Lease::release`]'s is, so it never removes a lease another
    /// worker took in the meantime; one lost on the way leaves the lease to expire after
    /// `lease_ttl`, as when its holder dies. A later write of this connection to the bucket
    /// reaches the stream after it (one connection's messages are handled in order), so taking
    /// the key again finds it released; a read may still see it held for a moment. The error is
    /// only a failure to send.
    pub async fn release_unconfirmed(self) -> Result<(), BusError> {
        let bucket = self.bus.leases_bucket().await?;
        if bucket.use_jetstream_prefix {
            // A JetStream domain's API prefix is not ours to build: ask and wait instead.
            return self.release().await;
        }
        let mut subject = String::new();
        subject.push_str(bucket.put_prefix.as_ref().unwrap_or(&bucket.prefix));
        subject.push_str(&self.encoded);
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("KV-Operation", "DEL");
        headers.insert(
            async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
            self.revision.to_string().as_str(),
        );
        self.bus
            .inner
            .client
            .publish_with_headers(subject, headers, Bytes::new())
            .await
            .map_err(|error| {
                self.bus
                    .nats_error(format!("releasing lease {}", self.key), error)
            })
    }

    fn lost(&self) -> BusError {
        BusError::LeaseLost {
            key: self.key.clone(),
            holder: self.record.holder.clone(),
        }
    }
}

/// A compare-and-set write: creates `key` when `revision` is `None`, otherwise replaces it if
/// it is still at `revision`. `Ok(None)` when another writer got there first (the key exists,
/// or moved past `revision`); the new revision otherwise. Every claim, lease and handoff of
/// the bus writes through this, so a lost race reads the same everywhere.
pub(crate) async fn write_if(
    bus: &Bus,
    bucket: &kv::Store,
    key: &str,
    value: Bytes,
    revision: Option<u64>,
    operation: impl FnOnce() -> String,
) -> Result<Option<u64>, BusError> {
    match revision {
        Some(revision) => match bucket.update(key, value, revision).await {
            Ok(revision) => Ok(Some(revision)),
            Err(error) if error.kind() == UpdateErrorKind::WrongLastRevision => Ok(None),
            Err(error) => Err(bus.nats_error(operation(), error)),
        },
        None => match bucket.create(key, value).await {
            Ok(revision) => Ok(Some(revision)),
            Err(error) if error.kind() == CreateErrorKind::AlreadyExists => Ok(None),
            Err(error) => Err(bus.nats_error(operation(), error)),
        },
    }
}

/// Renews a record this holder keeps at `*revision` with `value`; `false` when another holder
/// wrote it meanwhile. When the revision moved on, an earlier renewal whose answer was lost
/// (NATS applied it, then a node went down before the reply came back) may be what moved it:
/// the key is read, and when `ours` says the record there is still this holder's, its revision
/// is taken and the write tried once more on top of it. Without this, one lost reply during a
/// node loss made a living holder give up its lease, and another worker re-run its step.
pub(crate) async fn renew_if(
    bus: &Bus,
    bucket: &kv::Store,
    key: &str,
    value: Bytes,
    revision: &mut u64,
    ours: impl Fn(&[u8]) -> bool,
    operation: impl Fn() -> String,
) -> Result<bool, BusError> {
    if let Some(written) =
        write_if(bus, bucket, key, value.clone(), Some(*revision), &operation).await?
    {
        *revision = written;
        return Ok(true);
    }
    let entry = bucket
        .entry(key)
        .await
        .map_err(|error| bus.nats_error(operation(), error))?;
    let Some(entry) = entry.filter(|entry| entry.operation == Operation::Put && ours(&entry.value))
    else {
        return Ok(false);
    };
    match write_if(bus, bucket, key, value, Some(entry.revision), &operation).await? {
        Some(written) => {
            *revision = written;
            Ok(true)
        }
        None => Ok(false),
    }
}

/// Deletes `key` if it is still at `revision`: `false` when another writer changed it first.
pub(crate) async fn delete_if(
    bus: &Bus,
    bucket: &kv::Store,
    key: &str,
    revision: u64,
    operation: impl FnOnce() -> String,
) -> Result<bool, BusError> {
    match bucket.delete_expect_revision(key, Some(revision)).await {
        Ok(()) => Ok(true),
        Err(error) if error.kind() == UpdateErrorKind::WrongLastRevision => Ok(false),
        Err(error) => Err(bus.nats_error(operation(), error)),
    }
}

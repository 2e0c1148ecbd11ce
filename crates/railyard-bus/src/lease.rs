//! Leader leases: a service that must act once (the planner's decisions, the notifier's Slack
//! calls, the audit sealer's checkpoints) runs as several replicas, one leading and the others
//! standing by hot. The lease of a role is the key `lease.<role>` in the `railyard-leaders`
//! bucket, only ever written by compare-and-set (create, or update at the revision read). It
//! holds who leads, since when (its term) and a deadline on the leader's clock; the leader
//! renews it every `ttl / 3`, a standby sleeps on its own clock until that deadline and then
//! takes the lease over at the revision it read, unless it was renewed meanwhile. No wait here
//! runs on the server's time: the bucket has no max age, so a test's clock decides expiry.
//!
//! The same bucket carries what a leader hands to its standbys (`handoff.<name>`, written
//! with compare-and-set too): the notifier's progress, so a new leader resumes where the old
//! one stopped.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv::Operation;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use futures::stream::BoxStream;
use railyard_core::SharedClock;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::bus::Bus;
use crate::error::BusError;
use crate::kv::{delete_if, renew_if, write_if};
use crate::names::kv_key;

/// Attempts at campaigning while the lease changes under us.
const ATTEMPTS: usize = 5;

/// The default time a leader lease lasts without renewal: a standby takes over within it.
pub const DEFAULT_LEADER_TTL: Duration = Duration::from_secs(10);

/// How one replica campaigns for the lease of a role.
#[derive(Clone)]
pub struct LeaderConfig {
    /// The role led (`planner`, `notify`, `audit-sealer`): the lease is `lease.<role>`.
    pub role: String,
    /// This replica's name, unique among the role's replicas ([`default_replica_id`]).
    pub replica: String,
    /// How long the lease lasts without renewal; renewed every third of it.
    pub ttl: Duration,
    /// Every wait and every deadline is read through it.
    pub clock: SharedClock,
    /// Told `true` when this replica starts leading and `false` when it stops (a gauge).
    pub on_change: Option<Arc<dyn Fn(bool) + Send + Sync>>,
}

impl std::fmt::Debug for LeaderConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaderConfig")
            .field("role", &self.role)
            .field("replica", &self.replica)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl LeaderConfig {
    /// Campaigns for `role` as [`default_replica_id`] with [`DEFAULT_LEADER_TTL`].
    pub fn new(role: impl Into<String>, clock: SharedClock) -> LeaderConfig {
        LeaderConfig {
            role: role.into(),
            replica: default_replica_id(),
            ttl: DEFAULT_LEADER_TTL,
            clock,
            on_change: None,
        }
    }

    /// The same campaign for another role (e.g. the audit sealer of an audit replica).
    pub fn for_role(&self, role: impl Into<String>) -> LeaderConfig {
        LeaderConfig {
            role: role.into(),
            ..self.clone()
        }
    }

    fn key(&self) -> String {
        lease_key(&self.role)
    }

    fn renew_every(&self) -> Duration {
        (self.ttl / 3).max(Duration::from_millis(1))
    }
}

/// `<hostname>-<pid>`: unique per process on a host, and telling in logs.
pub fn default_replica_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|host| !host.trim().is_empty())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|host| host.trim().to_owned())
        .filter(|host| !host.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    format!("{host}-{}", std::process::id())
}

fn lease_key(role: &str) -> String {
    format!("lease.{}", kv_key(role))
}

fn handoff_key(name: &str) -> String {
    format!("handoff.{}", kv_key(name))
}

/// What the lease of a role holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderRecord {
    /// The replica leading.
    pub holder: String,
    /// Counts the changes of leader since the lease was first taken.
    pub term: u64,
    /// When this holder took the lease.
    pub since: DateTime<Utc>,
    /// When it last renewed it.
    pub renewed_at: DateTime<Utc>,
    /// When a standby may take it over unless it is renewed first.
    pub expires_at: DateTime<Utc>,
}

impl LeaderRecord {
    fn to_bytes(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }
}

/// What [`Bus::campaign`] found.
#[derive(Debug)]
pub enum Campaign {
    /// This replica leads now.
    Won(Box<LeaderLease>),
    /// Another replica leads, until the record's `expires_at` unless it renews.
    Lost(LeaderRecord),
}

/// A lease this replica holds. Renew it within its ttl ([`Leadership`] does); once renewing
/// fails with [`BusError::LeaseLost`], another replica leads.
#[derive(Debug)]
pub struct LeaderLease {
    bus: Bus,
    config: LeaderConfig,
    key: String,
    record: LeaderRecord,
    revision: u64,
    previous: Option<LeaderRecord>,
}

impl LeaderLease {
    /// The lease as last written.
    pub fn record(&self) -> &LeaderRecord {
        &self.record
    }

    /// The lease this one took over, when it had a holder.
    pub fn previous(&self) -> Option<&LeaderRecord> {
        self.previous.as_ref()
    }

    /// Extends it to `now + ttl`, unless another replica took it over.
    pub async fn renew(&mut self) -> Result<(), BusError> {
        let now = self.config.clock.now();
        let record = LeaderRecord {
            renewed_at: now,
            expires_at: now + chrono_ttl(self.config.ttl),
            ..self.record.clone()
        };
        let bucket = self.bus.leaders_bucket().await?;
        let (holder, term) = (&self.record.holder, self.record.term);
        let renewed = renew_if(
            &self.bus,
            bucket,
            &self.key,
            record.to_bytes(),
            &mut self.revision,
            |value| {
                serde_json::from_slice::<LeaderRecord>(value)
                    .is_ok_and(|current| &current.holder == holder && current.term == term)
            },
            || format!("renewing the leader lease of {}", self.config.role),
        )
        .await?;
        if !renewed {
            return Err(self.lost());
        }
        self.record = record;
        Ok(())
    }

    /// Gives the lease up, so a standby may take it over at once.
    pub async fn resign(self) -> Result<(), BusError> {
        let bucket = self.bus.leaders_bucket().await?;
        let operation = || format!("resigning the leader lease of {}", self.config.role);
        if delete_if(&self.bus, bucket, &self.key, self.revision, operation).await? {
            Ok(())
        } else {
            Err(self.lost())
        }
    }

    fn lost(&self) -> BusError {
        BusError::LeaseLost {
            key: self.key.clone(),
            holder: self.record.holder.clone(),
        }
    }
}

fn chrono_ttl(ttl: Duration) -> chrono::Duration {
    chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX)
}

impl Bus {
    /// Tries once to lead `config.role`: [`Campaign::Won`] when the lease is free, expired on
    /// `config.clock`, or already this replica's; [`Campaign::Lost`] while another replica's
    /// lease runs. Every write is a compare-and-set, so of two replicas campaigning at once
    /// exactly one wins.
    pub async fn campaign(&self, config: &LeaderConfig) -> Result<Campaign, BusError> {
        let bucket = self.leaders_bucket().await?;
        let key = config.key();
        let operation = || format!("campaigning for the leader lease of {}", config.role);
        let mut seen = None;
        for _ in 0..ATTEMPTS {
            let now = config.clock.now();
            let entry = bucket
                .entry(&key)
                .await
                .map_err(|error| self.nats_error(operation(), error))?;
            let current = entry
                .as_ref()
                .filter(|entry| entry.operation == Operation::Put)
                .map(|entry| {
                    (
                        serde_json::from_slice::<LeaderRecord>(&entry.value).ok(),
                        entry.revision,
                    )
                });
            let term = entry
                .as_ref()
                .and_then(|entry| serde_json::from_slice::<LeaderRecord>(&entry.value).ok())
                .map_or(0, |record| record.term);
            let record = LeaderRecord {
                holder: config.replica.clone(),
                term: term + 1,
                since: now,
                renewed_at: now,
                expires_at: now + chrono_ttl(config.ttl),
            };
            let won = |revision, previous| {
                Campaign::Won(Box::new(LeaderLease {
                    bus: self.clone(),
                    config: config.clone(),
                    key: key.clone(),
                    record: record.clone(),
                    revision,
                    previous,
                }))
            };
            match current {
                None => {
                    // Free (never taken, or resigned: the delete marker keeps the revision).
                    let revision = entry.map(|entry| entry.revision);
                    let written =
                        write_if(self, bucket, &key, record.to_bytes(), revision, operation)
                            .await?;
                    // `None`: another replica wrote it first: look again.
                    if let Some(revision) = written {
                        return Ok(won(revision, None));
                    }
                }
                Some((current, revision)) => {
                    if let Some(current) = &current {
                        if current.holder != config.replica && current.expires_at > now {
                            return Ok(Campaign::Lost(current.clone()));
                        }
                    }
                    let written = write_if(
                        self,
                        bucket,
                        &key,
                        record.to_bytes(),
                        Some(revision),
                        operation,
                    )
                    .await?;
                    match written {
                        Some(revision) => return Ok(won(revision, current)),
                        None => seen = current,
                    }
                }
            }
        }
        // The lease kept changing under us: another replica is busy taking it.
        let now = config.clock.now();
        Ok(Campaign::Lost(seen.unwrap_or(LeaderRecord {
            holder: "another replica".to_owned(),
            term: 0,
            since: now,
            renewed_at: now,
            expires_at: now + chrono_ttl(config.renew_every()),
        })))
    }

    /// Who leads `role` now, if anyone: an expired lease (on the bus's clock) counts as free.
    pub async fn leader(&self, role: &str) -> Result<Option<LeaderRecord>, BusError> {
        let entry = self
            .leaders_bucket()
            .await?
            .entry(lease_key(role))
            .await
            .map_err(|error| {
                self.nats_error(format!("reading the leader lease of {role}"), error)
            })?;
        let now = self.config().clock.now();
        Ok(entry
            .filter(|entry| entry.operation == Operation::Put)
            .and_then(|entry| serde_json::from_slice::<LeaderRecord>(&entry.value).ok())
            .filter(|record| record.expires_at > now))
    }

    /// What a leader handed over under `name`, with its revision (for [`Bus::write_handoff`]).
    pub async fn read_handoff(&self, name: &str) -> Result<Option<(Vec<u8>, u64)>, BusError> {
        let entry = self
            .leaders_bucket()
            .await?
            .entry(handoff_key(name))
            .await
            .map_err(|error| self.nats_error(format!("reading handoff {name}"), error))?;
        Ok(entry
            .filter(|entry| entry.operation == Operation::Put)
            .map(|entry| (entry.value.to_vec(), entry.revision)))
    }

    /// Writes `value` under `name` if it is still at `revision` (`None`: if it does not exist
    /// yet), returning the new revision. [`BusError::LeaseLost`] when someone else wrote it
    /// meanwhile: a new leader took over, and the writer must stop.
    pub async fn write_handoff(
        &self,
        name: &str,
        holder: &str,
        value: Vec<u8>,
        revision: Option<u64>,
    ) -> Result<u64, BusError> {
        let value = Bytes::from(value);
        let bucket = self.leaders_bucket().await?;
        let key = handoff_key(name);
        let lost = || BusError::LeaseLost {
            key: key.clone(),
            holder: holder.to_owned(),
        };
        let operation = || format!("writing handoff {name}");
        write_if(self, bucket, &key, value, revision, operation)
            .await?
            .ok_or_else(lost)
    }

    /// Writes `value` under `name` whatever it held (for values only a leader writes and only
    /// the next leader reads, such as the notifier's thread of a release in a channel).
    pub async fn put_handoff(&self, name: &str, value: Vec<u8>) -> Result<u64, BusError> {
        self.leaders_bucket()
            .await?
            .put(handoff_key(name), Bytes::from(value))
            .await
            .map_err(|error| self.nats_error(format!("writing handoff {name}"), error))
    }

    /// Every value handed over under `name`: the current one first (when there is one), then
    /// each new one as it is written.
    pub async fn watch_handoff(&self, name: &str) -> Result<HandoffWatch, BusError> {
        let bus = self.clone();
        let watch = self
            .leaders_bucket()
            .await?
            .watch_with_history(handoff_key(name))
            .await
            .map_err(|error| self.nats_error(format!("watching handoff {name}"), error))?;
        let name = name.to_owned();
        Ok(HandoffWatch(std::sync::Mutex::new(
            watch
                .filter_map(move |entry| {
                    let out = match entry {
                        Ok(entry) if entry.operation == Operation::Put => {
                            Some(Ok(entry.value.to_vec()))
                        }
                        Ok(_) => None,
                        Err(error) => Some(Err(
                            bus.nats_error(format!("watching handoff {name}"), error)
                        )),
                    };
                    futures::future::ready(out)
                })
                .boxed(),
        )))
    }
}

/// The values written under one handoff name ([`Bus::watch_handoff`]).
/// (Behind a mutex only to be `Sync`: `next` takes `&mut self` and never locks.)
pub struct HandoffWatch(std::sync::Mutex<BoxStream<'static, Result<Vec<u8>, BusError>>>);

impl std::fmt::Debug for HandoffWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HandoffWatch")
    }
}

impl HandoffWatch {
    /// The next value; `None` when the watch ended (follow it again).
    pub async fn next(&mut self) -> Option<Result<Vec<u8>, BusError>> {
        let stream = self
            .0
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        stream.next().await
    }
}

/// A replica's campaign, run by a task of its own: it takes the lease when it is free or has
/// expired, renews it every `ttl / 3` while leading, and stands by (sleeping on the clock
/// until the leader's deadline) otherwise. [`Leadership::watch`] tells whether this replica
/// leads. Dropping it ends the task without resigning, as a crash would: a standby takes over
/// once the lease expires. [`Leadership::stop`] resigns, so a standby takes over at its next
/// look.
#[derive(Debug)]
pub struct Leadership {
    leading: watch::Receiver<bool>,
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Leadership {
    /// Starts campaigning for `config.role` on `bus`.
    pub fn start(bus: Bus, config: LeaderConfig) -> Leadership {
        let (leading_tx, leading) = watch::channel(false);
        let (stop, stop_rx) = watch::channel(false);
        let span = tracing::info_span!("leader", role = %config.role);
        let task = Some(tokio::spawn(tracing::Instrument::instrument(
            campaign_loop(bus, config, leading_tx, stop_rx),
            span,
        )));
        Leadership {
            leading,
            stop,
            task,
        }
    }

    /// Whether this replica leads right now.
    pub fn is_leading(&self) -> bool {
        *self.leading.borrow()
    }

    /// Follows whether this replica leads.
    pub fn watch(&self) -> watch::Receiver<bool> {
        self.leading.clone()
    }

    /// Stops campaigning; a leader resigns its lease first.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

fn tell(config: &LeaderConfig, tx: &watch::Sender<bool>, leading: bool) {
    tx.send_replace(leading);
    if let Some(on_change) = &config.on_change {
        on_change(leading);
    }
}

async fn campaign_loop(
    bus: Bus,
    config: LeaderConfig,
    leading: watch::Sender<bool>,
    mut stop: watch::Receiver<bool>,
) {
    let role = config.role.as_str();
    let replica = config.replica.as_str();
    let every = config.renew_every();
    let mut following: Option<String> = None;
    loop {
        let campaign = tokio::select! {
            campaign = bus.campaign(&config) => campaign,
            _ = stop.changed() => return,
        };
        match campaign {
            Ok(Campaign::Won(mut lease)) => {
                following = None;
                let term = lease.record().term;
                match lease.previous() {
                    Some(previous) if previous.holder != replica => info!(
                        role, replica, term,
                        previous = %previous.holder,
                        expired_at = %previous.expires_at,
                        "lease of {role} expired at {}, taking over from {}",
                        previous.expires_at.to_rfc3339(),
                        previous.holder
                    ),
                    Some(_) => info!(
                        role,
                        replica, term, "leading {role} again under this replica's own lease"
                    ),
                    None => info!(role, replica, term, "leading {role}: its lease was free"),
                }
                tell(&config, &leading, true);
                let why = loop {
                    // Renew every third of the ttl; after failures, try once more right at the
                    // deadline, and stop leading there whatever NATS answers.
                    let expires_at = lease.record().expires_at;
                    let left = |now: DateTime<Utc>| (expires_at - now).to_std().unwrap_or_default();
                    tokio::select! {
                        () = config.clock.sleep(every.min(left(config.clock.now()))) => {}
                        _ = stop.changed() => {
                            tell(&config, &leading, false);
                            match (*lease).resign().await {
                                Ok(()) => info!(role, replica, "resigned the lease of {role}: a standby may lead at once"),
                                Err(error) => warn!(role, replica, %error, "could not resign the lease of {role}; a standby leads once it expires"),
                            }
                            return;
                        }
                    }
                    let deadline = config.clock.sleep(left(config.clock.now()));
                    let renewed = tokio::select! {
                        renewed = lease.renew() => renewed,
                        () = deadline => {
                            break format!(
                                "it expired at {} before it could be renewed",
                                expires_at.to_rfc3339()
                            );
                        }
                    };
                    match renewed {
                        Ok(()) => {}
                        Err(error @ BusError::LeaseLost { .. }) => {
                            break format!("another replica took the lease over ({error})");
                        }
                        Err(error) => {
                            if config.clock.now() >= expires_at {
                                break format!(
                                    "it could not be renewed before it expired at {} ({error})",
                                    expires_at.to_rfc3339()
                                );
                            }
                            warn!(role, replica, %error, expires_at = %expires_at, "could not renew the lease of {role}; trying again");
                        }
                    }
                };
                tell(&config, &leading, false);
                warn!(role, replica, "no longer leading {role}: {why}");
            }
            Ok(Campaign::Lost(record)) => {
                if following.as_deref() != Some(record.holder.as_str()) {
                    info!(
                        role, replica,
                        leader = %record.holder,
                        expires_at = %record.expires_at,
                        "standing by: {} leads {role}", record.holder
                    );
                    following = Some(record.holder.clone());
                }
                let wait = (record.expires_at - config.clock.now())
                    .to_std()
                    .unwrap_or_default();
                tokio::select! {
                    () = config.clock.sleep(wait) => {}
                    _ = stop.changed() => return,
                }
            }
            Err(error) => {
                warn!(role, replica, %error, retry_in = ?every, "could not campaign for the lease of {role}");
                tokio::select! {
                    () = config.clock.sleep(every) => {}
                    _ = stop.changed() => return,
                }
            }
        }
    }
}

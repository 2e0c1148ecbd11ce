//! The audit service's sealer: every [`SealConfig::every_records`] records (at exact
//! multiples: records N, 2N, …) and every [`SealConfig::every`] (at the head, when events
//! other than checkpoints arrived since the last seal), it signs the chain's head as an
//! `audit.checkpoint` and appends it to the stream on the `audit` aggregate, where it becomes
//! a record like any event. Before signing it re-checks the records it seals (hashes and
//! links from the previous checkpoint), so it never signs a chain that is already broken.
//!
//! Where to go on from is read from the store (the projection keeps the latest checkpoint
//! whose claims match the chain, [`LastSeal`]) and then kept in memory; each append expects
//! the `audit` aggregate's last sequence, so two audit services on one stream never seal the
//! same records twice: the second one's append is refused and it reads again.

use std::sync::atomic::AtomicI64;
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use railyard_bus::{AppendError, Bus, Expected};
use railyard_core::audit::AuditCheckpoint;
use railyard_core::{AggregateId, Envelope, Event, SharedClock};
use railyard_store::{ProjectionError, Update};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::error::AuditError;
use crate::keys;
use crate::query::Reader;
use crate::record::{GENESIS, Record, record_hash};
use crate::seal::{AuditKey, CHECKPOINT_TYPE, PublicKey, digest};

/// The actor of every checkpoint.
pub const SEALER: &str = "audit";

/// Records read per store call while sealing.
const CHUNK: usize = 1024;

/// How the audit service seals its chain.
#[derive(Debug, Clone)]
pub struct SealConfig {
    /// The signing key (its `Debug` shows only the key id).
    pub key: AuditKey,
    /// Seal every this many records (at least 1).
    pub every_records: u64,
    /// Seal what arrived since the last seal this often.
    pub every: Duration,
}

impl SealConfig {
    /// Seals with `key` every 1,000 records and every minute.
    pub fn new(key: AuditKey) -> SealConfig {
        SealConfig {
            key,
            every_records: 1000,
            every: Duration::from_secs(60),
        }
    }
}

/// The latest checkpoint whose claims match the chain, and the record holding it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastSeal {
    /// The record that holds the checkpoint.
    pub record: u64,
    /// The checkpoint.
    pub checkpoint: AuditCheckpoint,
}

/// The projection's part: remembers the `audit` aggregate's last message and, when its claims
/// match the chain (the record it seals exists, before it, with that hash and sequence), the
/// checkpoint in `record` as the one to go on from. Signatures are checked by verify, not here:
/// a checkpoint that tells the truth about the chain is a safe place to go on from, whoever
/// signed it.
pub(crate) fn record_checkpoint(
    update: &mut Update<'_>,
    record: &Record,
) -> Result<(), ProjectionError> {
    update.put_json(keys::seal_subject(), &record.sequence)?;
    let Ok(checkpoint) = serde_json::from_value::<AuditCheckpoint>(record.data().clone()) else {
        return Ok(());
    };
    if checkpoint.records == 0 || checkpoint.records >= record.n {
        return Ok(());
    }
    if let Some(last) = update.get_json::<LastSeal>(keys::last_seal())? {
        if last.checkpoint.records >= checkpoint.records {
            return Ok(());
        }
    }
    let Some(bytes) = update.get(keys::record(checkpoint.records))? else {
        return Ok(());
    };
    let Ok(sealed) = serde_json::from_slice::<Record>(&bytes) else {
        return Ok(());
    };
    if sealed.hash == checkpoint.head && sealed.sequence == checkpoint.sequence {
        update.put_json(
            keys::last_seal(),
            &LastSeal {
                record: record.n,
                checkpoint,
            },
        )?;
    }
    Ok(())
}

/// Why a seal is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Trigger {
    /// Seal up to exactly this record.
    Count(u64),
    /// The interval passed: seal the head if events other than checkpoints came since.
    Time,
    /// An export: seal the head unless the last checkpoint already seals every record but
    /// checkpoints, and return the checkpoint that seals what the export holds.
    Export,
}

/// Where sealing goes on from.
#[derive(Debug, Clone, Default)]
struct State {
    /// The latest checkpoint (`None`: records are sealed from 1).
    last: Option<AuditCheckpoint>,
    /// The stream sequence of the `audit` aggregate's last message (0: none).
    subject: u64,
}

impl State {
    fn covered(&self) -> u64 {
        self.last.as_ref().map_or(0, |last| last.records)
    }
}

/// Seals the chain; owned by the [`crate::Audit`] service.
#[derive(Debug)]
pub(crate) struct Sealer {
    config: SealConfig,
    reader: Reader,
    bus: Bus,
    clock: SharedClock,
    state: tokio::sync::Mutex<Option<State>>,
    sealed: Gauge<i64, AtomicI64>,
}

impl Sealer {
    pub(crate) fn new(
        config: SealConfig,
        reader: Reader,
        bus: Bus,
        clock: SharedClock,
        sealed: Gauge<i64, AtomicI64>,
    ) -> Sealer {
        Sealer {
            config,
            reader,
            bus,
            clock,
            state: tokio::sync::Mutex::new(None),
            sealed,
        }
    }

    /// The public key checkpoints are signed with.
    pub(crate) fn public(&self) -> PublicKey {
        self.config.key.public()
    }

    async fn load(&self) -> Result<State, AuditError> {
        let store = self.reader.store();
        let last = store
            .get_json::<LastSeal>(keys::last_seal())
            .await?
            .map(|last| last.checkpoint);
        let subject = store
            .get_json::<u64>(keys::seal_subject())
            .await?
            .unwrap_or(0);
        Ok(State { last, subject })
    }

    /// Seals every `every_records` records and, every `every`, what came since the last
    /// seal, until `stop`.
    pub(crate) async fn run(&self, stop: CancellationToken) {
        info!(
            key_id = %self.public().id(),
            every_records = self.config.every_records,
            every = ?self.config.every,
            "audit sealer signing checkpoints"
        );
        let mut committed = self.reader.store().watch_checkpoint();
        let mut tick = self.clock.sleep(self.config.every);
        // After a failure (NATS refusing, the chain not holding), wait for the next interval
        // instead of trying again at every record.
        let mut held_back = false;
        loop {
            let timed = tokio::select! {
                changed = committed.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    false
                }
                () = &mut tick => {
                    tick = self.clock.sleep(self.config.every);
                    true
                }
                () = stop.cancelled() => break,
            };
            if held_back && !timed {
                continue;
            }
            held_back = !self.seal_due(timed).await;
        }
    }

    /// Seals at every multiple of `every_records` the head has passed and no checkpoint covers
    /// yet: for a replica that has just become the sealer, which should not wait for the next
    /// record to seal what its predecessor left.
    pub(crate) async fn catch_up(&self) {
        self.seal_due(false).await;
    }

    /// Seals at every multiple of `every_records` the head has passed, then (when `timed`)
    /// what is left. Returns false after a failure worth waiting for the next interval.
    async fn seal_due(&self, timed: bool) -> bool {
        let every = self.config.every_records.max(1);
        loop {
            let covered = match self.covered().await {
                Ok(covered) => covered,
                Err(error) => return self.failed(&error),
            };
            let head = match self.reader.head().await {
                Ok(head) => head,
                Err(error) => return self.failed(&error),
            };
            if head.n < covered + every {
                break;
            }
            match self.seal(Trigger::Count(covered + every)).await {
                Ok(Some(_)) => continue,
                Ok(None) => break,
                Err(error) => return self.failed(&error),
            }
        }
        if timed {
            if let Err(error) = self.seal(Trigger::Time).await {
                return self.failed(&error);
            }
        }
        true
    }

    /// Logs a failed seal; says whether to go on at the next record (true after a conflict).
    fn failed(&self, error: &AuditError) -> bool {
        match error {
            AuditError::Append(AppendError::Conflict { .. }) => {
                debug!(
                    error = %error,
                    "another checkpoint was appended meanwhile: sealing again once the record holds it"
                );
                true
            }
            _ => {
                warn!(error = %error, retry_in = ?self.config.every, "audit sealer could not seal the chain; it tries again at the next interval");
                false
            }
        }
    }

    async fn covered(&self) -> Result<u64, AuditError> {
        let mut state = self.state.lock().await;
        if state.is_none() {
            *state = Some(self.load().await?);
        }
        Ok(state.as_ref().map_or(0, State::covered))
    }

    /// Seals as `trigger` asks; returns the checkpoint appended (or, for an export with
    /// nothing new to seal, the latest one), `None` when there was nothing to seal.
    pub(crate) async fn seal(
        &self,
        trigger: Trigger,
    ) -> Result<Option<AuditCheckpoint>, AuditError> {
        let mut guard = self.state.lock().await;
        let state = match guard.take() {
            Some(state) => state,
            None => self.load().await?,
        };
        // Put back on every early return; dropped on a failed append, so it is read again.
        let outcome = self.seal_from(&state, trigger).await;
        match outcome {
            Ok(Sealed::Appended(checkpoint, subject)) => {
                self.sealed
                    .set(i64::try_from(checkpoint.records).unwrap_or(i64::MAX));
                *guard = Some(State {
                    last: Some(checkpoint.clone()),
                    subject,
                });
                Ok(Some(checkpoint))
            }
            Ok(Sealed::Nothing) => {
                let last = state.last.clone();
                *guard = Some(state);
                Ok(if trigger == Trigger::Export {
                    last
                } else {
                    None
                })
            }
            Err(error) => Err(error),
        }
    }

    async fn seal_from(&self, state: &State, trigger: Trigger) -> Result<Sealed, AuditError> {
        let head = self.reader.head().await?;
        let covered = state.covered();
        let upto = match trigger {
            Trigger::Count(upto) => upto.min(head.n),
            Trigger::Time | Trigger::Export => head.n,
        };
        if upto <= covered {
            return Ok(Sealed::Nothing);
        }
        let prev = state
            .last
            .as_ref()
            .map_or_else(|| GENESIS.to_owned(), |last| last.head.clone());
        let window = read_window(&self.reader, covered + 1, upto, prev).await?;
        if trigger != Trigger::Count(upto) && !window.events {
            // Only checkpoints since the last seal: sealing them would seal itself forever.
            return Ok(Sealed::Nothing);
        }
        let checkpoint = self.config.key.sign(
            upto,
            window.head,
            window.sequence,
            covered + 1,
            window.digests,
            self.clock.now(),
        );
        let envelope = Envelope::new(
            AggregateId::Audit,
            SEALER,
            checkpoint.sealed_at,
            Event::AuditCheckpoint(checkpoint.clone()),
        );
        let appended = self
            .bus
            .append(
                &AggregateId::Audit,
                Expected::after(state.subject),
                std::slice::from_ref(&envelope),
            )
            .await?;
        debug!(
            records = checkpoint.records,
            sequence = appended.sequence,
            ?trigger,
            "audit chain sealed"
        );
        Ok(Sealed::Appended(checkpoint, appended.sequence))
    }
}

/// Reads records `from` to `upto`, checking each one's hash and link (the first links to
/// `prev`, the hash the last checkpoint sealed).
async fn read_window(
    reader: &Reader,
    from: u64,
    upto: u64,
    mut prev: String,
) -> Result<Window, AuditError> {
    let prefix = keys::records_prefix();
    let mut after = keys::record(from - 1);
    let mut expected = from;
    let mut window = Window {
        head: String::new(),
        sequence: 0,
        digests: Vec::with_capacity((upto - from + 1).min(1 << 20) as usize),
        events: false,
    };
    let refuse = |n: u64, why: &str| {
        AuditError::Seal(format!(
            "record {n} {why}: the audit service does not sign a chain that does not hold; run `railyard audit verify`"
        ))
    };
    while expected <= upto {
        let page = reader
            .store()
            .scan_page(&prefix, Some(&after), CHUNK)
            .await?;
        if page.is_empty() {
            return Err(refuse(expected, "is missing"));
        }
        for (key, bytes) in page {
            if expected > upto {
                break;
            }
            let value: Value =
                serde_json::from_slice(&bytes).map_err(|_| refuse(expected, "does not decode"))?;
            let record =
                Record::deserialize(&value).map_err(|_| refuse(expected, "does not decode"))?;
            if record.n != expected {
                return Err(refuse(expected, "is missing or out of place"));
            }
            if record_hash(&value) != record.hash {
                return Err(refuse(expected, "does not match its hash"));
            }
            if record.prev != prev {
                return Err(refuse(expected, "does not link to the record before it"));
            }
            window.events |= record.facets.kind != CHECKPOINT_TYPE;
            window.digests.push(digest(&record.hash).to_owned());
            window.sequence = record.sequence;
            prev = record.hash;
            expected += 1;
            after = key;
        }
    }
    window.head = prev;
    Ok(window)
}

/// Signs, with `key` and without appending it anywhere, a checkpoint over every record of the
/// store `reader` reads that the last checkpoint in it does not seal (for an export of a
/// stopped store); `None` when the store holds no record.
pub async fn seal_locally(
    reader: &Reader,
    key: &AuditKey,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Option<AuditCheckpoint>, AuditError> {
    let head = reader.head().await?;
    if head.n == 0 {
        return Ok(None);
    }
    let last = reader
        .store()
        .get_json::<LastSeal>(keys::last_seal())
        .await?
        .map(|last| last.checkpoint)
        .filter(|last| last.records <= head.n);
    let (covered, prev) = last.map_or((0, GENESIS.to_owned()), |last| (last.records, last.head));
    let (from, prev) = if covered == head.n {
        // Nothing new: seal the last record alone again.
        let record = reader.record(head.n).await?.map(|record| record.prev);
        (head.n, record.unwrap_or(prev))
    } else {
        (covered + 1, prev)
    };
    let window = read_window(reader, from, head.n, prev).await?;
    Ok(Some(key.sign(
        head.n,
        window.head,
        window.sequence,
        from,
        window.digests,
        now,
    )))
}

/// What a seal did.
enum Sealed {
    Appended(AuditCheckpoint, u64),
    Nothing,
}

/// The records a checkpoint is about to seal.
struct Window {
    head: String,
    sequence: u64,
    digests: Vec<String>,
    /// Whether any is not a checkpoint.
    events: bool,
}

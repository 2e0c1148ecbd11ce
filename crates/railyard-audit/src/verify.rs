//! Tamper evidence: [`verify`] walks the records from the first to the head, recomputes each
//! record's hash, its link to the previous one, its position and its facets, and (with a
//! bus) compares each record's event with the event at its stream sequence and then the
//! chain's end with the stream's end, so a record that was altered, removed, reordered or
//! inserted is named — the first one found, in record order — and so is the first stream
//! event past the chain's end that has no record. A store found cut short when it was opened
//! (its sled log lost what a flush had made durable) fails until it holds that again.
//! [`verify_live`] is the running service's: it first lets the projection catch up with the
//! stream, for a bounded time. Records written after the head was read are left for the next
//! run. The chain's head must also account for every stream message the projection says it
//! applied (its checkpoint): a stream event at or below the checkpoint without a record means
//! records were removed from the end and the head rewound. Every signed checkpoint in the
//! chain is held against the records it seals ([`crate::seal::Seals`]).

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use chrono::{DateTime, Utc};
use railyard_bus::{Bus, EventConsumer};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::AuditError;
use crate::keys;
use crate::projection::Head;
use crate::query::Reader;
use crate::record::{
    Facets, GENESIS, Record, ReleaseScope, canonical_bytes, derive_facets, record_hash,
    release_of_aggregate,
};
use crate::seal::{Keys, SealSummary, Seals};

/// Records read per store call.
const CHUNK: usize = 1024;

/// What is wrong with a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// Its content changed (or it no longer decodes).
    Altered,
    /// It is missing.
    Removed,
    /// It is not where the chain says it should be.
    Reordered,
    /// It has no counterpart in the stream.
    Inserted,
    /// It does not exist yet or any more: the stream holds events past the chain's end
    /// (the store is behind the stream, or its log was cut short).
    Missing,
}

/// The first bad record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// The record's position in the chain.
    pub n: u64,
    /// The stream sequence concerned, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sequence: Option<u64>,
    /// What kind of tampering it looks like.
    pub kind: ProblemKind,
    /// What was found, in words.
    pub detail: String,
}

/// The answer of `railyard audit verify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// No problem found.
    pub ok: bool,
    /// Records checked.
    pub records: u64,
    /// The head verified up to.
    pub head: Head,
    /// Whether every record was compared with the stream.
    pub stream_checked: bool,
    /// The first bad record.
    pub first_bad: Option<Problem>,
    /// When the check ran.
    pub verified_at: DateTime<Utc>,
    /// The stream's last sequence the record was compared up to (with the stream).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_last_sequence: Option<u64>,
    /// Stream messages after the last one the store applied, up to `stream_last_sequence`:
    /// how far behind the stream the record is (with the stream).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behind: Option<u64>,
    /// Set when the store was found cut short when it was opened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cut_short: Option<StoreCutShort>,
    /// What the signed checkpoints in the chain proved (up to the first bad record).
    #[serde(default)]
    pub seals: SealSummary,
}

/// A store whose sled log ended, when it was opened, before what a flush had made durable:
/// it was damaged on disk and lost the records after `recovered_sequence`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreCutShort {
    /// The stream sequence the store had made durable.
    pub durable_sequence: u64,
    /// The stream sequence its log ended at when it was opened.
    pub recovered_sequence: u64,
    /// Whether the store has applied the stream up to `durable_sequence` again since (the
    /// running service follows the stream; the records are then compared with it like any).
    pub reapplied: bool,
}

/// How the record's end is judged.
#[derive(Debug, Clone, Copy)]
enum Mode {
    /// A store at rest (`railyard audit verify --store`): nothing will fill a gap by itself.
    AtRest,
    /// The running service, which waited this long for its projection to catch up.
    Live(Duration),
}

/// How long verify waits for a stream message it knows exists.
const STREAM_WAIT: Duration = Duration::from_secs(30);

/// The stream's events in order, one per (sequence, index).
pub(crate) struct StreamSide {
    consumer: EventConsumer,
    buffer: VecDeque<(u64, u32, Vec<u8>)>,
    read_up_to: u64,
    target: u64,
}

impl StreamSide {
    async fn open(bus: &Bus, target: u64) -> Result<StreamSide, AuditError> {
        Ok(StreamSide {
            consumer: bus.replay_as("audit-verify", 1).await?,
            buffer: VecDeque::new(),
            read_up_to: 0,
            target,
        })
    }

    /// The next event at or below the target, `None` past it.
    async fn peek(&mut self) -> Result<Option<&(u64, u32, Vec<u8>)>, AuditError> {
        while self.buffer.is_empty() && self.read_up_to < self.target {
            let delivery = match tokio::time::timeout(STREAM_WAIT, self.consumer.next()).await {
                Ok(next) => next?.ok_or_else(|| {
                    AuditError::NotFound(
                        "the NATS connection closed while verifying: verify again".into(),
                    )
                })?,
                Err(_) => {
                    return Err(AuditError::NotFound(format!(
                        "the event stream gave nothing after sequence {} within {STREAM_WAIT:?} although it holds up to {}: check NATS, then verify again",
                        self.read_up_to, self.target
                    )));
                }
            };
            self.read_up_to = delivery.stream_sequence;
            if delivery.stream_sequence > self.target {
                break;
            }
            for (index, envelope) in delivery.envelopes.iter().enumerate() {
                let value =
                    serde_json::to_value(envelope).map_err(|source| AuditError::Corrupt {
                        key: format!("stream sequence {}", delivery.stream_sequence),
                        source,
                    })?;
                self.buffer.push_back((
                    delivery.stream_sequence,
                    index as u32,
                    canonical_bytes(&value),
                ));
            }
        }
        Ok(self.buffer.front())
    }

    fn pop(&mut self) {
        self.buffer.pop_front();
    }
}

fn problem(
    n: u64,
    sequence: Option<u64>,
    kind: ProblemKind,
    detail: impl Into<String>,
) -> Option<Problem> {
    Some(Problem {
        n,
        sequence,
        kind,
        detail: detail.into(),
    })
}

/// Verifies the chain in `reader`'s store up to its current head, and, when `bus` is given,
/// every record against the stream and the chain's end against the stream's last sequence:
/// for a store at rest, where a missing tail is a failure.
pub async fn verify(
    reader: &Reader,
    bus: Option<&Bus>,
    now: DateTime<Utc>,
) -> Result<VerifyReport, AuditError> {
    verify_signed(reader, bus, &Keys::default(), now).await
}

/// [`verify`], checking the signatures of checkpoints with `keys` (a checkpoint signed by
/// another key is counted in [`SealSummary::unknown_keys`] and proves nothing).
pub async fn verify_signed(
    reader: &Reader,
    bus: Option<&Bus>,
    keys: &Keys,
    now: DateTime<Utc>,
) -> Result<VerifyReport, AuditError> {
    let checkpoint = reader.store().checkpoint().await?;
    let head = reader.head().await?;
    let stream = match bus {
        Some(bus) => Some((bus, bus.stream_last_sequence().await?)),
        None => None,
    };
    check(reader, checkpoint, head, stream, Mode::AtRest, keys, now).await
}

/// Verifies the running service's store against the stream as [`verify`] does, after waiting
/// up to `catch_up` for the projection to apply the stream's last message: a record still
/// behind then fails, saying how far.
/// The wait goes through `clock`, so tests drive it.
pub async fn verify_live(
    reader: &Reader,
    bus: &Bus,
    catch_up: Duration,
    clock: &dyn railyard_core::Clock,
) -> Result<VerifyReport, AuditError> {
    verify_live_signed(reader, bus, catch_up, clock, &Keys::default()).await
}

/// [`verify_live`], checking the signatures of checkpoints with `keys`.
pub async fn verify_live_signed(
    reader: &Reader,
    bus: &Bus,
    catch_up: Duration,
    clock: &dyn railyard_core::Clock,
    keys: &Keys,
) -> Result<VerifyReport, AuditError> {
    let last = bus.stream_last_sequence().await?;
    let mut committed = reader.store().watch_checkpoint();
    // Behind after the wait (or the store closing) is reported by the check itself.
    tokio::select! {
        _ = committed.wait_for(|applied| *applied >= last) => {}
        () = clock.sleep(catch_up) => {}
    }
    let now = clock.now();
    let checkpoint = reader.store().checkpoint().await?;
    let head = reader.head().await?;
    check(
        reader,
        checkpoint,
        head,
        Some((bus, last)),
        Mode::Live(catch_up),
        keys,
        now,
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn check(
    reader: &Reader,
    checkpoint: u64,
    head: Head,
    stream: Option<(&Bus, u64)>,
    mode: Mode,
    keys: &Keys,
    now: DateTime<Utc>,
) -> Result<VerifyReport, AuditError> {
    // Records applied after the stream's end was read (live) are compared too.
    let target = stream.map(|(_, last)| last.max(head.sequence));
    let mut side = match (stream, target) {
        (Some((bus, _)), Some(target)) if target > 0 => Some(StreamSide::open(bus, target).await?),
        _ => None,
    };
    let mut checker = Checker::new(keys.clone());
    let prefix = keys::records_prefix();
    let mut after: Option<Vec<u8>> = None;
    let mut first_bad = None;
    'scan: loop {
        let page = reader
            .store()
            .scan_page(&prefix, after.as_ref(), CHUNK)
            .await?;
        let exhausted = page.len() < CHUNK;
        for (key, bytes) in page {
            let Some(at) = keys::n_tail(&key, prefix.len()) else {
                first_bad = problem(
                    checker.expected,
                    None,
                    ProblemKind::Inserted,
                    format!(
                        "a record key that is not a record number was found after record {}",
                        checker.expected - 1
                    ),
                );
                break 'scan;
            };
            if at > head.n {
                break 'scan;
            }
            if let Some(found) = checker.check(at, &bytes, side.as_mut()).await? {
                first_bad = Some(found);
                break 'scan;
            }
            after = Some(key);
        }
        if exhausted {
            break;
        }
    }
    let checked = checker.expected - 1;
    if first_bad.is_none() && checked < head.n {
        first_bad = problem(
            checker.expected,
            None,
            ProblemKind::Removed,
            format!(
                "record {} is missing: the chain's head is record {} but the records end at {checked}",
                checker.expected, head.n
            ),
        );
    }
    if first_bad.is_none() && checker.prev != head.hash {
        first_bad = problem(
            head.n,
            Some(head.sequence),
            ProblemKind::Altered,
            format!(
                "the chain's head names hash {} but record {} hashes to {}",
                head.hash, head.n, checker.prev
            ),
        );
    }
    let covered = checkpoint.max(head.sequence);
    let cut_short = reader.store().cut_short().map(|cut| StoreCutShort {
        durable_sequence: cut.durable,
        recovered_sequence: cut.recovered,
        reapplied: covered >= cut.durable,
    });
    let short = cut_short.as_ref().filter(|cut| !cut.reapplied);
    let end = End {
        records: checked,
        covered,
        target,
        short,
        mode,
    };
    if first_bad.is_none() {
        if let Some(side) = side.as_mut() {
            if let Some((sequence, index, _)) = side.peek().await? {
                first_bad = if *sequence <= head.sequence {
                    problem(
                        checked + 1,
                        Some(*sequence),
                        ProblemKind::Removed,
                        format!(
                            "event {index} of stream sequence {sequence} has no record: a record after {checked} was removed"
                        ),
                    )
                } else if *sequence <= checkpoint {
                    problem(
                        checked + 1,
                        Some(*sequence),
                        ProblemKind::Removed,
                        format!(
                            "event {index} of stream sequence {sequence} has no record, although the audit store says it applied the stream up to sequence {checkpoint}: the chain ends at record {checked} (stream sequence {}), so the records from stream sequence {sequence} on were removed and the chain's head rewound: stop the audit service, run `railyard audit rebuild`, find out who could write the audit store, then verify again",
                            head.sequence
                        ),
                    )
                } else {
                    problem(
                        checked + 1,
                        Some(*sequence),
                        ProblemKind::Missing,
                        end.missing(*sequence),
                    )
                };
            }
        }
    }
    if first_bad.is_none() && short.is_some() {
        first_bad = problem(
            checked + 1,
            Some(covered + 1),
            ProblemKind::Missing,
            end.missing(covered + 1),
        );
    }
    // A checkpoint names a record before the one it was found in.
    let records = first_bad
        .as_ref()
        .map_or(checked, |bad| checked.min(bad.n.saturating_sub(1)));
    Ok(VerifyReport {
        ok: first_bad.is_none(),
        records,
        head,
        stream_checked: stream.is_some(),
        first_bad,
        verified_at: now,
        stream_last_sequence: target,
        behind: target.map(|target| target.saturating_sub(covered)),
        cut_short,
        seals: checker.seals.summary().clone(),
    })
}

/// Where the record ends, to say why events past it have no record.
struct End<'a> {
    records: u64,
    covered: u64,
    target: Option<u64>,
    short: Option<&'a StoreCutShort>,
    mode: Mode,
}

impl End<'_> {
    /// The detail of a [`ProblemKind::Missing`] whose first event without a record is at
    /// stream sequence `first`.
    fn missing(&self, first: u64) -> String {
        let covered = self.covered;
        let stream = match self.target {
            Some(target) => format!(
                "; the stream holds up to sequence {target}, {} messages more",
                target.saturating_sub(covered)
            ),
            None => String::new(),
        };
        if let Some(cut) = self.short {
            return format!(
                "the audit store was cut short when it was opened: it had made stream sequence {} durable but its log ended at {} (damaged on disk), so the records after {} are gone and none holds stream sequence {first}{stream}: stop the audit service, run `railyard audit rebuild`, check the disk, then verify again",
                cut.durable_sequence, cut.recovered_sequence, self.records
            );
        }
        match self.mode {
            Mode::Live(waited) => format!(
                "the audit record is behind the stream: its {} records cover up to stream sequence {covered} and the first event without a record is at {first}{stream}, and the projection did not catch up within {waited:?}: verify again; if it stays behind, check the audit service's log",
                self.records
            ),
            Mode::AtRest => format!(
                "the audit record ends before the stream does: its {} records cover up to stream sequence {covered} and the first event without a record is at {first}{stream}: a store that was stopped while events were appended catches up when the audit service runs again, one whose files were damaged needs `railyard audit rebuild`; then verify again",
                self.records
            ),
        }
    }
}

/// Checks records one by one, in chain order: each record's hash, its link to the one before,
/// its facets, and (through [`Seals`]) every signed checkpoint against the records it seals.
pub(crate) struct Checker {
    /// The record number expected next.
    pub(crate) expected: u64,
    /// The hash of the last good record.
    prev: String,
    /// Release scopes, rebuilt as the projection built them.
    scopes: BTreeMap<String, ReleaseScope>,
    /// The checkpoints met so far.
    pub(crate) seals: Seals,
}

impl Checker {
    pub(crate) fn new(keys: Keys) -> Checker {
        Checker {
            expected: 1,
            prev: GENESIS.to_owned(),
            scopes: BTreeMap::new(),
            seals: Seals::new(keys),
        }
    }

    pub(crate) async fn check(
        &mut self,
        at: u64,
        bytes: &[u8],
        stream: Option<&mut StreamSide>,
    ) -> Result<Option<Problem>, AuditError> {
        let n = self.expected;
        if at != n {
            return Ok(problem(
                n,
                None,
                ProblemKind::Removed,
                format!(
                    "record {n} is missing: record {at} follows record {}",
                    n - 1
                ),
            ));
        }
        let Ok(value) = serde_json::from_slice::<Value>(bytes) else {
            return Ok(problem(
                n,
                None,
                ProblemKind::Altered,
                format!("record {n} is not a valid record any more"),
            ));
        };
        self.check_value(value, stream).await
    }

    /// [`Checker::check`] of the next record, already read as JSON.
    pub(crate) async fn check_value(
        &mut self,
        value: Value,
        stream: Option<&mut StreamSide>,
    ) -> Result<Option<Problem>, AuditError> {
        let n = self.expected;
        let Ok(record) = Record::deserialize(&value) else {
            return Ok(problem(
                n,
                None,
                ProblemKind::Altered,
                format!("record {n} is not a valid record any more"),
            ));
        };
        let sequence = Some(record.sequence);
        if record.n != n {
            return Ok(problem(
                n,
                sequence,
                ProblemKind::Reordered,
                format!("position {n} holds record {}", record.n),
            ));
        }
        if record_hash(&value) != record.hash {
            return Ok(problem(
                n,
                sequence,
                ProblemKind::Altered,
                format!("record {n}'s content does not match its hash"),
            ));
        }
        if record.prev != self.prev {
            return Ok(problem(
                n,
                sequence,
                ProblemKind::Reordered,
                format!(
                    "record {n} does not follow record {}: its previous hash is not that record's hash",
                    n - 1
                ),
            ));
        }
        let own_release = release_of_aggregate(&record.facets.aggregate).map(str::to_owned);
        let scope = own_release
            .as_ref()
            .map(|release| self.scopes.entry(release.clone()).or_default().clone());
        let facets = match derive_facets(&record.envelope, scope.as_ref()) {
            Ok(facets) => facets,
            Err(error) => {
                return Ok(problem(
                    n,
                    sequence,
                    ProblemKind::Altered,
                    format!("record {n}'s event does not read as a Railyard event: {error}"),
                ));
            }
        };
        let refused = match refused_facets(&facets, &record) {
            Ok(refused) => refused,
            Err(why) => {
                return Ok(problem(
                    n,
                    sequence,
                    ProblemKind::Altered,
                    format!("record {n}'s index facets {why}"),
                ));
            }
        };
        // The projection widens a release's scope with its counted events only.
        if let (false, Some(release)) = (refused, own_release) {
            self.scopes.entry(release).or_default().widen(&facets);
        }
        if let Some(stream) = stream {
            if let Some(found) = compare_with_stream(n, &record, stream).await? {
                return Ok(Some(found));
            }
        }
        if let Some(found) = self.seals.record(&record) {
            return Ok(Some(found));
        }
        self.prev = record.hash;
        self.expected += 1;
        Ok(None)
    }
}

/// Whether `record` is recorded as refused (an authority event no trusted writer sealed, kept
/// under `refused:<type>`), given the facets its event derives: `Err` says why its facets do
/// not match its event. A process that checks seals (`RAILYARD_AUTHORITY_TRUST`) also holds
/// the label against its own judgement; one that does not takes either form.
fn refused_facets(derived: &Facets, record: &Record) -> Result<bool, String> {
    let refused_form = Facets {
        kind: format!("refused:{}", derived.kind),
        family: "refused".to_owned(),
        ..derived.clone()
    };
    let refused = if record.facets == *derived {
        false
    } else if record.facets == refused_form {
        true
    } else {
        return Err("do not match its event".to_owned());
    };
    if railyard_core::authority::enforced() {
        let envelope = serde_json::from_value::<railyard_core::Envelope>(record.envelope.clone())
            .map_err(|error| {
            format!("cannot be checked: its event does not decode ({error})")
        })?;
        match (refused, envelope.untrusted.is_some()) {
            (true, false) => {
                return Err(
                    "mark it refused, but the keys trusted here vouch for its event".into(),
                );
            }
            (false, true) => {
                return Err(
                    "count it, but no key trusted here vouches for its event (it was relabelled)"
                        .into(),
                );
            }
            _ => {}
        }
    }
    Ok(refused)
}

async fn compare_with_stream(
    n: u64,
    record: &Record,
    stream: &mut StreamSide,
) -> Result<Option<Problem>, AuditError> {
    let position = (record.sequence, record.index);
    let Some((sequence, index, bytes)) = stream.peek().await? else {
        return Ok(problem(
            n,
            Some(record.sequence),
            ProblemKind::Inserted,
            format!(
                "record {n} claims event {} of stream sequence {}, which the stream does not hold",
                record.index, record.sequence
            ),
        ));
    };
    let at = (*sequence, *index);
    if at < position {
        return Ok(problem(
            n,
            Some(at.0),
            ProblemKind::Removed,
            format!(
                "event {} of stream sequence {} has no record: it was removed before record {n}",
                at.1, at.0
            ),
        ));
    }
    if at > position {
        return Ok(problem(
            n,
            Some(record.sequence),
            ProblemKind::Inserted,
            format!(
                "record {n} claims event {} of stream sequence {}, which the stream does not hold",
                record.index, record.sequence
            ),
        ));
    }
    if *bytes != canonical_bytes(&record.envelope) {
        return Ok(problem(
            n,
            Some(record.sequence),
            ProblemKind::Altered,
            format!(
                "record {n} differs from event {} of stream sequence {}",
                record.index, record.sequence
            ),
        ));
    }
    stream.pop();
    Ok(None)
}

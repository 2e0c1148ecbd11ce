//! The audit record as a file, and its check with nothing but a public key.
//!
//! An export is JSON lines: `{"export": header}`, then `{"record": record}` for records 1 to
//! `records` exactly as the store holds them (signed checkpoints among them, as records of
//! type `audit.checkpoint`), then `{"trailer": checkpoint}`: the checkpoint the service
//! sealed for the export, which seals the last record exported, so removing records from the
//! end shows. [`verify_export`] recomputes the chain, holds every checkpoint signed by a
//! trusted key against the records it seals, and names the first bad record; records after
//! the last verified checkpoint are reported as not covered by a signature.

use chrono::{DateTime, Utc};
use futures::Stream;
use railyard_core::audit::AuditCheckpoint;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::{AsyncBufRead, AsyncBufReadExt};

use crate::error::AuditError;
use crate::keys;
use crate::query::Reader;
use crate::seal::{Keys, SealSummary, Signed};
use crate::verify::{Checker, Problem, ProblemKind};

/// The `format` of the exports this version writes.
pub const FORMAT: &str = "railyard-audit-export/1";

/// Records read per store call.
const CHUNK: usize = 1024;

/// The first line of an export. Not signed: the trailer is what proves the export's end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportHeader {
    /// [`FORMAT`].
    pub format: String,
    /// When it was written.
    pub exported_at: DateTime<Utc>,
    /// How many records follow.
    pub records: u64,
    /// The key id of the trailer's signature, when there is a trailer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
}

/// The lines of an export of records 1 to `upto`, a chunk of records at a time.
pub fn lines(
    reader: Reader,
    exported_at: DateTime<Utc>,
    upto: u64,
    trailer: Option<AuditCheckpoint>,
) -> impl Stream<Item = Result<Vec<u8>, AuditError>> + Send + 'static {
    enum Next {
        Header,
        Records(Vec<u8>),
        Trailer,
        Done,
    }
    let header = ExportHeader {
        format: FORMAT.to_owned(),
        exported_at,
        records: upto,
        key_id: trailer.as_ref().map(|trailer| trailer.key_id.clone()),
    };
    futures::stream::unfold(Next::Header, move |next| {
        let (reader, header, trailer) = (reader.clone(), header.clone(), trailer.clone());
        async move {
            match next {
                Next::Header => {
                    let mut line = serde_json::to_vec(&serde_json::json!({ "export": header }))
                        .expect("a header serializes");
                    line.push(b'\n');
                    Some((Ok(line), Next::Records(keys::record(0))))
                }
                Next::Records(after) => {
                    let prefix = keys::records_prefix();
                    let page = match reader.store().scan_page(&prefix, Some(&after), CHUNK).await {
                        Ok(page) => page,
                        Err(error) => return Some((Err(error.into()), Next::Done)),
                    };
                    let mut chunk = Vec::new();
                    let mut last = None;
                    for (key, bytes) in page {
                        match keys::n_tail(&key, prefix.len()) {
                            Some(n) if n <= upto => {}
                            _ => break,
                        }
                        chunk.extend_from_slice(b"{\"record\":");
                        chunk.extend_from_slice(&bytes);
                        chunk.extend_from_slice(b"}\n");
                        last = Some(key);
                    }
                    match last {
                        Some(key) => Some((Ok(chunk), Next::Records(key))),
                        None => Some((Ok(chunk), Next::Trailer)),
                    }
                }
                Next::Trailer => {
                    let trailer = trailer?;
                    let mut line = serde_json::to_vec(&serde_json::json!({ "trailer": trailer }))
                        .expect("a checkpoint serializes");
                    line.push(b'\n');
                    Some((Ok(line), Next::Done))
                }
                Next::Done => None,
            }
        }
    })
}

/// Records of an export no verified signature covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotCovered {
    /// The first.
    pub from: u64,
    /// The last.
    pub to: u64,
}

/// What `railyard audit verify --offline` found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfflineReport {
    /// No record was found altered, removed, reordered or inserted, and no checkpoint forged.
    pub ok: bool,
    /// `ok`, and a trailer signed by a trusted key seals every record of the export.
    pub complete: bool,
    /// Records that verify, before the first bad one.
    pub records: u64,
    /// The first bad record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_bad: Option<Problem>,
    /// What the signed checkpoints (and the trailer) proved.
    pub seals: SealSummary,
    /// What the trailer is.
    pub trailer: TrailerState,
    /// Records after the last verified checkpoint: not covered by a signature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_covered: Option<NotCovered>,
    /// The export's header, as written (not signed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<ExportHeader>,
}

/// The trailer of an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrailerState {
    /// Signed by a trusted key and sealing the export's records.
    Verified,
    /// There is none: the export may have been cut short, or was written without a key.
    Missing,
    /// Signed by a key that is not trusted here.
    UnknownKey,
    /// Present but wrong (see the first bad record).
    Bad,
}

fn bad(n: u64, kind: ProblemKind, detail: String) -> Option<Problem> {
    Some(Problem {
        n,
        sequence: None,
        kind,
        detail,
    })
}

/// Reads lines of `input` after a gap at record `missing` and says where that record is, if
/// anywhere later.
async fn find_later(
    lines: &mut tokio::io::Lines<impl AsyncBufRead + Unpin>,
    line_no: &mut u64,
    missing: u64,
) -> Result<Option<u64>, std::io::Error> {
    while let Some(line) = lines.next_line().await? {
        *line_no += 1;
        let n = serde_json::from_str::<Value>(&line)
            .ok()
            .and_then(|value| value.pointer("/record/n").and_then(Value::as_u64));
        if n == Some(missing) {
            return Ok(Some(*line_no));
        }
    }
    Ok(None)
}

/// Verifies an export read from `input` (named `path` in errors), trusting checkpoints signed
/// by `keys`.
pub async fn verify_export(
    input: impl AsyncBufRead + Unpin,
    path: &str,
    keys: Keys,
) -> Result<OfflineReport, AuditError> {
    let read_error = |source| AuditError::Export {
        path: path.to_owned(),
        action: "read",
        source,
    };
    let mut lines = input.lines();
    let mut line_no = 0u64;
    let mut checker = Checker::new(keys.clone());
    let mut header: Option<ExportHeader> = None;
    let mut trailer: Option<(u64, AuditCheckpoint)> = None;
    let mut first_bad: Option<Problem> = None;
    while let Some(line) = lines.next_line().await.map_err(read_error)? {
        line_no += 1;
        if line.trim().is_empty() {
            continue;
        }
        let expected = checker.expected;
        let parsed: Option<(String, Value)> =
            serde_json::from_str::<Value>(&line)
                .ok()
                .and_then(|value| match value {
                    Value::Object(map) if map.len() == 1 => map.into_iter().next(),
                    _ => None,
                });
        let Some((kind, value)) = parsed else {
            first_bad = bad(
                expected,
                ProblemKind::Altered,
                format!(
                    "line {line_no} is not an export line (one of {{\"export\": …}}, {{\"record\": …}}, {{\"trailer\": …}}): record {expected} or what follows was altered"
                ),
            );
            break;
        };
        if let Some((at, _)) = &trailer {
            first_bad = bad(
                expected,
                ProblemKind::Inserted,
                format!(
                    "line {line_no} comes after the export's trailer (line {at}): nothing follows the trailer in an export"
                ),
            );
            break;
        }
        match kind.as_str() {
            "export" if line_no == 1 => header = serde_json::from_value(value).ok(),
            "trailer" => match serde_json::from_value::<AuditCheckpoint>(value) {
                Ok(checkpoint) => trailer = Some((line_no, checkpoint)),
                Err(error) => {
                    first_bad = bad(
                        expected,
                        ProblemKind::Altered,
                        format!("the export's trailer (line {line_no}) does not decode: {error}"),
                    );
                    break;
                }
            },
            "record" => {
                let at = value.get("n").and_then(Value::as_u64);
                if at != Some(expected) {
                    let later = find_later(&mut lines, &mut line_no, expected)
                        .await
                        .map_err(read_error)?;
                    let holds = at.map_or_else(
                        || "a record without a number".to_owned(),
                        |at| format!("record {at}"),
                    );
                    first_bad = match later {
                        Some(found) => bad(
                            expected,
                            ProblemKind::Reordered,
                            format!(
                                "record {expected} is out of place: where it belongs, the export holds {holds}, and record {expected} comes later (line {found})"
                            ),
                        ),
                        None => bad(
                            expected,
                            ProblemKind::Removed,
                            format!(
                                "record {expected} is missing: {holds} follows record {}",
                                expected - 1
                            ),
                        ),
                    };
                    break;
                }
                if let Some(problem) = checker.check_value(value, None).await? {
                    first_bad = Some(problem);
                    break;
                }
            }
            other => {
                first_bad = bad(
                    expected,
                    ProblemKind::Altered,
                    format!(
                        "line {line_no} is a {other:?} line, which an export does not hold (only one header, records and one trailer)"
                    ),
                );
                break;
            }
        }
    }
    let records = checker.expected - 1;
    let mut trailer_state = TrailerState::Missing;
    if first_bad.is_none() {
        if let Some((at, checkpoint)) = &trailer {
            trailer_state = match keys.check(checkpoint) {
                Signed::UnknownKey => TrailerState::UnknownKey,
                _ => TrailerState::Verified,
            };
            if trailer_state == TrailerState::Verified {
                let what = format!("the export's trailer (line {at})");
                first_bad = checker.seals.checkpoint(checkpoint, records, &what);
                if first_bad.is_some() {
                    trailer_state = TrailerState::Bad;
                }
            } else {
                checker
                    .seals
                    .checkpoint(checkpoint, records, "the export's trailer");
            }
        }
    }
    if first_bad.is_none() && trailer_state != TrailerState::Verified {
        if let Some(claimed) = header.as_ref().map(|header| header.records) {
            if claimed > records {
                first_bad = bad(
                    records + 1,
                    ProblemKind::Removed,
                    format!(
                        "record {} is missing: the export's header says it holds {claimed} records but they end at {records} (the header is not signed; the export has no trailer signed by a key given)",
                        records + 1
                    ),
                );
            }
        }
    }
    let seals = checker.seals.summary().clone();
    let verified = first_bad
        .as_ref()
        .map_or(records, |bad| records.min(bad.n.saturating_sub(1)));
    let not_covered = (first_bad.is_none() && seals.covered < records).then_some(NotCovered {
        from: seals.covered + 1,
        to: records,
    });
    Ok(OfflineReport {
        ok: first_bad.is_none(),
        complete: first_bad.is_none()
            && trailer_state == TrailerState::Verified
            && not_covered.is_none(),
        records: verified,
        first_bad,
        seals,
        trailer: trailer_state,
        not_covered,
        header,
    })
}

//! The named audit queries (INTERFACES §6 `GET /v1/audit/<query>`), shared by HTTP and the
//! CLI: which filters each needs, which index it reads, and what items it answers with.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::dora::{DoraLog, DoraRow, DoraWindow};
use crate::error::AuditError;
use crate::items::{ApprovalItem, EventItem, GateItem, RejectionItem};
use crate::keys;
use crate::query::{Filter, MAX_LIMIT, Page};
use crate::record::Record;
use crate::report::{ReportRow, report_row};
use crate::service::Audit;

/// A named query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueryKind {
    /// Any records, every filter optional.
    Events,
    /// A release's timeline (needs `release`).
    Timeline,
    /// Everything that touched a service or an environment (needs one of them).
    Changes,
    /// Everything an actor did (needs `actor`).
    Actor,
    /// Approval requests and decisions: who, when, why.
    Approvals,
    /// Gate results.
    Gates,
    /// Refused inputs from the rejection log.
    Rejections,
    /// The production change report: one row per deployment (`env` defaults to production).
    Report,
    /// The four DORA metrics per service, team and environment ([`crate::dora`]); `since`
    /// defaults to 30 days ago, `until` to now.
    Dora,
}

impl QueryKind {
    /// Every query, by its URL name.
    pub const ALL: [QueryKind; 9] = [
        QueryKind::Events,
        QueryKind::Timeline,
        QueryKind::Changes,
        QueryKind::Actor,
        QueryKind::Approvals,
        QueryKind::Gates,
        QueryKind::Rejections,
        QueryKind::Report,
        QueryKind::Dora,
    ];

    /// The URL name.
    pub fn as_str(self) -> &'static str {
        match self {
            QueryKind::Events => "events",
            QueryKind::Timeline => "timeline",
            QueryKind::Changes => "changes",
            QueryKind::Actor => "actor",
            QueryKind::Approvals => "approvals",
            QueryKind::Gates => "gates",
            QueryKind::Rejections => "rejections",
            QueryKind::Report => "report",
            QueryKind::Dora => "dora",
        }
    }

    /// The query named `name`.
    pub fn parse(name: &str) -> Result<QueryKind, AuditError> {
        QueryKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == name)
            .ok_or_else(|| {
                AuditError::NotFound(format!(
                    "there is no audit query {name:?}: use one of events, timeline, changes, actor, approvals, gates, rejections, report, dora"
                ))
            })
    }
}

/// A query's answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Answer {
    /// Records as events.
    Events(Page<EventItem>),
    /// Approvals.
    Approvals(Page<ApprovalItem>),
    /// Gate results.
    Gates(Page<GateItem>),
    /// Refused inputs.
    Rejections(Page<RejectionItem>),
    /// Report rows.
    Report(Page<ReportRow>),
    /// DORA metrics, every row at once.
    Dora(Page<DoraRow>),
}

/// Runs query `kind` with `filter`, one page of at most `limit` after `cursor`.
pub async fn run_query(
    audit: &Audit,
    kind: QueryKind,
    mut filter: Filter,
    cursor: Option<&str>,
    limit: usize,
) -> Result<Answer, AuditError> {
    let reader = audit.reader();
    let limit = limit.clamp(1, MAX_LIMIT);
    match kind {
        QueryKind::Events => Ok(Answer::Events(
            reader
                .records(&filter, cursor, limit)
                .await?
                .map(|r| EventItem::from(&r)),
        )),
        QueryKind::Timeline | QueryKind::Changes | QueryKind::Actor => {
            let missing = match kind {
                QueryKind::Timeline if filter.release.is_none() => {
                    Some(("release", "a timeline needs release=<id>"))
                }
                QueryKind::Changes if filter.service.is_none() && filter.env.is_none() => Some((
                    "service",
                    "changes need service=<name> or env=<name> (or both)",
                )),
                QueryKind::Actor if filter.actor.is_none() => {
                    Some(("actor", "this query needs actor=<identity>"))
                }
                _ => None,
            };
            if let Some((field, problem)) = missing {
                return Err(AuditError::invalid(field, problem));
            }
            Ok(Answer::Events(
                reader
                    .records(&filter, cursor, limit)
                    .await?
                    .map(|r| EventItem::from(&r)),
            ))
        }
        QueryKind::Approvals => {
            filter.family = Some("approval".into());
            Ok(Answer::Approvals(
                reader
                    .records(&filter, cursor, limit)
                    .await?
                    .map(|r| ApprovalItem::from_record(&r)),
            ))
        }
        QueryKind::Gates => {
            filter.kind = Some("gate.evaluated".into());
            Ok(Answer::Gates(
                reader
                    .records(&filter, cursor, limit)
                    .await?
                    .map(|r| GateItem::from_record(&r)),
            ))
        }
        QueryKind::Rejections => rejections(audit, &filter, cursor, limit).await,
        QueryKind::Dora => {
            let now = audit.config().clock.now();
            let window = DoraWindow {
                since: filter.since.unwrap_or(now - chrono::Duration::days(30)),
                until: filter.until.unwrap_or(now),
                incident_window: audit.config().dora_incident_window,
                env: filter.env.clone(),
                service: filter.service.clone(),
            };
            if window.since >= window.until {
                return Err(AuditError::invalid(
                    "since",
                    "since must be before until: the window is empty",
                ));
            }
            let log = dora_log(audit, &window).await?;
            Ok(Answer::Dora(Page {
                items: log.rows(&window, &audit.config().owners),
                next_cursor: None,
            }))
        }
        QueryKind::Report => {
            let env = filter
                .env
                .clone()
                .unwrap_or_else(|| audit.config().report_env.clone());
            let page = reader.deployments(&env, &filter, cursor, limit).await?;
            let mut releases: BTreeMap<String, Vec<Record>> = BTreeMap::new();
            let mut rows = Vec::with_capacity(page.items.len());
            for deployment in &page.items {
                if !releases.contains_key(&deployment.release) {
                    let records = reader.release_records(&deployment.release, None).await?;
                    releases.insert(deployment.release.clone(), records);
                }
                rows.push(report_row(deployment, &releases[&deployment.release]));
            }
            Ok(Answer::Report(Page {
                items: rows,
                next_cursor: page.next_cursor,
            }))
        }
    }
}

async fn rejections(
    audit: &Audit,
    filter: &Filter,
    cursor: Option<&str>,
    limit: usize,
) -> Result<Answer, AuditError> {
    let from = match cursor {
        None => 1,
        Some(cursor) => cursor.parse::<u64>().map_err(|_| {
            AuditError::invalid(
                "cursor",
                "a rejections cursor is a sequence number: pass back next_cursor",
            )
        })?,
    };
    let mut items = Vec::new();
    let mut next = from;
    loop {
        let batch = audit.bus().rejections(next, limit).await?;
        let full = batch.len() == limit;
        for stored in batch {
            next = stored.sequence + 1;
            let item = RejectionItem::from(stored);
            let wanted = filter.since.is_none_or(|since| item.received_at >= since)
                && filter.until.is_none_or(|until| item.received_at < until);
            if wanted {
                items.push(item);
                if items.len() == limit {
                    return Ok(Answer::Rejections(Page {
                        items,
                        next_cursor: Some(next.to_string()),
                    }));
                }
            }
        }
        if !full {
            return Ok(Answer::Rejections(Page {
                items,
                next_cursor: None,
            }));
        }
    }
}

/// Folds what DORA needs: every release, step, commit and incident record up to the window's
/// end plus the incident window (plans and commits may predate the window), in record order.
pub(crate) async fn dora_log(audit: &Audit, window: &DoraWindow) -> Result<DoraLog, AuditError> {
    /// Records read per store call.
    const CHUNK: usize = 1024;
    /// The families the DORA log folds.
    const FAMILIES: [&str; 4] = ["release", "step", "change", "incident"];
    // One pass over the records in stream order, a page at a time, folding as it goes: what
    // is kept is the log, never the records (it used to collect every matching record of the
    // whole history before folding, every time the gauges were computed).
    let until = window.until + window.incident_window;
    let store = audit.reader().store();
    let prefix = keys::records_prefix();
    let mut after = keys::record(0);
    let mut log = DoraLog::new();
    loop {
        let page = store.scan_page(&prefix, Some(&after), CHUNK).await?;
        let Some((last, _)) = page.last() else {
            break;
        };
        after = last.clone();
        let full = page.len() == CHUNK;
        for (key, bytes) in page {
            if keys::n_tail(&key, prefix.len()).is_none() {
                continue; // not a record key
            }
            let record: Record = crate::query::decode(&key, &bytes)?;
            let facets = &record.facets;
            // A refused event (its writer was not trusted to write it) is recorded, never
            // counted.
            if facets.at >= until
                || !FAMILIES.contains(&facets.family.as_str())
                || facets.kind.starts_with("refused:")
            {
                continue;
            }
            match serde_json::from_value::<railyard_core::Envelope>(record.envelope) {
                Ok(envelope) => log.apply(&envelope),
                Err(error) => {
                    tracing::debug!(record = record.n, %error, "record left out of the DORA metrics: not an event this version reads");
                }
            }
        }
        if !full {
            break;
        }
    }
    Ok(log)
}

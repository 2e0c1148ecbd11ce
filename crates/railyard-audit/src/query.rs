//! Reading the audit tree: [`Reader`] finds records through the most selective index for a
//! [`Filter`], skips the entries whose digest rules the rest of the filter out, checks the
//! rest against each remaining record's facets, and pages with an opaque cursor (the last
//! index key read), so every query is a range scan bounded by its keys and time window.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, Utc};
use railyard_store::{ProjectionStore, display_key};
use serde::{Deserialize, Serialize};

use crate::error::AuditError;
use crate::keys;
use crate::projection::{AuditProjection, Deployment, Head};
use crate::record::{Facets, Record};
use crate::releases::{ReleaseFilter, ReleaseSummary};

/// Index entries read per store call.
const CHUNK: usize = 256;
/// The most items one page may hold.
pub const MAX_LIMIT: usize = 1000;

/// Which records a query wants; every field narrows it. The same filters serve the CLI and
/// HTTP (`?release=&service=&env=&actor=&type=&family=&since=&until=`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filter {
    /// Records of this release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
    /// Records concerning this service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Records concerning this environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// Records caused by this actor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// Records of this event type (`gate.evaluated`).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Records of this type family (`approval`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
    /// At or after this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<DateTime<Utc>>,
    /// Before this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<DateTime<Utc>>,
}

impl Filter {
    /// Whether a record with `facets` passes every field.
    pub fn matches(&self, facets: &Facets) -> bool {
        let has = |wanted: &Option<String>, values: &[String]| {
            wanted
                .as_ref()
                .is_none_or(|wanted| values.iter().any(|value| value == wanted))
        };
        self.release
            .as_ref()
            .is_none_or(|release| facets.release.as_ref() == Some(release))
            && has(&self.service, &facets.services)
            && has(&self.env, &facets.envs)
            && self
                .actor
                .as_ref()
                .is_none_or(|actor| &facets.actor == actor)
            && self.kind.as_ref().is_none_or(|kind| &facets.kind == kind)
            && self
                .family
                .as_ref()
                .is_none_or(|family| &facets.family == family)
            && self.since.is_none_or(|since| facets.at >= since)
            && self.until.is_none_or(|until| facets.at < until)
    }
}

/// Parses a time bound: RFC 3339 (`2026-03-01T12:00:00Z`), a date (`2026-03-01`, midnight
/// UTC), or a time before `now` (`30d`, `12h`, `45m`).
pub fn parse_time(
    field: &'static str,
    text: &str,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>, AuditError> {
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&Utc));
    }
    let ago = |unit: char, per: i64| {
        text.strip_suffix(unit)
            .and_then(|n| n.parse::<i64>().ok())
            .filter(|n| (0..=36_500 * 24 * 60).contains(n))
            .map(|n| now - chrono::Duration::minutes(n * per))
    };
    if let Some(at) = ago('d', 24 * 60)
        .or_else(|| ago('h', 60))
        .or_else(|| ago('m', 1))
    {
        return Ok(at);
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|date| date.and_hms_opt(0, 0, 0))
        .map(|at| at.and_utc())
        .ok_or_else(|| {
            AuditError::invalid(
                field,
                format!(
                    "{text:?} is not a time: use RFC 3339 (2026-03-01T12:00:00Z), a date (2026-03-01) or a time ago (30d, 12h, 45m)"
                ),
            )
        })
}

/// One page of results and the cursor of the next, if there may be one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Pass it back as `cursor` for the next page; `None` at the end.
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// The same page with every item mapped.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            next_cursor: self.next_cursor,
        }
    }
}

/// Reads the audit tree. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Reader {
    store: ProjectionStore<AuditProjection>,
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(
    key: &[u8],
    bytes: &[u8],
) -> Result<T, AuditError> {
    serde_json::from_slice(bytes).map_err(|source| AuditError::Corrupt {
        key: display_key(key),
        source,
    })
}

fn cursor_key(cursor: Option<&str>, prefix: &[u8]) -> Result<Option<Vec<u8>>, AuditError> {
    let Some(cursor) = cursor else {
        return Ok(None);
    };
    match hex::decode(cursor) {
        Ok(key) if key.starts_with(prefix) => Ok(Some(key)),
        _ => Err(AuditError::invalid(
            "cursor",
            "this cursor does not belong to this query: pass back the next_cursor of the previous page with the same filters",
        )),
    }
}

impl Reader {
    /// A reader over the audit projection's store.
    pub fn new(store: ProjectionStore<AuditProjection>) -> Reader {
        Reader { store }
    }

    /// The store it reads.
    pub fn store(&self) -> &ProjectionStore<AuditProjection> {
        &self.store
    }

    /// The end of the chain.
    pub async fn head(&self) -> Result<Head, AuditError> {
        let key = keys::head();
        match self.store.get(&key).await? {
            Some(bytes) => decode(&key, &bytes),
            None => Ok(Head::default()),
        }
    }

    /// Record `n`, if it exists.
    pub async fn record(&self, n: u64) -> Result<Option<Record>, AuditError> {
        let key = keys::record(n);
        match self.store.get(&key).await? {
            Some(bytes) => decode(&key, &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Records matching `filter`, oldest first (by time, then stream order; a release's by
    /// stream order), at most `limit`, after `cursor`.
    ///
    /// One index answers: the release's when given, else the most selective time-keyed
    /// index the filter names, read from `since` and stopped at `until`. The filter's other
    /// fields are checked against each entry's [`keys::Digest`] first, so an entry whose
    /// record cannot match is skipped unread; the records that may are read together, one
    /// store call for as many as the page still needs, and checked exactly. The work is
    /// bounded by the index entries in the window, never by the size of the store.
    pub async fn records(
        &self,
        filter: &Filter,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<Record>, AuditError> {
        let limit = limit.clamp(1, MAX_LIMIT);
        let (prefix, by_time) = match filter {
            Filter {
                release: Some(release),
                ..
            } => (keys::release_index(release), false),
            Filter {
                service: Some(service),
                env: Some(env),
                ..
            } => (keys::time_index("service-env", &[service, env]), true),
            Filter {
                service: Some(service),
                ..
            } => (keys::time_index("service", &[service]), true),
            Filter {
                actor: Some(actor), ..
            } => (keys::time_index("actor", &[actor]), true),
            Filter {
                kind: Some(kind), ..
            } => (keys::time_index("type", &[kind]), true),
            Filter {
                family: Some(family),
                ..
            } => (keys::time_index("family", &[family]), true),
            Filter { env: Some(env), .. } => (keys::time_index("env", &[env]), true),
            _ => (keys::time_index("time", &[]), true),
        };
        let wanted = keys::Digest::wanted(
            [
                ("service", &filter.service),
                ("env", &filter.env),
                ("actor", &filter.actor),
                ("type", &filter.kind),
                ("family", &filter.family),
            ]
            .into_iter()
            .filter_map(|(dim, value)| value.as_deref().map(|value| (dim, value))),
        );
        let prefix = prefix.into_vec();
        let mut after = cursor_key(cursor, &prefix)?;
        if after.is_none() && by_time {
            if let Some(since) = filter.since {
                let mut start = prefix.clone();
                start.extend_from_slice(
                    railyard_store::KeyBuf::new()
                        .i64(since.timestamp_micros())
                        .as_bytes(),
                );
                after = Some(start);
            }
        }
        let until = filter.until.map(|until| until.timestamp_micros());
        let mut items = Vec::new();
        loop {
            let page = self.store.scan_page(&prefix, after.as_ref(), CHUNK).await?;
            let mut ended = page.len() < CHUNK;
            after = page.last().map(|(key, _)| key.clone()).or(after);
            // The entries whose record may match, up to the window's end.
            let mut candidates = Vec::new();
            for (key, value) in page {
                let n = if by_time {
                    let Some((at, n)) = keys::time_tail(&key, prefix.len()) else {
                        continue;
                    };
                    if until.is_some_and(|until| at >= until) {
                        ended = true;
                        break;
                    }
                    n
                } else {
                    match keys::n_tail(&key, prefix.len()) {
                        Some(n) => n,
                        None => continue,
                    }
                };
                if keys::Digest::admits(&value, wanted) {
                    candidates.push((key, n));
                }
            }
            // Each candidate gives at most one item: read no more than the page still needs.
            let mut candidates = candidates.into_iter().peekable();
            while candidates.peek().is_some() {
                let batch: Vec<(Vec<u8>, u64)> =
                    candidates.by_ref().take(limit - items.len()).collect();
                let numbers: Vec<u64> = batch.iter().map(|(_, n)| *n).collect();
                let mut records = self.records_numbered(&numbers).await?;
                for (key, n) in batch {
                    match records.remove(&n) {
                        Some(record) if filter.matches(&record.facets) => items.push(record),
                        Some(_) => {}
                        None => {
                            tracing::warn!(record = n, index = %display_key(&key), "index entry names a missing record; run `railyard audit verify`");
                        }
                    }
                    if items.len() == limit {
                        return Ok(Page {
                            items,
                            next_cursor: Some(hex::encode(&key)),
                        });
                    }
                }
            }
            if ended {
                return Ok(Page {
                    items,
                    next_cursor: None,
                });
            }
        }
    }

    /// Records `numbers` (those that exist), read with one [`ProjectionStore::get_many`]: one
    /// blocking call however scattered they are.
    pub(crate) async fn records_numbered(
        &self,
        numbers: &[u64],
    ) -> Result<HashMap<u64, Record>, AuditError> {
        let keys: Vec<_> = numbers.iter().map(|&n| keys::record(n)).collect();
        let values = self.store.get_many(&keys).await?;
        let mut records = HashMap::with_capacity(numbers.len());
        for ((n, key), bytes) in numbers.iter().zip(&keys).zip(values) {
            if let Some(bytes) = bytes {
                records.insert(*n, decode::<Record>(key, &bytes)?);
            }
        }
        Ok(records)
    }

    /// Releases matching `filter`, newest request first, at most `limit`, after `cursor`.
    pub async fn releases(
        &self,
        filter: &ReleaseFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<ReleaseSummary>, AuditError> {
        let limit = limit.clamp(1, MAX_LIMIT);
        let prefix = keys::release_list().into_vec();
        let mut after = cursor_key(cursor, &prefix)?;
        if after.is_none() {
            if let Some(until) = filter.until {
                after = Some(
                    keys::release_list()
                        .i64(i64::MAX - until.timestamp_micros())
                        .into_vec(),
                );
            }
        }
        let mut items = Vec::new();
        loop {
            let page = self.store.scan_page(&prefix, after.as_ref(), CHUNK).await?;
            let exhausted = page.len() < CHUNK;
            after = page.last().map(|(key, _)| key.clone()).or(after);
            let listed: Vec<(Vec<u8>, String)> = page
                .into_iter()
                .filter_map(|(key, _)| {
                    let release = keys::release_list_tail(&key, prefix.len())?;
                    Some((key, release))
                })
                .collect();
            // Each listed release gives at most one item: read no more summaries than the
            // page still needs, each batch in one store call.
            let mut listed = listed.into_iter().peekable();
            while listed.peek().is_some() {
                let batch: Vec<(Vec<u8>, String)> =
                    listed.by_ref().take(limit - items.len()).collect();
                let summary_keys: Vec<_> = batch
                    .iter()
                    .map(|(_, release)| keys::release_summary(release))
                    .collect();
                let summaries = self.store.get_many(&summary_keys).await?;
                for (((key, release), summary_key), bytes) in
                    batch.into_iter().zip(&summary_keys).zip(summaries)
                {
                    let Some(bytes) = bytes else {
                        tracing::warn!(release = %release, "release list names a release without a summary; run `railyard audit rebuild`");
                        continue;
                    };
                    let summary: ReleaseSummary = decode(summary_key, &bytes)?;
                    if filter
                        .since
                        .is_some_and(|since| summary.requested_at < since)
                    {
                        // Newest first: everything after this is older still.
                        return Ok(Page {
                            items,
                            next_cursor: None,
                        });
                    }
                    if filter.matches(&summary) {
                        items.push(summary);
                    }
                    if items.len() == limit {
                        return Ok(Page {
                            items,
                            next_cursor: Some(hex::encode(&key)),
                        });
                    }
                }
            }
            if exhausted {
                return Ok(Page {
                    items,
                    next_cursor: None,
                });
            }
        }
    }

    /// A release's records after record `after` (all when `None`), in stream order.
    pub async fn release_records(
        &self,
        release: &str,
        after: Option<u64>,
    ) -> Result<Vec<Record>, AuditError> {
        let prefix = keys::release_index(release);
        let cursor = after.map(|n| hex::encode(prefix.clone().u64(n).as_bytes()));
        let filter = Filter {
            release: Some(release.to_owned()),
            ..Filter::default()
        };
        let mut records = Vec::new();
        let mut cursor = cursor;
        loop {
            let page = self.records(&filter, cursor.as_deref(), MAX_LIMIT).await?;
            records.extend(page.items);
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(records),
            }
        }
    }

    /// Deployments to `env` that started in the filter's time range (and of its service and
    /// release, when given), oldest first.
    pub async fn deployments(
        &self,
        env: &str,
        filter: &Filter,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<Deployment>, AuditError> {
        let limit = limit.clamp(1, MAX_LIMIT);
        let prefix = keys::deployments(env);
        let mut after = cursor_key(cursor, prefix.as_bytes())?;
        if after.is_none() {
            if let Some(since) = filter.since {
                after = Some(prefix.clone().i64(since.timestamp_micros()).into_vec());
            }
        }
        let until = filter.until.map(|until| until.timestamp_micros());
        let prefix = prefix.into_vec();
        let mut items = Vec::new();
        loop {
            let page = self.store.scan_page(&prefix, after.as_ref(), CHUNK).await?;
            let exhausted = page.len() < CHUNK;
            for (key, value) in page {
                if let Some((at, _)) = keys::time_tail(&key, prefix.len()) {
                    if until.is_some_and(|until| at >= until) {
                        return Ok(Page {
                            items,
                            next_cursor: None,
                        });
                    }
                }
                let deployment: Deployment = decode(&key, &value)?;
                let wanted = filter
                    .service
                    .as_ref()
                    .is_none_or(|service| &deployment.service == service)
                    && filter
                        .release
                        .as_ref()
                        .is_none_or(|release| &deployment.release == release);
                if wanted {
                    items.push(deployment);
                }
                if items.len() == limit {
                    return Ok(Page {
                        items,
                        next_cursor: Some(hex::encode(&key)),
                    });
                }
                after = Some(key);
            }
            if exhausted {
                return Ok(Page {
                    items,
                    next_cursor: None,
                });
            }
        }
    }
}

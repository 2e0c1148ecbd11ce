//! The read routes only the web console needs beyond `http.rs` (issue 16): `POST
//! /v1/plan/preview` (a release file planned against the live inventory and the releases in
//! flight, as the planner would plan it now, without appending anything), `GET /v1/owners` (each
//! service's owning team from the catalog, for the banner's "who must act") and `GET
//! /v1/live/releases` (Server-Sent Events: each release whose summary changed, with the SSE id
//! = the stream sequence of its last event, so `Last-Event-ID` resumes without a gap). Any valid
//! token reads them. [`console_routes`] serves them; the binary merges it next to
//! [`crate::router`].

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRef, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use futures::Stream;
use railyard_core::event::{ReleaseRequested, ServiceDeployed};
use railyard_core::{Catalog, Envelope, Event, Inventory, ReleaseFile, ReleaseId, Status};
use railyard_http::{ApiError, Authenticated, Tokens};
use railyard_plan::{InFlight, PlanInput};
use serde::Deserialize;
use serde_json::json;
use tracing::warn;

use crate::error::AuditError;
use crate::keys;
use crate::query::{Filter, MAX_LIMIT, Reader};
use crate::record::Record;
use crate::releases::{ReleaseFilter, ReleaseSummary};
use crate::service::Audit;

/// What the console's routes read: the audit record and, for the preview, the catalog; how
/// many previews each token has left; and the recorded inventory as the last preview folded it.
#[derive(Clone)]
struct Console {
    audit: Audit,
    catalog: Option<Arc<Catalog>>,
    previews: Arc<PreviewLimit>,
    estate: Arc<tokio::sync::Mutex<Option<Estate>>>,
}

/// The inventory folded from the recorded `service.deployed` events through record `through`
/// (every record up to it was looked at), and the last `service.deployed` record folded. A
/// preview folds only the records appended since, in record (stream) order: a later
/// `service.deployed` of a service replaces what an earlier one said, so folding again records
/// the first fold may already have seen changes nothing.
#[derive(Debug)]
struct Estate {
    through: u64,
    inventory: Inventory,
    last: u64,
}

/// Records read per store call when the kept inventory catches up.
const CATCH_UP_PAGE: usize = 1_000;
/// Past this many records behind, the inventory is folded again from the type index instead.
const CATCH_UP_MAX: u64 = 20_000;
/// Records the live release list reads per store call.
const LIVE_PAGE: u64 = 256;

/// Previews one token may run back to back.
pub const PREVIEW_BURST: u32 = 5;
/// How often a token gets one more preview, up to [`PREVIEW_BURST`].
pub const PREVIEW_REFILL: Duration = Duration::from_secs(2);

/// A bucket of [`PREVIEW_BURST`] previews per identity, refilled one every [`PREVIEW_REFILL`]
/// on the audit's clock. A preview reads the records appended since the last one and every
/// release summary before it plans (0.08–0.13 s in a debug build with 1,000 releases in
/// history, where planning alone takes 0.4 ms; BENCHMARKS.md), so one token cannot keep the
/// read side busy.
#[derive(Debug, Default)]
struct PreviewLimit {
    /// Per identity: previews left, and when the last one counted back was due.
    buckets: Mutex<HashMap<String, (u32, DateTime<Utc>)>>,
}

impl PreviewLimit {
    /// Takes one preview for `who` at `now`, or says how long until one is back.
    fn take(&self, who: &str, now: DateTime<Utc>) -> Result<(), Duration> {
        let refill = chrono::Duration::from_std(PREVIEW_REFILL).unwrap_or(chrono::Duration::MAX);
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let (left, since) = buckets
            .entry(who.to_owned())
            .or_insert((PREVIEW_BURST, now));
        let elapsed = now
            .signed_duration_since(*since)
            .max(chrono::Duration::zero());
        let back = (elapsed.num_milliseconds() / refill.num_milliseconds().max(1)).max(0);
        let back = u32::try_from(back).unwrap_or(u32::MAX);
        if back > 0 {
            *left = left.saturating_add(back).min(PREVIEW_BURST);
            *since = if *left == PREVIEW_BURST {
                now
            } else {
                *since + refill * i32::try_from(back).unwrap_or(i32::MAX)
            };
        }
        if *left == 0 {
            let due = *since + refill - now;
            return Err(due.to_std().unwrap_or(PREVIEW_REFILL));
        }
        if *left == PREVIEW_BURST {
            *since = now;
        }
        *left -= 1;
        Ok(())
    }
}

/// 429 for a token out of previews, with `Retry-After` in whole seconds.
fn too_many_previews(who: &str, wait: Duration) -> Response {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let mut response = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "too many previews",
        format!(
            "{who} ran {PREVIEW_BURST} plan previews in a row: each reads the whole deployment history, so a token gets one more every {} s; preview again in {seconds} s",
            PREVIEW_REFILL.as_secs()
        ),
        "",
    )
    .into_response();
    if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

impl FromRef<Console> for Tokens {
    fn from_ref(console: &Console) -> Tokens {
        console.audit.config().tokens.clone()
    }
}

/// The console's routes over `audit`; `catalog` is what the plan preview plans with (without
/// it the preview answers 503 saying so, and the owners come from the audit's configuration).
pub fn console_routes(audit: Audit, catalog: Option<Catalog>) -> Router {
    Router::new()
        .route("/v1/plan/preview", post(preview))
        .route("/v1/owners", get(owners))
        .route("/v1/live/releases", get(live_releases))
        .with_state(Console {
            audit,
            catalog: catalog.map(Arc::new),
            previews: Arc::default(),
            estate: Arc::default(),
        })
}

/// `GET /v1/owners`: `{"owners": {service: team}}` from the catalog's `owner` fields.
async fn owners(State(console): State<Console>, Authenticated(_): Authenticated) -> Response {
    let owners: BTreeMap<String, String> = match &console.catalog {
        Some(catalog) => catalog
            .services
            .iter()
            .filter_map(|(name, service)| Some((name.to_string(), service.owner.clone()?)))
            .collect(),
        None => console.audit.config().owners.clone(),
    };
    Json(json!({ "owners": owners })).into_response()
}

/// The inventory folded from every recorded `service.deployed`, oldest first (the planner's
/// fold: a service with no `running` left the environment; database versions ride on the
/// events), and the last record it folded.
pub(crate) async fn recorded_inventory(reader: &Reader) -> Result<(Inventory, u64), AuditError> {
    let filter = Filter {
        kind: Some("service.deployed".into()),
        ..Filter::default()
    };
    let mut inventory = Inventory::default();
    let mut cursor: Option<String> = None;
    let mut last = 0u64;
    loop {
        let page = reader
            .records(&filter, cursor.as_deref(), MAX_LIMIT)
            .await?;
        for record in &page.items {
            let Ok(envelope) = serde_json::from_value::<Envelope>(record.envelope.clone()) else {
                continue;
            };
            let Event::ServiceDeployed(deployed) = envelope.event else {
                continue;
            };
            last = last.max(record.n);
            fold_deployed(&mut inventory, deployed);
        }
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return Ok((inventory, last)),
        }
    }
}

/// Applies one recorded `service.deployed` to `inventory`.
fn fold_deployed(inventory: &mut Inventory, deployed: ServiceDeployed) {
    let env = inventory.0.entry(deployed.env.clone()).or_default();
    match deployed.running {
        Some(running) => {
            env.services.insert(deployed.service.clone(), running);
        }
        None => {
            env.services.remove(&deployed.service);
        }
    }
    env.databases.extend(deployed.databases);
}

/// The recorded inventory now and the last `service.deployed` record in it: the one kept
/// since the last call, caught up with the records appended since (a full fold the first
/// time, after the store went back, or when far behind).
async fn current_inventory(console: &Console) -> Result<(Inventory, u64), AuditError> {
    let reader = console.audit.reader();
    let mut kept = console.estate.lock().await;
    let head = reader.head().await?;
    let mut estate = kept
        .take()
        .filter(|estate| estate.through <= head.n && head.n - estate.through <= CATCH_UP_MAX);
    if let Some(behind) = estate.as_mut() {
        if !catch_up(reader, behind, head.n).await? {
            estate = None;
        }
    }
    let estate = match estate {
        Some(estate) => estate,
        None => {
            let (inventory, last) = recorded_inventory(reader).await?;
            Estate {
                through: head.n,
                inventory,
                last,
            }
        }
    };
    let answer = (estate.inventory.clone(), estate.last);
    *kept = Some(estate);
    Ok(answer)
}

/// Folds the `service.deployed` records after `estate.through` up to record `head`; `false`
/// when the records cannot be read in order (fold again from the index).
async fn catch_up(reader: &Reader, estate: &mut Estate, head: u64) -> Result<bool, AuditError> {
    const MARK: &[u8] = b"\"service.deployed\"";
    let prefix = keys::records_prefix();
    while estate.through < head {
        let page = reader
            .store()
            .scan_page(&prefix, Some(keys::record(estate.through)), CATCH_UP_PAGE)
            .await?;
        if page.is_empty() {
            return Ok(false);
        }
        for (key, bytes) in page {
            let Some(n) = keys::n_tail(&key, prefix.len()) else {
                return Ok(false);
            };
            if n > head {
                return Ok(true);
            }
            estate.through = n;
            // Most records are not deployments: those are told apart without decoding them.
            if !bytes.windows(MARK.len()).any(|w| w == MARK) {
                continue;
            }
            let Ok(record) = serde_json::from_slice::<Record>(&bytes) else {
                continue;
            };
            if record.facets.kind != "service.deployed" {
                continue;
            }
            if let Ok(deployed) = ServiceDeployed::deserialize(record.data()) {
                fold_deployed(&mut estate.inventory, deployed);
                estate.last = estate.last.max(n);
            }
        }
    }
    Ok(true)
}

/// Every release that has not ended (requested, planned or held), except `except`, as the
/// planner keeps it: its request's stream sequence, its changes, and the steps of its plan
/// that have not succeeded (none before it is planned).
async fn releases_in_flight(
    reader: &Reader,
    except: &ReleaseId,
) -> Result<Vec<InFlight>, AuditError> {
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = reader
            .releases(&ReleaseFilter::default(), cursor.as_deref(), MAX_LIMIT)
            .await?;
        ids.extend(
            page.items
                .into_iter()
                .filter(|s| matches!(s.status, Status::Requested | Status::Planned | Status::Held))
                .map(|s| s.release)
                .filter(|id| id != except.as_str()),
        );
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let mut out = Vec::new();
    for id in ids {
        let records = reader.release_records(&id, None).await?;
        let mut requested = None;
        let mut remaining = BTreeSet::new();
        let mut ended = false;
        for record in &records {
            let Ok(envelope) = serde_json::from_value::<Envelope>(record.envelope.clone()) else {
                continue;
            };
            match envelope.event {
                Event::ReleaseRequested(r) => requested = Some((record.sequence, r)),
                Event::ReleasePlanned(p) => {
                    remaining = p.plan.steps.iter().map(|s| s.id.clone()).collect();
                }
                Event::StepSucceeded(o) => {
                    remaining.remove(&o.step);
                }
                Event::ReleaseRejected(_)
                | Event::ReleaseCancelled(_)
                | Event::ReleaseCompleted(_)
                | Event::ReleaseRolledBack(_) => ended = true,
                _ => {}
            }
        }
        if let (Some((sequence, request)), false) = (requested, ended) {
            out.push(InFlight {
                release: request.release,
                sequence,
                changes: request.changes,
                remaining,
            });
        }
    }
    out.sort_by_key(|f| f.sequence);
    Ok(out)
}

/// A release file that cannot be previewed: 400 with what is wrong, where (key path, and line
/// and column when known) and what to do.
fn bad_file(detail: String, path: &str, position: Option<(usize, usize)>) -> Response {
    let mut body = json!({
        "error": "bad release file",
        "detail": detail,
        "path": path,
    });
    if let Some((line, column)) = position {
        body["line"] = json!(line);
        body["column"] = json!(column);
    }
    (StatusCode::BAD_REQUEST, Json(body)).into_response()
}

/// `POST /v1/plan/preview`: the body is a release file (TOML, or JSON when sent as
/// `application/json` or starting with `{`). Answers `{"outcome": "planned", "plan"}` or
/// `{"outcome": "refused", "refusals"}` with what it was planned against; appends nothing. A
/// token that ran [`PREVIEW_BURST`] previews in a row is answered 429 with `Retry-After` until
/// its next one is back ([`PreviewLimit`]); a file refused before planning does not count.
async fn preview(
    State(console): State<Console>,
    Authenticated(who): Authenticated,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let Some(catalog) = console.catalog.clone() else {
        return Err(ApiError::unavailable(
            "this process serves the read side without the catalog, so it cannot plan: preview on `railyard dev`, or run `railyard plan --catalog railyard.toml --release <file>`",
        ));
    };
    let Ok(text) = std::str::from_utf8(&body) else {
        return Ok(bad_file(
            "the body is not valid utf-8: send the release file as text".into(),
            "",
            None,
        ));
    };
    if text.trim().is_empty() {
        return Ok(bad_file(
            "the release file is empty: paste or upload a release.toml (INTERFACES §4)".into(),
            "release",
            None,
        ));
    }
    let json_body = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
        || text.trim_start().starts_with('{');
    let parsed = if json_body {
        ReleaseFile::from_json(text)
    } else {
        ReleaseFile::from_toml(text)
    };
    let file = match parsed {
        Ok(file) => file,
        Err(error) => {
            let detail = error.to_string();
            return Ok(bad_file(detail, &error.path, error.position));
        }
    };
    if file.changes.is_empty() {
        return Ok(bad_file(
            "a release needs at least one change: add a [[changes]] entry".into(),
            "release.changes",
            None,
        ));
    }
    for (i, change) in file.changes.iter().enumerate() {
        if !catalog.services.contains_key(&change.service) {
            let known: Vec<&str> = catalog.services.keys().map(|s| s.as_str()).collect();
            return Ok(bad_file(
                format!(
                    "service {:?} is not in the catalog: use one of [{}] or add it to railyard.toml",
                    change.service.as_str(),
                    known.join(", ")
                ),
                &format!("release.changes[{i}].service"),
                None,
            ));
        }
    }

    // Only a file that will be planned counts against the token: reading the record is the cost.
    if let Err(wait) = console
        .previews
        .take(&who.name, console.audit.config().clock.now())
    {
        return Ok(too_many_previews(&who.name, wait));
    }
    let reader = console.audit.reader();
    let head = reader.head().await?;
    let (inventory, inventory_record) = current_inventory(&console).await?;
    let in_flight = releases_in_flight(reader, &file.id).await?;
    let mut warnings = Vec::new();
    if let Some(bytes) = reader
        .store()
        .get(&keys::release_summary(file.id.as_str()))
        .await
        .map_err(AuditError::from)?
    {
        let status = serde_json::from_slice::<ReleaseSummary>(&bytes)
            .map(|s| format!(" ({})", s.status))
            .unwrap_or_default();
        warnings.push(format!(
            "release {} exists already{status}: submitting this file would be refused; give it a new id",
            file.id
        ));
    }
    let flights: Vec<String> = in_flight.iter().map(|f| f.release.to_string()).collect();
    let request = ReleaseRequested {
        release: file.id.clone(),
        requested_by: who.name.clone(),
        changes: file.changes.clone(),
    };
    // Planning is pure but not free with many releases in flight: off the async threads.
    let decided = tokio::task::spawn_blocking(move || {
        railyard_plan::plan(&PlanInput {
            catalog: &catalog,
            release: &request,
            inventory: &inventory,
            in_flight: &in_flight,
        })
    })
    .await
    .map_err(|error| {
        warn!(error = %error, "plan preview failed");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error",
            "the planner failed on this file: run `railyard plan` on it to see why",
            "",
        )
    })?;
    let against = json!({
        "stream_sequence": head.sequence,
        "inventory_record": inventory_record,
        "in_flight": flights,
    });
    let answer = match decided {
        Ok(plan) => json!({
            "release": file.id,
            "outcome": "planned",
            "plan": plan,
            "against": against,
            "warnings": warnings,
        }),
        Err(refusals) => json!({
            "release": file.id,
            "outcome": "refused",
            "refusals": refusals.refusals(),
            "against": against,
            "warnings": warnings,
        }),
    };
    Ok(Json(answer).into_response())
}

/// `GET /v1/live/releases`: without `Last-Event-ID`, first a `ready` event whose id is the
/// stream sequence the record has reached (load the list after it: nothing later is missed),
/// then a `release` event each time releases change (`{"releases": [summary...]}`, id = the
/// stream sequence of the newest event among them). With `Last-Event-ID: <sequence>`, every
/// release changed after that sequence first, then live.
async fn live_releases(
    State(console): State<Console>,
    Authenticated(_): Authenticated,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let last_event_id = match headers.get("last-event-id") {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::malformed(
                        "Last-Event-ID must be the id of an event this stream sent (a stream sequence)",
                        "Last-Event-ID",
                    )
                })?,
        ),
    };
    let reader = console.audit.reader().clone();
    let head = reader.head().await?;
    let mut pending = VecDeque::new();
    let after_n = match last_event_id {
        None => {
            pending.push_back(
                SseEvent::default()
                    .id(head.sequence.to_string())
                    .event("ready")
                    .data(json!({ "sequence": head.sequence }).to_string()),
            );
            head.n
        }
        Some(sequence) => last_record_at_or_before(&reader, sequence, head.n).await?,
    };
    let committed = reader.store().watch_checkpoint();
    let state = LiveList {
        audit: console.audit.clone(),
        after_n,
        pending,
        committed,
        ended: false,
    };
    Ok(Sse::new(live_stream(state)))
}

/// The last record whose stream sequence is at most `sequence` (0 when none is): records are
/// numbered in stream order, so a binary search over `1..=head` finds it.
pub(crate) async fn last_record_at_or_before(
    reader: &Reader,
    sequence: u64,
    head: u64,
) -> Result<u64, AuditError> {
    let (mut low, mut high) = (0u64, head); // record `low` is at or before; `high + 1` is after
    while low < high {
        let mid = low + (high - low).div_ceil(2);
        let at = match reader.record(mid).await? {
            Some(record) => record.sequence,
            None => u64::MAX,
        };
        if at <= sequence {
            low = mid;
        } else {
            high = mid - 1;
        }
    }
    Ok(low)
}

struct LiveList {
    audit: Audit,
    after_n: u64,
    pending: VecDeque<SseEvent>,
    committed: tokio::sync::watch::Receiver<u64>,
    ended: bool,
}

/// Reads the records after `after_n` up to the head and turns them into `release` events: each
/// release changed once, at the sequence of its newest event, oldest first; releases sharing a
/// sequence share an event, so an id never splits what it covers.
async fn changed_since(s: &mut LiveList) -> Result<(), AuditError> {
    let reader = s.audit.reader();
    let head = reader.head().await?;
    let mut newest: BTreeMap<String, u64> = BTreeMap::new();
    while s.after_n < head.n {
        // The records after `after_n`, a store call per LIVE_PAGE of them.
        let through = head.n.min(s.after_n.saturating_add(LIVE_PAGE));
        let numbers: Vec<u64> = (s.after_n + 1..=through).collect();
        for record in reader.records_numbered(&numbers).await?.into_values() {
            if let Some(release) = record.facets.release {
                let at = newest.entry(release).or_default();
                *at = (*at).max(record.sequence);
            }
        }
        s.after_n = through;
    }
    let releases: Vec<String> = newest.keys().cloned().collect();
    let summary_keys: Vec<_> = releases
        .iter()
        .map(|release| keys::release_summary(release))
        .collect();
    let mut summaries: BTreeMap<String, ReleaseSummary> = BTreeMap::new();
    for (release, bytes) in releases
        .into_iter()
        .zip(reader.store().get_many(&summary_keys).await?)
    {
        if let Some(summary) =
            bytes.and_then(|bytes| serde_json::from_slice::<ReleaseSummary>(&bytes).ok())
        {
            summaries.insert(release, summary);
        }
    }
    let mut by_sequence: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for (release, sequence) in newest {
        by_sequence.entry(sequence).or_default().push(release);
    }
    for (sequence, releases) in by_sequence {
        let summaries: Vec<ReleaseSummary> = releases
            .iter()
            .filter_map(|release| summaries.remove(release))
            .collect();
        if summaries.is_empty() {
            continue;
        }
        let event = SseEvent::default()
            .id(sequence.to_string())
            .event("release")
            .json_data(json!({ "sequence": sequence, "releases": summaries }))
            .unwrap_or_else(|_| SseEvent::default().comment("a summary that does not serialize"));
        s.pending.push_back(event);
    }
    Ok(())
}

fn live_stream(state: LiveList) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    futures::stream::unfold(state, |mut s| async move {
        if s.ended {
            return None;
        }
        loop {
            if let Some(event) = s.pending.pop_front() {
                return Some((Ok(event), s));
            }
            // Mark the current checkpoint seen before reading, so a commit that lands after
            // the read wakes the wait below.
            s.committed.borrow_and_update();
            if let Err(error) = changed_since(&mut s).await {
                warn!(error = %error, "live release list stopped");
                s.ended = true;
                let event = SseEvent::default()
                    .event("error")
                    .data(format!("{error}: reconnect with Last-Event-ID to resume"));
                return Some((Ok(event), s));
            }
            if !s.pending.is_empty() {
                continue;
            }
            let config = s.audit.config();
            let keep_alive = config.clock.sleep(config.keep_alive);
            let shutdown = s.audit.shutdown().clone();
            tokio::select! {
                changed = s.committed.changed() => if changed.is_err() { return None },
                () = shutdown.cancelled() => return None,
                () = keep_alive => return Some((Ok(SseEvent::default().comment("keep-alive")), s)),
            }
        }
    })
}

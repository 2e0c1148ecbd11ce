//! The read side over HTTP (INTERFACES §6–7): `GET /v1/releases` (the list, newest first,
//! filtered by service, environment, status, requester and time, cursor pages; any valid
//! token), `GET /v1/releases/{id}` (status, any valid
//! token), `GET /v1/releases/{id}/events` (Server-Sent Events: the release's history, then
//! live; the SSE id is a stream sequence, so `Last-Event-ID` resumes), `GET
//! /v1/audit/{query}` (auditor; JSON pages with a cursor, or `format=csv`), `POST
//! /v1/audit/verify` (auditor) and `GET /v1/audit/export` (auditor: the whole record as JSON
//! lines, sealed for the export by a signed checkpoint; see [`crate::export`]). For the web
//! console (served at `/` by [`railyard_console::router`], merged here): `GET /v1/whoami` (the
//! token's identity and roles, so the page shows only the actions the role may take) and `GET
//! /v1/releases/{id}/plan` (the release's plan as the planner made it: steps, edges with rule
//! and reason, waves and the critical path; any valid token) and `GET /v1/estate` (what runs
//! where with its contract versions, folded from the recorded `service.deployed` events, in
//! the inventory format of INTERFACES §5; any valid token).

use std::collections::VecDeque;
use std::convert::Infallible;

use axum::extract::{FromRef, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::Stream;
use railyard_core::ReleaseId;
use railyard_http::{ApiError, Authenticated, Role, Tokens};
use serde::Deserialize;
use tracing::warn;

use crate::error::AuditError;
use crate::format::{OutputFormat, csv};
use crate::items::EventItem;
use crate::queries::{Answer, QueryKind, run_query};
use crate::query::{Filter, parse_time};
use crate::record::Record;
use crate::releases::{ReleaseFilter, parse_status};
use crate::service::Audit;
use crate::status::release_status;

/// Default page size of audit queries.
pub const DEFAULT_LIMIT: usize = 100;

impl FromRef<Audit> for Tokens {
    fn from_ref(audit: &Audit) -> Tokens {
        audit.config().tokens.clone()
    }
}

/// The routes of `railyard audit serve` (the ops routes are merged by the binary).
pub fn router(audit: Audit) -> Router {
    Router::new()
        .route("/v1/releases", get(list))
        .route("/v1/releases/{id}", get(status))
        .route("/v1/releases/{id}/events", get(events))
        .route("/v1/releases/{id}/plan", get(plan))
        .route("/v1/whoami", get(whoami))
        .route("/v1/estate", get(estate))
        .route("/v1/audit/verify", post(verify))
        .route("/v1/audit/export", get(export))
        .route("/v1/audit/{query}", get(query))
        .with_state(audit)
        .merge(railyard_console::router())
}

/// `GET /v1/whoami`: who the token is and its roles.
async fn whoami(Authenticated(who): Authenticated) -> Response {
    Json(serde_json::json!({
        "identity": who.name,
        "roles": who.roles.iter().map(|role| role.as_str()).collect::<Vec<_>>(),
    }))
    .into_response()
}

/// `GET /v1/estate`: the inventory folded from every recorded `service.deployed`, oldest first
/// (the planner's own fold: a service with no `running` left the environment; database
/// versions ride on the events), with the record it is current to.
async fn estate(
    State(audit): State<Audit>,
    Authenticated(_): Authenticated,
) -> Result<Response, ApiError> {
    let (inventory, records) = crate::console_api::recorded_inventory(audit.reader()).await?;
    Ok(Json(serde_json::json!({ "inventory": inventory, "last_record": records })).into_response())
}

/// `GET /v1/releases/{id}/plan`: the plan the release carries (404 before it is planned or when
/// it was refused).
async fn plan(
    State(audit): State<Audit>,
    Authenticated(_): Authenticated,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = release_id(&id)?;
    let records = audit.reader().release_records(id.as_str(), None).await?;
    let folded = crate::status::fold_records(&records);
    match folded.state {
        Some(state) => match state.plan {
            Some(plan) => Ok(Json(plan.as_ref()).into_response()),
            None => Err(ApiError::not_found(
                format!(
                    "release {id} has no plan ({}): a refused release lists why in GET /v1/releases/{id}",
                    state.status
                ),
                "id",
            )),
        },
        None => Err(ApiError::not_found(
            format!(
                "release {id} has no events in the audit record: check the id (`railyard release list` lists them), or wait for the projection to catch up"
            ),
            "id",
        )),
    }
}

impl From<AuditError> for ApiError {
    fn from(error: AuditError) -> ApiError {
        match error {
            AuditError::InvalidQuery { field, problem } => ApiError::invalid(problem, field),
            AuditError::NotFound(detail) => ApiError::not_found(detail, ""),
            AuditError::Bus(error) => ApiError::unavailable(format!(
                "{error}: the audit service cannot reach NATS; retry later"
            )),
            other => {
                warn!(error = %other, "audit request failed");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error",
                    other.to_string(),
                    "",
                )
            }
        }
    }
}

fn release_id(id: &str) -> Result<ReleaseId, ApiError> {
    ReleaseId::new(id).map_err(|error| ApiError::invalid(error.to_string(), "id"))
}

async fn status(
    State(audit): State<Audit>,
    Authenticated(_): Authenticated,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = release_id(&id)?;
    let records = audit.reader().release_records(id.as_str(), None).await?;
    match release_status(&records) {
        Some(status) => Ok(Json(status).into_response()),
        None => Err(ApiError::not_found(
            format!(
                "release {id} has no events in the audit record: check the id (`railyard release list` lists them), or wait for the projection to catch up"
            ),
            "id",
        )),
    }
}

#[derive(Debug, Default, Deserialize)]
struct ListParams {
    service: Option<String>,
    env: Option<String>,
    status: Option<String>,
    requester: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

impl ListParams {
    fn filter(&self, now: chrono::DateTime<chrono::Utc>) -> Result<ReleaseFilter, AuditError> {
        let status = match self.status.as_deref() {
            None => None,
            Some(text) => Some(parse_status(text).ok_or_else(|| {
                AuditError::invalid(
                    "status",
                    format!(
                        "{text:?} is not a release status: use requested, planned, held, completed, rolled_back, rejected, cancelled or denied"
                    ),
                )
            })?),
        };
        Ok(ReleaseFilter {
            service: self.service.clone(),
            env: self.env.clone(),
            status,
            requester: self.requester.clone(),
            since: self
                .since
                .as_deref()
                .map(|t| parse_time("since", t, now))
                .transpose()?,
            until: self
                .until
                .as_deref()
                .map(|t| parse_time("until", t, now))
                .transpose()?,
        })
    }
}

/// `GET /v1/releases`: releases newest first, filtered, one page at a time (any valid token,
/// like a release's status).
async fn list(
    State(audit): State<Audit>,
    Authenticated(_): Authenticated,
    params: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = params.map_err(|error| ApiError::malformed(error.body_text(), "query"))?;
    let filter = params.filter(audit.config().clock.now())?;
    let page = audit
        .reader()
        .releases(
            &filter,
            params.cursor.as_deref(),
            params.limit.unwrap_or(DEFAULT_LIMIT),
        )
        .await?;
    Ok(Json(page).into_response())
}

#[derive(Debug, Deserialize)]
struct EventsParams {
    /// Resume after this stream sequence (as `Last-Event-ID` does).
    after: Option<u64>,
}

/// `GET /v1/releases/{id}/events`: the release's events after the stream sequence given by
/// `Last-Event-ID` (or `?after=`; from the start without either), then each new one as the
/// projection commits it. Each event's SSE id is the stream sequence through which the client
/// then holds every event of the release: the event's own sequence when it is the last of its
/// append, the one before it otherwise (an append may carry several events), so a reconnect
/// with `Last-Event-ID` misses nothing and repeats at most the rest of one append (`n` tells
/// the repeats apart).
async fn events(
    State(audit): State<Audit>,
    Authenticated(_): Authenticated,
    Path(id): Path<String>,
    Query(params): Query<EventsParams>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let id = release_id(&id)?;
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
    let after_n = match last_event_id.or(params.after) {
        None | Some(0) => 0,
        Some(sequence) => {
            let reader = audit.reader();
            let head = reader.head().await?;
            crate::console_api::last_record_at_or_before(reader, sequence, head.n).await?
        }
    };
    Ok(Sse::new(release_stream(audit, id.to_string(), after_n)))
}

struct Follow {
    audit: Audit,
    release: String,
    /// The last record read (a record number: the release's index is keyed by them).
    after_n: u64,
    /// Records read and not sent yet, each with its SSE id.
    pending: VecDeque<(Record, u64)>,
    committed: tokio::sync::watch::Receiver<u64>,
    ended: bool,
}

fn sse_event(record: &Record, id: u64) -> Event {
    let item = EventItem::from(record);
    Event::default()
        .id(id.to_string())
        .event(item.kind.clone())
        .json_data(&item)
        .unwrap_or_else(|_| Event::default().comment("an event that does not serialize"))
}

/// Queues `records` (the release's, in stream order, each append whole) with their SSE ids:
/// a record's own stream sequence when the next one is of another append, else the sequence
/// before it.
fn queue(pending: &mut VecDeque<(Record, u64)>, records: Vec<Record>) {
    let mut records = records.into_iter().peekable();
    while let Some(record) = records.next() {
        let id = match records.peek() {
            Some(next) if next.sequence == record.sequence => record.sequence.saturating_sub(1),
            _ => record.sequence,
        };
        pending.push_back((record, id));
    }
}

/// The release's records after record `after_n`, then each new one as the projection commits
/// it.
fn release_stream(
    audit: Audit,
    release: String,
    after_n: u64,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let committed = audit.reader().store().watch_checkpoint();
    let state = Follow {
        audit,
        release,
        after_n,
        pending: VecDeque::new(),
        committed,
        ended: false,
    };
    futures::stream::unfold(state, |mut s| async move {
        if s.ended {
            return None;
        }
        loop {
            if let Some((record, id)) = s.pending.pop_front() {
                return Some((Ok(sse_event(&record, id)), s));
            }
            // Mark the current checkpoint seen before reading, so a commit that lands
            // after the read wakes the wait below.
            s.committed.borrow_and_update();
            let reader = s.audit.reader();
            // The head is written in the same batch as an append's records: reading only up
            // to it, every append read is whole, so the last record read ends its append.
            let read = match reader.head().await {
                Ok(head) => reader
                    .release_records(&s.release, Some(s.after_n))
                    .await
                    .map(|records| (head, records)),
                Err(error) => Err(error),
            };
            match read {
                Ok((head, mut records)) => {
                    records.retain(|record| record.n <= head.n);
                    if let Some(last) = records.last() {
                        s.after_n = last.n;
                        queue(&mut s.pending, records);
                        continue;
                    }
                }
                Err(error) => {
                    warn!(release = %s.release, error = %error, "event stream stopped");
                    s.ended = true;
                    let event = Event::default()
                        .event("error")
                        .data(format!("{error}: reconnect with Last-Event-ID to resume"));
                    return Some((Ok(event), s));
                }
            }
            let keep_alive = s.audit.config().clock.sleep(s.audit.config().keep_alive);
            let shutdown = s.audit.shutdown().clone();
            tokio::select! {
                changed = s.committed.changed() => if changed.is_err() { return None },
                () = shutdown.cancelled() => return None,
                () = keep_alive => return Some((Ok(Event::default().comment("keep-alive")), s)),
            }
        }
    })
}

#[derive(Debug, Default, Deserialize)]
struct QueryParams {
    release: Option<String>,
    service: Option<String>,
    env: Option<String>,
    actor: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    family: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
    format: Option<String>,
}

impl QueryParams {
    fn filter(&self, now: chrono::DateTime<chrono::Utc>) -> Result<Filter, AuditError> {
        Ok(Filter {
            release: self.release.clone(),
            service: self.service.clone(),
            env: self.env.clone(),
            actor: self.actor.clone(),
            kind: self.kind.clone(),
            family: self.family.clone(),
            since: self
                .since
                .as_deref()
                .map(|t| parse_time("since", t, now))
                .transpose()?,
            until: self
                .until
                .as_deref()
                .map(|t| parse_time("until", t, now))
                .transpose()?,
        })
    }
}

async fn query(
    State(audit): State<Audit>,
    Authenticated(who): Authenticated,
    Path(name): Path<String>,
    params: Result<Query<QueryParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    who.require(Role::Auditor)?;
    let Query(params) = params.map_err(|error| ApiError::malformed(error.body_text(), "query"))?;
    let kind = QueryKind::parse(&name)?;
    let format = match params.format.as_deref() {
        None | Some("json") => OutputFormat::Json,
        Some("csv") => OutputFormat::Csv,
        Some(other) => {
            return Err(ApiError::invalid(
                format!("format {other:?} is not served: use json or csv"),
                "format",
            ));
        }
    };
    let filter = params.filter(audit.config().clock.now())?;
    let answer = run_query(
        &audit,
        kind,
        filter,
        params.cursor.as_deref(),
        params.limit.unwrap_or(DEFAULT_LIMIT),
    )
    .await?;
    if format == OutputFormat::Json {
        return Ok(Json(answer).into_response());
    }
    let (body, next) = match answer {
        Answer::Events(page) => (csv(&page.items), page.next_cursor),
        Answer::Approvals(page) => (csv(&page.items), page.next_cursor),
        Answer::Gates(page) => (csv(&page.items), page.next_cursor),
        Answer::Rejections(page) => (csv(&page.items), page.next_cursor),
        Answer::Report(page) => (csv(&page.items), page.next_cursor),
        Answer::Dora(page) => (csv(&page.items), page.next_cursor),
    };
    let mut response = ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], body).into_response();
    if let Some(next) = next.and_then(|next| HeaderValue::from_str(&next).ok()) {
        response.headers_mut().insert("railyard-next-cursor", next);
    }
    Ok(response)
}

async fn verify(
    State(audit): State<Audit>,
    Authenticated(who): Authenticated,
) -> Result<Response, ApiError> {
    who.require(Role::Auditor)?;
    Ok(Json(audit.verify().await?).into_response())
}

/// `GET /v1/audit/export`: seals the head (a checkpoint appended to the stream), then streams
/// records 1 to the sealed one and the checkpoint as the trailer. Without a signing key, every
/// record and no trailer.
async fn export(
    State(audit): State<Audit>,
    Authenticated(who): Authenticated,
) -> Result<Response, ApiError> {
    who.require(Role::Auditor)?;
    let trailer = audit.seal_for_export().await?;
    let upto = match &trailer {
        Some(trailer) => trailer.records,
        None => audit.reader().head().await?.n,
    };
    let now = audit.config().clock.now();
    let lines = crate::export::lines(audit.reader().clone(), now, upto, trailer);
    let body = axum::body::Body::from_stream(futures::StreamExt::map(lines, |line| {
        line.map_err(|error| {
            warn!(error = %error, "audit export stopped");
            std::io::Error::other(error.to_string())
        })
    }));
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response())
}

//! The intake routes (INTERFACES §6): `POST /v1/cdevents`, `/v1/webhooks/github`,
//! `/v1/webhooks/gitlab` and `/v1/releases`. Each reads the body itself (so an oversize body
//! is a 413 in the house error format and lands in the rejection log), then hands it to
//! [`Intake`]. The ops routes are not here: the binary merges `railyard_http::ops_router`.
//! The operator routes `/v1/releases/{id}/approve|deny|hold|resume|rollback|cancel|retry`
//! belong to the promoter and are not served by this router.
//!
//! A request's origin is the socket's peer (serve the router with `railyard_http::serve`),
//! or the client a trusted proxy names in `X-Forwarded-For` ([`IntakeConfig::trusted_proxies`]).
//!
//! Every request is handled inside an `intake.request` span — the root of the release's
//! trace, or a child of the caller's when it sends a W3C `traceparent` — so the events it
//! appends carry that trace to every service downstream.

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use railyard_http::{Origin, Role};
use tracing::Instrument;

#[cfg(doc)]
use crate::IntakeConfig;

use crate::intake::{Door, Headers, Intake, read_body};

/// Every intake route over `intake`.
pub fn router(intake: Intake) -> Router {
    Router::new()
        .route("/v1/cdevents", post(cdevents))
        .route("/v1/webhooks/github", post(github))
        .route("/v1/webhooks/gitlab", post(gitlab))
        .route("/v1/releases", post(releases))
        .layer(DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn(traced))
        .with_state(intake)
}

/// Runs the request inside an `intake.request` span in the caller's trace, if it sent one.
async fn traced(request: Request, next: axum::middleware::Next) -> Response {
    let span = tracing::info_span!(
        "intake.request",
        service = "intake",
        otel.kind = "server",
        method = %request.method(),
        path = %request.uri().path(),
        release = tracing::field::Empty,
        status = tracing::field::Empty,
    );
    let parent = railyard_bus::extract_trace_with(|name| {
        request.headers().get(name).and_then(|v| v.to_str().ok())
    });
    railyard_bus::follow_trace(&span, &parent);
    let response = next.run(request).instrument(span.clone()).await;
    span.record("status", response.status().as_u16());
    response
}

/// Where a request came from: the socket's peer, or the client a trusted proxy forwarded it
/// for; `unknown` when the router is served without the peer address.
fn origin(intake: &Intake, request: &Request) -> Origin {
    Origin::of_request(request, &intake.config().trusted_proxies)
}

fn declared_length(request: &Request) -> Option<u64> {
    request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

fn authorization(request: &Request) -> Option<String> {
    request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Reads the body or answers 413/400 (recorded in the rejection log; sampled like a 401 on
/// the webhook doors, whose sender is not authenticated until the body is read).
async fn body(
    intake: &Intake,
    door: Door,
    origin: &Origin,
    request: Request,
) -> Result<(Headers, bytes::Bytes), Response> {
    let headers = Headers::from_http(request.headers());
    let declared = declared_length(&request);
    match read_body(request.into_body(), declared, intake.config().body_limit).await {
        Ok(bytes) => Ok((headers, bytes)),
        Err(refused) => {
            let refused = match door {
                Door::GitHub | Door::GitLab => {
                    intake
                        .refuse_unauthenticated(door, origin, b"", refused)
                        .await
                }
                _ => intake.refuse(door, origin, b"", refused).await,
            };
            Err(refused.into_response())
        }
    }
}

async fn cdevents(State(intake): State<Intake>, request: Request) -> Response {
    let origin = origin(&intake, &request);
    let authorization = authorization(&request);
    let identity = match intake
        .authenticate(
            Door::CdEvents,
            &origin,
            authorization.as_deref(),
            Role::Publisher,
        )
        .await
    {
        Ok(identity) => identity,
        Err(refused) => return refused.into_response(),
    };
    let (headers, bytes) = match body(&intake, Door::CdEvents, &origin, request).await {
        Ok(read) => read,
        Err(response) => return response,
    };
    intake
        .cdevent(Door::CdEvents, &identity, &origin, &headers, &bytes)
        .await
        .into_response()
}

async fn github(State(intake): State<Intake>, request: Request) -> Response {
    let origin = origin(&intake, &request);
    let (headers, bytes) = match body(&intake, Door::GitHub, &origin, request).await {
        Ok(read) => read,
        Err(response) => return response,
    };
    intake
        .github(&origin, &headers, &bytes)
        .await
        .into_response()
}

async fn gitlab(State(intake): State<Intake>, request: Request) -> Response {
    let origin = origin(&intake, &request);
    let (headers, bytes) = match body(&intake, Door::GitLab, &origin, request).await {
        Ok(read) => read,
        Err(response) => return response,
    };
    intake
        .gitlab(&origin, &headers, &bytes)
        .await
        .into_response()
}

async fn releases(State(intake): State<Intake>, request: Request) -> Response {
    let origin = origin(&intake, &request);
    let authorization = authorization(&request);
    let identity = match intake
        .authenticate(
            Door::Releases,
            &origin,
            authorization.as_deref(),
            Role::Publisher,
        )
        .await
    {
        Ok(identity) => identity,
        Err(refused) => return refused.into_response(),
    };
    let (headers, bytes) = match body(&intake, Door::Releases, &origin, request).await {
        Ok(read) => read,
        Err(response) => return response,
    };
    intake
        .submit_release(&identity, &origin, &headers, &bytes)
        .await
        .into_response()
}

//! NATS intake: request/reply on `railyard.intake.cdevents` (queue group `railyard-intake`, so
//! several intakes share the load). A request carries a CloudEvent in binary mode (`ce-*`
//! headers) or structured mode, or a bare CDEvent; the reply mirrors the HTTP answer:
//! `{"status": 202, "outcome": ...}` or `{"status": 422, "error": ..., "detail": ..., "path": ...}`.

use std::sync::Arc;
use std::time::Duration;

use railyard_bus::Bus;
use railyard_http::Origin;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::IntakeConfig;
use crate::error::IntakeError;
use crate::intake::{Door, Headers, Intake};

/// The request/reply subject.
pub const INTAKE_SUBJECT: &str = "railyard.intake.cdevents";
/// The queue group every intake joins.
pub const QUEUE_GROUP: &str = "railyard-intake";
/// The actor of events that arrive over NATS (the NATS user is the authentication).
pub const NATS_ACTOR: &str = "nats:railyard.intake.cdevents";
/// How long shutdown waits for requests in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Builds an [`Intake`] from `config` and serves NATS requests until `shutdown` (for a
/// process that serves no HTTP; otherwise build one `Intake` and call [`serve_nats`] and
/// [`crate::router`] with it).
pub async fn run(
    config: IntakeConfig,
    bus: Bus,
    shutdown: CancellationToken,
) -> Result<(), IntakeError> {
    bus.ensure_topology().await?;
    serve_nats(Intake::new(config, bus), shutdown).await
}

/// Answers requests on [`INTAKE_SUBJECT`] until `shutdown`, then waits (bounded) for the
/// requests in flight.
pub async fn serve_nats(intake: Intake, shutdown: CancellationToken) -> Result<(), IntakeError> {
    let mut subscription = intake
        .bus()
        .serve(INTAKE_SUBJECT, QUEUE_GROUP)
        .await
        .map_err(|error| IntakeError::Subscribe {
            subject: INTAKE_SUBJECT.to_owned(),
            source: Box::new(error),
        })?;
    let limit = intake.config().nats_concurrency.max(1);
    let permits = Arc::new(Semaphore::new(limit));
    tracing::info!(
        subject = INTAKE_SUBJECT,
        group = QUEUE_GROUP,
        "nats intake serving"
    );
    let ended = loop {
        let message = tokio::select! {
            () = shutdown.cancelled() => break false,
            message = subscription.next() => message,
        };
        let Some(message) = message else { break true };
        let permit = tokio::select! {
            () = shutdown.cancelled() => break false,
            permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
        };
        let intake = intake.clone();
        let span = tracing::info_span!(
            "intake.request",
            service = "intake",
            otel.kind = "server",
            method = "nats",
            path = INTAKE_SUBJECT,
            release = tracing::field::Empty,
            status = tracing::field::Empty,
        );
        if let Some(headers) = &message.headers {
            railyard_bus::follow_trace(&span, &railyard_bus::extract_trace(headers));
        }
        let task = async move {
            let headers = message
                .headers
                .as_ref()
                .map(Headers::from_nats)
                .unwrap_or_default();
            let limit = intake.config().body_limit;
            let origin = Origin::named("nats");
            let reply = if message.payload.len() > limit {
                intake
                    .refuse(Door::Nats, &origin, b"", crate::Refused::too_large(limit))
                    .await
                    .to_reply()
            } else {
                match intake
                    .cdevent(Door::Nats, NATS_ACTOR, &origin, &headers, &message.payload)
                    .await
                {
                    Ok(answer) => answer.to_reply(),
                    Err(refused) => refused.to_reply(),
                }
            };
            if let Some(status) = reply.get("status").and_then(|status| status.as_u64()) {
                tracing::Span::current().record("status", status);
            }
            let payload = serde_json::to_vec(&reply).unwrap_or_default();
            if let Err(error) = message.respond(payload.into()).await {
                tracing::warn!(error = %railyard_bus::error_chain(&error), "cannot send an intake reply");
            }
            drop(permit);
        };
        tokio::spawn(crate::intake::owned_task(task).instrument(span));
    };
    subscription.stop().await;
    let clock = intake.config().clock.clone();
    tokio::select! {
        _ = permits.acquire_many(u32::try_from(limit).unwrap_or(u32::MAX)) => {}
        () = clock.sleep(DRAIN_TIMEOUT) => tracing::warn!("nats intake stopped with requests still in flight"),
    }
    if ended && !shutdown.is_cancelled() {
        return Err(IntakeError::SubscriptionEnded {
            subject: INTAKE_SUBJECT.to_owned(),
        });
    }
    Ok(())
}

//! The routes every Railyard process serves: `GET /healthz` (the process is alive),
//! `GET /readyz` (ready only while NATS answers) and `GET /metrics` (Prometheus text).

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use railyard_bus::Bus;

/// How long a readiness probe waits for NATS.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// The ops routes over `bus`.
pub fn router(bus: Bus) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(bus)
}

async fn readyz(State(bus): State<Bus>) -> impl IntoResponse {
    match tokio::time::timeout(READY_TIMEOUT, bus.stream_last_sequence()).await {
        Ok(Ok(_)) => (StatusCode::OK, "ready\n".to_owned()),
        Ok(Err(error)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {error}\n"),
        ),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: NATS did not answer within {READY_TIMEOUT:?}\n"),
        ),
    }
}

async fn metrics(State(bus): State<Bus>) -> impl IntoResponse {
    let mut out = String::new();
    out.push_str("# HELP railyard_build_info Railyard build.\n# TYPE railyard_build_info gauge\n");
    out.push_str(&format!(
        "railyard_build_info{{version=\"{}\"}} 1\n",
        env!("CARGO_PKG_VERSION")
    ));
    let last = tokio::time::timeout(READY_TIMEOUT, bus.stream_last_sequence()).await;
    out.push_str("# HELP railyard_nats_up Whether NATS answered this scrape.\n# TYPE railyard_nats_up gauge\n");
    match last {
        Ok(Ok(sequence)) => {
            out.push_str("railyard_nats_up 1\n");
            out.push_str(
                "# HELP railyard_events_last_sequence Last sequence of RAILYARD_EVENTS.\n",
            );
            out.push_str("# TYPE railyard_events_last_sequence gauge\n");
            out.push_str(&format!("railyard_events_last_sequence {sequence}\n"));
        }
        _ => out.push_str("railyard_nats_up 0\n"),
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        out,
    )
}

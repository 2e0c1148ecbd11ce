//! The routes every Railyard process serves — `GET /healthz` (alive), `GET /readyz` (ready
//! only while NATS answers) and `GET /metrics` (Prometheus text) — and the process's one
//! metrics registry that every service registers its metrics in.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;
use railyard_bus::Bus;

/// How long a readiness probe or a scrape waits for NATS.
const NATS_TIMEOUT: Duration = Duration::from_secs(2);

/// The process's metrics registry; clone freely.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            registry: Arc::new(Mutex::new(Registry::with_prefix("railyard"))),
        }
    }
}

impl Metrics {
    /// Registers a metric (`railyard_` is prefixed to `name`).
    pub fn register<M: prometheus_client::registry::Metric + Clone>(
        &self,
        name: &str,
        help: &str,
        metric: M,
    ) -> M {
        self.registry
            .lock()
            .expect("metrics registry lock")
            .register(name, help, metric.clone());
        metric
    }

    /// The registry in Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(
            &mut out,
            &self.registry.lock().expect("metrics registry lock"),
        )
        .expect("writing to a String cannot fail");
        out
    }
}

#[derive(Clone)]
struct OpsState {
    bus: Bus,
    metrics: Metrics,
}

/// The ops routes over `bus`, rendering `metrics`.
pub fn ops_router<S: Clone + Send + Sync + 'static>(bus: Bus, metrics: Metrics) -> Router<S> {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .with_state(OpsState { bus, metrics })
}

async fn readyz(State(state): State<OpsState>) -> impl IntoResponse {
    match tokio::time::timeout(NATS_TIMEOUT, state.bus.stream_last_sequence()).await {
        Ok(Ok(_)) => (StatusCode::OK, "ready\n".to_owned()),
        Ok(Err(error)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {error}\n"),
        ),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: NATS did not answer within {NATS_TIMEOUT:?}\n"),
        ),
    }
}

async fn render_metrics(State(state): State<OpsState>) -> impl IntoResponse {
    let mut out = String::new();
    out.push_str("# HELP railyard_nats_up Whether NATS answered this scrape.\n# TYPE railyard_nats_up gauge\n");
    match tokio::time::timeout(NATS_TIMEOUT, state.bus.stream_last_sequence()).await {
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
    out.push_str(&state.metrics.render());
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
}

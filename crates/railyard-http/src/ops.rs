//! The routes every Railyard process serves — `GET /healthz` (alive), `GET /readyz` (ready
//! only while NATS answers) and `GET /metrics` (Prometheus text) — and the process's one
//! metrics registry that every service registers its metrics in.
//!
//! Every registry carries the stream readers' metrics ([`Metrics::reader`]: events handled
//! and lag, per reader), and every scrape reads from NATS the end of `RAILYARD_EVENTS` and
//! the number of dead letters in `RAILYARD_DLQ`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use railyard_bus::Bus;

/// How long a readiness probe or a scrape waits for NATS.
const NATS_TIMEOUT: Duration = Duration::from_secs(2);

/// The process's metrics registry; clone freely.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
    readers: Readers,
    /// `railyard_leader{role}`: 1 while this process leads the role's replicas.
    leaders: Family<RoleLabel, Gauge>,
    /// Mirrors [`railyard_core::authority::refused`] at each render.
    authority_refused: Counter,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoleLabel {
    role: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReaderLabel {
    reader: String,
}

/// The stream readers' families, registered once per registry.
#[derive(Debug, Clone, Default)]
struct Readers {
    events: Family<ReaderLabel, Counter>,
    messages: Family<ReaderLabel, Counter>,
    pending: Family<ReaderLabel, Gauge>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        let metrics = Metrics {
            registry: Arc::new(Mutex::new(Registry::with_prefix("railyard"))),
            readers: Readers::default(),
            leaders: Family::default(),
            authority_refused: Counter::default(),
        };
        metrics.register(
            "leader",
            "1 while this process holds the leader lease of a replicated role (planner, notify, audit-sealer), 0 while it stands by",
            metrics.leaders.clone(),
        );
        metrics.register(
            "authority_refused",
            "Authority events (approvals, steps, holds...) this process read without a trusted writer's seal, which therefore did not count",
            metrics.authority_refused.clone(),
        );
        metrics.register(
            "reader_events",
            "Events handled by a stream reader of this process (the planner's, the audit's, the notifier's...), by reader",
            metrics.readers.events.clone(),
        );
        metrics.register(
            "reader_messages",
            "Stream messages (appends) handled by a stream reader of this process, by reader",
            metrics.readers.messages.clone(),
        );
        metrics.register(
            "reader_pending",
            "Messages in the stream a reader of this process has not handled yet (its lag), by reader",
            metrics.readers.pending.clone(),
        );
        metrics
    }
}

/// One stream reader's metrics: what it handled and how far behind it is. Clone freely.
#[derive(Debug, Clone)]
pub struct ReaderMetrics {
    events: Counter,
    messages: Counter,
    pending: Gauge,
}

impl ReaderMetrics {
    /// Records `messages` handled messages holding `events` events, with `pending` messages
    /// still waiting behind the last one.
    pub fn handled(&self, messages: u64, events: u64, pending: u64) {
        self.messages.inc_by(messages);
        self.events.inc_by(events);
        self.pending.set(i64::try_from(pending).unwrap_or(i64::MAX));
    }
}

impl Metrics {
    /// The metrics of the stream reader `reader` (`railyard_reader_*{reader="..."}`); asking
    /// twice for one name gives the same counters.
    pub fn reader(&self, reader: &str) -> ReaderMetrics {
        let label = ReaderLabel {
            reader: reader.to_owned(),
        };
        ReaderMetrics {
            events: self.readers.events.get_or_create(&label).clone(),
            messages: self.readers.messages.get_or_create(&label).clone(),
            pending: self.readers.pending.get_or_create(&label).clone(),
        }
    }

    /// The gauge `railyard_leader{role}` (0 until set): 1 while this process leads `role`.
    pub fn leader(&self, role: &str) -> Gauge {
        self.leaders
            .get_or_create(&RoleLabel {
                role: role.to_owned(),
            })
            .clone()
    }

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
        let refused = railyard_core::authority::refused();
        let shown = self.authority_refused.get();
        if refused > shown {
            self.authority_refused.inc_by(refused - shown);
        }
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
    // Left out (rather than shown as 0) when NATS does not answer or this process's NATS user
    // may not read the stream's info.
    if let Ok(Ok(count)) = tokio::time::timeout(NATS_TIMEOUT, state.bus.dead_letter_count()).await {
        out.push_str("# HELP railyard_dead_letters Messages in RAILYARD_DLQ: deliveries given up on, with why (railyard dlq list).\n");
        out.push_str("# TYPE railyard_dead_letters gauge\n");
        out.push_str(&format!("railyard_dead_letters {count}\n"));
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

//! One release is one trace: the `traceparent` that intake's request span puts on
//! `release.requested` travels in NATS headers through the planner's decision, the promotion
//! workers' steps, the audit projection and the notifier, so a release submitted over HTTP
//! yields spans from every service under one trace id. Spans go to an in-memory exporter
//! through the same `tracing-opentelemetry` layer `railyard` installs for OTLP.
//!
//! One test in this file: the subscriber is global to the test binary and must be in place
//! before the services start.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use opentelemetry::trace::{TraceId, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use railyard_core::Status;
use railyard_scenarios::{Options, POLL, RELEASE_TIMEOUT, Stack, safe_release};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// The spans every release must have in its trace, by name (services' spans are named
/// `<service>.<what>`; `<projection>.apply` is a read model applying one of the release's
/// messages). `promoter.step` is a worker taking and carrying out one step, `promoter.gate`
/// one gate check inside it, `promoter.command` the approval.
const REQUIRED: [&str; 8] = [
    "intake.request",
    "planner.decide",
    "promoter.apply",
    "promoter.step",
    "promoter.gate",
    "promoter.command",
    "audit.apply",
    "notify.handle",
];

fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

/// The trace of `release`: the trace id of intake's request span that requested it.
fn release_trace(spans: &[SpanData], release: &str) -> Option<TraceId> {
    spans
        .iter()
        .find(|s| s.name == "intake.request" && attribute(s, "release").as_deref() == Some(release))
        .map(|s| s.span_context.trace_id())
}

/// The names of the spans in `trace`, with how many of each.
fn names_in(spans: &[SpanData], trace: TraceId) -> BTreeMap<String, usize> {
    let mut names = BTreeMap::new();
    for span in spans.iter().filter(|s| s.span_context.trace_id() == trace) {
        *names.entry(span.name.to_string()).or_insert(0) += 1;
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_release_yields_spans_from_every_service_under_one_trace_id() -> anyhow::Result<()> {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    // The same filter `railyard` applies to exported spans by default.
    tracing_subscriber::registry()
        .with(
            tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("railyard-scenarios"))
                .with_filter(EnvFilter::new("railyard=debug")),
        )
        .try_init()?;

    let stack = Stack::start(Options::default()).await?;
    let id = stack.submit(&safe_release("rel-traced")).await?;
    stack.approve_when_asked(&id).await?;
    let state = stack.wait_end(&id, RELEASE_TIMEOUT).await?;
    assert_eq!(state.status, Status::Completed);
    stack.wait_audit(&id).await?;

    // The audit and the notifier finish with the last events after the release ended: wait
    // (bounded) until every service's span is in the release's trace.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let (trace, names) = loop {
        stack.check_services()?;
        let spans = exporter.get_finished_spans()?;
        if let Some(trace) = release_trace(&spans, id.as_str()) {
            let names = names_in(&spans, trace);
            if REQUIRED.iter().all(|name| names.contains_key(*name)) {
                break (trace, names);
            }
            if tokio::time::Instant::now() >= deadline {
                let missing: Vec<&str> = REQUIRED
                    .iter()
                    .copied()
                    .filter(|name| !names.contains_key(*name))
                    .collect();
                let elsewhere: BTreeSet<String> = spans
                    .iter()
                    .filter(|s| missing.contains(&&*s.name))
                    .map(|s| format!("{} in trace {}", s.name, s.span_context.trace_id()))
                    .collect();
                anyhow::bail!(
                    "the trace {trace} of {id} lacks {missing:?}; it holds {names:?}; the missing spans seen elsewhere: {elsewhere:?}"
                );
            }
        } else if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("no intake.request span with release={id} was exported");
        }
        tokio::time::sleep(POLL).await;
    };

    // The planner decided it once; the decision is in the same trace as the request.
    assert_eq!(names["planner.decide"], 1, "{names:?}");
    // The spans that name the release name this one.
    let spans = exporter.get_finished_spans()?;
    for span in spans.iter().filter(|s| s.span_context.trace_id() == trace) {
        if let Some(release) = attribute(span, "release") {
            assert_eq!(release, id.as_str(), "{} in {trace}", span.name);
        }
    }

    stack.stop().await?;
    provider.shutdown()?;
    Ok(())
}

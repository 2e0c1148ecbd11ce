//! Trace context crosses the bus: an append made inside a span is consumed with the same
//! trace id, and the consumer's span is a child of the appender's trace.

mod common;

use common::{bus, event, next, release};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::trace::SdkTracerProvider;
use railyard_bus::{ConsumerSpec, Expected};
use railyard_testkit::NatsServer;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;

#[tokio::test]
async fn trace_context_survives_a_publish_and_consume_round_trip() -> anyhow::Result<()> {
    let provider = SdkTracerProvider::builder().build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("railyard-bus-test")));
    // This test's runtime is single-threaded, so the subscriber covers every span it makes.
    let _guard = tracing::subscriber::set_default(subscriber);

    let server = NatsServer::start().await?;
    let bus = bus(&server.url()).await?;
    let rel = release("traced");

    let decide = tracing::info_span!("decide");
    let trace_id = decide.context().span().span_context().trace_id();
    assert!(decide.context().span().span_context().is_valid());
    bus.append(&rel, Expected::NoEvents, &[event(&rel, "traced")])
        .instrument(decide)
        .await?;

    let mut consumer = bus.durable(ConsumerSpec::new("traced-consumer")).await?;
    let delivery = next(&mut consumer).await?;
    let remote = delivery.trace.span().span_context().clone();
    assert!(remote.is_valid());
    assert!(remote.is_remote());
    assert_eq!(remote.trace_id(), trace_id);

    let handling = delivery.span();
    assert_eq!(
        handling.context().span().span_context().trace_id(),
        trace_id
    );
    delivery.ack().await?;

    // Outside any span, the append's own span starts a new trace.
    let untraced = release("untraced");
    bus.append(&untraced, Expected::NoEvents, &[event(&untraced, "plain")])
        .await?;
    let delivery = next(&mut consumer).await?;
    let own = delivery.trace.span().span_context().clone();
    assert!(own.is_valid());
    assert_ne!(own.trace_id(), trace_id);
    delivery.ack().await?;
    Ok(())
}

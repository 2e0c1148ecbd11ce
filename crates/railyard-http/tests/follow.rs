//! Release metrics follow the event stream: a release's steps, a failed gate and its end show
//! up in the rendered `/metrics` text.

use std::time::Duration;

use railyard_bus::{Bus, BusConfig, Expected};
use railyard_core::event::{GateEvaluated, ReleaseCompleted, StepOutcome, StepStarted};
use railyard_core::{AggregateId, Envelope, Event};
use railyard_http::{Metrics, follow_release_metrics};
use railyard_testkit::{NatsServer, wait_until};
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn steps_gates_and_outcomes_are_counted_from_the_stream() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let bus = Bus::connect(&nats.url(), BusConfig::default()).await?;
    bus.ensure_topology().await?;
    let metrics = Metrics::default();
    let stop = CancellationToken::new();
    let follower = tokio::spawn(follow_release_metrics(
        bus.clone(),
        metrics.clone(),
        stop.clone(),
    ));
    // The follower starts at the stream's end; wait until it is registered and reading.
    wait_until("metrics registered", Duration::from_secs(10), || async {
        Ok(metrics
            .render()
            .contains("railyard_metrics_reader_lag")
            .then_some(()))
    })
    .await?;

    let aggregate = AggregateId::Release("rel-1".parse()?);
    let t0: chrono::DateTime<chrono::Utc> = "2026-11-26T10:00:00Z".parse()?;
    let step = "production:deploy:orders-api".to_owned();
    let events = [
        (
            0,
            Event::StepStarted(StepStarted {
                step: step.clone(),
                worker: "w1".into(),
                attempt: 1,
            }),
        ),
        (
            3,
            Event::StepSucceeded(StepOutcome {
                step: step.clone(),
                detail: String::new(),
            }),
        ),
        (
            4,
            Event::GateEvaluated(GateEvaluated {
                step: "production:verify:orders-api".into(),
                gate: "http[0]".into(),
                passed: false,
                observed: "status 500".into(),
                expected: "status 200".into(),
            }),
        ),
        (5, Event::ReleaseCompleted(ReleaseCompleted {})),
    ];
    for (seconds, event) in events {
        let envelope = Envelope::new(
            aggregate.clone(),
            "w1",
            t0 + chrono::Duration::seconds(seconds),
            event,
        );
        bus.append(&aggregate, Expected::Any, &[envelope]).await?;
    }
    let text = wait_until("the release counted", Duration::from_secs(10), || async {
        let text = metrics.render();
        Ok(text
            .contains("railyard_releases_ended_total{outcome=\"completed\"} 1")
            .then_some(text))
    })
    .await?;
    assert!(text.contains("railyard_gate_failures_total 1"), "{text}");
    assert!(
        text.contains("railyard_events_total{type=\"step.started\"} 1"),
        "{text}"
    );
    assert!(
        text.contains(
            "railyard_step_duration_seconds_count{action=\"deploy\",result=\"succeeded\"} 1"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "railyard_step_duration_seconds_sum{action=\"deploy\",result=\"succeeded\"} 3.0"
        ),
        "{text}"
    );
    stop.cancel();
    follower.await??;
    Ok(())
}

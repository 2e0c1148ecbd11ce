//! Shared helpers for the bus tests: a bus on a real nats-server with millisecond timings,
//! events to append, and bounded waits for deliveries.
#![allow(dead_code)]

use std::time::Duration;

use railyard_bus::{Bus, BusConfig, Delivery, EventConsumer};
use railyard_core::event::Reasoned;
use railyard_core::{AggregateId, Envelope, Event, ManualClock};

/// Bound on every wait in the tests.
pub const WAIT: Duration = Duration::from_secs(20);

/// Timings that make redelivery and dead-lettering take milliseconds.
pub fn fast_config() -> BusConfig {
    BusConfig {
        ack_wait: Duration::from_millis(400),
        max_deliver: 3,
        backoff: vec![Duration::from_millis(20), Duration::from_millis(40)],
        request_timeout: Duration::from_secs(5),
        append_timeout: Duration::from_secs(15),
        pull_expires: Duration::from_secs(2),
        idle_heartbeat: Duration::from_millis(500),
        consumer_error_budget: Duration::from_secs(30),
        reconnect_max_delay: Duration::from_millis(200),
        ..BusConfig::default()
    }
}

/// A bus on `url` with `config` and its topology in place.
pub async fn bus_with(url: &str, config: BusConfig) -> anyhow::Result<Bus> {
    let bus = Bus::connect(url, config).await?;
    bus.ensure_topology().await?;
    Ok(bus)
}

/// A bus for lease tests: [`fast_config`] with a 60-second lease on a manual clock (set to
/// 2026-06-01T12:00:00Z) that the test moves.
pub async fn lease_bus(url: &str) -> anyhow::Result<(Bus, ManualClock)> {
    let clock = ManualClock::new("2026-06-01T12:00:00Z".parse()?);
    let config = BusConfig {
        lease_ttl: Duration::from_secs(60),
        clock: clock.shared(),
        ..fast_config()
    };
    Ok((bus_with(url, config).await?, clock))
}

/// A bus with [`fast_config`].
pub async fn bus(url: &str) -> anyhow::Result<Bus> {
    bus_with(url, fast_config()).await
}

/// `release.<id>`.
pub fn release(id: &str) -> AggregateId {
    format!("release.{id}").parse().expect("valid release id")
}

/// A `release.cancelled` event of `aggregate` whose reason names it.
pub fn event(aggregate: &AggregateId, reason: &str) -> Envelope {
    Envelope::new(
        aggregate.clone(),
        "test",
        chrono::Utc::now(),
        Event::ReleaseCancelled(Reasoned {
            reason: reason.to_owned(),
        }),
    )
}

/// The reasons of `release.cancelled` events, to compare what was stored.
pub fn reasons(events: &[Envelope]) -> Vec<String> {
    events
        .iter()
        .map(|envelope| match &envelope.event {
            Event::ReleaseCancelled(Reasoned { reason }) => reason.clone(),
            other => format!("<{}>", other.type_name()),
        })
        .collect()
}

/// The next delivery, failing after [`WAIT`].
pub async fn next(consumer: &mut EventConsumer) -> anyhow::Result<Delivery> {
    tokio::time::timeout(WAIT, consumer.next())
        .await
        .map_err(|_| anyhow::anyhow!("no delivery within {WAIT:?}"))??
        .ok_or_else(|| anyhow::anyhow!("the consumer closed"))
}

/// JetStream through a connection of the test's own (the bus keeps its client to itself), to
/// look at streams the way an operator's `nats` CLI would.
pub async fn raw_jetstream(url: &str) -> anyhow::Result<async_nats::jetstream::Context> {
    Ok(async_nats::jetstream::new(async_nats::connect(url).await?))
}

//! `ensure_topology` is idempotent: twice from one process, concurrently from several, and
//! after a configuration change it updates what can change.

mod common;

use std::time::Duration;

use async_nats::jetstream;
use common::fast_config;
use railyard_bus::names::{
    ADVISORIES_STREAM, DELIVERIES_BUCKET, DLQ_REASONS_BUCKET, DLQ_STREAM, EVENTS_STREAM,
    LEASES_BUCKET, REJECTED_STREAM, WORK_STREAM,
};
use railyard_bus::{Bus, BusConfig, BusError, Expected};
use railyard_testkit::NatsServer;

#[tokio::test]
async fn ensure_topology_twice_and_concurrently_succeeds() -> anyhow::Result<()> {
    let server = NatsServer::start().await?;
    let bus = Bus::connect(&server.url(), fast_config()).await?;
    bus.ensure_topology().await?;
    bus.ensure_topology().await?;

    // Several processes starting at once.
    let mut buses = Vec::new();
    for _ in 0..4 {
        buses.push(Bus::connect(&server.url(), fast_config()).await?);
    }
    let fresh = NatsServer::start().await?;
    let mut racers = Vec::new();
    for _ in 0..4 {
        racers.push(Bus::connect(&fresh.url(), fast_config()).await?);
    }
    let results = futures::future::join_all(
        racers
            .iter()
            .chain(buses.iter())
            .map(|bus| bus.ensure_topology()),
    )
    .await;
    for result in results {
        result?;
    }

    let js = common::raw_jetstream(&server.url()).await?;
    for stream in [
        EVENTS_STREAM,
        WORK_STREAM,
        DLQ_STREAM,
        REJECTED_STREAM,
        ADVISORIES_STREAM,
    ] {
        js.get_stream(stream).await?;
    }
    for bucket in [DELIVERIES_BUCKET, LEASES_BUCKET, DLQ_REASONS_BUCKET] {
        js.get_key_value(bucket).await?;
    }
    let events = js.get_stream(EVENTS_STREAM).await?.get_info().await?.config;
    assert_eq!(events.subjects, ["railyard.events.>"]);
    assert_eq!(events.retention, jetstream::stream::RetentionPolicy::Limits);
    assert_eq!(events.storage, jetstream::stream::StorageType::File);
    assert_eq!(events.duplicate_window, Duration::from_secs(120));
    let work = js.get_stream(WORK_STREAM).await?.get_info().await?.config;
    assert_eq!(
        work.retention,
        jetstream::stream::RetentionPolicy::WorkQueue
    );
    Ok(())
}

#[tokio::test]
async fn a_changed_configuration_updates_the_streams() -> anyhow::Result<()> {
    let server = NatsServer::start().await?;
    Bus::connect(&server.url(), fast_config())
        .await?
        .ensure_topology()
        .await?;
    let changed = BusConfig {
        dedupe_window: Duration::from_secs(30),
        rejected_max_messages: 10,
        ..fast_config()
    };
    let bus = Bus::connect(&server.url(), changed).await?;
    bus.ensure_topology().await?;
    let js = common::raw_jetstream(&server.url()).await?;
    let events = js.get_stream(EVENTS_STREAM).await?.get_info().await?.config;
    assert_eq!(events.duplicate_window, Duration::from_secs(30));
    let rejected = js
        .get_stream(REJECTED_STREAM)
        .await?
        .get_info()
        .await?
        .config;
    assert_eq!(rejected.max_messages, 10);
    Ok(())
}

#[tokio::test]
async fn using_the_bus_before_the_topology_says_what_to_do() -> anyhow::Result<()> {
    let server = NatsServer::start().await?;
    let bus = Bus::connect(&server.url(), fast_config()).await?;
    let rel = common::release("early");
    let error = bus.load(&rel).await.unwrap_err();
    assert!(
        matches!(error, BusError::MissingTopology { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("run ensure_topology"), "{error}");
    let error = bus.stream_last_sequence().await.unwrap_err();
    assert!(
        matches!(error, BusError::MissingTopology { .. }),
        "{error:?}"
    );
    let error = bus.remember_delivery("x").await.unwrap_err();
    assert!(
        matches!(error, BusError::MissingTopology { .. }),
        "{error:?}"
    );
    let short = Bus::connect(
        &server.url(),
        BusConfig {
            append_timeout: Duration::from_millis(300),
            ..fast_config()
        },
    )
    .await?;
    let error = short
        .append(&rel, Expected::NoEvents, &[common::event(&rel, "x")])
        .await
        .unwrap_err();
    assert!(error.to_string().contains("run ensure_topology"), "{error}");
    Ok(())
}

#[tokio::test]
async fn connecting_to_nothing_says_what_to_do() {
    let error = Bus::connect("nats://127.0.0.1:1", fast_config())
        .await
        .unwrap_err();
    assert!(matches!(error, BusError::Connect { .. }), "{error:?}");
    assert!(error.to_string().contains("railyard dev"), "{error}");
    let error = Bus::connect("not a url at all", fast_config())
        .await
        .unwrap_err();
    assert!(matches!(error, BusError::InvalidUrl { .. }), "{error:?}");
}

/// A stream that exists but that no server answers direct gets for at the moment (here: one
/// made without direct gets; in a cluster: every replica restarting or electing) is a NATS
/// failure that waiting mends, not missing topology, which stops a service for good.
#[tokio::test]
async fn a_stream_nobody_answers_for_is_a_transient_failure_not_missing_topology()
-> anyhow::Result<()> {
    let server = NatsServer::start().await?;
    let js = common::raw_jetstream(&server.url()).await?;
    js.create_stream(jetstream::stream::Config {
        name: EVENTS_STREAM.to_owned(),
        subjects: vec![format!("{}>", railyard_bus::names::EVENTS_PREFIX)],
        allow_direct: false,
        ..Default::default()
    })
    .await?;
    let bus = Bus::connect(&server.url(), fast_config()).await?;
    let error = bus.load(&common::release("early")).await.unwrap_err();
    assert!(
        matches!(error, BusError::Nats { .. }) && error.is_transient(),
        "{error:?}"
    );
    assert!(error.to_string().contains("reading"), "{error}");
    assert!(
        railyard_bus::error_chain(&error).contains("which exists"),
        "{error}"
    );
    Ok(())
}

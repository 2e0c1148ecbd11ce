//! Durable consumers and replay: order, confirmed and unconfirmed acks, redelivery of what a dead consumer
//! never acknowledged, subject filters, and reading the whole stream again.

mod common;

use std::time::Duration;

use common::{WAIT, bus, bus_with, event, fast_config, next, raw_jetstream, reasons, release};
use futures::TryStreamExt;
use railyard_bus::{BusConfig, ConsumerSpec, DeliverFrom, Expected};
use railyard_core::AggregateId;
use railyard_core::clock::ManualClock;
use railyard_testkit::NatsServer;

#[tokio::test]
async fn a_durable_consumer_gets_every_append_in_order_and_acked_ones_stay_acked()
-> anyhow::Result<()> {
    let server = NatsServer::start().await?;
    let bus = bus(&server.url()).await?;
    let (a, b) = (release("a"), release("b"));
    let first = bus
        .append(&a, Expected::NoEvents, &[event(&a, "a1"), event(&a, "a2")])
        .await?;
    let second = bus
        .append(&b, Expected::NoEvents, &[event(&b, "b1")])
        .await?;
    let third = bus
        .append(&a, Expected::Sequence(first.sequence), &[event(&a, "a3")])
        .await?;

    let mut consumer = bus.durable(ConsumerSpec::new("projection")).await?;
    let delivery = next(&mut consumer).await?;
    assert_eq!(delivery.stream_sequence, first.sequence);
    assert_eq!(delivery.subject, "railyard.events.release.a");
    assert_eq!(delivery.aggregate(), Some(a.clone()));
    assert_eq!(reasons(&delivery.envelopes), ["a1", "a2"]);
    assert_eq!(delivery.delivered, 1);
    assert_eq!(delivery.pending, 2);
    delivery.ack().await?;
    let delivery = next(&mut consumer).await?;
    assert_eq!(delivery.stream_sequence, second.sequence);
    delivery.ack().await?;
    let delivery = next(&mut consumer).await?;
    assert_eq!(delivery.stream_sequence, third.sequence);
    assert_eq!(delivery.pending, 0);
    delivery.ack().await?;
    drop(consumer);

    // The service restarts: the same durable resumes after what it acknowledged.
    let fourth = bus
        .append(&b, Expected::Sequence(second.sequence), &[event(&b, "b2")])
        .await?;
    let mut consumer = bus.durable(ConsumerSpec::new("projection")).await?;
    let delivery = next(&mut consumer).await?;
    assert_eq!(delivery.stream_sequence, fourth.sequence);
    assert_eq!(reasons(&delivery.envelopes), ["b2"]);
    delivery.ack().await?;
    Ok(())
}

#[tokio::test]
async fn a_delivery_its_consumer_dropped_without_ack_is_delivered_again() -> anyhow::Result<()> {
    let server = NatsServer::start().await?;
    let bus = bus(&server.url()).await?;
    let rel = release("crashy");
    let appended = bus
        .append(&rel, Expected::NoEvents, &[event(&rel, "work")])
        .await?;

    let mut consumer = bus.durable(ConsumerSpec::new("worker")).await?;
    let delivery = next(&mut consumer).await?;
    assert_eq!(delivery.delivered, 1);
    // The process dies mid-handling: neither the delivery nor the consumer says anything.
    drop(delivery);
    drop(consumer);

    let mut consumer = bus.durable(ConsumerSpec::new("worker")).await?;
    let delivery = next(&mut consumer).await?;
    assert_eq!(delivery.stream_sequence, appended.sequence);
    assert_eq!(delivery.delivered, 2, "the same message, second attempt");
    assert_eq!(reasons(&delivery.envelopes), ["work"]);
    delivery.ack().await?;
    Ok(())
}

#[tokio::test]
async fn an_unconfirmed_ack_stays_acked() -> anyhow::Result<()> {
    let server = NatsServer::start().await?;
    let bus = bus(&server.url()).await?;
    let rel = release("quick");
    let first = bus
        .append(&rel, Expected::NoEvents, &[event(&rel, "one")])
        .await?;
    let second = bus
        .append(
            &rel,
            Expected::Sequence(first.sequence),
            &[event(&rel, "two")],
        )
        .await?;

    let mut consumer = bus.durable(ConsumerSpec::new("dispatcher")).await?;
    let delivery = next(&mut consumer).await?;
    assert_eq!(delivery.stream_sequence, first.sequence);
    delivery.ack_unconfirmed().await?;
    drop(consumer);

    // The ack went out before the next pull on the same connection, so the restarted
    // consumer goes on after it: the first message is not delivered again.
    let mut consumer = bus.durable(ConsumerSpec::new("dispatcher")).await?;
    let delivery = next(&mut consumer).await?;
    assert_eq!(delivery.stream_sequence, second.sequence);
    assert_eq!(reasons(&delivery.envelopes), ["two"]);
    delivery.ack().await?;
    Ok(())
}

#[tokio::test]
async fn a_nak_redelivers_after_the_backoff() -> anyhow::Result<()> {
    let server = NatsServer::start().await?;
    let bus = bus(&server.url()).await?;
    let rel = release("flaky");
    bus.append(&rel, Expected::NoEvents, &[event(&rel, "try")])
        .await?;
    let mut consumer = bus.durable(ConsumerSpec::new("flaky-worker")).await?;
    let delivery = next(&mut consumer).await?;
    delivery.nak("deploy target answered 503").await?;
    let delivery = next(&mut consumer).await?;
    assert_eq!(delivery.delivered, 2);
    delivery.ack().await?;
    Ok(())
}

#[tokio::test]
async fn filters_select_the_aggregates_a_consumer_reads() -> anyhow::Result<()> {
    let server = NatsServer::start().await?;
    let bus = bus(&server.url()).await?;
    let rel = release("filtered");
    let inventory: AggregateId = "inventory.production".parse()?;
    bus.append(
        &inventory,
        Expected::NoEvents,
        &[event(&inventory, "inventory")],
    )
    .await?;
    let wanted = bus
        .append(&rel, Expected::NoEvents, &[event(&rel, "release")])
        .await?;
    bus.append(
        &AggregateId::Catalog,
        Expected::Any,
        &[event(&AggregateId::Catalog, "catalog")],
    )
    .await?;

    let mut consumer = bus
        .durable(ConsumerSpec::new("releases-only").filter("railyard.events.release.>"))
        .await?;
    let delivery = next(&mut consumer).await?;
    assert_eq!(delivery.stream_sequence, wanted.sequence);
    assert_eq!(delivery.pending, 0, "nothing else matches the filter");
    delivery.ack().await?;

    let error = bus
        .durable(ConsumerSpec::new("bad").filter("orders.>"))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("orders.>"), "{error}");
    let error = bus
        .durable(ConsumerSpec::new("bad.name"))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("A-Z a-z 0-9 - _"), "{error}");
    Ok(())
}

#[tokio::test]
async fn a_new_durable_can_start_at_new_messages_or_a_sequence() -> anyhow::Result<()> {
    let server = NatsServer::start().await?;
    let bus = bus(&server.url()).await?;
    let rel = release("starts");
    let first = bus
        .append(&rel, Expected::NoEvents, &[event(&rel, "old")])
        .await?;
    let second = bus
        .append(
            &rel,
            first.sequence.into_expected(),
            &[event(&rel, "middle")],
        )
        .await?;

    let mut from_second = bus
        .durable(ConsumerSpec::new("from-second").deliver(DeliverFrom::Sequence(second.sequence)))
        .await?;
    let mut only_new = bus
        .durable(ConsumerSpec::new("only-new").deliver(DeliverFrom::New))
        .await?;
    let third = bus
        .append(&rel, second.sequence.into_expected(), &[event(&rel, "new")])
        .await?;
    assert_eq!(
        next(&mut from_second).await?.stream_sequence,
        second.sequence
    );
    assert_eq!(next(&mut only_new).await?.stream_sequence, third.sequence);
    Ok(())
}

#[tokio::test]
async fn replay_reads_the_stream_in_order_from_a_sequence() -> anyhow::Result<()> {
    let server = NatsServer::start().await?;
    let bus = bus(&server.url()).await?;
    let mut appended = Vec::new();
    for index in 0..5 {
        let rel = release(&format!("r{index}"));
        appended.push(
            bus.append(&rel, Expected::NoEvents, &[event(&rel, &index.to_string())])
                .await?,
        );
    }
    let last = bus.stream_last_sequence().await?;
    assert_eq!(last, appended[4].sequence);

    let mut replay = bus.replay(appended[2].sequence).await?;
    let mut seen = Vec::new();
    loop {
        let delivery = next(&mut replay).await?;
        seen.push(reasons(&delivery.envelopes).concat());
        let done = delivery.stream_sequence >= last;
        delivery.ack().await?; // a no-op for replays
        if done {
            break;
        }
    }
    assert_eq!(seen, ["2", "3", "4"]);

    // It keeps following the stream.
    let rel = release("later");
    bus.append(&rel, Expected::NoEvents, &[event(&rel, "later")])
        .await?;
    let delivery = tokio::time::timeout(WAIT, replay.next())
        .await??
        .expect("open");
    assert_eq!(reasons(&delivery.envelopes), ["later"]);

    let mut everything = bus.replay(0).await?;
    assert_eq!(next(&mut everything).await?.stream_sequence, 1);
    Ok(())
}

#[tokio::test]
async fn a_replay_whose_consumer_goes_silent_starts_a_new_one() -> anyhow::Result<()> {
    // In the chaos soak a replay consumer re-created while the cluster lost a node went on
    // sending heartbeats and delivered nothing, and the leading planner planned nothing.
    // A consumer paused on the server behaves the same: heartbeats, no messages.
    let server = NatsServer::start().await?;
    let clock = ManualClock::new("2026-01-01T00:00:00Z".parse()?);
    let config = BusConfig {
        clock: clock.shared(),
        ..fast_config()
    };
    let check = 2 * config.idle_heartbeat;
    let bus = bus_with(&server.url(), config).await?;
    let a = release("a");
    let first = bus
        .append(&a, Expected::NoEvents, &[event(&a, "a1")])
        .await?;
    let mut replay = bus.replay(0).await?;
    assert_eq!(next(&mut replay).await?.stream_sequence, first.sequence);

    let js = raw_jetstream(&server.url()).await?;
    let stream = js.get_stream("RAILYARD_EVENTS").await?;
    let names: Vec<String> = stream.consumer_names().try_collect().await?;
    assert_eq!(names.len(), 1, "the replay's own consumer: {names:?}");
    let until = async_nats::datetime::add_std_duration(
        async_nats::datetime::now(),
        Duration::from_secs(24 * 60 * 60),
    )
    .map_err(|error| anyhow::anyhow!("{error}"))?;
    stream.pause_consumer(&names[0], until).await?;
    let second = bus
        .append(&a, Expected::Sequence(first.sequence), &[event(&a, "a2")])
        .await?;

    // The replay's watchdog asks the stream after two heartbeats without a message; the
    // second time it finds the same message stored and undelivered, it starts a new consumer.
    let mut waiting = tokio::spawn(async move { replay.next().await });
    let delivery = tokio::time::timeout(WAIT, async {
        loop {
            tokio::select! {
                done = &mut waiting => break done,
                () = clock.wait_for_sleepers(1) => {
                    clock.advance(check);
                    tokio::task::yield_now().await;
                }
            }
        }
    })
    .await
    .map_err(|_| anyhow::anyhow!("the silent replay was not replaced"))???
    .expect("open");
    assert_eq!(delivery.stream_sequence, second.sequence);
    assert_eq!(reasons(&delivery.envelopes), ["a2"]);
    Ok(())
}

#[tokio::test]
async fn a_replay_goes_on_after_the_server_loses_its_consumer() -> anyhow::Result<()> {
    // A restart drops the replay's in-memory consumer, as losing the node holding it does in
    // a cluster: the replay must notice and go on after the last message it delivered.
    let mut server = NatsServer::start().await?;
    let bus = bus(&server.url()).await?;
    for index in 0..2 {
        let rel = release(&format!("before{index}"));
        bus.append(&rel, Expected::NoEvents, &[event(&rel, "before")])
            .await?;
    }
    let mut replay = bus.replay(0).await?;
    assert_eq!(next(&mut replay).await?.stream_sequence, 1);
    assert_eq!(next(&mut replay).await?.stream_sequence, 2);

    server.restart().await?;
    let rel = release("after");
    tokio::time::timeout(WAIT, async {
        loop {
            match bus
                .append(&rel, Expected::NoEvents, &[event(&rel, "after")])
                .await
            {
                Ok(_) => return,
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    })
    .await?;
    // Within a few of the test bus's 500 ms heartbeats, not async-nats' fixed 30 s.
    let delivery = tokio::time::timeout(Duration::from_secs(8), replay.next())
        .await
        .map_err(|_| anyhow::anyhow!("the replay did not go on after the restart"))??
        .expect("open");
    assert_eq!(
        delivery.stream_sequence, 3,
        "nothing skipped, nothing twice"
    );
    assert_eq!(reasons(&delivery.envelopes), ["after"]);
    Ok(())
}

#[tokio::test]
async fn closing_the_bus_ends_consumers() -> anyhow::Result<()> {
    let server = NatsServer::start().await?;
    let bus = bus(&server.url()).await?;
    let mut consumer = bus.durable(ConsumerSpec::new("closing")).await?;
    let waiting = tokio::spawn(async move { consumer.next().await });
    bus.close().await?;
    let ended = tokio::time::timeout(Duration::from_secs(10), waiting).await??;
    assert!(matches!(ended, Ok(None)), "{ended:?}");
    Ok(())
}

trait IntoExpected {
    fn into_expected(self) -> Expected;
}

impl IntoExpected for u64 {
    fn into_expected(self) -> Expected {
        Expected::Sequence(self)
    }
}

#[tokio::test]
async fn work_published_without_waiting_is_stored_once_per_message_id() -> anyhow::Result<()> {
    let server = NatsServer::start().await?;
    let bus = bus(&server.url()).await?;
    let subject = "railyard.work.promoter.r1";
    // Twice with one id (an offer of the same state), then another id.
    for (payload, id) in [("deploy a", "r1/a/0"), ("deploy a again", "r1/a/0")] {
        bus.publish_work_unconfirmed(subject, bytes::Bytes::from(payload), id)
            .await?;
    }
    bus.publish_work_unconfirmed(subject, bytes::Bytes::from("deploy b"), "r1/b/0")
        .await?;
    let mut worker = bus
        .work_consumer(ConsumerSpec::new("steps").filter("railyard.work.promoter.>"))
        .await?;
    let mut payloads = Vec::new();
    for _ in 0..2 {
        let item = tokio::time::timeout(WAIT, worker.next())
            .await??
            .expect("open");
        payloads.push(String::from_utf8(item.payload.to_vec())?);
        item.ack().await?;
    }
    assert_eq!(payloads, ["deploy a", "deploy b"], "the repeat was dropped");
    // A bad subject is refused before anything is sent.
    let error = bus
        .publish_work_unconfirmed("railyard.work.>", bytes::Bytes::new(), "x")
        .await
        .unwrap_err();
    assert!(
        matches!(error, railyard_bus::BusError::InvalidName { .. }),
        "{error:?}"
    );
    Ok(())
}

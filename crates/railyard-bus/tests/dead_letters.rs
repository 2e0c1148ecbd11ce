//! Dead letters: after the last allowed delivery a message lands in RAILYARD_DLQ with why it
//! failed (the last nak reason, or that it was never acknowledged), even when the forwarder
//! starts late; two forwarders store it once; work items can be replayed, events cannot.

mod common;

use bytes::Bytes;
use common::{WAIT, bus, event, next, reasons, release};
use railyard_bus::names::{ADVISORIES_STREAM, DLQ_FORWARDER, WORK_STREAM};
use railyard_bus::{Bus, BusError, ConsumerSpec, DeadLetter, Expected, run_dlq_forwarder};
use railyard_testkit::{NatsServer, wait_until};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

struct Forwarder {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), BusError>>,
}

impl Forwarder {
    fn start(bus: &Bus) -> Forwarder {
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(run_dlq_forwarder(bus.clone(), stopped));
        Forwarder { stop, task }
    }

    async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        tokio::time::timeout(WAIT, self.task).await???;
        Ok(())
    }
}

async fn dead_letters(bus: &Bus, count: usize) -> anyhow::Result<Vec<DeadLetter>> {
    wait_until(&format!("{count} dead letters"), WAIT, || async {
        let letters = bus.dead_letters().await?;
        Ok((letters.len() >= count).then_some(letters))
    })
    .await
}

#[tokio::test]
async fn a_message_failing_every_delivery_is_dead_lettered_with_the_last_nak_reason()
-> anyhow::Result<()> {
    let server = NatsServer::start().await?;
    let bus = bus(&server.url()).await?;
    let forwarder = Forwarder::start(&bus);
    let rel = release("poison");
    let appended = bus
        .append(&rel, Expected::NoEvents, &[event(&rel, "deploy")])
        .await?;

    let mut consumer = bus.durable(ConsumerSpec::new("gate-worker")).await?;
    for attempt in 1..=3 {
        let delivery = next(&mut consumer).await?;
        assert_eq!(delivery.stream_sequence, appended.sequence);
        assert_eq!(delivery.delivered, attempt);
        delivery
            .nak(&format!("gate http returned 503 (attempt {attempt})"))
            .await?;
    }

    let letters = dead_letters(&bus, 1).await?;
    let letter = &letters[0];
    assert_eq!(letter.source_stream, "RAILYARD_EVENTS");
    assert_eq!(letter.source_sequence, appended.sequence);
    assert_eq!(letter.source_subject, "railyard.events.release.poison");
    assert_eq!(letter.consumer, "gate-worker");
    assert_eq!(letter.deliveries, 3);
    assert_eq!(letter.reason, "gate http returned 503 (attempt 3)");
    let payload: serde_json::Value = serde_json::from_slice(&letter.payload)?;
    assert_eq!(payload["events"][0]["data"]["reason"], "deploy");
    assert_eq!(
        letter
            .headers
            .get("Railyard-Event-Types")
            .map(|value| value.as_str()),
        Some("release.cancelled")
    );
    assert!(
        letter
            .headers
            .get("Nats-Expected-Last-Subject-Sequence")
            .is_none()
    );
    assert_eq!(
        bus.dead_letter(letter.sequence).await?.reason,
        letter.reason
    );
    forwarder.stop().await
}

#[tokio::test]
async fn a_message_never_acknowledged_is_dead_lettered_even_when_the_forwarder_starts_late()
-> anyhow::Result<()> {
    let server = NatsServer::start().await?;
    let bus = bus(&server.url()).await?;
    let rel = release("hangs");
    let appended = bus
        .append(&rel, Expected::NoEvents, &[event(&rel, "deploy")])
        .await?;

    // The handler hangs or crashes on every attempt: nothing is ever acknowledged.
    let mut consumer = bus.durable(ConsumerSpec::new("hanging-worker")).await?;
    for attempt in 1..=3 {
        let delivery = next(&mut consumer).await?;
        assert_eq!(delivery.delivered, attempt);
        drop(delivery);
    }

    // No forwarder runs, yet the advisory is kept.
    let js = common::raw_jetstream(&server.url()).await?;
    wait_until("the max-deliveries advisory to be kept", WAIT, || {
        let js = js.clone();
        async move {
            let info = js.get_stream(ADVISORIES_STREAM).await?.get_info().await?;
            Ok((info.state.messages == 1).then_some(()))
        }
    })
    .await?;
    assert!(bus.dead_letters().await?.is_empty());

    let forwarder = Forwarder::start(&bus);
    let letters = dead_letters(&bus, 1).await?;
    assert_eq!(letters[0].source_sequence, appended.sequence);
    assert_eq!(letters[0].deliveries, 3);
    assert_eq!(
        letters[0].reason,
        "not acknowledged within ack_wait after 3 deliveries (consumer crashed or timed out)"
    );
    forwarder.stop().await
}

#[tokio::test]
async fn a_timeout_after_a_nak_keeps_the_earlier_reason() -> anyhow::Result<()> {
    let server = NatsServer::start().await?;
    let bus = bus(&server.url()).await?;
    let forwarder = Forwarder::start(&bus);
    let rel = release("mixed");
    bus.append(&rel, Expected::NoEvents, &[event(&rel, "deploy")])
        .await?;
    let mut consumer = bus.durable(ConsumerSpec::new("mixed-worker")).await?;
    next(&mut consumer)
        .await?
        .nak("prometheus query failed")
        .await?;
    drop(next(&mut consumer).await?);
    drop(next(&mut consumer).await?);
    let letters = dead_letters(&bus, 1).await?;
    assert_eq!(
        letters[0].reason,
        "not acknowledged within ack_wait after 3 deliveries (consumer crashed or timed out); \
         delivery 1 had failed with: prometheus query failed"
    );
    forwarder.stop().await
}

#[tokio::test]
async fn two_forwarders_store_each_dead_letter_once() -> anyhow::Result<()> {
    let server = NatsServer::start().await?;
    let bus = bus(&server.url()).await?;
    let other = common::bus(&server.url()).await?;
    let (first, second) = (Forwarder::start(&bus), Forwarder::start(&other));
    let mut consumer = bus.durable(ConsumerSpec::new("doomed")).await?;
    for index in 0..3 {
        let rel = release(&format!("doomed-{index}"));
        bus.append(&rel, Expected::NoEvents, &[event(&rel, "x")])
            .await?;
    }
    for _ in 0..9 {
        next(&mut consumer).await?.nak("always fails").await?;
    }
    let letters = dead_letters(&bus, 3).await?;

    // Once both forwarders have settled every advisory, there are still exactly three.
    let js = common::raw_jetstream(&server.url()).await?;
    wait_until("the forwarders to settle every advisory", WAIT, || {
        let js = js.clone();
        async move {
            let info = js
                .get_stream(ADVISORIES_STREAM)
                .await?
                .consumer_info(DLQ_FORWARDER)
                .await?;
            Ok((info.num_pending == 0 && info.num_ack_pending == 0).then_some(()))
        }
    })
    .await?;
    assert_eq!(bus.dead_letters().await?.len(), 3);
    let mut sources: Vec<u64> = letters
        .iter()
        .map(|letter| letter.source_sequence)
        .collect();
    sources.sort_unstable();
    sources.dedup();
    assert_eq!(sources.len(), 3);
    first.stop().await?;
    second.stop().await
}

#[tokio::test]
async fn a_dead_work_item_leaves_the_queue_and_can_be_replayed() -> anyhow::Result<()> {
    let server = NatsServer::start().await?;
    let bus = bus(&server.url()).await?;
    let forwarder = Forwarder::start(&bus);
    let published = bus
        .publish_work(
            "railyard.work.step",
            Bytes::from_static(b"deploy orders-api"),
            "step-1",
        )
        .await?;
    let mut worker = bus
        .work_consumer(ConsumerSpec::new("steps").filter("railyard.work.step"))
        .await?;
    for _ in 0..3 {
        let item = tokio::time::timeout(WAIT, worker.next())
            .await??
            .expect("open");
        assert_eq!(item.stream_sequence, published);
        item.nak("deploy.sh exited 1").await?;
    }
    let letters = dead_letters(&bus, 1).await?;
    assert_eq!(letters[0].source_stream, WORK_STREAM);
    assert_eq!(letters[0].reason, "deploy.sh exited 1");
    let js = common::raw_jetstream(&server.url()).await?;
    wait_until("the dead item to leave the work queue", WAIT, || {
        let js = js.clone();
        async move {
            let info = js.get_stream(WORK_STREAM).await?.get_info().await?;
            Ok((info.state.messages == 0).then_some(()))
        }
    })
    .await?;

    // The operator fixed the deploy script: replay it.
    let replayed = bus.replay_dead_letter(letters[0].sequence).await?;
    assert!(replayed > published);
    assert_eq!(
        bus.replay_dead_letter(letters[0].sequence).await?,
        replayed,
        "replaying twice stores it once"
    );
    let item = tokio::time::timeout(WAIT, worker.next())
        .await??
        .expect("open");
    assert_eq!(item.stream_sequence, replayed);
    assert_eq!(item.payload.as_ref(), b"deploy orders-api");
    assert_eq!(item.delivered, 1);
    item.ack().await?;

    let error = bus.replay_dead_letter(999).await.unwrap_err();
    assert!(
        matches!(error, BusError::DeadLetterNotFound { sequence: 999 }),
        "{error:?}"
    );
    forwarder.stop().await
}

#[tokio::test]
async fn a_handler_can_dead_letter_at_once_and_dead_events_are_not_appended_again()
-> anyhow::Result<()> {
    let server = NatsServer::start().await?;
    let bus = bus(&server.url()).await?;
    let rel = release("unfoldable");
    let appended = bus
        .append(&rel, Expected::NoEvents, &[event(&rel, "bad")])
        .await?;
    let mut consumer = bus.durable(ConsumerSpec::new("strict")).await?;
    let delivery = next(&mut consumer).await?;
    let dead = delivery
        .dead_letter("event does not fit the release state")
        .await?;

    let letter = bus.dead_letter(dead).await?;
    assert_eq!(letter.source_sequence, appended.sequence);
    assert_eq!(letter.deliveries, 1);
    assert_eq!(letter.reason, "event does not fit the release state");
    let error = bus.replay_dead_letter(dead).await.unwrap_err();
    assert!(matches!(error, BusError::ReplayRefused { .. }), "{error:?}");
    assert!(
        error.to_string().contains("rebuild its projection"),
        "{error}"
    );
    assert_eq!(reasons(&bus.load(&rel).await?.events), ["bad"]);

    // A projection reading through a named replay dead-letters under its own name.
    let mut replay = bus.replay_as("ledger", 1).await?;
    let delivery = next(&mut replay).await?;
    let dead = delivery.dead_letter("ledger refuses it").await?;
    let letter = bus.dead_letter(dead).await?;
    assert_eq!(letter.consumer, "ledger");
    assert_eq!(letter.source_sequence, appended.sequence);
    assert_eq!(bus.dead_letters().await?.len(), 2);
    Ok(())
}

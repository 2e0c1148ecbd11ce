//! NATS restarts under the bus: every acknowledged event survives, the bus reconnects by
//! itself, appends work again, and a durable consumer resumes where it was.

mod common;

use common::{bus, event, next, reasons, release};
use railyard_bus::{ConsumerSpec, Expected};
use railyard_testkit::NatsServer;

#[tokio::test]
async fn acknowledged_events_survive_a_restart_and_everything_resumes() -> anyhow::Result<()> {
    let mut server = NatsServer::start().await?;
    let bus = bus(&server.url()).await?;
    let rel = release("survivor");
    let mut expected = Expected::NoEvents;
    for index in 0..10 {
        let appended = bus
            .append(&rel, expected, &[event(&rel, &format!("before-{index}"))])
            .await?;
        expected = Expected::Sequence(appended.sequence);
    }
    let mut consumer = bus.durable(ConsumerSpec::new("audit")).await?;
    for _ in 0..4 {
        next(&mut consumer).await?.ack().await?;
    }

    server.restart().await?;

    // The same Bus (and consumer) keep working: the client reconnects on its own.
    let loaded = bus.load(&rel).await?;
    let want: Vec<String> = (0..10).map(|index| format!("before-{index}")).collect();
    assert_eq!(reasons(&loaded.events), want);
    assert_eq!(loaded.expected(), expected);

    let after = bus
        .append(&rel, loaded.expected(), &[event(&rel, "after")])
        .await?;
    assert!(!after.duplicate);
    assert_eq!(
        reasons(&bus.load(&rel).await?.events)
            .last()
            .map(String::as_str),
        Some("after")
    );

    // The durable resumes. Delivery is at least once: the server confirmed the four acks, but
    // a SIGKILL can lose the consumer's last ack state, so like a real projection the test
    // keeps a checkpoint and skips what it already applied.
    let mut checkpoint = 4;
    let mut applied = Vec::new();
    while applied.last().map(String::as_str) != Some("after") {
        let delivery = next(&mut consumer).await?;
        if delivery.stream_sequence > checkpoint {
            checkpoint = delivery.stream_sequence;
            applied.push(reasons(&delivery.envelopes).concat());
        }
        delivery.ack().await?;
    }
    let mut want: Vec<String> = (4..10).map(|index| format!("before-{index}")).collect();
    want.push("after".to_owned());
    assert_eq!(
        applied, want,
        "nothing after the checkpoint is lost or reordered"
    );
    Ok(())
}

#[tokio::test]
async fn an_append_during_downtime_completes_once_the_server_is_back() -> anyhow::Result<()> {
    let mut server = NatsServer::start().await?;
    let bus = bus(&server.url()).await?;
    let rel = release("patient");
    let first = bus
        .append(&rel, Expected::NoEvents, &[event(&rel, "first")])
        .await?;

    server.stop().await;
    let pending = {
        let bus = bus.clone();
        let rel = rel.clone();
        tokio::spawn(async move {
            bus.append(
                &rel,
                Expected::Sequence(first.sequence),
                &[event(&rel, "during")],
            )
            .await
        })
    };
    server.start_again().await?;
    let appended = tokio::time::timeout(common::WAIT, pending).await???;
    assert_eq!(appended.sequence, first.sequence + 1);
    assert_eq!(reasons(&bus.load(&rel).await?.events), ["first", "during"]);
    Ok(())
}

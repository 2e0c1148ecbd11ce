//! `railyard dlq list` and `replay` as an operator runs them: a work item a handler gave up
//! on is listed with its reason, and replaying it puts it back on the work queue.

use std::process::Command;
use std::time::Duration;

use railyard_bus::{Bus, BusConfig, ConsumerSpec};
use railyard_testkit::NatsServer;

fn dlq(url: &str, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_railyard"))
        .arg("dlq")
        .args(args)
        .args(["--nats-url", url])
        .output()
        .expect("railyard runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[tokio::test]
async fn lists_dead_letters_with_their_reason_and_replays_one() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let url = nats.url();
    let bus = Bus::connect(&url, BusConfig::default()).await?;
    bus.ensure_topology().await?;
    let (code, text) = dlq(&url, &["list"]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("no dead letters"), "{text}");

    bus.publish_work("railyard.work.test.job-1", "do the thing".into(), "job-1")
        .await?;
    let mut work = bus
        .work_consumer(ConsumerSpec::new("cli-test").filter("railyard.work.test.>"))
        .await?;
    let item = tokio::time::timeout(Duration::from_secs(10), work.next())
        .await??
        .expect("the work item");
    item.dead_letter("the deploy API refused the artifact: 403")
        .await?;

    let (code, text) = dlq(&url, &["list"]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("the deploy API refused the artifact: 403"),
        "{text}"
    );
    assert!(text.contains("RAILYARD_WORK"), "{text}");
    let sequence = text
        .split_whitespace()
        .next()
        .expect("a sequence")
        .to_owned();

    let (code, text) = dlq(&url, &["replay", &sequence]);
    assert_eq!(code, 0, "{text}");
    let again = tokio::time::timeout(Duration::from_secs(10), work.next())
        .await??
        .expect("the replayed item");
    assert_eq!(again.payload.as_ref(), b"do the thing");
    Ok(())
}

//! Notifier replicas against the Slack stand-in, with a manual clock (nothing sleeps): only the
//! holder of the `notify` lease calls Slack while the standby follows quietly; the leader is
//! killed in the middle of a stream message (its fourth call failed and waits out a backoff);
//! once its lease expired on the clock the standby leads, resumes at the call the handoff does
//! not record — replying in the thread the old leader started — and tells the rest. Slack gets
//! exactly what one uninterrupted notifier sends: one message per event.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use railyard_bus::{Bus, BusConfig, LeaderConfig};
use railyard_core::{ManualClock, SharedClock, SystemClock};
use railyard_notify::{History, NotifyConfig, Transport};
use railyard_testkit::{NatsServer, wait_until};
use serde_json::Value;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

fn without_ts(calls: Value) -> Value {
    let mut calls = calls;
    for call in calls.as_array_mut().unwrap() {
        let body = call["body"].as_object_mut().unwrap();
        body.remove("ts");
        body.remove("thread_ts");
    }
    calls
}

fn config(transport: Transport, store: &std::path::Path, clock: SharedClock) -> NotifyConfig {
    let mut config = NotifyConfig::new(catalog(), transport, store);
    config.clock = clock;
    config.pacing = Duration::ZERO;
    config.history = History::Send;
    config.ui_url = Some("https://railyard.example.com".to_owned());
    config.backoff = railyard_notify::Backoff {
        initial: Duration::from_secs(1),
        max: Duration::from_secs(1),
    };
    config
}

/// A notifier replica named `replica` with its ledger in `store`.
fn start_replica(
    nats: &NatsServer,
    transport: Transport,
    store: &std::path::Path,
    clock: &ManualClock,
    replica: &str,
) -> Running {
    let (tx, rx) = watch::channel(0);
    let mut config = config(transport, store, clock.shared());
    config.handled = Some(tx);
    let leader = LeaderConfig {
        replica: replica.to_owned(),
        ttl: Duration::from_secs(9),
        ..LeaderConfig::new("notify", clock.shared())
    };
    let stop = CancellationToken::new();
    let (url, token) = (nats.url(), stop.clone());
    let task = tokio::spawn(async move {
        let bus = Bus::connect(&url, BusConfig::default()).await?;
        railyard_notify::run_replica(config, Some(leader), bus, token).await?;
        Ok(())
    });
    Running {
        stop,
        task,
        handled: rx,
    }
}

/// What one uninterrupted notifier sends for the full release.
async fn uninterrupted(id: &str) -> anyhow::Result<Value> {
    let nats = NatsServer::start().await?;
    let bus = bus(&nats).await?;
    let slack = FakeSlack::start().await?;
    let store = tempfile::tempdir()?;
    let mut notifier = start_notifier(
        &nats,
        slack.web_api(),
        store.path(),
        SystemClock::shared(),
        Duration::ZERO,
    );
    let last = play(&bus, id, full_release(id)).await?;
    notifier.wait_handled(last).await?;
    notifier.stop().await?;
    Ok(accepted_json(&slack))
}

async fn leads(bus: &Bus, replica: &str) -> anyhow::Result<()> {
    wait_until(&format!("{replica} leads the notifier"), WAIT, || async {
        let holder = bus.leader("notify").await?.map(|r| r.holder);
        Ok((holder.as_deref() == Some(replica)).then_some(()))
    })
    .await
}

#[tokio::test]
async fn a_standby_takes_over_a_killed_leader_mid_message_and_slack_hears_each_event_once()
-> anyhow::Result<()> {
    let id = "rel-replicas";
    let expected = uninterrupted(id).await?;

    let nats = NatsServer::start().await?;
    let clock = ManualClock::new("2026-03-02T10:00:00Z".parse()?);
    let bus = Bus::connect(
        &nats.url(),
        BusConfig {
            clock: clock.shared(),
            ..BusConfig::default()
        },
    )
    .await?;
    bus.ensure_topology().await?;
    let slack = FakeSlack::start().await?;
    let (a_store, b_store) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let mut script = full_release(id);
    let rest = script.split_off(4);

    let a = start_replica(&nats, slack.web_api(), a_store.path(), &clock, "notify-a");
    leads(&bus, "notify-a").await?;
    let mut b = start_replica(&nats, slack.web_api(), b_store.path(), &clock, "notify-b");

    // The plan's message needs several calls (a root and a reply per channel, then the roots'
    // summaries); the fourth fails, and a waits out its backoff on the clock when it is killed.
    slack.script(&[
        Script::Normal,
        Script::Normal,
        Script::Normal,
        Script::ServerError,
    ]);
    let planned = play(&bus, id, script).await?;
    slack.wait_for_calls(4).await?;
    // b told quietly what a handed over as done (the inventory and the request).
    b.wait_handled(planned - 1).await?;
    assert_eq!(*b.handled.borrow(), planned - 1, "b waits for the leader");
    a.task.abort();
    let _ = a.task.await;
    let accepted_before = slack.accepted().len();
    assert_eq!(accepted_before, 3);

    // Short of the ttl b stands by; past it, b leads and resumes the plan's message.
    clock.advance(Duration::from_secs(5));
    assert_eq!(
        slack.received().len(),
        4,
        "nobody calls slack while a's lease runs"
    );
    clock.advance(Duration::from_secs(5));
    leads(&bus, "notify-b").await?;
    b.wait_handled(planned).await?;
    let last = play(&bus, id, rest).await?;
    b.wait_handled(last).await?;
    b.stop().await?;

    let calls = accepted_json(&slack);
    assert_eq!(without_ts(calls.clone()), without_ts(expected));
    // Replies went to the threads a started: one thread per root message, none started twice.
    let roots = calls
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["method"] == "chat.postMessage" && c["body"].get("thread_ts").is_none())
        .count();
    let threads: BTreeSet<String> = calls
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["body"]["thread_ts"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(threads.len(), roots, "{calls:#}");
    Ok(())
}

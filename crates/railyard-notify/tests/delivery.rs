//! Delivery guarantees against the stand-in: a 429 is waited out on the clock and the same
//! payload is sent again exactly once; a graceful restart, between stream messages or in the
//! middle of one — or of a batch of them told together — loses and repeats nothing; a
//! release of 300 services stays within Slack's limits; Slack's refusals are dead-lettered
//! with its error, against the messages the refused call told; webhooks post standalone
//! messages.

mod common;

use std::time::Duration;

use common::*;
use railyard_core::event::{ReleaseCompleted, ReleasePlanned};
use railyard_core::plan::{Action, Plan, Step};
use railyard_core::{Clock, Event, ManualClock, SystemClock};
use railyard_testkit::NatsServer;
use serde_json::Value;

fn clock() -> ManualClock {
    ManualClock::new("2026-03-02T10:00:00Z".parse().unwrap())
}

async fn wait_for_sleepers(clock: &ManualClock, n: usize) -> anyhow::Result<()> {
    tokio::time::timeout(WAIT, clock.wait_for_sleepers(n))
        .await
        .map_err(|_| anyhow::anyhow!("nothing waited on the clock within {WAIT:?}"))
}

#[tokio::test]
async fn a_429_is_waited_out_and_the_same_payload_sent_again_exactly_once() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let bus = bus(&nats).await?;
    let slack = FakeSlack::start().await?;
    slack.script(&[Script::RateLimit(1)]);
    let clock = clock();
    let store = tempfile::tempdir()?;
    let mut notifier = start_notifier(
        &nats,
        slack.web_api(),
        store.path(),
        clock.shared(),
        Duration::ZERO,
    );
    let last = play(&bus, "rel-429", request_and_plan("rel-429")).await?;

    slack.wait_for_calls(1).await?;
    wait_for_sleepers(&clock, 1).await?;
    let first = slack.received();
    assert_eq!(first.len(), 1, "nothing is sent while Retry-After runs");
    assert_eq!(first[0].status, 429);

    clock.advance(Duration::from_secs(1));
    notifier.wait_handled(last).await?;
    notifier.stop().await?;

    let received = slack.received();
    assert_eq!(received[1].status, 200);
    assert_eq!(
        received[1].body, received[0].body,
        "the same payload is sent again"
    );
    let same = received
        .iter()
        .filter(|r| r.body == received[0].body)
        .count();
    assert_eq!(same, 2, "resent exactly once");
    assert_eq!(received.iter().filter(|r| r.status == 429).count(), 1);
    assert_eq!(clock.now().to_rfc3339(), "2026-03-02T10:00:01+00:00");
    Ok(())
}

fn without_ts(calls: Value) -> Value {
    let mut calls = calls;
    for call in calls.as_array_mut().unwrap() {
        let body = call["body"].as_object_mut().unwrap();
        body.remove("ts");
        body.remove("thread_ts");
    }
    calls
}

/// What an uninterrupted notifier sends for the full release.
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

#[tokio::test]
async fn a_graceful_restart_mid_release_loses_and_repeats_nothing() -> anyhow::Result<()> {
    let id = "rel-restart";
    let expected = uninterrupted(id).await?;

    let nats = NatsServer::start().await?;
    let bus = bus(&nats).await?;
    let slack = FakeSlack::start().await?;
    let store = tempfile::tempdir()?;
    let mut script = full_release(id);
    let rest = script.split_off(8);
    let (first, rest) = {
        let mut rest = rest;
        let tail = rest.split_off(4);
        (script, (rest, tail))
    };

    // 1. Stop in the middle of the plan's stream message: its fourth call (the reply in
    //    #orders-releases, after that channel's root) waits out a Retry-After when the stop
    //    comes.
    slack.script(&[
        Script::Normal,
        Script::Normal,
        Script::Normal,
        Script::RateLimit(30),
    ]);
    let clock = clock();
    let notifier = start_notifier(
        &nats,
        slack.web_api(),
        store.path(),
        clock.shared(),
        Duration::ZERO,
    );
    play(&bus, id, first[..4].iter().map(clone_append).collect()).await?;
    slack.wait_for_calls(4).await?;
    wait_for_sleepers(&clock, 1).await?;
    notifier.stop().await?;
    assert_eq!(slack.accepted().len(), 3);

    // 2. Resume it, go on, and stop between stream messages.
    let mut notifier = start_notifier(
        &nats,
        slack.web_api(),
        store.path(),
        SystemClock::shared(),
        Duration::ZERO,
    );
    let last = play(&bus, id, first[4..].iter().map(clone_append).collect()).await?;
    notifier.wait_handled(last).await?;
    notifier.stop().await?;

    // 3. Events appended while it is down, then the rest.
    let mut more = rest.0;
    play(&bus, id, more.drain(..2).collect()).await?;
    let mut notifier = start_notifier(
        &nats,
        slack.web_api(),
        store.path(),
        SystemClock::shared(),
        Duration::ZERO,
    );
    play(&bus, id, more).await?;
    let last = play(&bus, id, rest.1).await?;
    notifier.wait_handled(last).await?;
    notifier.stop().await?;

    assert_eq!(without_ts(accepted_json(&slack)), without_ts(expected));
    Ok(())
}

#[tokio::test]
async fn a_release_of_300_services_stays_within_slacks_limits() -> anyhow::Result<()> {
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
    let id = "rel-300";
    let changes = (0..300)
        .map(|i| {
            change(
                &format!("service-{i:03}"),
                &format!("1.{i}.0"),
                &format!("{i:07x}"),
            )
        })
        .collect();
    let steps: Vec<Step> = (0..300)
        .flat_map(|i| {
            let target = format!("service-{i:03}");
            [Action::Deploy, Action::Verify].map(|action| Step {
                id: format!("staging:{}:{target}", action.as_str()),
                env: "staging".parse().unwrap(),
                action,
                target: target.clone(),
                version: Some(format!("1.{i}.0")),
            })
        })
        .collect();
    let plan = Plan {
        release: id.parse()?,
        catalog_hash: "sha256:test".into(),
        edges: (0..300)
            .map(|i| railyard_core::Edge {
                from: format!("staging:deploy:service-{i:03}"),
                to: format!("staging:verify:service-{i:03}"),
                rule: "explicit".into(),
                reason: format!("the catalog says service-{i:03} is checked after it is deployed, with a reason long enough to matter"),
            })
            .collect(),
        waves: vec![
            steps.iter().filter(|s| s.action == Action::Deploy).map(|s| s.id.clone()).collect(),
            steps.iter().filter(|s| s.action == Action::Verify).map(|s| s.id.clone()).collect(),
        ],
        critical_path: vec![],
        steps,
        external_edges: vec![],
        points_of_no_return: vec![],
    };
    append(&bus, id, "carol", vec![requested(id, changes)]).await?;
    append(
        &bus,
        id,
        "railyard-planner",
        vec![Event::ReleasePlanned(ReleasePlanned { plan })],
    )
    .await?;
    let last = append(
        &bus,
        id,
        "railyard-promoter",
        vec![Event::ReleaseCompleted(ReleaseCompleted {})],
    )
    .await?;
    notifier.wait_handled(last).await?;
    notifier.stop().await?;

    let received = slack.received();
    let refused: Vec<_> = received
        .iter()
        .filter(|r| r.error.is_some() || r.status != 200)
        .collect();
    assert!(refused.is_empty(), "the stand-in refused: {refused:#?}");
    for call in &received {
        assert_eq!(slack_refusal(&call.body), None);
    }
    let root = &received[0].body;
    let changes = root["blocks"][2]["text"]["text"].as_str().unwrap();
    assert!(changes.ends_with("_… and 275 more_"), "{changes}");
    let planned = &received[1].body;
    let text = planned.to_string();
    assert!(
        text.contains("and 292 more"),
        "a wave of 300 steps shows 8 and says how many more"
    );
    assert!(
        text.contains("and 275 more"),
        "the reasons list ends in and N more"
    );
    let completed = received
        .iter()
        .find(|r| r.body["text"] == "rel-300: completed")
        .unwrap();
    assert!(completed.body.to_string().contains("and 275 more"));
    Ok(())
}

#[tokio::test]
async fn slacks_refusals_are_dead_lettered_with_its_error_and_the_notifier_goes_on()
-> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let bus = bus(&nats).await?;
    let slack = FakeSlack::start().await?;
    let store = tempfile::tempdir()?;
    let transport = railyard_notify::Transport::WebApi {
        base_url: format!("{}/api", slack.url),
        token: railyard_notify::BotToken::new("xoxb-revoked")?,
    };
    let mut notifier = start_notifier(
        &nats,
        transport,
        store.path(),
        SystemClock::shared(),
        Duration::ZERO,
    );
    let planned = play(&bus, "rel-4xx", request_and_plan("rel-4xx")).await?;
    let last = append(
        &bus,
        "rel-4xx",
        "railyard-promoter",
        vec![Event::ReleaseCompleted(ReleaseCompleted {})],
    )
    .await?;
    notifier.wait_handled(last).await?;
    notifier.stop().await?;

    let dead = bus.dead_letters().await?;
    let sequences: Vec<u64> = dead.iter().map(|d| d.source_sequence).collect();
    assert_eq!(sequences, vec![planned, last]);
    assert_eq!(dead[0].consumer, railyard_notify::CONSUMER);
    assert!(
        dead[0].reason.contains("invalid_auth"),
        "{}",
        dead[0].reason
    );
    assert!(
        dead[0].reason.contains("#orders-releases"),
        "{}",
        dead[0].reason
    );
    assert!(
        slack
            .received()
            .iter()
            .all(|r| r.error.as_deref() == Some("invalid_auth"))
    );
    Ok(())
}

#[tokio::test]
async fn webhooks_post_standalone_messages_to_the_channels_they_have() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let bus = bus(&nats).await?;
    let slack = FakeSlack::start().await?;
    slack.script(&[Script::ServerError]);
    let store = tempfile::tempdir()?;
    let mut notifier = start_notifier(
        &nats,
        slack.webhooks(&["#releases"]),
        store.path(),
        SystemClock::shared(),
        Duration::ZERO,
    );
    let last = play(&bus, "rel-hook", full_release("rel-hook")).await?;
    notifier.wait_handled(last).await?;
    notifier.stop().await?;

    let received = slack.received();
    assert_eq!(received[0].status, 500);
    assert_eq!(
        received[1].body, received[0].body,
        "a 5xx is retried with the same payload"
    );
    let accepted = slack.accepted();
    for call in &accepted {
        assert_eq!(call.method, "webhook:#releases");
        assert!(call.body.get("thread_ts").is_none() && call.body.get("channel").is_none());
    }
    let texts: Vec<&str> = accepted
        .iter()
        .map(|r| r.body["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        texts,
        vec![
            "rel-hook: planned, 5 steps through staging → production",
            "rel-hook: approval needed for production",
            "rel-hook: approved by alice for production",
            "rel-hook: completed",
        ]
    );
    Ok(())
}

/// Plays `script` for release `id` against a notifier paced at 1 s on a [`SimClock`]: the
/// whole script is in the stream before the notifier starts, so it is told as one batch.
async fn paced(
    nats: &NatsServer,
    slack: &FakeSlack,
    store: &std::path::Path,
    id: &str,
    script: Vec<Append>,
) -> anyhow::Result<()> {
    let bus = bus(nats).await?;
    let last = play(&bus, id, script).await?;
    let mut notifier = start_notifier(
        nats,
        slack.web_api(),
        store,
        SimClock::new().shared(),
        Duration::from_secs(1),
    );
    notifier.wait_handled(last).await?;
    notifier.stop().await
}

#[tokio::test]
async fn a_graceful_restart_in_the_middle_of_a_batch_loses_and_repeats_nothing()
-> anyhow::Result<()> {
    let id = "rel-batch";
    let mut first = full_release(id);
    let rest = first.split_off(8);
    let clone = |script: &[Append]| script.iter().map(clone_append).collect::<Vec<_>>();

    // Uninterrupted: the first eight appends told as one batch, then the rest as another.
    let expected = {
        let nats = NatsServer::start().await?;
        let slack = FakeSlack::start().await?;
        let store = tempfile::tempdir()?;
        paced(&nats, &slack, store.path(), id, clone(&first)).await?;
        paced(&nats, &slack, store.path(), id, clone(&rest)).await?;
        accepted_json(&slack)
    };

    // Stopped in the middle of the first batch: its fourth call waits out a Retry-After of
    // 30 s (paced waits are simulated, this one waits for the test) when the stop comes.
    let nats = NatsServer::start().await?;
    let bus = bus(&nats).await?;
    let slack = FakeSlack::start().await?;
    let store = tempfile::tempdir()?;
    slack.script(&[
        Script::Normal,
        Script::Normal,
        Script::Normal,
        Script::RateLimit(30),
    ]);
    let mut clock = SimClock::new();
    clock.block_over = Some(Duration::from_secs(1));
    play(&bus, id, clone(&first)).await?;
    let notifier = start_notifier(
        &nats,
        slack.web_api(),
        store.path(),
        clock.shared(),
        Duration::from_secs(1),
    );
    slack.wait_for_calls(4).await?;
    wait_for_sleepers(&clock.manual, 1).await?;
    notifier.stop().await?;
    assert_eq!(slack.accepted().len(), 3);

    // The rest arrives while it is down: the batch under way is resumed as it was, without
    // it; then the rest is told.
    paced(&nats, &slack, store.path(), id, rest).await?;
    assert_eq!(without_ts(accepted_json(&slack)), without_ts(expected));
    Ok(())
}

#[tokio::test]
async fn refusals_in_a_batch_are_dead_lettered_against_the_messages_they_told() -> anyhow::Result<()>
{
    let nats = NatsServer::start().await?;
    let bus = bus(&nats).await?;
    let slack = FakeSlack::start().await?;
    let store = tempfile::tempdir()?;
    let transport = railyard_notify::Transport::WebApi {
        base_url: format!("{}/api", slack.url),
        token: railyard_notify::BotToken::new("xoxb-revoked")?,
    };
    let planned = play(&bus, "rel-4xx", request_and_plan("rel-4xx")).await?;
    let last = append(
        &bus,
        "rel-4xx",
        "railyard-promoter",
        vec![Event::ReleaseCompleted(ReleaseCompleted {})],
    )
    .await?;
    let mut notifier = start_notifier(
        &nats,
        transport,
        store.path(),
        SimClock::new().shared(),
        Duration::from_secs(1),
    );
    notifier.wait_handled(last).await?;
    notifier.stop().await?;

    let dead = bus.dead_letters().await?;
    let sequences: Vec<u64> = dead.iter().map(|d| d.source_sequence).collect();
    assert_eq!(
        sequences,
        vec![planned, last],
        "one batch, two messages told"
    );
    for letter in &dead {
        assert!(letter.reason.contains("#releases"), "{}", letter.reason);
        assert!(
            letter.reason.contains("#orders-releases"),
            "{}",
            letter.reason
        );
        assert!(letter.reason.contains("invalid_auth"), "{}", letter.reason);
    }
    Ok(())
}

//! Pacing, on simulated time ([`SimClock`]: waits cost simulated time, never real time): how
//! many Slack calls a typical release costs at Slack's one call per second per channel, and
//! how long after its last event its threads are up to date — when the notifier catches up
//! with a release already in the stream, and when the release's events arrive every half
//! second while the notifier works. Behind, the notifier tells a run of the release's
//! messages at once: step updates as one digest per thread, each root updated once.
//!
//! Before batching (same scenarios, same clock): the one-service release cost 36 calls (20
//! posts, 16 root updates) whatever its pace, its threads done 23 s after it when caught up
//! with and 16 s after it at an event every half second; the three-service release 66 calls,
//! 46 s and 32.5 s.

mod common;

use std::time::Duration;

use common::*;
use railyard_core::event::{ApprovalDecision, ApprovalRequested, ReleaseCompleted, ReleasePlanned};
use railyard_core::{Action, Clock, Event};
use railyard_testkit::NatsServer;
use serde_json::Value;

const PACING: Duration = Duration::from_secs(1);

/// What one run cost.
#[derive(Debug, PartialEq, Eq)]
struct Cost {
    /// `chat.postMessage` calls, roots included.
    posts: usize,
    /// `chat.update` calls.
    updates: usize,
    /// From the release's last event until every thread was up to date.
    lag: Duration,
}

/// Plays `script` for release `id`, one append every `every` of simulated time (all at once
/// with zero), against a notifier paced at [`PACING`]; returns what it cost and the calls.
async fn simulate(
    id: &str,
    script: Vec<Append>,
    every: Duration,
) -> anyhow::Result<(Cost, Vec<Received>)> {
    let nats = NatsServer::start().await?;
    let bus = bus(&nats).await?;
    let slack = FakeSlack::start().await?;
    let store = tempfile::tempdir()?;
    let clock = SimClock::scheduled(bus, id, script, every);
    let mut notifier = start_notifier(&nats, slack.web_api(), store.path(), clock.shared(), PACING);
    play_scheduled(&clock, &mut notifier).await?;
    notifier.stop().await?;
    let received = slack.received();
    let accepted = slack.accepted();
    assert_eq!(accepted.len(), received.len(), "the stand-in refused calls");
    let last_at = clock.schedule.lock().await.last_at;
    let cost = Cost {
        posts: accepted
            .iter()
            .filter(|r| r.method == "chat.postMessage")
            .count(),
        updates: accepted
            .iter()
            .filter(|r| r.method == "chat.update")
            .count(),
        lag: (clock.manual.now() - last_at).to_std()?,
    };
    Ok((cost, accepted))
}

/// Method, channel and notification text of each call, in order.
fn texts(calls: &[Received]) -> Vec<String> {
    calls
        .iter()
        .map(|r| {
            format!(
                "{} {} {}",
                r.method,
                r.body["channel"].as_str().unwrap_or_default(),
                r.body["text"].as_str().unwrap_or_default()
            )
        })
        .collect()
}

#[tokio::test]
async fn catching_up_with_a_release_already_in_the_stream_tells_it_in_a_few_calls()
-> anyhow::Result<()> {
    let id = "rel-catch-up";
    let (cost, calls) = simulate(id, full_release(id), Duration::ZERO).await?;
    println!(
        "catch-up at 1 s pacing: {cost:?}, {} calls",
        cost.posts + cost.updates
    );
    assert_eq!(
        cost,
        Cost {
            posts: 12,
            updates: 0,
            lag: Duration::from_secs(7),
        }
    );
    let calls: Vec<Value> = calls
        .into_iter()
        .map(|r| serde_json::json!({"method": r.method, "body": r.body}))
        .collect();
    insta::assert_json_snapshot!("catch_up", calls, {
        "[].body.ts" => "[ts]",
        "[].body.thread_ts" => "[ts]",
    });
    Ok(())
}

#[tokio::test]
async fn a_release_whose_events_arrive_every_half_second_is_told_5_s_after_it_ends()
-> anyhow::Result<()> {
    let id = "rel-live";
    let (cost, calls) = simulate(id, full_release(id), Duration::from_millis(500)).await?;
    println!(
        "live at 1 s pacing, an event every 500 ms: {cost:?}, {} calls",
        cost.posts + cost.updates
    );
    assert_eq!(
        cost,
        Cost {
            posts: 14,
            updates: 6,
            lag: Duration::from_secs(5),
        }
    );
    insta::assert_debug_snapshot!("live", texts(&calls));
    Ok(())
}

#[tokio::test]
async fn a_release_slower_than_the_pacing_is_told_event_by_event() -> anyhow::Result<()> {
    // Nothing waits, so nothing is merged: every step is its own reply, as with no pacing.
    let id = "rel-slow";
    let (cost, calls) = simulate(id, full_release(id), Duration::from_secs(3)).await?;
    assert_eq!(
        cost,
        Cost {
            posts: 20,
            updates: 16,
            lag: Duration::from_secs(1),
        },
        "{:#?}",
        texts(&calls)
    );
    assert!(
        calls
            .iter()
            .all(|r| !r.body["text"].as_str().unwrap_or_default().contains("; ")),
        "no digest: {:#?}",
        texts(&calls)
    );
    Ok(())
}

/// Release `id` of three services through staging and production, step by step as the
/// promoter appends it (no inventory events: they cost no calls).
fn three_services(id: &str) -> Vec<Append> {
    let services = ["orders-api", "orders-worker", "billing-worker"];
    let plan = plan_of(id, &services);
    let changes = services
        .iter()
        .map(|s| change(s, "1.0.0", "c0ffee1"))
        .collect();
    let mut script = vec![
        Append::Release("carol", vec![requested(id, changes)]),
        Append::Release(
            "railyard-planner",
            vec![Event::ReleasePlanned(ReleasePlanned { plan: plan.clone() })],
        ),
    ];
    for step in &plan.steps {
        if step.action == Action::Approve {
            let asked = Event::ApprovalRequested(ApprovalRequested {
                step: step.id.clone(),
                env: step.env.clone(),
                approvers: vec!["alice".into()],
                reason: None,
            });
            let granted = Event::ApprovalGranted(ApprovalDecision {
                step: step.id.clone(),
                comment: String::new(),
            });
            script.push(Append::Release(
                "railyard-promoter",
                vec![started(&step.id), asked],
            ));
            script.push(Append::Release("alice", vec![granted, succeeded(&step.id)]));
        } else {
            script.push(Append::Release(
                "railyard-promoter",
                vec![started(&step.id)],
            ));
            script.push(Append::Release(
                "railyard-promoter",
                vec![succeeded(&step.id)],
            ));
        }
    }
    script.push(Append::Release(
        "railyard-promoter",
        vec![Event::ReleaseCompleted(ReleaseCompleted {})],
    ));
    script
}

#[tokio::test]
async fn a_three_service_release_is_told_within_7_s_instead_of_46() -> anyhow::Result<()> {
    let id = "rel-three";
    let (caught_up, _) = simulate(id, three_services(id), Duration::ZERO).await?;
    let (live, _) = simulate(id, three_services(id), Duration::from_millis(500)).await?;
    println!(
        "three services at 1 s pacing: caught up {caught_up:?}, an event every 500 ms {live:?}"
    );
    assert_eq!(
        caught_up,
        Cost {
            posts: 12,
            updates: 0,
            lag: Duration::from_secs(7),
        }
    );
    assert_eq!(
        live,
        Cost {
            posts: 16,
            updates: 12,
            lag: Duration::from_millis(3500),
        }
    );
    Ok(())
}

//! The message sequence Slack receives for a full release, a rolled-back one, a held one, one
//! whose step waits for an earlier release, a
//! refused one, and one let through a freeze that retires blue-green colours, as the planner
//! and the promoter would append their events: snapshots of
//! the exact JSON of every call the stand-in accepted (Web API transport, two channels with
//! `all` and `changes` verbosity).

mod common;

use std::time::Duration;

use common::*;
use railyard_core::Event;
use railyard_core::SystemClock;
use railyard_core::event::{
    ColourRetired, FreezeOverridden, Reasoned, ReleaseHeld, ReleaseRejected, ReleaseRolledBack,
    StepOutcome, StepWaiting,
};
use railyard_testkit::NatsServer;

async fn request_and_plan(bus: &railyard_bus::Bus, id: &str) -> anyhow::Result<u64> {
    play(bus, id, common::request_and_plan(id)).await
}

/// Runs `scenario` against a fresh nats-server, stand-in and notifier; returns what the
/// stand-in accepted.
async fn run_scenario<F, Fut>(scenario: F) -> anyhow::Result<serde_json::Value>
where
    F: FnOnce(railyard_bus::Bus) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<u64>>,
{
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
    let last = scenario(bus).await?;
    notifier.wait_handled(last).await?;
    notifier.stop().await?;
    let refused: Vec<_> = slack
        .received()
        .into_iter()
        .filter(|r| r.status != 200 || r.error.is_some())
        .collect();
    assert!(
        refused.is_empty(),
        "the stand-in refused calls: {refused:#?}"
    );
    Ok(accepted_json(&slack))
}

fn snapshot(name: &str, calls: &serde_json::Value) {
    insta::assert_json_snapshot!(name, calls, {
        "[].body.ts" => "[ts]",
        "[].body.thread_ts" => "[ts]",
    });
}

#[tokio::test]
async fn a_full_release() -> anyhow::Result<()> {
    let calls =
        run_scenario(|bus| async move { play(&bus, "rel-full", full_release("rel-full")).await })
            .await?;
    snapshot("full_release", &calls);
    Ok(())
}

#[tokio::test]
async fn a_rolled_back_release() -> anyhow::Result<()> {
    let calls = run_scenario(|bus| async move {
        let id = "rel-rollback";
        let b = &bus;
        request_and_plan(b, id).await?;
        let p = plan(id);
        let s: Vec<&str> = p.steps.iter().map(|s| s.id.as_str()).collect();
        append(b, id, "railyard-promoter", vec![started(s[0])]).await?;
        append(b, id, "railyard-promoter", vec![succeeded(s[0])]).await?;
        append(b, id, "railyard-promoter", vec![started(s[1])]).await?;
        append(b, id, "railyard-promoter", vec![gate_failed(s[1]), failed(s[1], "gate http#0 failed")]).await?;
        append(b, id, "railyard-promoter", vec![
            Event::StepRolledBack(StepOutcome { step: s[0].into(), detail: "orders-api back to 2.3.0".into() }),
            Event::ReleaseRolledBack(ReleaseRolledBack {
                reason: "gate http#0 failed on staging:verify:orders-api and staging rolls back on failure".into(),
                undone: vec![s[0].into()],
            }),
        ]).await
    })
    .await?;
    snapshot("rolled_back_release", &calls);
    Ok(())
}

/// A step that waits for an earlier release says which and why in the release's thread,
/// then starts.
#[tokio::test]
async fn a_step_waiting_for_an_earlier_release() -> anyhow::Result<()> {
    let calls = run_scenario(|bus| async move {
        let id = "rel-waits";
        let b = &bus;
        request_and_plan(b, id).await?;
        let p = plan(id);
        let s: Vec<&str> = p.steps.iter().map(|s| s.id.as_str()).collect();
        append(
            b,
            id,
            "railyard-promoter",
            vec![Event::StepWaiting(StepWaiting {
                step: s[0].into(),
                waiting_for: vec!["rel-earlier".parse()?],
                reason: "before entering staging, it waits for releases requested earlier that are still in flight: 1. [cross-release] rel-earlier is being undone in staging".into(),
            })],
        )
        .await?;
        append(b, id, "railyard-promoter", vec![started(s[0])]).await
    })
    .await?;
    snapshot("step_waiting", &calls);
    Ok(())
}

#[tokio::test]
async fn a_held_release() -> anyhow::Result<()> {
    let calls = run_scenario(|bus| async move {
        let id = "rel-held";
        let b = &bus;
        request_and_plan(b, id).await?;
        let p = plan(id);
        let s: Vec<&str> = p.steps.iter().map(|s| s.id.as_str()).collect();
        append(b, id, "railyard-promoter", vec![started(s[0])]).await?;
        append(b, id, "railyard-promoter", vec![succeeded(s[0])]).await?;
        append(b, id, "railyard-promoter", vec![started(s[1])]).await?;
        append(
            b,
            id,
            "railyard-promoter",
            vec![
                gate_failed(s[1]),
                failed(s[1], "gate http#0 failed"),
                Event::ReleaseHeld(ReleaseHeld {
                    reason:
                        "gate http#0 failed on staging:verify:orders-api; staging holds on failure"
                            .into(),
                    step: Some(s[1].into()),
                    owner: Some("team-orders".into()),
                    frozen: None,
                }),
            ],
        )
        .await?;
        append(
            b,
            id,
            "bob",
            vec![Event::ReleaseResumed(Reasoned {
                reason: "the health check was flaky".into(),
            })],
        )
        .await
    })
    .await?;
    snapshot("held_release", &calls);
    Ok(())
}

#[tokio::test]
async fn an_operators_hold_offers_resume_and_rollback_not_retry() -> anyhow::Result<()> {
    let calls = run_scenario(|bus| async move {
        let id = "rel-pause";
        let b = &bus;
        request_and_plan(b, id).await?;
        let p = plan(id);
        let s: Vec<&str> = p.steps.iter().map(|s| s.id.as_str()).collect();
        append(b, id, "railyard-promoter", vec![started(s[0])]).await?;
        // An operator holds at the running step: nothing failed, so nothing to retry.
        append(
            b,
            id,
            "ops",
            vec![Event::ReleaseHeld(ReleaseHeld {
                reason: "held by ops: incident in checkout".into(),
                step: Some(s[0].into()),
                owner: Some("ops".into()),
                frozen: None,
            })],
        )
        .await
    })
    .await?;
    let text = calls.to_string();
    assert!(text.contains("To resume or roll back:"), "{text}");
    assert!(text.contains("railyard resume rel-pause"), "{text}");
    assert!(!text.contains("railyard retry"), "{text}");
    Ok(())
}

#[tokio::test]
async fn a_freeze_hold_offers_an_override_button_and_an_operators_hold_does_not()
-> anyhow::Result<()> {
    let calls = run_scenario(|bus| async move {
        let id = "rel-frozen";
        let b = &bus;
        request_and_plan(b, id).await?;
        append(
            b,
            id,
            "railyard-promoter",
            vec![Event::ReleaseHeld(ReleaseHeld {
                reason: "production is frozen for \"monday change board\"".into(),
                step: None,
                owner: None,
                frozen: Some("production".parse()?),
            })],
        )
        .await
    })
    .await?;
    fn freeze_buttons<'a>(value: &'a serde_json::Value, found: &mut Vec<&'a serde_json::Value>) {
        match value {
            serde_json::Value::Object(map)
                if map.get("block_id") == Some(&"railyard.freeze".into()) =>
            {
                found.extend(map["elements"].as_array().into_iter().flatten());
            }
            serde_json::Value::Object(map) => map.values().for_each(|v| freeze_buttons(v, found)),
            serde_json::Value::Array(items) => items.iter().for_each(|v| freeze_buttons(v, found)),
            _ => {}
        }
    }
    let mut buttons = Vec::new();
    freeze_buttons(&calls, &mut buttons);
    // One in the thread of each channel that hears the release.
    assert_eq!(buttons.len(), 2, "{calls}");
    for button in buttons {
        assert_eq!(button["action_id"], "railyard.override_freeze");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(button["value"].as_str().unwrap())?,
            serde_json::json!({"release": "rel-frozen", "env": "production"})
        );
        assert_eq!(button["confirm"]["confirm"]["text"], "Continue");
    }
    // The operator's hold above (and the failed gate's) carry no such button.
    assert!(
        !std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/snapshots/messages__held_release.snap")
        )?
        .contains("railyard.override_freeze")
    );
    Ok(())
}

#[tokio::test]
async fn a_refused_release() -> anyhow::Result<()> {
    let calls = run_scenario(|bus| async move {
        let id = "rel-refused";
        let b = &bus;
        append(b, id, "carol", vec![requested(id, vec![
            change("orders-api", "2.4.0", "d4e5f6a7b8"),
            change("billing-worker", "1.4.1", "0f0e0d0c"),
        ])]).await?;
        append(b, id, "railyard-planner", vec![Event::ReleaseRejected(ReleaseRejected {
            catalog_hash: "sha256:test".into(),
            reasons: vec![
                refusal("queue", Some("production"),
                    "billing-worker 1.4.0 runs in production and reads orders-events 1..=2, but orders-api 2.4.0 in this release emits orders-events 3",
                    "ship a billing-worker that reads orders-events 2..=3 before this release, or add one to it; or keep orders-api emitting a version in 1..=2"),
                refusal("cycle", None,
                    "orders-api must go after billing-worker (queue) and billing-worker after orders-api (explicit)",
                    "remove `after = [\"orders-api\"]` from billing-worker in the catalog"),
            ],
        })]).await
    })
    .await?;
    snapshot("refused_release", &calls);
    Ok(())
}

#[tokio::test]
async fn an_emergency_override_and_retired_colours() -> anyhow::Result<()> {
    let calls = run_scenario(|bus| async move {
        let id = "rel-bg";
        let b = &bus;
        request_and_plan(b, id).await?;
        let p = plan(id);
        let s: Vec<&str> = p.steps.iter().map(|s| s.id.as_str()).collect();
        append(
            b,
            id,
            "alice",
            vec![Event::FreezeOverridden(FreezeOverridden {
                env: railyard_core::EnvName::new("production")?,
                reason: "checkout is down; the fix is in this release".into(),
                until: None,
            })],
        )
        .await?;
        for step in &s[..2] {
            append(b, id, "railyard-promoter", vec![started(step)]).await?;
            append(b, id, "railyard-promoter", vec![succeeded(step)]).await?;
        }
        append(
            b,
            id,
            "railyard-promoter",
            vec![
                Event::ColourRetired(ColourRetired {
                    step: s[0].into(),
                    colour: "blue".into(),
                    ok: true,
                    detail: "exit 0".into(),
                }),
                Event::ColourRetired(ColourRetired {
                    step: s[1].into(),
                    colour: "green".into(),
                    ok: false,
                    detail: "exit 1: scale-down.sh: no such deployment".into(),
                }),
            ],
        )
        .await
    })
    .await?;
    snapshot("override_and_colours", &calls);
    Ok(())
}

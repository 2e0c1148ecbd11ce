//! Every way a release stops — a failed step, a rollback after a failed gate, an operator's
//! rollback, a hold, a denial, a refusal, an old colour not retired — names who should act in
//! the message that tells it and in the root message's summary, in each channel: the
//! catalog's `owner` of the services concerned ("team-orders (owner of orders-api) should look
//! at it"), each team once, and when a service has no owner, that it has none and who asked
//! for the release. One snapshot holds, per release and channel, the exception replies (their
//! notification text and the line that says who acts) and the root's summary as it reads at
//! the end.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use railyard_bus::Bus;
use railyard_core::event::{
    ApprovalDecision, ApprovalRequested, ColourRetired, ReleaseCompleted, ReleaseHeld,
    ReleasePlanned, ReleaseRejected, ReleaseRolledBack, StepOutcome,
};
use railyard_core::step::StepId;
use railyard_core::{Event, SystemClock};
use railyard_testkit::NatsServer;
use serde_json::{Value, json};

const PROMOTER: &str = "railyard-promoter";

/// Requests and plans release `id` of `services` (each at 1.0.0).
async fn planned(bus: &Bus, id: &str, services: &[&str]) -> anyhow::Result<u64> {
    let changes = services
        .iter()
        .map(|s| change(s, "1.0.0", "c0ffee1234"))
        .collect();
    append(bus, id, "carol", vec![requested(id, changes)]).await?;
    append(
        bus,
        id,
        "railyard-planner",
        vec![Event::ReleasePlanned(ReleasePlanned {
            plan: plan_of(id, services),
        })],
    )
    .await
}

/// Every step of `services` in `env` started and succeeded.
async fn through(bus: &Bus, id: &str, env: &str, services: &[&str]) -> anyhow::Result<u64> {
    let mut last = 0;
    let env = env.parse()?;
    for service in services {
        let service = service.parse()?;
        for step in [
            StepId::deploy(&env, &service),
            StepId::verify(&env, &service),
        ] {
            let step = step.to_string();
            append(bus, id, PROMOTER, vec![started(&step)]).await?;
            last = append(bus, id, PROMOTER, vec![succeeded(&step)]).await?;
        }
    }
    Ok(last)
}

async fn a_failed_step(bus: &Bus) -> anyhow::Result<u64> {
    let id = "rel-failed";
    planned(bus, id, &["orders-api", "orders-worker"]).await?;
    through(bus, id, "staging", &["orders-api"]).await?;
    let step = "staging:deploy:orders-worker";
    append(bus, id, PROMOTER, vec![started(step)]).await?;
    append(
        bus,
        id,
        PROMOTER,
        vec![failed(step, "exit 1: ImagePullBackOff")],
    )
    .await
}

async fn a_rollback_after_a_failed_gate(bus: &Bus) -> anyhow::Result<u64> {
    let id = "rel-rolled-back";
    planned(bus, id, &["orders-api"]).await?;
    through(bus, id, "staging", &["orders-api"]).await?;
    let approve = format!("production:approve:{id}");
    append(bus, id, PROMOTER, vec![started(&approve)]).await?;
    append(bus, id, "alice", vec![succeeded(&approve)]).await?;
    append(
        bus,
        id,
        PROMOTER,
        vec![started("production:deploy:orders-api")],
    )
    .await?;
    append(
        bus,
        id,
        PROMOTER,
        vec![succeeded("production:deploy:orders-api")],
    )
    .await?;
    let verify = "production:verify:orders-api";
    append(bus, id, PROMOTER, vec![started(verify)]).await?;
    append(
        bus,
        id,
        PROMOTER,
        vec![gate_failed(verify), failed(verify, "gate http#0 failed")],
    )
    .await?;
    append(
        bus,
        id,
        PROMOTER,
        vec![
            Event::StepRolledBack(StepOutcome {
                step: "production:deploy:orders-api".into(),
                detail: "orders-api back to 0.9.0".into(),
            }),
            Event::ReleaseRolledBack(ReleaseRolledBack {
                reason: format!(
                    "gate http#0 failed on {verify} and production rolls back on failure"
                ),
                undone: vec!["production:deploy:orders-api".into()],
            }),
        ],
    )
    .await
}

async fn an_operators_rollback(bus: &Bus) -> anyhow::Result<u64> {
    let id = "rel-undone";
    planned(bus, id, &["billing-worker"]).await?;
    through(bus, id, "staging", &["billing-worker"]).await?;
    let reason = "rollback of staging requested by ops: error rate up in staging";
    append(
        bus,
        id,
        "ops",
        vec![Event::ReleaseHeld(ReleaseHeld {
            reason: format!("{reason}; no new step starts while it is undone"),
            step: None,
            owner: Some("ops".into()),
            frozen: None,
        })],
    )
    .await?;
    append(
        bus,
        id,
        PROMOTER,
        vec![
            Event::StepRolledBack(StepOutcome {
                step: "staging:deploy:billing-worker".into(),
                detail: String::new(),
            }),
            Event::ReleaseRolledBack(ReleaseRolledBack {
                reason: reason.into(),
                undone: vec!["staging:deploy:billing-worker".into()],
            }),
        ],
    )
    .await
}

async fn a_hold_on_a_service_without_owner(bus: &Bus) -> anyhow::Result<u64> {
    let id = "rel-held";
    planned(bus, id, &["orders-api", "legacy-cron"]).await?;
    through(bus, id, "staging", &["orders-api"]).await?;
    let step = "staging:deploy:legacy-cron";
    append(bus, id, PROMOTER, vec![started(step)]).await?;
    append(
        bus,
        id,
        PROMOTER,
        vec![
            failed(step, "exit 2: crontab: no such user"),
            Event::ReleaseHeld(ReleaseHeld {
                reason: format!(
                    "{step} failed in staging, whose policy is to hold: exit 2: crontab: no such user. railyard resume {id}"
                ),
                step: Some(step.into()),
                owner: None,
                frozen: None,
            }),
        ],
    )
    .await
}

async fn a_denial(bus: &Bus) -> anyhow::Result<u64> {
    let id = "rel-denied";
    let services = ["orders-api", "orders-worker", "billing-worker"];
    planned(bus, id, &services).await?;
    through(bus, id, "staging", &services).await?;
    let approve = format!("production:approve:{id}");
    append(
        bus,
        id,
        PROMOTER,
        vec![
            started(&approve),
            Event::ApprovalRequested(ApprovalRequested {
                step: approve.clone(),
                env: "production".parse()?,
                approvers: vec!["alice".into()],
                reason: None,
            }),
        ],
    )
    .await?;
    let reason = "denied for production by alice (not during the sale)";
    append(
        bus,
        id,
        "alice",
        vec![
            Event::ApprovalDenied(ApprovalDecision {
                step: approve.clone(),
                comment: "not during the sale".into(),
            }),
            failed(&approve, reason),
            Event::ReleaseCancelled(railyard_core::event::Reasoned {
                reason: reason.into(),
            }),
        ],
    )
    .await
}

async fn a_refusal(bus: &Bus) -> anyhow::Result<u64> {
    let id = "rel-refused";
    append(
        bus,
        id,
        "carol",
        vec![requested(
            id,
            vec![
                change("orders-api", "2.4.0", "d4e5f6a7b8"),
                change("legacy-cron", "0.3.0", "0a0b0c0d"),
            ],
        )],
    )
    .await?;
    append(bus, id, "railyard-planner", vec![Event::ReleaseRejected(ReleaseRejected {
        catalog_hash: "sha256:test".into(),
        reasons: vec![
            refusal("queue", Some("production"),
                "billing-worker 1.4.0 runs in production and reads orders-events 1..=2, but orders-api 2.4.0 in this release emits orders-events 3",
                "ship a billing-worker that reads orders-events 2..=3 before this release, or add one to it"),
            refusal("policy", None,
                "the release names no change that is ready",
                "wait for CI"),
        ],
    })]).await
}

async fn an_old_colour_not_retired(bus: &Bus) -> anyhow::Result<u64> {
    let id = "rel-retire";
    planned(bus, id, &["orders-api"]).await?;
    through(bus, id, "staging", &["orders-api"]).await?;
    let approve = format!("production:approve:{id}");
    append(bus, id, PROMOTER, vec![started(&approve)]).await?;
    append(bus, id, "alice", vec![succeeded(&approve)]).await?;
    through(bus, id, "production", &["orders-api"]).await?;
    append(
        bus,
        id,
        PROMOTER,
        vec![
            Event::ColourRetired(ColourRetired {
                step: "production:deploy:orders-api".into(),
                colour: "blue".into(),
                ok: false,
                detail: "exit 1: scale-down.sh: no such deployment".into(),
            }),
            Event::ReleaseCompleted(ReleaseCompleted {}),
        ],
    )
    .await
}

/// Per release and channel: the exception replies (text, and the line saying who acts) and
/// the root's summary at the end.
fn exceptions(calls: &[Received]) -> Value {
    let mut out: BTreeMap<String, BTreeMap<String, Value>> = BTreeMap::new();
    let mut roots: BTreeMap<(String, String), Value> = BTreeMap::new();
    let channels = ["#releases", "#orders-releases"];
    let channel_name = |channel: &str| {
        channels
            .iter()
            .find(|c| channel_id(c) == channel || **c == channel)
            .map(|c| (*c).to_owned())
            .unwrap_or_else(|| channel.to_owned())
    };
    for call in calls {
        let body = &call.body;
        let text = body["text"].as_str().unwrap_or_default();
        let channel = channel_name(body["channel"].as_str().unwrap_or_default());
        let root = call.method == "chat.update" || body.get("thread_ts").is_none();
        if root {
            let id = text
                .strip_prefix("Release ")
                .and_then(|t| t.split(':').next())
                .unwrap_or_default()
                .to_owned();
            let summary: Vec<&str> = body["blocks"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|b| b["text"]["text"].as_str())
                .filter(|t| !t.starts_with("*Changes*") && !t.starts_with("Release "))
                .collect();
            roots.insert((id, channel), json!(summary));
        } else if text.contains("should look at it") {
            let id = text.split(':').next().unwrap_or_default().to_owned();
            let who: Vec<String> = body["blocks"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|b| b["text"]["text"].as_str())
                .flat_map(|t| t.lines())
                .filter(|l| l.starts_with(":point_right:") || l.starts_with("_who:_"))
                .map(str::to_owned)
                .collect();
            let entry = out
                .entry(id)
                .or_default()
                .entry(channel)
                .or_insert_with(|| json!({"exceptions": []}));
            entry["exceptions"]
                .as_array_mut()
                .unwrap()
                .push(json!({"text": text, "who": who}));
        }
    }
    for ((id, channel), summary) in roots {
        let entry = out
            .entry(id)
            .or_default()
            .entry(channel)
            .or_insert_with(|| json!({"exceptions": []}));
        entry["root"] = summary;
    }
    json!(out)
}

#[tokio::test]
async fn every_way_a_release_stops_names_who_should_act() -> anyhow::Result<()> {
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
    a_failed_step(&bus).await?;
    a_rollback_after_a_failed_gate(&bus).await?;
    an_operators_rollback(&bus).await?;
    a_hold_on_a_service_without_owner(&bus).await?;
    a_denial(&bus).await?;
    a_refusal(&bus).await?;
    let last = an_old_colour_not_retired(&bus).await?;
    notifier.wait_handled(last).await?;
    notifier.stop().await?;
    assert_eq!(
        slack.accepted().len(),
        slack.received().len(),
        "the stand-in refused calls"
    );
    insta::assert_json_snapshot!("exceptions", exceptions(&slack.accepted()));
    Ok(())
}

//! The trigger policy end to end: a release is requested exactly once whatever the order its
//! signals arrive in (every permutation, one at a time and all at once, through two intakes
//! on the same stream), and redeliveries (same GitHub delivery id, same CDEvent source+id)
//! are answered `duplicate` and stored once.

mod common;

use common::{Harness, artifact, config, suite};
use railyard_bus::{Bus, BusConfig};
use railyard_core::{AggregateId, Event, ReleaseId, ServiceName};
use railyard_http::Tokens;
use railyard_intake::{Door, Headers, Intake, Origin};
use serde_json::{Value, json};

fn permutations<T: Clone>(items: &[T]) -> Vec<Vec<T>> {
    if items.len() <= 1 {
        return vec![items.to_vec()];
    }
    let mut out = Vec::new();
    for i in 0..items.len() {
        let mut rest = items.to_vec();
        let first = rest.remove(i);
        for mut tail in permutations(&rest) {
            tail.insert(0, first.clone());
            out.push(tail);
        }
    }
    out
}

async fn requested(bus: &Bus, release: &str) -> anyhow::Result<Vec<Vec<String>>> {
    let loaded = bus
        .load(&AggregateId::Release(ReleaseId::new(release)?))
        .await?;
    Ok(loaded
        .events
        .iter()
        .filter_map(|e| match &e.event {
            Event::ReleaseRequested(r) => Some(
                r.changes
                    .iter()
                    .map(|c| format!("{}@{}", c.service, c.version))
                    .collect(),
            ),
            _ => None,
        })
        .collect())
}

fn signals(version: &str, n: usize) -> Vec<Value> {
    vec![
        artifact(
            &format!("a-{n}"),
            "orders-api",
            version,
            json!({ "branch": "main" }),
        ),
        suite(&format!("u-{n}"), "orders-api", version, "unit", "success"),
        suite(&format!("e-{n}"), "orders-api", version, "e2e", "success"),
    ]
}

#[tokio::test]
async fn one_release_whatever_the_order_of_its_signals() -> anyhow::Result<()> {
    let harness = Harness::start().await?;
    for (n, order) in permutations(&[0usize, 1, 2]).into_iter().enumerate() {
        let version = format!("3.0.{n}");
        let all = signals(&version, n);
        let mut outcomes = Vec::new();
        for i in order.iter().copied() {
            let (status, answer) = harness.cdevent(&all[i]).await?;
            assert_eq!(status, 202, "{answer}");
            outcomes.push(answer["reason"].as_str().unwrap_or_default().to_owned());
        }
        let id = ReleaseId::for_change(&ServiceName::new("orders-api")?, &version);
        assert_eq!(
            requested(&harness.bus, id.as_str()).await?,
            vec![vec![format!("orders-api@{version}")]],
            "order {order:?}"
        );
        assert!(
            outcomes.last().unwrap().contains("requested"),
            "the last signal requests it: {outcomes:?}"
        );
        assert!(
            outcomes[..2].iter().all(|o| !o.contains("requested")),
            "earlier signals do not: {outcomes:?}"
        );
        // A late repeat of a suite result (another run) does not request it again.
        let (_, answer) = harness
            .cdevent(&suite(
                &format!("late-{n}"),
                "orders-api",
                &version,
                "unit",
                "success",
            ))
            .await?;
        assert!(
            answer["reason"]
                .as_str()
                .unwrap()
                .contains("already requested"),
            "{answer}"
        );
        assert_eq!(requested(&harness.bus, id.as_str()).await?.len(), 1);
    }
    Ok(())
}

#[tokio::test]
async fn a_group_is_requested_once_whatever_the_order_even_across_two_intakes() -> anyhow::Result<()>
{
    let harness = Harness::start().await?;
    // A second intake on the same stream, with its own memo of the signals.
    let other_bus = Bus::connect(&harness.server.url(), BusConfig::default()).await?;
    let other = Intake::new(config(Tokens::default())?, other_bus);
    for (n, order) in permutations(&[0usize, 1, 2, 3]).into_iter().enumerate() {
        let release = format!("train-{n}");
        let group = json!({ "release": release, "expected_changes": ["orders-api", "billing-worker"], "branch": "main" });
        let orders = format!("4.0.{n}");
        let billing = format!("2.0.{n}");
        let inputs = [
            artifact(&format!("ga-{n}"), "orders-api", &orders, group.clone()),
            artifact(
                &format!("gb-{n}"),
                "billing-worker",
                &billing,
                group.clone(),
            ),
            suite(&format!("gu-{n}"), "orders-api", &orders, "unit", "success"),
            suite(
                &format!("gw-{n}"),
                "billing-worker",
                &billing,
                "unit",
                "success",
            ),
        ];
        let e2e = suite(&format!("ge-{n}"), "orders-api", &orders, "e2e", "success");
        // Sequentially in this order, except the last two, which race on two intakes.
        let (head, tail) = order.split_at(2);
        for i in head {
            harness.cdevent(&inputs[*i]).await?;
        }
        harness.cdevent(&e2e).await?;
        let body = |i: usize| serde_json::to_vec(&inputs[i]).expect("json");
        let headers = Headers::new([("content-type", "application/json")]);
        let (first, second) = (body(tail[0]), body(tail[1]));
        let origin = Origin::named("test");
        let (a, b) = tokio::join!(
            harness
                .intake
                .cdevent(Door::CdEvents, "ci-bot", &origin, &headers, &first),
            other.cdevent(Door::CdEvents, "ci-bot", &origin, &headers, &second),
        );
        let (a, b) = (
            a.map_err(|e| anyhow::anyhow!("{e}"))?,
            b.map_err(|e| anyhow::anyhow!("{e}"))?,
        );
        let changes = requested(&harness.bus, &release).await?;
        assert_eq!(
            changes,
            vec![vec![
                format!("billing-worker@{billing}"),
                format!("orders-api@{orders}")
            ]],
            "order {order:?}: {} / {}",
            a.reason,
            b.reason
        );
    }
    Ok(())
}

#[tokio::test]
async fn redeliveries_are_stored_once() -> anyhow::Result<()> {
    let harness = Harness::start().await?;
    let body = json!({
        "action": "completed",
        "workflow_run": { "name": "unit", "head_sha": "abcdef1234567890", "head_branch": "main", "conclusion": "success" },
        "repository": { "html_url": "https://github.com/acme/orders-api" }
    });
    let bytes = serde_json::to_vec(&body)?;
    let before = harness.last_sequence().await?;
    let (_, first) = harness.github("workflow_run", "delivery-1", &bytes).await?;
    let (status, second) = harness.github("workflow_run", "delivery-1", &bytes).await?;
    assert_eq!(first["outcome"], "accepted", "{first}");
    assert_eq!(
        (status, second["outcome"].as_str()),
        (202, Some("duplicate")),
        "{second}"
    );
    assert_eq!(harness.events_since(before).await?.len(), 1);

    // A CDEvent is the same delivery when source and id repeat, over HTTP or NATS.
    let event = artifact(
        "dup-1",
        "email-worker",
        "9.0.0",
        json!({ "branch": "main" }),
    );
    let before = harness.last_sequence().await?;
    let (_, first) = harness.cdevent(&event).await?;
    let reply = harness.nats(&[], serde_json::to_vec(&event)?).await?;
    assert_eq!(first["outcome"], "accepted", "{first}");
    assert_eq!(
        (reply["status"].as_u64(), reply["outcome"].as_str()),
        (Some(202), Some("duplicate")),
        "{reply}"
    );
    // The artifact and the release it completed; nothing for the duplicate.
    let events = harness.events_since(before).await?;
    assert_eq!(
        events
            .iter()
            .map(|e| e.event.type_name())
            .collect::<Vec<_>>(),
        ["change.artifact_published", "release.requested"]
    );
    Ok(())
}

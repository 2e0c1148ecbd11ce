//! The planner service over a real nats-server: it plans requested releases against the
//! inventory it projects from `service.deployed`, refuses unsafe ones with reasons, decides
//! releases requested while it was down, and never decides a release twice — not after a
//! restart, not with two planners racing.

mod common;

use common::{SAFE, WAIT, decided, request, seed_inventory, start_planner};
use railyard_bus::{Bus, BusConfig, Expected};
use railyard_core::event::ReleaseRequested;
use railyard_core::{AggregateId, Envelope, Event, ReleaseId};
use railyard_testkit::{NatsServer, wait_until};

const UNSAFE: &str = r#"
id = "orders-v4"
[[changes]]
service = "orders-api"
version = "2.1.0"
produces = { orders-events = 4 }
"#;

#[tokio::test]
async fn plans_safe_releases_refuses_unsafe_ones_and_catches_up_after_downtime()
-> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let bus = Bus::connect(&nats.url(), BusConfig::default()).await?;
    bus.ensure_topology().await?;
    seed_inventory(&bus).await?;
    let store = tempfile::tempdir()?;

    // Requested while no planner runs: decided once it starts.
    let safe = request(&bus, SAFE).await?;
    let common::Planner { stop, task } = start_planner(&nats.url(), store.path());
    let events = decided(&bus, &safe).await?;
    let Event::ReleasePlanned(planned) = &events[1].event else {
        panic!("expected a plan, got {:?}", events[1].event)
    };
    assert_eq!(events[1].causation_id, Some(events[0].event_id));
    assert_eq!(events[1].correlation_id, events[0].correlation_id);
    let queue_edge = planned
        .plan
        .edges
        .iter()
        .find(|e| e.rule == "queue" && e.to == "staging:deploy:orders-api")
        .expect("the consumer goes before the producer");
    assert_eq!(queue_edge.from, "staging:verify:email-worker");

    // Requested while it runs: refused, because email-worker (even the new one) cannot read 4.
    let unsafe_release = request(&bus, UNSAFE).await?;
    let events = decided(&bus, &unsafe_release).await?;
    let Event::ReleaseRejected(rejected) = &events[1].event else {
        panic!("expected a refusal, got {:?}", events[1].event)
    };
    assert!(
        rejected.reasons.iter().all(|r| r.rule == "queue"),
        "{:?}",
        rejected.reasons
    );
    assert!(
        rejected
            .reasons
            .iter()
            .any(|r| r.reason.contains("email-worker")),
        "{:?}",
        rejected.reasons
    );

    // A restart decides nothing twice.
    stop.cancel();
    task.await??;
    let common::Planner { stop, task } = start_planner(&nats.url(), store.path());
    let catalog = bus.load(&AggregateId::Catalog).await?;
    assert_eq!(catalog.events.len(), 1, "the same catalog is recorded once");
    let third = request(&bus, &SAFE.replace("orders-v3", "orders-v3b")).await?;
    decided(&bus, &third).await?;
    for id in [&safe, &unsafe_release] {
        assert_eq!(
            bus.load(&AggregateId::Release(id.clone()))
                .await?
                .events
                .len(),
            2,
            "{id} decided once"
        );
    }
    stop.cancel();
    task.await??;
    Ok(())
}

#[tokio::test]
async fn two_planners_racing_decide_each_release_once() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let bus = Bus::connect(&nats.url(), BusConfig::default()).await?;
    bus.ensure_topology().await?;
    seed_inventory(&bus).await?;
    let (a, b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(request(&bus, &SAFE.replace("orders-v3", &format!("rel-{i}"))).await?);
    }
    let common::Planner {
        stop: stop_a,
        task: task_a,
    } = start_planner(&nats.url(), a.path());
    let common::Planner {
        stop: stop_b,
        task: task_b,
    } = start_planner(&nats.url(), b.path());
    for id in &ids {
        decided(&bus, id).await?;
    }
    stop_a.cancel();
    stop_b.cancel();
    task_a.await??;
    task_b.await??;
    for id in &ids {
        let events = bus.load(&AggregateId::Release(id.clone())).await?.events;
        assert_eq!(
            events.len(),
            2,
            "{id}: one request, one decision, whatever the race"
        );
    }
    Ok(())
}

#[tokio::test]
async fn misrouted_release_events_are_dead_lettered_and_the_planner_goes_on() -> anyhow::Result<()>
{
    let nats = NatsServer::start().await?;
    let bus = Bus::connect(&nats.url(), BusConfig::default()).await?;
    bus.ensure_topology().await?;
    seed_inventory(&bus).await?;
    // A release's end on an inventory aggregate, and a request on release.a for release b.
    let inventory = AggregateId::Inventory("production".parse()?);
    let ended = Event::ReleaseCancelled(railyard_core::event::Reasoned {
        reason: "misrouted".into(),
    });
    let stray = Envelope::new(inventory.clone(), "mallory", chrono::Utc::now(), ended);
    bus.append(&inventory, Expected::Any, &[stray]).await?;
    let a = AggregateId::Release("a".parse()?);
    let other = Event::ReleaseRequested(ReleaseRequested {
        release: "b".parse()?,
        requested_by: "mallory".into(),
        changes: Vec::new(),
    });
    let stray = Envelope::new(a.clone(), "mallory", chrono::Utc::now(), other);
    bus.append(&a, Expected::NoEvents, &[stray]).await?;

    let dir = tempfile::tempdir()?;
    let common::Planner { stop, task } = start_planner(&nats.url(), dir.path());
    // The planner did not stop at them: a release requested after them is planned.
    let id = request(&bus, SAFE).await?;
    let events = decided(&bus, &id).await?;
    assert_eq!(events[1].event.type_name(), "release.planned");
    let letters = wait_until("both strays dead-lettered", WAIT, || {
        let bus = bus.clone();
        async move {
            let letters = bus.dead_letters().await?;
            Ok((letters.len() >= 2).then_some(letters))
        }
    })
    .await?;
    let reasons: Vec<&str> = letters.iter().map(|l| l.reason.as_str()).collect();
    assert!(
        reasons.iter().any(|r| r.contains(
            "release.cancelled arrived on the aggregate inventory.production: a release's events belong on release.<id>"
        )),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r
            .contains("release.requested arrived on the aggregate release.a but names release b")),
        "{reasons:?}"
    );
    stop.cancel();
    task.await??;
    Ok(())
}

/// Appends `event` to release `id` as the promoter would.
async fn record(bus: &Bus, id: &ReleaseId, event: Event) -> anyhow::Result<u64> {
    let aggregate = AggregateId::Release(id.clone());
    let envelope = Envelope::new(aggregate.clone(), "promoter", chrono::Utc::now(), event);
    Ok(bus
        .append(&aggregate, Expected::Any, &[envelope])
        .await?
        .sequence)
}

#[tokio::test]
async fn a_later_release_waits_for_an_earlier_one_failing_in_the_same_environment()
-> anyhow::Result<()> {
    // The chaos soak: release A failed in staging and was rolling staging back (email-worker
    // among it) when B, changing email-worker too, was planned without waiting for A there,
    // because A's email-worker steps in staging had succeeded before the failure. The
    // promoter's re-validation then held B. A failure puts the environment's steps back in
    // play until A ends.
    let server = NatsServer::start().await?;
    let bus = Bus::connect(&server.url(), BusConfig::default()).await?;
    bus.ensure_topology().await?;
    seed_inventory(&bus).await?;
    let dir = tempfile::tempdir()?;
    let common::Planner { stop, task } = start_planner(&server.url(), dir.path());

    let a = request(
        &bus,
        r#"
id = "a"
[[changes]]
service = "orders-api"
version = "1.0.1"
produces = { orders-events = 2 }
[[changes]]
service = "email-worker"
version = "3.2.0"
consumes = { orders-events = "1..=2" }
"#,
    )
    .await?;
    let events = decided(&bus, &a).await?;
    let Event::ReleasePlanned(planned) = &events[1].event else {
        anyhow::bail!("a was not planned: {:?}", events[1].event);
    };
    let staging = |target: &str| {
        planned
            .plan
            .steps
            .iter()
            .filter(|s| s.env.as_str() == "staging" && s.target == target)
            .map(|s| s.id.clone())
            .collect::<Vec<_>>()
    };
    for step in staging("email-worker") {
        record(
            &bus,
            &a,
            Event::StepSucceeded(railyard_core::event::StepOutcome {
                step,
                detail: String::new(),
            }),
        )
        .await?;
    }
    let failed = staging("orders-api")
        .into_iter()
        .next()
        .expect("a deploys orders-api in staging");
    record(
        &bus,
        &a,
        Event::StepFailed(railyard_core::event::StepOutcome {
            step: failed,
            detail: "exit status 1".to_owned(),
        }),
    )
    .await?;

    let b = request(
        &bus,
        r#"
id = "b"
[[changes]]
service = "email-worker"
version = "3.3.0"
consumes = { orders-events = "1..=2" }
"#,
    )
    .await?;
    let events = decided(&bus, &b).await?;
    let Event::ReleasePlanned(planned) = &events[1].event else {
        anyhow::bail!("b was not planned: {:?}", events[1].event);
    };
    let waits_in_staging: Vec<_> = planned
        .plan
        .external_edges
        .iter()
        .filter(|edge| edge.release == a && edge.to.starts_with("staging:"))
        .collect();
    assert!(
        !waits_in_staging.is_empty(),
        "b must wait for a in staging: {:#?}",
        planned.plan.external_edges
    );
    stop.cancel();
    task.await??;
    Ok(())
}

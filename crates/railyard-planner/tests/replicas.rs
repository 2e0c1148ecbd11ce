//! Planner replicas over a real nats-server with a manual clock (nothing sleeps): of two
//! replicas only the lease holder decides; when it is killed the standby, whose projection kept
//! up, leads once the lease expired on the clock and decides the next release; each release is
//! planned exactly once.

mod common;

use std::time::Duration;

use common::{
    Changes, SAFE, TTL, WAIT, bus_config, decided, events, planned_count, request, seed_inventory,
    start_replica,
};
use railyard_bus::Bus;
use railyard_core::{AggregateId, Clock, ManualClock};
use railyard_testkit::{NatsServer, wait_until};

async fn leader(bus: &Bus, replica: &str) -> anyhow::Result<()> {
    wait_until(&format!("{replica} leads the planner"), WAIT, || async {
        let holder = bus.leader("planner").await?.map(|record| record.holder);
        Ok((holder.as_deref() == Some(replica)).then_some(()))
    })
    .await
}

#[tokio::test]
async fn only_the_leader_plans_and_a_standby_takes_over_once_a_killed_leaders_lease_expired()
-> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let clock = ManualClock::new("2026-06-01T12:00:00Z".parse()?);
    let bus = Bus::connect(&nats.url(), bus_config(&clock)).await?;
    bus.ensure_topology().await?;
    seed_inventory(&bus).await?;
    let changes = Changes::default();
    let (a_store, b_store) = (tempfile::tempdir()?, tempfile::tempdir()?);

    let a = start_replica(
        &nats.url(),
        bus_config(&clock),
        a_store.path(),
        "planner-a",
        &clock,
        &changes,
    );
    leader(&bus, "planner-a").await?;
    let b = start_replica(
        &nats.url(),
        bus_config(&clock),
        b_store.path(),
        "planner-b",
        &clock,
        &changes,
    );
    // b stands by: asleep until a's lease ends, next to a's renewal.
    clock.wait_for_sleepers(2).await;

    let first = request(&bus, SAFE).await?;
    let decision = decided(&bus, &first).await?;
    assert_eq!(decision[1].event.type_name(), "release.planned");
    // a renews over time; b never leads meanwhile.
    for _ in 0..4 {
        clock.advance(Duration::from_secs(3));
        let renewed = clock.now();
        wait_until("a renewed", WAIT, || async {
            let record = bus.leader("planner").await?;
            Ok(record.filter(|r| r.renewed_at == renewed).map(|_| ()))
        })
        .await?;
    }
    let renewed = clock.now();

    // a is killed (no resignation). Short of the ttl nobody decides the next release.
    a.task.abort();
    let _ = a.task.await;
    let second = request(&bus, &SAFE.replace("orders-v3", "orders-v4")).await?;
    clock.advance(Duration::from_secs(5));
    assert_eq!(
        bus.leader("planner").await?.map(|r| r.holder).as_deref(),
        Some("planner-a")
    );
    assert!(
        !changes
            .lock()
            .unwrap()
            .iter()
            .any(|(who, _, _)| who == "planner-b"),
        "b led while a's lease ran: {changes:?}"
    );
    assert_eq!(
        events(&bus, &second).await?.len(),
        1,
        "nobody decides while a's lease runs"
    );

    // Past the ttl, b leads and decides it, with its own projection (kept current meanwhile).
    clock.advance(Duration::from_secs(5));
    leader(&bus, "planner-b").await?;
    let decision = decided(&bus, &second).await?;
    assert_eq!(decision[1].event.type_name(), "release.planned");
    let took_over = changes
        .lock()
        .unwrap()
        .iter()
        .find(|(who, leading, _)| who == "planner-b" && *leading)
        .map(|(_, _, at)| *at)
        .expect("b was told it leads");
    assert!(
        took_over >= renewed + chrono::Duration::from_std(TTL)?,
        "{took_over} < {renewed} + ttl"
    );
    assert!(took_over <= renewed + chrono::Duration::from_std(TTL + Duration::from_secs(1))?);

    // And the next one too; every release is planned exactly once.
    let third = request(&bus, &SAFE.replace("orders-v3", "orders-v5")).await?;
    decided(&bus, &third).await?;
    for id in [&first, &second, &third] {
        assert_eq!(planned_count(&bus, id).await?, 1, "{id}");
    }
    let catalog = bus.load(&AggregateId::Catalog).await?;
    assert_eq!(catalog.events.len(), 1, "the catalog is recorded once");
    b.task.abort();
    Ok(())
}

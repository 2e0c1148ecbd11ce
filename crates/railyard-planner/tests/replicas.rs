//! Planner replicas over a real nats-server with a manual clock (nothing sleeps): of two
//! replicas only the lease holder decides; when it is killed the standby, whose projection kept
//! up, leads once the lease expired on the clock and decides the next release; each release is
//! planned exactly once. A leader whose decision NATS refuses (a publish permission, lifted by
//! a configuration reload) does not stop: it pauses on its clock and decides again, once; the
//! only real-time wait there is the bus's own bound on the refused, never acknowledged append.

mod common;

use std::time::Duration;

use common::{
    Changes, SAFE, TTL, WAIT, bus_config, decided, events, planned_count, request, seed_inventory,
    start_replica,
};
use railyard_bus::{Bus, BusConfig, NatsCredentials};
use railyard_core::{AggregateId, Clock, ManualClock};
use railyard_testkit::{NatsServer, locate_nats_server, wait_until};

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

/// A server whose anonymous clients are `operator` (every permission) and whose `planner` user
/// may not publish to `release.orders-v3`'s events while `refuse` holds.
fn nats_conf(dir: &std::path::Path, refuse: bool) -> String {
    let deny = if refuse {
        r#"permissions: { publish: { deny: ["railyard.events.release.orders-v3"] } }"#
    } else {
        ""
    };
    format!(
        r#"host: 127.0.0.1
port: -1
jetstream {{ store_dir: "{store}" }}
no_auth_user: operator
authorization {{
  users = [
    {{ user: operator, password: operator }}
    {{ user: planner, password: planner, {deny} }}
  ]
}}
"#,
        store = dir.join("store").display()
    )
}

#[tokio::test]
async fn a_leader_whose_decision_nats_refuses_decides_again_after_a_pause_on_its_clock()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let conf = dir.path().join("nats.conf");
    std::fs::write(&conf, nats_conf(dir.path(), true))?;
    let nats = NatsServer::start_from_config(&conf, Vec::new()).await?;
    let clock = ManualClock::new("2026-06-01T12:00:00Z".parse()?);
    let bus = Bus::connect(&nats.url(), bus_config(&clock)).await?;
    bus.ensure_topology().await?;
    seed_inventory(&bus).await?;

    // The planner connects as `planner`. A refused publish is never acknowledged: its append
    // gives up after one `request_timeout` (real time, inside the bus; `append_timeout` is
    // shorter, so it is not sent again) with a transient error.
    let planner_bus = BusConfig {
        credentials: Some(NatsCredentials {
            user: "planner".to_owned(),
            password: "planner".to_owned(),
        }),
        request_timeout: Duration::from_secs(2),
        append_timeout: Duration::from_secs(1),
        ..bus_config(&clock)
    };
    let store = tempfile::tempdir()?;
    let planner = start_replica(
        &nats.url(),
        planner_bus,
        store.path(),
        "planner-a",
        &clock,
        &Changes::default(),
    );
    leader(&bus, "planner-a").await?;

    // The leader loads the release, plans it, and NATS refuses the decision.
    let id = request(&bus, SAFE).await?;
    wait_until(
        "the server refused the planner's decision",
        WAIT,
        || async {
            let log = nats.log_tail();
            Ok((log.contains("Publish Violation")
                && log.contains("railyard.events.release.orders-v3"))
            .then_some(()))
        },
    )
    .await?;
    assert_eq!(
        events(&bus, &id).await?.len(),
        1,
        "refused, nothing recorded"
    );

    // NATS accepts it again (the configuration reloaded, connections kept). The leader,
    // pausing on its clock after the failure, decides again once the clock moves past the
    // pause (100 ms): the release is planned, and the planner still runs.
    std::fs::write(&conf, nats_conf(dir.path(), false))?;
    let pid = nats.pid().expect("the server runs").to_string();
    let reload = std::process::Command::new(locate_nats_server()?)
        .args(["--signal", &format!("reload={pid}")])
        .status()?;
    anyhow::ensure!(reload.success(), "nats-server --signal reload: {reload}");
    wait_until("the server reloaded its configuration", WAIT, || async {
        Ok(nats
            .log_tail()
            .contains("Reloaded server configuration")
            .then_some(()))
    })
    .await?;
    let decision = wait_until("the planner decided again", WAIT, || async {
        if planner.task.is_finished() {
            anyhow::bail!("the planner stopped after the refusal");
        }
        clock.advance(Duration::from_millis(100));
        let events = events(&bus, &id).await?;
        Ok((events.len() >= 2).then_some(events))
    })
    .await?;
    assert_eq!(decision[1].event.type_name(), "release.planned");

    // It goes on deciding; nothing was decided twice.
    let next = request(&bus, &SAFE.replace("orders-v3", "orders-v4")).await?;
    assert_eq!(
        decided(&bus, &next).await?[1].event.type_name(),
        "release.planned"
    );
    for release in [&id, &next] {
        assert_eq!(planned_count(&bus, release).await?, 1, "{release}");
        assert_eq!(events(&bus, release).await?.len(), 2, "{release}");
    }
    planner.stop.cancel();
    planner.task.await??;
    Ok(())
}

//! Leader leases on a real nats-server, with a manual clock (nothing sleeps): of two replicas
//! one leads; a killed leader's lease is taken over once it expired on the clock, never before;
//! a renewing leader keeps it; a resigning one hands it over at once; handoffs are written
//! only at the revision read.

mod common;

use std::time::Duration;

use common::{WAIT, bus_with, fast_config};
use railyard_bus::{Bus, BusConfig, BusError, Campaign, LeaderConfig, Leadership};
use railyard_core::ManualClock;
use railyard_testkit::NatsServer;
use tokio::sync::watch;

fn config(replica: &str, clock: &ManualClock) -> LeaderConfig {
    LeaderConfig {
        replica: replica.to_owned(),
        ttl: Duration::from_secs(9),
        ..LeaderConfig::new("planner", clock.shared())
    }
}

async fn until(rx: &mut watch::Receiver<bool>, leading: bool) -> anyhow::Result<()> {
    tokio::time::timeout(WAIT, rx.wait_for(|now| *now == leading))
        .await
        .map_err(|_| anyhow::anyhow!("leadership did not become {leading} within {WAIT:?}"))??;
    Ok(())
}

/// A bus reading lease expiry (for [`Bus::leader`]) from `clock`.
async fn bus_on(server: &NatsServer, clock: &ManualClock) -> anyhow::Result<Bus> {
    let config = BusConfig {
        clock: clock.shared(),
        ..fast_config()
    };
    bus_with(&server.url(), config).await
}

async fn holder(bus: &Bus) -> anyhow::Result<Option<String>> {
    Ok(bus.leader("planner").await?.map(|record| record.holder))
}

#[tokio::test]
async fn one_replica_leads_and_a_standby_takes_over_only_once_the_lease_expired()
-> anyhow::Result<()> {
    let server = NatsServer::start().await?;
    let clock = ManualClock::new("2026-06-01T12:00:00Z".parse()?);
    let bus = bus_on(&server, &clock).await?;

    let a = Leadership::start(bus.clone(), config("a", &clock));
    let mut a_leads = a.watch();
    until(&mut a_leads, true).await?;
    let b = Leadership::start(bus.clone(), config("b", &clock));
    // b stands by: it sleeps until a's deadline (a renews every 3 s, also asleep).
    clock.wait_for_sleepers(2).await;
    assert!(!b.is_leading());
    assert_eq!(holder(&bus).await?.as_deref(), Some("a"));

    // A leader that renews keeps the lease, however long.
    for _ in 0..6 {
        let renewed = bus.leader("planner").await?.map(|r| r.renewed_at);
        clock.advance(Duration::from_secs(3));
        tokio::time::timeout(WAIT, async {
            while bus
                .leader("planner")
                .await
                .ok()
                .flatten()
                .map(|r| r.renewed_at)
                == renewed
            {
                tokio::task::yield_now().await;
            }
        })
        .await?;
        assert!(a.is_leading() && !b.is_leading());
    }
    assert_eq!(holder(&bus).await?.as_deref(), Some("a"));
    let term = bus.leader("planner").await?.expect("led").term;

    // a is killed: nothing renews. Short of the ttl b still stands by; past it, b leads.
    drop(a);
    let mut b_leads = b.watch();
    clock.advance(Duration::from_secs(5));
    assert!(!b.is_leading());
    clock.advance(Duration::from_secs(5));
    until(&mut b_leads, true).await?;
    let record = bus.leader("planner").await?.expect("led");
    assert_eq!((record.holder.as_str(), record.term), ("b", term + 1));

    // b resigns on a graceful stop: the lease is free at once for c.
    b.stop().await;
    assert_eq!(holder(&bus).await?, None);
    let c = Leadership::start(bus.clone(), config("c", &clock));
    let mut c_leads = c.watch();
    until(&mut c_leads, true).await?;
    assert_eq!(holder(&bus).await?.as_deref(), Some("c"));
    Ok(())
}

#[tokio::test]
async fn of_two_replicas_campaigning_at_once_exactly_one_wins() -> anyhow::Result<()> {
    let server = NatsServer::start().await?;
    let clock = ManualClock::new("2026-06-01T12:00:00Z".parse()?);
    let bus = bus_on(&server, &clock).await?;
    for round in 0..5 {
        let role = format!("race-{round}");
        let (x, y) = (
            config("x", &clock).for_role(role.clone()),
            config("y", &clock).for_role(role.clone()),
        );
        let (first, second) = tokio::join!(bus.campaign(&x), bus.campaign(&y));
        let won = [first?, second?]
            .into_iter()
            .filter(|c| matches!(c, Campaign::Won(_)))
            .count();
        assert_eq!(won, 1, "round {round}");
    }
    Ok(())
}

#[tokio::test]
async fn a_deposed_leader_cannot_renew_nor_write_a_handoff() -> anyhow::Result<()> {
    let server = NatsServer::start().await?;
    let clock = ManualClock::new("2026-06-01T12:00:00Z".parse()?);
    let bus = bus_on(&server, &clock).await?;
    let Campaign::Won(mut a) = bus.campaign(&config("a", &clock)).await? else {
        panic!("the lease is free")
    };
    let revision = bus
        .write_handoff("notify", "a", b"1".to_vec(), None)
        .await?;
    let mut watched = bus.watch_handoff("notify").await?;
    assert_eq!(watched.next().await.expect("current")?, b"1");

    assert!(matches!(
        bus.campaign(&config("b", &clock)).await?,
        Campaign::Lost(_)
    ));
    clock.advance(Duration::from_secs(10));
    let Campaign::Won(b) = bus.campaign(&config("b", &clock)).await? else {
        panic!("the lease expired")
    };
    assert_eq!(b.previous().map(|p| p.holder.as_str()), Some("a"));
    let (_, read) = bus.read_handoff("notify").await?.expect("handed over");
    assert_eq!(read, revision);
    bus.write_handoff("notify", "b", b"2".to_vec(), Some(read))
        .await?;
    assert_eq!(watched.next().await.expect("next")?, b"2");

    // a still runs: both its renewal and its stale handoff write are refused.
    let error = a.renew().await.unwrap_err();
    assert!(matches!(error, BusError::LeaseLost { .. }), "{error:?}");
    let error = bus
        .write_handoff("notify", "a", b"stale".to_vec(), Some(revision))
        .await
        .unwrap_err();
    assert!(matches!(error, BusError::LeaseLost { .. }), "{error:?}");
    assert_eq!(
        bus.read_handoff("notify").await?.expect("kept").0,
        b"2".to_vec()
    );
    Ok(())
}

#[tokio::test]
async fn a_leader_cut_off_from_nats_stops_leading_at_its_deadline() -> anyhow::Result<()> {
    let server = NatsServer::start().await?;
    let clock = ManualClock::new("2026-06-01T12:00:00Z".parse()?);
    let bus = bus_on(&server, &clock).await?;
    let own = bus_on(&server, &clock).await?;
    let a = Leadership::start(own.clone(), config("a", &clock));
    let mut a_leads = a.watch();
    until(&mut a_leads, true).await?;
    clock.wait_for_sleepers(1).await;

    // Its connection is gone: no renewal reaches NATS. Short of the deadline it still leads
    // (nobody else may lead either); at the deadline it stops, and b takes over.
    own.close().await?;
    clock.advance(Duration::from_secs(6));
    assert!(a.is_leading());
    clock.advance(Duration::from_secs(3));
    until(&mut a_leads, false).await?;
    let b = Leadership::start(bus.clone(), config("b", &clock));
    let mut b_leads = b.watch();
    until(&mut b_leads, true).await?;
    Ok(())
}

//! Planner replicas over a real nats-server with a manual clock (nothing sleeps): of two
//! replicas only the lease holder decides; when it is killed the standby, whose projection kept
//! up, leads once the lease expired on the clock and decides the next release; each release is
//! planned exactly once.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use railyard_bus::{Bus, BusConfig, Expected, LeaderConfig};
use railyard_core::event::{ReleaseRequested, ServiceDeployed};
use railyard_core::inventory::RunningService;
use railyard_core::{
    AggregateId, Catalog, Clock, Envelope, Event, ManualClock, ReleaseFile, ReleaseId,
};
use railyard_planner::service::{PlannerConfig, run_replica};
use railyard_store::RunOptions;
use railyard_testkit::{NatsServer, wait_until};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(20);
const TTL: Duration = Duration::from_secs(9);

const CATALOG: &str = r#"
[[environments]]
name = "staging"

[[environments]]
name = "production"
after = "staging"

[services.orders-api]
deploy = { kind = "simulated" }

[services.email-worker]
deploy = { kind = "simulated" }

[queues.orders-events]
producers = ["orders-api"]
consumers = ["email-worker"]
"#;

fn running(version: &str, produces: u32, consumes: &str) -> RunningService {
    let mut service: RunningService =
        serde_json::from_value(serde_json::json!({"version": version})).unwrap();
    if produces > 0 {
        service
            .produces
            .insert("orders-events".parse().unwrap(), produces);
    }
    if !consumes.is_empty() {
        service
            .consumes
            .insert("orders-events".parse().unwrap(), consumes.parse().unwrap());
    }
    service
}

async fn seed_inventory(bus: &Bus) -> anyhow::Result<()> {
    for env in ["staging", "production"] {
        for (service, run) in [
            ("orders-api", running("1.0.0", 2, "")),
            ("email-worker", running("3.1.0", 0, "1..=2")),
        ] {
            let aggregate = AggregateId::Inventory(env.parse()?);
            let event = Event::ServiceDeployed(ServiceDeployed {
                env: env.parse()?,
                service: service.parse()?,
                running: Some(run),
                databases: Default::default(),
                release: None,
            });
            let envelope = Envelope::new(aggregate.clone(), "operator", Utc::now(), event);
            bus.append(&aggregate, Expected::Any, &[envelope]).await?;
        }
    }
    Ok(())
}

async fn request(bus: &Bus, release_toml: &str) -> anyhow::Result<ReleaseId> {
    let file = ReleaseFile::from_toml(release_toml)?;
    let aggregate = AggregateId::Release(file.id.clone());
    let event = Event::ReleaseRequested(ReleaseRequested {
        release: file.id.clone(),
        requested_by: "carol".into(),
        changes: file.changes,
    });
    let envelope = Envelope::new(aggregate.clone(), "carol", Utc::now(), event);
    bus.append(&aggregate, Expected::NoEvents, &[envelope])
        .await?;
    Ok(file.id)
}

const SAFE: &str = r#"
id = "orders-v3"
[[changes]]
service = "orders-api"
version = "2.0.0"
produces = { orders-events = 3 }
[[changes]]
service = "email-worker"
version = "3.2.0"
consumes = { orders-events = "2..=3" }
"#;

/// Who led when: (replica, leading, clock time), as each replica's gauge was told.
type Changes = Arc<Mutex<Vec<(String, bool, DateTime<Utc>)>>>;

fn start(
    url: &str,
    store: &std::path::Path,
    replica: &str,
    clock: &ManualClock,
    changes: &Changes,
) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    let config = PlannerConfig {
        catalog: Catalog::from_toml(CATALOG).unwrap(),
        store: store.to_owned(),
        clock: clock.shared(),
        catch_up_timeout: Duration::from_secs(3600),
    };
    let (name, at, log) = (replica.to_owned(), clock.clone(), Arc::clone(changes));
    let leader = LeaderConfig {
        replica: replica.to_owned(),
        ttl: TTL,
        on_change: Some(Arc::new(move |leading| {
            log.lock().unwrap().push((name.clone(), leading, at.now()));
        })),
        ..LeaderConfig::new("planner", clock.shared())
    };
    let (url, bus_config) = (
        url.to_owned(),
        BusConfig {
            clock: clock.shared(),
            ..BusConfig::default()
        },
    );
    tokio::spawn(async move {
        let bus = Bus::connect(&url, bus_config).await?;
        run_replica(
            config,
            Some(leader),
            bus,
            CancellationToken::new(),
            RunOptions::default(),
        )
        .await?;
        Ok(())
    })
}

async fn events(bus: &Bus, id: &ReleaseId) -> anyhow::Result<Vec<Envelope>> {
    Ok(bus.load(&AggregateId::Release(id.clone())).await?.events)
}

async fn decided(bus: &Bus, id: &ReleaseId) -> anyhow::Result<Vec<Envelope>> {
    wait_until(&format!("release {id} decided"), WAIT, || async {
        let events = events(bus, id).await?;
        Ok((events.len() >= 2).then_some(events))
    })
    .await
}

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
    let bus = Bus::connect(
        &nats.url(),
        BusConfig {
            clock: clock.shared(),
            ..BusConfig::default()
        },
    )
    .await?;
    bus.ensure_topology().await?;
    seed_inventory(&bus).await?;
    let changes = Changes::default();
    let (a_store, b_store) = (tempfile::tempdir()?, tempfile::tempdir()?);

    let a = start(&nats.url(), a_store.path(), "planner-a", &clock, &changes);
    leader(&bus, "planner-a").await?;
    let b = start(&nats.url(), b_store.path(), "planner-b", &clock, &changes);
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
    a.abort();
    let _ = a.await;
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
        let planned = events(&bus, id)
            .await?
            .iter()
            .filter(|e| e.event.type_name() == "release.planned")
            .count();
        assert_eq!(planned, 1, "{id}");
    }
    let catalog = bus.load(&AggregateId::Catalog).await?;
    assert_eq!(catalog.events.len(), 1, "the catalog is recorded once");
    b.abort();
    Ok(())
}

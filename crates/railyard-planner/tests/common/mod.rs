//! Shared set-up of the planner tests: the catalog and inventory they plan against, requesting
//! a release, reading its events, bounded waits for its decision, and starting a planner
//! (the only one, on the system clock) or a replica leading on a manual clock.
#![allow(dead_code)]

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use railyard_bus::{Bus, BusConfig, Expected, LeaderConfig};
use railyard_core::event::{ReleaseRequested, ServiceDeployed};
use railyard_core::inventory::RunningService;
use railyard_core::{
    AggregateId, Catalog, Clock, Envelope, Event, ManualClock, ReleaseFile, ReleaseId, SystemClock,
};
use railyard_planner::service::{PlannerConfig, run, run_replica};
use railyard_store::RunOptions;
use railyard_testkit::wait_until;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Bound on every wait in the tests.
pub const WAIT: Duration = Duration::from_secs(20);

/// The planner lease's time to live in the replica tests.
pub const TTL: Duration = Duration::from_secs(9);

pub const CATALOG: &str = r#"
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

/// Planned against the seeded inventory: orders-api emits v3, email-worker learns to read it.
pub const SAFE: &str = r#"
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

pub fn running(version: &str, produces: u32, consumes: &str) -> RunningService {
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

/// Both environments run orders-api 1.0.0 (emits v2) and email-worker 3.1.0 (reads v1..=v2).
pub async fn seed_inventory(bus: &Bus) -> anyhow::Result<()> {
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

/// Requests the release `release_toml` describes, as intake would.
pub async fn request(bus: &Bus, release_toml: &str) -> anyhow::Result<ReleaseId> {
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

/// The release's events as stored now.
pub async fn events(bus: &Bus, id: &ReleaseId) -> anyhow::Result<Vec<Envelope>> {
    Ok(bus.load(&AggregateId::Release(id.clone())).await?.events)
}

/// The release's events once it has been decided (bounded wait).
pub async fn decided(bus: &Bus, id: &ReleaseId) -> anyhow::Result<Vec<Envelope>> {
    wait_until(&format!("release {id} decided"), WAIT, || async {
        let events = events(bus, id).await?;
        Ok((events.len() >= 2).then_some(events))
    })
    .await
}

/// How many `release.planned` the release has.
pub async fn planned_count(bus: &Bus, id: &ReleaseId) -> anyhow::Result<usize> {
    Ok(events(bus, id)
        .await?
        .iter()
        .filter(|e| e.event.type_name() == "release.planned")
        .count())
}

/// A running planner: cancel `stop` and await `task` for its outcome.
pub struct Planner {
    pub stop: CancellationToken,
    pub task: JoinHandle<anyhow::Result<()>>,
}

/// The only planner ([`run`]'s set-up: no lease), on the system clock.
pub fn start_planner(url: &str, store: &Path) -> Planner {
    let config = PlannerConfig {
        catalog: Catalog::from_toml(CATALOG).unwrap(),
        store: store.to_owned(),
        kept_store: None,
        clock: SystemClock::shared(),
        catch_up_timeout: Duration::from_secs(10),
    };
    let (stop, url) = (CancellationToken::new(), url.to_owned());
    let token = stop.clone();
    let task = tokio::spawn(async move {
        let bus = Bus::connect(&url, BusConfig::default()).await?;
        run(config, bus, token).await?;
        Ok(())
    });
    Planner { stop, task }
}

/// Who led when: (replica, leading, clock time), as each replica's gauge was told.
pub type Changes = Arc<Mutex<Vec<(String, bool, DateTime<Utc>)>>>;

/// A bus on `clock` (lease expiry is read from it).
pub fn bus_config(clock: &ManualClock) -> BusConfig {
    BusConfig {
        clock: clock.shared(),
        ..BusConfig::default()
    }
}

/// Planner replica `replica` on `clock` with a bus configured by `bus_config`: it decides
/// only while it holds the `planner` lease (ttl [`TTL`]), and logs every change of
/// leadership to `changes`.
pub fn start_replica(
    url: &str,
    bus_config: BusConfig,
    store: &Path,
    replica: &str,
    clock: &ManualClock,
    changes: &Changes,
) -> Planner {
    let config = PlannerConfig {
        catalog: Catalog::from_toml(CATALOG).unwrap(),
        store: store.to_owned(),
        kept_store: None,
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
    let (stop, url) = (CancellationToken::new(), url.to_owned());
    let token = stop.clone();
    let task = tokio::spawn(async move {
        let bus = Bus::connect(&url, bus_config).await?;
        run_replica(config, Some(leader), bus, token, RunOptions::default()).await?;
        Ok(())
    });
    Planner { stop, task }
}

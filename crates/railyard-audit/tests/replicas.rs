//! Audit replicas over a real nats-server with a manual clock (nothing sleeps): every replica
//! keeps its own record of the stream, only the holder of the `audit-sealer` lease seals; when
//! it is killed the standby seals once the lease expired on the clock, and the checkpoints form
//! one sequence (each starts where the previous one ended); a restarted replica stands by and
//! its record equals the stream.

mod common;

use std::time::Duration;

use common::{Callers, Script, Service, WAIT, callers, requested, temp_store};
use railyard_audit::{AuditConfig, AuditKey, SealConfig};
use railyard_bus::{Bus, BusConfig, LeaderConfig};
use railyard_core::audit::AuditCheckpoint;
use railyard_core::{AggregateId, Event, ManualClock};
use railyard_testkit::{NatsServer, wait_until};

fn config(
    store: &std::path::Path,
    replica: &str,
    clock: &ManualClock,
    key: &AuditKey,
    callers: &Callers,
) -> AuditConfig {
    let mut config = AuditConfig::new(store, callers.tokens.clone());
    config.clock = clock.shared();
    config.dora_gauges_every = None;
    config.seal = Some(SealConfig {
        key: key.clone(),
        every_records: 3,
        every: Duration::from_secs(3600),
    });
    config.leader = Some(LeaderConfig {
        replica: replica.to_owned(),
        ttl: Duration::from_secs(9),
        ..LeaderConfig::new("audit", clock.shared())
    });
    config
}

async fn checkpoints(bus: &Bus) -> anyhow::Result<Vec<AuditCheckpoint>> {
    Ok(bus
        .load(&AggregateId::Audit)
        .await?
        .events
        .into_iter()
        .filter_map(|envelope| match envelope.event {
            Event::AuditCheckpoint(checkpoint) => Some(checkpoint),
            _ => None,
        })
        .collect())
}

async fn sealer(bus: &Bus, replica: &str) -> anyhow::Result<()> {
    wait_until(&format!("{replica} leads the sealer"), WAIT, || async {
        let holder = bus.leader("audit-sealer").await?.map(|r| r.holder);
        Ok((holder.as_deref() == Some(replica)).then_some(()))
    })
    .await
}

async fn sealed_through(bus: &Bus, records: u64) -> anyhow::Result<Vec<AuditCheckpoint>> {
    wait_until(&format!("records up to {records} sealed"), WAIT, || async {
        let checkpoints = checkpoints(bus).await?;
        let done = checkpoints.last().is_some_and(|c| c.records >= records);
        Ok(done.then_some(checkpoints))
    })
    .await
}

#[tokio::test]
async fn only_the_lease_holder_seals_and_the_checkpoints_stay_one_sequence_across_a_leader_change()
-> anyhow::Result<()> {
    let server = NatsServer::start().await?;
    let clock = ManualClock::new(common::start());
    let bus = Bus::connect(
        &server.url(),
        BusConfig {
            clock: clock.shared(),
            ..BusConfig::default()
        },
    )
    .await?;
    bus.ensure_topology().await?;
    let (callers, key) = (callers(), AuditKey::generate());
    let ((_a_dir, a_store), (_b_dir, b_store)) = (temp_store(), temp_store());

    let mut a =
        Service::start_config(&bus, config(&a_store, "audit-a", &clock, &key, &callers)).await?;
    sealer(&bus, "audit-a").await?;
    let b =
        Service::start_config(&bus, config(&b_store, "audit-b", &clock, &key, &callers)).await?;

    let mut script = Script::new(&bus);
    for i in 0..6 {
        script
            .release(
                &format!("r{i}"),
                "carol",
                requested(&format!("r{i}"), vec![]),
            )
            .await;
    }
    sealed_through(&bus, 6).await?;

    // a is killed (its task dropped, no resignation). b keeps its record meanwhile.
    a.projection.take().expect("a follows").abort();
    for i in 6..12 {
        script
            .release(
                &format!("r{i}"),
                "carol",
                requested(&format!("r{i}"), vec![]),
            )
            .await;
    }
    b.caught_up(script.last_sequence).await;
    let before = checkpoints(&bus).await?;
    clock.advance(Duration::from_secs(10));
    sealer(&bus, "audit-b").await?;
    let head = b.audit.reader().head().await?;
    let all = sealed_through(&bus, head.n - head.n % 3).await?;
    assert!(all.len() > before.len(), "b sealed after taking over");

    // One sequence: each checkpoint starts where the previous one ended, nothing sealed twice.
    let mut covered = 0;
    for checkpoint in &all {
        assert_eq!(checkpoint.from, covered + 1, "{all:#?}");
        assert!(checkpoint.records > covered);
        covered = checkpoint.records;
    }

    // a comes back: it stands by, its record catches up with the stream and equals b's.
    a.start_projection();
    let last = bus.stream_last_sequence().await?;
    a.caught_up(last).await;
    b.caught_up(last).await;
    let (a_head, b_head) = (
        a.audit.reader().head().await?,
        b.audit.reader().head().await?,
    );
    assert_eq!((a_head.n, &a_head.hash), (b_head.n, &b_head.hash));
    assert_eq!(
        bus.leader("audit-sealer")
            .await?
            .map(|r| r.holder)
            .as_deref(),
        Some("audit-b")
    );
    for service in [&a, &b] {
        let report = service.audit.verify().await?;
        assert!(report.ok, "{report:?}");
    }
    assert_eq!(
        checkpoints(&bus).await?.len(),
        all.len(),
        "nobody sealed meanwhile"
    );
    b.stop().await;
    a.stop().await;
    Ok(())
}

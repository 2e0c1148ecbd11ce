//! Intake dedupe, leases and the rejection log: a delivery id is a duplicate until forgotten,
//! a lease is exclusive until it expires on the bus's clock (no sleeping: the test moves a
//! manual clock), and refused inputs are kept and listed.

mod common;

use std::time::Duration;

use bytes::Bytes;
use railyard_bus::{BusError, DeliveryClaim, Rejection};
use railyard_core::Clock;
use railyard_testkit::NatsServer;

#[tokio::test]
async fn a_delivery_id_is_new_once_and_again_after_it_is_forgotten() -> anyhow::Result<()> {
    let server = NatsServer::start().await?;
    let bus = common::bus(&server.url()).await?;
    let id = "https://github.com/acme/orders-api#7f1c2e00-1a2b-11ef-8f00-0123456789ab";
    assert!(bus.remember_delivery(id).await?);
    assert!(!bus.remember_delivery(id).await?);
    assert!(bus.remember_delivery("another").await?);

    let racers = futures::future::join_all((0..8).map(|_| bus.remember_delivery("raced"))).await;
    let firsts = racers
        .into_iter()
        .filter(|result| matches!(result, Ok(true)))
        .count();
    assert_eq!(firsts, 1, "exactly one intake sees a delivery first");

    bus.forget_delivery(id).await?;
    assert!(bus.remember_delivery(id).await?);
    Ok(())
}

#[tokio::test]
async fn a_delivery_counts_as_seen_only_once_its_claim_is_settled_as_stored() -> anyhow::Result<()>
{
    let server = NatsServer::start().await?;
    let bus = common::bus(&server.url()).await?;
    let now: chrono::DateTime<chrono::Utc> = "2026-06-01T12:00:00Z".parse()?;
    let ttl = Duration::from_secs(300);
    let id = "https://ci.example/pipelines#42";

    // Eight racers: exactly one claims it, the others see it pending.
    let holders: Vec<String> = (0..8).map(|n| format!("intake-{n}")).collect();
    let racers = futures::future::join_all(
        holders
            .iter()
            .map(|holder| bus.claim_delivery(id, holder, now, ttl)),
    )
    .await;
    let mut claims = Vec::new();
    for racer in racers {
        match racer? {
            DeliveryClaim::Claimed(claim) => claims.push(claim),
            DeliveryClaim::Pending { expires_at, .. } => {
                assert_eq!(expires_at, now + chrono::Duration::seconds(300));
            }
            DeliveryClaim::Stored => panic!("nothing was stored yet"),
        }
    }
    assert_eq!(claims.len(), 1, "exactly one caller appends a delivery");
    let claim = claims.pop().expect("one claim");
    assert_eq!(claim.id(), id);

    // Released (its append failed): the retry claims it again at once.
    bus.release_delivery(claim).await?;
    let DeliveryClaim::Claimed(claim) = bus.claim_delivery(id, "retry", now, ttl).await? else {
        panic!("a released delivery is claimed again");
    };
    // Stored: a redelivery from now on.
    bus.delivery_stored(claim, now).await?;
    assert!(matches!(
        bus.claim_delivery(id, "redelivery", now, ttl).await?,
        DeliveryClaim::Stored
    ));

    // A holder that died: its claim is taken over once it expires, and its late settling
    // is refused.
    let DeliveryClaim::Claimed(dead) = bus.claim_delivery("other", "dead", now, ttl).await? else {
        panic!("new");
    };
    let later = now + chrono::Duration::seconds(299);
    assert!(matches!(
        bus.claim_delivery("other", "retry", later, ttl).await?,
        DeliveryClaim::Pending { holder, .. } if holder == "dead"
    ));
    let expired = now + chrono::Duration::seconds(301);
    let DeliveryClaim::Claimed(taken) = bus.claim_delivery("other", "retry", expired, ttl).await?
    else {
        panic!("an expired claim is taken over");
    };
    let error = bus.delivery_stored(dead, expired).await.unwrap_err();
    assert!(
        matches!(error, BusError::DeliveryClaimLost { .. }),
        "{error:?}"
    );
    bus.delivery_stored(taken, expired).await?;

    // A holder whose settling failed claims its own leftover again at once.
    let DeliveryClaim::Claimed(_left) = bus.claim_delivery("third", "a", now, ttl).await? else {
        panic!("new");
    };
    assert!(matches!(
        bus.claim_delivery("third", "b", now, ttl).await?,
        DeliveryClaim::Pending { .. }
    ));
    assert!(matches!(
        bus.claim_delivery("third", "a", now, ttl).await?,
        DeliveryClaim::Claimed(_)
    ));

    // Ids remembered the old way read as stored.
    assert!(bus.remember_delivery("legacy").await?);
    assert!(matches!(
        bus.claim_delivery("legacy", "retry", now, ttl).await?,
        DeliveryClaim::Stored
    ));
    Ok(())
}

/// A renewal NATS applied but whose answer was lost (a node lost before the reply came back)
/// moved the revision on; the next renewal finds the record still its holder's and goes on,
/// where it used to give the lease up and let another worker re-run the step (chaos soak).
#[tokio::test]
async fn a_renewal_whose_answer_was_lost_keeps_the_lease() -> anyhow::Result<()> {
    let server = NatsServer::start().await?;
    let (bus, clock) = common::lease_bus(&server.url()).await?;
    let mut lease = bus.acquire_lease("sweep", "worker-1").await?.expect("free");
    let leases = common::raw_jetstream(&server.url())
        .await?
        .get_key_value(railyard_bus::names::LEASES_BUCKET)
        .await?;

    // Writes a lease record over the held one, behind the lease's back.
    let overwrite = |holder: &'static str, renewed_at: &'static str, expires_at: &'static str| {
        let leases = &leases;
        async move {
            let entry = leases.entry("sweep").await?.expect("held");
            let record = serde_json::json!({
                "holder": holder,
                "renewed_at": renewed_at,
                "expires_at": expires_at,
            });
            leases
                .update("sweep", serde_json::to_vec(&record)?.into(), entry.revision)
                .await?;
            anyhow::Ok(())
        }
    };

    // The renewal that landed without its answer: same holder, a later expiry.
    overwrite("worker-1", "2026-06-01T12:00:20Z", "2026-06-01T12:01:20Z").await?;
    clock.advance(Duration::from_secs(40));
    lease.renew().await?;
    assert_eq!(
        lease.record().expires_at,
        clock.now() + chrono::Duration::seconds(60)
    );
    assert!(bus.acquire_lease("sweep", "worker-2").await?.is_none());
    lease.renew().await?;

    // Another holder's record is a lost lease, as before.
    overwrite("worker-2", "2026-06-01T12:00:40Z", "2026-06-01T12:01:40Z").await?;
    let error = lease.renew().await.unwrap_err();
    assert!(matches!(error, BusError::LeaseLost { .. }), "{error:?}");
    Ok(())
}

#[tokio::test]
async fn a_lease_is_exclusive_until_it_expires_and_then_moves() -> anyhow::Result<()> {
    let server = NatsServer::start().await?;
    let (bus, clock) = common::lease_bus(&server.url()).await?;
    let step = "production:deploy:orders-api";

    let mut first = bus.acquire_lease(step, "worker-1").await?.expect("free");
    assert_eq!(first.key(), step);
    assert_eq!(
        first.record().expires_at,
        clock.now() + chrono::Duration::seconds(60)
    );
    assert!(bus.acquire_lease(step, "worker-2").await?.is_none());
    assert_eq!(
        bus.lease_holder(step)
            .await?
            .map(|record| record.holder)
            .as_deref(),
        Some("worker-1")
    );

    // Renewed in time, it stays.
    clock.advance(Duration::from_secs(45));
    first.renew().await?;
    clock.advance(Duration::from_secs(45));
    assert!(bus.acquire_lease(step, "worker-2").await?.is_none());

    // Worker 1 stops renewing: once expired, worker 2 takes over and worker 1 finds out.
    clock.advance(Duration::from_secs(16));
    assert!(bus.lease_holder(step).await?.is_none());
    let second = bus.acquire_lease(step, "worker-2").await?.expect("expired");
    let error = first.renew().await.unwrap_err();
    assert!(matches!(error, BusError::LeaseLost { .. }), "{error:?}");
    assert!(first.release().await.is_err());

    // Released, it is free at once.
    second.release().await?;
    assert!(bus.lease_holder(step).await?.is_none());
    let third = bus
        .acquire_lease(step, "worker-3")
        .await?
        .expect("released");
    assert_eq!(third.record().holder, "worker-3");
    Ok(())
}

#[tokio::test]
async fn a_release_not_waited_for_frees_the_lease_but_never_another_holders() -> anyhow::Result<()>
{
    let server = NatsServer::start().await?;
    let (bus, clock) = common::lease_bus(&server.url()).await?;
    let step = "staging:deploy:orders-api";

    // Released without waiting: the next take, a write after it on the same connection,
    // finds the key free.
    let first = bus.acquire_lease(step, "worker-1").await?.expect("free");
    first.release_unconfirmed().await?;
    let second = bus
        .acquire_lease(step, "worker-2")
        .await?
        .expect("released");
    assert_eq!(second.record().holder, "worker-2");

    // A holder that lost its lease sends its release late: the delete is conditional on its
    // own revision, so worker 3's lease stays.
    clock.advance(Duration::from_secs(61));
    let third = bus.acquire_lease(step, "worker-3").await?.expect("expired");
    second.release_unconfirmed().await?;
    assert!(
        bus.acquire_lease(step, "worker-4").await?.is_none(),
        "still held"
    );
    assert_eq!(
        bus.lease_holder(step)
            .await?
            .map(|record| record.holder)
            .as_deref(),
        Some("worker-3")
    );
    drop(third);
    Ok(())
}

#[tokio::test]
async fn rejections_are_kept_and_listed_in_order() -> anyhow::Result<()> {
    let server = NatsServer::start().await?;
    let bus = common::bus(&server.url()).await?;
    let first = bus
        .record_rejection(&Rejection::new(
            "github",
            "203.0.113.7",
            "bad signature",
            b"{}",
        ))
        .await?;
    let huge = vec![b'x'; 200 * 1024];
    bus.record_rejection(&Rejection::new(
        "cdevents",
        "ci.example",
        "unknown service",
        &huge,
    ))
    .await?;
    let listed = bus.rejections(1, 10).await?;
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].sequence, first);
    assert_eq!(listed[0].rejection.reason, "bad signature");
    assert_eq!(listed[1].rejection.source, "cdevents");
    assert_eq!(listed[1].rejection.body.len(), 64 * 1024);
    assert_eq!(bus.rejections(first + 1, 10).await?.len(), 1);
    assert_eq!(bus.rejections(1, 1).await?.len(), 1);

    let error = bus
        .record_rejection(&Rejection::new("git hub", "x", "y", b""))
        .await
        .unwrap_err();
    assert!(matches!(error, BusError::InvalidName { .. }), "{error:?}");
    let error = bus
        .publish_work("railyard.work.>", Bytes::new(), "x")
        .await
        .unwrap_err();
    assert!(matches!(error, BusError::InvalidName { .. }), "{error:?}");
    Ok(())
}

//! The bus on a 3-node cluster with R3 streams: appends and loads keep working when a node
//! dies, and nothing acknowledged is lost.

mod common;

use common::{bus_with, event, fast_config, reasons, release};
use railyard_bus::names::EVENTS_STREAM;
use railyard_bus::{BusConfig, Expected};
use railyard_testkit::{NatsCluster, wait_until};

#[tokio::test]
async fn an_r3_event_store_survives_losing_a_node() -> anyhow::Result<()> {
    let mut cluster = NatsCluster::start(3).await?;
    let config = BusConfig {
        event_stream_replicas: 3,
        replicas: 3,
        ..fast_config()
    };
    // Connected through nodes 1 and 2 only, so killing node 0 does not cut the connection.
    let urls = cluster.urls();
    let bus = bus_with(&format!("{},{}", urls[1], urls[2]), config).await?;
    let info = common::raw_jetstream(&urls[1])
        .await?
        .get_stream(EVENTS_STREAM)
        .await?
        .get_info()
        .await?;
    assert_eq!(info.config.num_replicas, 3);

    let rel = release("clustered");
    let mut expected = Expected::NoEvents;
    for index in 0..5 {
        expected = Expected::Sequence(
            bus.append(&rel, expected, &[event(&rel, &format!("before-{index}"))])
                .await?
                .sequence,
        );
    }

    cluster.kill(0).await;
    // The stream may elect a new leader first; append retries until it answers.
    let after = bus.append(&rel, expected, &[event(&rel, "after")]).await?;
    // A replica that has not applied the last append yet may answer a load; wait until the
    // one answering has it.
    let loaded = wait_until(
        "a load that includes the last append",
        common::WAIT,
        || async {
            let loaded = bus.load(&rel).await?;
            Ok((loaded.last_sequence == after.sequence).then_some(loaded))
        },
    )
    .await?;
    let mut want: Vec<String> = (0..5).map(|index| format!("before-{index}")).collect();
    want.push("after".to_owned());
    assert_eq!(reasons(&loaded.events), want);

    cluster.restart(0).await?;
    let more = bus
        .append(
            &rel,
            Expected::Sequence(after.sequence),
            &[event(&rel, "rejoined")],
        )
        .await?;
    assert_eq!(more.sequence, after.sequence + 1);
    Ok(())
}

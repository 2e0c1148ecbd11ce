//! The 3-node testkit cluster: an R3 stream keeps every acknowledged message and stays writable
//! when one node is killed, and the node catches up after its restart.

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use railyard_testkit::{NatsCluster, wait_until};

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn an_r3_stream_survives_killing_one_node() -> anyhow::Result<()> {
    let mut cluster = NatsCluster::start(3).await?;
    assert_eq!(cluster.size(), 3);
    assert_eq!(cluster.urls().len(), 3);

    // Node 0 is killed later, so the client talks to node 1.
    let client = async_nats::ConnectOptions::new()
        .request_timeout(Some(Duration::from_secs(5)))
        .connect(cluster.urls()[1].as_str())
        .await?;
    let js = jetstream::new(client);
    js.create_stream(stream::Config {
        name: "R3".to_owned(),
        subjects: vec!["r3.>".to_owned()],
        num_replicas: 3,
        ..Default::default()
    })
    .await?;
    for index in 0..10 {
        js.publish(format!("r3.{index}"), "before".into())
            .await?
            .await?;
    }

    cluster.kill(0).await;
    assert!(!cluster.node(0).is_running());

    // With two of three nodes the stream keeps quorum; its leader may move first.
    wait_until(
        "the R3 stream to accept writes with one node down",
        WAIT,
        || {
            let js = js.clone();
            async move {
                match js.publish("r3.after", "after".into()).await?.await {
                    Ok(ack) => Ok(Some(ack)),
                    Err(error) => Err(error.into()),
                }
            }
        },
    )
    .await?;
    let info = js.get_stream("R3").await?.get_info().await?;
    assert!(info.state.messages >= 11, "{:?}", info.state);

    cluster.restart(0).await?;
    // The restarted node catches up: read the stream through it.
    let node0 = jetstream::new(async_nats::connect(cluster.urls()[0].as_str()).await?);
    let messages = wait_until("node 0 to serve the stream again", WAIT, || {
        let node0 = node0.clone();
        async move {
            let info = node0.get_stream("R3").await?.get_info().await?;
            let current = info
                .cluster
                .as_ref()
                .map(|cluster| cluster.replicas.iter().all(|replica| replica.current))
                .unwrap_or(false);
            Ok(current.then_some(info.state.messages))
        }
    })
    .await?;
    assert!(messages >= 11);
    let first = node0.get_stream("R3").await?.get_raw_message(1).await?;
    assert_eq!(first.payload.as_ref(), b"before");
    Ok(())
}

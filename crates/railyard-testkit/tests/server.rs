//! The single-node testkit server: dynamic port, JetStream restart that keeps acknowledged
//! messages, downtime with stop/start_again, and kill on drop.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use futures::StreamExt;
use railyard_testkit::{NatsServer, wait_until};
use tokio::sync::Mutex;

const WAIT: Duration = Duration::from_secs(10);

async fn connect(url: &str) -> anyhow::Result<async_nats::Client> {
    Ok(async_nats::ConnectOptions::new()
        .request_timeout(Some(Duration::from_secs(5)))
        .connect(url)
        .await?)
}

async fn stored(url: &str, stream: &str) -> anyhow::Result<Vec<String>> {
    let jetstream = jetstream::new(connect(url).await?);
    let stream = jetstream.get_stream(stream).await?;
    let count = stream.get_info().await?.state.messages;
    let mut payloads = Vec::new();
    for sequence in 1..=count {
        let message = stream.get_raw_message(sequence).await?;
        payloads.push(String::from_utf8(message.payload.to_vec())?);
    }
    Ok(payloads)
}

#[tokio::test]
async fn restart_keeps_acknowledged_messages_on_the_same_port() -> anyhow::Result<()> {
    let mut server = NatsServer::start().await?;
    let port = server.port();
    assert_ne!(port, 0);
    assert_eq!(server.url(), format!("nats://127.0.0.1:{port}"));
    let jetstream = jetstream::new(connect(&server.url()).await?);
    jetstream
        .create_stream(stream::Config {
            name: "KEEP".to_owned(),
            subjects: vec!["keep.>".to_owned()],
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await?;
    for index in 0..20 {
        jetstream
            .publish(format!("keep.{index}"), format!("message {index}").into())
            .await?
            .await?;
    }
    let pid = server.pid();

    server.restart().await?;

    assert_eq!(server.port(), port, "restart keeps the port");
    assert_ne!(server.pid(), pid, "restart runs a new process");
    assert!(server.store_dir().join("jetstream").is_dir());
    let expected: Vec<String> = (0..20).map(|index| format!("message {index}")).collect();
    assert_eq!(stored(&server.url(), "KEEP").await?, expected);
    Ok(())
}

#[tokio::test]
async fn a_connected_client_gets_its_subscription_back_after_a_restart() -> anyhow::Result<()> {
    let mut server = NatsServer::start().await?;
    let client = async_nats::ConnectOptions::new()
        .reconnect_delay_callback(|attempt| Duration::from_millis(20 * attempt.min(10) as u64))
        .connect(server.url())
        .await?;
    let subscription = Arc::new(Mutex::new(client.subscribe("ping").await?));
    server.restart().await?;
    // The client reconnects on its own and re-subscribes; publish until one message arrives.
    let message = wait_until("a message after the restart", WAIT, || {
        let client = client.clone();
        let subscription = Arc::clone(&subscription);
        async move {
            client.publish("ping", "pong".into()).await?;
            client.flush().await?;
            let mut subscription = subscription.lock().await;
            Ok(
                tokio::time::timeout(Duration::from_millis(100), subscription.next())
                    .await
                    .ok()
                    .flatten(),
            )
        }
    })
    .await?;
    assert_eq!(message.payload.as_ref(), b"pong");
    Ok(())
}

#[tokio::test]
async fn stop_gives_downtime_and_start_again_brings_the_data_back() -> anyhow::Result<()> {
    let mut server = NatsServer::start().await?;
    let jetstream = jetstream::new(connect(&server.url()).await?);
    jetstream
        .create_stream(stream::Config {
            name: "DOWN".to_owned(),
            subjects: vec!["down".to_owned()],
            ..Default::default()
        })
        .await?;
    jetstream.publish("down", "before".into()).await?.await?;

    server.stop().await;
    assert!(!server.is_running());
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", server.port()))
            .await
            .is_err(),
        "nothing listens while the server is stopped"
    );
    assert!(server.start_again().await.is_ok());
    assert!(server.start_again().await.is_err(), "it is already running");
    assert_eq!(
        stored(&server.url(), "DOWN").await?,
        vec!["before".to_owned()]
    );
    Ok(())
}

#[tokio::test]
async fn drop_kills_the_server_and_removes_its_store() -> anyhow::Result<()> {
    let server = NatsServer::start().await?;
    let port = server.port();
    let store = server.store_dir().to_path_buf();
    let pid = server.pid().expect("running");
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    drop(server);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the process is killed and reaped"
    );
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
    );
    assert!(!store.exists());
    Ok(())
}

#[tokio::test]
async fn servers_started_together_get_distinct_ports_and_stores() -> anyhow::Result<()> {
    let (a, b) = tokio::try_join!(NatsServer::start(), NatsServer::start())?;
    assert_ne!(a.port(), b.port());
    assert_ne!(a.store_dir(), b.store_dir());
    Ok(())
}

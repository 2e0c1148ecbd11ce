//! The binary records where a request really came from: `railyard dev` serves with the
//! socket's peer address, so a client that sends `X-Forwarded-For` is recorded under its own
//! address, and only a proxy listed in `RAILYARD_TRUSTED_PROXIES` names the origin.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{Dev, interrupt, start_dev};
use railyard_bus::{Bus, BusConfig};
use railyard_testkit::NatsServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// POSTs an unauthenticated CDEvent to `addr` from `source`, with `forwarded` as its
/// `X-Forwarded-For`; returns the status.
async fn post_from(source: [u8; 4], addr: &str, forwarded: &str) -> anyhow::Result<u16> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((source, 0)))?;
    let mut stream = socket.connect(addr.parse()?).await?;
    let request = format!(
        "POST /v1/cdevents HTTP/1.1\r\nHost: {addr}\r\nX-Forwarded-For: {forwarded}\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        stream.read_to_string(&mut response),
    )
    .await??;
    Ok(response
        .split_whitespace()
        .nth(1)
        .and_then(|status| status.parse().ok())
        .unwrap_or(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spoofed_forwarded_for_is_recorded_as_the_socket_unless_a_trusted_proxy_sent_it()
-> anyhow::Result<()> {
    let server = NatsServer::start().await?;
    let data = tempfile::tempdir()?;
    let mut command = Command::new(env!("CARGO_BIN_EXE_railyard"));
    command
        .args(["dev", "--listen", "127.0.0.1:0", "--nats-url"])
        .arg(server.url())
        .arg("--catalog")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/examples/railyard.toml"))
        .arg("--data-dir")
        .arg(data.path())
        .env("RAILYARD_TRUSTED_PROXIES", "127.0.0.2");
    let Dev { child, addr, .. } = tokio::task::block_in_place(|| start_dev(command));

    // Not a proxy: the header is the client's claim, and the socket is recorded.
    assert_eq!(post_from([127, 0, 0, 1], &addr, "203.0.113.66").await?, 401);
    // The trusted proxy: the client it forwards for is recorded (whatever that client
    // prepended itself).
    assert_eq!(
        post_from([127, 0, 0, 2], &addr, "203.0.113.66, 198.51.100.7").await?,
        401
    );

    let bus = Bus::connect(&server.url(), BusConfig::default()).await?;
    let origins: Vec<String> = bus
        .rejections(1, 100)
        .await?
        .into_iter()
        .map(|stored| stored.rejection.origin)
        .collect();
    tokio::task::block_in_place(|| interrupt(child));
    assert_eq!(origins.len(), 2, "{origins:?}");
    assert!(
        origins[0].starts_with("127.0.0.1:"),
        "the socket's address, not the header: {origins:?}"
    );
    let (client, via) = origins[1].split_once(" via ").expect("a forwarded origin");
    assert_eq!(client, "198.51.100.7", "{origins:?}");
    assert_eq!(
        via.parse::<SocketAddr>()?.ip(),
        IpAddr::from([127, 0, 0, 2]),
        "{origins:?}"
    );
    Ok(())
}

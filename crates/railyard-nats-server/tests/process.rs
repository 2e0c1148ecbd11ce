//! The launcher against the real `nats-server`: it starts and reports where it listens, stops
//! on SIGTERM, is killed and reaped on drop, runs in its own process group when asked, and a
//! server that exits before it is ready is reported with what it said.

use std::path::Path;
use std::time::Duration;

use railyard_nats_server::{ServerCommand, locate, process_alive};

const TIMEOUT: Duration = Duration::from_secs(30);

fn nats_server() -> ServerCommand {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    ServerCommand::new(locate(&workspace).expect("nats-server is installed (just setup)"))
}

/// Field 5 of `/proc/<pid>/stat`: the process group.
fn process_group(pid: u32) -> u32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let after_name = &stat[stat.rfind(')').unwrap() + 1..];
    after_name
        .split_whitespace()
        .nth(2)
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn starts_on_a_dynamic_port_and_stops_on_sigterm() -> anyhow::Result<()> {
    let server = nats_server()
        .args(["-a", "127.0.0.1", "-p", "-1"])
        .start(TIMEOUT)
        .await?;
    assert_ne!(server.client_port(), 0);
    assert_eq!(
        server.url(),
        format!("nats://127.0.0.1:{}", server.client_port())
    );
    assert!(server.log_tail().contains("Server is ready"));
    let pid = server.pid();
    assert!(process_alive(pid));
    assert_ne!(
        process_group(pid),
        pid,
        "it shares the test's process group"
    );

    server.shutdown(TIMEOUT).await?;
    assert!(!process_alive(pid), "stopped and reaped");
    Ok(())
}

#[tokio::test]
async fn drop_kills_and_reaps_it() -> anyhow::Result<()> {
    let server = nats_server()
        .args(["-a", "127.0.0.1", "-p", "-1"])
        .own_process_group()
        .start(TIMEOUT)
        .await?;
    let pid = server.pid();
    assert_eq!(process_group(pid), pid, "it leads its own process group");
    drop(server);
    assert!(!process_alive(pid), "killed and reaped");
    Ok(())
}

#[tokio::test]
async fn a_server_that_exits_before_it_is_ready_is_reported_with_its_log() {
    let error = nats_server()
        .args(["-c", "/nonexistent/railyard-nats.conf"])
        .start(TIMEOUT)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("exited before it was ready"), "{error}");
    assert!(error.contains("/nonexistent/railyard-nats.conf"), "{error}");
}

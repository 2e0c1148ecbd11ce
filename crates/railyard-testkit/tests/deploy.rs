//! A production configuration whose route port another process took between reservation and
//! start: the node does not count as started (nats-server logs "Server is ready" before it
//! binds the route port, then exits), and `on_fresh_ports` starts over on new ports.

use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Context as _;
use railyard_testkit::deploy::{deploy_env, deploy_nats_dir, local_cluster, on_fresh_ports};
use railyard_testkit::{NatsServer, TestTls};

/// The cluster `listen` port of a file `local_cluster` wrote (the second `listen:` line).
fn route_port(file: &std::path::Path) -> anyhow::Result<u16> {
    let text = std::fs::read_to_string(file)?;
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("listen: 127.0.0.1:"))
        .nth(1)
        .context("no cluster listen line")?
        .parse()
        .context("route port")
}

#[tokio::test]
async fn a_taken_route_port_fails_the_start_and_the_next_attempt_gets_new_ports()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let tls = TestTls::generate(&dir.path().join("tls"))?;
    let attempts = AtomicUsize::new(0);
    let squatter = std::sync::Mutex::new(None);
    let node = on_fresh_ports(|attempt| {
        let (dir, tls, attempts, squatter) = (dir.path(), &tls, &attempts, &squatter);
        async move {
            attempts.fetch_add(1, Ordering::SeqCst);
            let files = local_cluster(
                &deploy_nats_dir(),
                &dir.join(format!("nats-{attempt}")),
                1,
                tls,
            )?;
            if attempt == 0 {
                let port = route_port(&files[0])?;
                *squatter.lock().unwrap() = Some(TcpListener::bind(("127.0.0.1", port))?);
            }
            let started = NatsServer::start_from_config(files[0].clone(), deploy_env()).await;
            if attempt == 0 {
                let error = format!("{:#}", started.as_ref().err().context("started")?);
                anyhow::ensure!(
                    error.contains("address already in use"),
                    "the first start should fail on the taken route port, not: {error}"
                );
            }
            started
        }
    })
    .await?;
    assert_eq!(attempts.load(Ordering::SeqCst), 2);
    assert!(node.is_running());
    Ok(())
}

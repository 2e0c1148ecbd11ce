//! NATS private by default, from the operator's side: `railyard admin init` refuses a server
//! without TLS (before sending it the admin password) unless `--insecure` is given, and works
//! against `deploy/nats/single.conf` over TLS with the CA in `RAILYARD_NATS_CA`, which it
//! needs: a client that does not trust the CA cannot connect at all. And the cluster's routes
//! authenticate: a node whose certificate another CA signed cannot join `cluster-*.conf`.

use std::process::{Command, Output};

use anyhow::ensure;
use railyard_bus::{Bus, BusConfig, NatsCredentials};
use railyard_testkit::deploy::{
    deploy_env, deploy_nats_dir, deploy_password, local_cluster, local_single, on_fresh_ports,
};
use railyard_testkit::{NatsServer, STARTUP_TIMEOUT, TestTls, wait_until};

fn admin_init(url: &str, env: &[(&str, &str)], extra: &[&str]) -> anyhow::Result<Output> {
    let mut command = Command::new(env!("CARGO_BIN_EXE_railyard"));
    command
        .args(["admin", "init", "--nats-url", url])
        .args(extra)
        .env_remove("RAILYARD_NATS_USER")
        .env_remove("RAILYARD_NATS_PASSWORD")
        .env_remove("RAILYARD_NATS_PASSWORD_FILE")
        .env_remove("RAILYARD_NATS_CA")
        .env_remove("RAILYARD_NATS_URL");
    for (name, value) in env {
        command.env(name, value);
    }
    Ok(command.output()?)
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
async fn admin_init_refuses_a_server_without_tls_unless_insecure() -> anyhow::Result<()> {
    let server = NatsServer::start().await?;
    let refused = admin_init(&server.url(), &[], &[])?;
    let said = text(&refused);
    ensure!(!refused.status.success(), "admin init ran in clear: {said}");
    for expected in [
        "does not use tls",
        &format!("127.0.0.1:{}", server.port()),
        "tls://",
        "RAILYARD_NATS_CA",
        "--insecure",
    ] {
        ensure!(
            said.contains(expected),
            "the refusal lacks {expected:?}: {said}"
        );
    }
    // Nothing was created.
    let bus = Bus::connect(
        &server.url(),
        BusConfig {
            manage_topology: false,
            ..BusConfig::default()
        },
    )
    .await?;
    ensure!(
        bus.check_topology().await.is_err(),
        "the refused admin init created streams"
    );

    let insecure = admin_init(&server.url(), &[], &["--insecure"])?;
    ensure!(
        insecure.status.success(),
        "admin init --insecure: {}",
        text(&insecure)
    );
    bus.check_topology().await?;
    bus.close().await?;
    Ok(())
}

#[tokio::test]
async fn single_conf_serves_tls_and_admin_init_needs_the_ca() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let tls = TestTls::generate(&dir.path().join("tls"))?;
    let server = on_fresh_ports(|attempt| {
        let (dir, tls) = (dir.path(), &tls);
        async move {
            let config = local_single(
                &deploy_nats_dir(),
                &dir.join(format!("nats-{attempt}")),
                tls,
            )?;
            NatsServer::start_from_config(config, deploy_env()).await
        }
    })
    .await?;
    let url = format!("tls://127.0.0.1:{}", server.port());
    let password = deploy_password("admin");
    let ca = tls.ca.display().to_string();
    let admin = [
        ("RAILYARD_NATS_USER", "admin"),
        ("RAILYARD_NATS_PASSWORD", password.as_str()),
    ];

    // Without the CA the server's certificate is not trusted: no connection, and the error
    // says what to check.
    let untrusted = admin_init(&url, &admin, &[])?;
    let said = text(&untrusted);
    ensure!(
        !untrusted.status.success(),
        "connected without the CA: {said}"
    );
    ensure!(
        said.contains("over tls") && said.contains("RAILYARD_NATS_CA"),
        "the error does not say what to check: {said}"
    );

    // With it (and a nats:// URL: the server requires TLS, so the client upgrades).
    let with_ca = [admin[0], admin[1], ("RAILYARD_NATS_CA", ca.as_str())];
    let plain_url = format!("nats://127.0.0.1:{}", server.port());
    for url in [&url, &plain_url] {
        let done = admin_init(url, &with_ca, &[])?;
        ensure!(
            done.status.success(),
            "admin init at {url}: {}",
            text(&done)
        );
    }

    // A client that does not trust the CA cannot connect, even with the right password.
    let plain = Bus::connect(
        &plain_url,
        BusConfig {
            manage_topology: false,
            credentials: Some(NatsCredentials {
                user: "admin".to_owned(),
                password: password.clone(),
            }),
            ..BusConfig::default()
        },
    )
    .await;
    ensure!(plain.is_err(), "a client without the CA connected");

    let bus = Bus::connect(
        &plain_url,
        BusConfig {
            manage_topology: false,
            credentials: Some(NatsCredentials {
                user: "admin".to_owned(),
                password,
            }),
            tls_ca: Some(tls.ca.clone()),
            ..BusConfig::default()
        },
    )
    .await?;
    bus.check_topology().await?;
    ensure!(
        bus.server_info().tls_required,
        "the server does not require TLS"
    );
    bus.close().await?;
    Ok(())
}

#[tokio::test]
async fn a_node_without_a_certificate_from_the_ca_cannot_join_the_cluster() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let tls = TestTls::generate(&dir.path().join("tls"))?;
    // Node 3's own file, but its certificate (same names) signed by another CA.
    let rogue_tls = TestTls::generate(&dir.path().join("rogue-tls"))?;
    let (one, two, rogue) = on_fresh_ports(|attempt| {
        let (dir, tls, rogue_tls) = (dir.path(), &tls, &rogue_tls);
        async move {
            let nats = dir.join(format!("nats-{attempt}"));
            let files = local_cluster(&deploy_nats_dir(), &nats, 3, tls)?;
            let rogue_file = nats.join("rogue.conf");
            let mut rogue_text = std::fs::read_to_string(&files[2])?;
            for (ours, theirs) in [
                (&tls.cert, &rogue_tls.cert),
                (&tls.key, &rogue_tls.key),
                (&tls.ca, &rogue_tls.ca),
            ] {
                rogue_text =
                    rogue_text.replace(&ours.display().to_string(), &theirs.display().to_string());
            }
            std::fs::write(&rogue_file, rogue_text)?;
            let one = NatsServer::start_from_config(files[0].clone(), deploy_env()).await?;
            let two = NatsServer::start_from_config(files[1].clone(), deploy_env()).await?;
            let rogue = NatsServer::start_from_config(rogue_file, deploy_env()).await?;
            anyhow::Ok((one, two, rogue))
        }
    })
    .await?;
    // A node tells its clients the client URLs of the nodes it has routes to (INFO
    // connect_urls); both sides refuse the rogue's routes: neither CA signed the other's node.
    let password = deploy_password("admin");
    let peers_of = |port: u16, ca: std::path::PathBuf| {
        let password = password.clone();
        async move {
            let client = railyard_testkit::connect_options(Some(("admin", &password)), Some(&ca))
                .connect(format!("tls://127.0.0.1:{port}"))
                .await?;
            let urls = client.server_info().connect_urls;
            let _ = client.drain().await;
            anyhow::Ok(urls.join(" "))
        }
    };
    let (one_port, two_port, rogue_port) = (one.port(), two.port(), rogue.port());
    let seen = wait_until(
        "nodes 1 and 2 to route to each other and refuse the rogue",
        STARTUP_TIMEOUT,
        || {
            let logs = [one.log_tail(), two.log_tail(), rogue.log_tail()];
            let peers = peers_of(one_port, tls.ca.clone());
            async move {
                let peers = peers.await?;
                let routed = peers.contains(&format!(":{two_port}"));
                let refused = logs
                    .iter()
                    .all(|log| log.contains("TLS route handshake error"));
                Ok((routed && refused).then_some(peers))
            }
        },
    )
    .await
    .map_err(|error| {
        anyhow::anyhow!(
            "{error:#}\n--- node 1\n{}\n--- node 2\n{}\n--- rogue\n{}",
            one.log_tail(),
            two.log_tail(),
            rogue.log_tail()
        )
    })?;
    ensure!(
        !seen.contains(&format!(":{rogue_port}")),
        "node 1 routes to the rogue: {seen}"
    );
    let rogue_peers = peers_of(rogue_port, rogue_tls.ca.clone()).await?;
    ensure!(
        !rogue_peers.contains(&format!(":{one_port}"))
            && !rogue_peers.contains(&format!(":{two_port}")),
        "the rogue routes to the cluster: {rogue_peers}"
    );
    Ok(())
}

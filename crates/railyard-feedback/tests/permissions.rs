//! The `github` and `cdevents` NATS users of `deploy/nats/accounts.conf`, on a nats-server
//! started from `deploy/nats/single.conf` (TLS, passwords): each service runs as its own user
//! and does its work, and each user is refused what it does not need — appending events,
//! the other's subject, the other services' durable consumers.

mod common;

use std::path::Path;

use common::*;
use futures::StreamExt as _;
use railyard_bus::{Bus, BusConfig, NatsCredentials};
use railyard_core::ManualClock;
use railyard_feedback::History;
use railyard_feedback::cdevents::CdeventsConfig;
use railyard_feedback::github::{Auth, Auths, GithubConfig};
use railyard_testkit::deploy::{
    deploy_env, deploy_nats_dir, deploy_password, local_single, on_fresh_ports,
};
use railyard_testkit::{NatsServer, Probe, TestTls, refusal};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

async fn connect(url: &str, user: &str, ca: &Path, manage: bool) -> anyhow::Result<Bus> {
    Ok(Bus::connect(
        url,
        BusConfig {
            manage_topology: manage,
            credentials: Some(NatsCredentials {
                user: user.to_owned(),
                password: deploy_password(user),
            }),
            tls_ca: Some(ca.to_owned()),
            ..BusConfig::default()
        },
    )
    .await?)
}

#[tokio::test]
async fn each_service_works_as_its_own_nats_user_and_is_refused_the_rest() -> anyhow::Result<()> {
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
    let url = format!("nats://127.0.0.1:{}", server.port());
    let admin = connect(&url, "admin", &tls.ca, true).await?;
    admin.ensure_topology().await?;
    let listener = railyard_testkit::connect_options(
        Some(("admin", &deploy_password("admin"))),
        Some(&tls.ca),
    )
    .connect(url.as_str())
    .await?;
    let mut out = listener.subscribe("railyard.out.cdevents").await?;
    listener.flush().await?;

    let clock = ManualClock::new(start_time());
    let github = FakeGithub::start(clock.clone()).await?;
    let stop = CancellationToken::new();
    let (github_done, mut github_handled) = watch::channel(0);
    let mut config = GithubConfig::new(
        catalog(),
        Auths {
            default: Some(Auth::Token(railyard_feedback::Secret::new("token", TOKEN)?)),
            ..Auths::default()
        },
        "https://railyard.example.com",
        dir.path().join("github-ledger"),
    );
    config.api_url = github.url.clone();
    config.clock = clock.shared();
    config.history = History::Send;
    config.handled = Some(github_done);
    let github_task = tokio::spawn(railyard_feedback::github::run(
        config,
        connect(&url, "github", &tls.ca, false).await?,
        stop.clone(),
    ));
    let (cdevents_done, mut cdevents_handled) = watch::channel(0);
    let mut config = CdeventsConfig::new(
        "https://railyard.example.com",
        dir.path().join("cdevents-ledger"),
    );
    config.clock = clock.shared();
    config.history = History::Send;
    config.handled = Some(cdevents_done);
    let cdevents_task = tokio::spawn(railyard_feedback::cdevents::run(
        config,
        connect(&url, "cdevents", &tls.ca, false).await?,
        stop.clone(),
    ));

    append(
        &admin,
        "rel-1",
        "carol",
        start_time(),
        vec![requested("rel-1", &[("gadget", "1.0.0", "abc123")])],
    )
    .await?;
    let last = append(
        &admin,
        "rel-1",
        "railyard-planner",
        start_time(),
        vec![planned("rel-1", &[("gadget", "1.0.0")])],
    )
    .await?;
    tokio::time::timeout(WAIT, github_handled.wait_for(|h| *h >= last)).await??;
    tokio::time::timeout(WAIT, cdevents_handled.wait_for(|h| *h >= last)).await??;
    assert_eq!(
        github.deployments().len(),
        2,
        "the github user read the stream"
    );
    for expected in ["pipelinerun.queued", "pipelinerun.started"] {
        let message = tokio::time::timeout(WAIT, out.next())
            .await?
            .expect("a cdevent");
        let ce_type = message
            .headers
            .as_ref()
            .and_then(|h| h.get("ce-type"))
            .map(|v| v.to_string());
        assert!(ce_type.is_some_and(|t| t.contains(expected)), "{expected}");
    }
    stop.cancel();
    tokio::time::timeout(WAIT, github_task).await???;
    tokio::time::timeout(WAIT, cdevents_task).await???;

    let cases = [
        (
            "github",
            Probe::Publish("railyard.events.release.rel-1".into()),
            true,
        ),
        (
            "github",
            Probe::Publish("railyard.out.cdevents".into()),
            true,
        ),
        (
            "github",
            Probe::Publish(
                "$JS.API.CONSUMER.DURABLE.CREATE.RAILYARD_EVENTS.railyard-notify".into(),
            ),
            true,
        ),
        (
            "cdevents",
            Probe::Publish("railyard.events.inventory.production".into()),
            true,
        ),
        (
            "cdevents",
            Probe::Publish("railyard.intake.cdevents".into()),
            true,
        ),
        (
            "cdevents",
            Probe::Publish(
                "$JS.API.CONSUMER.MSG.NEXT.RAILYARD_EVENTS.railyard-promoter-dispatch".into(),
            ),
            true,
        ),
        (
            "cdevents",
            Probe::Publish("railyard.out.cdevents".into()),
            false,
        ),
        (
            "cdevents",
            Probe::Publish("railyard.out.cdevents.production".into()),
            false,
        ),
    ];
    for (user, probe, refused) in cases {
        let answer = refusal(&url, user, &deploy_password(user), Some(&tls.ca), &probe).await?;
        assert_eq!(answer.is_some(), refused, "{user} {probe:?}: {answer:?}");
    }
    drop(server);
    Ok(())
}

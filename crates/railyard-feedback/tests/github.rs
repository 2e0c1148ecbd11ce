//! GitHub write-back against a stand-in GitHub API that enforces GitHub's request shapes and
//! auth: one deployment per (release, environment, repository) whatever happens — a
//! secondary rate limit, a 5xx, a graceful restart mid-release, an installation token that
//! expires, a deployment GitHub holds but the ledger lost — and statuses in order.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use railyard_core::ManualClock;
use railyard_core::step::StepId;
use railyard_feedback::github::{Auths, GithubConfig};
use railyard_feedback::{Backoff, History};
use railyard_testkit::NatsServer;
use serde_json::json;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

fn auths(dir: &Path) -> Auths {
    std::fs::write(dir.join("widgets.token"), format!("{TOKEN}\n")).unwrap();
    std::fs::write(
        dir.join("github-auth.toml"),
        format!(
            "[owners.acme]\napp_id = \"{APP_ID}\"\nprivate_key_file = {:?}\n\n[owners.widgets]\ntoken_file = \"widgets.token\"\n",
            key_path().display().to_string()
        ),
    )
    .unwrap();
    Auths::from_file(&dir.join("github-auth.toml")).unwrap()
}

fn start(nats: &NatsServer, github: &FakeGithub, clock: &ManualClock, dir: &Path) -> Running {
    let (tx, rx) = watch::channel(0);
    let mut config = GithubConfig::new(
        catalog(),
        auths(dir),
        "https://railyard.example.com",
        dir.join("github-ledger"),
    );
    config.api_url = github.url.clone();
    config.clock = clock.shared();
    config.history = History::Send;
    config.backoff = Backoff {
        initial: Duration::from_secs(1),
        max: Duration::from_secs(4),
    };
    config.handled = Some(tx);
    let stop = CancellationToken::new();
    let url = nats.url();
    let token = stop.clone();
    let task = tokio::spawn(async move {
        let bus = railyard_bus::Bus::connect(&url, railyard_bus::BusConfig::default()).await?;
        railyard_feedback::github::run(config, bus, token).await?;
        Ok(())
    });
    Running {
        stop,
        task,
        handled: rx,
    }
}

/// Appends the deploy and verify steps of `services` in `env`, started then succeeded.
async fn pass_env(
    bus: &railyard_bus::Bus,
    id: &str,
    env: &str,
    services: &[&str],
) -> anyhow::Result<u64> {
    let mut last = 0;
    let env = env.parse()?;
    for service in services {
        let service = service.parse()?;
        for step in [
            StepId::deploy(&env, &service),
            StepId::verify(&env, &service),
        ] {
            let step = step.to_string();
            append(
                bus,
                id,
                "railyard-promoter",
                start_time(),
                vec![started(&step)],
            )
            .await?;
            last = append(
                bus,
                id,
                "railyard-promoter",
                start_time(),
                vec![succeeded(&step)],
            )
            .await?;
        }
    }
    Ok(last)
}

fn approval(id: &str) -> railyard_core::Event {
    event(
        "approval.requested",
        json!({"step": format!("production:approve:{id}"), "env": "production", "approvers": ["alice"]}),
    )
}

#[tokio::test]
async fn one_deployment_per_release_environment_and_repository_across_limits_and_a_restart()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let clock = ManualClock::new(start_time());
    let github = FakeGithub::start(clock.clone()).await?;
    let nats = NatsServer::start().await?;
    let bus = bus(&nats).await?;
    github.script(&[Script::SecondaryLimit(30), Script::ServerError]);
    let mut service = start(&nats, &github, &clock, dir.path());

    // rel-0 puts orders-api 1.0.0 everywhere.
    append(
        &bus,
        "rel-0",
        "carol",
        start_time(),
        vec![requested("rel-0", &[("orders-api", "1.0.0", "aaa111")])],
    )
    .await?;
    append(
        &bus,
        "rel-0",
        "railyard-planner",
        start_time(),
        vec![planned("rel-0", &[("orders-api", "1.0.0")])],
    )
    .await?;

    // The App's installation is found and a token issued with JWTs; the first repository call
    // meets a secondary rate limit: nothing more is sent until Retry-After has passed.
    github.wait_for_requests(3).await?;
    tokio::time::timeout(WAIT, clock.wait_for_sleepers(1)).await?;
    let so_far: Vec<(String, u16)> = github
        .received()
        .iter()
        .map(|r| (r.path.clone(), r.status))
        .collect();
    assert_eq!(
        so_far,
        vec![
            ("/repos/acme/orders-api/installation".to_owned(), 200),
            (
                format!("/app/installations/{INSTALLATION}/access_tokens"),
                201
            ),
            ("/repos/acme/orders-api/statuses/aaa111".to_owned(), 403),
        ]
    );
    clock.advance(Duration::from_secs(29));
    tokio::task::yield_now().await;
    assert_eq!(
        github.received().len(),
        3,
        "nothing is sent before Retry-After has passed"
    );
    clock.advance(Duration::from_secs(1));
    // Then a 502, retried after the backoff.
    github.wait_for_requests(4).await?;
    advance_when_sleeping(&clock, Duration::from_secs(1)).await?;

    pass_env(&bus, "rel-0", "staging", &["orders-api"]).await?;
    append(
        &bus,
        "rel-0",
        "railyard-promoter",
        start_time(),
        vec![approval("rel-0")],
    )
    .await?;
    pass_env(&bus, "rel-0", "production", &["orders-api"]).await?;
    let done = append(
        &bus,
        "rel-0",
        "railyard-promoter",
        start_time(),
        vec![completed()],
    )
    .await?;
    service.wait_handled(done).await?;

    // rel-1: two acme repositories (App), one widgets repository (token), one on GitLab.
    let changes = [
        ("orders-api", "2.0.0", "bbb222"),
        ("billing-worker", "3.1.0", "ccc333"),
        ("gadget", "0.9.0", "ddd444"),
        ("legacy-cron", "5.0.0", "eee555"),
    ];
    let services: Vec<&str> = changes.iter().map(|c| c.0).collect();
    let versions: Vec<(&str, &str)> = changes.iter().map(|c| (c.0, c.1)).collect();
    append(
        &bus,
        "rel-1",
        "carol",
        start_time(),
        vec![requested("rel-1", &changes)],
    )
    .await?;
    append(
        &bus,
        "rel-1",
        "railyard-planner",
        start_time(),
        vec![planned("rel-1", &versions)],
    )
    .await?;
    let staged = pass_env(&bus, "rel-1", "staging", &services).await?;
    service.wait_handled(staged).await?;

    // The approval takes two hours: the installation token (an hour) has expired, and is
    // replaced before the next call rather than refused.
    clock.advance(Duration::from_secs(2 * 3600));
    let waiting = append(
        &bus,
        "rel-1",
        "railyard-promoter",
        start_time(),
        vec![approval("rel-1")],
    )
    .await?;
    service.wait_handled(waiting).await?;
    assert_eq!(github.tokens_issued(), 2);

    // A graceful restart mid-release, on the same ledger.
    service.stop().await?;
    let mut service = start(&nats, &github, &clock, dir.path());
    pass_env(&bus, "rel-1", "production", &services).await?;
    let done = append(
        &bus,
        "rel-1",
        "railyard-promoter",
        start_time(),
        vec![completed()],
    )
    .await?;
    service.wait_handled(done).await?;
    service.stop().await?;

    // Exactly one deployment per (release, environment, repository); none for GitLab.
    let deployments = github.deployments();
    let mut keys: Vec<(String, String, String)> = deployments
        .iter()
        .map(|d| {
            (
                d.payload["railyard"]["release"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
                d.environment.clone(),
                d.repo.clone(),
            )
        })
        .collect();
    keys.sort();
    let mut expected = Vec::new();
    for (release, repos) in [
        ("rel-0", vec!["acme/orders-api"]),
        (
            "rel-1",
            vec!["acme/billing-worker", "acme/orders-api", "widgets/gadget"],
        ),
    ] {
        for env in ["production", "staging"] {
            for repo in &repos {
                expected.push((release.to_owned(), env.to_owned(), repo.to_string()));
            }
        }
    }
    expected.sort();
    assert_eq!(keys, expected);
    for d in &deployments {
        assert_eq!(d.task, "deploy:railyard");
        assert_eq!(d.production, d.environment == "production", "{d:?}");
        let release = d.payload["railyard"]["release"].as_str().unwrap();
        let replaced = release == "rel-0" && d.repo == "acme/orders-api";
        let mut states = vec!["queued", "in_progress", "success"];
        if replaced {
            states.push("inactive");
        }
        assert_eq!(
            d.statuses, states,
            "{} {} {}",
            release, d.environment, d.repo
        );
    }
    let sha = |repo: &str| match repo {
        "acme/orders-api" => "bbb222",
        "acme/billing-worker" => "ccc333",
        _ => "ddd444",
    };
    for d in deployments
        .iter()
        .filter(|d| d.payload["railyard"]["release"] == "rel-1")
    {
        assert_eq!(d.sha, sha(&d.repo));
    }

    // The head commits say what the release did.
    for repo in ["acme/orders-api", "acme/billing-worker", "widgets/gadget"] {
        let statuses = github.commit_statuses(repo, sha(repo));
        let states: Vec<&str> = statuses.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(
            states,
            ["pending", "pending", "success"],
            "{repo}: {statuses:?}"
        );
        assert_eq!(statuses[0].1, "planned: 17 steps in staging, production");
        assert_eq!(statuses[1].1, "waiting for approval in production");
        assert_eq!(statuses[2].1, "released to staging, production");
    }

    // Only the scripted refusals; the expired token was refreshed before it was refused.
    let refused: Vec<(String, u16)> = github
        .received()
        .iter()
        .filter(|r| r.status >= 400)
        .map(|r| (r.path.clone(), r.status))
        .collect();
    assert_eq!(refused.len(), 2, "{refused:?}");
    // One token at the start, its replacement after two hours, one after the restart.
    assert_eq!(github.tokens_issued(), 3);
    let lookups = github
        .received()
        .iter()
        .filter(|r| r.path.ends_with("/installation"))
        .count();
    assert!(
        lookups <= 4,
        "the installation is looked up once per repository and process"
    );
    Ok(())
}

#[tokio::test]
async fn a_rollback_restores_the_replaced_deployment_and_a_refusal_fails_the_commit()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let clock = ManualClock::new(start_time());
    let github = FakeGithub::start(clock.clone()).await?;
    let nats = NatsServer::start().await?;
    let bus = bus(&nats).await?;
    // A deployment GitHub already holds for rel-b in staging, made by a service that crashed
    // before recording it: it is found and used, not made again.
    let seeded = github.seed_deployment(
        "widgets/gadget",
        "e2",
        "staging",
        json!({"railyard": {"release": "rel-b", "env": "staging"}}),
    );
    let mut service = start(&nats, &github, &clock, dir.path());
    // rel-a's first deployment is created but its answer is lost (a 502): the service looks
    // again after its backoff and finds it rather than creating another.
    github.lose_next_create();

    append(
        &bus,
        "rel-a",
        "carol",
        start_time(),
        vec![requested("rel-a", &[("gadget", "1.0.0", "e1")])],
    )
    .await?;
    append(
        &bus,
        "rel-a",
        "railyard-planner",
        start_time(),
        vec![planned("rel-a", &[("gadget", "1.0.0")])],
    )
    .await?;
    advance_when_sleeping(&clock, Duration::from_secs(1)).await?;
    pass_env(&bus, "rel-a", "staging", &["gadget"]).await?;
    pass_env(&bus, "rel-a", "production", &["gadget"]).await?;
    let done = append(
        &bus,
        "rel-a",
        "railyard-promoter",
        start_time(),
        vec![completed()],
    )
    .await?;
    service.wait_handled(done).await?;

    // A primary rate limit: the service waits until x-ratelimit-reset.
    github.script(&[Script::PrimaryLimit(45)]);
    let before = github.received().len();
    append(
        &bus,
        "rel-b",
        "carol",
        start_time(),
        vec![requested("rel-b", &[("gadget", "2.0.0", "e2")])],
    )
    .await?;
    append(
        &bus,
        "rel-b",
        "railyard-planner",
        start_time(),
        vec![planned("rel-b", &[("gadget", "2.0.0")])],
    )
    .await?;
    github.wait_for_requests(before + 1).await?;
    tokio::time::timeout(WAIT, clock.wait_for_sleepers(1)).await?;
    clock.advance(Duration::from_secs(45));
    tokio::task::yield_now().await;
    assert_eq!(
        github.received().len(),
        before + 1,
        "the reset second itself is waited out"
    );
    clock.advance(Duration::from_secs(1));

    pass_env(&bus, "rel-b", "staging", &["gadget"]).await?;
    append(
        &bus,
        "rel-b",
        "railyard-promoter",
        start_time(),
        vec![started("production:deploy:gadget")],
    )
    .await?;
    append(
        &bus,
        "rel-b",
        "railyard-promoter",
        start_time(),
        vec![failed("production:deploy:gadget", "exit status 3")],
    )
    .await?;
    let rolled = append(
        &bus,
        "rel-b",
        "railyard-promoter",
        start_time(),
        vec![event(
            "release.rolled_back",
            json!({"reason": "production:deploy:gadget failed", "undone": ["staging:deploy:gadget"]}),
        )],
    )
    .await?;
    service.wait_handled(rolled).await?;

    append(
        &bus,
        "rel-c",
        "carol",
        start_time(),
        vec![requested("rel-c", &[("gadget", "3.0.0", "e3")])],
    )
    .await?;
    let refused = append(
        &bus,
        "rel-c",
        "railyard-planner",
        start_time(),
        vec![event(
            "release.rejected",
            json!({"catalog_hash": "sha256:test", "reasons": [{"rule": "api", "reason": "gadget 3.0.0 requires pricing-api >=7 but production serves 5..=6", "remedy": "release pricing first"}]}),
        )],
    )
    .await?;
    service.wait_handled(refused).await?;
    service.stop().await?;

    let deployments = github.deployments();
    let of = |release: &str, env: &str| {
        deployments
            .iter()
            .find(|d| d.payload["railyard"]["release"] == release && d.environment == env)
            .cloned()
            .unwrap_or_else(|| panic!("no deployment of {release} in {env}"))
    };
    assert_eq!(
        deployments.len(),
        4,
        "rel-a and rel-b in two environments, none for rel-c"
    );
    assert_eq!(of("rel-b", "staging").id, seeded);
    let posted: Vec<String> = github
        .received()
        .iter()
        .filter(|r| r.method == "POST" && r.path == "/repos/widgets/gadget/deployments")
        .map(|r| {
            format!(
                "{}:{}",
                r.body["payload"]["railyard"]["release"], r.body["environment"]
            )
        })
        .collect();
    assert_eq!(
        posted,
        [
            r#""rel-a":"staging""#,
            r#""rel-a":"production""#,
            r#""rel-b":"production""#
        ]
    );
    // rel-a staging was replaced by rel-b, then runs again once rel-b was rolled back.
    assert_eq!(
        of("rel-a", "staging").statuses,
        ["queued", "in_progress", "success", "inactive", "success"]
    );
    assert_eq!(
        of("rel-a", "production").statuses,
        ["queued", "in_progress", "success"]
    );
    assert_eq!(
        of("rel-b", "staging").statuses,
        ["queued", "in_progress", "success", "inactive"]
    );
    let production = of("rel-b", "production");
    assert_eq!(production.statuses, ["queued", "in_progress", "failure"]);
    assert_eq!(
        production.descriptions[2],
        "production:deploy:gadget failed: exit status 3"
    );
    let b = github.commit_statuses("widgets/gadget", "e2");
    assert_eq!(
        b.last().unwrap(),
        &(
            "failure".to_owned(),
            "rolled back: production:deploy:gadget failed".to_owned()
        )
    );
    assert_eq!(
        github.commit_statuses("widgets/gadget", "e3"),
        [(
            "failure".to_owned(),
            "refused: gadget 3.0.0 requires pricing-api >=7 but production serves 5..=6".to_owned()
        )]
    );
    Ok(())
}

//! What commands and gates may do with what Railyard hands them: a command that outlives its
//! timeout is killed with every process it started (its own process group); a command sees
//! only the variables and secrets its service is granted; a gate does not follow a redirect to
//! another host, and a secret in a gate URL appears in no result.

use std::time::Duration;

use railyard_core::ManualClock;
use railyard_core::step::StepId;
use railyard_promoter::Secrets;
use railyard_promoter::adapter::{ChildEnv, Runner, Target};
use railyard_testkit::wait_until;

/// Whether `pid` runs (a zombie waiting to be reaped does not).
fn alive(pid: i32) -> bool {
    u32::try_from(pid).is_ok_and(railyard_testkit::process_alive)
}

#[tokio::test]
async fn a_timed_out_command_takes_its_grandchildren_with_it() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let pidfile = dir.path().join("grandchild.pid");
    let clock = ManualClock::new(chrono::Utc::now());
    let runner = Runner {
        clock: clock.shared(),
        secrets: Secrets::default(),
        http: reqwest::Client::new(),
        poll_interval: Duration::from_secs(1),
        tail_bytes: 1024,
        seed: 0,
        env: ChildEnv::default(),
    };
    // The deploy script starts a long-running grandchild and waits for it.
    let script = format!("sleep 300 & echo $! > {}; wait", pidfile.display());
    let argv = vec!["sh".to_owned(), "-c".to_owned(), script];
    let run = tokio::spawn(async move {
        runner
            .command(&argv, &Target::default(), Duration::from_secs(60))
            .await
    });
    let grandchild: i32 = wait_until("the grandchild to start", Duration::from_secs(10), || {
        let pidfile = pidfile.clone();
        async move {
            Ok(std::fs::read_to_string(&pidfile)
                .ok()
                .and_then(|text| text.trim().parse().ok()))
        }
    })
    .await?;
    assert!(alive(grandchild), "the grandchild runs before the timeout");

    // The step's time runs out on the clock.
    clock.wait_for_sleepers(1).await;
    clock.advance(Duration::from_secs(60));
    let outcome = run.await?;
    assert!(!outcome.ok, "{}", outcome.detail);
    assert!(
        outcome.detail.contains("did not finish within") && outcome.detail.contains("killed"),
        "{}",
        outcome.detail
    );
    wait_until(
        "the grandchild to be killed",
        Duration::from_secs(10),
        || async { Ok((!alive(grandchild)).then_some(())) },
    )
    .await?;
    Ok(())
}

/// The environment `argv` ran with, for `service`'s step, as `NAME=value` lines.
async fn environment_seen(runner: &Runner, service: &str, dir: &std::path::Path) -> String {
    let out = dir.join(format!("{service}.env"));
    let argv = vec![
        "sh".to_owned(),
        "-c".to_owned(),
        format!("env > {}", out.display()),
    ];
    let target = Target {
        service: Some(service.to_owned()),
        step: StepId::deploy(&"production".parse().unwrap(), &service.parse().unwrap()).to_string(),
        ..Target::default()
    };
    let outcome = runner
        .command(&argv, &target, Duration::from_secs(60))
        .await;
    assert!(outcome.ok, "{}", outcome.detail);
    std::fs::read_to_string(out).expect("the script wrote its environment")
}

#[tokio::test]
async fn a_deploy_command_sees_only_what_its_service_is_granted() -> anyhow::Result<()> {
    let catalog = railyard_core::Catalog::from_toml(
        r#"
[[environments]]
name = "production"

[services.orders-api]
deploy = { kind = "simulated" }
env = ["KUBECONFIG"]
secrets = ["ORDERS_TOKEN"]

[services.billing]
deploy = { kind = "simulated" }
"#,
    )?;
    // The promoter's environment holds its NATS password, other services' secrets and
    // variables nobody granted.
    let promoter_env = railyard_promoter::Environment::from_vars(
        [
            ("PATH", "/usr/bin:/bin"),
            ("HOME", "/var/lib/railyard"),
            ("KUBECONFIG", "/etc/kube/orders"),
            ("RAILYARD_NATS_PASSWORD", "nats-password-value"),
            ("RAILYARD_SECRET_ORDERS_TOKEN", "orders-token-value"),
            ("RAILYARD_SECRET_BILLING_TOKEN", "billing-token-value"),
            ("AWS_SECRET_ACCESS_KEY", "aws-key-value"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    let mut secrets = Secrets::default();
    secrets.insert("ORDERS_TOKEN", "orders-token-value");
    secrets.insert("BILLING_TOKEN", "billing-token-value");
    let runner = Runner {
        clock: railyard_core::SystemClock::shared(),
        secrets,
        http: reqwest::Client::new(),
        poll_interval: Duration::from_secs(1),
        tail_bytes: 1024,
        seed: 0,
        env: ChildEnv::new(promoter_env, &catalog),
    };
    let dir = tempfile::tempdir()?;

    let orders = environment_seen(&runner, "orders-api", dir.path()).await;
    for granted in [
        "PATH=/usr/bin:/bin",
        "HOME=/var/lib/railyard",
        "KUBECONFIG=/etc/kube/orders",
        "RAILYARD_SECRET_ORDERS_TOKEN=orders-token-value",
        "RAILYARD_SERVICE=orders-api",
        "RAILYARD_STEP=production:deploy:orders-api",
    ] {
        assert!(
            orders.lines().any(|l| l == granted),
            "{granted} missing:\n{orders}"
        );
    }
    for withheld in [
        "nats-password-value",
        "billing-token-value",
        "aws-key-value",
    ] {
        assert!(!orders.contains(withheld), "{withheld} leaked:\n{orders}");
    }

    // A service granted nothing gets the base variables and the release's, nothing else.
    let billing = environment_seen(&runner, "billing", dir.path()).await;
    for withheld in [
        "nats-password-value",
        "billing-token-value",
        "orders-token-value",
        "aws-key-value",
        "KUBECONFIG",
    ] {
        assert!(!billing.contains(withheld), "{withheld} leaked:\n{billing}");
    }
    assert!(
        billing.lines().any(|l| l == "RAILYARD_SERVICE=billing"),
        "{billing}"
    );
    Ok(())
}

#[tokio::test]
async fn a_command_runs_in_its_services_directory_as_its_user() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // The directory must be open to the user the command runs as.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    let workdir = dir.path().canonicalize()?;
    let catalog = railyard_core::Catalog::from_toml(&format!(
        r#"
[[environments]]
name = "production"

[services.orders-api]
deploy = {{ kind = "simulated" }}
workdir = "{}"
user = "nobody"

[services.billing]
deploy = {{ kind = "simulated" }}
user = "no-such-user-here"
"#,
        workdir.display()
    ))?;
    let runner = Runner {
        clock: railyard_core::SystemClock::shared(),
        secrets: Secrets::default(),
        http: reqwest::Client::new(),
        poll_interval: Duration::from_secs(1),
        tail_bytes: 1024,
        seed: 0,
        env: ChildEnv::new(railyard_promoter::Environment::from_vars([]), &catalog),
    };
    let argv = ["sh", "-c", "echo dir=$(pwd) uid=$(id -u) home=$HOME"].map(str::to_owned);
    let target = |service: &str| Target {
        service: Some(service.to_owned()),
        step: StepId::deploy(&"production".parse().unwrap(), &service.parse().unwrap()).to_string(),
        ..Target::default()
    };
    let outcome = runner
        .command(&argv, &target("orders-api"), Duration::from_secs(60))
        .await;
    let nobody = nix::unistd::User::from_name("nobody")?.expect("nobody exists");
    if nix::unistd::geteuid().is_root() {
        assert!(outcome.ok, "{}", outcome.detail);
        let expected = format!(
            "dir={} uid={} home={}",
            workdir.display(),
            nobody.uid,
            nobody.dir.display()
        );
        assert!(outcome.detail.contains(&expected), "{}", outcome.detail);
    } else {
        // Only root may switch users: the step fails and says so.
        assert!(!outcome.ok, "{}", outcome.detail);
        assert!(
            outcome.detail.contains("it must run as root"),
            "{}",
            outcome.detail
        );
    }

    let outcome = runner
        .command(&argv, &target("billing"), Duration::from_secs(60))
        .await;
    assert!(!outcome.ok, "{}", outcome.detail);
    assert!(
        outcome
            .detail
            .contains("\"no-such-user-here\" that billing's commands run as does not exist"),
        "{}",
        outcome.detail
    );

    // The catalog refuses a relative directory and a user name that is not one.
    for (field, value, says) in [
        ("workdir", "deploy/orders", "is not an absolute path"),
        ("workdir", "/srv/../etc", "is not an absolute path"),
        ("user", "root; rm -rf /", "is not a system user name"),
    ] {
        let error = railyard_core::Catalog::from_toml(&format!(
            "[[environments]]\nname = \"production\"\n\n[services.a]\ndeploy = {{ kind = \"simulated\" }}\n{field} = {value:?}\n"
        ))
        .expect_err("refused");
        let text = error.to_string();
        assert!(
            text.contains(&format!("catalog.services.a.{field}")) && text.contains(says),
            "{text}"
        );
    }
    Ok(())
}

/// The gates of `orders-api` in a one-service catalog whose `gates = [...]` is `gates`.
fn gates_of(gates: &str) -> Vec<railyard_core::catalog::Gate> {
    let catalog = railyard_core::Catalog::from_toml(&format!(
        r#"
[[environments]]
name = "production"

[services.orders-api]
deploy = {{ kind = "simulated" }}
gates = {gates}
"#
    ))
    .expect("the catalog parses");
    catalog.services.values().next().unwrap().gates.clone()
}

#[tokio::test]
async fn a_gate_does_not_follow_redirects_nor_show_its_secrets() -> anyhow::Result<()> {
    // An endpoint that sends the gate (and whatever its URL carries) to another host.
    let app = axum::Router::new().route(
        "/health",
        axum::routing::get(|| async {
            (
                axum::http::StatusCode::FOUND,
                [(
                    axum::http::header::LOCATION,
                    "http://attacker.example/collect",
                )],
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    let nats = railyard_testkit::NatsServer::start().await?;
    let bus = railyard_bus::Bus::connect(&nats.url(), railyard_bus::BusConfig::default()).await?;
    let mut secrets = Secrets::default();
    secrets.insert("GATE_TOKEN", "gate-token-value");
    let runner = Runner {
        clock: railyard_core::SystemClock::shared(),
        secrets,
        // The client every worker uses.
        http: railyard_promoter::adapter::http_client(),
        poll_interval: Duration::from_secs(1),
        tail_bytes: 1024,
        seed: 0,
        env: ChildEnv::default(),
    };
    let target = Target {
        service: Some("orders-api".into()),
        step: "production:verify:orders-api".into(),
        env: Some("production".parse()?),
        ..Target::default()
    };

    let gates = gates_of(&format!(
        r#"[{{ kind = "http", url = "http://{addr}/health?token={{secret:GATE_TOKEN}}", expect_status = 200 }}]"#
    ));
    let check = runner.gate(&gates[0], "http[0]", &target, &bus).await;
    assert!(!check.passed, "{check:?}");
    assert!(
        check
            .observed
            .contains("status 302, a redirect to http://attacker.example/collect")
            && check.observed.contains("gates do not follow redirects"),
        "{check:?}"
    );
    assert!(
        !format!("{check:?}").contains("gate-token-value"),
        "{check:?}"
    );

    // Unreachable, with the secret in the URL: the error names the URL without the secret.
    let gates = gates_of(
        r#"[{ kind = "http", url = "http://127.0.0.1:9/health?token={secret:GATE_TOKEN}", timeout = "5s" }]"#,
    );
    let check = runner.gate(&gates[0], "http[0]", &target, &bus).await;
    assert!(!check.passed, "{check:?}");
    assert!(check.observed.contains("cannot be reached"), "{check:?}");
    assert!(
        !format!("{check:?}").contains("gate-token-value"),
        "{check:?}"
    );
    Ok(())
}

/// The process's peak resident memory, in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("procfs");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmHWM in /proc/self/status")
        * 1024
}

#[tokio::test]
async fn a_command_printing_a_gibibyte_keeps_only_its_tail() -> anyhow::Result<()> {
    let runner = Runner {
        clock: railyard_core::SystemClock::shared(),
        secrets: Secrets::default(),
        http: reqwest::Client::new(),
        poll_interval: Duration::from_secs(1),
        tail_bytes: 64,
        seed: 0,
        env: ChildEnv::default(),
    };
    const PRINTED: u64 = 1024 * 1024 * 1024;
    let before = peak_rss();
    let argv = vec![
        "sh".to_owned(),
        "-c".to_owned(),
        format!("head -c {PRINTED} /dev/zero | tr '\\0' 'x'; echo; echo the-last-line"),
    ];
    let outcome = runner
        .command(&argv, &Target::default(), Duration::from_secs(120))
        .await;
    assert!(outcome.ok, "{}", outcome.detail);
    assert!(
        outcome.detail.ends_with("the-last-line"),
        "{}",
        outcome.detail
    );
    assert!(
        outcome.detail.len() < 256,
        "only the tail is kept: {}",
        outcome.detail
    );
    let grown = peak_rss().saturating_sub(before);
    assert!(
        grown < 32 * 1024 * 1024,
        "printing {PRINTED} bytes grew the peak memory by {grown} bytes"
    );
    Ok(())
}

//! The production topology, run for real: a 3-node NATS cluster from `deploy/nats/` (ports and
//! stores rewritten for loopback, TLS for clients and mutual TLS for routes with certificates
//! made for the test, users and permissions untouched), the streams created as
//! `admin` by `railyard admin init --replicas 3`, and every service as its own process of the
//! real binary connected as its own NATS user — intake, planner, two promotion workers, audit.
//! A release submitted through the HTTP intake completes although the node leading the event
//! stream is killed (SIGKILL) in the middle of it, with every event exactly once in the stream
//! and in the audit record; and each service's user is refused what it must not touch.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use railyard_bus::{Bus, BusConfig, NatsCredentials};
use railyard_core::{AggregateId, Envelope, ReleaseId, ReleaseState, Status};
use railyard_http::{Role, generate_token};
use railyard_testkit::deploy::deploy_password;
use railyard_testkit::{Deployment, NatsCluster, Probe, ServiceProcess, refusal, wait_until};
use serde_json::Value;

/// Bound on starting the services and on the release.
const SERVICES_READY: Duration = Duration::from_secs(30);
/// A read model whose ephemeral ordered consumer lived on the killed node stalls until the
/// client misses two of its idle heartbeats (async-nats fixes them at 15 s for ordered
/// consumers), so a release or the audit record may take about 30 s to move again.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(75);

const CATALOG: &str = r##"
[policy]
protected_branches = ["main"]

[[environments]]
name = "staging"

[[environments]]
name = "production"
after = "staging"

[services.accounts]
deploy = { kind = "simulated", duration = "300ms" }

[services.ledger]
after = ["accounts"]
deploy = { kind = "simulated", duration = "300ms" }

[services.statements]
after = ["ledger"]
deploy = { kind = "simulated", duration = "300ms" }

[notify.slack]
default_channel = "#releases"
"##;

const RELEASE: &str = r#"
id = "topology-1"

[[changes]]
service = "accounts"
version = "2.0.0"
commit = "a1a1a1a"
branch = "main"

[[changes]]
service = "ledger"
version = "5.1.0"
commit = "b2b2b2b"
branch = "main"

[[changes]]
service = "statements"
version = "1.4.0"
commit = "c3c3c3c"
branch = "main"
"#;

/// The services (each a process of the real binary, `railyard_testkit::services`), with their
/// logs for failure messages.
struct Services(Vec<ServiceProcess>);

impl Services {
    fn by_name(&self, name: &str) -> &ServiceProcess {
        self.0
            .iter()
            .find(|service| service.name == name)
            .expect("a started service")
    }

    fn logs(&self) -> String {
        self.0
            .iter()
            .map(|service| format!("--- {}\n{}", service.name, service.log_tail(40)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// `railyard <args>` as the NATS user `user`, output into `<dir>/<name>.log`.
fn spawn(
    deployment: &Deployment,
    name: &str,
    user: &str,
    args: &[&str],
) -> anyhow::Result<ServiceProcess> {
    let args: Vec<String> = args.iter().map(|arg| (*arg).to_owned()).collect();
    deployment.spawn(name, user, &args, &[])
}

/// The type name and (for step events) the step of an event.
fn describe(envelope: &Envelope) -> (String, Option<String>) {
    let step = serde_json::to_value(&envelope.event)
        .ok()
        .and_then(|value| find_step(&value));
    (envelope.event.type_name().to_owned(), step)
}

fn find_step(value: &Value) -> Option<String> {
    match value {
        Value::Object(map) => map
            .get("step")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| map.values().find_map(find_step)),
        _ => None,
    }
}

async fn stream_leader(bus: &Bus) -> anyhow::Result<Option<String>> {
    let info = bus.events_stream_info().await?;
    ensure!(
        info.config.num_replicas == 3,
        "RAILYARD_EVENTS is not R3: {:?}",
        info.config
    );
    Ok(info.cluster.and_then(|cluster| cluster.leader))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_survives_losing_a_nats_node_with_every_service_as_its_own_user()
-> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let dir = tempfile::tempdir()?;
    // The cluster from deploy/nats with TLS, and the topology created once by the admin
    // user (`railyard admin init --replicas 3`): R3 streams and buckets.
    let (deployment, mut cluster) =
        Deployment::start(Path::new(env!("CARGO_BIN_EXE_railyard")), dir.path(), 3).await?;
    let admin = Deployment::admin();
    // tls://127.0.0.1:<port>,...: every client below requires TLS.
    let url = deployment.url.clone();
    eprintln!("cluster up after {:?}", started.elapsed());
    let bus = Bus::connect(
        &url,
        BusConfig {
            manage_topology: false,
            credentials: Some(NatsCredentials {
                user: admin.0.clone(),
                password: admin.1.clone(),
            }),
            tls_ca: Some(deployment.ca.clone()),
            ..BusConfig::default()
        },
    )
    .await?;
    bus.check_topology().await?;

    // The estate and the tokens; only their hashes reach the services.
    std::fs::write(dir.path().join("railyard.toml"), CATALOG)?;
    let (publisher, publisher_entry) =
        generate_token("ci", BTreeSet::from([Role::Publisher]), Vec::new());
    let (auditor, auditor_entry) =
        generate_token("auditor", BTreeSet::from([Role::Auditor]), Vec::new());
    let tokens = [publisher_entry, auditor_entry]
        .iter()
        .map(|entry| {
            format!(
                "[[tokens]]\nidentity = {:?}\nroles = {:?}\nsha256 = {:?}\n",
                entry.identity,
                entry
                    .roles
                    .iter()
                    .map(|role| serde_json::to_value(role)
                        .unwrap()
                        .as_str()
                        .unwrap()
                        .to_owned())
                    .collect::<Vec<_>>(),
                entry.sha256
            )
        })
        .collect::<String>();
    std::fs::write(dir.path().join("tokens.toml"), tokens)?;
    // The planner's and the promoters' signing keys, made as an operator would; every
    // service trusts their public halves.
    deployment.authority_keys(&["planner", "promoter"])?;

    // A stand-in Slack: counts the webhook posts the notifier makes.
    let slack_posts = Arc::new(AtomicUsize::new(0));
    let slack = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let slack_address = slack.local_addr()?;
    {
        let posts = Arc::clone(&slack_posts);
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move || {
                let posts = Arc::clone(&posts);
                async move {
                    posts.fetch_add(1, Ordering::SeqCst);
                    "ok"
                }
            }),
        );
        tokio::spawn(async move { axum::serve(slack, app).await });
    }

    // Every service as its own process and its own NATS user.
    let store = |name: &str| deployment.path(name).display().to_string();
    let d = &deployment;
    let services = Services(vec![
        spawn(d, "intake", "intake", &["intake"])?,
        spawn(
            d,
            "planner",
            "planner",
            &["planner", "--store", &store("planner")],
        )?,
        spawn(
            d,
            "promoter-1",
            "promoter",
            &[
                "promoter",
                "--store",
                &store("promoter-1"),
                "--worker-id",
                "worker-1",
            ],
        )?,
        spawn(
            d,
            "promoter-2",
            "promoter",
            &[
                "promoter",
                "--store",
                &store("promoter-2"),
                "--worker-id",
                "worker-2",
            ],
        )?,
        spawn(
            d,
            "audit",
            "audit",
            &["audit", "serve", "--store", &store("audit")],
        )?,
    ]);
    let slack_url = format!("http://{slack_address}/hook");
    let webhook = format!("#releases={slack_url}");
    let services = {
        let mut services = services;
        services.0.push(spawn(
            d,
            "notify",
            "notify",
            &[
                "notify",
                "--store",
                &store("notify"),
                "--slack-webhook",
                &webhook,
            ],
        )?);
        services
    };
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let outcome = run_release(&mut cluster, &bus, &services, &http, &publisher, &auditor).await;
    if let Err(error) = outcome {
        bail!("{error:#}\n\nservice logs:\n{}", services.logs());
    }
    eprintln!("release done after {:?}", started.elapsed());
    if std::env::var_os("RAILYARD_TEST_LOGS").is_some() {
        eprintln!("service logs:\n{}", services.logs());
    }
    // The notifier, reading as its own user, told Slack about it.
    wait_until("the notifier to post to Slack", RELEASE_TIMEOUT, || async {
        services_ok(&services)?;
        Ok((slack_posts.load(Ordering::SeqCst) > 0).then_some(()))
    })
    .await
    .map_err(|error| anyhow::anyhow!("{error:#}\n{}", services.logs()))?;

    // Nothing a service did was refused: its user has every right it needs.
    for service in &services.0 {
        let log = std::fs::read_to_string(service.log_path())?;
        if let Some(line) = log
            .lines()
            .find(|line| line.contains("Permissions Violation"))
        {
            bail!(
                "{} was refused something it needs: {line}\n{}",
                service.name,
                services.logs()
            );
        }
    }

    // Each user is refused what it must not touch (and allowed its replies).
    let live = alive_node(&cluster).context("a running node")?;
    let publish = |subject: &str| Probe::Publish(subject.to_owned());
    let subscribe = |subject: &str| Probe::Subscribe(subject.to_owned());
    let refused: &[(&str, Probe)] = &[
        ("notify", publish("railyard.events.release.topology-1")),
        ("notify", publish("railyard.work.deploy")),
        ("notify", subscribe("railyard.events.>")),
        ("planner", publish("railyard.work.deploy")),
        ("planner", publish("railyard.events.inventory.production")),
        ("planner", publish("$JS.API.STREAM.DELETE.RAILYARD_EVENTS")),
        ("audit", publish("railyard.events.release.topology-1")),
        ("audit", publish("$JS.API.STREAM.PURGE.RAILYARD_EVENTS")),
        ("intake", publish("railyard.work.deploy")),
        ("intake", publish("railyard.events.catalog")),
        ("intake", publish("$JS.API.STREAM.CREATE.RAILYARD_EVENTS")),
        ("promoter", publish("railyard.events.signal.accounts")),
        ("promoter", publish("$JS.API.STREAM.DELETE.RAILYARD_WORK")),
        ("promoter", publish("_INBOX.someone-elses-reply")),
        // Nobody touches another service's durable consumer.
        (
            "notify",
            publish("$JS.API.CONSUMER.DELETE.RAILYARD_EVENTS.railyard-promoter-dispatch"),
        ),
        (
            "intake",
            publish("$JS.API.CONSUMER.CREATE.RAILYARD_EVENTS.railyard-promoter-dispatch.>"),
        ),
        (
            "audit",
            publish("$JS.API.CONSUMER.MSG.NEXT.RAILYARD_EVENTS.railyard-promoter-dispatch"),
        ),
        (
            "promoter",
            publish("$JS.API.CONSUMER.DELETE.RAILYARD_EVENTS.railyard-notify"),
        ),
    ];
    for (user, probe) in refused {
        let answer = refusal(&live, user, &deploy_password(user), cluster.ca(), probe).await?;
        let subject = match probe {
            Probe::Publish(subject) | Probe::Subscribe(subject) => subject,
        };
        match answer {
            Some(violation) => ensure!(
                violation.to_lowercase().contains("permissions violation")
                    && violation.contains(subject.as_str()),
                "{user}: {probe:?} answered {violation}"
            ),
            None => bail!("{user} may {probe:?}: it must be refused"),
        }
    }
    // The notifier dead-letters a message Slack keeps refusing: it may write that one subject.
    let notify_dlq = publish("railyard.dlq.RAILYARD_EVENTS.railyard-notify");
    let answer = refusal(
        &live,
        "notify",
        &deploy_password("notify"),
        cluster.ca(),
        &notify_dlq,
    )
    .await?;
    ensure!(
        answer.is_none(),
        "notify may not write its dead letters: {answer:?}"
    );
    for user in ["intake", "planner", "promoter", "audit", "notify"] {
        let answer = refusal(
            &live,
            user,
            &deploy_password(user),
            cluster.ca(),
            &subscribe("_INBOX.replies-to-me"),
        )
        .await?;
        ensure!(
            answer.is_none(),
            "{user} may not receive replies: {answer:?}"
        );
    }
    eprintln!("permissions checked after {:?}", started.elapsed());

    // Intake and planner may publish release events (requests, plans) but not decide: an
    // approval, a cancel and a rollback they forge count nowhere.
    forge_decisions(&url, &deployment.ca, &services, &http, &auditor)
        .await
        .map_err(|error| anyhow::anyhow!("{error:#}\n{}", services.logs()))?;
    bus.close().await?;
    eprintln!("forgeries checked after {:?}", started.elapsed());
    Ok(())
}

/// Appends, as the intake and planner users, decisions on the completed release; checks that
/// the audit record keeps them as refused, that the release is still completed with no
/// anomaly, and that the services counted them.
async fn forge_decisions(
    url: &str,
    ca: &Path,
    services: &Services,
    http: &reqwest::Client,
    auditor: &str,
) -> anyhow::Result<()> {
    use railyard_core::event::{ApprovalDecision, Reasoned, ReleaseRolledBack};
    let aggregate = AggregateId::Release("topology-1".parse()?);
    for (user, event) in [
        (
            "intake",
            railyard_core::Event::ApprovalGranted(ApprovalDecision {
                step: "production:approve:release".parse()?,
                comment: "forged".into(),
            }),
        ),
        (
            "intake",
            railyard_core::Event::ReleaseCancelled(Reasoned {
                reason: "forged".into(),
            }),
        ),
        (
            "planner",
            railyard_core::Event::ReleaseRolledBack(serde_json::from_value::<ReleaseRolledBack>(
                serde_json::json!({"reason": "forged"}),
            )?),
        ),
    ] {
        let forger = Bus::connect(
            url,
            BusConfig {
                manage_topology: false,
                credentials: Some(NatsCredentials {
                    user: user.to_owned(),
                    password: deploy_password(user),
                }),
                tls_ca: Some(ca.to_path_buf()),
                ..BusConfig::default()
            },
        )
        .await?;
        let envelope = Envelope::new(aggregate.clone(), "alice", chrono::Utc::now(), event);
        forger
            .append(&aggregate, railyard_bus::Expected::Any, &[envelope])
            .await
            .with_context(|| format!("NATS lets {user} publish release events"))?;
        forger.close().await?;
    }

    let audit = services.by_name("audit").http().to_owned();
    let refused = wait_until(
        "the audit to record the forgeries",
        RELEASE_TIMEOUT,
        || async {
            services_ok(services)?;
            let answer = http
                .get(format!("http://{audit}/v1/audit/events?release=topology-1"))
                .bearer_auth(auditor)
                .send()
                .await?;
            let body: Value = answer.json().await?;
            let kinds: Vec<String> = body["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|item| item["type"].as_str())
                .filter(|kind| kind.starts_with("refused:"))
                .map(str::to_owned)
                .collect();
            Ok((kinds.len() == 3).then_some(kinds))
        },
    )
    .await?;
    ensure!(
        refused
            == [
                "refused:approval.granted",
                "refused:release.cancelled",
                "refused:release.rolled_back"
            ],
        "{refused:?}"
    );
    let status: Value = http
        .get(format!("http://{audit}/v1/releases/topology-1"))
        .bearer_auth(auditor)
        .send()
        .await?
        .json()
        .await?;
    ensure!(
        status["status"] == "completed" && status["anomalies"] == serde_json::json!([]),
        "the forgeries changed the release: {status}"
    );
    let approvals: Value = http
        .get(format!(
            "http://{audit}/v1/audit/approvals?release=topology-1"
        ))
        .bearer_auth(auditor)
        .send()
        .await?
        .json()
        .await?;
    ensure!(
        approvals["items"] == serde_json::json!([]),
        "a forged approval is listed: {approvals}"
    );
    // Each reader counted them and said why in its log.
    let counted = |name: &str| {
        let address = services.by_name(name).http().to_owned();
        async move {
            let metrics = http
                .get(format!("http://{address}/metrics"))
                .send()
                .await?
                .text()
                .await?;
            Ok::<u64, anyhow::Error>(
                metrics
                    .lines()
                    .find_map(|line| line.strip_prefix("railyard_authority_refused_total "))
                    .and_then(|value| value.trim().parse().ok())
                    .unwrap_or(0),
            )
        }
    };
    ensure!(
        counted("audit").await? >= 3,
        "the audit did not count the forgeries"
    );
    let promoters = counted("promoter-1").await? + counted("promoter-2").await?;
    ensure!(promoters >= 1, "no promoter counted the forgeries");
    let audit_log = std::fs::read_to_string(services.by_name("audit").log_path())?;
    ensure!(
        audit_log.contains("carries no seal: only the promoter may write it"),
        "the audit's log does not say why"
    );
    Ok(())
}

/// A URL of a node that runs.
fn alive_node(cluster: &NatsCluster) -> Option<String> {
    (0..cluster.size())
        .find(|index| cluster.node(*index).is_running())
        .map(|index| cluster.node(index).url())
}

async fn run_release(
    cluster: &mut NatsCluster,
    bus: &Bus,
    services: &Services,
    http: &reqwest::Client,
    publisher: &str,
    auditor: &str,
) -> anyhow::Result<()> {
    // Ready: each service answers /readyz (it reached NATS as its user, topology checked).
    for name in [
        "intake",
        "planner",
        "promoter-1",
        "promoter-2",
        "audit",
        "notify",
    ] {
        services_ok(services)?;
        let address = services.by_name(name).http().to_owned();
        wait_until(&format!("{name} to be ready"), SERVICES_READY, || async {
            let answer = http.get(format!("http://{address}/readyz")).send().await;
            Ok(answer
                .ok()
                .filter(|answer| answer.status().is_success())
                .map(|_| ()))
        })
        .await?;
    }

    // Submit through the HTTP intake.
    let intake = services.by_name("intake").http().to_owned();
    let answer = http
        .post(format!("http://{intake}/v1/releases"))
        .bearer_auth(publisher)
        .header("content-type", "application/toml")
        .body(RELEASE)
        .send()
        .await?;
    let status = answer.status();
    let body = answer.text().await?;
    ensure!(status.as_u16() == 202, "POST /v1/releases: {status} {body}");
    let id: ReleaseId = "topology-1".parse()?;
    let aggregate = AggregateId::Release(id.clone());

    // Mid-release (the first step has succeeded, more are to come), kill the node that leads
    // the event stream.
    wait_until("the first step to succeed", RELEASE_TIMEOUT, || async {
        services_ok(services)?;
        let events = bus.load(&aggregate).await?.events;
        Ok(events
            .iter()
            .any(|envelope| envelope.event.type_name() == "step.succeeded")
            .then_some(()))
    })
    .await?;
    let leader = stream_leader(bus)
        .await?
        .context("RAILYARD_EVENTS has a leader")?;
    let index = leader
        .strip_prefix("railyard-")
        .and_then(|number| number.parse::<usize>().ok())
        .and_then(|number| number.checked_sub(1))
        .with_context(|| format!("a node index from the leader's name {leader}"))?;
    let before = bus.load(&aggregate).await?.events;
    ensure!(
        !before
            .iter()
            .any(|envelope| envelope.event.type_name() == "release.completed"),
        "the release completed before a node could be killed: make its steps longer"
    );
    cluster.kill(index).await;
    let killed = std::time::Instant::now();

    // The release completes.
    let state = wait_until("the release to end", RELEASE_TIMEOUT, || async {
        services_ok(services)?;
        let events = match bus.load(&aggregate).await {
            Ok(loaded) => loaded.events,
            // The stream may be electing a new leader.
            Err(_) => return Ok(None),
        };
        let state = ReleaseState::fold(&events)?;
        Ok(state.filter(|state| state.status.is_final()))
    })
    .await?;
    eprintln!(
        "release ended {:?} after node {leader} was killed",
        killed.elapsed()
    );
    ensure!(
        state.status == Status::Completed,
        "the release ended {} instead of completed",
        state.status
    );

    // Every event exactly once: unique ids, and one success per step, one start per attempt.
    let events = bus.load(&aggregate).await?.events;
    let ids: BTreeSet<_> = events.iter().map(|envelope| envelope.event_id).collect();
    ensure!(ids.len() == events.len(), "an event is in the stream twice");
    let mut succeeded: BTreeMap<String, usize> = BTreeMap::new();
    let mut completed = 0;
    for envelope in &events {
        match describe(envelope) {
            (kind, Some(step)) if kind == "step.succeeded" => {
                *succeeded.entry(step).or_default() += 1;
            }
            (kind, _) if kind == "release.completed" => completed += 1,
            _ => {}
        }
    }
    ensure!(completed == 1, "release.completed {completed} times");
    ensure!(
        succeeded.values().all(|count| *count == 1),
        "a step succeeded more than once: {succeeded:?}"
    );
    for environment in ["staging", "production"] {
        for service in ["accounts", "ledger", "statements"] {
            let step = format!("{environment}:deploy:{service}");
            ensure!(
                succeeded.contains_key(&step),
                "{step} never succeeded: {succeeded:?}"
            );
        }
    }

    // The audit record holds the release, every event of it.
    let audit = services.by_name("audit").http().to_owned();
    let want = events.len() as u64;
    let audit_wait = std::time::Instant::now();
    let record = wait_until(
        "the audit record of the release",
        RELEASE_TIMEOUT,
        || async {
            services_ok(services)?;
            let answer = http
                .get(format!("http://{audit}/v1/releases/{id}"))
                .bearer_auth(auditor)
                .send()
                .await?;
            if !answer.status().is_success() {
                return Ok(None);
            }
            let body: Value = answer.json().await?;
            Ok((body["events"].as_u64() == Some(want)).then_some(body))
        },
    )
    .await?;
    if audit_wait.elapsed() > Duration::from_secs(10) {
        eprintln!(
            "the audit record took {:?} to catch up:\n{}",
            audit_wait.elapsed(),
            services.by_name("audit").log_tail(40)
        );
    }
    ensure!(
        record["status"].as_str() == Some("completed"),
        "the audit says {record}"
    );
    Ok(())
}

/// Fails when a service exited.
fn services_ok(services: &Services) -> anyhow::Result<()> {
    for service in &services.0 {
        if !service.is_running() {
            bail!(
                "{} exited; its log:\n{}",
                service.name,
                service.log_tail(40)
            );
        }
    }
    Ok(())
}

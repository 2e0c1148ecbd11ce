//! Gates and strategies against real local endpoints and a real nats-server, with time driven
//! on the manual clock: a soak re-checks the other gates every interval for its duration and
//! fails as soon as one does; an open incident fails the `incident` gate until it is resolved;
//! a Prometheus threshold and an empty result; a command gate's exit code; a canary deploys at
//! each weight with the gates checked at each.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use railyard_bus::Expected;
use railyard_core::event::{GateEvaluated, IncidentOpened, IncidentResolved, Origin};
use railyard_core::{AggregateId, Clock, Envelope, Event, Status};

fn one_env(service: &str) -> String {
    format!(
        r#"
[[environments]]
name = "staging"

[services.orders-api]
owner = "team-orders"
{service}
"#
    )
}

const ONE: &str = r#"
id = "rel-g"
[[changes]]
service = "orders-api"
version = "2.0.0"
"#;

fn gates(events: &[Envelope]) -> Vec<GateEvaluated> {
    events
        .iter()
        .filter_map(|e| match &e.event {
            Event::GateEvaluated(g) => Some(g.clone()),
            _ => None,
        })
        .collect()
}

fn empty() -> railyard_core::Inventory {
    railyard_core::Inventory::default()
}

#[tokio::test]
async fn a_soak_rechecks_the_gates_every_interval_for_its_duration() -> anyhow::Result<()> {
    let fake = Fake::start().await?;
    let h = Harness::start(&one_env(&format!(
        r#"deploy = {{ kind = "simulated" }}
gates = [{{ kind = "http", url = "{}", contains = "ok" }}, {{ kind = "soak", duration = "10m", interval = "1m" }}]"#,
        fake.url("/health")
    )))
    .await?;
    let worker = h.worker("w1");
    let id = h.submit(ONE, &empty()).await?;
    let started = h.clock.now();
    h.drive_until(&id, Duration::from_secs(20), "completed", |s| {
        s.status == Status::Completed
    })
    .await?;
    assert!(
        h.clock.now() - started >= chrono::Duration::minutes(10),
        "the soak waited on the clock"
    );
    let results = gates(&h.events(&id).await?);
    assert_eq!(results.len(), 2, "{results:?}");
    assert_eq!(results[0].gate, "http[0]");
    assert_eq!(results[0].observed, "status 200, body contains \"ok\"");
    assert_eq!(results[1].gate, "soak[1]");
    assert_eq!(
        results[1].observed,
        "10 re-checks of 1 gate(s) over 10m all passed"
    );

    // A second release: the endpoint breaks during the soak, which fails at the next check.
    let id2 = h
        .submit(
            &ONE.replace("rel-g", "rel-g2").replace("2.0.0", "2.1.0"),
            &empty(),
        )
        .await?;
    h.drive_until(&id2, Duration::from_secs(20), "soaking", |s| {
        s.gates.iter().any(|g| g.gate == "http[0]")
    })
    .await?;
    fake.status.store(500, Ordering::SeqCst);
    let state = h.wait_status(&id2, Status::RolledBack).await?;
    let failed = state.gates.last().unwrap();
    assert!(failed.gate.starts_with("soak[1] after "), "{failed:?}");
    assert!(failed.gate.ends_with(": http[0]"), "{failed:?}");
    assert!(!failed.passed);
    worker.shutdown().await
}

fn origin() -> Origin {
    Origin {
        door: "github".into(),
        id: "d-1".into(),
        source: "https://github.com/acme/orders-api".into(),
    }
}

#[tokio::test]
async fn an_open_incident_fails_the_incident_gate_until_it_is_resolved() -> anyhow::Result<()> {
    let h = Harness::start(&one_env(
        r#"deploy = { kind = "simulated" }
gates = [{ kind = "incident" }]"#,
    ))
    .await?;
    let incidents = AggregateId::Incident("staging".parse()?);
    let opened = Envelope::new(
        incidents.clone(),
        "railyard-intake",
        h.clock.now(),
        Event::IncidentOpened(IncidentOpened {
            incident: "INC-7".into(),
            env: "staging".parse()?,
            service: Some("orders-api".parse()?),
            description: "checkout errors".into(),
            origin: origin(),
        }),
    );
    h.bus.append(&incidents, Expected::Any, &[opened]).await?;
    let worker = h.worker("w1");
    let id = h.submit(ONE, &empty()).await?;
    let state = h.wait_status(&id, Status::RolledBack).await?;
    assert_eq!(state.gates[0].observed, "open incident: INC-7");
    assert!(!state.gates[0].passed);

    let resolved = Envelope::new(
        incidents.clone(),
        "railyard-intake",
        h.clock.now(),
        Event::IncidentResolved(IncidentResolved {
            incident: "INC-7".into(),
            env: "staging".parse()?,
            service: Some("orders-api".parse()?),
            origin: origin(),
        }),
    );
    h.bus.append(&incidents, Expected::Any, &[resolved]).await?;
    let id2 = h.submit(&ONE.replace("rel-g", "rel-g2"), &empty()).await?;
    let state = h.wait_status(&id2, Status::Completed).await?;
    assert_eq!(state.gates[0].observed, "no open incident");
    worker.shutdown().await
}

#[tokio::test]
async fn prometheus_and_command_gates_compare_what_they_observe() -> anyhow::Result<()> {
    let fake = Fake::start().await?;
    fake.metric.store(0.002f64.to_bits(), Ordering::SeqCst);
    let h = Harness::start(&one_env(&format!(
        r#"deploy = {{ kind = "simulated" }}
gates = [
  {{ kind = "prometheus", url = "{}", query = "sum(rate(http_errors[5m]))", op = "<", threshold = 0.01, on_empty = "fail" }},
  {{ kind = "command", run = ["sh", "-c", "test $RAILYARD_VERSION != 2.1.0 || {{ echo too new >&2; exit 3; }}"] }},
]"#,
        fake.url("")
    )))
    .await?;
    let worker = h.worker("w1");
    let id = h.submit(ONE, &empty()).await?;
    let state = h.wait_status(&id, Status::Completed).await?;
    assert_eq!(state.gates[0].observed, "0.002");
    assert_eq!(state.gates[0].expected, "sum(rate(http_errors[5m])) < 0.01");
    assert_eq!(state.gates[1].expected, "exit code 0");

    // 2.1.0: the command gate fails with its exit code and stderr.
    let id2 = h
        .submit(
            &ONE.replace("rel-g", "rel-g2").replace("2.0.0", "2.1.0"),
            &empty(),
        )
        .await?;
    let state = h.wait_status(&id2, Status::RolledBack).await?;
    assert_eq!(state.gates[1].observed, "sh exited with 3\nstderr: too new");

    // An empty result fails under on_empty = "fail".
    fake.metric.store(f64::NAN.to_bits(), Ordering::SeqCst);
    let id3 = h
        .submit(
            &ONE.replace("rel-g", "rel-g3").replace("2.0.0", "2.2.0"),
            &empty(),
        )
        .await?;
    let state = h.wait_status(&id3, Status::RolledBack).await?;
    assert_eq!(state.gates[0].observed, "empty result (on_empty = fail)");
    worker.shutdown().await
}

#[tokio::test]
async fn a_canary_deploys_at_each_weight_with_the_gates_checked_at_each() -> anyhow::Result<()> {
    let fake = Fake::start().await?;
    let dir = tempfile::tempdir()?;
    let file = counter_file(&dir);
    let h = Harness::start(&one_env(&format!(
        r#"deploy = {{ kind = "command", run = ["sh", "-c", "echo $RAILYARD_SERVICE $RAILYARD_WEIGHT $RAILYARD_WEIGHT >> {}"] }}
gates = [{{ kind = "http", url = "{}" }}]
strategy = {{ kind = "canary", steps = [10, 50, 100] }}"#,
        file.display(),
        fake.url("/health")
    )))
    .await?;
    let worker = h.worker("w1");
    let id = h.submit(ONE, &empty()).await?;
    let state = h.wait_status(&id, Status::Completed).await?;
    assert_eq!(
        invocations(&file),
        ["orders-api 10 10", "orders-api 50 50", "orders-api 100 100"]
    );
    let names: Vec<&str> = state.gates.iter().map(|g| g.gate.as_str()).collect();
    assert_eq!(
        names,
        ["canary 10%: http[0]", "canary 50%: http[0]", "http[0]"]
    );
    worker.shutdown().await
}

#[tokio::test]
async fn blue_green_switches_keeps_the_old_colour_for_rollback_and_retires_it_at_the_end()
-> anyhow::Result<()> {
    let fake = Fake::start().await?;
    let dir = tempfile::tempdir()?;
    let file = counter_file(&dir);
    let log = |what: &str| {
        format!(
            r#"["sh", "-c", "echo {what} $RAILYARD_VERSION $RAILYARD_COLOUR >> {}"]"#,
            file.display()
        )
    };
    let h = Harness::start(&one_env(&format!(
        r#"deploy = {{ kind = "command", run = {} }}
gates = [{{ kind = "http", url = "{}" }}]
strategy = {{ kind = "blue-green", switch = {}, retire = {} }}"#,
        log("deploy"),
        fake.url("/health"),
        log("switch"),
        log("retire"),
    )))
    .await?;
    let worker = h.worker("w1");

    // First release: blue goes live. Nothing served before it, so nothing is retired.
    let first = h.submit(ONE, &empty()).await?;
    let state = h.wait_status(&first, Status::Completed).await?;
    assert_eq!(
        invocations(&file),
        ["deploy 2.0.0 blue", "switch 2.0.0 blue"]
    );
    let retired = &state.colours_retired["staging:deploy:orders-api"];
    assert!(retired.ok, "{retired:?}");
    assert!(retired.detail.contains("nothing ran"), "{retired:?}");

    // Second release: green is deployed and switched to; blue stays until the release
    // completes, then it is retired.
    let second = h
        .submit(
            &ONE.replace("rel-g", "rel-g2").replace("2.0.0", "3.0.0"),
            &empty(),
        )
        .await?;
    let state = h.wait_status(&second, Status::Completed).await?;
    assert_eq!(
        invocations(&file)[2..],
        [
            "deploy 3.0.0 green",
            "switch 3.0.0 green",
            "retire 3.0.0 blue"
        ]
    );
    let retired = &state.colours_retired["staging:deploy:orders-api"];
    assert_eq!((retired.colour.as_str(), retired.ok), ("blue", true));
    let types = types(&h.events(&second).await?);
    let at = |t: &str| types.iter().position(|x| *x == t).expect(t);
    assert!(at("colour.retired") < at("release.completed"), "{types:?}");

    // Third release: its gate fails on the idle colour (blue). Green still serves 3.0.0, so
    // the rollback switches traffic back to green and redeploys nothing.
    fake.status.store(503, Ordering::SeqCst);
    let third = h
        .submit(
            &ONE.replace("rel-g", "rel-g3").replace("2.0.0", "4.0.0"),
            &empty(),
        )
        .await?;
    let state = h.wait_status(&third, Status::RolledBack).await?;
    assert_eq!(
        invocations(&file)[5..],
        ["deploy 4.0.0 blue", "switch 3.0.0 green"]
    );
    let undone: Vec<String> = h
        .events(&third)
        .await?
        .into_iter()
        .filter_map(|e| match e.event {
            Event::StepRolledBack(o) => Some(o.detail),
            _ => None,
        })
        .collect();
    assert!(
        undone[0].contains("back to 3.0.0 by switching traffic back to green"),
        "{undone:?}"
    );
    assert!(
        state.colours_retired.is_empty(),
        "a rolled back release retires nothing"
    );
    worker.shutdown().await
}

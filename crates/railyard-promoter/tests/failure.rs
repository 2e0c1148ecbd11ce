//! Failures over a real nats-server and a real local HTTP health endpoint: a failing production
//! gate rolls the environment back in reverse plan order; under a `hold` policy the release
//! stops, names the owner and the commands, and `resume`, `retry` and `rollback` each do what
//! they say; an unreachable deploy API fails its step with a clear reason; an outside deploy
//! that makes the rest of a plan unsafe holds the release with the planner's reason.

mod common;

use common::*;
use railyard_core::release_state::StepStatus;
use railyard_core::{Event, Status};
use serde_json::json;
use std::sync::atomic::Ordering;

fn catalog(h_dir: &std::path::Path, health: &str, policy: &str) -> String {
    let file = h_dir.join("invocations.log");
    let deploy = format!(
        r#"{{ kind = "command", run = ["sh", "-c", "echo deploy $RAILYARD_ENV $RAILYARD_SERVICE $RAILYARD_VERSION >> {f}"], rollback = ["sh", "-c", "echo rollback $RAILYARD_ENV $RAILYARD_SERVICE $RAILYARD_VERSION from $RAILYARD_FROM_VERSION >> {f}"] }}"#,
        f = file.display()
    );
    let mut text = estate(&deploy, &format!("on_failure = \"{policy}\""));
    text.push_str(&format!(
        r#"
[services.orders-api.environments.production]
gates = [{{ kind = "http", url = "{health}", expect_status = 200, json_pointer = "/status", equals = "ok", timeout = "5s" }}]
"#
    ));
    text
}

fn rolled_back(events: &[railyard_core::Envelope]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match &e.event {
            Event::StepRolledBack(o) => Some(o.step.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_failing_production_gate_rolls_production_back_in_reverse_order() -> anyhow::Result<()> {
    let fake = Fake::start().await?;
    fake.status.store(503, Ordering::SeqCst);
    let dir = tempfile::tempdir()?;
    let h = Harness::start(&catalog(dir.path(), &fake.url("/health"), "rollback")).await?;
    h.seed(&inventory()).await?;
    let worker = h.worker("w1");
    let id = h.submit(RELEASE, &inventory()).await?;
    let state = h.wait_status(&id, Status::RolledBack).await?;

    let events = h.events(&id).await?;
    let gate = events
        .iter()
        .find_map(|e| match &e.event {
            Event::GateEvaluated(g) if !g.passed => Some(g.clone()),
            _ => None,
        })
        .expect("the failed gate is recorded");
    assert_eq!(gate.step, "production:verify:orders-api");
    assert_eq!(gate.observed, "status 503, /status == \"failing\"");
    assert_eq!(gate.expected, "status 200, /status == \"ok\"");

    let undone = rolled_back(&events);
    assert_eq!(
        undone[0], "production:verify:orders-api",
        "the failed step first"
    );
    assert_eq!(
        undone[1], "production:deploy:orders-api",
        "then the last applied step"
    );
    assert_eq!(undone.len(), 6, "every production step: {undone:?}");
    assert!(undone.iter().all(|s| s.starts_with("production:")));
    let deploy_at = |s: &str| undone.iter().position(|u| u == s).unwrap();
    for consumer in ["billing-worker", "email-worker"] {
        assert!(
            deploy_at(&verify_step("production", consumer))
                < deploy_at(&deploy_step("production", consumer))
        );
    }
    // Staging keeps the release; production's adapters ran their rollback form, producer first.
    assert!(
        state
            .steps
            .iter()
            .all(|(s, st)| !s.starts_with("staging:") || *st == StepStatus::Succeeded)
    );
    let lines = invocations(&counter_file(&dir));
    let rollbacks: Vec<&String> = lines.iter().filter(|l| l.starts_with("rollback")).collect();
    assert_eq!(rollbacks.len(), 3, "{lines:?}");
    // `{version}` is the version rolled back to, `{from_version}` the one undone.
    assert_eq!(
        rollbacks[0],
        "rollback production orders-api 1.0.0 from 2.0.0"
    );
    let Some(Event::ReleaseRolledBack(end)) = events.last().map(|e| &e.event) else {
        panic!("{:?}", types(&events))
    };
    assert_eq!(end.undone, undone);
    assert!(
        end.reason
            .starts_with("production:verify:orders-api failed: gate http[0] failed"),
        "{}",
        end.reason
    );
    worker.shutdown().await
}

#[tokio::test]
async fn a_held_release_is_retried_resumed_and_completed_by_an_operator() -> anyhow::Result<()> {
    let fake = Fake::start().await?;
    fake.status.store(500, Ordering::SeqCst);
    let dir = tempfile::tempdir()?;
    let h = Harness::start(&catalog(dir.path(), &fake.url("/health"), "hold")).await?;
    h.seed(&inventory()).await?;
    let api = Api::start(&h).await?;
    let worker = h.worker("w1");
    let id = h.submit(RELEASE, &inventory()).await?;

    let held = h.wait_status(&id, Status::Held).await?;
    let hold = held.hold.clone().unwrap();
    assert_eq!(hold.step.as_deref(), Some("production:verify:orders-api"));
    assert_eq!(hold.owner.as_deref(), Some("team-orders"));
    assert!(
        hold.reason
            .contains("team-orders (owner of orders-api) should look at it"),
        "{}",
        hold.reason
    );
    assert!(
        hold.reason
            .contains("`railyard retry rel-1 --step production:verify:orders-api`"),
        "{}",
        hold.reason
    );
    assert!(
        hold.reason.contains("`railyard rollback rel-1`"),
        "{}",
        hold.reason
    );

    // resume refuses while a step has failed; an approver may not operate.
    let (status, body) = api.command("ops", &id, "resume", json!({})).await?;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("`railyard retry rel-1` runs it again"),
        "{body}"
    );
    let (status, _) = api.command("alice", &id, "retry", json!({})).await?;
    assert_eq!(status, 403);

    // retry while the gate still fails: it fails again and holds again.
    let (status, body) = api
        .command("ops", &id, "retry", json!({"comment": "flaky?"}))
        .await?;
    assert_eq!(status, 202, "{body}");
    // The route appended `release.resumed` before answering, so the next hold is the new one.
    h.wait_status(&id, Status::Held).await?;
    let events = h.events(&id).await?;
    assert_eq!(
        count(&events, "step.started")["production:verify:orders-api"],
        2
    );

    // fixed: retry runs the step a third time and the release completes.
    fake.status.store(200, Ordering::SeqCst);
    let (status, _) = api
        .command(
            "ops",
            &id,
            "retry",
            json!({"step": "production:verify:orders-api"}),
        )
        .await?;
    assert_eq!(status, 202);
    h.wait_status(&id, Status::Completed).await?;
    let events = h.events(&id).await?;
    assert_eq!(
        count(&events, "step.started")["production:verify:orders-api"],
        3
    );
    assert_eq!(
        count(&events, "step.started")["production:deploy:orders-api"],
        1
    );

    // An operator hold, then resume, on a finished release: 409.
    let (status, body) = api.command("ops", &id, "hold", json!({})).await?;
    assert_eq!(status, 409, "{body}");
    worker.shutdown().await
}

#[tokio::test]
async fn an_operator_holds_resumes_and_rolls_back() -> anyhow::Result<()> {
    let fake = Fake::start().await?;
    fake.status.store(500, Ordering::SeqCst);
    let dir = tempfile::tempdir()?;
    let h = Harness::start(&catalog(dir.path(), &fake.url("/health"), "hold")).await?;
    h.seed(&inventory()).await?;
    let api = Api::start(&h).await?;
    let id = h.submit(RELEASE, &inventory()).await?;
    // Held before any worker runs: nothing starts.
    let (status, body) = api
        .command("ops", &id, "hold", json!({"comment": "change freeze"}))
        .await?;
    assert_eq!(status, 202, "{body}");
    let worker = h.worker("w1");
    let held = h.state(&id).await?;
    assert_eq!(held.status, Status::Held);
    assert!(
        held.hold
            .unwrap()
            .reason
            .starts_with("held by ops: change freeze")
    );
    let (status, _) = api.command("ops", &id, "resume", json!({})).await?;
    assert_eq!(status, 202);
    // It goes on, fails the production gate, holds; the operator rolls production back.
    h.wait_status(&id, Status::Held).await?;
    let (status, body) = api
        .command("ops", &id, "rollback", json!({"comment": "bad build"}))
        .await?;
    assert_eq!(status, 202, "{body}");
    let state = h.wait_status(&id, Status::RolledBack).await?;
    let reason = state.ended_because.unwrap();
    assert!(
        reason.starts_with("rollback of production requested by ops: bad build"),
        "{reason}"
    );
    let events = h.events(&id).await?;
    assert_eq!(rolled_back(&events)[0], "production:verify:orders-api");
    let (status, _) = api.command("ops", &id, "cancel", json!({})).await?;
    assert_eq!(status, 409);
    worker.shutdown().await
}

#[tokio::test]
async fn an_unreachable_deploy_api_fails_the_step_with_a_clear_reason() -> anyhow::Result<()> {
    let deploy = r#"{ kind = "http", url = "http://127.0.0.1:9/deploy", timeout = "5s" }"#;
    let h = Harness::start(&estate(deploy, "")).await?;
    h.seed(&inventory()).await?;
    let worker = h.worker("w1");
    let id = h.submit(RELEASE, &inventory()).await?;
    // The deploy fails; undoing it means redeploying 1.0.0 through the same unreachable API,
    // which fails too, so the release is held for an operator.
    let state = h.wait_status(&id, Status::Held).await?;
    let events = h.events(&id).await?;
    let failure = events
        .iter()
        .find_map(|e| match &e.event {
            Event::StepFailed(o) => Some(o.detail.clone()),
            _ => None,
        })
        .unwrap();
    assert!(
        failure.starts_with("the deploy API at http://127.0.0.1:9/deploy cannot be reached"),
        "{failure}"
    );
    let hold = state.hold.unwrap();
    assert!(hold.reason.starts_with("rolling back "), "{}", hold.reason);
    assert!(hold.reason.contains("cannot be reached"), "{}", hold.reason);
    assert!(
        hold.reason
            .contains("then run `railyard rollback rel-1` again"),
        "{}",
        hold.reason
    );
    worker.shutdown().await
}

#[tokio::test]
async fn an_http_deploy_posts_its_placeholders_and_the_release_completes() -> anyhow::Result<()> {
    let fake = Fake::start().await?;
    let deploy = format!(r#"{{ kind = "http", url = "{}" }}"#, fake.url("/deploy"));
    let h = Harness::start(&estate(&deploy, "")).await?;
    h.seed(&inventory()).await?;
    let worker = h.worker("w1");
    let id = h.submit(RELEASE, &inventory()).await?;
    h.wait_status(&id, Status::Completed).await?;
    let deploys = fake.deploys.lock().unwrap().clone();
    assert_eq!(deploys.len(), 6);
    assert!(deploys.iter().any(|d| d["service"] == "orders-api"
        && d["env"] == "production"
        && d["version"] == "2.0.0"
        && d["weight"] == 100
        && d["release"] == "rel-1"));
    worker.shutdown().await
}

#[tokio::test]
async fn an_outside_deploy_that_makes_the_rest_unsafe_holds_the_release() -> anyhow::Result<()> {
    let h = Harness::start(&estate(r#"{ kind = "simulated", duration = "1m" }"#, "")).await?;
    h.seed(&inventory()).await?;
    let id = h.submit(RELEASE, &inventory()).await?;
    // Before any worker runs, someone deploys audit-worker, a consumer that reads only
    // orders-events 1..=2, to production by hand: orders-api 2.0.0 would break it there.
    let outside: railyard_core::Inventory = serde_json::from_value(json!({"production": {
        "services": {"audit-worker": {"version": "1.0.0", "consumes": {"orders-events": "1..=2"}}}
    }}))?;
    h.seed(&outside).await?;
    let worker = h.worker("w1");
    let state = h.wait_status(&id, Status::Held).await?;
    let hold = state.hold.unwrap();
    assert!(
        hold.reason.starts_with("before entering staging")
            || hold.reason.starts_with("before entering production"),
        "{}",
        hold.reason
    );
    assert!(hold.reason.contains("audit-worker"), "{}", hold.reason);
    assert!(
        hold.reason.contains("`railyard resume rel-1`"),
        "{}",
        hold.reason
    );
    // Staging went through; production did not start.
    assert!(
        state
            .steps
            .iter()
            .all(|(s, st)| !s.starts_with("production:") || *st == StepStatus::Pending)
    );
    worker.shutdown().await
}

#[tokio::test]
async fn an_undo_that_loses_the_race_to_record_it_is_recorded_not_run_again() -> anyhow::Result<()>
{
    // The 30-minute chaos soak saw a rollback command run three times in one attempt: each
    // time the worker went to record `step.rolled_back`, another event of the release had
    // landed first, and the worker undid the step again instead of recording the undo on top.
    // Here the first undo waits until an operator's hold has landed on the release.
    let fake = Fake::start().await?;
    fake.status.store(503, Ordering::SeqCst);
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("invocations.log");
    let go = dir.path().join("go");
    let deploy = format!(
        r#"{{ kind = "command", run = ["sh", "-c", "echo deploy $RAILYARD_ENV $RAILYARD_SERVICE >> {f}"], rollback = ["sh", "-c", "echo rollback $RAILYARD_ENV $RAILYARD_SERVICE >> {f}; while [ ! -e {go} ]; do sleep 0.02; done"] }}"#,
        f = log.display(),
        go = go.display()
    );
    let mut text = estate(&deploy, "on_failure = \"rollback\"");
    text.push_str(&format!(
        r#"
[services.orders-api.environments.production]
gates = [{{ kind = "http", url = "{}", expect_status = 200, timeout = "5s" }}]
"#,
        fake.url("/health")
    ));
    let h = Harness::start(&text).await?;
    h.seed(&inventory()).await?;
    let api = Api::start(&h).await?;
    let worker = h.worker("w1");
    let id = h.submit(RELEASE, &inventory()).await?;
    railyard_testkit::wait_until(
        "the first rollback command to start",
        std::time::Duration::from_secs(30),
        || async {
            Ok(invocations(&log)
                .iter()
                .any(|l| l.starts_with("rollback"))
                .then_some(()))
        },
    )
    .await?;
    let (status, body) = api
        .command("ops", &id, "hold", json!({"comment": "looking"}))
        .await?;
    assert_eq!(status, 202, "{body}");
    std::fs::write(&go, "")?;
    h.wait_status(&id, Status::RolledBack).await?;

    let lines = invocations(&log);
    let rollbacks: Vec<&String> = lines.iter().filter(|l| l.starts_with("rollback")).collect();
    assert_eq!(
        rollbacks.len(),
        3,
        "each production service undone once: {lines:?}"
    );
    let undone = rolled_back(&h.events(&id).await?);
    assert_eq!(undone.len(), 6, "every production step once: {undone:?}");
    worker.shutdown().await
}

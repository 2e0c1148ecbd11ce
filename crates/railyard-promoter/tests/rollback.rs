//! The way back over a real nats-server and a real local HTTP health endpoint (issue 17): a
//! gate failing after a point of no return holds the release with the reason and the owners
//! instead of rolling back; a plain rollback is then refused with the same reason; an
//! operator's forced partial rollback undoes only the steps still safely reversible, each
//! re-checked against the live inventory, and leaves the rest applied, saying why. Where the
//! environment asks for it, the point of no return waits for its own approval.

mod common;

use std::sync::atomic::Ordering;

use common::*;
use railyard_bus::Expected;
use railyard_core::event::ServiceDeployed;
use railyard_core::{AggregateId, Clock, Envelope, Event, Inventory, Status};
use serde_json::json;

fn catalog(dir: &std::path::Path, health: &str) -> String {
    catalog_with(dir, health, "")
}

fn catalog_with(dir: &std::path::Path, health: &str, production: &str) -> String {
    let file = dir.join("invocations.log");
    let f = file.display();
    format!(
        r#"
[groups]
release-managers = ["alice", "bob", "ivan"]

[[environments]]
name = "production"
on_failure = "rollback"
{production}

[services.orders-api]
owner = "team-orders"
deploy = {{ kind = "command", run = ["sh", "-c", "echo deploy $RAILYARD_SERVICE $RAILYARD_VERSION >> {f}"], rollback = ["sh", "-c", "echo rollback $RAILYARD_SERVICE $RAILYARD_VERSION from $RAILYARD_FROM_VERSION >> {f}"] }}

[services.billing-worker]
owner = "team-billing"
deploy = {{ kind = "command", run = ["sh", "-c", "echo deploy $RAILYARD_SERVICE $RAILYARD_VERSION >> {f}"], rollback = ["sh", "-c", "echo rollback $RAILYARD_SERVICE $RAILYARD_VERSION from $RAILYARD_FROM_VERSION >> {f}"] }}
gates = [{{ kind = "http", url = "{health}", expect_status = 200, timeout = "5s" }}]

[databases.orders-db]
users = ["orders-api", "billing-worker"]
migrate = {{ kind = "command", run = ["sh", "-c", "echo migrate orders-db >> {f}"] }}
"#
    )
}

/// orders-api 2.4.0 works with orders-db 43..=44 and contracts it to 44 (no rollback form);
/// billing-worker 1.5.0 works with 44 only, so it deploys after the migration.
const RELEASE: &str = r#"
id = "rel-1"
[[changes]]
service = "orders-api"
version = "2.4.0"
schema = { orders-db = "43..=44" }
migrations = [{ database = "orders-db", to = 44 }]
[[changes]]
service = "billing-worker"
version = "1.5.0"
schema = { orders-db = "44" }
"#;

fn inventory() -> Inventory {
    let env = json!({
        "services": {
            "orders-api": {"version": "2.3.0", "schema": {"orders-db": "42..=43"}},
            "billing-worker": {"version": "1.4.0", "schema": {"orders-db": "43..=44"}}
        },
        "databases": {"orders-db": 43}
    });
    serde_json::from_value(json!({ "production": env })).unwrap()
}

/// Records the inventory's services and database as outside deploys would.
async fn seed(h: &Harness, inventory: &Inventory) -> anyhow::Result<()> {
    h.seed(inventory).await?;
    for (env, content) in &inventory.0 {
        let aggregate = AggregateId::Inventory(env.clone());
        let event = Event::ServiceDeployed(ServiceDeployed {
            env: env.clone(),
            service: "orders-api".parse()?,
            running: content.services.get("orders-api").cloned(),
            databases: content.databases.clone(),
            release: None,
        });
        let envelope = Envelope::new(aggregate.clone(), "ci", h.clock.now(), event);
        h.bus.append(&aggregate, Expected::Any, &[envelope]).await?;
    }
    Ok(())
}

#[tokio::test]
async fn a_gate_failing_after_a_point_of_no_return_holds_and_a_forced_partial_rollback_undoes_only_what_is_reversible()
-> anyhow::Result<()> {
    let fake = Fake::start().await?;
    fake.status.store(503, Ordering::SeqCst);
    let dir = tempfile::tempdir()?;
    let h = Harness::start(&catalog(dir.path(), &fake.url("/health"))).await?;
    seed(&h, &inventory()).await?;
    let api = Api::start(&h).await?;
    let worker = h.worker("w1");
    let id = h.submit(RELEASE, &inventory()).await?;

    // The plan names the point of no return.
    let state = h.state(&id).await?;
    let plan = state.plan.as_ref().expect("planned");
    assert_eq!(
        plan.points_of_no_return
            .iter()
            .map(|p| p.step.as_str())
            .collect::<Vec<_>>(),
        ["production:migrate:orders-db@44"]
    );

    // billing-worker's gate fails after the migration: held, not rolled back.
    let state = h.wait_status(&id, Status::Held).await?;
    let hold = state.hold.as_ref().expect("a hold");
    assert_eq!(
        hold.step.as_deref(),
        Some("production:migrate:orders-db@44"),
        "{hold:?}"
    );
    assert_eq!(hold.owner.as_deref(), Some("team-billing, team-orders"));
    assert!(
        hold.reason.contains("production:migrate:orders-db@44 has run and is a point of no return (orders-db has no rollback form, so a rollback leaves it at 44; after this step, orders-api 2.3.0 (what a rollback of orders-api goes back to) cannot run: it works with orders-db 42..=43)"),
        "{}",
        hold.reason
    );
    assert!(hold.reason.contains("partial"), "{}", hold.reason);
    let events = h.events(&id).await?;
    assert!(
        !events
            .iter()
            .any(|e| matches!(e.event, Event::StepRolledBack(_))),
        "nothing was undone: {:?}",
        types(&events)
    );
    let lines = invocations(&dir.path().join("invocations.log"));
    assert!(
        !lines.iter().any(|l| l.starts_with("rollback")),
        "{lines:?}"
    );

    // A plain rollback is refused with the same reason; a partial one is carried out.
    let (status, answer) = api
        .command("ops", &id, "rollback", json!({"comment": "bad billing"}))
        .await?;
    assert_eq!(status, 409, "{answer}");
    assert!(
        answer["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("is a point of no return"),
        "{answer}"
    );
    let (status, answer) = api
        .command(
            "ops",
            &id,
            "rollback",
            json!({"comment": "undo billing", "partial": true}),
        )
        .await?;
    assert_eq!(status, 202, "{answer}");
    h.wait_status(&id, Status::RolledBack).await?;

    let events = h.events(&id).await?;
    let undone: Vec<String> = events
        .iter()
        .filter_map(|e| match &e.event {
            Event::StepRolledBack(o) => Some(o.step.clone()),
            _ => None,
        })
        .collect();
    assert!(
        undone.contains(&"production:deploy:billing-worker".to_owned()),
        "{undone:?}"
    );
    assert!(
        !undone.contains(&"production:deploy:orders-api".to_owned()),
        "{undone:?}"
    );
    assert!(
        !undone.contains(&"production:migrate:orders-db@44".to_owned()),
        "{undone:?}"
    );
    let lines = invocations(&dir.path().join("invocations.log"));
    let rollbacks: Vec<&String> = lines.iter().filter(|l| l.starts_with("rollback")).collect();
    assert_eq!(
        rollbacks,
        ["rollback billing-worker 1.4.0 from 1.5.0"],
        "{lines:?}"
    );
    let Some(Event::ReleaseRolledBack(end)) = events.last().map(|e| &e.event) else {
        panic!("{:?}", types(&events))
    };
    assert!(
        end.reason.contains("production:deploy:orders-api stays applied: undoing it now would break: orders-api 2.3.0 works with orders-db 42..=43, but orders-db is at 44"),
        "{}",
        end.reason
    );
    assert!(
        end.reason
            .contains("production:migrate:orders-db@44 was not rolled back"),
        "{}",
        end.reason
    );
    worker.shutdown().await
}

#[tokio::test]
async fn a_point_of_no_return_waits_for_its_own_approval_where_the_environment_asks()
-> anyhow::Result<()> {
    let fake = Fake::start().await?;
    fake.status.store(200, Ordering::SeqCst);
    let dir = tempfile::tempdir()?;
    let production = r#"point_of_no_return = "approve"
approval = { approvers = ["group:release-managers"] }"#;
    let h = Harness::start(&catalog_with(dir.path(), &fake.url("/health"), production)).await?;
    seed(&h, &inventory()).await?;
    let api = Api::start(&h).await?;
    let worker = h.worker("w1");
    let id = h.submit(RELEASE, &inventory()).await?;
    let approval = "production:approve:orders-db@44";
    let state = h
        .drive_until(
            &id,
            std::time::Duration::from_millis(500),
            "the point of no return's approval is asked",
            |s| s.approvals.contains_key(approval),
        )
        .await?;
    let plan = state.plan.as_ref().expect("planned");
    assert_eq!(
        plan.point_of_no_return("production:migrate:orders-db@44")
            .and_then(|p| p.approval.as_deref()),
        Some(approval)
    );
    // The approver is told what the approval guards.
    let asked = h
        .events(&id)
        .await?
        .into_iter()
        .find_map(|e| match e.event {
            railyard_core::Event::ApprovalRequested(a) if a.step == approval => Some(a),
            _ => None,
        })
        .expect("the approval is requested");
    let reason = asked.reason.expect("the request carries the reason");
    assert!(
        reason.starts_with("production:migrate:orders-db@44 is a point of no return: "),
        "{reason}"
    );
    // orders-api is through; the migration waits for the approval.
    assert_eq!(
        state.steps.get("production:verify:orders-api"),
        Some(&railyard_core::release_state::StepStatus::Succeeded)
    );
    let lines = invocations(&dir.path().join("invocations.log"));
    assert!(!lines.iter().any(|l| l.starts_with("migrate")), "{lines:?}");

    let (status, answer) = api
        .command(
            "alice",
            &id,
            "approve",
            json!({"step": approval, "comment": "no way back, agreed"}),
        )
        .await?;
    assert_eq!(status, 202, "{answer}");
    h.wait_status(&id, Status::Completed).await?;
    let lines = invocations(&dir.path().join("invocations.log"));
    assert!(lines.iter().any(|l| l == "migrate orders-db"), "{lines:?}");
    worker.shutdown().await
}

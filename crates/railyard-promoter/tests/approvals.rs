//! Approvals over the HTTP routes and the CLI, against a real nats-server: production waits for
//! an approval; a non-approver, an operator without the approver role, the requester and a
//! change's author (through an alias) are refused with a 403 saying why; a listed approver
//! (through a group) approves and the release completes; a denial cancels the release.

mod common;

use common::*;
use railyard::operator_cli::{OperatorCommand, Target};
use railyard_core::release_state::ApprovalState;
use railyard_core::{Event, Status};
use serde_json::json;

fn approval_catalog() -> String {
    estate(
        r#"{ kind = "simulated" }"#,
        r#"approval = { required = true, approvers = ["carol", "github:dave", "group:release-managers"] }"#,
    )
}

async fn awaiting_approval(h: &Harness) -> anyhow::Result<railyard_core::ReleaseId> {
    let id = h.submit(RELEASE, &inventory()).await?;
    h.drive_until(
        &id,
        std::time::Duration::from_millis(500),
        "approval requested",
        |s| !s.approvals.is_empty(),
    )
    .await?;
    Ok(id)
}

#[tokio::test]
async fn only_a_listed_approver_who_neither_requested_nor_authored_may_approve()
-> anyhow::Result<()> {
    let h = Harness::start(&approval_catalog()).await?;
    h.seed(&inventory()).await?;
    let api = Api::start(&h).await?;
    let worker = h.worker("w1");
    let id = awaiting_approval(&h).await?;
    let state = h.state(&id).await?;
    assert_eq!(
        state.approvals["production:approve:rel-1"],
        ApprovalState::Requested {
            approvers: vec![
                "carol".into(),
                "github:dave".into(),
                "group:release-managers".into()
            ]
        }
    );
    // Staging ran; production waits.
    assert!(state.steps.iter().all(|(s, st)| !s.starts_with("staging:")
        || *st == railyard_core::release_state::StepStatus::Succeeded));

    // Each refusal names the rule that refused it in `error`, and says why in `detail`.
    let refused = [
        (
            "eve",
            "not an approver for production",
            "eve may not decide production:approve:rel-1: the approvers are carol, github:dave, group:release-managers",
        ),
        ("ops", "role missing", "ops does not have the approver role"),
        (
            "carol",
            "requester cannot approve",
            "carol requested release rel-1 and may not approve it",
        ),
        (
            "dave",
            "author cannot approve",
            "dave authored orders-api 2.0.0 in release rel-1 and may not approve it",
        ),
    ];
    for (who, error, detail) in refused {
        let (got, body) = api
            .command(who, &id, "approve", json!({"comment": "lgtm"}))
            .await?;
        assert_eq!(got, 403, "{who}: {body}");
        assert_eq!(body["error"], error, "{who}: {body}");
        assert!(
            body["detail"].as_str().unwrap().starts_with(detail),
            "{who}: {body}"
        );
    }
    // Nothing was appended by the refusals.
    assert!(!h.events(&id).await?.iter().any(|e| matches!(
        e.event,
        Event::ApprovalGranted(_) | Event::ApprovalDenied(_)
    )));

    // alice is in release-managers: she approves through the CLI.
    let answer = railyard::operator_cli::run(&OperatorCommand::Approve(Target {
        release: id.to_string(),
        step: None,
        env: Some("production".into()),
        comment: Some("checked the dashboards".into()),
        override_freeze: false,
        partial: false,
        url: api.url.clone(),
        token: api.tokens["alice"].clone(),
    }))
    .await?;
    assert_eq!(answer.outcome, "accepted");
    assert_eq!(answer.detail, "alice approved rel-1 for production");
    let state = h.wait_status(&id, Status::Completed).await?;
    assert_eq!(
        state.approvals["production:approve:rel-1"],
        ApprovalState::Granted {
            by: "alice".into(),
            comment: "checked the dashboards".into()
        }
    );
    // Deciding again is a conflict, and the CLI says why.
    let again = railyard::operator_cli::run(&OperatorCommand::Approve(Target {
        release: id.to_string(),
        step: None,
        env: None,
        comment: None,
        override_freeze: false,
        partial: false,
        url: api.url.clone(),
        token: api.tokens["bob"].clone(),
    }))
    .await
    .unwrap_err()
    .to_string();
    assert_eq!(
        again,
        "409: conflict: release rel-1 is completed: it has no approval to decide"
    );
    worker.shutdown().await
}

#[tokio::test]
async fn a_denial_ends_the_release_as_denied() -> anyhow::Result<()> {
    let h = Harness::start(&approval_catalog()).await?;
    h.seed(&inventory()).await?;
    let api = Api::start(&h).await?;
    let worker = h.worker("w1");
    let id = awaiting_approval(&h).await?;
    let (status, body) = api
        .command(
            "bob",
            &id,
            "deny",
            json!({"comment": "not during the sale"}),
        )
        .await?;
    assert_eq!(status, 202, "{body}");
    let state = h.state(&id).await?;
    assert_eq!(state.status, Status::Denied);
    assert_eq!(
        state.ended_because.as_deref(),
        Some("denied for production by bob: not during the sale")
    );
    let events = h.events(&id).await?;
    let denied = events
        .iter()
        .find(|e| matches!(e.event, Event::ApprovalDenied(_)))
        .unwrap();
    assert_eq!(denied.actor, "bob");
    assert!(
        !events.iter().any(
            |e| matches!(&e.event, Event::StepStarted(s) if s.step.starts_with("production:deploy"))
        ),
        "nothing deploys to production after a denial"
    );
    worker.shutdown().await
}

#[tokio::test]
async fn the_verified_author_of_a_pushed_commit_may_not_approve() -> anyhow::Result<()> {
    use railyard_core::event::{CommitsPushed, Origin, PushedCommit};
    use railyard_core::{AggregateId, Envelope};

    let h = Harness::start(&approval_catalog()).await?;
    h.seed(&inventory()).await?;
    // A signed GitHub push brought the commit billing-worker 1.5.0 is built from; bob wrote
    // the commit before it in that push. The release declares no author for it.
    let signal = AggregateId::Signal("billing-worker".parse()?);
    let push = Event::CommitsPushed(CommitsPushed {
        branch: "main".into(),
        before: "0000000".into(),
        after: "c0ffee1234567890".into(),
        commits: vec![
            PushedCommit {
                id: "bad5eed0987654321".into(),
                author: Some("bob".into()),
                message: "fix rounding".into(),
                timestamp: None,
            },
            PushedCommit {
                id: "c0ffee1234567890".into(),
                author: Some("erin".into()),
                message: "release 1.5.0".into(),
                timestamp: None,
            },
            PushedCommit {
                id: "feed000111222".into(),
                author: Some("alice".into()),
                message: "after the release's commit".into(),
                timestamp: None,
            },
        ],
        origin: Origin {
            door: "github".into(),
            id: "delivery-1".into(),
            source: "https://github.com/acme/billing".into(),
        },
    });
    // A CDEvents change.merged for the same commit names two authors of it (intake records
    // one entry per author): the second, ivan, is as much an author as the first.
    let merged = Event::CommitsPushed(CommitsPushed {
        branch: "main".into(),
        before: String::new(),
        after: "c0ffee1234567890".into(),
        commits: ["heidi", "ivan"]
            .map(|author| PushedCommit {
                id: "c0ffee1234567890".into(),
                author: Some(author.into()),
                message: "change I8f3c2a".into(),
                timestamp: None,
            })
            .into(),
        origin: Origin {
            door: "cdevents".into(),
            id: "cm-1".into(),
            source: "/gerrit".into(),
        },
    });
    let envelopes = [push, merged]
        .map(|event| Envelope::new(signal.clone(), "intake", chrono::Utc::now(), event));
    h.bus
        .append(&signal, railyard_bus::Expected::Any, &envelopes)
        .await?;
    let release = RELEASE.replace(
        "service = \"billing-worker\"\nversion = \"1.5.0\"",
        "service = \"billing-worker\"\nversion = \"1.5.0\"\ncommit = \"c0ffee1\"",
    );
    assert_ne!(release, RELEASE);
    let id = h.submit(&release, &inventory()).await?;
    let api = Api::start(&h).await?;
    let worker = h.worker("w1");
    h.drive_until(
        &id,
        std::time::Duration::from_millis(500),
        "approval requested",
        |s| !s.approvals.is_empty(),
    )
    .await?;

    let (status, body) = api
        .command("bob", &id, "approve", json!({"comment": "lgtm"}))
        .await?;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"], "author cannot approve", "{body}");
    assert_eq!(
        body["detail"],
        "bob authored commit bad5eed09876 of billing-worker 1.5.0 (github reported it reaching main of https://github.com/acme/billing) in release rel-1 and may not approve it: another approver must"
    );
    let (status, body) = api
        .command("ivan", &id, "approve", json!({"comment": "lgtm"}))
        .await?;
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        body["detail"],
        "ivan authored commit c0ffee123456 of billing-worker 1.5.0 (cdevents reported it reaching main of /gerrit) in release rel-1 and may not approve it: another approver must"
    );
    // alice's commit came after the release's: she may approve.
    let (status, body) = api
        .command("alice", &id, "approve", json!({"comment": "checked"}))
        .await?;
    assert_eq!(status, 202, "{body}");
    h.wait_status(&id, Status::Completed).await?;
    worker.shutdown().await
}

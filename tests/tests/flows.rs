//! Full-flow scenarios: intake, the planner, two promotion workers, audit and the operator
//! routes over one real nats-server, driven only through HTTP (release submission, GitHub
//! webhooks and CDEvents, approve/retry, audit queries and SSE). Each proves one story end to
//! end: the happy path, an automatic rollback, hold and retry, who may approve, a refusal with
//! its remedy, duplicate CI deliveries stored once, and a NATS restart in the middle of a
//! release after which the release completes and the audit holds every event exactly once.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use railyard_core::release_state::StepStatus;
use railyard_core::{Event, Status};
use railyard_scenarios::{
    Options, RELEASE_TIMEOUT, Stack, artifact_cdevent, billing_release, count, safe_release, types,
    unsafe_release,
};
use serde_json::{Value, json};

/// Event ids of audit items.
fn item_ids(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|i| i["event_id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn assert_unique(ids: &[String], what: &str) {
    let set: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(set.len(), ids.len(), "{what} holds an event twice: {ids:?}");
}

#[tokio::test]
async fn happy_path_is_planned_approved_completed_and_audited_once() -> anyhow::Result<()> {
    let stack = Stack::start(Options::default()).await?;
    let id = stack.submit(&safe_release("rel-happy")).await?;
    stack.approve_when_asked(&id).await?;
    let state = stack.wait_end(&id, RELEASE_TIMEOUT).await?;
    assert_eq!(state.status, Status::Completed);

    let events = stack.events(&id).await?;
    let kinds = types(&events);
    assert_eq!(kinds[0], "release.requested");
    assert_eq!(kinds[1], "release.planned");
    assert_eq!(*kinds.last().unwrap(), "release.completed");
    for kind in ["approval.requested", "approval.granted"] {
        assert_eq!(count(&events, kind), 1, "{kind}: {kinds:?}");
    }
    // The consumer that must read v3 goes before the producer, in both environments.
    let started: Vec<String> = events
        .iter()
        .filter_map(|e| match &e.event {
            Event::StepStarted(s) => Some(s.step.to_string()),
            _ => None,
        })
        .collect();
    let at = |step: &str| started.iter().position(|s| s == step).unwrap();
    for env in ["staging", "production"] {
        assert!(
            at(&format!("{env}:verify:billing-worker")) < at(&format!("{env}:deploy:orders-api"))
        );
    }
    assert!(at("staging:verify:orders-api") < at("production:deploy:billing-worker"));

    // Audit: status, the timeline (every event once, same ids as the stream), SSE, verify.
    let status = stack.wait_audit(&id).await?;
    assert_eq!(status["status"], "completed", "{status}");
    let timeline = stack.timeline(&id).await?;
    let audit_ids = item_ids(&timeline);
    assert_unique(&audit_ids, "the timeline");
    let stream_ids: Vec<String> = events.iter().map(|e| e.event_id.to_string()).collect();
    assert_eq!(
        audit_ids, stream_ids,
        "the timeline is the stream, in order"
    );
    let sse = stack
        .sse_until(&id, "release.completed", Duration::from_secs(10))
        .await?;
    // SSE carries the release's records, including the inventory events it caused.
    let all = stack
        .audit_pages("timeline", &format!("release={id}"))
        .await?;
    let numbers: Vec<u64> = all.iter().map(|i| i["n"].as_u64().unwrap()).collect();
    assert_eq!(
        sse.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        numbers,
        "{sse:?}"
    );
    let kinds_sse: Vec<&str> = sse
        .iter()
        .map(|(_, k)| k.as_str())
        .filter(|k| *k != "service.deployed")
        .collect();
    assert_eq!(kinds_sse, kinds);
    let (code, verify) = stack
        .post_json("/v1/audit/verify", &stack.tokens.auditor, &json!({}))
        .await?;
    assert_eq!((code, &verify["ok"]), (200, &json!(true)), "{verify}");
    stack.stop().await
}

#[tokio::test]
async fn a_failing_production_gate_rolls_production_back() -> anyhow::Result<()> {
    let stack = Stack::start(Options::default()).await?;
    stack
        .health
        .set_failing("billing-worker", "production", true);
    let id = stack.submit(&billing_release("rel-rollback")).await?;
    stack.approve_when_asked(&id).await?;
    let state = stack.wait_end(&id, RELEASE_TIMEOUT).await?;
    assert_eq!(
        state.status,
        Status::RolledBack,
        "{:?}",
        state.ended_because
    );

    let events = stack.events(&id).await?;
    let gate = events
        .iter()
        .find_map(|e| match &e.event {
            Event::GateEvaluated(g) if !g.passed => Some(g.clone()),
            _ => None,
        })
        .expect("the failed gate is recorded");
    assert_eq!(gate.step.to_string(), "production:verify:billing-worker");
    let end = events
        .iter()
        .find_map(|e| match &e.event {
            Event::ReleaseRolledBack(r) => Some(r.clone()),
            _ => None,
        })
        .expect("release.rolled_back");
    let undone: Vec<String> = end.undone.iter().map(ToString::to_string).collect();
    // The failed step first, then the deploy, then the rest of production (its approval).
    assert_eq!(
        undone,
        [
            "production:verify:billing-worker",
            "production:deploy:billing-worker",
            "production:approve:rel-rollback"
        ],
        "{}",
        end.reason
    );
    assert!(
        end.reason.contains("production:verify:billing-worker"),
        "{}",
        end.reason
    );
    // Staging stays as it is.
    assert!(!events.iter().any(|e| matches!(&e.event,
            Event::StepRolledBack(s) if s.step.to_string().starts_with("staging:"))));
    let status = stack.wait_audit(&id).await?;
    assert_eq!(status["status"], "rolled_back", "{status}");
    let gates = stack.audit("gates", &format!("release={id}")).await?;
    assert!(
        gates["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["passed"] == json!(false)),
        "{gates}"
    );
    stack.stop().await
}

#[tokio::test]
async fn a_held_release_is_retried_after_the_fix_and_completes() -> anyhow::Result<()> {
    let stack = Stack::start(Options {
        on_failure: "hold",
        ..Options::default()
    })
    .await?;
    stack
        .health
        .set_failing("billing-worker", "production", true);
    let id = stack.submit(&billing_release("rel-hold")).await?;
    stack.approve_when_asked(&id).await?;
    let held = stack
        .wait_release(&id, "held", RELEASE_TIMEOUT, |s| s.status == Status::Held)
        .await?;
    let hold = held.hold.clone().expect("a hold");
    assert_eq!(
        hold.step.as_deref(),
        Some("production:verify:billing-worker")
    );
    assert_eq!(hold.owner.as_deref(), Some("team-payments"));

    // resume refuses while a step has failed; the fix, then retry, completes it.
    let (status, body) = stack
        .command(&stack.tokens.operator, &id, "resume", json!({}))
        .await?;
    assert_eq!(status, 409, "{body}");
    stack
        .health
        .set_failing("billing-worker", "production", false);
    let (status, body) = stack
        .command(
            &stack.tokens.operator,
            &id,
            "retry",
            json!({"step": "production:verify:billing-worker", "comment": "health fixed"}),
        )
        .await?;
    assert_eq!(status, 202, "{body}");
    let state = stack.wait_end(&id, RELEASE_TIMEOUT).await?;
    assert_eq!(state.status, Status::Completed);
    let events = stack.events(&id).await?;
    assert_eq!(count(&events, "release.held"), 1);
    assert_eq!(count(&events, "release.resumed"), 1);
    let verify_starts = events
        .iter()
        .filter(|e| matches!(&e.event, Event::StepStarted(s) if s.step == "production:verify:billing-worker"))
        .count();
    assert_eq!(verify_starts, 2, "{:?}", types(&events));
    let status = stack.wait_audit(&id).await?;
    assert_eq!(status["status"], "completed", "{status}");
    stack.stop().await
}

#[tokio::test]
async fn the_requester_may_not_approve_and_alice_may() -> anyhow::Result<()> {
    let stack = Stack::start(Options::default()).await?;
    // bob is a release manager and a publisher: he submits, so he may not approve.
    let id = stack
        .submit_as(&stack.tokens.bob, &safe_release("rel-approval"))
        .await?;
    let state = stack
        .wait_release(&id, "approval requested", RELEASE_TIMEOUT, |s| {
            !s.approvals.is_empty()
        })
        .await?;
    assert_eq!(state.requested_by, "bob");
    let (status, body) = stack
        .command(
            &stack.tokens.bob,
            &id,
            "approve",
            json!({"env": "production"}),
        )
        .await?;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("bob requested release rel-approval and may not approve it"),
        "{body}"
    );
    let (status, body) = stack
        .command(
            &stack.tokens.publisher,
            &id,
            "approve",
            json!({"env": "production"}),
        )
        .await?;
    assert_eq!(status, 403, "the publisher is no approver: {body}");
    assert!(
        !stack
            .events(&id)
            .await?
            .iter()
            .any(|e| matches!(e.event, Event::ApprovalGranted(_))),
        "a refused approval appends nothing"
    );
    stack.approve(&id).await?;
    let state = stack.wait_end(&id, RELEASE_TIMEOUT).await?;
    assert_eq!(state.status, Status::Completed);
    stack.wait_audit(&id).await?;
    let approvals = stack.audit("approvals", &format!("release={id}")).await?;
    let text = approvals.to_string();
    assert!(text.contains("alice"), "{approvals}");
    stack.stop().await
}

#[tokio::test]
async fn an_unsafe_release_is_refused_with_reason_and_remedy() -> anyhow::Result<()> {
    let stack = Stack::start(Options::default()).await?;
    let id = stack.submit(&unsafe_release("rel-unsafe")).await?;
    let state = stack.wait_end(&id, RELEASE_TIMEOUT).await?;
    assert_eq!(state.status, Status::Rejected);
    let events = stack.events(&id).await?;
    assert_eq!(types(&events), ["release.requested", "release.rejected"]);
    let Event::ReleaseRejected(rejected) = &events[1].event else {
        unreachable!()
    };
    let queue = rejected
        .reasons
        .iter()
        .find(|r| r.rule == "queue")
        .unwrap_or_else(|| panic!("a queue refusal: {:?}", rejected.reasons));
    assert!(
        queue.reason.contains("billing-worker 1.4.0")
            && queue.reason.contains("orders-events")
            && queue.reason.contains("orders-api 2.4.0"),
        "{}",
        queue.reason
    );
    assert!(
        queue.remedy.contains("billing-worker") && queue.remedy.contains("2..=3"),
        "{}",
        queue.remedy
    );
    // No step ever started; the audit shows the refusal.
    assert_eq!(count(&events, "step.started"), 0);
    let status = stack.wait_audit(&id).await?;
    assert_eq!(status["status"], "rejected", "{status}");
    assert!(
        status["refusals"].to_string().contains("remedy"),
        "{status}"
    );
    stack.stop().await
}

#[tokio::test]
async fn a_redelivered_webhook_or_cdevent_is_answered_duplicate_and_stored_once()
-> anyhow::Result<()> {
    let stack = Stack::start(Options::default()).await?;
    let body = serde_json::to_vec(&json!({
        "action": "completed",
        "workflow_run": { "name": "unit", "head_sha": "abcdef1234567890", "head_branch": "main", "conclusion": "success" },
        "repository": { "html_url": "https://github.com/acme/orders-api" }
    }))?;
    let (status, first) = stack.github("workflow_run", "gh-delivery-1", &body).await?;
    assert_eq!(
        (status, first["outcome"].as_str()),
        (202, Some("accepted")),
        "{first}"
    );
    let (status, second) = stack.github("workflow_run", "gh-delivery-1", &body).await?;
    assert_eq!(
        (status, second["outcome"].as_str()),
        (202, Some("duplicate")),
        "{second}"
    );

    let event = artifact_cdevent("cd-1", "billing-worker", "1.5.0");
    let (status, first) = stack.cdevent(&event).await?;
    assert_eq!(
        (status, first["outcome"].as_str()),
        (202, Some("accepted")),
        "{first}"
    );
    let (status, second) = stack.cdevent(&event).await?;
    assert_eq!(
        (status, second["outcome"].as_str()),
        (202, Some("duplicate")),
        "{second}"
    );

    // 202 means appended: what is in the stream now is final for these deliveries.
    let events = stack.stream_events().await?;
    assert_eq!(
        count(&events, "change.suite_finished"),
        1,
        "{:?}",
        types(&events)
    );
    assert_eq!(
        count(&events, "change.artifact_published"),
        1,
        "{:?}",
        types(&events)
    );
    // The artifact (no suites required) completed one release request, once.
    assert_eq!(
        count(&events, "release.requested"),
        1,
        "{:?}",
        types(&events)
    );

    // And the audit record holds each once.
    for kind in ["change.suite_finished", "change.artifact_published"] {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let items = stack.audit_pages("events", &format!("type={kind}")).await?;
            if !items.is_empty() {
                assert_eq!(items.len(), 1, "{kind}: {items:?}");
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{kind} never reached the audit"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    stack.stop().await
}

#[tokio::test]
async fn nats_restarted_mid_release_the_release_completes_and_audit_holds_each_event_once()
-> anyhow::Result<()> {
    let mut stack = Stack::start(Options {
        deploy_duration: "1s",
        ..Options::default()
    })
    .await?;
    let id = stack.submit(&safe_release("rel-restart")).await?;
    // Restart while staging's first deploy runs.
    stack
        .wait_release(&id, "a step to start", RELEASE_TIMEOUT, |s| {
            s.steps
                .values()
                .any(|st| matches!(st, StepStatus::Running { .. }))
        })
        .await?;
    stack.nats.restart().await?;
    stack.approve_when_asked(&id).await?;
    let state = stack.wait_end(&id, Duration::from_secs(45)).await?;
    assert_eq!(state.status, Status::Completed, "{:?}", state.ended_because);

    // The release's events: each step started, succeeded once.
    let events = stack.events(&id).await?;
    let mut started: BTreeMap<String, usize> = BTreeMap::new();
    for e in &events {
        if let Event::StepStarted(s) = &e.event {
            *started.entry(s.step.to_string()).or_default() += 1;
        }
    }
    assert_eq!(count(&events, "release.completed"), 1);

    // Audit: same events as the stream, each exactly once, and the chain verifies.
    let status = stack.wait_audit(&id).await?;
    assert_eq!(status["status"], "completed", "{status}");
    let stream = stack.stream_events().await?;
    let stream_ids: Vec<String> = stream.iter().map(|e| e.event_id.to_string()).collect();
    assert_unique(&stream_ids, "the stream");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let audit_ids = loop {
        let ids = item_ids(&stack.audit_pages("events", "").await?);
        if ids.len() >= stream_ids.len() || tokio::time::Instant::now() > deadline {
            break ids;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_unique(&audit_ids, "the audit record");
    assert_eq!(
        audit_ids.iter().collect::<BTreeSet<_>>(),
        stream_ids.iter().collect::<BTreeSet<_>>(),
        "audit and stream hold the same events (steps started: {started:?})"
    );
    let timeline = item_ids(&stack.timeline(&id).await?);
    let release_ids: Vec<String> = events.iter().map(|e| e.event_id.to_string()).collect();
    assert_eq!(timeline, release_ids);
    let (code, verify) = stack
        .post_json("/v1/audit/verify", &stack.tokens.auditor, &json!({}))
        .await?;
    assert_eq!((code, &verify["ok"]), (200, &json!(true)), "{verify}");
    stack.stop().await
}

//! Full-flow scenarios: intake, the planner, two promotion workers, audit, the operator routes
//! and the Slack notifier over one real nats-server, driven only through public interfaces —
//! release submission, GitHub webhooks and CDEvents over HTTP, the `railyard` CLI for every
//! operator and approver action and for `release status|watch`, the audit queries and SSE —
//! and checked against what a stand-in Slack was told. Each proves one story end to end: the
//! happy path, an automatic rollback, a hold by a failed gate and a retry, an operator's hold
//! and resume, who may approve, a deny, a cancel and an operator's rollback, a refusal with its
//! remedy, duplicate CI deliveries stored and announced once, and a NATS restart in the middle
//! of a release after which the release completes, the audit holds every event exactly once
//! and Slack got every message once.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use railyard_core::release_state::{ApprovalState, StepStatus};
use railyard_core::{Event, ReleaseId, Status};
use railyard_scenarios::{
    Options, RELEASE_TIMEOUT, SlackThread, Stack, artifact_cdevent, billing_release, count,
    safe_release, types, unsafe_release,
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

/// Asserts that `thread` has a reply starting with `prefix`; returns it.
fn reply<'a>(thread: &'a SlackThread, prefix: &str) -> &'a str {
    thread.reply(prefix).unwrap_or_else(|| {
        panic!(
            "no reply {prefix:?} in {}: {:#?}",
            thread.channel, thread.replies
        )
    })
}

/// Asserts the root message of `thread` reads `outcome` (`Completed`, `Rolled back`, ...) now.
fn assert_root(thread: &SlackThread, id: &ReleaseId, outcome: &str) {
    assert!(
        thread
            .root_text
            .starts_with(&format!("Release {id}: {outcome}")),
        "the root in {} reads {:?}",
        thread.channel,
        thread.root_text
    );
}

/// A one-service release of billing-worker at `version` (reading orders-events 1..=2).
fn billing_at(id: &str, version: &str) -> String {
    billing_release(id).replace("1.5.0", version)
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
    // Each SSE id is the stream sequence through which a client then holds every event: the
    // record's own, or the one before it while more of its append follows (INTERFACES: a
    // reconnect with Last-Event-ID misses nothing).
    let sequences: Vec<u64> = all
        .iter()
        .map(|i| i["sequence"].as_u64().unwrap())
        .collect();
    let expected: Vec<u64> = sequences
        .iter()
        .enumerate()
        .map(|(i, sequence)| match sequences.get(i + 1) {
            Some(next) if next == sequence => sequence - 1,
            _ => *sequence,
        })
        .collect();
    assert_eq!(
        sse.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        expected,
        "{sse:?}"
    );
    let kinds_sse: Vec<&str> = sse
        .iter()
        .map(|(_, k)| k.as_str())
        .filter(|k| *k != "service.deployed")
        .collect();
    assert_eq!(kinds_sse, kinds);
    // Those inventory events (on `inventory.<env>`) are the release's timeline, not anomalies
    // of its fold: a clean release reports none.
    assert!(
        sse.iter().any(|(_, kind)| kind == "service.deployed"),
        "{sse:?}"
    );
    assert_eq!(status["anomalies"], json!([]), "{status}");
    let (code, verify) = stack
        .post_json("/v1/audit/verify", &stack.tokens.auditor, &json!({}))
        .await?;
    assert_eq!((code, &verify["ok"]), (200, &json!(true)), "{verify}");

    // Slack: one thread in each channel that follows the release. #releases hears the
    // milestones (approval asked and given, the end), #payments-releases (billing-worker's
    // channel, verbosity `all`) also every step.
    let slack = stack
        .slack_release(&id, &["#releases", "#payments-releases"])
        .await?;
    for thread in slack.values() {
        assert_root(thread, &id, "Completed");
        assert!(
            thread.updates > 1,
            "the root's status line follows the release"
        );
        reply(thread, "rel-happy: approval needed for production");
        reply(thread, "rel-happy: approved by alice for production");
        reply(thread, "rel-happy: completed");
        assert_eq!(
            thread.replies.last().map(String::as_str),
            Some("rel-happy: completed"),
            "the outcome is the last word: {:#?}",
            thread.replies
        );
    }
    let payments = &slack["#payments-releases"];
    for step in [
        "staging:deploy:billing-worker",
        "staging:verify:orders-api",
        "production:deploy:orders-api",
    ] {
        reply(payments, &format!("rel-happy: Started {step}"));
        reply(payments, &format!("rel-happy: Succeeded {step}"));
    }
    assert!(
        slack["#releases"].reply("rel-happy: Started").is_none(),
        "#releases hears milestones, not steps: {:#?}",
        slack["#releases"].replies
    );
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
    // Slack: the failed gate, then the rollback with why, in the one thread per channel.
    let slack = stack
        .slack_release(&id, &["#releases", "#payments-releases"])
        .await?;
    for thread in slack.values() {
        assert_root(thread, &id, "Rolled back");
        let gate = reply(thread, "rel-rollback: gate");
        assert!(
            gate.contains("failed on production:verify:billing-worker"),
            "{gate}"
        );
        let end = reply(thread, "rel-rollback: rolled back:");
        assert!(end.contains("production:verify:billing-worker"), "{end}");
        assert!(thread.reply("rel-rollback: completed").is_none());
    }
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

    // `railyard release status` tells who must act and why.
    let text = stack.status_text(&id).await?;
    assert!(text.starts_with("release rel-hold: held"), "{text}");
    assert!(text.contains("owner to act: team-payments"), "{text}");
    assert!(
        text.contains("FAIL production:verify:billing-worker"),
        "{text}"
    );

    // `railyard resume` refuses while a step has failed and says what to do; the fix, then
    // `railyard retry`, completes it.
    let resume = stack
        .cli(&stack.tokens.operator, &["resume", "rel-hold"])
        .await?;
    assert_eq!(resume.code, 1, "{resume:?}");
    assert!(
        resume.stderr.starts_with("error: 409")
            && resume
                .stderr
                .contains("`railyard retry rel-hold` runs it again"),
        "{}",
        resume.stderr
    );
    stack
        .health
        .set_failing("billing-worker", "production", false);
    let out = stack
        .cli_ok(
            &stack.tokens.operator,
            &[
                "retry",
                "rel-hold",
                "--step",
                "production:verify:billing-worker",
                "--comment",
                "health fixed",
            ],
        )
        .await?;
    assert!(
        out.contains("production:verify:billing-worker will run again"),
        "{out}"
    );
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
    // Slack: held (with why, the owner and the commands), the retry, the end.
    let slack = stack
        .slack_release(&id, &["#releases", "#payments-releases"])
        .await?;
    for thread in slack.values() {
        assert_root(thread, &id, "Completed");
        reply(thread, "rel-hold: held at production:verify:billing-worker");
        assert!(
            thread.shown().contains("team-payments"),
            "the owner to act is named"
        );
        reply(thread, "rel-hold: resumed by ops");
        reply(thread, "rel-hold: completed");
        assert!(
            thread
                .shown()
                .contains("railyard retry rel-hold --step production:verify:billing-worker"),
            "the held message names the command: {:#?}",
            thread.reply_blocks
        );
    }
    reply(
        &slack["#payments-releases"],
        "rel-hold: Started production:verify:billing-worker (attempt 2)",
    );
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
    // `railyard approve` as bob: refused, with why.
    let approve = ["approve", "rel-approval", "--env", "production"];
    let refused = stack.cli(&stack.tokens.bob, &approve).await?;
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(
        refused.stderr.starts_with("error: 403")
            && refused
                .stderr
                .contains("bob requested release rel-approval and may not approve it"),
        "{}",
        refused.stderr
    );
    // As the CI publisher: no approver role.
    let refused = stack.cli(&stack.tokens.publisher, &approve).await?;
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(
        refused.stderr.starts_with("error: 403"),
        "the publisher is no approver: {}",
        refused.stderr
    );
    assert!(
        !stack
            .events(&id)
            .await?
            .iter()
            .any(|e| matches!(e.event, Event::ApprovalGranted(_))),
        "a refused approval appends nothing"
    );
    // `railyard release status` shows who may approve.
    let text = stack.status_text(&id).await?;
    assert!(
        text.contains("production:approve:rel-approval requested from group:release-managers"),
        "{text}"
    );
    let out = stack.cli_ok(&stack.tokens.alice, &approve).await?;
    assert!(
        out.contains("alice approved rel-approval for production"),
        "{out}"
    );
    let state = stack.wait_end(&id, RELEASE_TIMEOUT).await?;
    assert_eq!(state.status, Status::Completed);
    stack.wait_audit(&id).await?;
    let approvals = stack.audit("approvals", &format!("release={id}")).await?;
    let text = approvals.to_string();
    assert!(text.contains("alice"), "{approvals}");
    // Slack asked the approvers and told who approved; bob's refused attempt is not news.
    let slack = stack
        .slack_release(&id, &["#releases", "#payments-releases"])
        .await?;
    for thread in slack.values() {
        reply(thread, "rel-approval: approval needed for production");
        assert!(
            thread.shown().contains("railyard approve rel-approval"),
            "the request says how to approve"
        );
        reply(thread, "rel-approval: approved by alice for production");
        assert!(thread.reply("rel-approval: approved by bob").is_none());
        assert_root(thread, &id, "Completed");
    }
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
    // `railyard release status` gives the reason and the remedy.
    let text = stack.status_text(&id).await?;
    assert!(text.starts_with("release rel-unsafe: rejected"), "{text}");
    assert!(
        text.contains("refused (queue):") && text.contains(queue.remedy.as_str()),
        "{text}"
    );
    // Slack: orders-api has no channel of its own, so #releases alone hears the refusal.
    let slack = stack.slack_release(&id, &["#releases"]).await?;
    let thread = &slack["#releases"];
    assert_root(thread, &id, "Refused by the planner");
    reply(thread, "rel-unsafe: refused by the planner");
    assert!(
        thread.shown().contains("billing-worker") && thread.shown().contains("2..=3"),
        "the refusal and its remedy are in the thread: {}",
        thread.shown()
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

    // Slack: the one release the artifact asked for has one thread per channel, announced
    // once; it waits for production's approval. No other release was announced.
    let id: ReleaseId = events
        .iter()
        .find_map(|e| match &e.event {
            Event::ReleaseRequested(r) => Some(r.release.clone()),
            _ => None,
        })
        .expect("release.requested");
    stack
        .wait_release(&id, "the approval request", RELEASE_TIMEOUT, |s| {
            !s.approvals.is_empty()
        })
        .await?;
    let slack = stack
        .slack_release(&id, &["#releases", "#payments-releases"])
        .await?;
    for thread in slack.values() {
        assert_eq!(
            thread
                .replies
                .iter()
                .filter(|r| r.starts_with(&format!("{id}: planned")))
                .count(),
            1,
            "{:#?}",
            thread.replies
        );
        reply(thread, &format!("{id}: approval needed for production"));
    }
    let announced: Vec<String> = stack.slack.threads()?.into_keys().collect();
    assert_eq!(announced, [id.to_string()]);
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

    // Slack: one thread per channel, each step announced once (no reply repeats), and the
    // outcome.
    let slack = stack
        .slack_release(&id, &["#releases", "#payments-releases"])
        .await?;
    for thread in slack.values() {
        assert_root(thread, &id, "Completed");
        reply(thread, "rel-restart: completed");
    }
    let payments = &slack["#payments-releases"];
    for step in started.keys() {
        let started = format!("rel-restart: Started {step}");
        assert_eq!(
            payments
                .replies
                .iter()
                .filter(|r| r.starts_with(&started))
                .count(),
            1,
            "{started}: {:#?}",
            payments.replies
        );
    }
    stack.stop().await
}

#[tokio::test]
async fn an_operator_holds_a_release_and_resumes_it_with_the_cli() -> anyhow::Result<()> {
    let stack = Stack::start(Options::default()).await?;
    // Submitted with `railyard release submit` by the CI publisher.
    let file = stack.release_file("release.toml", &safe_release("rel-pause"))?;
    let out = stack
        .cli_ok(&stack.tokens.publisher, &["release", "submit", &file])
        .await?;
    assert!(out.contains("accepted"), "{out}");
    let id: ReleaseId = "rel-pause".parse()?;
    stack
        .wait_release(&id, "production's approval request", RELEASE_TIMEOUT, |s| {
            !s.approvals.is_empty()
        })
        .await?;

    // Only an operator may hold.
    let refused = stack
        .cli(&stack.tokens.alice, &["hold", "rel-pause"])
        .await?;
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(
        refused.stderr.starts_with("error: 403"),
        "{}",
        refused.stderr
    );
    let out = stack
        .cli_ok(
            &stack.tokens.operator,
            &["hold", "rel-pause", "--comment", "incident in checkout"],
        )
        .await?;
    assert!(out.contains("release rel-pause is held"), "{out}");
    let text = stack.status_text(&id).await?;
    assert!(
        text.starts_with("release rel-pause: held (requested by ci:github-actions)"),
        "{text}"
    );
    assert!(
        text.contains("held: held by ops: incident in checkout"),
        "{text}"
    );
    // Nothing failed, so the hold suggests resuming, not retrying.
    assert!(text.contains("`railyard resume rel-pause`"), "{text}");
    assert!(!text.contains("railyard retry"), "{text}");

    // The approval is taken while held, but no production step starts until resumed.
    stack.approve(&id).await?;
    let held = stack
        .wait_release(&id, "the approval, still held", RELEASE_TIMEOUT, |s| {
            s.approvals
                .values()
                .any(|a| matches!(a, ApprovalState::Granted { .. }))
        })
        .await?;
    assert_eq!(held.status, Status::Held);
    let text = stack.status_text(&id).await?;
    assert!(text.starts_with("release rel-pause: held"), "{text}");
    assert!(
        text.contains("pending     production:deploy:billing-worker"),
        "{text}"
    );
    let out = stack
        .cli_ok(
            &stack.tokens.operator,
            &["resume", "rel-pause", "--comment", "incident over"],
        )
        .await?;
    assert!(out.contains("release rel-pause resumed"), "{out}");
    // `railyard release watch` follows it over SSE to the end and exits 0: completed.
    let watch = stack.watch(&id, RELEASE_TIMEOUT).await?;
    assert_eq!(watch.code, 0, "{watch:?}");
    assert!(
        watch.stdout.contains("release.held") && watch.stdout.contains("release.completed"),
        "{}",
        watch.stdout
    );

    let events = stack.events(&id).await?;
    let kinds = types(&events);
    assert_eq!(count(&events, "release.held"), 1, "{kinds:?}");
    assert_eq!(count(&events, "release.resumed"), 1, "{kinds:?}");
    let held_at = kinds.iter().position(|k| *k == "release.held").unwrap();
    let resumed_at = kinds.iter().position(|k| *k == "release.resumed").unwrap();
    assert!(
        !kinds[held_at..resumed_at].contains(&"step.started"),
        "no step starts while held: {kinds:?}"
    );
    assert!(
        kinds[held_at..resumed_at].contains(&"approval.granted"),
        "{kinds:?}"
    );
    assert_eq!(*kinds.last().unwrap(), "release.completed");
    let status = stack.wait_audit(&id).await?;
    assert_eq!(status["status"], "completed", "{status}");

    let slack = stack
        .slack_release(&id, &["#releases", "#payments-releases"])
        .await?;
    for thread in slack.values() {
        let held = reply(thread, "rel-pause: held:");
        assert!(held.contains("incident in checkout"), "{held}");
        reply(thread, "rel-pause: resumed by ops");
        reply(thread, "rel-pause: completed");
        assert_root(thread, &id, "Completed");
    }
    stack.stop().await
}

#[tokio::test]
async fn a_deny_a_cancel_and_an_operators_rollback_end_releases_as_told() -> anyhow::Result<()> {
    let stack = Stack::start(Options::default()).await?;
    let channels = ["#releases", "#payments-releases"];

    // An approver denies production: the release is cancelled; staging keeps what it got.
    let id = stack.submit(&billing_at("rel-deny", "1.5.0")).await?;
    stack
        .wait_release(&id, "the approval request", RELEASE_TIMEOUT, |s| {
            !s.approvals.is_empty()
        })
        .await?;
    stack
        .cli_ok(
            &stack.tokens.alice,
            &[
                "deny",
                "rel-deny",
                "--env",
                "production",
                "--comment",
                "not during the sale",
            ],
        )
        .await?;
    let state = stack.wait_end(&id, RELEASE_TIMEOUT).await?;
    assert_eq!(state.status, Status::Denied);
    let text = stack.status_text(&id).await?;
    assert!(text.starts_with("release rel-deny: denied"), "{text}");
    assert!(text.contains("not during the sale"), "{text}");
    let slack = stack.slack_release(&id, &channels).await?;
    for thread in slack.values() {
        let denied = reply(thread, "rel-deny: denied by alice for production");
        assert!(!denied.is_empty());
        assert!(thread.shown().contains("not during the sale"));
        assert_root(thread, &id, "Cancelled");
    }

    // An operator rolls staging back while production waits for its approval.
    let id = stack.submit(&billing_at("rel-undo", "1.6.0")).await?;
    stack
        .wait_release(&id, "the approval request", RELEASE_TIMEOUT, |s| {
            !s.approvals.is_empty()
        })
        .await?;
    let out = stack
        .cli_ok(
            &stack.tokens.operator,
            &[
                "rollback",
                "rel-undo",
                "--env",
                "staging",
                "--comment",
                "error rate up in staging",
            ],
        )
        .await?;
    assert!(out.contains("rollback of rel-undo in staging"), "{out}");
    let state = stack.wait_end(&id, RELEASE_TIMEOUT).await?;
    assert_eq!(
        state.status,
        Status::RolledBack,
        "{:?}",
        state.ended_because
    );
    assert_eq!(
        state.steps.get("staging:deploy:billing-worker"),
        Some(&StepStatus::RolledBack),
        "{:?}",
        state.steps
    );
    let slack = stack.slack_release(&id, &channels).await?;
    for thread in slack.values() {
        let end = reply(thread, "rel-undo: rolled back:");
        assert!(end.contains("error rate up in staging"), "{end}");
        assert_root(thread, &id, "Rolled back");
    }

    // An operator cancels a release waiting for its approval; a cancelled release takes
    // no more commands.
    let id = stack.submit(&billing_at("rel-cancel", "1.7.0")).await?;
    stack
        .wait_release(&id, "the approval request", RELEASE_TIMEOUT, |s| {
            !s.approvals.is_empty()
        })
        .await?;
    stack
        .cli_ok(
            &stack.tokens.operator,
            &["cancel", "rel-cancel", "--comment", "superseded by 1.8.0"],
        )
        .await?;
    let state = stack.wait_end(&id, RELEASE_TIMEOUT).await?;
    assert_eq!(state.status, Status::Cancelled);
    let late = stack
        .cli(
            &stack.tokens.alice,
            &["approve", "rel-cancel", "--env", "production"],
        )
        .await?;
    assert_eq!(late.code, 1, "{late:?}");
    assert!(late.stderr.starts_with("error: 409"), "{}", late.stderr);
    let slack = stack.slack_release(&id, &channels).await?;
    for thread in slack.values() {
        reply(thread, "rel-cancel: cancelled by ops");
        assert_root(thread, &id, "Cancelled");
    }
    // Every release has its own threads and nothing more.
    let announced: Vec<String> = stack.slack.threads()?.into_keys().collect();
    assert_eq!(announced, ["rel-cancel", "rel-deny", "rel-undo"]);
    stack.stop().await
}

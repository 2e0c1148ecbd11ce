//! Promotion over a real nats-server: a three-service release with a queue contract runs
//! through staging and production in plan order; two workers run each step exactly once; a
//! worker killed mid-step is replaced after its lease expires on the clock; a NATS restart in
//! the middle of a release loses and doubles nothing; a release planned after another one in
//! flight is re-validated with it, not refused for what that one is about to fix; the worker
//! that finishes a step takes the next one itself, and when it dies running it another worker
//! completes it once.

mod common;

use std::time::Duration;

use common::*;
use railyard_core::{AggregateId, Event, ReleaseState, Status};
use railyard_promoter::PromoterConfig;

fn started_order(events: &[railyard_core::Envelope]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match &e.event {
            Event::StepStarted(s) => Some(s.step.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_release_runs_through_staging_and_production_in_plan_order() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let deploy = format!(
        r#"{{ kind = "command", run = ["sh", "-c", "echo $RAILYARD_ENV $RAILYARD_SERVICE $RAILYARD_VERSION >> {}"] }}"#,
        counter_file(&dir).display()
    );
    let h = Harness::start(&estate(&deploy, "")).await?;
    h.seed(&inventory()).await?;
    let worker = h.worker("w1");
    let id = h.submit(RELEASE, &inventory()).await?;
    let state = h.wait_status(&id, Status::Completed).await?;
    assert!(all_succeeded(&state));

    let events = h.events(&id).await?;
    let order = started_order(&events);
    let position = |step: &str| order.iter().position(|s| s == step).unwrap();
    // Consumers that read version 3 go before the producer that emits it, per environment,
    // and staging is verified before production starts.
    for env in ["staging", "production"] {
        for consumer in ["billing-worker", "email-worker"] {
            assert!(
                position(&verify_step(env, consumer)) < position(&deploy_step(env, "orders-api")),
                "{order:?}"
            );
        }
    }
    assert!(position("staging:verify:orders-api") < position("production:deploy:orders-api"));
    // Every step ran once, and the adapter was invoked once per deploy.
    assert!(count(&events, "step.started").values().all(|n| *n == 1));
    let mut lines = invocations(&counter_file(&dir));
    lines.sort();
    assert_eq!(
        lines,
        [
            "production billing-worker 1.5.0",
            "production email-worker 3.2.0",
            "production orders-api 2.0.0",
            "staging billing-worker 1.5.0",
            "staging email-worker 3.2.0",
            "staging orders-api 2.0.0",
        ]
    );
    // The inventory follows.
    let production = h
        .bus
        .load(&AggregateId::Inventory("production".parse()?))
        .await?;
    let last = production.events.last().unwrap();
    let Event::ServiceDeployed(deployed) = &last.event else {
        panic!("{last:?}")
    };
    assert_eq!(deployed.release.as_ref(), Some(&id));
    assert_eq!(types(&events).last(), Some(&"release.completed"));
    worker.shutdown().await
}

#[tokio::test]
async fn two_workers_run_every_step_exactly_once() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let deploy = format!(
        r#"{{ kind = "command", run = ["sh", "-c", "echo $RAILYARD_ENV $RAILYARD_SERVICE >> {}"] }}"#,
        counter_file(&dir).display()
    );
    let h = Harness::start(&estate(&deploy, "")).await?;
    h.seed(&inventory()).await?;
    let (a, b) = (h.worker("w1"), h.worker("w2"));
    let id = h.submit(RELEASE, &inventory()).await?;
    h.wait_status(&id, Status::Completed).await?;
    let events = h.events(&id).await?;
    let started = count(&events, "step.started");
    assert_eq!(started.len(), 12);
    assert!(started.values().all(|n| *n == 1), "{started:?}");
    let lines = invocations(&counter_file(&dir));
    assert_eq!(lines.len(), 6, "{lines:?}");
    let workers: std::collections::BTreeSet<String> = events
        .iter()
        .filter_map(|e| match &e.event {
            Event::StepStarted(s) => Some(s.worker.clone()),
            _ => None,
        })
        .collect();
    assert!(!workers.is_empty());
    a.shutdown().await?;
    b.shutdown().await
}

#[tokio::test]
async fn a_killed_worker_loses_its_lease_and_another_resumes_the_step() -> anyhow::Result<()> {
    let h = Harness::start(&estate(r#"{ kind = "simulated", duration = "2m" }"#, "")).await?;
    h.seed(&inventory()).await?;
    let first = h.worker("doomed");
    let id = h.submit(RELEASE, &inventory()).await?;
    // Wait until the doomed worker runs a step (its simulated deploy sleeps on the clock).
    let state = h
        .drive_until(&id, Duration::ZERO, "a step running", |s| {
            s.steps
                .values()
                .any(|st| matches!(st, railyard_core::release_state::StepStatus::Running { .. }))
        })
        .await?;
    first.kill().await;
    let running: Vec<String> = state
        .steps
        .iter()
        .filter(|(_, s)| matches!(s, railyard_core::release_state::StepStatus::Running { .. }))
        .map(|(id, _)| id.clone())
        .collect();
    let second = h.worker("rescuer");
    // Time passes: the dead worker's leases expire, the rescuer's sweep resumes the steps.
    let state = h
        .drive_until(&id, Duration::from_secs(5), "release completed", |s| {
            s.status == Status::Completed
        })
        .await?;
    assert!(all_succeeded(&state));
    let events = h.events(&id).await?;
    for step in &running {
        let attempts: Vec<(String, u32)> = events
            .iter()
            .filter_map(|e| match &e.event {
                Event::StepStarted(s) if &s.step == step => Some((s.worker.clone(), s.attempt)),
                _ => None,
            })
            .collect();
        assert_eq!(
            attempts,
            [("doomed".to_owned(), 1), ("rescuer".to_owned(), 2)],
            "{step}"
        );
    }
    assert!(count(&events, "step.succeeded").values().all(|n| *n == 1));
    second.shutdown().await
}

#[tokio::test]
async fn a_nats_restart_mid_release_loses_and_doubles_nothing() -> anyhow::Result<()> {
    let mut h = Harness::start(&estate(r#"{ kind = "simulated", duration = "10s" }"#, "")).await?;
    h.seed(&inventory()).await?;
    let worker = h.worker("w1");
    let id = h.submit(RELEASE, &inventory()).await?;
    h.drive_until(&id, Duration::from_secs(1), "staging under way", |s| {
        s.steps.iter().any(|(step, st)| {
            step.starts_with("staging:verify")
                && *st == railyard_core::release_state::StepStatus::Succeeded
        })
    })
    .await?;
    h.nats.restart().await?;
    let state = h
        .drive_until(&id, Duration::from_secs(1), "release completed", |s| {
            s.status == Status::Completed
        })
        .await?;
    assert!(all_succeeded(&state));
    let events = h.events(&id).await?;
    assert!(count(&events, "step.succeeded").values().all(|n| *n == 1));
    assert_eq!(count(&events, "step.succeeded").len(), 12);
    worker.shutdown().await
}

#[tokio::test]
async fn a_release_waiting_for_another_in_flight_is_revalidated_with_it() -> anyhow::Result<()> {
    // rel-a teaches the consumers to read orders-events v3; rel-b, requested after it, makes
    // orders-api emit v3, so the planner orders rel-b's producer after rel-a's consumers in
    // each environment. Production needs an approval, so rel-a waits there while rel-b enters
    // staging: production still runs consumers that cannot read v3, and re-validating against
    // the live inventory alone would hold rel-b, while rel-a, still in flight and ordered
    // first, is exactly what makes it safe.
    let h = Harness::start(&estate(
        r#"{ kind = "simulated" }"#,
        r#"approval = { required = true, approvers = ["group:release-managers"] }"#,
    ))
    .await?;
    h.seed(&inventory()).await?;
    let consumers = r#"
id = "rel-a"
[[changes]]
service = "billing-worker"
version = "1.5.0"
consumes = { orders-events = "2..=3" }
[[changes]]
service = "email-worker"
version = "3.2.0"
consumes = { orders-events = "2..=3" }
"#;
    let producer = r#"
id = "rel-b"
[[changes]]
service = "orders-api"
version = "2.0.0"
produces = { orders-events = 3 }
"#;
    let a = h.submit(consumers, &inventory()).await?;
    let a_state = h.state(&a).await?;
    let plan_a = a_state.plan.as_ref().expect("planned");
    let in_flight = [railyard_plan::InFlight {
        release: a.clone(),
        sequence: 1,
        changes: a_state.changes.clone(),
        remaining: plan_a.steps.iter().map(|s| s.id.clone()).collect(),
    }];
    let b = h.submit_after(producer, &inventory(), &in_flight).await?;
    let plan_b = h.state(&b).await?.plan.expect("planned");
    assert!(
        plan_b.external_edges.iter().any(|e| e.release == a),
        "rel-b waits for rel-a: {:?}",
        plan_b.external_edges
    );

    let api = Api::start(&h).await?;
    let worker = h.worker("w1");
    let tick = Duration::from_millis(500);
    h.drive_until(&a, tick, "rel-a waits for its approval", |s| {
        !s.approvals.is_empty()
    })
    .await?;
    let b_staged = h
        .drive_until(&b, tick, "rel-b through staging or held", |s| {
            s.status == Status::Held
                || s.steps.get("staging:deploy:orders-api")
                    == Some(&railyard_core::release_state::StepStatus::Succeeded)
        })
        .await?;
    assert_ne!(
        b_staged.status,
        Status::Held,
        "rel-b was held: {:?}",
        b_staged.hold
    );

    for release in [&a, &b] {
        h.drive_until(release, tick, "approval requested", |s| {
            !s.approvals.is_empty()
        })
        .await?;
        let (status, body) = api
            .command(
                "alice",
                release,
                "approve",
                serde_json::json!({"comment": "ok"}),
            )
            .await?;
        assert_eq!(status, 202, "{body}");
        h.wait_status(release, Status::Completed).await?;
    }
    // The order held across releases: rel-a's consumers ran first in each environment.
    let (a_events, b_events) = (h.events(&a).await?, h.events(&b).await?);
    assert_eq!(count(&b_events, "release.held").values().sum::<usize>(), 0);
    let succeeded = |step: String| {
        a_events
            .iter()
            .find(|e| matches!(&e.event, Event::StepSucceeded(o) if o.step == step))
            .map(|e| e.occurred_at)
    };
    let started = |step: String| {
        b_events
            .iter()
            .find(|e| matches!(&e.event, Event::StepStarted(s) if s.step == step))
            .map(|e| e.occurred_at)
    };
    for env in ["staging", "production"] {
        let producer = started(deploy_step(env, "orders-api")).expect("started");
        for consumer in ["billing-worker", "email-worker"] {
            let consumer = succeeded(deploy_step(env, consumer)).expect("deployed");
            assert!(consumer <= producer, "{env}: the producer went first");
        }
    }
    worker.shutdown().await
}

/// One service, staging then production, deploys that take 2 minutes on the clock.
const SOLO: &str = r#"
[[environments]]
name = "staging"

[[environments]]
name = "production"
after = "staging"

[services.solo]
deploy = { kind = "simulated", duration = "2m" }
"#;

/// The dispatcher leaves a worker's own step outcome to that worker, which looks at the
/// release right after recording it. A worker that dies in between (here: its outcome is
/// recorded, then it is gone) leaves the next step to the periodic sweep of another worker.
#[tokio::test]
async fn a_worker_dying_after_recording_a_step_leaves_the_next_to_the_sweep() -> anyhow::Result<()>
{
    let h = Harness::start(SOLO).await?;
    let doomed = h.worker("doomed");
    let id = h
        .submit(
            "id = \"solo-1\"\n[[changes]]\nservice = \"solo\"\nversion = \"2.0.0\"\n",
            &railyard_core::Inventory::default(),
        )
        .await?;
    let state = h
        .drive_until(&id, Duration::ZERO, "the first deploy running", |s| {
            running(s).is_some()
        })
        .await?;
    let step = running(&state).expect("a running step");
    assert_eq!(step, "staging:deploy:solo");
    let rescuer = h.worker("rescuer");
    doomed.kill().await;
    // What the doomed worker recorded just before it died: its deploy succeeded.
    let aggregate = AggregateId::Release(id.clone());
    let loaded = h.bus.load(&aggregate).await?;
    let outcome = railyard_core::Envelope::new(
        aggregate.clone(),
        "doomed",
        railyard_core::Clock::now(&h.clock),
        Event::StepSucceeded(railyard_core::event::StepOutcome {
            step: step.clone(),
            detail: "deployed".to_owned(),
        }),
    );
    h.bus
        .append(
            &aggregate,
            loaded.expected(),
            std::slice::from_ref(&outcome),
        )
        .await?;
    // Nobody looks at the release until the rescuer's sweep does, on the clock.
    let state = h
        .drive_until(&id, Duration::from_secs(5), "release completed", |s| {
            s.status == Status::Completed
        })
        .await?;
    assert!(all_succeeded(&state));
    let events = h.events(&id).await?;
    let started = count(&events, "step.started");
    assert!(started.values().all(|n| *n == 1), "{started:?}");
    let after: Vec<String> = events
        .iter()
        .filter_map(|e| match &e.event {
            Event::StepStarted(s) if s.step != step => Some(s.worker.clone()),
            _ => None,
        })
        .collect();
    assert!(
        !after.is_empty() && after.iter().all(|w| w == "rescuer"),
        "{after:?}"
    );
    rescuer.shutdown().await
}

/// Offers of ready steps are sent without waiting for JetStream's answer, so one can be lost
/// (here: while the release is planned the work queue keeps nothing the promoter offers, as
/// when its leader is being elected). The step then has no offer waiting, nothing runs, and the
/// next sweep offers it again.
#[tokio::test]
async fn a_lost_offer_is_made_again_by_the_next_sweep() -> anyhow::Result<()> {
    use futures::StreamExt;
    let h = Harness::start(SOLO).await?;
    let client = async_nats::connect(h.nats.url()).await?;
    let js = async_nats::jetstream::new(client.clone());
    let lost_offers = lose_offers(&js).await?;
    // Every offer, as published (a plain subscription sees them whether or not a stream keeps
    // them).
    let mut offers = client.subscribe("railyard.work.promoter.>").await?;
    client.flush().await?;
    let worker = h.worker("only");
    let id = h
        .submit(
            "id = \"solo-lost\"\n[[changes]]\nservice = \"solo\"\nversion = \"2.0.0\"\n",
            &railyard_core::Inventory::default(),
        )
        .await?;
    let message_id = |offer: &async_nats::Message| {
        offer
            .headers
            .as_ref()
            .and_then(|headers| headers.get("Nats-Msg-Id"))
            .map(|id| id.as_str().to_owned())
            .unwrap_or_default()
    };
    // The dispatcher's offer, and the worker's first sweep's when it ran after the release was
    // planned (it runs as the worker starts), all lost.
    let dispatched = "solo-lost/staging:deploy:solo/0";
    let mut lost = Vec::new();
    while !lost.iter().any(|id| id == dispatched) {
        let offer = tokio::time::timeout(Duration::from_secs(30), offers.next())
            .await?
            .expect("the dispatcher offers the first step");
        lost.push(message_id(&offer));
    }
    while let Ok(Some(offer)) =
        tokio::time::timeout(Duration::from_millis(300), offers.next()).await
    {
        lost.push(message_id(&offer));
    }
    assert!(
        lost.iter()
            .all(|id| id == dispatched || id == "solo-lost/staging:deploy:solo/0/sweep-0"),
        "{lost:?}"
    );
    let state = h.state(&id).await?;
    assert!(
        state
            .steps
            .values()
            .all(|s| matches!(s, railyard_core::release_state::StepStatus::Pending)),
        "nothing runs without an offer in the queue: {:?}",
        state.steps
    );

    // The queue keeps offers again; the sweep (every 10 s on the clock) finds no offer of the
    // release waiting and offers the step again, under a message id of its own.
    lost_offers.keep_again(&js).await?;
    h.drive_until(
        &id,
        Duration::from_secs(5),
        "the first deploy running",
        |s| {
            matches!(
                s.steps.get("staging:deploy:solo"),
                Some(railyard_core::release_state::StepStatus::Running { .. })
            )
        },
    )
    .await?;
    let mut again = Vec::new();
    while let Ok(Some(offer)) =
        tokio::time::timeout(Duration::from_millis(100), offers.next()).await
    {
        again.push(message_id(&offer));
    }
    // (After any repeat of the lost offers, which were not kept either.)
    assert!(
        again
            .iter()
            .find(|id| !lost.contains(id))
            .is_some_and(|id| id.starts_with("solo-lost/staging:deploy:solo/0/sweep-")),
        "{again:?}"
    );
    let started = count(&h.events(&id).await?, "step.started");
    assert!(started.values().all(|n| *n == 1), "{started:?}");
    worker.shutdown().await
}

/// The worker that records a step's outcome takes the next step of the release itself,
/// without offering it on the work queue. When it dies right after (the next step running),
/// the step is a step like any other: its lease expires on the clock, another worker's sweep
/// re-offers it, and it runs to completion once.
#[tokio::test]
async fn a_worker_dying_in_the_step_it_took_over_leaves_it_to_another() -> anyhow::Result<()> {
    use futures::StreamExt;
    let h = Harness::start(SOLO).await?;
    // Every work item offered, as published.
    let client = async_nats::connect(h.nats.url()).await?;
    let mut offers = client.subscribe("railyard.work.promoter.>").await?;
    client.flush().await?;
    // No sweep of its own while it runs: what it offers is what its steps offer.
    let mut config = h.worker_config("doomed");
    config.sweep_interval = Duration::from_secs(3600);
    let doomed = h.worker_with(config);
    let id = h
        .submit(
            "id = \"solo-2\"\n[[changes]]\nservice = \"solo\"\nversion = \"2.0.0\"\n",
            &railyard_core::Inventory::default(),
        )
        .await?;
    let first = deploy_step("staging", "solo");
    h.drive_until(&id, Duration::ZERO, "the first deploy running", |s| {
        running(s).as_deref() == Some(first.as_str())
    })
    .await?;
    // The deploy ends on the clock; the doomed worker records it and starts the next step.
    let state = h
        .drive_until(&id, Duration::from_secs(10), "the next step running", |s| {
            s.steps.get(&first) == Some(&railyard_core::release_state::StepStatus::Succeeded)
                && running(s).is_some()
        })
        .await?;
    let next = running(&state).expect("a running step");
    doomed.kill().await;
    // Only the first step was offered on the queue (once per event of the release that
    // offered it, the same message id each time): the next one was taken over directly.
    let mut offered = Vec::new();
    while let Ok(Some(message)) =
        tokio::time::timeout(Duration::from_millis(200), offers.next()).await
    {
        let order: railyard_promoter::work::WorkOrder = serde_json::from_slice(&message.payload)?;
        offered.push(order);
    }
    offered.dedup();
    assert_eq!(
        offered,
        [railyard_promoter::work::WorkOrder::Step {
            release: id.clone(),
            step: first.clone(),
            with: Vec::new(),
        }],
        "{offered:?}"
    );
    let rescuer = h.worker("rescuer");
    let state = h
        .drive_until(&id, Duration::from_secs(5), "release completed", |s| {
            s.status == Status::Completed
        })
        .await?;
    assert!(all_succeeded(&state));
    let events = h.events(&id).await?;
    let attempts = |step: &str| -> Vec<(String, u32)> {
        events
            .iter()
            .filter_map(|e| match &e.event {
                Event::StepStarted(s) if s.step == step => Some((s.worker.clone(), s.attempt)),
                _ => None,
            })
            .collect()
    };
    assert_eq!(attempts(&first), [("doomed".to_owned(), 1)]);
    assert_eq!(
        attempts(&next),
        [("doomed".to_owned(), 1), ("rescuer".to_owned(), 2)],
        "{next}"
    );
    let succeeded = count(&events, "step.succeeded");
    assert!(succeeded.values().all(|n| *n == 1), "{succeeded:?}");
    assert_eq!(succeeded.len(), state.steps.len());
    rescuer.shutdown().await
}

/// rel-a changes billing-worker and email-worker; its email-worker deploy fails in staging,
/// which holds rel-a there (`on_failure = "hold"`) with billing-worker's new version still
/// applied. rel-b, changing billing-worker too, was planned before that failure, once rel-a
/// was done with billing-worker in staging, so its plan does not make it wait there.
/// Re-validating before rel-b enters staging finds rel-a's steps there back in play: rel-b
/// waits for rel-a (it used to be held for an operator, as the chaos soak saw) and goes on
/// once rel-a has ended.
#[tokio::test]
async fn a_release_planned_before_an_earlier_one_failed_waits_for_it_instead_of_holding()
-> anyhow::Result<()> {
    let catalog = estate(r#"{ kind = "simulated", fail_versions = ["3.9.9"] }"#, "").replacen(
        "name = \"staging\"\n",
        "name = \"staging\"\non_failure = \"hold\"\n",
        1,
    );
    let h = Harness::start(&catalog).await?;
    h.seed(&inventory()).await?;
    let earlier = r#"
id = "rel-a"
[[changes]]
service = "billing-worker"
version = "1.5.0"
[[changes]]
service = "email-worker"
version = "3.9.9"
"#;
    let later = r#"
id = "rel-b"
[[changes]]
service = "billing-worker"
version = "1.6.0"
"#;
    let a = h.submit(earlier, &inventory()).await?;
    let api = Api::start(&h).await?;
    let worker = h.worker("w1");
    let tick = Duration::from_millis(500);
    let held = h
        .drive_until(&a, tick, "rel-a held by its failure", |s| {
            s.status == Status::Held
        })
        .await?;
    assert_eq!(
        held.steps.get("staging:deploy:billing-worker"),
        Some(&railyard_core::release_state::StepStatus::Succeeded)
    );
    // rel-b as the planner made it just before the failure: rel-a had every step left but
    // its billing-worker steps in staging.
    let in_flight = [railyard_plan::InFlight {
        release: a.clone(),
        sequence: 1,
        changes: held.changes.clone(),
        remaining: held
            .plan
            .as_ref()
            .expect("planned")
            .steps
            .iter()
            .map(|s| s.id.clone())
            .filter(|id| !(id.starts_with("staging:") && id.ends_with(":billing-worker")))
            .collect(),
    }];
    let b = h.submit_after(later, &inventory(), &in_flight).await?;
    let plan_b = h.state(&b).await?.plan.expect("planned");
    assert!(
        plan_b
            .external_edges
            .iter()
            .all(|e| !e.to.starts_with("staging:")),
        "rel-b's plan does not wait for rel-a in staging: {:?}",
        plan_b.external_edges
    );

    // 20 s on the clock, the sweeps included: rel-b waits, neither held nor started.
    let polls = std::sync::atomic::AtomicUsize::new(0);
    let waited = h
        .drive_until(&b, tick, "rel-b held, started, or 40 looks", |s| {
            s.status == Status::Held
                || !s
                    .steps
                    .values()
                    .all(|st| *st == railyard_core::release_state::StepStatus::Pending)
                || polls.fetch_add(1, std::sync::atomic::Ordering::Relaxed) >= 40
        })
        .await?;
    assert_eq!(waited.status, Status::Planned, "{:?}", waited.hold);
    assert!(
        waited
            .steps
            .values()
            .all(|st| *st == railyard_core::release_state::StepStatus::Pending),
        "{:?}",
        waited.steps
    );
    // The wait is on the record, naming rel-a and why, once for 40 looks (not once per look).
    let wait = waited
        .waiting
        .get("staging:deploy:billing-worker")
        .unwrap_or_else(|| panic!("rel-b's first step records its wait: {:?}", waited.waiting));
    assert_eq!(wait.waiting_for, vec![a.clone()]);
    assert!(
        wait.reason.contains("rel-a") && wait.reason.contains("[cross-release]"),
        "{}",
        wait.reason
    );
    let waits = h
        .events(&b)
        .await?
        .iter()
        .filter(|e| matches!(e.event, Event::StepWaiting(_)))
        .count();
    assert_eq!(waits, 1, "one step.waiting for an unchanged wait");

    // The operator rolls rel-a back; rel-b then goes through without anyone's help.
    let (status, body) = api
        .command(
            "ops",
            &a,
            "rollback",
            serde_json::json!({"comment": "bad build"}),
        )
        .await?;
    assert_eq!(status, 202, "{body}");
    h.wait_status(&a, Status::RolledBack).await?;
    h.wait_status(&b, Status::Completed).await?;
    let (a_events, b_events) = (h.events(&a).await?, h.events(&b).await?);
    assert_eq!(count(&b_events, "release.held").values().sum::<usize>(), 0);
    let a_ended = a_events
        .iter()
        .find(|e| matches!(e.event, Event::ReleaseRolledBack(_)))
        .map(|e| e.occurred_at)
        .expect("rolled back");
    let b_started = b_events
        .iter()
        .find(|e| matches!(e.event, Event::StepStarted(_)))
        .map(|e| e.occurred_at)
        .expect("started");
    assert!(a_ended <= b_started, "rel-b started before rel-a ended");
    assert!(
        h.state(&b).await?.waiting.is_empty(),
        "the wait ends when the step starts"
    );
    worker.shutdown().await
}

/// Every step offered on the work queue (alone, or with the steps ready with it) until none
/// was for 200 ms.
async fn drain_offers(
    offers: &mut async_nats::Subscriber,
) -> anyhow::Result<std::collections::BTreeSet<String>> {
    let mut offered = std::collections::BTreeSet::new();
    for order in orders_until_quiet(offers, Duration::from_millis(200)).await? {
        match order {
            railyard_promoter::work::WorkOrder::Step { step, with, .. } => {
                offered.insert(step);
                offered.extend(with);
            }
            other => panic!("only steps are offered here: {other:?}"),
        }
    }
    Ok(offered)
}

/// A harness whose deploys succeed at once, its inventory seeded.
async fn instant_harness() -> anyhow::Result<Harness> {
    let h = Harness::start(&estate(r#"{ kind = "command", run = ["true"] }"#, "")).await?;
    h.seed(&inventory()).await?;
    Ok(h)
}

/// Every work order published on the promoter's work subjects from now on (a plain
/// subscription sees them whether or not the work queue keeps them), and its client.
async fn watch_offers(h: &Harness) -> anyhow::Result<(async_nats::Client, async_nats::Subscriber)> {
    let client = async_nats::connect(h.nats.url()).await?;
    let offers = client.subscribe("railyard.work.promoter.>").await?;
    client.flush().await?;
    Ok((client, offers))
}

/// Workers with no sweep of their own for an hour, `configure`d: every offer is the
/// dispatcher's or a step's.
fn unswept(h: &Harness, ids: &[&str], configure: impl Fn(&mut PromoterConfig)) -> Vec<Worker> {
    ids.iter()
        .map(|id| {
            let mut config = h.worker_config(id);
            config.sweep_interval = Duration::from_secs(3600);
            configure(&mut config);
            h.worker_with(config)
        })
        .collect()
}

/// Drives the clock until release `id` has completed, every step succeeded and started once.
async fn completes(h: &Harness, id: &railyard_core::ReleaseId) -> anyhow::Result<ReleaseState> {
    let state = h
        .drive_until(id, Duration::from_millis(100), "release completed", |s| {
            s.status == Status::Completed
        })
        .await?;
    assert!(all_succeeded(&state));
    assert!(
        count(&h.events(id).await?, "step.started")
            .values()
            .all(|n| *n == 1)
    );
    Ok(state)
}

/// The work orders published until none came for `quiet`, repeats of one after the other
/// left out (an offer of the same state is published once per event that offers it).
async fn orders_until_quiet(
    offers: &mut async_nats::Subscriber,
    quiet: Duration,
) -> anyhow::Result<Vec<railyard_promoter::work::WorkOrder>> {
    use futures::StreamExt;
    let mut orders = Vec::new();
    while let Ok(Some(message)) = tokio::time::timeout(quiet, offers.next()).await {
        orders.push(serde_json::from_slice(&message.payload)?);
    }
    orders.dedup();
    Ok(orders)
}

/// The requests made of the JetStream API `api` (`DIRECT.GET`, `STREAM.MSG.GET`) on the
/// events stream, by anyone, from now on.
async fn events_api(
    client: &async_nats::Client,
    api: &str,
) -> anyhow::Result<async_nats::Subscriber> {
    let requests = client
        .subscribe(format!(
            "$JS.API.{api}.{}",
            railyard_bus::names::EVENTS_STREAM
        ))
        .await?;
    client.flush().await?;
    Ok(requests)
}

/// How many messages `messages` receives until none comes for `quiet`.
async fn count_until_quiet(messages: &mut async_nats::Subscriber, quiet: Duration) -> usize {
    use futures::StreamExt;
    let mut count = 0;
    while let Ok(Some(_)) = tokio::time::timeout(quiet, messages.next()).await {
        count += 1;
    }
    count
}

/// Makes the work queue keep nothing the promoter offers (its stream's subjects point
/// elsewhere), as when its leader is being elected, until [`LostOffers::keep_again`].
async fn lose_offers(js: &async_nats::jetstream::Context) -> anyhow::Result<LostOffers> {
    let mut config = js
        .get_stream("RAILYARD_WORK")
        .await?
        .info()
        .await?
        .config
        .clone();
    let subjects = std::mem::replace(
        &mut config.subjects,
        vec!["railyard.work.nowhere".to_owned()],
    );
    js.update_stream(&config).await?;
    Ok(LostOffers { config, subjects })
}

/// The work queue's configuration while it keeps nothing, and the subjects it had.
struct LostOffers {
    config: async_nats::jetstream::stream::Config,
    subjects: Vec<String>,
}

impl LostOffers {
    async fn keep_again(mut self, js: &async_nats::jetstream::Context) -> anyhow::Result<()> {
        self.config.subjects = self.subjects;
        js.update_stream(&self.config).await?;
        Ok(())
    }
}

/// Which worker started each step.
fn started_by(events: &[railyard_core::Envelope]) -> std::collections::BTreeMap<String, String> {
    events
        .iter()
        .filter_map(|e| match &e.event {
            Event::StepStarted(s) => Some((s.step.clone(), s.worker.clone())),
            _ => None,
        })
        .collect()
}

/// staging:verify:orders-api makes both production consumer deploys ready at once. The worker
/// that records it takes both (each under a permit of its own) instead of offering the second
/// to every worker: no step after the first ones is offered on the queue, and a release's
/// parallel steps share one worker's copy of it.
#[tokio::test]
async fn the_worker_that_records_an_outcome_takes_every_step_it_made_ready() -> anyhow::Result<()> {
    let h = instant_harness().await?;
    let (_client, mut offers) = watch_offers(&h).await?;
    let workers = unswept(&h, &["w1", "w2"], |_| {});
    let id = h.submit(RELEASE, &inventory()).await?;
    let state = completes(&h, &id).await?;
    let events = h.events(&id).await?;

    // Only the steps ready from the start were offered: the staging consumer deploys.
    let plan = state.plan.as_ref().expect("planned");
    let first: std::collections::BTreeSet<String> = plan
        .steps
        .iter()
        .filter(|s| plan.predecessors(&s.id).next().is_none())
        .map(|s| s.id.clone())
        .collect();
    assert_eq!(
        first,
        [
            deploy_step("staging", "billing-worker"),
            deploy_step("staging", "email-worker")
        ]
        .into()
    );
    assert_eq!(drain_offers(&mut offers).await?, first);
    // Both production consumer deploys ran where staging's last verify was recorded.
    let by = started_by(&events);
    let verified = &by[&verify_step("staging", "orders-api")];
    for consumer in ["billing-worker", "email-worker"] {
        assert_eq!(
            &by[&deploy_step("production", consumer)],
            verified,
            "{by:?}"
        );
    }
    for worker in workers {
        worker.shutdown().await?;
    }
    Ok(())
}

/// With one step at a time, the worker keeps the first step made ready and offers the other:
/// taking more never runs more steps at once than `max_concurrent_steps`.
#[tokio::test]
async fn a_step_made_ready_beyond_the_workers_permits_is_offered() -> anyhow::Result<()> {
    let h = instant_harness().await?;
    let (_client, mut offers) = watch_offers(&h).await?;
    let workers = unswept(&h, &["w1"], |config| config.max_concurrent_steps = 1);
    let id = h.submit(RELEASE, &inventory()).await?;
    completes(&h, &id).await?;
    let events = h.events(&id).await?;
    // Steps never overlapped: each started after the one before it ended.
    let mut running = 0;
    for event in &events {
        match &event.event {
            Event::StepStarted(_) => running += 1,
            Event::StepSucceeded(_) | Event::StepFailed(_) => running -= 1,
            _ => {}
        }
        assert!(running <= 1, "two steps ran at once: {:?}", types(&events));
    }
    // Besides the staging consumer deploys (ready from the start), one of the production
    // consumer deploys that staging's last verify made ready at once: the one beyond the
    // worker's single permit.
    let offered = drain_offers(&mut offers).await?;
    let production: Vec<String> = ["billing-worker", "email-worker"]
        .iter()
        .map(|c| deploy_step("production", c))
        .filter(|step| offered.contains(step))
        .collect();
    assert_eq!(production.len(), 1, "{offered:?}");
    for worker in workers {
        worker.shutdown().await?;
    }
    Ok(())
}

/// One worker alone runs a release whose consumer deploys and verifies run side by side:
/// its tasks take turns deciding on and appending to the release, each on the copy the one
/// before appended, so none of its appends conflicts. A conflict shows on the server as the
/// look at what won (a `STREAM.MSG.GET` on the events stream), counted here.
#[tokio::test]
async fn a_workers_parallel_steps_of_one_release_never_conflict() -> anyhow::Result<()> {
    let h = instant_harness().await?;
    let worker = h.worker("w1");
    let client = async_nats::connect(h.nats.url()).await?;
    let mut conflicts = events_api(&client, "STREAM.MSG.GET").await?;
    for n in 1..=3 {
        let release = RELEASE.replace("rel-1", &format!("rel-{n}"));
        let id = h.submit(&release, &inventory()).await?;
        completes(&h, &id).await?;
    }
    let seen = count_until_quiet(&mut conflicts, Duration::from_millis(200)).await;
    assert_eq!(seen, 0, "appends that conflicted");
    worker.shutdown().await
}

/// The plan makes both staging consumer deploys ready at once. The dispatcher offers them as
/// one work item (the first, with the other), and the worker that takes it takes both: one
/// offer on the queue for the wave, and both deploys started by the same worker of two.
#[tokio::test]
async fn a_wave_of_ready_steps_is_one_offer_that_one_worker_takes() -> anyhow::Result<()> {
    let h = instant_harness().await?;
    let (_client, mut offers) = watch_offers(&h).await?;
    let workers = unswept(&h, &["w1", "w2"], |_| {});
    let id = h.submit(RELEASE, &inventory()).await?;
    completes(&h, &id).await?;
    let orders = orders_until_quiet(&mut offers, Duration::from_millis(200)).await?;
    let (billing, email) = (
        deploy_step("staging", "billing-worker"),
        deploy_step("staging", "email-worker"),
    );
    assert_eq!(
        orders,
        [railyard_promoter::work::WorkOrder::Step {
            release: id.clone(),
            step: billing.clone(),
            with: vec![email.clone()],
        }]
    );
    let by = started_by(&h.events(&id).await?);
    assert_eq!(by[&billing], by[&email], "{by:?}");
    for worker in workers {
        worker.shutdown().await?;
    }
    Ok(())
}

/// A worker that skips the first step of a wave's work item (here it is not ready) still takes
/// the steps offered with it. The dispatcher's own offer of the staging wave is lost (the work
/// queue keeps nothing while the release is planned), and no sweep runs: the staging consumer
/// deploys can only start from the item published by hand, led by a production step that
/// waits for them. `with` is read from the work queue, so the item also lists a thousand steps
/// that are not the release's, and one step twice: they cost nothing (the release is read once
/// for all of them, counted as direct gets on the server) and none is offered on.
#[tokio::test]
async fn the_steps_offered_with_a_skipped_step_are_still_taken() -> anyhow::Result<()> {
    use futures::StreamExt;
    let h = instant_harness().await?;
    let (client, mut offers) = watch_offers(&h).await?;
    let js = async_nats::jetstream::new(client.clone());
    let lost_offers = lose_offers(&js).await?;
    let workers = unswept(&h, &["only"], |_| {});
    let id = h.submit(RELEASE, &inventory()).await?;
    // The dispatcher's offer (the first sweep's too when it ran after the release was planned:
    // its message id ends in `/sweep-0`), then any repeat of it: all lost.
    loop {
        let offer = tokio::time::timeout(Duration::from_secs(30), offers.next())
            .await?
            .expect("the dispatcher offers the staging wave");
        let swept = offer
            .headers
            .as_ref()
            .and_then(|headers| headers.get("Nats-Msg-Id"))
            .is_some_and(|id| id.as_str().ends_with("/sweep-0"));
        if !swept {
            break;
        }
    }
    count_until_quiet(&mut offers, Duration::from_millis(300)).await;
    assert!(
        h.state(&id)
            .await?
            .steps
            .values()
            .all(|s| matches!(s, railyard_core::release_state::StepStatus::Pending))
    );

    lost_offers.keep_again(&js).await?;
    let (billing, email) = (
        deploy_step("staging", "billing-worker"),
        deploy_step("staging", "email-worker"),
    );
    let mut with: Vec<String> = (0..1000)
        .map(|n| format!("staging:deploy:nobody-{n}"))
        .collect();
    with.extend([billing.clone(), billing.clone(), email.clone()]);
    let order = railyard_promoter::work::WorkOrder::Step {
        release: id.clone(),
        step: deploy_step("production", "orders-api"),
        with,
    };
    let mut reads = events_api(&client, "DIRECT.GET").await?;
    js.publish(order.subject(), order.payload()).await?.await?;
    h.drive_until(
        &id,
        Duration::from_millis(100),
        "both staging deploys started",
        |s| {
            [&billing, &email].iter().all(|step| {
                !matches!(
                    s.steps.get(step.as_str()),
                    Some(railyard_core::release_state::StepStatus::Pending)
                )
            })
        },
    )
    .await?;
    let by = started_by(&h.events(&id).await?);
    assert_eq!(by.get(&billing).map(String::as_str), Some("only"));
    assert_eq!(by.get(&email).map(String::as_str), Some("only"));
    assert!(!by.contains_key(&deploy_step("production", "orders-api")));
    let read = count_until_quiet(&mut reads, Duration::from_millis(100)).await;
    assert!(read < 50, "{read} reads for an item of 1,003 steps");
    // Nothing but the hand-made item offered them since the lost one.
    let since = orders_until_quiet(&mut offers, Duration::from_millis(100)).await?;
    assert_eq!(since, [order]);
    for worker in workers {
        worker.shutdown().await?;
    }
    Ok(())
}

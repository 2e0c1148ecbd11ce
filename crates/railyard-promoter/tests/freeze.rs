//! Freeze windows over a real nats-server and a manual clock: a release planned into a frozen
//! production runs staging, is held once at production with a reason naming the freeze and its
//! end, starts no production step while the window lasts, and is resumed by the worker and
//! completes once the clock passes the window's end.

mod common;

use std::time::Duration;

use chrono::{DateTime, Utc};
use common::*;
use railyard_core::{Clock, Event, Status};

/// The harness clock starts Monday 2026-03-02 09:00Z = 10:00 in Berlin (CET), inside a window
/// opened at 09:00 Berlin (08:00Z) for 3 h: it ends at 11:00Z.
const FREEZE: &str = r#"freeze = [{ cron = "0 9 * * MON", duration = "3h", timezone = "Europe/Berlin", reason = "monday change board" }]"#;

#[tokio::test]
async fn a_frozen_production_waits_for_the_window_to_end_then_completes() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let deploy = format!(
        r#"{{ kind = "command", run = ["sh", "-c", "echo $RAILYARD_ENV $RAILYARD_SERVICE $RAILYARD_VERSION >> {}"] }}"#,
        counter_file(&dir).display()
    );
    let h = Harness::start(&estate(&deploy, FREEZE)).await?;
    h.seed(&inventory()).await?;
    let worker = h.worker("w1");
    let id = h.submit(RELEASE, &inventory()).await?;
    let ends: DateTime<Utc> = "2026-03-02T11:00:00Z".parse()?;

    // Staging runs; production holds the release.
    let held = h.wait_status(&id, Status::Held).await?;
    assert!(h.clock.now() < ends, "staging ran inside the window");
    let reason = &held.hold.as_ref().expect("a hold").reason;
    assert!(
        reason.starts_with(
            "production is frozen for \"monday change board\" until 2026-03-02T11:00:00Z (cron 0 9 * * MON, 3h, Europe/Berlin); no step of production starts until then"
        ),
        "{reason}"
    );
    let production_started = |events: &[railyard_core::Envelope]| {
        events
            .iter()
            .filter(
                |e| matches!(&e.event, Event::StepStarted(s) if s.step.starts_with("production:")),
            )
            .map(|e| e.occurred_at)
            .collect::<Vec<_>>()
    };
    for (step, status) in &held.steps {
        if step.starts_with("staging:") {
            assert_eq!(
                *status,
                railyard_core::release_state::StepStatus::Succeeded,
                "{step}"
            );
        }
    }

    // Many sweeps later, still inside the window: still held once, nothing of production ran.
    let almost = ends - chrono::Duration::minutes(5);
    let still = h
        .drive_until(
            &id,
            Duration::from_secs(300),
            "the clock nears the window's end",
            |_| h.clock.now() >= almost,
        )
        .await?;
    assert_eq!(still.status, Status::Held);
    let events = h.events(&id).await?;
    assert!(production_started(&events).is_empty());
    assert_eq!(
        types(&events)
            .iter()
            .filter(|t| **t == "release.held")
            .count(),
        1
    );
    assert!(
        invocations(&counter_file(&dir))
            .iter()
            .all(|line| line.starts_with("staging "))
    );

    // The clock passes the end: the worker's sweep resumes the release, production runs.
    let done = h
        .drive_until(
            &id,
            Duration::from_secs(30),
            "release completes after the freeze",
            |s| s.status == Status::Completed,
        )
        .await?;
    assert!(all_succeeded(&done));
    let events = h.events(&id).await?;
    let kinds = types(&events);
    assert_eq!(kinds.iter().filter(|t| **t == "release.held").count(), 1);
    assert_eq!(kinds.iter().filter(|t| **t == "release.resumed").count(), 1);
    let resumed = events
        .iter()
        .find_map(|e| match &e.event {
            Event::ReleaseResumed(r) => Some((e.occurred_at, r.reason.clone())),
            _ => None,
        })
        .unwrap();
    assert!(resumed.0 >= ends, "resumed at {}", resumed.0);
    assert!(
        resumed.1.starts_with("the freeze of production ended (it was: production is frozen for \"monday change board\" until 2026-03-02T11:00:00Z"),
        "{}",
        resumed.1
    );
    let started = production_started(&events);
    assert!(!started.is_empty());
    assert!(started.iter().all(|at| *at >= ends), "{started:?}");
    assert!(count(&events, "step.started").values().all(|n| *n == 1));
    assert_eq!(
        invocations(&counter_file(&dir))
            .iter()
            .filter(|line| line.starts_with("production "))
            .count(),
        3
    );
    worker.shutdown().await
}

/// Production needs an approval from carol, dave or release-managers, and is frozen.
fn frozen_with_approvers() -> String {
    estate(
        r#"{ kind = "simulated" }"#,
        &format!(
            "{FREEZE}\napproval = {{ required = true, approvers = [\"carol\", \"github:dave\", \"group:release-managers\"] }}"
        ),
    )
}

#[tokio::test]
async fn an_emergency_override_needs_an_approver_and_a_reason_and_is_marked() -> anyhow::Result<()>
{
    let h = Harness::start(&frozen_with_approvers()).await?;
    h.seed(&inventory()).await?;
    let api = Api::start(&h).await?;
    let worker = h.worker("w1");
    let id = h.submit(RELEASE, &inventory()).await?;
    let ends: DateTime<Utc> = "2026-03-02T11:00:00Z".parse()?;
    let held = h.wait_status(&id, Status::Held).await?;
    assert!(
        held.hold.as_ref().is_some_and(|h| {
            h.reason.starts_with("production is frozen")
                && h.frozen
                    .as_ref()
                    .is_some_and(|env| env.as_str() == "production")
        }),
        "{:?}",
        held.hold
    );

    let override_body = |reason: Option<&str>| {
        let mut body = serde_json::json!({"env": "production", "override_freeze": true});
        if let Some(reason) = reason {
            body["comment"] = reason.into();
        }
        body
    };
    // Each refusal says why and appends nothing: no reason; eve, an approver not listed for
    // production; an operator without the approver role; carol, who requested the release.
    let before = h.events(&id).await?.len();
    let refusals = [
        ("alice", None, 422, "needs a reason"),
        ("eve", Some("checkout is down"), 403, "eve may not"),
        ("ops", Some("checkout is down"), 403, ""),
        ("carol", Some("checkout is down"), 403, "carol"),
    ];
    for (who, reason, expected, says) in refusals {
        let (status, body) = api
            .command(who, &id, "approve", override_body(reason))
            .await?;
        assert_eq!(status, expected, "{who}: {body}");
        assert!(body.to_string().contains(says), "{who}: {body}");
        assert_eq!(
            h.events(&id).await?.len(),
            before,
            "{who}: a refusal appends nothing"
        );
    }

    // alice (release-managers) overrides with a reason: the release resumes inside the window.
    let (status, body) = api
        .command(
            "alice",
            &id,
            "approve",
            override_body(Some("checkout is down; the fix is in this release")),
        )
        .await?;
    assert_eq!(status, 202, "{body}");
    h.drive_until(
        &id,
        Duration::from_millis(200),
        "the production approval is requested",
        |s| s.approvals.contains_key("production:approve:rel-1"),
    )
    .await?;
    // Whoever overrode the freeze is not also the approval: bob approves.
    let (status, body) = api
        .command(
            "alice",
            &id,
            "approve",
            serde_json::json!({"env": "production", "comment": "go"}),
        )
        .await?;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"], "overrider cannot approve", "{body}");
    let (status, body) = api
        .command(
            "bob",
            &id,
            "approve",
            serde_json::json!({"env": "production", "comment": "go"}),
        )
        .await?;
    assert_eq!(status, 202, "{body}");
    let done = h
        .drive_until(
            &id,
            Duration::from_millis(200),
            "release completes during the freeze",
            |s| s.status == Status::Completed,
        )
        .await?;
    assert!(h.clock.now() < ends, "it completed inside the window");
    assert!(all_succeeded(&done));

    // Marked: who overrode, why and when, on the release and in its events.
    let mark = &done.freeze_overrides["production"];
    assert_eq!(mark.by, "alice");
    assert_eq!(mark.reason, "checkout is down; the fix is in this release");
    assert_eq!(
        mark.until,
        Some(ends),
        "it ends with the window it overrode"
    );
    let events = h.events(&id).await?;
    let overridden: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.event {
            Event::FreezeOverridden(f) => {
                Some((e.actor.clone(), f.env.to_string(), f.reason.clone()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        overridden,
        [(
            "alice".to_owned(),
            "production".to_owned(),
            "checkout is down; the fix is in this release".to_owned()
        )]
    );
    let resumed = events
        .iter()
        .find_map(|e| match &e.event {
            Event::ReleaseResumed(r) => Some(r.reason.clone()),
            _ => None,
        })
        .expect("resumed");
    assert_eq!(
        resumed,
        "emergency override of the freeze of production by alice: checkout is down; the fix is in this release"
    );
    assert!(events.iter().any(
        |e| matches!(&e.event, Event::StepStarted(s) if s.step.starts_with("production:deploy"))
    ));
    assert_eq!(
        types(&events)
            .iter()
            .filter(|t| **t == "release.held")
            .count(),
        1
    );
    worker.shutdown().await
}

#[tokio::test]
async fn an_override_is_filed_only_while_a_freeze_is_in_force_or_about_to_start()
-> anyhow::Result<()> {
    // The window opens on Tuesdays at 09:00 Berlin; the clock is Monday 10:00 Berlin.
    let tuesday = r#"freeze = [{ cron = "0 9 * * TUE", duration = "3h", timezone = "Europe/Berlin", reason = "tuesday board" }]"#;
    let approval = r#"approval = { required = true, approvers = ["group:release-managers"] }"#;
    for (lead, accepted) in [("", false), ("freeze_override_lead = \"1d\"", true)] {
        let h = Harness::start(&estate(
            r#"{ kind = "simulated" }"#,
            &format!("{tuesday}\n{approval}\n{lead}"),
        ))
        .await?;
        h.seed(&inventory()).await?;
        let api = Api::start(&h).await?;
        let worker = h.worker("w1");
        let id = h.submit(RELEASE, &inventory()).await?;
        h.drive_until(
            &id,
            Duration::from_millis(200),
            "the production approval is requested",
            |s| s.approvals.contains_key("production:approve:rel-1"),
        )
        .await?;
        let (status, body) = api
            .command(
                "alice",
                &id,
                "approve",
                serde_json::json!({"env": "production", "override_freeze": true, "comment": "hotfix"}),
            )
            .await?;
        if accepted {
            assert_eq!(status, 202, "{body}");
            let state = h.state(&id).await?;
            let until: DateTime<Utc> = "2026-03-03T11:00:00Z".parse()?;
            assert_eq!(state.freeze_overrides["production"].until, Some(until));
        } else {
            assert_eq!(status, 409, "{body}");
            assert!(
                body["detail"]
                    .as_str()
                    .unwrap_or_default()
                    .starts_with("production is not frozen now: an emergency override is filed while the freeze it overrides is in force"),
                "{body}"
            );
        }
        worker.shutdown().await?;
    }
    Ok(())
}

#[tokio::test]
async fn an_override_ends_with_the_window_it_overrode() -> anyhow::Result<()> {
    let h = Harness::start(&frozen_with_approvers()).await?;
    h.seed(&inventory()).await?;
    let api = Api::start(&h).await?;
    let worker = h.worker("w1");
    let id = h.submit(RELEASE, &inventory()).await?;
    h.wait_status(&id, Status::Held).await?;
    let (status, body) = api
        .command(
            "alice",
            &id,
            "approve",
            serde_json::json!({"env": "production", "override_freeze": true, "comment": "hotfix"}),
        )
        .await?;
    assert_eq!(status, 202, "{body}");
    h.drive_until(
        &id,
        Duration::from_millis(200),
        "the production approval is requested",
        |s| s.approvals.contains_key("production:approve:rel-1"),
    )
    .await?;
    // Nobody approves until the next Monday's window: the override of last week's is spent.
    h.clock.advance(Duration::from_secs(7 * 24 * 3600));
    let (status, body) = api
        .command(
            "bob",
            &id,
            "approve",
            serde_json::json!({"env": "production", "comment": "go"}),
        )
        .await?;
    assert_eq!(status, 202, "{body}");
    let held = h
        .drive_until(
            &id,
            Duration::from_millis(200),
            "production held by the new window",
            |s| s.status == Status::Held,
        )
        .await?;
    let hold = held.hold.expect("a hold");
    assert_eq!(
        hold.frozen.as_ref().map(|env| env.as_str()),
        Some("production"),
        "{hold:?}"
    );
    assert!(
        !h.events(&id).await?.iter().any(
            |e| matches!(&e.event, Event::StepStarted(s) if s.step.starts_with("production:deploy"))
        ),
        "a production step started under last week's override"
    );
    worker.shutdown().await
}

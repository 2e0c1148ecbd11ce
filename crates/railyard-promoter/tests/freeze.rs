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
        r#"{{ kind = "command", run = ["sh", "-c", "echo {{env}} {{service}} {{version}} >> {}"] }}"#,
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

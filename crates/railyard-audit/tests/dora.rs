//! DORA metrics over a scripted 30-day history whose four metrics are worked out by hand below.
//! Every event carries its own time (the controlled clock); nothing waits. Then the same
//! through the audit service over real NATS and HTTP (`GET /v1/audit/dora`, auditor only) and
//! the CLI (`railyard audit dora`).

mod common;

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, TimeZone, Utc};
use railyard_audit::dora::{DoraLog, DoraRow, DoraWindow, Grouping};
use railyard_core::{AggregateId, Envelope, Event};
use serde_json::json;

fn day(d: i64, hour: u32, minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 1, hour, minute, 0).unwrap() + Duration::days(d)
}

fn event(
    aggregate: AggregateId,
    at: DateTime<Utc>,
    kind: &str,
    data: serde_json::Value,
) -> Envelope {
    let event: Event = serde_json::from_value(json!({"type": kind, "data": data})).unwrap();
    Envelope::new(aggregate, "test", at, event)
}

fn release(id: &str) -> AggregateId {
    AggregateId::Release(id.parse().unwrap())
}

/// A release of one change of `service` (with `commit`) planned as deploy + verify in `envs`.
fn planned(
    log: &mut DoraLog,
    id: &str,
    service: &str,
    commit: Option<&str>,
    envs: &[&str],
    at: DateTime<Utc>,
) {
    let mut change = json!({"service": service, "version": "1.0.0"});
    if let Some(commit) = commit {
        change["commit"] = json!(commit);
    }
    log.apply(&event(
        release(id),
        at,
        "release.requested",
        json!({
            "release": id, "requested_by": "ci", "changes": [change]
        }),
    ));
    let steps: Vec<_> = envs
        .iter()
        .flat_map(|env| {
            [
                json!({"id": format!("{env}:deploy:{service}"), "env": env, "action": "deploy", "target": service, "version": "1.0.0"}),
                json!({"id": format!("{env}:verify:{service}"), "env": env, "action": "verify", "target": service, "version": "1.0.0"}),
            ]
        })
        .collect();
    log.apply(&event(release(id), at, "release.planned", json!({
        "plan": {"release": id, "catalog_hash": "sha256:0", "steps": steps, "edges": [], "waves": [], "critical_path": []}
    })));
}

fn step(log: &mut DoraLog, id: &str, kind: &str, step: &str, at: DateTime<Utc>) {
    log.apply(&event(
        release(id),
        at,
        kind,
        json!({"step": step, "detail": ""}),
    ));
}

fn pushed(
    log: &mut DoraLog,
    service: &str,
    commit: &str,
    timestamp: Option<DateTime<Utc>>,
    seen: DateTime<Utc>,
) {
    let mut pushed = json!({"id": commit, "author": "dev", "message": "work"});
    if let Some(timestamp) = timestamp {
        pushed["timestamp"] = json!(timestamp);
    }
    log.apply(&event(
        AggregateId::Signal(service.parse().unwrap()),
        seen,
        "change.commits_pushed",
        json!({"branch": "main", "before": "0000000", "after": commit, "commits": [pushed],
               "origin": {"door": "github", "id": "d", "source": "https://github.com/acme/x"}}),
    ));
}

fn incident(log: &mut DoraLog, kind: &str, id: &str, service: &str, at: DateTime<Utc>) {
    let mut data = json!({"incident": id, "env": "production", "service": service,
                          "origin": {"door": "cdevents", "id": id, "source": "/pager"}});
    if kind == "incident.opened" {
        data["description"] = json!("error rate");
    }
    log.apply(&event(
        AggregateId::Incident("production".parse().unwrap()),
        at,
        kind,
        data,
    ));
}

fn row<'a>(rows: &'a [DoraRow], group: Grouping, name: &str, env: &str) -> &'a DoraRow {
    rows.iter()
        .find(|r| r.group == group && r.name == name && r.env == env)
        .unwrap_or_else(|| panic!("no {group:?} row {name} in {env}: {rows:#?}"))
}

#[test]
fn four_metrics_of_a_scripted_month_match_the_hand_computed_ones() {
    let mut log = DoraLog::new();
    // Before the window: a deployment that must not count.
    planned(
        &mut log,
        "rel-0",
        "orders-api",
        None,
        &["production"],
        day(-2, 0, 0),
    );
    step(
        &mut log,
        "rel-0",
        "step.succeeded",
        "production:deploy:orders-api",
        day(-1, 0, 0),
    );

    // rel-1: committed day 0 08:00, staging day 1 09:00, production day 1 10:00 (lead 26 h).
    pushed(
        &mut log,
        "orders-api",
        "c1c1c1c1c1",
        Some(day(0, 8, 0)),
        day(0, 9, 0),
    );
    planned(
        &mut log,
        "rel-1",
        "orders-api",
        Some("c1c1c1c"),
        &["staging", "production"],
        day(1, 8, 0),
    );
    step(
        &mut log,
        "rel-1",
        "step.succeeded",
        "staging:deploy:orders-api",
        day(1, 9, 0),
    );
    step(
        &mut log,
        "rel-1",
        "step.succeeded",
        "production:deploy:orders-api",
        day(1, 10, 0),
    );
    step(
        &mut log,
        "rel-1",
        "step.succeeded",
        "production:verify:orders-api",
        day(1, 10, 5),
    );

    // rel-2: committed day 5 09:00, deployed 12:00 (lead 3 h); its gate fails 12:10 and the
    // release is rolled back 12:40: failed, restored in 30 min.
    pushed(
        &mut log,
        "orders-api",
        "c2c2c2c2c2",
        Some(day(5, 9, 0)),
        day(5, 9, 30),
    );
    planned(
        &mut log,
        "rel-2",
        "orders-api",
        Some("c2c2c2c2c2"),
        &["production"],
        day(5, 11, 0),
    );
    step(
        &mut log,
        "rel-2",
        "step.succeeded",
        "production:deploy:orders-api",
        day(5, 12, 0),
    );
    step(
        &mut log,
        "rel-2",
        "step.failed",
        "production:verify:orders-api",
        day(5, 12, 10),
    );
    log.apply(&event(
        release("rel-2"),
        day(5, 12, 40),
        "release.rolled_back",
        json!({
            "reason": "gate failed", "undone": ["production:deploy:orders-api"]
        }),
    ));

    // rel-3: the push carried no commit time, first seen day 6 00:00; deployed day 7 00:00
    // (lead 24 h); an incident for orders-api opens 02:00 and resolves 05:00: failed, 3 h.
    pushed(&mut log, "orders-api", "c3c3c3c3c3", None, day(6, 0, 0));
    planned(
        &mut log,
        "rel-3",
        "orders-api",
        Some("c3c3c3c3c3"),
        &["production"],
        day(6, 23, 0),
    );
    step(
        &mut log,
        "rel-3",
        "step.succeeded",
        "production:deploy:orders-api",
        day(7, 0, 0),
    );
    incident(
        &mut log,
        "incident.opened",
        "INC-1",
        "orders-api",
        day(7, 2, 0),
    );
    incident(
        &mut log,
        "incident.resolved",
        "INC-1",
        "orders-api",
        day(7, 5, 0),
    );

    // rel-4: billing-worker with no commit (lead time unknown), day 10.
    planned(
        &mut log,
        "rel-4",
        "billing-worker",
        None,
        &["production"],
        day(10, 0, 0),
    );
    step(
        &mut log,
        "rel-4",
        "step.succeeded",
        "production:deploy:billing-worker",
        day(10, 1, 0),
    );

    // rel-5: committed day 20 00:00, deployed 06:00 (lead 6 h); an incident two days later is
    // outside the 24 h window: not a failure.
    pushed(
        &mut log,
        "billing-worker",
        "c5c5c5c5c5",
        Some(day(20, 0, 0)),
        day(20, 0, 30),
    );
    planned(
        &mut log,
        "rel-5",
        "billing-worker",
        Some("c5c5c5c5c5"),
        &["production"],
        day(20, 5, 0),
    );
    step(
        &mut log,
        "rel-5",
        "step.succeeded",
        "production:deploy:billing-worker",
        day(20, 6, 0),
    );
    incident(
        &mut log,
        "incident.opened",
        "INC-2",
        "billing-worker",
        day(22, 6, 0),
    );

    // A forged success (an untrusted writer) and one after the window: neither counts.
    planned(
        &mut log,
        "rel-6",
        "billing-worker",
        None,
        &["production"],
        day(25, 0, 0),
    );
    let mut forged = event(
        release("rel-6"),
        day(25, 1, 0),
        "step.succeeded",
        json!({"step": "production:deploy:billing-worker", "detail": ""}),
    );
    forged.untrusted = Some("intake may not write step.succeeded".into());
    log.apply(&forged);
    step(
        &mut log,
        "rel-6",
        "step.succeeded",
        "production:deploy:billing-worker",
        day(31, 0, 0),
    );

    let window = DoraWindow {
        since: day(0, 0, 0),
        until: day(30, 0, 0),
        incident_window: Duration::hours(24),
        env: None,
        service: None,
    };
    let owners = BTreeMap::from([
        ("orders-api".to_owned(), "team-orders".to_owned()),
        ("billing-worker".to_owned(), "team-billing".to_owned()),
    ]);
    let rows = log.rows(&window, &owners);

    let orders = row(&rows, Grouping::Service, "orders-api", "production");
    assert_eq!(orders.deployments, 3);
    assert!((orders.deployments_per_day - 0.1).abs() < 1e-9);
    // Leads 10,800 s, 86,400 s, 93,600 s: nearest-rank p50 is the 2nd, p90 the 3rd.
    assert_eq!(orders.lead_time_p50_seconds, Some(86_400));
    assert_eq!(orders.lead_time_p90_seconds, Some(93_600));
    assert_eq!(orders.lead_time_unknown, 0);
    assert_eq!(orders.failed, 2);
    assert!((orders.change_failure_rate.unwrap() - 2.0 / 3.0).abs() < 1e-9);
    // Restores 1,800 s and 10,800 s: p50 is the 1st.
    assert_eq!(orders.time_to_restore_p50_seconds, Some(1_800));
    assert_eq!(orders.unrestored, 0);
    assert_eq!(
        row(&rows, Grouping::Team, "team-orders", "production"),
        &DoraRow {
            group: Grouping::Team,
            name: "team-orders".into(),
            ..orders.clone()
        }
    );

    let billing = row(&rows, Grouping::Service, "billing-worker", "production");
    assert_eq!(billing.deployments, 2);
    assert_eq!(billing.lead_time_p50_seconds, Some(21_600));
    assert_eq!(billing.lead_time_unknown, 1);
    assert_eq!(billing.failed, 0);
    assert_eq!(billing.change_failure_rate, Some(0.0));
    assert_eq!(billing.time_to_restore_p50_seconds, None);

    let production = row(&rows, Grouping::Environment, "production", "production");
    assert_eq!(production.deployments, 5);
    // Leads 10,800, 21,600, 86,400, 93,600: p50 the 2nd, p90 the 4th.
    assert_eq!(production.lead_time_p50_seconds, Some(21_600));
    assert_eq!(production.lead_time_p90_seconds, Some(93_600));
    assert!((production.change_failure_rate.unwrap() - 0.4).abs() < 1e-9);

    let staging = row(&rows, Grouping::Service, "orders-api", "staging");
    assert_eq!(staging.deployments, 1);
    assert_eq!(staging.lead_time_p50_seconds, Some(25 * 3600));
}

#[test]
fn a_failure_not_yet_restored_is_counted_as_such() {
    let mut log = DoraLog::new();
    planned(
        &mut log,
        "rel-1",
        "orders-api",
        None,
        &["production"],
        day(1, 0, 0),
    );
    step(
        &mut log,
        "rel-1",
        "step.succeeded",
        "production:deploy:orders-api",
        day(1, 1, 0),
    );
    incident(
        &mut log,
        "incident.opened",
        "INC-9",
        "orders-api",
        day(1, 2, 0),
    );
    let window = DoraWindow {
        since: day(0, 0, 0),
        until: day(2, 0, 0),
        incident_window: Duration::hours(4),
        env: Some("production".into()),
        service: None,
    };
    let rows = log.rows(&window, &BTreeMap::new());
    let orders = row(&rows, Grouping::Service, "orders-api", "production");
    assert_eq!((orders.failed, orders.unrestored), (1, 1));
    assert_eq!(orders.time_to_restore_p50_seconds, None);
    assert_eq!(
        row(&rows, Grouping::Team, "unowned", "production").deployments,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dora_over_http_and_the_cli_for_auditors_only() -> anyhow::Result<()> {
    use common::{Script, Service, callers, connect, plan, requested, succeeded, temp_store};
    use railyard::audit_cli::{AuditCommand, ClientArgs, FilterArgs, Format, QueryArgs, run_audit};
    use railyard_core::Action::{Deploy, Verify};
    use railyard_core::event::{ReleasePlanned, ReleaseRolledBack, StepOutcome};

    let server = railyard_testkit::NatsServer::start().await?;
    let bus = connect(&server).await?;
    let callers = callers();
    let (_dir, store) = temp_store();
    let clock = railyard_core::ManualClock::new(common::start());
    let mut config = railyard_audit::AuditConfig::new(&store, callers.tokens.clone());
    config.clock = clock.shared();
    let metrics = config.metrics.clone();
    let service = Service::start_config(&bus, config).await?;
    let mut script = Script::new(&bus);
    let steps = [
        ("production", Deploy, "orders-api", Some("2.0.0")),
        ("production", Verify, "orders-api", Some("2.0.0")),
    ];
    // rel-a: deployed at +4 min, its verify fails at +5, rolled back at +6 (restored in 60 s).
    // rel-b: deployed and verified. Neither commit reached intake: lead time unknown.
    for id in ["rel-a", "rel-b"] {
        let change = common::change("orders-api", "2.0.0", "abcdef1");
        script
            .release(id, "intake", requested(id, vec![change]))
            .await;
        let planned = Event::ReleasePlanned(ReleasePlanned {
            plan: plan(id, &steps),
        });
        script.release(id, "planner", planned).await;
        script.run_step(id, "production:deploy:orders-api").await;
        if id == "rel-a" {
            let failed = Event::StepFailed(StepOutcome {
                step: "production:verify:orders-api".into(),
                detail: "gate http failed: observed 500".into(),
            });
            script.release(id, "promoter", failed).await;
            let rolled = Event::ReleaseRolledBack(ReleaseRolledBack {
                reason: "gate failed".into(),
                undone: vec!["production:deploy:orders-api".into()],
            });
            script.release(id, "promoter", rolled).await;
        } else {
            let verified = succeeded("production:verify:orders-api", "");
            script.release(id, "promoter", verified).await;
        }
    }
    service.caught_up(script.last_sequence).await;

    let url = service.url("/v1/audit/dora?since=2026-03-01&until=2026-03-03&env=production");
    let client = reqwest::Client::new();
    let answer: serde_json::Value = client
        .get(&url)
        .bearer_auth(&callers.auditor)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let rows = &answer["items"];
    let orders = rows
        .as_array()
        .and_then(|rows| {
            rows.iter()
                .find(|r| r["group"] == "service" && r["name"] == "orders-api")
        })
        .unwrap_or_else(|| panic!("no orders-api row: {answer}"));
    assert_eq!(orders["deployments"], 2, "{orders}");
    assert_eq!(orders["deployments_per_day"], 1.0, "{orders}");
    assert_eq!(orders["failed"], 1, "{orders}");
    assert_eq!(orders["change_failure_rate"], 0.5, "{orders}");
    assert_eq!(orders["time_to_restore_p50_seconds"], 60, "{orders}");
    assert_eq!(orders["lead_time_unknown"], 2, "{orders}");

    // The gauges: computed at start (nothing yet), then again an interval later on the
    // service's clock, over the last 30 days.
    clock.wait_for_sleepers(1).await;
    clock.advance(std::time::Duration::from_secs(3600));
    let series = r#"railyard_dora_change_failure_rate{group="service",name="orders-api",env="production"} 0.5"#;
    railyard_testkit::wait_until(
        "the DORA gauges",
        std::time::Duration::from_secs(10),
        || {
            let text = metrics.render();
            async move { Ok(text.contains(series).then_some(())) }
        },
    )
    .await?;
    let text = metrics.render();
    assert!(
        text.contains(r#"railyard_dora_time_to_restore_p50_seconds{group="service",name="orders-api",env="production"} 60"#),
        "{text}"
    );

    // Only auditors, and a window that makes sense.
    let refused = client
        .get(&url)
        .bearer_auth(&callers.operator)
        .send()
        .await?;
    assert_eq!(refused.status().as_u16(), 403);
    let backwards = client
        .get(service.url("/v1/audit/dora?since=2026-03-03&until=2026-03-01"))
        .bearer_auth(&callers.auditor)
        .send()
        .await?;
    assert_eq!(
        backwards.status().as_u16(),
        422,
        "{}",
        backwards.text().await?
    );
    let nonsense = client
        .get(service.url("/v1/audit/dora?since=last+week"))
        .bearer_auth(&callers.auditor)
        .send()
        .await?;
    let status = nonsense.status().as_u16();
    let text = nonsense.text().await?;
    assert!(status == 400 || status == 422, "{status} {text}");
    assert!(
        text.contains("30d"),
        "the error shows the accepted forms: {text}"
    );

    // The CLI, as CSV.
    let mut out = Vec::new();
    let code = run_audit(
        AuditCommand::Dora(QueryArgs {
            filter: FilterArgs {
                since: Some("2026-03-01".into()),
                until: Some("2026-03-03".into()),
                ..FilterArgs::default()
            },
            format: Format::Csv,
            limit: None,
            client: ClientArgs {
                url: service.url(""),
                token: Some(callers.auditor.clone()),
            },
        }),
        &mut out,
    )
    .await?;
    assert_eq!(code, 0);
    let csv = String::from_utf8(out)?;
    assert!(csv.starts_with("group,name,env,deployments,"), "{csv}");
    assert!(
        csv.contains("service,orders-api,production,2,1.00,,,2,1,50.0%,1m,0"),
        "{csv}"
    );
    Ok(())
}

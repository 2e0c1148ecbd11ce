//! The synthetic history the audit benchmarks and the memory probe replay: releases of 10
//! events each, one event a second.

use chrono::{DateTime, Utc};
use railyard_core::event::{
    ApprovalDecision, ApprovalRequested, GateEvaluated, ReleaseCompleted, ReleaseRequested,
    ServiceDeployed, StepOutcome, StepStarted,
};
use railyard_core::inventory::RunningService;
use railyard_core::{AggregateId, Change, Envelope, Event};

/// Events per release.
pub const PER_RELEASE: u64 = 10;
pub const SERVICES: u64 = 200;
/// Developers requesting releases, and approvers granting them, in turn.
pub const DEVELOPERS: u64 = 50;
pub const APPROVERS: u64 = 20;
pub const ENVS: [&str; 2] = ["staging", "production"];

pub fn base() -> DateTime<Utc> {
    "2026-01-01T00:00:00Z".parse().unwrap()
}

/// The `i`-th event, one a second: releases of 10 events each (requested by one of 50
/// developers, approved by one of 20 approvers, deployed, verified), each release for the
/// next of 200 services, the environment switching every 200 releases.
pub fn event(i: u64) -> Envelope {
    let r = i / PER_RELEASE;
    let release = format!("rel-{r}");
    let service = format!("svc-{}", r % SERVICES);
    let env = ENVS[((r / SERVICES) % 2) as usize];
    let developer = format!("dev-{}", r % DEVELOPERS);
    let approver = format!("approver-{}", r % APPROVERS);
    let at = base() + chrono::Duration::seconds(i as i64);
    let release_aggregate: AggregateId = format!("release.{release}").parse().unwrap();
    let change = Change {
        service: service.parse().unwrap(),
        version: format!("1.{r}.0"),
        artifact: Some(format!("pkg:oci/{service}@sha256%3A{i:08x}")),
        commit: Some(format!("{i:07x}")),
        branch: Some("main".into()),
        authors: vec![developer.clone()],
        produces: Default::default(),
        consumes: Default::default(),
        provides: Default::default(),
        requires: Default::default(),
        schema: Default::default(),
        migrations: Vec::new(),
        after: Vec::new(),
    };
    let approve = format!("{env}:approve:{service}");
    let deploy = format!("{env}:deploy:{service}");
    let verify = format!("{env}:verify:{service}");
    let (aggregate, actor, event) = match i % PER_RELEASE {
        0 => (
            release_aggregate,
            developer.as_str(),
            Event::ReleaseRequested(ReleaseRequested {
                release: release.parse().unwrap(),
                requested_by: developer.clone(),
                changes: vec![change],
            }),
        ),
        1 => (
            release_aggregate,
            "promoter",
            Event::ApprovalRequested(ApprovalRequested {
                step: approve,
                env: env.parse().unwrap(),
                approvers: vec![approver.clone()],
                reason: None,
            }),
        ),
        2 => (
            release_aggregate,
            approver.as_str(),
            Event::ApprovalGranted(ApprovalDecision {
                step: approve,
                comment: "looks good".into(),
            }),
        ),
        3 => (
            release_aggregate,
            "promoter",
            Event::StepStarted(StepStarted {
                step: deploy,
                worker: "w1".into(),
                attempt: 1,
            }),
        ),
        4 => (
            release_aggregate,
            "promoter",
            Event::StepSucceeded(StepOutcome {
                step: deploy,
                detail: String::new(),
            }),
        ),
        5 => (
            format!("inventory.{env}").parse().unwrap(),
            "promoter",
            Event::ServiceDeployed(ServiceDeployed {
                env: env.parse().unwrap(),
                service: service.parse().unwrap(),
                running: Some(RunningService::from(&change)),
                databases: Default::default(),
                release: Some(release.parse().unwrap()),
            }),
        ),
        6 => (
            release_aggregate,
            "promoter",
            Event::StepStarted(StepStarted {
                step: verify,
                worker: "w2".into(),
                attempt: 1,
            }),
        ),
        7 => (
            release_aggregate,
            "promoter",
            Event::GateEvaluated(GateEvaluated {
                step: verify,
                gate: "http#0".into(),
                passed: true,
                observed: "200".into(),
                expected: "200".into(),
            }),
        ),
        8 => (
            release_aggregate,
            "promoter",
            Event::StepSucceeded(StepOutcome {
                step: verify,
                detail: String::new(),
            }),
        ),
        _ => (
            release_aggregate,
            "promoter",
            Event::ReleaseCompleted(ReleaseCompleted {}),
        ),
    };
    Envelope::new(aggregate, actor, at, event)
}

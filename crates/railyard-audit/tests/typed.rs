//! The projection folds typed events: events built as railyard-core's `Event` (their step ids
//! through core's `StepId`) fill the service, environment and deployment indexes, and the
//! timeline describes them from their fields. No NATS: the projection is applied to a store
//! directly.

use chrono::{DateTime, Duration, Utc};
use railyard_audit::items::{EventItem, GateItem};
use railyard_audit::{AuditProjection, Filter, Reader};
use railyard_core::event::{GateEvaluated, ReleaseRequested, ServiceDeployed, StepStarted};
use railyard_core::inventory::RunningService;
use railyard_core::step::StepId;
use railyard_core::{AggregateId, Change, EnvName, Envelope, Event, ReleaseId, ServiceName};
use railyard_store::{ProjectionStore, StoreConfig};

fn at(seconds: i64) -> DateTime<Utc> {
    "2026-03-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap() + Duration::seconds(seconds)
}

fn running(commit: &str) -> RunningService {
    serde_json::from_value(serde_json::json!({"version": "2.3.0", "commit": commit})).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_events_fill_the_indexes() {
    let release: ReleaseId = "rel-7".parse().unwrap();
    let service: ServiceName = "orders-api".parse().unwrap();
    let production: EnvName = "production".parse().unwrap();
    let deploy = StepId::deploy(&production, &service);
    let verify = StepId::verify(&production, &service);
    let on_release = AggregateId::Release(release.clone());
    let change: Change =
        serde_json::from_value(serde_json::json!({"service": "orders-api", "version": "2.4.0"}))
            .unwrap();
    let events = [
        Envelope::new(
            AggregateId::Inventory(production.clone()),
            "promoter",
            at(0),
            Event::ServiceDeployed(ServiceDeployed {
                env: production.clone(),
                service: service.clone(),
                running: Some(running("1a2b3c4")),
                databases: Default::default(),
                release: None,
            }),
        ),
        Envelope::new(
            on_release.clone(),
            "carol",
            at(1),
            Event::ReleaseRequested(ReleaseRequested {
                release: release.clone(),
                requested_by: "carol".into(),
                changes: vec![change],
            }),
        ),
        Envelope::new(
            on_release.clone(),
            "w1",
            at(2),
            Event::StepStarted(StepStarted {
                step: deploy.to_string(),
                worker: "w1".into(),
                attempt: 1,
            }),
        ),
        Envelope::new(
            on_release,
            "w1",
            at(3),
            Event::GateEvaluated(GateEvaluated {
                step: verify.to_string(),
                gate: "http#0".into(),
                passed: false,
                observed: "500".into(),
                expected: "200".into(),
            }),
        ),
    ];
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = ProjectionStore::open(
        StoreConfig::new(dir.path().join("audit")).flush_every(None),
        AuditProjection,
    )
    .await
    .expect("the store opens");
    for (sequence, envelope) in (1..).zip(events) {
        store
            .apply(sequence, vec![envelope])
            .await
            .expect("the event applies");
    }
    let reader = Reader::new(store);

    // The step id's environment and service index the step's records.
    let filter = Filter {
        service: Some("orders-api".into()),
        env: Some("production".into()),
        kind: Some("step.started".into()),
        ..Filter::default()
    };
    let page = reader.records(&filter, None, 10).await.unwrap();
    let found: Vec<u64> = page.items.iter().map(|r| r.n).collect();
    assert_eq!(
        found,
        [3],
        "the deploy step's record, found by service and env"
    );
    let item = EventItem::from(&page.items[0]);
    assert_eq!(item.release.as_deref(), Some("rel-7"));
    assert_eq!(
        item.summary,
        "production:deploy:orders-api started by worker w1 (attempt 1)"
    );

    // The deploy step's start is one deployment, from the commit that ran before.
    let deployments = reader
        .deployments("production", &Filter::default(), None, 10)
        .await
        .unwrap();
    assert_eq!(deployments.items.len(), 1);
    let deployment = &deployments.items[0];
    assert_eq!(
        (
            deployment.release.as_str(),
            deployment.service.as_str(),
            deployment.step.as_str(),
            deployment.from_commit.as_deref()
        ),
        (
            "rel-7",
            "orders-api",
            "production:deploy:orders-api",
            Some("1a2b3c4")
        )
    );

    // A gate result names the verify step's environment and service.
    let gate = reader
        .records(
            &Filter {
                kind: Some("gate.evaluated".into()),
                ..Filter::default()
            },
            None,
            10,
        )
        .await
        .unwrap();
    let gate = GateItem::from_record(&gate.items[0]);
    assert_eq!(
        (gate.env.as_str(), gate.service.as_str(), gate.passed),
        ("production", "orders-api", false)
    );
}

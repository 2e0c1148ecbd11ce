//! Release fold as data: each `fold/*.json` holds a list of events (`type`, `data`, optional
//! `actor`); the harness wraps them in envelopes and snapshots the folded state or the error.

use chrono::{DateTime, Duration, Utc};
use railyard_core::{AggregateId, Envelope, Event, ReleaseState};
use serde::Deserialize;

#[derive(Deserialize)]
struct Case {
    #[serde(default = "default_aggregate")]
    aggregate: String,
    events: Vec<serde_json::Value>,
}

fn default_aggregate() -> String {
    "release.rel-1".into()
}

fn check(text: &str) -> serde_json::Value {
    let case: Case = serde_json::from_str(text).expect("fold case is valid JSON");
    let aggregate: AggregateId = case.aggregate.parse().expect("valid aggregate");
    let start: DateTime<Utc> = "2026-11-02T09:00:00Z".parse().unwrap();
    let mut envelopes = Vec::new();
    for (i, raw) in case.events.into_iter().enumerate() {
        let actor = raw
            .get("actor")
            .and_then(|a| a.as_str())
            .unwrap_or("railyard")
            .to_owned();
        let event: Event = serde_json::from_value(raw).expect("event matches the catalog");
        let at = start + Duration::minutes(i as i64);
        envelopes.push(Envelope::new(aggregate.clone(), actor, at, event));
    }
    let mut state = None;
    for (index, envelope) in envelopes.iter().enumerate() {
        match ReleaseState::apply(state, envelope) {
            Ok(next) => state = Some(next),
            Err(error) => {
                return serde_json::json!({
                    "refused_event": index,
                    "type": envelope.event.type_name(),
                    "error": error.to_string(),
                    "kind": error,
                });
            }
        }
    }
    serde_json::json!({ "state": state })
}

#[test]
fn fold_cases() {
    insta::glob!("fold/*.json", |path| {
        let text = std::fs::read_to_string(path).unwrap();
        insta::assert_json_snapshot!(check(&text));
    });
}

/// What a later release on the same services waits for: a step that failed puts its
/// environment's succeeded steps back in play; another environment's stay done.
#[test]
fn a_failure_puts_its_environments_steps_back_among_the_unfinished() {
    let step = |id: &str| {
        let (env, rest) = id.split_once(':').unwrap();
        let (action, target) = rest.split_once(':').unwrap();
        serde_json::json!({"id": id, "env": env, "action": action, "target": target, "version": "2.4.0"})
    };
    let ids = [
        "staging:deploy:orders-api",
        "staging:deploy:email-worker",
        "production:deploy:email-worker",
    ];
    let mut events = vec![
        serde_json::json!({"type": "release.requested", "data": {"release": "rel-1", "requested_by": "carol",
            "changes": [{"service": "orders-api", "version": "2.4.0"}, {"service": "email-worker", "version": "2.4.0"}]}}),
        serde_json::json!({"type": "release.planned", "data": {"plan": {"release": "rel-1", "catalog_hash": "sha256:00",
            "steps": ids.iter().map(|id| step(id)).collect::<Vec<_>>(),
            "edges": [], "waves": [ids], "critical_path": []}}}),
    ];
    for id in ids {
        events.push(serde_json::json!({"type": "step.started", "data": {"step": id, "worker": "w1", "attempt": 1}}));
    }
    for id in [
        "staging:deploy:email-worker",
        "production:deploy:email-worker",
    ] {
        events.push(serde_json::json!({"type": "step.succeeded", "data": {"step": id}}));
    }
    let fold = |events: &[serde_json::Value]| {
        let aggregate: AggregateId = "release.rel-1".parse().unwrap();
        let at: DateTime<Utc> = "2026-11-02T09:00:00Z".parse().unwrap();
        let mut state = None;
        for raw in events {
            let event: Event = serde_json::from_value(raw.clone()).expect("a valid event");
            let envelope = Envelope::new(aggregate.clone(), "railyard", at, event);
            state = Some(ReleaseState::apply(state, &envelope).expect("folds"));
        }
        let unfinished: Vec<String> = state
            .unwrap()
            .unfinished_steps()
            .iter()
            .map(|id| id.to_string())
            .collect();
        unfinished
    };
    assert_eq!(fold(&events), ["staging:deploy:orders-api"]);
    events.push(serde_json::json!({"type": "step.failed", "data": {"step": "staging:deploy:orders-api", "detail": "exit status 1"}}));
    assert_eq!(
        fold(&events),
        ["staging:deploy:email-worker", "staging:deploy:orders-api"],
        "production's succeeded step stays done"
    );
}

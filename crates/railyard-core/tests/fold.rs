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

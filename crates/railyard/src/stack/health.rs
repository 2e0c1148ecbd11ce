//! Health endpoints for the example estate's gates (`GET /health/<service>/<env>`): healthy
//! unless marked failing. `railyard dev` serves them for the bundled example, the demo turns
//! one failing to show a rollback, and the scenario tests fail gates with them.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::StatusCode;

/// Health of every `<service>/<env>` the gates ask about: healthy unless marked failing.
#[derive(Clone, Default)]
pub struct Health(Arc<Mutex<BTreeSet<String>>>);

impl Health {
    /// Makes `service` in `env` answer 500 (`failing = true`) or 200.
    pub fn set_failing(&self, service: &str, env: &str, failing: bool) {
        let key = format!("{service}/{env}");
        let mut set = self.0.lock().expect("health lock");
        if failing {
            set.insert(key);
        } else {
            set.remove(&key);
        }
    }

    /// The routes, answering from this state.
    pub fn router(&self) -> axum::Router {
        axum::Router::new()
            .route("/health/{service}/{env}", axum::routing::get(health))
            .with_state(self.clone())
    }
}

async fn health(
    State(state): State<Health>,
    Path((service, env)): Path<(String, String)>,
) -> (StatusCode, String) {
    let failing = state
        .0
        .lock()
        .expect("health lock")
        .contains(&format!("{service}/{env}"));
    if failing {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            r#"{"status":"error","error":"checkout latency over budget"}"#.into(),
        )
    } else {
        (StatusCode::OK, r#"{"status":"ok"}"#.into())
    }
}

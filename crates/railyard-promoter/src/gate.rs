//! Gates (INTERFACES §3): `http` (status, a JSON pointer's value, a substring), `prometheus`
//! (an instant query compared with a threshold; what an empty result means), `command` (exit
//! code) and `incident` (fails while an incident is open for the service in the environment).
//! `soak` is driven by `verify.rs`, which re-checks these every interval. Each check
//! yields what was observed and what was expected, for the `gate.evaluated` event.

use std::collections::BTreeSet;
use std::time::Duration;
use tracing::Instrument;

use railyard_bus::Bus;
use railyard_core::catalog::{CompareOp, Gate, OnEmpty};
use railyard_core::{AggregateId, Event};

use crate::adapter::{Runner, Target, error_chain, expand, expand_url, humanize, within};

/// Default time limit of an http, prometheus or command gate without a `timeout`.
pub const DEFAULT_GATE_TIMEOUT: Duration = Duration::from_secs(30);

/// The most of a gate's HTTP answer that is read; the rest is not (a gate endpoint cannot make
/// the promoter hold an unbounded body in memory).
pub const MAX_GATE_BODY: usize = 1024 * 1024;

/// The body of `response` as text, at most `limit` bytes of it.
async fn bounded_text(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<String, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = limit - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() == limit {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// One gate's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateCheck {
    /// Which gate (`http[0]`, `canary 10%: prometheus[1]`).
    pub name: String,
    /// Whether it passed.
    pub passed: bool,
    /// What was observed.
    pub observed: String,
    /// What was expected.
    pub expected: String,
}

/// The kind of a gate, as named in events.
pub fn kind(gate: &Gate) -> &'static str {
    match gate {
        Gate::Http { .. } => "http",
        Gate::Prometheus { .. } => "prometheus",
        Gate::Command { .. } => "command",
        Gate::Soak { .. } => "soak",
        Gate::Incident {} => "incident",
    }
}

fn op_str(op: CompareOp) -> &'static str {
    match op {
        CompareOp::Lt => "<",
        CompareOp::Le => "<=",
        CompareOp::Gt => ">",
        CompareOp::Ge => ">=",
        CompareOp::Eq => "==",
        CompareOp::Ne => "!=",
    }
}

/// Whether `value op threshold` holds.
pub fn compare(value: f64, op: CompareOp, threshold: f64) -> bool {
    match op {
        CompareOp::Lt => value < threshold,
        CompareOp::Le => value <= threshold,
        CompareOp::Gt => value > threshold,
        CompareOp::Ge => value >= threshold,
        CompareOp::Eq => value == threshold,
        CompareOp::Ne => value != threshold,
    }
}

/// The first value of a Prometheus instant-query answer (`vector` or `scalar`); `Ok(None)` when
/// the result is empty.
pub fn prometheus_value(body: &serde_json::Value) -> Result<Option<f64>, String> {
    if body.get("status").and_then(|s| s.as_str()) != Some("success") {
        return Err(format!(
            "prometheus answered status {}: {}",
            body.get("status").unwrap_or(&serde_json::Value::Null),
            body.get("error").and_then(|e| e.as_str()).unwrap_or("")
        ));
    }
    let data = &body["data"];
    let sample = match data["resultType"].as_str() {
        Some("vector") => match data["result"].as_array() {
            Some(result) if result.is_empty() => return Ok(None),
            Some(result) => result[0]["value"].clone(),
            None => return Err("the vector result is not an array".to_owned()),
        },
        Some("scalar") => data["result"].clone(),
        other => {
            return Err(format!(
                "result type {other:?} is not supported: write a query that returns an instant vector or a scalar"
            ));
        }
    };
    sample[1]
        .as_str()
        .and_then(|v| v.parse::<f64>().ok())
        .map(Some)
        .ok_or_else(|| format!("the sample {sample} has no numeric value"))
}

impl Runner {
    /// Checks one gate (not `soak`) for `target`, inside a `promoter.gate` span of the
    /// current step's.
    pub async fn gate(&self, gate: &Gate, name: &str, target: &Target, bus: &Bus) -> GateCheck {
        let span = tracing::info_span!(
            "promoter.gate",
            service = "promoter",
            gate = name,
            kind = kind(gate),
            passed = tracing::field::Empty
        );
        let check = self
            .check_gate(gate, name, target, bus)
            .instrument(span.clone())
            .await;
        span.record("passed", check.passed);
        check
    }

    async fn check_gate(&self, gate: &Gate, name: &str, target: &Target, bus: &Bus) -> GateCheck {
        let check = |passed: bool, observed: String, expected: String| GateCheck {
            name: name.to_owned(),
            passed,
            observed,
            expected,
        };
        match gate {
            Gate::Http {
                url,
                expect_status,
                json_pointer,
                equals,
                contains,
                timeout,
            } => {
                let status = expect_status.unwrap_or(200);
                let mut expected = vec![format!("status {status}")];
                if let (Some(pointer), Some(value)) = (json_pointer, equals) {
                    expected.push(format!("{pointer} == {value}"));
                }
                if let Some(text) = contains {
                    expected.push(format!("body contains {text:?}"));
                }
                let expected = expected.join(", ");
                let url = match expand_url(url, target, &self.secrets) {
                    Ok(url) => url,
                    Err(error) => return check(false, error, expected),
                };
                let limit = timeout.map_or(DEFAULT_GATE_TIMEOUT, |t| t.0);
                let fetched = within(&self.clock, limit, async {
                    let response = self.http.get(&url).send().await?;
                    let code = response.status().as_u16();
                    let location = response
                        .headers()
                        .get(reqwest::header::LOCATION)
                        .map(|l| String::from_utf8_lossy(l.as_bytes()).into_owned());
                    let body = bounded_text(response, MAX_GATE_BODY).await?;
                    Ok::<_, reqwest::Error>((code, location, body))
                })
                .await;
                let shown = self.secrets.redact(&url);
                let (code, location, body) = match fetched {
                    None => {
                        return check(
                            false,
                            format!("{shown} did not answer within {}", humanize(limit)),
                            expected,
                        );
                    }
                    Some(Err(error)) => {
                        return check(
                            false,
                            format!(
                                "{shown} cannot be reached: {}",
                                self.secrets.redact(&error_chain(&error))
                            ),
                            expected,
                        );
                    }
                    Some(Ok(answer)) => answer,
                };
                if (300..400).contains(&code) && !(300..400).contains(&status) {
                    let to =
                        location.map_or_else(|| "nowhere".to_owned(), |l| self.secrets.redact(&l));
                    return check(
                        false,
                        format!(
                            "status {code}, a redirect to {to}: gates do not follow redirects, point the gate at the final URL"
                        ),
                        expected,
                    );
                }
                let mut observed = vec![format!("status {code}")];
                let mut passed = code == status;
                if let (Some(pointer), Some(value)) = (json_pointer, equals) {
                    let found = serde_json::from_str::<serde_json::Value>(&body)
                        .ok()
                        .and_then(|v| v.pointer(pointer).cloned());
                    match found {
                        Some(found) => {
                            passed &= &found == value;
                            observed.push(format!("{pointer} == {found}"));
                        }
                        None => {
                            passed = false;
                            observed.push(format!("{pointer} absent (or the body is not JSON)"));
                        }
                    }
                }
                if let Some(text) = contains {
                    let found = body.contains(text.as_str());
                    passed &= found;
                    observed.push(if found {
                        format!("body contains {text:?}")
                    } else {
                        format!("body lacks {text:?}")
                    });
                }
                check(passed, observed.join(", "), expected)
            }
            Gate::Prometheus {
                url,
                query,
                op,
                threshold,
                on_empty,
            } => {
                let expected = format!("{query} {} {threshold}", op_str(*op));
                let base = match expand_url(url, target, &self.secrets) {
                    Ok(url) => url,
                    Err(error) => return check(false, error, expected),
                };
                let query_text = match expand(query, target, &self.secrets) {
                    Ok(q) => q,
                    Err(error) => return check(false, error, expected),
                };
                let endpoint = format!("{}/api/v1/query", base.trim_end_matches('/'));
                let fetched = within(&self.clock, DEFAULT_GATE_TIMEOUT, async {
                    self.http
                        .get(&endpoint)
                        .query(&[("query", query_text.as_str())])
                        .send()
                        .await?
                        .json::<serde_json::Value>()
                        .await
                })
                .await;
                let body = match fetched {
                    None => {
                        return check(
                            false,
                            format!(
                                "prometheus at {} did not answer within 30s",
                                self.secrets.redact(&base)
                            ),
                            expected,
                        );
                    }
                    Some(Err(error)) => {
                        return check(
                            false,
                            format!(
                                "prometheus at {} cannot be queried: {}",
                                self.secrets.redact(&base),
                                self.secrets.redact(&error_chain(&error))
                            ),
                            expected,
                        );
                    }
                    Some(Ok(body)) => body,
                };
                match prometheus_value(&body) {
                    Err(error) => check(false, error, expected),
                    Ok(None) => check(
                        *on_empty == OnEmpty::Pass,
                        format!(
                            "empty result (on_empty = {})",
                            if *on_empty == OnEmpty::Pass {
                                "pass"
                            } else {
                                "fail"
                            }
                        ),
                        expected,
                    ),
                    Ok(Some(value)) => check(
                        compare(value, *op, *threshold),
                        format!("{value}"),
                        expected,
                    ),
                }
            }
            Gate::Command { run, timeout } => {
                let limit = timeout.map_or(DEFAULT_GATE_TIMEOUT, |t| t.0);
                let outcome = self.command(run, target, limit).await;
                check(outcome.ok, outcome.detail, "exit code 0".to_owned())
            }
            Gate::Incident {} => {
                let expected = "no open incident".to_owned();
                let Some(env) = &target.env else {
                    return check(false, "no environment".to_owned(), expected);
                };
                match open_incidents(bus, env, target.service.as_deref()).await {
                    Ok(open) if open.is_empty() => {
                        check(true, "no open incident".to_owned(), expected)
                    }
                    Ok(open) => check(
                        false,
                        format!(
                            "open incident{}: {}",
                            if open.len() > 1 { "s" } else { "" },
                            open.into_iter().collect::<Vec<_>>().join(", ")
                        ),
                        expected,
                    ),
                    Err(error) => check(
                        false,
                        format!("cannot read the incidents of {env}: {error}"),
                        expected,
                    ),
                }
            }
            Gate::Soak { .. } => check(
                true,
                "soak is checked by the step".to_owned(),
                String::new(),
            ),
        }
    }
}

/// Incidents open in `env` that concern `service` (or the whole environment).
pub async fn open_incidents(
    bus: &Bus,
    env: &railyard_core::EnvName,
    service: Option<&str>,
) -> Result<BTreeSet<String>, railyard_bus::BusError> {
    let loaded = bus.load(&AggregateId::Incident(env.clone())).await?;
    let mut open = BTreeSet::new();
    for envelope in &loaded.events {
        match &envelope.event {
            Event::IncidentOpened(o) => {
                let concerns = match (&o.service, service) {
                    (None, _) => true,
                    (Some(s), Some(ours)) => s.as_str() == ours,
                    (Some(_), None) => false,
                };
                if concerns {
                    open.insert(o.incident.clone());
                }
            }
            Event::IncidentResolved(r) => {
                open.remove(&r.incident);
            }
            _ => {}
        }
    }
    Ok(open)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn prometheus_answers_are_read() {
        let vector = json!({"status": "success", "data": {"resultType": "vector",
            "result": [{"metric": {}, "value": [1700000000.0, "0.002"]}]}});
        assert_eq!(prometheus_value(&vector), Ok(Some(0.002)));
        let empty = json!({"status": "success", "data": {"resultType": "vector", "result": []}});
        assert_eq!(prometheus_value(&empty), Ok(None));
        let scalar = json!({"status": "success", "data": {"resultType": "scalar",
            "result": [1700000000.0, "3"]}});
        assert_eq!(prometheus_value(&scalar), Ok(Some(3.0)));
        let error = json!({"status": "error", "error": "parse error"});
        assert!(
            prometheus_value(&error)
                .unwrap_err()
                .contains("parse error")
        );
        assert!(compare(0.002, CompareOp::Lt, 0.01));
        assert!(!compare(0.02, CompareOp::Lt, 0.01));
    }
}

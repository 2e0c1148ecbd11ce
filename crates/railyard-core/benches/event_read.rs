//! What reading events and step ids typed costs (issue 15, item 4), each beside a raw baseline
//! measured in the same run:
//! - `json`: a stored envelope's bytes parsed into a `serde_json::Value` (baseline: what the
//!   audit already does for every record it reads);
//! - `json+typed`: the same, then the typed `Event` (`Event::from_envelope_json`) and the
//!   envelope's aggregate, actor and time read from that value (what `audit verify` and the
//!   timelines now do per record);
//! - `json+derived`: the same with serde's derived reader of the event (`Event::deserialize`
//!   on the value), which buffers the payload because `data` sorts before `type`;
//! - `split`: a step id cut into its three parts with `splitn(3, ':')` (baseline: the old
//!   by-hand reading);
//! - `StepId::parse`: the one parser (names checked, target typed).
//!
//! `cargo bench -p railyard-core --bench event_read` (release build). Every scenario runs for
//! at least 2 s per round, 3 rounds, scenario order shuffled each round; min / median / max
//! of the time per operation over the rounds.

use std::hint::black_box;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use railyard_core::event::StepStarted;
use railyard_core::event::{GateEvaluated, ReleasePlanned, ReleaseRequested, StepOutcome};
use railyard_core::step::StepId;
use railyard_core::{AggregateId, Change, Envelope, Event, Plan, Step};
use serde::Deserialize;

const ROUNDS: usize = 3;
const MIN_TIME: Duration = Duration::from_secs(2);

/// The envelope fields the audit reads besides the event.
#[derive(Deserialize)]
struct Meta {
    aggregate: AggregateId,
    actor: String,
    occurred_at: DateTime<Utc>,
}

/// Releases of five events: requested, planned (deploy and verify in two environments),
/// deploy started, gate evaluated, verify succeeded.
fn envelopes(releases: usize) -> Vec<Vec<u8>> {
    let at: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
    let mut out = Vec::new();
    for r in 0..releases {
        let release = format!("rel-{r}");
        let service = format!("svc-{}", r % 200);
        let aggregate: AggregateId = format!("release.{release}").parse().unwrap();
        let change: Change = serde_json::from_value(serde_json::json!({
            "service": service, "version": format!("1.{r}.0"), "commit": format!("{r:07x}"),
            "artifact": format!("pkg:oci/{service}@sha256%3A{r:08x}"), "branch": "main",
            "authors": ["carol"]}))
        .unwrap();
        let mut steps = Vec::new();
        for env in ["staging", "production"] {
            let env = env.parse().unwrap();
            let name = service.parse().unwrap();
            let version = Some(change.version.clone());
            steps.push(Step::new(StepId::deploy(&env, &name), version.clone()));
            steps.push(Step::new(StepId::verify(&env, &name), version));
        }
        let ids: Vec<String> = steps.iter().map(|s| s.id.clone()).collect();
        let plan = Plan {
            release: release.parse().unwrap(),
            catalog_hash: "sha256:00".into(),
            steps,
            edges: Vec::new(),
            waves: ids.iter().map(|id| vec![id.clone()]).collect(),
            critical_path: ids.clone(),
            external_edges: Vec::new(),
            points_of_no_return: Vec::new(),
        };
        let events = [
            Event::ReleaseRequested(ReleaseRequested {
                release: release.parse().unwrap(),
                requested_by: "carol".into(),
                changes: vec![change],
            }),
            Event::ReleasePlanned(ReleasePlanned { plan }),
            Event::StepStarted(StepStarted {
                step: ids[0].clone(),
                worker: "w1".into(),
                attempt: 1,
            }),
            Event::GateEvaluated(GateEvaluated {
                step: ids[1].clone(),
                gate: "http#0".into(),
                passed: true,
                observed: "200".into(),
                expected: "200".into(),
            }),
            Event::StepSucceeded(StepOutcome {
                step: ids[1].clone(),
                detail: String::new(),
            }),
        ];
        for event in events {
            let envelope = Envelope::new(aggregate.clone(), "promoter", at, event);
            out.push(serde_json::to_vec(&envelope).unwrap());
        }
    }
    out
}

fn step_ids(count: usize) -> Vec<String> {
    (0..count)
        .map(|i| match i % 4 {
            0 => format!("production:deploy:svc-{i}"),
            1 => format!("staging:verify:svc-{i}"),
            2 => format!("production:migrate:db-{}@{i}", i % 7),
            _ => format!("production:approve:rel-{i}"),
        })
        .collect()
}

/// Runs `op` over `items` again and again for at least [`MIN_TIME`]; nanoseconds per item.
fn measure<T>(items: &[T], mut op: impl FnMut(&T)) -> f64 {
    let start = Instant::now();
    let mut done = 0u64;
    while start.elapsed() < MIN_TIME {
        for item in items {
            op(item);
        }
        done += items.len() as u64;
    }
    start.elapsed().as_nanos() as f64 / done as f64
}

/// xorshift64, seeded from the clock: a different scenario order every run.
struct Shuffle(u64);

impl Shuffle {
    fn order(&mut self, n: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            order.swap(i, (self.0 % (i as u64 + 1)) as usize);
        }
        order
    }
}

fn stats(mut values: Vec<f64>) -> (f64, f64, f64) {
    values.sort_by(f64::total_cmp);
    (
        values[0],
        values[values.len() / 2],
        values[values.len() - 1],
    )
}

fn main() {
    let stored = envelopes(2_000);
    let ids = step_ids(10_000);
    let names = [
        "json",
        "json+typed",
        "split",
        "StepId::parse",
        "json+derived",
    ];
    let mut results: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    let mut shuffle = Shuffle(seed);
    for round in 1..=ROUNDS {
        let order = shuffle.order(names.len());
        let listed: Vec<&str> = order.iter().map(|&i| names[i]).collect();
        println!("round {round}: {}", listed.join(", "));
        for &scenario in &order {
            let ns = match scenario {
                0 => measure(&stored, |bytes| {
                    let value: serde_json::Value = serde_json::from_slice(bytes).unwrap();
                    black_box(value);
                }),
                1 => measure(&stored, |bytes| {
                    let value: serde_json::Value = serde_json::from_slice(bytes).unwrap();
                    let meta = Meta::deserialize(&value).unwrap();
                    let event = Event::from_envelope_json(&value).unwrap();
                    black_box((meta.aggregate, meta.actor, meta.occurred_at, event));
                }),
                2 => measure(&ids, |id| {
                    let mut parts = id.splitn(3, ':');
                    black_box((parts.next(), parts.next(), parts.next()));
                }),
                3 => measure(&ids, |id| {
                    black_box(StepId::parse(id).unwrap());
                }),
                _ => measure(&stored, |bytes| {
                    let value: serde_json::Value = serde_json::from_slice(bytes).unwrap();
                    let meta = Meta::deserialize(&value).unwrap();
                    let event = Event::deserialize(&value).unwrap();
                    black_box((meta.aggregate, meta.actor, meta.occurred_at, event));
                }),
            };
            results[scenario].push(ns);
        }
    }
    println!(
        "\n{} stored envelopes ({} bytes on average), {} step ids",
        stored.len(),
        stored.iter().map(Vec::len).sum::<usize>() / stored.len(),
        ids.len()
    );
    println!(
        "{:<16} {:>10} {:>10} {:>10}  (ns per item)",
        "", "min", "median", "max"
    );
    for (name, values) in names.iter().zip(&results) {
        let (min, median, max) = stats(values.clone());
        println!("{name:<16} {min:>10.0} {median:>10.0} {max:>10.0}");
    }
    let ratio = |a: usize, b: usize| {
        stats(
            results[a]
                .iter()
                .zip(&results[b])
                .map(|(x, y)| x / y)
                .collect(),
        )
    };
    let (min, median, max) = ratio(1, 0);
    println!("json+typed / json, per round: {min:.2} / {median:.2} / {max:.2}");
    let (min, median, max) = ratio(4, 0);
    println!("json+derived / json, per round: {min:.2} / {median:.2} / {max:.2}");
    let (min, median, max) = ratio(3, 2);
    println!("StepId::parse / split, per round: {min:.2} / {median:.2} / {max:.2}");
}

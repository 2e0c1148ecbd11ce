//! The indexes answer what a brute-force filter over every record answers: random event
//! logs (several services per release, several environments, event times out of stream
//! order), random filters over every field, read page by page through the cursors of
//! `Reader::records`, compared with `Filter::matches` applied to each record in turn.

use chrono::{DateTime, Duration, Utc};
use railyard_audit::record::Record;
use railyard_audit::{AuditProjection, Filter, Reader};
use railyard_core::event::{
    ApprovalDecision, ApprovalRequested, GateEvaluated, ReleaseCompleted, ReleaseRequested,
    ServiceDeployed, StepStarted,
};
use railyard_core::step::StepId;
use railyard_core::{AggregateId, Change, Envelope, Event};
use railyard_store::{ProjectionStore, StoreConfig};

const SERVICES: [&str; 4] = ["billing", "orders", "search", "ghost"];
const ENVS: [&str; 3] = ["staging", "production", "nowhere"];
const ACTORS: [&str; 4] = ["alice", "bob", "promoter", "nobody"];
const TYPES: [&str; 5] = [
    "release.requested",
    "approval.granted",
    "step.started",
    "gate.evaluated",
    "nothing.here",
];
const FAMILIES: [&str; 5] = ["release", "approval", "step", "service", "none"];

/// splitmix64: every case reproducible from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.below(from.len())]
    }
}

fn base() -> DateTime<Utc> {
    "2026-03-01T00:00:00Z".parse().unwrap()
}

fn change(service: &str) -> Change {
    Change {
        service: service.parse().unwrap(),
        version: "1.0.0".into(),
        artifact: None,
        commit: Some("abc1234".into()),
        branch: Some("main".into()),
        authors: vec!["alice".into()],
        produces: Default::default(),
        consumes: Default::default(),
        provides: Default::default(),
        requires: Default::default(),
        schema: Default::default(),
        migrations: Vec::new(),
        after: Vec::new(),
    }
}

/// One random event: mostly of a few releases (so release-wide events take their scope),
/// some inventory events; its time within two hours, not in stream order.
fn event(rng: &mut Rng) -> Envelope {
    let release = format!("r{}", rng.below(6));
    let service = rng.pick(&SERVICES[..3]);
    let env = rng.pick(&ENVS[..2]);
    let actor = rng.pick(&ACTORS[..3]);
    let at = base() + Duration::seconds(rng.below(7200) as i64);
    let aggregate: AggregateId = format!("release.{release}").parse().unwrap();
    let (aggregate, event) = match rng.below(7) {
        0 => {
            let mut changes = vec![change(service)];
            if rng.below(2) == 0 {
                changes.push(change(rng.pick(&SERVICES[..3])));
            }
            changes.dedup_by(|a, b| a.service == b.service);
            (
                aggregate,
                Event::ReleaseRequested(ReleaseRequested {
                    release: release.parse().unwrap(),
                    requested_by: actor.into(),
                    changes,
                }),
            )
        }
        1 => (
            aggregate,
            Event::ApprovalRequested(ApprovalRequested {
                step: StepId::approve(&env.parse().unwrap(), &release.parse().unwrap()).into(),
                env: env.parse().unwrap(),
                approvers: vec!["alice".into()],
                reason: None,
            }),
        ),
        2 => (
            aggregate,
            Event::ApprovalGranted(ApprovalDecision {
                step: StepId::approve(&env.parse().unwrap(), &release.parse().unwrap()).into(),
                comment: String::new(),
            }),
        ),
        3 => (
            aggregate,
            Event::StepStarted(StepStarted {
                step: StepId::deploy(&env.parse().unwrap(), &service.parse().unwrap()).into(),
                worker: "w1".into(),
                attempt: 1,
            }),
        ),
        4 => (
            aggregate,
            Event::GateEvaluated(GateEvaluated {
                step: StepId::verify(&env.parse().unwrap(), &service.parse().unwrap()).into(),
                gate: "http#0".into(),
                passed: rng.below(2) == 0,
                observed: "200".into(),
                expected: "200".into(),
            }),
        ),
        5 => (
            format!("inventory.{env}").parse().unwrap(),
            Event::ServiceDeployed(ServiceDeployed {
                env: env.parse().unwrap(),
                service: service.parse().unwrap(),
                running: None,
                databases: Default::default(),
                release: Some(release.parse().unwrap()),
            }),
        ),
        _ => (aggregate, Event::ReleaseCompleted(ReleaseCompleted {})),
    };
    Envelope::new(aggregate, actor, at, event)
}

/// A random filter: each field given or not, values sometimes absent from the log.
fn filter(rng: &mut Rng) -> Filter {
    let maybe =
        |rng: &mut Rng, from: &[&str]| (rng.below(3) == 0).then(|| rng.pick(from).to_owned());
    let release = (rng.below(6) == 0).then(|| format!("r{}", rng.below(7)));
    let service = maybe(rng, &SERVICES);
    let env = maybe(rng, &ENVS);
    let actor = maybe(rng, &ACTORS);
    let kind = maybe(rng, &TYPES);
    let family = maybe(rng, &FAMILIES);
    let since = (rng.below(3) == 0).then(|| base() + Duration::seconds(rng.below(7200) as i64));
    let until = (rng.below(3) == 0).then(|| base() + Duration::seconds(rng.below(7200) as i64));
    Filter {
        release,
        service,
        env,
        actor,
        kind,
        family,
        since,
        until,
    }
}

/// What the old reader answered: every record that matches, a release's in stream order,
/// any other query's by time, then stream order.
fn brute_force(records: &[Record], filter: &Filter) -> Vec<u64> {
    let mut matching: Vec<&Record> = records
        .iter()
        .filter(|record| filter.matches(&record.facets))
        .collect();
    if filter.release.is_none() {
        matching.sort_by_key(|record| (record.facets.at, record.n));
    }
    matching.iter().map(|record| record.n).collect()
}

/// Every page of `filter`'s answer, `limit` at a time, through the cursors.
async fn paged(reader: &Reader, filter: &Filter, limit: usize) -> Vec<u64> {
    let mut numbers = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10_000 {
        let page = reader
            .records(filter, cursor.as_deref(), limit)
            .await
            .expect("the query runs");
        assert!(page.items.len() <= limit);
        numbers.extend(page.items.iter().map(|record| record.n));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return numbers,
        }
    }
    panic!("{filter:?} never reached its last page");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_indexes_answer_what_filtering_every_record_answers() {
    for seed in [1u64, 2, 3] {
        let mut rng = Rng(seed);
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = ProjectionStore::open(
            StoreConfig::new(dir.path().join("audit")).flush_every(None),
            AuditProjection,
        )
        .await
        .expect("the store opens");
        let mut sequence = 0;
        while sequence < 400 {
            sequence += 1;
            let envelopes = (0..1 + rng.below(3)).map(|_| event(&mut rng)).collect();
            store
                .apply(sequence, envelopes)
                .await
                .expect("the delivery applies");
        }
        let reader = Reader::new(store);
        let head = reader.head().await.expect("the head reads");
        let mut records = Vec::new();
        for n in 1..=head.n {
            records.push(
                reader
                    .record(n)
                    .await
                    .unwrap()
                    .expect("every record exists"),
            );
        }
        let mut nonempty = 0;
        for _ in 0..100 {
            let filter = filter(&mut rng);
            let expected = brute_force(&records, &filter);
            nonempty += usize::from(!expected.is_empty());
            for limit in [3, 1000] {
                assert_eq!(
                    paged(&reader, &filter, limit).await,
                    expected,
                    "seed {seed}, limit {limit}, {filter:?}"
                );
            }
        }
        // The case is worth something only if many filters find records.
        assert!(
            nonempty > 30,
            "seed {seed}: only {nonempty} filters matched anything"
        );
    }
}

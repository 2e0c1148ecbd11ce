//! The audit record and its tamper evidence: one [`Record`] per event, holding the event's
//! canonical JSON, the facets it is indexed by, its stream position and the hash chain link
//! (`prev` is the previous record's `hash`; `hash` covers every other field of the record).
//! Facets are read from the typed event (railyard-core's [`Event`]) by one exhaustive match,
//! so an event type added or a field renamed fails to compile here instead of silently
//! leaving an index empty.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use railyard_core::step::StepId;
use railyard_core::{Action, AggregateId, EnvName, Envelope, Event, ReleaseId, ServiceName};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The `prev` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Domain separation for record hashes; bump it if the hashed layout ever changes.
const HASH_DOMAIN: &[u8] = b"railyard-audit/1\n";

/// One audited event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Position in the audit record, 1-based and gapless.
    pub n: u64,
    /// The stream sequence of the append that carried the event.
    pub sequence: u64,
    /// The event's position within that append (0-based).
    pub index: u32,
    /// The previous record's hash ([`GENESIS`] for the first).
    pub prev: String,
    /// SHA-256 over the record's canonical JSON without this field.
    pub hash: String,
    /// What the record is indexed by.
    pub facets: Facets,
    /// The event envelope as canonical JSON.
    pub envelope: Value,
}

/// What a record is about, derived from its event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Facets {
    /// The event's dotted type name (`step.started`).
    #[serde(rename = "type")]
    pub kind: String,
    /// The type's first segment (`step`).
    pub family: String,
    /// The aggregate (`release.rel-42`).
    pub aggregate: String,
    /// Who caused it.
    pub actor: String,
    /// When it happened.
    pub at: DateTime<Utc>,
    /// The release it concerns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
    /// The services it concerns, sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<String>,
    /// The environments it concerns, sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub envs: Vec<String>,
}

/// What the audit knows about a release while projecting: the services and environments it
/// touches, so release-wide events (`release.completed`) are indexed under them too.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseScope {
    /// Services of its changes and steps.
    pub services: BTreeSet<String>,
    /// Environments of its plan and steps.
    pub envs: BTreeSet<String>,
}

impl ReleaseScope {
    /// Widens the scope with what `facets` touches (only for the release's own events).
    pub fn widen(&mut self, facets: &Facets) {
        self.services.extend(facets.services.iter().cloned());
        self.envs.extend(facets.envs.iter().cloned());
    }
}

fn str_at<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    value.get(key).and_then(Value::as_str)
}

/// The release an envelope's aggregate names, if it is a release's.
pub(crate) fn release_of_aggregate(aggregate: &str) -> Option<&str> {
    aggregate.strip_prefix("release.")
}

/// What an event's payload says it concerns.
#[derive(Default)]
struct Concerns<'a> {
    release: Option<&'a ReleaseId>,
    services: Vec<&'a ServiceName>,
    envs: Vec<&'a EnvName>,
    step: Option<&'a str>,
}

/// Reads what `event` concerns. Exhaustive on purpose: a new event type must say here what
/// it is indexed by.
fn concerns(event: &Event) -> Concerns<'_> {
    let mut c = Concerns::default();
    match event {
        Event::ReleaseRequested(r) => {
            c.release = Some(&r.release);
            c.services
                .extend(r.changes.iter().map(|change| &change.service));
        }
        Event::ReleasePlanned(p) => c.envs.extend(p.plan.steps.iter().map(|step| &step.env)),
        Event::ReleaseHeld(h) => c.step = h.step.as_deref(),
        Event::StepWaiting(w) => c.step = Some(&w.step),
        Event::StepStarted(s) => c.step = Some(&s.step),
        Event::GateEvaluated(g) => c.step = Some(&g.step),
        Event::StepSucceeded(o) | Event::StepFailed(o) | Event::StepRolledBack(o) => {
            c.step = Some(&o.step)
        }
        Event::ApprovalRequested(a) => {
            c.step = Some(&a.step);
            c.envs.push(&a.env);
        }
        Event::ApprovalGranted(d) | Event::ApprovalDenied(d) => c.step = Some(&d.step),
        Event::FreezeOverridden(f) => c.envs.push(&f.env),
        Event::ColourRetired(r) => c.step = Some(&r.step),
        Event::ServiceDeployed(d) => {
            c.release = d.release.as_ref();
            c.services.push(&d.service);
            c.envs.push(&d.env);
        }
        Event::ArtifactPublished(a) => c.release = a.release.as_ref(),
        Event::IncidentOpened(i) => {
            c.envs.push(&i.env);
            c.services.extend(&i.service);
        }
        Event::IncidentResolved(i) => {
            c.envs.push(&i.env);
            c.services.extend(&i.service);
        }
        Event::ReleaseRejected(_)
        | Event::ReleaseCancelled(_)
        | Event::ReleaseResumed(_)
        | Event::ReleaseCompleted(_)
        | Event::ReleaseRolledBack(_)
        | Event::CatalogApplied(_)
        | Event::SuiteFinished(_)
        | Event::CommitsPushed(_)
        | Event::AuditCheckpoint(_) => {}
    }
    c
}

/// The facets of `envelope`. `scope` is what is known of its release when the envelope
/// belongs to a release aggregate.
pub fn facets(envelope: &Envelope, scope: Option<&ReleaseScope>) -> Facets {
    facets_of(
        &envelope.aggregate,
        &envelope.actor,
        envelope.occurred_at,
        &envelope.event,
        scope,
    )
}

/// The envelope fields facets read besides the event.
#[derive(Deserialize)]
struct Meta {
    aggregate: AggregateId,
    actor: String,
    occurred_at: DateTime<Utc>,
}

/// The facets of a stored envelope (its JSON form), read as the typed event it holds: what
/// `audit verify` compares a record's facets with. Fails when the JSON is not an event of
/// this version.
pub fn derive_facets(
    envelope: &Value,
    scope: Option<&ReleaseScope>,
) -> Result<Facets, serde_json::Error> {
    let meta = Meta::deserialize(envelope)?;
    let event = Event::from_envelope_json(envelope)?;
    Ok(facets_of(
        &meta.aggregate,
        &meta.actor,
        meta.occurred_at,
        &event,
        scope,
    ))
}

fn facets_of(
    aggregate: &AggregateId,
    actor: &str,
    at: DateTime<Utc>,
    event: &Event,
    scope: Option<&ReleaseScope>,
) -> Facets {
    let kind = event.type_name().to_owned();
    let family = kind.split('.').next().unwrap_or_default().to_owned();
    let concerns = concerns(event);
    let mut services: BTreeSet<String> = concerns.services.iter().map(|s| s.to_string()).collect();
    let mut envs: BTreeSet<String> = concerns.envs.iter().map(|e| e.to_string()).collect();
    let own_release = match aggregate {
        AggregateId::Release(release) => Some(release),
        AggregateId::Signal(service) => {
            services.insert(service.to_string());
            None
        }
        AggregateId::Inventory(env) | AggregateId::Incident(env) => {
            envs.insert(env.to_string());
            None
        }
        AggregateId::Catalog | AggregateId::Audit => None,
    };
    let release = own_release.or(concerns.release).map(ReleaseId::to_string);
    // A step id this version cannot read concerns no environment or service.
    let step = concerns.step.map(|step| StepId::parse(step).ok());
    if let Some(Some(step)) = &step {
        envs.insert(step.env().to_string());
        if let Some(service) = step.service() {
            services.insert(service.to_string());
        }
    }
    if let (Some(_), Some(scope)) = (own_release, scope) {
        match &step {
            // A release-wide event concerns everything the release touches.
            None => {
                services.extend(scope.services.iter().cloned());
                envs.extend(scope.envs.iter().cloned());
            }
            // An approval gates every service of the release in its environment.
            Some(Some(step)) if step.action() == Action::Approve => {
                services.extend(scope.services.iter().cloned())
            }
            Some(_) => {}
        }
    }
    Facets {
        kind,
        family,
        aggregate: aggregate.to_string(),
        actor: actor.to_owned(),
        at,
        release,
        services: services.into_iter().collect(),
        envs: envs.into_iter().collect(),
    }
}

/// Writes `value` as canonical JSON: object keys sorted bytewise, no whitespace, serde_json's
/// number and string escaping.
pub fn canonical_json(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => canonical_object(map, None, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical_json(item, out);
            }
            out.push(b']');
        }
        scalar => write_scalar(scalar, out),
    }
}

/// An object as canonical JSON, without the key `skip`.
fn canonical_object(map: &serde_json::Map<String, Value>, skip: Option<&str>, out: &mut Vec<u8>) {
    let mut keys: Vec<&String> = map
        .keys()
        .filter(|key| Some(key.as_str()) != skip)
        .collect();
    keys.sort();
    out.push(b'{');
    for (i, key) in keys.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        // A key serializes as a JSON string; writing one into a Vec cannot fail.
        serde_json::to_writer(&mut *out, key).expect("a JSON string serializes");
        out.push(b':');
        canonical_json(&map[key], out);
    }
    out.push(b'}');
}

fn write_scalar(value: &Value, out: &mut Vec<u8>) {
    // Writing a scalar JSON value into a Vec cannot fail.
    serde_json::to_writer(out, value).expect("a JSON scalar serializes");
}

/// Canonical JSON bytes of `value`.
pub fn canonical_bytes(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    canonical_json(value, &mut out);
    out
}

/// The hash of a record given as JSON: SHA-256 over its canonical form without `hash`.
pub fn record_hash(record: &Value) -> String {
    let mut body = Vec::with_capacity(1024);
    match record {
        Value::Object(map) => canonical_object(map, Some("hash"), &mut body),
        other => canonical_json(other, &mut body),
    }
    let mut hasher = Sha256::new();
    hasher.update(HASH_DOMAIN);
    hasher.update(body);
    hex::encode(hasher.finalize())
}

impl Record {
    /// Builds record `n` for the event `envelope` (JSON) at `sequence`/`index`, chained to
    /// `prev`, and returns it with its canonical stored bytes.
    pub fn seal(
        n: u64,
        sequence: u64,
        index: u32,
        prev: String,
        facets: Facets,
        envelope: Value,
    ) -> (Record, Vec<u8>) {
        let mut record = Record {
            n,
            sequence,
            index,
            prev,
            hash: String::new(),
            facets,
            envelope,
        };
        let mut value = serde_json::to_value(&record).expect("a record serializes");
        record.hash = record_hash(&value);
        if let Value::Object(map) = &mut value {
            map.insert("hash".into(), Value::String(record.hash.clone()));
        }
        (record, canonical_bytes(&value))
    }

    /// The event id, when the envelope has one.
    pub fn event_id(&self) -> Option<&str> {
        str_at(&self.envelope, "event_id")
    }

    /// The event's payload, as stored.
    pub fn data(&self) -> &Value {
        self.envelope.get("data").unwrap_or(&Value::Null)
    }

    /// The stored event, typed; fails when it is not an event of this version.
    pub fn event(&self) -> Result<Event, serde_json::Error> {
        Event::from_envelope_json(&self.envelope)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_json_sorts_keys_at_every_depth() {
        let value = json!({"b": 1, "a": {"d": [true, null, "x\"y"], "c": 1.5}});
        assert_eq!(
            String::from_utf8(canonical_bytes(&value)).unwrap(),
            r#"{"a":{"c":1.5,"d":[true,null,"x\"y"]},"b":1}"#
        );
    }

    /// How facets were derived before they were read from the typed event: from the
    /// envelope's JSON by key. Kept here as the reference the typed reading must match, so
    /// the records (and hashes) an older version wrote still verify.
    fn json_facets(envelope: &Value, scope: Option<&ReleaseScope>) -> Facets {
        let kind = str_at(envelope, "type").unwrap_or("unknown").to_owned();
        let family = kind.split('.').next().unwrap_or_default().to_owned();
        let aggregate = str_at(envelope, "aggregate").unwrap_or_default().to_owned();
        let actor = str_at(envelope, "actor").unwrap_or_default().to_owned();
        let at = str_at(envelope, "occurred_at")
            .and_then(|at| DateTime::parse_from_rfc3339(at).ok())
            .map(|at| at.with_timezone(&Utc))
            .unwrap_or_default();
        let data = envelope.get("data").unwrap_or(&Value::Null);
        let mut services = BTreeSet::new();
        let mut envs = BTreeSet::new();
        let own_release = release_of_aggregate(&aggregate);
        let release = own_release
            .or_else(|| str_at(data, "release"))
            .map(str::to_owned);
        if let Some((kind, id)) = aggregate.split_once('.') {
            match kind {
                "signal" => {
                    services.insert(id.to_owned());
                }
                "inventory" | "incident" => {
                    envs.insert(id.to_owned());
                }
                _ => {}
            }
        }
        if let Some(service) = str_at(data, "service") {
            services.insert(service.to_owned());
        }
        for key in ["env", "environment"] {
            if let Some(env) = str_at(data, key) {
                envs.insert(env.to_owned());
            }
        }
        if let Some(changes) = data.get("changes").and_then(Value::as_array) {
            services.extend(
                changes
                    .iter()
                    .filter_map(|change| str_at(change, "service"))
                    .map(str::to_owned),
            );
        }
        if let Some(steps) = data.pointer("/plan/steps").and_then(Value::as_array) {
            envs.extend(
                steps
                    .iter()
                    .filter_map(|step| str_at(step, "env"))
                    .map(str::to_owned),
            );
        }
        let step = str_at(data, "step").and_then(|step| {
            let mut parts = step.splitn(3, ':');
            Some((parts.next()?, parts.next()?, parts.next()?))
        });
        if let Some((env, action, target)) = step {
            envs.insert(env.to_owned());
            if matches!(action, "deploy" | "verify") {
                services.insert(target.to_owned());
            }
        }
        if let (Some(_), Some(scope)) = (own_release, scope) {
            match step {
                None => {
                    services.extend(scope.services.iter().cloned());
                    envs.extend(scope.envs.iter().cloned());
                }
                Some((_, "approve", _)) => services.extend(scope.services.iter().cloned()),
                Some(_) => {}
            }
        }
        Facets {
            kind,
            family,
            aggregate,
            actor,
            at,
            release,
            services: services.into_iter().collect(),
            envs: envs.into_iter().collect(),
        }
    }

    /// One event of every type (and the shapes that index differently), as
    /// `(aggregate, type, data)`.
    fn corpus() -> Vec<(&'static str, &'static str, Value)> {
        let origin = json!({"door": "http", "id": "d1", "source": "ci"});
        let change = json!({"service": "orders-api", "version": "2.4.0"});
        let plan = json!({"release": "r1", "catalog_hash": "sha256:00",
            "steps": [
                {"id": "staging:deploy:orders-api", "env": "staging", "action": "deploy", "target": "orders-api"},
                {"id": "production:approve:r1", "env": "production", "action": "approve", "target": "r1"}],
            "edges": [], "waves": [], "critical_path": []});
        vec![
            (
                "release.r1",
                "release.requested",
                json!({"release": "r1", "requested_by": "carol",
                "changes": [change, {"service": "billing", "version": "1"}]}),
            ),
            ("release.r1", "release.planned", json!({"plan": plan})),
            (
                "release.r1",
                "release.rejected",
                json!({"catalog_hash": "x", "reasons": [
                {"rule": "queue", "env": "production", "reason": "r", "remedy": "m"}]}),
            ),
            ("release.r1", "release.cancelled", json!({"reason": "no"})),
            (
                "release.r1",
                "release.held",
                json!({"reason": "gate failed",
                "step": "production:verify:orders-api", "owner": "team-orders"}),
            ),
            (
                "release.r1",
                "release.held",
                json!({"reason": "frozen", "frozen": "production"}),
            ),
            ("release.r1", "release.resumed", json!({"reason": "go"})),
            ("release.r1", "release.completed", json!({})),
            (
                "release.r1",
                "release.rolled_back",
                json!({"reason": "bad",
                "undone": ["production:deploy:orders-api"]}),
            ),
            (
                "release.r1",
                "step.waiting",
                json!({"step": "production:deploy:orders-api",
                "waiting_for": ["r0"], "reason": "r0 is being undone in production"}),
            ),
            (
                "release.r1",
                "step.started",
                json!({"step": "production:deploy:orders-api",
                "worker": "w1", "attempt": 1}),
            ),
            (
                "release.r1",
                "step.started",
                json!({"step": "staging:migrate:orders-db@43",
                "worker": "w1", "attempt": 1}),
            ),
            (
                "release.r1",
                "step.started",
                json!({"step": "production:approve:r1",
                "worker": "w1", "attempt": 1}),
            ),
            (
                "release.r1",
                "gate.evaluated",
                json!({"step": "production:verify:orders-api",
                "gate": "http", "passed": false, "observed": "500", "expected": "200"}),
            ),
            (
                "release.r1",
                "step.succeeded",
                json!({"step": "production:verify:orders-api"}),
            ),
            (
                "release.r1",
                "step.failed",
                json!({"step": "staging:migrate:orders-db@43",
                "detail": "exit 1"}),
            ),
            (
                "release.r1",
                "step.rolled_back",
                json!({"step": "production:deploy:orders-api"}),
            ),
            (
                "release.r1",
                "approval.requested",
                json!({"step": "production:approve:orders-db@44",
                "env": "production", "approvers": ["alice"], "reason": "no way back"}),
            ),
            (
                "release.r1",
                "approval.granted",
                json!({"step": "production:approve:r1",
                "comment": "ok"}),
            ),
            (
                "release.r1",
                "approval.denied",
                json!({"step": "production:approve:r1"}),
            ),
            (
                "release.r1",
                "freeze.overridden",
                json!({"env": "production", "reason": "fire"}),
            ),
            (
                "release.r1",
                "colour.retired",
                json!({"step": "production:deploy:orders-api",
                "colour": "blue", "ok": true, "detail": ""}),
            ),
            (
                "inventory.production",
                "service.deployed",
                json!({"env": "production",
                "service": "orders-api", "running": {"version": "2.4.0", "commit": "abc"},
                "release": "r1"}),
            ),
            (
                "inventory.production",
                "service.deployed",
                json!({"env": "production",
                "service": "orders-api", "running": null}),
            ),
            ("catalog", "catalog.applied", json!({"hash": "sha256:01"})),
            (
                "signal.orders-api",
                "change.artifact_published",
                json!({"change": change,
                "release": "r2", "expected_changes": ["billing"], "origin": origin}),
            ),
            (
                "signal.orders-api",
                "change.suite_finished",
                json!({"suite": "unit",
                "passed": true, "outcome": "success", "origin": origin}),
            ),
            (
                "signal.orders-api",
                "change.commits_pushed",
                json!({"branch": "main",
                "before": "a", "after": "b", "origin": origin}),
            ),
            (
                "incident.production",
                "incident.opened",
                json!({"incident": "i1",
                "env": "production", "service": "auth", "origin": origin}),
            ),
            (
                "incident.staging",
                "incident.resolved",
                json!({"incident": "i1",
                "env": "staging", "origin": origin}),
            ),
            (
                "audit",
                "audit.checkpoint",
                json!({"records": 3, "head": "00", "sequence": 9,
                "from": 1, "digests": [], "sealed_at": "2026-01-01T00:00:00Z",
                "key_id": "k", "signature": "s"}),
            ),
        ]
    }

    fn envelope(aggregate: &str, kind: &str, data: Value) -> Envelope {
        serde_json::from_value(json!({
            "event_id": "01890000-0000-7000-8000-000000000001",
            "aggregate": aggregate,
            "occurred_at": "2026-01-01T00:00:00.123456789Z",
            "actor": "w1",
            "correlation_id": "01890000-0000-7000-8000-000000000001",
            "schema_version": 1,
            "type": kind,
            "data": data,
        }))
        .unwrap_or_else(|error| panic!("{kind}: {error}"))
    }

    #[test]
    fn typed_facets_are_those_the_json_gave() {
        let scope = ReleaseScope {
            services: ["orders-api".to_owned(), "billing".to_owned()].into(),
            envs: ["production".to_owned(), "staging".to_owned()].into(),
        };
        let mut kinds = BTreeSet::new();
        for (aggregate, kind, data) in corpus() {
            let envelope = envelope(aggregate, kind, data);
            let stored = serde_json::to_value(&envelope).unwrap();
            for scope in [None, Some(&scope)] {
                let typed = facets(&envelope, scope);
                assert_eq!(typed, json_facets(&stored, scope), "{stored}");
                assert_eq!(typed, derive_facets(&stored, scope).unwrap(), "{stored}");
            }
            kinds.insert(kind.to_owned());
        }
        let schemas =
            std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas/events"))
                .unwrap()
                .filter_map(|entry| {
                    let name = entry.ok()?.file_name().into_string().ok()?;
                    let kind = name.strip_suffix(".schema.json")?;
                    (kind != "envelope").then(|| kind.to_owned())
                })
                .collect::<BTreeSet<_>>();
        assert_eq!(kinds, schemas, "the corpus holds one event of every type");
    }

    #[test]
    fn facets_name_what_the_event_concerns() {
        let scope = ReleaseScope {
            services: ["a".to_owned(), "b".to_owned()].into(),
            envs: ["production".to_owned()].into(),
        };
        let cases = [
            (
                envelope(
                    "release.r1",
                    "step.started",
                    json!({"step": "production:deploy:orders-api", "worker": "w1", "attempt": 1}),
                ),
                (Some("r1"), vec!["orders-api"], vec!["production"]),
            ),
            (
                envelope(
                    "signal.billing",
                    "change.suite_finished",
                    json!({"suite": "unit", "passed": true, "outcome": "success",
                           "origin": {"door": "http", "id": "d1", "source": "ci"}}),
                ),
                (None, vec!["billing"], vec![]),
            ),
            (
                envelope(
                    "incident.staging",
                    "incident.opened",
                    json!({"incident": "i1", "env": "staging", "service": "auth",
                           "origin": {"door": "http", "id": "d1", "source": "ci"}}),
                ),
                (None, vec!["auth"], vec!["staging"]),
            ),
            (
                envelope("release.r1", "release.completed", json!({})),
                (Some("r1"), vec!["a", "b"], vec!["production"]),
            ),
            (
                envelope(
                    "release.r1",
                    "approval.granted",
                    json!({"step": "staging:approve:r1"}),
                ),
                (Some("r1"), vec!["a", "b"], vec!["staging"]),
            ),
        ];
        for (envelope, (release, services, envs)) in cases {
            let facets = facets(&envelope, Some(&scope));
            assert_eq!(facets.release.as_deref(), release, "{envelope:?}");
            assert_eq!(facets.services, services, "{envelope:?}");
            assert_eq!(facets.envs, envs, "{envelope:?}");
        }
    }

    #[test]
    fn the_hash_is_the_canonical_form_without_the_top_level_hash() {
        let record = json!({"n": 1, "hash": "x", "prev": "p\u{e9}\"\n",
            "envelope": {"hash": "kept", "data": {"b": [1, {"z": null, "a": 2.5}], "a": "é"}}});
        let mut body = record.clone();
        body.as_object_mut().unwrap().remove("hash");
        let mut hasher = Sha256::new();
        hasher.update(HASH_DOMAIN);
        hasher.update(canonical_bytes(&body));
        assert_eq!(record_hash(&record), hex::encode(hasher.finalize()));
    }

    #[test]
    fn a_sealed_record_hashes_everything_but_its_hash() {
        let envelope = envelope("catalog", "catalog.applied", json!({"hash": "h"}));
        let (record, bytes) = Record::seal(
            1,
            7,
            0,
            GENESIS.into(),
            facets(&envelope, None),
            serde_json::to_value(&envelope).unwrap(),
        );
        let stored: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(record_hash(&stored), record.hash);
        let mut edited = stored.clone();
        edited["sequence"] = json!(8);
        assert_ne!(record_hash(&edited), record.hash);
    }
}

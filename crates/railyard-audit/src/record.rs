//! The audit record and its tamper evidence: one [`Record`] per event, holding the event's
//! canonical JSON, the facets it is indexed by, its stream position and the hash chain link
//! (`prev` is the previous record's `hash`; `hash` covers every other field of the record).
//! Facets are derived from the event's JSON alone, so event types added later are recorded
//! and indexed without code here.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
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

/// A step id taken apart: `<env>:<action>:<target>`.
pub(crate) fn split_step(step: &str) -> Option<(&str, &str, &str)> {
    let mut parts = step.splitn(3, ':');
    Some((parts.next()?, parts.next()?, parts.next()?))
}

fn str_at<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    value.get(key).and_then(Value::as_str)
}

/// The release an envelope's aggregate names, if it is a release's.
pub(crate) fn release_of_aggregate(aggregate: &str) -> Option<&str> {
    aggregate.strip_prefix("release.")
}

/// Derives the facets of `envelope` (its JSON form). `scope` is what is known of its release
/// when the envelope belongs to a release aggregate.
pub fn derive_facets(envelope: &Value, scope: Option<&ReleaseScope>) -> Facets {
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
    for key in ["service"] {
        if let Some(service) = str_at(data, key) {
            services.insert(service.to_owned());
        }
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
    let step = str_at(data, "step").and_then(split_step);
    if let Some((env, action, target)) = step {
        envs.insert(env.to_owned());
        if matches!(action, "deploy" | "verify") {
            services.insert(target.to_owned());
        }
    }
    if let (Some(_), Some(scope)) = (own_release, scope) {
        match step {
            // A release-wide event concerns everything the release touches.
            None => {
                services.extend(scope.services.iter().cloned());
                envs.extend(scope.envs.iter().cloned());
            }
            // An approval gates every service of the release in its environment.
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

    /// The event's payload.
    pub fn data(&self) -> &Value {
        self.envelope.get("data").unwrap_or(&Value::Null)
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

    #[test]
    fn facets_come_from_the_json_alone() {
        let cases = [
            (
                json!({"type": "step.started", "aggregate": "release.r1", "actor": "w1",
                       "occurred_at": "2026-01-01T00:00:00Z",
                       "data": {"step": "production:deploy:orders-api"}}),
                (Some("r1"), vec!["orders-api"], vec!["production"]),
            ),
            (
                json!({"type": "signal.suite_passed", "aggregate": "signal.billing", "actor": "ci",
                       "occurred_at": "2026-01-01T00:00:00Z", "data": {"suite": "unit"}}),
                (None, vec!["billing"], vec![]),
            ),
            (
                json!({"type": "incident.opened", "aggregate": "incident.staging", "actor": "pager",
                       "occurred_at": "2026-01-01T00:00:00Z", "data": {"service": "auth"}}),
                (None, vec!["auth"], vec!["staging"]),
            ),
            (
                json!({"type": "release.completed", "aggregate": "release.r1", "actor": "promoter",
                       "occurred_at": "2026-01-01T00:00:00Z", "data": {}}),
                (Some("r1"), vec!["a", "b"], vec!["production"]),
            ),
        ];
        let scope = ReleaseScope {
            services: ["a".to_owned(), "b".to_owned()].into(),
            envs: ["production".to_owned()].into(),
        };
        for (envelope, (release, services, envs)) in cases {
            let facets = derive_facets(&envelope, Some(&scope));
            assert_eq!(facets.release.as_deref(), release, "{envelope}");
            assert_eq!(facets.services, services, "{envelope}");
            assert_eq!(facets.envs, envs, "{envelope}");
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
        let facets = derive_facets(&json!({"type": "catalog.applied"}), None);
        let (record, bytes) = Record::seal(
            1,
            7,
            0,
            GENESIS.into(),
            facets,
            json!({"type": "catalog.applied"}),
        );
        let stored: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(record_hash(&stored), record.hash);
        let mut edited = stored.clone();
        edited["sequence"] = json!(8);
        assert_ne!(record_hash(&edited), record.hash);
    }
}

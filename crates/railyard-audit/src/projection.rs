//! [`AuditProjection`]: turns every event of the stream into one hash-chained [`Record`] with
//! its index entries. Any event type is recorded and indexed from its JSON; only
//! `service.deployed` (running commits, for commit ranges) and the start of deploy steps
//! (one entry per deployment, for the production change report) are interpreted, and
//! `audit.checkpoint`, whose latest plausible one the sealer starts from.

use chrono::{DateTime, Utc};
use railyard_core::Envelope;
use railyard_store::{Projection, ProjectionError, Update};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::keys;
use crate::record::{
    GENESIS, Record, ReleaseScope, derive_facets, release_of_aggregate, split_step,
};
use crate::releases::ReleaseSummary;
use crate::seal::CHECKPOINT_TYPE;

/// The projection's name, which names its tree.
pub const PROJECTION_NAME: &str = "audit";

/// The end of the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    /// The last record's number (0: no record yet).
    pub n: u64,
    /// Its hash ([`GENESIS`] when there is none).
    pub hash: String,
    /// Its stream sequence.
    pub sequence: u64,
}

impl Default for Head {
    fn default() -> Head {
        Head {
            n: 0,
            hash: GENESIS.to_owned(),
            sequence: 0,
        }
    }
}

/// One deployment, written when its deploy step first starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    /// The release.
    pub release: String,
    /// The environment.
    pub env: String,
    /// The service.
    pub service: String,
    /// The deploy step.
    pub step: String,
    /// The record of the first `step.started`.
    pub n: u64,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// The commit running in the environment when it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_commit: Option<String>,
}

/// The audit projection. It keeps no state outside its tree.
#[derive(Debug, Default)]
pub struct AuditProjection;

fn encode(error: serde_json::Error) -> ProjectionError {
    ProjectionError::Encode {
        key: "audit record".into(),
        source: error,
    }
}

impl AuditProjection {
    fn record_one(
        update: &mut Update<'_>,
        head: &mut Head,
        sequence: u64,
        index: u32,
        envelope: &Envelope,
    ) -> Result<(), ProjectionError> {
        let value = serde_json::to_value(envelope).map_err(encode)?;
        let aggregate = envelope.aggregate.to_string();
        let own_release = release_of_aggregate(&aggregate).map(str::to_owned);
        let mut scope = match &own_release {
            Some(release) => Some(
                update
                    .get_json::<ReleaseScope>(keys::scope(release))?
                    .unwrap_or_default(),
            ),
            None => None,
        };
        let mut facets = derive_facets(&value, scope.as_ref());
        // An authority event no trusted writer sealed (see railyard_core::authority) stays in
        // the record, as the stream holds it, but under its own type: no query counts it as
        // an approval, a step or a decision, and `type=refused:approval.granted` finds the
        // attempts.
        let refused = envelope.untrusted.is_some();
        if refused {
            facets.kind = format!("refused:{}", facets.kind);
            facets.family = "refused".to_owned();
        }
        let n = head.n + 1;
        let (record, bytes) = Record::seal(
            n,
            sequence,
            index,
            std::mem::take(&mut head.hash),
            facets,
            value,
        );
        update.put(keys::record(n), bytes);
        index_record(update, &record);
        if let (false, Some(release), Some(scope)) = (refused, &own_release, &mut scope) {
            let before = scope.clone();
            scope.widen(&record.facets);
            if *scope != before {
                update.put_json(keys::scope(release), scope)?;
            }
            let key = keys::release_summary(release);
            let before = update.get_json::<ReleaseSummary>(&key)?;
            let first = before.is_none();
            if let Some(summary) = ReleaseSummary::apply(before, envelope) {
                if first {
                    update.put(
                        keys::release_list_entry(summary.requested_at.timestamp_micros(), release),
                        Vec::new(),
                    );
                }
                update.put_json(key, &summary)?;
            }
        }
        if !refused {
            interpret(update, &record)?;
        }
        *head = Head {
            n,
            hash: record.hash,
            sequence,
        };
        Ok(())
    }
}

/// The index keys of `record`.
pub(crate) fn index_entries(record: &Record) -> Vec<Vec<u8>> {
    let facets = &record.facets;
    let at = facets.at.timestamp_micros();
    let n = record.n;
    let mut entries = Vec::with_capacity(8 + facets.services.len() * (2 + facets.envs.len()));
    if let Some(release) = &facets.release {
        entries.push(keys::release_index(release).u64(n).into_vec());
    }
    entries.push(keys::time_index("time", &[]).i64(at).u64(n).into_vec());
    let mut single = |dim: &str, value: &str| {
        entries.push(keys::time_index(dim, &[value]).i64(at).u64(n).into_vec());
    };
    single("actor", &facets.actor);
    single("type", &facets.kind);
    single("family", &facets.family);
    for service in &facets.services {
        single("service", service);
    }
    for env in &facets.envs {
        single("env", env);
    }
    for service in &facets.services {
        for env in &facets.envs {
            entries.push(
                keys::time_index("service-env", &[service, env])
                    .i64(at)
                    .u64(n)
                    .into_vec(),
            );
        }
    }
    entries
}

/// Writes `record`'s index entries, each holding the record's [`keys::Digest`].
fn index_record(update: &mut Update<'_>, record: &Record) {
    let digest = keys::Digest::of(&record.facets).to_bytes();
    for key in index_entries(record) {
        update.put(key, digest.to_vec());
    }
}

/// The few event types the read side needs more than facets of.
fn interpret(update: &mut Update<'_>, record: &Record) -> Result<(), ProjectionError> {
    let data = record.data();
    match record.facets.kind.as_str() {
        CHECKPOINT_TYPE => crate::sealer::record_checkpoint(update, record)?,
        "service.deployed" => {
            let (Some(env), Some(service)) = (
                data.get("env").and_then(Value::as_str),
                data.get("service").and_then(Value::as_str),
            ) else {
                return Ok(());
            };
            match data.pointer("/running/commit").and_then(Value::as_str) {
                Some(commit) => update.put(keys::inventory(env, service), commit.as_bytes()),
                None => update.remove(keys::inventory(env, service)),
            }
        }
        "step.started" => {
            let (Some(release), Some(step)) = (
                record.facets.release.as_deref(),
                data.get("step").and_then(Value::as_str),
            ) else {
                return Ok(());
            };
            let Some((env, "deploy", service)) = split_step(step) else {
                return Ok(());
            };
            let mark = keys::deployment_mark(release, step);
            if update.get(&mark)?.is_some() {
                return Ok(());
            }
            update.put(mark, Vec::new());
            let from_commit = update
                .get(keys::inventory(env, service))?
                .map(|commit| String::from_utf8_lossy(&commit).into_owned());
            let deployment = Deployment {
                release: release.to_owned(),
                env: env.to_owned(),
                service: service.to_owned(),
                step: step.to_owned(),
                n: record.n,
                started_at: record.facets.at,
                from_commit,
            };
            update.put_json(
                keys::deployment(env, record.facets.at.timestamp_micros(), record.n),
                &deployment,
            )?;
        }
        _ => {}
    }
    Ok(())
}

impl Projection for AuditProjection {
    fn name(&self) -> &str {
        PROJECTION_NAME
    }

    /// The record keeps every event the stream holds, those that do not count too.
    fn sees_untrusted(&self) -> bool {
        true
    }

    fn apply(
        &mut self,
        update: &mut Update<'_>,
        sequence: u64,
        envelopes: &[Envelope],
    ) -> Result<(), ProjectionError> {
        let mut head: Head = update.get_json(keys::head())?.unwrap_or_default();
        for (index, envelope) in envelopes.iter().enumerate() {
            let index = u32::try_from(index).map_err(|_| {
                ProjectionError::rejected(
                    "an append holds more than 4 billion events: split it into smaller appends",
                )
            })?;
            AuditProjection::record_one(update, &mut head, sequence, index, envelope)?;
        }
        if !envelopes.is_empty() {
            update.put_json(keys::head(), &head)?;
        }
        Ok(())
    }
}

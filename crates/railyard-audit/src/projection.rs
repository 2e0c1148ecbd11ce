//! [`AuditProjection`]: turns every event of the stream into one hash-chained [`Record`] with
//! its index entries. It folds the typed events (railyard-core's [`Event`]): the facets an
//! event is indexed by come from one exhaustive match (`record.rs`); `service.deployed`
//! (running commits, for commit ranges) and the start of deploy steps (one entry per
//! deployment, for the production change report) are interpreted, and `audit.checkpoint`,
//! whose latest plausible one the sealer starts from. The record stores the event's JSON as
//! it was, so its hash does not depend on this code.

use chrono::{DateTime, Utc};
use railyard_core::step::StepId;
use railyard_core::{Action, AggregateId, Envelope, Event};
use railyard_store::{Projection, ProjectionError, Update};
use serde::{Deserialize, Serialize};

use crate::keys;
use crate::record::{GENESIS, Record, ReleaseScope, facets};
use crate::releases::ReleaseSummary;

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
        let own_release = match &envelope.aggregate {
            AggregateId::Release(release) => Some(release.to_string()),
            _ => None,
        };
        let mut scope = match &own_release {
            Some(release) => Some(
                update
                    .get_json::<ReleaseScope>(keys::scope(release))?
                    .unwrap_or_default(),
            ),
            None => None,
        };
        let mut facets = facets(envelope, scope.as_ref());
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
            interpret(update, &record, &envelope.event)?;
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

/// The few event types the read side needs more than facets of; `event` is `record`'s.
fn interpret(
    update: &mut Update<'_>,
    record: &Record,
    event: &Event,
) -> Result<(), ProjectionError> {
    match event {
        Event::AuditCheckpoint(_) => crate::sealer::record_checkpoint(update, record)?,
        Event::ServiceDeployed(deployed) => {
            let (env, service) = (deployed.env.as_str(), deployed.service.as_str());
            match deployed.running.as_ref().and_then(|r| r.commit.as_ref()) {
                Some(commit) => update.put(keys::inventory(env, service), commit.as_bytes()),
                None => update.remove(keys::inventory(env, service)),
            }
        }
        Event::StepStarted(started) => {
            let Some(release) = record.facets.release.as_deref() else {
                return Ok(());
            };
            let Ok(step) = StepId::parse(&started.step) else {
                return Ok(());
            };
            let (Action::Deploy, Some(service)) = (step.action(), step.service()) else {
                return Ok(());
            };
            let (env, service) = (step.env().as_str(), service.as_str());
            let mark = keys::deployment_mark(release, step.as_str());
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
                step: step.to_string(),
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

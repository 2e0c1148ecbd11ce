//! The event catalog: the envelope every event travels in, the aggregates they belong to,
//! and every event type with its lowercase dotted name (documented in `schemas/events/`).

use std::fmt;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::inventory::RunningService;
use crate::names::{DatabaseName, EnvName, ReleaseId, ServiceName};
use crate::plan::{Plan, Refusal, StepId};
use crate::release::Change;

/// Version of the envelope and event payload format.
pub const SCHEMA_VERSION: u32 = 1;

/// The aggregate an event belongs to; each has its own subject `railyard.events.<aggregate>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AggregateId {
    /// `release.<id>`.
    Release(ReleaseId),
    /// `inventory.<env>`.
    Inventory(EnvName),
    /// `signal.<service>`: CI signals about a service's changes.
    Signal(ServiceName),
    /// `incident.<env>`.
    Incident(EnvName),
    /// `catalog`.
    Catalog,
    /// `audit`: the audit service's signed checkpoints.
    Audit,
}

/// An aggregate id that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not an aggregate id: expected release.<id>, inventory.<env>, signal.<service>, incident.<env>, catalog or audit"
)]
pub struct InvalidAggregate(pub String);

impl fmt::Display for AggregateId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AggregateId::Release(id) => write!(f, "release.{id}"),
            AggregateId::Inventory(env) => write!(f, "inventory.{env}"),
            AggregateId::Signal(svc) => write!(f, "signal.{svc}"),
            AggregateId::Incident(env) => write!(f, "incident.{env}"),
            AggregateId::Catalog => f.write_str("catalog"),
            AggregateId::Audit => f.write_str("audit"),
        }
    }
}

impl std::str::FromStr for AggregateId {
    type Err = InvalidAggregate;
    fn from_str(s: &str) -> Result<AggregateId, InvalidAggregate> {
        let bad = || InvalidAggregate(s.to_owned());
        if s == "catalog" {
            return Ok(AggregateId::Catalog);
        }
        if s == "audit" {
            return Ok(AggregateId::Audit);
        }
        let (kind, id) = s.split_once('.').ok_or_else(bad)?;
        match kind {
            "release" => id.parse().map(AggregateId::Release).map_err(|_| bad()),
            "inventory" => id.parse().map(AggregateId::Inventory).map_err(|_| bad()),
            "signal" => id.parse().map(AggregateId::Signal).map_err(|_| bad()),
            "incident" => id.parse().map(AggregateId::Incident).map_err(|_| bad()),
            _ => Err(bad()),
        }
    }
}

impl Serialize for AggregateId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for AggregateId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<AggregateId, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for AggregateId {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "AggregateId".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^(catalog|audit|release\\.[A-Za-z0-9][A-Za-z0-9_-]{0,63}|(inventory|signal|incident)\\.[a-z0-9][a-z0-9-]{0,62})$"
        })
    }
}

/// Metadata every event carries.
// Deserialized by hand (module `envelope_de`): the derived form of a flattened field buffers
// the whole envelope before reading the event, which made decoding most of a worker's time.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    /// Unique id of this event (UUIDv7, time-ordered).
    pub event_id: Uuid,
    /// The aggregate it belongs to.
    pub aggregate: AggregateId,
    /// When it happened (read from the clock).
    pub occurred_at: DateTime<Utc>,
    /// The authenticated identity or service that caused it.
    pub actor: String,
    /// The event or input that caused it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<Uuid>,
    /// Shared by every event of one flow (one release).
    pub correlation_id: Uuid,
    /// Payload format version.
    pub schema_version: u32,
    /// The writer's signature, on the events only one service may write (see
    /// [`crate::authority`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seal: Option<crate::authority::Seal>,
    /// Set when this envelope was read (deserialized) and the process's trusted keys do not
    /// vouch for it ([`crate::authority::check`]): why it does not count. Never written.
    #[serde(skip)]
    pub untrusted: Option<String>,
    /// The event itself.
    #[serde(flatten)]
    pub event: Event,
}

impl Envelope {
    /// A new envelope for `event`, correlated with itself.
    pub fn new(
        aggregate: AggregateId,
        actor: impl Into<String>,
        occurred_at: DateTime<Utc>,
        event: Event,
    ) -> Envelope {
        let event_id = Uuid::now_v7();
        Envelope {
            event_id,
            aggregate,
            occurred_at,
            actor: actor.into(),
            causation_id: None,
            correlation_id: event_id,
            schema_version: SCHEMA_VERSION,
            seal: None,
            untrusted: None,
            event,
        }
    }

    /// The same envelope, caused by `cause` and sharing its correlation id.
    pub fn caused_by(mut self, cause: &Envelope) -> Envelope {
        self.causation_id = Some(cause.event_id);
        self.correlation_id = cause.correlation_id;
        self
    }
}

mod envelope_de {
    //! The envelope's fields are read in one pass. The event (`type`, then `data`, the order
    //! Railyard writes them in) is handed to the derived adjacently tagged form as a two-entry
    //! map that reads `data` straight from the input; only a `data` that comes before its
    //! `type` is kept aside as a JSON value first.

    use std::fmt;

    use serde::de::{self, DeserializeSeed, MapAccess, Visitor, value::StrDeserializer};
    use serde::{Deserialize, Deserializer};

    use super::{Envelope, Event};

    #[cfg(test)]
    mod tests {
        use super::super::*;

        fn sample() -> Envelope {
            let release = ReleaseId::new("rel-1").unwrap();
            Envelope::new(
                AggregateId::Release(release),
                "carol",
                "2026-11-26T06:00:00Z".parse().unwrap(),
                Event::ReleaseHeld(ReleaseHeld {
                    reason: "frozen".into(),
                    step: Some("production:deploy:a".into()),
                    owner: None,
                    frozen: Some(EnvName::new("production").unwrap()),
                }),
            )
        }

        #[test]
        fn an_envelope_reads_back_what_was_written() {
            let envelope = sample();
            let text = serde_json::to_string(&envelope).unwrap();
            assert!(text.find("\"type\"").unwrap() < text.find("\"data\"").unwrap());
            assert_eq!(serde_json::from_str::<Envelope>(&text).unwrap(), envelope);
            let completed = Envelope {
                event: Event::ReleaseCompleted(ReleaseCompleted {}),
                ..sample()
            };
            let text = serde_json::to_string(&completed).unwrap();
            assert_eq!(serde_json::from_str::<Envelope>(&text).unwrap(), completed);
        }

        #[test]
        fn the_event_of_a_stored_envelope_reads_from_its_json() {
            for envelope in [
                sample(),
                Envelope {
                    event: Event::ReleaseCompleted(ReleaseCompleted {}),
                    ..sample()
                },
            ] {
                let value = serde_json::to_value(&envelope).unwrap();
                assert_eq!(Event::from_envelope_json(&value).unwrap(), envelope.event);
            }
            let unknown = serde_json::json!({"type": "release.exploded", "data": {}});
            assert!(Event::from_envelope_json(&unknown).is_err());
            assert!(Event::from_envelope_json(&serde_json::json!({"data": {}})).is_err());
        }

        #[test]
        fn data_before_type_and_any_key_order_are_read_too() {
            let envelope = sample();
            let serde_json::Value::Object(fields) = serde_json::to_value(&envelope).unwrap() else {
                unreachable!()
            };
            // `data` first, then the rest in name order (`type` last but one).
            let mut ordered: Vec<_> = fields.into_iter().collect();
            ordered.sort_by_key(|(k, _)| k != "data");
            let text = format!(
                "{{{}}}",
                ordered
                    .iter()
                    .map(|(k, v)| format!("{:?}:{v}", k))
                    .collect::<Vec<_>>()
                    .join(",")
            );
            assert!(text.find("\"data\"").unwrap() < text.find("\"type\"").unwrap());
            assert_eq!(serde_json::from_str::<Envelope>(&text).unwrap(), envelope);
        }

        #[test]
        fn unknown_missing_and_repeated_fields_are_named() {
            let text = serde_json::to_string(&sample()).unwrap();
            let unknown = text.replacen('{', "{\"colour\":1,", 1);
            let error = serde_json::from_str::<Envelope>(&unknown).unwrap_err();
            assert!(
                error.to_string().contains("unknown field `colour`"),
                "{error}"
            );
            let missing = text.replacen("\"actor\":\"carol\",", "", 1);
            let error = serde_json::from_str::<Envelope>(&missing).unwrap_err();
            assert!(
                error.to_string().contains("missing field `actor`"),
                "{error}"
            );
            let twice = text.replacen('{', "{\"actor\":\"mallory\",", 1);
            let error = serde_json::from_str::<Envelope>(&twice).unwrap_err();
            assert!(
                error.to_string().contains("duplicate field `actor`"),
                "{error}"
            );
            let wrong = text.replace("release.held", "release.exploded");
            let error = serde_json::from_str::<Envelope>(&wrong).unwrap_err();
            assert!(error.to_string().contains("release.exploded"), "{error}");
        }
    }

    #[derive(Deserialize)]
    #[serde(field_identifier, rename_all = "snake_case")]
    enum Field {
        EventId,
        Aggregate,
        OccurredAt,
        Actor,
        CausationId,
        CorrelationId,
        SchemaVersion,
        Seal,
        Type,
        Data,
    }

    const FIELDS: &[&str] = &[
        "event_id",
        "aggregate",
        "occurred_at",
        "actor",
        "causation_id",
        "correlation_id",
        "schema_version",
        "seal",
        "type",
        "data",
    ];

    impl<'de> Deserialize<'de> for Envelope {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Envelope, D::Error> {
            deserializer.deserialize_struct("Envelope", FIELDS, EnvelopeVisitor)
        }
    }

    struct EnvelopeVisitor;

    fn once<T, E: de::Error>(slot: &mut Option<T>, value: T, name: &'static str) -> Result<(), E> {
        if slot.replace(value).is_some() {
            return Err(E::duplicate_field(name));
        }
        Ok(())
    }

    impl<'de> Visitor<'de> for EnvelopeVisitor {
        type Value = Envelope;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an event envelope")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Envelope, A::Error> {
            let (mut event_id, mut aggregate, mut occurred_at, mut actor) =
                (None, None, None, None);
            let (mut causation_id, mut correlation_id, mut schema_version) = (None, None, None);
            let mut seal = None;
            let mut event_type: Option<String> = None;
            let mut event: Option<Event> = None;
            let mut early_data: Option<serde_json::Value> = None;
            while let Some(field) = map.next_key::<Field>()? {
                match field {
                    Field::EventId => once(&mut event_id, map.next_value()?, "event_id")?,
                    Field::Aggregate => once(&mut aggregate, map.next_value()?, "aggregate")?,
                    Field::OccurredAt => once(&mut occurred_at, map.next_value()?, "occurred_at")?,
                    Field::Actor => once(&mut actor, map.next_value()?, "actor")?,
                    Field::CausationId => once(
                        &mut causation_id,
                        map.next_value::<Option<_>>()?,
                        "causation_id",
                    )?,
                    Field::CorrelationId => {
                        once(&mut correlation_id, map.next_value()?, "correlation_id")?
                    }
                    Field::SchemaVersion => {
                        once(&mut schema_version, map.next_value()?, "schema_version")?
                    }
                    Field::Seal => once(&mut seal, map.next_value::<Option<_>>()?, "seal")?,
                    Field::Type => once(&mut event_type, map.next_value()?, "type")?,
                    Field::Data => {
                        if event.is_some() || early_data.is_some() {
                            return Err(de::Error::duplicate_field("data"));
                        }
                        match &event_type {
                            Some(ty) => {
                                event = Some(Event::deserialize(
                                    de::value::MapAccessDeserializer::new(TypeThenData {
                                        ty,
                                        outer: &mut map,
                                        state: 0,
                                    }),
                                )?)
                            }
                            None => early_data = Some(map.next_value()?),
                        }
                    }
                }
            }
            let event = match (event, event_type) {
                (Some(event), _) => event,
                (None, Some(ty)) => {
                    let mut tagged = serde_json::Map::new();
                    tagged.insert("type".to_owned(), ty.into());
                    if let Some(data) = early_data {
                        tagged.insert("data".to_owned(), data);
                    }
                    serde_json::from_value(tagged.into()).map_err(de::Error::custom)?
                }
                (None, None) => return Err(de::Error::missing_field("type")),
            };
            let mut envelope = Envelope {
                event_id: event_id.ok_or_else(|| de::Error::missing_field("event_id"))?,
                aggregate: aggregate.ok_or_else(|| de::Error::missing_field("aggregate"))?,
                occurred_at: occurred_at.ok_or_else(|| de::Error::missing_field("occurred_at"))?,
                actor: actor.ok_or_else(|| de::Error::missing_field("actor"))?,
                causation_id: causation_id.flatten(),
                correlation_id: correlation_id
                    .ok_or_else(|| de::Error::missing_field("correlation_id"))?,
                schema_version: schema_version
                    .ok_or_else(|| de::Error::missing_field("schema_version"))?,
                seal: seal.flatten(),
                untrusted: None,
                event,
            };
            // Whatever it was read from (the stream, a store, a request), an authority event
            // counts only if a trusted writer sealed it.
            envelope.untrusted = crate::authority::admit(&envelope).err();
            Ok(envelope)
        }
    }

    /// `{"type": <ty>, "data": <the outer map's next value>}`.
    struct TypeThenData<'a, A> {
        ty: &'a str,
        outer: &'a mut A,
        state: u8,
    }

    impl<'de, A: MapAccess<'de>> MapAccess<'de> for TypeThenData<'_, A> {
        type Error = A::Error;

        fn next_key_seed<K: DeserializeSeed<'de>>(
            &mut self,
            seed: K,
        ) -> Result<Option<K::Value>, A::Error> {
            let key = match self.state {
                0 => "type",
                1 => "data",
                _ => return Ok(None),
            };
            seed.deserialize(StrDeserializer::<A::Error>::new(key))
                .map(Some)
        }

        fn next_value_seed<V: DeserializeSeed<'de>>(
            &mut self,
            seed: V,
        ) -> Result<V::Value, A::Error> {
            if self.state == 0 {
                self.state = 1;
                seed.deserialize(StrDeserializer::<A::Error>::new(self.ty))
            } else {
                self.state = 2;
                self.outer.next_value_seed(seed)
            }
        }
    }
}

/// Every event Railyard records, tagged by its lowercase dotted type name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", content = "data")]
pub enum Event {
    /// A release was asked for.
    #[serde(rename = "release.requested")]
    ReleaseRequested(ReleaseRequested),
    /// The planner ordered it.
    #[serde(rename = "release.planned")]
    ReleasePlanned(ReleasePlanned),
    /// The planner refused it.
    #[serde(rename = "release.rejected")]
    ReleaseRejected(ReleaseRejected),
    /// An operator cancelled it.
    #[serde(rename = "release.cancelled")]
    ReleaseCancelled(Reasoned),
    /// It stopped and waits for an operator.
    #[serde(rename = "release.held")]
    ReleaseHeld(ReleaseHeld),
    /// An operator resumed it.
    #[serde(rename = "release.resumed")]
    ReleaseResumed(Reasoned),
    /// Every step succeeded.
    #[serde(rename = "release.completed")]
    ReleaseCompleted(ReleaseCompleted),
    /// It was rolled back.
    #[serde(rename = "release.rolled_back")]
    ReleaseRolledBack(ReleaseRolledBack),
    /// A step is ready but waits for releases requested earlier that are still in flight
    /// (recorded when what it waits for changes, not on every look).
    #[serde(rename = "step.waiting")]
    StepWaiting(StepWaiting),
    /// A worker started a step.
    #[serde(rename = "step.started")]
    StepStarted(StepStarted),
    /// A gate of a verify step was evaluated.
    #[serde(rename = "gate.evaluated")]
    GateEvaluated(GateEvaluated),
    /// A step succeeded.
    #[serde(rename = "step.succeeded")]
    StepSucceeded(StepOutcome),
    /// A step failed.
    #[serde(rename = "step.failed")]
    StepFailed(StepOutcome),
    /// A step was undone.
    #[serde(rename = "step.rolled_back")]
    StepRolledBack(StepOutcome),
    /// An approval is awaited.
    #[serde(rename = "approval.requested")]
    ApprovalRequested(ApprovalRequested),
    /// An approver approved.
    #[serde(rename = "approval.granted")]
    ApprovalGranted(ApprovalDecision),
    /// An approver denied.
    #[serde(rename = "approval.denied")]
    ApprovalDenied(ApprovalDecision),
    /// An approver let the release go on in an environment during its freeze (an emergency
    /// override; the approver is the envelope's actor).
    #[serde(rename = "freeze.overridden")]
    FreezeOverridden(FreezeOverridden),
    /// The old colour of a blue-green deploy was taken down as the release completed.
    #[serde(rename = "colour.retired")]
    ColourRetired(ColourRetired),
    /// A service now runs a version in an environment (inventory).
    #[serde(rename = "service.deployed")]
    ServiceDeployed(ServiceDeployed),
    /// A service loaded a catalog different from the last one.
    #[serde(rename = "catalog.applied")]
    CatalogApplied(CatalogApplied),
    /// CI published the artifact of a change (on `signal.<service>`).
    #[serde(rename = "change.artifact_published")]
    ArtifactPublished(ArtifactPublished),
    /// A test suite or pipeline finished for a change (on `signal.<service>`).
    #[serde(rename = "change.suite_finished")]
    SuiteFinished(SuiteFinished),
    /// Commits were pushed to a protected branch (on `signal.<service>`).
    #[serde(rename = "change.commits_pushed")]
    CommitsPushed(CommitsPushed),
    /// An incident was opened in an environment (on `incident.<env>`).
    #[serde(rename = "incident.opened")]
    IncidentOpened(IncidentOpened),
    /// An incident was resolved (on `incident.<env>`).
    #[serde(rename = "incident.resolved")]
    IncidentResolved(IncidentResolved),
    /// The audit service sealed its hash chain up to a record (on `audit`).
    #[serde(rename = "audit.checkpoint")]
    AuditCheckpoint(crate::audit::AuditCheckpoint),
}

impl Event {
    /// The event an envelope holds, read from the envelope's JSON form (a stored record)
    /// without copying its payload: the derived reader would buffer `data`, which sorts
    /// before `type`, before it knows the type.
    pub fn from_envelope_json(envelope: &serde_json::Value) -> Result<Event, serde_json::Error> {
        use serde::de::Error as _;
        let kind = envelope
            .get("type")
            .ok_or_else(|| serde_json::Error::missing_field("type"))?;
        let mut fields = vec![("type", kind)];
        if let Some(data) = envelope.get("data") {
            fields.push(("data", data));
        }
        Event::deserialize(
            serde::de::value::MapDeserializer::<_, serde_json::Error>::new(fields.into_iter()),
        )
    }

    /// The lowercase dotted type name.
    pub fn type_name(&self) -> &'static str {
        match self {
            Event::ReleaseRequested(_) => "release.requested",
            Event::ReleasePlanned(_) => "release.planned",
            Event::ReleaseRejected(_) => "release.rejected",
            Event::ReleaseCancelled(_) => "release.cancelled",
            Event::ReleaseHeld(_) => "release.held",
            Event::ReleaseResumed(_) => "release.resumed",
            Event::ReleaseCompleted(_) => "release.completed",
            Event::ReleaseRolledBack(_) => "release.rolled_back",
            Event::StepWaiting(_) => "step.waiting",
            Event::StepStarted(_) => "step.started",
            Event::GateEvaluated(_) => "gate.evaluated",
            Event::StepSucceeded(_) => "step.succeeded",
            Event::StepFailed(_) => "step.failed",
            Event::StepRolledBack(_) => "step.rolled_back",
            Event::ApprovalRequested(_) => "approval.requested",
            Event::ApprovalGranted(_) => "approval.granted",
            Event::ApprovalDenied(_) => "approval.denied",
            Event::FreezeOverridden(_) => "freeze.overridden",
            Event::ColourRetired(_) => "colour.retired",
            Event::ServiceDeployed(_) => "service.deployed",
            Event::CatalogApplied(_) => "catalog.applied",
            Event::ArtifactPublished(_) => "change.artifact_published",
            Event::SuiteFinished(_) => "change.suite_finished",
            Event::CommitsPushed(_) => "change.commits_pushed",
            Event::IncidentOpened(_) => "incident.opened",
            Event::IncidentResolved(_) => "incident.resolved",
            Event::AuditCheckpoint(_) => "audit.checkpoint",
        }
    }
}

/// `release.requested`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ReleaseRequested {
    /// The release id.
    pub release: ReleaseId,
    /// Who asked (from the token or CI actor, never from the file).
    pub requested_by: String,
    /// The changes.
    pub changes: Vec<Change>,
}

/// `release.planned`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ReleasePlanned {
    /// The plan.
    pub plan: Plan,
}

/// `release.rejected`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ReleaseRejected {
    /// Hash of the catalog the decision was made from.
    pub catalog_hash: String,
    /// Every reason, each with its remedy.
    pub reasons: Vec<Refusal>,
}

/// An event whose payload is a reason given by a human or a worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Reasoned {
    /// Why.
    pub reason: String,
}

/// `release.held`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ReleaseHeld {
    /// Why it stopped.
    pub reason: String,
    /// The step it stopped at, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<StepId>,
    /// Who must act (the service owner from the catalog).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// The environment whose freeze window stopped it: the promoter resumes the release by
    /// itself once no window of that environment covers the clock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frozen: Option<EnvName>,
}

/// `step.waiting`: the promoter found a step ready by its own plan, but re-validating the rest
/// of the plan against what runs now showed that releases requested earlier, still in flight,
/// touched the same services after this plan was made (a step of theirs failed, so their
/// environment is being undone). The step waits for them: no operator needs to act, and it is
/// looked at again as they move. Appended when what it waits for changes, so a release that
/// stands still is one event, not one per look.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StepWaiting {
    /// The step that waits.
    pub step: StepId,
    /// The releases it waits for, in the order they were requested.
    pub waiting_for: Vec<ReleaseId>,
    /// Why, in words: the re-validation's findings, each with its rule.
    pub reason: String,
}

/// `release.completed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
pub struct ReleaseCompleted {}

/// `release.rolled_back`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ReleaseRolledBack {
    /// Why.
    pub reason: String,
    /// The steps undone, in the order they were undone.
    #[serde(default)]
    pub undone: Vec<StepId>,
}

/// `step.started`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StepStarted {
    /// The step.
    pub step: StepId,
    /// The worker that holds its lease.
    pub worker: String,
    /// 1 for the first attempt.
    pub attempt: u32,
}

/// `gate.evaluated`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct GateEvaluated {
    /// The verify step.
    pub step: StepId,
    /// Which gate (`http`, `prometheus`, ... with its index).
    pub gate: String,
    /// Whether it passed.
    pub passed: bool,
    /// What was observed.
    pub observed: String,
    /// What was expected.
    pub expected: String,
}

/// `step.succeeded`, `step.failed`, `step.rolled_back`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StepOutcome {
    /// The step.
    pub step: StepId,
    /// What happened, in words (for failures: why).
    #[serde(default)]
    pub detail: String,
}

/// `approval.requested`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ApprovalRequested {
    /// The approve step.
    pub step: StepId,
    /// Environment.
    pub env: EnvName,
    /// Who may approve.
    pub approvers: Vec<String>,
    /// Why this approval is asked beyond the environment's policy, for the approver: the
    /// point of no return it guards and what passing it means.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `approval.granted`, `approval.denied` (the approver is the envelope's actor).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ApprovalDecision {
    /// The approve step.
    pub step: StepId,
    /// Why, as the approver wrote it.
    #[serde(default)]
    pub comment: String,
}

/// `freeze.overridden`: steps of `env` may start although a freeze window covers the moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FreezeOverridden {
    /// The frozen environment.
    pub env: EnvName,
    /// Why the emergency justifies it, as the approver wrote it (required).
    pub reason: String,
    /// When the freeze window it overrides ends: the override counts until then, not for
    /// the next window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<DateTime<Utc>>,
}

/// `colour.retired`: the colour a blue-green deploy step switched traffic away from was taken
/// down with the service's `retire` command, as the last act before the release completes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ColourRetired {
    /// The deploy step.
    pub step: StepId,
    /// The colour taken down (`blue` or `green`).
    pub colour: String,
    /// Whether the retire command succeeded; a failure does not undo the release, it is
    /// reported for someone to clean up.
    pub ok: bool,
    /// What the command said.
    pub detail: String,
}

/// `service.deployed`: an environment's inventory changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ServiceDeployed {
    /// Environment.
    pub env: EnvName,
    /// Service.
    pub service: ServiceName,
    /// What runs now; `None` when the service was removed.
    pub running: Option<RunningService>,
    /// Database versions that changed with it.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub databases: std::collections::BTreeMap<DatabaseName, u32>,
    /// The release that did it, when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<ReleaseId>,
}

/// `catalog.applied`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CatalogApplied {
    /// `sha256:<hex>` of the catalog.
    pub hash: String,
}

/// Where an external input came from: the door, its delivery or event id, and its source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Origin {
    /// The door: `cdevents`, `github`, `gitlab`.
    pub door: String,
    /// The external id: CDEvent `context.id`, `X-GitHub-Delivery`, GitLab event UUID.
    pub id: String,
    /// The CDEvent `context.source`, or the repository URL of a webhook.
    pub source: String,
}

/// `change.artifact_published`: the artifact of a change exists; its contracts come from
/// `customData.railyard` (INTERFACES §4 fields).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ArtifactPublished {
    /// The change, `artifact` set.
    pub change: Change,
    /// The release it belongs to, when CI groups changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<ReleaseId>,
    /// The services whose changes the release waits for (CI grouping).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expected_changes: Vec<ServiceName>,
    /// The CDEvents `chainId`, which test results may share.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain_id: Option<String>,
    /// The repository URL, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// Where it came from.
    pub origin: Origin,
}

/// `change.suite_finished`: a test suite (or pipeline, workflow, check suite) finished.
/// It attaches to a change by version, chain id or commit, whichever it carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SuiteFinished {
    /// The suite name (`testSuite.id`, pipeline name, workflow name, check-suite app slug).
    pub suite: String,
    /// Whether it passed.
    pub passed: bool,
    /// The outcome as reported (`success`, `failure`, `pass`, `fail`, ...).
    pub outcome: String,
    /// The change's version, when the sender named it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The CDEvents `chainId` shared with the artifact event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain_id: Option<String>,
    /// The commit it ran on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// The branch it ran on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// Where it came from.
    pub origin: Origin,
}

/// One commit of a push.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PushedCommit {
    /// The commit id.
    pub id: String,
    /// Its author's name or login.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// The first line of its message.
    #[serde(default)]
    pub message: String,
    /// When it was committed, as its source reports it (GitHub's push `timestamp`); the start
    /// of its lead time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<chrono::DateTime<chrono::Utc>>,
}

/// `change.commits_pushed`: commits reached a protected branch (for commit ranges), by a push,
/// a merged pull request or a CDEvents `change.merged`; their authors are verified authors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CommitsPushed {
    /// The branch.
    pub branch: String,
    /// The commit the branch pointed at before; empty when the source does not say (a
    /// CDEvents `change.merged`).
    pub before: String,
    /// The commit it points at now.
    pub after: String,
    /// The commits pushed, oldest first.
    #[serde(default)]
    pub commits: Vec<PushedCommit>,
    /// Where it came from.
    pub origin: Origin,
}

/// `incident.opened`: gates of type `incident` fail while one is open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct IncidentOpened {
    /// The incident's id at its source.
    pub incident: String,
    /// The environment.
    pub env: EnvName,
    /// The service it concerns, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceName>,
    /// What happened.
    #[serde(default)]
    pub description: String,
    /// Where it came from.
    pub origin: Origin,
}

/// `incident.resolved`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct IncidentResolved {
    /// The incident's id at its source.
    pub incident: String,
    /// The environment.
    pub env: EnvName,
    /// The service it concerned, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceName>,
    /// Where it came from.
    pub origin: Origin,
}

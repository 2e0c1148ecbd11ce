//! Step ids and step targets (INTERFACES §11) as types: `<env>:<action>:<target>` has one
//! parser ([`StepId::parse`]) and one formatter (its `Display`); no other crate splits or
//! builds the string by hand.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};

use serde::{Deserialize, Serialize};

use crate::contract::Version;
use crate::names::{DatabaseName, EnvName, ReleaseId, ServiceName};
use crate::plan::Action;

/// What a step acts on: a service (deploy, verify), a database moving to a schema version
/// (migrate, written `database@version`), or what an approval is for (approve): the release
/// entering an environment, or a migration that is a point of no return
/// (`production:approve:orders-db@44`, `docs/planning-rules.md`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Target {
    /// The service a deploy or verify step moves or checks.
    Service(ServiceName),
    /// The database a migrate step moves (or an approve step guards the move of), and the
    /// schema version it moves it to.
    Migration {
        /// The database.
        database: DatabaseName,
        /// The schema version it moves to.
        to: Version,
    },
    /// The release an approve step waits for an approval of.
    Release(ReleaseId),
}

impl Target {
    /// The target of a step doing `action`, as written in step ids and in a step's `target`
    /// field (`orders-api`, `orders-db@43`, `rel-42`).
    pub fn parse(action: Action, text: &str) -> Result<Target, InvalidStepId> {
        let bad = |problem: String| InvalidStepId::target(text, problem);
        match action {
            Action::Deploy | Action::Verify => ServiceName::new(text)
                .map(Target::Service)
                .map_err(|error| bad(error.to_string())),
            Action::Approve if !text.contains('@') => ReleaseId::new(text)
                .map(Target::Release)
                .map_err(|error| bad(error.to_string())),
            Action::Migrate | Action::Approve => {
                let Some((database, to)) = text.split_once('@') else {
                    return Err(bad(
                        "a migration is written <database>@<version> (orders-db@43)".to_owned(),
                    ));
                };
                let database =
                    DatabaseName::new(database).map_err(|error| bad(error.to_string()))?;
                let to = to.parse::<Version>().map_err(|_| {
                    bad(format!(
                        "schema version {to:?} is not a whole number (orders-db@43)"
                    ))
                })?;
                // `43`, `043` and `+43` parse alike; only the canonical spelling round-trips.
                if to.to_string() != text.split_once('@').map_or("", |(_, v)| v) {
                    return Err(bad(format!(
                        "schema version is written without leading zeros ({database}@{to})"
                    )));
                }
                Ok(Target::Migration { database, to })
            }
        }
    }

    /// Whether a step doing `action` can have this target.
    pub fn fits(&self, action: Action) -> bool {
        matches!(
            (action, self),
            (Action::Deploy | Action::Verify, Target::Service(_))
                | (Action::Migrate, Target::Migration { .. })
                | (
                    Action::Approve,
                    Target::Release(_) | Target::Migration { .. }
                )
        )
    }

    /// The service, for deploy and verify steps.
    pub fn service(&self) -> Option<&ServiceName> {
        match self {
            Target::Service(service) => Some(service),
            _ => None,
        }
    }

    /// The database and the version it moves to, for migrate steps and the approvals that
    /// guard them.
    pub fn migration(&self) -> Option<(&DatabaseName, Version)> {
        match self {
            Target::Migration { database, to } => Some((database, *to)),
            _ => None,
        }
    }

    /// What the step acts on, by name: the service, the database (of a migration, or of the
    /// approval guarding one) or the release.
    pub fn subject(&self) -> &str {
        match self {
            Target::Service(service) => service.as_str(),
            Target::Migration { database, .. } => database.as_str(),
            Target::Release(release) => release.as_str(),
        }
    }

    /// The release, for the approve step of a release entering an environment.
    pub fn release(&self) -> Option<&ReleaseId> {
        match self {
            Target::Release(release) => Some(release),
            _ => None,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Service(service) => f.write_str(service.as_str()),
            Target::Migration { database, to } => write!(f, "{database}@{to}"),
            Target::Release(release) => f.write_str(release.as_str()),
        }
    }
}

/// A step id, `<env>:<action>:<target>`: `production:deploy:orders-api`,
/// `production:verify:orders-api`, `staging:migrate:orders-db@43`,
/// `production:approve:rel-42`, `production:approve:orders-db@44`. On the wire it is that
/// string; it compares, orders and hashes as that string, so it can key maps that are looked
/// up by `&str`.
#[derive(Clone)]
pub struct StepId {
    env: EnvName,
    action: Action,
    target: Target,
    text: String,
}

/// A step id or step target that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{what} {value:?} is not valid: {problem}; expected <env>:<action>:<target> with action migrate, deploy, verify or approve (staging:migrate:orders-db@43, production:deploy:orders-api, production:approve:rel-42)"
)]
pub struct InvalidStepId {
    /// `step id` or `step target`.
    pub what: &'static str,
    /// The refused text, as given.
    pub value: String,
    /// What is wrong with it.
    pub problem: String,
}

impl InvalidStepId {
    fn id(value: &str, problem: impl Into<String>) -> InvalidStepId {
        InvalidStepId {
            what: "step id",
            value: value.to_owned(),
            problem: problem.into(),
        }
    }

    fn target(value: &str, problem: impl Into<String>) -> InvalidStepId {
        InvalidStepId {
            what: "step target",
            value: value.to_owned(),
            problem: problem.into(),
        }
    }
}

impl StepId {
    /// The step doing `action` on `target` in `env`; refused when the target does not fit
    /// the action (a deploy of a migration, say).
    pub fn new(env: EnvName, action: Action, target: Target) -> Result<StepId, InvalidStepId> {
        if !target.fits(action) {
            let expected = match action {
                Action::Deploy | Action::Verify => "a service",
                Action::Migrate => "<database>@<version>",
                Action::Approve => "a release id or <database>@<version>",
            };
            let problem = format!("a {action} step acts on {expected}, not {target}");
            return Err(InvalidStepId::id(
                StepId::build(env, action, target).as_str(),
                problem,
            ));
        }
        Ok(StepId::build(env, action, target))
    }

    /// The one formatter: every step id string is written here.
    fn build(env: EnvName, action: Action, target: Target) -> StepId {
        let text = format!("{env}:{}:{target}", action.as_str());
        StepId {
            env,
            action,
            target,
            text,
        }
    }

    /// `<env>:deploy:<service>`.
    pub fn deploy(env: &EnvName, service: &ServiceName) -> StepId {
        StepId::build(
            env.clone(),
            Action::Deploy,
            Target::Service(service.clone()),
        )
    }

    /// `<env>:verify:<service>`.
    pub fn verify(env: &EnvName, service: &ServiceName) -> StepId {
        StepId::build(
            env.clone(),
            Action::Verify,
            Target::Service(service.clone()),
        )
    }

    /// `<env>:migrate:<database>@<to>`.
    pub fn migrate(env: &EnvName, database: &DatabaseName, to: Version) -> StepId {
        let target = Target::Migration {
            database: database.clone(),
            to,
        };
        StepId::build(env.clone(), Action::Migrate, target)
    }

    /// `<env>:approve:<release>`.
    pub fn approve(env: &EnvName, release: &ReleaseId) -> StepId {
        StepId::build(
            env.clone(),
            Action::Approve,
            Target::Release(release.clone()),
        )
    }

    /// `<env>:approve:<database>@<to>`: the approval placed before a migration that is a
    /// point of no return.
    pub fn approve_migration(env: &EnvName, database: &DatabaseName, to: Version) -> StepId {
        let target = Target::Migration {
            database: database.clone(),
            to,
        };
        StepId::build(env.clone(), Action::Approve, target)
    }

    /// The one parser of step ids.
    pub fn parse(text: &str) -> Result<StepId, InvalidStepId> {
        let mut parts = text.splitn(3, ':');
        let (Some(env), Some(action), Some(target)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(InvalidStepId::id(text, "it has fewer than three parts"));
        };
        let env = EnvName::new(env).map_err(|error| InvalidStepId::id(text, error.to_string()))?;
        let action = Action::parse(action)
            .ok_or_else(|| InvalidStepId::id(text, format!("{action:?} is not an action")))?;
        let target = Target::parse(action, target).map_err(|error| InvalidStepId {
            what: "step id",
            value: text.to_owned(),
            problem: format!("target {:?}: {}", error.value, error.problem),
        })?;
        // Every part was checked to be in its one spelling, so the text is what `build`
        // would write: keep it rather than write it again.
        let id = StepId {
            env,
            action,
            target,
            text: text.to_owned(),
        };
        debug_assert_eq!(
            StepId::build(id.env.clone(), id.action, id.target.clone()).text,
            text,
            "parse and format round-trip"
        );
        Ok(id)
    }

    /// The environment.
    pub fn env(&self) -> &EnvName {
        &self.env
    }

    /// What the step does.
    pub fn action(&self) -> Action {
        self.action
    }

    /// What it acts on.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The service, for deploy and verify steps.
    pub fn service(&self) -> Option<&ServiceName> {
        self.target.service()
    }

    /// The id as written on the wire.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The step doing `action` on the same target in the same environment, when the target
    /// fits (the verify step of a deploy step, say).
    pub fn with_action(&self, action: Action) -> Option<StepId> {
        self.target
            .fits(action)
            .then(|| StepId::build(self.env.clone(), action, self.target.clone()))
    }
}

impl std::str::FromStr for StepId {
    type Err = InvalidStepId;
    fn from_str(text: &str) -> Result<StepId, InvalidStepId> {
        StepId::parse(text)
    }
}

impl TryFrom<String> for StepId {
    type Error = InvalidStepId;
    fn try_from(text: String) -> Result<StepId, InvalidStepId> {
        StepId::parse(&text)
    }
}

impl TryFrom<&str> for StepId {
    type Error = InvalidStepId;
    fn try_from(text: &str) -> Result<StepId, InvalidStepId> {
        StepId::parse(text)
    }
}

impl From<StepId> for String {
    fn from(id: StepId) -> String {
        id.text
    }
}

impl fmt::Display for StepId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for StepId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.text, f)
    }
}

impl AsRef<str> for StepId {
    fn as_ref(&self) -> &str {
        &self.text
    }
}

impl std::borrow::Borrow<str> for StepId {
    fn borrow(&self) -> &str {
        &self.text
    }
}

impl PartialEq for StepId {
    fn eq(&self, other: &StepId) -> bool {
        self.text == other.text
    }
}

impl Eq for StepId {}

impl PartialEq<str> for StepId {
    fn eq(&self, other: &str) -> bool {
        self.text == other
    }
}

impl PartialEq<&str> for StepId {
    fn eq(&self, other: &&str) -> bool {
        self.text == *other
    }
}

impl PartialEq<String> for StepId {
    fn eq(&self, other: &String) -> bool {
        &self.text == other
    }
}

impl PartialOrd for StepId {
    fn partial_cmp(&self, other: &StepId) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for StepId {
    fn cmp(&self, other: &StepId) -> Ordering {
        self.text.cmp(&other.text)
    }
}

impl Hash for StepId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.text.hash(state)
    }
}

impl Serialize for StepId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for StepId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<StepId, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        StepId::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl schemars::JsonSchema for StepId {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "StepId".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "A step id, <env>:<action>:<target> (production:deploy:orders-api, staging:migrate:orders-db@43, production:approve:rel-42)."
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> EnvName {
        EnvName::new(name).unwrap()
    }

    #[test]
    fn every_kind_of_step_round_trips() {
        let production = env("production");
        let cases = [
            (
                StepId::deploy(&production, &ServiceName::new("orders-api").unwrap()),
                "production:deploy:orders-api",
            ),
            (
                StepId::verify(&production, &ServiceName::new("orders-api").unwrap()),
                "production:verify:orders-api",
            ),
            (
                StepId::migrate(
                    &env("staging"),
                    &DatabaseName::new("orders-db").unwrap(),
                    43,
                ),
                "staging:migrate:orders-db@43",
            ),
            (
                StepId::approve(&production, &ReleaseId::new("Rel_42").unwrap()),
                "production:approve:Rel_42",
            ),
            (
                StepId::approve_migration(
                    &production,
                    &DatabaseName::new("orders-db").unwrap(),
                    44,
                ),
                "production:approve:orders-db@44",
            ),
        ];
        for (id, text) in cases {
            assert_eq!(id.to_string(), text);
            let parsed = StepId::parse(text).unwrap();
            assert_eq!(parsed, id);
            assert_eq!(parsed.env(), id.env());
            assert_eq!(parsed.action(), id.action());
            assert_eq!(parsed.target(), id.target());
            let json = serde_json::to_string(&id).unwrap();
            assert_eq!(json, format!("\"{text}\""), "the wire form is the string");
            assert_eq!(serde_json::from_str::<StepId>(&json).unwrap(), id);
        }
    }

    #[test]
    fn targets_are_typed() {
        let id = StepId::parse("staging:migrate:orders-db@43").unwrap();
        assert_eq!(
            id.target().migration().map(|(d, to)| (d.as_str(), to)),
            Some(("orders-db", 43))
        );
        assert_eq!(id.service(), None);
        assert_eq!(id.target().subject(), "orders-db");
        let id = StepId::parse("production:approve:rel-42").unwrap();
        assert_eq!(id.target().release().map(ReleaseId::as_str), Some("rel-42"));
        let deploy = StepId::parse("production:deploy:orders-api").unwrap();
        assert_eq!(
            deploy.service().map(ServiceName::as_str),
            Some("orders-api")
        );
        assert_eq!(
            deploy.with_action(Action::Verify).unwrap().as_str(),
            "production:verify:orders-api"
        );
        assert!(deploy.with_action(Action::Migrate).is_none());
        let guard = StepId::parse("production:approve:orders-db@44").unwrap();
        assert_eq!(guard.target().release(), None);
        assert_eq!(
            guard.with_action(Action::Migrate).unwrap().as_str(),
            "production:migrate:orders-db@44"
        );
        assert_eq!(
            Target::parse(Action::Migrate, "orders-db@43")
                .unwrap()
                .to_string(),
            "orders-db@43"
        );
    }

    #[test]
    fn malformed_ids_are_refused_with_what_is_wrong() {
        for bad in [
            "",
            "production",
            "production:deploy",
            "production:ship:orders-api",
            "Production:deploy:orders-api",
            "production:deploy:Orders",
            "production:deploy:orders-db@43",
            "production:migrate:orders-db",
            "production:migrate:orders-db@x",
            "production:migrate:orders-db@043",
            "production:migrate:orders-db@-1",
            "production:approve:rel.42",
            "production:approve:Orders-db@44",
            "production:deploy:a:b",
        ] {
            let error = StepId::parse(bad).unwrap_err();
            assert_eq!(error.value, bad);
            assert!(serde_json::from_str::<StepId>(&format!("{bad:?}")).is_err());
        }
        assert_eq!(
            StepId::parse("production:ship:orders-api")
                .unwrap_err()
                .to_string(),
            "step id \"production:ship:orders-api\" is not valid: \"ship\" is not an action; expected <env>:<action>:<target> with action migrate, deploy, verify or approve (staging:migrate:orders-db@43, production:deploy:orders-api, production:approve:rel-42)"
        );
        assert_eq!(
            StepId::parse("staging:migrate:orders-db")
                .unwrap_err()
                .problem,
            "target \"orders-db\": a migration is written <database>@<version> (orders-db@43)"
        );
        let service = Target::Service(ServiceName::new("orders-api").unwrap());
        let error = StepId::new(env("staging"), Action::Migrate, service).unwrap_err();
        assert_eq!(error.value, "staging:migrate:orders-api");
        assert_eq!(
            error.problem,
            "a migrate step acts on <database>@<version>, not orders-api"
        );
    }

    #[test]
    fn orders_and_looks_up_as_its_string() {
        use std::collections::BTreeMap;
        let mut map = BTreeMap::new();
        for text in [
            "staging:migrate:orders-db@43",
            "production:verify:a",
            "production:approve:rel-1",
        ] {
            map.insert(StepId::parse(text).unwrap(), text);
        }
        let keys: Vec<&str> = map.keys().map(StepId::as_str).collect();
        assert_eq!(
            keys,
            [
                "production:approve:rel-1",
                "production:verify:a",
                "staging:migrate:orders-db@43"
            ]
        );
        assert_eq!(map.get("production:verify:a"), Some(&"production:verify:a"));
    }
}

//! The catalog (`railyard.toml`, INTERFACES §3): environments and their promotion path,
//! services, databases, queues, APIs, policies and notification settings.

use std::collections::{BTreeMap, BTreeSet};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::duration::HumanDuration;
use crate::names::{ApiName, DatabaseName, EnvName, QueueName, ServiceName};
use crate::parse::{self, ParseError};

/// The whole catalog file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    /// Estate-wide policies.
    #[serde(default)]
    pub policy: Policy,
    /// Named groups of identities, referenced as `group:<name>`.
    #[serde(default)]
    pub groups: BTreeMap<String, Vec<String>>,
    /// Environments; `after` links them into the promotion path.
    #[serde(default)]
    pub environments: Vec<Environment>,
    /// Services by name.
    #[serde(default)]
    pub services: BTreeMap<ServiceName, Service>,
    /// Databases by name.
    #[serde(default)]
    pub databases: BTreeMap<DatabaseName, Database>,
    /// Queues and topics by name.
    #[serde(default)]
    pub queues: BTreeMap<QueueName, Queue>,
    /// API schemas by name.
    #[serde(default)]
    pub apis: BTreeMap<ApiName, Api>,
    /// Notification settings.
    #[serde(default)]
    pub notify: Notify,
}

/// Estate-wide policies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Branches whose builds may be released.
    #[serde(default)]
    pub protected_branches: Vec<String>,
    /// Globs over event sources and repositories that may trigger releases.
    #[serde(default)]
    pub allowed_sources: Vec<String>,
}

/// One environment of the promotion path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Environment {
    /// The environment's name.
    pub name: EnvName,
    /// The environment a change must pass before this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<EnvName>,
    /// Approval policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<Approval>,
    /// Freeze windows during which nothing starts in this environment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub freeze: Vec<Freeze>,
    /// How long before a freeze starts an emergency override of it may already be filed
    /// (default: only while it is in force). An override ends with the window it overrides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freeze_override_lead: Option<crate::duration::HumanDuration>,
    /// What happens when a step fails here.
    #[serde(default)]
    pub on_failure: OnFailure,
    /// What a point of no return of a plan requires here (a step after which no rollback
    /// keeps the contracts: see `docs/planning-rules.md`).
    #[serde(default, skip_serializing_if = "PointOfNoReturnPolicy::is_allow")]
    pub point_of_no_return: PointOfNoReturnPolicy,
}

/// What a plan's point of no return requires in an environment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PointOfNoReturnPolicy {
    /// Nothing: the plan names it, the release passes it like any step.
    #[default]
    Allow,
    /// A dedicated approval step right before it, asked of the environment's approvers with
    /// the reason it is one.
    Approve,
    /// The release is refused: it must be made reversible first.
    Refuse,
}

impl PointOfNoReturnPolicy {
    /// The default (nothing required).
    pub fn is_allow(&self) -> bool {
        *self == PointOfNoReturnPolicy::Allow
    }
}

/// Who must approve before changes enter an environment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    /// Whether an approval is required.
    #[serde(default)]
    pub required: bool,
    /// Identities or `group:<name>` entries allowed to approve.
    #[serde(default)]
    pub approvers: Vec<String>,
}

/// A freeze window: recurring (cron) or fixed (start/end).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Freeze {
    /// A recurring window starting at each cron match.
    Recurring {
        /// Five-field cron expression.
        cron: String,
        /// How long each window lasts.
        duration: HumanDuration,
        /// IANA time zone of the cron expression, default UTC.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timezone: Option<String>,
        /// Why the environment is frozen.
        reason: String,
    },
    /// A fixed window.
    Fixed {
        /// Start, RFC 3339.
        start: chrono::DateTime<chrono::Utc>,
        /// End, RFC 3339.
        end: chrono::DateTime<chrono::Utc>,
        /// Why the environment is frozen.
        reason: String,
    },
}

/// Failure policy of an environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// Roll back the failed step and everything of the release applied in the environment.
    #[default]
    Rollback,
    /// Stop and wait for an operator.
    Hold,
}

/// A deployable service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// The team that owns it; named when a release holds on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Slack channel that follows its releases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slack_channel: Option<String>,
    /// How CI events are matched to this service.
    #[serde(default, rename = "match")]
    pub match_: Match,
    /// Test suites that must pass before a change is released.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required_suites: Vec<String>,
    /// Services whose changes always go first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<ServiceName>,
    /// How to deploy and roll back.
    pub deploy: Deploy,
    /// Gates checked after each deploy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gates: Vec<Gate>,
    /// Rollout strategy.
    #[serde(default)]
    pub strategy: Strategy,
    /// Per-environment overrides.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub environments: BTreeMap<EnvName, ServiceOverride>,
    /// Variables of the promoter's environment its commands (deploy, rollback, gates, switch,
    /// retire) receive; they start with an empty environment otherwise (`PATH`, `HOME`,
    /// `LANG` and the `RAILYARD_*` release variables are always given).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// Secrets its commands receive as `RAILYARD_SECRET_<NAME>` variables (`{secret:NAME}`
    /// placeholders work for any secret; a variable only for these).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    /// The directory its commands run in (an absolute path); the promoter's own otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// The system user its commands run as (the promoter must be allowed to switch to it,
    /// i.e. run as root); the promoter's own user otherwise. `HOME` is then that user's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

impl Service {
    /// The gates that apply in `env`, overrides included.
    pub fn gates_in(&self, env: &EnvName) -> &[Gate] {
        self.environments
            .get(env)
            .and_then(|o| o.gates.as_deref())
            .unwrap_or(&self.gates)
    }

    /// The deploy adapter that applies in `env`, overrides included.
    pub fn deploy_in(&self, env: &EnvName) -> &Deploy {
        self.environments
            .get(env)
            .and_then(|o| o.deploy.as_ref())
            .unwrap_or(&self.deploy)
    }

    /// The strategy that applies in `env`, overrides included.
    pub fn strategy_in(&self, env: &EnvName) -> &Strategy {
        self.environments
            .get(env)
            .and_then(|o| o.strategy.as_ref())
            .unwrap_or(&self.strategy)
    }
}

/// How CI events are matched to a service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct Match {
    /// Repository URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// Artifact purl without version (`pkg:oci/orders-api`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<String>,
}

/// Per-environment overrides of a service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct ServiceOverride {
    /// Gates in this environment instead of the service's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gates: Option<Vec<Gate>>,
    /// Deploy adapter in this environment instead of the service's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy: Option<Deploy>,
    /// Strategy in this environment instead of the service's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<Strategy>,
}

/// A deploy (or migrate) adapter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Deploy {
    /// Run a command; its exit code decides.
    Command {
        /// argv with placeholders.
        run: Vec<String>,
        /// argv that rolls back.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rollback: Option<Vec<String>>,
        /// argv that removes a service new to an environment.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        remove: Option<Vec<String>>,
        /// Time limit.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout: Option<HumanDuration>,
    },
    /// POST JSON to a URL; 2xx accepts.
    Http {
        /// Where to POST.
        url: String,
        /// Polled until the deploy is done.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status_url: Option<String>,
        /// URL that rolls back.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rollback_url: Option<String>,
        /// Time limit.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout: Option<HumanDuration>,
    },
    /// A simulated deploy for demos and tests.
    Simulated {
        /// How long it takes.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        duration: Option<HumanDuration>,
        /// Versions whose deploy fails.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        fail_versions: Vec<String>,
        /// Probability of failure, 0..=1.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fail_rate: Option<f64>,
    },
}

impl Deploy {
    /// Whether the adapter has an explicit rollback form.
    pub fn has_rollback(&self) -> bool {
        match self {
            Deploy::Command { rollback, .. } => rollback.is_some(),
            Deploy::Http { rollback_url, .. } => rollback_url.is_some(),
            Deploy::Simulated { .. } => true,
        }
    }
}

/// A gate checked after a deploy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Gate {
    /// An HTTP check.
    Http {
        /// URL with placeholders.
        url: String,
        /// Expected status, default 200.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expect_status: Option<u16>,
        /// JSON pointer into the body.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        json_pointer: Option<String>,
        /// Value expected at the pointer.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        equals: Option<serde_json::Value>,
        /// Substring expected in the body.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        contains: Option<String>,
        /// Time limit.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout: Option<HumanDuration>,
    },
    /// A Prometheus instant query compared with a threshold.
    Prometheus {
        /// Prometheus base URL.
        url: String,
        /// PromQL.
        query: String,
        /// Comparison operator.
        op: CompareOp,
        /// Threshold.
        threshold: f64,
        /// What an empty result means.
        #[serde(default)]
        on_empty: OnEmpty,
    },
    /// A command whose exit code decides.
    Command {
        /// argv with placeholders.
        run: Vec<String>,
        /// Time limit.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout: Option<HumanDuration>,
    },
    /// Re-check the other gates every `interval` for `duration`.
    Soak {
        /// Total soak time.
        duration: HumanDuration,
        /// Interval between re-checks.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        interval: Option<HumanDuration>,
    },
    /// Fails while an incident is open for the service and environment.
    Incident {},
}

/// Comparison operator of a Prometheus gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum CompareOp {
    /// Less than.
    #[serde(rename = "<")]
    Lt,
    /// Less than or equal.
    #[serde(rename = "<=")]
    Le,
    /// Greater than.
    #[serde(rename = ">")]
    Gt,
    /// Greater than or equal.
    #[serde(rename = ">=")]
    Ge,
    /// Equal.
    #[serde(rename = "==")]
    Eq,
    /// Not equal.
    #[serde(rename = "!=")]
    Ne,
}

/// What an empty Prometheus result means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnEmpty {
    /// The gate fails.
    #[default]
    Fail,
    /// The gate passes.
    Pass,
}

/// Rollout strategy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Strategy {
    /// Replace in place.
    #[default]
    Rolling,
    /// Shift traffic in weighted steps, gates at each.
    Canary {
        /// Weights in percent, ending at 100.
        steps: Vec<u8>,
    },
    /// Deploy the idle colour, verify, switch; the old colour stays (a rollback switches
    /// back to it) until the release completes, then `retire` runs for it.
    BlueGreen {
        /// argv that switches traffic to `{colour}`.
        switch: Vec<String>,
        /// argv that takes down the old `{colour}` once the release completed; without it
        /// the old colour is left running.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        retire: Vec<String>,
    },
}

/// A database whose schema version the release may move.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Database {
    /// Services that use it.
    #[serde(default)]
    pub users: Vec<ServiceName>,
    /// How to migrate it.
    pub migrate: Deploy,
    /// Variables of the promoter's environment its migrate commands receive (see
    /// [`Service::env`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// Secrets its migrate commands receive as `RAILYARD_SECRET_<NAME>` variables.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    /// The directory its migrate commands run in (see [`Service::workdir`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// The system user its migrate commands run as (see [`Service::user`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// A queue or topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct Queue {
    /// Services that emit messages.
    #[serde(default)]
    pub producers: Vec<ServiceName>,
    /// Services that read messages.
    #[serde(default)]
    pub consumers: Vec<ServiceName>,
}

/// An API schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Api {
    /// The service that serves it.
    pub provider: ServiceName,
    /// Services that call it.
    #[serde(default)]
    pub consumers: Vec<ServiceName>,
}

/// Notification settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct Notify {
    /// Slack settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slack: Option<SlackNotify>,
}

/// Slack settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct SlackNotify {
    /// Channel that follows every release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_channel: Option<String>,
    /// Verbosity per channel.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub verbosity: BTreeMap<String, Verbosity>,
}

/// How much a Slack channel hears.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Verbosity {
    /// Every message.
    All,
    /// Plans, completions and exceptions.
    Changes,
    /// Only what needs a human.
    Exceptions,
}

impl Catalog {
    /// Parses and checks a catalog file.
    pub fn from_toml(text: &str) -> Result<Catalog, ParseError> {
        let catalog: Catalog = parse::from_toml("catalog", text)?;
        catalog.check()?;
        Ok(catalog)
    }

    /// A stable hash of the catalog's meaning (its canonical JSON), `sha256:<hex>`.
    pub fn hash(&self) -> String {
        let bytes = serde_json::to_vec(self).expect("a catalog always serializes");
        format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
    }

    /// The environment named `name`.
    pub fn environment(&self, name: &EnvName) -> Option<&Environment> {
        self.environments.iter().find(|e| &e.name == name)
    }

    /// Who may approve the steps of `env` and override its freezes (identities or
    /// `group:<name>` entries); empty when it lists none.
    pub fn approvers(&self, env: &EnvName) -> &[String] {
        self.environment(env)
            .and_then(|e| e.approval.as_ref())
            .map_or(&[], |a| a.approvers.as_slice())
    }

    /// Environments in promotion order: each one after the environment its `after` names.
    /// [`Catalog::check`] guarantees the path is a forest without cycles; roots keep file order.
    pub fn promotion_path(&self) -> Vec<&Environment> {
        let mut out: Vec<&Environment> = Vec::with_capacity(self.environments.len());
        let mut placed = BTreeSet::new();
        while out.len() < self.environments.len() {
            let before = out.len();
            for env in &self.environments {
                let ready = env.after.as_ref().is_none_or(|a| placed.contains(a));
                if !placed.contains(&env.name) && ready {
                    placed.insert(env.name.clone());
                    out.push(env);
                }
            }
            if out.len() == before {
                break; // a cycle: check() refuses it, stop rather than loop.
            }
        }
        out
    }

    /// Every command argv of the catalog with its key path: deploy, rollback, remove and
    /// migrate forms, command gates, blue-green switch and retire, overrides included.
    pub fn commands(&self) -> Vec<(String, &[String])> {
        let mut out: Vec<(String, &[String])> = Vec::new();
        fn deploy<'a>(out: &mut Vec<(String, &'a [String])>, at: &str, deploy: &'a Deploy) {
            if let Deploy::Command {
                run,
                rollback,
                remove,
                ..
            } = deploy
            {
                out.push((format!("{at}.run"), run));
                if let Some(rollback) = rollback {
                    out.push((format!("{at}.rollback"), rollback));
                }
                if let Some(remove) = remove {
                    out.push((format!("{at}.remove"), remove));
                }
            }
        }
        fn gates<'a>(out: &mut Vec<(String, &'a [String])>, at: &str, gates: &'a [Gate]) {
            for (i, gate) in gates.iter().enumerate() {
                if let Gate::Command { run, .. } = gate {
                    out.push((format!("{at}[{i}].run"), run));
                }
            }
        }
        fn strategy<'a>(out: &mut Vec<(String, &'a [String])>, at: &str, strategy: &'a Strategy) {
            if let Strategy::BlueGreen { switch, retire, .. } = strategy {
                out.push((format!("{at}.switch"), switch));
                out.push((format!("{at}.retire"), retire));
            }
        }
        for (name, service) in &self.services {
            let at = format!("catalog.services.{name}");
            deploy(&mut out, &format!("{at}.deploy"), &service.deploy);
            gates(&mut out, &format!("{at}.gates"), &service.gates);
            strategy(&mut out, &format!("{at}.strategy"), &service.strategy);
            for (env, o) in &service.environments {
                let at = format!("{at}.environments.{env}");
                if let Some(d) = &o.deploy {
                    deploy(&mut out, &format!("{at}.deploy"), d);
                }
                if let Some(g) = &o.gates {
                    gates(&mut out, &format!("{at}.gates"), g);
                }
                if let Some(s) = &o.strategy {
                    strategy(&mut out, &format!("{at}.strategy"), s);
                }
            }
        }
        for (name, db) in &self.databases {
            deploy(
                &mut out,
                &format!("catalog.databases.{name}.migrate"),
                &db.migrate,
            );
        }
        out
    }

    /// Checks references between sections; every problem names its key path.
    pub fn check(&self) -> Result<(), ParseError> {
        let envs: BTreeSet<&EnvName> = self.environments.iter().map(|e| &e.name).collect();
        let mut seen = BTreeSet::new();
        for (i, env) in self.environments.iter().enumerate() {
            if !seen.insert(&env.name) {
                return Err(ParseError::at(
                    format!("catalog.environments[{i}].name"),
                    format!(
                        "environment {:?} is declared twice: give each environment one entry",
                        env.name.as_str()
                    ),
                ));
            }
            if let Some(after) = &env.after {
                if !envs.contains(after) {
                    return Err(ParseError::at(
                        format!("catalog.environments[{i}].after"),
                        format!(
                            "unknown environment {:?} (expected one of: {})",
                            after.as_str(),
                            list(&envs)
                        ),
                    ));
                }
            }
            if let Some(approval) = &env.approval {
                for (j, who) in approval.approvers.iter().enumerate() {
                    if let Some(group) = who.strip_prefix("group:") {
                        if !self.groups.contains_key(group) {
                            return Err(ParseError::at(
                                format!("catalog.environments[{i}].approval.approvers[{j}]"),
                                format!("unknown group {group:?}: declare it under [groups]"),
                            ));
                        }
                    }
                }
                if approval.required && approval.approvers.is_empty() {
                    return Err(ParseError::at(
                        format!("catalog.environments[{i}].approval.approvers"),
                        "an approval is required but nobody may approve: list identities or group:<name>",
                    ));
                }
            }
            if env.point_of_no_return == PointOfNoReturnPolicy::Approve
                && env.approval.as_ref().is_none_or(|a| a.approvers.is_empty())
            {
                return Err(ParseError::at(
                    format!("catalog.environments[{i}].point_of_no_return"),
                    "points of no return need an approval here but nobody may approve: list identities or group:<name> under approval.approvers",
                ));
            }
            for (j, freeze) in env.freeze.iter().enumerate() {
                match freeze {
                    Freeze::Recurring { cron, .. } if cron.split_whitespace().count() != 5 => {
                        return Err(ParseError::at(
                            format!("catalog.environments[{i}].freeze[{j}].cron"),
                            format!(
                                "{cron:?} is not a 5-field cron expression (minute hour day-of-month month day-of-week)"
                            ),
                        ));
                    }
                    Freeze::Fixed { start, end, .. } if end <= start => {
                        return Err(ParseError::at(
                            format!("catalog.environments[{i}].freeze[{j}].end"),
                            "the freeze ends before it starts: end must be after start",
                        ));
                    }
                    _ => {}
                }
            }
        }
        if self.promotion_path().len() != self.environments.len() {
            return Err(ParseError::at(
                "catalog.environments",
                "the environments' `after` links form a cycle: the promotion path must start somewhere",
            ));
        }
        let services: BTreeSet<&ServiceName> = self.services.keys().collect();
        let known = |path: String, name: &ServiceName| -> Result<(), ParseError> {
            if services.contains(name) {
                Ok(())
            } else {
                Err(ParseError::at(
                    path,
                    format!(
                        "unknown service {:?}: declare it under [services.{name}] or remove it here",
                        name.as_str()
                    ),
                ))
            }
        };
        for (name, service) in &self.services {
            for (j, after) in service.after.iter().enumerate() {
                known(format!("catalog.services.{name}.after[{j}]"), after)?;
            }
            for env in service.environments.keys() {
                if !envs.contains(env) {
                    return Err(ParseError::at(
                        format!("catalog.services.{name}.environments.{env}"),
                        format!(
                            "unknown environment {:?} (expected one of: {})",
                            env.as_str(),
                            list(&envs)
                        ),
                    ));
                }
            }
            let path = format!("catalog.services.{name}");
            check_rate(&path, &service.deploy)?;
            check_thresholds(&path, &service.gates)?;
            for (env, over) in &service.environments {
                let path = format!("{path}.environments.{env}");
                if let Some(deploy) = &over.deploy {
                    check_rate(&path, deploy)?;
                }
                check_thresholds(&path, over.gates.as_deref().unwrap_or_default())?;
            }
            if let Strategy::Canary { steps } = &service.strategy {
                if steps.last() != Some(&100) || steps.windows(2).any(|w| w[0] >= w[1]) {
                    return Err(ParseError::at(
                        format!("catalog.services.{name}.strategy.steps"),
                        "canary weights must rise strictly and end at 100, like [10, 50, 100]",
                    ));
                }
            }
        }
        for (name, db) in &self.databases {
            for (j, user) in db.users.iter().enumerate() {
                known(format!("catalog.databases.{name}.users[{j}]"), user)?;
            }
        }
        for (path, argv) in self.commands() {
            check_no_placeholder_in_shell(&path, argv)?;
        }
        let runs_as = self
            .services
            .iter()
            .map(|(name, s)| (format!("catalog.services.{name}"), &s.workdir, &s.user))
            .chain(
                self.databases
                    .iter()
                    .map(|(name, d)| (format!("catalog.databases.{name}"), &d.workdir, &d.user)),
            );
        for (path, workdir, user) in runs_as {
            check_runs_as(&path, workdir.as_deref(), user.as_deref())?;
        }
        for (name, queue) in &self.queues {
            for (j, s) in queue.producers.iter().enumerate() {
                known(format!("catalog.queues.{name}.producers[{j}]"), s)?;
            }
            for (j, s) in queue.consumers.iter().enumerate() {
                known(format!("catalog.queues.{name}.consumers[{j}]"), s)?;
            }
        }
        for (name, api) in &self.apis {
            known(format!("catalog.apis.{name}.provider"), &api.provider)?;
            for (j, s) in api.consumers.iter().enumerate() {
                known(format!("catalog.apis.{name}.consumers[{j}]"), s)?;
            }
        }
        Ok(())
    }
}

fn list<T: std::fmt::Display>(items: &BTreeSet<&T>) -> String {
    items
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A simulated failure rate is a probability and a Prometheus threshold a finite number:
/// `nan` and `inf` (valid TOML) would make every comparison false and cannot be written as
/// the JSON the catalog's hash is computed over.
fn check_rate(path: &str, deploy: &Deploy) -> Result<(), ParseError> {
    if let Deploy::Simulated {
        fail_rate: Some(rate),
        ..
    } = deploy
    {
        if !(0.0..=1.0).contains(rate) {
            return Err(ParseError::at(
                format!("{path}.deploy.fail_rate"),
                format!("{rate} is not a probability: write a number from 0 to 1, like 0.2"),
            ));
        }
    }
    Ok(())
}

/// See [`check_rate`].
fn check_thresholds(path: &str, gates: &[Gate]) -> Result<(), ParseError> {
    for (i, gate) in gates.iter().enumerate() {
        if let Gate::Prometheus { threshold, .. } = gate {
            if !threshold.is_finite() {
                return Err(ParseError::at(
                    format!("{path}.gates[{i}].threshold"),
                    format!(
                        "{threshold} is not a finite number: write the value to compare with, like 0.05"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// A command's working directory must be an absolute path, and its user a system user name.
fn check_runs_as(path: &str, workdir: Option<&str>, user: Option<&str>) -> Result<(), ParseError> {
    if let Some(dir) = workdir {
        if !dir.starts_with('/') || dir.contains('\0') || dir.split('/').any(|part| part == "..") {
            return Err(ParseError::at(
                format!("{path}.workdir"),
                format!(
                    "{dir:?} is not an absolute path without `..`: write the directory the commands run in as /srv/deploy/orders-api"
                ),
            ));
        }
    }
    if let Some(user) = user {
        let valid = !user.is_empty()
            && user.len() <= 32
            && user
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
            && user
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-'));
        if !valid {
            return Err(ParseError::at(
                format!("{path}.user"),
                format!(
                    "{user:?} is not a system user name (lower-case letters, digits, _ and -, at most 32, starting with a letter or _), like \"deploy\""
                ),
            ));
        }
    }
    Ok(())
}

/// Shells whose `-c` script would parse a placeholder's value as code.
const SHELLS: &[&str] = &["sh", "bash", "dash", "zsh", "ksh", "ash", "busybox"];

/// Refuses a placeholder inside a shell's `-c` script: a value spliced into a script is parsed
/// as code. Values reach a script as variables instead (`"$RAILYARD_VERSION"`), which the
/// shell never parses.
fn check_no_placeholder_in_shell(path: &str, argv: &[String]) -> Result<(), ParseError> {
    let Some(program) = argv.first() else {
        return Ok(());
    };
    let name = program.rsplit('/').next().unwrap_or(program);
    if !SHELLS.contains(&name) {
        return Ok(());
    }
    let Some(script_at) = argv
        .iter()
        .position(|a| a.starts_with('-') && !a.starts_with("--") && a.contains('c'))
        .map(|flag| flag + 1)
    else {
        return Ok(());
    };
    // Only the script is parsed; the arguments after it are its positional parameters.
    for (i, arg) in argv.iter().enumerate().skip(script_at).take(1) {
        let placeholder = arg.match_indices('{').find_map(|(open, _)| {
            let rest = &arg[open + 1..];
            let name = &rest[..rest.find('}')?];
            (!name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | ':')))
            .then_some(name)
        });
        let Some(placeholder) = placeholder else {
            continue;
        };
        let variable = match placeholder.strip_prefix("secret:") {
            Some(secret) => format!(
                "\"$RAILYARD_SECRET_{secret}\" (and grant it: secrets = [\"{secret}\"] on the service)"
            ),
            None => format!("\"$RAILYARD_{}\"", placeholder.to_uppercase()),
        };
        return Err(ParseError::at(
            format!("{path}[{i}]"),
            format!(
                "{{{placeholder}}} inside a {name} -c script would be run as code if its value held shell syntax: use the variable {variable} in the script instead, or pass {{{placeholder}}} as an argument of its own"
            ),
        ));
    }
    Ok(())
}

//! The plan as data (INTERFACES §11): steps, explained edges, waves and the critical path.
//! The planner crate builds it; events carry it; workers execute it.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::names::{EnvName, ReleaseId};

/// What a step does.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Run a database migration.
    Migrate,
    /// Deploy a service.
    Deploy,
    /// Check a service's gates.
    Verify,
    /// Wait for an approval.
    Approve,
}

impl Action {
    /// The lowercase name used in step ids.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Migrate => "migrate",
            Action::Deploy => "deploy",
            Action::Verify => "verify",
            Action::Approve => "approve",
        }
    }

    /// The action named `name` in a step id (`migrate`, `deploy`, `verify`, `approve`).
    pub fn parse(name: &str) -> Option<Action> {
        [
            Action::Migrate,
            Action::Deploy,
            Action::Verify,
            Action::Approve,
        ]
        .into_iter()
        .find(|action| action.as_str() == name)
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A step id as the plan and the events carry it, `<env>:<action>:<target>`
/// (`production:deploy:orders-api`, `staging:migrate:orders-db@43`,
/// `production:approve:rel-42`). It is only ever built and read through the typed
/// [`crate::step::StepId`] (`to_string`, `parse`); the fields stay this string until every
/// crate takes the typed one.
pub type StepId = String;

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Step {
    /// Stable id.
    pub id: StepId,
    /// Environment.
    pub env: EnvName,
    /// What it does.
    pub action: Action,
    /// Service, `database@version`, or release id for approvals.
    pub target: String,
    /// The version deployed, for deploy and verify steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

impl Step {
    /// The step `id` is, carrying `version` (deploy and verify steps): the one place a step's
    /// id, environment, action and target are filled, all from the typed id.
    pub fn new(id: crate::step::StepId, version: Option<String>) -> Step {
        Step {
            env: id.env().clone(),
            action: id.action(),
            target: id.target().to_string(),
            id: id.into(),
            version,
        }
    }

    /// The typed id (its environment, action and target), parsed from `id`.
    pub fn typed_id(&self) -> Result<crate::step::StepId, crate::step::InvalidStepId> {
        crate::step::StepId::parse(&self.id)
    }
}

/// An ordering between two steps and why it exists.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
pub struct Edge {
    /// The step that goes first.
    pub from: StepId,
    /// The step that waits.
    pub to: StepId,
    /// The rule that added it (`environment-order`, `queue`, `api`, `schema`, `cross-release`,
    /// `explicit`, `step-order`).
    pub rule: String,
    /// Why, in words a release manager understands.
    pub reason: String,
}

/// A plan for one release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Plan {
    /// The release planned.
    pub release: ReleaseId,
    /// Hash of the catalog the plan was made from.
    pub catalog_hash: String,
    /// Every step.
    pub steps: Vec<Step>,
    /// Every ordering with its reason.
    pub edges: Vec<Edge>,
    /// Steps that can run together, in order.
    pub waves: Vec<Vec<StepId>>,
    /// The longest chain of steps.
    pub critical_path: Vec<StepId>,
    /// Steps of this plan that wait for steps of other in-flight releases (`cross-release`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub external_edges: Vec<ExternalEdge>,
    /// Steps after which no rollback keeps the contracts (`docs/planning-rules.md`): a
    /// rollback requested once one of them ran holds the release instead.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub points_of_no_return: Vec<PointOfNoReturn>,
}

/// A step after which no rollback keeps the contracts: typically a migration without a
/// rollback form, after which the version a rollback would go back to cannot run.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
pub struct PointOfNoReturn {
    /// The step.
    pub step: StepId,
    /// Why, in words a release manager understands.
    pub reason: String,
    /// The approval step placed right before it, when the environment asks for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<StepId>,
}

/// An ordering on a step of another in-flight release: `to` (a step of this plan) starts only
/// once `from` (a step of `release`) has finished, or once that release has ended.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
pub struct ExternalEdge {
    /// The other release.
    pub release: ReleaseId,
    /// Its step that goes first.
    pub from: StepId,
    /// The step of this plan that waits.
    pub to: StepId,
    /// The rule that added it (`cross-release`).
    pub rule: String,
    /// Why, in words a release manager understands.
    pub reason: String,
}

impl Plan {
    /// The step with id `id`.
    pub fn step(&self, id: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.id == id)
    }

    /// The point of no return at step `id`, if it is one.
    pub fn point_of_no_return(&self, id: &str) -> Option<&PointOfNoReturn> {
        self.points_of_no_return.iter().find(|p| p.step == id)
    }

    /// Ids of the steps `id` waits for.
    pub fn predecessors<'a>(&'a self, id: &'a str) -> impl Iterator<Item = &'a StepId> + 'a {
        self.edges
            .iter()
            .filter(move |e| e.to == id)
            .map(|e| &e.from)
    }
}

/// Why a release was refused, with the remedy.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
pub struct Refusal {
    /// The rule whose invariant would break (`queue`, `api`, `schema`, `cycle`, `unknown`).
    pub rule: String,
    /// The environment, when the refusal is specific to one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<EnvName>,
    /// What would break, naming who and what.
    pub reason: String,
    /// What to add or change so the release can be planned.
    pub remedy: String,
    /// The other release in the way, for a `cross-release` finding (re-validation: an earlier
    /// release still in flight that this plan does not wait for at the right step).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<ReleaseId>,
}

//! The work items promotion workers share on `RAILYARD_WORK`: run one step, roll a release
//! back in one environment, or retire a release's old colours. Their subjects and payloads and
//! the step, rollback and retire lease keys live here; the message ids that make repeated
//! offers of the same state no-ops are the dispatcher's (`dispatch.rs`).

use bytes::Bytes;
use railyard_core::{EnvName, ReleaseId, StepId};
use serde::{Deserialize, Serialize};

/// The durable work consumer every promotion worker shares.
pub const WORK_CONSUMER: &str = "railyard-promoter";
/// The work subjects promotion workers read.
pub const WORK_FILTER: &str = "railyard.work.promoter.>";

/// A unit of work offered to promotion workers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WorkOrder {
    /// Start (or resume) one step.
    Step {
        /// The release.
        release: ReleaseId,
        /// The step.
        step: StepId,
        /// The release's other steps that were ready with it (a wave: after the plan, an
        /// approval, another release's step), for the worker that takes this one to take as
        /// well, each under a free permit of its own (else it offers them one by one), so a
        /// release's parallel steps run on one worker.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        with: Vec<StepId>,
    },
    /// Undo what the release applied in one environment.
    Rollback {
        /// The release.
        release: ReleaseId,
        /// The environment.
        env: EnvName,
        /// Why, in words.
        reason: String,
        /// Who asked for it (an operator) or the worker that saw the failure.
        actor: String,
        /// Past a point of no return: undo only the steps still safely reversible (an
        /// operator's explicit choice); otherwise such a rollback holds the release.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        partial: bool,
    },
    /// Take down the old colours of the release's blue-green deploys, then complete it.
    Retire {
        /// The release.
        release: ReleaseId,
    },
}

impl WorkOrder {
    /// The release it concerns.
    pub fn release(&self) -> &ReleaseId {
        match self {
            WorkOrder::Step { release, .. }
            | WorkOrder::Rollback { release, .. }
            | WorkOrder::Retire { release } => release,
        }
    }

    /// `railyard.work.promoter.<release>`.
    pub fn subject(&self) -> String {
        work_subject(self.release())
    }

    /// The JSON payload.
    pub fn payload(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).expect("a work order always serializes"))
    }
}

/// Where the work of `release` is offered: `railyard.work.promoter.<release>`.
pub fn work_subject(release: &ReleaseId) -> String {
    format!("railyard.work.promoter.{release}")
}

/// The lease that guards a step.
pub fn step_lease(release: &ReleaseId, step: &str) -> String {
    format!("step.{release}.{step}")
}

/// The lease that guards the retirement of a release's old colours.
pub fn retire_lease(release: &ReleaseId) -> String {
    format!("retire.{release}")
}

/// The lease that guards a release's rollback.
pub fn rollback_lease(release: &ReleaseId) -> String {
    format!("rollback.{release}")
}

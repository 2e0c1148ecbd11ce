//! What the notifier remembers of a release to write its messages: the changes with their
//! repositories, the channels that follow it, the plan's steps and their progress, the
//! commits each environment ran when it was planned (for commit ranges) and the hold. A pure
//! fold of the release's events, tolerant of events it has no words for.

use std::collections::BTreeMap;

use railyard_core::catalog::Verbosity;
use railyard_core::event::{Envelope, Event};
use railyard_core::plan::{Action, Plan};
use railyard_core::{Catalog, Change, ReleaseId};
use serde::{Deserialize, Serialize};

/// Commits running per environment, then per service (from `service.deployed`).
pub type Running = BTreeMap<String, BTreeMap<String, String>>;

/// Where a release is, as its root message's status line says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Waiting for the planner.
    Requested,
    /// Under way.
    Running,
    /// Waiting for an approval.
    AwaitingApproval,
    /// Held for an operator.
    Held,
    /// Every step succeeded.
    Completed,
    /// Undone.
    RolledBack,
    /// Refused by the planner.
    Refused,
    /// Cancelled by an operator.
    Cancelled,
}

/// One change as messages show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeView {
    /// The service.
    pub service: String,
    /// The version.
    pub version: String,
    /// The commit it was built from.
    pub commit: Option<String>,
    /// The repository (catalog `match.repository`), for links.
    pub repository: Option<String>,
    /// Databases it migrates (`orders-db@43`), for migrate steps.
    pub migrations: Vec<String>,
}

/// Where a step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    /// Not started.
    Pending,
    /// Running.
    Running,
    /// Done.
    Succeeded,
    /// Failed.
    Failed,
    /// Undone.
    RolledBack,
}

/// One step of the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepView {
    /// `<env>:<action>:<target>`.
    pub id: String,
    /// Environment.
    pub env: String,
    /// What it does.
    pub action: Action,
    /// Service, `database@version` or release id.
    pub target: String,
    /// Where it is.
    pub state: StepState,
}

/// Why a release is held and who must act.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldView {
    /// Why.
    pub reason: String,
    /// The step it stopped at.
    pub step: Option<String>,
    /// Who must act.
    pub owner: Option<String>,
}

/// The notifier's memory of one release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseView {
    /// The release.
    pub id: ReleaseId,
    /// Who asked for it.
    pub requested_by: String,
    /// Its changes.
    pub changes: Vec<ChangeView>,
    /// Channels that follow it: the default channel, then its services' channels.
    pub channels: Vec<String>,
    /// Environments it goes through, in order.
    pub envs: Vec<String>,
    /// The plan's steps, in plan order.
    pub steps: Vec<StepView>,
    /// The plan's waves, as step ids.
    pub waves: Vec<Vec<String>>,
    /// Commits running per environment and service when it was planned.
    pub from: Running,
    /// Where it is.
    pub phase: Phase,
    /// The current or last hold.
    pub hold: Option<HoldView>,
    /// The environment whose approval is awaited.
    pub awaiting: Option<String>,
}

impl ReleaseView {
    /// A view for a release first seen through `event` (normally `release.requested`).
    pub fn new(id: ReleaseId, catalog: &Catalog) -> ReleaseView {
        ReleaseView {
            id,
            requested_by: String::new(),
            changes: Vec::new(),
            channels: channels(catalog, &[]),
            envs: catalog
                .promotion_path()
                .iter()
                .map(|e| e.name.to_string())
                .collect(),
            steps: Vec::new(),
            waves: Vec::new(),
            from: Running::new(),
            phase: Phase::Requested,
            hold: None,
            awaiting: None,
        }
    }

    /// The step `id`.
    pub fn step(&self, id: &str) -> Option<&StepView> {
        self.steps.iter().find(|s| s.id == id)
    }

    fn set_step(&mut self, id: &str, state: StepState) {
        if let Some(step) = self.steps.iter_mut().find(|s| s.id == id) {
            step.state = state;
        }
    }

    /// The change of `service`.
    pub fn change(&self, service: &str) -> Option<&ChangeView> {
        self.changes.iter().find(|c| c.service == service)
    }

    /// The changes a step concerns: its service, the change bringing its migration, or every
    /// change for an approval.
    pub fn changes_of_step(&self, step: &StepView) -> Vec<&ChangeView> {
        match step.action {
            Action::Deploy | Action::Verify => self.change(&step.target).into_iter().collect(),
            Action::Migrate => self
                .changes
                .iter()
                .filter(|c| c.migrations.contains(&step.target))
                .collect(),
            Action::Approve => self.changes.iter().collect(),
        }
    }

    /// Steps done and all steps in `env`.
    pub fn progress(&self, env: &str) -> (usize, usize) {
        let steps = self.steps.iter().filter(|s| s.env == env);
        let done = steps
            .clone()
            .filter(|s| s.state == StepState::Succeeded)
            .count();
        (done, steps.count())
    }

    /// Applies one event of the release (pure; events it has no use for change nothing).
    pub fn apply(&mut self, envelope: &Envelope, catalog: &Catalog, running: &Running) {
        match &envelope.event {
            Event::ReleaseRequested(r) => {
                self.requested_by = r.requested_by.clone();
                self.changes = r.changes.iter().map(|c| change_view(c, catalog)).collect();
                let services: Vec<&str> = r.changes.iter().map(|c| c.service.as_str()).collect();
                self.channels = channels(catalog, &services);
                self.phase = Phase::Requested;
            }
            Event::ReleasePlanned(p) => self.planned(&p.plan, running),
            Event::ReleaseRejected(_) => self.phase = Phase::Refused,
            Event::ReleaseCancelled(_) => self.phase = Phase::Cancelled,
            Event::ReleaseHeld(h) => {
                self.hold = Some(HoldView {
                    reason: h.reason.clone(),
                    step: h.step.clone(),
                    owner: h.owner.clone(),
                });
                self.phase = Phase::Held;
            }
            Event::ReleaseResumed(_) => {
                self.phase = if self.awaiting.is_some() {
                    Phase::AwaitingApproval
                } else {
                    Phase::Running
                };
            }
            Event::ReleaseCompleted(_) => self.phase = Phase::Completed,
            Event::ReleaseRolledBack(_) => self.phase = Phase::RolledBack,
            Event::StepStarted(s) => self.set_step(&s.step, StepState::Running),
            Event::StepSucceeded(o) => self.set_step(&o.step, StepState::Succeeded),
            Event::StepFailed(o) => self.set_step(&o.step, StepState::Failed),
            Event::StepRolledBack(o) => self.set_step(&o.step, StepState::RolledBack),
            Event::ApprovalRequested(a) => {
                self.awaiting = Some(a.env.to_string());
                if self.phase == Phase::Running {
                    self.phase = Phase::AwaitingApproval;
                }
            }
            Event::ApprovalGranted(_) | Event::ApprovalDenied(_) => {
                self.awaiting = None;
                if self.phase == Phase::AwaitingApproval {
                    self.phase = Phase::Running;
                }
            }
            _ => {}
        }
    }

    fn planned(&mut self, plan: &Plan, running: &Running) {
        self.steps = plan
            .steps
            .iter()
            .map(|s| StepView {
                id: s.id.clone(),
                env: s.env.to_string(),
                action: s.action,
                target: s.target.clone(),
                state: StepState::Pending,
            })
            .collect();
        let mut envs: Vec<String> = Vec::new();
        for wave in &plan.waves {
            for id in wave {
                if let Some(step) = plan.step(id) {
                    if !envs.iter().any(|e| e == step.env.as_str()) {
                        envs.push(step.env.to_string());
                    }
                }
            }
        }
        for step in &plan.steps {
            if !envs.iter().any(|e| e == step.env.as_str()) {
                envs.push(step.env.to_string());
            }
        }
        self.envs = envs;
        self.waves = plan.waves.clone();
        self.from = self
            .envs
            .iter()
            .map(|env| {
                let commits = running
                    .get(env)
                    .map(|services| {
                        self.changes
                            .iter()
                            .filter_map(|c| {
                                services
                                    .get(&c.service)
                                    .map(|commit| (c.service.clone(), commit.clone()))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                (env.clone(), commits)
            })
            .collect();
        self.phase = Phase::Running;
    }
}

fn change_view(change: &Change, catalog: &Catalog) -> ChangeView {
    let repository = catalog
        .services
        .get(&change.service)
        .and_then(|s| s.match_.repository.clone());
    ChangeView {
        service: change.service.to_string(),
        version: change.version.clone(),
        commit: change.commit.clone(),
        repository,
        migrations: change
            .migrations
            .iter()
            .map(|m| format!("{}@{}", m.database, m.to))
            .collect(),
    }
}

/// The channels that follow a release of `services`: the default channel first, then each
/// service's `slack_channel` in the order of the changes, without repeats.
pub fn channels(catalog: &Catalog, services: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let default = catalog
        .notify
        .slack
        .as_ref()
        .and_then(|s| s.default_channel.clone());
    let service_channels = services.iter().filter_map(|name| {
        catalog
            .services
            .iter()
            .find(|(n, _)| n.as_str() == *name)
            .and_then(|(_, s)| s.slack_channel.clone())
    });
    for channel in default.into_iter().chain(service_channels) {
        if !out.contains(&channel) {
            out.push(channel);
        }
    }
    out
}

/// How much `channel` hears: its `[notify.slack].verbosity`, `all` when not set.
pub fn verbosity(catalog: &Catalog, channel: &str) -> Verbosity {
    catalog
        .notify
        .slack
        .as_ref()
        .and_then(|s| s.verbosity.get(channel).copied())
        .unwrap_or(Verbosity::All)
}

/// Whether a channel at `verbosity` hears a message of `class`.
pub fn hears(verbosity: Verbosity, class: Verbosity) -> bool {
    match verbosity {
        Verbosity::All => true,
        Verbosity::Changes => class != Verbosity::All,
        Verbosity::Exceptions => class == Verbosity::Exceptions,
    }
}

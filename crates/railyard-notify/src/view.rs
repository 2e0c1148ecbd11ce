//! What the notifier remembers of a release to write its messages: the changes with their
//! repositories, the channels that follow it, the plan's steps and their progress, the
//! commits each environment ran when it was planned (for commit ranges), the hold, and the
//! exception that stopped it with the owners who should act (from the catalog's `owner`). A
//! pure fold of the release's events, tolerant of events it has no words for.

use std::collections::BTreeMap;

use railyard_core::catalog::Verbosity;
use railyard_core::event::{Envelope, Event};
use railyard_core::plan::{Action, Plan};
use railyard_core::step;
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

impl StepView {
    /// A step the plan does not know (yet), pending, read from its id through core's one
    /// parser; a text that is no step id gives an empty environment and target.
    pub fn unplanned(id: &str) -> StepView {
        let typed = step::StepId::parse(id).ok();
        StepView {
            id: id.to_owned(),
            env: typed
                .as_ref()
                .map(|s| s.env().to_string())
                .unwrap_or_default(),
            action: typed.as_ref().map_or(Action::Deploy, |s| s.action()),
            target: typed
                .as_ref()
                .map(|s| s.target().to_string())
                .unwrap_or_default(),
            state: StepState::Pending,
        }
    }
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

/// How a release stopped, or what still needs a human after it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExceptionKind {
    /// A gate or a step failed.
    Failed,
    /// The release was undone.
    RolledBack,
    /// The release is held for an operator.
    Held,
    /// An approver denied an environment.
    Denied,
    /// The planner refused the release.
    Refused,
    /// An old blue-green colour could not be taken down: it still runs.
    RetireFailed,
}

/// A team that should act, and the services of the exception it owns; `team: None` gathers
/// the services the catalog names no owner for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// The catalog's `owner` (or, for an operator's hold, who held it).
    pub team: Option<String>,
    /// The services it owns among those concerned, in the order they were named.
    pub services: Vec<String>,
}

/// What stopped the release (or still needs a human) and who should look at it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exception {
    /// How it stopped.
    pub kind: ExceptionKind,
    /// The step it concerns, when one.
    pub step: Option<String>,
    /// What happened, as plain text (escaped when rendered).
    pub what: String,
    /// Who should act, deduplicated; empty when no service is concerned.
    pub owners: Vec<Owner>,
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
    /// The exception that stopped it or still needs a human, with who should act.
    #[serde(default)]
    pub exception: Option<Exception>,
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
            exception: None,
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

    /// The services a step concerns: its service, the services bringing its migration, or —
    /// for an approval — the services the release deploys in its environment (all of the
    /// release's when none).
    pub fn services_of_step(&self, step: &StepView) -> Vec<String> {
        match step.action {
            Action::Approve => {
                let services = self.services_in(&step.env);
                if services.is_empty() {
                    self.services()
                } else {
                    services
                }
            }
            _ => self
                .changes_of_step(step)
                .into_iter()
                .map(|c| c.service.clone())
                .collect(),
        }
    }

    /// The services of step `id` (for a step the plan does not know, the last part of its id
    /// when that is one of the release's services).
    pub fn services_of(&self, id: &str) -> Vec<String> {
        match self.step(id) {
            Some(step) => self.services_of_step(step),
            None => step::StepId::parse(id)
                .ok()
                .and_then(|id| self.change(id.service()?.as_str()))
                .map(|c| vec![c.service.clone()])
                .unwrap_or_default(),
        }
    }

    /// The release's services, in the order of its changes.
    pub fn services(&self) -> Vec<String> {
        self.changes.iter().map(|c| c.service.clone()).collect()
    }

    /// The services the release deploys or migrates in `env`.
    pub fn services_in(&self, env: &str) -> Vec<String> {
        let mut services: Vec<String> = Vec::new();
        for step in self
            .steps
            .iter()
            .filter(|s| s.env == env && s.action != Action::Approve)
        {
            for service in self.services_of_step(step) {
                if !services.contains(&service) {
                    services.push(service);
                }
            }
        }
        services
    }

    /// The environment of step `id`: the plan's, else read from the id (empty when it is
    /// not a step id).
    pub fn env_of(&self, id: &str) -> String {
        self.step(id)
            .map(|s| s.env.clone())
            .unwrap_or_else(|| StepView::unplanned(id).env)
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
            Event::ReleaseRejected(r) => {
                self.phase = Phase::Refused;
                let mut named: Vec<String> = Vec::new();
                for refusal in &r.reasons {
                    for service in refusal_services(catalog, self, &refusal.reason, &refusal.remedy)
                    {
                        if !named.contains(&service) {
                            named.push(service);
                        }
                    }
                }
                let mut rules: Vec<String> = Vec::new();
                for refusal in &r.reasons {
                    let rule = match &refusal.env {
                        Some(env) => format!("[{}] in {env}", refusal.rule),
                        None => format!("[{}]", refusal.rule),
                    };
                    if !rules.contains(&rule) {
                        rules.push(rule);
                    }
                }
                let n = r.reasons.len();
                self.exception = Some(Exception {
                    kind: ExceptionKind::Refused,
                    step: None,
                    what: format!(
                        "the planner refused it: {n} problem{} ({})",
                        if n == 1 { "" } else { "s" },
                        rules.join(", ")
                    ),
                    owners: owners(catalog, &named),
                });
            }
            Event::ReleaseCancelled(_) => self.phase = Phase::Cancelled,
            Event::ReleaseHeld(h) => {
                self.hold = Some(HoldView {
                    reason: h.reason.clone(),
                    step: h.step.clone(),
                    owner: h.owner.clone(),
                });
                self.phase = Phase::Held;
                let services = match (&h.step, &h.frozen) {
                    (Some(step), _) => self.services_of(step),
                    (None, Some(env)) => self.services_in(env.as_str()),
                    (None, None) => Vec::new(),
                };
                let mut who = owners(catalog, &services);
                if let Some(owner) = &h.owner {
                    if !who
                        .iter()
                        .any(|o| o.team.as_deref() == Some(owner.as_str()))
                    {
                        who.push(Owner {
                            team: Some(owner.clone()),
                            services: Vec::new(),
                        });
                    }
                }
                // The failure that caused the hold says more than the hold's long reason.
                let cause = self
                    .exception
                    .as_ref()
                    .filter(|e| e.kind == ExceptionKind::Failed && e.step == h.step)
                    .map(|e| e.what.clone());
                let what = match (cause, &h.step) {
                    (Some(cause), _) => cause,
                    (None, Some(step)) => format!("held at {step}: {}", first_sentence(&h.reason)),
                    (None, None) => format!("held: {}", first_sentence(&h.reason)),
                };
                self.exception = Some(Exception {
                    kind: ExceptionKind::Held,
                    step: h.step.clone(),
                    what,
                    owners: who,
                });
            }
            Event::ReleaseResumed(_) => {
                self.phase = if self.awaiting.is_some() {
                    Phase::AwaitingApproval
                } else {
                    Phase::Running
                };
                self.clear_exception(|e| e.kind != ExceptionKind::RetireFailed);
            }
            Event::ReleaseCompleted(_) => self.phase = Phase::Completed,
            Event::ReleaseRolledBack(r) => {
                self.phase = Phase::RolledBack;
                // A rollback after a failure (or a hold at a step) keeps that cause and its
                // owners; any other rollback names the owners of what was undone.
                let cause = self.exception.clone().filter(|e| {
                    e.kind == ExceptionKind::Failed
                        || (e.kind == ExceptionKind::Held && e.step.is_some())
                });
                let exception = match cause {
                    Some(cause) => Exception {
                        kind: ExceptionKind::RolledBack,
                        ..cause
                    },
                    None => {
                        let mut services: Vec<String> = Vec::new();
                        for step in &r.undone {
                            for service in self.services_of(step) {
                                if !services.contains(&service) {
                                    services.push(service);
                                }
                            }
                        }
                        if services.is_empty() {
                            services = self.services();
                        }
                        Exception {
                            kind: ExceptionKind::RolledBack,
                            step: None,
                            what: first_sentence(&r.reason),
                            owners: owners(catalog, &services),
                        }
                    }
                };
                self.exception = Some(exception);
            }
            Event::StepStarted(s) => {
                self.set_step(&s.step, StepState::Running);
                // A failed step started again is being retried.
                self.clear_exception(|e| {
                    e.kind == ExceptionKind::Failed && e.step.as_deref() == Some(s.step.as_str())
                });
            }
            Event::StepSucceeded(o) => {
                self.set_step(&o.step, StepState::Succeeded);
                self.clear_exception(|e| {
                    e.kind == ExceptionKind::Failed && e.step.as_deref() == Some(o.step.as_str())
                });
            }
            Event::StepFailed(o) => {
                self.set_step(&o.step, StepState::Failed);
                // A denial fails its approval step: the denial is the exception.
                let denied = self.exception.as_ref().is_some_and(|e| {
                    e.kind == ExceptionKind::Denied && e.step.as_deref() == Some(o.step.as_str())
                });
                if !denied {
                    let what = if o.detail.is_empty() {
                        format!("{} failed", o.step)
                    } else {
                        format!("{} failed: {}", o.step, o.detail)
                    };
                    self.exception = Some(Exception {
                        kind: ExceptionKind::Failed,
                        step: Some(o.step.clone()),
                        what,
                        owners: owners(catalog, &self.services_of(&o.step)),
                    });
                }
            }
            Event::GateEvaluated(g) if !g.passed => {
                self.exception = Some(Exception {
                    kind: ExceptionKind::Failed,
                    step: Some(g.step.clone()),
                    what: format!("gate {} failed on {}", g.gate, g.step),
                    owners: owners(catalog, &self.services_of(&g.step)),
                });
            }
            Event::StepRolledBack(o) => self.set_step(&o.step, StepState::RolledBack),
            Event::ApprovalRequested(a) => {
                self.awaiting = Some(a.env.to_string());
                if self.phase == Phase::Running {
                    self.phase = Phase::AwaitingApproval;
                }
            }
            Event::ApprovalGranted(_) => {
                self.awaiting = None;
                if self.phase == Phase::AwaitingApproval {
                    self.phase = Phase::Running;
                }
            }
            Event::ApprovalDenied(d) => {
                self.awaiting = None;
                if self.phase == Phase::AwaitingApproval {
                    self.phase = Phase::Running;
                }
                let env = self.env_of(&d.step);
                let mut services = self.services_of(&d.step);
                if services.is_empty() {
                    services = self.services();
                }
                let comment = if d.comment.is_empty() {
                    String::new()
                } else {
                    format!(": {}", d.comment)
                };
                self.exception = Some(Exception {
                    kind: ExceptionKind::Denied,
                    step: Some(d.step.clone()),
                    what: format!("{env} denied by {}{comment}", envelope.actor),
                    owners: owners(catalog, &services),
                });
            }
            Event::ColourRetired(r) => {
                if r.ok {
                    self.clear_exception(|e| {
                        e.kind == ExceptionKind::RetireFailed
                            && e.step.as_deref() == Some(r.step.as_str())
                    });
                } else {
                    let detail = if r.detail.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", r.detail)
                    };
                    self.exception = Some(Exception {
                        kind: ExceptionKind::RetireFailed,
                        step: Some(r.step.clone()),
                        what: format!(
                            "old colour {} of {} was not retired and still runs{detail}",
                            r.colour, r.step
                        ),
                        owners: owners(catalog, &self.services_of(&r.step)),
                    });
                }
            }
            _ => {}
        }
    }

    fn clear_exception(&mut self, when: impl Fn(&Exception) -> bool) {
        if self.exception.as_ref().is_some_and(when) {
            self.exception = None;
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
            .map(|m| {
                step::Target::Migration {
                    database: m.database.clone(),
                    to: m.to,
                }
                .to_string()
            })
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

/// The owner the catalog names for `service`.
pub fn owner_of(catalog: &Catalog, service: &str) -> Option<String> {
    catalog
        .services
        .iter()
        .find(|(name, _)| name.as_str() == service)
        .and_then(|(_, s)| s.owner.clone())
}

/// The owners of `services`, one entry per team in the order first named, each with its
/// services; services without an owner gathered last under `team: None`. Deduplicated.
pub fn owners(catalog: &Catalog, services: &[String]) -> Vec<Owner> {
    let mut out: Vec<Owner> = Vec::new();
    let mut unowned: Vec<String> = Vec::new();
    for service in services {
        match owner_of(catalog, service) {
            Some(team) => match out.iter_mut().find(|o| o.team.as_ref() == Some(&team)) {
                Some(owner) => {
                    if !owner.services.contains(service) {
                        owner.services.push(service.clone());
                    }
                }
                None => out.push(Owner {
                    team: Some(team),
                    services: vec![service.clone()],
                }),
            },
            None => {
                if !unowned.contains(service) {
                    unowned.push(service.clone());
                }
            }
        }
    }
    if !unowned.is_empty() {
        out.push(Owner {
            team: None,
            services: unowned,
        });
    }
    out
}

/// The services — the release's and the catalog's — that `texts` name as whole words
/// (`orders-api` but not `orders-api-v2`), in the order they first appear.
pub fn named_services(
    catalog: &Catalog,
    view: &ReleaseView,
    reason: &str,
    remedy: &str,
) -> Vec<String> {
    let mut candidates: Vec<String> = view.services();
    for name in catalog.services.keys() {
        if !candidates.iter().any(|c| c == name.as_str()) {
            candidates.push(name.to_string());
        }
    }
    let mut found: Vec<(usize, String)> = Vec::new();
    for (offset, text) in [(0, reason), (reason.len() + 1, remedy)] {
        for name in &candidates {
            if let Some(at) = find_word(text, name) {
                match found.iter_mut().find(|(_, n)| n == name) {
                    Some(entry) => entry.0 = entry.0.min(offset + at),
                    None => found.push((offset + at, name.clone())),
                }
            }
        }
    }
    found.sort();
    found.into_iter().map(|(_, name)| name).collect()
}

/// The services a refusal concerns: those its reason or remedy names, else the release's.
pub fn refusal_services(
    catalog: &Catalog,
    view: &ReleaseView,
    reason: &str,
    remedy: &str,
) -> Vec<String> {
    let named = named_services(catalog, view, reason, remedy);
    if named.is_empty() {
        view.services()
    } else {
        named
    }
}

/// Where `word` first occurs in `text` with no name character (`[a-z0-9-]`) on either side.
fn find_word(text: &str, word: &str) -> Option<usize> {
    let name_char = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    let mut from = 0;
    while let Some(at) = text[from..].find(word) {
        let start = from + at;
        let end = start + word.len();
        let before = text[..start].chars().next_back();
        let after = text[end..].chars().next();
        if !before.is_some_and(name_char) && !after.is_some_and(name_char) {
            return Some(start);
        }
        from = start + word.len().max(1);
        if from >= text.len() {
            break;
        }
    }
    None
}

/// The first sentence of `text` (up to ". " or ";"), for summaries of long reasons.
fn first_sentence(text: &str) -> String {
    let cut = [". ", "; "]
        .iter()
        .filter_map(|sep| text.find(sep))
        .min()
        .unwrap_or(text.len());
    text[..cut].trim_end_matches('.').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_are_found_as_whole_names_only() {
        let cases = [
            ("orders-api 2.4.0 emits v3", Some(0)),
            ("but orders-api.", Some(4)),
            ("(orders-api)", Some(1)),
            ("orders-api-v2 runs", None),
            ("new-orders-api runs", None),
            ("orders-api-v2 and orders-api", Some(18)),
            ("nothing here", None),
        ];
        for (text, expected) in cases {
            assert_eq!(find_word(text, "orders-api"), expected, "{text}");
        }
    }

    #[test]
    fn a_long_reason_is_cut_at_its_first_sentence() {
        assert_eq!(
            first_sentence("held by ops; railyard resume rel-1"),
            "held by ops"
        );
        assert_eq!(
            first_sentence("x failed: exit 1. team-a should look"),
            "x failed: exit 1"
        );
        assert_eq!(first_sentence("no stop here"), "no stop here");
    }
}

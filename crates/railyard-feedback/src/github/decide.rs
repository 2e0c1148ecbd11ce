//! What GitHub should be told about a release, as a pure function of the service's view of the
//! release and one event: the deployments to create (one per environment and repository), the
//! deployment statuses that follow its steps, and the commit statuses on each head commit. No
//! IO: the calls are made by the service (`mod.rs`), which looks up deployment ids in its
//! ledger when it makes them.

use std::collections::{BTreeMap, BTreeSet};

use railyard_core::event::Event;
use railyard_core::{Action, Catalog, ReleaseId, StepId};
use serde::{Deserialize, Serialize};

/// GitHub limits a status description to 140 characters.
pub const DESCRIPTION_LIMIT: usize = 140;

/// A GitHub repository: `owner/name`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Repo {
    /// The owner (user or organisation).
    pub owner: String,
    /// The repository's name.
    pub name: String,
}

impl std::fmt::Display for Repo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.owner, self.name)
    }
}

impl Repo {
    /// The repository of `url` when it is one under `web_url` (`https://github.com` or an
    /// Enterprise server): `https://github.com/acme/orders-api(.git)(/)`.
    pub fn parse(url: &str, web_url: &str) -> Option<Repo> {
        let rest = url.strip_prefix(web_url.trim_end_matches('/'))?;
        let rest = rest.strip_prefix('/')?.trim_end_matches('/');
        let rest = rest.strip_suffix(".git").unwrap_or(rest);
        let (owner, name) = rest.split_once('/')?;
        let ok = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                && s != "."
                && s != ".."
        };
        (ok(owner) && ok(name)).then(|| Repo {
            owner: owner.to_owned(),
            name: name.to_owned(),
        })
    }
}

/// A change of the release whose source is a GitHub repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// The service.
    pub service: String,
    /// Its repository.
    pub repo: Repo,
    /// The commit released (the head commit).
    pub sha: String,
    /// The version released.
    pub version: String,
}

/// Where one deployment (release, environment, repository) stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stage {
    /// Created, nothing started.
    Queued,
    /// A step of it started.
    InProgress,
    /// Every step of it succeeded.
    Succeeded,
    /// A step failed, or the release stopped before it ran.
    Ended,
}

/// The service's view of one release.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseView {
    /// Its changes from GitHub repositories.
    pub targets: Vec<Target>,
    /// Deploy and verify steps of those changes: step → (environment, service).
    pub steps: BTreeMap<StepId, (String, String)>,
    /// Steps that succeeded.
    pub done: BTreeSet<StepId>,
    /// Deployments by `(environment, repository)`, in the order they were created.
    pub deployments: Vec<(String, Repo, Stage)>,
}

/// A deployment state GitHub knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeploymentState {
    /// Waiting.
    Queued,
    /// Running.
    InProgress,
    /// Running the new version.
    Success,
    /// Failed.
    Failure,
    /// Stopped by something else than a failure of its own (a cancelled release).
    Error,
    /// No longer running.
    Inactive,
}

impl DeploymentState {
    /// GitHub's name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeploymentState::Queued => "queued",
            DeploymentState::InProgress => "in_progress",
            DeploymentState::Success => "success",
            DeploymentState::Failure => "failure",
            DeploymentState::Error => "error",
            DeploymentState::Inactive => "inactive",
        }
    }
}

/// A commit status state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommitState {
    /// Planned, running, waiting.
    Pending,
    /// Released.
    Success,
    /// Refused or rolled back.
    Failure,
    /// Cancelled.
    Error,
}

impl CommitState {
    /// GitHub's name.
    pub fn as_str(self) -> &'static str {
        match self {
            CommitState::Pending => "pending",
            CommitState::Success => "success",
            CommitState::Failure => "failure",
            CommitState::Error => "error",
        }
    }
}

/// One call to GitHub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// A commit status on `sha`.
    CommitStatus {
        /// The release.
        release: ReleaseId,
        /// Repository.
        repo: Repo,
        /// Head commit.
        sha: String,
        /// State.
        state: CommitState,
        /// What to say (at most [`DESCRIPTION_LIMIT`] characters).
        description: String,
    },
    /// The deployment of (release, env, repo), unless the ledger or GitHub already has it.
    CreateDeployment {
        /// The release.
        release: ReleaseId,
        /// Environment.
        env: String,
        /// Repository.
        repo: Repo,
        /// The commit deployed.
        sha: String,
        /// Whether `env` is the last of the promotion path.
        production: bool,
        /// What it deploys.
        description: String,
    },
    /// A status of the deployment of (release, env, repo).
    Status {
        /// The release.
        release: ReleaseId,
        /// Environment.
        env: String,
        /// Repository.
        repo: Repo,
        /// State.
        state: DeploymentState,
        /// What to say.
        description: String,
    },
    /// The deployment of (release, env, repo) now runs: the one it replaced becomes inactive.
    Replace {
        /// The release.
        release: ReleaseId,
        /// Environment.
        env: String,
        /// Repository.
        repo: Repo,
    },
    /// The release was rolled back in `env`: the deployment it had replaced runs again.
    Restore {
        /// The release.
        release: ReleaseId,
        /// Environment.
        env: String,
        /// Repository.
        repo: Repo,
    },
}

/// Cuts `text` to GitHub's description limit.
pub fn describe(text: &str) -> String {
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.chars().count() <= DESCRIPTION_LIMIT {
        return text;
    }
    let mut cut: String = text.chars().take(DESCRIPTION_LIMIT - 1).collect();
    cut.push('…');
    cut
}

/// What the decider needs besides the view.
#[derive(Debug)]
pub struct Context<'a> {
    /// The catalog (repositories of services, the promotion path).
    pub catalog: &'a Catalog,
    /// Repository URLs under it are GitHub's.
    pub web_url: &'a str,
}

impl Context<'_> {
    fn repository(&self, service: &str) -> Option<Repo> {
        self.catalog
            .services
            .iter()
            .find(|(name, _)| name.as_str() == service)
            .and_then(|(_, s)| s.match_.repository.as_deref())
            .and_then(|url| Repo::parse(url, self.web_url))
    }

    /// Whether `env` is the end of the promotion path (no environment comes after it).
    fn production(&self, env: &str) -> bool {
        !self
            .catalog
            .environments
            .iter()
            .any(|e| e.after.as_ref().is_some_and(|a| a.as_str() == env))
    }

    fn env_order(&self, env: &str) -> usize {
        self.catalog
            .environments
            .iter()
            .position(|e| e.name.as_str() == env)
            .unwrap_or(usize::MAX)
    }
}

impl ReleaseView {
    /// Each (repository, head commit) once, in the order of the changes.
    fn heads(&self) -> Vec<(Repo, String)> {
        let mut seen = BTreeSet::new();
        self.targets
            .iter()
            .filter(|t| seen.insert((t.repo.clone(), t.sha.clone())))
            .map(|t| (t.repo.clone(), t.sha.clone()))
            .collect()
    }

    fn repo_of(&self, service: &str) -> Option<&Repo> {
        self.targets
            .iter()
            .find(|t| t.service == service)
            .map(|t| &t.repo)
    }

    fn stage(&mut self, env: &str, repo: &Repo) -> Option<&mut Stage> {
        self.deployments
            .iter_mut()
            .find(|(e, r, _)| e == env && r == repo)
            .map(|(_, _, stage)| stage)
    }

    fn commit_statuses(&self, release: &ReleaseId, state: CommitState, text: &str) -> Vec<Call> {
        self.heads()
            .into_iter()
            .map(|(repo, sha)| Call::CommitStatus {
                release: release.clone(),
                repo,
                sha,
                state,
                description: describe(text),
            })
            .collect()
    }

    fn status(
        release: &ReleaseId,
        env: &str,
        repo: &Repo,
        state: DeploymentState,
        text: &str,
    ) -> Call {
        Call::Status {
            release: release.clone(),
            env: env.to_owned(),
            repo: repo.clone(),
            state,
            description: describe(text),
        }
    }

    /// Ends every deployment still under way: queued ones become `queued_to`, running ones
    /// `running_to`; succeeded ones are left alone.
    fn end_open(
        &mut self,
        release: &ReleaseId,
        queued_to: DeploymentState,
        running_to: DeploymentState,
        text: &str,
    ) -> Vec<Call> {
        let mut calls = Vec::new();
        for (env, repo, stage) in &mut self.deployments {
            let state = match stage {
                Stage::Queued => queued_to,
                Stage::InProgress => running_to,
                Stage::Succeeded | Stage::Ended => continue,
            };
            *stage = Stage::Ended;
            calls.push(ReleaseView::status(release, env, repo, state, text));
        }
        calls
    }

    /// The environment and repository of a deploy or verify step of this release.
    fn step_key(&self, step: &str) -> Option<(String, Repo)> {
        let (env, service) = self.steps.get(step)?;
        Some((env.clone(), self.repo_of(service)?.clone()))
    }

    /// Folds `event` of release `release` into the view and returns the calls it needs.
    pub fn apply(&mut self, release: &ReleaseId, event: &Event, ctx: &Context<'_>) -> Vec<Call> {
        match event {
            Event::ReleaseRequested(requested) => {
                self.targets = requested
                    .changes
                    .iter()
                    .filter_map(|change| {
                        let sha = change.commit.clone().filter(|c| !c.trim().is_empty())?;
                        let repo = ctx.repository(change.service.as_str())?;
                        Some(Target {
                            service: change.service.to_string(),
                            repo,
                            sha,
                            version: change.version.clone(),
                        })
                    })
                    .collect();
                Vec::new()
            }
            Event::ReleasePlanned(planned) => {
                let plan = &planned.plan;
                let mut envs: Vec<String> = Vec::new();
                for step in &plan.steps {
                    if !matches!(step.action, Action::Deploy | Action::Verify)
                        || self.repo_of(&step.target).is_none()
                    {
                        continue;
                    }
                    self.steps
                        .insert(step.id.clone(), (step.env.to_string(), step.target.clone()));
                    if !envs.contains(&step.env.to_string()) {
                        envs.push(step.env.to_string());
                    }
                }
                envs.sort_by_key(|env| ctx.env_order(env));
                let mut calls = self.commit_statuses(
                    release,
                    CommitState::Pending,
                    &format!(
                        "planned: {} steps in {}",
                        plan.steps.len(),
                        if envs.is_empty() {
                            "no environment".to_owned()
                        } else {
                            envs.join(", ")
                        }
                    ),
                );
                for env in &envs {
                    let mut repos: Vec<Repo> = Vec::new();
                    for (step_env, service) in self.steps.values() {
                        if step_env != env {
                            continue;
                        }
                        if let Some(repo) = self.repo_of(service) {
                            if !repos.contains(repo) {
                                repos.push(repo.clone());
                            }
                        }
                    }
                    for repo in repos {
                        let targets: Vec<&Target> =
                            self.targets.iter().filter(|t| t.repo == repo).collect();
                        let Some(head) = targets.last() else { continue };
                        let what = targets
                            .iter()
                            .map(|t| format!("{} {}", t.service, t.version))
                            .collect::<Vec<_>>()
                            .join(", ");
                        calls.push(Call::CreateDeployment {
                            release: release.clone(),
                            env: env.clone(),
                            repo: repo.clone(),
                            sha: head.sha.clone(),
                            production: ctx.production(env),
                            description: describe(&format!("railyard release {release}: {what}")),
                        });
                        calls.push(ReleaseView::status(
                            release,
                            env,
                            &repo,
                            DeploymentState::Queued,
                            &format!("queued: {what}"),
                        ));
                        self.deployments.push((env.clone(), repo, Stage::Queued));
                    }
                }
                calls
            }
            Event::ReleaseRejected(rejected) => {
                let reasons: Vec<String> =
                    rejected.reasons.iter().map(|r| r.reason.clone()).collect();
                self.commit_statuses(
                    release,
                    CommitState::Failure,
                    &format!("refused: {}", reasons.join("; ")),
                )
            }
            Event::ApprovalRequested(requested) => self.commit_statuses(
                release,
                CommitState::Pending,
                &format!("waiting for approval in {}", requested.env),
            ),
            Event::ReleaseHeld(held) => self.commit_statuses(
                release,
                CommitState::Pending,
                &format!("held: {}", held.reason),
            ),
            Event::StepWaiting(waiting) => {
                let releases: Vec<String> =
                    waiting.waiting_for.iter().map(|r| r.to_string()).collect();
                self.commit_statuses(
                    release,
                    CommitState::Pending,
                    &format!(
                        "{} waits for {} (requested earlier, same services)",
                        waiting.step,
                        releases.join(", ")
                    ),
                )
            }
            Event::ReleaseResumed(resumed) => self.commit_statuses(
                release,
                CommitState::Pending,
                &format!("resumed: {}", resumed.reason),
            ),
            Event::StepStarted(started) => {
                let Some((env, repo)) = self.step_key(&started.step) else {
                    return Vec::new();
                };
                match self.stage(&env, &repo) {
                    Some(stage) if *stage == Stage::Queued => {
                        *stage = Stage::InProgress;
                        vec![ReleaseView::status(
                            release,
                            &env,
                            &repo,
                            DeploymentState::InProgress,
                            &format!("{} started", started.step),
                        )]
                    }
                    _ => Vec::new(),
                }
            }
            Event::StepSucceeded(outcome) => {
                let Some((env, repo)) = self.step_key(&outcome.step) else {
                    return Vec::new();
                };
                self.done.insert(outcome.step.clone());
                let all_done = self.steps.iter().all(|(id, (step_env, service))| {
                    step_env != &env
                        || self.repo_of(service) != Some(&repo)
                        || self.done.contains(id)
                });
                match self.stage(&env, &repo) {
                    Some(stage)
                        if all_done && matches!(*stage, Stage::Queued | Stage::InProgress) =>
                    {
                        *stage = Stage::Succeeded;
                        vec![
                            ReleaseView::status(
                                release,
                                &env,
                                &repo,
                                DeploymentState::Success,
                                &format!("deployed and verified in {env}"),
                            ),
                            Call::Replace {
                                release: release.clone(),
                                env,
                                repo,
                            },
                        ]
                    }
                    _ => Vec::new(),
                }
            }
            Event::StepFailed(outcome) => {
                let Some((env, repo)) = self.step_key(&outcome.step) else {
                    return Vec::new();
                };
                match self.stage(&env, &repo) {
                    Some(stage) if matches!(*stage, Stage::Queued | Stage::InProgress) => {
                        *stage = Stage::Ended;
                        vec![ReleaseView::status(
                            release,
                            &env,
                            &repo,
                            DeploymentState::Failure,
                            &format!("{} failed: {}", outcome.step, outcome.detail),
                        )]
                    }
                    _ => Vec::new(),
                }
            }
            Event::ReleaseCompleted(_) => {
                let mut calls = Vec::new();
                for (env, repo, stage) in &mut self.deployments {
                    if matches!(*stage, Stage::Queued | Stage::InProgress) {
                        *stage = Stage::Succeeded;
                        calls.push(ReleaseView::status(
                            release,
                            env,
                            repo,
                            DeploymentState::Success,
                            &format!("deployed in {env}"),
                        ));
                        calls.push(Call::Replace {
                            release: release.clone(),
                            env: env.clone(),
                            repo: repo.clone(),
                        });
                    }
                }
                let mut envs: Vec<&str> = Vec::new();
                for (env, _, _) in &self.deployments {
                    if !envs.contains(&env.as_str()) {
                        envs.push(env);
                    }
                }
                let text = if envs.is_empty() {
                    "released".to_owned()
                } else {
                    format!("released to {}", envs.join(", "))
                };
                let mut statuses = self.commit_statuses(release, CommitState::Success, &text);
                calls.append(&mut statuses);
                calls
            }
            Event::ReleaseRolledBack(rolled) => {
                let text = format!("rolled back: {}", rolled.reason);
                let mut calls = Vec::new();
                for (env, repo, stage) in &mut self.deployments {
                    if *stage == Stage::Succeeded {
                        *stage = Stage::Ended;
                        calls.push(ReleaseView::status(
                            release,
                            env,
                            repo,
                            DeploymentState::Inactive,
                            &text,
                        ));
                        calls.push(Call::Restore {
                            release: release.clone(),
                            env: env.clone(),
                            repo: repo.clone(),
                        });
                    }
                }
                calls.extend(self.end_open(
                    release,
                    DeploymentState::Inactive,
                    DeploymentState::Failure,
                    &text,
                ));
                calls.extend(self.commit_statuses(release, CommitState::Failure, &text));
                calls
            }
            Event::ReleaseCancelled(cancelled) => {
                let text = format!("cancelled: {}", cancelled.reason);
                let mut calls = self.end_open(
                    release,
                    DeploymentState::Inactive,
                    DeploymentState::Error,
                    &text,
                );
                calls.extend(self.commit_statuses(release, CommitState::Error, &text));
                calls
            }
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories_under_the_web_url_only() {
        let web = "https://github.com";
        assert_eq!(
            Repo::parse("https://github.com/acme/orders-api.git", web),
            Some(Repo {
                owner: "acme".into(),
                name: "orders-api".into()
            })
        );
        assert_eq!(
            Repo::parse("https://github.com/acme/orders-api/", web).map(|r| r.to_string()),
            Some("acme/orders-api".into())
        );
        assert_eq!(Repo::parse("https://gitlab.com/acme/orders-api", web), None);
        assert_eq!(Repo::parse("https://github.com/acme", web), None);
        assert_eq!(Repo::parse("https://github.com/acme/a/b", web), None);
        assert_eq!(Repo::parse("https://github.com/../x", web), None);
        assert_eq!(
            Repo::parse("https://ghe.example.com/acme/x", "https://ghe.example.com/")
                .map(|r| r.to_string()),
            Some("acme/x".into())
        );
    }

    #[test]
    fn descriptions_fit_github() {
        let long = "x".repeat(300);
        let cut = describe(&long);
        assert_eq!(cut.chars().count(), DESCRIPTION_LIMIT);
        assert!(cut.ends_with('…'));
        assert_eq!(describe("a\n  b"), "a b");
    }
}

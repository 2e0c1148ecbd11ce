//! The trigger policy (INTERFACES §8) as a pure fold: a service's signal events
//! (`signal.<service>`) fold into a [`SignalState`]; [`SignalState::readiness`] says whether a
//! change is ready (artifact known, required suites passed, branch protected, source allowed)
//! and what it waits for; [`release_for`] says which release a ready change belongs to. No IO:
//! intake loads the events and appends the decision.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use railyard_core::event::{ArtifactPublished, SuiteFinished};
use railyard_core::{Catalog, Envelope, Event, ReleaseId, ServiceName};

use crate::glob;

/// A signal folded in, with who sent it.
#[derive(Debug, Clone, PartialEq)]
pub struct ArtifactSignal {
    /// The event.
    pub artifact: ArtifactPublished,
    /// The actor who sent it; becomes `requested_by` of a release it completes.
    pub actor: String,
    /// Its position among the service's signals (1 for the first).
    pub order: u64,
}

#[derive(Debug, Clone, PartialEq)]
struct SuiteRecord {
    suite: SuiteFinished,
    order: u64,
}

/// Everything the signals of one service say, folded.
#[derive(Debug, Clone, PartialEq)]
pub struct SignalState {
    service: ServiceName,
    /// The latest artifact per version.
    artifacts: BTreeMap<String, ArtifactSignal>,
    suites: Vec<SuiteRecord>,
    by_version: HashMap<String, Vec<usize>>,
    by_chain: HashMap<String, Vec<usize>>,
    by_commit: Vec<(String, usize)>,
    /// Branch of a commit, learned from suite results and pushes.
    branches: Vec<(String, String)>,
    events: u64,
}

/// Whether a change is ready, and if not, what it waits for or what blocks it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Readiness {
    /// Signals still missing (a later event can supply them).
    pub waiting: Vec<String>,
    /// Policies it fails (only a new change can fix them).
    pub blocked: Vec<String>,
}

impl Readiness {
    /// Ready: nothing missing, nothing blocking.
    pub fn is_ready(&self) -> bool {
        self.waiting.is_empty() && self.blocked.is_empty()
    }

    /// What it waits for and what blocks it, in words.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.blocked.is_empty() {
            parts.push(format!("blocked: {}", self.blocked.join("; ")));
        }
        if !self.waiting.is_empty() {
            parts.push(format!("waiting for {}", self.waiting.join(", ")));
        }
        if parts.is_empty() {
            "ready".to_owned()
        } else {
            parts.join("; ")
        }
    }
}

/// Whether two commit ids name the same commit (a short id is a prefix of the long one).
pub fn same_commit(a: &str, b: &str) -> bool {
    a.len() >= 7 && b.len() >= 7 && (a.starts_with(b) || b.starts_with(a))
}

impl SignalState {
    /// The state before any signal.
    pub fn new(service: ServiceName) -> SignalState {
        SignalState {
            service,
            artifacts: BTreeMap::new(),
            suites: Vec::new(),
            by_version: HashMap::new(),
            by_chain: HashMap::new(),
            by_commit: Vec::new(),
            branches: Vec::new(),
            events: 0,
        }
    }

    /// Folds `events` (a service's whole `signal.<service>` history).
    pub fn fold<'a>(
        service: ServiceName,
        events: impl IntoIterator<Item = &'a Envelope>,
    ) -> SignalState {
        let mut state = SignalState::new(service);
        for event in events {
            state.apply(event);
        }
        state
    }

    /// The service.
    pub fn service(&self) -> &ServiceName {
        &self.service
    }

    /// How many signal events were folded.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Applies one event; returns the versions whose readiness it may change. Events that are
    /// not signals change nothing.
    pub fn apply(&mut self, envelope: &Envelope) -> BTreeSet<String> {
        let mut touched = BTreeSet::new();
        match &envelope.event {
            Event::ArtifactPublished(artifact) => {
                self.events += 1;
                let version = artifact.change.version.clone();
                touched.insert(version.clone());
                self.artifacts.insert(
                    version,
                    ArtifactSignal {
                        artifact: artifact.clone(),
                        actor: envelope.actor.clone(),
                        order: self.events,
                    },
                );
            }
            Event::SuiteFinished(suite) => {
                self.events += 1;
                let index = self.suites.len();
                if let Some(version) = &suite.version {
                    self.by_version
                        .entry(version.clone())
                        .or_default()
                        .push(index);
                    touched.insert(version.clone());
                }
                if let Some(chain) = &suite.chain_id {
                    self.by_chain.entry(chain.clone()).or_default().push(index);
                    touched.extend(self.versions_where(|a| a.chain_id.as_deref() == Some(chain)));
                }
                if let Some(commit) = &suite.commit {
                    self.by_commit.push((commit.clone(), index));
                    if let Some(branch) = &suite.branch {
                        self.branches.push((commit.clone(), branch.clone()));
                    }
                    touched.extend(self.versions_where(|a| {
                        a.change
                            .commit
                            .as_deref()
                            .is_some_and(|c| same_commit(c, commit))
                    }));
                }
                self.suites.push(SuiteRecord {
                    suite: suite.clone(),
                    order: self.events,
                });
            }
            Event::CommitsPushed(push) => {
                self.events += 1;
                let mut commits: Vec<&str> = push.commits.iter().map(|c| c.id.as_str()).collect();
                commits.push(&push.after);
                for commit in commits {
                    self.branches.push((commit.to_owned(), push.branch.clone()));
                    touched.extend(self.versions_where(|a| {
                        a.change
                            .commit
                            .as_deref()
                            .is_some_and(|c| same_commit(c, commit))
                    }));
                }
            }
            _ => {}
        }
        touched
    }

    fn versions_where(&self, keep: impl Fn(&ArtifactPublished) -> bool) -> Vec<String> {
        self.artifacts
            .iter()
            .filter(|(_, a)| keep(&a.artifact))
            .map(|(v, _)| v.clone())
            .collect()
    }

    /// The latest artifact signal of `version`.
    pub fn artifact(&self, version: &str) -> Option<&ArtifactSignal> {
        self.artifacts.get(version)
    }

    /// The version whose artifact carried `chain_id`, if any.
    pub fn version_for_chain(&self, chain_id: &str) -> Option<&str> {
        self.artifacts
            .iter()
            .find(|(_, a)| a.artifact.chain_id.as_deref() == Some(chain_id))
            .map(|(v, _)| v.as_str())
    }

    /// The latest artifact that belongs to `release`, if any.
    pub fn member_of(&self, release: &ReleaseId) -> Option<&ArtifactSignal> {
        self.artifacts
            .values()
            .filter(|a| a.artifact.release.as_ref() == Some(release))
            .max_by_key(|a| a.order)
    }

    /// The change of `commit`, if an artifact carried it.
    pub fn artifact_for_commit(&self, commit: &str) -> Option<&ArtifactSignal> {
        self.artifacts.values().find(|a| {
            a.artifact
                .change
                .commit
                .as_deref()
                .is_some_and(|c| same_commit(c, commit))
        })
    }

    /// The latest result of each suite attached to `version`'s change.
    fn suites_of(&self, version: &str) -> BTreeMap<&str, &SuiteRecord> {
        let artifact = self.artifacts.get(version).map(|a| &a.artifact);
        let mut indices: Vec<usize> = self.by_version.get(version).cloned().unwrap_or_default();
        if let Some(chain) = artifact.and_then(|a| a.chain_id.as_ref()) {
            indices.extend(self.by_chain.get(chain).into_iter().flatten());
        }
        if let Some(commit) = artifact.and_then(|a| a.change.commit.as_deref()) {
            indices.extend(
                self.by_commit
                    .iter()
                    .filter(|(c, _)| same_commit(c, commit))
                    .map(|(_, i)| *i),
            );
        }
        let mut latest: BTreeMap<&str, &SuiteRecord> = BTreeMap::new();
        for index in indices {
            let record = &self.suites[index];
            let slot = latest.entry(record.suite.suite.as_str()).or_insert(record);
            if record.order > slot.order {
                *slot = record;
            }
        }
        latest
    }

    /// Whether `version`'s change is ready under `catalog`'s policies.
    pub fn readiness(&self, catalog: &Catalog, version: &str) -> Readiness {
        let mut readiness = Readiness::default();
        let Some(signal) = self.artifacts.get(version) else {
            readiness.waiting.push(format!(
                "the artifact of {} {version} (an artifact.published event)",
                self.service
            ));
            return readiness;
        };
        let change = &signal.artifact.change;
        let required = catalog
            .services
            .get(&self.service)
            .map(|s| s.required_suites.as_slice())
            .unwrap_or(&[]);
        let results = self.suites_of(version);
        for suite in required {
            match results.get(suite.as_str()) {
                None => readiness.waiting.push(format!("suite {suite:?} to pass")),
                Some(record) if !record.suite.passed => readiness.waiting.push(format!(
                    "suite {suite:?} to pass (its last run ended {:?})",
                    record.suite.outcome
                )),
                Some(_) => {}
            }
        }
        let protected = &catalog.policy.protected_branches;
        if !protected.is_empty() {
            let branch = change.branch.clone().or_else(|| {
                let commit = change.commit.as_deref()?;
                self.branches
                    .iter()
                    .rev()
                    .find(|(c, _)| same_commit(c, commit))
                    .map(|(_, b)| b.clone())
            });
            match branch {
                None => readiness.waiting.push(
                    "its branch (send customData.railyard.branch, or a suite result or push for its commit)".to_owned(),
                ),
                Some(branch) if !protected.contains(&branch) => readiness.blocked.push(format!(
                    "branch {branch:?} is not protected (policy.protected_branches: {})",
                    protected.join(", ")
                )),
                Some(_) => {}
            }
        }
        let allowed = &catalog.policy.allowed_sources;
        if !allowed.is_empty() {
            let candidates: Vec<&str> = [
                Some(signal.artifact.origin.source.as_str()),
                signal.artifact.repository.as_deref(),
            ]
            .into_iter()
            .flatten()
            .collect();
            let ok = candidates
                .iter()
                .any(|c| allowed.iter().any(|pattern| glob::matches(pattern, c)));
            if !ok {
                readiness.blocked.push(format!(
                    "source {:?} is not allowed (policy.allowed_sources: {})",
                    candidates.join(" / "),
                    allowed.join(", ")
                ));
            }
        }
        readiness
    }
}

/// The release a ready change belongs to and the services it waits for: with `release` and
/// `expected_changes` the group (this service included), with only `release` that release
/// alone, else `<service>-<version>` (sanitized).
pub fn release_for(
    service: &ServiceName,
    artifact: &ArtifactPublished,
) -> (ReleaseId, BTreeSet<ServiceName>) {
    let mut members: BTreeSet<ServiceName> = artifact.expected_changes.iter().cloned().collect();
    members.insert(service.clone());
    let id = match &artifact.release {
        Some(release) => release.clone(),
        None => {
            members = BTreeSet::from([service.clone()]);
            ReleaseId::for_change(service, &artifact.change.version)
        }
    };
    (id, members)
}

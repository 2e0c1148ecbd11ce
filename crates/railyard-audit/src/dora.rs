//! The four DORA metrics, computed exactly from the event log rather than estimated from CI
//! logs: every production deployment Railyard carried out, every rollback and every incident
//! is an event with its time.
//!
//! Definitions (for a window `[since, until)`, per service, team and environment):
//! - **Deployments** are the deploy steps of releases that succeeded (`step.succeeded` of a
//!   `deploy` step) in the window. Versions that other tools deployed (a `service.deployed`
//!   without a release) are not Railyard's deployments and are not counted.
//! - **Deployment frequency**: deployments per day of the window.
//! - **Lead time for changes**: from the commit of the deployed change to its deploy step
//!   succeeding. The commit time is the one its CI event carried (GitHub's push `timestamp`);
//!   without one, the time the commit was first seen reaching a protected branch (a push, a
//!   merged pull request or a CDEvents `change.merged`). A change whose commit never reached
//!   intake has no lead time and is counted in `lead_time_unknown`.
//! - **Change failure rate**: the share of deployments that were rolled back (the deploy step
//!   undone by `step.rolled_back` or `release.rolled_back`), or that an incident for that
//!   service in that environment followed within `incident_window` (before the service's next
//!   deployment there).
//! - **Time to restore**: for each failed deployment, from the first sign of failure (its
//!   verify step failing, or the incident opening) to the first of: the rollback finishing,
//!   the incident resolving, the service's next successful deployment there. A failure not
//!   yet restored counts in `unrestored`.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Duration, Utc};
use railyard_core::{Action, Envelope, Event, Plan};
use serde::{Deserialize, Serialize};

/// What to compute over.
#[derive(Debug, Clone, PartialEq)]
pub struct DoraWindow {
    /// At or after this time.
    pub since: DateTime<Utc>,
    /// Before this time.
    pub until: DateTime<Utc>,
    /// How long after a deployment an incident for its service still counts as its failure.
    pub incident_window: Duration,
    /// Only this environment (all when `None`).
    pub env: Option<String>,
    /// Only this service (all when `None`).
    pub service: Option<String>,
}

/// How a row groups deployments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Grouping {
    /// One service in one environment.
    Service,
    /// Every service a team owns (the catalog's `owner`) in one environment.
    Team,
    /// Every service in one environment.
    Environment,
}

/// The four metrics of one group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DoraRow {
    /// What the row groups by.
    pub group: Grouping,
    /// The service, team or environment name.
    pub name: String,
    /// The environment.
    pub env: String,
    /// Deployments in the window.
    pub deployments: u64,
    /// Deployments per day.
    pub deployments_per_day: f64,
    /// Median lead time for changes, in seconds.
    pub lead_time_p50_seconds: Option<i64>,
    /// 90th percentile lead time, in seconds.
    pub lead_time_p90_seconds: Option<i64>,
    /// Deployments whose commit time is unknown.
    pub lead_time_unknown: u64,
    /// Deployments that failed (rolled back, or followed by an incident).
    pub failed: u64,
    /// `failed / deployments` (`None` without deployments).
    pub change_failure_rate: Option<f64>,
    /// Median time to restore, in seconds.
    pub time_to_restore_p50_seconds: Option<i64>,
    /// Failures not restored yet.
    pub unrestored: u64,
}

/// One deployment and what became of it.
#[derive(Debug, Clone, PartialEq)]
struct Deployment {
    release: String,
    step: String,
    verify: Option<String>,
    env: String,
    service: String,
    at: DateTime<Utc>,
    commit: Option<String>,
    rolled_back: Option<DateTime<Utc>>,
    verify_failed: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
struct Incident {
    env: String,
    service: Option<String>,
    opened: DateTime<Utc>,
    resolved: Option<DateTime<Utc>>,
}

/// What the log says, folded in stream order.
#[derive(Debug, Default)]
pub struct DoraLog {
    plans: HashMap<String, Plan>,
    commits_of: HashMap<String, BTreeMap<String, Option<String>>>,
    deployments: Vec<Deployment>,
    /// (release, step) → index in `deployments`, for the latest success of that step.
    by_step: HashMap<(String, String), usize>,
    /// commit id → when it was committed (or first seen).
    commit_times: HashMap<String, DateTime<Utc>>,
    incidents: Vec<Incident>,
    open_incidents: HashMap<String, usize>,
}

impl DoraLog {
    /// An empty log.
    pub fn new() -> DoraLog {
        DoraLog::default()
    }

    /// Takes in one event. Events appended by a writer that was not trusted to write them
    /// (`untrusted`) are left out.
    pub fn apply(&mut self, envelope: &Envelope) {
        if envelope.untrusted.is_some() {
            return;
        }
        let at = envelope.occurred_at;
        let release = || match &envelope.aggregate {
            railyard_core::AggregateId::Release(id) => Some(id.to_string()),
            _ => None,
        };
        match &envelope.event {
            Event::ReleaseRequested(requested) => {
                let commits = requested
                    .changes
                    .iter()
                    .map(|c| (c.service.to_string(), c.commit.clone()))
                    .collect();
                self.commits_of
                    .insert(requested.release.to_string(), commits);
            }
            Event::ReleasePlanned(planned) => {
                self.plans
                    .insert(planned.plan.release.to_string(), planned.plan.clone());
            }
            Event::StepSucceeded(outcome) => {
                let Some(release) = release() else { return };
                let Some(plan) = self.plans.get(&release) else {
                    return;
                };
                let Some(step) = plan.step(&outcome.step) else {
                    return;
                };
                if step.action != Action::Deploy {
                    return;
                }
                let service = step.target.clone();
                let verify = plan
                    .steps
                    .iter()
                    .find(|s| {
                        s.action == Action::Verify && s.env == step.env && s.target == service
                    })
                    .map(|s| s.id.clone());
                let commit = self
                    .commits_of
                    .get(&release)
                    .and_then(|commits| commits.get(&service).cloned().flatten());
                self.by_step.insert(
                    (release.clone(), outcome.step.clone()),
                    self.deployments.len(),
                );
                self.deployments.push(Deployment {
                    release,
                    step: outcome.step.clone(),
                    verify,
                    env: step.env.to_string(),
                    service,
                    at,
                    commit,
                    rolled_back: None,
                    verify_failed: None,
                });
            }
            Event::StepFailed(outcome) => {
                let Some(release) = release() else { return };
                for deployment in self.deployments.iter_mut().rev() {
                    if deployment.release == release
                        && deployment.verify.as_deref() == Some(outcome.step.as_str())
                        && deployment.verify_failed.is_none()
                    {
                        deployment.verify_failed = Some(at);
                        break;
                    }
                }
            }
            Event::StepRolledBack(outcome) => {
                let Some(release) = release() else { return };
                self.rolled_back(&release, &outcome.step, at);
            }
            Event::ReleaseRolledBack(rolled) => {
                let Some(release) = release() else { return };
                for step in &rolled.undone {
                    self.rolled_back(&release, step, at);
                }
            }
            Event::CommitsPushed(push) => {
                for commit in &push.commits {
                    let when = commit.timestamp.unwrap_or(at);
                    let known = self.commit_times.entry(commit.id.clone()).or_insert(when);
                    *known = (*known).min(when);
                }
                self.commit_times.entry(push.after.clone()).or_insert(at);
            }
            Event::IncidentOpened(opened) => {
                self.open_incidents
                    .insert(opened.incident.clone(), self.incidents.len());
                self.incidents.push(Incident {
                    env: opened.env.to_string(),
                    service: opened.service.as_ref().map(ToString::to_string),
                    opened: at,
                    resolved: None,
                });
            }
            Event::IncidentResolved(resolved) => {
                if let Some(index) = self.open_incidents.remove(&resolved.incident) {
                    self.incidents[index].resolved = Some(at);
                }
            }
            _ => {}
        }
    }

    fn rolled_back(&mut self, release: &str, step: &str, at: DateTime<Utc>) {
        if let Some(&index) = self.by_step.get(&(release.to_owned(), step.to_owned())) {
            let deployment = &mut self.deployments[index];
            deployment.rolled_back.get_or_insert(at);
        }
    }

    /// The commit time of `commit` (a release may name it by a prefix of 7 characters or more).
    fn commit_time(&self, commit: &str) -> Option<DateTime<Utc>> {
        if let Some(at) = self.commit_times.get(commit) {
            return Some(*at);
        }
        if commit.len() < 7 {
            return None;
        }
        self.commit_times
            .iter()
            .filter(|(id, _)| id.starts_with(commit) || commit.starts_with(id.as_str()))
            .map(|(_, at)| *at)
            .min()
    }

    /// The metrics over `window`, one row per service, team (`owners`: service → team;
    /// services without one are grouped as `unowned`) and environment, sorted.
    pub fn rows(&self, window: &DoraWindow, owners: &BTreeMap<String, String>) -> Vec<DoraRow> {
        let days = (window.until - window.since).num_seconds().max(1) as f64 / 86_400.0;
        let mut groups: BTreeMap<(Grouping, String, String), Vec<Outcome>> = BTreeMap::new();
        for (index, deployment) in self.deployments.iter().enumerate() {
            let inside = deployment.at >= window.since && deployment.at < window.until;
            let wanted = window.env.as_ref().is_none_or(|env| *env == deployment.env)
                && window
                    .service
                    .as_ref()
                    .is_none_or(|service| *service == deployment.service);
            if !inside || !wanted {
                continue;
            }
            let outcome = self.outcome(index, window.incident_window);
            let team = owners
                .get(&deployment.service)
                .cloned()
                .unwrap_or_else(|| "unowned".to_owned());
            for (group, name) in [
                (Grouping::Service, deployment.service.clone()),
                (Grouping::Team, team),
                (Grouping::Environment, deployment.env.clone()),
            ] {
                groups
                    .entry((group, name, deployment.env.clone()))
                    .or_default()
                    .push(outcome.clone());
            }
        }
        groups
            .into_iter()
            .map(|((group, name, env), outcomes)| summarise(group, name, env, &outcomes, days))
            .collect()
    }

    fn outcome(&self, index: usize, incident_window: Duration) -> Outcome {
        let deployment = &self.deployments[index];
        let next = self.deployments[index + 1..]
            .iter()
            .filter(|d| d.env == deployment.env && d.service == deployment.service)
            .map(|d| d.at)
            .find(|at| *at > deployment.at);
        let lead_time = deployment
            .commit
            .as_deref()
            .and_then(|commit| self.commit_time(commit))
            .map(|committed| (deployment.at - committed).num_seconds().max(0));
        let incident = self
            .incidents
            .iter()
            .filter(|i| {
                i.env == deployment.env
                    && i.service.as_deref() == Some(deployment.service.as_str())
                    && i.opened >= deployment.at
                    && i.opened <= deployment.at + incident_window
                    && next.is_none_or(|next| i.opened < next)
            })
            .min_by_key(|i| i.opened);
        let failed = deployment.rolled_back.is_some() || incident.is_some();
        let restore = failed.then(|| {
            let start = [
                deployment.verify_failed,
                incident.map(|i| i.opened),
                deployment.rolled_back,
            ]
            .into_iter()
            .flatten()
            .min()
            .expect("a failed deployment has a failure time");
            let end = [
                deployment.rolled_back,
                incident.and_then(|i| i.resolved),
                next,
            ]
            .into_iter()
            .flatten()
            .filter(|end| *end >= start)
            .min();
            end.map(|end| (end - start).num_seconds())
        });
        Outcome {
            lead_time,
            failed,
            restore: restore.flatten(),
            unrestored: matches!(restore, Some(None)),
        }
    }
}

#[derive(Debug, Clone)]
struct Outcome {
    lead_time: Option<i64>,
    failed: bool,
    restore: Option<i64>,
    unrestored: bool,
}

fn summarise(
    group: Grouping,
    name: String,
    env: String,
    outcomes: &[Outcome],
    days: f64,
) -> DoraRow {
    let deployments = outcomes.len() as u64;
    let mut leads: Vec<i64> = outcomes.iter().filter_map(|o| o.lead_time).collect();
    let mut restores: Vec<i64> = outcomes.iter().filter_map(|o| o.restore).collect();
    let failed = outcomes.iter().filter(|o| o.failed).count() as u64;
    DoraRow {
        group,
        name,
        env,
        deployments,
        deployments_per_day: deployments as f64 / days,
        lead_time_p50_seconds: percentile(&mut leads, 50),
        lead_time_p90_seconds: percentile(&mut leads, 90),
        lead_time_unknown: outcomes.iter().filter(|o| o.lead_time.is_none()).count() as u64,
        failed,
        change_failure_rate: (deployments > 0).then(|| failed as f64 / deployments as f64),
        time_to_restore_p50_seconds: percentile(&mut restores, 50),
        unrestored: outcomes.iter().filter(|o| o.unrestored).count() as u64,
    }
}

/// The nearest-rank percentile (`p` in 1..=100) of `values`.
fn percentile(values: &mut [i64], p: usize) -> Option<i64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let rank = (p * values.len()).div_ceil(100).max(1);
    Some(values[rank - 1])
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct DoraLabel {
    group: String,
    name: String,
    env: String,
}

type FloatGauge = prometheus_client::metrics::gauge::Gauge<f64, std::sync::atomic::AtomicU64>;
type Family = prometheus_client::metrics::family::Family<DoraLabel, FloatGauge>;

/// The `railyard_dora_*` gauges, one series per row (group, name, environment).
#[derive(Debug, Clone, Default)]
pub struct DoraGauges {
    deployments_per_day: Family,
    lead_time_p50: Family,
    change_failure_rate: Family,
    time_to_restore_p50: Family,
}

impl DoraGauges {
    /// Registers the gauges in `metrics`.
    pub fn register(metrics: &railyard_http::Metrics) -> DoraGauges {
        let gauges = DoraGauges::default();
        metrics.register(
            "dora_deployments_per_day",
            "Deployments per day over the DORA window, by group (service, team, environment), name and env",
            gauges.deployments_per_day.clone(),
        );
        metrics.register(
            "dora_lead_time_p50_seconds",
            "Median lead time for changes (commit to running) over the DORA window",
            gauges.lead_time_p50.clone(),
        );
        metrics.register(
            "dora_change_failure_rate",
            "Share of deployments rolled back or followed by an incident, over the DORA window",
            gauges.change_failure_rate.clone(),
        );
        metrics.register(
            "dora_time_to_restore_p50_seconds",
            "Median time from a failed deployment's first failure to restored, over the DORA window",
            gauges.time_to_restore_p50.clone(),
        );
        gauges
    }

    /// Shows `rows`; series of groups without a row any more are removed.
    pub fn set(&self, rows: &[DoraRow]) {
        for family in [
            &self.deployments_per_day,
            &self.lead_time_p50,
            &self.change_failure_rate,
            &self.time_to_restore_p50,
        ] {
            family.clear();
        }
        for row in rows {
            let label = DoraLabel {
                group: serde_json::to_value(row.group)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                name: row.name.clone(),
                env: row.env.clone(),
            };
            self.deployments_per_day
                .get_or_create(&label)
                .set(row.deployments_per_day);
            if let Some(lead) = row.lead_time_p50_seconds {
                self.lead_time_p50.get_or_create(&label).set(lead as f64);
            }
            if let Some(rate) = row.change_failure_rate {
                self.change_failure_rate.get_or_create(&label).set(rate);
            }
            if let Some(restore) = row.time_to_restore_p50_seconds {
                self.time_to_restore_p50
                    .get_or_create(&label)
                    .set(restore as f64);
            }
        }
    }
}

//! [`revalidate`]: before an environment or a migration, is the rest of a plan still safe
//! against what runs now? The contract rules run again on the remaining steps and the live
//! inventory; every ordering they need must already follow from the plan's edges.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use railyard_core::contract::Version;
use railyard_core::names::DatabaseName;
use railyard_core::plan::{Plan, Refusal, StepId};
use railyard_core::step;

use crate::analysis::{Findings, Topology, analyse};
use crate::estate::{EnvScope, Estate, OurService};
use crate::input::PlanInput;

/// Checks the steps of `plan` still in `remaining` (not yet succeeded, running ones
/// included) against `input.inventory`, which must be the *live* inventory, and the releases
/// still in flight before this one. `Ok` when every topological order of what is left keeps
/// the safety invariant; otherwise every reason, naming who and what, with its remedy.
pub fn revalidate(
    input: &PlanInput,
    plan: &Plan,
    remaining: &BTreeSet<StepId>,
) -> Result<(), Vec<Refusal>> {
    let catalog = input.catalog;
    let mut refusals: Vec<Refusal> = Vec::new();
    let index: HashMap<&str, u32> = plan
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.as_str(), i as u32))
        .collect();
    for id in remaining {
        if !index.contains_key(id.as_str()) {
            refusals.push(Refusal {
                rule: "unknown".to_owned(),
                env: None,
                reason: format!("step {id} is not in the plan of {}", plan.release),
                remedy: "pass the ids of this plan's own steps that have not succeeded yet"
                    .to_owned(),
                release: None,
            });
        }
    }

    let envs = catalog.promotion_path();
    let estate = Estate::new(catalog, input.in_flight);
    let known = || {
        input
            .release
            .changes
            .iter()
            .filter(|c| catalog.services.contains_key(&c.service))
    };
    let topology = Topology::new(
        &estate,
        known(),
        known()
            .flat_map(|c| c.migrations.iter().map(|m| &m.database))
            .filter(|d| catalog.databases.contains_key(*d)),
    );
    let mut found = Findings::default();
    for env in &envs {
        let is_left = |id: step::StepId| {
            remaining
                .contains(id.as_str())
                .then(|| index.get(id.as_str()).copied())
                .flatten()
        };
        let mut services = BTreeMap::new();
        let mut migrations: BTreeMap<&DatabaseName, BTreeSet<(Version, u32)>> = BTreeMap::new();
        for change in &input.release.changes {
            if !catalog.services.contains_key(&change.service) {
                continue;
            }
            if let Some(deploy) = is_left(step::StepId::deploy(&env.name, &change.service)) {
                let verify = index
                    .get(step::StepId::verify(&env.name, &change.service).as_str())
                    .copied()
                    .unwrap_or(deploy);
                services.insert(
                    &change.service,
                    OurService {
                        change,
                        deploy,
                        verify,
                    },
                );
            }
            for m in &change.migrations {
                if let Some(idx) = is_left(step::StepId::migrate(&env.name, &m.database, m.to)) {
                    migrations
                        .entry(&m.database)
                        .or_default()
                        .insert((m.to, idx));
                }
            }
        }
        if services.is_empty() && migrations.is_empty() {
            continue;
        }
        let scope = EnvScope {
            env: &env.name,
            services,
            migrations: migrations
                .into_iter()
                .map(|(d, set)| (d, set.into_iter().collect()))
                .collect(),
        };
        analyse(
            &estate,
            &topology,
            &scope,
            input.inventory.env(&env.name),
            &mut found,
        );
    }
    refusals.extend(found.refusals.items.into_iter().map(|r| r.refusal));

    let reach = Reach::new(plan, &index);
    for e in &found.edges {
        if !reach.reaches(e.from, e.to) {
            let (from, to) = (&plan.steps[e.from as usize], &plan.steps[e.to as usize]);
            refusals.push(Refusal {
                rule: e.rule.as_str().to_owned(),
                env: Some(to.env.clone()),
                reason: format!(
                    "{}, but the plan does not order {} before {}",
                    e.reason, from.id, to.id
                ),
                remedy: "re-plan the release against what runs now".to_owned(),
                release: None,
            });
        }
    }
    for e in &found.external {
        let covered = plan.external_edges.iter().any(|x| {
            x.release == e.release
                && x.from == e.from
                && index
                    .get(x.to.as_str())
                    .is_some_and(|&to| reach.reaches(to, e.to))
        });
        if !covered {
            let to = &plan.steps[e.to as usize];
            refusals.push(Refusal {
                rule: "cross-release".to_owned(),
                env: Some(to.env.clone()),
                reason: format!(
                    "{}, but the plan does not make {} wait for {} of {}",
                    e.reason, to.id, e.from, e.release
                ),
                remedy: "re-plan the release against what runs now".to_owned(),
                release: Some(e.release.clone()),
            });
        }
    }
    if refusals.is_empty() {
        Ok(())
    } else {
        Err(refusals)
    }
}

/// Reachability over a plan's edges, answered by an iterative search per question.
struct Reach {
    next: Vec<Vec<u32>>,
    direct: HashSet<(u32, u32)>,
}

impl Reach {
    fn new(plan: &Plan, index: &HashMap<&str, u32>) -> Reach {
        let mut next = vec![Vec::new(); plan.steps.len()];
        let mut direct = HashSet::new();
        for e in &plan.edges {
            if let (Some(&a), Some(&b)) = (index.get(e.from.as_str()), index.get(e.to.as_str())) {
                next[a as usize].push(b);
                direct.insert((a, b));
            }
        }
        Reach { next, direct }
    }

    fn reaches(&self, from: u32, to: u32) -> bool {
        if from == to || self.direct.contains(&(from, to)) {
            return true;
        }
        let mut seen = vec![false; self.next.len()];
        let mut stack = vec![from];
        seen[from as usize] = true;
        while let Some(v) = stack.pop() {
            for &w in &self.next[v as usize] {
                if w == to {
                    return true;
                }
                if !seen[w as usize] {
                    seen[w as usize] = true;
                    stack.push(w);
                }
            }
        }
        false
    }
}

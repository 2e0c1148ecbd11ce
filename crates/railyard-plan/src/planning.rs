//! [`plan`]: the steps of a release in every environment of the promotion path, the edges of
//! every rule, and the plan — or every reason it cannot be planned.

use std::collections::{BTreeMap, BTreeSet};

use railyard_core::catalog::{Catalog, Environment, PointOfNoReturnPolicy};
use railyard_core::contract::Version;
use railyard_core::event::ReleaseRequested;
use railyard_core::names::{DatabaseName, EnvName, ReleaseId, ServiceName};
use railyard_core::plan::{Edge, ExternalEdge, Plan, PointOfNoReturn, Step};
use railyard_core::release::Change;
use railyard_core::step::StepId;

use crate::analysis::{Findings, RawEdge, RawExternal, Topology, analyse};
use crate::estate::{EnvScope, Estate, OurService};
use crate::fix::Fix;
use crate::graph::StepGraph;
use crate::input::PlanInput;
use crate::refusal::{RefusalLog, Refusals, Refused};
use crate::rollback::{Found, points_of_no_return};
use crate::rule::Rule;

/// Plans a release: every step, every edge with its rule and reason, the waves and the
/// critical path. Refuses with every reason (and its remedy) when no order of the steps
/// keeps the safety invariant, when the release is empty, or when it names what the catalog
/// does not know. Same input, same output, to the byte.
pub fn plan(input: &PlanInput) -> Result<Plan, Refusals> {
    let catalog = input.catalog;
    let release = input.release;
    let refused = |log: RefusalLog| Refusals {
        release: release.release.clone(),
        catalog_hash: catalog.hash(),
        reasons: log.items,
    };
    let mut log = RefusalLog::default();
    if release.changes.is_empty() {
        log.push(Refused::new(
            "empty",
            None,
            format!("release {} has no changes", release.release),
            "add at least one change (a service and the version to ship) to the release".to_owned(),
            None,
        ));
        return Err(refused(log));
    }
    let known = validate(catalog, release, &mut log);
    let envs = catalog.promotion_path();
    if envs.is_empty() {
        log.push(Refused::new(
            "catalog",
            None,
            "the catalog declares no environment, so there is nowhere to ship to".to_owned(),
            "declare at least one [[environments]] entry in the catalog".to_owned(),
            None,
        ));
    }
    if known.is_empty() || envs.is_empty() {
        return Err(refused(log));
    }

    let mut migrations: BTreeMap<&DatabaseName, BTreeSet<Version>> = BTreeMap::new();
    for change in known.values() {
        for m in &change.migrations {
            if catalog.databases.contains_key(&m.database) {
                migrations.entry(&m.database).or_default().insert(m.to);
            }
        }
    }

    let estate = Estate::new(catalog, input.in_flight);
    // The way back: per environment, the migrations after which no rollback keeps the
    // contracts, each with the approval step placed before it when the environment asks.
    let ponrs: Vec<Vec<Found>> = envs
        .iter()
        .map(|env| {
            points_of_no_return(
                &estate,
                &env.name,
                input.inventory.env(&env.name),
                &known,
                &migrations,
            )
        })
        .collect();
    let mut b = Builder::default();
    let mut scopes: Vec<EnvScope> = Vec::with_capacity(envs.len());
    let mut approvals: Vec<Option<u32>> = Vec::with_capacity(envs.len());
    let mut ponr_steps: Vec<(usize, &Found, u32, Option<u32>)> = Vec::new();
    for (ei, env) in envs.iter().enumerate() {
        let approve = env
            .approval
            .as_ref()
            .filter(|a| a.required)
            .map(|_| b.step(ei, StepId::approve(&env.name, &release.release), None));
        approvals.push(approve);
        let ponr_approvals: Vec<Option<u32>> = ponrs[ei]
            .iter()
            .map(|f| {
                (env.point_of_no_return == PointOfNoReturnPolicy::Approve).then(|| {
                    b.step(
                        ei,
                        StepId::approve_migration(&env.name, f.db, f.version),
                        None,
                    )
                })
            })
            .collect();
        let mut db_steps: BTreeMap<&DatabaseName, Vec<(Version, u32)>> = BTreeMap::new();
        for (d, versions) in &migrations {
            for &v in versions {
                let idx = b.step(ei, StepId::migrate(&env.name, d, v), None);
                db_steps.entry(d).or_default().push((v, idx));
            }
        }
        for (f, approval) in ponrs[ei].iter().zip(ponr_approvals) {
            let migrate = db_steps[f.db]
                .iter()
                .find(|(v, _)| *v == f.version)
                .map(|(_, idx)| *idx)
                .expect("a point of no return is one of the release's migrations");
            ponr_steps.push((ei, f, migrate, approval));
        }
        let mut deploys = Vec::with_capacity(known.len());
        for (s, c) in &known {
            deploys.push(b.step(ei, StepId::deploy(&env.name, s), Some(&c.version)));
        }
        let mut services = BTreeMap::new();
        for ((s, c), deploy) in known.iter().zip(deploys) {
            let verify = b.step(ei, StepId::verify(&env.name, s), Some(&c.version));
            services.insert(
                *s,
                OurService {
                    change: c,
                    deploy,
                    verify,
                },
            );
        }
        scopes.push(EnvScope {
            env: &env.name,
            services,
            migrations: db_steps,
        });
    }

    let topology = Topology::new(&estate, known.values().copied(), migrations.keys().copied());
    let mut found = Findings::default();
    for (env, scope) in envs.iter().zip(&scopes) {
        for (s, ours) in &scope.services {
            let gates = catalog.services[*s].gates_in(&env.name);
            let checks = if gates.is_empty() {
                "no gates, so its verify passes at once".to_owned()
            } else {
                let kinds: Vec<&str> = gates.iter().map(gate_kind).collect();
                format!("gates: {}", kinds.join(", "))
            };
            found.edges.push(RawEdge {
                from: ours.deploy,
                to: ours.verify,
                rule: Rule::StepOrder,
                reason: format!(
                    "{s} {} is verified once it is deployed ({checks})",
                    ours.change.version
                ),
            });
        }
        explicit(catalog, scope, &mut found);
        analyse(
            &estate,
            &topology,
            scope,
            input.inventory.env(&env.name),
            &mut found,
        );
    }
    for &(ei, f, migrate, approval) in &ponr_steps {
        let env = &envs[ei];
        let step = &b.steps[migrate as usize].id;
        match (env.point_of_no_return, approval) {
            (PointOfNoReturnPolicy::Refuse, _) => found.refusals.push(Refused::new(
                Rule::PointOfNoReturn.as_str(),
                Some(&env.name),
                format!("{step} is a point of no return: {}", f.reason),
                format!(
                    "give {}'s migrate adapter a rollback form; or ship a version of {} that works with {} {} before this release, so a rollback goes back to it; or let {} pass points of no return with an approval (point_of_no_return = \"approve\")",
                    f.db,
                    f.stays
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(" and "),
                    f.db,
                    f.version,
                    env.name
                ),
                None,
            )),
            (_, Some(a)) => found.edges.push(RawEdge {
                from: a,
                to: migrate,
                rule: Rule::PointOfNoReturn,
                reason: format!(
                    "{step} is a point of no return, so it waits for an approval: {}",
                    f.reason
                ),
            }),
            _ => {}
        }
    }
    for mut r in std::mem::take(&mut found.refusals.items) {
        // Re-shipping a service is mechanical only when it runs the same everywhere.
        if let Some(Fix::Ship { service, from, .. }) = &r.fix {
            let everywhere = envs.iter().all(|e| {
                input
                    .inventory
                    .env(&e.name)
                    .and_then(|inv| inv.services.get(service))
                    == Some(from)
            });
            if !everywhere {
                r.fix = None;
            }
        }
        log.push(r);
    }

    // Approvals and environment order read which steps start and end each environment.
    let n = b.steps.len();
    let mut has_pred = vec![false; n];
    let mut has_succ = vec![false; n];
    for e in &found.edges {
        has_pred[e.to as usize] = true;
        has_succ[e.from as usize] = true;
    }
    let env_index: BTreeMap<&EnvName, usize> =
        envs.iter().enumerate().map(|(i, e)| (&e.name, i)).collect();
    for (ei, env) in envs.iter().enumerate() {
        if let Some(a) = approvals[ei] {
            let approvers = approvers(env);
            for i in b.env_range(ei) {
                if i != a && !has_pred[i as usize] {
                    found.edges.push(RawEdge {
                        from: a,
                        to: i,
                        rule: Rule::StepOrder,
                        reason: format!(
                            "{} needs an approval ({approvers}) before this release starts there",
                            env.name
                        ),
                    });
                    has_pred[i as usize] = true;
                    has_succ[a as usize] = true;
                }
            }
        }
        let Some(prev) = env.after.as_ref().and_then(|p| env_index.get(p).copied()) else {
            continue;
        };
        let (here, there) = (&scopes[ei], &scopes[prev]);
        let prev_name = &envs[prev].name;
        for (s, ours) in &here.services {
            found.edges.push(RawEdge {
                from: there.services[s].verify,
                to: ours.deploy,
                rule: Rule::EnvironmentOrder,
                reason: format!(
                    "{s} {} passes {prev_name} before it goes to {}",
                    ours.change.version, env.name
                ),
            });
        }
        for (d, steps) in &here.migrations {
            for (&(v, to), &(_, from)) in steps.iter().zip(&there.migrations[d]) {
                found.edges.push(RawEdge {
                    from,
                    to,
                    rule: Rule::EnvironmentOrder,
                    reason: format!("{d} moves to {v} in {prev_name} before {}", env.name),
                });
            }
        }
        // The release enters an environment only once it has passed the one before: every
        // step here that nothing else here waits for (the approval, when there is one) waits
        // for every step there that nothing waits for. A failure in the environment before
        // rolls that environment back and ends the release, so it must never find this
        // environment already changed by the same release.
        let exits: Vec<u32> = b
            .env_range(prev)
            .filter(|&i| !has_succ[i as usize])
            .collect();
        let already: BTreeSet<(u32, u32)> = found.edges.iter().map(|e| (e.from, e.to)).collect();
        for to in b.env_range(ei).filter(|&i| !has_pred[i as usize]) {
            let reason = if approvals[ei] == Some(to) {
                format!(
                    "the approval for {} is asked once the release has passed {prev_name}",
                    env.name
                )
            } else {
                format!(
                    "the release goes to {} only once all of it has passed {prev_name}: a failure in {prev_name} rolls {prev_name} back and ends the release, and must not leave {} changed",
                    env.name, env.name
                )
            };
            for &from in &exits {
                if !already.contains(&(from, to)) {
                    found.edges.push(RawEdge {
                        from,
                        to,
                        rule: Rule::EnvironmentOrder,
                        reason: reason.clone(),
                    });
                }
            }
        }
    }

    // A point of no return's approval is asked once its migration is otherwise ready: it
    // waits for everything the migration waits for.
    for &(_, _, migrate, approval) in &ponr_steps {
        let Some(a) = approval else { continue };
        let before: Vec<u32> = found
            .edges
            .iter()
            .filter(|e| e.to == migrate && e.from != a)
            .map(|e| e.from)
            .collect();
        for from in before {
            found.edges.push(RawEdge {
                from,
                to: a,
                rule: Rule::PointOfNoReturn,
                reason: format!(
                    "the approval to pass {} is asked once that step is otherwise ready to run",
                    b.steps[migrate as usize].id
                ),
            });
        }
    }
    let edges = merge_edges(found.edges);
    let graph = StepGraph::new(n, edges.iter().map(|e| (e.from, e.to)));
    let layout = match graph.layout() {
        Ok(layout) => Some(layout),
        Err(cycles) => {
            for cycle in cycles {
                log.push(describe_cycle(&b.steps, &b.step_env, &envs, &edges, &cycle));
            }
            None
        }
    };
    let Some(layout) = layout else {
        return Err(refused(log));
    };
    if !log.is_empty() {
        return Err(refused(log));
    }

    let steps = b.steps;
    let id = |i: &u32| steps[*i as usize].id.clone();
    let waves = layout
        .waves
        .iter()
        .map(|w| w.iter().map(id).collect())
        .collect();
    let critical_path = layout.critical_path.iter().map(id).collect();
    let edges = edges
        .into_iter()
        .map(|e| Edge {
            from: steps[e.from as usize].id.clone(),
            to: steps[e.to as usize].id.clone(),
            rule: e.rule.as_str().to_owned(),
            reason: e.reason,
        })
        .collect();
    let external_edges = merge_external(&steps, found.external);
    let points_of_no_return = ponr_steps
        .iter()
        .map(|&(_, f, migrate, approval)| PointOfNoReturn {
            step: steps[migrate as usize].id.clone(),
            reason: f.reason.clone(),
            approval: approval.map(|a| steps[a as usize].id.clone()),
        })
        .collect();
    Ok(Plan {
        release: release.release.clone(),
        catalog_hash: catalog.hash(),
        steps,
        edges,
        waves,
        critical_path,
        external_edges,
        points_of_no_return,
    })
}

/// Steps in the order they are created: per environment, approval, migrations, deploys,
/// verifies — which is also the order of the plan's `steps`.
#[derive(Default)]
struct Builder {
    steps: Vec<Step>,
    step_env: Vec<usize>,
    env_start: Vec<u32>,
}

impl Builder {
    fn step(&mut self, env_idx: usize, id: StepId, version: Option<&String>) -> u32 {
        let idx = self.steps.len() as u32;
        while self.env_start.len() <= env_idx {
            self.env_start.push(idx);
        }
        self.steps.push(Step::new(id, version.cloned()));
        self.step_env.push(env_idx);
        idx
    }

    fn env_range(&self, env_idx: usize) -> std::ops::Range<u32> {
        let start = self.env_start[env_idx];
        let end = self
            .env_start
            .get(env_idx + 1)
            .copied()
            .unwrap_or(self.steps.len() as u32);
        start..end
    }
}

fn gate_kind(gate: &railyard_core::catalog::Gate) -> &'static str {
    use railyard_core::catalog::Gate;
    match gate {
        Gate::Http { .. } => "http",
        Gate::Prometheus { .. } => "prometheus",
        Gate::Command { .. } => "command",
        Gate::Soak { .. } => "soak",
        Gate::Incident {} => "incident",
    }
}

fn approvers(env: &Environment) -> String {
    env.approval
        .as_ref()
        .map(|a| a.approvers.join(", "))
        .unwrap_or_default()
}

/// Checks the release against the catalog: every name known, every declared contract on a
/// relation the catalog lists the service in. Returns the changes that can be planned.
fn validate<'a>(
    catalog: &'a Catalog,
    release: &'a ReleaseRequested,
    log: &mut RefusalLog,
) -> BTreeMap<&'a ServiceName, &'a Change> {
    let mut known = BTreeMap::new();
    let in_release: BTreeSet<&ServiceName> = release.changes.iter().map(|c| &c.service).collect();
    let mut unknown = |reason: String, remedy: String| {
        log.push(Refused::new("unknown", None, reason, remedy, None));
    };
    // Catalog and `after` mismatches, reported after the unknown names.
    let mut listed: Vec<(&str, String, String)> = Vec::new();
    for change in &release.changes {
        let s = &change.service;
        let v = &change.version;
        if !catalog.services.contains_key(s) {
            unknown(
                format!("{s} is in this release but not in the catalog"),
                format!("declare [services.{s}] in the catalog, or fix the service name"),
            );
            continue;
        }
        for q in change.produces.keys().chain(change.consumes.keys()) {
            if !catalog.queues.contains_key(q) {
                unknown(
                    format!("{s} {v} declares queue {q}, which the catalog does not know"),
                    format!("declare [queues.{q}] in the catalog, or remove {q} from the change"),
                );
            }
        }
        for a in change.provides.keys().chain(change.requires.keys()) {
            if !catalog.apis.contains_key(a) {
                unknown(
                    format!("{s} {v} declares api {a}, which the catalog does not know"),
                    format!("declare [apis.{a}] in the catalog, or remove {a} from the change"),
                );
            }
        }
        for d in change
            .schema
            .keys()
            .chain(change.migrations.iter().map(|m| &m.database))
        {
            if !catalog.databases.contains_key(d) {
                unknown(
                    format!("{s} {v} declares database {d}, which the catalog does not know"),
                    format!(
                        "declare [databases.{d}] in the catalog, or remove {d} from the change"
                    ),
                );
            }
        }
        for q in change.produces.keys() {
            if let Some(queue) = catalog.queues.get(q) {
                if !queue.producers.contains(s) {
                    listed.push((
                        "catalog",
                        format!("{s} {v} emits {q}, but the catalog does not list {s} among its producers"),
                        format!("add {s} to queues.{q}.producers, or remove {q} from its produces"),
                    ));
                }
            }
        }
        for q in change.consumes.keys() {
            if let Some(queue) = catalog.queues.get(q) {
                if !queue.consumers.contains(s) {
                    listed.push((
                        "catalog",
                        format!("{s} {v} reads {q}, but the catalog does not list {s} among its consumers"),
                        format!("add {s} to queues.{q}.consumers, or remove {q} from its consumes"),
                    ));
                }
            }
        }
        for a in change.provides.keys() {
            if let Some(api) = catalog.apis.get(a) {
                if &api.provider != s {
                    listed.push((
                        "catalog",
                        format!(
                            "{s} {v} serves {a}, but the catalog names {} as its provider",
                            api.provider
                        ),
                        format!("set apis.{a}.provider to {s}, or remove {a} from its provides"),
                    ));
                }
            }
        }
        for a in change.requires.keys() {
            if let Some(api) = catalog.apis.get(a) {
                if !api.consumers.contains(s) {
                    listed.push((
                        "catalog",
                        format!("{s} {v} requires {a}, but the catalog does not list {s} among its consumers"),
                        format!("add {s} to apis.{a}.consumers, or remove {a} from its requires"),
                    ));
                }
            }
        }
        for d in change.schema.keys() {
            if let Some(db) = catalog.databases.get(d) {
                if !db.users.contains(s) {
                    listed.push((
                        "catalog",
                        format!("{s} {v} works with {d}, but the catalog does not list {s} among its users"),
                        format!("add {s} to databases.{d}.users, or remove {d} from its schema"),
                    ));
                }
            }
        }
        for after in &change.after {
            if !catalog.services.contains_key(after) {
                unknown(
                    format!("{s} is to go after {after}, which is not in the catalog"),
                    format!("fix the name in the after list of {s}, or declare [services.{after}]"),
                );
            } else if !in_release.contains(after) {
                listed.push((
                    "explicit",
                    format!("{s} is to go after {after}, but this release does not change {after}"),
                    format!("add {after} to the release, or remove it from the after list of {s}"),
                ));
            }
        }
        known.insert(s, change);
    }
    for (rule, reason, remedy) in listed {
        log.push(Refused::new(rule, None, reason, remedy, None));
    }
    known
}

/// `after` in the catalog (always applied when both services move) and in the release.
fn explicit(catalog: &Catalog, scope: &EnvScope, found: &mut Findings) {
    for (s, ours) in &scope.services {
        let mut firsts: BTreeMap<&ServiceName, &'static str> = BTreeMap::new();
        for a in &catalog.services[*s].after {
            firsts.insert(a, "the catalog");
        }
        for a in &ours.change.after {
            firsts.entry(a).or_insert("the release");
        }
        for (a, by) in firsts {
            if a == *s {
                continue; // "after itself" orders nothing
            }
            if let Some(first) = scope.services.get(a) {
                found.edges.push(RawEdge {
                    from: first.verify,
                    to: ours.deploy,
                    rule: Rule::Explicit,
                    reason: format!("{by} says {s} goes after {a}"),
                });
            }
        }
    }
}

/// One edge per (from, to, rule), reasons joined; sorted by step order.
fn merge_edges(mut edges: Vec<RawEdge>) -> Vec<RawEdge> {
    edges.sort_by_key(|e| (e.from, e.to, e.rule));
    let mut out: Vec<RawEdge> = Vec::with_capacity(edges.len());
    for e in edges {
        match out.last_mut() {
            Some(last) if (last.from, last.to, last.rule) == (e.from, e.to, e.rule) => {
                if !last.reason.split("; ").any(|r| r == e.reason) {
                    last.reason.push_str("; ");
                    last.reason.push_str(&e.reason);
                }
            }
            _ => out.push(e),
        }
    }
    out
}

/// One external edge per (step, other release, its step), reasons joined; sorted.
fn merge_external(steps: &[Step], raw: Vec<RawExternal>) -> Vec<ExternalEdge> {
    let mut merged: BTreeMap<(u32, ReleaseId, String), String> = BTreeMap::new();
    for e in raw {
        merged
            .entry((e.to, e.release, e.from))
            .and_modify(|r| {
                if !r.split("; ").any(|x| x == e.reason) {
                    r.push_str("; ");
                    r.push_str(&e.reason);
                }
            })
            .or_insert(e.reason);
    }
    merged
        .into_iter()
        .map(|((to, release, from), reason)| ExternalEdge {
            release,
            from,
            to: steps[to as usize].id.clone(),
            rule: Rule::CrossRelease.as_str().to_owned(),
            reason,
        })
        .collect()
}

fn describe_cycle(
    steps: &[Step],
    step_env: &[usize],
    envs: &[&Environment],
    edges: &[RawEdge],
    cycle: &[u32],
) -> Refused {
    // A deploy before its own verify is implied; the links worth reading are the others.
    let shown: Vec<u32> = if cycle
        .iter()
        .all(|&i| edges[i as usize].rule == Rule::StepOrder)
    {
        cycle.to_vec()
    } else {
        cycle
            .iter()
            .copied()
            .filter(|&i| edges[i as usize].rule != Rule::StepOrder)
            .collect()
    };
    let links: Vec<String> = shown
        .iter()
        .map(|&i| {
            let e = &edges[i as usize];
            format!(
                "{} before {} [{}: {}]",
                steps[e.from as usize].id, steps[e.to as usize].id, e.rule, e.reason
            )
        })
        .collect();
    let rules: BTreeSet<Rule> = cycle.iter().map(|&i| edges[i as usize].rule).collect();
    let mut remedies = Vec::new();
    if rules.contains(&Rule::Explicit) {
        remedies.push("remove one of the `after` entries in this circle".to_owned());
    }
    if rules
        .iter()
        .any(|r| matches!(r, Rule::Queue | Rule::Api | Rule::Schema))
    {
        remedies.push(
            "ship one of these services first, in an earlier release, with a version that accepts both the old and the new contract, so that one link disappears"
                .to_owned(),
        );
    }
    if remedies.is_empty() {
        remedies.push("change one of these orderings so that the circle opens".to_owned());
    }
    let env = cycle
        .first()
        .map(|&i| &envs[step_env[edges[i as usize].from as usize]].name);
    Refused::new(
        "cycle",
        env,
        format!(
            "these steps wait for each other in a circle (each deploy also comes before its own verify), so no order exists: {}",
            links.join("; then ")
        ),
        remedies.join("; or "),
        None,
    )
}

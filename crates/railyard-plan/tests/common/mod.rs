//! Test support shared by the scenario, revalidation and property tests: loading a scenario
//! directory, and an independent, brute-force simulator of the safety invariant (INTERFACES
//! §2) that runs a plan along random topological orders with every step split into its
//! start and its finish.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use railyard_core::contract::{Range, Version};
use railyard_core::event::ReleaseRequested;
use railyard_core::inventory::RunningService;
use railyard_core::plan::{Action, Plan, Step};
use railyard_core::{Catalog, Change, EnvName, Inventory, ReleaseFile, ServiceName};
use railyard_plan::{InFlight, PlanInput};

/// A scenario directory: catalog.toml, release.toml, optional inventory.json and
/// in_flight.toml (`[[releases]]` of [`InFlight`]).
pub struct Scenario {
    pub catalog: Catalog,
    pub release: ReleaseRequested,
    pub inventory: Inventory,
    pub in_flight: Vec<InFlight>,
}

#[derive(serde::Deserialize)]
struct InFlightFile {
    releases: Vec<InFlight>,
}

impl Scenario {
    pub fn load(dir: &Path) -> Scenario {
        let read = |name: &str| std::fs::read_to_string(dir.join(name));
        let catalog = Catalog::from_toml(&read("catalog.toml").expect("catalog.toml"))
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let file = ReleaseFile::from_toml(&read("release.toml").expect("release.toml"))
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let inventory = read("inventory.json")
            .map(|t| Inventory::from_json(&t).unwrap_or_else(|e| panic!("{}: {e}", dir.display())))
            .unwrap_or_default();
        let in_flight = read("in_flight.toml")
            .map(|t| {
                toml::from_str::<InFlightFile>(&t)
                    .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
                    .releases
            })
            .unwrap_or_default();
        Scenario {
            catalog,
            release: ReleaseRequested {
                release: file.id,
                requested_by: "carol".to_owned(),
                changes: file.changes,
            },
            inventory,
            in_flight,
        }
    }

    pub fn input(&self) -> PlanInput<'_> {
        PlanInput {
            catalog: &self.catalog,
            release: &self.release,
            inventory: &self.inventory,
            in_flight: &self.in_flight,
        }
    }
}

/// A small deterministic generator (splitmix64) so simulations are reproducible.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// One running version of a service; `new` when this release put it there.
#[derive(Clone)]
struct Live<'a> {
    new: bool,
    contracts: &'a RunningService,
}

#[derive(Default, Clone)]
struct EnvState<'a> {
    current: BTreeMap<&'a ServiceName, Live<'a>>,
    deploying: BTreeMap<&'a ServiceName, Live<'a>>,
    /// (version, new) per database.
    db: BTreeMap<String, (Version, bool)>,
    migrating: BTreeMap<String, Vec<Version>>,
    /// The version a migration being undone goes back to, exposed with the current one.
    restoring: BTreeMap<String, (Version, bool)>,
}

impl<'a> EnvState<'a> {
    fn live(&self, s: &ServiceName) -> Vec<&Live<'a>> {
        self.current
            .get(s)
            .into_iter()
            .chain(self.deploying.get(s))
            .collect()
    }

    fn db_live(&self, d: &str) -> Vec<(Version, bool)> {
        let mut out: Vec<(Version, bool)> = self.db.get(d).copied().into_iter().collect();
        for &v in self.migrating.get(d).into_iter().flatten() {
            out.push((v, true));
        }
        out.extend(self.restoring.get(d).copied());
        out
    }
}

/// Checks the invariant of INTERFACES §2 in one environment's state; pairs of versions that
/// both ran before the release are not the release's doing and are skipped.
fn check(catalog: &Catalog, state: &EnvState, env: &str) -> Result<(), String> {
    for (q, queue) in &catalog.queues {
        for c in &queue.consumers {
            for cv in state.live(c) {
                let Some(read) = cv.contracts.consumes.get(q) else {
                    continue;
                };
                for p in &queue.producers {
                    for pv in state.live(p) {
                        let Some(&v) = pv.contracts.produces.get(q) else {
                            continue;
                        };
                        if (cv.new || pv.new) && !read.contains(v) {
                            return Err(format!(
                                "{env}: {c} {} reads {q} {read} while {p} {} emits {v}",
                                cv.contracts.version, pv.contracts.version
                            ));
                        }
                    }
                }
            }
        }
    }
    for (a, api) in &catalog.apis {
        for c in &api.consumers {
            for cv in state.live(c) {
                let Some(req) = cv.contracts.requires.get(a) else {
                    continue;
                };
                let providers = state.live(&api.provider);
                if providers.is_empty() && cv.new {
                    return Err(format!(
                        "{env}: {c} {} requires {a} {req} but {} does not run",
                        cv.contracts.version, api.provider
                    ));
                }
                for pv in providers {
                    if !(cv.new || pv.new) {
                        continue;
                    }
                    let ok = match pv.contracts.provides.get(a) {
                        Some(served) => served.intersects(req),
                        None => !pv.new,
                    };
                    if !ok {
                        return Err(format!(
                            "{env}: {c} {} requires {a} {req} while {} {} serves {:?}",
                            cv.contracts.version,
                            api.provider,
                            pv.contracts.version,
                            pv.contracts.provides.get(a)
                        ));
                    }
                }
            }
        }
    }
    for (d, db) in &catalog.databases {
        for u in &db.users {
            for uv in state.live(u) {
                let Some(r) = uv.contracts.schema.get(d) else {
                    continue;
                };
                for (v, new) in state.db_live(d.as_str()) {
                    if (uv.new || new) && !r.contains(v) {
                        return Err(format!(
                            "{env}: {u} {} works with {d} {r} while {d} is at {v}",
                            uv.contracts.version
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

/// Runs `plan` along `orders` random topological orders (each step a start and a finish
/// event, any interleaving of running steps) and checks the invariant after every event.
pub fn simulate(
    catalog: &Catalog,
    inventory: &Inventory,
    changes: &[Change],
    plan: &Plan,
    orders: usize,
    rng: &mut Rng,
) -> Result<(), String> {
    let new: BTreeMap<ServiceName, RunningService> = changes
        .iter()
        .map(|c| (c.service.clone(), RunningService::from(c)))
        .collect();
    let index: BTreeMap<&str, usize> = plan
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.as_str(), i))
        .collect();
    let n = plan.steps.len();
    let mut preds = vec![0usize; n];
    let mut succs = vec![Vec::new(); n];
    for e in &plan.edges {
        let (a, b) = (index[e.from.as_str()], index[e.to.as_str()]);
        preds[b] += 1;
        succs[a].push(b);
    }
    let envs: BTreeSet<&EnvName> = plan.steps.iter().map(|s| &s.env).collect();
    let mut initial: BTreeMap<&EnvName, EnvState> = BTreeMap::new();
    for env in &envs {
        let mut state = EnvState::default();
        if let Some(inv) = inventory.env(env) {
            for (s, r) in &inv.services {
                state.current.insert(
                    s,
                    Live {
                        new: false,
                        contracts: r,
                    },
                );
            }
            for (d, v) in &inv.databases {
                state.db.insert(d.to_string(), (*v, false));
            }
        }
        check(catalog, &state, env.as_str()).map_err(|e| format!("before the release: {e}"))?;
        initial.insert(env, state);
    }
    for _ in 0..orders {
        let mut states = initial.clone();
        let mut waiting = preds.clone();
        let mut ready: Vec<usize> = (0..n).filter(|&i| waiting[i] == 0).collect();
        let mut running: Vec<usize> = Vec::new();
        let mut done = 0;
        let mut trace: Vec<String> = Vec::new();
        while done < n {
            let pick = rng.below(ready.len() + running.len());
            let step_idx;
            let starting = pick < ready.len();
            if starting {
                step_idx = ready.swap_remove(pick);
                running.push(step_idx);
            } else {
                step_idx = running.swap_remove(pick - ready.len());
                done += 1;
                for &s in &succs[step_idx] {
                    waiting[s] -= 1;
                    if waiting[s] == 0 {
                        ready.push(s);
                    }
                }
            }
            let step = &plan.steps[step_idx];
            trace.push(format!(
                "{} {}",
                if starting { "start" } else { "finish" },
                step.id
            ));
            let state = states
                .get_mut(&step.env)
                .expect("every step's env has a state");
            match step.action {
                Action::Deploy => {
                    let s = new
                        .get_key_value(step.target.as_str())
                        .expect("a deploy step targets a change");
                    let live = Live {
                        new: true,
                        contracts: s.1,
                    };
                    if starting {
                        state.deploying.insert(s.0, live);
                    } else {
                        state.deploying.remove(s.0);
                        state.current.insert(s.0, live);
                    }
                }
                Action::Migrate => {
                    let (d, v) = migration(step);
                    let list = state.migrating.entry(d.to_owned()).or_default();
                    if starting {
                        list.push(v);
                    } else {
                        list.retain(|&x| x != v);
                        state.db.insert(d.to_owned(), (v, true));
                    }
                }
                Action::Verify | Action::Approve => {}
            }
            if let Err(e) = check(catalog, state, step.env.as_str()) {
                return Err(format!("{e}\n  after: {}", trace.join(", ")));
            }
        }
    }
    Ok(())
}

/// `lo..=hi` for tests.
pub fn range(lo: Version, hi: Version) -> Range {
    Range::between(lo, hi).expect("lo <= hi")
}

/// Whether every environment's inventory keeps the invariant with every pair checked, as if
/// everything running were new: an estate without pre-existing violations.
pub fn consistent(catalog: &Catalog, inventory: &Inventory) -> bool {
    inventory.0.iter().all(|(env, inv)| {
        let mut state = EnvState::default();
        for (s, r) in &inv.services {
            state.current.insert(
                s,
                Live {
                    new: true,
                    contracts: r,
                },
            );
        }
        for (d, v) in &inv.databases {
            state.db.insert(d.to_string(), (*v, true));
        }
        check(catalog, &state, env.as_str()).is_ok()
    })
}

/// How a run of [`simulate_rollback`] went.
#[derive(Debug, Default)]
pub struct RollbackRuns {
    /// Rollbacks carried out before any point of no return, every state checked.
    pub safe: usize,
    /// Failures after a point of no return whose full rollback was shown to break.
    pub necessary: usize,
    /// Random failures after a point of no return whose rollback happened to keep the
    /// invariant (a later one-way step had carried the database past the harm).
    pub past_but_safe: usize,
}

/// Runs `plan` along `runs` random orders, stops each at a random event (the failure: what
/// runs then failed), and rolls one environment back the way the promoter does — what was
/// running first, then what was applied, in reverse wave order; a deploy is undone with the
/// old and new version side by side, a migration of a database with a rollback form with both
/// schemas exposed, a migration without one stays (and one that was running completes). Every
/// state on the way back is checked against the invariant. Before any of the plan's points
/// of no return has started in that environment the rollback must keep the invariant.
///
/// A point of no return says that *some* rollback past it breaks, not every one: a later
/// one-way migration can carry the database to where the old versions fit again. So each
/// named point is also shown necessary directly: a failure right after it (it and what must
/// precede it applied, nothing else) must have a rollback that breaks the invariant.
pub fn simulate_rollback(
    catalog: &Catalog,
    inventory: &Inventory,
    changes: &[Change],
    plan: &Plan,
    runs: usize,
    rng: &mut Rng,
) -> Result<RollbackRuns, String> {
    let new: BTreeMap<ServiceName, RunningService> = changes
        .iter()
        .map(|c| (c.service.clone(), RunningService::from(c)))
        .collect();
    let index: BTreeMap<&str, usize> = plan
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.as_str(), i))
        .collect();
    let n = plan.steps.len();
    let mut preds = vec![0usize; n];
    let mut succs = vec![Vec::new(); n];
    for e in &plan.edges {
        let (a, b) = (index[e.from.as_str()], index[e.to.as_str()]);
        preds[b] += 1;
        succs[a].push(b);
    }
    let wave_order: Vec<usize> = plan
        .waves
        .iter()
        .flatten()
        .map(|id| index[id.as_str()])
        .collect();
    let reversible = |d: &str| {
        catalog
            .databases
            .iter()
            .find(|(name, _)| name.as_str() == d)
            .is_some_and(|(_, db)| db.migrate.has_rollback())
    };
    let mut failures: Vec<(Vec<usize>, Vec<usize>, bool)> = Vec::new();
    for _ in 0..runs {
        // Forward, up to the failure.
        let mut waiting = preds.clone();
        let mut ready: Vec<usize> = (0..n).filter(|&i| waiting[i] == 0).collect();
        let mut running: Vec<usize> = Vec::new();
        let mut applied: Vec<usize> = Vec::new();
        let events = rng.below(2 * n + 1);
        for _ in 0..events {
            if ready.is_empty() && running.is_empty() {
                break;
            }
            let pick = rng.below(ready.len() + running.len());
            if pick < ready.len() {
                running.push(ready.swap_remove(pick));
            } else {
                let i = running.swap_remove(pick - ready.len());
                applied.push(i);
                for &s in &succs[i] {
                    waiting[s] -= 1;
                    if waiting[s] == 0 {
                        ready.push(s);
                    }
                }
            }
        }
        failures.push((applied, running, false));
    }
    // Right after each point of no return: it and its ancestors applied, in wave order.
    let mut preds_of = vec![Vec::new(); n];
    for (a, next) in succs.iter().enumerate() {
        for &b in next {
            preds_of[b].push(a);
        }
    }
    for ponr in &plan.points_of_no_return {
        let at = index[ponr.step.as_str()];
        let mut seen = vec![false; n];
        let mut stack = vec![at];
        while let Some(i) = stack.pop() {
            if !std::mem::replace(&mut seen[i], true) {
                stack.extend(&preds_of[i]);
            }
        }
        let applied: Vec<usize> = wave_order.iter().copied().filter(|&i| seen[i]).collect();
        failures.push((applied, Vec::new(), true));
    }
    let mut out = RollbackRuns::default();
    for (applied, running, right_after) in failures {
        let touched: Vec<usize> = running.iter().chain(&applied).copied().collect();
        let Some(&last) = (if right_after {
            applied.last()
        } else {
            touched.last()
        }) else {
            continue;
        };
        let env = &plan.steps[last].env;
        let in_env = |i: &usize| &plan.steps[*i].env == env;
        // The environment's state at the failure.
        let mut state = EnvState::default();
        let before = inventory.env(env);
        if let Some(inv) = before {
            for (s, r) in &inv.services {
                state.current.insert(
                    s,
                    Live {
                        new: false,
                        contracts: r,
                    },
                );
            }
            for (d, v) in &inv.databases {
                state.db.insert(d.to_string(), (*v, false));
            }
        }
        let mut migrated: BTreeMap<String, Vec<Version>> = BTreeMap::new();
        for &i in applied.iter().filter(|i| in_env(i)) {
            let step = &plan.steps[i];
            match step.action {
                Action::Deploy => {
                    let (s, r) = new.get_key_value(step.target.as_str()).expect("a change");
                    state.current.insert(
                        s,
                        Live {
                            new: true,
                            contracts: r,
                        },
                    );
                }
                Action::Migrate => {
                    let (d, v) = migration(step);
                    state.db.insert(d.to_owned(), (v, true));
                    migrated.entry(d.to_owned()).or_default().push(v);
                }
                Action::Verify | Action::Approve => {}
            }
        }
        let mut failed: Vec<usize> = running.iter().copied().filter(|i| in_env(i)).collect();
        failed.sort_by_key(|i| wave_order.iter().position(|w| w == i));
        for &i in &failed {
            let step = &plan.steps[i];
            match step.action {
                Action::Deploy => {
                    let (s, r) = new.get_key_value(step.target.as_str()).expect("a change");
                    state.deploying.insert(
                        s,
                        Live {
                            new: true,
                            contracts: r,
                        },
                    );
                }
                Action::Migrate => {
                    let (d, v) = migration(step);
                    state.migrating.entry(d.to_owned()).or_default().push(v);
                }
                Action::Verify | Action::Approve => {}
            }
        }
        let passed = touched.iter().filter(|i| in_env(i)).any(|&i| {
            plan.points_of_no_return
                .iter()
                .any(|p| p.step == plan.steps[i].id)
        });
        let mut trace: Vec<String> = vec![format!(
            "failed in {env} with {} applied and {} running",
            applied.iter().filter(|i| in_env(i)).count(),
            failed.len()
        )];
        // The way back: what was running first, then what was applied, latest wave first.
        let mut order = failed.clone();
        let mut back: Vec<usize> = applied.iter().copied().filter(|i| in_env(i)).collect();
        back.sort_by_key(|i| std::cmp::Reverse(wave_order.iter().position(|w| w == i)));
        order.extend(back);
        let mut broke: Option<String> = None;
        for i in order {
            let step = &plan.steps[i];
            let was_running = failed.contains(&i);
            match step.action {
                Action::Deploy => {
                    let s = new.get_key_value(step.target.as_str()).expect("a change").0;
                    let old = before.and_then(|inv| inv.services.get_key_value(s));
                    if was_running {
                        // Stopping a deploy half-way: the new version goes, the old stays.
                        state.deploying.remove(s);
                    } else {
                        if let Some((name, r)) = old {
                            state.deploying.insert(
                                name,
                                Live {
                                    new: false,
                                    contracts: r,
                                },
                            );
                            trace.push(format!("undoing {}", step.id));
                            if let Err(e) = check(catalog, &state, env.as_str()) {
                                broke =
                                    Some(format!("{e}\n  on the way back: {}", trace.join(", ")));
                                break;
                            }
                            state.deploying.remove(s);
                            state.current.insert(
                                name,
                                Live {
                                    new: false,
                                    contracts: r,
                                },
                            );
                        } else {
                            state.current.remove(s);
                        }
                    }
                }
                Action::Migrate => {
                    let (d, v) = migration(step);
                    if !reversible(&d) {
                        if was_running {
                            // It cannot be stopped half-way: it completes and stays.
                            state
                                .migrating
                                .entry(d.to_owned())
                                .or_default()
                                .retain(|&x| x != v);
                            state.db.insert(d.to_owned(), (v, true));
                        }
                        continue;
                    }
                    let list = migrated.entry(d.to_owned()).or_default();
                    list.retain(|&x| x != v);
                    if was_running {
                        state
                            .migrating
                            .entry(d.to_owned())
                            .or_default()
                            .retain(|&x| x != v);
                    } else {
                        let previous =
                            list.iter().max().copied().map(|x| (x, true)).or_else(|| {
                                before
                                    .and_then(|inv| {
                                        inv.databases.iter().find(|(k, _)| k.as_str() == d)
                                    })
                                    .map(|(_, x)| (*x, false))
                            });
                        if let Some(p) = previous {
                            state.restoring.insert(d.to_owned(), p);
                        }
                        trace.push(format!("undoing {}", step.id));
                        if let Err(e) = check(catalog, &state, env.as_str()) {
                            broke = Some(format!("{e}\n  on the way back: {}", trace.join(", ")));
                            break;
                        }
                        state.restoring.remove(&d);
                        match previous {
                            Some(p) => {
                                state.db.insert(d.to_owned(), p);
                            }
                            None => {
                                state.db.remove(&d);
                            }
                        }
                    }
                }
                Action::Verify | Action::Approve => continue,
            }
            trace.push(format!("undone {}", step.id));
            if let Err(e) = check(catalog, &state, env.as_str()) {
                broke = Some(format!("{e}\n  on the way back: {}", trace.join(", ")));
                break;
            }
        }
        match (passed, broke) {
            (false, None) => out.safe += 1,
            (true, Some(_)) => out.necessary += 1,
            (false, Some(e)) => return Err(format!("the rollback breaks the invariant: {e}")),
            (true, None) if !right_after => out.past_but_safe += 1,
            (true, None) => {
                return Err(format!(
                    "a point of no return was named, yet a failure right after it rolls back \
                     keeping the invariant: {}",
                    trace.join(", ")
                ));
            }
        }
    }
    Ok(out)
}

/// The database and the version a migrate step moves it to, read through core's one parser
/// of step ids.
pub fn migration(step: &Step) -> (String, Version) {
    let id = step.typed_id().expect("a plan's step ids parse");
    let (database, to) = id
        .target()
        .migration()
        .expect("a migrate step targets database@version");
    (database.to_string(), to)
}

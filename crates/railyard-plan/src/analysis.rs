//! The contract rules (`queue`, `api`, `schema`, `cross-release`) for one environment.
//!
//! Every service and database passes through a chain of versions (see [`crate::estate`]).
//! A version of this release is live from the start of its step on; an older version is live
//! until the step of the version after it has finished (a deploy may run old and new side by
//! side, a migration may expose both schemas). For every pair of live-together versions that
//! involves this release and breaks a contract, exactly one ordering keeps them apart: the
//! older one must be gone before the newer one starts. That ordering becomes an edge (from
//! the step that retires the older one to the step that starts the newer one), or a refusal
//! when the older one never goes (it is not in the release) or both are this release's final
//! versions. Pairs of versions that both run before the release are not its business.

use std::collections::{BTreeSet, HashMap};

use railyard_core::contract::Range;
use railyard_core::inventory::EnvInventory;
use railyard_core::names::{ApiName, DatabaseName, EnvName, QueueName, ReleaseId, ServiceName};
use railyard_core::plan::StepId;
use railyard_core::release::Change;

use crate::estate::{
    DbChain, EnvChains, EnvScope, Estate, Origin, StepRef, SvcChain, hull, hull2, nearest,
};
use crate::fix::{ContractKey, Fix};
use crate::refusal::{RefusalLog, Refused};
use crate::rule::Rule;

/// An edge between two steps of this plan.
pub(crate) struct RawEdge {
    pub from: u32,
    pub to: u32,
    pub rule: Rule,
    pub reason: String,
}

/// An edge from a step of another release to a step of this plan.
pub(crate) struct RawExternal {
    pub release: ReleaseId,
    pub from: StepId,
    pub to: u32,
    pub reason: String,
}

/// What the rules found in one or more environments.
#[derive(Default)]
pub(crate) struct Findings {
    pub edges: Vec<RawEdge>,
    pub external: Vec<RawExternal>,
    pub refusals: RefusalLog,
}

impl Findings {
    fn order(&mut self, estate: &Estate, from: &StepRef, to: u32, rule: Rule, reason: String) {
        match from {
            StepRef::Ours(from) => self.edges.push(RawEdge {
                from: *from,
                to,
                rule,
                reason,
            }),
            StepRef::External { flight, step } => self.external.push(RawExternal {
                release: estate.flight_id(*flight).clone(),
                from: step.clone(),
                to,
                reason,
            }),
        }
    }
}

/// Which side of a pair must be gone before the other starts.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Gone {
    X,
    Y,
}

/// Why no edge can keep a pair apart.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stuck {
    /// X never goes (not in the release), Y is this release's.
    XStays,
    /// Y never goes, X is this release's.
    YStays,
    /// Both are this release's final versions.
    Clash,
    /// The old and new version of one service, side by side during its deploy.
    Overlap,
}

enum Decision<'r> {
    Edge {
        from: &'r StepRef,
        to: u32,
        gone: Gone,
    },
    Refuse(Stuck),
}

#[derive(Clone, Copy)]
struct Side<'r> {
    idx: usize,
    origin: Origin,
    start: Option<u32>,
    end: Option<&'r StepRef>,
}

fn svc_side<'r>(chain: &'r SvcChain<'_>, i: usize) -> Side<'r> {
    Side {
        idx: i,
        origin: chain.states[i].origin,
        start: chain.states[i].start,
        end: chain.end(i),
    }
}

fn db_side<'r>(chain: &'r DbChain<'_>, i: usize) -> Side<'r> {
    Side {
        idx: i,
        origin: chain.states[i].origin,
        start: chain.states[i].start,
        end: chain.end(i),
    }
}

fn decide<'r>(x: Side<'r>, y: Side<'r>, same_entity: bool) -> Decision<'r> {
    if let (Some(to), Some(from)) = (y.start, x.end) {
        if !(same_entity && x.idx + 1 == y.idx) {
            return Decision::Edge {
                from,
                to,
                gone: Gone::X,
            };
        }
    }
    if let (Some(to), Some(from)) = (x.start, y.end) {
        if !(same_entity && y.idx + 1 == x.idx) {
            return Decision::Edge {
                from,
                to,
                gone: Gone::Y,
            };
        }
    }
    let stuck = if same_entity && x.idx != y.idx {
        Stuck::Overlap
    } else if x.origin.is_ours() && y.origin.is_ours() {
        Stuck::Clash
    } else if y.origin.is_ours() {
        Stuck::XStays
    } else {
        Stuck::YStays
    };
    Decision::Refuse(stuck)
}

/// Names a version of a service for a release manager.
fn who(estate: &Estate, chain: &SvcChain, i: usize) -> String {
    let s = &chain.states[i];
    match s.origin {
        Origin::Absent => format!("no {}", chain.name),
        Origin::Running | Origin::Ours => format!("{} {}", chain.name, s.version),
        Origin::InFlight(f) => format!(
            "{} {} (from {})",
            chain.name,
            s.version,
            estate.flight_id(f)
        ),
    }
}

/// Where a version of a service stands, as a verb phrase.
fn stands(estate: &Estate, chain: &SvcChain, i: usize, env: &EnvName) -> String {
    match chain.states[i].origin {
        Origin::Absent => format!("does not run in {env}"),
        Origin::Running => format!("runs in {env}"),
        Origin::InFlight(f) => format!("is on its way to {env} with {}", estate.flight_id(f)),
        Origin::Ours => "is in this release".to_owned(),
    }
}

fn db_next(estate: &Estate, chain: &DbChain, i: usize) -> String {
    match chain.states.get(i + 1) {
        Some(n) => {
            let v = n.version.map(|v| v.to_string()).unwrap_or_default();
            match n.origin {
                Origin::InFlight(f) => format!(
                    "{}'s migration of {} to {v}",
                    estate.flight_id(f),
                    chain.name
                ),
                _ => format!("the migration of {} to {v}", chain.name),
            }
        }
        None => String::new(),
    }
}

/// What an API provider's version serves.
#[derive(Clone, Copy)]
enum Served {
    /// Nothing runs, or a declared version dropped the API.
    Nothing,
    /// A running version that does not declare it (the inventory does not say).
    Unknown,
    Range(Range),
}

impl Served {
    fn meets(self, required: &Range) -> bool {
        match self {
            Served::Nothing => false,
            Served::Unknown => true,
            Served::Range(r) => r.intersects(required),
        }
    }

    fn describe(self) -> String {
        match self {
            Served::Nothing => "no version of it".to_owned(),
            Served::Unknown => "an unknown range".to_owned(),
            Served::Range(r) => r.to_string(),
        }
    }
}

fn served(chain: &SvcChain, i: usize, api: &ApiName) -> Served {
    let s = &chain.states[i];
    match (s.origin, s.contracts()) {
        (Origin::Absent, _) | (_, None) => Served::Nothing,
        (origin, Some(c)) => match c.provides.get(api) {
            Some(r) => Served::Range(*r),
            None if origin == Origin::Running => Served::Unknown,
            None => Served::Nothing,
        },
    }
}

/// The relations a release touches and who takes part in them, by index into `services`
/// and `dbs`; the same in every environment, so it is worked out once per plan.
pub(crate) struct Topology<'a> {
    services: Vec<&'a ServiceName>,
    dbs: Vec<&'a DatabaseName>,
    queues: Vec<(&'a QueueName, Vec<usize>, Vec<usize>)>,
    apis: Vec<(&'a ApiName, usize, Vec<usize>)>,
    users: Vec<Vec<usize>>,
    ours: Vec<usize>,
}

impl<'a> Topology<'a> {
    /// The relations `changes` (and the migrations of `migrated`) touch.
    pub fn new(
        estate: &Estate<'a>,
        changes: impl Iterator<Item = &'a Change>,
        migrated: impl Iterator<Item = &'a DatabaseName>,
    ) -> Topology<'a> {
        let catalog = estate.catalog;
        let mut queues: BTreeSet<&QueueName> = BTreeSet::new();
        let mut apis: BTreeSet<&ApiName> = BTreeSet::new();
        let mut dbs: BTreeSet<&DatabaseName> = migrated.collect();
        let mut ours: Vec<&ServiceName> = Vec::new();
        for c in changes {
            ours.push(&c.service);
            queues.extend(
                c.produces
                    .keys()
                    .chain(c.consumes.keys())
                    .filter(|q| catalog.queues.contains_key(*q)),
            );
            apis.extend(
                c.requires
                    .keys()
                    .chain(c.provides.keys())
                    .filter(|a| catalog.apis.contains_key(*a)),
            );
            if let Some(provided) = estate.provided_by.get(&c.service) {
                apis.extend(provided.iter().copied());
            }
            dbs.extend(
                c.schema
                    .keys()
                    .filter(|d| catalog.databases.contains_key(*d)),
            );
        }
        let mut topo = Topology {
            services: Vec::new(),
            dbs: dbs.iter().copied().collect(),
            queues: Vec::with_capacity(queues.len()),
            apis: Vec::with_capacity(apis.len()),
            users: Vec::with_capacity(dbs.len()),
            ours: Vec::with_capacity(ours.len()),
        };
        let mut ids: HashMap<&str, usize> = HashMap::new();
        let mut id = |s: &'a ServiceName, services: &mut Vec<&'a ServiceName>| -> usize {
            *ids.entry(s.as_str()).or_insert_with(|| {
                services.push(s);
                services.len() - 1
            })
        };
        let mut distinct = |list: &'a [ServiceName], services: &mut Vec<&'a ServiceName>| {
            let mut out: Vec<usize> = list.iter().map(|s| id(s, services)).collect();
            out.sort_unstable();
            out.dedup();
            out
        };
        for q in queues {
            let queue = &catalog.queues[q];
            let producers = distinct(&queue.producers, &mut topo.services);
            let consumers = distinct(&queue.consumers, &mut topo.services);
            topo.queues.push((q, producers, consumers));
        }
        for a in apis {
            let api = &catalog.apis[a];
            let provider = distinct(std::slice::from_ref(&api.provider), &mut topo.services)[0];
            let consumers = distinct(&api.consumers, &mut topo.services);
            topo.apis.push((a, provider, consumers));
        }
        for d in &topo.dbs {
            let users = distinct(&catalog.databases[*d].users, &mut topo.services);
            topo.users.push(users);
        }
        for s in ours {
            let i = distinct(std::slice::from_ref(s), &mut topo.services)[0];
            topo.ours.push(i);
        }
        topo
    }
}

/// Runs the contract rules for one environment.
pub(crate) fn analyse<'a>(
    estate: &Estate<'a>,
    topo: &Topology<'a>,
    scope: &EnvScope<'a>,
    inventory: Option<&'a EnvInventory>,
    out: &mut Findings,
) {
    let env = scope.env;
    let chains = EnvChains::build(estate, scope, inventory, &topo.services, &topo.dbs);

    cross_release(estate, scope, &chains, &topo.ours, out);
    for (i, d) in topo.dbs.iter().enumerate() {
        migration_chain(estate, env, d, &chains.dbs[i], out);
    }

    let has_ours = |i: usize| chains.services[i].ours().is_some();
    for (q, producers, consumers) in &topo.queues {
        let needed = emitted_hull(&chains, producers, q);
        let ours_consumers: Vec<usize> =
            consumers.iter().copied().filter(|&c| has_ours(c)).collect();
        for &p in producers {
            let list = if has_ours(p) {
                consumers
            } else {
                &ours_consumers
            };
            for &c in list {
                queue_pairs(
                    estate,
                    env,
                    q,
                    &chains.services[c],
                    &chains.services[p],
                    needed,
                    out,
                );
            }
        }
    }
    for (a, provider, consumers) in &topo.apis {
        let p_ours = has_ours(*provider);
        for &c in consumers {
            if p_ours || has_ours(c) {
                api_pairs(
                    estate,
                    env,
                    a,
                    &chains.services[c],
                    &chains.services[*provider],
                    out,
                );
            }
        }
    }
    for (i, d) in topo.dbs.iter().enumerate() {
        let dbc = &chains.dbs[i];
        let db_ours = dbc.states.iter().any(|s| s.origin.is_ours());
        for &u in &topo.users[i] {
            if db_ours || has_ours(u) {
                schema_pairs(estate, env, d, &chains.services[u], dbc, out);
            }
        }
    }
}

/// Releases touching the same service or database go in request order.
fn cross_release(
    estate: &Estate,
    scope: &EnvScope,
    chains: &EnvChains,
    ours_services: &[usize],
    out: &mut Findings,
) {
    let env = scope.env;
    for &i in ours_services {
        let chain = &chains.services[i];
        let Some(k) = chain.ours() else { continue };
        if k == 0 {
            continue;
        }
        let prev = &chain.states[k - 1];
        if let (Origin::InFlight(f), Some(from), Some(to)) =
            (prev.origin, prev.completion.as_ref(), chain.states[k].start)
        {
            let reason = format!(
                "{} (requested earlier) also changes {} and has not finished with it in {env}: releases touching the same service go in request order",
                estate.flight_id(f),
                chain.name
            );
            out.order(estate, from, to, Rule::CrossRelease, reason);
        }
    }
    for chain in &chains.dbs {
        let Some(k) = chain.states.iter().position(|s| s.origin.is_ours()) else {
            continue;
        };
        if k == 0 {
            continue;
        }
        let prev = &chain.states[k - 1];
        if let (Origin::InFlight(f), Some(from), Some(to)) =
            (prev.origin, prev.completion.as_ref(), chain.states[k].start)
        {
            let reason = format!(
                "{} (requested earlier) also migrates {} and has not finished in {env}: migrations of one database go in request order",
                estate.flight_id(f),
                chain.name
            );
            out.order(estate, from, to, Rule::CrossRelease, reason);
        }
    }
}

/// This release's migrations of one database run one after the other, upwards.
fn migration_chain(
    estate: &Estate,
    env: &EnvName,
    d: &DatabaseName,
    chain: &DbChain,
    out: &mut Findings,
) {
    let first_ours = chain.states.iter().position(|s| s.origin.is_ours());
    let Some(first) = first_ours else { return };
    let first_version = chain.states[first].version.unwrap_or_default();
    if let Some(known) = chain.last_known_background() {
        if first_version < known {
            let at = match chain.states[..first]
                .iter()
                .rev()
                .find(|s| s.version.is_some())
            {
                Some(s) => match s.origin {
                    Origin::InFlight(f) => {
                        format!("will be at {known} in {env} after {}", estate.flight_id(f))
                    }
                    _ => format!("is at {known} in {env}"),
                },
                None => format!("is at {known} in {env}"),
            };
            out.refusals.push(Refused::new(
                Rule::Schema.as_str(),
                Some(env),
                format!(
                    "{d} {at}, but this release migrates it to {first_version}: migrations never move a database back"
                ),
                format!(
                    "remove the migration of {d} to {first_version}, or give it a version above {known}"
                ),
                None,
            ));
        }
    }
    for k in first..chain.states.len().saturating_sub(1) {
        let (a, b) = (&chain.states[k], &chain.states[k + 1]);
        if let (Some(from), Some(to)) = (a.start, b.start) {
            let reason = format!(
                "{d} moves to {} before {}: one migration at a time, in version order",
                a.version.unwrap_or_default(),
                b.version.unwrap_or_default()
            );
            out.edges.push(RawEdge {
                from,
                to,
                rule: Rule::Schema,
                reason,
            });
        }
    }
}

/// Every version any producer of `q` emits in this environment, as one range.
fn emitted_hull(chains: &EnvChains, producers: &[usize], q: &QueueName) -> Option<Range> {
    let mut out: Option<Range> = None;
    for &p in producers {
        for s in &chains.services[p].states {
            if let Some(&v) = s.contracts().and_then(|c| c.produces.get(q)) {
                out = Some(match out {
                    Some(r) => hull(r, v),
                    None => Range::exactly(v),
                });
            }
        }
    }
    out
}

fn queue_pairs(
    estate: &Estate,
    env: &EnvName,
    q: &QueueName,
    cc: &SvcChain,
    pc: &SvcChain,
    needed: Option<Range>,
    out: &mut Findings,
) {
    let same = cc.name == pc.name;
    for (xi, x) in cc.states.iter().enumerate() {
        let Some(&read) = x.contracts().and_then(|c| c.consumes.get(q)) else {
            continue;
        };
        for (yi, y) in pc.states.iter().enumerate() {
            if !x.origin.is_ours() && !y.origin.is_ours() {
                continue;
            }
            let Some(&v) = y.contracts().and_then(|c| c.produces.get(q)) else {
                continue;
            };
            if read.contains(v) {
                continue;
            }
            let cons = who(estate, cc, xi);
            let prod = who(estate, pc, yi);
            match decide(svc_side(cc, xi), svc_side(pc, yi), same) {
                Decision::Edge { from, to, gone } => {
                    let reason = match gone {
                        Gone::X => format!(
                            "{prod} emits {q} {v}, which {cons} does not read (it reads {read}): {} replaces it first",
                            who(estate, cc, xi + 1)
                        ),
                        Gone::Y => format!(
                            "{cons} does not read {q} {v} (it reads {read}), which {prod} emits: {} replaces it first",
                            who(estate, pc, yi + 1)
                        ),
                    };
                    let rule = if matches!(from, StepRef::External { .. }) {
                        Rule::CrossRelease
                    } else {
                        Rule::Queue
                    };
                    out.order(estate, from, to, rule, reason);
                }
                Decision::Refuse(stuck) => {
                    let (c, p) = (cc.name, pc.name);
                    let (reason, remedy, fix) = match stuck {
                        Stuck::XStays => {
                            let need = needed.map_or(Range::exactly(v), |n| hull(n, v));
                            (
                                format!(
                                    "{cons} {} and reads {q} {read}, but {prod} in this release emits {q} {v}",
                                    stands(estate, cc, xi, env)
                                ),
                                format!(
                                    "ship {} {c} that reads {q} {need} before this release, or add one to it; or keep {p} emitting a version in {read}",
                                    article(c)
                                ),
                                x.as_running().map(|from| Fix::Ship {
                                    service: c.clone(),
                                    from: Box::new(from),
                                    contract: ContractKey::Consumes(q.clone()),
                                    to: hull2(read, need),
                                }),
                            )
                        }
                        Stuck::YStays => (
                            format!(
                                "{prod} {} and emits {q} {v}, but {cons} in this release reads only {read}",
                                stands(estate, pc, yi, env)
                            ),
                            format!(
                                "keep {c} reading {q} {v} (e.g. {}), or ship {} {p} that emits a version in {read} before this release",
                                hull(read, v),
                                article(p)
                            ),
                            Some(Fix::Widen {
                                service: c.clone(),
                                contract: ContractKey::Consumes(q.clone()),
                                to: hull(read, v),
                            }),
                        ),
                        Stuck::Clash => (
                            if same {
                                format!("{prod} emits {q} {v} but reads only {read} itself")
                            } else {
                                format!(
                                    "{prod} emits {q} {v}, but {cons}, also in this release, reads only {read}"
                                )
                            },
                            format!(
                                "make {c} read {q} {v} too (e.g. {}), or keep {p} emitting a version in {read}",
                                hull(read, v)
                            ),
                            Some(Fix::Widen {
                                service: c.clone(),
                                contract: ContractKey::Consumes(q.clone()),
                                to: hull(read, v),
                            }),
                        ),
                        Stuck::Overlap => {
                            let (old, new) = if x.origin.is_ours() {
                                (prod.clone(), cons.clone())
                            } else {
                                (cons.clone(), prod.clone())
                            };
                            (
                                if x.origin.is_ours() {
                                    format!(
                                        "{new} reads only {q} {read}, but {old}, which keeps running in {env} while it deploys, emits {v}"
                                    )
                                } else {
                                    format!(
                                        "{new} emits {q} {v}, but {old}, which keeps running in {env} while it deploys, reads only {read}"
                                    )
                                },
                                format!(
                                    "ship {c} in two releases: first a version that reads {q} {} and still emits what {old} emits, then the one that changes it",
                                    hull(read, v)
                                ),
                                None,
                            )
                        }
                    };
                    out.refusals.push(Refused::new(
                        Rule::Queue.as_str(),
                        Some(env),
                        reason,
                        remedy,
                        fix,
                    ));
                }
            }
        }
    }
}

fn api_pairs(
    estate: &Estate,
    env: &EnvName,
    a: &ApiName,
    cc: &SvcChain,
    pc: &SvcChain,
    out: &mut Findings,
) {
    let same = cc.name == pc.name;
    for (xi, x) in cc.states.iter().enumerate() {
        let Some(&req) = x.contracts().and_then(|c| c.requires.get(a)) else {
            continue;
        };
        for (yi, y) in pc.states.iter().enumerate() {
            if !x.origin.is_ours() && !y.origin.is_ours() {
                continue;
            }
            let serves = served(pc, yi, a);
            if serves.meets(&req) {
                continue;
            }
            let cons = who(estate, cc, xi);
            let prov = who(estate, pc, yi);
            let point = match serves {
                Served::Range(s) => Some(nearest(req, s)),
                _ => None,
            };
            let widened = match serves {
                Served::Range(s) => hull(s, nearest(s, req)),
                _ => Range::exactly(req.hi.unwrap_or(req.lo)),
            };
            match decide(svc_side(cc, xi), svc_side(pc, yi), same) {
                Decision::Edge { from, to, gone } => {
                    let reason = match gone {
                        Gone::X => match serves {
                            Served::Range(s) => format!(
                                "{prov} serves {a} {s}, which misses {cons}, requiring {req}: {} replaces it first",
                                who(estate, cc, xi + 1)
                            ),
                            _ => format!(
                                "{prov} serves no version of {a}, which {cons} requires ({req}): {} replaces it first",
                                who(estate, cc, xi + 1)
                            ),
                        },
                        Gone::Y => match (y.origin, serves) {
                            (Origin::Absent, _) => format!(
                                "{cons} requires {a} {req}, and {} does not run in {env} yet: {} goes first",
                                pc.name,
                                who(estate, pc, yi + 1)
                            ),
                            _ => format!(
                                "{cons} requires {a} {req}, which {prov} does not serve (it serves {}): {} replaces it first",
                                serves.describe(),
                                who(estate, pc, yi + 1)
                            ),
                        },
                    };
                    let rule = if matches!(from, StepRef::External { .. }) {
                        Rule::CrossRelease
                    } else {
                        Rule::Api
                    };
                    out.order(estate, from, to, rule, reason);
                }
                Decision::Refuse(stuck) => {
                    let (c, p) = (cc.name, pc.name);
                    let (reason, remedy, fix) = match stuck {
                        Stuck::XStays => (
                            format!(
                                "{cons} {} and requires {a} {req}, but {prov} in this release serves {}",
                                stands(estate, cc, xi, env),
                                serves.describe()
                            ),
                            format!(
                                "keep {p} serving a version {c} requires (e.g. {a} {widened}), or ship {} {c} that requires a version {p} serves before this release",
                                article(c)
                            ),
                            Some(Fix::Widen {
                                service: p.clone(),
                                contract: ContractKey::Provides(a.clone()),
                                to: widened,
                            }),
                        ),
                        Stuck::YStays => match (y.origin, point) {
                            (Origin::Absent, _) => (
                                format!(
                                    "{cons} in this release requires {a} {req}, but {p}, its provider, does not run in {env}"
                                ),
                                format!("deploy {p} to {env} first, or add it to this release"),
                                None,
                            ),
                            (_, Some(point)) => (
                                format!(
                                    "{prov} {} and serves {a} {}, but {cons} in this release requires {req}",
                                    stands(estate, pc, yi, env),
                                    serves.describe()
                                ),
                                format!(
                                    "ship {} {p} that serves {a} {req} before this release, or add one to it; or keep {c} working with {a} {point} (e.g. {})",
                                    article(p),
                                    hull(req, point)
                                ),
                                Some(Fix::Widen {
                                    service: c.clone(),
                                    contract: ContractKey::Requires(a.clone()),
                                    to: hull(req, point),
                                }),
                            ),
                            (_, None) => (
                                format!(
                                    "{prov} {} and serves no version of {a}, but {cons} in this release requires {req}",
                                    stands(estate, pc, yi, env)
                                ),
                                format!(
                                    "ship {} {p} that serves {a} {req} before this release, or add one to it",
                                    article(p)
                                ),
                                None,
                            ),
                        },
                        Stuck::Clash => (
                            if same {
                                format!(
                                    "{prov} serves {a} {} but requires {req} itself",
                                    serves.describe()
                                )
                            } else {
                                format!(
                                    "{prov} serves {a} {}, but {cons}, also in this release, requires {req}",
                                    serves.describe()
                                )
                            },
                            format!(
                                "make {p} serve a version {c} requires (e.g. {a} {widened}), or make {c} require a version {p} serves"
                            ),
                            Some(Fix::Widen {
                                service: p.clone(),
                                contract: ContractKey::Provides(a.clone()),
                                to: widened,
                            }),
                        ),
                        Stuck::Overlap => {
                            let (old, new) = if x.origin.is_ours() {
                                (prov.clone(), cons.clone())
                            } else {
                                (cons.clone(), prov.clone())
                            };
                            (
                                format!(
                                    "{new} and {old}, which keeps running in {env} while it deploys, disagree on {a}: one requires {req}, the other serves {}",
                                    serves.describe()
                                ),
                                format!(
                                    "ship {c} in two releases: first a version that serves and requires {a} versions both sides meet, then the one that changes it"
                                ),
                                None,
                            )
                        }
                    };
                    out.refusals.push(Refused::new(
                        Rule::Api.as_str(),
                        Some(env),
                        reason,
                        remedy,
                        fix,
                    ));
                }
            }
        }
    }
}

fn schema_pairs(
    estate: &Estate,
    env: &EnvName,
    d: &DatabaseName,
    uc: &SvcChain,
    dc: &DbChain,
    out: &mut Findings,
) {
    // On a conflict, the new version's own constraints are what the refusal replaces; the
    // old version's still stand (they survive the fix, and may close other circles).
    let conflict = schema_conflict(estate, env, d, uc, dc, out);
    let needed = known_hull(dc);
    for (xi, x) in uc.states.iter().enumerate() {
        if conflict && x.origin.is_ours() {
            continue;
        }
        let Some(&accepts) = x.contracts().and_then(|c| c.schema.get(d)) else {
            continue;
        };
        for (yi, y) in dc.states.iter().enumerate() {
            if !x.origin.is_ours() && !y.origin.is_ours() {
                continue;
            }
            let Some(v) = y.version else { continue };
            if accepts.contains(v) {
                continue;
            }
            let user = who(estate, uc, xi);
            match decide(svc_side(uc, xi), db_side(dc, yi), false) {
                Decision::Edge { from, to, gone } => {
                    let reason = match gone {
                        Gone::X => format!(
                            "the migration of {d} to {v} breaks {user} (it works with {accepts}): {} replaces it first",
                            who(estate, uc, xi + 1)
                        ),
                        Gone::Y => format!(
                            "{user} works with {d} {accepts}, not {v}: {} goes first",
                            db_next(estate, dc, yi)
                        ),
                    };
                    let rule = if matches!(from, StepRef::External { .. }) {
                        Rule::CrossRelease
                    } else {
                        Rule::Schema
                    };
                    out.order(estate, from, to, rule, reason);
                }
                Decision::Refuse(stuck) => {
                    let u = uc.name;
                    let (reason, remedy, fix) = match stuck {
                        Stuck::XStays => {
                            let need = needed.map_or(Range::exactly(v), |n| hull(n, v));
                            (
                                format!(
                                    "{user} {} and works with {d} {accepts}, but this release migrates {d} to {v}",
                                    stands(estate, uc, xi, env)
                                ),
                                format!(
                                    "ship {} {u} that works with {d} {need} before this release, or add one to it; or split the migration so that every version it passes through is one {u} works with",
                                    article(u)
                                ),
                                x.as_running().map(|from| Fix::Ship {
                                    service: u.clone(),
                                    from: Box::new(from),
                                    contract: ContractKey::Schema(d.clone()),
                                    to: hull2(accepts, need),
                                }),
                            )
                        }
                        Stuck::YStays => {
                            let at = match y.origin {
                                Origin::InFlight(f) => {
                                    format!("will be at {v} in {env} after {}", estate.flight_id(f))
                                }
                                _ => format!("is at {v} in {env}"),
                            };
                            (
                                format!(
                                    "{d} {at} and this release does not migrate it, but {user} in this release works with {d} {accepts} only"
                                ),
                                format!(
                                    "add a migration of {d} to a version in {accepts} to this release (or run it first), or keep {u} working with {d} {v} (e.g. {})",
                                    hull(accepts, v)
                                ),
                                Some(Fix::Widen {
                                    service: u.clone(),
                                    contract: ContractKey::Schema(d.clone()),
                                    to: hull(accepts, v),
                                }),
                            )
                        }
                        Stuck::Clash | Stuck::Overlap => (
                            format!(
                                "this release leaves {d} at {v} in {env}, but {user}, also in this release, works with {d} {accepts} only"
                            ),
                            format!(
                                "make {u} work with {d} {v} (e.g. {}), or stop the migration at a version {u} works with",
                                hull(accepts, v)
                            ),
                            Some(Fix::Widen {
                                service: u.clone(),
                                contract: ContractKey::Schema(d.clone()),
                                to: hull(accepts, v),
                            }),
                        ),
                    };
                    out.refusals.push(Refused::new(
                        Rule::Schema.as_str(),
                        Some(env),
                        reason,
                        remedy,
                        fix,
                    ));
                }
            }
        }
    }
}

/// Every known schema version of a database's chain, as one range.
fn known_hull(dc: &DbChain) -> Option<Range> {
    dc.states
        .iter()
        .filter_map(|s| s.version)
        .fold(None, |acc: Option<Range>, v| {
            Some(acc.map_or(Range::exactly(v), |r| hull(r, v)))
        })
}

/// A user whose old version must be gone before a migration that its new version must
/// wait for: old and new run side by side during the deploy, so no order works. Reported
/// as one refusal (instead of a cycle) with the widening that resolves it.
fn schema_conflict(
    estate: &Estate,
    env: &EnvName,
    d: &DatabaseName,
    uc: &SvcChain,
    dc: &DbChain,
    out: &mut Findings,
) -> bool {
    let Some(k) = uc.ours() else { return false };
    if k == 0 {
        return false;
    }
    let (old, new) = (&uc.states[k - 1], &uc.states[k]);
    let (Some(old_r), Some(new_r)) = (
        old.contracts().and_then(|c| c.schema.get(d).copied()),
        new.contracts().and_then(|c| c.schema.get(d).copied()),
    ) else {
        return false;
    };
    let before = dc
        .states
        .iter()
        .enumerate()
        .find_map(|(i, s)| match s.version {
            Some(v) if s.origin.is_ours() && !old_r.contains(v) => Some((i, v)),
            _ => None,
        });
    let last = dc.states.len() - 1;
    let after = dc
        .states
        .iter()
        .enumerate()
        .take(last)
        .rev()
        .find_map(|(j, s)| match s.version {
            Some(v) if !new_r.contains(v) && dc.states[j + 1].origin.is_ours() => Some((j, v)),
            _ => None,
        });
    let (Some((i, vi)), Some((j, vj))) = (before, after) else {
        return false;
    };
    if j + 1 < i {
        return false;
    }
    let all = known_hull(dc).map_or(new_r, |h| hull2(new_r, h));
    let next = dc.states[j + 1].version.unwrap_or_default();
    let s = uc.name;
    out.refusals.push(Refused::new(
        Rule::Schema.as_str(),
        Some(env),
        format!(
            "{} {} and works with {d} {old_r}, so it must be gone before {d} moves to {vi}; {} in this release works with {d} {new_r}, so it cannot start before {d} leaves {vj} for {next}; old and new run side by side while it deploys, so no order keeps {s} working",
            who(estate, uc, k - 1),
            stands(estate, uc, k - 1, env),
            who(estate, uc, k),
        ),
        format!(
            "make {s} work with {d} {all} (every version it meets in this release), or split the migration into releases that {s} can follow one step at a time"
        ),
        Some(Fix::Widen {
            service: s.clone(),
            contract: ContractKey::Schema(d.clone()),
            to: all,
        }),
    ));
    true
}

/// "a" or "an" before a service name, by its first letter.
fn article(name: &ServiceName) -> &'static str {
    match name.as_str().as_bytes().first() {
        Some(b'a' | b'e' | b'i' | b'o' | b'u') => "an",
        _ => "a",
    }
}

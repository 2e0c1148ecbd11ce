//! The estate of one environment as the planner sees it: for every service and database, the
//! chain of versions it passes through — what runs now, what earlier in-flight releases will
//! put there, what this release puts there — and the step after which each version is gone.

use std::collections::BTreeMap;

use railyard_core::catalog::Catalog;
use railyard_core::contract::{Range, Version};
use railyard_core::inventory::{EnvInventory, RunningService};
use railyard_core::names::{ApiName, DatabaseName, EnvName, QueueName, ServiceName};
use railyard_core::plan::StepId;
use railyard_core::release::Change;
use railyard_core::step;

use crate::input::InFlight;

/// The contracts one version of a service declares, borrowed from a change or an inventory.
#[derive(Clone, Copy)]
pub(crate) struct Contracts<'a> {
    pub produces: &'a BTreeMap<QueueName, Version>,
    pub consumes: &'a BTreeMap<QueueName, Range>,
    pub provides: &'a BTreeMap<ApiName, Range>,
    pub requires: &'a BTreeMap<ApiName, Range>,
    pub schema: &'a BTreeMap<DatabaseName, Range>,
}

impl<'a> Contracts<'a> {
    pub fn of_change(c: &'a Change) -> Contracts<'a> {
        Contracts {
            produces: &c.produces,
            consumes: &c.consumes,
            provides: &c.provides,
            requires: &c.requires,
            schema: &c.schema,
        }
    }

    pub fn of_running(r: &'a RunningService) -> Contracts<'a> {
        Contracts {
            produces: &r.produces,
            consumes: &r.consumes,
            provides: &r.provides,
            requires: &r.requires,
            schema: &r.schema,
        }
    }
}

/// Where a version in a chain comes from.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Origin {
    /// Nothing runs (a service not deployed in the environment).
    Absent,
    /// What runs now, per the inventory.
    Running,
    /// What an earlier in-flight release (index into the sorted in-flight list) puts there.
    InFlight(usize),
    /// What this release puts there.
    Ours,
}

impl Origin {
    pub fn is_ours(self) -> bool {
        self == Origin::Ours
    }
}

/// A step that ends a version's life: one of this plan, or one of another release.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum StepRef {
    Ours(u32),
    External { flight: usize, step: StepId },
}

/// Where a version's contracts are declared.
#[derive(Clone, Copy)]
pub(crate) enum Source<'a> {
    None,
    Running(&'a RunningService),
    Change(&'a Change),
}

/// One version of a service in a chain.
pub(crate) struct SvcState<'a> {
    pub origin: Origin,
    pub version: &'a str,
    pub source: Source<'a>,
    /// The step after which this version is certainly running alone (its verify, or the
    /// last remaining step of the in-flight release that ships it).
    pub completion: Option<StepRef>,
    /// Its deploy step, for this release's version.
    pub start: Option<u32>,
}

/// The versions a service passes through in one environment, oldest first.
pub(crate) struct SvcChain<'a> {
    pub name: &'a ServiceName,
    pub states: Vec<SvcState<'a>>,
}

impl<'a> SvcState<'a> {
    pub fn contracts(&self) -> Option<Contracts<'a>> {
        match self.source {
            Source::None => None,
            Source::Running(r) => Some(Contracts::of_running(r)),
            Source::Change(c) => Some(Contracts::of_change(c)),
        }
    }

    /// The version as an inventory entry (what a fix that re-ships it starts from).
    pub fn as_running(&self) -> Option<RunningService> {
        match self.source {
            Source::None => None,
            Source::Running(r) => Some(r.clone()),
            Source::Change(c) => Some(RunningService::from(c)),
        }
    }
}

impl SvcChain<'_> {
    /// The step after which state `i` is gone, if it ever goes.
    pub fn end(&self, i: usize) -> Option<&StepRef> {
        self.states.get(i + 1).and_then(|s| s.completion.as_ref())
    }

    pub fn ours(&self) -> Option<usize> {
        self.states.iter().position(|s| s.origin.is_ours())
    }
}

/// One schema version of a database in a chain.
pub(crate) struct DbState {
    pub origin: Origin,
    /// `None` when the inventory does not know the current version.
    pub version: Option<Version>,
    pub completion: Option<StepRef>,
    pub start: Option<u32>,
}

/// The schema versions a database passes through in one environment, oldest first.
pub(crate) struct DbChain<'a> {
    pub name: &'a DatabaseName,
    pub states: Vec<DbState>,
}

impl DbChain<'_> {
    pub fn end(&self, i: usize) -> Option<&StepRef> {
        self.states.get(i + 1).and_then(|s| s.completion.as_ref())
    }

    /// The highest version known before this release's migrations.
    pub fn last_known_background(&self) -> Option<Version> {
        self.states
            .iter()
            .filter(|s| !s.origin.is_ours())
            .filter_map(|s| s.version)
            .next_back()
    }
}

/// One of this release's services in one environment, with its steps.
#[derive(Clone, Copy)]
pub(crate) struct OurService<'a> {
    pub change: &'a Change,
    pub deploy: u32,
    pub verify: u32,
}

/// What this release does in one environment: the services it deploys and the migrations
/// it runs (ascending per database), with their step indices.
pub(crate) struct EnvScope<'a> {
    pub env: &'a EnvName,
    pub services: BTreeMap<&'a ServiceName, OurService<'a>>,
    pub migrations: BTreeMap<&'a DatabaseName, Vec<(Version, u32)>>,
}

/// Environment-independent lookups: the catalog, in-flight releases by service and database.
pub(crate) struct Estate<'a> {
    pub catalog: &'a Catalog,
    /// In-flight releases in request order.
    pub flights: Vec<&'a InFlight>,
    flight_services: BTreeMap<&'a ServiceName, Vec<(usize, &'a Change)>>,
    flight_migrations: BTreeMap<&'a DatabaseName, Vec<(usize, Version)>>,
    /// API names by their catalog provider.
    pub provided_by: BTreeMap<&'a ServiceName, Vec<&'a ApiName>>,
}

impl<'a> Estate<'a> {
    pub fn new(catalog: &'a Catalog, in_flight: &'a [InFlight]) -> Estate<'a> {
        let mut flights: Vec<&InFlight> = in_flight.iter().collect();
        flights.sort_by(|a, b| (a.sequence, &a.release).cmp(&(b.sequence, &b.release)));
        let mut flight_services: BTreeMap<&ServiceName, Vec<(usize, &Change)>> = BTreeMap::new();
        let mut flight_migrations: BTreeMap<&DatabaseName, Vec<(usize, Version)>> = BTreeMap::new();
        for (f, flight) in flights.iter().enumerate() {
            for change in &flight.changes {
                flight_services
                    .entry(&change.service)
                    .or_default()
                    .push((f, change));
                for m in &change.migrations {
                    let list = flight_migrations.entry(&m.database).or_default();
                    if !list.contains(&(f, m.to)) {
                        list.push((f, m.to));
                    }
                }
            }
        }
        for list in flight_migrations.values_mut() {
            list.sort();
        }
        let mut provided_by: BTreeMap<&ServiceName, Vec<&ApiName>> = BTreeMap::new();
        for (name, api) in &catalog.apis {
            provided_by.entry(&api.provider).or_default().push(name);
        }
        Estate {
            catalog,
            flights,
            flight_services,
            flight_migrations,
            provided_by,
        }
    }

    /// What runs of `name` in `env` right before this release deploys it — the version of
    /// the last in-flight release that still ships it there, else the inventory's — with the
    /// schema ranges it works with; `None` when nothing runs (a rollback removes it).
    pub fn before_ours(
        &self,
        env: &EnvName,
        inventory: Option<&'a EnvInventory>,
        name: &ServiceName,
    ) -> Option<(&'a str, &'a BTreeMap<DatabaseName, Range>)> {
        let flown = self.flight_services.get(name).and_then(|list| {
            list.iter().rev().find(|(f, _)| {
                let remaining = &self.flights[*f].remaining;
                remaining.contains(step::StepId::verify(env, name).as_str())
                    || remaining.contains(step::StepId::deploy(env, name).as_str())
            })
        });
        match flown {
            Some((_, change)) => Some((change.version.as_str(), &change.schema)),
            None => inventory
                .and_then(|inv| inv.services.get(name))
                .map(|r| (r.version.as_str(), &r.schema)),
        }
    }

    pub fn flight_id(&self, f: usize) -> &'a railyard_core::ReleaseId {
        &self.flights[f].release
    }
}

/// The chains of one environment, in the order of the names they were built for.
pub(crate) struct EnvChains<'a> {
    pub services: Vec<SvcChain<'a>>,
    pub dbs: Vec<DbChain<'a>>,
}

impl<'a> EnvChains<'a> {
    pub fn build(
        estate: &Estate<'a>,
        scope: &EnvScope<'a>,
        inventory: Option<&'a EnvInventory>,
        services: &[&'a ServiceName],
        dbs: &[&'a DatabaseName],
    ) -> EnvChains<'a> {
        EnvChains {
            services: services
                .iter()
                .map(|s| service_chain(estate, scope, inventory, s))
                .collect(),
            dbs: dbs
                .iter()
                .map(|d| db_chain(estate, scope, inventory, d))
                .collect(),
        }
    }
}

fn service_chain<'a>(
    estate: &Estate<'a>,
    scope: &EnvScope<'a>,
    inventory: Option<&'a EnvInventory>,
    name: &'a ServiceName,
) -> SvcChain<'a> {
    let env = scope.env;
    let mut states = Vec::with_capacity(2);
    match inventory.and_then(|inv| inv.services.get(name)) {
        Some(r) => states.push(SvcState {
            origin: Origin::Running,
            version: &r.version,
            source: Source::Running(r),
            completion: None,
            start: None,
        }),
        None => states.push(SvcState {
            origin: Origin::Absent,
            version: "",
            source: Source::None,
            completion: None,
            start: None,
        }),
    }
    if let Some(list) = estate.flight_services.get(name) {
        for &(f, change) in list {
            let remaining = &estate.flights[f].remaining;
            let verify = step::StepId::verify(env, name);
            let deploy = step::StepId::deploy(env, name);
            let step = if remaining.contains(verify.as_str()) {
                verify.into()
            } else if remaining.contains(deploy.as_str()) {
                deploy.into()
            } else {
                continue;
            };
            states.push(SvcState {
                origin: Origin::InFlight(f),
                version: &change.version,
                source: Source::Change(change),
                completion: Some(StepRef::External { flight: f, step }),
                start: None,
            });
        }
    }
    if let Some(ours) = scope.services.get(name) {
        states.push(SvcState {
            origin: Origin::Ours,
            version: &ours.change.version,
            source: Source::Change(ours.change),
            completion: Some(StepRef::Ours(ours.verify)),
            start: Some(ours.deploy),
        });
    }
    SvcChain { name, states }
}

fn db_chain<'a>(
    estate: &Estate<'a>,
    scope: &EnvScope<'a>,
    inventory: Option<&'a EnvInventory>,
    name: &'a DatabaseName,
) -> DbChain<'a> {
    let env = scope.env;
    let mut states = vec![DbState {
        origin: Origin::Running,
        version: inventory.and_then(|inv| inv.databases.get(name)).copied(),
        completion: None,
        start: None,
    }];
    if let Some(list) = estate.flight_migrations.get(name) {
        for &(f, to) in list {
            let step: String = step::StepId::migrate(env, name, to).into();
            if estate.flights[f].remaining.contains(&step) {
                states.push(DbState {
                    origin: Origin::InFlight(f),
                    version: Some(to),
                    completion: Some(StepRef::External { flight: f, step }),
                    start: None,
                });
            }
        }
    }
    if let Some(ours) = scope.migrations.get(name) {
        for &(to, idx) in ours {
            states.push(DbState {
                origin: Origin::Ours,
                version: Some(to),
                completion: Some(StepRef::Ours(idx)),
                start: Some(idx),
            });
        }
    }
    DbChain { name, states }
}

/// The smallest range holding `r` and `v`.
pub(crate) fn hull(r: Range, v: Version) -> Range {
    Range {
        lo: r.lo.min(v),
        hi: r.hi.map(|h| h.max(v)),
    }
}

/// The smallest range holding both.
pub(crate) fn hull2(a: Range, b: Range) -> Range {
    Range {
        lo: a.lo.min(b.lo),
        hi: match (a.hi, b.hi) {
            (Some(x), Some(y)) => Some(x.max(y)),
            _ => None,
        },
    }
}

/// The version of `target` closest to `r` (the two do not intersect).
pub(crate) fn nearest(r: Range, target: Range) -> Version {
    match target.hi {
        Some(hi) if hi < r.lo => hi,
        _ => target.lo,
    }
}

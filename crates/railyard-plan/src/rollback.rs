//! Rollback safety (`docs/planning-rules.md`, "the way back"): a rollback undoes the applied
//! steps of one environment in reverse plan order, and a migration whose database has no
//! rollback form stays applied. This module names the steps after which no rollback keeps the
//! contracts — the points of no return — and checks one environment's live state against the
//! contracts, which the promoter uses to re-validate every rollback step before it runs.

use std::collections::{BTreeMap, BTreeSet};

use railyard_core::catalog::Catalog;
use railyard_core::contract::{Range, Version};
use railyard_core::inventory::{EnvInventory, RunningService};
use railyard_core::names::{DatabaseName, EnvName, ServiceName};
use railyard_core::release::Change;

use crate::estate::Estate;

/// A point of no return found in one environment, before its steps exist.
pub(crate) struct Found<'a> {
    pub db: &'a DatabaseName,
    pub version: Version,
    /// Why, without the step id (the caller knows it).
    pub reason: String,
    /// The services whose deploy a rollback past it may not undo.
    pub stays: Vec<&'a ServiceName>,
}

/// The points of no return of one environment: every migration of this release to a version
/// `v` of a database without a rollback form, after which a service of this release that a
/// rollback would take back to its previous version cannot run with `v` (the forward rules
/// already ordered that service's new version before the migration, so whenever the migration
/// has started, the rollback would have to undo it). Services new to the environment are
/// removed by a rollback and do not count.
pub(crate) fn points_of_no_return<'a>(
    estate: &Estate<'a>,
    env: &EnvName,
    inventory: Option<&'a EnvInventory>,
    known: &BTreeMap<&'a ServiceName, &'a Change>,
    migrations: &BTreeMap<&'a DatabaseName, BTreeSet<Version>>,
) -> Vec<Found<'a>> {
    let catalog = estate.catalog;
    let mut out = Vec::new();
    for (&d, versions) in migrations {
        let Some(db) = catalog.databases.get(d) else {
            continue;
        };
        if db.migrate.has_rollback() {
            continue;
        }
        for &v in versions {
            let mut broken: Vec<(&ServiceName, &str, Range)> = Vec::new();
            for (&s, _) in known.iter().filter(|(s, _)| db.users.contains(s)) {
                let Some((version, before)) = estate.before_ours(env, inventory, s) else {
                    continue;
                };
                if let Some(&accepts) = before.get(d)
                    && !accepts.contains(v)
                {
                    broken.push((s, version, accepts));
                }
            }
            if broken.is_empty() {
                continue;
            }
            let who: Vec<String> = broken
                .iter()
                .map(|(s, version, accepts)| {
                    format!(
                        "{s} {version} (what a rollback of {s} goes back to) cannot run: it works with {d} {accepts}"
                    )
                })
                .collect();
            out.push(Found {
                db: d,
                version: v,
                reason: format!(
                    "{d} has no rollback form, so a rollback leaves it at {v}; after this step, {}",
                    who.join("; and ")
                ),
                stays: broken.iter().map(|(s, ..)| *s).collect(),
            });
        }
    }
    out
}

/// One environment as it runs at a moment: every live version of each service (two while a
/// deploy or its undoing runs) and every schema version each database exposes (two while a
/// migration or its undoing runs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiveEnv {
    /// Live versions per service.
    pub services: BTreeMap<ServiceName, Vec<RunningService>>,
    /// Exposed schema versions per database.
    pub databases: BTreeMap<DatabaseName, Vec<Version>>,
}

impl LiveEnv {
    /// What an inventory says runs.
    pub fn from_inventory(inventory: &EnvInventory) -> LiveEnv {
        LiveEnv {
            services: inventory
                .services
                .iter()
                .map(|(s, r)| (s.clone(), vec![r.clone()]))
                .collect(),
            databases: inventory
                .databases
                .iter()
                .map(|(d, v)| (d.clone(), vec![*v]))
                .collect(),
        }
    }
}

/// The contracts `live` breaks, one sentence each (empty when it keeps them all): every live
/// consumer of a queue reads what every live producer emits, every live consumer of an API
/// meets what its live provider serves (and the provider runs), every live user of a database
/// works with every schema version it exposes. A version that declares nothing about a
/// relation is not held to it (the inventory does not say).
pub fn contract_breaks(catalog: &Catalog, live: &LiveEnv) -> Vec<String> {
    let mut out = Vec::new();
    let versions = |s: &ServiceName| live.services.get(s).map_or(&[][..], |v| v.as_slice());
    for (q, queue) in &catalog.queues {
        for c in &queue.consumers {
            for cv in versions(c) {
                let Some(reads) = cv.consumes.get(q) else {
                    continue;
                };
                for p in &queue.producers {
                    for pv in versions(p) {
                        if let Some(&v) = pv.produces.get(q)
                            && !reads.contains(v)
                        {
                            out.push(format!(
                                "{c} {} reads {q} {reads}, but {p} {} emits {v}",
                                cv.version, pv.version
                            ));
                        }
                    }
                }
            }
        }
    }
    for (a, api) in &catalog.apis {
        let providers = versions(&api.provider);
        for c in &api.consumers {
            for cv in versions(c) {
                let Some(required) = cv.requires.get(a) else {
                    continue;
                };
                if providers.is_empty() {
                    out.push(format!(
                        "{c} {} requires {a} {required}, but {} does not run",
                        cv.version, api.provider
                    ));
                }
                for pv in providers {
                    if let Some(served) = pv.provides.get(a)
                        && !served.intersects(required)
                    {
                        out.push(format!(
                            "{c} {} requires {a} {required}, but {} {} serves {served}",
                            cv.version, api.provider, pv.version
                        ));
                    }
                }
            }
        }
    }
    for (d, db) in &catalog.databases {
        let exposed = live.databases.get(d).map_or(&[][..], |v| v.as_slice());
        for u in &db.users {
            for uv in versions(u) {
                let Some(accepts) = uv.schema.get(d) else {
                    continue;
                };
                for &v in exposed {
                    if !accepts.contains(v) {
                        out.push(format!(
                            "{u} {} works with {d} {accepts}, but {d} is at {v}",
                            uv.version
                        ));
                    }
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

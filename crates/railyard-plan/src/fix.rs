//! Mechanical remedies: the refusals whose fix is "accept one more version" carry it as data,
//! so tools can offer it and tests can check that applying it gives a plan.

use std::collections::BTreeMap;

use railyard_core::contract::Range;
use railyard_core::inventory::RunningService;
use railyard_core::names::{ApiName, DatabaseName, QueueName, ServiceName};
use railyard_core::release::Change;
use serde::Serialize;

use crate::estate::hull2;

/// One range of a service's contracts.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ContractKey {
    /// The queue message versions it reads.
    Consumes(QueueName),
    /// The API versions it serves.
    Provides(ApiName),
    /// The API versions it requires.
    Requires(ApiName),
    /// The schema versions it works with.
    Schema(DatabaseName),
}

/// A mechanical remedy for one refusal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum Fix {
    /// Widen one range of a change already in the release.
    Widen {
        /// The service whose change is widened.
        service: ServiceName,
        /// Which range.
        contract: ContractKey,
        /// The range it should declare (it covers the one it declares now).
        to: Range,
    },
    /// Ship a service that is not in the release: its running contracts with one range widened.
    Ship {
        /// The service to add.
        service: ServiceName,
        /// The version it runs now, whose contracts the new change keeps.
        from: Box<RunningService>,
        /// Which range.
        contract: ContractKey,
        /// The range it should declare.
        to: Range,
    },
}

impl Fix {
    /// The service the fix changes.
    pub fn service(&self) -> &ServiceName {
        match self {
            Fix::Widen { service, .. } | Fix::Ship { service, .. } => service,
        }
    }
}

fn widen(change: &mut Change, key: &ContractKey, to: Range) {
    let slot = match key {
        ContractKey::Consumes(q) => change.consumes.entry(q.clone()).or_insert(to),
        ContractKey::Provides(a) => change.provides.entry(a.clone()).or_insert(to),
        ContractKey::Requires(a) => change.requires.entry(a.clone()).or_insert(to),
        ContractKey::Schema(d) => change.schema.entry(d.clone()).or_insert(to),
    };
    *slot = hull2(*slot, to);
}

/// What applying a refusal's mechanical fixes asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remedy {
    /// Changes to ship first, in an earlier release: services outside the release that must
    /// accept more before it can go (one change per service, every widening merged).
    pub first: Vec<Change>,
    /// The release's changes with every widening applied.
    pub release: Vec<Change>,
}

/// Applies `fixes` to a release's changes: widened ranges are merged (their hull); services
/// to re-ship become one change each in [`Remedy::first`]. `None` when two fixes disagree
/// on what a service to re-ship runs now, or a widening names a service the release does
/// not change, so no single remedy can be derived mechanically.
pub fn apply_fixes(changes: &[Change], fixes: &[&Fix]) -> Option<Remedy> {
    let mut release: Vec<Change> = changes.to_vec();
    let mut shipped: BTreeMap<&ServiceName, (&RunningService, Change)> = BTreeMap::new();
    for fix in fixes {
        match fix {
            Fix::Widen {
                service,
                contract,
                to,
            } => {
                let change = release.iter_mut().find(|c| &c.service == service)?;
                widen(change, contract, *to);
            }
            Fix::Ship {
                service,
                from,
                contract,
                to,
            } => {
                let from: &RunningService = from;
                let (base, change) = shipped
                    .entry(service)
                    .or_insert_with(|| (from, reshipped(service, from)));
                if *base != from {
                    return None;
                }
                widen(change, contract, *to);
            }
        }
    }
    Some(Remedy {
        first: shipped.into_values().map(|(_, c)| c).collect(),
        release,
    })
}

/// A change that keeps what `service` runs now, to be widened.
fn reshipped(service: &ServiceName, from: &RunningService) -> Change {
    Change {
        service: service.clone(),
        version: format!("{}-next", from.version),
        artifact: None,
        commit: None,
        branch: None,
        authors: Vec::new(),
        produces: from.produces.clone(),
        consumes: from.consumes.clone(),
        provides: from.provides.clone(),
        requires: from.requires.clone(),
        schema: from.schema.clone(),
        migrations: Vec::new(),
        after: Vec::new(),
    }
}

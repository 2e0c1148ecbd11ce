//! What the planner reads: the catalog, the release being planned, the inventory of every
//! environment and the releases requested before it that still have steps to run.

use std::collections::BTreeSet;

use railyard_core::event::ReleaseRequested;
use railyard_core::{Catalog, Change, Inventory, ReleaseId, StepId};
use serde::{Deserialize, Serialize};

/// Everything a plan is derived from. The planner borrows it and never does IO.
#[derive(Debug, Clone, Copy)]
pub struct PlanInput<'a> {
    /// The catalog in force.
    pub catalog: &'a Catalog,
    /// The release to plan: its id, who asked and its changes.
    pub release: &'a ReleaseRequested,
    /// What runs where now.
    pub inventory: &'a Inventory,
    /// Releases requested *before* this one that still have steps to run. Their order is
    /// their `sequence`; later releases are the caller's to leave out.
    pub in_flight: &'a [InFlight],
}

/// Another release that is still under way, as far as the planner needs to know it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InFlight {
    /// Its id.
    pub release: ReleaseId,
    /// Its place in request order (the stream sequence of its `release.requested`).
    pub sequence: u64,
    /// Its changes, with the contracts they declare.
    #[serde(default)]
    pub changes: Vec<Change>,
    /// Its steps that have not succeeded yet (running ones included).
    #[serde(default)]
    pub remaining: BTreeSet<StepId>,
}

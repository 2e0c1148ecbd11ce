//! Inventory recording: after a deploy or migration succeeded, the `service.deployed` it
//! records on `inventory.<env>`. A deploy records what the release brings (in the colour it
//! went to); a migration records the database's new version on the service change that
//! brought it, keeping what that service runs now (the planner's inventory reads database
//! versions from `service.deployed`). Its event id is derived from the step's
//! `step.started`, so a step resumed after a crash records it once. Verify and approval steps
//! record nothing; rollbacks record their own (`rollback.rs`).

use std::collections::BTreeMap;

use railyard_core::event::ServiceDeployed;
use railyard_core::inventory::RunningService;
use railyard_core::{Action, Envelope, ReleaseState, Step};

use crate::adapter::Target;
use crate::cache::LiveInventory;
use crate::decide;
use crate::error::PromoterError;
use crate::recorder::Writer;

/// Records what `step` of `state`, run against `target` and started by `cause`, changed in
/// the inventory.
pub(crate) async fn record(
    writer: &Writer,
    live: &LiveInventory,
    state: &ReleaseState,
    step: &Step,
    target: &Target,
    cause: &Envelope,
) -> Result<(), PromoterError> {
    let change = match step.action {
        Action::Deploy => {
            let Some(change) = state
                .changes
                .iter()
                .find(|c| c.service.as_str() == step.target)
            else {
                return Ok(());
            };
            ServiceDeployed {
                env: step.env.clone(),
                service: change.service.clone(),
                running: Some(RunningService {
                    colour: target.colour.clone(),
                    ..RunningService::from(change)
                }),
                databases: BTreeMap::new(),
                release: Some(state.id.clone()),
            }
        }
        Action::Migrate => {
            let Ok((database, to)) = decide::migration(step) else {
                return Ok(());
            };
            let Some(change) = state.changes.iter().find(|c| {
                c.migrations
                    .iter()
                    .any(|m| m.database == database && m.to == to)
            }) else {
                return Ok(());
            };
            let running = live.service(&step.env, change.service.as_str()).await?;
            let Some(db) = change
                .migrations
                .iter()
                .find(|m| m.database == database)
                .map(|m| m.database.clone())
            else {
                return Ok(());
            };
            ServiceDeployed {
                env: step.env.clone(),
                service: change.service.clone(),
                running,
                databases: BTreeMap::from([(db, to)]),
                release: Some(state.id.clone()),
            }
        }
        Action::Verify | Action::Approve => return Ok(()),
    };
    writer.record_inventory(cause, 1, change).await
}

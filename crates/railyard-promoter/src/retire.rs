//! Retiring old colours: a blue-green deploy keeps the colour it switched traffic away from
//! (a rollback switches back to it) until every step of the release succeeded. Then, before
//! `release.completed`, each such service's `retire` command takes the old colour down and
//! `colour.retired` records what it said. A failed retire is reported, not rolled back: the
//! new version serves and is healthy, only the clean-up is left. Guarded by a lease and
//! resumable: each retired colour is recorded as it happens, and a command run twice after a
//! crash takes down what is already down.

use std::sync::Arc;

use railyard_core::catalog::Strategy;
use railyard_core::event::ColourRetired;
use railyard_core::release_state::StepStatus;
use railyard_core::{Action, Catalog, Event, ReleaseId, ReleaseState, Status, Step};
use tracing::{info, warn};

use crate::adapter::DEFAULT_TIMEOUT;
use crate::ctx::Ctx;
use crate::error::PromoterError;
use crate::exec::target_for;
use crate::inventory;
use crate::strategy::{blue_green, other_colour};
use crate::work::retire_lease;

/// The succeeded blue-green deploy steps of `state` whose service has a `retire` command and
/// whose old colour is not retired yet, with that command, in plan order.
pub(crate) fn pending<'a>(
    catalog: &'a Catalog,
    state: &'a ReleaseState,
) -> Vec<(&'a Step, &'a [String])> {
    let Some(plan) = &state.plan else {
        return Vec::new();
    };
    plan.steps
        .iter()
        .filter(|step| step.action == Action::Deploy)
        .filter(|step| matches!(state.steps.get(&step.id), Some(StepStatus::Succeeded)))
        .filter(|step| !state.colours_retired.contains_key(&step.id))
        .filter_map(|step| match blue_green(catalog, step) {
            Some(Strategy::BlueGreen { retire, .. }) if !retire.is_empty() => {
                Some((step, retire.as_slice()))
            }
            _ => None,
        })
        .collect()
}

/// Retires the old colours of `release` (see the module documentation).
pub(crate) async fn retire(ctx: &Arc<Ctx>, release: &ReleaseId) -> Result<(), PromoterError> {
    // Nothing to do when another worker is at it.
    ctx.leases
        .exclusively(&retire_lease(release), retire_all(ctx, release))
        .await?;
    Ok(())
}

async fn retire_all(ctx: &Ctx, release: &ReleaseId) -> Result<(), PromoterError> {
    loop {
        let Some(current) = ctx.releases.load(release).await? else {
            return Ok(());
        };
        if current.state.status != Status::Planned {
            return Ok(());
        }
        let Some((step, command)) = pending(&ctx.config.catalog, &current.state)
            .into_iter()
            .next()
        else {
            return Ok(());
        };
        // The old colour is the one that served before this release; the new one serves now.
        let before = inventory::env_inventory(&ctx.bus, &step.env, Some(release)).await?;
        let old = inventory::running(&before, &step.target).and_then(|r| r.colour.clone());
        let serving = ctx
            .live
            .service(&step.env, &step.target)
            .await?
            .and_then(|r| r.colour);
        let retired = match old {
            None => ColourRetired {
                step: step.id.clone(),
                colour: other_colour(serving.as_deref()),
                ok: true,
                detail: format!(
                    "nothing ran in a colour of {} in {} before this release: nothing to retire",
                    step.target, step.env
                ),
            },
            Some(old) if serving.as_ref() == Some(&old) => ColourRetired {
                step: step.id.clone(),
                detail: format!(
                    "{old} serves the traffic of {} in {} again: it is not taken down",
                    step.target, step.env
                ),
                colour: old,
                ok: false,
            },
            Some(old) => {
                let mut at = target_for(&current.state, step, 1);
                at.colour = Some(old.clone());
                let outcome = ctx.runner.command(command, &at, DEFAULT_TIMEOUT).await;
                ColourRetired {
                    step: step.id.clone(),
                    colour: old,
                    ok: outcome.ok,
                    detail: outcome.detail,
                }
            }
        };
        if retired.ok {
            info!(release = %release, step = %step.id, colour = %retired.colour, "old colour retired");
        } else {
            warn!(release = %release, step = %step.id, colour = %retired.colour, detail = %retired.detail, "the old colour was not retired; it is left running for someone to take down");
        }
        let event = ctx.writer.envelope(release, Event::ColourRetired(retired));
        // On a conflict the release changed: read it again and look once more.
        ctx.writer
            .append_at(release, current.sequence, &[event])
            .await?;
    }
}

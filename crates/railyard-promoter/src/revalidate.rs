//! Re-validation: before a step enters an environment the release has not touched yet (or
//! runs a migration), the planner core ([`railyard_plan::revalidate`]) is asked whether the
//! rest of the plan is still safe against what runs now and against the releases it waits
//! for, brought up to date. The answer is a hold reason or nothing; holding the release is
//! the caller's.

use std::collections::BTreeSet;

use railyard_core::release_state::StepStatus;
use railyard_core::{Action, Catalog, Event, Plan, ReleaseId, Step, StepId};

use crate::cache::{Current, LiveInventory, Releases};
use crate::decide;
use crate::error::PromoterError;

/// Asks the planner core whether the rest of `current`'s plan is still safe against the live
/// inventory before `step`; the hold reason when it is not.
pub(crate) async fn revalidate(
    catalog: &Catalog,
    releases: &Releases,
    live: &LiveInventory,
    current: &Current,
    step: &Step,
) -> Result<Option<String>, PromoterError> {
    let Some(plan) = &current.state.plan else {
        return Ok(None);
    };
    let Some(requested) = current.events.iter().find_map(|e| match &e.event {
        Event::ReleaseRequested(r) => Some(r),
        _ => None,
    }) else {
        return Ok(None);
    };
    let inventory = live.now().await?;
    let inventory = &*inventory;
    let remaining: BTreeSet<StepId> = current
        .state
        .steps
        .iter()
        .filter(|(_, s)| **s != StepStatus::Succeeded)
        .map(|(id, _)| id.clone())
        .collect();
    let in_flight = in_flight_before(releases, plan).await?;
    let input = railyard_plan::PlanInput {
        catalog,
        release: requested,
        inventory,
        in_flight: &in_flight,
    };
    Ok(railyard_plan::revalidate(&input, plan, &remaining)
        .err()
        .map(|refusals| {
            let what = if step.action == Action::Migrate {
                format!("before migration {}", step.id)
            } else {
                format!("before entering {}", step.env)
            };
            let reasons: Vec<String> = refusals
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    format!(
                        "{}. [{}] {} (remedy: {})",
                        i + 1,
                        r.rule,
                        r.reason,
                        r.remedy
                    )
                })
                .collect();
            format!(
                "{what}, the rest of the plan is no longer safe against what runs now: {}; {}",
                reasons.join("; "),
                decide::operator_commands(&current.state.id, None)
            )
        }))
}

/// The releases `plan` waits for that have not ended, with what they change and what they
/// still have to do, in the order they were requested: what the planner weighed when it
/// ordered this release after them, brought up to date. (Releases requested later come after
/// this one and are not its concern; releases that ended are in the live inventory.)
async fn in_flight_before(
    releases: &Releases,
    plan: &Plan,
) -> Result<Vec<railyard_plan::InFlight>, PromoterError> {
    let others: BTreeSet<&ReleaseId> = plan.external_edges.iter().map(|e| &e.release).collect();
    let mut flights = Vec::new();
    for other in others {
        let Some(current) = releases.load(other).await? else {
            continue;
        };
        if current.state.status.is_final() {
            continue;
        }
        let requested_at = current
            .events
            .iter()
            .find(|e| matches!(e.event, Event::ReleaseRequested(_)))
            .map(|e| e.occurred_at);
        let remaining = current.state.unfinished_steps();
        flights.push((
            requested_at,
            railyard_plan::InFlight {
                release: other.clone(),
                sequence: 0,
                changes: current.state.changes.clone(),
                remaining,
            },
        ));
    }
    // Request order, from the requests' timestamps (the stream positions are not kept here).
    flights.sort_by(|a, b| (a.0, &a.1.release).cmp(&(b.0, &b.1.release)));
    Ok(flights
        .into_iter()
        .enumerate()
        .map(|(i, (_, flight))| railyard_plan::InFlight {
            sequence: i as u64 + 1,
            ..flight
        })
        .collect())
}

//! Re-validation: before a step enters an environment the release has not touched yet (or
//! runs a migration), the planner core ([`railyard_plan::revalidate`]) is asked whether the
//! rest of the plan is still safe against what runs now and against the releases it waits
//! for, brought up to date. The answer ([`Verdict`]) is to go on, to wait, or a hold reason;
//! holding the release is the caller's.

use std::collections::BTreeSet;

use railyard_core::release_state::StepStatus;
use railyard_core::{Action, Catalog, Event, Plan, ReleaseId, Step, StepId};

use crate::cache::{Current, LiveInventory, Releases};
use crate::decide;
use crate::error::PromoterError;

/// What re-validation says about the rest of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Still safe: go on.
    Safe,
    /// Only releases requested earlier and still in flight stand in the way: one of them
    /// touched the same services after this plan was made (a step of it failed, so its
    /// environment is being undone). Waiting for it is what the planner would order now, and
    /// it ends by itself, so the step waits (not a hold) and is looked at again when that
    /// release moves or at the next sweep; what runs then is re-validated again. The releases
    /// it waits for (request order) and why.
    Wait(Vec<ReleaseId>, String),
    /// Not safe against what runs now: hold the release with this reason.
    Hold(String),
}

/// Asks the planner core whether the rest of `current`'s plan is still safe against the live
/// inventory before `step`.
pub(crate) async fn revalidate(
    catalog: &Catalog,
    releases: &Releases,
    live: &LiveInventory,
    current: &Current,
    step: &Step,
) -> Result<Verdict, PromoterError> {
    let Some(plan) = &current.state.plan else {
        return Ok(Verdict::Safe);
    };
    let Some(requested) = current.events.iter().find_map(|e| match &e.event {
        Event::ReleaseRequested(r) => Some(r),
        _ => None,
    }) else {
        return Ok(Verdict::Safe);
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
    let Err(refusals) = railyard_plan::revalidate(&input, plan, &remaining) else {
        return Ok(Verdict::Safe);
    };
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
    if refusals.iter().all(|r| r.rule == CROSS_RELEASE) {
        // The releases the findings name, in request order; a finding that names none stands
        // for every earlier release still in flight.
        let named: BTreeSet<&ReleaseId> =
            refusals.iter().filter_map(|r| r.release.as_ref()).collect();
        let every = refusals.iter().any(|r| r.release.is_none());
        let waiting_for = in_flight
            .iter()
            .map(|flight| &flight.release)
            .filter(|release| every || named.contains(release))
            .cloned()
            .collect();
        return Ok(Verdict::Wait(
            waiting_for,
            format!(
                "{what}, it waits for releases requested earlier that are still in flight: {}",
                reasons.join("; ")
            ),
        ));
    }
    Ok(Verdict::Hold(format!(
        "{what}, the rest of the plan is no longer safe against what runs now: {}; {}",
        reasons.join("; "),
        decide::operator_commands(&current.state.id, None)
    )))
}

/// The planner core's name for the rule that orders releases touching the same services.
const CROSS_RELEASE: &str = "cross-release";

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

//! Re-validation: the rest of a plan checked against what runs now, as the promoter asks
//! before each environment and each migration.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::Scenario;
use railyard_core::inventory::RunningService;
use railyard_core::plan::{Action, Plan};
use railyard_plan::{PlanInput, plan, revalidate};

fn combined() -> (Scenario, Plan) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios/combined");
    let scenario = Scenario::load(&dir);
    let p = plan(&scenario.input()).expect("the combined scenario plans");
    (scenario, p)
}

fn all_steps(p: &Plan) -> BTreeSet<String> {
    p.steps.iter().map(|s| s.id.clone()).collect()
}

#[test]
fn an_untouched_estate_keeps_the_plan_valid() {
    let (scenario, p) = combined();
    assert_eq!(revalidate(&scenario.input(), &p, &all_steps(&p)), Ok(()));
}

#[test]
fn after_staging_the_rest_is_checked_against_the_live_inventory() {
    let (scenario, p) = combined();
    let mut live = scenario.inventory.clone();
    let staging = live.0.get_mut("staging").expect("staging inventory");
    for change in &scenario.release.changes {
        staging
            .services
            .insert(change.service.clone(), RunningService::from(change));
    }
    staging.databases.insert("orders-db".parse().unwrap(), 43);
    let remaining: BTreeSet<String> = p
        .steps
        .iter()
        .filter(|s| s.env.as_str() == "production")
        .map(|s| s.id.clone())
        .collect();
    let input = PlanInput {
        inventory: &live,
        ..scenario.input()
    };
    assert_eq!(revalidate(&input, &p, &remaining), Ok(()));
}

#[test]
fn a_consumer_changed_outside_the_release_stops_it() {
    let (scenario, p) = combined();
    let mut live = scenario.inventory.clone();
    let email = live
        .0
        .get_mut("production")
        .and_then(|e| e.services.get_mut("email-worker"))
        .expect("email-worker runs in production");
    email.version = "3.0.9".to_owned();
    email
        .consumes
        .insert("orders-events".parse().unwrap(), "1..=2".parse().unwrap());
    let input = PlanInput {
        inventory: &live,
        ..scenario.input()
    };
    let reasons = revalidate(&input, &p, &all_steps(&p)).expect_err("no longer safe");
    assert_eq!(reasons.len(), 1, "{reasons:#?}");
    assert_eq!(reasons[0].rule, "queue");
    assert_eq!(
        reasons[0].env.as_ref().map(|e| e.as_str()),
        Some("production")
    );
    assert_eq!(
        reasons[0].reason,
        "email-worker 3.0.9 runs in production and reads orders-events 1..=2, but orders-api 2.4.0 in this release emits orders-events 3"
    );
    assert!(
        reasons[0]
            .remedy
            .starts_with("ship an email-worker that reads orders-events 2..=3")
    );
}

#[test]
fn an_ordering_the_plan_lacks_asks_for_a_new_plan() {
    let (scenario, p) = combined();
    // Someone shipped a checkout that requires pricing-api 7 by hand: the new pricing (4..=6)
    // must now wait for this release's checkout, but the plan orders pricing first.
    let mut live = scenario.inventory.clone();
    let checkout = live
        .0
        .get_mut("production")
        .and_then(|e| e.services.get_mut("checkout"))
        .expect("checkout runs in production");
    checkout.version = "7.2.5".to_owned();
    checkout
        .requires
        .insert("pricing-api".parse().unwrap(), "7".parse().unwrap());
    let input = PlanInput {
        inventory: &live,
        ..scenario.input()
    };
    let reasons = revalidate(&input, &p, &all_steps(&p)).expect_err("the order is wrong now");
    assert_eq!(reasons.len(), 1, "{reasons:#?}");
    assert_eq!(reasons[0].rule, "api");
    assert_eq!(
        reasons[0].reason,
        "pricing 5.1.0 serves pricing-api 4..=6, which misses checkout 7.2.5, requiring 7: checkout 7.3.0 replaces it first, but the plan does not order production:verify:checkout before production:deploy:pricing"
    );
    assert_eq!(
        reasons[0].remedy,
        "re-plan the release against what runs now"
    );
}

#[test]
fn a_step_the_plan_does_not_have_is_named() {
    let (scenario, p) = combined();
    let mut remaining = all_steps(&p);
    remaining.insert("production:deploy:ledger".to_owned());
    let reasons = revalidate(&scenario.input(), &p, &remaining).expect_err("unknown step");
    assert_eq!(
        reasons[0].reason,
        "step production:deploy:ledger is not in the plan of rel-42"
    );
}

#[test]
fn migrations_still_to_run_are_checked_before_they_run() {
    let (scenario, p) = combined();
    // Everything but the production migration is done; a billing-worker that only works with
    // orders-db 42 came back by hand.
    let mut live = scenario.inventory.clone();
    for env in live.0.values_mut() {
        for change in &scenario.release.changes {
            env.services
                .insert(change.service.clone(), RunningService::from(change));
        }
    }
    live.0
        .get_mut("staging")
        .unwrap()
        .databases
        .insert("orders-db".parse().unwrap(), 43);
    let billing = live
        .0
        .get_mut("production")
        .and_then(|e| e.services.get_mut("billing-worker"))
        .unwrap();
    billing.version = "1.4.0".to_owned();
    billing
        .schema
        .insert("orders-db".parse().unwrap(), "42".parse().unwrap());
    let remaining: BTreeSet<String> = p
        .steps
        .iter()
        .filter(|s| s.action == Action::Migrate && s.env.as_str() == "production")
        .map(|s| s.id.clone())
        .collect();
    let input = PlanInput {
        inventory: &live,
        ..scenario.input()
    };
    let reasons = revalidate(&input, &p, &remaining).expect_err("the migration would break it");
    assert_eq!(reasons.len(), 1, "{reasons:#?}");
    assert_eq!(reasons[0].rule, "schema");
    assert_eq!(
        reasons[0].reason,
        "billing-worker 1.4.0 runs in production and works with orders-db 42, but this release migrates orders-db to 43"
    );
}

//! No recursion that can overflow: a plan of 100,000 steps in one long chain (and the same
//! chain closed into a circle) is planned, layered and explained on the test thread's stack.

use std::collections::BTreeMap;

use railyard_core::catalog::{Deploy, Environment, Service};
use railyard_core::event::ReleaseRequested;
use railyard_core::{Catalog, Change, Inventory, ReleaseId, ServiceName};
use railyard_plan::{PlanInput, plan};

const SERVICES: usize = 50_000;

fn chain(closed: bool) -> (Catalog, ReleaseRequested) {
    let name = |i: usize| -> ServiceName { format!("s{i:06}").parse().expect("a name") };
    let mut catalog = Catalog::default();
    catalog.environments.push(Environment {
        name: "production".parse().expect("a name"),
        after: None,
        approval: None,
        freeze: Vec::new(),
        freeze_override_lead: None,
        on_failure: Default::default(),
        point_of_no_return: Default::default(),
    });
    let mut changes = Vec::with_capacity(SERVICES);
    for i in 0..SERVICES {
        let after = if i > 0 {
            vec![name(i - 1)]
        } else if closed {
            vec![name(SERVICES - 1)]
        } else {
            Vec::new()
        };
        catalog.services.insert(
            name(i),
            Service {
                owner: None,
                slack_channel: None,
                match_: Default::default(),
                required_suites: Vec::new(),
                after,
                deploy: Deploy::Simulated {
                    duration: None,
                    fail_versions: Vec::new(),
                    fail_rate: None,
                },
                gates: Vec::new(),
                strategy: Default::default(),
                environments: BTreeMap::new(),
                env: Vec::new(),
                secrets: Vec::new(),
                workdir: None,
                user: None,
            },
        );
        changes.push(Change {
            service: name(i),
            version: "2.0.0".to_owned(),
            artifact: None,
            commit: None,
            branch: None,
            authors: Vec::new(),
            produces: BTreeMap::new(),
            consumes: BTreeMap::new(),
            provides: BTreeMap::new(),
            requires: BTreeMap::new(),
            schema: BTreeMap::new(),
            migrations: Vec::new(),
            after: Vec::new(),
        });
    }
    let release = ReleaseRequested {
        release: ReleaseId::new("rel-long").expect("an id"),
        requested_by: "carol".to_owned(),
        changes,
    };
    (catalog, release)
}

#[test]
fn a_chain_of_100k_steps_plans_without_recursion() {
    let (catalog, release) = chain(false);
    let inventory = Inventory::default();
    let input = PlanInput {
        catalog: &catalog,
        release: &release,
        inventory: &inventory,
        in_flight: &[],
    };
    let p = plan(&input).expect("a chain plans");
    assert_eq!(p.steps.len(), 2 * SERVICES);
    assert_eq!(p.waves.len(), 2 * SERVICES);
    assert_eq!(p.critical_path.len(), 2 * SERVICES);
    assert_eq!(p.critical_path[0], "production:deploy:s000000");
}

#[test]
fn a_circle_of_100k_steps_is_spelled_out_without_recursion() {
    let (catalog, release) = chain(true);
    let inventory = Inventory::default();
    let input = PlanInput {
        catalog: &catalog,
        release: &release,
        inventory: &inventory,
        in_flight: &[],
    };
    let refusals = plan(&input).expect_err("a circle cannot be planned");
    assert_eq!(refusals.reasons.len(), 1);
    let reason = &refusals.reasons[0].refusal;
    assert_eq!(reason.rule, "cycle");
    assert_eq!(reason.reason.matches("[explicit:").count(), SERVICES);
}

//! Data-driven planner scenarios: each directory under `tests/scenarios/` holds a catalog, a
//! release, an inventory (and maybe releases in flight); the plan (text and JSON) or the
//! refusal (text and JSON) is snapshotted. Every accepted plan is also run along random
//! topological orders by the independent simulator, rolled back from random failure points
//! (every state on the way back checked; after a point of no return the rollback must
//! break), and planned twice to check that the output is byte-identical.

mod common;

use common::{Rng, Scenario, simulate, simulate_rollback};
use railyard_plan::{Format, plan, render, render_refusals};

fn output(scenario: &Scenario) -> String {
    let input = scenario.input();
    match plan(&input) {
        Ok(p) => {
            let again = plan(&input).expect("the same input plans the same way");
            for format in [Format::Text, Format::Json, Format::Mermaid, Format::Dot] {
                assert_eq!(render(&p, format), render(&again, format), "{format:?}");
            }
            if scenario.in_flight.is_empty() {
                simulate(
                    &scenario.catalog,
                    &scenario.inventory,
                    &scenario.release.changes,
                    &p,
                    300,
                    &mut Rng::new(7),
                )
                .unwrap_or_else(|e| panic!("the plan breaks the invariant: {e}"));
                simulate_rollback(
                    &scenario.catalog,
                    &scenario.inventory,
                    &scenario.release.changes,
                    &p,
                    300,
                    &mut Rng::new(11),
                )
                .unwrap_or_else(|e| panic!("the way back: {e}"));
            }
            format!(
                "{}\n--- json ---\n{}",
                render(&p, Format::Text),
                render(&p, Format::Json)
            )
        }
        Err(refusals) => {
            let again = plan(&input).expect_err("the same input is refused the same way");
            assert_eq!(refusals, again);
            format!(
                "{}\n--- json ---\n{}",
                render_refusals(&refusals, Format::Text),
                render_refusals(&refusals, Format::Json)
            )
        }
    }
}

#[test]
fn scenarios() {
    insta::glob!("scenarios/*/release.toml", |path| {
        let scenario = Scenario::load(path.parent().expect("a scenario directory"));
        insta::assert_snapshot!(output(&scenario));
    });
}

#[test]
fn mermaid_and_dot_show_every_step_and_edge() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios/combined");
    let scenario = Scenario::load(&dir);
    let p = plan(&scenario.input()).expect("the combined scenario plans");
    let mermaid = render(&p, Format::Mermaid);
    let dot = render(&p, Format::Dot);
    assert_eq!(mermaid.matches("-->|").count(), p.edges.len());
    assert_eq!(dot.matches(" -> ").count(), p.edges.len());
    insta::assert_snapshot!("combined_mermaid", mermaid);
    insta::assert_snapshot!("combined_dot", dot);
}

#[test]
fn refusals_render_in_every_format() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/scenarios/queue-consumer-not-in-release");
    let scenario = Scenario::load(&dir);
    let refusals = plan(&scenario.input()).expect_err("the scenario is refused");
    let mermaid = render_refusals(&refusals, Format::Mermaid);
    let dot = render_refusals(&refusals, Format::Dot);
    assert!(mermaid.starts_with("flowchart TD\n"));
    assert!(dot.starts_with("digraph \"rel-queue-refused\" {"));
    for r in &refusals.reasons {
        assert!(mermaid.contains(&r.refusal.remedy.replace('"', "#quot;")));
        assert!(dot.contains(&r.refusal.remedy.replace('"', "\\\"")));
    }
    assert_eq!(
        refusals.to_string(),
        format!(
            "release rel-queue-refused is refused: {}: {}",
            refusals.reasons[0].refusal.reason, refusals.reasons[0].refusal.remedy
        )
    );
}

#[test]
fn formats_parse_by_name() {
    assert_eq!("dot".parse::<Format>(), Ok(Format::Dot));
    assert_eq!(
        "yaml".parse::<Format>().unwrap_err().to_string(),
        "unknown format \"yaml\" (expected one of: text, json, mermaid, dot)"
    );
}

fn load(name: &str) -> Scenario {
    Scenario::load(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/scenarios")
            .join(name),
    )
}

/// A contract migration without a rollback form after a user's deploy is a point of no
/// return, named with its reason in every format; with a rollback form it is none; and a
/// rollback from a failure past it was shown to break, one before it not.
#[test]
fn a_migration_without_rollback_form_after_a_users_deploy_is_a_point_of_no_return() {
    let scenario = load("rollback-contract-without-rollback-form");
    let p = plan(&scenario.input()).expect("planned");
    let step = "production:migrate:orders-db@44";
    let ponr = p.point_of_no_return(step).expect("named");
    assert_eq!(
        ponr.reason,
        "orders-db has no rollback form, so a rollback leaves it at 44; after this step, orders-api 2.3.0 (what a rollback of orders-api goes back to) cannot run: it works with orders-db 42..=43"
    );
    assert_eq!(p.points_of_no_return.len(), 1);
    for format in [Format::Text, Format::Json, Format::Mermaid, Format::Dot] {
        let out = render(&p, format);
        assert!(out.contains("point"), "{format:?} does not mark it:\n{out}");
        assert!(out.contains("orders-db@44"), "{format:?}:\n{out}");
    }
    assert!(render(&p, Format::Text).contains(&ponr.reason));
    assert!(render(&p, Format::Dot).contains(&ponr.reason));
    let runs = simulate_rollback(
        &scenario.catalog,
        &scenario.inventory,
        &scenario.release.changes,
        &p,
        400,
        &mut Rng::new(3),
    )
    .expect("the way back is checked");
    assert!(runs.safe > 0 && runs.necessary > 0, "{runs:?}");

    let reversible = load("rollback-contract-with-rollback-form");
    let p = plan(&reversible.input()).expect("planned");
    assert!(
        p.points_of_no_return.is_empty(),
        "{:?}",
        p.points_of_no_return
    );
    let runs = simulate_rollback(
        &reversible.catalog,
        &reversible.inventory,
        &reversible.release.changes,
        &p,
        400,
        &mut Rng::new(3),
    )
    .expect("every rollback keeps the invariant");
    assert_eq!(runs.necessary, 0);
}

/// Where the environment asks for it, an approval step goes right before the point of no
/// return (after everything the migration waits for) and carries the reason; where it
/// refuses, the release is refused naming the step and the reason.
#[test]
fn the_catalog_decides_what_a_point_of_no_return_requires() {
    let approved = load("rollback-point-of-no-return-approved");
    let p = plan(&approved.input()).expect("planned");
    let ponr = p
        .point_of_no_return("production:migrate:orders-db@44")
        .expect("named");
    let approval = ponr.approval.as_deref().expect("an approval step");
    assert_eq!(approval, "production:approve:orders-db@44");
    assert!(
        p.edges
            .iter()
            .any(|e| e.from == approval && e.to == ponr.step && e.reason.contains(&ponr.reason))
    );
    // It is asked once the migration is otherwise ready: after orders-api's verify.
    assert!(
        p.edges
            .iter()
            .any(|e| e.from == "production:verify:orders-api" && e.to == approval)
    );

    let refused = load("rollback-point-of-no-return-refused");
    let refusals = plan(&refused.input()).expect_err("refused");
    let reasons = refusals.refusals();
    assert_eq!(reasons.len(), 1, "{reasons:#?}");
    assert_eq!(reasons[0].rule, "point-of-no-return");
    assert!(reasons[0].reason.starts_with("production:migrate:orders-db@44 is a point of no return: orders-db has no rollback form"), "{}", reasons[0].reason);
}

/// A queue producer whose consumers dropped its old message version in the same release:
/// undoing the producer first would feed them the old version again; the plan's way back
/// (reverse wave order) undoes the consumers first, and every state on it keeps the invariant.
#[test]
fn a_producer_is_rolled_back_after_the_consumers_that_dropped_its_old_version() {
    let scenario = load("queue-consumer-drops-old-version");
    let p = plan(&scenario.input()).expect("planned");
    assert!(p.points_of_no_return.is_empty());
    let back: Vec<&str> = p.waves.iter().rev().flatten().map(|s| s.as_str()).collect();
    let at = |id: &str| back.iter().position(|s| *s == id).expect("in the plan");
    assert!(
        at("production:deploy:email-worker") < at("production:deploy:orders-api"),
        "{back:?}"
    );
    // The other order is not safe: email-worker 3.2.0 reads only 3, orders-api 2.3.0 emits 2.
    let mut live = railyard_plan::LiveEnv::from_inventory(
        scenario
            .inventory
            .env(&"production".parse().unwrap())
            .unwrap(),
    );
    let email = scenario
        .release
        .changes
        .iter()
        .find(|c| c.service.as_str() == "email-worker")
        .unwrap();
    live.services.insert(
        email.service.clone(),
        vec![railyard_core::inventory::RunningService::from(email)],
    );
    let breaks = railyard_plan::contract_breaks(&scenario.catalog, &live);
    assert_eq!(
        breaks,
        vec!["email-worker 3.2.0 reads orders-events 3, but orders-api 2.3.0 emits 2".to_owned()]
    );
    let runs = simulate_rollback(
        &scenario.catalog,
        &scenario.inventory,
        &scenario.release.changes,
        &p,
        400,
        &mut Rng::new(5),
    )
    .expect("every rollback keeps the invariant");
    assert!(runs.safe > 100, "{runs:?}");
}

//! Data-driven planner scenarios: each directory under `tests/scenarios/` holds a catalog, a
//! release, an inventory (and maybe releases in flight); the plan (text and JSON) or the
//! refusal (text and JSON) is snapshotted. Every accepted plan is also run along random
//! topological orders by the independent simulator, and planned twice to check that the
//! output is byte-identical.

mod common;

use common::{Rng, Scenario, simulate};
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

//! Renderers: a plan or a refusal as text (what a release manager reads), JSON
//! (INTERFACES §11), Mermaid or DOT. Output depends only on the plan, so it is byte-identical
//! for the same input.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use railyard_core::plan::{Edge, Plan, Refusal, Step};
use serde::Serialize;

use crate::refusal::Refusals;

/// An output format of `railyard plan`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// For people.
    Text,
    /// INTERFACES §11.
    Json,
    /// A Mermaid flowchart.
    Mermaid,
    /// A Graphviz digraph.
    Dot,
}

/// A format name that is not one of ours.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown format {0:?} (expected one of: text, json, mermaid, dot)")]
pub struct UnknownFormat(pub String);

impl std::str::FromStr for Format {
    type Err = UnknownFormat;
    fn from_str(s: &str) -> Result<Format, UnknownFormat> {
        match s {
            "text" => Ok(Format::Text),
            "json" => Ok(Format::Json),
            "mermaid" => Ok(Format::Mermaid),
            "dot" => Ok(Format::Dot),
            other => Err(UnknownFormat(other.to_owned())),
        }
    }
}

/// Renders a plan.
pub fn render(plan: &Plan, format: Format) -> String {
    match format {
        Format::Text => text(plan),
        Format::Json => json(plan),
        Format::Mermaid => mermaid(plan),
        Format::Dot => dot(plan),
    }
}

/// Renders a refusal: every reason with its remedy. Mermaid and DOT get a graph with one
/// node per reason, so a pipeline that draws plans draws refusals too.
pub fn render_refusals(refusals: &Refusals, format: Format) -> String {
    let reasons: Vec<&Refusal> = refusals.reasons.iter().map(|r| &r.refusal).collect();
    match format {
        Format::Text => refusal_text(refusals, &reasons),
        Format::Json => {
            #[derive(Serialize)]
            struct Out<'a> {
                release: &'a str,
                catalog_hash: &'a str,
                refusals: &'a [&'a Refusal],
            }
            let mut s = serde_json::to_string_pretty(&Out {
                release: refusals.release.as_str(),
                catalog_hash: &refusals.catalog_hash,
                refusals: &reasons,
            })
            .expect("refusals always serialize");
            s.push('\n');
            s
        }
        Format::Mermaid => {
            let mut s = String::from("flowchart TD\n");
            let _ = writeln!(
                s,
                "  refused[\"{}\"]",
                mermaid_escape(&format!("release {} is refused", refusals.release))
            );
            for (i, r) in reasons.iter().enumerate() {
                let _ = writeln!(
                    s,
                    "  r{i}[\"{}\"]\n  refused --- r{i}",
                    mermaid_escape(&format!("[{}] {} — {}", r.rule, r.reason, r.remedy))
                );
            }
            s
        }
        Format::Dot => {
            let mut s = format!("digraph {} {{\n", dot_quote(refusals.release.as_str()));
            s.push_str("  node [shape=box];\n");
            let _ = writeln!(
                s,
                "  refused [label={}];",
                dot_quote(&format!("release {} is refused", refusals.release))
            );
            for (i, r) in reasons.iter().enumerate() {
                let _ = writeln!(
                    s,
                    "  r{i} [label={}];\n  refused -> r{i};",
                    dot_quote(&format!("[{}] {}\nremedy: {}", r.rule, r.reason, r.remedy))
                );
            }
            s.push_str("}\n");
            s
        }
    }
}

fn refusal_text(refusals: &Refusals, reasons: &[&Refusal]) -> String {
    let mut s = String::new();
    let n = reasons.len();
    let _ = writeln!(
        s,
        "release {} is refused: {n} reason{}",
        refusals.release,
        if n == 1 { "" } else { "s" }
    );
    let _ = writeln!(s, "catalog {}", refusals.catalog_hash);
    for (i, r) in reasons.iter().enumerate() {
        s.push('\n');
        match &r.env {
            Some(env) => {
                let _ = writeln!(s, "{}. [{}] in {env}", i + 1, r.rule);
            }
            None => {
                let _ = writeln!(s, "{}. [{}]", i + 1, r.rule);
            }
        }
        let _ = writeln!(s, "   {}", r.reason);
        let _ = writeln!(s, "   remedy: {}", r.remedy);
    }
    s
}

fn label(step: &Step) -> String {
    match &step.version {
        Some(v) => format!("{} {v}", step.id),
        None => step.id.clone(),
    }
}

fn text(plan: &Plan) -> String {
    let index: BTreeMap<&str, &Step> = plan.steps.iter().map(|s| (s.id.as_str(), s)).collect();
    let show = |id: &str| {
        let mut text = index.get(id).map_or_else(|| id.to_owned(), |s| label(s));
        if plan.point_of_no_return(id).is_some() {
            text.push_str("  [point of no return]");
        }
        text
    };
    let mut s = String::new();
    let _ = writeln!(s, "release {}", plan.release);
    let _ = writeln!(s, "catalog {}", plan.catalog_hash);
    let _ = writeln!(
        s,
        "{} steps in {} waves, critical path of {} steps, {} edges{}",
        plan.steps.len(),
        plan.waves.len(),
        plan.critical_path.len(),
        plan.edges.len(),
        if plan.external_edges.is_empty() {
            String::new()
        } else {
            format!(", {} waits on other releases", plan.external_edges.len())
        }
    );

    s.push_str("\nwaves (steps of one wave may run together)\n");
    let width = plan.waves.len().to_string().len();
    for (i, wave) in plan.waves.iter().enumerate() {
        for (j, id) in wave.iter().enumerate() {
            if j == 0 {
                let _ = writeln!(s, "  {:>width$}. {}", i + 1, show(id));
            } else {
                let _ = writeln!(s, "  {:>width$}  {}", "", show(id));
            }
        }
    }

    s.push_str("\ncritical path\n");
    for (i, id) in plan.critical_path.iter().enumerate() {
        let arrow = if i == 0 { "  " } else { "  -> " };
        let _ = writeln!(s, "{arrow}{}", show(id));
    }

    if !plan.points_of_no_return.is_empty() {
        s.push_str("\npoints of no return (a rollback requested once one has started holds the release instead)\n");
        for p in &plan.points_of_no_return {
            let _ = writeln!(s, "  {}", p.step);
            let _ = writeln!(s, "    {}", p.reason);
            if let Some(a) = &p.approval {
                let _ = writeln!(s, "    approved first: {a}");
            }
        }
    }

    let mut waits: BTreeMap<&str, Vec<&Edge>> = BTreeMap::new();
    for e in &plan.edges {
        waits.entry(e.to.as_str()).or_default().push(e);
    }
    let mut external: BTreeMap<&str, Vec<&railyard_core::ExternalEdge>> = BTreeMap::new();
    for e in &plan.external_edges {
        external.entry(e.to.as_str()).or_default().push(e);
    }
    s.push_str("\nwhy each step waits\n");
    for id in plan.waves.iter().flatten() {
        let (inner, outer) = (waits.get(id.as_str()), external.get(id.as_str()));
        if inner.is_none() && outer.is_none() {
            continue;
        }
        let _ = writeln!(s, "  {}", show(id));
        for e in inner.into_iter().flatten() {
            let _ = writeln!(s, "    after {} [{}] {}", e.from, e.rule, e.reason);
        }
        for e in outer.into_iter().flatten() {
            let _ = writeln!(
                s,
                "    after {} of {} [{}] {}",
                e.from, e.release, e.rule, e.reason
            );
        }
    }
    s
}

fn json(plan: &Plan) -> String {
    let mut s = serde_json::to_string_pretty(plan).expect("a plan always serializes");
    s.push('\n');
    s
}

fn mermaid_escape(text: &str) -> String {
    text.replace('"', "#quot;")
}

fn mermaid(plan: &Plan) -> String {
    let node: BTreeMap<&str, usize> = plan
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.as_str(), i))
        .collect();
    let mut s = String::from("flowchart LR\n");
    let mut env: Option<&str> = None;
    for (i, step) in plan.steps.iter().enumerate() {
        if env != Some(step.env.as_str()) {
            if env.is_some() {
                s.push_str("  end\n");
            }
            let _ = writeln!(s, "  subgraph {}", step.env);
            env = Some(step.env.as_str());
        }
        let text = match &step.version {
            Some(v) => format!("{} {} {v}", step.action.as_str(), step.target),
            None => format!("{} {}", step.action.as_str(), step.target),
        };
        if plan.point_of_no_return(&step.id).is_some() {
            let _ = writeln!(
                s,
                "    s{i}[\"{}\"]:::ponr",
                mermaid_escape(&format!("{text} (point of no return)"))
            );
        } else {
            let _ = writeln!(s, "    s{i}[\"{}\"]", mermaid_escape(&text));
        }
    }
    if env.is_some() {
        s.push_str("  end\n");
    }
    for e in &plan.edges {
        let _ = writeln!(
            s,
            "  s{} -->|{}| s{}",
            node[e.from.as_str()],
            e.rule,
            node[e.to.as_str()]
        );
    }
    if !plan.points_of_no_return.is_empty() {
        s.push_str("  classDef ponr stroke:#c00,stroke-width:3px\n");
        for p in &plan.points_of_no_return {
            let _ = writeln!(
                s,
                "  %% point of no return {}: {}",
                p.step,
                p.reason.replace('\n', " ")
            );
        }
    }
    let mut externals: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for e in &plan.external_edges {
        let n = externals.len();
        let x = *externals
            .entry((e.release.as_str(), e.from.as_str()))
            .or_insert(n);
        if x == n {
            let _ = writeln!(
                s,
                "  x{x}[\"{}\"]",
                mermaid_escape(&format!("{}: {}", e.release, e.from))
            );
        }
        let _ = writeln!(s, "  x{x} -.->|{}| s{}", e.rule, node[e.to.as_str()]);
    }
    s
}

fn dot_quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn dot(plan: &Plan) -> String {
    let mut s = format!("digraph {} {{\n", dot_quote(plan.release.as_str()));
    s.push_str("  rankdir=LR;\n  node [shape=box];\n");
    let mut by_env: Vec<(&str, Vec<&Step>)> = Vec::new();
    for step in &plan.steps {
        match by_env.last_mut() {
            Some((env, list)) if *env == step.env.as_str() => list.push(step),
            _ => by_env.push((step.env.as_str(), vec![step])),
        }
    }
    for (env, steps) in by_env {
        let _ = writeln!(s, "  subgraph {} {{", dot_quote(&format!("cluster_{env}")));
        let _ = writeln!(s, "    label={};", dot_quote(env));
        for step in steps {
            let text = match &step.version {
                Some(v) => format!("{} {}\n{v}", step.action.as_str(), step.target),
                None => format!("{} {}", step.action.as_str(), step.target),
            };
            match plan.point_of_no_return(&step.id) {
                Some(p) => {
                    let _ = writeln!(
                        s,
                        "    {} [label={}, color=red, penwidth=3, tooltip={}];",
                        dot_quote(&step.id),
                        dot_quote(&format!("{text}\npoint of no return")),
                        dot_quote(&p.reason)
                    );
                }
                None => {
                    let _ = writeln!(
                        s,
                        "    {} [label={}];",
                        dot_quote(&step.id),
                        dot_quote(&text)
                    );
                }
            }
        }
        s.push_str("  }\n");
    }
    for e in &plan.edges {
        let _ = writeln!(
            s,
            "  {} -> {} [label={}, tooltip={}];",
            dot_quote(&e.from),
            dot_quote(&e.to),
            dot_quote(&e.rule),
            dot_quote(&e.reason)
        );
    }
    for e in &plan.external_edges {
        let from = format!("{}/{}", e.release, e.from);
        let _ = writeln!(
            s,
            "  {} [label={}, style=dashed];\n  {} -> {} [label={}, tooltip={}, style=dashed];",
            dot_quote(&from),
            dot_quote(&format!("{}\n{}", e.release, e.from)),
            dot_quote(&from),
            dot_quote(&e.to),
            dot_quote(&e.rule),
            dot_quote(&e.reason)
        );
    }
    s.push_str("}\n");
    s
}

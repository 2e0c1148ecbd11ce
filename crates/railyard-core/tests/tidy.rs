//! House rules the compiler does not check: every Rust source file in the workspace starts
//! with a `//!` comment saying what it is for (rust-analyzer's tidy test does the same).

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if name == "target" || name == "snapshots" || name.to_string_lossy().starts_with('.') {
            continue;
        }
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_rust_file_starts_with_a_module_doc() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut files = Vec::new();
    rust_files(&root.join("crates"), &mut files);
    rust_files(&root.join("tests"), &mut files);
    let missing: Vec<String> = files
        .iter()
        .filter(|f| {
            !std::fs::read_to_string(f)
                .unwrap_or_default()
                .trim_start()
                .starts_with("//!")
        })
        .map(|f| f.strip_prefix(&root).unwrap_or(f).display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "these files need a leading `//!` doc saying what they are for: {missing:#?}"
    );
}

/// The planning core is pure (issue 15, STYLE "one crate per side effect"): `railyard-plan`
/// — and so `railyard plan`'s planning — links no NATS, sled or tokio code. Checked on the
/// resolved dependency tree, so a transitive dependency counts too.
#[test]
fn the_planning_core_links_no_nats_sled_or_tokio() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = std::process::Command::new(cargo)
        .current_dir(&root)
        .args([
            "tree",
            "--offline",
            "-p",
            "railyard-plan",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .output()
        .expect("run cargo tree");
    assert!(
        output.status.success(),
        "cargo tree -p railyard-plan failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let tree = String::from_utf8_lossy(&output.stdout);
    let crates: Vec<&str> = tree
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    assert!(
        crates.contains(&"railyard-core") && crates.contains(&"petgraph"),
        "cargo tree -p railyard-plan did not list the planner's own dependencies:\n{tree}"
    );
    let forbidden: Vec<&str> = crates
        .iter()
        .copied()
        .filter(|name| ["async-nats", "sled", "tokio"].contains(name))
        .collect();
    assert!(
        forbidden.is_empty(),
        "railyard-plan must stay pure, but its dependency tree has {forbidden:?}; keep IO in railyard-planner (the service shell):\n{tree}"
    );
}

/// Step ids and targets are read by one parser (`railyard_core::step::StepId`, issue 15): no
/// crate splits a text on `:` or `@` by hand, except the files listed here, each for text
/// that is not a step id.
#[test]
fn nothing_outside_core_splits_step_ids_by_hand() {
    const ALLOWED: &[(&str, &str)] = &[
        (
            "crates/railyard-core/",
            "the one parser, and its own other formats",
        ),
        (
            "crates/railyard-audit/src/record.rs",
            "the old JSON facets, kept as a test's reference",
        ),
        (
            "crates/railyard/src/audit_cli.rs",
            "server-sent event fields (`id: 7`)",
        ),
        ("crates/railyard-bus/src/bus.rs", "a NATS URL's user info"),
        (
            "crates/railyard-testkit/src/slack.rs",
            "a Slack message's text",
        ),
        (
            "crates/railyard-notify/tests/owners.rs",
            "a Slack message's text",
        ),
    ];
    const SPLITS: &[&str] = &[
        "split(':')",
        "splitn(2, ':')",
        "splitn(3, ':')",
        "rsplit(':')",
        "split_once(':')",
        "rsplit_once(':')",
        "split('@')",
        "rsplit('@')",
        "split_once('@')",
        "rsplit_once('@')",
    ];
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut files = Vec::new();
    rust_files(&root.join("crates"), &mut files);
    rust_files(&root.join("tests"), &mut files);
    let mut found = Vec::new();
    for file in &files {
        let relative = file
            .strip_prefix(&root)
            .unwrap_or(file)
            .to_string_lossy()
            .replace('\\', "/");
        if ALLOWED
            .iter()
            .any(|(prefix, _)| relative.starts_with(prefix))
        {
            continue;
        }
        let text = std::fs::read_to_string(file).unwrap_or_default();
        for (number, line) in text.lines().enumerate() {
            if SPLITS.iter().any(|split| line.contains(split)) {
                found.push(format!("{relative}:{}: {}", number + 1, line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "read step ids and targets with railyard_core::step::StepId::parse (or Target::parse) instead of splitting them by hand; if the text is not a step id, list the file in ALLOWED with what it splits:\n{}",
        found.join("\n")
    );
}

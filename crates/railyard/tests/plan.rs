//! `railyard plan` as a user runs it on the demo estate: exit 0 with a plan, 2 with every
//! refusal and its remedy, 1 when an input cannot be read; the same input gives
//! byte-identical output in every format.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/examples")
}

fn plan(release: &str, format: &str) -> Output {
    let dir = examples();
    Command::new(env!("CARGO_BIN_EXE_railyard"))
        .arg("plan")
        .arg("--catalog")
        .arg(dir.join("railyard.toml"))
        .arg("--release")
        .arg(dir.join(release))
        .arg("--inventory")
        .arg(dir.join("inventory.json"))
        .args(["--format", format])
        .output()
        .expect("railyard runs")
}

#[test]
fn a_safe_release_is_planned_identically_every_time() {
    for format in ["text", "json", "mermaid", "dot"] {
        let first = plan("release-orders-v3.toml", format);
        assert_eq!(
            first.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&first.stderr)
        );
        let second = plan("release-orders-v3.toml", format);
        assert_eq!(
            first.stdout, second.stdout,
            "{format} output is byte-identical"
        );
    }
    let json: serde_json::Value =
        serde_json::from_slice(&plan("release-orders-v3.toml", "json").stdout).unwrap();
    for key in [
        "release",
        "catalog_hash",
        "steps",
        "edges",
        "waves",
        "critical_path",
    ] {
        assert!(json.get(key).is_some(), "the JSON plan has {key}");
    }
    let edges = json["edges"].as_array().unwrap();
    assert!(
        edges
            .iter()
            .all(|e| !e["reason"].as_str().unwrap().is_empty()),
        "every edge says why"
    );
    assert!(
        edges.iter().any(|e| e["rule"] == "queue"
            && e["from"] == "staging:verify:billing-worker"
            && e["to"] == "staging:deploy:orders-api"),
        "billing-worker reads v3 before orders-api emits it"
    );
}

#[test]
fn an_unsafe_release_is_refused_with_remedies_and_exit_2() {
    let out = plan("release-orders-v4-unsafe.toml", "text");
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("is refused"), "{text}");
    assert!(
        text.contains("email-worker 3.1.0 runs in production and reads orders-events 1..=2"),
        "{text}"
    );
    assert!(
        text.contains("remedy: ship an email-worker that reads orders-events"),
        "{text}"
    );
}

#[test]
fn an_unreadable_input_exits_1_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("release.toml");
    std::fs::write(&bad, "id = \"rel 1\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_railyard"))
        .arg("plan")
        .arg("--catalog")
        .arg(examples().join("railyard.toml"))
        .arg("--release")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("release.id: release id \"rel 1\" is not valid"),
        "{stderr}"
    );
    let missing = Command::new(env!("CARGO_BIN_EXE_railyard"))
        .args([
            "plan",
            "--catalog",
            "/nonexistent/railyard.toml",
            "--release",
        ])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("cannot read /nonexistent/railyard.toml")
    );
}

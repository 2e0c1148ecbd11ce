//! `--help` tells the truth about the environment: every variable a service reads appears in
//! its help (found by scanning the sources for the names), and a flag with an environment
//! fallback is not shown as required.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

fn help(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_railyard"))
        .args(args)
        .arg("--help")
        .output()
        .expect("railyard runs");
    assert!(out.status.success(), "{args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// Every `"RAILYARD_…"`, `"OTEL_…"` and `"NATS_SERVER_BIN"` string literal under `dir`.
fn names_in(dir: &Path, names: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            names_in(&path, names);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            for (at, _) in text.match_indices('"') {
                let rest = &text[at + 1..];
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                    .collect();
                let known = ["RAILYARD_", "OTEL_", "NATS_SERVER_BIN"];
                if known.iter().any(|prefix| name.starts_with(prefix)) {
                    names.insert(name.trim_end_matches('_').to_owned());
                }
            }
        }
    }
}

#[test]
fn every_variable_the_stack_reads_is_in_dev_help() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut names = BTreeSet::new();
    for entry in std::fs::read_dir(&crates).unwrap() {
        let src = entry.unwrap().path().join("src");
        if src.is_dir() {
            names_in(&src, &mut names);
        }
    }
    // Names that are not variables `railyard dev` reads, and why.
    let not_read_by_dev = [
        // Streams, not variables.
        "RAILYARD_EVENTS",
        "RAILYARD_WORK",
        "RAILYARD_DLQ",
        "RAILYARD_ADVISORIES",
        "RAILYARD_REJECTED",
        // Given to deploy commands (RAILYARD_STEP, RAILYARD_SERVICE, ...), not read.
        "RAILYARD_STEP",
        "RAILYARD",
        // Examples of RAILYARD_SECRET_<NAME> in docs and tests.
        "RAILYARD_SECRET_DEPLOY_TOKEN",
        // The prefix of the NATS credential variables.
        "RAILYARD_NATS",
        // Client commands (`railyard release ...`, `railyard approve ...`) and `admin init`.
        "RAILYARD_URL",
        "RAILYARD_TOKEN",
        "RAILYARD_NATS_REPLICAS",
    ];
    let text = help(&["dev"]);
    let missing: Vec<&String> = names
        .iter()
        .filter(|name| !not_read_by_dev.contains(&name.as_str()) && !text.contains(name.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "railyard dev --help does not mention {missing:?}:\n{text}"
    );
    assert!(
        names.contains("RAILYARD_GITHUB_WEBHOOK_SECRET"),
        "{names:?}"
    );
}

#[test]
fn each_service_lists_what_it_reads() {
    let common = [
        "RAILYARD_NATS_USER",
        "RAILYARD_NATS_PASSWORD",
        "RUST_LOG",
        "RAILYARD_TRACE_FILTER",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ];
    let cases: [(&[&str], &[&str]); 5] = [
        (
            &["intake"],
            &[
                "RAILYARD_GITHUB_WEBHOOK_SECRET",
                "RAILYARD_GITLAB_WEBHOOK_TOKEN",
                "RAILYARD_INTAKE_BODY_LIMIT",
                "RAILYARD_TOKENS_FILE",
            ],
        ),
        (&["promoter"], &["RAILYARD_SECRET_", "RAILYARD_TOKENS_FILE"]),
        (
            &["notify"],
            &[
                "RAILYARD_SLACK_TOKEN",
                "RAILYARD_SLACK_API_URL",
                "RAILYARD_REPLICA_ID",
                "RAILYARD_LEADER_TTL",
            ],
        ),
        (
            &["planner"],
            &[
                "RAILYARD_CATALOG",
                "RAILYARD_REPLICA_ID",
                "RAILYARD_LEADER_TTL",
            ],
        ),
        (
            &["audit", "serve"],
            &[
                "RAILYARD_TOKENS_FILE",
                "RAILYARD_REPLICA_ID",
                "RAILYARD_LEADER_TTL",
            ],
        ),
    ];
    for (command, own) in cases {
        let text = help(command);
        for name in own.iter().chain(&common) {
            assert!(
                text.contains(name),
                "railyard {command:?} --help lacks {name}:\n{text}"
            );
        }
    }
}

#[test]
fn a_token_from_the_environment_is_not_shown_as_required() {
    let text = help(&["release", "submit"]);
    let usage = text.lines().find(|l| l.starts_with("Usage:")).unwrap();
    assert!(!usage.contains("--token"), "{usage}");
    assert!(text.contains("[env: RAILYARD_TOKEN"), "{text}");
}

/// `railyard github` and `railyard cdevents` list their variables, and without them refuse to
/// start with what to set (before reaching for NATS).
#[test]
fn the_feedback_services_say_what_to_configure() {
    for (command, variables, refusal) in [
        (
            "github",
            &[
                "RAILYARD_GITHUB_TOKEN",
                "RAILYARD_GITHUB_APP_ID",
                "RAILYARD_UI_URL",
            ][..],
            "GitHub is not configured: set RAILYARD_GITHUB_TOKEN",
        ),
        (
            "cdevents",
            &["RAILYARD_CDEVENTS_SINK_URL", "RAILYARD_CDEVENTS_SUBJECT"][..],
            "set RAILYARD_CDEVENTS_SINK_URL or RAILYARD_CDEVENTS_SUBJECT",
        ),
    ] {
        let text = help(&[command]);
        for variable in variables {
            assert!(
                text.contains(variable),
                "{command} --help lacks {variable}:\n{text}"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let catalog =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/examples/railyard.toml");
        let mut run = Command::new(env!("CARGO_BIN_EXE_railyard"));
        run.arg(command)
            .arg("--store")
            .arg(dir.path().join("store"))
            .env("RAILYARD_CATALOG", &catalog)
            .env("RAILYARD_NATS_URL", "nats://127.0.0.1:1");
        for (name, _) in std::env::vars() {
            if name.starts_with("RAILYARD_GITHUB") || name.starts_with("RAILYARD_CDEVENTS") {
                run.env_remove(name);
            }
        }
        let out = run.output().expect("railyard runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{command}: {out:?}");
        assert!(stderr.contains(refusal), "{command}: {stderr}");
    }
}

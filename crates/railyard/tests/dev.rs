//! `railyard dev` as a user runs it: it starts its own nats-server, serves the ops routes,
//! and after SIGINT exits 0 with no process left behind.

mod common;

use std::path::Path;
use std::process::Command;

use common::{Dev, alive, http, http_get, interrupt, start_dev};

#[test]
fn dev_starts_its_own_nats_serves_and_leaves_nothing_behind_after_sigint() {
    let data = tempfile::tempdir().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_railyard"));
    command
        .args(["dev", "--listen", "127.0.0.1:0", "--catalog"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/examples/railyard.toml"))
        .arg("--data-dir")
        .arg(data.path());
    let Dev {
        child,
        addr,
        ready,
        before: _,
    } = start_dev(command);
    let nats_pid: u32 = ready
        .split("nats_pid=")
        .nth(1)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(alive(nats_pid), "the embedded nats-server runs");
    assert!(
        data.path().join("nats").is_dir(),
        "JetStream stores under the data dir"
    );

    assert_eq!(http_get(&addr, "/healthz").0, 200);
    let (status, body) = http_get(&addr, "/readyz");
    assert_eq!(status, 200, "{body}");
    let (status, metrics) = http_get(&addr, "/metrics");
    assert_eq!(status, 200);
    assert!(metrics.contains("railyard_nats_up 1"), "{metrics}");

    interrupt(child);
    assert!(
        !alive(nats_pid),
        "the embedded nats-server {nats_pid} was stopped and reaped"
    );
}

#[test]
fn dev_without_a_catalog_serves_the_example_and_admits_a_tokens_file() {
    let data = tempfile::tempdir().unwrap();
    let cwd = tempfile::tempdir().unwrap();
    // A tokens file with one publisher of our own, as `railyard token create` prints it.
    let created = Command::new(env!("CARGO_BIN_EXE_railyard"))
        .args([
            "token",
            "create",
            "--identity",
            "carol",
            "--roles",
            "publisher",
        ])
        .output()
        .expect("railyard token create runs");
    assert!(created.status.success(), "{created:?}");
    let printed = String::from_utf8(created.stdout).unwrap();
    let carol = printed
        .split_whitespace()
        .find(|word| word.starts_with("ry_"))
        .expect("the token is printed")
        .to_owned();
    let entry = &printed[printed.find("[[tokens]]").expect("the tokens-file line")..];
    let tokens_file = cwd.path().join("tokens.toml");
    std::fs::write(&tokens_file, entry).unwrap();

    let mut command = Command::new(env!("CARGO_BIN_EXE_railyard"));
    command
        .current_dir(cwd.path())
        .args(["dev", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path())
        .env("RAILYARD_TOKENS_FILE", &tokens_file)
        .env_remove("RAILYARD_CATALOG");
    let Dev {
        child,
        addr,
        ready: _,
        before,
    } = start_dev(command);
    assert!(
        before.iter().any(
            |l| l.starts_with("no railyard.toml here: serving the bundled example estate from")
        ),
        "{before:?}"
    );
    let example = data.path().join("example");
    for file in ["railyard.toml", "inventory.json", "release-orders-v3.toml"] {
        assert!(
            example.join(file).is_file(),
            "{file} is written for the user to try"
        );
    }

    // carol's token from the file is admitted next to the dev tokens, and acts as carol.
    let release = std::fs::read_to_string(example.join("release-orders-v3.toml")).unwrap();
    let (status, body) = http(&addr, "POST", "/v1/releases", Some(&carol), &release);
    assert_eq!(status, 202, "{body}");
    assert!(body.contains("accepted"), "{body}");
    let (status, body) = http(&addr, "GET", "/v1/releases", Some(&carol), "");
    assert_eq!(status, 200, "{body}");
    let (status, _) = http(
        &addr,
        "POST",
        "/v1/releases",
        Some("ry_not-a-token"),
        &release,
    );
    assert_eq!(status, 401);
    interrupt(child);
}

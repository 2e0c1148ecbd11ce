//! What an operator observes of a running Railyard: `railyard dev` with `--log-format json`
//! and `OTEL_EXPORTER_OTLP_ENDPOINT` set runs a release, then `/metrics` shows the release
//! metrics, each stream reader's events and lag and the dead letters; the JSON log lines carry
//! the release id from their spans; the spans reach the OTLP endpoint by the time the process
//! exits. And every single-service command serves `/metrics` with the same families.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use common::{http, http_get, nats_bin};

const CATALOG: &str = r#"
[[environments]]
name = "staging"

[services.api]
owner = "team-api"
deploy = { kind = "simulated", duration = "0s" }
"#;

const RELEASE: &str = r#"
id = "rel-observed"
[[changes]]
service = "api"
version = "1.0.0"
commit = "a1a1a1a"
branch = "main"
"#;

/// A stand-in OTLP/HTTP collector: records the request line of every request, answers 200.
fn collector() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let mut length = 0usize;
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
                    break;
                }
                if let Some(value) = header.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            record.lock().unwrap().push(line.trim().to_owned());
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        }
    });
    (url, seen)
}

/// Lines of a child's pipe, collected by a thread that wakes whoever waits for one.
#[derive(Default)]
struct Lines {
    lines: Mutex<Vec<String>>,
    added: Condvar,
}

impl Lines {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.lines.lock().unwrap()
    }

    /// Waits (woken by each new line, at most `timeout`) until `check` finds what it wants.
    fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        check: impl Fn(&[String]) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        let mut lines = self.lock();
        loop {
            if let Some(value) = check(&lines) {
                return value;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "{what} within {timeout:?}");
            lines = self.added.wait_timeout(lines, left).unwrap().0;
        }
    }
}

fn collect(pipe: impl Read + Send + 'static) -> Arc<Lines> {
    let lines = Arc::new(Lines::default());
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            sink.lock().push(line);
            sink.added.notify_all();
        }
    });
    lines
}

/// Polls another process's `/metrics` (bounded, every 100 ms): counters have no feed to follow.
/// Everything with one (its lines, a release's events) is waited for through it instead.
fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "{what} within {timeout:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A child process killed on drop, so a failing assertion leaves nothing running.
struct Running(Option<Child>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn stop(mut running: Running, what: &str) {
    let mut child = running.0.take().expect("running");
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
        .unwrap_or_else(|_| panic!("{what} exits within 30s of SIGINT"))
        .unwrap();
    assert!(
        status.success(),
        "{what} exits 0 after SIGINT, got {status}"
    );
}

/// `value` of the sample `name` in Prometheus text, when present.
fn sample(metrics: &str, name: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let (key, value) = line.rsplit_once(' ')?;
        (key == name).then(|| value.parse().ok())?
    })
}

#[test]
fn dev_shows_a_release_in_metrics_json_logs_and_exported_traces() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = dir.path().join("railyard.toml");
    std::fs::write(&catalog, CATALOG).unwrap();
    let (otlp, exported) = collector();
    let mut child = Command::new(env!("CARGO_BIN_EXE_railyard"))
        .args(["--log-format", "json", "dev", "--listen", "127.0.0.1:0"])
        .arg("--catalog")
        .arg(&catalog)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("NATS_SERVER_BIN", nats_bin())
        .env("RUST_LOG", "info")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("railyard binary runs");
    let stdout = collect(child.stdout.take().unwrap());
    let stderr = collect(child.stderr.take().unwrap());
    let child = Running(Some(child));

    let (addr, token) = stdout.wait_for(
        "the ready line and the tokens",
        Duration::from_secs(60),
        |lines| {
            let addr = lines
                .iter()
                .find_map(|l| l.strip_prefix("railyard dev ready: http://"))?
                .split_whitespace()
                .next()?
                .to_owned();
            let token = lines
                .iter()
                .find(|l| l.contains("(publisher):"))?
                .rsplit(' ')
                .next()?
                .to_owned();
            Some((addr, token))
        },
    );

    let (status, body) = http(&addr, "POST", "/v1/releases", Some(&token), RELEASE);
    assert_eq!(status, 202, "{body}");

    let metrics = wait_for(
        "the release completed in /metrics",
        Duration::from_secs(60),
        || {
            let (_, metrics) = http_get(&addr, "/metrics");
            (sample(
                &metrics,
                "railyard_releases_ended_total{outcome=\"completed\"}",
            ) == Some(1.0))
            .then_some(metrics)
        },
    );
    for name in [
        "railyard_events_total{type=\"release.requested\"}",
        "railyard_events_total{type=\"step.succeeded\"}",
        "railyard_reader_events_total{reader=\"planner\"}",
        "railyard_reader_events_total{reader=\"audit\"}",
        "railyard_reader_messages_total{reader=\"release-metrics\"}",
        "railyard_step_duration_seconds_count{action=\"deploy\",result=\"succeeded\"}",
    ] {
        let value = sample(&metrics, name).unwrap_or_else(|| panic!("{name} in {metrics}"));
        assert!(value > 0.0, "{name} = {value}");
    }
    for name in [
        "railyard_reader_pending{reader=\"planner\"}",
        "railyard_reader_pending{reader=\"audit\"}",
        "railyard_dead_letters",
        "railyard_gate_failures_total",
    ] {
        assert!(sample(&metrics, name).is_some(), "{name} in {metrics}");
    }

    stop(child, "railyard dev");

    // JSON lines, the planner's decision among them, naming the release through its span.
    let lines = stderr.lock().clone();
    let parsed: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: not JSON: {l}")))
        .collect();
    let planned = parsed
        .iter()
        .find(|l| l["message"] == "planned")
        .unwrap_or_else(|| panic!("the planner's decision is logged: {lines:#?}"));
    assert_eq!(planned["span"]["name"], "planner.decide", "{planned}");
    assert_eq!(planned["span"]["release"], "rel-observed", "{planned}");
    assert!(
        parsed.iter().any(
            |l| l["span"]["name"] == "intake.request" && l["span"]["release"] == "rel-observed"
        ),
        "intake logs inside its request span, with the release: {lines:#?}"
    );

    // The batch exporter flushed on exit.
    let exported = exported.lock().unwrap().clone();
    assert!(
        exported.iter().any(|l| l.starts_with("POST /v1/traces ")),
        "spans were exported to {otlp}: {exported:?}"
    );
}

#[test]
fn every_service_command_serves_its_metrics() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let nats = runtime
        .block_on(railyard_testkit::NatsServer::start())
        .expect("nats-server starts");
    // The streams exist before the services start (`railyard admin init` in production).
    runtime.block_on(async {
        let bus = railyard_bus::Bus::connect(&nats.url(), railyard_bus::BusConfig::default())
            .await
            .expect("connect");
        bus.ensure_topology().await.expect("topology");
        bus.close().await.expect("close");
    });
    let dir = tempfile::tempdir().unwrap();
    let catalog = dir.path().join("railyard.toml");
    std::fs::write(&catalog, CATALOG).unwrap();
    // (command, its arguments, whether it reads the catalog, its own stream readers)
    let commands: [(&str, &[&str], bool, &[&str]); 5] = [
        ("intake", &["intake"], true, &[]),
        ("planner", &["planner", "--store"], true, &["planner"]),
        ("promoter", &["promoter", "--store"], true, &[]),
        ("audit", &["audit", "serve", "--store"], false, &["audit"]),
        ("notify", &["notify", "--store"], true, &["notify"]),
    ];
    for (name, args, reads_catalog, readers) in commands {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let mut command = Command::new(env!("CARGO_BIN_EXE_railyard"));
        command.args(args);
        if args.last() == Some(&"--store") {
            command.arg(dir.path().join(name));
        }
        if reads_catalog {
            command.arg("--catalog").arg(&catalog);
        }
        if name == "notify" {
            command.args(["--slack-webhook", "#releases=http://127.0.0.1:9/"]);
        }
        command
            .args(["--nats-url", &nats.url(), "--listen", &addr])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        let child = Running(Some(command.spawn().expect("railyard binary runs")));
        let metrics = wait_for(
            &format!("railyard {name} serving /metrics with its readers"),
            Duration::from_secs(30),
            || {
                drop(TcpStream::connect(&addr).ok()?);
                let (status, metrics) = http_get(&addr, "/metrics");
                let ready = status == 200
                    && metrics.contains("railyard_reader_pending{reader=\"release-metrics\"}")
                    && readers.iter().all(|reader| {
                        metrics.contains(&format!("railyard_reader_pending{{reader=\"{reader}\"}}"))
                    });
                ready.then_some(metrics)
            },
        );
        // Labelled families (events by type, releases by outcome, step durations) show once
        // they have a sample: the dev test above sees them after a release.
        for family in [
            "railyard_nats_up 1",
            "railyard_dead_letters 0",
            // Any value: a service may record an event (the planner its catalog) before the
            // scrape.
            "railyard_reader_events_total{reader=\"release-metrics\"} ",
            "railyard_reader_pending{reader=\"release-metrics\"} ",
            "railyard_gate_failures_total 0",
        ] {
            assert!(
                metrics.contains(family),
                "railyard {name}: {family} in {metrics}"
            );
        }
        stop(child, &format!("railyard {name}"));
    }
    drop(nats);
}

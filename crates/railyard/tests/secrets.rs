//! A secret the promoter holds reaches no record. `railyard dev` runs two releases whose
//! steps use `{secret:TOKEN}` and fail: a deploy command that prints the secret (as is, and
//! base64-encoded) and a gate whose URL carries it in its userinfo and query, against an
//! endpoint that echoes the request back. Then the secret, in every form, is looked for in
//! every byte under the data directory (the JetStream stores with every stream's messages,
//! every sled store), in the audit records as an auditor exports them, in the logs (JSON and
//! text, at debug level) and in every body the stand-in Slack received.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Dev, http, start_dev_logging_to};
use railyard_http::{Role, generate_token};

/// Characters that every encoding changes: `/`, `+`, `=`, `%`, `#`, a space.
const SECRET: &str = "Tk9#p/q+r=z%s3cr3t e2e";

/// Every form the secret could leak in.
fn forms() -> Vec<String> {
    let encoded: String = SECRET
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    vec![
        SECRET.to_owned(),
        "s3cr3t e2e".to_owned(),
        encoded.clone(),
        encoded.to_ascii_lowercase(),
        encoded.replace("%20", "+"),
        // base64 of the secret alone (as `printf %s "$1" | base64` prints it), without the
        // last characters that also depend on what follows.
        base64(SECRET.as_bytes())[..24].to_owned(),
    ]
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

/// Fails naming where a form of the secret was found.
fn assert_clean(place: &str, bytes: &[u8]) {
    for form in forms() {
        let found = bytes
            .windows(form.len())
            .any(|window| window == form.as_bytes());
        assert!(!found, "{form:?} (a form of the secret) is in {place}");
    }
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

const CATALOG: &str = r##"
[[environments]]
name = "production"

[services.orders-api]
owner = "team-orders"
secrets = ["TOKEN"]
deploy = { kind = "command", run = ["sh", "-c", "echo token=$1; printf %s \"$1\" | base64; echo \"env=$RAILYARD_SECRET_TOKEN\" >&2; exit 3", "deploy", "{secret:TOKEN}"] }

[services.billing]
owner = "team-billing"
deploy = { kind = "simulated", duration = "10ms" }
gates = [{ kind = "http", url = "http://ci:{secret:TOKEN}@GATE/health?token={secret:TOKEN}", expect_status = 200, json_pointer = "/echo", equals = "healthy" }]

[notify.slack]
default_channel = "#releases"
"##;

/// The stand-ins: a gate endpoint that answers 503 echoing the request (its URI and its
/// `Authorization` header), and a Slack webhook that keeps every body. Served from a thread
/// of their own for the life of the test.
fn stand_ins() -> (String, String, Arc<Mutex<Vec<String>>>) {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let kept = Arc::clone(&bodies);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let gate = tokio::net::TcpListener::bind(("127.0.0.1", 0))
                .await
                .unwrap();
            let slack = tokio::net::TcpListener::bind(("127.0.0.1", 0))
                .await
                .unwrap();
            tx.send((gate.local_addr().unwrap(), slack.local_addr().unwrap()))
                .unwrap();
            let echo = axum::Router::new().route(
                "/health",
                axum::routing::get(
                    |uri: axum::http::Uri, headers: axum::http::HeaderMap| async move {
                        let auth = headers
                            .get("authorization")
                            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                            .unwrap_or_default();
                        (
                            axum::http::StatusCode::SERVICE_UNAVAILABLE,
                            axum::Json(serde_json::json!({ "echo": format!("{uri} {auth}") })),
                        )
                    },
                ),
            );
            let hook = axum::Router::new().route(
                "/hook",
                axum::routing::post(move |body: String| {
                    let kept = Arc::clone(&kept);
                    async move {
                        kept.lock().unwrap().push(body);
                        "ok"
                    }
                }),
            );
            let _ = tokio::join!(axum::serve(gate, echo), axum::serve(slack, hook));
        });
    });
    let (gate, slack) = rx.recv().unwrap();
    (gate.to_string(), format!("http://{slack}/hook"), bodies)
}

/// A tokens file line for `role`, and the token.
fn token(identity: &str, role: Role) -> (String, String) {
    let (token, entry) = generate_token(identity, BTreeSet::from([role]), Vec::new());
    let line = format!(
        "[[tokens]]\nidentity = {:?}\nroles = [{:?}]\nsha256 = {:?}\n",
        entry.identity,
        role.as_str(),
        entry.sha256
    );
    (token, line)
}

/// Waits (bounded) until release `id` has stopped moving, and returns its status JSON.
fn settled(addr: &str, id: &str, token: &str) -> serde_json::Value {
    // The release's feed says when it stops; then its status is read once.
    let ends = [
        "release.completed",
        "release.rolled_back",
        "release.rejected",
        "release.cancelled",
        "release.held",
        "approval.denied",
    ];
    common::follow_until(
        addr,
        &format!("/v1/releases/{id}/events"),
        token,
        Duration::from_secs(90),
        |seen| ends.iter().any(|end| seen.contains(end)),
    );
    let (status, body) = http(addr, "GET", &format!("/v1/releases/{id}"), Some(token), "");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn a_secret_reaches_no_record(log_format: &str) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (gate, slack_url, slack_bodies) = stand_ins();
    std::fs::write(
        dir.path().join("railyard.toml"),
        CATALOG.replace("GATE", &gate),
    )
    .unwrap();
    let (publisher, publisher_line) = token("ci", Role::Publisher);
    let (auditor, auditor_line) = token("auditor", Role::Auditor);
    std::fs::write(
        dir.path().join("tokens.toml"),
        format!("{publisher_line}{auditor_line}"),
    )
    .unwrap();
    let logs_path = dir.path().join("dev.log");
    let logs = std::fs::File::create(&logs_path).unwrap();

    let mut command = Command::new(env!("CARGO_BIN_EXE_railyard"));
    command
        .current_dir(dir.path())
        .args(["--log-format", log_format, "dev", "--listen", "127.0.0.1:0"])
        .args(["--slack-pacing", "0s", "--slack-webhook"])
        .arg(format!("#releases={slack_url}"))
        .arg("--data-dir")
        .arg(&data)
        .arg("--catalog")
        .arg(dir.path().join("railyard.toml"))
        .env("RAILYARD_TOKENS_FILE", dir.path().join("tokens.toml"))
        .env("RAILYARD_SECRET_TOKEN", SECRET)
        .env("RUST_LOG", "debug");
    let Dev { child, addr, .. } = start_dev_logging_to(command, Stdio::from(logs));

    for (id, service, version) in [
        ("secret-deploy", "orders-api", "2.0.0"),
        ("secret-gate", "billing", "3.1.0"),
    ] {
        let release = format!(
            "id = \"{id}\"\n\n[[changes]]\nservice = \"{service}\"\nversion = \"{version}\"\n"
        );
        let (status, body) = http(&addr, "POST", "/v1/releases", Some(&publisher), &release);
        assert_eq!(status, 202, "{body}");
    }
    let deploy = settled(&addr, "secret-deploy", &auditor);
    let gated = settled(&addr, "secret-gate", &auditor);

    // The failures did happen and were recorded, redacted: the test is not vacuous.
    let (status, events) = http(
        &addr,
        "GET",
        "/v1/audit/events?release=secret-deploy",
        Some(&auditor),
        "",
    );
    assert_eq!(status, 200, "{events}");
    assert!(events.contains("token=***"), "{deploy}\n{events}");
    let (status, gates) = http(&addr, "GET", "/v1/audit/gates", Some(&auditor), "");
    assert_eq!(status, 200, "{gates}");
    assert!(gates.contains("status 503"), "{gated}\n{gates}");
    // The echoed query and the HTTP Basic credential (base64 of `ci:<secret>`) are masked.
    assert!(gates.contains("token=*** Basic Y2k6***"), "{gates}");

    // The audit records as an auditor exports them, every query, JSON and CSV.
    for query in [
        "events",
        "timeline",
        "changes",
        "actor",
        "approvals",
        "gates",
        "rejections",
        "report",
    ] {
        for format in ["json", "csv"] {
            let (status, body) = http(
                &addr,
                "GET",
                &format!("/v1/audit/{query}?format={format}&actor=promoter"),
                Some(&auditor),
                "",
            );
            assert!(status < 500, "{query} {format}: {status} {body}");
            assert_clean(
                &format!("GET /v1/audit/{query}?format={format}"),
                body.as_bytes(),
            );
        }
        let (_, body) = http(
            &addr,
            "GET",
            &format!("/v1/audit/{query}"),
            Some(&auditor),
            "",
        );
        assert_clean(&format!("GET /v1/audit/{query}"), body.as_bytes());
    }
    for id in ["secret-deploy", "secret-gate"] {
        let (_, body) = http(
            &addr,
            "GET",
            &format!("/v1/releases/{id}"),
            Some(&auditor),
            "",
        );
        assert_clean(&format!("GET /v1/releases/{id}"), body.as_bytes());
    }

    // Slack heard about both releases, and never the secret.
    let bodies = slack_bodies.lock().unwrap().clone();
    assert!(
        bodies.iter().any(|b| b.contains("secret-gate")),
        "{bodies:?}"
    );
    for body in &bodies {
        assert_clean("a Slack message", body.as_bytes());
    }

    common::interrupt(child);

    // Every byte on disk: the JetStream stores (every message of every stream) and every
    // sled store (audit, promoter, planner, notifier ledger).
    let stored = files(&data);
    assert!(
        stored
            .iter()
            .any(|p| p.to_string_lossy().contains("jetstream")),
        "{stored:?}"
    );
    for path in stored {
        let bytes = std::fs::read(&path).unwrap();
        assert_clean(&path.display().to_string(), &bytes);
    }

    // The logs, at debug level.
    let logs = std::fs::read(&logs_path).unwrap();
    assert!(
        String::from_utf8_lossy(&logs).contains("secret-gate"),
        "the logs speak of the releases"
    );
    assert_clean(&format!("the {log_format} logs"), &logs);
}

#[test]
fn a_secret_reaches_no_record_nor_json_log() {
    a_secret_reaches_no_record("json");
}

#[test]
fn a_secret_reaches_no_record_nor_text_log() {
    a_secret_reaches_no_record("text");
}

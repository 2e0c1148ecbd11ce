//! `just conformance`: feeds every file of the shared corpus through intake over real HTTP —
//! the CDEvents v0.4.1 and v0.5.1 conformance events (bare CDEvents with a publisher token)
//! and the GitHub payload examples (with `X-GitHub-Event` from their folder, a delivery id and
//! a computed `X-Hub-Signature-256`) — each against a fresh event stream and delivery bucket
//! on one nats-server (their ids repeat across files). Every input must be answered `202`
//! `accepted` or `ignored` with a reason. Prints one line per file and `N passed, M failed`.
//!
//! `cargo run -p railyard-intake --example conformance -- <corpus dir>`

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use railyard_bus::{Bus, BusConfig};
use railyard_core::Catalog;
use railyard_http::{Role, Tokens, generate_token};
use railyard_intake::{Intake, IntakeConfig, Secret};
use railyard_testkit::NatsServer;
use tokio_util::sync::CancellationToken;

const SECRET: &str = "conformance-webhook-secret";

/// A catalog that knows the corpus's repositories, artifacts and environments, so that its
/// events exercise the accepting paths as well as the ignoring ones.
const CATALOG: &str = r#"
[policy]
protected_branches = ["main", "master"]

[[environments]]
name = "dev"
[[environments]]
name = "test123"
[[environments]]
name = "prod1"
[[environments]]
name = "production"

[services.hello-world]
match = { repository = "https://github.com/Codertocat/Hello-World" }
deploy = { kind = "simulated", duration = "1s" }

[services.octo-repo]
match = { repository = "https://github.com/octo-org/octo-repo" }
required_suites = ["build"]
deploy = { kind = "simulated", duration = "1s" }

[services.myapp]
match = { artifact = "pkg:golang/mygit.com/myorg/myapp" }
deploy = { kind = "simulated", duration = "1s" }

[services.myapp-image]
match = { artifact = "pkg:oci/myapp" }
deploy = { kind = "simulated", duration = "1s" }
"#;

enum Input {
    CdEvent,
    GitHub { event: String },
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            collect(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "json") {
            out.push(path);
        }
    }
    Ok(())
}

fn classify(corpus: &Path, path: &Path) -> Option<Input> {
    let relative = path.strip_prefix(corpus).ok()?;
    let parts: Vec<&str> = relative.iter().filter_map(|p| p.to_str()).collect();
    match parts.as_slice() {
        ["cdevents", _, "conformance", _] => Some(Input::CdEvent),
        ["github", "payload-examples", _, event, _] => Some(Input::GitHub {
            event: (*event).to_owned(),
        }),
        _ => None,
    }
}

/// Deletes the event stream and the delivery bucket, then recreates the topology: a fresh
/// stream for the next file.
async fn fresh(server: &NatsServer) -> anyhow::Result<Bus> {
    let client = async_nats::connect(server.url()).await?;
    let js = async_nats::jetstream::new(client);
    for stream in ["RAILYARD_EVENTS", "KV_railyard-deliveries"] {
        // Absent on the first file.
        let _ = js.delete_stream(stream).await;
    }
    let bus = Bus::connect(&server.url(), BusConfig::default()).await?;
    bus.ensure_topology().await?;
    Ok(bus)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let corpus = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "../shared/corpus".to_owned()),
    );
    let mut files = Vec::new();
    collect(&corpus, &mut files)?;
    files.sort();
    let inputs: Vec<(PathBuf, Input)> = files
        .into_iter()
        .filter_map(|p| classify(&corpus, &p).map(|i| (p, i)))
        .collect();
    anyhow::ensure!(
        !inputs.is_empty(),
        "no corpus files under {}: pass the corpus directory",
        corpus.display()
    );

    let server = NatsServer::start().await?;
    let (token, entry) = generate_token("conformance", [Role::Publisher].into(), vec![]);
    let tokens = Tokens::from_entries(vec![entry])?;
    let catalog = Catalog::from_toml(CATALOG)?;
    let http = reqwest::Client::new();
    let (mut passed, mut failed) = (0usize, 0usize);
    let mut outcomes = std::collections::BTreeMap::<String, usize>::new();
    for (path, input) in &inputs {
        let bus = fresh(&server).await?;
        let mut config = IntakeConfig::new(catalog.clone(), tokens.clone());
        config.github_secret = Some(Secret::new(SECRET));
        let intake = Intake::new(config, bus.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let app = railyard_intake::router(intake);
        let server_task = tokio::spawn(
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(stop.clone().cancelled_owned())
            .into_future(),
        );
        let body = std::fs::read(path)?;
        let request = match input {
            Input::CdEvent => http
                .post(format!("http://{addr}/v1/cdevents"))
                .bearer_auth(&token)
                .header("content-type", "application/json"),
            Input::GitHub { event } => http
                .post(format!("http://{addr}/v1/webhooks/github"))
                .header("x-github-event", event)
                .header(
                    "x-github-delivery",
                    format!("conformance-{}", uuid::Uuid::new_v4()),
                )
                .header(
                    "x-hub-signature-256",
                    railyard_intake::github_signature(SECRET.as_bytes(), &body),
                )
                .header("content-type", "application/json"),
        };
        let response = tokio::time::timeout(
            std::time::Duration::from_secs(30),
            request.body(body).send(),
        )
        .await
        .context("intake did not answer within 30s")??;
        let status = response.status().as_u16();
        let answer: serde_json::Value = response.json().await.unwrap_or_default();
        stop.cancel();
        let _ = server_task.await;
        bus.close().await?;
        let outcome = answer["outcome"].as_str().unwrap_or_default();
        let reason = answer["reason"].as_str().unwrap_or_default();
        let shown = path.strip_prefix(&corpus).unwrap_or(path).display();
        if status == 202 && matches!(outcome, "accepted" | "ignored") && !reason.is_empty() {
            passed += 1;
            *outcomes.entry(outcome.to_owned()).or_default() += 1;
            println!("ok    {shown}: {outcome}: {reason}");
        } else {
            failed += 1;
            println!("FAIL  {shown}: {status} {answer}");
        }
    }
    let summary: Vec<String> = outcomes.iter().map(|(o, n)| format!("{n} {o}")).collect();
    println!(
        "\nconformance over {}: {} inputs ({})",
        corpus.display(),
        inputs.len(),
        summary.join(", ")
    );
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}

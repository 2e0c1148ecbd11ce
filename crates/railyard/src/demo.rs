//! `railyard demo`: the example shop of `deploy/examples/` carried end to end, for real — an
//! embedded NATS and every service in this process (intake, planner, two promotion workers,
//! audit), gates against health endpoints the demo serves itself, and everything driven
//! through the public HTTP interfaces with real tokens:
//!
//! 1. `orders-v3` is submitted, planned with its reasons, carried through staging, approved
//!    for production by alice, and completed;
//! 2. `pricing-6` passes staging, its production gate fails, and the workers roll it back;
//! 3. `orders-v4` is refused: running consumers cannot read the new message version;
//! 4. the production change report and `audit verify` close the story.
//!
//! It exits 0 when the story ran as told, 1 otherwise; `--keep-running` leaves the stack up
//! for the CLI afterwards.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use railyard_core::{Event, Inventory, Status};
use tokio::sync::mpsc;

use crate::stack::health::Health;
use crate::stack::{Listener, NatsSource, StackConfig};

/// Flags of `railyard demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// The example estate: `railyard.toml`, `inventory.json` and the release files.
    #[arg(long, default_value = "deploy/examples")]
    pub estate: PathBuf,
    /// Use this NATS server instead of an embedded one.
    #[arg(long, env = "RAILYARD_NATS_URL")]
    pub nats_url: Option<String>,
    /// Where the health endpoints the catalog's gates call are served.
    #[arg(long, default_value = "127.0.0.1:7801")]
    pub health_listen: SocketAddr,
    /// Leave every service running after the story, until Ctrl-C.
    #[arg(long)]
    pub keep_running: bool,
    /// How long one release may take before the demo gives up.
    #[arg(long, default_value = "90s", value_parser = humantime::parse_duration)]
    pub release_timeout: Duration,
}

struct Tokens {
    ci: String,
    alice: String,
    auditor: String,
    operator: String,
    table: railyard_http::Tokens,
}

fn tokens() -> Tokens {
    use railyard_http::Role;
    let (table, tokens) = crate::stack::generate_tokens(&[
        ("ci:github-actions", &[Role::Publisher], &[]),
        ("alice", &[Role::Approver], &["github:alice"]),
        ("auditor", &[Role::Auditor], &[]),
        ("operator", &[Role::Operator], &[]),
    ]);
    let [ci, alice, auditor, operator] = <[String; 4]>::try_from(tokens).expect("four tokens");
    Tokens {
        ci,
        alice,
        auditor,
        operator,
        table,
    }
}

/// A chapter heading of the story: bold on a terminal, plain text otherwise (a log file or CI
/// gets no escape codes).
fn heading(text: &str) {
    use std::io::IsTerminal;
    if std::io::stdout().is_terminal() {
        println!("\n\x1b[1m== {text}\x1b[0m\n");
    } else {
        println!("\n== {text}\n");
    }
}

/// Runs the demo.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    crate::authority_cmd::setup_in_process();
    let data = std::env::temp_dir().join(format!("railyard-demo-{}", std::process::id()));
    std::fs::create_dir_all(&data).with_context(|| format!("cannot create {}", data.display()))?;
    let outcome = play(&args, &data).await;
    let _ = std::fs::remove_dir_all(&data);
    outcome
}

async fn play(args: &DemoArgs, data: &std::path::Path) -> anyhow::Result<()> {
    let catalog_path = args.estate.join("railyard.toml");
    let catalog = crate::dev::load_catalog(&catalog_path)?;
    let inventory_text = std::fs::read_to_string(args.estate.join("inventory.json"))?;
    let inventory = Inventory::from_json(&inventory_text).context("inventory.json")?;
    let tokens = tokens();

    heading(&format!(
        "railyard demo: {} services, {}",
        catalog.services.len(),
        catalog
            .promotion_path()
            .iter()
            .map(|e| e.name.as_str())
            .collect::<Vec<_>>()
            .join(" -> ")
    ));

    // Every service in this process, as `railyard dev` runs them, with two promotion workers.
    let mut config = StackConfig::new(catalog.clone(), data.to_owned(), tokens.table.clone())?;
    if let Some(url) = &args.nats_url {
        config.nats = NatsSource::External(url.clone());
    }
    config.listen = "127.0.0.1:0".parse()?;
    config.inventory = Some((inventory, "operator:import".into()));
    for worker in &mut config.workers {
        worker.poll_interval = Duration::from_millis(250);
        worker.sweep_interval = Duration::from_secs(2);
    }
    config.name_workers(&["worker-a", "worker-b"]);
    let health_state = Health::default();
    config.listeners.push(Listener {
        name: "the gates' health endpoints".into(),
        addr: args.health_listen,
        router: health_state.router(),
        required: true,
    });
    let mut running = config.start().await?;
    println!(
        "recorded what runs now: {} services in staging and production (service.deployed events)",
        running.imported
    );
    let base = format!("http://{}", running.addr);
    println!(
        "services up: intake, planner, 2 promotion workers, audit on {base}; gates on http://{}",
        args.health_listen
    );
    let stop = running.shutdown();
    let bus = running.bus.clone();

    // Follow the whole stream live, as `railyard release watch` follows one release.
    let (tx, mut rx) = mpsc::unbounded_channel();
    {
        let bus = bus.clone();
        let stop = stop.clone();
        running.spawn("watch", async move {
            let mut consumer = bus.replay(1).await?;
            loop {
                let delivery = tokio::select! {
                    _ = stop.cancelled() => return Ok(()),
                    next = consumer.next() => next?,
                };
                let Some(delivery) = delivery else {
                    return Ok(());
                };
                for envelope in delivery.envelopes {
                    if tx.send(envelope).is_err() {
                        return Ok(());
                    }
                }
            }
        });
    }
    let runner = tokio::spawn(async move { running.run_until_signal().await });

    let http = reqwest::Client::new();
    let story = async {
        // 1. A release through staging and production with an approval on the way.
        heading("1. orders-v3: orders-events v3 and schema 43, with the consumers that must read v3 first");
        submit(&http, &base, &tokens.ci, &args.estate.join("release-orders-v3.toml")).await?;
        let end = follow(&mut rx, "orders-v3", args.release_timeout, &http, &base, &tokens.alice).await?;
        anyhow::ensure!(end == Status::Completed, "orders-v3 ended {end}, expected completed");

        // 2. A release whose production gate fails and is rolled back automatically.
        heading("2. pricing-6: healthy in staging, failing in production");
        health_state.set_failing("pricing", "production", true);
        submit(&http, &base, &tokens.ci, &args.estate.join("release-pricing-6.toml")).await?;
        let end = follow(&mut rx, "pricing-6", args.release_timeout, &http, &base, &tokens.alice).await?;
        anyhow::ensure!(end == Status::RolledBack, "pricing-6 ended {end}, expected rolled back");

        // 3. A release the planner refuses.
        heading("3. orders-v4: orders-events v4, which running consumers cannot read");
        submit(&http, &base, &tokens.ci, &args.estate.join("release-orders-v4-unsafe.toml")).await?;
        let end = follow(&mut rx, "orders-v4", args.release_timeout, &http, &base, &tokens.alice).await?;
        anyhow::ensure!(end == Status::Rejected, "orders-v4 ended {end}, expected refused");

        // 4. What an auditor sees.
        heading("4. the production change report and audit verify");
        wait_for_audit(&http, &base, &tokens.auditor).await?;
        let report = get(&http, &format!("{base}/v1/audit/report?format=csv"), &tokens.auditor).await?;
        print!("{report}");
        let verify: serde_json::Value = http
            .post(format!("{base}/v1/audit/verify"))
            .bearer_auth(&tokens.auditor)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        println!("\naudit verify: {}", serde_json::to_string(&verify)?);
        anyhow::ensure!(verify.get("ok").and_then(|v| v.as_bool()) == Some(true), "audit verify did not pass: {verify}");
        anyhow::Ok(())
    }
    .await;

    if story.is_ok() && args.keep_running {
        println!(
            "\nstill running on {base} (RAILYARD_URL); tokens: publisher {} approver {} auditor {} operator {}; Ctrl-C stops",
            tokens.ci, tokens.alice, tokens.auditor, tokens.operator
        );
        println!("console: {base}/ (sign in with one of the tokens above)");
        return runner.await.context("services")?;
    }
    stop.cancel();
    let stopped = runner.await.context("services")?;
    story?;
    if let Err(error) = stopped {
        // Ctrl-C never came: the stop above is what ended them.
        tracing::debug!(error = %format!("{error:#}"), "services stopped");
    }
    println!(
        "\ndemo finished: 3 releases, one completed, one rolled back, one refused; the audit chain verifies"
    );
    Ok(())
}

async fn submit(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    file: &std::path::Path,
) -> anyhow::Result<()> {
    let body = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let answer = http
        .post(format!("{base}/v1/releases"))
        .bearer_auth(token)
        .header("content-type", "application/toml")
        .body(body)
        .send()
        .await?;
    let status = answer.status();
    let text = answer.text().await?;
    if !status.is_success() {
        bail!("intake refused {}: {status} {text}", file.display());
    }
    println!("POST /v1/releases {} -> {status} {text}", file.display());
    Ok(())
}

async fn get(http: &reqwest::Client, url: &str, token: &str) -> anyhow::Result<String> {
    let answer = http.get(url).bearer_auth(token).send().await?;
    let status = answer.status();
    let text = answer.text().await?;
    anyhow::ensure!(status.is_success(), "GET {url}: {status} {text}");
    Ok(text)
}

/// Prints the release's events as they land, approves when asked, and returns how it ended.
async fn follow(
    rx: &mut mpsc::UnboundedReceiver<railyard_core::Envelope>,
    release: &str,
    timeout: Duration,
    http: &reqwest::Client,
    base: &str,
    approver: &str,
) -> anyhow::Result<Status> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let envelope = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .with_context(|| format!("{release} did not finish within {timeout:?}"))?
            .context("the event stream closed")?;
        let railyard_core::AggregateId::Release(id) = &envelope.aggregate else {
            continue;
        };
        if id.as_str() != release {
            continue;
        }
        let line = match &envelope.event {
            Event::ReleaseRequested(r) => format!(
                "requested by {} ({} changes)",
                r.requested_by,
                r.changes.len()
            ),
            Event::ReleasePlanned(p) => {
                println!(
                    "{}",
                    railyard_planner::render(&p.plan, railyard_planner::Format::Text)
                );
                format!(
                    "planned: {} steps in {} waves",
                    p.plan.steps.len(),
                    p.plan.waves.len()
                )
            }
            Event::ReleaseRejected(r) => {
                for (i, reason) in r.reasons.iter().enumerate() {
                    println!(
                        "  {}. [{}] {}\n     remedy: {}",
                        i + 1,
                        reason.rule,
                        reason.reason,
                        reason.remedy
                    );
                }
                return Ok(Status::Rejected);
            }
            Event::StepWaiting(w) => {
                let releases: Vec<String> = w.waiting_for.iter().map(|r| r.to_string()).collect();
                format!("{} waits for {}: {}", w.step, releases.join(", "), w.reason)
            }
            Event::StepStarted(s) => format!("{} started by {}", s.step, s.worker),
            Event::StepSucceeded(s) => format!("{} succeeded {}", s.step, s.detail),
            Event::StepFailed(s) => format!("{} FAILED: {}", s.step, s.detail),
            Event::StepRolledBack(s) => format!("{} rolled back: {}", s.step, s.detail),
            Event::GateEvaluated(g) => format!(
                "{} gate {} {}: observed {}, expected {}",
                g.step,
                g.gate,
                if g.passed { "passed" } else { "FAILED" },
                g.observed,
                g.expected
            ),
            Event::ApprovalRequested(a) => {
                let line = format!(
                    "approval for {} requested from {}",
                    a.env,
                    a.approvers.join(", ")
                );
                println!("  {line}");
                let answer = http
                    .post(format!("{base}/v1/releases/{release}/approve"))
                    .bearer_auth(approver)
                    .json(&serde_json::json!({"step": a.step, "comment": "change window agreed in #releases"}))
                    .send()
                    .await?;
                let status = answer.status();
                let text = answer.text().await?;
                anyhow::ensure!(status.is_success(), "approval refused: {status} {text}");
                println!("  alice approves: POST /v1/releases/{release}/approve -> {status}");
                continue;
            }
            Event::ApprovalGranted(a) => format!("approved by {}: {}", envelope.actor, a.comment),
            Event::ApprovalDenied(a) => format!("denied by {}: {}", envelope.actor, a.comment),
            Event::ReleaseHeld(h) => format!(
                "HELD: {} (owner: {})",
                h.reason,
                h.owner.as_deref().unwrap_or("-")
            ),
            Event::ReleaseResumed(r) => format!("resumed: {}", r.reason),
            Event::ReleaseCompleted(_) => {
                println!("  release completed");
                return Ok(Status::Completed);
            }
            Event::ReleaseRolledBack(r) => {
                // The reason already lists what was undone, in order.
                println!("  release rolled back: {}", r.reason);
                return Ok(Status::RolledBack);
            }
            Event::ReleaseCancelled(r) => {
                println!("  release cancelled: {}", r.reason);
                return Ok(Status::Cancelled);
            }
            other => other.type_name().to_owned(),
        };
        println!("  {line}");
    }
}

/// Waits (bounded) until the audit projection has applied the last release's refusal: every
/// event before it is then in the audit record too.
async fn wait_for_audit(http: &reqwest::Client, base: &str, token: &str) -> anyhow::Result<()> {
    // The read side's feed of the release: its history, then live; done once the refusal is in.
    let follow = async {
        let mut feed = http
            .get(format!("{base}/v1/releases/orders-v4/events"))
            .bearer_auth(token)
            .send()
            .await?
            .error_for_status()?;
        let mut seen = String::new();
        while let Some(chunk) = feed.chunk().await? {
            seen.push_str(&String::from_utf8_lossy(&chunk));
            if seen.contains("release.rejected") {
                return Ok(());
            }
        }
        anyhow::bail!("the audit's feed of orders-v4 ended before its refusal")
    };
    tokio::time::timeout(Duration::from_secs(30), follow)
        .await
        .map_err(|_| anyhow::anyhow!("the audit record did not catch up within 30s"))?
}

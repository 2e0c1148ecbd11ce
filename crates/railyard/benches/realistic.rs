//! The realistic promotion benchmark (issue 19, item 3), beside `railyard-promoter`'s best
//! case: 300 services shared by 1,000 releases (each changing 1–5 of them, so releases queue
//! behind each other on shared services), staging then production, production approved
//! through `POST /v1/releases/{id}/approve` by a bench approver as soon as it is asked, an
//! HTTP gate on every service against a local server, releases submitted through intake over
//! HTTP with the planner running, and 4 promotion workers as 4 separate `railyard promoter`
//! processes (the release build of the real binary).
//!
//! The stack without workers (intake, planner, audit, the approver routes) runs in this
//! process on a nats-server this bench starts with its monitoring port; the workers name their
//! connections, so `/connz` tells the messages they sent to NATS per step.
//!
//! ```text
//! cargo bench -p railyard --bench realistic
//! RAILYARD_BENCH_RELEASES=200 RAILYARD_BENCH_DEPLOY_MS=20 cargo bench -p railyard --bench realistic
//! ```
//!
//! Reported: time until every release is final, steps per second, the coordination overhead
//! of each step (when it could start — its plan predecessors and the other releases' steps it
//! waits for have succeeded — to when it started; adapter and gate time excluded), and the
//! messages the workers sent to NATS per step (each a JetStream request, a pull or an ack).
//! Baseline in the same run: raw pipelined JetStream publish of as many events as the run
//! recorded.

use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use railyard::stack::{NatsSource, StackConfig, generate_tokens};
use railyard_core::{Catalog, Event, Plan};
use railyard_http::Role;
use railyard_testkit::NatsServer;
use serde_json::{Value, json};

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}

/// A small deterministic generator (xorshift64*), so every run plans the same releases.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

fn catalog_toml(services: u64, deploy_ms: u64, gates: SocketAddr) -> String {
    let mut text = String::from(
        "[[environments]]\nname = \"staging\"\n\n[[environments]]\nname = \"production\"\n\
         after = \"staging\"\napproval = { required = true, approvers = [\"bench-approver\"] }\n",
    );
    for s in 0..services {
        text.push_str(&format!(
            "\n[services.svc-{s:03}]\ndeploy = {{ kind = \"simulated\", duration = \"{deploy_ms}ms\" }}\n\
             gates = [{{ kind = \"http\", url = \"http://{gates}/health/svc-{s:03}/{{env}}\", expect_status = 200 }}]\n"
        ));
    }
    text
}

/// Release `r`: 1–5 distinct services, each at the next version of that service.
fn releases(count: u64, services: u64) -> Vec<(String, Value)> {
    let mut rng = Rng(0x005E_ED0F_BE4C_u64);
    let mut versions = vec![0u64; services as usize];
    (0..count)
        .map(|r| {
            let k = 1 + rng.below(5);
            let mut chosen = Vec::new();
            while (chosen.len() as u64) < k {
                let s = rng.below(services);
                if !chosen.contains(&s) {
                    chosen.push(s);
                }
            }
            let changes: Vec<Value> = chosen
                .iter()
                .map(|&s| {
                    versions[s as usize] += 1;
                    json!({
                        "service": format!("svc-{s:03}"),
                        "version": format!("1.{}.0", versions[s as usize]),
                    })
                })
                .collect();
            let id = format!("real-{r:04}");
            (id.clone(), json!({ "id": id, "changes": changes }))
        })
        .collect()
}

/// What the run recorded of one release.
#[derive(Default)]
struct Seen {
    plan: Option<Plan>,
    started: HashMap<String, DateTime<Utc>>,
    succeeded: HashMap<String, DateTime<Utc>>,
    end: Option<(String, Instant)>,
}

#[derive(Default)]
struct Record {
    releases: BTreeMap<String, Seen>,
    finals: usize,
    events: usize,
}

/// One `railyard promoter` process; killed on drop.
struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The messages each named connection sent to the server (`/connz`).
async fn sent_by(http: &reqwest::Client, monitor: &str) -> anyhow::Result<BTreeMap<String, u64>> {
    let connz = connz(http, monitor, "").await?;
    let mut out = BTreeMap::new();
    for c in connz["connections"].as_array().into_iter().flatten() {
        let name = c["name"].as_str().unwrap_or("").to_owned();
        *out.entry(name).or_default() += c["in_msgs"].as_u64().unwrap_or(0);
    }
    Ok(out)
}

/// The server's connections (`/connz`, with `query` added).
async fn connz(http: &reqwest::Client, monitor: &str, query: &str) -> anyhow::Result<Value> {
    Ok(http
        .get(format!("{monitor}/connz?limit=4096{query}"))
        .send()
        .await?
        .json()
        .await?)
}

/// The process-wide part of an inbox's NUID (`_INBOX.<12 characters>`): a process's
/// clients draw their inboxes from one generator, so it tells the process, whether the
/// request came through a client's shared inbox or a fresh one.
fn nuid_prefix(inbox: &str) -> String {
    inbox.chars().take("_INBOX.".len() + 12).collect()
}

/// Each process's inbox prefix ([`nuid_prefix`] of the `_INBOX.<nuid>.*` subscription its
/// clients answer on) and the name of a connection of it.
async fn inbox_owners(
    http: &reqwest::Client,
    monitor: &str,
) -> anyhow::Result<BTreeMap<String, String>> {
    let connz = connz(http, monitor, "&subs=1").await?;
    let mut out = BTreeMap::new();
    for c in connz["connections"].as_array().into_iter().flatten() {
        let name = c["name"].as_str().unwrap_or("(unnamed)").to_owned();
        for sub in c["subscriptions_list"].as_array().into_iter().flatten() {
            if let Some(inbox) = sub
                .as_str()
                .and_then(|sub| sub.strip_suffix(".*"))
                .filter(|inbox| inbox.starts_with("_INBOX.") && inbox.matches('.').count() == 1)
            {
                out.insert(nuid_prefix(inbox), name.clone());
            }
        }
    }
    Ok(out)
}

fn percentiles(mut values: Vec<i64>) -> String {
    if values.is_empty() {
        return "none".to_owned();
    }
    values.sort_unstable();
    let at = |q: f64| values[((values.len() - 1) as f64 * q) as usize];
    format!(
        "p50 {} ms, p99 {} ms, max {} ms (n = {})",
        at(0.5),
        at(0.99),
        at(1.0),
        values.len()
    )
}

fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(()); // `cargo bench -- --list` / `cargo test --benches` probes
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(bench())
}

async fn bench() -> anyhow::Result<()> {
    let count = env_number("RAILYARD_BENCH_RELEASES", 1000);
    let services = env_number("RAILYARD_BENCH_SERVICES", 300);
    let workers = env_number("RAILYARD_BENCH_WORKERS", 4);
    let deploy_ms = env_number("RAILYARD_BENCH_DEPLOY_MS", 10);
    let dir = tempfile::tempdir()?;
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "realistic promotion: {count} releases over {services} services, {workers} worker processes, \
         {deploy_ms} ms deploys, HTTP gates, production approvals over HTTP (load average at start: {})",
        load.trim()
    );

    // NATS with its monitoring port.
    let (port, http_port) = (free_port()?, free_port()?);
    let conf = dir.path().join("nats.conf");
    std::fs::write(
        &conf,
        format!(
            "listen: \"127.0.0.1:{port}\"\nhttp: \"127.0.0.1:{http_port}\"\n\
             jetstream {{ store_dir: {:?} }}\n",
            dir.path().join("nats").display().to_string()
        ),
    )?;
    let nats = NatsServer::start_from_config(&conf, Vec::new()).await?;
    let monitor = format!("http://127.0.0.1:{http_port}");

    // The gates' server: every service healthy.
    let gate_hits = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let gates = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let gates_addr = gates.local_addr()?;
    {
        let hits = gate_hits.clone();
        let app = axum::Router::new().route(
            "/health/{service}/{env}",
            axum::routing::get(move || {
                let hits = hits.clone();
                async move {
                    hits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    "ok"
                }
            }),
        );
        tokio::spawn(async move { axum::serve(gates, app).await });
    }

    let text = catalog_toml(services, deploy_ms, gates_addr);
    let catalog_file = dir.path().join("railyard.toml");
    std::fs::write(&catalog_file, &text)?;
    let catalog = Catalog::from_toml(&text)?;
    let (tokens, secrets) = generate_tokens(&[
        ("ci", &[Role::Publisher], &[]),
        ("bench-approver", &[Role::Approver], &[]),
    ]);
    let (publisher, approver) = (secrets[0].clone(), secrets[1].clone());

    // The stack without promotion workers: intake, planner, audit, the approver routes.
    let mut config = StackConfig::new(catalog, dir.path().join("stack"), tokens)?;
    config.nats = NatsSource::External(nats.url());
    config.workers.clear();
    config.listen = ([127, 0, 0, 1], free_port()?).into();
    let stack = config.start().await?;
    let base = format!("http://{}", stack.addr);
    let bus = stack.bus.clone();

    // The workers, each its own process.
    let mut procs = Vec::new();
    let mut worker_http = Vec::new();
    for w in 0..workers {
        let listen = format!("127.0.0.1:{}", free_port()?);
        let log = std::fs::File::create(dir.path().join(format!("worker-{w}.log")))?;
        let child = Command::new(env!("CARGO_BIN_EXE_railyard"))
            .args(["promoter", "--worker-id", &format!("bench-{w}")])
            .arg("--store")
            .arg(dir.path().join(format!("worker-{w}")))
            .args(["--listen", &listen])
            .env("RAILYARD_NATS_URL", nats.url())
            .env("RAILYARD_CATALOG", &catalog_file)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot start railyard promoter")?;
        procs.push(Worker(child));
        worker_http.push(listen);
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let ready_by = Instant::now() + Duration::from_secs(60);
    for listen in &worker_http {
        loop {
            let ok = http
                .get(format!("http://{listen}/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                break;
            }
            if Instant::now() > ready_by {
                bail!(
                    "worker at {listen} not ready after 60 s: {}",
                    logs(dir.path(), workers)
                );
            }
            // Real time on purpose: another process's readiness has no event to follow, and
            // the bench measures wall-clock time (no Clock to drive).
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // Follow every event; approve production as soon as it is asked.
    let record = Arc::new(Mutex::new(Record::default()));
    let from = bus.stream_last_sequence().await? + 1;
    let mut events = bus.replay(from).await?;
    let approvals = Arc::new(std::sync::atomic::AtomicU64::new(0));
    // Signalled by the follower each time a release turns final.
    let ended = Arc::new(tokio::sync::Notify::new());
    let follower = {
        let ended_signal = ended.clone();
        let (record, http, base, approver, approvals) = (
            record.clone(),
            http.clone(),
            base.clone(),
            approver.clone(),
            approvals.clone(),
        );
        tokio::spawn(async move {
            while let Some(delivery) = events.next().await? {
                let now = Instant::now();
                for envelope in &delivery.envelopes {
                    let Some(id) = delivery.release() else {
                        continue;
                    };
                    let id = id.to_string();
                    let mut r = record.lock().expect("not poisoned");
                    r.events += 1;
                    let seen = r.releases.entry(id.clone()).or_default();
                    let mut ended = None;
                    match &envelope.event {
                        Event::ReleasePlanned(p) => seen.plan = Some(p.plan.clone()),
                        Event::StepStarted(s) => {
                            seen.started
                                .insert(s.step.to_string(), envelope.occurred_at);
                        }
                        Event::StepSucceeded(s) => {
                            seen.succeeded
                                .insert(s.step.to_string(), envelope.occurred_at);
                        }
                        Event::ApprovalRequested(_) => {
                            let (http, base, approver, approvals) = (
                                http.clone(),
                                base.clone(),
                                approver.clone(),
                                approvals.clone(),
                            );
                            let id = id.clone();
                            tokio::spawn(async move {
                                let answer = http
                                    .post(format!("{base}/v1/releases/{id}/approve"))
                                    .bearer_auth(&approver)
                                    .json(&json!({ "comment": "bench" }))
                                    .send()
                                    .await;
                                match answer {
                                    Ok(a) if a.status().is_success() => {
                                        approvals
                                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                    }
                                    Ok(a) => {
                                        let status = a.status();
                                        eprintln!(
                                            "approve {id}: {status} {}",
                                            a.text().await.unwrap_or_default()
                                        );
                                    }
                                    Err(error) => eprintln!("approve {id}: {error}"),
                                }
                            });
                        }
                        Event::ReleaseCompleted(_) => ended = Some("completed"),
                        Event::ReleaseRejected(_) => ended = Some("rejected"),
                        Event::ReleaseRolledBack(_) => ended = Some("rolled back"),
                        Event::ReleaseCancelled(_) => ended = Some("cancelled"),
                        // Nobody resumes a held release here: count it as where it ended.
                        Event::ReleaseHeld(_) => ended = Some("held"),
                        _ => {}
                    }
                    if let Some(how) = ended
                        && seen.end.is_none()
                    {
                        seen.end = Some((how.to_owned(), now));
                        r.finals += 1;
                        ended_signal.notify_one();
                    }
                }
            }
            anyhow::Ok(())
        })
    };

    // With RAILYARD_BENCH_BREAKDOWN=1: every message on the server by kind of subject (the
    // JetStream API calls, acks, publishes), release ids and steps taken out.
    let breakdown = Arc::new(Mutex::new(BTreeMap::<String, u64>::new()));
    // Requests by the inbox their answer goes to (`_INBOX.<connection's prefix>`), to tell
    // whose they are.
    let by_inbox = Arc::new(Mutex::new(BTreeMap::<String, u64>::new()));
    let spy = if std::env::var_os("RAILYARD_BENCH_BREAKDOWN").is_some() {
        let client = async_nats::connect(nats.url()).await?;
        let mut all = client.subscribe(">").await?;
        let breakdown = breakdown.clone();
        let by_inbox = by_inbox.clone();
        Some(tokio::spawn(async move {
            use futures::StreamExt;
            while let Some(message) = all.next().await {
                let mut kind = subject_kind(message.subject.as_str());
                // A message with no reply subject (an ack, a lease's release) is not waited
                // for: one message, no round trip.
                if message.reply.is_none() && !kind.starts_with("_INBOX") {
                    kind.push_str(" (not waited for)");
                }
                // A request: a message sent with a reply subject, other than a consumer's
                // delivery (seen here under the stream subject, its reply subject its ack's)
                // and an answer to an inbox.
                let delivery = message
                    .reply
                    .as_ref()
                    .is_some_and(|reply| reply.as_str().starts_with("$JS.ACK."));
                if delivery {
                    kind.push_str(" (delivered to a consumer)");
                }
                if message.reply.is_some() && !delivery && !kind.starts_with("_INBOX") {
                    *breakdown
                        .lock()
                        .expect("not poisoned")
                        .entry(REQUESTS.to_owned())
                        .or_default() += 1;
                    if let Some(reply) = &message.reply {
                        let inbox: Vec<&str> = reply.as_str().splitn(3, '.').take(2).collect();
                        *by_inbox
                            .lock()
                            .expect("not poisoned")
                            .entry(inbox.join("."))
                            .or_default() += 1;
                    }
                }
                // A direct get asks for a subject's last message or scans from a sequence.
                if kind.starts_with("$JS.API.DIRECT.GET") {
                    let payload = String::from_utf8_lossy(&message.payload);
                    if payload.contains("last_by_subj") {
                        kind.push_str(" (last of a subject)");
                    } else if payload.contains("next_by_subj") {
                        kind.push_str(" (scan from a sequence)");
                    }
                }
                *breakdown
                    .lock()
                    .expect("not poisoned")
                    .entry(kind)
                    .or_default() += 1;
            }
        }))
    } else {
        None
    };
    let before = sent_by(&http, &monitor).await?;
    let work = releases(count, services);
    let started = Instant::now();
    let submitted = {
        let (http, base, publisher) = (http.clone(), base.clone(), publisher.clone());
        futures::future::try_join_all(work.iter().enumerate().map(|(i, (_, body))| {
            let (http, base, publisher) = (http.clone(), base.clone(), publisher.clone());
            let body = body.clone();
            async move {
                // 16 in flight at a time, in order: pacing real submissions, real time on
                // purpose.
                tokio::time::sleep(Duration::from_micros(200 * i as u64 / 16)).await;
                let answer = http
                    .post(format!("{base}/v1/releases"))
                    .bearer_auth(&publisher)
                    .json(&body)
                    .send()
                    .await?;
                if !answer.status().is_success() {
                    bail!(
                        "intake refused {}: {}",
                        body["id"],
                        answer.text().await.unwrap_or_default()
                    );
                }
                anyhow::Ok(())
            }
        }))
    };
    submitted.await?;
    let submit_time = started.elapsed();
    let mut last_report = Instant::now();
    loop {
        let (finals, events) = {
            let r = record.lock().expect("not poisoned");
            (r.finals, r.events)
        };
        if finals >= count as usize {
            break;
        }
        if follower.is_finished() {
            bail!("the event follower stopped");
        }
        if started.elapsed() > Duration::from_secs(900) {
            bail!(
                "{finals} of {count} releases final after 900 s\n{}",
                logs(dir.path(), workers)
            );
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "  … {:.0} s: {finals} of {count} final, {events} events",
                started.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
        // Woken as a release turns final; the timeout only paces the progress line and the
        // checks above (real time on purpose: this bench measures it).
        let _ = tokio::time::timeout(Duration::from_secs(1), ended.notified()).await;
    }
    let elapsed = started.elapsed();
    let after = sent_by(&http, &monitor).await?;
    let owners = inbox_owners(&http, &monitor).await?;
    follower.abort();

    // What the run did.
    let (steps, events) = {
        let r = record.lock().expect("not poisoned");
        let mut outcomes: BTreeMap<&str, usize> = BTreeMap::new();
        let mut overhead = Vec::new();
        let mut steps = 0usize;
        for seen in r.releases.values() {
            if let Some((how, _)) = &seen.end {
                *outcomes.entry(how.as_str()).or_default() += 1;
            }
            let Some(plan) = &seen.plan else { continue };
            for step in &plan.steps {
                let Some(start) = seen.started.get(step.id.as_str()) else {
                    continue;
                };
                steps += 1;
                let inside = plan
                    .predecessors(&step.id)
                    .filter_map(|p| seen.succeeded.get(p.as_str()));
                let outside = plan
                    .external_edges
                    .iter()
                    .filter(|e| e.to == step.id)
                    .filter_map(|e| {
                        let other = r.releases.get(e.release.as_str())?;
                        // A final release frees what waits for it even if the step never ran.
                        other.succeeded.get(e.from.as_str())
                    });
                if let Some(ready) = inside.chain(outside).max() {
                    overhead.push((*start - *ready).num_milliseconds());
                }
            }
        }
        let promoter_sent: u64 = after
            .iter()
            .filter(|(name, _)| name.starts_with("railyard-promoter"))
            .map(|(name, n)| n - before.get(name).copied().unwrap_or(0))
            .sum();
        let all_sent: u64 = after
            .iter()
            .map(|(name, n)| n - before.get(name).copied().unwrap_or(0))
            .sum();
        println!(
            "  all {count} releases final after {:.2} s (submitted through intake in {:.2} s): {outcomes:?}",
            elapsed.as_secs_f64(),
            submit_time.as_secs_f64()
        );
        println!(
            "  {steps} steps, {:.0} steps/s; {} approvals over HTTP; {} gate requests; {} release events",
            steps as f64 / elapsed.as_secs_f64(),
            approvals.load(std::sync::atomic::Ordering::Relaxed),
            gate_hits.load(std::sync::atomic::Ordering::Relaxed),
            r.events
        );
        println!(
            "  coordination overhead (ready → started): {}",
            percentiles(overhead)
        );
        println!(
            "  messages the workers sent to NATS: {promoter_sent} ({:.1} per step); every connection: {all_sent} ({:.1} per step)",
            promoter_sent as f64 / steps.max(1) as f64,
            all_sent as f64 / steps.max(1) as f64
        );
        (steps, r.events)
    };
    if let Some(spy) = spy {
        spy.abort();
        let mut kinds: Vec<(String, u64)> = breakdown
            .lock()
            .expect("not poisoned")
            .iter()
            .map(|(k, n)| (k.clone(), *n))
            .collect();
        kinds.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
        for (kind, n) in kinds.iter().take(30) {
            println!(
                "    {n:>8} ({:>5.1} per step) {kind}",
                *n as f64 / steps.max(1) as f64
            );
        }
        // Whose requests: the workers' (the promoter's coordination) apart from the other
        // services' (the planner's, intake's, the audit's, the notifier's...).
        let mut by_service = BTreeMap::<String, u64>::new();
        for (inbox, n) in by_inbox.lock().expect("not poisoned").iter() {
            let owner = owners
                .get(&nuid_prefix(inbox))
                .map(|name| {
                    if name.starts_with("railyard-promoter") {
                        "railyard-promoter (every worker)".to_owned()
                    } else if name == "railyard" {
                        "the bench's own process (intake, planner, audit, approvals)".to_owned()
                    } else {
                        name.clone()
                    }
                })
                .unwrap_or_else(|| "(a process unknown by the end)".to_owned());
            *by_service.entry(owner).or_default() += n;
        }
        println!("  requests by service:");
        for (service, n) in &by_service {
            println!(
                "    {n:>8} ({:>5.1} per step) {service}",
                *n as f64 / steps.max(1) as f64
            );
        }
    }

    // Baseline: raw pipelined publish of as many events, same server.
    let client = async_nats::connect(nats.url()).await?;
    let js = async_nats::jetstream::new(client);
    js.get_or_create_stream(async_nats::jetstream::stream::Config {
        name: "BENCH_RAW".into(),
        subjects: vec!["bench.raw".into()],
        ..Default::default()
    })
    .await?;
    let payload = Bytes::from(vec![b'x'; 300]);
    let raw_started = Instant::now();
    let mut acks = futures::stream::FuturesUnordered::new();
    for _ in 0..events.max(1) {
        acks.push(std::future::IntoFuture::into_future(
            js.publish("bench.raw", payload.clone()).await?,
        ));
        while acks.len() >= 1000 {
            use futures::StreamExt;
            acks.next().await.transpose()?;
        }
    }
    {
        use futures::StreamExt;
        while let Some(ack) = acks.next().await {
            ack?;
        }
    }
    let raw = raw_started.elapsed();
    println!(
        "  baseline: raw pipelined publish of {events} events in {:.2} s ({:.0} ev/s); the promotion's events took {:.1}× as long",
        raw.as_secs_f64(),
        events as f64 / raw.as_secs_f64(),
        elapsed.as_secs_f64() / raw.as_secs_f64()
    );
    println!(
        "  load average at the end: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    drop(procs);
    stack.stop(Duration::from_secs(15)).await?;
    Ok(())
}

/// The breakdown's count of requests (round trips), every connection's.
const REQUESTS: &str = "= requests awaiting an answer, every connection";

/// A subject with what varies (release ids, steps, inboxes, sequences) replaced by `*`.
fn subject_kind(subject: &str) -> String {
    let parts: Vec<&str> = subject.split('.').collect();
    let keep = match parts.first().copied() {
        Some("$JS") if parts.get(1) == Some(&"ACK") => 3,
        Some("$JS") if parts.get(1) == Some(&"API") => match parts.get(2).copied() {
            // `$JS.API.STREAM.MSG.GET.<stream>`: which stream is asked.
            Some("STREAM") if parts.get(3) == Some(&"MSG") => 6,
            Some("DIRECT") | Some("STREAM") => 5,
            Some("CONSUMER") => 5,
            _ => 4,
        },
        Some("$KV") => 2,
        Some("_INBOX") => 1,
        Some("railyard") => 3,
        _ => 2,
    };
    let mut out: Vec<&str> = parts.iter().take(keep).copied().collect();
    if parts.len() > keep {
        out.push("*");
    }
    out.join(".")
}

fn logs(dir: &Path, workers: u64) -> String {
    (0..workers)
        .map(|w| {
            let text =
                std::fs::read_to_string(dir.join(format!("worker-{w}.log"))).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            format!(
                "--- worker {w}\n{}",
                lines[lines.len().saturating_sub(20)..].join("\n")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

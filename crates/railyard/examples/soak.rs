//! The chaos soak (`just soak [DURATION]`): continuous releases on a 3-node NATS cluster made
//! from `deploy/nats/`, every Railyard service its own process of the debug `railyard` binary
//! connected as its own NATS user (intake, planner, three promotion workers, audit, and the
//! notifier against the testkit's Slack stand-in), while it SIGKILLs a random promotion worker
//! every 20 s (started again at once), a random NATS node every 60 s (started again 10 s
//! later) and the planner every 90 s (started again at once). Then it checks that every release
//! ended as its estate says it must, that the deploy commands' own log shows no step completed
//! twice in one attempt and no re-run except where the worker died, that `railyard audit
//! verify` passes, that nothing was dead-lettered, that no service exited on its own or
//! panicked, and that no service's resident memory grew more than 20 % after the warm-up. It
//! prints a summary and exits 1 naming each failed check.
//!
//! It is a program, not a test: it runs for minutes of real time. `--help` lists the knobs.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use railyard_bus::{Bus, BusConfig, NatsCredentials};
use railyard_core::{AggregateId, ReleaseId, ReleaseState};
use railyard_http::{Role, generate_token};
use railyard_testkit::slack::SLACK_BOT_TOKEN;
use railyard_testkit::{Deployment, NatsCluster, ServiceProcess, SlackStandIn};

/// The chaos soak: releases under SIGKILLs of workers, NATS nodes and the planner.
#[derive(Debug, Parser)]
#[command(name = "soak")]
struct Args {
    /// How long releases are submitted and things are killed (the drain comes after).
    #[arg(long, env = "SOAK_DURATION", default_value = "3m", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// How often a random promotion worker is killed (0s: never).
    #[arg(long, env = "SOAK_WORKER_KILL_EVERY", default_value = "20s", value_parser = humantime::parse_duration)]
    worker_kill_every: Duration,
    /// How often a random NATS node is killed (0s: never).
    #[arg(long, env = "SOAK_NATS_KILL_EVERY", default_value = "60s", value_parser = humantime::parse_duration)]
    nats_kill_every: Duration,
    /// How long a killed NATS node stays down.
    #[arg(long, env = "SOAK_NATS_DOWN_FOR", default_value = "10s", value_parser = humantime::parse_duration)]
    nats_down_for: Duration,
    /// How often the planner is killed (0s: never).
    #[arg(long, env = "SOAK_PLANNER_KILL_EVERY", default_value = "90s", value_parser = humantime::parse_duration)]
    planner_kill_every: Duration,
    /// Resident memory is compared from the end of the warm-up on.
    #[arg(long, env = "SOAK_WARM_UP", default_value = "30s", value_parser = humantime::parse_duration)]
    warm_up: Duration,
    /// How much a service's resident memory may grow after the warm-up, in percent.
    #[arg(long, env = "SOAK_RSS_TOLERANCE", default_value_t = 20)]
    rss_tolerance: u64,
    /// The audit's page cache in MiB (`audit serve --cache-mb`; the service's default is 512).
    /// Small here so that the memory check sees what grows outside the cache: the audit's
    /// store grows with every release (about 36 MB in 30 minutes), and a cache it fits in
    /// fills with it, by design, up to the setting.
    #[arg(long, env = "SOAK_AUDIT_CACHE_MB", default_value_t = 4)]
    audit_cache_mb: u64,
    /// How many releases are kept in flight.
    #[arg(long, env = "SOAK_IN_FLIGHT", default_value_t = 4)]
    in_flight: usize,
    /// How many promotion workers run.
    #[arg(long, env = "SOAK_WORKERS", default_value_t = 3)]
    workers: usize,
    /// How many planner replicas run (`--replica-id planner-<n>`); the one holding the
    /// planner's leader lease is the one killed.
    #[arg(long, env = "SOAK_PLANNERS", default_value_t = 2)]
    planners: usize,
    /// How long a deploy command runs: between these many milliseconds.
    #[arg(long, default_value_t = 500)]
    step_min_ms: u64,
    /// (see --step-min-ms)
    #[arg(long, default_value_t = 2500)]
    step_max_ms: u64,
    /// How long releases still in flight at the end may take to finish.
    #[arg(long, env = "SOAK_DRAIN", default_value = "3m", value_parser = humantime::parse_duration)]
    drain: Duration,
    /// Seed of the random choices (default: from the clock); printed so a run can be repeated.
    #[arg(long, env = "SOAK_SEED")]
    seed: Option<u64>,
    /// The railyard binary (default: `railyard` beside this program's directory, i.e.
    /// target/debug/railyard).
    #[arg(long, env = "SOAK_RAILYARD")]
    railyard: Option<PathBuf>,
    /// Keep the working directory (logs, stores, the deploy log) and print where it is.
    #[arg(long, env = "SOAK_KEEP")]
    keep: bool,
}

/// Random choices, reproducible from the seed (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const SERVICES: [&str; 6] = [
    "accounts",
    "ledger",
    "statements",
    "payments",
    "cards",
    "loans",
];

/// The deploy command: appends `start`, then `done` (or `orphan` when its worker died while
/// it ran) to the log; a deploy of a version containing `bad` exits 1.
const DEPLOY_SCRIPT: &str = r#"#!/bin/bash
log="$1"; form="$2"; min="$3"; max="$4"
parent=$PPID
attempt="${RAILYARD_ATTEMPT:-0}"
echo "start $RAILYARD_RELEASE $RAILYARD_STEP $attempt $form $parent $$" >> "$log"
ms=$(( min + (RANDOM * 32768 + RANDOM) % (max - min + 1) ))
sleep "$(( ms / 1000 )).$(printf '%03d' $(( ms % 1000 )))"
code=0
if [ "$form" = deploy ] && [[ "$RAILYARD_VERSION" == *bad* ]]; then code=1; fi
now=$(cut -d' ' -f4 /proc/$$/stat)
if [ "$now" = "$parent" ]; then end=done; else end=orphan; fi
echo "$end $RAILYARD_RELEASE $RAILYARD_STEP $attempt $form $parent $$ $code" >> "$log"
exit $code
"#;

fn catalog(script: &Path, log: &Path, args: &Args) -> String {
    let argv = |form: &str| {
        format!(
            "[{:?}, {:?}, {form:?}, \"{}\", \"{}\"]",
            script.display().to_string(),
            log.display().to_string(),
            args.step_min_ms,
            args.step_max_ms
        )
    };
    let mut text = String::from(
        r##"[policy]
protected_branches = ["main"]

[[environments]]
name = "staging"
on_failure = "rollback"

[[environments]]
name = "production"
after = "staging"
on_failure = "rollback"

[notify.slack]
default_channel = "#releases"
"##,
    );
    for service in SERVICES {
        text.push_str(&format!(
            "\n[services.{service}]\ndeploy = {{ kind = \"command\", run = {}, rollback = {}, remove = {}, timeout = \"60s\" }}\n",
            argv("deploy"),
            argv("rollback"),
            argv("remove"),
        ));
    }
    text
}

/// How a release must end, from how it was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expected {
    /// Every step succeeds.
    Completed,
    /// A change's version contains `bad`: its deploy fails in staging, whose policy rolls back.
    RolledBack,
    /// A change declares a queue the catalog does not know: the planner (or intake) refuses it.
    Refused,
}

impl Expected {
    fn matches(self, outcome: &str) -> bool {
        match self {
            Expected::Completed => outcome == "completed",
            Expected::RolledBack => outcome == "rolled back",
            Expected::Refused => outcome == "rejected" || outcome.starts_with("refused by intake"),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Expected::Completed => "completed",
            Expected::RolledBack => "rolled back",
            Expected::Refused => "refused",
        }
    }
}

/// The `n`th release: one or two services; every 7th has a failing change, every 11th an
/// unknown queue.
fn release(n: usize, rng: &mut Rng) -> (String, String, Expected) {
    let id = format!("soak-{n}");
    let expected = if n % 11 == 10 {
        Expected::Refused
    } else if n % 7 == 6 {
        Expected::RolledBack
    } else {
        Expected::Completed
    };
    let first = rng.below(SERVICES.len());
    let mut chosen = vec![SERVICES[first]];
    if rng.below(2) == 1 {
        chosen.push(SERVICES[(first + 1 + rng.below(SERVICES.len() - 1)) % SERVICES.len()]);
    }
    let mut text = format!("id = {id:?}\n");
    for (index, service) in chosen.iter().enumerate() {
        let bad = if expected == Expected::RolledBack && index == 0 {
            "-bad"
        } else {
            ""
        };
        text.push_str(&format!(
            "\n[[changes]]\nservice = {service:?}\nversion = \"1.{n}.0{bad}\"\ncommit = \"{:07x}\"\nbranch = \"main\"\n",
            rng.next() & 0xfff_ffff
        ));
        if expected == Expected::Refused && index == 0 {
            text.push_str("produces = { no-such-queue = 1 }\n");
        }
    }
    (id, text, expected)
}

/// What became of one submitted release.
#[derive(Debug)]
struct Submitted {
    expected: Expected,
    submitted: Instant,
    /// Its final status and how long it took, once it has one.
    ended: Option<(String, Duration)>,
}

#[derive(Debug, Default)]
struct Ledger {
    releases: BTreeMap<usize, (String, Submitted)>,
    /// Submitting stops when this is set.
    stop: bool,
    /// Intake answered 5xx or not at all: tried again.
    intake_retries: usize,
}

impl Ledger {
    fn in_flight(&self) -> usize {
        self.releases
            .values()
            .filter(|(_, release)| release.ended.is_none())
            .count()
    }
}

/// Submits releases, keeping `in_flight` of them going, and follows each to its end.
async fn submitter(
    ledger: Arc<Mutex<Ledger>>,
    bus: Bus,
    intake: String,
    publisher: String,
    in_flight: usize,
    seed: u64,
) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("an HTTP client");
    let mut rng = Rng(seed ^ 0x5eed);
    let mut next = 0usize;
    // A release made but not yet accepted (intake failed): submitted again as it was.
    let mut pending: Option<(String, String, Expected)> = None;
    loop {
        // Follow every release in flight.
        let open: Vec<(usize, String)> = {
            let ledger = ledger.lock().expect("ledger");
            ledger
                .releases
                .iter()
                .filter(|(_, (_, release))| release.ended.is_none())
                .map(|(n, (id, _))| (*n, id.clone()))
                .collect()
        };
        for (n, id) in open {
            let Ok(release_id) = id.parse::<ReleaseId>() else {
                continue;
            };
            // The stream may be electing a leader: try again next round.
            let Ok(loaded) = bus.load(&AggregateId::Release(release_id)).await else {
                continue;
            };
            if let Ok(Some(state)) = ReleaseState::fold(&loaded.events) {
                if state.status.is_final() {
                    let mut ledger = ledger.lock().expect("ledger");
                    if let Some((_, release)) = ledger.releases.get_mut(&n) {
                        release.ended =
                            Some((state.status.to_string(), release.submitted.elapsed()));
                    }
                }
            }
        }
        let (stop, open) = {
            let ledger = ledger.lock().expect("ledger");
            (ledger.stop, ledger.in_flight())
        };
        if stop && open == 0 {
            return;
        }
        if !stop && open < in_flight {
            let (id, text, expected) = pending.take().unwrap_or_else(|| release(next, &mut rng));
            let answer = http
                .post(format!("http://{intake}/v1/releases"))
                .bearer_auth(&publisher)
                .header("content-type", "application/toml")
                .body(text.clone())
                .send()
                .await;
            let status = answer.as_ref().map(|answer| answer.status().as_u16()).ok();
            let accepted = match status {
                Some(200..=299) => Some(None),
                // Submitted once already (an earlier answer was lost): it is in flight.
                Some(409) => Some(None),
                Some(code @ 400..=499) => {
                    let body = match answer {
                        Ok(answer) => answer.text().await.unwrap_or_default(),
                        Err(_) => String::new(),
                    };
                    Some(Some(format!("refused by intake ({code}): {}", body.trim())))
                }
                _ => None,
            };
            match accepted {
                Some(refused) => {
                    let mut ledger = ledger.lock().expect("ledger");
                    let ended = refused.map(|reason| (reason, Duration::ZERO));
                    ledger.releases.insert(
                        next,
                        (
                            id,
                            Submitted {
                                expected,
                                submitted: Instant::now(),
                                ended,
                            },
                        ),
                    );
                    next += 1;
                }
                None => {
                    ledger.lock().expect("ledger").intake_retries += 1;
                    pending = Some((id, text, expected));
                }
            }
        }
        // Real time on purpose (the soak is a wall-clock experiment, no Clock drives it): each
        // round reloads the releases in flight from NATS, which doubles as the check that the
        // cluster answers during a node loss; a stream follower would see a release end up to
        // 300 ms sooner, not differently.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// One line of the deploy log.
#[derive(Debug, Clone)]
struct Line {
    kind: String,
    release: String,
    step: String,
    attempt: u32,
    form: String,
    worker: u32,
    pid: u32,
    code: Option<i32>,
}

fn parse_log(text: &str) -> anyhow::Result<Vec<Line>> {
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let parsed = (|| {
                Some(Line {
                    kind: fields.first()?.to_string(),
                    release: fields.get(1)?.to_string(),
                    step: fields.get(2)?.to_string(),
                    attempt: fields.get(3)?.parse().ok()?,
                    form: fields.get(4)?.to_string(),
                    worker: fields.get(5)?.parse().ok()?,
                    pid: fields.get(6)?.parse().ok()?,
                    code: fields.get(7).and_then(|code| code.parse().ok()),
                })
            })();
            parsed.with_context(|| format!("a deploy log line that does not parse: {line:?}"))
        })
        .collect()
}

/// What the deploy log says.
#[derive(Debug, Default)]
struct Commands {
    started: usize,
    /// Commands whose worker was killed while they ran, and which ran on to their end.
    orphans: usize,
    /// Re-runs of a (release, step, form) after its worker died while the command ran.
    reruns_mid_command: usize,
    /// Re-runs after the command had finished but its worker died before recording it.
    reruns_after_command: usize,
    violations: Vec<String>,
}

fn check_commands(
    lines: &[Line],
    killed_workers: &BTreeSet<u32>,
    rolled_back: &BTreeSet<String>,
) -> Commands {
    let mut out = Commands::default();
    // Per command run (script pid): its start and its end.
    let mut ends: HashMap<u32, &Line> = HashMap::new();
    for line in lines.iter().filter(|line| line.kind != "start") {
        ends.insert(line.pid, line);
        if line.kind == "orphan" {
            out.orphans += 1;
        }
    }
    let mut runs: BTreeMap<(String, String, String), Vec<&Line>> = BTreeMap::new();
    for line in lines.iter().filter(|line| line.kind == "start") {
        out.started += 1;
        runs.entry((line.release.clone(), line.step.clone(), line.form.clone()))
            .or_default()
            .push(line);
    }
    for ((release, step, form), starts) in &runs {
        // At most one successful completion per attempt by a worker that lived on (a
        // rollback taken over after its worker died keeps the attempt number).
        let mut per_attempt: BTreeMap<u32, usize> = BTreeMap::new();
        for start in starts {
            let succeeded = ends
                .get(&start.pid)
                .is_some_and(|end| end.kind == "done" && end.code == Some(0));
            if succeeded && !killed_workers.contains(&start.worker) {
                *per_attempt.entry(start.attempt).or_default() += 1;
            }
        }
        for (attempt, succeeded) in per_attempt {
            if succeeded > 1 {
                out.violations.push(format!(
                    "{release} {step} ({form}) attempt {attempt}: succeeded {succeeded} times"
                ));
            }
        }
        // Every run but the last was cut short by its worker's death.
        for (index, start) in starts.iter().enumerate() {
            let last = index + 1 == starts.len();
            let end = ends.get(&start.pid);
            let worker_killed = killed_workers.contains(&start.worker);
            match (last, end.map(|end| end.kind.as_str()), worker_killed) {
                (false, Some("done"), true) => out.reruns_after_command += 1,
                (false, _, true) => out.reruns_mid_command += 1,
                (false, _, false) => out.violations.push(format!(
                    "{release} {step} ({form}) ran again after attempt {} although its worker (pid {}) lived",
                    start.attempt, start.worker
                )),
                (true, None, false) => out.violations.push(format!(
                    "{release} {step} ({form}) attempt {}: the command never finished and its worker (pid {}) lived",
                    start.attempt, start.worker
                )),
                // A release that ended rolled back undoes the step instead of running it
                // again (`check_rolled_back` checks that nothing of it stayed applied).
                (true, Some("orphan"), true) | (true, None, true)
                    if rolled_back.contains(release) => {}
                (true, Some("orphan"), true) | (true, None, true) => out.violations.push(format!(
                    "{release} {step} ({form}): its last run (attempt {}) lost its worker and nobody ran it again",
                    start.attempt
                )),
                (true, _, _) => {}
            }
        }
    }
    out
}

/// A release that ended rolled back left nothing applied: in every environment, each step
/// whose deploy command succeeded (its worker alive or not) was undone (`rollback` or
/// `remove` succeeded) after the last such deploy ended. The log is in the order things
/// happened, so a deploy that ran on after its worker died and ended after the undo counts as
/// left applied.
fn check_rolled_back(lines: &[Line], rolled_back: &BTreeSet<String>) -> Vec<String> {
    let ends = |forms: &[&str]| {
        let mut last: BTreeMap<(&str, &str), usize> = BTreeMap::new();
        for (index, line) in lines.iter().enumerate() {
            if line.kind != "start"
                && line.code == Some(0)
                && forms.contains(&line.form.as_str())
                && rolled_back.contains(&line.release)
            {
                last.insert((line.release.as_str(), line.step.as_str()), index);
            }
        }
        last
    };
    let undone = ends(&["rollback", "remove"]);
    ends(&["deploy"])
        .into_iter()
        .filter(|(key, applied)| undone.get(key).is_none_or(|undo| undo < applied))
        .map(|((release, step), _)| {
            format!("{release} ended rolled back but {step} stayed applied: its deploy succeeded and nothing undid it after")
        })
        .collect()
}

/// Resident memory samples of one service: (time since the soak started, KiB), and the
/// anonymous part of each (heap and stacks, without the binary's pages), to tell which grew.
#[derive(Debug, Default)]
struct Rss {
    samples: Vec<(Duration, u64)>,
    anon: Vec<(Duration, u64)>,
}

struct Soak {
    args: Args,
    deployment: Deployment,
    cluster: NatsCluster,
    services: Vec<ServiceProcess>,
    started: Instant,
    rng: Rng,
    /// Promotion workers (and any service) the soak killed or that exited on their own.
    killed_workers: BTreeSet<u32>,
    kills: BTreeMap<&'static str, usize>,
    /// As the admin user, to find the planner that leads.
    bus: Bus,
    failures: Vec<String>,
    rss: BTreeMap<String, Rss>,
    /// NATS nodes down, and when each comes back.
    down: Vec<(usize, Instant)>,
}

impl Soak {
    fn service(&mut self, name: &str) -> &mut ServiceProcess {
        self.services
            .iter_mut()
            .find(|service| service.name == name)
            .expect("a started service")
    }

    fn kill_worker(&mut self) -> anyhow::Result<()> {
        let index = 1 + self.rng.below(self.args.workers);
        let name = format!("promoter-{index}");
        let service = self.service(&name);
        let pid = service.kill();
        service.restart()?;
        self.killed_workers.insert(pid);
        *self.kills.entry("worker").or_default() += 1;
        self.say(&format!("killed {name} (pid {pid}), started again"));
        Ok(())
    }

    /// Kills the planner replica that holds the planner's leader lease (any one when none
    /// holds it now) and starts it again.
    async fn kill_planner(&mut self) -> anyhow::Result<()> {
        let leader = match self.bus.leader("planner").await {
            Ok(record) => record.map(|record| record.holder),
            Err(_) => None,
        };
        let name = match &leader {
            Some(holder) if self.services.iter().any(|service| &service.name == holder) => {
                holder.clone()
            }
            _ => format!("planner-{}", 1 + self.rng.below(self.args.planners.max(1))),
        };
        let service = self.service(&name);
        let pid = service.kill();
        service.restart()?;
        let what = if leader.as_deref() == Some(name.as_str()) {
            *self.kills.entry("planner leader").or_default() += 1;
            "the leading planner"
        } else {
            *self.kills.entry("planner").or_default() += 1;
            "a planner (none held the lease)"
        };
        self.say(&format!("killed {what}, {name} (pid {pid}), started again"));
        Ok(())
    }

    async fn kill_nats(&mut self) {
        let up: Vec<usize> = (0..self.cluster.size())
            .filter(|index| !self.down.iter().any(|(down, _)| down == index))
            .collect();
        // Keep a quorum: never more than one node down.
        if up.len() < self.cluster.size() {
            return;
        }
        let index = up[self.rng.below(up.len())];
        self.cluster.kill(index).await;
        self.down
            .push((index, Instant::now() + self.args.nats_down_for));
        *self.kills.entry("nats").or_default() += 1;
        self.say(&format!("killed NATS node {}", index + 1));
    }

    async fn revive_nats(&mut self, all: bool) {
        let now = Instant::now();
        let due: Vec<usize> = self
            .down
            .iter()
            .filter(|(_, at)| all || *at <= now)
            .map(|(index, _)| *index)
            .collect();
        for index in due {
            self.down.retain(|(down, _)| *down != index);
            match self.cluster.restart(index).await {
                Ok(()) => self.say(&format!("NATS node {} is back", index + 1)),
                Err(error) => self.failures.push(format!(
                    "NATS node {} did not come back: {error:#}",
                    index + 1
                )),
            }
        }
    }

    /// Restarts what exited without being killed, and records it as a failure.
    fn watch_exits(&mut self) -> anyhow::Result<()> {
        let mut exited = Vec::new();
        for service in &mut self.services {
            if !service.is_running() {
                // Its commands died with it (a failure of its own, reported below), so the
                // deploy log's re-runs after it are not counted against the others.
                self.killed_workers.insert(service.pid());
                exited.push(format!(
                    "{} exited on its own; the end of its log:\n{}",
                    service.name,
                    service.log_tail(30)
                ));
                service.restart()?;
            }
        }
        for failure in exited {
            self.say(failure.lines().next().unwrap_or_default());
            self.failures.push(failure);
        }
        Ok(())
    }

    fn sample_rss(&mut self) {
        let at = self.started.elapsed();
        for service in &self.services {
            if let Some(kib) = service.rss_kib() {
                let rss = self.rss.entry(service.name.clone()).or_default();
                rss.samples.push((at, kib));
                if let Some(anon) = service.rss_anon_kib() {
                    rss.anon.push((at, anon));
                }
            }
        }
    }

    fn say(&self, what: &str) {
        let at = self.started.elapsed().as_secs_f64();
        println!("[{at:7.1}s] {what}");
    }
}

fn token_entries(entries: &[railyard_http::TokenEntry]) -> String {
    entries
        .iter()
        .map(|entry| {
            let roles: Vec<String> = entry
                .roles
                .iter()
                .filter_map(|role| {
                    serde_json::to_value(role)
                        .ok()
                        .and_then(|value| value.as_str().map(str::to_owned))
                })
                .collect();
            format!(
                "[[tokens]]\nidentity = {:?}\nroles = {roles:?}\nsha256 = {:?}\n",
                entry.identity, entry.sha256
            )
        })
        .collect()
}

fn railyard_binary(args: &Args) -> anyhow::Result<PathBuf> {
    if let Some(bin) = &args.railyard {
        return Ok(bin.clone());
    }
    // target/debug/examples/soak -> target/debug/railyard
    let exe = std::env::current_exe()?;
    let debug = exe
        .parent()
        .and_then(Path::parent)
        .context("this program's directory has no parent")?;
    Ok(debug.join("railyard"))
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    match runtime.block_on(soak(args)) {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(error) => {
            eprintln!("soak: {error:#}");
            std::process::ExitCode::from(2)
        }
    }
}

async fn soak(args: Args) -> anyhow::Result<bool> {
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|since| since.as_nanos() as u64)
            .unwrap_or(1)
    });
    let bin = railyard_binary(&args)?;
    let dir = tempfile::Builder::new()
        .prefix("railyard-soak-")
        .tempdir()?;
    println!(
        "soak: {} of releases and kills (workers every {}, NATS nodes every {} for {}, the planner every {}), seed {seed}, audit page cache {} MiB, {}",
        humantime::format_duration(args.duration),
        humantime::format_duration(args.worker_kill_every),
        humantime::format_duration(args.nats_kill_every),
        humantime::format_duration(args.nats_down_for),
        humantime::format_duration(args.planner_kill_every),
        args.audit_cache_mb,
        bin.display()
    );
    let setup = Instant::now();
    let (deployment, cluster) = Deployment::start(&bin, dir.path(), 3).await?;

    // The estate, the deploy command and its log, the tokens and the signing keys.
    let script = dir.path().join("deploy.sh");
    let deploy_log = dir.path().join("deploy.log");
    std::fs::write(&script, DEPLOY_SCRIPT)?;
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
    }
    std::fs::write(&deploy_log, "")?;
    std::fs::write(
        dir.path().join("railyard.toml"),
        catalog(&script, &deploy_log, &args),
    )?;
    let (publisher, publisher_entry) =
        generate_token("ci", BTreeSet::from([Role::Publisher]), Vec::new());
    let (auditor, auditor_entry) =
        generate_token("auditor", BTreeSet::from([Role::Auditor]), Vec::new());
    std::fs::write(
        dir.path().join("tokens.toml"),
        token_entries(&[publisher_entry, auditor_entry]),
    )?;
    deployment.authority_keys(&["planner", "promoter"])?;

    let slack = SlackStandIn::default();
    let slack_served = slack.serve().await?;
    let store = |name: &str| deployment.path(name).display().to_string();
    let strings = |args: &[&str]| args.iter().map(|arg| (*arg).to_owned()).collect::<Vec<_>>();
    let mut services = vec![deployment.spawn("intake", "intake", &strings(&["intake"]), &[])?];
    for index in 1..=args.planners.max(1) {
        let name = format!("planner-{index}");
        services.push(deployment.spawn(
            &name,
            "planner",
            &strings(&["planner", "--store", &store(&name), "--replica-id", &name]),
            &[],
        )?);
    }
    for index in 1..=args.workers {
        let name = format!("promoter-{index}");
        services.push(deployment.spawn(
            &name,
            "promoter",
            &strings(&[
                "promoter",
                "--store",
                &store(&name),
                "--worker-id",
                &format!("worker-{index}"),
            ]),
            &[],
        )?);
    }
    services.push(deployment.spawn(
        "audit",
        "audit",
        &strings(&[
            "audit",
            "serve",
            "--store",
            &store("audit"),
            "--cache-mb",
            &args.audit_cache_mb.to_string(),
        ]),
        &[],
    )?);
    services.push(deployment.spawn(
        "notify",
        "notify",
        &strings(&[
            "notify",
            "--store",
            &store("notify"),
            "--slack-api-url",
            &slack_served.url,
            "--slack-pacing",
            "0s",
        ]),
        &[(
            "RAILYARD_SLACK_TOKEN".to_owned(),
            SLACK_BOT_TOKEN.to_owned(),
        )],
    )?);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    for service in &services {
        let address = service.http().to_owned();
        railyard_testkit::wait_until(
            &format!("{} to be ready", service.name),
            Duration::from_secs(60),
            || async {
                anyhow::ensure!(
                    service.is_running(),
                    "{} exited:\n{}",
                    service.name,
                    service.log_tail(30)
                );
                let answer = http.get(format!("http://{address}/readyz")).send().await;
                Ok(answer
                    .ok()
                    .filter(|answer| answer.status().is_success())
                    .map(|_| ()))
            },
        )
        .await?;
    }
    println!(
        "soak: cluster and {} services ready after {:.1}s in {}",
        services.len(),
        setup.elapsed().as_secs_f64(),
        dir.path().display()
    );

    let (user, password) = Deployment::admin();
    let bus = Bus::connect(
        &deployment.url,
        BusConfig {
            manage_topology: false,
            credentials: Some(NatsCredentials { user, password }),
            tls_ca: Some(deployment.ca.clone()),
            ..BusConfig::default()
        },
    )
    .await?;
    let intake = services[0].http().to_owned();
    let audit = services
        .iter()
        .find(|service| service.name == "audit")
        .map(|service| service.http().to_owned())
        .context("the audit service")?;

    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let follow = tokio::spawn(submitter(
        Arc::clone(&ledger),
        bus.clone(),
        intake,
        publisher,
        args.in_flight,
        seed,
    ));

    // Ctrl-C or SIGTERM ends the run; returning drops the services and the cluster, which
    // kills their processes.
    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let flag = Arc::clone(&interrupted);
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
            flag.store(true, Ordering::SeqCst);
        });
    }

    let started = Instant::now();
    let mut soak = Soak {
        rng: Rng(seed),
        args,
        deployment,
        cluster,
        services,
        started,
        killed_workers: BTreeSet::new(),
        kills: BTreeMap::new(),
        bus: bus.clone(),
        failures: Vec::new(),
        rss: BTreeMap::new(),
        down: Vec::new(),
    };
    let every = |interval: Duration| (!interval.is_zero()).then_some(interval);
    let mut next_worker = every(soak.args.worker_kill_every).map(|every| started + every);
    let mut next_nats = every(soak.args.nats_kill_every).map(|every| started + every);
    let mut next_planner = every(soak.args.planner_kill_every).map(|every| started + every);
    let mut next_sample = started;
    let end = started + soak.args.duration;
    let mut draining = false;
    let drain_end = end + soak.args.drain;
    loop {
        if interrupted.load(Ordering::SeqCst) {
            follow.abort();
            anyhow::bail!("interrupted: the services and the NATS nodes were stopped");
        }
        let now = Instant::now();
        if now >= next_sample {
            soak.sample_rss();
            next_sample += Duration::from_secs(5);
        }
        soak.watch_exits()?;
        if !draining && now >= end {
            draining = true;
            ledger.lock().expect("ledger").stop = true;
            soak.revive_nats(true).await;
            let open = ledger.lock().expect("ledger").in_flight();
            soak.say(&format!(
                "stopped submitting and killing; {open} releases in flight"
            ));
        }
        if !draining {
            if next_worker.is_some_and(|at| now >= at) {
                soak.kill_worker()?;
                next_worker = next_worker.map(|at| at + soak.args.worker_kill_every);
            }
            if next_planner.is_some_and(|at| now >= at) {
                soak.kill_planner().await?;
                next_planner = next_planner.map(|at| at + soak.args.planner_kill_every);
            }
            if next_nats.is_some_and(|at| now >= at) {
                soak.kill_nats().await;
                next_nats = next_nats.map(|at| at + soak.args.nats_kill_every);
            }
            soak.revive_nats(false).await;
        }
        if draining && follow.is_finished() {
            break;
        }
        if now >= drain_end {
            let open: Vec<String> = {
                let ledger = ledger.lock().expect("ledger");
                ledger
                    .releases
                    .values()
                    .filter(|(_, release)| release.ended.is_none())
                    .map(|(id, _)| id.clone())
                    .collect()
            };
            soak.failures.push(format!(
                "releases: {} had not ended {} after the soak: {}",
                open.len(),
                humantime::format_duration(soak.args.drain),
                open.join(", ")
            ));
            follow.abort();
            break;
        }
        // The chaos schedule's tick: kills happen at wall-clock times (every 20 s, 60 s, 90 s)
        // against real processes, so this waits in real time by design.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    soak.sample_rss();
    soak.say("drained");

    let verdict = check(&mut soak, &ledger, &bus, &audit, &auditor, &deploy_log).await?;
    drop(slack_served);
    let calls = slack.calls().len();
    println!("slack: the notifier made {calls} Web API calls");
    if !verdict || soak.args.keep {
        let kept = dir.keep();
        println!(
            "soak: logs, stores and the deploy log kept in {}",
            kept.display()
        );
    }
    Ok(verdict)
}

async fn check(
    soak: &mut Soak,
    ledger: &Mutex<Ledger>,
    bus: &Bus,
    audit: &str,
    auditor: &str,
    deploy_log: &Path,
) -> anyhow::Result<bool> {
    let mut failures = std::mem::take(&mut soak.failures);

    // 1. Every release ended, as its estate says it must.
    let (submitted, outcomes, durations, retries) = {
        let ledger = ledger.lock().expect("ledger");
        let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
        let mut durations = Vec::new();
        for (id, release) in ledger.releases.values() {
            match &release.ended {
                None => {}
                Some((outcome, took)) => {
                    let key = if outcome.starts_with("refused by intake") {
                        "refused by intake".to_owned()
                    } else {
                        outcome.clone()
                    };
                    *outcomes.entry(key).or_default() += 1;
                    durations.push(*took);
                    if !release.expected.matches(outcome) {
                        failures.push(format!(
                            "releases: {id} ended {outcome}, expected {}",
                            release.expected.name()
                        ));
                    }
                }
            }
        }
        (
            ledger.releases.len(),
            outcomes,
            durations,
            ledger.intake_retries,
        )
    };
    let mut durations = durations;
    durations.sort();
    let percentile = |p: usize| {
        durations
            .get((durations.len() * p / 100).min(durations.len().saturating_sub(1)))
            .map(|d| format!("{:.1}s", d.as_secs_f64()))
            .unwrap_or_else(|| "-".to_owned())
    };
    if submitted == 0 {
        failures.push("releases: none was submitted".to_owned());
    }

    // 2. The deploy commands' own log.
    let lines = parse_log(&std::fs::read_to_string(deploy_log)?)?;
    let rolled_back: BTreeSet<String> = {
        let ledger = ledger.lock().expect("ledger");
        ledger
            .releases
            .values()
            .filter(|(_, release)| {
                release
                    .ended
                    .as_ref()
                    .is_some_and(|(outcome, _)| outcome == "rolled back")
            })
            .map(|(id, _)| id.clone())
            .collect()
    };
    let commands = check_commands(&lines, &soak.killed_workers, &rolled_back);
    for violation in &commands.violations {
        // What the workers said about that release: why a living worker's run was run again
        // (a lease lost, a task that lost NATS) is in their warnings.
        let release = violation.split_whitespace().next().unwrap_or_default();
        let mut evidence = Vec::new();
        for service in soak
            .services
            .iter()
            .filter(|s| s.name.starts_with("promoter"))
        {
            let text = std::fs::read_to_string(service.log_path()).unwrap_or_default();
            evidence.extend(
                text.lines()
                    .filter(|line| {
                        line.contains(release) && (line.contains("WARN") || line.contains("ERROR"))
                    })
                    .map(|line| format!("    {}: {line}", service.name)),
            );
        }
        let shown = &evidence[evidence.len().saturating_sub(12)..];
        failures.push(format!(
            "deploy log: {violation}{}{}",
            if shown.is_empty() { "" } else { "\n" },
            shown.join("\n")
        ));
    }
    for left in check_rolled_back(&lines, &rolled_back) {
        failures.push(format!("deploy log: {left}"));
    }

    // 3. The audit record equals the stream (it may still be catching up after a node loss).
    let verify_started = Instant::now();
    let mut verified = None;
    let mut last = String::new();
    while verify_started.elapsed() < Duration::from_secs(120) {
        let out = tokio::process::Command::new(&soak.deployment.bin)
            .args(["audit", "verify", "--url", &format!("http://{audit}")])
            .env("RAILYARD_TOKEN", auditor)
            .output()
            .await?;
        last = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() {
            verified = Some(verify_started.elapsed());
            break;
        }
        // Real time on purpose: the audit service, another process, catches up with the
        // stream on its own; `audit verify` (a command run again) is the only question to ask.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    match verified {
        Some(after) => println!(
            "audit: railyard audit verify passed (after {:.1}s): {}",
            after.as_secs_f64(),
            last.lines().next().unwrap_or_default()
        ),
        None => failures.push(format!(
            "audit: railyard audit verify did not pass within 120s: {}",
            last.trim()
        )),
    }

    // 4. Nothing in the dead-letter stream.
    match bus.dead_letter_count().await {
        Ok(0) => {}
        Ok(count) => {
            let letters = bus.dead_letters().await.unwrap_or_default();
            failures.push(format!(
                "dead letters: {count} in RAILYARD_DLQ: {}",
                letters
                    .iter()
                    .map(|letter| format!("{letter:?}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
        }
        Err(error) => failures.push(format!("dead letters: cannot count them: {error}")),
    }

    // 5. No panic and no refused permission in any service's log.
    for service in &soak.services {
        let log = std::fs::read_to_string(service.log_path()).unwrap_or_default();
        for needle in ["panicked at", "Permissions Violation"] {
            if let Some(line) = log.lines().find(|line| line.contains(needle)) {
                failures.push(format!("logs: {} logged {line:?}", service.name));
            }
        }
    }

    // 6. Resident memory after the warm-up.
    let warm_up = soak.args.warm_up;
    let tolerance = soak.args.rss_tolerance;
    let mut rss_lines = Vec::new();
    for (name, rss) in &soak.rss {
        let after: Vec<&(Duration, u64)> = rss
            .samples
            .iter()
            .filter(|(at, _)| *at >= warm_up)
            .collect();
        let (Some(first), Some(last)) = (after.first(), after.last()) else {
            rss_lines.push(format!("  {name:<11} no sample after the warm-up"));
            continue;
        };
        let max = after.iter().map(|(_, kib)| *kib).max().unwrap_or(0);
        let growth = (last.1 as f64 / first.1 as f64 - 1.0) * 100.0;
        // The course in between (at a quarter, half and three quarters of the samples), to
        // tell growth that levels off from growth that goes on.
        let course: Vec<String> = [1, 2, 3]
            .iter()
            .map(|q| format!("{:.1}", after[after.len() * q / 4].1 as f64 / 1024.0))
            .collect();
        let anon: Vec<u64> = rss
            .anon
            .iter()
            .filter(|(at, _)| *at >= warm_up)
            .map(|(_, kib)| *kib)
            .collect();
        let anon = match (anon.first(), anon.last()) {
            (Some(first), Some(last)) => format!(
                "; anonymous {:.1} -> {:.1} MiB",
                *first as f64 / 1024.0,
                *last as f64 / 1024.0
            ),
            _ => String::new(),
        };
        rss_lines.push(format!(
            "  {name:<11} {:>7.1} MiB at {:>4.0}s -> {:>7.1} MiB at {:>4.0}s ({growth:+.1} %), max {:.1} MiB; quarters {}{anon}",
            first.1 as f64 / 1024.0,
            first.0.as_secs_f64(),
            last.1 as f64 / 1024.0,
            last.0.as_secs_f64(),
            max as f64 / 1024.0,
            course.join(" / ")
        ));
        if last.1 * 100 > first.1 * (100 + tolerance) {
            failures.push(format!(
                "rss: {name} grew {growth:.1} % after the warm-up (more than {tolerance} %)"
            ));
        }
    }

    // The summary.
    println!("\n=== soak summary ===");
    println!(
        "releases: {submitted} submitted; {} (intake retried {retries} times); time to end p50 {} p90 {} max {}",
        outcomes
            .iter()
            .map(|(outcome, count)| format!("{count} {outcome}"))
            .collect::<Vec<_>>()
            .join(", "),
        percentile(50),
        percentile(90),
        percentile(100)
    );
    println!(
        "kills: {} workers, {} NATS nodes, {} leading planners and {} other planners (of {} replicas)",
        soak.kills.get("worker").unwrap_or(&0),
        soak.kills.get("nats").unwrap_or(&0),
        soak.kills.get("planner leader").unwrap_or(&0),
        soak.kills.get("planner").unwrap_or(&0),
        soak.args.planners.max(1)
    );
    println!(
        "commands: {} started; re-runs {} after the worker died mid-command, {} after the command but before the worker recorded it; {} ran on after their worker died",
        commands.started,
        commands.reruns_mid_command,
        commands.reruns_after_command,
        commands.orphans
    );
    println!(
        "rss after a {} warm-up:",
        humantime::format_duration(warm_up)
    );
    for line in rss_lines {
        println!("{line}");
    }
    if failures.is_empty() {
        println!("verdict: PASS");
        Ok(true)
    } else {
        println!("verdict: FAIL");
        for failure in &failures {
            println!("  - {failure}");
        }
        Ok(false)
    }
}

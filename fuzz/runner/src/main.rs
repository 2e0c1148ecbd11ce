//! `just fuzz`'s driver. Seeds each fuzz target's corpus (`fuzz/corpus/<target>/`) from the
//! repository's own fixtures, converted to the target's input framing, then runs every target
//! binary for the given time with libFuzzer and prints runs, execs/s and corpus size per
//! target. A crash, a panic, a timeout or running out of memory fails the run, with the
//! reproducer's path and the end of the target's log.
//!
//! `runner --bin-dir <dir> --seconds <n> [--shared <corpus dir>] [target ...]`, run from the
//! repository root. `--shared` adds the shared CDEvents and GitHub corpus (kept outside the
//! repository) as extra read-only seed directories when it exists.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use serde_json::{Value, json};

/// Every fuzz target, in the order they run.
const TARGETS: &[&str] = &[
    "cdevents",
    "github",
    "gitlab",
    "catalog",
    "release",
    "inventory",
    "range",
    "envelope",
    "expand",
];

/// The step values `expand` seeds fill their placeholders with.
const VALUES: &str = "service=orders-api\nversion=2.4.0\nfrom_version=2.3.1\n\
     artifact=pkg:oci/orders-api@sha256%3A0b31\nenv=production\nrelease=rel-1\nto=42\n\
     weight=10\ncolour=green\nstep=production:deploy:orders-api\nattempt=1";

/// Values an attacker would send as a version or artifact.
const HOSTILE: &[&str] = &[
    "version=1.0.0;curl x|sh",
    "version=$(id)",
    "version=`id`",
    "version={secret:TOKEN}",
    "artifact=../../etc/passwd",
    "artifact={version}{secret:LOOP}",
    "service={service}",
];

struct Args {
    bin_dir: PathBuf,
    seconds: u64,
    shared: Option<PathBuf>,
    targets: Vec<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut bin_dir = None;
    let mut seconds = 60;
    let mut shared = None;
    let mut targets = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--bin-dir" => bin_dir = Some(PathBuf::from(value("--bin-dir")?)),
            "--seconds" => {
                let text = value("--seconds")?;
                seconds = text
                    .parse()
                    .map_err(|_| format!("--seconds {text:?} is not a whole number of seconds"))?;
            }
            "--shared" => shared = Some(PathBuf::from(value("--shared")?)),
            target if TARGETS.contains(&target) => targets.push(target.to_owned()),
            other => {
                return Err(format!(
                    "unknown argument {other:?}: expected --bin-dir, --seconds, --shared or a target ({})",
                    TARGETS.join(", ")
                ));
            }
        }
    }
    if targets.is_empty() {
        targets = TARGETS.iter().map(|t| (*t).to_owned()).collect();
    }
    Ok(Args {
        bin_dir: bin_dir.ok_or("--bin-dir is missing: give the directory of the built targets")?,
        seconds,
        shared,
        targets,
    })
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(error) => {
            eprintln!("fuzz: {error}");
            return ExitCode::from(2);
        }
    };
    let root = PathBuf::from(".");
    let mut failed = Vec::new();
    let mut rows = Vec::new();
    let started = Instant::now();
    for target in &args.targets {
        let binary = args.bin_dir.join(target);
        if !binary.is_file() {
            eprintln!(
                "fuzz: {} is not built: run `just fuzz-build` first",
                binary.display()
            );
            return ExitCode::from(2);
        }
        let corpus = root.join("fuzz/corpus").join(target);
        let seeded = match seed(&root, target, &corpus) {
            Ok(count) => count,
            Err(error) => {
                eprintln!("fuzz: cannot seed {}: {error}", corpus.display());
                return ExitCode::from(2);
            }
        };
        let extra = shared_dirs(args.shared.as_deref(), target);
        eprintln!(
            "fuzz: {target}: {} s, {seeded} fixture seeds{}",
            args.seconds,
            if extra.is_empty() {
                String::new()
            } else {
                format!(", plus {}", join_paths(&extra))
            }
        );
        match run(&root, &binary, target, args.seconds, &corpus, &extra) {
            Ok(row) => rows.push(row),
            Err(error) => {
                eprintln!("fuzz: {target} FAILED\n{error}");
                failed.push(target.clone());
            }
        }
    }
    println!(
        "\n{:<10} {:>10} {:>9} {:>7} {:>7} {:>8}",
        "target", "runs", "execs/s", "new", "corpus", "rss MB"
    );
    for row in &rows {
        println!(
            "{:<10} {:>10} {:>9} {:>7} {:>7} {:>8}",
            row.target, row.runs, row.execs_per_sec, row.new_units, row.corpus, row.rss_mb
        );
    }
    println!(
        "fuzzed {} targets in {:.0} s",
        args.targets.len(),
        started.elapsed().as_secs_f64()
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "fuzz: {} crashed: {}; each reproducer is in fuzz/artifacts/<target>/ (run the target binary on it, and add it as a regression test)",
            failed.len(),
            failed.join(", ")
        );
        ExitCode::FAILURE
    }
}

struct Row {
    target: String,
    runs: String,
    execs_per_sec: String,
    new_units: String,
    corpus: usize,
    rss_mb: String,
}

/// Runs one target for `seconds`; its output goes to `fuzz/target/logs/<target>.log`.
fn run(
    root: &Path,
    binary: &Path,
    target: &str,
    seconds: u64,
    corpus: &Path,
    extra: &[PathBuf],
) -> Result<Row, String> {
    let artifacts = root.join("fuzz/artifacts").join(target);
    let logs = root.join("fuzz/target/logs");
    let log_path = logs.join(format!("{target}.log"));
    let io_error = |error: io::Error| error.to_string();
    fs::create_dir_all(&artifacts).map_err(io_error)?;
    fs::create_dir_all(&logs).map_err(io_error)?;
    let log = fs::File::create(&log_path).map_err(io_error)?;
    let status = Command::new(binary)
        .arg(format!("-max_total_time={seconds}"))
        .arg("-timeout=10")
        .arg("-rss_limit_mb=2048")
        .arg("-print_final_stats=1")
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg(corpus)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(io_error)?)
        .stderr(log)
        .status()
        .map_err(|error| format!("cannot start {}: {error}", binary.display()))?;
    let text = fs::read_to_string(&log_path).unwrap_or_default();
    if !status.success() {
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(format!(
            "{status}; the end of {}:\n{}\nreproduce: {} <the crash file above>",
            log_path.display(),
            tail.join("\n"),
            binary.display()
        ));
    }
    let stat = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(&format!("stat::{name}:")))
            .map_or("?".to_owned(), |v| v.trim().to_owned())
    };
    Ok(Row {
        target: target.to_owned(),
        runs: stat("number_of_executed_units"),
        execs_per_sec: stat("average_exec_per_sec"),
        new_units: stat("new_units_added"),
        corpus: fs::read_dir(corpus).map_or(0, |d| d.count()),
        rss_mb: stat("peak_rss_mb"),
    })
}

fn join_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The parts of the shared corpus that seed `target`, where they exist.
fn shared_dirs(shared: Option<&Path>, target: &str) -> Vec<PathBuf> {
    let Some(shared) = shared else {
        return Vec::new();
    };
    let parts: &[&str] = match target {
        "cdevents" => &["cdevents/v0.4.1/conformance", "cdevents/v0.5.1/conformance"],
        "github" => &["github/payload-examples/api.github.com"],
        _ => &[],
    };
    parts
        .iter()
        .map(|part| shared.join(part))
        .filter(|dir| dir.is_dir())
        .collect()
}

/// Writes the fixture seeds of `target` into `corpus` (named by content, so reruns overwrite
/// them); returns how many.
fn seed(root: &Path, target: &str, corpus: &Path) -> io::Result<usize> {
    fs::create_dir_all(corpus)?;
    let seeds = seeds(root, target)?;
    for seed in &seeds {
        fs::write(corpus.join(format!("seed-{:016x}", fnv1a(seed))), seed)?;
    }
    Ok(seeds.len())
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The files of `dir` ending in `.ext`, sorted.
fn files(dir: &Path, ext: &str) -> io::Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = fs::read_dir(dir)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<io::Result<_>>()?;
    out.retain(|p| p.extension().is_some_and(|e| e == ext));
    out.sort();
    Ok(out)
}

fn read_all(paths: &[PathBuf]) -> io::Result<Vec<Vec<u8>>> {
    paths.iter().map(fs::read).collect()
}

fn catalog_files(root: &Path) -> io::Result<Vec<PathBuf>> {
    let mut paths = files(&root.join("crates/railyard-core/tests/catalog"), "toml")?;
    paths.push(root.join("deploy/examples/railyard.toml"));
    paths.push(root.join("fuzz/catalog.toml"));
    Ok(paths)
}

fn seeds(root: &Path, target: &str) -> io::Result<Vec<Vec<u8>>> {
    match target {
        "catalog" => read_all(&catalog_files(root)?),
        "release" => {
            let mut paths = files(&root.join("crates/railyard-core/tests/release"), "toml")?;
            paths.extend(
                files(&root.join("deploy/examples"), "toml")?
                    .into_iter()
                    .filter(|p| p.to_string_lossy().contains("release-")),
            );
            read_all(&paths)
        }
        "inventory" => {
            let mut paths = files(&root.join("crates/railyard-core/tests/inventory"), "json")?;
            paths.push(root.join("deploy/examples/inventory.json"));
            read_all(&paths)
        }
        "range" => Ok([
            "3",
            "2..=3",
            ">=5",
            "0",
            "4294967295",
            " 1 ..= 2 ",
            "4..=4",
            "1..=4\n>=5",
            "2..=3\n1..=5",
            ">=0\n7",
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect()),
        "envelope" => envelope_seeds(root),
        "expand" => expand_seeds(root),
        door => Ok(delivery_seeds(root)?.remove(door).unwrap_or_default()),
    }
}

/// `name: value` lines, an empty line, the body: the framing of the intake targets.
fn delivery(headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in headers {
        out.extend_from_slice(format!("{name}: {value}\n").as_bytes());
    }
    out.push(b'\n');
    out.extend_from_slice(body);
    out
}

/// The intake mapping fixtures as deliveries, by target, the way the mapping test sends them.
fn delivery_seeds(root: &Path) -> io::Result<BTreeMap<&'static str, Vec<Vec<u8>>>> {
    let mut out: BTreeMap<&'static str, Vec<Vec<u8>>> = BTreeMap::new();
    let dir = root.join("crates/railyard-intake/tests/fixtures/mappings");
    for path in files(&dir, "json")? {
        let fixture: Value = serde_json::from_slice(&fs::read(&path)?)
            .map_err(|error| io::Error::other(format!("{}: {error}", path.display())))?;
        let body = &fixture["body"];
        let bytes = serde_json::to_vec_pretty(body).map_err(io::Error::other)?;
        let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        let context = &body["context"];
        let (id, source, kind) = (
            text(&context["id"]),
            text(&context["source"]),
            text(&context["type"]),
        );
        let json_type = ("content-type", "application/json");
        let door = text(&fixture["door"]);
        let (target, seed) = match door.as_str() {
            "cdevents" => ("cdevents", delivery(&[json_type], &bytes)),
            "cloudevents-structured" | "nats-structured" => {
                let structured = json!({
                    "specversion": "1.0", "id": id, "source": source, "type": kind,
                    "datacontenttype": "application/json", "data": body,
                });
                let structured =
                    serde_json::to_vec_pretty(&structured).map_err(io::Error::other)?;
                let headers = [("content-type", "application/cloudevents+json")];
                ("cdevents", delivery(&headers, &structured))
            }
            "cloudevents-binary" | "nats-binary" => {
                let headers = [
                    ("ce-specversion", "1.0"),
                    ("ce-id", id.as_str()),
                    ("ce-source", source.as_str()),
                    ("ce-type", kind.as_str()),
                    json_type,
                ];
                ("cdevents", delivery(&headers, &bytes))
            }
            "github" => {
                let (event, id) = (text(&fixture["event"]), text(&fixture["delivery"]));
                let headers = [
                    ("x-github-event", event.as_str()),
                    ("x-github-delivery", id.as_str()),
                    json_type,
                ];
                ("github", delivery(&headers, &bytes))
            }
            "gitlab" => {
                let (event, id) = (text(&fixture["event"]), text(&fixture["delivery"]));
                let headers = [
                    ("x-gitlab-event", event.as_str()),
                    ("x-gitlab-event-uuid", id.as_str()),
                    json_type,
                ];
                ("gitlab", delivery(&headers, &bytes))
            }
            _ => continue,
        };
        let seeds = out.entry(target).or_default();
        seeds.push(seed);
        // The body alone: a bare CDEvent, or a payload tried as every event type.
        seeds.push(bytes);
    }
    Ok(out)
}

/// Every event of the fold fixtures in a complete envelope, one by one and as the batches
/// the bus appends.
fn envelope_seeds(root: &Path) -> io::Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    let mut n = 0u64;
    for path in files(&root.join("crates/railyard-core/tests/fold"), "json")? {
        let fixture: Value = serde_json::from_slice(&fs::read(&path)?)
            .map_err(|error| io::Error::other(format!("{}: {error}", path.display())))?;
        let aggregate = fixture["aggregate"].as_str().unwrap_or("release.rel-1");
        let mut batch = Vec::new();
        for event in fixture["events"].as_array().into_iter().flatten() {
            n += 1;
            let mut envelope = json!({
                "event_id": format!("0190a000-0000-7000-8000-{n:012x}"),
                "aggregate": aggregate,
                "occurred_at": "2026-11-26T06:00:00Z",
                "actor": "fuzz",
                "correlation_id": "0190a000-0000-7000-8000-000000000000",
                "schema_version": 1,
            });
            if let (Some(envelope), Some(event)) = (envelope.as_object_mut(), event.as_object()) {
                envelope.extend(event.clone());
            }
            out.push(serde_json::to_vec(&envelope).map_err(io::Error::other)?);
            batch.push(envelope);
        }
        out.push(serde_json::to_vec(&json!({ "events": batch })).map_err(io::Error::other)?);
    }
    Ok(out)
}

/// Every quoted string with a placeholder in the catalog fixtures (commands and URLs), and
/// a few of Railyard's own forms, each with ordinary step values; the plain ones also with
/// hostile values.
fn expand_seeds(root: &Path) -> io::Result<Vec<Vec<u8>>> {
    let mut templates: Vec<String> = vec![
        "{version}".into(),
        "{secret:TOKEN}".into(),
        "https://ci.example/{service}/{version}?env={env}&t={secret:TOKEN}".into(),
        "deploy {service}@{version} to {env} at {weight}% {colour} {release} {to} {other} {secret:LOOP}".into(),
        "{secret:MISSING} {unclosed".into(),
    ];
    for path in catalog_files(root)? {
        let text = fs::read_to_string(&path)?;
        for (i, quoted) in text.split('"').enumerate() {
            if i % 2 == 1 && quoted.contains('{') && !quoted.contains('\n') {
                templates.push(quoted.to_owned());
            }
        }
    }
    templates.sort();
    templates.dedup();
    let mut out: Vec<Vec<u8>> = templates
        .iter()
        .map(|t| format!("{t}\n{VALUES}").into_bytes())
        .collect();
    for hostile in HOSTILE {
        out.push(format!("{{version}} {{artifact}} {{service}}\n{VALUES}\n{hostile}").into_bytes());
    }
    Ok(out)
}

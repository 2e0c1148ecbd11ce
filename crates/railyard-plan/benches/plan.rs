//! Planner benchmark: generated estates of 1k, 10k and 50k services (about four contract
//! edges each: queues, APIs, databases), three environments, a release changing 10% of the
//! services. For each size: plan time and peak memory, against a raw petgraph toposort of
//! the same step graph measured in the same run.
//!
//! `cargo bench -p railyard-plan --bench plan` (add `-- 1000 10000` to pick sizes).
//!
//! Memory is the peak resident set size (`VmHWM`) of a fresh child process per measurement,
//! reset with `/proc/self/clear_refs` once the input is built, minus the resident size at that
//! moment. The crate forbids unsafe code (workspace lint, which a bench cannot lift), so there
//! is no counting global allocator: resident memory counts pages, not bytes, and includes
//! what the allocator keeps.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Instant;

use petgraph::algo::toposort;
use petgraph::graph::{DiGraph, NodeIndex};
use railyard_core::catalog::{Api, Approval, Database, Deploy, Environment, Queue, Service};
use railyard_core::contract::Range;
use railyard_core::event::ReleaseRequested;
use railyard_core::inventory::{EnvInventory, RunningService};
use railyard_core::release::Migration;
use railyard_core::{
    ApiName, Catalog, Change, DatabaseName, Inventory, QueueName, ReleaseId, ServiceName,
};
use railyard_plan::{PlanInput, plan};

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) % n as u64) as usize
    }
}

fn simulated() -> Deploy {
    Deploy::Simulated {
        duration: None,
        fail_versions: Vec::new(),
        fail_rate: None,
    }
}

fn r(text: &str) -> Range {
    text.parse().expect("a range")
}

struct Estate {
    catalog: Catalog,
    inventory: Inventory,
    release: ReleaseRequested,
}

/// An acyclic estate: queue `q-i` is produced by service `2i`, API `a-i` served by `2i+1`,
/// each consumed by three services of higher index; database `d-j` is used by services
/// `10j..10j+5`. Everything runs everywhere at contract version 1; the release moves 10% of
/// the services to version 2 contracts, which orders producers and providers before their
/// changed consumers and migrations before their changed users.
fn estate(n: usize) -> Estate {
    let mut rng = Rng(n as u64);
    let name = |i: usize| -> ServiceName { format!("svc-{i:06}").parse().expect("a service name") };
    let mut catalog = Catalog::default();
    for (i, env) in ["dev", "staging", "production"].into_iter().enumerate() {
        catalog.environments.push(Environment {
            name: env.parse().expect("an env name"),
            after: (i > 0).then(|| ["dev", "staging"][i - 1].parse().expect("an env name")),
            approval: (env == "production").then(|| Approval {
                required: true,
                approvers: vec!["alice".to_owned()],
            }),
            freeze: Vec::new(),
            freeze_override_lead: None,
            on_failure: Default::default(),
            point_of_no_return: Default::default(),
        });
    }
    for i in 0..n {
        catalog.services.insert(
            name(i),
            Service {
                owner: None,
                slack_channel: None,
                match_: Default::default(),
                required_suites: Vec::new(),
                after: Vec::new(),
                deploy: simulated(),
                gates: Vec::new(),
                strategy: Default::default(),
                environments: BTreeMap::new(),
                env: Vec::new(),
                secrets: Vec::new(),
                workdir: None,
                user: None,
            },
        );
    }
    let later = |rng: &mut Rng, i: usize| -> Vec<usize> {
        if i + 1 >= n {
            return Vec::new();
        }
        let mut out: Vec<usize> = (0..3).map(|_| i + 1 + rng.below(n - i - 1)).collect();
        out.sort_unstable();
        out.dedup();
        out
    };
    let mut running: Vec<RunningService> = (0..n)
        .map(|_| RunningService {
            version: "1.0.0".to_owned(),
            artifact: None,
            commit: None,
            consumes: BTreeMap::new(),
            produces: BTreeMap::new(),
            provides: BTreeMap::new(),
            requires: BTreeMap::new(),
            schema: BTreeMap::new(),
            colour: None,
        })
        .collect();
    for i in 0..n / 2 {
        let (p, consumers) = (2 * i, later(&mut rng, 2 * i));
        let q: QueueName = format!("q-{i:06}").parse().expect("a queue name");
        running[p].produces.insert(q.clone(), 1);
        for &c in &consumers {
            running[c].consumes.insert(q.clone(), r("1..=2"));
        }
        let queue = Queue {
            producers: vec![name(p)],
            consumers: consumers.iter().map(|&c| name(c)).collect(),
        };
        catalog.queues.insert(q, queue);

        let (p, consumers) = (2 * i + 1, later(&mut rng, 2 * i + 1));
        let a: ApiName = format!("a-{i:06}").parse().expect("an api name");
        running[p].provides.insert(a.clone(), r("1..=2"));
        for &c in &consumers {
            running[c].requires.insert(a.clone(), r(">=1"));
        }
        let api = Api {
            provider: name(p),
            consumers: consumers.iter().map(|&c| name(c)).collect(),
        };
        catalog.apis.insert(a, api);
    }
    for j in 0..n / 10 {
        let d: DatabaseName = format!("d-{j:06}").parse().expect("a database name");
        let users: Vec<usize> = (10 * j..10 * j + 5).collect();
        for &u in &users {
            running[u].schema.insert(d.clone(), r("1..=2"));
        }
        catalog.databases.insert(
            d,
            Database {
                users: users.iter().map(|&u| name(u)).collect(),
                migrate: simulated(),
                env: Vec::new(),
                secrets: Vec::new(),
                workdir: None,
                user: None,
            },
        );
    }

    let changed: Vec<bool> = (0..n).map(|_| rng.below(10) == 0).collect();
    let mut changes: BTreeMap<usize, Change> = BTreeMap::new();
    for i in (0..n).filter(|&i| changed[i]) {
        changes.insert(
            i,
            Change {
                service: name(i),
                version: "2.0.0".to_owned(),
                artifact: None,
                commit: None,
                branch: None,
                authors: Vec::new(),
                produces: running[i].produces.keys().map(|q| (q.clone(), 2)).collect(),
                consumes: BTreeMap::new(),
                provides: running[i]
                    .provides
                    .keys()
                    .map(|a| (a.clone(), r("2..=3")))
                    .collect(),
                requires: BTreeMap::new(),
                schema: BTreeMap::new(),
                migrations: Vec::new(),
                after: Vec::new(),
            },
        );
    }
    for (q, queue) in &catalog.queues {
        let p = queue.producers[0].as_str()[4..]
            .parse::<usize>()
            .expect("an index");
        for c in &queue.consumers {
            let c = c.as_str()[4..].parse::<usize>().expect("an index");
            if let Some(change) = changes.get_mut(&c) {
                let read = if changed[p] { r("2..=3") } else { r("1..=3") };
                change.consumes.insert(q.clone(), read);
            }
        }
    }
    for (a, api) in &catalog.apis {
        let p = api.provider.as_str()[4..]
            .parse::<usize>()
            .expect("an index");
        for c in &api.consumers {
            let c = c.as_str()[4..].parse::<usize>().expect("an index");
            if let Some(change) = changes.get_mut(&c) {
                let req = if changed[p] { r(">=3") } else { r(">=1") };
                change.requires.insert(a.clone(), req);
            }
        }
    }
    for (d, db) in &catalog.databases {
        let users: Vec<usize> = db
            .users
            .iter()
            .map(|u| u.as_str()[4..].parse::<usize>().expect("an index"))
            .filter(|u| changed[*u])
            .collect();
        if let Some(&first) = users.first() {
            changes
                .get_mut(&first)
                .expect("a changed user")
                .migrations
                .push(Migration {
                    database: d.clone(),
                    to: 2,
                });
            for u in users {
                changes
                    .get_mut(&u)
                    .expect("a changed user")
                    .schema
                    .insert(d.clone(), r("2"));
            }
        }
    }
    let mut inventory = Inventory::default();
    let env = EnvInventory {
        services: running
            .into_iter()
            .enumerate()
            .map(|(i, r)| (name(i), r))
            .collect(),
        databases: catalog.databases.keys().map(|d| (d.clone(), 1)).collect(),
    };
    for e in &catalog.environments {
        inventory.0.insert(e.name.clone(), env.clone());
    }
    Estate {
        catalog,
        inventory,
        release: ReleaseRequested {
            release: ReleaseId::new("rel-bench").expect("a release id"),
            requested_by: "bench".to_owned(),
            changes: changes.into_values().collect(),
        },
    }
}

fn status_kb(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Resets the peak resident size; returns the resident size it starts from.
fn reset_peak() -> u64 {
    if std::fs::write("/proc/self/clear_refs", "5").is_err() {
        eprintln!("cannot reset the peak resident size: peak memory includes the input");
    }
    status_kb("VmRSS:")
}

fn median(mut ms: Vec<f64>) -> f64 {
    ms.sort_by(|a, b| a.total_cmp(b));
    ms[ms.len() / 2]
}

fn runs(n: usize) -> usize {
    if n >= 50_000 { 3 } else { 5 }
}

/// Child: plan `n` services; print time and memory; write the step graph to `graph`.
fn child_plan(n: usize, graph: &str) {
    let estate = estate(n);
    let input = PlanInput {
        catalog: &estate.catalog,
        release: &estate.release,
        inventory: &estate.inventory,
        in_flight: &[],
    };
    let base = reset_peak();
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..runs(n) {
        let start = Instant::now();
        let p = plan(&input).expect("the generated release plans");
        times.push(start.elapsed().as_secs_f64() * 1e3);
        last = Some(p);
    }
    let peak = status_kb("VmHWM:").saturating_sub(base);
    let p = last.expect("at least one run");
    let index: BTreeMap<&str, u32> = p
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.as_str(), i as u32))
        .collect();
    let mut bytes = Vec::with_capacity(8 + p.edges.len() * 8);
    bytes.extend_from_slice(&(p.steps.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&(p.edges.len() as u32).to_le_bytes());
    for e in &p.edges {
        bytes.extend_from_slice(&index[e.from.as_str()].to_le_bytes());
        bytes.extend_from_slice(&index[e.to.as_str()].to_le_bytes());
    }
    std::fs::write(graph, bytes).expect("write the step graph");
    println!(
        "plan {} {} {} {:.3} {}",
        estate.release.changes.len(),
        p.steps.len(),
        p.edges.len(),
        median(times),
        peak
    );
}

/// Child: read the step graph, build it in petgraph and toposort it; print time and memory.
fn child_toposort(n: usize, graph: &str) {
    let bytes = std::fs::read(graph).expect("read the step graph");
    let word = |i: usize| u32::from_le_bytes(bytes[i * 4..i * 4 + 4].try_into().expect("4 bytes"));
    let (nodes, edges) = (word(0) as usize, word(1) as usize);
    let pairs: Vec<(u32, u32)> = (0..edges)
        .map(|e| (word(2 + 2 * e), word(3 + 2 * e)))
        .collect();
    let base = reset_peak();
    let mut times = Vec::new();
    for _ in 0..runs(n) {
        let start = Instant::now();
        let mut g: DiGraph<(), (), u32> = DiGraph::with_capacity(nodes, pairs.len());
        for _ in 0..nodes {
            g.add_node(());
        }
        for &(a, b) in &pairs {
            g.add_edge(NodeIndex::new(a as usize), NodeIndex::new(b as usize), ());
        }
        let order = toposort(&g, None).expect("the plan is acyclic");
        assert_eq!(order.len(), nodes);
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    let peak = status_kb("VmHWM:").saturating_sub(base);
    println!("toposort {:.3} {}", median(times), peak);
}

fn run_child(args: &[String]) -> Vec<String> {
    let exe = std::env::current_exe().expect("the bench binary");
    let out = Command::new(exe)
        .args(args)
        .output()
        .expect("run the bench child");
    assert!(
        out.status.success(),
        "child {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--child-plan") => return child_plan(args[1].parse().expect("n"), &args[2]),
        Some("--child-toposort") => return child_toposort(args[1].parse().expect("n"), &args[2]),
        _ => {}
    }
    let sizes: Vec<usize> = {
        let given: Vec<usize> = args.iter().filter_map(|a| a.parse().ok()).collect();
        if given.is_empty() {
            vec![1_000, 10_000, 50_000]
        } else {
            given
        }
    };
    let dir = std::env::temp_dir().join(format!("railyard-plan-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    println!(
        "| services | changes | steps | edges | plan (median) | plan peak RSS | petgraph toposort | toposort peak RSS | plan / toposort |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for n in sizes {
        let graph = dir.join(format!("graph-{n}")).display().to_string();
        let p = run_child(&["--child-plan".into(), n.to_string(), graph.clone()]);
        let t = run_child(&["--child-toposort".into(), n.to_string(), graph]);
        let (plan_ms, topo_ms): (f64, f64) = (
            p[4].parse().expect("plan ms"),
            t[1].parse().expect("toposort ms"),
        );
        let (plan_kb, topo_kb): (u64, u64) = (
            p[5].parse().expect("plan kb"),
            t[2].parse().expect("toposort kb"),
        );
        println!(
            "| {n} | {} | {} | {} | {plan_ms:.1} ms | {:.1} MiB | {topo_ms:.2} ms | {:.1} MiB | {:.0}x |",
            p[1],
            p[2],
            p[3],
            plan_kb as f64 / 1024.0,
            topo_kb as f64 / 1024.0,
            plan_ms / topo_ms.max(1e-6)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

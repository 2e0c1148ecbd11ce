//! `railyard demo`: the example shop estate of `deploy/examples/` carried through what
//! Railyard can do today, for real — an embedded NATS, the catalog recorded, each example
//! release requested, planned or refused by the planner, recorded with optimistic
//! concurrency, then read back from the stream and folded. The promotion, audit, intake and
//! Slack parts of the story arrive with their issues; the demo says so rather than fake them.

use std::path::PathBuf;

use anyhow::Context;
use railyard_bus::Expected;
use railyard_core::event::{CatalogApplied, ReleasePlanned, ReleaseRejected, ReleaseRequested};
use railyard_core::{AggregateId, Clock, Envelope, Event, ReleaseState, SystemClock};
use railyard_planner::{Format, InFlight, PlanInput};

use crate::plan_cmd;
use crate::stack::Stack;

/// Flags of `railyard demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// The example estate: `railyard.toml`, `inventory.json` and `release-*.toml`.
    #[arg(long, default_value = "deploy/examples")]
    pub estate: PathBuf,
    /// Use this NATS server instead of an embedded one.
    #[arg(long, env = "RAILYARD_NATS_URL")]
    pub nats_url: Option<String>,
}

const ACTOR_CI: &str = "ci:demo";
const ACTOR_PLANNER: &str = "railyard-planner";

/// Runs the demo and returns when it is done.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let data = tempfile_dir()?;
    let stack = Stack::start(args.nats_url.as_deref(), &data, 0).await?;
    let outcome = play(&args, &stack).await;
    let stopped = stack.stop().await;
    let _ = std::fs::remove_dir_all(&data);
    outcome.and(stopped)
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("railyard-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

fn heading(text: &str) {
    println!("\n== {text}\n");
}

async fn play(args: &DemoArgs, stack: &Stack) -> anyhow::Result<()> {
    let clock = SystemClock;
    let bus = &stack.bus;
    let mut releases: Vec<PathBuf> = std::fs::read_dir(&args.estate)
        .with_context(|| format!("cannot read the estate folder {}", args.estate.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("release-") && n.ends_with(".toml"))
        })
        .collect();
    releases.sort();
    let catalog_path = args.estate.join("railyard.toml");
    let inventory_path = args.estate.join("inventory.json");

    heading(&format!(
        "railyard demo — estate {}, NATS {}",
        args.estate.display(),
        stack.url
    ));
    let first = plan_cmd::load(
        &catalog_path,
        releases
            .first()
            .context("the estate has no release-*.toml")?,
        Some(&inventory_path),
    )?;
    let catalog = first.catalog;
    let inventory = first.inventory;
    println!(
        "catalog: {} environments ({}), {} services, {} databases, {} queues, {} apis",
        catalog.environments.len(),
        catalog
            .promotion_path()
            .iter()
            .map(|e| e.name.as_str())
            .collect::<Vec<_>>()
            .join(" -> "),
        catalog.services.len(),
        catalog.databases.len(),
        catalog.queues.len(),
        catalog.apis.len()
    );
    let applied = Envelope::new(
        AggregateId::Catalog,
        ACTOR_PLANNER,
        clock.now(),
        Event::CatalogApplied(CatalogApplied {
            hash: catalog.hash(),
        }),
    );
    let at = bus
        .append(
            &AggregateId::Catalog,
            Expected::Any,
            std::slice::from_ref(&applied),
        )
        .await?;
    println!(
        "recorded catalog.applied {} at stream sequence {}",
        catalog.hash(),
        at.sequence
    );

    let mut in_flight: Vec<InFlight> = Vec::new();
    for path in &releases {
        let inputs = plan_cmd::load(&catalog_path, path, Some(&inventory_path))?;
        let id = inputs.release.id.clone();
        let aggregate = AggregateId::Release(id.clone());
        heading(&format!("release {id} ({})", path.display()));

        let request = ReleaseRequested {
            release: id.clone(),
            requested_by: ACTOR_CI.to_owned(),
            changes: inputs.release.changes,
        };
        for change in &request.changes {
            println!("  change: {} -> {}", change.service, change.version);
        }
        let requested = Envelope::new(
            aggregate.clone(),
            ACTOR_CI,
            clock.now(),
            Event::ReleaseRequested(request.clone()),
        );
        let appended = bus
            .append(
                &aggregate,
                Expected::NoEvents,
                std::slice::from_ref(&requested),
            )
            .await
            .with_context(|| format!("cannot record release.requested for {id}"))?;

        // The planner decides against the folded state it loaded, and appends expecting
        // exactly that state: a concurrent decision would be a conflict, not a lost update.
        let loaded = bus.load(&aggregate).await?;
        let state =
            ReleaseState::fold(&loaded.events)?.context("the release was just requested")?;
        let input = PlanInput {
            catalog: &catalog,
            release: &request,
            inventory: &inventory,
            in_flight: &in_flight,
        };
        let decision = match railyard_planner::plan(&input) {
            Ok(plan) => {
                print!("{}", railyard_planner::render(&plan, Format::Text));
                in_flight.push(InFlight {
                    release: id.clone(),
                    sequence: appended.sequence,
                    changes: request.changes.clone(),
                    remaining: plan.steps.iter().map(|s| s.id.clone()).collect(),
                });
                Event::ReleasePlanned(ReleasePlanned { plan })
            }
            Err(refusals) => {
                print!(
                    "{}",
                    railyard_planner::render_refusals(&refusals, Format::Text)
                );
                Event::ReleaseRejected(ReleaseRejected {
                    catalog_hash: refusals.catalog_hash.clone(),
                    reasons: refusals.refusals(),
                })
            }
        };
        let decided = Envelope::new(aggregate.clone(), ACTOR_PLANNER, clock.now(), decision)
            .caused_by(&requested);
        bus.append(
            &aggregate,
            Expected::Sequence(loaded.last_sequence),
            std::slice::from_ref(&decided),
        )
        .await
        .with_context(|| format!("cannot record the planner's decision for {id}"))?;
        debug_assert_eq!(state.status, railyard_core::Status::Requested);
    }

    heading("read back from the stream (the source of truth), folded");
    for path in &releases {
        let release = plan_cmd::load(&catalog_path, path, None)?.release;
        let loaded = bus.load(&AggregateId::Release(release.id.clone())).await?;
        let state = ReleaseState::fold(&loaded.events)?.context("the release was recorded")?;
        let steps = state.plan.as_ref().map_or(0, |p| p.steps.len());
        println!(
            "  {:<12} {:<10} {} events, {} steps, {} refusals, requested by {}",
            state.id.as_str(),
            state.status.to_string(),
            state.events,
            steps,
            state.refusals.len(),
            state.requested_by
        );
    }
    println!(
        "\nRAILYARD_EVENTS holds {} messages. Next (not built yet): promotion workers carry planned \
         releases out (issue 6), intake takes CI events (issue 3), audit answers who did what (issue 5).",
        bus.stream_last_sequence().await?
    );
    Ok(())
}

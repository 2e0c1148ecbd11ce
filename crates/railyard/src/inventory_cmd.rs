//! `railyard inventory import`: records what already runs — an inventory file (INTERFACES
//! §5) — as `service.deployed` events, so the planner and the workers start from the real
//! estate. Each environment's database versions ride on its first service's event.

use std::path::PathBuf;

use anyhow::Context;
use railyard_bus::{Bus, Expected};
use railyard_core::event::ServiceDeployed;
use railyard_core::{AggregateId, Clock, Envelope, Event, Inventory, SystemClock};

/// Flags of `railyard inventory import`.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// The inventory file (JSON).
    pub file: PathBuf,
    /// The NATS server or cluster.
    #[arg(
        long,
        env = "RAILYARD_NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub nats_url: String,
    /// Who records it (the actor on the events).
    #[arg(long, default_value = "operator:import")]
    pub actor: String,
}

/// Appends one `service.deployed` per running service; returns how many.
pub async fn import(bus: &Bus, inventory: &Inventory, actor: &str) -> anyhow::Result<usize> {
    let clock = SystemClock;
    let mut count = 0;
    for (env, state) in &inventory.0 {
        let aggregate = AggregateId::Inventory(env.clone());
        let mut databases = state.databases.clone();
        let mut events = Vec::new();
        for (service, running) in &state.services {
            events.push(Envelope::new(
                aggregate.clone(),
                actor,
                clock.now(),
                Event::ServiceDeployed(ServiceDeployed {
                    env: env.clone(),
                    service: service.clone(),
                    running: Some(running.clone()),
                    databases: std::mem::take(&mut databases),
                    release: None,
                }),
            ));
        }
        anyhow::ensure!(
            databases.is_empty(),
            "inventory.{env}: database versions need at least one running service in the same environment"
        );
        if events.is_empty() {
            continue;
        }
        count += events.len();
        // One append per environment: its whole inventory lands at once or not at all.
        bus.append(&aggregate, Expected::Any, &events)
            .await
            .with_context(|| format!("cannot record the inventory of {env}"))?;
    }
    Ok(count)
}

/// Runs the import.
pub async fn run(args: ImportArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let inventory = Inventory::from_json(&text).with_context(|| args.file.display().to_string())?;
    let bus = crate::stack::connect(&args.nats_url).await?;
    let count = import(&bus, &inventory, &args.actor).await?;
    bus.close().await?;
    println!(
        "recorded {count} running services from {}",
        args.file.display()
    );
    Ok(())
}

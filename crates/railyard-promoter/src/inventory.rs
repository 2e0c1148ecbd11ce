//! Reading and recording the inventory a worker needs: what runs in an environment now, what
//! ran there before a release touched it (for rollbacks), and `service.deployed` appends whose
//! event id is derived from the step event that caused them, so recording twice is a no-op.

use railyard_bus::{Bus, BusError, Expected};
use railyard_core::event::ServiceDeployed;
use railyard_core::inventory::{EnvInventory, RunningService};
use railyard_core::{AggregateId, EnvName, Envelope, Event, ReleaseId};
use uuid::Uuid;

/// The inventory of `env` from its events; with `without`, as if that release had not run.
pub async fn env_inventory(
    bus: &Bus,
    env: &EnvName,
    without: Option<&ReleaseId>,
) -> Result<EnvInventory, BusError> {
    let loaded = bus.load(&AggregateId::Inventory(env.clone())).await?;
    let mut inventory = EnvInventory::default();
    for envelope in &loaded.events {
        apply(&mut inventory, envelope, without);
    }
    Ok(inventory)
}

/// Folds one inventory event into `inventory`; with `without`, that release's are skipped.
pub fn apply(inventory: &mut EnvInventory, envelope: &Envelope, without: Option<&ReleaseId>) {
    let Event::ServiceDeployed(d) = &envelope.event else {
        return;
    };
    if without.is_some() && d.release.as_ref() == without {
        return;
    }
    match &d.running {
        Some(running) => {
            inventory
                .services
                .insert(d.service.clone(), running.clone());
        }
        None => {
            inventory.services.remove(&d.service);
        }
    }
    inventory
        .databases
        .extend(d.databases.iter().map(|(k, v)| (k.clone(), *v)));
}

/// A stable id derived from `cause` (flipping low bits keeps the UUID's version and variant).
pub fn derived_id(cause: Uuid, salt: u8) -> Uuid {
    Uuid::from_u128(cause.as_u128() ^ u128::from(salt))
}

/// Appends `change` to `inventory.<env>` with an event id derived from `cause`: the same
/// cause records it once (within the stream's dedupe window).
pub async fn record(
    bus: &Bus,
    actor: &str,
    now: chrono::DateTime<chrono::Utc>,
    cause: &Envelope,
    salt: u8,
    change: ServiceDeployed,
) -> Result<(), railyard_bus::AppendError> {
    let aggregate = AggregateId::Inventory(change.env.clone());
    let mut envelope = Envelope::new(
        aggregate.clone(),
        actor,
        now,
        Event::ServiceDeployed(change),
    )
    .caused_by(cause);
    envelope.event_id = derived_id(cause.event_id, salt);
    bus.append(&aggregate, Expected::Any, &[envelope]).await?;
    Ok(())
}

/// What `service` runs in `inventory`, if anything.
pub fn running<'a>(inventory: &'a EnvInventory, service: &str) -> Option<&'a RunningService> {
    inventory.services.get(service)
}

//! What every task of one worker shares: its configuration, the bus, the adapters' runner,
//! and one part per job — its leases (`lease.rs`), its read-model cache of releases and of the
//! live inventory (`cache.rs`), and its writer (`recorder.rs`). `Ctx` only holds them; it
//! decides and does nothing itself.

use std::sync::Arc;

use railyard_bus::Bus;
use tokio::sync::Semaphore;

use crate::adapter::Runner;
use crate::cache::{LiveInventory, Releases};
use crate::config::PromoterConfig;
use crate::lease::Leases;
use crate::recorder::Writer;

/// What every task of one worker shares.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub(crate) config: PromoterConfig,
    pub(crate) bus: Bus,
    pub(crate) runner: Runner,
    /// The leases this worker holds, renewed on its clock.
    pub(crate) leases: Leases,
    /// The releases this worker has read, folded, with the sequence they were read at: a
    /// load fetches only what was appended since (one request) instead of the whole release.
    pub(crate) releases: Releases,
    /// The live inventory, folded, and the sequence each environment was read at.
    pub(crate) live: LiveInventory,
    /// Appends to release streams as this worker.
    pub(crate) writer: Writer,
    /// One permit per step this worker may run at once (`max_concurrent_steps`): taken by the
    /// work loop for each work item, and by a worker that takes more than one step its outcome
    /// made ready.
    pub(crate) step_permits: Arc<Semaphore>,
}

impl Ctx {
    /// What a worker with `config` shares, on `bus`.
    pub(crate) fn new(config: PromoterConfig, bus: Bus) -> Arc<Ctx> {
        let runner = Runner {
            clock: config.clock.clone(),
            secrets: config.secrets.clone(),
            http: crate::adapter::http_client(),
            poll_interval: config.poll_interval,
            tail_bytes: config.output_tail_bytes,
            seed: config.simulation_seed,
            env: crate::adapter::ChildEnv::new(config.environment.clone(), &config.catalog),
        };
        let leases = Leases::new(
            bus.clone(),
            config.worker_id.clone(),
            config.clock.clone(),
            config.lease_renew_interval,
        );
        let environments = config
            .catalog
            .environments
            .iter()
            .map(|env| env.name.clone())
            .collect();
        let writer = Writer::new(bus.clone(), config.worker_id.clone(), config.clock.clone());
        let step_permits = Arc::new(Semaphore::new(config.max_concurrent_steps));
        Arc::new(Ctx {
            step_permits,
            config,
            runner,
            leases,
            writer,
            releases: Releases::new(bus.clone()),
            live: LiveInventory::new(bus.clone(), environments),
            bus,
        })
    }

    /// This worker's id.
    pub(crate) fn worker(&self) -> &str {
        &self.config.worker_id
    }
}

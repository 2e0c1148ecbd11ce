//! Leases around a worker's work. A [`Claim`] keeps two tasks of one worker off a key; a bus
//! lease (KV with a TTL) keeps two workers off it; [`Leases::guarded`] renews the lease on the
//! clock while the work runs and stops the work when the lease is lost. What a key guards (a
//! step, a rollback, the retiring of old colours, the sweep) is the caller's business; the key
//! names are in `work.rs` (the sweep's in `worker.rs`). Nothing here reads or appends events.

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use railyard_bus::{Bus, BusError, Lease};
use railyard_core::SharedClock;
use tracing::{debug, warn};

use crate::error::PromoterError;

/// The leases of one worker: its id as their holder, the clock it renews them on, and the
/// keys its tasks have claimed.
#[derive(Debug)]
pub(crate) struct Leases {
    bus: Bus,
    holder: String,
    clock: SharedClock,
    renew_every: Duration,
    claimed: Arc<Mutex<HashSet<String>>>,
}

/// This worker's claim on a lease key: while it lives, no other task of the worker takes it.
#[derive(Debug)]
pub(crate) struct Claim {
    claimed: Arc<Mutex<HashSet<String>>>,
    key: String,
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Ok(mut claimed) = self.claimed.lock() {
            claimed.remove(&self.key);
        }
    }
}

impl Leases {
    /// Leases held as `holder`, renewed every `renew_every` on `clock`.
    pub(crate) fn new(
        bus: Bus,
        holder: impl Into<String>,
        clock: SharedClock,
        renew_every: Duration,
    ) -> Leases {
        Leases {
            bus,
            holder: holder.into(),
            clock,
            renew_every,
            claimed: Arc::default(),
        }
    }

    /// Claims `key` for one task of this worker; `None` when another task has it.
    pub(crate) fn claim(&self, key: &str) -> Option<Claim> {
        let mut claimed = self.claimed.lock().ok()?;
        claimed.insert(key.to_owned()).then(|| Claim {
            claimed: Arc::clone(&self.claimed),
            key: key.to_owned(),
        })
    }

    /// Takes the bus lease `key`; `None` when another worker holds it.
    pub(crate) async fn acquire(&self, key: &str) -> Result<Option<Lease>, BusError> {
        self.bus.acquire_lease(key, &self.holder).await
    }

    /// Runs `work` as the only holder of lease `key` across workers (and tasks of this
    /// worker), renewing it meanwhile; `None` when someone else holds it or it was lost on the
    /// way.
    pub(crate) async fn exclusively<T>(
        &self,
        key: &str,
        work: impl Future<Output = Result<T, PromoterError>>,
    ) -> Result<Option<T>, PromoterError> {
        let Some(_claim) = self.claim(key) else {
            return Ok(None);
        };
        let Some(mut lease) = self.acquire(key).await? else {
            return Ok(None);
        };
        let result = self.guarded(&mut lease, work).await;
        let _ = lease.release().await;
        result.transpose()
    }

    /// Runs `work` while renewing `lease` on the clock; `None` when the lease was lost.
    pub(crate) async fn guarded<T>(
        &self,
        lease: &mut Lease,
        work: impl Future<Output = T>,
    ) -> Option<T> {
        tokio::pin!(work);
        loop {
            tokio::select! {
                value = &mut work => return Some(value),
                () = self.clock.sleep(self.renew_every) => {
                    match lease.renew().await {
                        Ok(()) => {}
                        Err(error @ BusError::LeaseLost { .. }) => {
                            warn!(lease = lease.key(), %error, "lease lost; stopping the work it guarded");
                            return None;
                        }
                        Err(error) => warn!(lease = lease.key(), %error, "cannot renew the lease; trying again"),
                    }
                }
            }
        }
    }
}

/// Gives `lease` back, if one is held, without waiting for the answer
/// (`Lease::release_unconfirmed`: nothing depends on it), and answers `then`.
pub(crate) async fn release_then<T>(lease: Option<Lease>, then: T) -> T {
    if let Some(lease) = lease {
        if let Err(error) = lease.release_unconfirmed().await {
            debug!(%error, "cannot send the lease's release; it expires");
        }
    }
    then
}

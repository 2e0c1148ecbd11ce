//! A worker's read-model cache: each release it has looked at ([`Releases`]) and the live
//! inventory of every environment ([`LiveInventory`]), kept folded with the sequence they were
//! read at, so a read fetches only what was appended since (`Bus::load_after`, one request)
//! and folds it on top (the streams are append-only, so the copy plus the newer events is the
//! whole). Final releases are remembered by id only. It reads; it never appends.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use railyard_bus::Bus;
use railyard_core::inventory::RunningService;
use railyard_core::release_state::StepStatus;
use railyard_core::{
    AggregateId, EnvName, Envelope, ExternalEdge, Inventory, ReleaseId, ReleaseState,
};

use crate::decide;
use crate::error::PromoterError;
use crate::inventory;

/// Releases kept folded in memory at most; beyond it the cache starts over (a load then
/// reads a release whole once more).
const CACHED_RELEASES: usize = 10_000;

/// Final releases remembered at most (ids only); beyond it the set starts over.
const FINISHED_RELEASES: usize = 100_000;

/// A release as read from the stream.
#[derive(Debug, Clone)]
pub(crate) struct Current {
    pub(crate) state: ReleaseState,
    /// Its events (shared: copies of `Current` are cheap).
    pub(crate) events: Vec<Arc<Envelope>>,
    pub(crate) sequence: u64,
    /// The release's trace (its request's), which every step's span joins.
    pub(crate) trace: opentelemetry::Context,
}

impl Current {
    /// How many times `step` was started.
    pub(crate) fn attempts(&self, step: &str) -> u32 {
        decide::attempts(self.events.iter().map(AsRef::as_ref), step)
    }
}

/// The releases this worker has read, folded, with the sequence they were read at.
#[derive(Debug)]
pub(crate) struct Releases {
    bus: Bus,
    releases: Mutex<HashMap<ReleaseId, Current>>,
    /// Releases this worker saw final (completed, rolled back, cancelled, rejected): final is
    /// for good, so a release waiting for one of them needs no read to know it may go on.
    finished: Mutex<HashSet<ReleaseId>>,
    /// One lock per release this worker is appending to ([`Releases::writing`]).
    writing: Mutex<HashMap<ReleaseId, Weak<tokio::sync::Mutex<()>>>>,
}

/// Held while a task of this worker decides on its copy of a release and appends to it.
pub(crate) type Writing = tokio::sync::OwnedMutexGuard<()>;

/// Locks kept for releases no task writes to any more, at most, before they are dropped.
const IDLE_LOCKS: usize = 1024;

impl Releases {
    pub(crate) fn new(bus: Bus) -> Releases {
        Releases {
            bus,
            releases: Mutex::new(HashMap::new()),
            finished: Mutex::new(HashSet::new()),
            writing: Mutex::new(HashMap::new()),
        }
    }

    /// Waits until no other task of this worker decides on and appends to release `id`, and
    /// holds that until the guard is dropped. The tasks of one worker that run steps of the
    /// same release (its parallel steps, taken by the worker that made them ready) would
    /// otherwise append on the same copy at once, and all but one would conflict: a failed
    /// append, a look at what won, a read and a second append, where waiting for the first
    /// and appending on its copy ([`Releases::freshest`]) costs nothing. Appends by other
    /// workers still conflict, as before.
    pub(crate) async fn writing(&self, id: &ReleaseId) -> Writing {
        let lock = {
            let mut locks = self.writing.lock().unwrap_or_else(PoisonError::into_inner);
            match locks.get(id).and_then(Weak::upgrade) {
                Some(lock) => lock,
                None => {
                    if locks.len() >= IDLE_LOCKS {
                        locks.retain(|_, lock| lock.strong_count() > 0);
                    }
                    let lock = Arc::new(tokio::sync::Mutex::new(()));
                    locks.insert(id.clone(), Arc::downgrade(&lock));
                    lock
                }
            }
        };
        lock.lock_owned().await
    }

    /// The release's state, events and last sequence; `None` when it has no events.
    ///
    /// Reads only what was appended after the copy this worker already folded (the stream
    /// is append-only, so the copy plus the newer events is the whole release).
    pub(crate) async fn load(&self, id: &ReleaseId) -> Result<Option<Current>, PromoterError> {
        let cached = self.releases.lock().ok().and_then(|c| c.get(id).cloned());
        let after = cached.as_ref().map_or(0, |c| c.sequence);
        let loaded = self
            .bus
            .load_after(&AggregateId::Release(id.clone()), after)
            .await?;
        let fold_error = |source| PromoterError::Fold {
            release: id.clone(),
            source,
        };
        let current = match cached {
            Some(mut current) => {
                if loaded.events.is_empty() {
                    return Ok(Some(current));
                }
                for event in &loaded.events {
                    current.state =
                        ReleaseState::apply(Some(current.state), event).map_err(fold_error)?;
                }
                current
                    .events
                    .extend(loaded.events.into_iter().map(Arc::new));
                current.sequence = loaded.last_sequence;
                current
            }
            None => {
                let Some(state) = ReleaseState::fold(&loaded.events).map_err(fold_error)? else {
                    return Ok(None);
                };
                Current {
                    state,
                    trace: loaded.trace().clone(),
                    events: loaded.events.into_iter().map(Arc::new).collect(),
                    sequence: loaded.last_sequence,
                }
            }
        };
        self.remember(&current);
        Ok(Some(current))
    }

    /// `look` at this worker's copy of the release, if it keeps one; nothing is read.
    pub(crate) fn cached<R>(&self, id: &ReleaseId, look: impl FnOnce(&Current) -> R) -> Option<R> {
        let cache = self.releases.lock().ok()?;
        cache.get(id).map(look)
    }

    /// The release's trace: from this worker's copy, else read.
    pub(crate) async fn trace_of(&self, id: &ReleaseId) -> opentelemetry::Context {
        let cached = self
            .releases
            .lock()
            .ok()
            .and_then(|c| c.get(id).map(|c| c.trace.clone()));
        match cached {
            Some(trace) => trace,
            None => match self.load(id).await {
                Ok(Some(current)) => current.trace,
                _ => opentelemetry::Context::new(),
            },
        }
    }

    /// `current`, or this worker's copy of the release when another of its tasks has kept a
    /// newer one (appending on the newer one spares a conflict); nothing is read.
    pub(crate) fn freshest(&self, current: Current) -> Current {
        let newer = self.releases.lock().ok().and_then(|cache| {
            cache
                .get(&current.state.id)
                .filter(|kept| kept.sequence > current.sequence)
                .cloned()
        });
        newer.unwrap_or(current)
    }

    /// Keeps `current` as this worker's copy of the release unless a newer one is kept.
    pub(crate) fn remember(&self, current: &Current) {
        let Ok(mut cache) = self.releases.lock() else {
            return;
        };
        if current.state.status.is_final() {
            cache.remove(&current.state.id);
            drop(cache);
            if let Ok(mut finished) = self.finished.lock() {
                if finished.len() >= FINISHED_RELEASES {
                    finished.clear();
                }
                finished.insert(current.state.id.clone());
            }
            return;
        }
        if cache.len() >= CACHED_RELEASES {
            cache.clear();
        }
        match cache.get(&current.state.id) {
            Some(kept) if kept.sequence >= current.sequence => {}
            _ => {
                cache.insert(current.state.id.clone(), current.clone());
            }
        }
    }

    /// The other releases `state`'s plan still waits for ([`decide::still_waits_on`]): one
    /// read each, all at once (a hand-over waits for the slowest, not for their sum), none for
    /// a release this worker already saw final. A release it waits for no more is left out
    /// ([`external_done`] counts an edge from it as not done).
    pub(crate) async fn others(
        &self,
        state: &ReleaseState,
    ) -> Result<BTreeMap<ReleaseId, Other>, PromoterError> {
        let reads = decide::still_waits_on(state)
            .into_iter()
            .map(|other| async move {
                let known_final = self.finished.lock().is_ok_and(|f| f.contains(&other));
                let what = if known_final {
                    Other::Settled
                } else {
                    match self.load(&other).await? {
                        None => Other::Unknown,
                        Some(current) if current.state.status.is_final() => Other::Settled,
                        Some(current) => Other::Live(Box::new(current.state)),
                    }
                };
                Ok::<_, PromoterError>((other, what))
            });
        Ok(futures::future::try_join_all(reads)
            .await?
            .into_iter()
            .collect())
    }
}

/// What a release waiting for another needs to know of it.
#[derive(Debug, Clone)]
pub(crate) enum Other {
    /// Never requested: it holds nothing up.
    Unknown,
    /// Final, which is for good: it holds nothing up any more.
    Settled,
    /// In flight: its steps tell. (A step of it that succeeded is read again each time: a
    /// rollback that stops half-way undoes it and holds the release without ending it.)
    Live(Box<ReleaseState>),
}

/// Whether an external edge is satisfied given the other releases' states.
pub(crate) fn external_done(
    states: &BTreeMap<ReleaseId, Other>,
) -> impl Fn(&ExternalEdge) -> bool + '_ {
    move |edge| match states.get(&edge.release) {
        // Succeeded, in an environment the other release is not undoing or holding after a
        // failure (`ReleaseState::unfinished_steps`, the planner's rule too).
        Some(Other::Live(other)) => {
            other.steps.get(&edge.from) == Some(&StepStatus::Succeeded)
                && !other.unfinished_steps().contains(&edge.from)
        }
        // A final release, or one that was never requested, holds nothing up.
        Some(Other::Settled | Other::Unknown) => true,
        // Not read: `Releases::others` leaves out only releases whose edges lead into steps
        // that started, which nothing asks about; should one be asked about, it waits.
        None => false,
    }
}

/// A worker's copy of what runs in the catalog's environments, and how far each
/// environment's events were read.
#[derive(Debug)]
pub(crate) struct LiveInventory {
    bus: Bus,
    environments: Vec<EnvName>,
    kept: Mutex<Kept>,
}

#[derive(Debug, Default)]
struct Kept {
    read_at: BTreeMap<EnvName, u64>,
    inventory: Arc<Inventory>,
}

impl LiveInventory {
    /// The live inventory of `environments`, read on first use.
    pub(crate) fn new(bus: Bus, environments: Vec<EnvName>) -> LiveInventory {
        LiveInventory {
            bus,
            environments,
            kept: Mutex::default(),
        }
    }

    /// What runs in every environment now, caught up with one read per environment of what
    /// was recorded since the last call. Shared, not copied: the estate can hold thousands of
    /// services and every re-validation reads all of it.
    pub(crate) async fn now(&self) -> Result<Arc<Inventory>, PromoterError> {
        // Only the positions are taken out: a snapshot held across the reads below would make
        // every update copy the whole inventory.
        let read_at = self
            .kept
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .read_at
            .clone();
        let mut updates = Vec::new();
        for env in &self.environments {
            let after = read_at.get(env).copied().unwrap_or(0);
            let loaded = self
                .bus
                .load_after(&AggregateId::Inventory(env.clone()), after)
                .await?;
            if !loaded.events.is_empty() {
                updates.push((env.clone(), loaded));
            }
        }
        let mut live = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        let live = &mut *live;
        for (env, loaded) in updates {
            let kept = live.read_at.entry(env.clone()).or_insert(0);
            if *kept >= loaded.last_sequence {
                continue; // another task of this worker read at least as far
            }
            // What was read is a suffix of the environment's events reaching past what is
            // kept, and applying an event sets what it names: applying all of it on top of
            // the kept state gives the state at `last_sequence`. Copies only while another
            // task still reads the previous snapshot.
            let inventory = Arc::make_mut(&mut live.inventory).0.entry(env).or_default();
            for envelope in &loaded.events {
                inventory::apply(inventory, envelope, None);
            }
            *kept = loaded.last_sequence;
        }
        Ok(live.inventory.clone())
    }

    /// What `service` runs in `env` now.
    pub(crate) async fn service(
        &self,
        env: &EnvName,
        service: &str,
    ) -> Result<Option<RunningService>, PromoterError> {
        let live = self.now().await?;
        Ok(live
            .0
            .get(env)
            .and_then(|inventory| inventory::running(inventory, service))
            .cloned())
    }
}

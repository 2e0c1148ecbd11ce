//! The sled-backed store: a [`Store`] is one sled database per process, a
//! [`ProjectionStore`] is one projection over its own tree in it. Every sled call runs on
//! tokio's blocking pool (or the store's own flushing thread), so the async API never blocks
//! the runtime. A flush also records the checkpoints it made durable outside sled
//! (`marks.rs`), so a projection whose log was cut short is told apart on open
//! ([`ProjectionStore::cut_short`]).

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use railyard_core::Envelope;
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

use crate::error::{BoxError, ProjectionError, StoreError, display_key};
use crate::layout;
use crate::marks::Marks;
use crate::projection::{Applied, Entry, Projection, Update, Writes};

/// sled's page cache per database unless [`StoreConfig::cache_capacity`] says otherwise:
/// 64 MiB, not sled's own default of 1 GiB. Every service opens one database, and with sled's
/// default each could cache up to a gigabyte of pages (a 30-minute soak saw the audit
/// service's RSS double with it; the audit's growth went on with its cache capped at 8 MiB, so
/// the cache is not all of it: ARCHITECTURE.md, "Chaos soak"). 64 MiB is four
/// times the largest store a soak writes (the audit's, 16 MB on disk after 30 minutes); what
/// does not fit is read again through the operating system's file cache.
pub const DEFAULT_CACHE_CAPACITY: u64 = 64 * 1024 * 1024;

/// Where and how to open the sled database.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    path: PathBuf,
    temporary: bool,
    cache_capacity: u64,
    flush_every: Option<Duration>,
    lock_wait: Duration,
}

impl StoreConfig {
    /// A database in directory `path` (created when missing).
    pub fn new(path: impl Into<PathBuf>) -> StoreConfig {
        StoreConfig {
            path: path.into(),
            temporary: false,
            cache_capacity: DEFAULT_CACHE_CAPACITY,
            flush_every: Some(Duration::from_millis(500)),
            lock_wait: Duration::from_secs(5),
        }
    }

    /// Removes the directory when the store is dropped (tests, benchmarks).
    pub fn temporary(mut self, temporary: bool) -> StoreConfig {
        self.temporary = temporary;
        self
    }

    /// The most bytes of pages sled keeps cached in memory (default
    /// [`DEFAULT_CACHE_CAPACITY`], 64 MiB). sled counts page sizes rounded up to a power of
    /// two and keeps its page table and write buffers outside this budget, so it bounds the
    /// cache, not the process. At least 256 bytes: smaller values are raised to that.
    pub fn cache_capacity(mut self, bytes: u64) -> StoreConfig {
        self.cache_capacity = bytes.max(MIN_CACHE_CAPACITY);
        self
    }

    /// How often the store flushes in the background, on a thread of its own (default 500 ms;
    /// `None`: only on [`ProjectionStore::flush`]). Whatever was committed since the last flush is lost on a
    /// crash, always as whole deliveries with their checkpoint, so the stream redelivers them.
    /// That thread flushes when a checkpoint moved and records the checkpoints it made durable,
    /// which is what lets a later open see that the log was cut short.
    pub fn flush_every(mut self, every: Option<Duration>) -> StoreConfig {
        self.flush_every = every;
        self
    }

    /// How long opening waits for the directory's lock while another handle on it (in this
    /// process: one just dropped, whose background threads have not let go yet) still holds it
    /// (default 5 s); then the open fails, naming the lock.
    pub fn lock_wait(mut self, wait: Duration) -> StoreConfig {
        self.lock_wait = wait;
        self
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn sled(&self) -> sled::Config {
        sled::Config::new()
            .path(&self.path)
            .temporary(self.temporary)
            .cache_capacity(self.cache_capacity)
            // The store's marking thread flushes instead, as often: sled's flusher thread
            // would keep what its flushes free from being freed (see `mark_periodically`).
            .flush_every_ms(None)
    }
}

/// sled refuses (panics on) a page cache below 256 bytes.
const MIN_CACHE_CAPACITY: u64 = 256;

/// One sled database, shared by the projections of a process. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<StoreInner>,
}

struct StoreInner {
    db: sled::Db,
    path: PathBuf,
    /// The projections open on this store (so none is opened twice), each with its committed
    /// checkpoint, which a flush records as durable.
    open: Mutex<BTreeMap<String, watch::Receiver<u64>>>,
    /// The checkpoints last recorded as durable. Held across "read the checkpoints, flush,
    /// record them" and across a reset's "lower the mark, move the checkpoint back", so the
    /// two never interleave and a mark never claims more than the log holds.
    marks: Mutex<Marks>,
    /// Dropped with the store, which stops the marking thread; `None` when there is none.
    stop_marking: Option<mpsc::Sender<()>>,
}

impl StoreInner {
    /// Flushes sled and records as durable the checkpoints committed before the flush. Does
    /// nothing unless a checkpoint moved, or `always` (an explicit flush). A failure to record
    /// is logged, not returned: the data is durable, only the later check is weaker.
    fn flush_and_mark(&self, always: bool) -> Result<usize, sled::Error> {
        let mut marks = self.marks.lock().unwrap_or_else(PoisonError::into_inner);
        let checkpoints: Vec<(String, u64)> = self
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(name, committed)| (name.clone(), *committed.borrow()))
            .collect();
        let raised = marks.raised(&checkpoints);
        if raised.is_none() && !always {
            return Ok(0);
        }
        let flushed = self.db.flush()?;
        if let Some(raised) = raised {
            let path = marks.path().unwrap_or_default();
            match marks.write(raised) {
                Err(error) if !marks.failing => {
                    marks.failing = true;
                    warn!(
                        path = %path.display(),
                        %error,
                        "cannot record what the store made durable, so damage to its log will go unnoticed on the next open: check the directory's permissions and free space"
                    );
                }
                Err(_) => {}
                Ok(()) if marks.failing => {
                    marks.failing = false;
                    info!(path = %path.display(), "recording what the store made durable again");
                }
                Ok(()) => {}
            }
        }
        Ok(flushed)
    }
}

/// Hands what this thread's sled calls replaced to crossbeam's epoch collector, which sled
/// frees through: its write buffers (512 KiB each) and the old versions of the pages it
/// rewrote. A thread's garbage reaches the collector only once its bag holds 64 items, so a
/// thread that calls sled now and then (a blocking-pool thread, the marking thread flushing
/// twice a second) kept up to 64 of them alive, each possibly a different write buffer.
/// In the audit's `memory` example, one event per apply grew the process by 34 MiB over
/// 30,000 events (9 MiB with this), and a replay of 100,000 events (256 per batch, 64 MiB
/// cache) grew it to 1.1 GiB of anonymous memory (0.47 GiB with this). It is not what grows
/// the live audit in the chaos soak (ARCHITECTURE.md, "Chaos soak"). Called after each read, write and flush of a
/// projection, and after each flush of the marking thread.
fn hand_over_garbage() {
    crossbeam_epoch::pin().flush();
}

/// The store's marking thread: every `every`, flush and record the checkpoints (when they
/// moved), until the store is dropped.
fn mark_periodically(store: Weak<StoreInner>, stop: mpsc::Receiver<()>, every: Duration) {
    while let Err(RecvTimeoutError::Timeout) = stop.recv_timeout(every) {
        let Some(store) = store.upgrade() else {
            break;
        };
        if let Err(error) = store.flush_and_mark(false) {
            warn!(path = %store.path.display(), %error, "flushing the store failed; trying again at the next interval");
        }
        drop(store);
        hand_over_garbage();
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.inner.path)
            .finish()
    }
}

impl Store {
    /// Opens (or creates) the database, recovering it after a crash.
    pub async fn open(config: StoreConfig) -> Result<Store, StoreError> {
        let path = config.path.clone();
        let open_error = |source: BoxError| StoreError::Open {
            path: path.display().to_string(),
            source,
        };
        let unrecoverable = |source: BoxError| StoreError::Unrecoverable {
            path: path.display().to_string(),
            source,
        };
        let waited = std::time::Instant::now();
        let db = loop {
            let sled = config.sled();
            // sled panics on some damage it finds while recovering (e.g. "tried to serialize
            // Uninitialized" for a bad message in an older segment of its log).
            let opened = tokio::task::spawn_blocking(move || sled.open())
                .await
                .map_err(|source| {
                    if source.is_panic() {
                        unrecoverable(Box::new(source))
                    } else {
                        open_error(Box::new(source))
                    }
                })?;
            match opened {
                Ok(db) => break db,
                // sled drops a database's file lock from a background thread: a handle just
                // dropped may hold it a moment longer.
                Err(error)
                    if error.to_string().contains("could not acquire lock")
                        && waited.elapsed() < config.lock_wait =>
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(error @ sled::Error::Corruption { .. }) => {
                    return Err(unrecoverable(Box::new(error)));
                }
                Err(error) => return Err(open_error(Box::new(error))),
            }
        };
        info!(path = %path.display(), recovered = db.was_recovered(), "store opened");
        let marks = Marks::load((!config.temporary).then(|| path.clone()));
        let every = config.flush_every.filter(|_| !config.temporary);
        let (stop, stopped) = mpsc::channel();
        let inner = Arc::new(StoreInner {
            db,
            path,
            open: Mutex::new(BTreeMap::new()),
            marks: Mutex::new(marks),
            stop_marking: every.map(|_| stop),
        });
        if let Some(every) = every {
            let store = Arc::downgrade(&inner);
            std::thread::Builder::new()
                .name("railyard-store-marks".into())
                .spawn(move || mark_periodically(store, stopped, every))
                .map_err(|source| StoreError::Open {
                    path: inner.path.display().to_string(),
                    source: Box::new(source),
                })?;
        }
        Ok(Store { inner })
    }

    /// `kept`, a store this process already has open at `config`'s directory, or else the
    /// directory opened ([`Store::open`]). A service that is started again in the same process
    /// after NATS failed (`railyard`'s `spawn_restarting`) is given the store its first start
    /// opened: opening a sled database again each time leaves about a megabyte of the heap
    /// behind per open (glibc raises its mmap threshold after sled's first large free, and
    /// later large buffers land in the heap: ARCHITECTURE.md, "Chaos soak"), which a long run under
    /// NATS failures saw as steady growth. `kept` at another directory is an error.
    pub async fn kept_or_open(
        kept: Option<&Store>,
        config: StoreConfig,
    ) -> Result<Store, StoreError> {
        match kept {
            None => Store::open(config).await,
            Some(store) if store.path() == config.path() => Ok(store.clone()),
            Some(store) => Err(StoreError::Open {
                path: config.path().display().to_string(),
                source: format!(
                    "the store kept open for it is at {}, another directory",
                    store.path().display()
                )
                .into(),
            }),
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Opens `projection` over its tree, `projection:<name>`, creating it when missing.
    pub async fn projection<P: Projection>(
        &self,
        projection: P,
    ) -> Result<ProjectionStore<P>, StoreError> {
        let name = projection.name().to_owned();
        if !layout::valid_name(&name) {
            return Err(StoreError::InvalidName(name));
        }
        let (committed, following) = watch::channel(0);
        {
            let mut open = self
                .inner
                .open
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if open.contains_key(&name) {
                return Err(StoreError::AlreadyOpen(name));
            }
            open.insert(name.clone(), following);
        }
        let claim = NameClaim {
            store: self.clone(),
            name: name.clone(),
        };
        let db = self.inner.db.clone();
        let tree_name = layout::tree_name(&name);
        let opened = tokio::task::spawn_blocking(move || db.open_tree(tree_name))
            .await
            .map_err(|source| StoreError::Task {
                projection: name.clone(),
                operation: "open tree",
                source,
            })?;
        let tree = opened.map_err(|source| StoreError::Storage {
            projection: name.clone(),
            operation: "open tree",
            source: Box::new(source),
        })?;
        let store = ProjectionStore {
            inner: Arc::new(Inner {
                tree,
                projection: Mutex::new(projection),
                driven: AtomicBool::new(false),
                committed,
                cut_short: Mutex::new(None),
                claim,
            }),
        };
        let checkpoint = store.checkpoint().await?;
        store.inner.committed.send_replace(checkpoint);
        let durable = self
            .inner
            .marks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&name);
        if checkpoint < durable {
            let cut = CutShort {
                durable,
                recovered: checkpoint,
            };
            *store
                .inner
                .cut_short
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(cut);
            let error = StoreError::CutShort {
                projection: name.clone(),
                path: self.inner.path.display().to_string(),
                durable,
                recovered: checkpoint,
            };
            error!(projection = %name, path = %self.inner.path.display(), durable, recovered = checkpoint, %error, "store opened cut short: it lost data it had made durable");
        }
        info!(projection = %name, checkpoint, "projection opened");
        Ok(store)
    }
}

/// Holds a projection's name in its store's open set until the projection is dropped.
struct NameClaim {
    store: Store,
    name: String,
}

impl Drop for NameClaim {
    fn drop(&mut self) {
        self.store
            .inner
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.name);
    }
}

/// What opening a projection found when its tree ended before the checkpoint its store had
/// recorded as durable: sled stopped recovering its log at a damaged message and dropped
/// everything after it, so the deliveries after `recovered` (at least up to `durable`) are
/// gone from the store. Following the stream applies them again; a rebuild redoes it all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CutShort {
    /// The checkpoint a flush had made durable.
    pub durable: u64,
    /// The checkpoint sled recovered.
    pub recovered: u64,
}

/// One projection over its tree: applies deliveries with their checkpoint, answers reads.
/// Cheap to clone; clones share the projection.
pub struct ProjectionStore<P> {
    inner: Arc<Inner<P>>,
}

impl<P> Clone for ProjectionStore<P> {
    fn clone(&self) -> ProjectionStore<P> {
        ProjectionStore {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<P> std::fmt::Debug for ProjectionStore<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProjectionStore")
            .field("projection", &self.inner.claim.name)
            .finish()
    }
}

struct Inner<P> {
    tree: sled::Tree,
    /// The projection; its lock also serializes `apply` and `reset`, so the checkpoint read
    /// and the batch that moves it cannot interleave with another writer.
    projection: Mutex<P>,
    /// Whether a `run_projection` or `rebuild` drives this projection.
    driven: AtomicBool,
    /// The checkpoint after the last commit or reset, for readers that follow the projection.
    committed: watch::Sender<u64>,
    /// Set when the projection opened below its durable mark; cleared by a reset.
    cut_short: Mutex<Option<CutShort>>,
    claim: NameClaim,
}

impl<P> Inner<P> {
    fn name(&self) -> &str {
        &self.claim.name
    }

    fn storage(&self, operation: &'static str) -> impl FnOnce(sled::Error) -> StoreError + '_ {
        move |source| StoreError::Storage {
            projection: self.name().to_owned(),
            operation,
            source: Box::new(source),
        }
    }

    fn checkpoint(&self) -> Result<u64, StoreError> {
        match self
            .tree
            .get(layout::CHECKPOINT)
            .map_err(self.storage("read checkpoint"))?
        {
            None => Ok(0),
            Some(bytes) => {
                crate::key::u64_from_key(&bytes).ok_or_else(|| StoreError::CorruptCheckpoint {
                    projection: self.name().to_owned(),
                    len: bytes.len(),
                })
            }
        }
    }
}

impl<P: Projection> Inner<P> {
    /// Applies `deliveries` in order and commits every applied one's writes with the last
    /// applied sequence in one sled batch. Per delivery: skipped when at or below the
    /// checkpoint, committed, or refused by the projection (its writes dropped, the others
    /// unaffected). A storage failure fails the whole call and commits nothing.
    fn apply_many(
        &self,
        deliveries: &[(u64, Vec<Envelope>)],
    ) -> Result<Vec<Result<Applied, StoreError>>, StoreError> {
        let mut projection = self
            .projection
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let start = self.checkpoint()?;
        let mut checkpoint = start;
        let mut pending = Writes::new();
        let mut outcomes = Vec::with_capacity(deliveries.len());
        for (sequence, envelopes) in deliveries {
            let sequence = *sequence;
            if sequence <= checkpoint {
                debug!(projection = %self.name(), sequence, checkpoint, "delivery skipped: already applied");
                outcomes.push(Ok(Applied::Skipped {
                    sequence,
                    checkpoint,
                }));
                continue;
            }
            let mut update = Update::new(&self.tree, &pending);
            let counted;
            let envelopes = if !projection.sees_untrusted()
                && envelopes.iter().any(|e| e.untrusted.is_some())
            {
                counted = envelopes
                    .iter()
                    .filter(|e| e.untrusted.is_none())
                    .cloned()
                    .collect::<Vec<_>>();
                &counted[..]
            } else {
                &envelopes[..]
            };
            match projection.apply(&mut update, sequence, envelopes) {
                Ok(()) => {
                    let writes = update.into_writes();
                    outcomes.push(Ok(Applied::Committed {
                        sequence,
                        writes: writes.len(),
                    }));
                    pending.extend(writes);
                    checkpoint = sequence;
                }
                Err(ProjectionError::Read { source }) => {
                    return Err(StoreError::Storage {
                        projection: self.name().to_owned(),
                        operation: "read during apply",
                        source,
                    });
                }
                Err(source) => outcomes.push(Err(StoreError::Projection {
                    projection: self.name().to_owned(),
                    sequence,
                    source,
                })),
            }
        }
        if checkpoint > start {
            let writes = pending.len();
            let mut batch = sled::Batch::default();
            for (key, value) in pending {
                let key = layout::data_key(&key);
                match value {
                    Some(value) => batch.insert(key, value),
                    None => batch.remove(key),
                }
            }
            batch.insert(layout::CHECKPOINT, &crate::key::u64_key(checkpoint));
            self.tree
                .apply_batch(batch)
                .map_err(self.storage("commit"))?;
            debug!(projection = %self.name(), checkpoint, writes, deliveries = deliveries.len(), "committed");
            self.committed.send_replace(checkpoint);
        }
        Ok(outcomes)
    }

    fn reset(&self) -> Result<usize, StoreError> {
        let _projection = self
            .projection
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // The mark goes down first (and stays locked until the checkpoint has), so neither a
        // crash nor the marking thread can leave a mark above what the log holds.
        let store = &self.claim.store.inner;
        let mut marks = store.marks.lock().unwrap_or_else(PoisonError::into_inner);
        marks
            .lower(self.name(), 0)
            .map_err(|source| StoreError::Marks {
                projection: self.name().to_owned(),
                path: marks.path().unwrap_or_default().display().to_string(),
                source,
            })?;
        // One batch, not `Tree::clear` (which removes key by key): a crash mid-reset must not
        // leave a checkpoint over partly removed data, or data without its checkpoint.
        let mut batch = sled::Batch::default();
        let mut removed = 0;
        for key in self.tree.iter().keys() {
            batch.remove(key.map_err(self.storage("list keys for reset"))?);
            removed += 1;
        }
        self.tree
            .apply_batch(batch)
            .map_err(self.storage("reset"))?;
        info!(projection = %self.name(), removed, "projection reset");
        *self
            .cut_short
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
        self.committed.send_replace(0);
        drop(marks);
        Ok(removed)
    }
}

impl<P: Projection> ProjectionStore<P> {
    /// Opens `projection` on a store of its own at `config` (a process with several
    /// projections opens one [`Store`] and calls [`Store::projection`] for each).
    pub async fn open(
        config: StoreConfig,
        projection: P,
    ) -> Result<ProjectionStore<P>, StoreError> {
        Store::open(config).await?.projection(projection).await
    }

    /// The projection's name.
    pub fn name(&self) -> &str {
        self.inner.name()
    }

    /// The store it lives in.
    pub fn store(&self) -> &Store {
        &self.inner.claim.store
    }

    async fn blocking<T, F>(&self, operation: &'static str, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner<P>) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let done = work(&inner);
            hand_over_garbage();
            done
        })
        .await
        .map_err(|source| StoreError::Task {
            projection: self.name().to_owned(),
            operation,
            source,
        })?
    }

    /// Follows the checkpoint: the receiver sees every commit's new checkpoint (and 0 after a
    /// reset), so a reader can wait until the projection has applied a given stream sequence
    /// without polling.
    pub fn watch_checkpoint(&self) -> watch::Receiver<u64> {
        self.inner.committed.subscribe()
    }

    /// Whether the projection opened below the checkpoint its store had recorded as durable
    /// (its sled log was damaged and cut short; an error was logged): what it recovered and
    /// what it had. Stays set until a [`reset`](ProjectionStore::reset); compare
    /// [`ProjectionStore::checkpoint`] with [`CutShort::durable`] to see whether following the
    /// stream has applied the lost deliveries again.
    pub fn cut_short(&self) -> Option<CutShort> {
        *self
            .inner
            .cut_short
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The stream sequence of the last applied delivery; 0 when none was.
    pub async fn checkpoint(&self) -> Result<u64, StoreError> {
        self.blocking("read checkpoint", Inner::checkpoint).await
    }

    /// Applies the delivery at stream `sequence`: when `sequence` is above the checkpoint,
    /// the projection's writes and the new checkpoint are committed in one atomic batch;
    /// otherwise nothing happens and the result is [`Applied::Skipped`]. A projection error
    /// ([`StoreError::Projection`]) writes nothing. Committed is not yet durable: see
    /// [`ProjectionStore::flush`].
    pub async fn apply(
        &self,
        sequence: u64,
        envelopes: Vec<Envelope>,
    ) -> Result<Applied, StoreError> {
        let deliveries = vec![(sequence, envelopes)];
        self.blocking("apply", move |inner| {
            inner
                .apply_many(&deliveries)?
                .pop()
                .expect("one outcome per delivery")
        })
        .await
    }

    /// Applies `deliveries` (in stream order) in one blocking call and one atomic batch that
    /// ends with the checkpoint of the last applied one: how a replay goes fast. Each delivery
    /// has its own outcome, as [`ProjectionStore::apply`] would give it: skipped at or below
    /// the checkpoint, committed, or refused by the projection, in which case its writes are
    /// dropped and the deliveries after it still apply (as on the live path, which
    /// dead-letters the refused one). A storage error, including a failed read inside the
    /// projection ([`ProjectionError::Read`]), fails the whole call and commits nothing.
    pub async fn apply_many(
        &self,
        deliveries: Vec<(u64, Vec<Envelope>)>,
    ) -> Result<Vec<Result<Applied, StoreError>>, StoreError> {
        self.blocking("apply", move |inner| inner.apply_many(&deliveries))
            .await
    }

    /// The value at `key`.
    pub async fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>, StoreError> {
        let key = layout::data_key(key.as_ref());
        self.blocking("get", move |inner| {
            Ok(inner
                .tree
                .get(key)
                .map_err(inner.storage("get"))?
                .map(|value| value.to_vec()))
        })
        .await
    }

    /// The values at `keys`, in the order of `keys` (`None` where a key has no value), read
    /// in one blocking call: what a reader wants for many scattered keys, where a
    /// [`get`](ProjectionStore::get) per key costs a blocking-pool round trip each. The reads are
    /// not one snapshot: a commit landing meanwhile may be seen by some of them and not by
    /// others, as with as many `get`s.
    pub async fn get_many<K: AsRef<[u8]>>(
        &self,
        keys: impl IntoIterator<Item = K>,
    ) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        let keys: Vec<Vec<u8>> = keys
            .into_iter()
            .map(|key| layout::data_key(key.as_ref()))
            .collect();
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        self.blocking("get", move |inner| {
            keys.iter()
                .map(|key| {
                    Ok(inner
                        .tree
                        .get(key)
                        .map_err(inner.storage("get"))?
                        .map(|value| value.to_vec()))
                })
                .collect()
        })
        .await
    }

    /// The JSON value at `key`, decoded.
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        key: impl AsRef<[u8]>,
    ) -> Result<Option<T>, StoreError> {
        let key = key.as_ref();
        self.get(key)
            .await?
            .map(|bytes| {
                serde_json::from_slice(&bytes).map_err(|source| StoreError::Decode {
                    projection: self.name().to_owned(),
                    key: display_key(key),
                    source,
                })
            })
            .transpose()
    }

    /// Every entry whose key starts with `prefix`, in key order.
    pub async fn scan_prefix(&self, prefix: impl AsRef<[u8]>) -> Result<Vec<Entry>, StoreError> {
        self.scan_page(prefix, None::<&[u8]>, usize::MAX).await
    }

    /// At most `limit` entries whose key starts with `prefix`, in key order, beginning just
    /// after key `after` when given: cursor pagination, with the last key as the cursor.
    pub async fn scan_page(
        &self,
        prefix: impl AsRef<[u8]>,
        after: Option<impl AsRef<[u8]>>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let prefix = layout::data_key(prefix.as_ref());
        let after = after.map(|key| layout::data_key(key.as_ref()));
        self.blocking("scan", move |inner| {
            let start = match &after {
                Some(after) if *after >= prefix => Bound::Excluded(after.as_slice()),
                _ => Bound::Included(prefix.as_slice()),
            };
            let entries = inner.tree.range::<&[u8], _>((start, Bound::Unbounded));
            let mut page = Vec::new();
            for entry in entries {
                let (key, value) = entry.map_err(inner.storage("scan"))?;
                if !key.starts_with(&prefix) || page.len() == limit {
                    break;
                }
                page.push((layout::user_key(&key).to_vec(), value.to_vec()));
            }
            Ok(page)
        })
        .await
    }

    /// Every stored entry of the tree, metadata (the checkpoint) included, as sled holds
    /// them: for comparing two builds of a projection byte for byte.
    pub async fn raw_entries(&self) -> Result<Vec<Entry>, StoreError> {
        self.blocking("export", |inner| {
            inner
                .tree
                .iter()
                .map(|entry| {
                    entry
                        .map(|(key, value)| (key.to_vec(), value.to_vec()))
                        .map_err(inner.storage("export"))
                })
                .collect()
        })
        .await
    }

    /// Removes everything, checkpoint included, in one atomic batch, so the projection can be
    /// rebuilt by replaying the stream from sequence 1. Returns how many keys were removed.
    pub async fn reset(&self) -> Result<usize, StoreError> {
        self.blocking("reset", Inner::reset).await
    }

    /// Makes everything committed so far durable (sled's flush). Returns the number of bytes
    /// written. The checkpoints it made durable are recorded as such by the store's flushing
    /// thread within [`StoreConfig::flush_every`], or right away when the store has none.
    pub async fn flush(&self) -> Result<usize, StoreError> {
        self.blocking("flush", |inner| {
            let store = &inner.claim.store.inner;
            match store.stop_marking {
                Some(_) => store.db.flush(),
                None => store.flush_and_mark(true),
            }
            .map_err(inner.storage("flush"))
        })
        .await
    }

    /// [`ProjectionStore::flush`], and the checkpoints recorded as durable right away (one
    /// more fsync): how a run or a rebuild ends, so the record is exact after a clean stop.
    pub(crate) async fn flush_and_record(&self) -> Result<usize, StoreError> {
        self.blocking("flush", |inner| {
            inner
                .claim
                .store
                .inner
                .flush_and_mark(true)
                .map_err(inner.storage("flush"))
        })
        .await
    }

    /// Claims the right to drive this projection from the stream; `None` when a
    /// `run_projection` or `rebuild` already holds it.
    pub(crate) fn try_drive(&self) -> Result<DriveGuard<P>, StoreError> {
        if self.inner.driven.swap(true, Ordering::AcqRel) {
            return Err(StoreError::Busy(self.name().to_owned()));
        }
        Ok(DriveGuard {
            store: self.clone(),
        })
    }
}

/// Held while a `run_projection` or `rebuild` drives a projection.
pub(crate) struct DriveGuard<P> {
    store: ProjectionStore<P>,
}

impl<P> Drop for DriveGuard<P> {
    fn drop(&mut self) {
        self.store.inner.driven.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sled_page_cache_is_bounded_by_default() {
        let config = StoreConfig::new("/nonexistent/store");
        assert_eq!(DEFAULT_CACHE_CAPACITY, 64 * 1024 * 1024);
        assert_eq!(config.sled().cache_capacity, DEFAULT_CACHE_CAPACITY);
    }

    #[test]
    fn cache_capacity_overrides_the_default() {
        let config = StoreConfig::new("/nonexistent/store").cache_capacity(8 * 1024 * 1024);
        assert_eq!(config.sled().cache_capacity, 8 * 1024 * 1024);
        let tiny = StoreConfig::new("/nonexistent/store").cache_capacity(0);
        assert_eq!(tiny.sled().cache_capacity, MIN_CACHE_CAPACITY);
    }
}

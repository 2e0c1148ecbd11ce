//! The notifier's ledger: one sled tree (through `railyard-store`) holding the release views,
//! the commits running per environment, each release's root message per channel, and how far
//! the notifier got — all committed atomically with one checkpoint.
//!
//! The checkpoint counts in *steps of the notifier*, not only stream messages: the stream
//! sequence `s` sits in its upper bits and the lower [`SUB_BITS`] count the Slack calls made
//! for that message (or for the batch of messages starting at `s`, see [`Progress::through`]). `(s << 20) | k` (k ≥ 1) means "message `s` under way, `k` commits made
//! for it"; `(s << 20) | MASK` means "message `s` done". Each Slack call's effect (the root
//! message's `ts`, how many of the message's calls are done) is committed, and flushed to
//! disk, right after Slack accepted it, so after a crash only the call in flight can repeat.
//!
//! `railyard-store` commits only through [`Projection::apply`], so the writes reach the tree
//! through a one-slot hand-over: the notifier puts them in the slot and calls `apply` with
//! the next checkpoint; the projection moves them into the update. Unlike a read model this
//! tree is not rebuilt by replay (that would post every message again): it is the record of
//! what was said in Slack.

use std::sync::{Arc, Mutex, PoisonError};

use railyard_core::{Envelope, ReleaseId};
use railyard_store::{
    Applied, Projection, ProjectionError, ProjectionStore, Store, StoreConfig, Update,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::NotifyError;
use crate::view::{ReleaseView, Running};

/// Bits of the checkpoint that count commits within one stream message.
pub const SUB_BITS: u32 = 20;
const MASK: u64 = (1 << SUB_BITS) - 1;

const RUNNING: &str = "running";
const PROGRESS: &str = "progress";

fn release_key(id: &ReleaseId) -> String {
    format!("release/{id}")
}

fn thread_key(id: &ReleaseId, channel: &str) -> String {
    format!("thread/{id}/{channel}")
}

/// A release's root message in one channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Thread {
    /// The channel id Slack returned.
    pub channel_id: String,
    /// The root message's ts.
    pub ts: String,
    /// The status line it shows now.
    pub status_line: String,
}

/// How far the notifier got with the stream message (or batch of messages) under way.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Its stream sequence (the first of the batch).
    pub sequence: u64,
    /// The last stream sequence of the batch told together with it (`None`: only
    /// `sequence`). Recorded with the batch's first call, so that after a restart the same
    /// batch, and so the same calls, are rebuilt whatever the stream holds by then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub through: Option<u64>,
    /// Whether step updates waiting for one thread were told together ([`digest`]); recorded
    /// for the same reason.
    ///
    /// [`digest`]: crate::render::digest
    #[serde(default)]
    pub coalesced: bool,
    /// How many of its calls are done (sent, or refused for good).
    pub done: usize,
    /// Why Slack refused some of them (the channel and Slack's answer), for the dead
    /// letters.
    pub failures: Vec<String>,
    /// The stream sequences each entry of `failures` concerns (empty in ledgers written
    /// before batches: then `sequence`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_sequences: Vec<Vec<u64>>,
}

/// Writes of one commit: key to new value (`None` removes).
type Writes = Vec<(String, Option<Vec<u8>>)>;

/// The projection that moves the slot's writes into the tree.
struct Hand {
    slot: Arc<Mutex<Writes>>,
}

impl Projection for Hand {
    fn name(&self) -> &str {
        "notify-ledger"
    }

    fn apply(
        &mut self,
        update: &mut Update<'_>,
        _sequence: u64,
        _envelopes: &[Envelope],
    ) -> Result<(), ProjectionError> {
        let writes = std::mem::take(&mut *self.slot.lock().unwrap_or_else(PoisonError::into_inner));
        for (key, value) in writes {
            match value {
                Some(value) => update.put(key, value),
                None => update.remove(key),
            }
        }
        Ok(())
    }
}

/// The ledger and the writes of the commit being prepared.
pub struct Ledger {
    store: ProjectionStore<Hand>,
    slot: Arc<Mutex<Writes>>,
    checkpoint: u64,
    pending: Writes,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("checkpoint", &self.checkpoint)
            .finish_non_exhaustive()
    }
}

impl Ledger {
    /// Opens (or creates) the ledger in `path`, on `kept` when this process has that store
    /// open already ([`Store::kept_or_open`]).
    pub async fn open(path: &std::path::Path, kept: Option<&Store>) -> Result<Ledger, NotifyError> {
        let slot = Arc::new(Mutex::new(Writes::new()));
        let store = Store::kept_or_open(kept, StoreConfig::new(path))
            .await?
            .projection(Hand {
                slot: Arc::clone(&slot),
            })
            .await?;
        let checkpoint = store.checkpoint().await?;
        Ok(Ledger {
            store,
            slot,
            checkpoint,
            pending: Writes::new(),
        })
    }

    /// Whether nothing was ever committed.
    pub fn is_empty(&self) -> bool {
        self.checkpoint == 0
    }

    /// The first stream sequence not finished yet.
    pub fn next_sequence(&self) -> u64 {
        if self.checkpoint == 0 {
            return 1;
        }
        let sequence = self.checkpoint >> SUB_BITS;
        if self.checkpoint & MASK == MASK {
            sequence + 1
        } else {
            sequence
        }
    }

    async fn read<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, NotifyError> {
        match self.store.get(key).await? {
            None => Ok(None),
            Some(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|error| NotifyError::Ledger {
                        what: key.to_owned(),
                        detail: error.to_string(),
                    })
            }
        }
    }

    fn write<T: Serialize>(&mut self, key: String, value: &T) {
        let bytes = serde_json::to_vec(value).expect("ledger records always serialize");
        self.pending.push((key, Some(bytes)));
    }

    /// The view of release `id`.
    pub async fn release(&self, id: &ReleaseId) -> Result<Option<ReleaseView>, NotifyError> {
        self.read(&release_key(id)).await
    }

    /// The commits running per environment.
    pub async fn running(&self) -> Result<Running, NotifyError> {
        Ok(self.read(RUNNING).await?.unwrap_or_default())
    }

    /// The root message of release `id` in `channel`.
    pub async fn thread(
        &self,
        id: &ReleaseId,
        channel: &str,
    ) -> Result<Option<Thread>, NotifyError> {
        self.read(&thread_key(id, channel)).await
    }

    /// Progress on stream message `sequence` (empty when it was not started).
    pub async fn progress(&self, sequence: u64) -> Result<Progress, NotifyError> {
        let progress: Option<Progress> = self.read(PROGRESS).await?;
        Ok(progress
            .filter(|p| p.sequence == sequence)
            .unwrap_or(Progress {
                sequence,
                ..Progress::default()
            }))
    }

    /// Records `view` in the next commit.
    pub fn put_release(&mut self, view: &ReleaseView) {
        self.write(release_key(&view.id), view);
    }

    /// Records the running commits in the next commit.
    pub fn put_running(&mut self, running: &Running) {
        self.write(RUNNING.to_owned(), running);
    }

    /// Records a root message in the next commit.
    pub fn put_thread(&mut self, id: &ReleaseId, channel: &str, thread: &Thread) {
        self.write(thread_key(id, channel), thread);
    }

    /// Records progress in the next commit.
    pub fn put_progress(&mut self, progress: &Progress) {
        self.write(PROGRESS.to_owned(), progress);
    }

    /// Commits the pending writes as one more step of stream message `sequence` and makes
    /// them durable (an fsync): called after each Slack call.
    pub async fn commit_step(&mut self, sequence: u64) -> Result<(), NotifyError> {
        let under_way = self.checkpoint >> SUB_BITS == sequence && self.checkpoint & MASK != MASK;
        let next = if under_way {
            self.checkpoint + 1
        } else {
            (sequence << SUB_BITS) | 1
        };
        if next & MASK == MASK {
            return Err(NotifyError::Ledger {
                what: "checkpoint".to_owned(),
                detail: format!("stream message {sequence} needs more than {MASK} slack calls"),
            });
        }
        self.commit(next).await?;
        self.store.flush().await?;
        Ok(())
    }

    /// Commits the pending writes and marks stream message `sequence` (the last of a batch)
    /// done.
    pub async fn commit_done(&mut self, sequence: u64) -> Result<(), NotifyError> {
        self.pending.push((PROGRESS.to_owned(), None));
        self.commit((sequence << SUB_BITS) | MASK).await
    }

    async fn commit(&mut self, checkpoint: u64) -> Result<(), NotifyError> {
        let writes = std::mem::take(&mut self.pending);
        *self.slot.lock().unwrap_or_else(PoisonError::into_inner) = writes;
        match self.store.apply(checkpoint, Vec::new()).await? {
            Applied::Committed { .. } => {
                self.checkpoint = checkpoint;
                Ok(())
            }
            Applied::Skipped { checkpoint: at, .. } => Err(NotifyError::Ledger {
                what: "checkpoint".to_owned(),
                detail: format!(
                    "commit {checkpoint} is not after the stored checkpoint {at}: is another notifier using this store?"
                ),
            }),
        }
    }

    /// Makes everything committed durable.
    pub async fn flush(&self) -> Result<(), NotifyError> {
        self.store.flush().await?;
        Ok(())
    }
}

//! A service's ledger: one sled tree (through `railyard-store`) holding its views of releases
//! and environments, what it created outside (GitHub deployment ids), and how far it got —
//! all committed atomically with one checkpoint, as the notifier's ledger does.
//!
//! The checkpoint counts *calls*, not only stream messages: the stream sequence `s` sits in
//! its upper bits and the lower [`SUB_BITS`] count the outside calls made for that message.
//! `(s << 20) | k` (k ≥ 1) means "message `s` under way, `k` calls made and recorded";
//! `(s << 20) | MASK` means "message `s` done". A call's effect (a deployment id) is written
//! and flushed to disk in the same commit as `k + 1`, right after the call succeeded; the
//! views change only when the message is done ([`Ledger::defer`]), so after a restart the
//! same list of calls is rebuilt from the same views and resumed at call `k`.
//!
//! The ledger is not a read model to rebuild: replaying it would call GitHub again. It is the
//! record of what was done outside.

use std::sync::{Arc, Mutex, PoisonError};

use railyard_core::Envelope;
use railyard_store::{
    Applied, Projection, ProjectionError, ProjectionStore, Store, StoreConfig, Update,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::FeedbackError;

/// Bits of the checkpoint that count calls within one stream message.
pub const SUB_BITS: u32 = 20;
const MASK: u64 = (1 << SUB_BITS) - 1;

/// Writes of one commit: key to new value (`None` removes).
type Writes = Vec<(String, Option<Vec<u8>>)>;

/// The projection that moves the slot's writes into the tree.
struct Hand {
    name: &'static str,
    slot: Arc<Mutex<Writes>>,
}

impl Projection for Hand {
    fn name(&self) -> &str {
        self.name
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

/// The ledger, the writes of the next call's commit, and the view writes held for the end of
/// the stream message.
pub struct Ledger {
    store: ProjectionStore<Hand>,
    slot: Arc<Mutex<Writes>>,
    checkpoint: u64,
    pending: Writes,
    deferred: Writes,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("checkpoint", &self.checkpoint)
            .finish_non_exhaustive()
    }
}

impl Ledger {
    /// Opens (or creates) the ledger named `name` in `path`, on `kept` when this process has
    /// that store open already ([`Store::kept_or_open`]).
    pub async fn open(
        path: &std::path::Path,
        kept: Option<&Store>,
        name: &'static str,
    ) -> Result<Ledger, FeedbackError> {
        let slot = Arc::new(Mutex::new(Writes::new()));
        let store = Store::kept_or_open(kept, StoreConfig::new(path))
            .await?
            .projection(Hand {
                name,
                slot: Arc::clone(&slot),
            })
            .await?;
        let checkpoint = store.checkpoint().await?;
        Ok(Ledger {
            store,
            slot,
            checkpoint,
            pending: Writes::new(),
            deferred: Writes::new(),
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

    /// How many calls of stream message `sequence` were made and recorded.
    pub fn calls_done(&self, sequence: u64) -> usize {
        if self.checkpoint >> SUB_BITS == sequence && self.checkpoint & MASK != MASK {
            (self.checkpoint & MASK) as usize
        } else {
            0
        }
    }

    /// The record under `key`, as committed (writes not yet committed are not seen).
    pub async fn read<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, FeedbackError> {
        match self.store.get(key).await? {
            None => Ok(None),
            Some(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|error| FeedbackError::Ledger {
                        what: key.to_owned(),
                        detail: error.to_string(),
                    })
            }
        }
    }

    /// Writes `value` under `key` with the next call's commit.
    pub fn write<T: Serialize>(&mut self, key: String, value: &T) {
        let bytes = serde_json::to_vec(value).expect("ledger records always serialize");
        self.pending.push((key, Some(bytes)));
    }

    /// Writes `value` under `key` when the stream message is done (views).
    pub fn defer<T: Serialize>(&mut self, key: String, value: &T) {
        let bytes = serde_json::to_vec(value).expect("ledger records always serialize");
        self.deferred.push((key, Some(bytes)));
    }

    /// Drops the view writes of a message left unfinished (a graceful stop mid-message).
    pub fn forget_deferred(&mut self) {
        self.deferred.clear();
        self.pending.clear();
    }

    /// Commits the pending writes as one more call of stream message `sequence` and makes
    /// them durable (an fsync): called after each outside call.
    pub async fn commit_call(&mut self, sequence: u64) -> Result<(), FeedbackError> {
        let under_way = self.checkpoint >> SUB_BITS == sequence && self.checkpoint & MASK != MASK;
        let next = if under_way {
            self.checkpoint + 1
        } else {
            (sequence << SUB_BITS) | 1
        };
        if next & MASK == MASK {
            return Err(FeedbackError::Ledger {
                what: "checkpoint".to_owned(),
                detail: format!("stream message {sequence} needs more than {MASK} calls"),
            });
        }
        let writes = std::mem::take(&mut self.pending);
        self.commit(next, writes).await?;
        self.store.flush().await?;
        Ok(())
    }

    /// Commits the pending and deferred writes and marks stream message `sequence` done.
    pub async fn commit_done(&mut self, sequence: u64) -> Result<(), FeedbackError> {
        let mut writes = std::mem::take(&mut self.pending);
        writes.append(&mut self.deferred);
        self.commit((sequence << SUB_BITS) | MASK, writes).await
    }

    async fn commit(&mut self, checkpoint: u64, writes: Writes) -> Result<(), FeedbackError> {
        *self.slot.lock().unwrap_or_else(PoisonError::into_inner) = writes;
        match self.store.apply(checkpoint, Vec::new()).await? {
            Applied::Committed { .. } => {
                self.checkpoint = checkpoint;
                Ok(())
            }
            Applied::Skipped { checkpoint: at, .. } => Err(FeedbackError::Ledger {
                what: "checkpoint".to_owned(),
                detail: format!(
                    "commit {checkpoint} is not after the stored checkpoint {at}: is another instance using this store?"
                ),
            }),
        }
    }

    /// Makes everything committed durable.
    pub async fn flush(&self) -> Result<(), FeedbackError> {
        self.store.flush().await?;
        Ok(())
    }
}

//! What a projection is: a [`Projection`] turns one delivery (a stream sequence and its
//! envelopes) into writes on an [`Update`], which reads the projection's current state and
//! collects the writes that the store then commits with the checkpoint in one sled batch.

use std::collections::BTreeMap;

use railyard_core::Envelope;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{ProjectionError, display_key};
use crate::layout;

/// A read model kept in one sled tree, fed the event stream in order.
///
/// Rules a projection keeps:
/// - all of its state lives in the tree, read and written through the [`Update`]: `apply`
///   may be retried, skipped on redelivery, or replayed from sequence 1 after
///   [`reset`](crate::ProjectionStore::reset), and only the tree follows those faithfully;
///   fields of `self` are configuration, not state;
/// - it never touches sled or does other IO; it runs on a blocking thread, so it may take
///   its time, but the stream waits for it;
/// - the same events on the same state give the same writes, so a rebuild is byte-identical.
pub trait Projection: Send + 'static {
    /// The projection's name, which names its tree: 1 to 63 characters from `a-z`, `0-9`,
    /// `-`, `_`, `.`, starting with a letter or digit. Stable across restarts.
    fn name(&self) -> &str;

    /// Applies the envelopes of the delivery at stream `sequence` (one append, so one or more
    /// events that belong together). An error writes nothing of the delivery.
    fn apply(
        &mut self,
        update: &mut Update<'_>,
        sequence: u64,
        envelopes: &[Envelope],
    ) -> Result<(), ProjectionError>;

    /// Whether it is also handed the envelopes that do not count ([`Envelope::untrusted`]:
    /// an authority event no trusted writer sealed). Most read models must not see them;
    /// the audit record keeps everything the stream holds, and says which did not count.
    fn sees_untrusted(&self) -> bool {
        false
    }
}

/// A key and its value, as reads return them.
pub type Entry = (Vec<u8>, Vec<u8>);

/// User key (without the data prefix) to its new value, `None` for a removal.
pub(crate) type Writes = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// The pending update of one delivery: reads see the tree as of the last checkpoint plus the
/// writes of earlier deliveries committed in the same batch plus the writes already made in
/// this update, so several envelopes of one delivery, and several deliveries, compose.
pub struct Update<'a> {
    tree: &'a sled::Tree,
    earlier: &'a Writes,
    writes: Writes,
}

impl std::fmt::Debug for Update<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Update")
            .field("writes", &self.writes.len())
            .finish()
    }
}

fn read_error(source: sled::Error) -> ProjectionError {
    ProjectionError::Read {
        source: Box::new(source),
    }
}

impl<'a> Update<'a> {
    pub(crate) fn new(tree: &'a sled::Tree, earlier: &'a Writes) -> Update<'a> {
        Update {
            tree,
            earlier,
            writes: BTreeMap::new(),
        }
    }

    pub(crate) fn into_writes(self) -> Writes {
        self.writes
    }

    /// The value at `key`.
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>, ProjectionError> {
        let key = key.as_ref();
        if let Some(pending) = self.writes.get(key).or_else(|| self.earlier.get(key)) {
            return Ok(pending.clone());
        }
        let stored = self.tree.get(layout::data_key(key)).map_err(read_error)?;
        Ok(stored.map(|value| value.to_vec()))
    }

    /// The JSON value at `key`, decoded.
    pub fn get_json<T: DeserializeOwned>(
        &self,
        key: impl AsRef<[u8]>,
    ) -> Result<Option<T>, ProjectionError> {
        let key = key.as_ref();
        self.get(key)?
            .map(|bytes| {
                serde_json::from_slice(&bytes).map_err(|source| ProjectionError::Decode {
                    key: display_key(key),
                    source,
                })
            })
            .transpose()
    }

    /// Every entry whose key starts with `prefix`, in key order.
    pub fn scan_prefix(&self, prefix: impl AsRef<[u8]>) -> Result<Vec<Entry>, ProjectionError> {
        let prefix = prefix.as_ref();
        let mut merged = BTreeMap::new();
        for entry in self.tree.scan_prefix(layout::data_key(prefix)) {
            let (key, value) = entry.map_err(read_error)?;
            merged.insert(layout::user_key(&key).to_vec(), value.to_vec());
        }
        for layer in [self.earlier, &self.writes] {
            for (key, value) in layer
                .range(prefix.to_vec()..)
                .take_while(|(key, _)| key.starts_with(prefix))
            {
                match value {
                    Some(value) => merged.insert(key.clone(), value.clone()),
                    None => merged.remove(key),
                };
            }
        }
        Ok(merged.into_iter().collect())
    }

    /// Sets `key` to `value`.
    pub fn put(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.writes.insert(key.into(), Some(value.into()));
    }

    /// Sets `key` to `value` as JSON.
    pub fn put_json<T: Serialize + ?Sized>(
        &mut self,
        key: impl Into<Vec<u8>>,
        value: &T,
    ) -> Result<(), ProjectionError> {
        let key = key.into();
        let bytes = serde_json::to_vec(value).map_err(|source| ProjectionError::Encode {
            key: display_key(&key),
            source,
        })?;
        self.writes.insert(key, Some(bytes));
        Ok(())
    }

    /// Removes `key` (a no-op when it is absent).
    pub fn remove(&mut self, key: impl Into<Vec<u8>>) {
        self.writes.insert(key.into(), None);
    }

    /// How many keys this update writes or removes so far.
    pub fn len(&self) -> usize {
        self.writes.len()
    }

    /// Whether this update writes nothing so far.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }
}

/// What [`ProjectionStore::apply`](crate::ProjectionStore::apply) did with a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The projection's writes and the new checkpoint were committed in one batch.
    Committed {
        /// The delivery's stream sequence, now the checkpoint.
        sequence: u64,
        /// How many keys were written or removed.
        writes: usize,
    },
    /// The sequence was at or below the checkpoint (a redelivery or an older message), so
    /// nothing was applied.
    Skipped {
        /// The delivery's stream sequence.
        sequence: u64,
        /// The checkpoint, unchanged.
        checkpoint: u64,
    },
}

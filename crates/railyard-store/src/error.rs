//! The two error types of the store: [`ProjectionError`], which a projection returns from
//! its `apply`, and [`StoreError`], which every store operation returns.

use std::fmt;

/// Any error, boxed; used so that sled's types stay out of this crate's public API.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a projection could not apply a delivery. Nothing of the delivery is written.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// A value the projection read is not the JSON it expects.
    #[error(
        "value at key {key} is not the expected JSON: rebuild the projection if its format changed"
    )]
    Decode {
        /// The key, escaped for display.
        key: String,
        /// What serde said.
        #[source]
        source: serde_json::Error,
    },
    /// A value the projection wanted to write could not be encoded as JSON.
    #[error("value for key {key} cannot be encoded as JSON: fix its Serialize implementation")]
    Encode {
        /// The key, escaped for display.
        key: String,
        /// What serde said.
        #[source]
        source: serde_json::Error,
    },
    /// Reading the projection's current state failed.
    #[error("reading the projection's state failed: check the store's disk and permissions")]
    Read {
        /// The storage error.
        #[source]
        source: BoxError,
    },
    /// The events cannot be projected; the message says what is wrong and what to do.
    #[error("{0}")]
    Rejected(String),
}

impl ProjectionError {
    /// The events cannot be projected: `message` says what is wrong and what to do, as a
    /// lowercase fragment.
    pub fn rejected(message: impl Into<String>) -> ProjectionError {
        ProjectionError::Rejected(message.into())
    }
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The sled database could not be opened.
    #[error(
        "cannot open the store at {path}: check that no other process has it open and that the directory is writable"
    )]
    Open {
        /// The directory.
        path: String,
        /// The storage error.
        #[source]
        source: BoxError,
    },
    /// sled found its files damaged and could not recover the database.
    #[error(
        "cannot recover the store at {path}: its files are damaged: move the directory aside (keep it for inspection) and rebuild the projections from the stream into a new one"
    )]
    Unrecoverable {
        /// The directory.
        path: String,
        /// What sled said (or how its recovery panicked).
        #[source]
        source: BoxError,
    },
    /// A projection name that cannot name a tree.
    #[error(
        "projection name {0:?} is invalid: use 1 to 63 characters from a-z, 0-9, '-', '_' and '.', starting with a letter or digit"
    )]
    InvalidName(String),
    /// The same projection was opened twice on one store.
    #[error(
        "projection {0} is already open in this store: clone the ProjectionStore you have instead of opening it again"
    )]
    AlreadyOpen(String),
    /// A sled operation failed.
    #[error(
        "projection {projection}: {operation} failed in the store: check the disk and its free space"
    )]
    Storage {
        /// The projection.
        projection: String,
        /// What was being done.
        operation: &'static str,
        /// The storage error.
        #[source]
        source: BoxError,
    },
    /// The projection refused a delivery; nothing of it was written.
    #[error(
        "projection {projection} failed at stream sequence {sequence}, nothing was written: fix the projection or dead-letter the event"
    )]
    Projection {
        /// The projection.
        projection: String,
        /// The delivery's stream sequence.
        sequence: u64,
        /// What the projection said.
        #[source]
        source: ProjectionError,
    },
    /// A value read through the store is not the JSON the caller expects.
    #[error(
        "projection {projection}: value at key {key} is not the expected JSON: rebuild the projection if its format changed"
    )]
    Decode {
        /// The projection.
        projection: String,
        /// The key, escaped for display.
        key: String,
        /// What serde said.
        #[source]
        source: serde_json::Error,
    },
    /// The stored checkpoint is not a big-endian u64.
    #[error(
        "projection {projection}: the stored checkpoint is {len} bytes instead of 8: the tree is damaged, rebuild it"
    )]
    CorruptCheckpoint {
        /// The projection.
        projection: String,
        /// Its length.
        len: usize,
    },
    /// The blocking task doing the work panicked or was cancelled by a runtime shutdown.
    #[error(
        "projection {projection}: the blocking task for {operation} panicked or was cancelled: see the panic message above; nothing was half-written"
    )]
    Task {
        /// The projection.
        projection: String,
        /// What was being done.
        operation: &'static str,
        /// What tokio said.
        #[source]
        source: tokio::task::JoinError,
    },
    /// The projection opened below the checkpoint its store had recorded as durable: sled
    /// stopped recovering its log at a damaged message and dropped what came after it.
    #[error(
        "projection {projection} in the store at {path} was cut short: a flush had made stream sequence {durable} durable but its log now ends at {recovered} (sled stops reading its log at the first damaged message), so what came after {recovered} is lost: check the disk, then rebuild the projection from the stream"
    )]
    CutShort {
        /// The projection.
        projection: String,
        /// The directory.
        path: String,
        /// The checkpoint a flush had made durable.
        durable: u64,
        /// The checkpoint sled recovered.
        recovered: u64,
    },
    /// The record of what the store made durable could not be written.
    #[error(
        "projection {projection}: cannot update {path}, the store's record of what it made durable: check the directory's permissions and free space"
    )]
    Marks {
        /// The projection.
        projection: String,
        /// The file.
        path: String,
        /// What the file system said.
        #[source]
        source: std::io::Error,
    },
    /// Something else already drives the projection (a `run_projection` or a `rebuild`).
    #[error("projection {0} is already driven by run_projection or rebuild: stop that one first")]
    Busy(String),
}

/// Renders a key for messages: printable ASCII as is, every other byte as `\xNN`.
pub fn display_key(key: &[u8]) -> String {
    DisplayKey(key).to_string()
}

struct DisplayKey<'a>(&'a [u8]);

impl fmt::Display for DisplayKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for &byte in self.0 {
            if byte.is_ascii_graphic() && byte != b'\\' {
                write!(f, "{}", byte as char)?;
            } else {
                write!(f, "\\x{byte:02x}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::display_key;

    #[test]
    fn keys_display_printable_bytes_and_escape_the_rest() {
        let cases: &[(&[u8], &str)] = &[
            (b"release\x00rel-42\x00", "release\\x00rel-42\\x00"),
            (
                &[0, 0, 0, 0, 0, 0, 0, 7],
                "\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x07",
            ),
            (b"a b\\", "a\\x20b\\x5c"),
            (b"", ""),
        ];
        for (key, expected) in cases {
            assert_eq!(display_key(key), *expected, "key {key:?}");
        }
    }
}

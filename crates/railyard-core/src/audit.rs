//! `audit.checkpoint`: the audit service's signed seal over its hash-chained record, appended
//! to the stream on the `audit` aggregate so that the seal is itself evidence. Data only: how
//! it is signed and checked lives in `railyard-audit` (`seal.rs`).

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `audit.checkpoint`: records 1 to `records` of the audit chain, sealed by the audit
/// service's ed25519 key. The chain makes the head's hash depend on every record before it,
/// so the signature covers them all; `digests` lets a verifier name the first record that
/// differs after the previous checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditCheckpoint {
    /// The number of the last record sealed (records are numbered from 1, without gaps).
    pub records: u64,
    /// That record's hash (hex SHA-256): the chain's head at `records`.
    pub head: String,
    /// That record's stream sequence.
    pub sequence: u64,
    /// The first record `digests` lists (the previous checkpoint's `records` + 1).
    pub from: u64,
    /// The first 16 hex digits of the hash of each record from `from` to `records`.
    pub digests: Vec<String>,
    /// When it was sealed.
    pub sealed_at: DateTime<Utc>,
    /// The signing key's id: the first 16 hex digits of the SHA-256 of its public key.
    pub key_id: String,
    /// The ed25519 signature (hex) of every other field, in canonical JSON after the line
    /// `railyard-audit-checkpoint/1`.
    pub signature: String,
}

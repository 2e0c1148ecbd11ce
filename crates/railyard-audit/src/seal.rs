//! Signed checkpoints (issue 14): the audit service's ed25519 key ([`AuditKey`], read from a
//! key file), how an [`AuditCheckpoint`] is signed and checked, and [`Seals`], which follows
//! a chain record by record and holds every checkpoint met in it (or an export's trailer)
//! against the records it seals, naming the first record that differs.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::Write as _;
use std::path::Path;

use chrono::{DateTime, Utc};
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use railyard_core::audit::AuditCheckpoint;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::record::{Record, canonical_bytes};
use crate::verify::{Problem, ProblemKind};

/// The first word of a signing key file.
const KEY_FILE_TAG: &str = "railyard-audit-key";

/// Domain separation for checkpoint signatures; bump it if the signed layout ever changes.
const SIGN_DOMAIN: &[u8] = b"railyard-audit-checkpoint/1\n";

/// How many hex digits of each record's hash a checkpoint lists.
pub const DIGEST_LEN: usize = 16;

/// The event type of a checkpoint.
pub const CHECKPOINT_TYPE: &str = "audit.checkpoint";

/// A key file or public key that cannot be used; says what to do.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key file cannot be read or written.
    #[error("{path}: {action}")]
    Io {
        /// The file.
        path: String,
        /// What was being done, and what to do.
        action: &'static str,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// The file or text is not a key.
    #[error("{0}")]
    Invalid(String),
}

/// The audit service's signing key. `Debug` shows only its key id: the secret half is never
/// printed or logged.
#[derive(Clone)]
pub struct AuditKey {
    key: SigningKey,
}

impl fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AuditKey(key id {})", self.public().id())
    }
}

impl AuditKey {
    /// A new random key.
    pub fn generate() -> AuditKey {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).expect("the operating system provides randomness");
        AuditKey {
            key: SigningKey::from_bytes(&seed),
        }
    }

    /// Reads the key file at `path`.
    pub fn load(path: &Path) -> Result<AuditKey, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
            path: path.display().to_string(),
            action: if source.kind() == std::io::ErrorKind::NotFound {
                "no signing key there: create one with `railyard audit key --generate`"
            } else {
                "cannot read the signing key"
            },
            source,
        })?;
        AuditKey::from_file_text(&text)
            .map_err(|error| KeyError::Invalid(format!("{}: {error}", path.display())))
    }

    /// Writes a new key to `path`, which must not exist (readable by its owner only, on Unix).
    pub fn create(path: &Path) -> Result<AuditKey, KeyError> {
        let key = AuditKey::generate();
        let io = |action| {
            move |source| KeyError::Io {
                path: path.display().to_string(),
                action,
                source,
            }
        };
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io("cannot create the key's directory"))?;
        }
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(path).map_err(io(
            "cannot create the signing key (an existing key is never replaced: move it away first to rotate)",
        ))?;
        file.write_all(key.to_file_text().as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(io("cannot write the signing key"))?;
        Ok(key)
    }

    /// Reads the key file at `path`, or creates it when there is none; says whether it was
    /// created.
    pub fn load_or_create(path: &Path) -> Result<(AuditKey, bool), KeyError> {
        match AuditKey::load(path) {
            Ok(key) => Ok((key, false)),
            Err(KeyError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                AuditKey::create(path).map(|key| (key, true))
            }
            Err(error) => Err(error),
        }
    }

    fn to_file_text(&self) -> String {
        format!("{KEY_FILE_TAG} {}\n", hex::encode(self.key.to_bytes()))
    }

    fn from_file_text(text: &str) -> Result<AuditKey, KeyError> {
        let words: Vec<&str> = text.split_whitespace().collect();
        let [tag, seed] = words.as_slice() else {
            return Err(KeyError::Invalid(format!(
                "not an audit signing key: expected `{KEY_FILE_TAG} <64 hex digits>`, as `railyard audit key --generate` writes it"
            )));
        };
        if *tag != KEY_FILE_TAG {
            return Err(KeyError::Invalid(format!(
                "not an audit signing key: it starts with {tag:?}, not {KEY_FILE_TAG}"
            )));
        }
        let seed: [u8; 32] = hex::decode(seed)
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or_else(|| KeyError::Invalid("the signing key is not 64 hex digits".to_owned()))?;
        Ok(AuditKey {
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// Its public half.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.key.verifying_key())
    }

    /// Seals records 1 to `records` (whose last has hash `head` and stream sequence
    /// `sequence`), listing the digests of records `from` to `records`.
    pub fn sign(
        &self,
        records: u64,
        head: String,
        sequence: u64,
        from: u64,
        digests: Vec<String>,
        sealed_at: DateTime<Utc>,
    ) -> AuditCheckpoint {
        let mut checkpoint = AuditCheckpoint {
            records,
            head,
            sequence,
            from,
            digests,
            sealed_at,
            key_id: self.public().id(),
            signature: String::new(),
        };
        let signature = self.key.sign(&signed_bytes(&checkpoint));
        checkpoint.signature = hex::encode(signature.to_bytes());
        checkpoint
    }
}

/// A public key that checkpoints are verified with, written `ed25519:<64 hex digits>`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ed25519:{}", hex::encode(self.0.as_bytes()))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl std::str::FromStr for PublicKey {
    type Err = KeyError;

    fn from_str(text: &str) -> Result<PublicKey, KeyError> {
        let text = text.trim();
        let hex_part = text.strip_prefix("ed25519:").unwrap_or(text);
        let bytes: [u8; 32] = hex::decode(hex_part)
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or_else(|| {
                KeyError::Invalid(format!(
                    "{text:?} is not a public key: expected ed25519:<64 hex digits>, as `railyard audit key` prints it"
                ))
            })?;
        VerifyingKey::from_bytes(&bytes)
            .map(PublicKey)
            .map_err(|_| KeyError::Invalid(format!("{text:?} is not a valid ed25519 public key")))
    }
}

impl PublicKey {
    /// Its id: the first 16 hex digits of the SHA-256 of its bytes.
    pub fn id(&self) -> String {
        let digest = Sha256::digest(self.0.as_bytes());
        hex::encode(&digest[..8])
    }

    /// A public key given on the command line: the key itself, or a file holding it (as
    /// `railyard audit key > FILE` writes it; lines starting with `#` are skipped).
    pub fn from_arg(arg: &str) -> Result<PublicKey, KeyError> {
        if let Ok(key) = arg.parse() {
            return Ok(key);
        }
        let path = Path::new(arg);
        if !path.is_file() {
            return arg.parse();
        }
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
            path: arg.to_owned(),
            action: "cannot read the public key",
            source,
        })?;
        let line = text
            .lines()
            .map(str::trim)
            .find(|line| !line.is_empty() && !line.starts_with('#'))
            .unwrap_or_default();
        line.parse()
            .map_err(|error| KeyError::Invalid(format!("{arg}: {error}")))
    }
}

/// The bytes a checkpoint's signature covers: the domain line, then the checkpoint without
/// its signature as canonical JSON.
pub fn signed_bytes(checkpoint: &AuditCheckpoint) -> Vec<u8> {
    let mut value = serde_json::to_value(checkpoint).expect("a checkpoint serializes");
    if let serde_json::Value::Object(map) = &mut value {
        map.remove("signature");
    }
    let mut out = SIGN_DOMAIN.to_vec();
    out.extend(canonical_bytes(&value));
    out
}

/// What a checkpoint's signature says, given the keys trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signed {
    /// By a trusted key.
    Valid,
    /// It names a trusted key but that key did not sign it.
    Invalid,
    /// It names a key that is not trusted here.
    UnknownKey,
}

/// The public keys checkpoints are checked with, by key id.
#[derive(Debug, Clone, Default)]
pub struct Keys(BTreeMap<String, PublicKey>);

impl Keys {
    /// Trusts `keys`.
    pub fn new(keys: impl IntoIterator<Item = PublicKey>) -> Keys {
        Keys(keys.into_iter().map(|key| (key.id(), key)).collect())
    }

    /// Whether none is trusted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Checks `checkpoint`'s signature.
    pub fn check(&self, checkpoint: &AuditCheckpoint) -> Signed {
        let Some(key) = self.0.get(&checkpoint.key_id) else {
            return Signed::UnknownKey;
        };
        let signature = hex::decode(&checkpoint.signature)
            .ok()
            .and_then(|bytes| <[u8; 64]>::try_from(bytes).ok())
            .map(|bytes| Signature::from_bytes(&bytes));
        match signature {
            Some(signature) if key.0.verify(&signed_bytes(checkpoint), &signature).is_ok() => {
                Signed::Valid
            }
            _ => Signed::Invalid,
        }
    }
}

/// The digest a checkpoint lists for a record hash.
pub fn digest(hash: &str) -> &str {
    hash.get(..DIGEST_LEN).unwrap_or(hash)
}

/// What the signed checkpoints of a chain proved.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealSummary {
    /// Checkpoints met (records of type `audit.checkpoint`, and an export's trailer).
    pub checkpoints: u64,
    /// Those whose signature verified with a trusted key and that match the records.
    pub verified: u64,
    /// Ids of the keys that signed checkpoints but are not trusted here (those checkpoints
    /// prove nothing; pass the keys to count them).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub unknown_keys: BTreeSet<String>,
    /// Records 1 to `covered` are sealed by a verified checkpoint (0: none is).
    pub covered: u64,
    /// When the checkpoint that seals the most records was sealed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub covered_at: Option<DateTime<Utc>>,
}

/// Follows a chain record by record (after each passed the chain's own checks) and holds every
/// checkpoint in it against the records it seals.
#[derive(Debug)]
pub struct Seals {
    keys: Keys,
    /// Hash and stream sequence of every record so far, record `n` at `n - 1`.
    seen: Vec<([u8; 32], u64)>,
    summary: SealSummary,
}

fn hash_bytes(hash: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    // A hash that is not 64 hex digits failed the chain check before it gets here.
    let _ = hex::decode_to_slice(hash, &mut out);
    out
}

impl Seals {
    /// Checks checkpoints with `keys`.
    pub fn new(keys: Keys) -> Seals {
        Seals {
            keys,
            seen: Vec::new(),
            summary: SealSummary::default(),
        }
    }

    /// What was proved so far.
    pub fn summary(&self) -> &SealSummary {
        &self.summary
    }

    /// Records seen.
    pub fn records(&self) -> u64 {
        self.seen.len() as u64
    }

    /// Takes `record`, the next of the chain; checks it when it is a checkpoint.
    pub fn record(&mut self, record: &Record) -> Option<Problem> {
        self.seen.push((hash_bytes(&record.hash), record.sequence));
        if record.facets.kind != CHECKPOINT_TYPE {
            return None;
        }
        let n = record.n;
        let checkpoint = match serde_json::from_value::<AuditCheckpoint>(record.data().clone()) {
            Ok(checkpoint) => checkpoint,
            Err(error) => {
                return Some(Problem {
                    n,
                    sequence: Some(record.sequence),
                    kind: ProblemKind::Altered,
                    detail: format!("record {n} is a checkpoint that does not decode: {error}"),
                });
            }
        };
        self.checkpoint(&checkpoint, n, &format!("the checkpoint in record {n}"))
    }

    /// Holds `checkpoint` (found at record `at`, described as `what`) against the records
    /// seen so far.
    pub fn checkpoint(
        &mut self,
        checkpoint: &AuditCheckpoint,
        at: u64,
        what: &str,
    ) -> Option<Problem> {
        self.summary.checkpoints += 1;
        match self.keys.check(checkpoint) {
            Signed::UnknownKey => {
                self.summary.unknown_keys.insert(checkpoint.key_id.clone());
                return None;
            }
            Signed::Invalid => {
                return Some(Problem {
                    n: at,
                    sequence: None,
                    kind: ProblemKind::Altered,
                    detail: format!(
                        "{what} names key {} but its signature does not verify with that key: it was forged or altered",
                        checkpoint.key_id
                    ),
                });
            }
            Signed::Valid => {}
        }
        let sealed = checkpoint.records;
        let seen = self.records();
        if sealed == 0 || sealed > seen {
            return Some(Problem {
                n: seen + 1,
                sequence: None,
                kind: ProblemKind::Removed,
                detail: format!(
                    "record {} is missing: {what} (signed by key {}) seals records up to {sealed}, but the records end at {seen}",
                    seen + 1,
                    checkpoint.key_id
                ),
            });
        }
        // The first listed record whose hash is not the one sealed: the chain was recomputed
        // from there.
        let first_differing = checkpoint
            .digests
            .iter()
            .zip(checkpoint.from.max(1)..=sealed)
            .find(|(listed, n)| {
                let (hash, _) = &self.seen[(*n - 1) as usize];
                hex::encode(&hash[..DIGEST_LEN / 2]) != **listed
            })
            .map(|(listed, n)| (n, listed.clone()));
        let (hash, sequence) = self.seen[(sealed - 1) as usize];
        let head_differs = hex::encode(hash) != checkpoint.head;
        if let Some((n, listed)) = first_differing {
            let (hash, sequence) = self.seen[(n - 1) as usize];
            return Some(Problem {
                n,
                sequence: Some(sequence),
                kind: ProblemKind::Altered,
                detail: format!(
                    "record {n} is not the record {what} sealed (its hash begins {}, the signed checkpoint says {listed}): it was altered, removed or reordered and the chain's hashes recomputed after it",
                    hex::encode(&hash[..DIGEST_LEN / 2])
                ),
            });
        }
        if head_differs || sequence != checkpoint.sequence {
            let first = self.summary.covered.min(sealed - 1) + 1;
            return Some(Problem {
                n: first,
                sequence: None,
                kind: ProblemKind::Altered,
                detail: format!(
                    "records {first} to {sealed} are not the records {what} sealed (record {sealed} has hash {} at stream sequence {sequence}, the signed checkpoint says {} at {}): one of them was altered and the chain's hashes recomputed",
                    hex::encode(hash),
                    checkpoint.head,
                    checkpoint.sequence
                ),
            });
        }
        self.summary.verified += 1;
        if sealed >= self.summary.covered {
            self.summary.covered = sealed;
            self.summary.covered_at = Some(checkpoint.sealed_at);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_file_reads_back_and_debug_hides_the_secret() {
        let key = AuditKey::generate();
        let read = AuditKey::from_file_text(&key.to_file_text()).unwrap();
        assert_eq!(read.public(), key.public());
        let secret = hex::encode(key.key.to_bytes());
        assert!(!format!("{key:?}").contains(&secret));
        assert!(format!("{key:?}").contains(&key.public().id()));
        let printed = key.public().to_string();
        assert_eq!(printed.parse::<PublicKey>().unwrap(), key.public());
        assert!(AuditKey::from_file_text("railyard-audit-key 12").is_err());
    }

    #[test]
    fn a_signature_covers_every_field() {
        let key = AuditKey::generate();
        let checkpoint = key.sign(
            3,
            "ab".repeat(32),
            7,
            1,
            vec!["00".repeat(8); 3],
            "2026-03-02T09:00:00Z".parse().unwrap(),
        );
        let keys = Keys::new([key.public()]);
        assert_eq!(keys.check(&checkpoint), Signed::Valid);
        let mut edited = checkpoint.clone();
        edited.records = 2;
        assert_eq!(keys.check(&edited), Signed::Invalid);
        let mut edited = checkpoint.clone();
        edited.digests[1] = "11".repeat(8);
        assert_eq!(keys.check(&edited), Signed::Invalid);
        let other = Keys::new([AuditKey::generate().public()]);
        assert_eq!(other.check(&checkpoint), Signed::UnknownKey);
    }
}

//! Authority: which service may write which release event, enforced by signatures.
//!
//! NATS lets a user publish on a subject, not write a kind of event: the intake and planner
//! users must publish on `railyard.events.release.*` (a request, a plan), so NATS alone cannot
//! stop a compromised intake from appending "approved by alice". So the events that carry
//! authority are signed by the one service allowed to write them, and every fold
//! ([`crate::ReleaseState::apply`]) ignores one whose seal is missing or wrong:
//!
//! - `release.planned` and `release.rejected`: the planner ([`Writer::Planner`]);
//! - every other release event (steps, gates, approvals and denials, freeze overrides, holds,
//!   resumes, cancels, rollbacks, completion): the promoter, which also serves the operator
//!   routes ([`Writer::Promoter`]);
//! - `release.requested` and the non-release events (signals, inventory, incidents) are not
//!   sealed: intake writes requests, and what it may request is checked by the planner.
//!
//! A process holds the signing key of the writer it is ([`hold`]), from a key file only that
//! service can read; the bus seals what the process appends ([`seal`]). Every service is told
//! the public keys to trust ([`trust`]); from then on an unsealed or badly sealed authority
//! event, wherever it is read from (the stream, a read model, a request), is marked
//! [`Envelope::untrusted`] as it is deserialized, logged as a warning and counted
//! ([`refused`]), and every fold ([`crate::ReleaseState::apply`]) and read model leaves it
//! out. Envelopes a process builds itself are not checked: they are its own. A process that
//! trusts no key enforces nothing (development: `railyard dev` generates its keys and trusts
//! them).
//!
//! The seal is an ed25519 signature over the envelope without its seal (event id, aggregate,
//! time, actor, correlation and the event), so it cannot be moved to another release, another
//! event or another actor.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, RwLock};

use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::event::{Envelope, Event};

/// The services that sign the events only they may write.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Writer {
    /// Writes plans and refusals.
    Planner,
    /// Carries releases out and serves the operator routes.
    Promoter,
}

impl Writer {
    /// Its name, as in key files and trust lists.
    pub fn as_str(self) -> &'static str {
        match self {
            Writer::Planner => "planner",
            Writer::Promoter => "promoter",
        }
    }
}

impl fmt::Display for Writer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Writer {
    type Err = AuthorityError;

    fn from_str(text: &str) -> Result<Writer, AuthorityError> {
        match text {
            "planner" => Ok(Writer::Planner),
            "promoter" => Ok(Writer::Promoter),
            other => Err(AuthorityError(format!(
                "{other:?} is not a writer: use planner or promoter"
            ))),
        }
    }
}

/// The writer's signature on an envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Seal {
    /// Who signed.
    pub writer: Writer,
    /// The signing key's public half (hex).
    pub key: String,
    /// The ed25519 signature of the envelope without its seal (hex).
    pub signature: String,
}

/// A key file or trust entry that cannot be used; says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AuthorityError(String);

/// Which writer must have sealed `event`; `None` for events anyone allowed to publish may write.
pub fn writer_of(event: &Event) -> Option<Writer> {
    match event {
        Event::ReleasePlanned(_) | Event::ReleaseRejected(_) => Some(Writer::Planner),
        Event::ReleaseCancelled(_)
        | Event::ReleaseHeld(_)
        | Event::ReleaseResumed(_)
        | Event::ReleaseCompleted(_)
        | Event::ReleaseRolledBack(_)
        | Event::StepWaiting(_)
        | Event::StepStarted(_)
        | Event::GateEvaluated(_)
        | Event::StepSucceeded(_)
        | Event::StepFailed(_)
        | Event::StepRolledBack(_)
        | Event::ApprovalRequested(_)
        | Event::ApprovalGranted(_)
        | Event::ApprovalDenied(_)
        | Event::FreezeOverridden(_)
        | Event::ColourRetired(_) => Some(Writer::Promoter),
        Event::ReleaseRequested(_)
        | Event::ServiceDeployed(_)
        | Event::CatalogApplied(_)
        | Event::ArtifactPublished(_)
        | Event::SuiteFinished(_)
        | Event::CommitsPushed(_)
        | Event::IncidentOpened(_)
        | Event::IncidentResolved(_)
        | Event::AuditCheckpoint(_) => None,
    }
}

/// A writer's signing key. `Debug` shows only the writer and the public key.
#[derive(Clone)]
pub struct AuthorityKey {
    writer: Writer,
    key: SigningKey,
}

impl fmt::Debug for AuthorityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AuthorityKey({})", self.public())
    }
}

/// The first word of a key file.
const KEY_FILE_TAG: &str = "railyard-authority-key";

impl AuthorityKey {
    /// A new random key for `writer`.
    pub fn generate(writer: Writer) -> AuthorityKey {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).expect("the operating system provides randomness");
        AuthorityKey {
            writer,
            key: SigningKey::from_bytes(&seed),
        }
    }

    /// Whose key it is.
    pub fn writer(&self) -> Writer {
        self.writer
    }

    /// The key as a key file holds it: `railyard-authority-key <writer> <hex seed>`.
    pub fn to_file_text(&self) -> String {
        format!(
            "{KEY_FILE_TAG} {} {}\n",
            self.writer,
            hex::encode(self.key.to_bytes())
        )
    }

    /// Reads a key file's text.
    pub fn from_file_text(text: &str) -> Result<AuthorityKey, AuthorityError> {
        let words: Vec<&str> = text.split_whitespace().collect();
        let [tag, writer, seed] = words.as_slice() else {
            return Err(AuthorityError(format!(
                "not a key file: expected `{KEY_FILE_TAG} <planner|promoter> <64 hex digits>`, as `railyard authority key` writes it"
            )));
        };
        if *tag != KEY_FILE_TAG {
            return Err(AuthorityError(format!(
                "not a key file: it starts with {tag:?}, not {KEY_FILE_TAG}"
            )));
        }
        let seed: [u8; 32] = hex::decode(seed)
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or_else(|| AuthorityError("the key is not 64 hex digits".to_owned()))?;
        Ok(AuthorityKey {
            writer: writer.parse()?,
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// Reads the key file at `path`.
    pub fn read(path: &Path) -> Result<AuthorityKey, AuthorityError> {
        let text = std::fs::read_to_string(path).map_err(|error| {
            AuthorityError(format!(
                "cannot read the authority key file {}: {error} (make one with `railyard authority key --writer <planner|promoter> --out FILE`)",
                path.display()
            ))
        })?;
        AuthorityKey::from_file_text(&text)
            .map_err(|AuthorityError(why)| AuthorityError(format!("{}: {why}", path.display())))
    }

    /// Its public half, to trust.
    pub fn public(&self) -> TrustedKey {
        TrustedKey {
            writer: self.writer,
            key: self.key.verifying_key(),
        }
    }

    /// Seals `envelope` (replacing any seal).
    pub fn seal(&self, envelope: &mut Envelope) {
        envelope.seal = None;
        let signature = self.key.sign(&signed_bytes(envelope));
        envelope.seal = Some(Seal {
            writer: self.writer,
            key: hex::encode(self.key.verifying_key().as_bytes()),
            signature: hex::encode(signature.to_bytes()),
        });
    }
}

/// A public key trusted for one writer, written `planner:<64 hex digits>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrustedKey {
    /// Whose key.
    pub writer: Writer,
    key: VerifyingKey,
}

impl fmt::Display for TrustedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.writer, hex::encode(self.key.as_bytes()))
    }
}

impl FromStr for TrustedKey {
    type Err = AuthorityError;

    fn from_str(text: &str) -> Result<TrustedKey, AuthorityError> {
        let (writer, key) = text.trim().split_once(':').ok_or_else(|| {
            AuthorityError(format!(
                "{text:?} is not a trusted key: write it as planner:<64 hex digits>, as `railyard authority key` prints it"
            ))
        })?;
        let writer: Writer = writer.parse()?;
        let bytes: [u8; 32] = hex::decode(key)
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or_else(|| AuthorityError(format!("{text:?}: the key is not 64 hex digits")))?;
        let key = VerifyingKey::from_bytes(&bytes)
            .map_err(|_| AuthorityError(format!("{text:?} is not an ed25519 public key")))?;
        Ok(TrustedKey { writer, key })
    }
}

/// Reads a trust list: keys separated by commas or whitespace.
pub fn parse_trust(text: &str) -> Result<Vec<TrustedKey>, AuthorityError> {
    text.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|entry| !entry.is_empty())
        .map(str::parse)
        .collect()
}

/// What is signed: a fixed prefix and the envelope without its seal, as JSON.
fn signed_bytes(envelope: &Envelope) -> Vec<u8> {
    let mut unsealed = envelope.clone();
    unsealed.seal = None;
    let mut bytes = b"railyard-authority-v1\n".to_vec();
    bytes.extend(serde_json::to_vec(&unsealed).unwrap_or_default());
    bytes
}

/// The keys a process signs with and the keys it trusts.
#[derive(Debug, Default, Clone)]
pub struct Authority {
    keys: BTreeMap<Writer, AuthorityKey>,
    trusted: Option<BTreeMap<Writer, Vec<VerifyingKey>>>,
}

impl Authority {
    /// This process writes as `key`'s writer.
    pub fn hold(&mut self, key: AuthorityKey) {
        self.keys.insert(key.writer, key);
    }

    /// Trusts `keys`; from then on authority events must be sealed by one of them.
    pub fn trust(&mut self, keys: impl IntoIterator<Item = TrustedKey>) {
        let trusted = self.trusted.get_or_insert_with(BTreeMap::new);
        for key in keys {
            let list = trusted.entry(key.writer).or_default();
            if !list.contains(&key.key) {
                list.push(key.key);
            }
        }
    }

    /// Whether it checks seals.
    pub fn enforced(&self) -> bool {
        self.trusted.is_some()
    }

    /// Seals `envelope` when it is an authority event of a writer whose key it holds.
    pub fn seal(&self, envelope: &mut Envelope) {
        if let Some(key) = writer_of(&envelope.event).and_then(|w| self.keys.get(&w)) {
            key.seal(envelope);
        }
    }

    /// Whether `envelope` may count: `Err` says why not, in words for the log.
    pub fn check(&self, envelope: &Envelope) -> Result<(), String> {
        let (Some(trusted), Some(writer)) = (&self.trusted, writer_of(&envelope.event)) else {
            return Ok(());
        };
        let what = format!(
            "{} {} by {:?} on {}",
            envelope.event.type_name(),
            envelope.event_id,
            envelope.actor,
            envelope.aggregate
        );
        let Some(seal) = &envelope.seal else {
            return Err(format!(
                "{what} carries no seal: only the {writer} may write it, so it does not count (was it appended by another service's NATS user?)"
            ));
        };
        if seal.writer != writer {
            return Err(format!(
                "{what} is sealed by the {} but only the {writer} may write it, so it does not count",
                seal.writer
            ));
        }
        let key = hex::decode(&seal.key)
            .ok()
            .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
            .and_then(|bytes| VerifyingKey::from_bytes(&bytes).ok());
        let Some(key) =
            key.filter(|key| trusted.get(&writer).is_some_and(|keys| keys.contains(key)))
        else {
            return Err(format!(
                "{what} is sealed with a key that is not a trusted {writer} key, so it does not count"
            ));
        };
        let signature = hex::decode(&seal.signature)
            .ok()
            .and_then(|bytes| <[u8; 64]>::try_from(bytes).ok())
            .map(|bytes| Signature::from_bytes(&bytes));
        match signature {
            Some(signature) if key.verify(&signed_bytes(envelope), &signature).is_ok() => Ok(()),
            _ => Err(format!(
                "{what} has a seal that does not match its content (altered or moved from another event), so it does not count"
            )),
        }
    }
}

/// The process's authority: what [`hold`] and [`trust`] set.
static GLOBAL: LazyLock<RwLock<Authority>> = LazyLock::new(Default::default);
/// Authority events the process's folds ignored.
static REFUSED: AtomicU64 = AtomicU64::new(0);

/// This process writes as `key`'s writer: the bus seals its authority events.
pub fn hold(key: AuthorityKey) {
    GLOBAL
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .hold(key);
}

/// This process trusts `keys`: from now on its folds ignore authority events not sealed by
/// one of them.
pub fn trust(keys: impl IntoIterator<Item = TrustedKey>) {
    GLOBAL
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .trust(keys);
}

/// Whether this process holds a signing key.
pub fn holds_any() -> bool {
    global(|authority| !authority.keys.is_empty())
}

/// Whether this process checks seals.
pub fn enforced() -> bool {
    global(|authority| authority.enforced())
}

/// Seals `envelope` if it is an authority event this process writes.
pub fn seal(envelope: &mut Envelope) {
    global(|authority| authority.seal(envelope));
}

/// Whether `envelope` counts in this process ([`Authority::check`]).
pub fn check(envelope: &Envelope) -> Result<(), String> {
    global(|authority| authority.check(envelope))
}

/// [`check`] for an envelope that was just read: a refusal is logged as a warning and
/// counted ([`refused`]). Every envelope deserialized goes through it.
pub(crate) fn admit(envelope: &Envelope) -> Result<(), String> {
    if !enforced() {
        return Ok(());
    }
    let checked = check(envelope);
    if let Err(why) = &checked {
        REFUSED.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(reason = %why, "an event read does not count");
    }
    checked
}

/// How many authority events this process's folds ignored (the metric
/// `railyard_authority_refused_total`).
pub fn refused() -> u64 {
    REFUSED.load(Ordering::Relaxed)
}

fn global<T>(f: impl FnOnce(&Authority) -> T) -> T {
    f(&GLOBAL
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{ApprovalDecision, Reasoned, ReleaseRequested};
    use crate::{AggregateId, ReleaseId};

    fn approval(release: &str, actor: &str) -> Envelope {
        let id = ReleaseId::new(release).unwrap();
        Envelope::new(
            AggregateId::Release(id),
            actor,
            "2026-12-06T10:00:00Z".parse().unwrap(),
            Event::ApprovalGranted(ApprovalDecision {
                step: "production:approve:release".parse().unwrap(),
                comment: String::new(),
            }),
        )
    }

    #[test]
    fn only_a_trusted_writer_s_seal_on_unchanged_content_counts() {
        let promoter = AuthorityKey::generate(Writer::Promoter);
        let planner = AuthorityKey::generate(Writer::Planner);
        let mut authority = Authority::default();
        authority.hold(promoter.clone());
        // Nothing is enforced before a key is trusted.
        assert_eq!(authority.check(&approval("rel-1", "alice")), Ok(()));
        authority.trust([promoter.public(), planner.public()]);

        let mut sealed = approval("rel-1", "alice");
        authority.seal(&mut sealed);
        assert_eq!(authority.check(&sealed), Ok(()));
        // It survives the trip through JSON.
        let text = serde_json::to_string(&sealed).unwrap();
        let read: Envelope = serde_json::from_str(&text).unwrap();
        assert_eq!(authority.check(&read), Ok(()));

        let forged = approval("rel-1", "alice");
        assert!(
            authority
                .check(&forged)
                .unwrap_err()
                .contains("carries no seal")
        );
        let mut moved = sealed.clone();
        moved.actor = "mallory".into();
        assert!(
            authority
                .check(&moved)
                .unwrap_err()
                .contains("does not match")
        );
        let mut other = approval("rel-2", "alice");
        other.seal = sealed.seal.clone();
        assert!(
            authority
                .check(&other)
                .unwrap_err()
                .contains("does not match")
        );
        let mut by_planner = approval("rel-1", "alice");
        planner.seal(&mut by_planner);
        assert!(
            authority
                .check(&by_planner)
                .unwrap_err()
                .contains("sealed by the planner but only the promoter")
        );
        let mut stranger = approval("rel-1", "alice");
        AuthorityKey::generate(Writer::Promoter).seal(&mut stranger);
        assert!(
            authority
                .check(&stranger)
                .unwrap_err()
                .contains("not a trusted")
        );

        // Requests and cancels: intake's events need no seal; a cancel does.
        let id = ReleaseId::new("rel-1").unwrap();
        let request = Envelope::new(
            AggregateId::Release(id.clone()),
            "ci",
            "2026-12-06T10:00:00Z".parse().unwrap(),
            Event::ReleaseRequested(ReleaseRequested {
                release: id.clone(),
                requested_by: "ci".into(),
                changes: Vec::new(),
            }),
        );
        assert_eq!(authority.check(&request), Ok(()));
        let cancel = Envelope::new(
            AggregateId::Release(id),
            "ci",
            "2026-12-06T10:00:00Z".parse().unwrap(),
            Event::ReleaseCancelled(Reasoned { reason: "x".into() }),
        );
        assert!(authority.check(&cancel).is_err());
    }

    #[test]
    fn key_files_and_trust_lists_read_back_and_bad_ones_say_why() {
        let key = AuthorityKey::generate(Writer::Planner);
        let read = AuthorityKey::from_file_text(&key.to_file_text()).unwrap();
        assert_eq!(read.public(), key.public());
        assert!(!format!("{key:?}").contains(&hex::encode(key.key.to_bytes())));
        let list = format!(
            "{}, {}",
            key.public(),
            AuthorityKey::generate(Writer::Promoter).public()
        );
        assert_eq!(parse_trust(&list).unwrap().len(), 2);
        for (bad, says) in [
            ("planner", "not a trusted key"),
            ("auditor:00", "not a writer"),
            ("planner:zz", "not 64 hex digits"),
        ] {
            let error = parse_trust(bad).unwrap_err().to_string();
            assert!(error.contains(says), "{bad}: {error}");
        }
        assert!(
            AuthorityKey::from_file_text("hello")
                .unwrap_err()
                .to_string()
                .contains("not a key file")
        );
    }
}

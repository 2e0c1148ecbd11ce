//! The layout of the audit tree, in one place. Every key is built with the store's
//! [`KeyBuf`], so byte order is value order:
//!
//! - `r <n>`: record `n` (canonical JSON of a [`crate::record::Record`]);
//! - `head`: the last record's number, hash and stream sequence;
//! - `i release <id> <n>`: a release's records, in stream order;
//! - `i <dim> <value> <at µs> <n>` for `service`, `env`, `actor`, `type`, `family`;
//!   `i service-env <service> <env> <at µs> <n>`; `i time <at µs> <n>`. Every index entry
//!   (the release's too) holds the record's [`Digest`]: a query filtering on more than its
//!   index's key skips the entries whose record cannot match without reading the record;
//!   an empty value (written before the digest existed) may match anything;
//! - `scope <release>`: the services and environments a release touches so far;
//! - `rel <release>`: the release's [`crate::releases::ReleaseSummary`] for the list, and
//!   `rels <i64::MAX - requested µs> <release>` so the list reads newest first;
//! - `inv <env> <service>`: the commit running there, for commit ranges;
//! - `dep <env> <at µs> <n>`: one entry per deployment (first start of a deploy step), and
//!   `depmark <release> <step>` so a retried step is not counted twice.
//! - `seal last`: the latest signed checkpoint whose claims match the chain, with the record
//!   holding it ([`crate::sealer::LastSeal`]); `seal subject`: the stream sequence of the
//!   last message on the `audit` aggregate (what the next checkpoint's append expects).

use railyard_store::{KeyBuf, KeyReader};

use crate::record::Facets;

pub(crate) fn record(n: u64) -> Vec<u8> {
    KeyBuf::new().str("r").u64(n).into_vec()
}

pub(crate) fn records_prefix() -> Vec<u8> {
    KeyBuf::new().str("r").into_vec()
}

pub(crate) fn head() -> Vec<u8> {
    KeyBuf::new().str("head").into_vec()
}

pub(crate) fn last_seal() -> Vec<u8> {
    KeyBuf::new().str("seal").str("last").into_vec()
}

pub(crate) fn seal_subject() -> Vec<u8> {
    KeyBuf::new().str("seal").str("subject").into_vec()
}

pub(crate) fn scope(release: &str) -> Vec<u8> {
    KeyBuf::new().str("scope").str(release).into_vec()
}

pub(crate) fn release_summary(release: &str) -> Vec<u8> {
    KeyBuf::new().str("rel").str(release).into_vec()
}

pub(crate) fn release_list() -> KeyBuf {
    KeyBuf::new().str("rels")
}

/// The list entry of a release requested at `micros`: newest first in key order.
pub(crate) fn release_list_entry(micros: i64, release: &str) -> Vec<u8> {
    release_list()
        .i64(i64::MAX - micros)
        .str(release)
        .into_vec()
}

pub(crate) fn inventory(env: &str, service: &str) -> Vec<u8> {
    KeyBuf::new().str("inv").str(env).str(service).into_vec()
}

pub(crate) fn deployment_mark(release: &str, step: &str) -> Vec<u8> {
    KeyBuf::new()
        .str("depmark")
        .str(release)
        .str(step)
        .into_vec()
}

pub(crate) fn deployments(env: &str) -> KeyBuf {
    KeyBuf::new().str("dep").str(env)
}

pub(crate) fn deployment(env: &str, micros: i64, n: u64) -> Vec<u8> {
    deployments(env).i64(micros).u64(n).into_vec()
}

pub(crate) fn release_index(release: &str) -> KeyBuf {
    KeyBuf::new().str("i").str("release").str(release)
}

/// The prefix of a time-keyed index: `dim` with its values (`service-env` takes two).
pub(crate) fn time_index(dim: &str, values: &[&str]) -> KeyBuf {
    values
        .iter()
        .fold(KeyBuf::new().str("i").str(dim), |key, value| key.str(value))
}

/// Reads the `<at µs> <n>` tail of a time-keyed index key after `prefix`.
pub(crate) fn time_tail(key: &[u8], prefix_len: usize) -> Option<(i64, u64)> {
    let mut reader = KeyReader::new(key.get(prefix_len..)?);
    let at = reader.i64().ok()?;
    let n = reader.u64().ok()?;
    reader.finish().ok()?;
    Some((at, n))
}

/// Reads the `<release>` tail of a release list entry after `prefix`.
pub(crate) fn release_list_tail(key: &[u8], prefix_len: usize) -> Option<String> {
    let mut reader = KeyReader::new(key.get(prefix_len..)?);
    reader.i64().ok()?;
    let release = reader.str().ok()?;
    reader.finish().ok()?;
    Some(release)
}

/// Reads the `<n>` tail of a release index key after `prefix`.
pub(crate) fn n_tail(key: &[u8], prefix_len: usize) -> Option<u64> {
    let mut reader = KeyReader::new(key.get(prefix_len..)?);
    let n = reader.u64().ok()?;
    reader.finish().ok()?;
    Some(n)
}

/// A 128-bit Bloom filter of a record's facets (`actor`, `type`, `family`, each service and
/// environment), the value of each of its index entries. It answers "this record cannot
/// match" exactly and "it may match" with a few false positives, which the record itself
/// settles. The hash is FNV-1a, fixed here because the digest is stored: never change it
/// without a rebuild.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Digest(u128);

/// Bits set per facet value.
const DIGEST_HASHES: u32 = 3;

impl Digest {
    fn bits(dim: &str, value: &str) -> u128 {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in dim.bytes().chain([0]).chain(value.bytes()) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        (0..DIGEST_HASHES).fold(0, |bits, i| bits | 1u128 << ((hash >> (i * 7)) & 127))
    }

    /// The digest of `facets`.
    pub(crate) fn of(facets: &Facets) -> Digest {
        let mut bits = Digest::bits("actor", &facets.actor)
            | Digest::bits("type", &facets.kind)
            | Digest::bits("family", &facets.family);
        for service in &facets.services {
            bits |= Digest::bits("service", service);
        }
        for env in &facets.envs {
            bits |= Digest::bits("env", env);
        }
        Digest(bits)
    }

    /// What a query wants: every `(dim, value)` given.
    pub(crate) fn wanted<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Digest {
        Digest(
            pairs
                .into_iter()
                .fold(0, |bits, (dim, value)| bits | Digest::bits(dim, value)),
        )
    }

    /// The stored value.
    pub(crate) fn to_bytes(self) -> [u8; 16] {
        self.0.to_be_bytes()
    }

    /// Whether the record whose index entry holds `value` may have every facet of `wanted`:
    /// false only when it certainly has not. An entry without a digest may match.
    pub(crate) fn admits(value: &[u8], wanted: Digest) -> bool {
        match <[u8; 16]>::try_from(value) {
            Ok(bytes) => u128::from_be_bytes(bytes) & wanted.0 == wanted.0,
            Err(_) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facets(actor: &str, kind: &str, services: &[&str], envs: &[&str]) -> Facets {
        Facets {
            kind: kind.to_owned(),
            family: kind.split('.').next().unwrap_or_default().to_owned(),
            aggregate: "release.r1".to_owned(),
            actor: actor.to_owned(),
            at: chrono::DateTime::default(),
            release: Some("r1".to_owned()),
            services: services.iter().map(|s| (*s).to_owned()).collect(),
            envs: envs.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn a_digest_admits_every_facet_it_was_made_of() {
        let digest = Digest::of(&facets(
            "alice",
            "approval.granted",
            &["billing", "orders"],
            &["production"],
        ))
        .to_bytes();
        for wanted in [
            vec![("actor", "alice")],
            vec![("family", "approval"), ("env", "production")],
            vec![("type", "approval.granted"), ("service", "orders")],
            vec![("service", "billing"), ("service", "orders")],
            vec![],
        ] {
            assert!(
                Digest::admits(&digest, Digest::wanted(wanted.clone())),
                "{wanted:?}"
            );
        }
        // A value from another dimension is another bit pattern.
        assert!(!Digest::admits(
            &digest,
            Digest::wanted([("actor", "production")])
        ));
        assert!(!Digest::admits(
            &digest,
            Digest::wanted([("env", "staging")])
        ));
    }

    #[test]
    fn an_entry_without_a_digest_may_match_anything() {
        assert!(Digest::admits(&[], Digest::wanted([("actor", "bob")])));
    }

    #[test]
    fn few_records_pass_for_a_value_they_do_not_have() {
        let mut passed = 0;
        for i in 0..10_000 {
            let digest = Digest::of(&facets(
                &format!("dev-{}", i % 50),
                "step.started",
                &[&format!("svc-{}", i % 200)],
                &["staging"],
            ))
            .to_bytes();
            if Digest::admits(&digest, Digest::wanted([("actor", "nobody")])) {
                passed += 1;
            }
        }
        // About 0.3 % expected (5 values, 3 of 128 bits each).
        assert!(passed < 200, "{passed} of 10,000 false positives");
    }
}

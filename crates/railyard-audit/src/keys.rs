//! The layout of the audit tree, in one place. Every key is built with the store's
//! [`KeyBuf`], so byte order is value order:
//!
//! - `r <n>`: record `n` (canonical JSON of a [`crate::record::Record`]);
//! - `head`: the last record's number, hash and stream sequence;
//! - `i release <id> <n>`: a release's records, in stream order;
//! - `i <dim> <value> <at µs> <n>` for `service`, `env`, `actor`, `type`, `family`;
//!   `i service-env <service> <env> <at µs> <n>`; `i time <at µs> <n>`;
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

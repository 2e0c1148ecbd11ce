//! The on-disk layout of a projection's tree, in one place.
//!
//! Each projection has its own sled tree, `projection:<name>`. Its keys start with one tag
//! byte: `0x00` for the store's own metadata (only the checkpoint, `0x00 "checkpoint"`, whose
//! value is the last applied stream sequence as 8 big-endian bytes) and `0x01` for the
//! projection's data, followed by the projection's own key. Keeping both in one tree is what
//! lets one sled batch commit a delivery's writes and its checkpoint together, atomically
//! across a crash (sled batches are atomic within one tree).
//!
//! Next to sled's files, the directory holds `railyard-durable.json` (`marks.rs`): each
//! projection's checkpoint as of the store's last flush, `{"checkpoints": {"<name>": n}}`.

/// Tag of data keys (metadata keys start with `0x00`).
const DATA: u8 = 0x01;

/// The checkpoint's key.
pub(crate) const CHECKPOINT: &[u8] = b"\x00checkpoint";

/// The sled tree that holds projection `name`.
pub(crate) fn tree_name(name: &str) -> String {
    format!("projection:{name}")
}

/// Whether `name` may name a projection: `[a-z0-9][a-z0-9._-]{0,62}`.
pub(crate) fn valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'0'..=b'9'))
        && name.len() <= 63
        && bytes.all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'))
}

/// The stored key of the projection's `key`.
pub(crate) fn data_key(key: &[u8]) -> Vec<u8> {
    let mut stored = Vec::with_capacity(key.len() + 1);
    stored.push(DATA);
    stored.extend_from_slice(key);
    stored
}

/// The projection's key of a stored data key.
pub(crate) fn user_key(stored: &[u8]) -> &[u8] {
    debug_assert_eq!(stored.first(), Some(&DATA), "not a data key");
    &stored[1..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_sorts_before_data_and_never_collides_with_it() {
        assert_eq!(CHECKPOINT[0], 0x00);
        assert!(CHECKPOINT < data_key(b"").as_slice());
        assert_eq!(user_key(&data_key(b"\x00checkpoint")), b"\x00checkpoint");
        assert_ne!(data_key(b"\x00checkpoint"), CHECKPOINT);
    }

    #[test]
    fn projection_names() {
        let cases = [
            ("audit", true),
            ("release-status.v2", true),
            ("0", true),
            (&"a".repeat(63), true),
            (&"a".repeat(64), false),
            ("", false),
            ("-audit", false),
            ("Audit", false),
            ("audit log", false),
            ("audit/x", false),
        ];
        for (name, expected) in cases {
            assert_eq!(valid_name(name), expected, "{name:?}");
        }
    }
}

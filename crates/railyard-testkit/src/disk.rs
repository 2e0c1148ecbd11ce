//! Damage on disk, as a bad block or a careless operator would cause it: copy a store
//! directory, flip bytes of its sled log without fixing the checksums that cover them.

use std::path::Path;

/// Copies the store directory `from` (files and `blobs/`) to `to`.
pub fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

/// Flips a byte of every occurrence of `needle` in the sled log (`<store>/db`), as a bad disk
/// block would, without touching the checksums that cover it; returns how many it altered.
pub fn flip_log_bytes(store: &Path, needle: &[u8]) -> std::io::Result<usize> {
    let log = store.join("db");
    let mut bytes = std::fs::read(&log)?;
    let mut altered = 0;
    let mut at = 0;
    while let Some(found) = bytes[at..]
        .windows(needle.len())
        .position(|window| window == needle)
    {
        bytes[at + found] ^= 0x01;
        altered += 1;
        at += found + needle.len();
    }
    std::fs::write(&log, bytes)?;
    Ok(altered)
}

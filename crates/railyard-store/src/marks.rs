//! What a store knows it made durable, kept outside sled so that a damaged sled log cannot
//! take it along: after a flush, every open projection's checkpoint goes to
//! `railyard-durable.json` in the store's directory (written to a temporary file, fsynced,
//! renamed over the old one). sled stops recovering its log at the first message whose
//! checksum fails and serves the prefix before it as the whole database; a projection that
//! opens with a checkpoint below its mark was cut short that way.
//!
//! A mark may lag (a crash before the rename lands leaves the older, lower one), never lead:
//! raising one needs no directory fsync, since losing the rename only loses some detection.
//! Lowering one (before a reset) does fsync the directory: a reset that survived a crash
//! under a mark that did not go down would look like damage.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tracing::warn;

/// The file, in the store's directory (never `snap.*`, which sled claims).
pub(crate) const FILE: &str = "railyard-durable.json";

/// The file's content.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Stored {
    /// Projection name to the checkpoint it had when the store last flushed.
    checkpoints: BTreeMap<String, u64>,
}

/// The marks of one store, as last written.
#[derive(Debug)]
pub(crate) struct Marks {
    /// The store's directory; `None` for a temporary store, which keeps no marks.
    dir: Option<PathBuf>,
    written: BTreeMap<String, u64>,
    /// Whether the last write failed (so a failing disk is reported once, not every flush).
    pub(crate) failing: bool,
}

impl Marks {
    /// The marks in `dir` (none when the file is missing). An unreadable file is reported and
    /// counts as none: nothing can be told about what was durable before, and the next flush
    /// writes a new one.
    pub(crate) fn load(dir: Option<PathBuf>) -> Marks {
        let written = match &dir {
            None => BTreeMap::new(),
            Some(dir) => match read(dir) {
                Ok(stored) => stored.checkpoints,
                Err(error) => {
                    warn!(
                        path = %dir.join(FILE).display(),
                        %error,
                        "the store's record of what it made durable is unreadable, so it cannot tell whether its log was cut short; starting a new record"
                    );
                    BTreeMap::new()
                }
            },
        };
        Marks {
            dir,
            written,
            failing: false,
        }
    }

    /// The checkpoint marked durable for `projection` (0 when none is).
    pub(crate) fn get(&self, projection: &str) -> u64 {
        self.written.get(projection).copied().unwrap_or(0)
    }

    /// The marks raised to `checkpoints` (a mark is never lowered here), or `None` when that
    /// changes nothing or the store keeps no marks.
    pub(crate) fn raised(&self, checkpoints: &[(String, u64)]) -> Option<BTreeMap<String, u64>> {
        self.dir.as_ref()?;
        let mut raised = self.written.clone();
        for (projection, checkpoint) in checkpoints {
            let mark = raised.entry(projection.clone()).or_insert(0);
            *mark = (*mark).max(*checkpoint);
        }
        (raised != self.written).then_some(raised)
    }

    /// Writes `marks` (from [`Marks::raised`]) atomically.
    pub(crate) fn write(&mut self, marks: BTreeMap<String, u64>) -> std::io::Result<()> {
        self.replace(marks, false)
    }

    fn replace(&mut self, marks: BTreeMap<String, u64>, sync_dir: bool) -> std::io::Result<()> {
        if let Some(dir) = &self.dir {
            let stored = Stored { checkpoints: marks };
            write_atomically(dir, &serde_json::to_vec(&stored)?, sync_dir)?;
            self.written = stored.checkpoints;
        }
        Ok(())
    }

    /// Lowers `projection`'s mark to `checkpoint`, written before returning: call it before
    /// the store moves the checkpoint back (a reset), so the mark never claims more than the
    /// log holds.
    pub(crate) fn lower(&mut self, projection: &str, checkpoint: u64) -> std::io::Result<()> {
        if self.get(projection) <= checkpoint {
            return Ok(());
        }
        let mut marks = self.written.clone();
        marks.insert(projection.to_owned(), checkpoint);
        self.replace(marks, true)
    }

    /// The file, for messages.
    pub(crate) fn path(&self) -> Option<PathBuf> {
        self.dir.as_ref().map(|dir| dir.join(FILE))
    }
}

fn read(dir: &Path) -> std::io::Result<Stored> {
    match std::fs::read(dir.join(FILE)) {
        Ok(bytes) => Ok(serde_json::from_slice(&bytes)?),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Stored::default()),
        Err(error) => Err(error),
    }
}

/// Replaces `dir/FILE` with `bytes` so that a crash leaves the old file or the new one; with
/// `sync_dir`, the new one once this returns.
fn write_atomically(dir: &Path, bytes: &[u8], sync_dir: bool) -> std::io::Result<()> {
    let temporary = dir.join(format!("{FILE}.tmp"));
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temporary, dir.join(FILE))?;
    if sync_dir {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoints(pairs: &[(&str, u64)]) -> Vec<(String, u64)> {
        pairs
            .iter()
            .map(|(name, checkpoint)| ((*name).to_owned(), *checkpoint))
            .collect()
    }

    #[test]
    fn marks_only_rise_unless_lowered_and_survive_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let mut marks = Marks::load(Some(dir.path().to_owned()));
        assert_eq!(marks.get("audit"), 0);
        let raised = marks.raised(&checkpoints(&[("audit", 7)])).unwrap();
        marks.write(raised).unwrap();
        assert_eq!(marks.raised(&checkpoints(&[("audit", 5)])), None);
        let raised = marks
            .raised(&checkpoints(&[("audit", 5), ("planner", 3)]))
            .unwrap();
        assert_eq!(raised.get("audit"), Some(&7));
        marks.write(raised).unwrap();
        marks.lower("audit", 0).unwrap();
        let reloaded = Marks::load(Some(dir.path().to_owned()));
        assert_eq!((reloaded.get("audit"), reloaded.get("planner")), (0, 3));
        assert!(!dir.path().join(format!("{FILE}.tmp")).exists());
    }

    #[test]
    fn an_unreadable_file_counts_as_no_marks_and_a_temporary_store_keeps_none() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), b"{not json").unwrap();
        let marks = Marks::load(Some(dir.path().to_owned()));
        assert_eq!(marks.get("audit"), 0);
        let temporary = Marks::load(None);
        assert_eq!(temporary.raised(&checkpoints(&[("audit", 1)])), None);
    }
}

//! Commits too large for one sled batch: written ahead to a redo log, then applied in pieces.
//!
//! A commit's writes normally go to sled in one batch, which makes the commit atomic on disk.
//! But a sled batch pins the log and one epoch until it ends, so every tree node version it
//! makes stays in memory meanwhile: the load of a 100k-object project held about 1 GB in one
//! batch. A commit with more than [`LARGE`] writes therefore goes this way instead:
//!
//! 1. its writes are recorded in the `redo` tree, up to [`CHUNK`] or about 48 KiB per entry,
//!    each entry inserted on its own, then a `ready` marker; and made durable — the commit point;
//! 2. the writes are applied to their trees in batches of [`CHUNK`], and made durable;
//! 3. the redo tree is cleared, and that is made durable before anything else is written.
//!
//! When the store opens, a redo log with its marker is applied again (the same final values, so
//! applying it twice is harmless) and cleared: a crash during step 2 ends with the whole commit
//! on disk. A log without its marker is from a crash during step 1, before the commit point: it
//! is cleared and the commit never happened. Step 3 being durable before any later write is
//! what keeps a replay from overwriting what came after it.
//!
//! *Invariant:* knows sled trees and their keys and values, not objects or what the trees mean.

use serde::{Deserialize, Serialize};

/// Writes above which a commit goes through the redo log: about 160 MB pinned by one batch at
/// most. Below it the log costs more than it saves (+12 % on the cold start of a 10k-object
/// project at 8,192; its one batch peaks at about 120 MB). Unit tests use small figures, so that
/// ordinary tests take this path too.
pub(super) const LARGE: usize = if cfg!(test) { 300 } else { 16_384 };

/// Writes per sled batch when a logged commit is applied (and per redo entry at most).
pub(super) const CHUNK: usize = if cfg!(test) { 128 } else { 2048 };

/// Bytes of keys and values per redo entry at most (about; one write may pass it): larger
/// values become files of their own in sled, each created, fsynced and deleted again.
const PART_BYTES: usize = 48 << 10;

const TREE: &str = "redo";
const READY: &[u8] = b"ready";

/// One redo entry: writes (key, value or removal) to the tree named `tree`.
#[derive(Serialize, Deserialize)]
struct Part {
    tree: String,
    writes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

fn part_key(n: u32) -> [u8; 5] {
    let mut k = [b'p', 0, 0, 0, 0];
    k[1..].copy_from_slice(&n.to_be_bytes());
    k
}

fn encode(part: &Part) -> Vec<u8> {
    bincode::serde::encode_to_vec(part, bincode::config::standard()).unwrap_or_default()
}

/// The redo tree of `db`.
pub(super) fn tree(db: &sled::Db) -> Result<sled::Tree, sled::Error> {
    db.open_tree(TREE)
}

/// Step 1 without its fsync: a log being written. Anything the tree held before is dropped
/// first (a log is cleared once applied, so it is a leftover).
pub(super) struct Log<'a> {
    redo: &'a sled::Tree,
    parts: u32,
}

impl<'a> Log<'a> {
    pub(super) fn new(redo: &'a sled::Tree) -> Result<Log<'a>, sled::Error> {
        redo.clear()?;
        Ok(Log { redo, parts: 0 })
    }

    /// Records writes (key, value or removal) to the tree named `tree`.
    pub(super) fn add<V: AsRef<[u8]>>(
        &mut self,
        tree: &str,
        writes: &[(Vec<u8>, Option<V>)],
    ) -> Result<(), sled::Error> {
        let mut part = Part { tree: tree.to_string(), writes: Vec::new() };
        let mut bytes = 0;
        for (k, v) in writes {
            let v = v.as_ref().map(|v| v.as_ref().to_vec());
            bytes += k.len() + v.as_ref().map_or(0, Vec::len);
            part.writes.push((k.clone(), v));
            if part.writes.len() == CHUNK || bytes >= PART_BYTES {
                self.put(&mut part)?;
                bytes = 0;
            }
        }
        self.put(&mut part)
    }

    fn put(&mut self, part: &mut Part) -> Result<(), sled::Error> {
        if !part.writes.is_empty() {
            self.redo.insert(part_key(self.parts), encode(part))?;
            part.writes.clear();
            self.parts += 1;
        }
        Ok(())
    }

    /// Writes the marker: once durable, the log is applied at open if not cleared before.
    pub(super) fn seal(self) -> Result<(), sled::Error> {
        self.redo.insert(READY, &[])?;
        Ok(())
    }
}

/// At open: applies a complete (sealed) redo log again. Returns how many writes were applied;
/// the caller makes them durable, then [`clear`]s the log either way.
pub(super) fn replay(db: &sled::Db) -> Result<usize, ReplayError> {
    let redo = tree(db)?;
    if redo.is_empty() {
        return Ok(0);
    }
    let mut applied = 0;
    if redo.contains_key(READY)? {
        for item in redo.scan_prefix(b"p") {
            let (key, value) = item?;
            let (part, _): (Part, usize) = bincode::serde::decode_from_slice(&value, bincode::config::standard())
                .map_err(|e| ReplayError::Corrupt(format!("redo entry {key:?}: {e}")))?;
            let mut batch = sled::Batch::default();
            for (k, v) in &part.writes {
                match v {
                    Some(v) => batch.insert(k.as_slice(), v.as_slice()),
                    None => batch.remove(k.as_slice()),
                }
            }
            db.open_tree(&part.tree)?.apply_batch(batch)?;
            applied += part.writes.len();
        }
    }
    Ok(applied)
}

/// Step 3 (and the end of a replay) without its fsync.
pub(super) fn clear(redo: &sled::Tree) -> Result<(), sled::Error> {
    redo.clear()
}

#[derive(Debug, thiserror::Error)]
pub(super) enum ReplayError {
    #[error(transparent)]
    Db(#[from] sled::Error),
    #[error("{0}")]
    Corrupt(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> (tempfile::TempDir, sled::Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        (dir, db)
    }

    fn writes(n: usize, tag: &str) -> Vec<(Vec<u8>, Option<sled::IVec>)> {
        (0..n)
            .map(|i| (format!("k{i:06}").into_bytes(), Some(sled::IVec::from(format!("{tag}{i}").as_bytes()))))
            .collect()
    }

    #[test]
    fn a_complete_log_is_applied_again_and_an_incomplete_one_is_dropped() {
        let (_dir, db) = db();
        let objects = db.open_tree("objects").unwrap();
        objects.insert("gone", "x").unwrap();
        let mut w = writes(CHUNK * 2 + 5, "v");
        w.push((b"gone".to_vec(), None));
        let records = vec![(b"r".to_vec(), Some(b"rec".to_vec()))];
        let redo = tree(&db).unwrap();
        let mut log = Log::new(&redo).unwrap();
        log.add("objects", &w).unwrap();
        log.add("records", &records).unwrap();
        log.seal().unwrap();
        assert_eq!(redo.len(), 4 + 1, "three object entries, one record entry, the marker");
        // As after a crash before any of it was applied.
        assert_eq!(replay(&db).unwrap(), w.len() + 1);
        assert_eq!(objects.len(), CHUNK * 2 + 5);
        assert_eq!(objects.get("k000007").unwrap().unwrap(), b"v7"[..]);
        assert!(objects.get("gone").unwrap().is_none());
        assert_eq!(db.open_tree("records").unwrap().get("r").unwrap().unwrap(), b"rec"[..]);
        // Applying it again is harmless.
        assert_eq!(replay(&db).unwrap(), w.len() + 1);
        assert_eq!(objects.len(), CHUNK * 2 + 5);
        clear(&redo).unwrap();
        assert_eq!(replay(&db).unwrap(), 0);

        // Entries without the marker: the commit point was not reached.
        let mut log = Log::new(&redo).unwrap();
        log.add("objects", &writes(3, "new")).unwrap();
        // Not sealed.
        assert_eq!(replay(&db).unwrap(), 0);
        assert_eq!(objects.get("k000001").unwrap().unwrap(), b"v1"[..]);
    }

    #[test]
    fn a_new_log_replaces_a_leftover() {
        let (_dir, db) = db();
        let redo = tree(&db).unwrap();
        for (n, tag) in [(CHUNK + 1, "old"), (1, "new")] {
            let mut log = Log::new(&redo).unwrap();
            log.add("objects", &writes(n, tag)).unwrap();
            log.seal().unwrap();
        }
        assert_eq!(replay(&db).unwrap(), 1);
        let objects = db.open_tree("objects").unwrap();
        assert_eq!(objects.len(), 1);
        assert_eq!(objects.get("k000000").unwrap().unwrap(), b"new0"[..]);
    }
}

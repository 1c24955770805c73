//! Making what sled wrote durable: sled's own `flush()` writes its log with `sync_file_range`,
//! which on Linux neither flushes the disk's cache nor the file's metadata, so a commit point
//! fsyncs sled's files and directories itself.
//!
//! sled changes exactly one file in place, `db` (its log). Everything else it writes once and never
//! again: `conf` at creation, snapshots (`snap.*`, written aside and renamed) and blobs (large
//! values, `blobs/<lsn>`, created new). So [`Durable`] fsyncs `db` at every commit point, any other
//! file only when it first appears or its size changed since the last look (a blob still being
//! written when seen), and a directory only when the names in it changed. A commit point then
//! costs one fsync, not one per file (with 40 blobs a commit took 40 fsyncs).
//!
//! Invariant: knows sled's file layout, nothing about objects.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};

use super::StoreError;

/// The one file sled rewrites in place.
const LOG: &str = "db";

/// The files of one directory as last made durable: name → size.
type Seen = BTreeMap<OsString, u64>;

/// What earlier commit points made durable already.
#[derive(Default)]
pub(super) struct Durable {
    /// By directory (sled's and its `blobs/`), the files fsynced and their sizes then.
    dirs: BTreeMap<PathBuf, Seen>,
}

impl Durable {
    /// fsyncs whatever in `dir` (sled's directory) and its `blobs/` may not be on disk yet.
    pub(super) fn sync(&mut self, dir: &Path) -> Result<(), StoreError> {
        self.sync_dir(dir, true)?;
        let blobs = dir.join("blobs");
        if blobs.is_dir() {
            self.sync_dir(&blobs, false)?;
        }
        Ok(())
    }

    fn sync_dir(&mut self, dir: &Path, has_log: bool) -> Result<(), StoreError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StoreError::Io { path, source }
        };
        let mut now = Seen::new();
        for entry in std::fs::read_dir(dir).map_err(io(dir))? {
            let entry = entry.map_err(io(dir))?;
            let path = entry.path();
            let meta = entry.metadata().map_err(io(&path))?;
            if meta.is_file() {
                now.insert(entry.file_name(), meta.len());
            }
        }
        let (files, names_changed) = to_sync(self.dirs.get(dir), &now, has_log);
        for name in files {
            let path = dir.join(name);
            File::open(&path).and_then(|f| f.sync_all()).map_err(io(&path))?;
        }
        if names_changed {
            File::open(dir).and_then(|f| f.sync_all()).map_err(io(dir))?;
        }
        self.dirs.insert(dir.to_path_buf(), now);
        Ok(())
    }
}

/// Which files of a directory need an fsync now, given what the last sync saw (`before`), and
/// whether the directory does (its names changed).
fn to_sync<'a>(before: Option<&Seen>, now: &'a Seen, has_log: bool) -> (Vec<&'a OsString>, bool) {
    let files = now
        .iter()
        .filter(|(name, len)| (has_log && name.as_os_str() == LOG) || before.and_then(|b| b.get(*name)) != Some(len))
        .map(|(name, _)| name)
        .collect();
    let names_changed = before.is_none_or(|b| !b.keys().eq(now.keys()));
    (files, names_changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(files: &[(&str, u64)]) -> Seen {
        files.iter().map(|(n, l)| (OsString::from(n), *l)).collect()
    }

    fn names(files: Vec<&OsString>) -> Vec<String> {
        files.into_iter().map(|n| n.to_string_lossy().into_owned()).collect()
    }

    #[test]
    fn the_log_is_synced_every_time_other_files_when_new_or_grown_directories_when_names_change() {
        let first = seen(&[("conf", 62), ("db", 4096)]);
        let (files, dir) = to_sync(None, &first, true);
        assert_eq!((names(files), dir), (vec!["conf".to_string(), "db".to_string()], true));
        // Nothing new: the log only (it is rewritten in place, its size says nothing).
        let (files, dir) = to_sync(Some(&first), &first, true);
        assert_eq!((names(files), dir), (vec!["db".to_string()], false));
        // A snapshot appeared.
        let second = seen(&[("conf", 62), ("db", 4096), ("snap.00A", 300)]);
        let (files, dir) = to_sync(Some(&first), &second, true);
        assert_eq!((names(files), dir), (vec!["db".to_string(), "snap.00A".to_string()], true));
        // Blobs: one seen half-written has grown, one is new, one went away.
        let blobs = seen(&[("1", 10), ("2", 500)]);
        let later = seen(&[("2", 800), ("3", 64)]);
        let (files, dir) = to_sync(Some(&blobs), &later, false);
        assert_eq!((names(files), dir), (vec!["2".to_string(), "3".to_string()], true));
        let (files, dir) = to_sync(Some(&later), &later, false);
        assert_eq!((names(files), dir), (Vec::<String>::new(), false));
    }

    #[test]
    fn a_sync_records_what_it_made_durable() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        std::fs::create_dir(dir.join("blobs")).unwrap();
        std::fs::write(dir.join("db"), b"log").unwrap();
        std::fs::write(dir.join("conf"), b"conf").unwrap();
        std::fs::write(dir.join("blobs/1"), b"half").unwrap();
        let mut d = Durable::default();
        d.sync(dir).unwrap();
        assert_eq!(d.dirs[dir], seen(&[("conf", 4), ("db", 3)]));
        assert_eq!(d.dirs[&dir.join("blobs")], seen(&[("1", 4)]));
        std::fs::write(dir.join("blobs/1"), b"whole blob").unwrap();
        std::fs::remove_file(dir.join("conf")).unwrap();
        d.sync(dir).unwrap();
        assert_eq!(d.dirs[dir], seen(&[("db", 3)]));
        assert_eq!(d.dirs[&dir.join("blobs")], seen(&[("1", 10)]));
    }
}

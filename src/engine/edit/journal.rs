//! Files and store change together or not at all.
//!
//! An edit of the project's files (the plan of an `apply` or `delete`) goes through three
//! durable steps: (1) an intent record in the store saying what every file held before,
//! (2) the new contents, written in the server's staging directory (where the loader never
//! looks), synced, then renamed into place, and (3) the store transaction, committed together
//! with the removal of the intent. A failure in (2) or (3) restores the files from the intent
//! before the error is answered; a crash anywhere before (3) finished leaves the intent, and the
//! next start restores the files from it before its first load, which then makes the store say
//! what the files say. So an unacknowledged request leaves nothing behind, and no temporary file
//! ever sits in `in/`.
//!
//! An edit of one file needs no intent: its rename is atomic, so a crash leaves the file whole
//! before or whole after, and the next start's load makes the store say what it says — the
//! request then took effect entirely or not at all, which is all a client that got no answer
//! can rely on anyway. That saves a durable store step (a flush and an fsync) on the common
//! `apply` of one object.
//! *Invariant:* knows files and the opaque intent record; not what the objects mean.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::plan::PlannedFile;
use crate::store::Store;

/// What the files held before an edit, recorded before the first of them changes.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Intent {
    /// Absolute path and previous content (`None`: the file did not exist).
    files: Vec<(PathBuf, Option<String>)>,
}

impl Intent {
    /// What the files of `changes` held before the edit.
    fn before(changes: &[(PathBuf, PlannedFile)]) -> Intent {
        Intent { files: changes.iter().map(|(p, f)| (p.clone(), f.before.clone())).collect() }
    }

    fn encode(&self) -> Vec<u8> {
        // Serializing paths and strings to JSON cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// Writes planned file changes after recording how to undo them. On error the files are as
/// they were and the intent is gone.
pub(super) fn write(store: &Store, staging: &Path, changes: &[(PathBuf, PlannedFile)]) -> Result<(), String> {
    let intent = Intent::before(changes);
    if needs_intent(changes.len()) {
        store
            .record_intent(&intent.encode())
            .map_err(|e| format!("cannot record the edit before writing files: {e}"))?;
    }
    let targets: Vec<(PathBuf, Option<&str>)> = changes.iter().map(|(p, f)| (p.clone(), f.after.as_deref())).collect();
    if let Err(e) = put_files(staging, &targets) {
        return Err(undo(store, staging, &intent, e));
    }
    Ok(())
}

/// Restores the files of the recorded intent after a later step (the commit) failed; returns
/// `error` with what the restore could not do appended.
pub(super) fn abort(store: &Store, staging: &Path, changes: &[(PathBuf, PlannedFile)], error: String) -> String {
    undo(store, staging, &Intent::before(changes), error)
}

/// Whether an edit records an intent: one file changes atomically by its rename, several do not.
fn needs_intent(files: usize) -> bool {
    files > 1
}

fn undo(store: &Store, staging: &Path, intent: &Intent, error: String) -> String {
    let restore: Vec<(PathBuf, Option<&str>)> = intent.files.iter().map(|(p, b)| (p.clone(), b.as_deref())).collect();
    if let Err(e) = put_files(staging, &restore) {
        if !needs_intent(intent.files.len()) {
            // No intent was recorded: the file keeps the edit, and the next load reads it.
            let file = intent.files.first().map(|(p, _)| p.display().to_string()).unwrap_or_default();
            return format!(
                "{error}; restoring {file} failed too ({e}): it holds the edit, which the next load applies"
            );
        }
        // The intent stays: the next start tries again.
        return format!("{error}; restoring the files failed too ({e}), the next server start restores them");
    }
    if let Err(e) = store.clear_intent() {
        log::warn!("cannot clear the edit intent after restoring the files: {e}");
    }
    format!("{error}; the files were restored")
}

/// At start-up, before the first load: completes the undo of an edit that a crash interrupted
/// (its request was never acknowledged) and empties the staging directory. Returns the files
/// restored.
pub(super) fn recover(store: &Store, staging: &Path) -> Result<Vec<PathBuf>, String> {
    let mut restored = Vec::new();
    if let Some(bytes) = store.pending_intent().map_err(|e| e.to_string())? {
        match serde_json::from_slice::<Intent>(&bytes) {
            Ok(intent) => {
                let restore: Vec<(PathBuf, Option<&str>)> =
                    intent.files.iter().map(|(p, b)| (p.clone(), b.as_deref())).collect();
                put_files(staging, &restore).map_err(|e| format!("cannot undo an interrupted edit: {e}"))?;
                restored = intent.files.into_iter().map(|(p, _)| p).collect();
            }
            Err(e) => log::error!("the recorded edit intent is unreadable ({e}); dropped"),
        }
        store.clear_intent().map_err(|e| e.to_string())?;
    }
    if staging.exists() {
        fs::remove_dir_all(staging).map_err(|e| format!("cannot empty {}: {e}", staging.display()))?;
    }
    Ok(restored)
}

/// Removes temporary files that older versions of choreo wrote next to project files
/// (`.<name>.<pid>.tmp`) and a crash left behind. The loader skips them anyway.
pub(super) fn remove_stray_temporaries(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let stray = name.starts_with('.')
            && name
                .strip_suffix(".tmp")
                .and_then(|s| s.rsplit_once('.'))
                .is_some_and(|(_, pid)| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()));
        if stray && entry.file_type().is_ok_and(|t| t.is_file()) {
            match fs::remove_file(entry.path()) {
                Ok(()) => log::info!("removed the leftover temporary file {}", entry.path().display()),
                Err(e) => log::warn!("cannot remove {}: {e}", entry.path().display()),
            }
        }
    }
}

/// Makes every path hold its content (`None`: absent), durably: contents are staged and synced
/// first, then renamed into place, then the directories are synced.
fn put_files(staging: &Path, files: &[(PathBuf, Option<&str>)]) -> Result<(), String> {
    let io = |path: &Path, e: std::io::Error| format!("{}: {e}", path.display());
    let writes: Vec<(usize, &Path, &str)> =
        files.iter().enumerate().filter_map(|(i, (p, c))| c.map(|c| (i, p.as_path(), c))).collect();
    if !writes.is_empty() {
        fs::create_dir_all(staging).map_err(|e| io(staging, e))?;
    }
    let staged = |i: usize| staging.join(format!("{}-{i}.tmp", std::process::id()));
    let result = (|| {
        for &(i, _, content) in &writes {
            let tmp = staged(i);
            let mut f = fs::File::create(&tmp).map_err(|e| io(&tmp, e))?;
            f.write_all(content.as_bytes()).map_err(|e| io(&tmp, e))?;
            if writes.len() <= 4 {
                f.sync_all().map_err(|e| io(&tmp, e))?;
            }
        }
        if writes.len() > 4 {
            // One flush of the file system instead of thousands of fsyncs.
            crate::project::files::syncfs(staging).map_err(|e| io(staging, e))?;
        }
        let mut dirs: Vec<&Path> = Vec::new();
        for (i, (path, content)) in files.iter().enumerate() {
            let dir = path.parent().unwrap_or(Path::new("/"));
            match content {
                Some(content) => {
                    fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
                    if let Err(e) = fs::rename(staged(i), path) {
                        if e.raw_os_error() != Some(libc::EXDEV) {
                            return Err(io(path, e));
                        }
                        // Staging is on another file system: write next to the target instead.
                        crate::project::files::write_atomic(path, content.as_bytes()).map_err(|e| io(path, e))?;
                        let _ = fs::remove_file(staged(i));
                    }
                }
                None => match fs::remove_file(path) {
                    Ok(()) => {}
                    // Nothing there (not even its directory): absent already.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR) => {}
                    Err(e) => return Err(io(path, e)),
                },
            }
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
        for dir in dirs {
            fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io(dir, e))?;
        }
        Ok(())
    })();
    if result.is_err() {
        for &(i, _, _) in &writes {
            let _ = fs::remove_file(staged(i));
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn planned(before: Option<&str>, after: Option<&str>) -> PlannedFile {
        PlannedFile { before: before.map(String::from), after: after.map(String::from), via: Vec::new() }
    }

    /// A temporary directory with a store (`db`), a staging directory's path and an `in/`.
    fn project() -> (tempfile::TempDir, Store, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let staging = dir.path().join("staging");
        let input = dir.path().join("in");
        fs::create_dir(&input).unwrap();
        (dir, store, staging, input)
    }

    #[test]
    fn write_then_crash_is_undone_at_the_next_start() {
        let (_dir, store, staging, input) = project();
        fs::write(input.join("old.yaml"), "old\n").unwrap();
        fs::write(input.join("gone.yaml"), "gone\n").unwrap();
        let changes = vec![
            (input.join("old.yaml"), planned(Some("old\n"), Some("new\n"))),
            (input.join("gone.yaml"), planned(Some("gone\n"), None)),
            (input.join("created.yaml"), planned(None, Some("created\n"))),
        ];
        write(&store, &staging, &changes).unwrap();
        assert_eq!(fs::read_to_string(input.join("old.yaml")).unwrap(), "new\n");
        assert!(!input.join("gone.yaml").exists());
        assert!(store.pending_intent().unwrap().is_some());
        // The process dies here (no commit); the next start undoes the edit.
        let restored = recover(&store, &staging).unwrap();
        assert_eq!(restored.len(), 3);
        assert_eq!(fs::read_to_string(input.join("old.yaml")).unwrap(), "old\n");
        assert_eq!(fs::read_to_string(input.join("gone.yaml")).unwrap(), "gone\n");
        assert!(!input.join("created.yaml").exists());
        assert!(store.pending_intent().unwrap().is_none());
        assert!(!staging.exists());
        let names: Vec<_> = fs::read_dir(&input).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 2, "no temporary file in in/: {names:?}");
    }

    #[test]
    fn one_file_is_written_without_an_intent_and_restored_on_failure() {
        let (_dir, store, staging, input) = project();
        fs::write(input.join("a.yaml"), "a\n").unwrap();
        let changes = vec![(input.join("a.yaml"), planned(Some("a\n"), Some("changed\n")))];
        write(&store, &staging, &changes).unwrap();
        assert_eq!(fs::read_to_string(input.join("a.yaml")).unwrap(), "changed\n");
        assert!(store.pending_intent().unwrap().is_none(), "one rename is atomic: no intent");
        // The commit failed: the file is put back from what the plan read.
        let e = abort(&store, &staging, &changes, "cannot commit".into());
        assert!(e.contains("the files were restored"), "{e}");
        assert_eq!(fs::read_to_string(input.join("a.yaml")).unwrap(), "a\n");
        assert!(recover(&store, &staging).unwrap().is_empty());
        // A restore that fails says what the file holds now (no start will undo it).
        write(&store, &staging, &changes).unwrap();
        fs::rename(&input, input.with_extension("moved")).unwrap();
        fs::write(&input, "").unwrap();
        let e = abort(&store, &staging, &changes, "cannot commit".into());
        assert!(e.contains("a.yaml failed too") && e.contains("which the next load applies"), "{e}");
    }

    #[test]
    fn a_committed_edit_is_not_undone() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let staging = dir.path().join("staging");
        let file = dir.path().join("in").join("a.yaml");
        let changes: Vec<_> = (0..10)
            .map(|i| (dir.path().join("in").join(format!("f{i}.yaml")), planned(None, Some("x\n"))))
            .chain([(file.clone(), planned(None, Some("a\n")))])
            .collect();
        write(&store, &staging, &changes).unwrap();
        store.begin().commit_clearing_intent().unwrap();
        assert!(recover(&store, &staging).unwrap().is_empty());
        assert_eq!(fs::read_to_string(&file).unwrap(), "a\n");
        assert_eq!(fs::read_dir(dir.path().join("in")).unwrap().count(), 11);
    }

    #[test]
    fn a_failed_write_restores_what_was_written() {
        let (dir, store, staging, input) = project();
        fs::write(input.join("a.yaml"), "a\n").unwrap();
        // The second target's parent is a file: its rename fails after the first one landed.
        fs::write(dir.path().join("blocker"), "").unwrap();
        let changes = vec![
            (input.join("a.yaml"), planned(Some("a\n"), Some("changed\n"))),
            (dir.path().join("blocker").join("b.yaml"), planned(None, Some("b\n"))),
        ];
        let e = write(&store, &staging, &changes).unwrap_err();
        assert!(e.contains("blocker"), "{e}");
        assert!(e.contains("the files were restored"), "{e}");
        assert_eq!(fs::read_to_string(input.join("a.yaml")).unwrap(), "a\n");
        assert!(store.pending_intent().unwrap().is_none());
    }

    #[test]
    fn stray_temporaries_of_older_versions_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        for name in [".a.yaml.1234.tmp", ".keep.tmp", ".notes", "a.yaml", ".b.yaml.x.tmp"] {
            fs::write(dir.path().join(name), "").unwrap();
        }
        remove_stray_temporaries(dir.path());
        let mut names: Vec<_> =
            fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        assert_eq!(names, [".b.yaml.x.tmp", ".keep.tmp", ".notes", "a.yaml"]);
    }
}

//! File-level helpers of the project: which files count, parallel reading, atomic writes.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use ignore::gitignore::{Gitignore, GitignoreBuilder};

/// Whether a file name is an editor leftover or otherwise never project content: hidden files
/// (also our own temporary files), vim swap and backup files, emacs autosave and lock files.
pub fn is_noise(name: &str) -> bool {
    name.starts_with('.')
        || name.ends_with('~')
        || (name.starts_with('#') && name.ends_with('#'))
        || name.ends_with(".swp")
        || name.ends_with(".swx")
        || name.ends_with(".tmp")
}

fn is_yaml(name: &str) -> bool {
    name.ends_with(".yaml") || name.ends_with(".yml") || name.ends_with(".json")
}

/// The `.ignore` rules of a directory (gitignore syntax), if it has any.
fn ignore_rules(dir: &Path) -> Result<Option<Gitignore>, String> {
    let file = dir.join(".ignore");
    if !file.is_file() {
        return Ok(None);
    }
    let mut builder = GitignoreBuilder::new(dir);
    if let Some(e) = builder.add(&file) {
        return Err(format!("{}: {e}", file.display()));
    }
    builder.build().map(Some).map_err(|e| format!("{}: {e}", file.display()))
}

/// The top-level YAML files of `dir`, sorted by name. A missing directory has none.
pub fn list_yaml_files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot read directory: {e}")),
    };
    let listing = Listing::new(dir)?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| format!("cannot read directory: {e}"))?.path();
        if listing.contains(&path) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// The rules [`list_yaml_files`] applies, for checking single paths of `dir` without reading
/// the directory (its `.ignore` file is read once, here).
pub struct Listing {
    dir: PathBuf,
    rules: Option<Gitignore>,
}

impl Listing {
    pub fn new(dir: &Path) -> Result<Listing, String> {
        Ok(Listing { dir: dir.to_path_buf(), rules: ignore_rules(dir)? })
    }

    /// Whether `path`, a top-level entry of the directory, is one of the files it lists.
    pub fn contains(&self, path: &Path) -> bool {
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else { return false };
        // `is_file` follows symlinks: a linked file is content like any other.
        if path.parent() != Some(self.dir.as_path()) || is_noise(name) || !is_yaml(name) || !path.is_file() {
            return false;
        }
        !self.rules.as_ref().is_some_and(|r| r.matched(path, false).is_ignore())
    }
}

/// Maps `f` over `items` on up to as many threads as there are cores, keeping order. Small
/// inputs run inline, where threads would cost more than they save.
pub fn parallel_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(8);
    if threads < 2 || items.len() < 64 {
        return items.iter().map(&f).collect();
    }
    let chunk = items.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .enumerate()
            .map(|(i, part)| {
                let f = &f;
                std::thread::Builder::new()
                    .name(format!("choreo-read-{i}"))
                    .spawn_scoped(scope, move || part.iter().map(f).collect::<Vec<R>>())
            })
            .collect();
        let mut out = Vec::with_capacity(items.len());
        for (i, h) in handles.into_iter().enumerate() {
            match h {
                Ok(h) => match h.join() {
                    Ok(part) => out.extend(part),
                    Err(panic) => std::panic::resume_unwind(panic),
                },
                // Could not spawn: do this part here.
                Err(_) => out.extend(items.chunks(chunk).nth(i).unwrap_or(&[]).iter().map(&f)),
            }
        }
        out
    })
}

/// Writes `contents` to `path` atomically: a hidden temporary file in the same directory is
/// written, fsynced and renamed over the target, and the directory is fsynced. A reader (or the
/// watcher) sees the old file or the new one, never half of it.
pub fn write_atomic(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Writes several new files durably with one flush: every file goes to a hidden temporary name
/// first, the file system is synced once (`syncfs`, far cheaper than one fsync per file for
/// thousands of files), then each is renamed into place and the directories are fsynced. On error
/// no temporary file is left; files already renamed stay (each is complete).
pub fn write_batch(files: &[(PathBuf, Vec<u8>)]) -> Result<(), (PathBuf, std::io::Error)> {
    if files.len() <= 4 {
        for (path, contents) in files {
            write_atomic(path, contents).map_err(|e| (path.clone(), e))?;
        }
        return Ok(());
    }
    let tmp_of = |path: &Path| {
        let dir = path.parent().unwrap_or(Path::new("."));
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
        dir.join(format!(".{name}.{}.tmp", std::process::id()))
    };
    let cleanup = |upto: usize| {
        for (path, _) in &files[..upto] {
            let _ = fs::remove_file(tmp_of(path));
        }
    };
    for (i, (path, contents)) in files.iter().enumerate() {
        let tmp = tmp_of(path);
        let written = path
            .parent()
            .map_or(Ok(()), fs::create_dir_all)
            .and_then(|()| fs::File::create(&tmp))
            .and_then(|mut f| f.write_all(contents));
        if let Err(e) = written {
            cleanup(i + 1);
            return Err((path.clone(), e));
        }
    }
    let mut dirs: Vec<&Path> = files.iter().filter_map(|(p, _)| p.parent()).collect();
    dirs.sort();
    dirs.dedup();
    for dir in &dirs {
        if let Err(e) = syncfs(dir) {
            cleanup(files.len());
            return Err((dir.to_path_buf(), e));
        }
    }
    for (i, (path, _)) in files.iter().enumerate() {
        if let Err(e) = fs::rename(tmp_of(path), path) {
            for (p, _) in &files[i..] {
                let _ = fs::remove_file(tmp_of(p));
            }
            return Err((path.clone(), e));
        }
    }
    for dir in dirs {
        fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| (dir.to_path_buf(), e))?;
    }
    Ok(())
}

/// Flushes the whole file system holding `dir` to disk.
fn syncfs(dir: &Path) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let d = fs::File::open(dir)?;
    // SAFETY: syncfs on a valid open file descriptor.
    if unsafe { libc::syncfs(d.as_raw_fd()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Removes a file and fsyncs its directory.
pub fn remove_durable(path: &Path) -> std::io::Result<()> {
    fs::remove_file(path)?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_yaml_files_honouring_noise_and_ignore() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["b.yaml", "a.yml", "c.json", "d.txt", ".hidden.yaml", "e.yaml~", "#f.yaml#", "skip.yaml"] {
            fs::write(dir.path().join(name), "x: 1\n").unwrap();
        }
        fs::write(dir.path().join(".ignore"), "skip.yaml\n").unwrap();
        fs::create_dir(dir.path().join("sub.yaml")).unwrap();
        let names: Vec<_> = list_yaml_files(dir.path())
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_str().unwrap().to_string())
            .collect();
        assert_eq!(names, ["a.yml", "b.yaml", "c.json"]);
        assert!(list_yaml_files(&dir.path().join("missing")).unwrap().is_empty());
    }

    #[test]
    fn parallel_map_keeps_order() {
        let items: Vec<u32> = (0..1000).collect();
        assert_eq!(parallel_map(&items, |x| x * 2), items.iter().map(|x| x * 2).collect::<Vec<_>>());
    }

    #[test]
    fn batch_write_creates_every_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let files: Vec<(PathBuf, Vec<u8>)> =
            (0..10).map(|i| (dir.path().join("in").join(format!("f{i}.yaml")), format!("n: {i}\n").into_bytes())).collect();
        write_batch(&files).unwrap();
        assert_eq!(fs::read_dir(dir.path().join("in")).unwrap().count(), 10);
        assert_eq!(fs::read_to_string(dir.path().join("in/f7.yaml")).unwrap(), "n: 7\n");
    }

    #[test]
    fn atomic_write_replaces_content() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("in").join("a.yaml");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "two");
        assert_eq!(fs::read_dir(p.parent().unwrap()).unwrap().count(), 1, "no temporary file left");
    }
}

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
    let rules = ignore_rules(dir)?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("cannot read directory: {e}"))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if is_noise(name) || !is_yaml(name) {
            continue;
        }
        let path = entry.path();
        // Follow symlinks: a linked file is content like any other.
        if !path.is_file() {
            continue;
        }
        if rules.as_ref().is_some_and(|r| r.matched(&path, false).is_ignore()) {
            continue;
        }
        files.push(path);
    }
    files.sort();
    Ok(files)
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
    fn atomic_write_replaces_content() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("in").join("a.yaml");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "two");
        assert_eq!(fs::read_dir(p.parent().unwrap()).unwrap().count(), 1, "no temporary file left");
    }
}

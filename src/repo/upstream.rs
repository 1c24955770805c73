//! Caches of upstream packages: a bare clone per URL and, per pinned commit, an exported copy
//! of that commit's files. A package is read at the commit its ref names (not at the tip of
//! some branch, upstream bug B7), and the network is used only when the commit is not in the
//! cache yet, so reloads on every file edit stay local.

use std::path::{Path, PathBuf};

use git2::{Oid, Repository};

use super::{cache_name, fetch_into, partial_path, Context, Progress, RepoError, FETCH_REFSPECS};

/// Makes sure the commit `reference` names (`kind` = `hash`, `tag` or `branch`) is in the bare
/// cache of `url` under `cache_dir`, fetching only when it is not (so a `branch` ref stays at
/// the commit first fetched until the cache is removed). Returns the cache and the commit.
pub fn fetch_commit(
    url: &str,
    kind: &str,
    reference: &str,
    cache_dir: &Path,
    mut progress: Progress<'_>,
) -> Result<(PathBuf, Oid), RepoError> {
    let path = cache_dir.join(format!("{}.git", cache_name(url)));
    std::fs::create_dir_all(cache_dir).map_err(|source| RepoError::Io { path: cache_dir.to_path_buf(), source })?;
    let _lock = lock(&path.with_extension("git.lock"))?;
    let git = if path.exists() {
        Repository::open_bare(&path).ctx(|| format!("cannot open the cache {}", path.display()))?
    } else {
        Repository::init_bare(&path).ctx(|| format!("cannot create the cache {}", path.display()))?
    };
    // A branch ref stays where it was first resolved, whatever later fetches of the same URL
    // (for other refs) do to the remote-tracking branches.
    let pin = format!("refs/choreo/pins/{reference}");
    if kind == "branch" {
        if let Ok(oid) = git.refname_to_id(&pin) {
            return Ok((path, oid));
        }
    }
    let pinned = |oid: Oid| {
        if kind == "branch" {
            let _ = git.reference(&pin, oid, false, "choreo: first resolution of an upstream branch ref");
        }
        oid
    };
    if let Some(oid) = lookup(&git, kind, reference) {
        return Ok((path, pinned(oid)));
    }
    progress.say(format!("fetching {url} for {kind} {reference}"));
    fetch_into(&git, url, &FETCH_REFSPECS, false, progress.again())?;
    // A commit that no branch or tag reaches any more may still be fetched by its hash.
    if lookup(&git, kind, reference).is_none()
        && kind == "hash"
        && reference.len() == 40
        && Oid::from_str(reference).is_ok()
    {
        let _ = fetch_into(&git, url, &[reference], false, progress.again());
    }
    lookup(&git, kind, reference)
        .map(|oid| (path.clone(), pinned(oid)))
        .ok_or_else(|| RepoError::UnknownRef { reference: format!("{kind} {reference}"), url: url.to_string() })
}

fn lookup(git: &Repository, kind: &str, reference: &str) -> Option<Oid> {
    let spec = match kind {
        "tag" => format!("refs/tags/{reference}"),
        "branch" => format!("refs/remotes/origin/{reference}"),
        _ => reference.to_string(),
    };
    let obj = git.revparse_single(&spec).ok()?;
    obj.peel_to_commit().ok().map(|c| c.id())
}

/// Writes the files of commit `oid` of the bare repository `cache` into `dest` (once: an
/// existing `dest` is a finished export, written through a temporary directory and a rename).
pub fn export_commit(cache: &Path, oid: Oid, dest: &Path) -> Result<(), RepoError> {
    if dest.is_dir() {
        return Ok(());
    }
    let mut lock_path = dest.as_os_str().to_os_string();
    lock_path.push(".lock");
    let lock_path = PathBuf::from(lock_path);
    if let Some(parent) = lock_path.parent() {
        std::fs::create_dir_all(parent).map_err(|source| RepoError::Io { path: parent.to_path_buf(), source })?;
    }
    let _lock = lock(&lock_path)?;
    // Another load may have finished the export while this one waited for the lock.
    if dest.is_dir() {
        return Ok(());
    }
    let git = Repository::open_bare(cache).ctx(|| format!("cannot open the cache {}", cache.display()))?;
    let tree = git.find_commit(oid).and_then(|c| c.tree()).ctx(|| format!("cannot read commit {oid}"))?;
    let tmp = partial_path(dest);
    let io = |path: &Path, source| RepoError::Io { path: path.to_path_buf(), source };
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
    let mut failure: Option<RepoError> = None;
    tree.walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
        let Some(name) = entry.name() else { return git2::TreeWalkResult::Skip };
        // A hostile tree must not write outside the export (git itself refuses such names).
        if name == "." || name == ".." || name.contains('/') || name.eq_ignore_ascii_case(".git") {
            return git2::TreeWalkResult::Skip;
        }
        let path = tmp.join(dir).join(name);
        let result = match entry.kind() {
            Some(git2::ObjectType::Tree) => std::fs::create_dir_all(&path).map_err(|e| io(&path, e)),
            Some(git2::ObjectType::Blob) => match git.find_blob(entry.id()) {
                // Synced: an export that exists is trusted as complete, also after a power loss.
                Ok(blob) => std::fs::File::create(&path)
                    .and_then(|mut f| std::io::Write::write_all(&mut f, blob.content()).and_then(|()| f.sync_all()))
                    .map_err(|e| io(&path, e)),
                Err(source) => Err(RepoError::Git { what: format!("cannot read {}", path.display()), source }),
            },
            _ => Ok(()), // submodules and the like are not package content
        };
        match result {
            Ok(()) => git2::TreeWalkResult::Ok,
            Err(e) => {
                failure = Some(e);
                git2::TreeWalkResult::Abort
            }
        }
    })
    .or_else(|e| if failure.is_some() { Ok(()) } else { Err(e) })
    .ctx(|| format!("cannot export commit {oid}"))?;
    if let Some(e) = failure {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, dest).map_err(|e| io(dest, e))?;
    if let Some(parent) = dest.parent() {
        std::fs::File::open(parent).and_then(|d| d.sync_all()).map_err(|e| io(parent, e))?;
    }
    Ok(())
}

/// An exclusive lock on a file, held until dropped: the caches are shared by the engine's loads
/// and those of plans running beside it, which must not fetch into one repository or write one
/// export at the same time (an export is trusted as complete once it exists).
struct FileLock {
    _file: std::fs::File,
}

fn lock(path: &Path) -> Result<FileLock, RepoError> {
    let io = |source| RepoError::Io { path: path.to_path_buf(), source };
    let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(path).map_err(io)?;
    loop {
        // Released when `file` closes.
        match file.lock() {
            Ok(()) => return Ok(FileLock { _file: file }),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io(e)),
        }
    }
}

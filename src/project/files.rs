//! File-level helpers of the project: which files count, where they may really be (symbolic
//! links), parallel reading, atomic writes.
//!
//! Invariant: a file the loader reads was admitted by [`Bounds`] (its directory resolved whole,
//! the file itself resolved when it is a link); a broken link is an error, never a missing file.

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

/// What a path of the project is, its symbolic links followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    File,
    Dir,
    /// A socket, device or the like: never read.
    Other,
}

impl Entry {
    fn of(meta: &fs::Metadata) -> Entry {
        if meta.is_file() {
            Entry::File
        } else if meta.is_dir() {
            Entry::Dir
        } else {
            Entry::Other
        }
    }
}

/// Where the files a load reads may really be. A symbolic link that does not resolve or loops is
/// an error naming its target (it used to be skipped, which deleted what its file defined). With
/// a containment directory (dynamic mode: the clone) everything must resolve inside it; without
/// one (static mode) links may lead anywhere, and those leading out of the project are logged.
///
/// Directories are resolved whole, once each ([`Bounds::resolve`]); their entries cost one
/// `lstat` each, and only links among them are resolved ([`Bounds::entry`]).
#[derive(Debug, Clone, Default)]
pub struct Bounds {
    /// Canonical; every file must resolve inside it.
    inside: Option<PathBuf>,
    /// Canonical project root, for the log line of links leading out of it.
    project: Option<PathBuf>,
}

impl Bounds {
    /// The bounds of a project at `root`, contained in `contain` if given.
    pub fn new(root: &Path, contain: Option<&Path>) -> Bounds {
        let real = |p: &Path| fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        Bounds { inside: contain.map(real), project: Some(real(root)) }
    }

    /// No containment and no log: files the user names on the command line.
    pub fn none() -> Bounds {
        Bounds::default()
    }

    /// What `path` is, every symbolic link along it followed, checked against the bounds.
    /// `None`: nothing is there.
    pub fn resolve(&self, path: &Path) -> Result<Option<Entry>, String> {
        match fs::canonicalize(path) {
            Ok(real) => {
                self.admit(path, &real)?;
                fs::metadata(&real).map(|m| Some(Entry::of(&m))).map_err(|e| format!("cannot read: {e}"))
            }
            Err(e) => match fs::symlink_metadata(path) {
                Ok(m) if m.file_type().is_symlink() => Err(broken_link(path, &e)),
                _ if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                _ => Err(format!("cannot read: {e}")),
            },
        }
    }

    /// What `path`, an entry of a directory [`Bounds::resolve`] admitted, is: only a symbolic
    /// link needs resolving.
    pub fn entry(&self, path: &Path) -> Result<Option<Entry>, String> {
        match fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_symlink() => self.resolve(path),
            Ok(m) => Ok(Some(Entry::of(&m))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("cannot read: {e}")),
        }
    }

    fn admit(&self, path: &Path, real: &Path) -> Result<(), String> {
        let leads = || {
            let link = fs::read_link(path).map(|t| format!("symbolic link to {} ", t.display())).unwrap_or_default();
            format!("{link}leads to {}", real.display())
        };
        match (&self.inside, &self.project) {
            (Some(inside), _) if !real.starts_with(inside) => Err(format!("{}, outside {}", leads(), inside.display())),
            (None, Some(project)) if !real.starts_with(project) => {
                log::debug!("{}: {}, outside the project", path.display(), leads());
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// Why the symbolic link at `path` cannot be followed (`e`, from resolving it).
fn broken_link(path: &Path, e: &std::io::Error) -> String {
    let target = fs::read_link(path).map_or_else(|_| "?".to_string(), |t| t.display().to_string());
    if e.raw_os_error() == Some(libc::ELOOP) {
        format!("symbolic link to {target} is a loop")
    } else if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory) {
        format!("symbolic link to {target} that does not resolve")
    } else {
        format!("symbolic link to {target} cannot be followed: {e}")
    }
}

/// The `.ignore` rules of a directory (gitignore syntax), if it has any.
fn ignore_rules(dir: &Path, bounds: &Bounds) -> Result<Option<Gitignore>, String> {
    let file = dir.join(".ignore");
    if bounds.entry(&file).map_err(|e| format!("{}: {e}", file.display()))? != Some(Entry::File) {
        return Ok(None);
    }
    let mut builder = GitignoreBuilder::new(dir);
    if let Some(e) = builder.add(&file) {
        return Err(format!("{}: {e}", file.display()));
    }
    builder.build().map(Some).map_err(|e| format!("{}: {e}", file.display()))
}

/// A file that would be read but cannot be, and why.
pub type Unreadable = (PathBuf, String);

/// The top-level YAML files of `dir`, sorted by name, and the entries that would be listed but
/// cannot be read (a broken symbolic link, one leading out of `bounds`) with the reason. A
/// missing directory has none.
pub fn list_yaml_files(dir: &Path, bounds: &Bounds) -> Result<(Vec<PathBuf>, Vec<Unreadable>), String> {
    let listing = Listing::new(dir, bounds)?;
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), Vec::new())),
        Err(e) => return Err(format!("cannot read directory: {e}")),
    };
    let mut files = Vec::new();
    let mut broken = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| format!("cannot read directory: {e}"))?.path();
        match listing.contains(&path) {
            Ok(true) => files.push(path),
            Ok(false) => {}
            Err(e) => broken.push((path, e)),
        }
    }
    // All in one directory: ordering the whole paths as bytes orders their names, as a
    // component-wise sort would, without splitting every path at every comparison.
    files.sort_by(|a, b| a.as_os_str().cmp(b.as_os_str()));
    broken.sort();
    Ok((files, broken))
}

/// The rules [`list_yaml_files`] applies, for checking single paths of `dir` without reading
/// the directory (its `.ignore` file is read once, here).
pub struct Listing {
    dir: PathBuf,
    rules: Option<Gitignore>,
    bounds: Bounds,
}

impl Listing {
    /// The listing of `dir`; an error when `dir` itself leads out of `bounds` or is a broken
    /// link.
    pub fn new(dir: &Path, bounds: &Bounds) -> Result<Listing, String> {
        bounds.resolve(dir)?;
        Ok(Listing { dir: dir.to_path_buf(), rules: ignore_rules(dir, bounds)?, bounds: bounds.clone() })
    }

    /// Whether `path`, a top-level entry of the directory, is one of the files it lists; an
    /// error for a name it would list whose symbolic link is broken or leads out of bounds.
    pub fn contains(&self, path: &Path) -> Result<bool, String> {
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else { return Ok(false) };
        if path.parent() != Some(self.dir.as_path()) || is_noise(name) || !is_yaml(name) {
            return Ok(false);
        }
        if self.rules.as_ref().is_some_and(|r| r.matched(path, false).is_ignore()) {
            return Ok(false);
        }
        // A linked file is content like any other.
        Ok(self.bounds.entry(path)? == Some(Entry::File))
    }
}

/// Maps `f` over `items` on up to as many threads as there are cores, keeping order. Small
/// inputs run inline, where threads would cost more than they save.
pub fn parallel_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    if items.len() < 64 {
        return items.iter().map(&f).collect();
    }
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(8);
    if threads < 2 {
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

/// Flushes the whole file system holding `dir` to disk.
pub(crate) fn syncfs(dir: &Path) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let d = fs::File::open(dir)?;
    // SAFETY: syncfs on a valid open file descriptor.
    if unsafe { libc::syncfs(d.as_raw_fd()) } != 0 {
        return Err(std::io::Error::last_os_error());
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
        let names: Vec<_> = list_yaml_files(dir.path(), &Bounds::none())
            .unwrap()
            .0
            .iter()
            .map(|p| p.file_name().unwrap().to_str().unwrap().to_string())
            .collect();
        assert_eq!(names, ["a.yml", "b.yaml", "c.json"]);
        assert!(list_yaml_files(&dir.path().join("missing"), &Bounds::none()).unwrap().0.is_empty());
    }

    fn names(files: &[PathBuf]) -> Vec<String> {
        files.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect()
    }

    #[test]
    fn broken_links_are_reported_with_their_targets() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::write(d.join("a.yaml"), "x: 1\n").unwrap();
        symlink("a.yaml", d.join("b.yaml")).unwrap();
        symlink("/nowhere/at/all.yaml", d.join("dangling.yaml")).unwrap();
        symlink("loop2.yaml", d.join("loop1.yaml")).unwrap();
        symlink("loop1.yaml", d.join("loop2.yaml")).unwrap();
        symlink("self.yaml", d.join("self.yaml")).unwrap();
        symlink("a.yaml/x", d.join("notdir.yaml")).unwrap();
        // Names that would not be listed are not looked at.
        symlink("/nowhere", d.join(".hidden.yaml")).unwrap();
        symlink("/nowhere", d.join("notes.txt")).unwrap();
        let (files, broken) = list_yaml_files(d, &Bounds::none()).unwrap();
        assert_eq!(names(&files), ["a.yaml", "b.yaml"], "a link to a file is content");
        let broken: Vec<_> =
            broken.iter().map(|(p, e)| format!("{}: {e}", p.file_name().unwrap().to_string_lossy())).collect();
        assert_eq!(
            broken,
            [
                "dangling.yaml: symbolic link to /nowhere/at/all.yaml that does not resolve",
                "loop1.yaml: symbolic link to loop2.yaml is a loop",
                "loop2.yaml: symbolic link to loop1.yaml is a loop",
                "notdir.yaml: symbolic link to a.yaml/x that does not resolve",
                "self.yaml: symbolic link to self.yaml is a loop",
            ]
        );
        let listing = Listing::new(d, &Bounds::none()).unwrap();
        assert_eq!(listing.contains(&d.join("b.yaml")), Ok(true));
        assert_eq!(listing.contains(&d.join("gone.yaml")), Ok(false));
        assert_eq!(
            listing.contains(&d.join("dangling.yaml")),
            Err("symbolic link to /nowhere/at/all.yaml that does not resolve".into())
        );
    }

    #[test]
    fn containment_refuses_links_leading_out() {
        use std::os::unix::fs::symlink;
        let tmp = tempfile::tempdir().unwrap();
        let clone = tmp.path().join("clone");
        let project = clone.join("project");
        let elsewhere = tmp.path().join("elsewhere");
        fs::create_dir_all(project.join("in")).unwrap();
        fs::create_dir_all(clone.join("shared")).unwrap();
        fs::create_dir_all(&elsewhere).unwrap();
        fs::write(elsewhere.join("secret.yaml"), "x: 1\n").unwrap();
        fs::write(clone.join("shared/common.yaml"), "x: 1\n").unwrap();
        let input = project.join("in");
        symlink(elsewhere.join("secret.yaml"), input.join("out.yaml")).unwrap();
        symlink("../../shared/common.yaml", input.join("shared.yaml")).unwrap();

        let contained = Bounds::new(&project, Some(&clone));
        let (files, broken) = list_yaml_files(&input, &contained).unwrap();
        assert_eq!(names(&files), ["shared.yaml"], "links within the clone are fine");
        assert_eq!(broken.len(), 1);
        let real = fs::canonicalize(elsewhere.join("secret.yaml")).unwrap();
        let want = format!(
            "symbolic link to {} leads to {}, outside {}",
            elsewhere.join("secret.yaml").display(),
            real.display(),
            fs::canonicalize(&clone).unwrap().display()
        );
        assert_eq!(broken[0].1, want);

        // Without containment (static mode) both are read.
        let (files, broken) = list_yaml_files(&input, &Bounds::new(&project, None)).unwrap();
        assert_eq!(names(&files), ["out.yaml", "shared.yaml"]);
        assert!(broken.is_empty());

        // A listed directory that is itself a link out of the clone.
        symlink(&elsewhere, project.join("crds")).unwrap();
        let e = list_yaml_files(&project.join("crds"), &contained).unwrap_err();
        assert!(e.starts_with(&format!("symbolic link to {} leads to ", elsewhere.display())), "{e}");
        assert!(e.ends_with(&format!("outside {}", fs::canonicalize(&clone).unwrap().display())), "{e}");
        // A dangling directory link is reported, a missing directory is empty.
        symlink("/nowhere", project.join("refs")).unwrap();
        assert_eq!(
            list_yaml_files(&project.join("refs"), &contained),
            Err("symbolic link to /nowhere that does not resolve".into())
        );
        assert_eq!(list_yaml_files(&project.join("libs"), &contained), Ok((Vec::new(), Vec::new())));
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

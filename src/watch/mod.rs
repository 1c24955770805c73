//! The file watcher: `notify` events over a project's directories, batched and filtered.
//!
//! The notify callback only forwards raw events into a bounded channel (never blocking, never
//! parsing); a named thread (`choreo-watch`) batches them. Reads are no changes: inotify
//! reports every open (notify 8 always subscribes to `IN_OPEN`), and choreo's own loads open
//! every file they read, so counting opens would make each load trigger the next, forever.
//! The first change opens a batch. It goes out after a short quiet gap
//! ([`WatchConfig::quiet`]) once every file written to in it was closed (`IN_CLOSE_WRITE`), so
//! an edit is picked up within milliseconds but a burst stays one batch; with a file still open
//! for writing (half-written), or a writer that never closes, it waits for the window
//! ([`WatchConfig::window`]), extended while a burst keeps arriving up to
//! [`WatchConfig::max_window`], measured from the first event so a constantly saving editor
//! cannot starve the engine. A batch is the de-duplicated set of changed paths inside the
//! watched directories, minus editor noise and choreo's own state. When the raw channel
//! overflows or notify asks for a rescan, the batch becomes [`WatchEvent::Rescan`]: the engine
//! reloads everything rather than miss a change. Events are hints: the engine re-reads files.
//!
//! Architecture invariant: depends on no other choreo module except `project::files` for the
//! noise rules; it reads no file contents.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind};
use notify::{EventKind, RecursiveMode, Watcher as _};

use crate::project::files::is_noise;

/// What the watcher reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// These paths (absolute) changed, appeared or disappeared.
    Changed(Vec<PathBuf>),
    /// Events were lost or the OS asked for it: reload everything.
    Rescan(String),
}

/// What to watch and how to batch.
#[derive(Debug, Clone)]
pub struct WatchConfig {
    /// The project directory.
    pub root: PathBuf,
    /// Directories relative to `root` whose contents matter (created later is fine).
    pub dirs: Vec<PathBuf>,
    /// The batching window after the first event of a batch.
    pub window: Duration,
    /// The longest a burst may extend a batch.
    pub max_window: Duration,
    /// The quiet gap after which a batch whose writes are all closed goes out early.
    pub quiet: Duration,
}

/// A running watcher; dropping it stops the thread.
pub struct WatchHandle {
    /// Dropped first (with it the sender feeding the batching thread), so the thread ends.
    watcher: Option<notify::RecommendedWatcher>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for WatchHandle {
    /// Stops watching and waits for the batching thread to end: no batch of this watcher
    /// arrives after the handle is gone (and no thread outlives it).
    fn drop(&mut self) {
        drop(self.watcher.take());
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                log::error!("the file watcher thread panicked");
            }
        }
    }
}

/// A batch and the watcher generation it comes from: a watcher started for another directory
/// (a context switch) has a new generation, so a batch of the old one is recognised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchBatch {
    pub generation: u64,
    pub event: WatchEvent,
}

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("cannot watch {}: {source}{}", path.display(), hint(source))]
    Watch { path: PathBuf, source: notify::Error },
    #[error("cannot start the watcher thread: {0}")]
    Thread(std::io::Error),
}

fn hint(e: &notify::Error) -> &'static str {
    match &e.kind {
        notify::ErrorKind::MaxFilesWatch => {
            " (hint: raise fs.inotify.max_user_watches, e.g. `sysctl fs.inotify.max_user_watches=524288`)"
        }
        _ => "",
    }
}

/// Raw events buffered between notify and the batching thread; beyond this, a rescan.
const RAW_CAPACITY: usize = 65_536;

/// Starts watching. Batches go to `out` until the handle is dropped.
pub fn spawn(cfg: WatchConfig, generation: u64, out: Sender<WatchBatch>) -> Result<WatchHandle, WatchError> {
    let (raw_tx, raw_rx) = crossbeam_channel::bounded::<notify::Result<notify::Event>>(RAW_CAPACITY);
    let overflow = Arc::new(AtomicBool::new(false));
    let flag = overflow.clone();
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if raw_tx.try_send(ev).is_err() {
            // Full (or the batcher is gone): remember that something was lost.
            flag.store(true, Ordering::SeqCst);
        }
    })
    .map_err(|source| WatchError::Watch { path: cfg.root.clone(), source })?;
    // The root itself non-recursively (to see watched directories appear or go), each watched
    // directory recursively: never `.choreo/` or `.git/`, whose churn is not project content.
    watcher
        .watch(&cfg.root, RecursiveMode::NonRecursive)
        .map_err(|source| WatchError::Watch { path: cfg.root.clone(), source })?;
    for d in &cfg.dirs {
        let abs = cfg.root.join(d);
        if abs.is_dir() {
            watcher
                .watch(&abs, RecursiveMode::Recursive)
                .map_err(|source| WatchError::Watch { path: abs.clone(), source })?;
        }
    }
    let batcher = Batcher { cfg, raw: raw_rx, out, overflow, generation };
    let thread = std::thread::Builder::new()
        .name("choreo-watch".into())
        .spawn(move || batcher.run())
        .map_err(WatchError::Thread)?;
    Ok(WatchHandle { watcher: Some(watcher), thread: Some(thread) })
}

impl WatchHandle {
    /// Watches the directories of `cfg` that exist now; the engine calls it when a batch shows
    /// that one of them appeared after the start. Watching a watched path again is harmless.
    pub fn refresh(&mut self, cfg: &WatchConfig) {
        for d in &cfg.dirs {
            let abs = cfg.root.join(d);
            if abs.is_dir() {
                let Some(watcher) = self.watcher.as_mut() else { return };
                if let Err(e) = watcher.watch(&abs, RecursiveMode::Recursive) {
                    log::warn!("cannot watch {}: {e}", abs.display());
                }
            }
        }
    }
}

struct Batcher {
    cfg: WatchConfig,
    raw: Receiver<notify::Result<notify::Event>>,
    out: Sender<WatchBatch>,
    overflow: Arc<AtomicBool>,
    generation: u64,
}

/// What one raw event means for batching.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    /// Not a change: a file was opened or read (choreo's own loads cause these, so counting
    /// them would make every load trigger the next one, forever).
    Ignore,
    /// A writer has the file open: its content may be incomplete until it is closed.
    Writing,
    /// A writer closed the file: its content is complete as far as the writer is concerned.
    Closed,
    /// Any other change (create of a directory, rename, removal, metadata): complete at once.
    Changed,
}

fn effect(kind: &EventKind) -> Effect {
    match kind {
        // `IN_CLOSE_WRITE`: the end of every write, in place or not.
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => Effect::Closed,
        // `IN_OPEN`, `IN_ACCESS`, `IN_CLOSE_NOWRITE`: reads change nothing.
        EventKind::Access(_) => Effect::Ignore,
        // `IN_MODIFY` (a truncate or a write) and `IN_CREATE` of a file: a `close` follows.
        EventKind::Modify(ModifyKind::Data(_)) | EventKind::Create(CreateKind::File) => Effect::Writing,
        _ => Effect::Changed,
    }
}

/// One batch being gathered.
struct Pending {
    opened: Instant,
    /// The window deadline: `window` after the first event, extended by a burst.
    deadline: Instant,
    last: Instant,
    paths: BTreeSet<PathBuf>,
    /// Paths written to but not closed yet.
    writing: BTreeSet<PathBuf>,
    rescan: Option<String>,
}

impl Pending {
    fn new(now: Instant, window: Duration) -> Pending {
        Pending {
            opened: now,
            deadline: now + window,
            last: now,
            paths: BTreeSet::new(),
            writing: BTreeSet::new(),
            rescan: None,
        }
    }

    /// When the batch is due: after a short quiet gap once every write is closed, else at the
    /// window's end (a writer that never closes, a link, a half-written file).
    fn due(&self, quiet: Duration) -> Instant {
        if self.writing.is_empty() {
            (self.last + quiet).min(self.deadline)
        } else {
            self.deadline
        }
    }
}

impl Batcher {
    fn run(self) {
        while let Ok(first) = self.raw.recv() {
            let mut batch = Pending::new(Instant::now(), self.cfg.window);
            if !self.take(first, &mut batch) {
                // Only reads: no batch was opened.
                continue;
            }
            loop {
                let due = batch.due(self.cfg.quiet);
                match self.raw.recv_timeout(due.saturating_duration_since(Instant::now())) {
                    Ok(ev) => {
                        if self.take(ev, &mut batch) {
                            // A burst keeps the window open a little longer, never past the maximum.
                            let now = Instant::now();
                            batch.last = now;
                            batch.deadline =
                                (now + self.cfg.window / 4).min(batch.opened + self.cfg.max_window).max(batch.deadline);
                        }
                    }
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            }
            if self.overflow.swap(false, Ordering::SeqCst) {
                batch.rescan = Some("the file event queue overflowed".into());
            }
            let event = match batch.rescan {
                Some(reason) => WatchEvent::Rescan(reason),
                None if batch.paths.is_empty() => continue,
                None => WatchEvent::Changed(batch.paths.into_iter().collect()),
            };
            if self.out.send(WatchBatch { generation: self.generation, event }).is_err() {
                return;
            }
        }
    }

    /// Adds one raw event to the batch; false if it was no change at all.
    fn take(&self, ev: notify::Result<notify::Event>, batch: &mut Pending) -> bool {
        match ev {
            Ok(ev) => {
                if ev.need_rescan() {
                    batch.rescan = Some("the operating system asked for a rescan".into());
                    return true;
                }
                let effect = effect(&ev.kind);
                if effect == Effect::Ignore {
                    return false;
                }
                let mut any = false;
                for p in ev.paths {
                    if !relevant(&self.cfg, &p) {
                        continue;
                    }
                    any = true;
                    match effect {
                        Effect::Writing => {
                            batch.writing.insert(p.clone());
                        }
                        Effect::Closed => {
                            batch.writing.remove(&p);
                        }
                        Effect::Changed | Effect::Ignore => {}
                    }
                    batch.paths.insert(p);
                }
                any
            }
            Err(e) => {
                log::warn!("file watcher error: {e}");
                batch.rescan = Some(format!("file watcher error: {e}"));
                true
            }
        }
    }
}

/// Whether a changed path can matter to the project: inside a watched directory (or one of the
/// watched directories itself), and not editor noise.
pub fn relevant(cfg: &WatchConfig, path: &Path) -> bool {
    let Ok(rel) = path.strip_prefix(&cfg.root) else { return false };
    if !cfg.dirs.iter().any(|d| rel.starts_with(d)) {
        return false;
    }
    !rel.components().any(|c| {
        let s = c.as_os_str().to_string_lossy();
        // `.ignore` is hidden but decides which files count.
        s == ".choreo" || s == ".git" || (is_noise(&s) && s != ".ignore")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(root: &Path) -> WatchConfig {
        WatchConfig {
            root: root.to_path_buf(),
            dirs: vec!["in".into(), "crds".into()],
            window: Duration::from_millis(20),
            max_window: Duration::from_millis(50),
            quiet: Duration::from_millis(2),
        }
    }

    #[test]
    fn relevance_filters_noise_and_other_directories() {
        let c = cfg(Path::new("/p"));
        assert!(relevant(&c, Path::new("/p/in/a.yaml")));
        assert!(relevant(&c, Path::new("/p/in")));
        assert!(!relevant(&c, Path::new("/p/in/.a.yaml.swp")));
        assert!(!relevant(&c, Path::new("/p/in/a.yaml~")));
        assert!(!relevant(&c, Path::new("/p/.choreo/db/x")));
        assert!(!relevant(&c, Path::new("/p/README.md")));
        assert!(!relevant(&c, Path::new("/elsewhere/in/a.yaml")));
    }

    #[test]
    fn reads_are_not_changes_but_a_closed_write_is() {
        use notify::event::{DataChange, RemoveKind};
        assert_eq!(effect(&EventKind::Access(AccessKind::Open(AccessMode::Any))), Effect::Ignore);
        assert_eq!(effect(&EventKind::Access(AccessKind::Close(AccessMode::Read))), Effect::Ignore);
        assert_eq!(effect(&EventKind::Access(AccessKind::Read)), Effect::Ignore);
        assert_eq!(effect(&EventKind::Access(AccessKind::Close(AccessMode::Write))), Effect::Closed);
        assert_eq!(effect(&EventKind::Modify(ModifyKind::Data(DataChange::Any))), Effect::Writing);
        assert_eq!(effect(&EventKind::Create(CreateKind::File)), Effect::Writing);
        assert_eq!(effect(&EventKind::Remove(RemoveKind::File)), Effect::Changed);
    }

    #[test]
    fn a_batch_waits_for_open_writes_until_its_window_ends() {
        let t = Instant::now();
        let (quiet, window) = (Duration::from_millis(2), Duration::from_millis(20));
        let mut b = Pending::new(t, window);
        assert_eq!(b.due(quiet), t + quiet);
        b.writing.insert("/p/in/a.yaml".into());
        assert_eq!(b.due(quiet), t + window, "a half-written file waits");
        b.writing.clear();
        b.last = t + Duration::from_millis(19);
        assert_eq!(b.due(quiet), t + window, "never past the window");
    }

    #[test]
    fn reading_a_file_opens_no_batch() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("in")).unwrap();
        let read = dir.path().join("in/read.yaml");
        std::fs::write(&read, "a: 1\n").unwrap();
        let (tx, rx) = crossbeam_channel::unbounded();
        let _h = spawn(cfg(dir.path()), 7, tx).unwrap();
        std::fs::read_to_string(&read).unwrap();
        let written = dir.path().join("in/written.yaml");
        std::fs::write(&written, "b: 1\n").unwrap();
        // The first batch is the write's: the read before it was no change.
        let ev = rx.recv_timeout(Duration::from_secs(10)).expect("a batch");
        assert_eq!(ev, WatchBatch { generation: 7, event: WatchEvent::Changed(vec![written]) });
    }

    #[test]
    fn a_write_arrives_as_one_batch() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("in")).unwrap();
        let (tx, rx) = crossbeam_channel::unbounded();
        let h = spawn(cfg(dir.path()), 1, tx).unwrap();
        let f = dir.path().join("in/a.yaml");
        std::fs::write(&f, "a: 1\n").unwrap();
        std::fs::write(dir.path().join("in/.a.yaml.swp"), "x").unwrap();
        let ev = rx.recv_timeout(Duration::from_secs(10)).expect("a batch").event;
        let WatchEvent::Changed(paths) = ev else { panic!("{ev:?}") };
        assert!(paths.contains(&f), "{paths:?}");
        assert!(paths.iter().all(|p| !p.to_string_lossy().ends_with(".swp")), "{paths:?}");
        // Dropping the handle ends the batching thread: nothing arrives after it.
        drop(h);
        std::fs::write(dir.path().join("in/b.yaml"), "b: 1\n").unwrap();
        assert!(rx.recv().is_err(), "the batcher is gone and its sender with it");
    }
}

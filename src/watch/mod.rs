//! The file watcher: `notify` events over a project's directories, batched and filtered.
//!
//! The notify callback only forwards raw events into a bounded channel (never blocking, never
//! parsing); a named thread (`choreo-watch`) batches them: the first event opens a window of
//! [`WatchConfig::window`], extended while a burst keeps arriving up to
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
use notify::{RecursiveMode, Watcher as _};

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
}

/// A running watcher; dropping it stops the thread.
pub struct WatchHandle {
    // Field order matters: the notify watcher (and with it the sender feeding the batching
    // thread) must drop before the thread handle.
    watcher: notify::RecommendedWatcher,
    _thread: std::thread::JoinHandle<()>,
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
pub fn spawn(cfg: WatchConfig, out: Sender<WatchEvent>) -> Result<WatchHandle, WatchError> {
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
            watcher.watch(&abs, RecursiveMode::Recursive).map_err(|source| WatchError::Watch { path: abs.clone(), source })?;
        }
    }
    let batcher = Batcher { cfg, raw: raw_rx, out, overflow };
    let thread = std::thread::Builder::new()
        .name("choreo-watch".into())
        .spawn(move || batcher.run())
        .map_err(WatchError::Thread)?;
    Ok(WatchHandle { watcher, _thread: thread })
}

impl WatchHandle {
    /// Watches the directories of `cfg` that exist now; the engine calls it when a batch shows
    /// that one of them appeared after the start. Watching a watched path again is harmless.
    pub fn refresh(&mut self, cfg: &WatchConfig) {
        for d in &cfg.dirs {
            let abs = cfg.root.join(d);
            if abs.is_dir() {
                if let Err(e) = self.watcher.watch(&abs, RecursiveMode::Recursive) {
                    log::warn!("cannot watch {}: {e}", abs.display());
                }
            }
        }
    }
}

struct Batcher {
    cfg: WatchConfig,
    raw: Receiver<notify::Result<notify::Event>>,
    out: Sender<WatchEvent>,
    overflow: Arc<AtomicBool>,
}

impl Batcher {
    fn run(self) {
        while let Ok(first) = self.raw.recv() {
            let opened = Instant::now();
            let mut paths = BTreeSet::new();
            let mut rescan: Option<String> = None;
            self.take(first, &mut paths, &mut rescan);
            let mut deadline = opened + self.cfg.window;
            loop {
                match self.raw.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                    Ok(ev) => {
                        self.take(ev, &mut paths, &mut rescan);
                        // A burst keeps the window open a little longer, never past the maximum.
                        deadline = (Instant::now() + self.cfg.window / 4).min(opened + self.cfg.max_window).max(deadline);
                    }
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            }
            if self.overflow.swap(false, Ordering::SeqCst) {
                rescan = Some("the file event queue overflowed".into());
            }
            let event = match rescan {
                Some(reason) => WatchEvent::Rescan(reason),
                None if paths.is_empty() => continue,
                None => WatchEvent::Changed(paths.into_iter().collect()),
            };
            if self.out.send(event).is_err() {
                return;
            }
        }
    }

    fn take(&self, ev: notify::Result<notify::Event>, paths: &mut BTreeSet<PathBuf>, rescan: &mut Option<String>) {
        match ev {
            Ok(ev) => {
                if ev.need_rescan() {
                    *rescan = Some("the operating system asked for a rescan".into());
                }
                for p in ev.paths {
                    if relevant(&self.cfg, &p) {
                        paths.insert(p);
                    }
                }
            }
            Err(e) => {
                log::warn!("file watcher error: {e}");
                *rescan = Some(format!("file watcher error: {e}"));
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
        s == ".choreo" || s == ".git" || is_noise(&s)
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
    fn a_write_arrives_as_one_batch() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("in")).unwrap();
        let (tx, rx) = crossbeam_channel::unbounded();
        let _h = spawn(cfg(dir.path()), tx).unwrap();
        let f = dir.path().join("in/a.yaml");
        std::fs::write(&f, "a: 1\n").unwrap();
        std::fs::write(dir.path().join("in/.a.yaml.swp"), "x").unwrap();
        let ev = rx.recv_timeout(Duration::from_secs(10)).expect("a batch");
        let WatchEvent::Changed(paths) = ev else { panic!("{ev:?}") };
        assert!(paths.contains(&f), "{paths:?}");
        assert!(paths.iter().all(|p| !p.to_string_lossy().ends_with(".swp")), "{paths:?}");
    }
}

//! Continuous mode and the file watch loop.
//!
//! In static mode the engine watches the project (`watch`); every batch of changed files
//! reloads the project (a half-written or invalid file fails the load, names the file, keeps the
//! last good state and is retried on the next event). A batch of input files only reads those
//! files ([`Scope::Inputs`]); anything else (CRDs, reconcilers, libraries, `.ignore`, a
//! directory appearing, a rescan) reloads everything. While the continuous runner runs
//! (`run start`), every change the store commits — a reload, an `apply`, a `delete` — is
//! dispatched to the reconcilers and worked off between requests, a bounded slice at a time so
//! the engine keeps answering.

use std::path::PathBuf;
use std::time::Instant;

use crossbeam_channel::Sender;

use super::load::Scope;
use super::runner::{self, RunOptions, Step, Work};
use super::Engine;
use crate::project::Layout;
use crate::protocol::{ErrorKind, ErrorReport, Reply, Runner};
use crate::watch::{self, WatchBatch, WatchConfig, WatchEvent, WatchHandle};

/// Reconciles done between two looks at the engine's channels.
const SLICE: usize = 256;

impl Engine {
    pub(super) fn watch_config(&self) -> Option<WatchConfig> {
        let layout = self.layout.as_ref()?;
        #[allow(unused_mut)]
        let mut dirs =
            vec![layout.apis.clone(), layout.input.clone(), "reconcilers".into(), "libs".into(), layout.refs.clone()];
        #[cfg(feature = "sdc")]
        if let Some(sdc) = &self.sdc {
            dirs.push(sdc.options.schemas.clone());
            dirs.push(sdc.options.running_configs.clone());
        }
        Some(WatchConfig {
            root: layout.root.clone(),
            dirs,
            window: std::time::Duration::from_millis(20),
            max_window: std::time::Duration::from_millis(50),
            quiet: std::time::Duration::from_millis(2),
        })
    }

    /// Starts a watcher of the served directory, of a new generation: batches of earlier
    /// watchers (another directory) are dropped when they arrive.
    pub(super) fn start_watcher(&mut self, tx: Sender<WatchBatch>) -> Option<WatchHandle> {
        let cfg = self.watch_config()?;
        self.watch_generation += 1;
        match watch::spawn(cfg, self.watch_generation, tx) {
            Ok(h) => Some(h),
            Err(e) => {
                log::error!("{e}; changes to the project are picked up by `choreo run load` only");
                None
            }
        }
    }

    pub(super) fn on_files(&mut self, batch: WatchBatch, watcher: Option<&mut WatchHandle>) {
        if batch.generation != self.watch_generation {
            log::debug!("dropped a batch of an earlier watcher");
            return;
        }
        let ev = batch.event;
        crate::metrics::global().watch_event();
        self.touch_sdc();
        #[cfg(feature = "sdc")]
        if let (WatchEvent::Changed(paths), Some(sdc), Some(layout)) = (&ev, &self.sdc, &self.layout) {
            // Schemas and running configs are read by the next pass of `-s`, not by a load.
            if paths.iter().all(|p| p.strip_prefix(&layout.root).is_ok_and(|rel| sdc.watches(rel))) {
                log::debug!("{} changed schema or running config files", paths.len());
                return;
            }
        }
        match &ev {
            WatchEvent::Changed(paths) => log::debug!("{} changed paths, first {}", paths.len(), paths[0].display()),
            WatchEvent::Rescan(why) => log::info!("rescanning the project: {why}"),
        }
        let inputs = match (&ev, self.layout()) {
            (WatchEvent::Changed(paths), Ok(layout)) => input_files(layout, paths),
            _ => None,
        };
        let _ = match inputs {
            Some(files) => self.reload_scope(Scope::Inputs(&files)),
            None => {
                if let (Some(w), Some(cfg)) = (watcher, self.watch_config()) {
                    // A watched directory may have just appeared.
                    w.refresh(&cfg);
                }
                self.reload()
            }
        };
    }

    pub(super) fn run_start(&mut self) -> Result<Reply, ErrorReport> {
        self.layout()?;
        match self.runner() {
            Runner::Running => return Ok(Reply::Done),
            Runner::Stopped => {}
            other => {
                return Err(ErrorReport::new(
                    ErrorKind::Unavailable,
                    format!("runner is already running, status {other}"),
                ))
            }
        }
        self.reload()?;
        self.start_work();
        Ok(Reply::Done)
    }

    /// Starts the continuous runner on what is loaded now (every for-object is reconciled).
    pub(super) fn start_work(&mut self) {
        let seeds = self.store.with(|s| runner::seed_all(&self.controllers, s, None));
        // Everything is reconciled from the current state; older events are covered by that.
        self.changes.drain();
        self.work = Some(Work::new(&self.controllers, seeds));
        self.publish_runner();
    }

    pub(super) fn run_stop(&mut self) -> Result<Reply, ErrorReport> {
        if self.production() {
            return Err(ErrorReport::new(
                ErrorKind::Unavailable,
                "the runner of a production server always runs (it reconciles the pinned ref continuously)",
            )
            .with_hint("apply a development branch to run on demand: `choreo server apply URL DIR REF BRANCH`"));
        }
        self.stop_runner();
        Ok(Reply::Done)
    }

    /// Stops the continuous runner, if it runs.
    pub(super) fn stop_runner(&mut self) {
        if self.work.take().is_some() {
            // Whatever was still queued is reconciled by the next run, which starts over.
            self.fingerprints.clear();
        }
        self.burst_memory = None;
        self.publish_runner();
    }

    /// Works off a slice of the continuous runner's queue.
    pub(super) fn drive(&mut self) {
        let Some(mut work) = self.work.take() else { return };
        let current: Vec<(String, u128)> =
            self.controllers.iter().map(|c| (c.cfg.name.clone(), c.fingerprint)).collect();
        if work.controllers != current {
            // A reload changed the reconcilers: queued items name them by index, so start over
            // from the current objects when the set changed, else add the changed ones' objects.
            let same_set = work.controllers.iter().map(|(n, _)| n).eq(current.iter().map(|(n, _)| n));
            if same_set {
                let changed: std::collections::HashSet<usize> =
                    (0..current.len()).filter(|i| work.controllers[*i].1 != current[*i].1).collect();
                let seeds = self.store.with(|s| runner::seed_all(&self.controllers, s, Some(&changed)));
                work.push_all(seeds);
                work.controllers = current;
            } else {
                let seeds = self.store.with(|s| runner::seed_all(&self.controllers, s, None));
                self.changes.drain();
                work = Work::new(&self.controllers, seeds);
            }
        }
        work.absorb(&self.store, &self.controllers, &self.changes);
        let opts = RunOptions::default();
        let started = Instant::now();
        let mut failure = None;
        let mut steps = 0;
        for _ in 0..SLICE {
            if self.interrupt.raised().is_some() {
                break;
            }
            let step = work.step(&self.store, &self.controllers, opts, &self.interrupt);
            work.absorb(&self.store, &self.controllers, &self.changes);
            steps += 1;
            match step {
                Step::Ran => self.touch_sdc(),
                Step::Idle => break,
                Step::Failed { task, message } => {
                    log::warn!(task = task.as_str(); "reconcile failed: {task}: {message}");
                    failure = Some(format!("{task}: {message}"));
                }
            }
        }
        if work.reconciles > 0 && (failure.is_some() || work.is_quiescent()) {
            if let Err(e) = self.store.sync() {
                log::error!("cannot flush the store: {e}");
            }
            let took = work.burst_started.take().map_or_else(|| started.elapsed(), |t| t.elapsed());
            crate::metrics::global().run("continuous", failure.is_none(), took);
            log::info!(
                mode = "continuous", success = failure.is_none(), reconciles = work.reconciles;
                "run {}: {} reconciles{}",
                if failure.is_none() { "succeeded" } else { "failed" },
                work.reconciles,
                failure.as_deref().map(|f| format!(": {f}")).unwrap_or_default()
            );
            let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
            status.last_run = Some(
                serde_json::json!({
                    "mode": "continuous",
                    "time": crate::store::now_rfc3339(),
                    "success": failure.is_none(),
                    "message": failure.clone().unwrap_or_default(),
                    "reconciles": work.reconciles,
                    "elapsedMicros": took.as_micros() as u64,
                })
                .to_string(),
            );
            drop(status);
            work.events.clear();
            work.reconciles = 0;
            work.reset_counts();
        }
        let quiet = work.is_quiescent();
        self.work = Some(work);
        // A burst that outlasts a slice is a run's worth of work: freed pages wait, as in
        // `run once`; the small bursts of single edits do not pay for switching.
        if quiet {
            self.burst_memory = None;
        } else if steps == SLICE && self.burst_memory.is_none() {
            self.burst_memory = Some(crate::memory::Running::start());
        }
        if quiet && self.sdc_pending() {
            // Once the reconcilers settled: the device configs they left.
            #[cfg(feature = "sdc")]
            self.sdc_pass(false, &mut |_| {});
        }
    }
}

/// The input files (relative to the project) a batch changed, when that is all it changed:
/// then only those need reading. `None` when anything else is among the changes (CRDs,
/// reconcilers, libraries, an `.ignore` file, a directory itself): a full load decides.
/// Paths below the input directory's top level are no project content and are skipped.
fn input_files(layout: &Layout, paths: &[PathBuf]) -> Option<Vec<PathBuf>> {
    let mut files = Vec::new();
    for p in paths {
        let rel = p.strip_prefix(&layout.root).ok()?;
        let Ok(inside) = rel.strip_prefix(&layout.input) else { return None };
        let mut parts = inside.components();
        match (parts.next(), parts.next()) {
            (Some(name), None) if name.as_os_str() != ".ignore" => files.push(rel.to_path_buf()),
            (Some(_), Some(_)) => {}
            // The input directory itself appeared, went or moved.
            _ => return None,
        }
    }
    Some(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_top_level_input_files_make_a_partial_load() {
        let layout = Layout::new("/p");
        let abs = |names: &[&str]| names.iter().map(|n| PathBuf::from("/p").join(n)).collect::<Vec<_>>();
        assert_eq!(
            input_files(&layout, &abs(&["in/a.yaml", "in/sub/b.yaml", "in/c.txt"])),
            Some(vec![PathBuf::from("in/a.yaml"), PathBuf::from("in/c.txt")])
        );
        for full in [
            &["in/a.yaml", "crds/x.yaml"][..],
            &["in"],
            &["in/.ignore"],
            &["reconcilers/r/config.yaml"],
            &["libs/l.star"],
        ] {
            assert_eq!(input_files(&layout, &abs(full)), None, "{full:?}");
        }
    }
}

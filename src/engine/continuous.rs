//! Continuous mode and the file watch loop.
//!
//! In static mode the engine watches the project (`watch`); every batch of changed files
//! reloads the project (a half-written or invalid file fails the load, names the file, keeps the
//! last good state and is retried on the next event). While the continuous runner runs
//! (`run start`), every change the store commits — a reload, an `apply`, a `delete` — is
//! dispatched to the reconcilers and worked off between requests, a bounded slice at a time so
//! the engine keeps answering.

use std::time::Instant;

use crossbeam_channel::Sender;

use super::runner::{self, RunOptions, Step, Work};
use super::{Engine, Mode};
use crate::protocol::{ErrorKind, ErrorReport, Reply};
use crate::watch::{self, WatchConfig, WatchEvent, WatchHandle};

/// Reconciles done between two looks at the engine's channels.
const SLICE: usize = 256;

impl Engine {
    pub(super) fn watch_config(&self) -> Option<WatchConfig> {
        let Mode::Static { layout } = &self.mode else { return None };
        Some(WatchConfig {
            root: layout.root.clone(),
            dirs: vec![layout.apis.clone(), layout.input.clone(), "reconcilers".into(), "libs".into(), layout.refs.clone()],
            window: std::time::Duration::from_millis(20),
            max_window: std::time::Duration::from_millis(50),
            quiet: std::time::Duration::from_millis(2),
        })
    }

    pub(super) fn start_watcher(&self, tx: Sender<WatchEvent>) -> Option<WatchHandle> {
        let cfg = self.watch_config()?;
        match watch::spawn(cfg, tx) {
            Ok(h) => Some(h),
            Err(e) => {
                log::error!("{e}; changes to the project are picked up by `choreo run load` only");
                None
            }
        }
    }

    pub(super) fn on_files(&mut self, ev: WatchEvent, watcher: Option<&mut WatchHandle>) {
        match &ev {
            WatchEvent::Changed(paths) => log::debug!("{} changed paths, first {}", paths.len(), paths[0].display()),
            WatchEvent::Rescan(why) => log::info!("rescanning the project: {why}"),
        }
        if let (Some(w), Some(cfg)) = (watcher, self.watch_config()) {
            // A watched directory may have just appeared.
            w.refresh(&cfg);
        }
        let _ = self.reload();
    }

    pub(super) fn run_start(&mut self) -> Result<Reply, ErrorReport> {
        self.layout()?;
        match self.status().runner.as_str() {
            "Running" => return Ok(Reply::Done),
            "Stopped" => {}
            other => return Err(ErrorReport::new(ErrorKind::Unavailable, format!("runner is already running, status {other}"))),
        }
        self.reload()?;
        let seeds = self.store.with(|s| runner::seed_all(&self.controllers, s, None));
        // Everything is reconciled from the current state; older events are covered by that.
        let _ = self.events.try_iter().count();
        self.work = Some(Work::new(&self.controllers, seeds));
        self.set_runner("Running");
        Ok(Reply::Done)
    }

    pub(super) fn run_stop(&mut self) -> Result<Reply, ErrorReport> {
        if self.work.take().is_some() {
            // Whatever was still queued is reconciled by the next run, which starts over.
            self.fingerprints.clear();
        }
        self.set_runner("Stopped");
        Ok(Reply::Done)
    }

    /// Works off a slice of the continuous runner's queue.
    pub(super) fn drive(&mut self) {
        let Some(mut work) = self.work.take() else { return };
        let current: Vec<(String, u128)> = self.controllers.iter().map(|c| (c.cfg.name.clone(), c.fingerprint)).collect();
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
                let _ = self.events.try_iter().count();
                work = Work::new(&self.controllers, seeds);
            }
        }
        work.absorb(&self.store, &self.controllers, &self.events);
        let opts = RunOptions::default();
        let started = Instant::now();
        let mut failure = None;
        for _ in 0..SLICE {
            let step = work.step(&self.store, &self.controllers, opts);
            work.absorb(&self.store, &self.controllers, &self.events);
            match step {
                Step::Ran => {}
                Step::Idle => break,
                Step::Failed { task, message } => {
                    log::warn!("reconcile failed: {task}: {message}");
                    failure = Some(format!("{task}: {message}"));
                }
            }
        }
        if work.reconciles > 0 && (failure.is_some() || work.is_quiescent()) {
            if let Err(e) = self.store.sync() {
                log::error!("cannot flush the store: {e}");
            }
            let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
            status.last_run = Some(
                serde_json::json!({
                    "mode": "continuous",
                    "time": crate::store::now_rfc3339(),
                    "success": failure.is_none(),
                    "message": failure.clone().unwrap_or_default(),
                    "reconciles": work.reconciles,
                    "elapsedMicros": started.elapsed().as_micros() as u64,
                })
                .to_string(),
            );
            drop(status);
            work.events.clear();
            work.reconciles = 0;
            work.reset_counts();
        }
        self.work = Some(work);
    }
}

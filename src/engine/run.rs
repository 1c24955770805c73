//! Runs and what they leave: `run once`, snapshots, `run result|list|diff|deps`.
//!
//! A run reconciles every for-object, as upstream does. With `--changed` it reconciles only
//! what changed since the previous run: the objects touched by the store events gathered in
//! between (loads, applies, deletes) through the reconcilers' handlers, plus every for-object of
//! a reconciler whose configuration or code changed (so the first run after a start reconciles
//! everything). A failed run forgets that history, so the next one starts over.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use crossbeam_channel::Sender;

/// Reconciles of a `run once` between two looks at the engine's channels.
const SLICE: usize = 256;

/// A `run once` in progress and the request waiting for its end.
pub(super) struct OnceJob {
    pub run: OnceRun,
    reply: Sender<ServerMessage>,
    /// When the next slice is due (`None`: now).
    pub wake: Option<std::time::Instant>,
    /// Freed memory waits a moment before it is returned while the run goes on.
    _memory: crate::memory::Running,
}
use serde_json::Value;

use super::query::without_managed_fields;
use super::runner::{self, OnceRun, RunOptions, RunReport, Slice};
use super::{internal, Engine};
use crate::api::object::{self, ObjectKey};
use crate::protocol::{
    DepNode, DiffItem, DiffSymbol, ErrorKind, ErrorReport, Reply, RunDepsRequest, RunDiffRequest, RunOnceRequest,
    RunSummary, Runner, ServerMessage, SnapshotInfo,
};
use crate::store::{Reader, State};

impl Engine {
    /// Starts `run once`: loads, seeds the work and leaves it to [`Engine::drive_once`]; the
    /// reply goes to `reply` when the run ends.
    pub(super) fn start_once(&mut self, req: RunOnceRequest, reply: Sender<ServerMessage>) -> Result<(), ErrorReport> {
        let progress = |line: &str| {
            let _ = reply.send(ServerMessage::Progress(line.to_string()));
        };
        let runner_state = self.runner();
        if runner_state != Runner::Stopped {
            return Err(ErrorReport::new(
                ErrorKind::Unavailable,
                format!("runner is already running, status {runner_state}"),
            )
            .with_hint("`choreo run stop` stops the continuous runner"));
        }
        let layout = self.layout()?.clone();
        progress("loading ...");
        self.reload()?;
        progress("loading done");
        progress("running reconcilers ...");
        let root = layout.root.file_name().and_then(|n| n.to_str()).unwrap_or("root").to_string();
        progress(&format!("running root reconciler {root}"));

        // Every object, as upstream does (its informers replay the whole list), unless only
        // what changed is asked for: then the reconcilers whose code changed see everything.
        let changed: HashSet<usize> = self
            .controllers
            .iter()
            .enumerate()
            .filter(|(_, c)| !req.changed_only || self.fingerprints.get(&c.cfg.name) != Some(&c.fingerprint))
            .map(|(i, _)| i)
            .collect();
        let seeds = {
            let events = self.changes.drain();
            self.store.with(|s| {
                let mut seeds = runner::seed_all(&self.controllers, s, Some(&changed));
                seeds.extend(runner::dispatch(&self.controllers, s, &events));
                seeds
            })
        };
        // Any number of seconds is accepted: a timeout beyond the clock's range is no deadline.
        let opts =
            RunOptions { timeout: std::time::Duration::from_secs(req.timeout_secs.max(1)), ..RunOptions::default() };
        self.once = Some(OnceJob {
            run: OnceRun::new(&self.controllers, seeds, opts),
            reply,
            wake: None,
            _memory: crate::memory::Running::start(),
        });
        // Its snapshot keeps the run's bodies: stored while they are written, beside the engine.
        self.store.snapshot_coming();
        self.publish_runner();
        Ok(())
    }

    /// Works off a slice of the `run once` in progress; answers its request when it ends.
    pub(super) fn drive_once(&mut self) {
        let Some(mut job) = self.once.take() else { return };
        if job.wake.is_some_and(|at| at > std::time::Instant::now()) {
            self.once = Some(job);
            return;
        }
        let reply = job.reply.clone();
        let mut progress = |line: &str| {
            let _ = reply.send(ServerMessage::Progress(line.to_string()));
        };
        match job.run.slice(&self.store, &self.controllers, &self.changes, &self.interrupt, SLICE, &mut progress) {
            Slice::More => {
                job.wake = None;
                self.once = Some(job);
            }
            Slice::WaitUntil(at) => {
                job.wake = Some(at);
                self.once = Some(job);
            }
            Slice::Done(report) => {
                // What the run freed goes back before the summary and the snapshot are built,
                // whose allocations would otherwise come on top of it (the peak RSS of a 10k
                // run).
                let OnceJob { reply, _memory, .. } = job;
                drop(_memory);
                self.finish_once(reply, report)
            }
        }
    }

    /// Ends the `run once` in progress now, answering it with `why`.
    pub(super) fn abort_once(&mut self, why: &str) {
        if let Some(mut job) = self.once.take() {
            let report = job.run.abort(why.to_string());
            self.finish_once(job.reply, report);
        }
    }

    fn finish_once(&mut self, reply: Sender<ServerMessage>, mut report: RunReport) {
        self.fingerprints = if report.success {
            self.controllers.iter().map(|c| (c.cfg.name.clone(), c.fingerprint)).collect()
        } else {
            HashMap::new()
        };
        // `-s`: the device configs the reconcilers left, merged and validated.
        #[allow(unused_mut)]
        let mut sdc = None;
        #[cfg(feature = "sdc")]
        if report.success {
            let mut progress = |line: &str| {
                let _ = reply.send(ServerMessage::Progress(line.to_string()));
            };
            sdc = self.sdc_pass(true, &mut progress);
        }
        let invalid = sdc.as_ref().is_some_and(|s: &crate::protocol::SdcSummary| !s.errors.is_empty());
        if invalid {
            let s =
                sdc.as_ref().map(|s| (s.errors.len(), s.nodes - s.valid, s.errors.join("\n  "))).unwrap_or_default();
            report.success = false;
            report.task = "config validator".into();
            report.message = format!("{} error(s) in the device configs of {} node(s):\n  {}", s.0, s.1, s.2);
        }
        // An invalid device config leaves no snapshot, as upstream: `run diff` keeps showing
        // the last good run.
        let result = self.finish_run(report, sdc, !invalid);
        if let Err(e) = self.store.snapshot_done() {
            log::error!("cannot remove the bodies kept for a snapshot: {e}");
        }
        crate::memory::release();
        self.publish_runner();
        let message = match result {
            Ok(summary) => ServerMessage::Reply(Reply::Run(summary)),
            Err(report) => ServerMessage::Error(report),
        };
        let _ = reply.send(message);
    }

    /// Makes the run durable, stores its snapshot and records it as the last run.
    fn finish_run(
        &mut self,
        report: RunReport,
        sdc: Option<crate::protocol::SdcSummary>,
        snapshot: bool,
    ) -> Result<RunSummary, ErrorReport> {
        self.store.sync().map_err(internal)?;
        let id = uuid::Uuid::new_v4().to_string();
        let mut summary = RunSummary {
            snapshot: id.clone(),
            success: report.success,
            task: report.task,
            message: report.message,
            elapsed_micros: report.elapsed.as_micros() as u64,
            events: report.events,
            sdc,
        };
        let time = crate::store::now_rfc3339();
        if !snapshot {
            summary.snapshot.clear();
        } else if let Err(e) = self.store.save_snapshot(&id, &time, summary.success, &summary) {
            log::error!("cannot save the snapshot of run {id}: {e}");
            summary.snapshot.clear();
        }
        let reconciles = summary.events.iter().filter(|e| e.operation == "START").count();
        crate::metrics::global().run("once", summary.success, std::time::Duration::from_micros(summary.elapsed_micros));
        log::info!(
            run = summary.snapshot.as_str(), mode = "once", success = summary.success, reconciles = reconciles,
            elapsed_ms = summary.elapsed_micros / 1000;
            "run {}: {} reconciles in {} ms{}",
            if summary.success { "succeeded" } else { "failed" },
            reconciles,
            summary.elapsed_micros / 1000,
            if summary.success { String::new() } else { format!(": {} {}", summary.task, summary.message.lines().next().unwrap_or_default()) }
        );
        let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
        status.last_run = Some(
            serde_json::json!({
                "snapshot": summary.snapshot, "time": time, "success": summary.success,
                "task": summary.task, "message": summary.message,
                "elapsedMicros": summary.elapsed_micros, "reconciles": summary.events.iter().filter(|e| e.operation == "START").count(),
            })
            .to_string(),
        );
        Ok(summary)
    }
}

/// `run result`: the summary of the last run (answered without the engine thread).
pub(super) fn run_result(reader: &Reader) -> Result<Reply, ErrorReport> {
    let latest = reader.snapshots().map_err(internal)?;
    let meta = latest.first().ok_or_else(no_snapshot)?;
    let text = reader.snapshot_summary(meta).map_err(internal)?;
    let summary: RunSummary = serde_json::from_str(&text)
        .map_err(|e| internal(format!("snapshot {} has an unreadable summary: {e}", meta.id)))?;
    Ok(Reply::Run(summary))
}

/// `run result` with the latest pass of `-s`: continuous mode validates without leaving
/// snapshots, so its outcome is shown with the last run's (or alone, before any).
pub(super) fn with_latest_sdc(
    result: Result<Reply, ErrorReport>,
    latest: Option<crate::protocol::SdcSummary>,
) -> Result<Reply, ErrorReport> {
    let Some(now) = latest else { return result };
    match result {
        Ok(Reply::Run(mut summary)) => {
            if summary.sdc.as_ref().is_none_or(|s| s.time <= now.time) {
                summary.sdc = Some(now);
            }
            Ok(Reply::Run(summary))
        }
        Err(e) if e.kind == ErrorKind::NotFound => {
            let failed = !now.errors.is_empty();
            Ok(Reply::Run(RunSummary {
                snapshot: String::new(),
                success: !failed,
                task: if failed { "config validator".into() } else { String::new() },
                message: if failed {
                    format!("{} error(s) in the device configs:\n  {}", now.errors.len(), now.errors.join("\n  "))
                } else {
                    String::new()
                },
                elapsed_micros: now.elapsed_micros,
                events: Vec::new(),
                sdc: Some(now),
            }))
        }
        other => other,
    }
}

/// `run list`: the stored snapshots, newest first.
pub(super) fn run_list(reader: &Reader) -> Result<Reply, ErrorReport> {
    let list = reader.snapshots().map_err(internal)?;
    Ok(Reply::Snapshots(
        list.into_iter().map(|m| SnapshotInfo { success: m.success, id: m.id, time: m.time }).collect(),
    ))
}

/// `run diff`: what the last run changed against the run before it.
pub(super) fn run_diff(reader: &Reader, req: RunDiffRequest) -> Result<Reply, ErrorReport> {
    let snaps = reader.latest_snapshots(2).map_err(internal)?;
    let latest = snaps.first().ok_or_else(no_snapshot)?;
    let empty = BTreeMap::new();
    let previous = snaps.get(1).map(|s| &s.objects).unwrap_or(&empty);
    // Which kinds are choreo's own, decided under one read lock rather than one per object.
    let hidden: std::collections::HashSet<crate::api::object::GroupKind> = if req.show_choreo_apis {
        Default::default()
    } else {
        reader.with(|s| {
            latest
                .objects
                .keys()
                .chain(previous.keys())
                .filter(|k| is_choreo_api(s, k))
                .map(|k| k.group_kind())
                .collect()
        })
    };
    let shown = |key: &ObjectKey| !hidden.contains(&key.group_kind());
    let render = |v: &Value| {
        let v = if req.show_managed_fields { v.clone() } else { without_managed_fields(v) };
        crate::api::object::to_yaml(&v).unwrap_or_default()
    };
    let mut items = Vec::new();
    let mut push = |symbol: DiffSymbol, obj: &Value, key: &ObjectKey, details: Option<String>| {
        items.push(diff_item(symbol, obj, key, details))
    };
    let unified = |a: &str, b: &str| {
        similar::TextDiff::from_lines(a, b).unified_diff().context_radius(3).header("previous", "latest").to_string()
    };
    for (key, new) in &latest.objects {
        if !shown(key) {
            continue;
        }
        match previous.get(key) {
            Some(old) if object::uid(old) != object::uid(new) => {
                push(DiffSymbol::Deleted, old, key, None);
                push(DiffSymbol::Added, new, key, req.details.then(|| unified("", &render(new))));
            }
            Some(old) => {
                let (a, b) = (render(old), render(new));
                if a == b {
                    push(DiffSymbol::Equal, new, key, None);
                } else {
                    push(DiffSymbol::Modified, new, key, req.details.then(|| unified(&a, &b)));
                }
            }
            None => push(DiffSymbol::Added, new, key, req.details.then(|| unified("", &render(new)))),
        }
    }
    for (key, old) in previous {
        if shown(key) && !latest.objects.contains_key(key) {
            push(DiffSymbol::Deleted, old, key, req.details.then(|| unified(&render(old), "")));
        }
    }
    items.sort_by(|a, b| {
        (&a.api_version, &a.kind, &a.namespace, &a.name, &a.symbol).cmp(&(
            &b.api_version,
            &b.kind,
            &b.namespace,
            &b.name,
            &b.symbol,
        ))
    });
    Ok(Reply::Diff(items))
}

/// One line of a diff (`run diff`, `run diff -c`, `plan`): `obj`'s version, `key`'s identity.
pub(super) fn diff_item(symbol: DiffSymbol, obj: &Value, key: &ObjectKey, details: Option<String>) -> DiffItem {
    DiffItem {
        symbol,
        api_version: obj.get("apiVersion").and_then(Value::as_str).unwrap_or_default().to_string(),
        kind: key.kind.clone(),
        namespace: key.namespace.clone(),
        name: key.name.clone(),
        details,
    }
}

/// `run deps`: the ownership forest of the current objects.
pub(super) fn run_deps(reader: &Reader, req: RunDepsRequest) -> Result<Reply, ErrorReport> {
    Ok(Reply::Deps(reader.with(|s| deps(s, req.show_choreo_apis, |k| is_choreo_api(s, k)))))
}

/// Choreo's own APIs (CRDs, reconcilers, libraries, upstream refs) are hidden from diffs and
/// dependency trees unless asked for.
fn is_choreo_api(state: &State, key: &ObjectKey) -> bool {
    state.registry.get(&key.group_kind()).is_none_or(|r| r.builtin)
}

fn no_snapshot() -> ErrorReport {
    ErrorReport::new(ErrorKind::NotFound, "latest snapshot not available")
        .with_hint("`choreo run once` runs the reconcilers and leaves one")
}

/// The ownership forest: roots are objects without owner references, children follow their
/// owners (by uid), siblings sorted case-insensitively by `Kind.apiVersion name`. Objects whose
/// owner does not exist are not shown; an object with several owners appears under each.
fn deps(state: &State, show_choreo_apis: bool, is_choreo: impl Fn(&ObjectKey) -> bool) -> Vec<DepNode> {
    let label = |o: &Value, k: &ObjectKey| {
        format!("{}.{} {}", k.kind, o.get("apiVersion").and_then(Value::as_str).unwrap_or(""), k.name).to_lowercase()
    };
    let parsed: Vec<(&ObjectKey, Arc<Value>)> = state.objects.iter().map(|(k, o)| (k, o.value())).collect();
    let mut roots: Vec<(&ObjectKey, &Value)> = Vec::new();
    let mut children: HashMap<String, Vec<(&ObjectKey, &Value)>> = HashMap::new();
    for (k, o) in &parsed {
        let (k, o): (&ObjectKey, &Value) = (k, o);
        if !show_choreo_apis && is_choreo(k) {
            continue;
        }
        let owners = object::owner_references(o);
        if owners.is_empty() {
            roots.push((k, o));
        }
        for r in owners {
            children.entry(r.uid).or_default().push((k, o));
        }
    }
    let sort = |v: &mut Vec<(&ObjectKey, &Value)>| v.sort_by_key(|(k, o)| label(o, k));
    sort(&mut roots);
    for list in children.values_mut() {
        sort(list);
    }
    let mut out = Vec::new();
    let mut stack: Vec<(usize, &ObjectKey, &Value)> = roots.iter().rev().map(|(k, o)| (0, *k, *o)).collect();
    let mut visited = 0usize;
    while let Some((depth, k, o)) = stack.pop() {
        visited += 1;
        if visited > state.objects.len() * 4 + 16 {
            break; // an ownership cycle: stop rather than loop
        }
        out.push(DepNode {
            depth,
            api_version: o.get("apiVersion").and_then(Value::as_str).unwrap_or_default().to_string(),
            kind: k.kind.clone(),
            namespace: k.namespace.clone(),
            name: k.name.clone(),
        });
        if let Some(uid) = object::uid(o) {
            if let Some(kids) = children.get(uid) {
                for (ck, co) in kids.iter().rev() {
                    stack.push((depth + 1, ck, co));
                }
            }
        }
    }
    out
}

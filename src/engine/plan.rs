//! `plan` (`run once --dry-run`): what a run over the current files would change, computed by
//! the real load and run on a copy of the store, compared with the store, then thrown away.
//!
//! The copy holds the objects and the identifier allocations (not the snapshots); a second
//! engine opens it exactly as the server opens its own store — the same load, reconcilers, `-r`
//! allocations and `-s` pass — so a plan followed by the real run shows the same changes. The
//! copy, with whatever it allocated, is deleted at the end; the store and the files are never
//! written. The copy is made on the engine thread; its load and run happen on a `choreo-plan`
//! worker, so the engine keeps serving meanwhile.
//!
//! `plan --ref REF` previews another commit: its files are written into the plan's own
//! directory (HEAD, index and work tree untouched) and loaded instead of the project's. In
//! dynamic mode the clone is fetched first, and REF resolves as `server apply` resolves it, so
//! the plan answers "what would `server apply URL DIR REF` change" — the rollback question.
//!
//! Invariant: never writes the served store or the project's files, nor moves the checkout.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::Value;

use crossbeam_channel::Sender;

use super::git::{outside_clone, repo_error, AfterFetch};
use super::{internal, Engine, Mode};
use crate::api::object::{self, ObjectKey};
use crate::protocol::{
    DiffSymbol, ErrorKind, ErrorReport, Plan, PlanRequest, Reply, RunOnceRequest, ServerMessage, ServerState,
};
use crate::reconcile::Interrupt;

/// An object as a plan compares it: without what every write changes.
fn comparable(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        for k in ["resourceVersion", "generation", "managedFields", "uid", "creationTimestamp"] {
            m.remove(k);
        }
    }
    v
}

impl Engine {
    /// Starts a plan: what needs the served store (the ref's files, the objects `delete
    /// --dry-run` names, the copy of the store) is done here; the copy's load and run, the
    /// comparison and the answer to `reply` happen on a `choreo-plan` worker, so the engine keeps
    /// serving (a production runner keeps reconciling) while a large plan runs. `None`: the
    /// worker answers.
    pub(super) fn plan(
        &mut self,
        req: PlanRequest,
        reply: Sender<ServerMessage>,
    ) -> Option<Result<Reply, ErrorReport>> {
        let dir = self.state_dir.join(format!("{PLAN_DIR_PREFIX}{}", uuid::Uuid::new_v4()));
        let job = match self.prepare_plan(&dir, req, reply.clone()) {
            Ok(job) => job,
            Err(e) => {
                remove_plan_dir(&dir);
                return Some(Err(e));
            }
        };
        let worker_dir = dir.clone();
        let spawned = std::thread::Builder::new().name("choreo-plan".into()).spawn(move || {
            let answer = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.run()))
                .unwrap_or_else(|_| Err(internal("the plan failed unexpectedly (see the server log)")));
            remove_plan_dir(&worker_dir);
            let _ = reply.send(super::final_message(answer));
        });
        match spawned {
            Ok(_) => None,
            Err(e) => {
                remove_plan_dir(&dir);
                Some(Err(internal(format!("cannot start a thread for the plan: {e}"))))
            }
        }
    }

    fn prepare_plan(
        &mut self,
        dir: &std::path::Path,
        req: PlanRequest,
        reply: Sender<ServerMessage>,
    ) -> Result<PlanJob, ErrorReport> {
        let current = self.layout()?.clone();
        let layout = match &req.reference {
            None => current,
            Some(reference) => self.layout_at(reference, &current, &dir.join("tree"))?,
        };
        // What `delete --dry-run` names, found in the served store.
        let deleted: Vec<ObjectKey> = req.delete.iter().map(|t| self.delete_key(t)).collect::<Result<_, _>>()?;
        self.store.sync().map_err(internal)?;
        self.store.copy_to(&dir.join("db")).map_err(internal)?;
        Ok(PlanJob {
            dir: dir.to_path_buf(),
            layout,
            deleted,
            req,
            options: self.options.clone(),
            served: self.store.reader(),
            progress: reply,
        })
    }

    /// `plan --ref` on a dynamic server: fetches the served clone first, as `server apply`
    /// does, then plans (in [`Engine::finish_plan_fetch`]). `None`: the answer goes later.
    pub(super) fn start_plan_fetch(
        &mut self,
        req: PlanRequest,
        reply: Sender<ServerMessage>,
    ) -> Option<Result<Reply, ErrorReport>> {
        let Some(served) = &self.dynamic else {
            return Some(Err(ErrorReport::new(
                ErrorKind::Unavailable,
                "no context is served yet: there is nothing to compare a ref with",
            )
            .with_hint("apply one first: `choreo server apply URL DIR REF [BRANCH]`")));
        };
        let (url, clone) = (served.request.url.clone(), served.clone.clone());
        match self.spawn_fetch(url, clone, AfterFetch::Plan(req), Some(reply)) {
            Ok(()) => None,
            Err(e) => Some(Err(e)),
        }
    }

    /// The plan of a `plan --ref` whose fetch is done; answers its request. A failed fetch is
    /// a warning (the clone is used as it is), as for `server apply`.
    pub(super) fn finish_plan_fetch(
        &mut self,
        req: PlanRequest,
        fetched: Result<(crate::repo::Repo, Option<String>), crate::repo::RepoError>,
        reply: Option<Sender<ServerMessage>>,
    ) {
        let answer = match fetched {
            Err(e) => Err(repo_error(e)),
            Ok((_, warning)) => {
                self.progress = reply.clone();
                if let Some(w) = warning {
                    super::progress_sink(reply.clone())(format!("warning: {w}"));
                }
                let answer = match &reply {
                    Some(r) => self.plan(req, r.clone()),
                    None => Some(Err(internal("a plan without a client"))),
                };
                self.progress = None;
                match answer {
                    // The plan's worker answers.
                    None => return,
                    Some(a) => a,
                }
            }
        };
        if let Some(r) = reply {
            let _ = r.send(super::final_message(answer));
        }
    }

    /// The project as it is at `reference`, written under `tree`: resolved as `server apply`
    /// resolves it in dynamic mode, as git resolves revisions in the user's own repository.
    fn layout_at(
        &mut self,
        reference: &str,
        current: &crate::project::Layout,
        tree: &std::path::Path,
    ) -> Result<crate::project::Layout, ErrorReport> {
        let repo = self.repo()?;
        let oid = match &self.dynamic {
            Some(_) => repo.resolve(reference),
            None => repo.resolve_rev(reference),
        }
        .map_err(repo_error)?;
        // Dynamic mode: DIR as `server apply` takes it, read in REF's tree (a link there may
        // lead elsewhere than in the checkout); static mode: the project's place in its repo.
        let within = match &self.dynamic {
            Some(d) if d.request.directory != "." => std::path::PathBuf::from(&d.request.directory),
            Some(_) => std::path::PathBuf::new(),
            None => self.project_in_repo(&repo)?,
        };
        let shown = if within.as_os_str().is_empty() { ".".into() } else { within.display().to_string() };
        super::progress_sink(self.progress.clone())(format!("planning {shown} at {reference} ({oid})"));
        repo.export_tree(oid, tree).map_err(repo_error)?;
        let root = tree.join(&within);
        if let Some(real) = outside_clone(tree, &root) {
            return Err(ErrorReport::new(
                ErrorKind::Invalid,
                format!("{shown} leads to {}, outside the repository at {reference}", real.display()),
            ));
        }
        if !root.is_dir() {
            return Err(ErrorReport::new(
                ErrorKind::NotFound,
                format!("the repository has no directory {shown} at {reference}"),
            ));
        }
        let mut layout = current.with_root(root);
        // Upstream packages come from the served project's cache; a package REF pins at a
        // commit not cached yet is fetched into it by the plan's load (on the plan's worker).
        layout.upstream_cache = Some(current.upstream_dir());
        if current.contain.is_some() {
            layout.contain = Some(tree.to_path_buf());
        }
        Ok(layout)
    }
}

/// A plan prepared on the engine thread, run on its own.
struct PlanJob {
    dir: std::path::PathBuf,
    layout: crate::project::Layout,
    /// What `delete --dry-run` deletes.
    deleted: Vec<ObjectKey>,
    req: PlanRequest,
    options: super::Options,
    /// The served store, compared with the copy at the end.
    served: crate::store::Reader,
    /// The request's client: progress lines.
    progress: Sender<ServerMessage>,
}

impl PlanJob {
    /// Loads and runs the copy, and compares it with the served store as it is then.
    fn run(self) -> Result<Reply, ErrorReport> {
        let PlanJob { dir, layout, deleted, req, options, served: before, progress } = self;
        let dir = dir.as_path();
        let (stop_tx, _stop_rx) = crossbeam_channel::bounded(1);
        let (own_tx, _own_rx) = crossbeam_channel::unbounded();
        // The copy is loaded from the current files as the server loads its own store.
        let (mut copy, _watch_rx, watcher) =
            Engine::open(Mode::Static { layout }, dir, stop_tx, Arc::new(Interrupt::default()), own_tx, options)
                .map_err(internal)?;
        drop(watcher);
        let status = copy.status.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if status.status != ServerState::Ready {
            return Err(ErrorReport::new(ErrorKind::Invalid, format!("the project does not load: {}", status.reason)));
        }
        if !req.apply.is_empty() {
            // The edit, as `apply` makes it in the store (the copy has no files to write).
            let mut txn = copy.store.begin();
            let opts = crate::store::ApplyOptions { manager: object::INPUT_FIELD_MANAGER, force: req.force };
            for doc in &req.apply {
                let v: Value = serde_json::from_str(&doc.json).map_err(|e| {
                    ErrorReport::new(ErrorKind::Invalid, format!("{}: not a valid object: {e}", doc.source))
                })?;
                txn.apply(&super::load::input_object(&v), opts)
                    .map_err(|e| ErrorReport::new(ErrorKind::Invalid, format!("{}: {e}", doc.source)))?;
            }
            txn.commit().map_err(internal)?;
        }
        if !deleted.is_empty() {
            let mut txn = copy.store.begin();
            for key in &deleted {
                txn.delete(key).map_err(|e| ErrorReport::new(ErrorKind::Invalid, format!("{key}: {e}")))?;
            }
            txn.commit().map_err(internal)?;
        }
        let (tx, rx) = crossbeam_channel::unbounded();
        copy.start_once(RunOnceRequest { timeout_secs: req.timeout_secs, changed_only: false }, tx)?;
        let mut answer = None;
        let mut take = |rx: &crossbeam_channel::Receiver<ServerMessage>| {
            for m in rx.try_iter() {
                match m {
                    // The run's progress (counts and rate) goes to the client as a run's does.
                    ServerMessage::Progress(line) => {
                        let _ = progress.send(ServerMessage::Progress(line));
                    }
                    ServerMessage::Reply(Reply::Run(s)) => answer = Some(Ok(s)),
                    ServerMessage::Error(e) => answer = Some(Err(e)),
                    _ => {}
                }
            }
        };
        while let Some(job) = &copy.once {
            if let Some(at) = job.wake {
                std::thread::sleep(at.saturating_duration_since(std::time::Instant::now()));
            }
            copy.drive_once();
            take(&rx);
        }
        take(&rx);
        let run = answer.ok_or_else(|| internal("the plan's run ended without an answer"))??;
        let after = copy.store.reader();
        let keys: BTreeSet<ObjectKey> = before
            .with(|s| s.objects.keys().cloned().collect::<Vec<_>>())
            .into_iter()
            .chain(after.with(|s| s.objects.keys().cloned().collect::<Vec<_>>()))
            .collect();
        let render = |v: &Value| object::to_yaml(v).unwrap_or_default();
        let unified = |a: &str, b: &str| {
            similar::TextDiff::from_lines(a, b)
                .unified_diff()
                .context_radius(3)
                .header("current", "planned")
                .to_string()
        };
        let mut changes = Vec::new();
        for key in keys {
            let (old, new) =
                (before.with(|s| s.objects.get(&key).cloned()), after.with(|s| s.objects.get(&key).cloned()));
            // Most objects of a large project are untouched by the run: the same stored bytes.
            if let (Some(o), Some(n)) = (&old, &new) {
                if o.json() == n.json() {
                    continue;
                }
            }
            let (old, new) = (old.map(|o| comparable(&o.value())), new.map(|n| comparable(&n.value())));
            let (symbol, shown) = match (&old, &new) {
                (None, Some(n)) => (DiffSymbol::Added, n),
                (Some(o), None) => (DiffSymbol::Deleted, o),
                (Some(o), Some(n)) if o == n => continue,
                (Some(_), Some(n)) => (DiffSymbol::Modified, n),
                (None, None) => continue,
            };
            let details = req.details.then(|| {
                let text = |v: &Option<Value>| v.as_ref().map(render).unwrap_or_default();
                unified(&text(&old), &text(&new))
            });
            changes.push(super::run::diff_item(symbol, shown, &key, details));
        }
        Ok(Reply::Plan(Box::new(Plan { changes, run })))
    }
}

/// How the directories of plans (`<state>/plan-<uuid>`) begin.
const PLAN_DIR_PREFIX: &str = "plan-";

/// Removes a plan's directory (the copy of the store, the ref's files).
fn remove_plan_dir(dir: &std::path::Path) {
    if dir.exists() {
        if let Err(e) = std::fs::remove_dir_all(dir) {
            log::warn!("cannot remove the plan's copy of the store {}: {e}", dir.display());
        }
    }
}

/// Removes the directories of plans that did not end (the server stopped or crashed during
/// them); called as the engine opens, before any plan of its own.
pub(super) fn remove_stale(state_dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(state_dir) else { return };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(PLAN_DIR_PREFIX) && entry.path().is_dir() {
            remove_plan_dir(&entry.path());
        }
    }
}

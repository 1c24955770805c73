//! Git-backed requests: `server apply` (dynamic mode's context switches), `run commit`,
//! `run push` and the `branch` commands.
//!
//! A context switch prepares everything that can fail before it changes what is served: the
//! clone or fetch, the ref, a clean work tree. Then it stops the runner, checks out, and loads;
//! a load that fails puts the previous checkout back and reloads it, so a failed apply leaves
//! the previous context serving and says why. In production (no branch) the runner always runs
//! and nothing is committed or pushed; in development the runner runs on demand.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crossbeam_channel::Sender;

use super::{internal, progress_sink, Engine, Mode};
use crate::protocol::{
    BranchEntry, BranchRequest, ErrorKind, ErrorReport, LogEntry, Reply, ServerApplyRequest, ServerMessage,
    ServerState, StatusContext,
};
use crate::repo::{self, Repo, RepoError};

/// The context a dynamic server serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynamicContext {
    pub request: ServerApplyRequest,
    /// The clone's work tree.
    pub clone: PathBuf,
}

impl DynamicContext {
    pub fn production(&self) -> bool {
        self.request.branch.is_none()
    }
}

pub(super) fn repo_error(e: RepoError) -> ErrorReport {
    let kind = match &e {
        RepoError::UnknownRef { .. } => ErrorKind::NotFound,
        RepoError::NotARepo { .. } | RepoError::Dirty { .. } | RepoError::Refused(_) => ErrorKind::Invalid,
        RepoError::Git { .. } | RepoError::Io { .. } => ErrorKind::Internal,
    };
    ErrorReport::new(kind, e.to_string())
}

impl Engine {
    /// The repository of the served project: the user's (static mode) or the clone.
    pub(super) fn repo(&self) -> Result<Repo, ErrorReport> {
        let layout = self.layout()?;
        let repo = Repo::discover(&layout.root).map_err(|e| match e {
            RepoError::NotARepo { .. } => ErrorReport::new(
                ErrorKind::Invalid,
                format!(
                    "{} is not a git repository: branch, commit, push and plan --ref need one",
                    layout.root.display()
                ),
            )
            .with_hint("run `git init` in the project (or a directory above it)"),
            other => repo_error(other),
        })?;
        // Checkouts tell the client of the request how far they are.
        repo.report_to(Box::new(progress_sink(self.progress.clone())));
        Ok(repo)
    }

    pub(super) fn production(&self) -> bool {
        self.dynamic.as_ref().is_some_and(DynamicContext::production)
    }

    pub(super) fn refuse_in_production(&self, what: &str) -> Result<(), ErrorReport> {
        match &self.dynamic {
            Some(d) if d.production() => Err(ErrorReport::new(
                ErrorKind::Unavailable,
                format!(
                    "choreo in production does not allow {what}: the checkout is pinned to {}",
                    d.request.reference
                ),
            )
            .with_hint("apply a development branch: `choreo server apply URL DIR REF BRANCH`")),
            _ => Ok(()),
        }
    }

    /// The project directory relative to the repository root (empty at the root).
    pub(super) fn project_in_repo(&self, repo: &Repo) -> Result<PathBuf, ErrorReport> {
        let layout = self.layout()?;
        let root = std::fs::canonicalize(repo.root()).unwrap_or_else(|_| repo.root().to_path_buf());
        let project = std::fs::canonicalize(&layout.root).unwrap_or_else(|_| layout.root.clone());
        Ok(project.strip_prefix(&root).unwrap_or(Path::new("")).to_path_buf())
    }

    /// The project's directories relative to the repository root: what `run commit` stages.
    fn project_paths(&self, repo: &Repo) -> Result<Vec<PathBuf>, ErrorReport> {
        let layout = self.layout()?;
        let rel = self.project_in_repo(repo)?;
        Ok([&layout.input, &layout.apis, Path::new("reconcilers"), Path::new("libs"), &layout.refs]
            .into_iter()
            .map(|d| rel.join(d))
            .collect())
    }

    /// Updates the status context from the checkout (commit and branch move with commits and
    /// checkouts).
    pub(super) fn refresh_context(&self) {
        let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
        match &self.dynamic {
            Some(d) => {
                let repo = Repo::discover(&d.clone).ok();
                status.context = StatusContext {
                    path: None,
                    url: Some(d.request.url.clone()),
                    directory: Some(d.request.directory.clone()),
                    reference: Some(d.request.reference.clone()),
                    commit: repo.as_ref().and_then(Repo::head_commit).map(|o| o.to_string()),
                    branch: repo.as_ref().and_then(Repo::current_branch),
                };
                status.production = d.production();
            }
            None => {
                if let Some(layout) = &self.layout {
                    let repo = Repo::discover(&layout.root).ok();
                    status.context.commit = repo.as_ref().and_then(Repo::head_commit).map(|o| o.to_string());
                    status.context.branch = repo.as_ref().and_then(Repo::current_branch);
                }
            }
        }
    }

    /// `server apply`: checks the request, then clones or fetches on a worker thread
    /// (`choreo-fetch`), so the engine keeps answering; the rest happens in
    /// [`Engine::finish_fetch`] when the worker reports back. `None`: the answer goes to
    /// `reply` later.
    pub(super) fn server_apply(
        &mut self,
        req: ServerApplyRequest,
        reply: Sender<ServerMessage>,
    ) -> Option<Result<Reply, ErrorReport>> {
        match self.start_apply(req, None, Some(reply)) {
            Ok(None) => None,
            Ok(Some(done)) => Some(Ok(done)),
            Err(e) => Some(Err(e)),
        }
    }

    /// The checks of `server apply` and the start of its fetch; `pinned` (a restart serving
    /// the remembered production context) checks out the commit served before instead of
    /// resolving REF again, so a moving branch does not roll forward without an apply.
    fn start_apply(
        &mut self,
        req: ServerApplyRequest,
        pinned: Option<repo::Oid>,
        reply: Option<Sender<ServerMessage>>,
    ) -> Result<Option<Reply>, ErrorReport> {
        let Mode::Dynamic { work_dir, .. } = &self.mode else {
            return Err(ErrorReport::new(
                ErrorKind::Invalid,
                "this server serves a project directory (static mode); `server apply` needs a server started without one",
            )
            .with_hint("start it as `choreo server start` (dynamic mode)"));
        };
        let work_dir = work_dir.clone();
        if req.url.is_empty() || req.reference.is_empty() {
            return Err(ErrorReport::new(ErrorKind::Invalid, "server apply needs URL, DIR and REF"));
        }
        if is_relative_path(&req.url) {
            return Err(ErrorReport::new(
                ErrorKind::Invalid,
                format!("URL {:?} is a relative path: the server cannot know what it is relative to", req.url),
            )
            .with_hint("give an absolute path or a URL (`choreo server apply` makes existing local paths absolute)"));
        }
        if !repo::stays_inside(&req.directory) {
            return Err(ErrorReport::new(
                ErrorKind::Invalid,
                format!("DIR {:?} must be a directory inside the repository", req.directory),
            ));
        }
        // Production fetches first: applying the same moving REF again rolls forward to where
        // it points now (a restart alone does not).
        if req.branch.is_some() && self.dynamic.as_ref().is_some_and(|d| d.request == req) {
            return Ok(Some(Reply::Message("unchanged: the server already serves this context".into())));
        }
        let clone = work_dir.join("repos").join(repo::cache_name(&req.url));
        let url = req.url.clone();
        self.spawn_fetch(url, clone, AfterFetch::Apply { req, pinned }, reply)?;
        Ok(None)
    }

    /// Clones or fetches `url` into `clone` on a worker thread (`choreo-fetch`), so the engine
    /// keeps answering; [`Engine::finish_fetch`] goes on with `then` when the worker reports
    /// back. Until then, requests that change something wait.
    pub(super) fn spawn_fetch(
        &mut self,
        url: String,
        clone: PathBuf,
        then: AfterFetch,
        reply: Option<Sender<ServerMessage>>,
    ) -> Result<(), ErrorReport> {
        let started = std::time::Instant::now();
        let engine = self.own_tx.clone();
        let interrupt = self.interrupt.clone();
        let spawned = std::thread::Builder::new().name("choreo-fetch".into()).spawn(move || {
            let mut progress = |line: String| match &reply {
                Some(r) => {
                    let _ = r.send(ServerMessage::Progress(line));
                }
                None => log::info!("{}", line.trim_start_matches(crate::protocol::TRANSIENT)),
            };
            // Whatever happens, the engine hears back: it holds requests until it does.
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let progress = repo::Progress { report: &mut progress, cancel: interrupt.shutdown_flag() };
                Repo::clone_or_fetch(&url, &clone, progress)
            }))
            .unwrap_or_else(|_| {
                Err(RepoError::Refused(format!("fetching {url} failed unexpectedly (see the server log)")))
            });
            let done = Fetched { then, reply, result, started };
            // The engine is gone only when the server stops: then nothing waits for this.
            let _ = engine.send(super::Msg::Fetched(Box::new(done)));
        });
        spawned.map_err(|e| internal(format!("cannot start a thread for the fetch: {e}")))?;
        self.fetching = true;
        Ok(())
    }

    /// What was waiting for a clone or fetch: the rest of `server apply` or of `plan --ref`;
    /// answers its request.
    pub(super) fn finish_fetch(&mut self, fetched: Fetched) {
        self.fetching = false;
        let Fetched { then, reply, result, started } = fetched;
        crate::metrics::global().fetch(result.is_ok());
        let (req, pinned) = match then {
            AfterFetch::Apply { req, pinned } => (req, pinned),
            AfterFetch::Plan(req) => return self.finish_plan_fetch(req, result, reply),
        };
        let mut progress = progress_sink(reply.clone());
        // Loads stream their progress (upstream fetches) to the request's client too.
        self.progress = reply.clone();
        let answer = self.apply_fetched(req, pinned, result, started, &mut progress);
        self.progress = None;
        match reply {
            Some(r) => {
                let _ = r.send(super::final_message(answer));
            }
            None => match answer {
                Ok(Reply::Message(m)) => log::info!("{m}"),
                Ok(_) => {}
                Err(e) => log::warn!("cannot serve the last applied context: {e}"),
            },
        }
    }

    fn apply_fetched(
        &mut self,
        req: ServerApplyRequest,
        pinned: Option<repo::Oid>,
        result: Result<(Repo, Option<String>), RepoError>,
        started: std::time::Instant,
        progress: &mut dyn FnMut(String),
    ) -> Result<Reply, ErrorReport> {
        let Mode::Dynamic { work_dir, template } = &self.mode else {
            return Err(internal("a fetch finished on a static-mode server"));
        };
        let (work_dir, template) = (work_dir.clone(), template.clone());
        let clone = work_dir.join("repos").join(repo::cache_name(&req.url));
        let (repo, warning) = result.map_err(|e| self.apply_failed(e))?;
        repo.report_to(Box::new(progress_sink(self.progress.clone())));
        if let Some(w) = warning {
            progress(format!("warning: {w}"));
        }
        let fetched = started.elapsed();
        // Decide what to check out before anything moves, so an unknown ref changes nothing.
        // REF is checked even for an existing development branch (which is then checked out
        // as it is: REF only seeds a new branch).
        enum Plan {
            Detached(repo::Oid),
            Branch(String),
        }
        let target = match pinned {
            Some(oid) => oid,
            None => repo.resolve(&req.reference).map_err(|e| self.apply_failed(e))?,
        };
        if pinned.is_none() && self.dynamic.as_ref().is_some_and(|d| d.request == req) && repo.is_detached_at(target) {
            return Ok(Reply::Message(format!("unchanged: the server already serves this context ({target})")));
        }
        let plan = match &req.branch {
            None => Plan::Detached(target),
            Some(b) => {
                if repo.has_branch(b) {
                    progress(format!(
                        "branch {b} exists: it is checked out as it is ({} only seeds a new branch)",
                        req.reference
                    ));
                }
                Plan::Branch(b.clone())
            }
        };
        // A checkout that changes nothing needs no clean tree: a development clone with
        // uncommitted edits stays servable (after a restart, say).
        let unchanged = match &plan {
            Plan::Detached(oid) => repo.is_detached_at(*oid),
            Plan::Branch(b) => repo.is_current_development(b),
        };
        if !unchanged {
            repo.ensure_clean().map_err(|e| self.apply_failed(e))?;
        }
        let previous_head = repo.head().ok();
        let previous = (self.layout.clone(), self.dynamic.clone());

        // From here on the served context changes.
        // A development runner started with `run start` keeps running on the new context; a
        // production runner belongs to production.
        let runner_was_on = self.work.is_some();
        let was_running = runner_was_on && !self.production();
        self.stop_runner();
        let checkout = match (&plan, unchanged) {
            (_, true) => Ok((None, false)),
            (Plan::Detached(oid), false) => repo.checkout_detached(*oid).map(|()| (None, false)),
            (Plan::Branch(b), false) => repo.checkout_development(b, &req.reference),
        };
        // Undoes the checkout: the previous HEAD, and no branch left behind that this apply
        // created (a corrected REF would otherwise find it and be ignored).
        let undo = |repo: &Repo, created: bool| {
            if let Some(h) = &previous_head {
                if let Err(e) = repo.restore(h) {
                    log::error!("cannot restore the previous checkout of {}: {e}", clone.display());
                }
            }
            if let (true, Plan::Branch(b)) = (created, &plan) {
                if let Err(e) = repo.delete_branch(b, true) {
                    log::warn!("cannot remove branch {b} created by the failed apply: {e}");
                }
            }
        };
        let (note, created) = match checkout {
            Ok(c) => c,
            Err(e) => {
                undo(&repo, false);
                self.resume(previous, runner_was_on);
                return Err(self.apply_failed(e));
            }
        };
        if let Some(n) = note {
            progress(format!("note: {n}"));
        }
        let checked_out = started.elapsed();
        let root =
            if req.directory == "." || req.directory.is_empty() { clone.clone() } else { clone.join(&req.directory) };
        let mut layout = template.with_root(root.clone());
        layout.upstream_cache = Some(work_dir.join("upstream"));
        // Everything served comes from the clone: DIR (as checked out now) and every file the
        // loader reads must really be inside it, links resolved.
        layout.contain = Some(clone.clone());
        let loaded = if let Some(real) = outside_clone(&clone, &root) {
            Err(ErrorReport::new(
                ErrorKind::Invalid,
                format!(
                    "DIR {} leads to {}, outside the repository: a symbolic link at {} points out of it",
                    req.directory,
                    real.display(),
                    req.reference
                ),
            ))
        } else if root.is_dir() {
            self.layout = Some(layout);
            self.dynamic = Some(DynamicContext { request: req.clone(), clone: clone.clone() });
            progress(format!("loading {}", root.display()));
            self.reload()
        } else {
            Err(ErrorReport::new(
                ErrorKind::NotFound,
                format!("{} has no directory {} at {}", req.url, req.directory, req.reference),
            ))
        };
        if let Err(e) = loaded {
            // Put the previous checkout back (same clone) and serve the previous context again.
            undo(&repo, created);
            self.resume(previous, runner_was_on);
            if self.dynamic.is_none() {
                // Nothing was served before: the status says why nothing is served now.
                let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
                status.status = ServerState::Failed;
                status.reason =
                    std::iter::once(e.message.clone()).chain(e.causes.iter().cloned()).collect::<Vec<_>>().join("\n");
                drop(status);
                let mut report = ErrorReport::new(e.kind, format!("apply failed: {}", e.message));
                report.causes = e.causes;
                return Err(report);
            }
            let mut report =
                ErrorReport::new(e.kind, format!("apply failed, the previous context is still served: {}", e.message));
            report.causes = e.causes;
            return Err(report);
        }
        let commit = repo.head_commit().map(|o| o.to_string()).unwrap_or_default();
        log::info!(
            url = req.url.as_str(), directory = req.directory.as_str(), reference = req.reference.as_str(),
            commit = commit.as_str(), branch = req.branch.as_deref().unwrap_or("");
            "context switch: serving {} {} {} at commit {commit} (fetch {:?}, checkout {:?}, load {:?})",
            req.url,
            req.directory,
            req.reference,
            fetched,
            checked_out - fetched,
            started.elapsed() - checked_out
        );
        self.refresh_context();
        self.context_changed = true;
        self.save_context();
        let what = match &req.branch {
            None => {
                self.start_work();
                format!("production at {} ({commit}), runner running", req.reference)
            }
            Some(b) if was_running => {
                self.start_work();
                format!("development on branch {b} ({commit}), runner running again")
            }
            Some(b) => format!("development on branch {b} ({commit})"),
        };
        Ok(Reply::Message(format!("applied {} {}: {what}", req.url, req.directory)))
    }

    /// The status after a failed apply: an Initializing server says why; one with a context
    /// keeps serving it.
    fn apply_failed(&self, e: RepoError) -> ErrorReport {
        let report = repo_error(e);
        if self.dynamic.is_none() {
            let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
            status.status = ServerState::Failed;
            status.reason = report.message.clone();
        }
        report
    }

    /// Serves `previous` again after a failed switch (with its runner, if it had one on).
    fn resume(&mut self, previous: (Option<crate::project::Layout>, Option<DynamicContext>), runner_was_on: bool) {
        (self.layout, self.dynamic) = previous;
        if self.layout.is_some() {
            // Production always reconciles: even when the reload fails, the last good state is
            // served and its reconcilers run on it.
            let reloaded = self.reload().is_ok();
            if runner_was_on && (reloaded || self.production()) {
                self.start_work();
            }
        } else {
            let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
            status.status = ServerState::Initializing;
        }
        self.refresh_context();
    }

    pub(super) fn run_commit(&mut self, message: String) -> Result<Reply, ErrorReport> {
        self.refuse_in_production("commits")?;
        if message.trim().is_empty() {
            return Err(ErrorReport::new(ErrorKind::Invalid, "a commit needs a message"));
        }
        let repo = self.repo()?;
        let paths = self.project_paths(&repo)?;
        let result = repo.commit(&paths, &message).map_err(repo_error)?;
        self.refresh_context();
        match result {
            Some(oid) => {
                Ok(Reply::Message(format!("committed {} on {}", oid, repo.current_branch().unwrap_or_default())))
            }
            None => {
                Err(ErrorReport::new(ErrorKind::Invalid, "nothing to commit: the project's files are as committed"))
            }
        }
    }

    pub(super) fn run_push(&mut self) -> Result<Reply, ErrorReport> {
        self.refuse_in_production("pushes")?;
        let repo = self.repo()?;
        let mut progress = progress_sink(self.progress.clone());
        repo.push(repo::Progress { report: &mut progress, cancel: self.interrupt.shutdown_flag() })
            .map(Reply::Message)
            .map_err(repo_error)
    }

    pub(super) fn branch(&mut self, req: BranchRequest) -> Result<Reply, ErrorReport> {
        let mut repo = self.repo()?;
        match req {
            BranchRequest::Get { name: None } => Ok(Reply::Branches(
                repo.branches()
                    .map_err(repo_error)?
                    .into_iter()
                    .map(|b| BranchEntry { name: b.name, checked_out: b.checked_out })
                    .collect(),
            )),
            BranchRequest::Get { name: Some(name) } => Ok(Reply::Log(
                repo.log(&name, 1000)
                    .map_err(repo_error)?
                    .into_iter()
                    .map(|c| LogEntry {
                        date: git_date(c.time, c.offset_minutes),
                        id: c.id,
                        author: c.author,
                        email: c.email,
                        message: c.message,
                    })
                    .collect(),
            )),
            BranchRequest::Create { name } => {
                repo.create_branch(&name).map_err(repo_error)?;
                Ok(Reply::Message(format!("branch {name} created")))
            }
            BranchRequest::Delete { name, force } => {
                repo.delete_branch(&name, force).map_err(repo_error)?;
                Ok(Reply::Message(format!("branch {name} deleted")))
            }
            BranchRequest::Checkout { name } => {
                self.refuse_in_production("branch checkouts")?;
                repo.switch_branch(&name, false).map_err(repo_error)?;
                if let Some(d) = &mut self.dynamic {
                    d.request.branch = Some(name.clone());
                }
                self.save_context();
                self.after_tree_change();
                Ok(Reply::Message(format!("switched to branch {name}")))
            }
            BranchRequest::Diff { src, dst } => {
                let diff = repo.diff(&src, &dst, &self.project_in_repo(&repo)?).map_err(repo_error)?;
                Ok(Reply::BranchDiff(diff.into_iter().map(|(s, p)| (s.to_string(), p)).collect()))
            }
            BranchRequest::Stash => {
                self.refuse_in_production("stashes")?;
                let oid = repo.stash("choreo branch stash").map_err(repo_error)?;
                self.after_tree_change();
                Ok(Reply::Message(format!(
                    "stashed the uncommitted changes as {oid} (bring them back with `git stash pop`)"
                )))
            }
            BranchRequest::Merge { src, dst } => {
                self.refuse_in_production("merges")?;
                let msg = repo.merge(&src, &dst).map_err(repo_error)?;
                self.after_tree_change();
                Ok(Reply::Message(msg))
            }
        }
    }

    /// The work tree changed under the project: load it (a failure is the status, as for any
    /// edit) and show the new commit and branch.
    fn after_tree_change(&mut self) {
        let _ = self.reload();
        self.refresh_context();
    }
}

/// The file that remembers the last applied context, so a restarted server (a systemd service
/// after a reboot, say) serves it again instead of waiting for `server apply`.
fn context_file(work_dir: &Path) -> PathBuf {
    work_dir.join("context.json")
}

/// What `context.json` holds.
#[derive(Serialize, Deserialize)]
struct SavedContext {
    url: String,
    directory: String,
    #[serde(rename = "ref")]
    reference: String,
    branch: Option<String>,
    /// The commit served, which a restarted production server serves again.
    commit: Option<String>,
}

/// The context a previous run of the server applied last, if any.
fn saved_context(work_dir: &Path) -> Option<SavedContext> {
    let path = context_file(work_dir);
    let text = std::fs::read_to_string(&path).ok()?;
    serde_json::from_str(&text).map_err(|e| log::warn!("ignoring {}: {e}", path.display())).ok()
}

/// Where `root`, a directory of the clone, really is when a symbolic link takes it out of the
/// clone; `None` when it stays inside (or does not exist: the caller says so).
pub(super) fn outside_clone(clone: &Path, root: &Path) -> Option<PathBuf> {
    let clone = std::fs::canonicalize(clone).unwrap_or_else(|_| clone.to_path_buf());
    let real = std::fs::canonicalize(root).ok()?;
    (!real.starts_with(&clone)).then_some(real)
}

/// A local path that is neither absolute nor a URL (`scheme://…`, or scp-like `host:path`).
fn is_relative_path(url: &str) -> bool {
    let scp_like = url.find(':').is_some_and(|colon| url.find('/').is_none_or(|slash| colon < slash));
    !url.contains("://") && !url.starts_with('/') && !scp_like
}

impl Engine {
    /// Remembers the served context (and, for production, the commit it serves).
    fn save_context(&self) {
        let (Mode::Dynamic { work_dir, .. }, Some(d)) = (&self.mode, &self.dynamic) else { return };
        let req = &d.request;
        let saved = SavedContext {
            url: req.url.clone(),
            directory: req.directory.clone(),
            reference: req.reference.clone(),
            branch: req.branch.clone(),
            commit: Repo::discover(&d.clone).ok().and_then(|r| r.head_commit()).map(|o| o.to_string()),
        };
        let text = serde_json::to_string(&saved).unwrap_or_default();
        let path = context_file(work_dir);
        if let Err(e) = crate::project::files::write_atomic(&path, text.as_bytes()) {
            log::warn!("cannot remember the applied context in {}: {e}", path.display());
        }
    }

    /// Serves the context a previous run applied last (logged, not fatal when it fails).
    pub(super) fn resume_saved_context(&mut self) {
        let Mode::Dynamic { work_dir, .. } = &self.mode else { return };
        let Some(saved) = saved_context(work_dir) else { return };
        log::info!("serving the last applied context again: {} {} {}", saved.url, saved.directory, saved.reference);
        // Production serves the commit it served before; development its branch as it is.
        let pinned = match &saved.branch {
            None => saved.commit.as_deref().and_then(|c| repo::Oid::from_str(c).ok()),
            Some(_) => None,
        };
        let req = ServerApplyRequest {
            url: saved.url,
            directory: saved.directory,
            reference: saved.reference,
            branch: saved.branch,
        };
        match self.start_apply(req, pinned, None) {
            Ok(Some(Reply::Message(m))) => log::info!("{m}"),
            Ok(_) => {}
            Err(e) => log::warn!("cannot serve the last applied context: {e}"),
        }
    }
}

/// A clone or fetch done by the worker, on its way back to the engine.
pub struct Fetched {
    then: AfterFetch,
    reply: Option<Sender<ServerMessage>>,
    result: Result<(Repo, Option<String>), RepoError>,
    started: std::time::Instant,
}

/// The request a clone or fetch was made for.
pub(super) enum AfterFetch {
    /// `server apply`; `pinned`: the commit to serve instead of resolving REF again.
    Apply { req: ServerApplyRequest, pinned: Option<repo::Oid> },
    /// `plan --ref` in dynamic mode.
    Plan(crate::protocol::PlanRequest),
}

/// Seconds since the epoch in a time zone offset, as RFC 3339.
fn git_date(seconds: i64, offset_minutes: i32) -> String {
    use chrono::Offset;
    let offset = chrono::FixedOffset::east_opt(offset_minutes * 60).unwrap_or_else(|| chrono::Utc.fix());
    chrono::DateTime::from_timestamp(seconds, 0)
        .map(|t| t.with_timezone(&offset).to_rfc3339())
        .unwrap_or_else(|| seconds.to_string())
}

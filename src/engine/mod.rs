//! The engine: the one thread that owns the store and changes anything.
//!
//! The server hands it requests over a crossbeam channel ([`Msg`]); read-only requests never get
//! here; [`Handle::serve`] answers them from a store [`Reader`] on the connection's thread. The
//! engine keeps the server status (shared with readers through a mutex) and the map of which
//! project file defines which object, which `apply` and `delete` use to edit the right file.
//!
//! Architecture invariant: only the engine holds the store's writer, and only the engine writes
//! project files. It never prints, reads no environment variables and knows nothing of sockets.

mod continuous;
mod edit;
pub mod load;
mod run;
pub mod query;
pub mod runner;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};

use crate::project::Layout;
use crate::protocol::{ErrorKind, ErrorReport, Reply, Request, ServerMessage, ServerStatus, StatusContext};
use crate::store::{Reader, Store, StoreError};

/// How the server was started.
#[derive(Debug, Clone)]
pub enum Mode {
    /// `server start DIR`: the user owns the project directory.
    Static { layout: Layout },
    /// `server start`: the server will manage a clone in `work_dir` (see `server apply`).
    Dynamic { work_dir: PathBuf },
}

/// Messages to the engine thread.
pub enum Msg {
    Request { request: Request, reply: Sender<ServerMessage> },
    Shutdown,
}

/// Startup failures; everything after startup is reported per request.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot start the engine thread: {0}")]
    Thread(std::io::Error),
}

/// The cloneable front of the engine used by connection threads.
#[derive(Clone)]
pub struct Handle {
    tx: Sender<Msg>,
    reader: Reader,
    status: Arc<Mutex<ServerStatus>>,
}

impl Handle {
    /// Answers one request, sending progress and the final frame to `emit`.
    pub fn serve(&self, request: Request, emit: &mut dyn FnMut(ServerMessage) -> bool) {
        let answer = match &request {
            Request::ServerStatus => Some(Ok(Reply::Status(self.status()))),
            Request::ApiResources => Some(Ok(Reply::ApiResources(self.reader.with(query::api_resources)))),
            Request::Get(get) => Some(self.reader.with(|s| query::get(s, get))),
            _ => None,
        };
        if let Some(answer) = answer {
            emit(final_message(answer));
            return;
        }
        let (reply_tx, reply_rx) = crossbeam_channel::unbounded();
        if self.tx.send(Msg::Request { request, reply: reply_tx }).is_err() {
            emit(ServerMessage::Error(ErrorReport::new(ErrorKind::Unavailable, "the server is shutting down")));
            return;
        }
        for msg in reply_rx {
            let last = msg.is_final();
            if !emit(msg) || last {
                return;
            }
        }
        // The engine dropped the request without answering (it is stopping).
        emit(ServerMessage::Error(ErrorReport::new(ErrorKind::Unavailable, "the server is shutting down")));
    }

    pub fn status(&self) -> ServerStatus {
        self.status.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Asks the engine to stop; it syncs the store before its thread ends.
    pub fn shutdown(&self) {
        let _ = self.tx.send(Msg::Shutdown);
    }
}

fn final_message(answer: Result<Reply, ErrorReport>) -> ServerMessage {
    match answer {
        Ok(reply) => ServerMessage::Reply(reply),
        Err(report) => ServerMessage::Error(report),
    }
}

/// The engine state, owned by its thread.
pub struct Engine {
    store: Store,
    mode: Mode,
    status: Arc<Mutex<ServerStatus>>,
    sources: load::Sources,
    /// The reconcilers of the last good load.
    controllers: Vec<runner::Controller>,
    /// Store events since the last run: what the next run reconciles.
    events: Receiver<crate::store::Event>,
    /// Each reconciler's fingerprint at the last successful run.
    fingerprints: std::collections::HashMap<String, u128>,
    /// The work of the continuous runner, while it runs.
    work: Option<runner::Work>,
    /// What the last good load read (see `load::LoadCache`).
    load_cache: Option<load::LoadCache>,
    /// Told once when a client asked the server to stop.
    stop_requested: Sender<()>,
}

/// Opens the store, performs the initial load and starts the engine thread. Returns the handle,
/// the thread, and a channel that fires when a client asks the server to stop.
pub fn start(mode: Mode, state_dir: PathBuf) -> Result<(Handle, JoinHandle<()>, Receiver<()>), EngineError> {
    let store = Store::open(&state_dir.join("db"))?;
    let reader = store.reader();
    let mut status = ServerStatus {
        server_version: env!("CARGO_PKG_VERSION").to_string(),
        pid: std::process::id(),
        runner: "Stopped".into(),
        ..ServerStatus::default()
    };
    match &mode {
        Mode::Static { layout } => {
            status.mode = "static".into();
            status.context = StatusContext { path: Some(layout.root.display().to_string()), ..Default::default() };
        }
        Mode::Dynamic { .. } => {
            status.mode = "dynamic".into();
            status.status = "Initializing".into();
            status.reason = "waiting for `choreo server apply URL DIR REF [BRANCH]`".into();
        }
    }
    let (stop_tx, stop_rx) = crossbeam_channel::bounded(1);
    let events = store.subscribe();
    let mut engine = Engine {
        controllers: Vec::new(),
        events,
        fingerprints: Default::default(),
        work: None,
        load_cache: None,
        store,
        mode,
        status: Arc::new(Mutex::new(status)),
        sources: Default::default(),
        stop_requested: stop_tx,
    };
    // The watcher starts before the initial load, so a change made while that load runs (or
    // right after the socket appears) is seen.
    let (watch_tx, watch_rx) = crossbeam_channel::unbounded();
    let watcher = engine.start_watcher(watch_tx);
    if matches!(engine.mode, Mode::Static { .. }) {
        // A failed initial load is a status, not a startup failure: the server still answers.
        let _ = engine.reload();
    }
    let status = engine.status.clone();
    let (tx, rx) = crossbeam_channel::unbounded();
    let thread = std::thread::Builder::new()
        .name("choreo-engine".into())
        .spawn(move || engine.run(rx, watch_rx, watcher))
        .map_err(EngineError::Thread)?;
    Ok((Handle { tx, reader, status }, thread, stop_rx))
}

impl Engine {
    fn run(
        mut self,
        rx: Receiver<Msg>,
        watch_rx: Receiver<crate::watch::WatchEvent>,
        mut watcher: Option<crate::watch::WatchHandle>,
    ) {
        loop {
            // With work ready, only peek at the channels; with work waiting, sleep until it is
            // due; otherwise block until something happens.
            let wait = match &self.work {
                Some(w) if w.has_ready() => Some(std::time::Duration::ZERO),
                Some(w) => w.next_deadline().map(|at| at.saturating_duration_since(std::time::Instant::now())),
                None => None,
            };
            let timer = match wait {
                Some(d) => crossbeam_channel::after(d),
                None => crossbeam_channel::never(),
            };
            crossbeam_channel::select! {
                recv(rx) -> msg => match msg {
                    Ok(Msg::Request { request, reply }) => {
                        log::debug!("engine: {}", request.name());
                        let stop = matches!(request, Request::ServerStop);
                        let answer = self.handle(request, &reply);
                        let _ = reply.send(final_message(answer));
                        if stop {
                            let _ = self.stop_requested.try_send(());
                            break;
                        }
                    }
                    Ok(Msg::Shutdown) | Err(_) => break,
                },
                recv(watch_rx) -> ev => {
                    if let Ok(ev) = ev {
                        self.on_files(ev, watcher.as_mut());
                    }
                }
                recv(timer) -> _ => {}
            }
            self.drive();
        }
        drop(watcher);
        if let Err(e) = self.store.sync() {
            log::error!("final flush of the store failed: {e}");
        }
        log::debug!("engine stopped");
    }

    fn handle(&mut self, request: Request, reply: &Sender<ServerMessage>) -> Result<Reply, ErrorReport> {
        match request {
            Request::ServerStop => {
                self.store.sync().map_err(internal)?;
                Ok(Reply::Done)
            }
            Request::RunLoad => {
                self.layout()?;
                self.reload().map(|()| Reply::Done)
            }
            Request::RunOnce(req) => self.run_once(req, reply),
            Request::RunStart => self.run_start(),
            Request::RunStop => self.run_stop(),
            Request::RunResult => self.run_result(),
            Request::RunList => self.run_list(),
            Request::RunDiff(req) => self.run_diff(req),
            Request::RunDeps(req) => self.run_deps(req),
            Request::Apply(req) => self.apply(req),
            Request::Delete(req) => self.delete(req),
            // Read-only requests are answered by `Handle::serve`; answering them here too keeps
            // the engine correct if a caller sends them anyway.
            Request::ServerStatus => Ok(Reply::Status(self.status.lock().unwrap_or_else(|p| p.into_inner()).clone())),
            Request::ApiResources => Ok(Reply::ApiResources(self.store.with(query::api_resources))),
            Request::Get(get) => self.store.with(|s| query::get(s, &get)),
        }
    }

    fn layout(&self) -> Result<&Layout, ErrorReport> {
        match &self.mode {
            Mode::Static { layout } => Ok(layout),
            Mode::Dynamic { .. } => Err(ErrorReport::new(ErrorKind::Unavailable, "no project is loaded yet")
                .with_hint("give the server a project with `choreo server apply URL DIR REF [BRANCH]`")),
        }
    }

    fn status(&self) -> ServerStatus {
        self.status.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_runner(&self, state: &str) {
        self.status.lock().unwrap_or_else(|p| p.into_inner()).runner = state.to_string();
    }

    /// Hands freed memory back to the operating system after a large piece of work (a load or
    /// a run parses and drops many short-lived values; glibc keeps the pages otherwise).
    pub(crate) fn release_memory() {
        // SAFETY: malloc_trim only releases free heap memory; it has no preconditions.
        unsafe {
            libc::malloc_trim(0);
        }
    }

    fn is_ready(&self) -> bool {
        self.status.lock().unwrap_or_else(|p| p.into_inner()).status == "Ready"
    }

    /// Loads the project; on failure the status becomes `Failed` with every problem as the
    /// reason, and the store keeps its last good state.
    fn reload(&mut self) -> Result<(), ErrorReport> {
        self.reload_scope(load::Scope::Full)
    }

    /// [`Engine::reload`] reading only what `scope` names.
    fn reload_scope(&mut self, scope: load::Scope<'_>) -> Result<(), ErrorReport> {
        let layout = self.layout()?.clone();
        let started = std::time::Instant::now();
        let result = load::load(&self.store, &layout, &mut self.load_cache, &mut self.sources, scope);
        let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(summary) => {
                log::info!(
                    "loaded {} CRDs and {} objects from {} in {:?} ({} changed, {} removed, {} collected)",
                    summary.crds,
                    summary.inputs,
                    layout.root.display(),
                    started.elapsed(),
                    summary.changed,
                    summary.removed,
                    summary.collected
                );
                if matches!(scope, load::Scope::Full) {
                    // A partial load frees little; trimming a large heap would cost more.
                    Self::release_memory();
                }
                if let Some(controllers) = summary.controllers {
                    self.controllers = controllers;
                }
                status.status = "Ready".into();
                status.reason.clear();
                Ok(())
            }
            Err(errors) => {
                log::warn!("load of {} failed: {}", layout.root.display(), errors.join("; "));
                status.status = "Failed".into();
                status.reason = errors.join("\n");
                let n = errors.len();
                Err(ErrorReport::new(
                    ErrorKind::Invalid,
                    format!("the project failed to load ({n} problem{})", if n == 1 { "" } else { "s" }),
                )
                .with_causes(errors))
            }
        }
    }
}

fn internal(e: impl std::fmt::Display) -> ErrorReport {
    ErrorReport::new(ErrorKind::Internal, e.to_string())
}

/// Maps a store error on one object to an error report.
pub fn store_error(e: &StoreError) -> ErrorReport {
    let kind = match e {
        StoreError::NotFound { .. } => ErrorKind::NotFound,
        StoreError::Apply { source: crate::api::apply::ApplyError::Conflicts(_), .. } => ErrorKind::Conflict,
        StoreError::Db { .. } | StoreError::Io { .. } | StoreError::Corrupt { .. } | StoreError::Locked { .. } => {
            ErrorKind::Internal
        }
        _ => ErrorKind::Invalid,
    };
    ErrorReport::new(kind, e.to_string())
}

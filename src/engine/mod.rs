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
mod describe;
mod edit;
mod git;
pub mod load;
mod observe;
mod plan;
pub mod query;
mod run;
pub mod runner;
pub mod sdc;
mod upstream;
mod watching;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};

use crate::project::Layout;
use crate::protocol::{
    self, ErrorKind, ErrorReport, Reply, Request, Runner, ServerMessage, ServerState, ServerStatus, StatusContext,
};
use crate::reconcile::Interrupt;
use crate::store::{Reader, Store, StoreError};

/// How the server was started.
#[derive(Debug, Clone)]
pub enum Mode {
    /// `server start DIR`: the user owns the project directory.
    Static { layout: Layout },
    /// `server start`: the server manages clones in `work_dir` (see `server apply`);
    /// `template` carries the directory names (`--apis`, `--input`, `--refs`) for them.
    Dynamic { work_dir: PathBuf, template: Layout },
}

/// Messages to the engine thread.
pub enum Msg {
    Request {
        request: Request,
        reply: Sender<ServerMessage>,
    },
    /// A `server apply`'s clone or fetch finished on its worker thread.
    Fetched(Box<git::Fetched>),
    /// The watchdog asks whether the engine loop is alive: answered at once.
    Ping(Sender<()>),
    Shutdown,
}

/// Startup failures; everything after startup is reported per request.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot start the engine thread: {0}")]
    Thread(std::io::Error),
    #[error("the engine thread ended while opening the store")]
    Startup,
    #[error("this choreo was built without the `sdc` feature: `-s` is not available")]
    NoSdc,
}

/// The cloneable front of the engine used by connection threads.
#[derive(Clone)]
pub struct Handle {
    tx: Sender<Msg>,
    reader: Reader,
    status: Arc<Mutex<ServerStatus>>,
    /// Raised at shutdown and by `run stop`: a reconcile in progress stops at its next check.
    interrupt: Arc<Interrupt>,
    /// `-r`: the identifier pools, read as last committed.
    backends: Option<Arc<crate::backends::Backends>>,
    /// Fires once the first load (static mode) or the remembered context (dynamic mode) is
    /// served, or there is none to resume.
    served: Receiver<()>,
}

impl Handle {
    /// Waits up to `timeout` for the first load or the remembered context to be served; true
    /// once it is (also on every later call).
    pub fn wait_served(&self, timeout: std::time::Duration) -> bool {
        match self.served.recv_timeout(timeout) {
            Ok(()) => true,
            // The engine dropped its sender after firing (or ended): nothing more to wait for.
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => true,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => false,
        }
    }

    /// The metrics in the Prometheus text exposition format (for `/metrics`).
    pub fn metrics_text(&self) -> String {
        observe::prometheus(&self.reader, &self.status, self.backends.as_deref())
    }

    /// Whether the engine loop answers within `timeout` (the watchdog's question).
    pub fn ping(&self, timeout: std::time::Duration) -> bool {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.tx.send(Msg::Ping(tx)).is_ok() && rx.recv_timeout(timeout).is_ok()
    }

    fn backends(&self) -> Result<&crate::backends::Backends, ErrorReport> {
        self.backends.as_deref().ok_or_else(|| {
            ErrorReport::new(ErrorKind::Invalid, "this server has no identifier backends")
                .with_hint("start it with `choreo server start -r` (--internal-reconcilers)")
        })
    }

    /// Answers one request, sending progress and the final frame to `emit`.
    pub fn serve(&self, request: Request, emit: &mut dyn FnMut(ServerMessage) -> bool) {
        self.serve_until(request, emit, &|| false)
    }

    /// [`Handle::serve`] for a client that can go away while nothing is sent to it: a watch
    /// or wait ends within about half a second of `client_gone` saying so, busy or idle.
    pub fn serve_until(
        &self,
        request: Request,
        emit: &mut dyn FnMut(ServerMessage) -> bool,
        client_gone: &dyn Fn() -> bool,
    ) {
        let stopping = || client_gone() || self.interrupt.shutdown_flag().load(std::sync::atomic::Ordering::SeqCst);
        if let Request::Wait(req) = &request {
            let _open = crate::metrics::WatchStream::open();
            emit(watching::wait(&self.reader, req, &stopping));
            return;
        }
        if let Request::Watch(req) = &request {
            let _open = crate::metrics::WatchStream::open();
            if let Some(last) = watching::watch(&self.reader, req, emit, &stopping) {
                emit(last);
            }
            return;
        }
        let answer = match &request {
            Request::ServerStatus => {
                let mut status = self.status();
                status.metrics =
                    Some(Box::new(observe::status_metrics(&self.reader, &self.status, self.backends.as_deref())));
                Some(Ok(Reply::Status(status)))
            }
            Request::Metrics => {
                Some(Ok(Reply::Metrics(observe::prometheus(&self.reader, &self.status, self.backends.as_deref()))))
            }
            Request::Explain { target } => Some(self.reader.with(|s| query::explain(s, target))),
            Request::ApiResources => Some(Ok(Reply::ApiResources(self.reader.with(query::api_resources)))),
            // Run history is read from the store's snapshots, never waiting for a run.
            Request::RunResult => Some(run::with_latest_sdc(run::run_result(&self.reader), self.status().sdc)),
            Request::RunList => Some(run::run_list(&self.reader)),
            // Path-level details need the schemas, which the engine holds.
            Request::RunDiff(req) if req.final_config && req.details && cfg!(feature = "sdc") => None,
            Request::RunDiff(req) if req.final_config => {
                Some(sdc::diff::final_config_diff(&self.reader, None).map(Reply::Diff))
            }
            Request::RunDiff(req) => Some(run::run_diff(&self.reader, req.clone())),
            Request::RunDeps(req) => Some(run::run_deps(&self.reader, req.clone())),
            Request::IdsUsage(req) => Some(self.backends().map(|b| Reply::IdsUsage(b.usage(req)))),
            Request::IdsFree(req) => Some(
                self.backends()
                    .and_then(|b| b.free(req).map_err(|m| ErrorReport::new(ErrorKind::NotFound, m)))
                    .map(Reply::IdsFree),
            ),
            Request::Get(get) => {
                Some(self.reader.with(|s| query::find(s, get)).map(|f| query::render(f, get)).map_err(|e| {
                    if self.status().status == ServerState::Initializing {
                        e.with_hint(
                        "this dynamic-mode server serves no project yet: `choreo server apply URL DIR REF [BRANCH]`",
                    )
                    } else {
                        e
                    }
                }))
            }
            _ => None,
        };
        if let Some(answer) = answer {
            emit(final_message(answer));
            return;
        }
        // Stops are answered at once, even in the middle of a long reconcile: the engine thread
        // is told through its queue, the reconcile through the interrupt it checks.
        match &request {
            Request::ServerStop => self.interrupt.shutdown(),
            Request::RunStop => {
                let status = self.status();
                if status.runner == Runner::Once || (status.runner == Runner::Running && !status.production) {
                    self.interrupt.stop_run();
                }
            }
            _ => {}
        }
        let (reply_tx, reply_rx) = crossbeam_channel::unbounded();
        if self.tx.send(Msg::Request { request, reply: reply_tx }).is_err() {
            emit(ServerMessage::Error(ErrorReport::new(ErrorKind::Unavailable, "the server is shutting down")));
            return;
        }
        // The engine may be in the middle of a long reconcile: say so instead of going quiet.
        let mut told = false;
        loop {
            let msg = match reply_rx.recv_timeout(std::time::Duration::from_secs(1)) {
                Ok(msg) => msg,
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                    if !told {
                        told = true;
                        let busy = match self.status().runner {
                            Runner::Stopped => "the engine is busy (a load or an earlier request)".to_string(),
                            runner => format!("the engine is busy with a reconcile (runner {runner})"),
                        };
                        if !emit(ServerMessage::Progress(format!("waiting: {busy}"))) {
                            return;
                        }
                    }
                    continue;
                }
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
            };
            // The engine spoke (a progress line of its own, saying why it waits): no need to.
            told = true;
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

    /// Asks the engine to stop; it syncs the store before its thread ends. A clone or fetch in
    /// progress is cancelled (its partial clone is discarded; the next apply starts over).
    pub fn shutdown(&self) {
        self.interrupt.shutdown();
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
    /// `-r`: the identifier backends installed in the store (for `ids usage` and `ids free`).
    backends: Option<Arc<crate::backends::Backends>>,
    mode: Mode,
    /// The project served: fixed in static mode, set by `server apply` in dynamic mode.
    layout: Option<Layout>,
    /// Dynamic mode's current context.
    dynamic: Option<git::DynamicContext>,
    /// Set when the served directory changed, so the watcher follows it.
    context_changed: bool,
    /// Where watchers send their batches (kept to start a new watcher after a context switch).
    watch_tx: Sender<crate::watch::WatchBatch>,
    /// The generation of the current watcher (see `watch::WatchBatch`).
    watch_generation: u64,
    /// The reply channel of the request being handled: loads stream their progress (fetches of
    /// upstream packages) to it.
    progress: Option<Sender<ServerMessage>>,
    status: Arc<Mutex<ServerStatus>>,
    sources: load::Sources,
    /// The reconcilers of the last good load.
    controllers: Vec<runner::Controller>,
    /// Store events since the last run: what the next run reconciles.
    changes: crate::store::Changes,
    /// Each reconciler's fingerprint at the last successful run.
    fingerprints: std::collections::HashMap<String, u128>,
    /// The work of the continuous runner, while it runs.
    work: Option<runner::Work>,
    /// Held while the continuous runner works off a burst larger than one slice: freed pages
    /// wait before they go back, as in a `run once` (see `memory`).
    burst_memory: Option<crate::memory::Running>,
    /// What the last good load read (see `load::LoadCache`).
    load_cache: Option<load::LoadCache>,
    /// Told once when a client asked the server to stop.
    stop_requested: Sender<()>,
    /// The server's own state directory (store, staging of file edits).
    state_dir: PathBuf,
    /// Raised by [`Handle::shutdown`] and by `run stop` on a connection thread: reconciles
    /// stop at their next check.
    interrupt: Arc<Interrupt>,
    /// The `run once` in progress, driven a slice at a time by the loop.
    once: Option<run::OnceJob>,
    /// Requests held back until the `run once` in progress is over.
    deferred: std::collections::VecDeque<(Request, Sender<ServerMessage>)>,
    /// File changes held back until the `run once` in progress is over.
    deferred_watch: Vec<crate::watch::WatchBatch>,
    /// A clone or fetch (`server apply`, `plan --ref`) runs on a worker thread.
    fetching: bool,
    /// The engine's own queue, for workers to report back on.
    own_tx: Sender<Msg>,
    /// Where reconcilers are compiled and run (a worker process, or this thread).
    host: crate::reconcile::worker::Host,
    /// `Quiesce` requests: answered once the engine has nothing to do, or at their deadline.
    quiesce: Vec<(Option<std::time::Instant>, Sender<ServerMessage>)>,
    /// `-s`: device configs merged and validated after the reconcilers.
    #[cfg(feature = "sdc")]
    sdc: Option<sdc::pass::Sdc>,
    /// Told once the first load or the remembered context is served (see `Handle::wait_served`).
    served: Option<Sender<()>>,
    /// What this engine was started with (a `plan` starts another with the same).
    options: Options,
}

/// Starts the engine thread, which opens the store and performs the initial load before it
/// serves anything; returns once that is done. Returns the handle, the thread, and a channel
/// that fires when a client asks the server to stop.
/// How the engine runs, besides its mode and state directory.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where reconcilers run.
    pub isolation: crate::reconcile::worker::Isolation,
    /// `-r`: serve the identifier backends (IPAM, VLAN, AS, GENID, EXTCOMM) and allocate in
    /// the store's transactions.
    pub internal_reconcilers: bool,
    /// `-s`: merge and validate the device configs after the reconcilers.
    pub sdc: Option<sdc::SdcOptions>,
}

pub fn start(
    mode: Mode,
    state_dir: PathBuf,
    options: Options,
) -> Result<(Handle, JoinHandle<()>, Receiver<()>), EngineError> {
    limit_malloc_arenas();
    crate::repo::enable_fsync();
    let (stop_tx, stop_rx) = crossbeam_channel::bounded(1);
    let (ready_tx, ready_rx) = crossbeam_channel::bounded(1);
    let (tx, rx) = crossbeam_channel::unbounded();
    let interrupt = Arc::new(Interrupt::default());
    let engine_interrupt = interrupt.clone();
    let own_tx = tx.clone();
    let (served_tx, served_rx) = crossbeam_channel::bounded(1);
    // The store is opened and first loaded on the engine thread itself: the memory that work
    // frees then lies in the malloc arena the engine's runs allocate from, instead of in the
    // calling thread's, where a run could not reuse it.
    let thread = std::thread::Builder::new()
        .name("choreo-engine".into())
        // Reconciles run here: a stack deep enough for the deepest value a script's memory
        // limit lets it build (see `Limits::STACK`).
        .stack_size(crate::reconcile::Limits::STACK)
        .spawn(move || match Engine::open(mode, &state_dir, stop_tx, engine_interrupt, own_tx, options) {
            Ok((mut engine, watch_rx, watcher)) => {
                let _ = ready_tx.send(Ok((engine.store.reader(), engine.status.clone(), engine.backends.clone())));
                engine.served = Some(served_tx);
                engine.run(rx, watch_rx, watcher);
            }
            Err(e) => {
                let _ = ready_tx.send(Err(e));
            }
        })
        .map_err(EngineError::Thread)?;
    let (reader, status, backends) = ready_rx.recv().map_err(|_| EngineError::Startup)??;
    Ok((Handle { tx, reader, status, interrupt, backends, served: served_rx }, thread, stop_rx))
}

impl Engine {
    /// Opens the store and, in static mode, loads the project.
    #[allow(clippy::type_complexity)]
    fn open(
        mode: Mode,
        state_dir: &std::path::Path,
        stop_requested: Sender<()>,
        interrupt: Arc<Interrupt>,
        own_tx: Sender<Msg>,
        options: Options,
    ) -> Result<(Engine, Receiver<crate::watch::WatchBatch>, Option<crate::watch::WatchHandle>), EngineError> {
        let backends = options.internal_reconcilers.then(|| Arc::new(crate::backends::Backends::new()));
        #[allow(unused_mut)]
        let mut store_options = match &backends {
            Some(b) => crate::store::StoreOptions {
                extra_apis: crate::backends::crds::resources().map_err(crate::store::StoreError::from)?,
                admission: Some(b.clone()),
            },
            None => crate::store::StoreOptions::default(),
        };
        if options.sdc.is_some() {
            #[cfg(not(feature = "sdc"))]
            return Err(EngineError::NoSdc);
            #[cfg(feature = "sdc")]
            store_options.extra_apis.extend(sdc::crds::resources().map_err(crate::store::StoreError::from)?);
        }
        let store = Store::open_with(&state_dir.join("db"), store_options)?;
        let isolation = options.isolation.clone();
        let mut status = ServerStatus {
            server_version: env!("CARGO_PKG_VERSION").to_string(),
            pid: std::process::id(),
            runner: Runner::Stopped,
            ..ServerStatus::default()
        };
        match &mode {
            Mode::Static { layout } => {
                status.mode = protocol::Mode::Static;
                status.context = StatusContext { path: Some(layout.root.display().to_string()), ..Default::default() };
            }
            Mode::Dynamic { .. } => {
                status.mode = protocol::Mode::Dynamic;
                status.status = ServerState::Initializing;
                status.reason = "waiting for `choreo server apply URL DIR REF [BRANCH]`".into();
            }
        }
        let changes = store.changes();
        let (watch_tx, watch_rx) = crossbeam_channel::unbounded();
        let mut engine = Engine {
            backends,
            watch_tx,
            watch_generation: 0,
            progress: None,
            controllers: Vec::new(),
            changes,
            fingerprints: Default::default(),
            work: None,
            burst_memory: None,
            load_cache: None,
            store,
            layout: match &mode {
                Mode::Static { layout } => Some(layout.clone()),
                Mode::Dynamic { .. } => None,
            },
            dynamic: None,
            context_changed: false,
            mode,
            status: Arc::new(Mutex::new(status)),
            sources: Default::default(),
            stop_requested,
            state_dir: state_dir.to_path_buf(),
            host: crate::reconcile::worker::Host::new(isolation, interrupt.clone()),
            quiesce: Vec::new(),
            served: None,
            options: options.clone(),
            #[cfg(feature = "sdc")]
            sdc: options.sdc.clone().map(sdc::pass::Sdc::new),
            interrupt,
            once: None,
            deferred: Default::default(),
            deferred_watch: Vec::new(),
            fetching: false,
            own_tx,
        };
        // An edit a crash interrupted is undone before anything reads the files.
        engine.recover_edits();
        // Plans a stop or crash interrupted leave their copies behind.
        plan::remove_stale(&engine.state_dir);
        // The watcher starts before the initial load, so a change made while that load runs
        // (or right after the socket appears) is seen.
        let watcher = engine.start_watcher(engine.watch_tx.clone());
        if matches!(engine.mode, Mode::Static { .. }) {
            // A failed initial load is a status, not a startup failure: the server still answers.
            let _ = engine.reload();
            engine.refresh_context();
        }
        Ok((engine, watch_rx, watcher))
    }
}

impl Engine {
    fn run(
        mut self,
        rx: Receiver<Msg>,
        watch_rx: Receiver<crate::watch::WatchBatch>,
        mut watcher: Option<crate::watch::WatchHandle>,
    ) {
        // Dynamic mode: serve the last applied context again. This runs once the server
        // listens, so a slow fetch does not keep it from answering `server get`.
        self.resume_saved_context();
        loop {
            // Served: the initial load is done, and no remembered context is still being fetched.
            if !self.fetching {
                if let Some(tx) = self.served.take() {
                    let _ = tx.send(());
                }
            }
            // Requests and file changes held back by a `run once` go once it is over.
            if self.once.is_none() && !self.fetching {
                if let Some((request, reply)) = self.deferred.pop_front() {
                    if self.serve_request(request, reply) {
                        break;
                    }
                    continue;
                }
                for ev in std::mem::take(&mut self.deferred_watch) {
                    self.on_files(ev, watcher.as_mut());
                }
            }
            // With work ready, only peek at the channels; with work waiting, sleep until it is
            // due; otherwise block until something happens.
            let now = std::time::Instant::now();
            let once_wait = self
                .once
                .as_ref()
                .map(|j| j.wake.map_or(std::time::Duration::ZERO, |at| at.saturating_duration_since(now)));
            let work_wait = match &self.work {
                Some(w) if w.has_ready() => Some(std::time::Duration::ZERO),
                Some(w) => w.next_deadline().map(|at| at.saturating_duration_since(now)),
                None => None,
            };
            let quiesce_wait =
                self.quiesce.iter().filter_map(|(at, _)| at.map(|at| at.saturating_duration_since(now))).min();
            let timer = match [once_wait, work_wait, quiesce_wait].into_iter().flatten().min() {
                Some(d) => crossbeam_channel::after(d),
                None => crossbeam_channel::never(),
            };
            crossbeam_channel::select! {
                recv(rx) -> msg => match msg {
                    Ok(Msg::Request { request, reply }) => {
                        if self.serve_request(request, reply) {
                            break;
                        }
                    }
                    Ok(Msg::Fetched(done)) => self.finish_fetch(*done),
                    Ok(Msg::Ping(reply)) => {
                        let _ = reply.send(());
                    }
                    Ok(Msg::Shutdown) | Err(_) => {
                        self.abort_once("the server is stopping");
                        break;
                    }
                },
                recv(watch_rx) -> ev => {
                    if let Ok(ev) = ev {
                        if self.once.is_some() {
                            self.deferred_watch.push(ev);
                        } else {
                            self.on_files(ev, watcher.as_mut());
                        }
                    }
                }
                recv(timer) -> _ => {}
            }
            if self.context_changed {
                self.context_changed = false;
                drop(watcher.take());
                watcher = self.start_watcher(self.watch_tx.clone());
            }
            self.drive_once();
            self.drive();
            self.answer_quiesce();
            let depth = self.once.as_ref().map(|j| j.run.depth()).or_else(|| self.work.as_ref().map(|w| w.depth()));
            crate::metrics::global().set_queue_depth(depth.unwrap_or(0));
        }
        drop(watcher);
        if let Err(e) = self.store.sync() {
            log::error!("final flush of the store failed: {e}");
        }
        log::debug!("engine stopped");
    }

    /// Answers one request (or holds it back while a `run once` is in progress); returns
    /// whether the server must stop.
    fn serve_request(&mut self, request: Request, reply: Sender<ServerMessage>) -> bool {
        log::debug!("engine: {}", request.name());
        crate::metrics::global().request(request.name());
        let stop = matches!(request, Request::ServerStop);
        if let Some(wait) = self.must_wait(&request) {
            match &request {
                Request::ServerStop => self.abort_once("the server is stopping (`choreo server stop`)"),
                Request::RunStop if self.once.is_some() => {
                    self.interrupt.clear_stop_run();
                    self.abort_once("stopped by `choreo run stop`");
                    let _ = reply.send(ServerMessage::Reply(Reply::Done));
                    return false;
                }
                _ => {
                    let _ = reply.send(ServerMessage::Progress(wait));
                    self.deferred.push_back((request, reply));
                    return false;
                }
            }
        }
        self.progress = Some(reply.clone());
        if matches!(request, Request::Apply(_) | Request::Delete(_) | Request::RunLoad | Request::ServerApply(_)) {
            self.touch_sdc();
        }
        let answer = match request {
            Request::RunOnce(req) => match self.start_once(req, reply.clone()) {
                // The reply goes when the run ends.
                Ok(()) => None,
                Err(e) => Some(Err(e)),
            },
            // The reply goes when the fetch is done.
            Request::ServerApply(req) => self.server_apply(req, reply.clone()),
            Request::Plan(req) if req.reference.is_some() && matches!(self.mode, Mode::Dynamic { .. }) => {
                self.start_plan_fetch(req, reply.clone())
            }
            // The reply goes when the plan's worker is done.
            Request::Plan(req) => self.plan(req, reply.clone()),
            // The reply goes when the engine is idle.
            Request::Quiesce { timeout_secs } => {
                let deadline = std::time::Instant::now().checked_add(std::time::Duration::from_secs(timeout_secs));
                self.quiesce.push((deadline, reply.clone()));
                None
            }
            other => Some(self.handle(other)),
        };
        self.progress = None;
        if let Some(answer) = answer {
            let _ = reply.send(final_message(answer));
        }
        if stop {
            let _ = self.stop_requested.try_send(());
        }
        stop
    }

    /// Why `request` must wait (held back until the run or fetch in progress is over), if it
    /// must. Reads never wait; during a `run once`, edits of objects interleave with it; stops
    /// are answered at once.
    fn must_wait(&self, request: &Request) -> Option<String> {
        let read_only = matches!(
            request,
            Request::RunResult
                | Request::RunList
                | Request::RunDiff(_)
                | Request::RunDeps(_)
                | Request::IdsUsage(_)
                | Request::IdsFree(_)
                | Request::ServerStatus
                | Request::ApiResources
                | Request::Get(_)
        );
        if read_only {
            return None;
        }
        if let Some(job) = &self.once {
            if !matches!(request, Request::Apply(_) | Request::Delete(_)) {
                return Some(format!(
                    "waiting for the run in progress to finish ({} reconciles so far)",
                    job.run.reconciles()
                ));
            }
        }
        if self.fetching && !matches!(request, Request::ServerStop | Request::RunStop) {
            return Some("waiting for the clone or fetch in progress (`server apply` or `plan --ref`)".into());
        }
        None
    }

    fn handle(&mut self, request: Request) -> Result<Reply, ErrorReport> {
        match request {
            Request::ServerStop => {
                self.store.sync().map_err(internal)?;
                Ok(Reply::Done)
            }
            Request::RunLoad => {
                self.layout()?;
                self.reload().map(|()| Reply::Done)
            }
            Request::RunOnce(_) => Err(internal("run once is started by serve_request")),
            Request::RunStart => self.run_start(),
            Request::RunStop => {
                self.interrupt.clear_stop_run();
                self.run_stop()
            }
            Request::RunResult => run::run_result(&self.store.reader()),
            Request::RunList => run::run_list(&self.store.reader()),
            #[cfg(feature = "sdc")]
            Request::RunDiff(req) if req.final_config && req.details => {
                let reader = self.store.reader();
                let mut detail = |objects: &sdc::diff::Objects,
                                  config: &serde_json::Value,
                                  old: &serde_json::Value,
                                  new: &serde_json::Value| {
                    self.final_config_changes(objects, config, old, new)
                };
                sdc::diff::final_config_diff(&reader, Some(&mut detail)).map(Reply::Diff)
            }
            Request::RunDiff(req) if req.final_config => {
                sdc::diff::final_config_diff(&self.store.reader(), None).map(Reply::Diff)
            }
            Request::RunDiff(req) => run::run_diff(&self.store.reader(), req),
            #[cfg(feature = "sdc")]
            Request::ConfigBlame(req) => self.config_blame(req).map(Reply::Blame),
            #[cfg(not(feature = "sdc"))]
            Request::ConfigBlame(_) => Err(sdc::no_sdc()),
            Request::Metrics => {
                Ok(Reply::Metrics(observe::prometheus(&self.store.reader(), &self.status, self.backends.as_deref())))
            }
            Request::Explain { target } => self.store.with(|s| query::explain(s, &target)),
            Request::Watch(_) | Request::Wait(_) => Err(internal("watches are served by the connection")),
            Request::Describe(req) => self.describe(&req),
            Request::Plan(_) => Err(internal("plan is started by serve_request")),
            Request::RunDeps(req) => run::run_deps(&self.store.reader(), req),
            Request::Apply(req) => self.apply(req),
            Request::Delete(req) => self.delete(req),
            Request::ServerApply(_) => Err(internal("server apply is started by serve_request")),
            Request::Quiesce { .. } => Err(internal("quiesce is answered by the engine loop")),
            Request::IdsUsage(_) | Request::IdsFree(_) => Err(internal("ids requests are answered by the connection")),
            Request::RunCommit { message } => self.run_commit(message),
            Request::RunPush => self.run_push(),
            Request::Branch(req) => self.branch(req),
            // Read-only requests are answered by `Handle::serve`; answering them here too keeps
            // the engine correct if a caller sends them anyway.
            Request::ServerStatus => Ok(Reply::Status(self.status.lock().unwrap_or_else(|p| p.into_inner()).clone())),
            Request::ApiResources => Ok(Reply::ApiResources(self.store.with(query::api_resources))),
            Request::Get(get) => self.store.with(|s| query::find(s, &get)).map(|f| query::render(f, &get)),
        }
    }

    /// Whether nothing is in progress or ready to be done.
    fn idle(&self) -> bool {
        self.once.is_none()
            && !self.sdc_pending()
            && !self.fetching
            && self.deferred.is_empty()
            && self.deferred_watch.is_empty()
            && self.work.as_ref().is_none_or(|w| !w.has_ready())
    }

    /// Answers the `Quiesce` requests that can be answered: all once idle, else those past
    /// their deadline.
    fn answer_quiesce(&mut self) {
        if self.quiesce.is_empty() {
            return;
        }
        if self.idle() {
            for (_, reply) in self.quiesce.drain(..) {
                let _ = reply.send(ServerMessage::Reply(Reply::Done));
            }
            return;
        }
        let now = std::time::Instant::now();
        self.quiesce.retain(|(deadline, reply)| {
            if deadline.is_some_and(|d| now >= d) {
                let report = ErrorReport::new(ErrorKind::Unavailable, "the engine is still busy");
                let _ = reply.send(ServerMessage::Error(report));
                return false;
            }
            true
        });
    }

    /// Whether the continuous runner owes a pass of `-s`.
    fn sdc_pending(&self) -> bool {
        #[cfg(feature = "sdc")]
        if let Some(sdc) = &self.sdc {
            return sdc.pending && self.work.is_some();
        }
        false
    }

    /// Tells `-s` that its inputs may have changed.
    fn touch_sdc(&mut self) {
        #[cfg(feature = "sdc")]
        if let Some(sdc) = &mut self.sdc {
            sdc.pending = true;
        }
    }

    fn layout(&self) -> Result<&Layout, ErrorReport> {
        self.layout.as_ref().ok_or_else(|| {
            ErrorReport::new(ErrorKind::Unavailable, "no project is loaded yet")
                .with_hint("give the server a project with `choreo server apply URL DIR REF [BRANCH]`")
        })
    }

    /// What the runner does, from the work in progress.
    fn runner(&self) -> Runner {
        if self.once.is_some() {
            Runner::Once
        } else if self.work.is_some() {
            Runner::Running
        } else {
            Runner::Stopped
        }
    }

    /// Shows connections what the runner does now (call after starting or ending work).
    fn publish_runner(&self) {
        let runner = self.runner();
        self.status.lock().unwrap_or_else(|p| p.into_inner()).runner = runner;
    }

    fn is_ready(&self) -> bool {
        self.status.lock().unwrap_or_else(|p| p.into_inner()).status == ServerState::Ready
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
        let mut progress = progress_sink(self.progress.clone());
        let result = load::load(
            &self.store,
            &layout,
            &mut self.load_cache,
            &mut self.sources,
            scope,
            &self.host,
            crate::repo::Progress { report: &mut progress, cancel: self.interrupt.shutdown_flag() },
        );
        crate::metrics::global().load(result.is_ok(), started.elapsed());
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
                    crate::memory::release();
                }
                if let Some(controllers) = summary.controllers {
                    self.controllers = controllers;
                }
                status.status = ServerState::Ready;
                status.reason.clear();
                Ok(())
            }
            Err(errors) => {
                log::warn!("load of {} failed: {}", layout.root.display(), errors.join("; "));
                status.status = ServerState::Failed;
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

/// Caps glibc's malloc arenas at two, for what C code (libgit2) allocates through glibc; Rust's
/// allocations go to jemalloc, which has two arenas of its own (see `src/lib.rs`). For glibc:
/// the calling thread's arena and the engine thread's (the first
/// thread spawned that allocates). By default each thread may get an arena of its own (up to
/// eight per core) and memory freed in one arena is never reused by another, so the parse
/// threads of a load and sled's flusher spread a 10k-object run's memory over several; two
/// rather than one keep the parse threads of a load from contending on a single lock (one
/// arena made a 10k-object load ~1.5 times slower).
fn limit_malloc_arenas() {
    // SAFETY: mallopt only changes an allocator parameter; M_ARENA_MAX applies to arenas
    // created afterwards and may be set while other threads allocate.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Where the progress lines of engine work go: the log, and the client of the request being
/// handled when there is one.
fn progress_sink(client: Option<Sender<ServerMessage>>) -> impl FnMut(String) {
    move |line: String| {
        log::info!("{}", line.trim_start_matches(crate::protocol::TRANSIENT));
        if let Some(c) = &client {
            let _ = c.send(ServerMessage::Progress(line));
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

#[cfg(test)]
mod tests {
    //! The engine in process: started on a copy of a fixture project, driven through
    //! [`Handle::serve`] as a connection thread drives it, reconcilers in this process.

    use super::*;
    use crate::protocol::{ApplyRequest, Document, GetRequest, RunOnceRequest};

    struct Harness {
        _tmp: tempfile::TempDir,
        root: PathBuf,
        handle: Handle,
        thread: Option<JoinHandle<()>>,
    }

    fn copy(from: &std::path::Path, to: &std::path::Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let target = to.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                copy(&entry.path(), &target);
            } else {
                std::fs::copy(entry.path(), target).unwrap();
            }
        }
    }

    impl Harness {
        fn start(fixture: &str) -> Harness {
            let tmp = tempfile::tempdir().unwrap();
            let root = tmp.path().join("project");
            copy(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(fixture), &root);
            let layout = Layout::new(root.clone());
            let state = layout.state_dir();
            let (handle, thread, _stop) = start(
                Mode::Static { layout },
                state,
                Options {
                    isolation: crate::reconcile::worker::Isolation::Thread,
                    internal_reconcilers: false,
                    sdc: None,
                },
            )
            .unwrap();
            Harness { _tmp: tmp, root, handle, thread: Some(thread) }
        }

        /// Every frame of the answer to `request`; the last one is final.
        fn ask(&self, request: Request) -> Vec<ServerMessage> {
            let mut out = Vec::new();
            self.handle.serve(request, &mut |m| {
                out.push(m);
                true
            });
            out
        }

        fn reply(&self, request: Request) -> Reply {
            match self.ask(request).pop() {
                Some(ServerMessage::Reply(r)) => r,
                other => panic!("no reply: {other:?}"),
            }
        }

        fn get(&self, resource: &str, name: &str) -> Option<serde_json::Value> {
            let req = GetRequest {
                resource: resource.into(),
                name: Some(name.into()),
                namespace: None,
                show_managed_fields: false,
                ..Default::default()
            };
            match self.ask(Request::Get(req)).pop() {
                Some(ServerMessage::Reply(Reply::Object(json))) => Some(serde_json::from_str(&json).unwrap()),
                _ => None,
            }
        }
    }

    impl Drop for Harness {
        fn drop(&mut self) {
            self.handle.shutdown();
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }

    #[test]
    fn a_run_once_reconciles_and_the_status_follows_it() {
        let h = Harness::start("fabric");
        let Reply::Status(s) = h.reply(Request::ServerStatus) else { panic!() };
        assert_eq!((s.status, s.runner, s.mode), (ServerState::Ready, Runner::Stopped, protocol::Mode::Static));
        let Reply::Run(summary) = h.reply(Request::RunOnce(RunOnceRequest { timeout_secs: 60, changed_only: false }))
        else {
            panic!()
        };
        assert!(summary.success, "{}", summary.message);
        assert!(h.get("deviceconfigs", "spine1").is_some());
        let Reply::Status(s) = h.reply(Request::ServerStatus) else { panic!() };
        assert_eq!(s.runner, Runner::Stopped);
    }

    #[test]
    fn quiesce_answers_once_the_continuous_runner_settled() {
        let h = Harness::start("fabric");
        assert!(matches!(h.reply(Request::RunStart), Reply::Done));
        assert!(matches!(h.reply(Request::Quiesce { timeout_secs: 60 }), Reply::Done));
        // Everything was reconciled by the time the answer came: no polling.
        assert!(h.get("deviceconfigs", "spine1").is_some());
        let doc = Document {
            source: "-".into(),
            json: r#"{"apiVersion":"net.example.org/v1alpha1","kind":"Device","metadata":{"name":"leaf9","namespace":"default"},"spec":{"asn":65109}}"#.into(),
        };
        let Reply::Items(items) =
            h.reply(Request::Apply(ApplyRequest { documents: vec![doc], force: false, dry_run: false }))
        else {
            panic!()
        };
        assert_eq!(items[0].outcome, protocol::ItemOutcome::Created, "{items:?}");
        assert!(matches!(h.reply(Request::Quiesce { timeout_secs: 60 }), Reply::Done));
        assert!(h.get("deviceconfigs", "leaf9").is_some());
        assert!(h.root.join("in").exists());
    }

    #[test]
    fn a_load_error_is_a_status_and_the_store_keeps_the_last_good_state() {
        let h = Harness::start("fabric");
        std::fs::write(
            h.root.join("in/broken.yaml"),
            "apiVersion: net.example.org/v1alpha1\nkind: Device\nmetadata: [\n",
        )
        .unwrap();
        let frames = h.ask(Request::RunLoad);
        assert!(matches!(frames.last(), Some(ServerMessage::Error(_))), "{frames:?}");
        let Reply::Status(s) = h.reply(Request::ServerStatus) else { panic!() };
        assert_eq!(s.status, ServerState::Failed);
        assert!(s.reason.contains("in/broken.yaml:"), "{}", s.reason);
        assert!(h.get("devices", "spine1").is_some());
    }
}

//! The server side of the reconcile worker: starting it, compiling reconcilers in it, and
//! [`Isolated`], the [`Runtime`] that runs a reconcile there while answering its store calls.
//!
//! Waiting for the worker never blocks without bound: the pipe is polled in slices of at most
//! [`SLICE`], so a raised interrupt (shutdown, `run stop`) kills the worker within one slice, and
//! a reconcile that overruns its deadline by [`GRACE`] is killed too. A worker that died (or was
//! killed) is reaped, its last stderr lines become the error, and the next reconcile starts a
//! new one and compiles the reconcilers again.
//!
//! The worker and the server overlap: once a reconcile's result is in, the next queued
//! reconciles (up to [`AHEAD_DEPTH`](crate::reconcile::AHEAD_DEPTH) of them, topped up when at
//! most one is left, so that an idle worker is woken once per two) are sent
//! ([`Runtime::start_ahead`]) while the server stores the result; the worker runs them in order
//! and keeps a reconcile that arrives while it waits for an answer until its turn. A turn
//! compares the inputs its reconcile was sent (for-object text, children keys, clock to the
//! second) with the current ones and uses it only when they are equal and it started at most
//! [`AHEAD_FRESH`] before; its store calls are answered then, so it reads what a reconcile
//! started at that moment would. A changed input discards it unseen (its calls fail, its logs
//! are dropped) and it runs again. Only the first reconcile ahead may be large: the others are
//! sent only while all of them fit in the pipe ([`AHEAD_SMALL`]), so a send never waits for a
//! worker that is itself waiting to be read.

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::wire::{self, Answer, Call, End, FromWorker, Key, ToWorker};
use super::GRACE;
use crate::api::object::ObjectKey;
use crate::reconcile::{
    AheadInput, Budget, Client, ClientError, Exhausted, ForObject, Interrupt, Outcome, ReconcilerConfig, ResourceRef,
    Runtime, Selector,
};

/// The longest a wait sleeps before it looks at the interrupt and the deadline again.
const SLICE: Duration = Duration::from_millis(100);
/// How long a reconcile started ahead and not needed may take to finish before its worker is
/// stopped instead (and started again by the next reconcile).
const DISCARD_WAIT: Duration = Duration::from_millis(200);
/// How long a reconcile started ahead stays usable (its deadline counts from its start, so it
/// must not start much earlier than its turn; it is normally a commit's time ahead).
const AHEAD_FRESH: Duration = Duration::from_millis(100);
/// The largest reconcile message sent ahead behind another one: with the pipe's 64 KiB, the
/// [`AHEAD_DEPTH`](crate::reconcile::AHEAD_DEPTH) of them fit without a write waiting for the
/// worker to read.
const AHEAD_SMALL: usize = 16 << 10;
/// How long a new worker may take to greet.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// The stderr lines of a worker kept for the error when it dies.
const TAIL_LINES: usize = 12;

/// The worker process (when one runs) and what it has compiled.
pub(super) struct Worker {
    program: PathBuf,
    memory_mib: u64,
    interrupt: Arc<Interrupt>,
    generation: AtomicU64,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    proc: Option<Proc>,
    /// The generation of the set the running worker compiled.
    compiled: Option<u64>,
    /// The reconciles the worker was given ahead of their turn, in the order it runs them:
    /// running, done and unread, or still in the pipe.
    ahead: VecDeque<Ahead>,
    /// Whether the current offer of reconciles to start ahead is taken.
    topping_up: bool,
}

/// A reconcile sent ahead: what it was sent with, to compare with what its turn would send.
struct Ahead {
    generation: u64,
    index: usize,
    key: ObjectKey,
    /// The size of the message it was sent in.
    size: usize,
    object: String,
    children: Option<Vec<Key>>,
    /// The reconcile's clock (a second's resolution): used only if its turn comes in the same
    /// second, so its condition times are those a reconcile started then would write.
    now: String,
    sent: Instant,
    /// When it overruns (its own deadline plus grace).
    hard: Option<Instant>,
}

/// What one compile sends, kept to compile again in a new worker.
pub(super) struct CompileSet {
    generation: u64,
    libraries: Vec<(String, String)>,
    reconcilers: Vec<String>,
    names: Vec<String>,
    timeouts: Vec<Duration>,
}

/// Why waiting for the worker ended without a message.
enum Stop {
    /// The process died (or its pipes broke); the text says how.
    Died(String),
    /// Work was cancelled from outside; the worker was killed.
    Cancelled(Exhausted),
    /// The deadline plus grace passed; the worker was killed.
    Overran(Exhausted),
    /// It sent something out of turn; it was killed.
    Protocol(String),
}

impl Worker {
    pub(super) fn new(program: PathBuf, memory_mib: u64, interrupt: Arc<Interrupt>) -> Worker {
        Worker { program, memory_mib, interrupt, generation: AtomicU64::new(0), state: Mutex::default() }
    }

    pub(super) fn pid(&self) -> Option<u32> {
        self.lock().proc.as_ref().map(|p| p.child.id())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves a state that is still consistent (at worst a
        // process to kill), so a poisoned lock is used as is.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Some(proc) = state.proc.take() {
            proc.kill();
        }
    }
}

/// Compiles `reconcilers` in the worker: a runtime for each that compiled, its error otherwise.
pub(super) fn compile(
    worker: &Arc<Worker>,
    libraries: BTreeMap<String, String>,
    reconcilers: Vec<(Arc<ReconcilerConfig>, Value)>,
) -> Vec<Result<Box<dyn Runtime>, String>> {
    // No reconcilers, no worker to start.
    if reconcilers.is_empty() {
        return Vec::new();
    }
    let set = Arc::new(CompileSet {
        generation: worker.generation.fetch_add(1, Ordering::Relaxed) + 1,
        libraries: libraries.into_iter().collect(),
        reconcilers: reconcilers.iter().map(|(_, obj)| obj.to_string()).collect(),
        names: reconcilers.iter().map(|(cfg, _)| cfg.name.clone()).collect(),
        timeouts: reconcilers.iter().map(|(cfg, _)| cfg.limits.timeout).collect(),
    });
    let result = worker.lock().compile(worker, &set);
    let runtime = |index: usize, cfg: &Arc<ReconcilerConfig>| -> Box<dyn Runtime> {
        Box::new(Isolated { worker: worker.clone(), set: set.clone(), index, cfg: cfg.clone() })
    };
    match result {
        Ok(errors) => reconcilers
            .iter()
            .enumerate()
            .map(|(i, (cfg, _))| match errors.get(i).cloned().flatten() {
                Some(e) => Err(e),
                None => Ok(runtime(i, cfg)),
            })
            .collect(),
        Err((at, reason)) => reconcilers
            .iter()
            .enumerate()
            .map(|(i, (cfg, _))| match at {
                // The others were not compiled, but this load fails anyway.
                Some(bad) if bad != i => Ok(runtime(i, cfg)),
                _ => Err(reason.clone()),
            })
            .collect(),
    }
}

impl State {
    /// Compiles `set` (starting a worker if none runs). `Err((reconciler being compiled, why))`
    /// when the worker could not start, died or overran.
    fn compile(&mut self, w: &Worker, set: &CompileSet) -> Result<Vec<Option<String>>, (Option<usize>, String)> {
        while let Some(a) = self.ahead.pop_front() {
            self.discard(w, a);
        }
        self.ensure_running(w).map_err(|e| (None, e))?;
        let msg = ToWorker::Compile {
            generation: set.generation,
            libraries: set.libraries.clone(),
            reconcilers: set.reconcilers.clone(),
        };
        self.send(&msg).map_err(|e| (None, e))?;
        let mut current: Option<usize> = None;
        let mut deadline = Instant::now().checked_add(START_TIMEOUT);
        loop {
            match self.recv(w, deadline, None) {
                Ok(FromWorker::Compiling { index }) => {
                    let i = index as usize;
                    current = Some(i);
                    let timeout = set.timeouts.get(i).copied().unwrap_or(crate::reconcile::Limits::DEFAULT_TIMEOUT);
                    deadline = Instant::now().checked_add(timeout).and_then(|d| d.checked_add(GRACE));
                }
                Ok(FromWorker::Log { level, target, message }) => forward_log(level, &target, &message),
                Ok(FromWorker::Compiled { errors }) => {
                    self.compiled = Some(set.generation);
                    return Ok(errors);
                }
                Ok(other) => {
                    let why = format!("protocol error: the reconcile worker sent {other:?} while compiling");
                    self.kill();
                    return Err((current, why));
                }
                Err(stop) => {
                    let name = current.and_then(|i| set.names.get(i));
                    let why = match stop {
                        Stop::Died(how) => format!("loading its code killed the reconcile worker: {how}"),
                        Stop::Overran(_) => format!(
                            "loading its code did not finish within {}s (spec.limits.timeoutSeconds); its worker process was stopped",
                            current.and_then(|i| set.timeouts.get(i)).map_or(0, Duration::as_secs)
                        ),
                        Stop::Cancelled(why) => format!("loading its code: {why}"),
                        Stop::Protocol(p) => p,
                    };
                    log::debug!("compiling reconciler {}: {why}", name.map_or("?", String::as_str));
                    return Err((current, why));
                }
            }
        }
    }

    fn ensure_running(&mut self, w: &Worker) -> Result<(), String> {
        if self.proc.is_some() {
            return Ok(());
        }
        self.compiled = None;
        let mut proc = Proc::spawn(w)?;
        let deadline = Instant::now().checked_add(START_TIMEOUT);
        match proc.recv(&w.interrupt, deadline, None) {
            Ok(FromWorker::Hello { version }) if version == wire::VERSION => {
                log::debug!("reconcile worker {} started", proc.child.id());
                self.proc = Some(proc);
                Ok(())
            }
            Ok(other) => {
                proc.kill();
                Err(format!("the reconcile worker is a different build (it said {other:?}); restart the server"))
            }
            Err(stop) => {
                proc.kill();
                Err(format!("the reconcile worker did not start: {}", describe(stop)))
            }
        }
    }

    fn send(&mut self, msg: &ToWorker) -> Result<(), String> {
        let frame = wire::encode(msg).map_err(|e| e.to_string())?;
        self.send_frame(&frame)
    }

    fn send_frame(&mut self, frame: &[u8]) -> Result<(), String> {
        let Some(proc) = self.proc.as_mut() else { return Err("the reconcile worker is not running".into()) };
        let sent = proc.stdin.write_all(frame).and_then(|()| proc.stdin.flush()).map_err(|e| e.to_string());
        sent.map_err(|e| {
            // A write fails when the worker is gone: say how it went.
            let how = self.proc.take().map_or_else(|| e.clone(), |p| p.reap());
            self.compiled = None;
            self.ahead.clear();
            format!("the reconcile worker died: {how}")
        })
    }

    fn recv(&mut self, w: &Worker, deadline: Option<Instant>, budget: Option<&Budget<'_>>) -> Result<FromWorker, Stop> {
        let Some(proc) = self.proc.as_mut() else { return Err(Stop::Died("it is not running".into())) };
        let got = proc.recv(&w.interrupt, deadline, budget);
        if got.is_err() {
            // Whatever stopped the wait, this worker is done: dead already, or killed now.
            self.kill();
        }
        got
    }

    fn kill(&mut self) {
        if let Some(p) = self.proc.take() {
            p.kill();
        }
        self.compiled = None;
        self.ahead.clear();
    }

    /// Lets a reconcile sent ahead finish unseen: its store calls fail (so it changes nothing),
    /// its logs are dropped (it runs again and logs then), and if it does not end soon its
    /// worker is stopped.
    fn discard(&mut self, w: &Worker, a: Ahead) {
        let soon = Instant::now() + DISCARD_WAIT;
        let deadline = a.hard.map_or(soon, |h| h.min(soon));
        loop {
            match self.recv(w, Some(deadline), None) {
                Ok(FromWorker::Calls { .. }) => {
                    let answer =
                        Answer::Failed { message: "the reconcile started ahead is not needed".into(), fatal: true };
                    if self.send(&ToWorker::Reply(answer)).is_err() {
                        return;
                    }
                }
                Ok(FromWorker::Log { .. }) => {}
                Ok(FromWorker::End { .. }) => return,
                Ok(_) => {
                    self.kill();
                    return;
                }
                // The wait stopped the worker (or it had died): the next reconcile starts one.
                Err(_) => return,
            }
        }
    }
}

fn describe(stop: Stop) -> String {
    match stop {
        Stop::Died(how) => how,
        Stop::Cancelled(why) | Stop::Overran(why) => why.to_string(),
        Stop::Protocol(p) => p,
    }
}

fn forward_log(level: u8, target: &str, message: &str) {
    let level = match level {
        1 => log::Level::Error,
        2 => log::Level::Warn,
        3 => log::Level::Info,
        4 => log::Level::Debug,
        _ => log::Level::Trace,
    };
    log::log!(target: target, level, "{message}");
}

/// A running worker process and its pipes.
struct Proc {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
    /// Bytes read and not yet taken as frames.
    buf: Vec<u8>,
    /// Where reads land (allocated and zeroed once, not per read).
    chunk: Box<[u8]>,
    tail: Arc<Mutex<VecDeque<String>>>,
    stderr: Option<std::thread::JoinHandle<()>>,
}

impl Proc {
    fn spawn(w: &Worker) -> Result<Proc, String> {
        let mut cmd = Command::new(&w.program);
        // The service manager's variables are the server's, not the worker's.
        for var in ["NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "WATCHDOG_USEC", "WATCHDOG_PID"] {
            cmd.env_remove(var);
        }
        cmd.arg("__reconcile-worker")
            .arg("--memory-mib")
            .arg(w.memory_mib.to_string())
            .arg("--log-level")
            .arg(log::max_level().to_string())
            .arg("--parent")
            .arg(std::process::id().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("RUST_BACKTRACE", "0")
            // Its own process group: a Ctrl-C in the server's terminal is the server's to handle.
            .process_group(0);
        let mut child =
            cmd.spawn().map_err(|e| format!("cannot start the reconcile worker {}: {e}", w.program.display()))?;
        let (Some(stdin), Some(stdout), Some(stderr)) = (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            let _ = child.kill();
            let _ = child.wait();
            return Err("cannot start the reconcile worker: its pipes are missing".into());
        };
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let lines = tail.clone();
        let pid = child.id();
        let stderr = std::thread::Builder::new()
            .name("choreo-worker-stderr".into())
            .spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    log::debug!(target: "choreo::worker", "worker {pid}: {line}");
                    let mut t = lines.lock().unwrap_or_else(|e| e.into_inner());
                    if t.len() == TAIL_LINES {
                        t.pop_front();
                    }
                    t.push_back(line);
                }
            })
            .ok();
        Ok(Proc { child, stdin, stdout, buf: Vec::new(), chunk: vec![0u8; 64 << 10].into_boxed_slice(), tail, stderr })
    }

    /// The next message, waiting at most until `deadline` (hard) and while nothing interrupts:
    /// with a `budget` (a reconcile) anything raised on its interrupt, else (a compile, a start)
    /// only a shutdown.
    fn recv(
        &mut self,
        interrupt: &Interrupt,
        deadline: Option<Instant>,
        budget: Option<&Budget<'_>>,
    ) -> Result<FromWorker, Stop> {
        loop {
            if let Some(msg) = self.take_frame()? {
                return Ok(msg);
            }
            let raised = match budget {
                Some(b) => b.interrupt.raised().or_else(|| interrupt.raised()),
                None => interrupt.raised().filter(|why| *why == Exhausted::ShuttingDown),
            };
            if let Some(why) = raised {
                return Err(Stop::Cancelled(why));
            }
            let now = Instant::now();
            let wait = match deadline {
                Some(d) if now >= d => {
                    let why = budget.and_then(Budget::exhausted).unwrap_or(Exhausted::Timeout(
                        budget.map_or(crate::reconcile::Limits::DEFAULT_TIMEOUT, |b| b.limits.timeout),
                    ));
                    return Err(Stop::Overran(why));
                }
                Some(d) => (d - now).min(SLICE),
                None => SLICE,
            };
            if !poll_readable(self.stdout.as_raw_fd(), wait)
                .map_err(|e| Stop::Died(format!("polling its pipe: {e}")))?
            {
                continue;
            }
            match self.stdout.read(&mut self.chunk) {
                Ok(0) => return Err(Stop::Died(self.reap_in_place())),
                Ok(n) => self.buf.extend_from_slice(&self.chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Stop::Died(format!("reading its pipe: {e}"))),
            }
        }
    }

    fn take_frame(&mut self) -> Result<Option<FromWorker>, Stop> {
        if self.buf.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_le_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if len > wire::MAX_FRAME {
            return Err(Stop::Protocol(format!("the reconcile worker sent a frame of {len} bytes")));
        }
        if self.buf.len() < 4 + len {
            self.buf.reserve(4 + len - self.buf.len());
            return Ok(None);
        }
        let msg = wire::decode(&self.buf[4..4 + len]).map_err(|e| Stop::Protocol(e.to_string()));
        self.buf.drain(..4 + len);
        msg.map(Some)
    }

    /// How the worker ended, once its output closed: waits for it (a moment), then says how it
    /// exited, with its last stderr lines.
    fn reap_in_place(&mut self) -> String {
        let started = Instant::now();
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if started.elapsed() < Duration::from_secs(2) => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                _ => {
                    let _ = self.child.kill();
                    break self.child.wait().ok();
                }
            }
        };
        if let Some(t) = self.stderr.take() {
            let _ = t.join();
        }
        let how = match status {
            Some(s) => match (s.code(), s.signal()) {
                (Some(code), _) => format!("it exited with status {code}"),
                (_, Some(sig)) => format!("it was killed by signal {sig} ({})", signal_name(sig)),
                _ => "it ended".to_string(),
            },
            None => "it ended".to_string(),
        };
        let tail = self.tail.lock().unwrap_or_else(|e| e.into_inner());
        let lines: Vec<&str> = tail
            .iter()
            .map(|l| l.trim())
            .filter(|l| !l.is_empty() && !l.starts_with("note: run with `RUST_BACKTRACE"))
            .collect();
        let mut out = how;
        if !lines.is_empty() {
            out.push_str(": ");
            out.push_str(&lines.join("; "));
        }
        if lines.iter().any(|l| l.contains("memory allocation of")) {
            out.push_str(" (the reconcile worker's memory is bounded by server start --worker-memory-mib)");
        }
        out
    }

    fn reap(mut self) -> String {
        self.reap_in_place()
    }

    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(t) = self.stderr.take() {
            let _ = t.join();
        }
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGABRT => "SIGABRT: an allocation failed or the process aborted",
        libc::SIGKILL => "SIGKILL: killed, possibly by the kernel's out-of-memory killer",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGBUS => "SIGBUS",
        libc::SIGTERM => "SIGTERM",
        _ => "a signal",
    }
}

/// Waits until `fd` can be read (or is closed) for at most `timeout`.
fn poll_readable(fd: std::os::fd::RawFd, timeout: Duration) -> std::io::Result<bool> {
    let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    let ms = timeout.as_millis().clamp(1, i32::MAX as u128) as i32;
    // SAFETY: one valid pollfd for the duration of the call.
    let r = unsafe { libc::poll(&mut pfd, 1, ms) };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        return if e.kind() == std::io::ErrorKind::Interrupted { Ok(false) } else { Err(e) };
    }
    Ok(r > 0)
}

/// A reconciler compiled in the worker.
struct Isolated {
    worker: Arc<Worker>,
    set: Arc<CompileSet>,
    index: usize,
    cfg: Arc<ReconcilerConfig>,
}

impl Isolated {
    /// The keys of `object`'s children of the `owns` kinds, when it has any kinds to own.
    fn children_ahead(&self, object: &ForObject, client: &mut dyn Client) -> Option<Vec<Key>> {
        let uid = object.uid()?;
        if self.cfg.owns.is_empty() {
            return None;
        }
        let keys = client.child_keys_of(uid, &self.cfg.owns).ok()?;
        Some(keys.into_iter().map(key_of).collect())
    }
}

impl Runtime for Isolated {
    fn runs_ahead(&self) -> bool {
        true
    }

    fn start_ahead(&self, input: AheadInput) {
        let w = &*self.worker;
        let mut st = w.lock();
        // An offer is taken when at most one reconcile is still ahead: the worker then wakes
        // once for two (or more) and always has the next one.
        if input.first {
            st.topping_up = st.ahead.len() <= 1;
        }
        // Only into a worker that has this reconciler's code and room for it, and once.
        if !st.topping_up
            || st.ahead.len() >= crate::reconcile::AHEAD_DEPTH
            || st.proc.is_none()
            || st.compiled != Some(self.set.generation)
            || st.ahead.iter().any(|a| a.index == self.index && a.key == input.key)
        {
            return;
        }
        let at = Instant::now();
        let deadline = at.checked_add(self.cfg.limits.timeout);
        let children: Option<Vec<Key>> = input.children.map(|keys| keys.into_iter().map(key_of).collect());
        let msg = ToWorker::Reconcile {
            generation: self.set.generation,
            index: self.index as u32,
            object: input.object,
            now: crate::store::now_rfc3339(),
            timeout_ms: millis_left(at, deadline),
            run_timeout_ms: millis_left(at, input.run_deadline),
            children,
        };
        let hard = hard_deadline(deadline, input.run_deadline);
        let Ok(frame) = wire::encode(&msg) else { return };
        // Behind another one, only what fits in the pipe with it (see `AHEAD_SMALL`).
        if !st.ahead.is_empty() && (frame.len() > AHEAD_SMALL || st.ahead.iter().any(|a| a.size > AHEAD_SMALL)) {
            return;
        }
        if st.send_frame(&frame).is_ok() {
            let ToWorker::Reconcile { object, children, now, .. } = msg else { return };
            st.ahead.push_back(Ahead {
                generation: self.set.generation,
                index: self.index,
                key: input.key,
                size: frame.len(),
                object,
                children,
                now,
                sent: at,
                hard,
            });
        }
    }

    fn reconcile(&self, object: &Value, client: &mut dyn Client, budget: &Budget<'_>) -> Outcome {
        self.reconcile_for(&ForObject::Parsed(Arc::new(object.clone())), client, budget)
    }

    fn reconcile_for(&self, object: &ForObject, client: &mut dyn Client, budget: &Budget<'_>) -> Outcome {
        let w = &*self.worker;
        let mut st = w.lock();
        let text = object.text().into_owned();
        let children = self.children_ahead(object, client);
        let now = client.now();
        // A reconcile started ahead with exactly these inputs computed what this one would.
        // The worker runs them in order: those before it are not needed (their objects left
        // the queue or changed), nor are all of them when none is this one.
        let mut waited = false;
        let mut adopted = false;
        while let Some(a) = st.ahead.pop_front() {
            if a.generation == self.set.generation
                && a.index == self.index
                && a.object == text
                && a.children == children
                && a.now == now
                && a.sent.elapsed() < AHEAD_FRESH
            {
                crate::metrics::global().ahead(true);
                adopted = true;
                break;
            }
            crate::metrics::global().ahead(false);
            st.discard(w, a);
            waited = true;
        }
        // What discarding took (a wait, maybe a new worker) is not this reconcile's time.
        let restarted;
        let budget = if waited {
            restarted = Budget::start(budget.limits, budget.run_deadline, budget.interrupt);
            &restarted
        } else {
            budget
        };
        if !adopted {
            // A new set of code, or a worker that died or was stopped (by a discard too).
            if st.compiled != Some(self.set.generation) {
                match st.compile(w, &self.set) {
                    Ok(errors) => {
                        if let Some(Some(e)) = errors.get(self.index) {
                            return Outcome::Error(e.clone());
                        }
                    }
                    Err((_, why)) => return Outcome::Error(format!("starting a reconcile worker: {why}")),
                }
            }
            let at = Instant::now();
            let msg = ToWorker::Reconcile {
                generation: self.set.generation,
                index: self.index as u32,
                object: text,
                now,
                timeout_ms: millis_left(at, budget.deadline),
                run_timeout_ms: millis_left(at, budget.run_deadline),
                children,
            };
            if let Err(e) = st.send(&msg) {
                return Outcome::Error(e);
            }
        }
        let hard = hard_deadline(budget.deadline, budget.run_deadline);
        loop {
            match st.recv(w, hard, Some(budget)) {
                Ok(FromWorker::Calls { deferred, call }) => {
                    let answer = answer(client, deferred, call);
                    if let Err(e) = st.send(&ToWorker::Reply(answer)) {
                        return Outcome::Error(e);
                    }
                }
                Ok(FromWorker::Log { level, target, message }) => forward_log(level, &target, &message),
                Ok(FromWorker::End { deferred, end }) => {
                    // The worker is free: the next reconcile may start there while this one's
                    // results are stored.
                    drop(st);
                    if !matches!(end, End::Error(_)) {
                        client.ahead();
                    }
                    if !deferred.is_empty() {
                        if let Answer::Failed { message, fatal } = answer(client, deferred, None) {
                            return if fatal {
                                Outcome::Error(message)
                            } else {
                                Outcome::Requeue { after: None, message }
                            };
                        }
                    }
                    return match end {
                        End::Done => Outcome::Done,
                        End::Requeue { after_ms, message } => {
                            Outcome::Requeue { after: after_ms.map(Duration::from_millis), message }
                        }
                        End::Error(e) => Outcome::Error(e),
                    }
                }
                Ok(other) => {
                    st.kill();
                    return Outcome::Error(format!(
                        "internal error: the reconcile worker of {} sent {other:?} during a reconcile",
                        self.cfg.name
                    ));
                }
                Err(Stop::Died(how)) => return Outcome::Error(format!("the reconcile worker died: {how}")),
                Err(Stop::Cancelled(why)) => return Outcome::Error(why.to_string()),
                Err(Stop::Overran(why)) => {
                    return Outcome::Error(format!(
                        "{why}; the script was inside a builtin that does not return to the interpreter (such as str() of a huge value), so its worker process was stopped"
                    ))
                }
                Err(Stop::Protocol(p)) => return Outcome::Error(format!("internal error: {p}")),
            }
        }
    }
}

/// Makes the deferred calls in order, then `call`; the first failure is the answer.
fn answer(client: &mut dyn Client, deferred: Vec<Call>, call: Option<Call>) -> Answer {
    for c in deferred {
        if let Err(e) = make(client, c) {
            return failed(e);
        }
    }
    if let Err(e) = client.flush() {
        return failed(e);
    }
    match call {
        None => Answer::Unit,
        Some(c) => make(client, c).unwrap_or_else(failed),
    }
}

/// Milliseconds from `at` until `deadline` (what the worker is told).
fn millis_left(at: Instant, deadline: Option<Instant>) -> Option<u64> {
    deadline.map(|d| d.saturating_duration_since(at).as_millis().min(u64::MAX as u128) as u64)
}

/// When the server stops waiting for a reconcile: the earlier of its own and the run's
/// deadline, plus [`GRACE`] for the worker to report the timeout itself.
fn hard_deadline(own: Option<Instant>, run: Option<Instant>) -> Option<Instant> {
    match (own, run) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
    .and_then(|d| d.checked_add(GRACE))
}

fn key_of(k: ObjectKey) -> Key {
    Key { group: k.group, kind: k.kind, namespace: k.namespace, name: k.name }
}

fn failed(e: ClientError) -> Answer {
    Answer::Failed { message: e.message, fatal: e.fatal }
}

fn parse(text: &str) -> Result<Value, ClientError> {
    serde_json::from_str(text).map_err(|e| ClientError::fatal(format!("internal error: a worker's object: {e}")))
}

fn refs(kinds: Vec<wire::Kind>) -> Vec<ResourceRef> {
    kinds.into_iter().map(|k| ResourceRef { group: k.group, version: k.version, kind: k.kind }).collect()
}

fn make(client: &mut dyn Client, call: Call) -> Result<Answer, ClientError> {
    Ok(match call {
        Call::Get { api_version, kind, namespace, name } => {
            Answer::Object(client.get(&api_version, &kind, &namespace, &name)?.map(|o| o.to_string()))
        }
        Call::List { api_version, kind, selector } => {
            let selector = Selector::parse(Some(&parse(&selector)?), "selector").map_err(ClientError::fatal)?;
            Answer::Objects(client.list(&api_version, &kind, &selector)?.iter().map(Value::to_string).collect())
        }
        Call::Apply { object, manager, read: true } => {
            Answer::Object(Some(client.apply(&parse(&object)?, &manager)?.to_string()))
        }
        Call::Apply { object, manager, read: false } => {
            client.apply_unread_sent(&parse(&object)?, &object, &manager)?;
            Answer::Unit
        }
        Call::Delete { api_version, kind, namespace, name } => {
            client.delete(&api_version, &kind, &namespace, &name)?;
            Answer::Unit
        }
        Call::ChildrenOf { owner_uid, kinds } => {
            Answer::Objects(client.children_of(&owner_uid, &refs(kinds))?.iter().map(Value::to_string).collect())
        }
        Call::ChildKeysOf { owner_uid, kinds } => {
            Answer::Keys(client.child_keys_of(&owner_uid, &refs(kinds))?.into_iter().map(key_of).collect())
        }
        Call::DeleteKey(k) => {
            client.delete_key(&ObjectKey { group: k.group, kind: k.kind, namespace: k.namespace, name: k.name })?;
            Answer::Unit
        }
    })
}

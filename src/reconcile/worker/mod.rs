//! Where reconciler code runs: in the server's engine thread, or in a worker process that can
//! die without taking the server along.
//!
//! Most limits are checked inside the interpreter ([`super::limits`]), but two things cannot be
//! caught in process: an allocation larger than the machine (`[0] * (1 << 30)` aborts the whole
//! process when malloc fails, or wakes the OOM killer), and a builtin that works natively for
//! hours without returning to the interpreter (`str()` of a value that shares its parts
//! exponentially). With [`Isolation::Process`] (the server's default) reconcilers are compiled
//! and run in `choreo __reconcile-worker`, whose address space is bounded; the server answers its
//! store calls over pipes, kills it when a reconcile overruns its deadline by [`GRACE`] or the
//! work is cancelled, reports a worker that died as that reconcile's error, and starts a new
//! worker for the next reconcile. [`Isolation::Thread`] runs the code in process (tests, tools,
//! and users who trust their reconcilers and want the last bit of speed).
//!
//! *Invariant:* the server side knows processes, pipes and the [`super::Client`] it forwards to,
//! never the store; the worker side ([`serve`]) knows the runtimes, never the engine.

mod host;
mod serve;
mod wire;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

pub use serve::{serve, WorkerArgs};

use super::{Interrupt, Libraries, ReconcilerConfig, Runtime};

/// How long a reconcile may overrun its deadline before its worker is killed: the interpreter
/// stops a script at its next check (every thousand steps) well within it.
pub const GRACE: Duration = Duration::from_millis(500);

/// The default of `server start --worker-memory-mib`.
pub const DEFAULT_WORKER_MEMORY_MIB: u64 = 2048;

/// Where reconcilers run.
#[derive(Debug, Clone)]
pub enum Isolation {
    /// In the calling thread (which needs a stack of [`super::Limits::STACK`]).
    Thread,
    /// In a worker process started from `program` (the server's own binary).
    Process { program: PathBuf, memory_mib: u64 },
}

impl Isolation {
    /// A worker started from the running binary (`/proc/self/exe`, which stays the binary the
    /// server started from even when a package upgrade replaces the file).
    pub fn process(memory_mib: u64) -> Isolation {
        Isolation::Process { program: PathBuf::from("/proc/self/exe"), memory_mib }
    }
}

/// Compiles reconcilers where they will run. Owned by the engine; at most one worker process.
pub struct Host {
    kind: HostKind,
}

enum HostKind {
    Thread,
    Process(Arc<host::Worker>),
}

impl Host {
    /// `interrupt` stops a compile or reconcile in progress when raised (shutdown, `run stop`).
    pub fn new(isolation: Isolation, interrupt: Arc<Interrupt>) -> Host {
        let kind = match isolation {
            Isolation::Thread => HostKind::Thread,
            Isolation::Process { program, memory_mib } => {
                HostKind::Process(Arc::new(host::Worker::new(program, memory_mib, interrupt)))
            }
        };
        Host { kind }
    }

    /// Compiles `reconcilers` (each with the `Reconciler` object it was read from) against the
    /// Starlark `libraries`; one result per reconciler, in order.
    pub fn compile(
        &self,
        libraries: BTreeMap<String, String>,
        reconcilers: Vec<(Arc<ReconcilerConfig>, Value)>,
    ) -> Vec<Result<Box<dyn Runtime>, String>> {
        match &self.kind {
            HostKind::Thread => {
                let libs = Arc::new(Libraries::new(libraries));
                reconcilers.into_iter().map(|(cfg, _)| super::compile(cfg, &libs)).collect()
            }
            HostKind::Process(worker) => host::compile(worker, libraries, reconcilers),
        }
    }

    /// The worker's process id, while one runs.
    pub fn worker_pid(&self) -> Option<u32> {
        match &self.kind {
            HostKind::Thread => None,
            HostKind::Process(w) => w.pid(),
        }
    }
}

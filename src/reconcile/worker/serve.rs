//! The worker side: `choreo __reconcile-worker`, a process that compiles reconcilers and runs
//! reconciles for the server, reaching the store only through the server over its pipes.
//!
//! The process bounds itself before it reads a message: its address space (so an allocation a
//! script's heap limit cannot see, like `[0] * (1 << 30)`, fails here and ends this process, not
//! the server), death with its parent, and reconciles on a stack of [`Limits::STACK`].
//! *Invariant:* knows the runtimes and the wire, never the store or the engine; everything a
//! reconcile reads or writes is a [`Call`] answered by the server.

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::os::fd::AsFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::wire::{self, Answer, Call, End, FromWorker, Key, Kind, ToWorker};
use crate::api::object::ObjectKey;
use crate::reconcile::{
    compile, panic_text, Budget, Client, ClientError, Interrupt, Libraries, Limits, Outcome, ReconcilerConfig,
    ResourceRef, Runtime, Selector,
};

/// Address space the worker may use besides its reconcile stack: the binary, its libraries
/// and the allocator's own reservations.
const BASE_ADDRESS_SPACE: u64 = 512 << 20;

/// How the server starts its worker.
#[derive(Debug, Clone)]
pub struct WorkerArgs {
    /// Memory (MiB of address space beyond the stack and the base) the process may use.
    pub memory_mib: u64,
    pub log_level: log::LevelFilter,
    /// The server's pid: the worker ends when it is gone.
    pub parent: u32,
}

type Output = Arc<Mutex<BufWriter<File>>>;

/// Runs the worker until its input ends. Errors are for its stderr, which the server reads.
pub fn serve(args: WorkerArgs) -> Result<(), String> {
    bound_process(&args)?;
    // The worker does nothing but run reconciles.
    crate::memory::always_running();
    let stdout = std::io::stdout().as_fd().try_clone_to_owned().map_err(|e| format!("stdout: {e}"))?;
    let out: Output = Arc::new(Mutex::new(BufWriter::new(File::from(stdout))));
    // Logging can only be set up once per process; the worker has no other logger.
    if log::set_boxed_logger(Box::new(FrameLogger { out: out.clone() })).is_ok() {
        log::set_max_level(args.log_level);
    }
    let thread = std::thread::Builder::new()
        .name("choreo-reconcile-worker".into())
        .stack_size(Limits::STACK)
        .spawn(move || serve_loop(out))
        .map_err(|e| format!("cannot start the reconcile thread: {e}"))?;
    thread.join().map_err(|_| "the reconcile thread panicked".to_string())?
}

/// Dies with the parent, limits the address space and keeps one malloc arena.
fn bound_process(args: &WorkerArgs) -> Result<(), String> {
    // SAFETY: plain system calls on this process, with valid arguments.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if libc::getppid() as u32 != args.parent {
            return Err("the server went away before the worker started".into());
        }
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
    let bytes = (Limits::STACK as u64).saturating_add(BASE_ADDRESS_SPACE).saturating_add(args.memory_mib << 20);
    let limit = libc::rlimit { rlim_cur: bytes, rlim_max: bytes };
    // SAFETY: setrlimit reads the struct we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_AS, &limit) } != 0 {
        return Err(format!("cannot limit the address space: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

struct FrameLogger {
    out: Output,
}

impl log::Log for FrameLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let msg = FromWorker::Log {
            level: record.level() as u8,
            target: record.target().to_string(),
            message: record.args().to_string(),
        };
        if let Ok(mut out) = self.out.lock() {
            let _ = wire::write(&mut *out, &msg);
        }
    }

    fn flush(&self) {}
}

/// A reconciler compiled in the worker: its configuration (for its limits) and its code.
type Built = (Arc<ReconcilerConfig>, Box<dyn Runtime>);

/// The compiled set the server last sent.
struct Compiled {
    generation: u64,
    runtimes: Vec<Option<Built>>,
}

fn serve_loop(out: Output) -> Result<(), String> {
    let mut io = Io { input: BufReader::new(std::io::stdin().lock()), out, waiting: VecDeque::new() };
    io.send(&FromWorker::Hello { version: wire::VERSION })?;
    let mut compiled: Option<Compiled> = None;
    while let Some(msg) = io.receive()? {
        match msg {
            ToWorker::Compile { generation, libraries, reconcilers } => {
                // The old set goes before the new one is built.
                drop(compiled.take());
                let (set, errors) = compile_set(&mut io, generation, libraries, reconcilers)?;
                compiled = Some(set);
                io.send(&FromWorker::Compiled { errors })?;
            }
            ToWorker::Reconcile { generation, index, object, now, timeout_ms, run_timeout_ms, children } => {
                let end = match compiled.as_ref().filter(|c| c.generation == generation) {
                    None => (
                        Vec::new(),
                        End::Error(format!("internal error: reconcilers of generation {generation} are not compiled")),
                    ),
                    Some(set) => match set.runtimes.get(index as usize) {
                        Some(Some((cfg, runtime))) => {
                            let at = Instant::now();
                            let interrupt = Interrupt::default();
                            let budget = Budget {
                                limits: cfg.limits,
                                deadline: timeout_ms.and_then(|ms| at.checked_add(Duration::from_millis(ms))),
                                run_deadline: run_timeout_ms.and_then(|ms| at.checked_add(Duration::from_millis(ms))),
                                interrupt: &interrupt,
                            };
                            let ahead = children.map(|keys| (cfg.owns.clone(), keys));
                            reconcile(&mut io, &**runtime, &object, now, ahead, &budget)?
                        }
                        _ => (Vec::new(), End::Error(format!("internal error: reconciler {index} did not compile"))),
                    },
                };
                io.send(&FromWorker::End { deferred: end.0, end: end.1 })?;
            }
            ToWorker::Reply(_) => return Err("protocol error: a reply without a call".into()),
        }
    }
    Ok(())
}

fn compile_set(
    io: &mut Io,
    generation: u64,
    libraries: Vec<(String, String)>,
    reconcilers: Vec<String>,
) -> Result<(Compiled, Vec<Option<String>>), String> {
    let libs = Arc::new(Libraries::new(libraries.into_iter().collect::<BTreeMap<_, _>>()));
    let mut runtimes = Vec::with_capacity(reconcilers.len());
    let mut errors = Vec::with_capacity(reconcilers.len());
    for (i, text) in reconcilers.iter().enumerate() {
        io.send(&FromWorker::Compiling { index: i as u32 })?;
        let built = serde_json::from_str::<Value>(text)
            .map_err(|e| format!("internal error: {e}"))
            .and_then(|obj| ReconcilerConfig::from_object(&obj))
            .map(Arc::new)
            .and_then(|cfg| {
                let compiled = catch_unwind(AssertUnwindSafe(|| compile(cfg.clone(), &libs)))
                    .unwrap_or_else(|p| Err(format!("internal error: compiling panicked: {}", panic_text(&*p))));
                compiled.map(|rt| (cfg, rt))
            });
        match built {
            Ok(rt) => {
                runtimes.push(Some(rt));
                errors.push(None);
            }
            Err(e) => {
                runtimes.push(None);
                errors.push(Some(e));
            }
        }
    }
    Ok((Compiled { generation, runtimes }, errors))
}

/// Children keys read ahead by the server: for the reconciler's `owns` kinds.
type Ahead = (Vec<ResourceRef>, Vec<Key>);

/// Runs one reconcile; returns the calls still deferred and how it ended.
fn reconcile(
    io: &mut Io,
    runtime: &dyn Runtime,
    object: &str,
    now: String,
    ahead: Option<Ahead>,
    budget: &Budget<'_>,
) -> Result<(Vec<Call>, End), String> {
    let object: Value = serde_json::from_str(object).map_err(|e| format!("internal error: the object: {e}"))?;
    let owner_uid = crate::api::object::uid(&object).unwrap_or("").to_string();
    let ahead = ahead.map(|(owns, keys)| (owner_uid, owns, keys));
    let mut client = RemoteClient { io, deferred: Vec::new(), now, broken: None, ahead };
    let outcome = catch_unwind(AssertUnwindSafe(|| runtime.reconcile(&object, &mut client, budget)))
        .unwrap_or_else(|p| Outcome::Error(format!("internal error: the reconciler panicked: {}", panic_text(&*p))));
    if let Some(broken) = client.broken {
        return Err(broken);
    }
    // Calls still deferred travel with the end; the server makes them.
    let deferred = std::mem::take(&mut client.deferred);
    let end = match outcome {
        Outcome::Done => End::Done,
        Outcome::Requeue { after, message } => {
            End::Requeue { after_ms: after.map(|d| d.as_millis().min(u64::MAX as u128) as u64), message }
        }
        Outcome::Error(message) => End::Error(message),
    };
    Ok((deferred, end))
}

struct Io {
    input: BufReader<std::io::StdinLock<'static>>,
    out: Output,
    /// Messages read while waiting for a reply: reconciles the server sent ahead, which run
    /// after the current one.
    waiting: VecDeque<ToWorker>,
}

impl Io {
    fn send(&mut self, msg: &FromWorker) -> Result<(), String> {
        let mut out = self.out.lock().map_err(|_| "the output lock is poisoned".to_string())?;
        wire::write(&mut *out, msg).map_err(|e| format!("writing to the server: {e}"))
    }

    /// The next message to act on: one kept while waiting for a reply, else the next one read.
    fn receive(&mut self) -> Result<Option<ToWorker>, String> {
        match self.waiting.pop_front() {
            Some(msg) => Ok(Some(msg)),
            None => self.read(),
        }
    }

    /// The reply to the call just sent; what comes before it waits its turn.
    fn reply(&mut self) -> Result<Answer, String> {
        loop {
            match self.read()? {
                Some(ToWorker::Reply(answer)) => return Ok(answer),
                Some(msg @ ToWorker::Reconcile { .. }) => self.waiting.push_back(msg),
                Some(ToWorker::Compile { .. }) => {
                    return Err("protocol error: a compile came while waiting for the reply to a call".to_string())
                }
                None => return Err("the server closed the pipe".to_string()),
            }
        }
    }

    fn read(&mut self) -> Result<Option<ToWorker>, String> {
        wire::read(&mut self.input).map_err(|e| format!("reading from the server: {e}"))
    }
}

/// The store over the pipes: calls whose result is not needed wait in `deferred` and travel with
/// the next call that needs an answer (or [`Client::flush`]), which the server makes in order,
/// stopping at the first failure.
struct RemoteClient<'a> {
    io: &'a mut Io,
    deferred: Vec<Call>,
    now: String,
    /// The pipe to the server failed: the reconcile cannot go on and the worker must end.
    broken: Option<String>,
    /// The for-object's uid, the `owns` kinds and its children's keys, read ahead by the server;
    /// dropped at the first write, which may change them.
    ahead: Option<(String, Vec<ResourceRef>, Vec<Key>)>,
}

impl RemoteClient<'_> {
    fn call(&mut self, call: Option<Call>) -> Result<Answer, ClientError> {
        let reads = matches!(
            call,
            None | Some(Call::Get { .. } | Call::List { .. } | Call::ChildrenOf { .. } | Call::ChildKeysOf { .. })
        );
        if !reads {
            self.ahead = None;
        }
        if let Some(b) = &self.broken {
            return Err(ClientError::fatal(b.clone()));
        }
        let msg = FromWorker::Calls { deferred: std::mem::take(&mut self.deferred), call };
        let answer = self.io.send(&msg).and_then(|()| self.io.reply());
        match answer {
            Ok(Answer::Failed { message, fatal }) => Err(ClientError { message, fatal }),
            Ok(answer) => Ok(answer),
            Err(e) => {
                self.broken = Some(e.clone());
                Err(ClientError::fatal(e))
            }
        }
    }

    fn unexpected(answer: Answer) -> ClientError {
        ClientError::fatal(format!("internal error: unexpected answer {answer:?}"))
    }
}

fn to_text(obj: &Value) -> Result<String, ClientError> {
    serde_json::to_string(obj).map_err(|e| ClientError::fatal(format!("cannot encode the object: {e}")))
}

fn from_text(text: &str) -> Result<Value, ClientError> {
    serde_json::from_str(text).map_err(|e| ClientError::fatal(format!("internal error: cannot decode an object: {e}")))
}

fn kinds(refs: &[ResourceRef]) -> Vec<Kind> {
    refs.iter().map(|r| Kind { group: r.group.clone(), version: r.version.clone(), kind: r.kind.clone() }).collect()
}

impl Client for RemoteClient<'_> {
    fn get(
        &mut self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Value>, ClientError> {
        let call = Call::Get {
            api_version: api_version.into(),
            kind: kind.into(),
            namespace: namespace.into(),
            name: name.into(),
        };
        match self.call(Some(call))? {
            Answer::Object(o) => o.as_deref().map(from_text).transpose(),
            other => Err(Self::unexpected(other)),
        }
    }

    fn list(&mut self, api_version: &str, kind: &str, selector: &Selector) -> Result<Vec<Value>, ClientError> {
        let call =
            Call::List { api_version: api_version.into(), kind: kind.into(), selector: selector.source().to_string() };
        match self.call(Some(call))? {
            Answer::Objects(list) => list.iter().map(|t| from_text(t)).collect(),
            other => Err(Self::unexpected(other)),
        }
    }

    fn apply(&mut self, obj: &Value, manager: &str) -> Result<Value, ClientError> {
        match self.call(Some(Call::Apply { object: to_text(obj)?, manager: manager.into(), read: true }))? {
            Answer::Object(Some(o)) => from_text(&o),
            other => Err(Self::unexpected(other)),
        }
    }

    fn apply_unread(&mut self, obj: &Value, manager: &str) -> Result<(), ClientError> {
        self.ahead = None;
        self.deferred.push(Call::Apply { object: to_text(obj)?, manager: manager.into(), read: false });
        Ok(())
    }

    fn delete(&mut self, api_version: &str, kind: &str, namespace: &str, name: &str) -> Result<(), ClientError> {
        let call = Call::Delete {
            api_version: api_version.into(),
            kind: kind.into(),
            namespace: namespace.into(),
            name: name.into(),
        };
        self.call(Some(call)).map(drop)
    }

    fn children_of(&mut self, owner_uid: &str, refs: &[ResourceRef]) -> Result<Vec<Value>, ClientError> {
        match self.call(Some(Call::ChildrenOf { owner_uid: owner_uid.into(), kinds: kinds(refs) }))? {
            Answer::Objects(list) => list.iter().map(|t| from_text(t)).collect(),
            other => Err(Self::unexpected(other)),
        }
    }

    fn child_keys_of(&mut self, owner_uid: &str, refs: &[ResourceRef]) -> Result<Vec<ObjectKey>, ClientError> {
        if let Some((uid, owns, keys)) = &self.ahead {
            if self.deferred.is_empty() && uid == owner_uid && owns.as_slice() == refs {
                return Ok(keys
                    .iter()
                    .map(|k| ObjectKey {
                        group: k.group.clone(),
                        kind: k.kind.clone(),
                        namespace: k.namespace.clone(),
                        name: k.name.clone(),
                    })
                    .collect());
            }
        }
        match self.call(Some(Call::ChildKeysOf { owner_uid: owner_uid.into(), kinds: kinds(refs) }))? {
            Answer::Keys(keys) => Ok(keys
                .into_iter()
                .map(|k| ObjectKey { group: k.group, kind: k.kind, namespace: k.namespace, name: k.name })
                .collect()),
            other => Err(Self::unexpected(other)),
        }
    }

    fn delete_key(&mut self, key: &ObjectKey) -> Result<(), ClientError> {
        self.ahead = None;
        self.deferred.push(Call::DeleteKey(Key {
            group: key.group.clone(),
            kind: key.kind.clone(),
            namespace: key.namespace.clone(),
            name: key.name.clone(),
        }));
        Ok(())
    }

    fn flush(&mut self) -> Result<(), ClientError> {
        if self.deferred.is_empty() {
            return Ok(());
        }
        self.call(None).map(drop)
    }

    fn now(&self) -> String {
        self.now.clone()
    }
}

// Keep the output flushed when the worker ends normally.
impl Drop for Io {
    fn drop(&mut self) {
        if let Ok(mut out) = self.out.lock() {
            let _ = out.flush();
        }
    }
}

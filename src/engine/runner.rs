//! The controller runtime: work queues, event handlers and running reconcilers to quiescence.
//!
//! Every (reconciler, object) pair is one queue item; an item already queued is not queued
//! again, and items run one at a time in FIFO order, so a run is deterministic. Each reconcile
//! runs in its own store transaction through a [`TxnClient`]; its commit produces events that the
//! handlers turn into more work: `for` (the object matches the reconciler's selector), `owns`
//! (a child changed or went: its controller owner is queued) and `watches` (a watched object
//! that matches queues every for-object that matches — upstream's intended semantics, not its
//! bug B8). Requeues wait (requested delay, or exponential backoff) in a deadline heap.
//!
//! A run ends exactly when nothing is queued, running or waiting; it fails on the first
//! reconcile error, when an object is reconciled more than the per-object bound (it does not
//! converge), or at the timeout.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::api::object::{self, GroupKind, ObjectKey};
use crate::reconcile::{Budget, Client, ClientError, Interrupt, Outcome, ReconcilerConfig, Runtime, Selector};
use crate::store::{ApplyOptions, Changes, Event, EventType, State, Store, StoreError, Txn};

/// A loaded reconciler: its configuration and compiled code.
pub struct Controller {
    pub cfg: Arc<ReconcilerConfig>,
    pub runtime: Box<dyn Runtime>,
    /// Changes when the configuration or code (libraries included) changes.
    pub fingerprint: u128,
}

/// Bounds of one run.
#[derive(Debug, Clone, Copy)]
pub struct RunOptions {
    pub timeout: Duration,
    /// When the run must end (`None`: never, also for a timeout too large for the clock).
    pub deadline: Option<Instant>,
    /// Reconciles of one object by one reconciler beyond which the run fails as not converging.
    pub max_reconciles_per_object: u32,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions { timeout: Duration::from_secs(30), deadline: None, max_reconciles_per_object: 100 }
    }
}

/// One START/STOP/REQUEUE/ERROR event of a run, made in the form the run's summary shows it
/// (converting a large run's events at its end held them twice at the peak of its memory).
pub use crate::protocol::RunEvent;

/// An event's time as the summary shows it, `2026-12-04T20:07:12.123456Z`, without parsing a
/// format per event.
fn event_time(at: chrono::DateTime<chrono::Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub success: bool,
    /// `reconciler.Kind.group.name` of the failing reconcile, if any.
    pub task: String,
    pub message: String,
    pub elapsed: Duration,
    pub events: Vec<RunEvent>,
    pub reconciles: u64,
}

type Item = (usize, ObjectKey);

#[derive(Default)]
struct Queue {
    ready: VecDeque<Item>,
    queued: HashSet<Item>,
    /// (deadline, sequence) → item; the sequence keeps equal deadlines in FIFO order.
    delayed: BinaryHeap<Reverse<(Instant, u64, usize, ObjectKey)>>,
    seq: u64,
    /// Consecutive requeues without a deadline, for exponential backoff.
    failures: HashMap<Item, u32>,
}

impl Queue {
    fn push(&mut self, item: Item) {
        if self.queued.insert(item.clone()) {
            self.ready.push_back(item);
        }
    }

    fn push_after(&mut self, item: Item, at: Instant) {
        self.seq += 1;
        self.delayed.push(Reverse((at, self.seq, item.0, item.1)));
    }

    /// Moves due delayed items to the ready queue.
    fn promote(&mut self, now: Instant) {
        while let Some(Reverse((at, _, _, _))) = self.delayed.peek() {
            if *at > now {
                break;
            }
            if let Some(Reverse((_, _, c, k))) = self.delayed.pop() {
                self.push((c, k));
            }
        }
    }

    fn pop(&mut self) -> Option<Item> {
        let item = self.ready.pop_front()?;
        self.queued.remove(&item);
        Some(item)
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.delayed.peek().map(|Reverse((at, ..))| *at)
    }

    fn backoff(&mut self, item: &Item) -> Duration {
        let n = self.failures.entry(item.clone()).or_insert(0);
        *n += 1;
        // 5 ms doubling, capped at one second: client-go's per-item limiter, minus the bucket.
        Duration::from_millis(5u64.saturating_mul(1u64 << (*n - 1).min(8))).min(Duration::from_secs(1))
    }
}

/// Items the `for` handler queues for objects that exist now (a run's first work).
pub fn seed_all(controllers: &[Controller], state: &State, only: Option<&HashSet<usize>>) -> Vec<Item> {
    let mut out = Vec::new();
    for (i, c) in controllers.iter().enumerate() {
        if only.is_some_and(|o| !o.contains(&i)) {
            continue;
        }
        let gk = c.cfg.for_.group_kind();
        let start = ObjectKey::new(&gk, "", "");
        for (k, obj) in state.objects.range(start..).take_while(|(k, _)| k.group == gk.group && k.kind == gk.kind) {
            if c.cfg.for_selector.matches_everything() || c.cfg.for_selector.matches(&obj.value()) {
                out.push((i, k.clone()));
            }
        }
    }
    out
}

/// The items the handlers queue for committed events. Objects are read from the current
/// state (level-triggered); a deleted watched object queues every matching for-object.
pub fn dispatch(controllers: &[Controller], state: &State, events: &[Event]) -> Vec<Item> {
    let mut out = Vec::new();
    let is = |r: &crate::reconcile::ResourceRef, key: &ObjectKey| r.group == key.group && r.kind == key.kind;
    for ev in events {
        let current = std::cell::OnceCell::new();
        let object = || current.get_or_init(|| state.get(&ev.key)).clone();
        for (i, c) in controllers.iter().enumerate() {
            let for_ = &c.cfg.for_;
            if is(for_, &ev.key)
                && ev.kind != EventType::Deleted
                && (c.cfg.for_selector.matches_everything() || object().is_some_and(|o| c.cfg.for_selector.matches(&o)))
            {
                out.push((i, ev.key.clone()));
            }
            if c.cfg.owns.iter().any(|o| is(o, &ev.key)) {
                let for_gk = for_.group_kind();
                let owner_ns = match state.registry.get(&for_gk) {
                    Some(r) if r.namespaced => ev.key.namespace.as_str(),
                    _ => "",
                };
                for r in &ev.owners {
                    if r.group == for_gk.group && r.kind == for_gk.kind {
                        out.push((i, ObjectKey::new(&for_gk, owner_ns, &r.name)));
                    }
                }
            }
            for (w, sel) in &c.cfg.watches {
                let triggered =
                    is(w, &ev.key) && (ev.kind == EventType::Deleted || object().is_some_and(|o| sel.matches(&o)));
                if triggered {
                    let for_gk = for_.group_kind();
                    let start = ObjectKey::new(&for_gk, "", "");
                    for (k, obj) in state
                        .objects
                        .range(start..)
                        .take_while(|(k, _)| k.group == for_gk.group && k.kind == for_gk.kind)
                    {
                        if c.cfg.for_selector.matches_everything() || c.cfg.for_selector.matches(&obj.value()) {
                            out.push((i, k.clone()));
                        }
                    }
                }
            }
        }
    }
    out
}

fn resource_name(key: &ObjectKey) -> String {
    format!("{}.{}.{}.{}", key.group, key.kind, key.namespace, key.name)
}

/// What one step of work did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing is ready (maybe something waits; see [`Work::next_deadline`]).
    Idle,
    /// One reconcile ran.
    Ran,
    /// A reconcile failed, or an object was reconciled more than the bound.
    Failed { task: String, message: String },
}

/// Work in progress: the queue, the per-item reconcile counts and the events so far. `run once`
/// drives one to quiescence; continuous mode keeps one for as long as it runs.
pub struct Work {
    /// The reconcilers (name, fingerprint) the queued items refer to, by index.
    pub controllers: Vec<(String, u128)>,
    queue: Queue,
    counts: HashMap<Item, u32>,
    pub events: Vec<RunEvent>,
    pub reconciles: u64,
    /// When the first reconcile of the current burst ran (continuous mode's run duration).
    pub burst_started: Option<Instant>,
}

impl Work {
    pub fn new(controllers: &[Controller], seeds: Vec<Item>) -> Work {
        let mut w = Work {
            controllers: controllers.iter().map(|c| (c.cfg.name.clone(), c.fingerprint)).collect(),
            queue: Queue::default(),
            counts: HashMap::new(),
            events: Vec::new(),
            reconciles: 0,
            burst_started: None,
        };
        w.push_all(seeds);
        w
    }

    pub fn push_all(&mut self, items: Vec<Item>) {
        for i in items {
            self.queue.push(i);
        }
    }

    /// Whether an item is ready to run now.
    pub fn has_ready(&self) -> bool {
        !self.queue.ready.is_empty() || self.queue.next_deadline().is_some_and(|at| at <= Instant::now())
    }

    /// When the earliest waiting item is due.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.queue.next_deadline()
    }

    /// Nothing ready and nothing waiting.
    pub fn is_quiescent(&self) -> bool {
        self.queue.ready.is_empty() && self.queue.delayed.is_empty()
    }

    /// Items waiting: ready and delayed.
    pub fn depth(&self) -> usize {
        self.queue.ready.len() + self.queue.delayed.len()
    }

    /// Forgets the per-object counts (continuous mode, once a burst of work has settled).
    pub fn reset_counts(&mut self) {
        self.counts.clear();
    }

    /// Runs the next ready item, if any, and queues what its writes trigger.
    pub fn step(&mut self, store: &Store, controllers: &[Controller], opts: RunOptions, interrupt: &Interrupt) -> Step {
        self.queue.promote(Instant::now());
        let Some(item) = self.queue.pop() else { return Step::Idle };
        let n = self.counts.entry(item.clone()).or_insert(0);
        *n += 1;
        if *n > opts.max_reconciles_per_object {
            // Name every item that kept changing (a loop usually involves more than one
            // reconciler), busiest first.
            let mut changing: Vec<(u32, String)> = self
                .counts
                .iter()
                .filter(|(_, c)| **c > opts.max_reconciles_per_object / 2)
                .map(|((c, k), n)| (*n, format!("{} {k} ({n} reconciles)", controllers[*c].cfg.name)))
                .collect();
            changing.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
            return Step::Failed {
                task: task_id(&controllers[item.0].cfg.name, &item.1),
                message: format!(
                    "did not converge: reconciled more than {} times, still changing: {}",
                    opts.max_reconciles_per_object,
                    shortened(changing.into_iter().map(|(_, s)| s).collect())
                ),
            };
        }
        let (c, key) = (&controllers[item.0], &item.1);
        let resource = resource_name(key);
        let event = |op: &'static str, message: String| RunEvent {
            time: event_time(chrono::Utc::now()),
            reconciler: c.cfg.name.clone(),
            resource: resource.clone(),
            operation: op.to_string(),
            message,
        };
        self.events.push(event("START", String::new()));
        self.reconciles += 1;
        self.burst_started.get_or_insert_with(Instant::now);
        let began = Instant::now();
        // The next items, when their reconcilers can start them ahead (they run in the
        // worker): they then overlap this reconcile's store work. Up to the first that is this
        // object again or one of them again (another reconciler of it): the writes of the one
        // before would make that start useless.
        let mut next: Vec<Ahead<'_>> = Vec::new();
        for (i, k) in self.queue.ready.iter().take(crate::reconcile::AHEAD_DEPTH) {
            if k == key || next.iter().any(|a| &a.key == k) || !controllers[*i].runtime.runs_ahead() {
                break;
            }
            next.push(Ahead { controller: &controllers[*i], key: k.clone(), run_deadline: opts.deadline });
        }
        let outcome = reconcile_one(store, c, key, &Budget::start(c.cfg.limits, opts.deadline, interrupt), next);
        let result = match &outcome {
            Outcome::Error(_) => crate::metrics::Outcome::Error,
            Outcome::Requeue { .. } => crate::metrics::Outcome::Requeue,
            Outcome::Done => crate::metrics::Outcome::Success,
        };
        crate::metrics::global().reconcile(&c.cfg.name, result, began.elapsed());
        let step = match outcome {
            Outcome::Error(message) => {
                self.events.push(event("ERROR", message.clone()));
                Step::Failed { task: task_id(&c.cfg.name, key), message }
            }
            Outcome::Requeue { after, message } => {
                self.events.push(event("REQUEUE", message));
                let at = match after {
                    Some(d) => Instant::now() + d,
                    None => Instant::now() + self.queue.backoff(&item),
                };
                self.queue.push_after(item.clone(), at);
                Step::Ran
            }
            Outcome::Done => {
                self.events.push(event("STOP", String::new()));
                self.queue.failures.remove(&item);
                Step::Ran
            }
        };
        // The commit's events reach the caller through the store subscription, which queues
        // what they trigger (`absorb`), so a write is dispatched exactly once.
        step
    }

    /// Queues what the store events received so far trigger.
    pub fn absorb(&mut self, store: &Store, controllers: &[Controller], changes: &Changes) {
        let batch: Vec<Event> = changes.drain();
        if !batch.is_empty() {
            let next = store.with(|s| dispatch(controllers, s, &batch));
            self.push_all(next);
        }
    }

    fn pending(&self, controllers: &[Controller]) -> String {
        let mut pending: Vec<String> = self
            .queue
            .ready
            .iter()
            .map(|(c, k)| format!("{} {k}", controllers[*c].cfg.name))
            .chain(self.queue.delayed.iter().map(|Reverse((_, _, c, k))| format!("{} {k}", controllers[*c].cfg.name)))
            .collect();
        pending.sort();
        pending.dedup();
        shortened(pending)
    }
}

/// The items an error names at most; a run of 10k objects that times out names ten and the
/// count of the others, not a line of a megabyte.
const NAMED_MAX: usize = 10;

/// `items` joined with commas, the first [`NAMED_MAX`] of them and how many more there are.
fn shortened(items: Vec<String>) -> String {
    let more = items.len().saturating_sub(NAMED_MAX);
    let mut text = items.into_iter().take(NAMED_MAX).collect::<Vec<_>>().join(", ");
    if more > 0 {
        text.push_str(&format!(" and {more} more"));
    }
    text
}

/// What a slice of a [`OnceRun`] ended with.
#[derive(Debug)]
pub enum Slice {
    /// More is ready: call again (after looking at the engine's channels).
    More,
    /// Only waiting items remain: call again at this time (never past the run's deadline).
    WaitUntil(Instant),
    /// The run is over.
    Done(RunReport),
}

/// A `run once` in progress, driven a slice at a time by the engine loop (`engine::run`) so
/// that requests are answered while it runs.
pub struct OnceRun {
    work: Work,
    opts: RunOptions,
    started: Instant,
    last_progress: Instant,
}

impl OnceRun {
    pub fn new(controllers: &[Controller], seeds: Vec<Item>, opts: RunOptions) -> OnceRun {
        let started = Instant::now();
        // A timeout too large for the clock means no deadline.
        let opts = RunOptions { deadline: started.checked_add(opts.timeout), ..opts };
        OnceRun { work: Work::new(controllers, seeds), opts, started, last_progress: started }
    }

    /// Reconciles so far.
    pub fn reconciles(&self) -> u64 {
        self.work.reconciles
    }

    /// Items waiting in the run's queue.
    pub fn depth(&self) -> usize {
        self.work.depth()
    }

    /// Runs up to `max` reconciles; `progress` gets a line about once a second.
    pub fn slice(
        &mut self,
        store: &Store,
        controllers: &[Controller],
        changes: &Changes,
        interrupt: &Interrupt,
        max: usize,
        progress: &mut dyn FnMut(&str),
    ) -> Slice {
        let work = &mut self.work;
        let deadline = self.opts.deadline;
        let mut outcome = Slice::More;
        for _ in 0..max {
            if deadline.is_some_and(|d| Instant::now() >= d) && !work.is_quiescent() {
                let message = format!(
                    "the run did not finish within {:?}; still to reconcile: {}",
                    self.opts.timeout,
                    work.pending(controllers)
                );
                outcome = Slice::Done(self.report(false, String::new(), message));
                break;
            }
            if let Some(why) = interrupt.raised() {
                outcome = Slice::Done(self.report(false, String::new(), why.to_string()));
                break;
            }
            let step = work.step(store, controllers, self.opts, interrupt);
            work.absorb(store, controllers, changes);
            match step {
                Step::Ran => {}
                Step::Failed { task, message } => {
                    outcome = Slice::Done(self.report(false, task, message));
                    break;
                }
                Step::Idle => {
                    outcome = match work.next_deadline() {
                        None => Slice::Done(self.report(true, String::new(), String::new())),
                        Some(at) => Slice::WaitUntil(deadline.map_or(at, |d| at.min(d))),
                    };
                    break;
                }
            }
        }
        if self.last_progress.elapsed() > Duration::from_secs(1) {
            self.last_progress = Instant::now();
            let work = &self.work;
            let rate = work.reconciles as f64 / self.started.elapsed().as_secs_f64().max(1e-3);
            progress(&format!(
                "{}{} reconciles ({rate:.0}/s), {} queued, {} waiting",
                crate::protocol::TRANSIENT,
                work.reconciles,
                work.queue.ready.len(),
                work.queue.delayed.len()
            ));
        }
        outcome
    }

    /// Ends the run now (stopped from outside) with `message`.
    pub fn abort(&mut self, message: String) -> RunReport {
        self.report(false, String::new(), message)
    }

    fn report(&mut self, success: bool, task: String, message: String) -> RunReport {
        RunReport {
            success,
            task,
            message,
            elapsed: self.started.elapsed(),
            events: std::mem::take(&mut self.work.events),
            reconciles: self.work.reconciles,
        }
    }
}

fn task_id(reconciler: &str, key: &ObjectKey) -> String {
    format!("{reconciler}.{}.{}.{}", key.kind, key.group, key.name)
}

/// Runs one reconcile in its own transaction, committed unless it failed (then its writes are
/// dropped).
fn reconcile_one(store: &Store, c: &Controller, key: &ObjectKey, budget: &Budget<'_>, next: Vec<Ahead<'_>>) -> Outcome {
    let mut txn = store.begin();
    // A runtime elsewhere takes the stored text; one here the parsed object, which the
    // transaction keeps for the reconcile's own writes to it.
    let obj = if c.runtime.runs_ahead() {
        txn.stored(key).map(|s| crate::reconcile::ForObject::stored(s.json().to_vec(), s.uid().to_string()))
    } else {
        txn.get(key).map(crate::reconcile::ForObject::Parsed)
    };
    let Some(obj) = obj else {
        return Outcome::Done;
    };
    let outcome = {
        let mut client = TxnClient { txn: &mut txn, next };
        match catch_unwind(AssertUnwindSafe(|| c.runtime.reconcile_for(&obj, &mut client, budget))) {
            Ok(o) => o,
            Err(panic) => {
                let what = crate::reconcile::panic_text(&*panic);
                Outcome::Error(format!("internal error: the reconciler panicked: {what}"))
            }
        }
    };
    let outcome = match outcome {
        // A store error names the object already (`Kind.group ns/name: …`): once is enough.
        Outcome::Error(m) if m.starts_with(&format!("{key}: ")) => Outcome::Error(m),
        Outcome::Error(m) => Outcome::Error(format!("{key}: {m}")),
        other => other,
    };
    if matches!(outcome, Outcome::Error(_)) {
        return outcome;
    }
    match txn.commit_unsynced() {
        Ok(_) => outcome,
        Err(e) => Outcome::Error(format!("{key}: cannot commit: {e}")),
    }
}

/// The store as reconcilers see it, over one transaction.
pub struct TxnClient<'t, 's> {
    pub txn: &'t mut Txn<'s>,
    /// The reconciles to start ahead when the runtime says its own work is done, in queue
    /// order.
    next: Vec<Ahead<'t>>,
}

/// A queued reconcile that may start ahead of its turn.
struct Ahead<'a> {
    controller: &'a Controller,
    key: ObjectKey,
    run_deadline: Option<Instant>,
}

impl Ahead<'_> {
    /// Starts it from the committed state (what it reads when its turn comes, unless the
    /// reconcile before it changes that; its runtime then sees the difference and reconciles
    /// again).
    fn start(self, store: &Store, first: bool) -> bool {
        let cfg = &self.controller.cfg;
        let input = store.with(|s| {
            let stored = s.objects.get(&self.key)?;
            let object = String::from_utf8(stored.json().to_vec()).ok()?;
            let children = (!cfg.owns.is_empty() && !stored.uid().is_empty()).then(|| {
                let mut keys: Vec<ObjectKey> = s
                    .owned_by(stored.uid())
                    .filter(|k| cfg.owns.iter().any(|r| r.group == k.group && r.kind == k.kind))
                    .cloned()
                    .collect();
                keys.sort();
                keys.dedup();
                keys
            });
            Some(crate::reconcile::AheadInput {
                key: self.key.clone(),
                object,
                children,
                run_deadline: self.run_deadline,
                first,
            })
        });
        let started = input.is_some();
        if let Some(input) = input {
            self.controller.runtime.start_ahead(input);
        }
        started
    }
}

fn client_error(e: StoreError) -> ClientError {
    match e {
        StoreError::NotFound { .. } => ClientError::transient(e.to_string()),
        other => ClientError::fatal(other.to_string()),
    }
}

impl TxnClient<'_, '_> {
    fn key(&self, api_version: &str, kind: &str, namespace: &str, name: &str) -> Result<ObjectKey, ClientError> {
        let (group, _) = object::split_api_version(api_version);
        let gk = GroupKind::new(group, kind);
        let res = self
            .txn
            .resource(&gk)
            .ok_or_else(|| ClientError::fatal(format!("no API is registered for kind {kind:?} in {api_version:?}")))?;
        let ns = if res.namespaced {
            if namespace.is_empty() {
                "default"
            } else {
                namespace
            }
        } else {
            ""
        };
        Ok(ObjectKey::new(&gk, ns, name))
    }
}

impl Client for TxnClient<'_, '_> {
    fn get(
        &mut self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Value>, ClientError> {
        let key = self.key(api_version, kind, namespace, name)?;
        Ok(self.txn.get(&key).map(|v| (*v).clone()))
    }

    fn list(&mut self, api_version: &str, kind: &str, selector: &Selector) -> Result<Vec<Value>, ClientError> {
        let (group, _) = object::split_api_version(api_version);
        let gk = GroupKind::new(group, kind);
        if self.txn.resource(&gk).is_none() {
            return Err(ClientError::fatal(format!("no API is registered for kind {kind:?} in {api_version:?}")));
        }
        Ok(self
            .txn
            .list(&gk, None)
            .into_iter()
            .filter(|(_, o)| selector.matches(o))
            .map(|(_, o)| (*o).clone())
            .collect())
    }

    fn apply(&mut self, obj: &Value, manager: &str) -> Result<Value, ClientError> {
        // The stored result comes back from the apply itself: reading it back would parse the
        // JSON just staged and copy it once more.
        let (_, _, stored) =
            self.txn.apply_and_read(obj, ApplyOptions { manager, force: false }).map_err(client_error)?;
        Ok(stored.unwrap_or_else(|| obj.clone()))
    }

    fn apply_unread(&mut self, obj: &Value, manager: &str) -> Result<(), ClientError> {
        self.txn.apply(obj, ApplyOptions { manager, force: false }).map(|_| ()).map_err(client_error)
    }

    fn apply_unread_sent(&mut self, obj: &Value, text: &str, manager: &str) -> Result<(), ClientError> {
        self.txn.apply_sent(obj, text, ApplyOptions { manager, force: false }).map(|_| ()).map_err(client_error)
    }

    fn delete(&mut self, api_version: &str, kind: &str, namespace: &str, name: &str) -> Result<(), ClientError> {
        let key = self.key(api_version, kind, namespace, name)?;
        match self.txn.delete(&key) {
            Ok(_) | Err(StoreError::NotFound { .. }) => Ok(()),
            Err(e) => Err(client_error(e)),
        }
    }

    fn children_of(
        &mut self,
        owner_uid: &str,
        kinds: &[crate::reconcile::ResourceRef],
    ) -> Result<Vec<Value>, ClientError> {
        Ok(self
            .txn
            .owned_by_where(owner_uid, |k| kinds.iter().any(|r| r.group == k.group && r.kind == k.kind))
            .into_iter()
            .map(|(_, v)| (*v).clone())
            .collect())
    }

    fn child_keys_of(
        &mut self,
        owner_uid: &str,
        kinds: &[crate::reconcile::ResourceRef],
    ) -> Result<Vec<ObjectKey>, ClientError> {
        Ok(self.txn.owned_keys_where(owner_uid, |k| kinds.iter().any(|r| r.group == k.group && r.kind == k.kind)))
    }

    fn delete_key(&mut self, key: &ObjectKey) -> Result<(), ClientError> {
        match self.txn.delete(key) {
            Ok(_) | Err(StoreError::NotFound { .. }) => Ok(()),
            Err(e) => Err(client_error(e)),
        }
    }

    fn now(&self) -> String {
        self.txn.now().to_string()
    }

    fn ahead(&mut self) {
        let mut first = true;
        for next in std::mem::take(&mut self.next) {
            if next.start(self.txn.store(), first) {
                first = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The controller runtime in process: a store on a temporary directory, reconcilers written
    //! as Rust closures, runs driven slice by slice as the engine loop drives them.

    use super::*;
    use serde_json::json;

    #[test]
    fn event_times_keep_their_format() {
        use chrono::TimeZone;
        for (secs, nanos) in [(0, 0), (1_764_878_832, 123_456_789), (1_764_878_832, 999), (4_102_444_799, 999_999_999)]
        {
            let at = chrono::Utc.timestamp_opt(secs, nanos).unwrap();
            assert_eq!(event_time(at), at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string());
        }
    }

    type Body = dyn Fn(&Value, &mut dyn Client, &Budget<'_>) -> Outcome + Send;

    struct FnRuntime(Box<Body>);

    impl Runtime for FnRuntime {
        fn reconcile(&self, object: &Value, client: &mut dyn Client, budget: &Budget<'_>) -> Outcome {
            (self.0)(object, client, budget)
        }
    }

    fn crd(kind: &str) -> Value {
        let plural = format!("{}s", kind.to_lowercase());
        json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": format!("{plural}.example.com")},
            "spec": {"group": "example.com", "scope": "Namespaced",
                "names": {"kind": kind, "plural": plural, "singular": kind.to_lowercase()},
                "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {
                    "type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}
        })
    }

    fn object(kind: &str, name: &str) -> Value {
        json!({"apiVersion": "example.com/v1", "kind": kind, "metadata": {"name": name, "namespace": "default"}, "spec": {}})
    }

    /// A store with the Widget and Part kinds and `widgets` Widgets.
    fn store(widgets: usize) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let opts = ApplyOptions { manager: "test", force: true };
        let mut txn = store.begin();
        txn.apply(&crd("Widget"), opts).unwrap();
        txn.apply(&crd("Part"), opts).unwrap();
        for i in 0..widgets {
            txn.apply(&object("Widget", &format!("w{i}")), opts).unwrap();
        }
        txn.commit().unwrap();
        (dir, store)
    }

    fn controller(
        name: &str,
        owns: bool,
        body: impl Fn(&Value, &mut dyn Client, &Budget<'_>) -> Outcome + Send + 'static,
    ) -> Controller {
        let mut spec = json!({
            "for": {"group": "example.com", "version": "v1", "kind": "Widget", "selector": {}},
            "type": "starlark", "code": {"reconciler.star": ""}
        });
        if owns {
            spec["owns"] = json!([{"group": "example.com", "version": "v1", "kind": "Part"}]);
        }
        let obj = json!({"apiVersion": "choreo.kform.dev/v1alpha1", "kind": "Reconciler", "metadata": {"name": name}, "spec": spec});
        Controller {
            cfg: Arc::new(ReconcilerConfig::from_object(&obj).unwrap()),
            runtime: Box::new(FnRuntime(Box::new(body))),
            fingerprint: 1,
        }
    }

    /// Drives a run to its end the way the engine loop does: slices, waiting when told to.
    fn drive(store: &Store, controllers: &[Controller], interrupt: &Interrupt) -> (RunReport, usize) {
        let changes = store.changes();
        changes.drain();
        let seeds = store.with(|s| seed_all(controllers, s, None));
        let mut run = OnceRun::new(controllers, seeds, RunOptions::default());
        let mut slices = 0;
        loop {
            slices += 1;
            match run.slice(store, controllers, &changes, interrupt, 4, &mut |_| {}) {
                Slice::More => {}
                Slice::WaitUntil(at) => std::thread::sleep(at.saturating_duration_since(Instant::now())),
                Slice::Done(report) => return (report, slices),
            }
        }
    }

    #[test]
    fn the_queue_keeps_one_copy_of_an_item_and_waits_in_fifo_order() {
        let mut q = Queue::default();
        let a = (0, ObjectKey::new(&GroupKind::new("g", "K"), "ns", "a"));
        let b = (0, ObjectKey::new(&GroupKind::new("g", "K"), "ns", "b"));
        q.push(a.clone());
        q.push(b.clone());
        q.push(a.clone());
        assert_eq!(q.ready.len(), 2, "a queued item is not queued again");
        assert_eq!(q.pop(), Some(a.clone()));
        q.push(a.clone());
        assert_eq!(q.pop(), Some(b.clone()));
        assert_eq!(q.pop(), Some(a.clone()));
        let at = Instant::now();
        q.push_after(b.clone(), at);
        q.push_after(a.clone(), at);
        q.promote(at);
        assert_eq!((q.pop(), q.pop()), (Some(b.clone()), Some(a.clone())), "equal deadlines keep their order");
        let delays: Vec<u128> = (0..10).map(|_| q.backoff(&a).as_millis()).collect();
        assert_eq!(delays, [5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
    }

    #[test]
    fn a_run_in_slices_reconciles_everything_once_and_children_queue_their_owner() {
        let (_dir, store) = store(10);
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        let parts = controller("parts", true, move |obj, client, _| {
            let name = object::name(obj).unwrap().to_string();
            log.lock().unwrap().push(name.clone());
            let mut part = object("Part", &format!("{name}-part"));
            part["metadata"]["ownerReferences"] = json!([{"apiVersion": "example.com/v1", "kind": "Widget", "name": name,
                "uid": object::uid(obj).unwrap(), "controller": true}]);
            match client.apply(&part, "parts") {
                Ok(_) => Outcome::Done,
                Err(e) => Outcome::Error(e.message),
            }
        });
        let (report, slices) = drive(&store, &[parts], &Interrupt::default());
        assert!(report.success, "{}", report.message);
        // Each widget once, then once more because its new child queued it (the child's
        // apply is then a no-op, so it ends there).
        assert_eq!(report.reconciles, 20);
        assert!(slices >= 5, "ran in slices of 4: {slices}");
        let seen = seen.lock().unwrap();
        assert_eq!(seen[..10], (0..10).map(|i| format!("w{i}")).collect::<Vec<_>>()[..], "FIFO in key order");
        assert_eq!(store.with(|s| s.list(&GroupKind::new("example.com", "Part"), None).len()), 10);
    }

    #[test]
    fn a_reconciler_that_keeps_changing_its_object_fails_as_not_converging() {
        let (_dir, store) = store(1);
        let bump = controller("bump", false, |obj, client, _| {
            let mut o = obj.clone();
            let n = o["spec"]["n"].as_u64().unwrap_or(0);
            o["spec"] = json!({"n": n + 1});
            if let Some(meta) = o["metadata"].as_object_mut() {
                meta.remove("managedFields");
            }
            match client.apply(&o, "bump") {
                Ok(_) => Outcome::Done,
                Err(e) => Outcome::Error(e.message),
            }
        });
        let (report, _) = drive(&store, &[bump], &Interrupt::default());
        assert!(!report.success);
        assert!(report.message.contains("did not converge") && report.message.contains("bump"), "{}", report.message);
    }

    #[test]
    fn an_error_names_ten_items_and_counts_the_others() {
        let items = |n: usize| (0..n).map(|i| format!("r Widget.example.org default/w{i:02}")).collect::<Vec<_>>();
        assert_eq!(shortened(items(2)), "r Widget.example.org default/w00, r Widget.example.org default/w01");
        assert_eq!(shortened(items(NAMED_MAX)).matches(", ").count(), NAMED_MAX - 1);
        let long = shortened(items(25));
        assert!(long.ends_with("default/w09 and 15 more"), "{long}");
        assert!(!long.contains("w10"), "{long}");
    }

    #[test]
    fn a_requeue_waits_and_an_interrupt_ends_the_run() {
        let (_dir, store) = store(1);
        let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let counter = calls.clone();
        let later = controller("later", false, move |_, _, _| {
            if counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                Outcome::Requeue { after: Some(Duration::from_millis(20)), message: String::new() }
            } else {
                Outcome::Done
            }
        });
        let (report, _) = drive(&store, &[later], &Interrupt::default());
        assert!(report.success);
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2, "run again after the requested delay");

        let stopped = Interrupt::default();
        stopped.stop_run();
        let (report, _) = drive(&store, &[controller("any", false, |_, _, _| Outcome::Done)], &stopped);
        assert!(!report.success);
        assert!(report.message.contains("run stop"), "{}", report.message);
    }

    /// Records what it is asked to start ahead; its reconcile is `FnRuntime`'s.
    struct AheadRuntime(Box<Body>, Arc<std::sync::Mutex<Vec<crate::reconcile::AheadInput>>>);

    impl Runtime for AheadRuntime {
        fn reconcile(&self, object: &Value, client: &mut dyn Client, budget: &Budget<'_>) -> Outcome {
            (self.0)(object, client, budget)
        }

        fn runs_ahead(&self) -> bool {
            true
        }

        fn start_ahead(&self, input: crate::reconcile::AheadInput) {
            self.1.lock().unwrap().push(input);
        }
    }

    #[test]
    fn the_next_reconcile_starts_ahead_from_the_committed_state() {
        let (_dir, store) = store(3);
        let started = Arc::new(std::sync::Mutex::new(Vec::new()));
        // w0's reconcile labels w1 (uncommitted when it says its own work is done) and every
        // reconcile creates a Part.
        let mut c = controller("ahead", true, |_, _, _| Outcome::Done);
        c.runtime = Box::new(AheadRuntime(
            Box::new(|obj, client, _| {
                let name = object::name(obj).unwrap().to_string();
                let manager = "ahead";
                if name == "w0" {
                    let mut w1 = object("Widget", "w1");
                    w1["metadata"]["labels"] = json!({"touched": "yes"});
                    client.apply(&w1, manager).unwrap();
                }
                let mut part = object("Part", &format!("{name}-part"));
                part["metadata"]["ownerReferences"] = json!([{"apiVersion": "example.com/v1", "kind": "Widget",
                    "name": name, "uid": object::uid(obj).unwrap(), "controller": true}]);
                client.apply_unread(&part, manager).unwrap();
                client.ahead();
                Outcome::Done
            }),
            started.clone(),
        ));
        let (report, _) = drive(&store, &[c], &Interrupt::default());
        assert!(report.success, "{}", report.message);
        let started = started.lock().unwrap();
        let names: Vec<String> = started
            .iter()
            .map(|i| object::name(&serde_json::from_str::<Value>(&i.object).unwrap()).unwrap().to_string())
            .collect();
        // w0 offers the two next, w1 and w2, read from the committed state.
        assert_eq!(&names[..2], ["w1", "w2"], "{names:?}");
        let first: Value = serde_json::from_str(&started[0].object).unwrap();
        assert!(first["metadata"].get("labels").is_none(), "w0's write was not committed yet: {first}");
        assert_eq!(started[0].children, Some(vec![]), "w1 owns nothing yet");
        // The object text is the stored text, so a turn that finds it unchanged can use it.
        let stored = store.with(|s| {
            s.objects
                .get(&ObjectKey::new(&GroupKind::new("example.com", "Widget"), "default", "w2"))
                .map(|o| o.json().to_vec())
        });
        assert_eq!(started[1].object.as_bytes(), stored.unwrap().as_slice());
    }
}

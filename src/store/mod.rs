//! The API store: registered APIs and their objects, kept in memory and durably in sled.
//!
//! There is exactly one writer, the [`Store`] owned by the engine thread, and any number of
//! cloneable [`Reader`]s that the connection threads use to answer `get` without queueing behind
//! a run. Every change goes through a [`Txn`]: writes gather in an overlay, reads inside the
//! transaction see them, and [`Txn::commit`] writes one sled batch, flushes, fsyncs the database
//! files (sled's own flush does not fsync on Linux) and only then publishes the new state to
//! readers and emits the change events. A transaction that is dropped leaves no trace, which is
//! how a failed load keeps the last good state. The many small commits of a run
//! ([`Txn::commit_unsynced`]) are published at once but gathered for sled in batches of several
//! hundred writes (each commit whole inside one), applied by a writer thread beside the engine
//! ([`writer`]); the next durable commit or [`Store::sync`] waits for it first. A commit too
//! large for one sled batch (the load of a big project) is logged and applied in pieces, still
//! all-or-nothing on disk ([`redo`]).
//!
//! Architecture invariant: the store knows objects and APIs, not files, projects or reconcilers.
//! Objects are keyed by group/kind/namespace/name and stored as JSON bytes.

mod admission;
mod changes;
mod durable;
mod memo;
pub use memo::Remembered;
mod redo;
mod snapshots;
mod txn;
pub mod watchers;
mod writer;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use serde_json::Value;

use crate::api::apply::ApplyError;
use crate::api::builtin::{builtin_resources, CRD_GROUP, CRD_KIND};
use crate::api::crd::{ApiResource, CrdError, Registry};
use crate::api::object::{GroupKind, ObjectKey};

pub use admission::{Admission, Record};
pub use changes::Changes;
pub use snapshots::{Snapshot, SnapshotMeta, RETAINED};
pub use txn::{ApplyOptions, Txn, WriteOutcome};

/// The on-disk format of the database; bumped when records change shape.
const FORMAT_VERSION: &str = "1";

/// What happened to one object in a committed transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

/// A change to one object, emitted after the transaction that made it is committed.
///
/// Events are small on purpose (they queue up between runs): the object itself is read from
/// the store when needed, which also makes handlers level-triggered.
#[derive(Debug, Clone)]
pub struct Event {
    pub kind: EventType,
    pub key: ObjectKey,
    /// The owner references of the new object, or of the last stored state for a deletion.
    pub owners: Vec<crate::api::object::OwnerRef>,
}

/// One stored object: its compact JSON text, plus the metadata the store consults without
/// parsing it (a parsed `serde_json::Value` takes about ten times the memory of its text, which
/// for 20k objects is the difference between 25 MB and 250 MB).
///
/// The text is a sled `IVec` (reference counted): a commit hands it to sled without copying it,
/// and sled's cached nodes share it with the in-memory state.
#[derive(Debug)]
pub struct Stored {
    json: sled::IVec,
    uid: Box<str>,
    owners: Vec<crate::api::object::OwnerRef>,
    deleting: bool,
}

impl Stored {
    fn new(value: &Value, json: sled::IVec) -> Stored {
        Stored {
            uid: crate::api::object::uid(value).unwrap_or("").into(),
            owners: crate::api::object::owner_references(value),
            deleting: crate::api::object::deletion_timestamp(value).is_some(),
            json,
        }
    }

    /// `value` in its stored form.
    fn of(value: &Value) -> Arc<Stored> {
        // serde_json never fails to encode a Value.
        let json = serde_json::to_vec(value).unwrap_or_default();
        Arc::new(Stored::new(value, sled::IVec::from(json)))
    }

    /// The object as compact JSON.
    pub fn json(&self) -> &[u8] {
        &self.json
    }

    /// The JSON text for sled (shared, not copied).
    fn ivec(&self) -> sled::IVec {
        self.json.clone()
    }

    /// The object, parsed.
    pub fn value(&self) -> Arc<Value> {
        // The text was produced by serde_json from a Value, so it parses.
        Arc::new(serde_json::from_slice(&self.json).unwrap_or(Value::Null))
    }

    pub fn uid(&self) -> &str {
        &self.uid
    }

    pub fn owners(&self) -> &[crate::api::object::OwnerRef] {
        &self.owners
    }

    pub fn deleting(&self) -> bool {
        self.deleting
    }
}

/// Everything readers see: the objects and the APIs they belong to.
#[derive(Debug, Clone, Default)]
pub struct State {
    pub objects: BTreeMap<ObjectKey, Arc<Stored>>,
    pub registry: Registry,
    /// Owner uid → the objects that name it in their owner references: finding a reconciler's
    /// children must not scan every object.
    owners: std::collections::HashMap<String, Owned>,
}

/// The objects whose owner references name one owner. Almost always one object, which then
/// needs no set: a `BTreeSet` allocates a whole node (~1 KB) for its first key, 10 MB for the
/// 10k children of a 10k-object run.
#[derive(Debug, Clone)]
enum Owned {
    One(ObjectKey),
    Many(std::collections::BTreeSet<ObjectKey>),
}

impl Owned {
    fn insert(&mut self, key: ObjectKey) {
        match self {
            Owned::One(k) => {
                if *k != key {
                    *self = Owned::Many([k.clone(), key].into_iter().collect());
                }
            }
            Owned::Many(set) => {
                set.insert(key);
            }
        }
    }

    /// Removes `key`; whether nothing is left.
    fn remove(&mut self, key: &ObjectKey) -> bool {
        match self {
            Owned::One(k) => k == key,
            Owned::Many(set) => {
                set.remove(key);
                set.is_empty()
            }
        }
    }

    /// The objects, in key order.
    fn iter(&self) -> impl Iterator<Item = &ObjectKey> {
        let (one, many) = match self {
            Owned::One(k) => (Some(k), None),
            Owned::Many(set) => (None, Some(set.iter())),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }
}

impl State {
    /// Stores or removes one object, keeping the owner index in step.
    fn put(&mut self, key: ObjectKey, value: Option<Arc<Stored>>) {
        let old = match &value {
            Some(v) => self.objects.insert(key.clone(), v.clone()),
            None => self.objects.remove(&key),
        };
        for r in old.iter().flat_map(|o| o.owners.iter()) {
            if self.owners.get_mut(&r.uid).is_some_and(|owned| owned.remove(&key)) {
                self.owners.remove(&r.uid);
            }
        }
        for r in value.iter().flat_map(|o| o.owners.iter()) {
            match self.owners.get_mut(&r.uid) {
                Some(owned) => owned.insert(key.clone()),
                None => {
                    self.owners.insert(r.uid.clone(), Owned::One(key.clone()));
                }
            }
        }
    }

    /// One object, parsed.
    pub fn get(&self, key: &ObjectKey) -> Option<Arc<Value>> {
        self.objects.get(key).map(|s| s.value())
    }

    /// Keys of every object that has owner references (possibly repeated).
    pub fn owned_keys(&self) -> impl Iterator<Item = &ObjectKey> {
        self.owners.values().flat_map(Owned::iter)
    }

    /// Keys of the objects whose owner references name `uid`, in key order.
    pub fn owned_by(&self, uid: &str) -> impl Iterator<Item = &ObjectKey> {
        self.owners.get(uid).into_iter().flat_map(Owned::iter)
    }

    /// The stored form of the objects [`State::list`] returns (cheap: no parsing), for readers
    /// that parse and render after letting go of the lock.
    pub fn list_stored(&self, gk: &GroupKind, namespace: Option<&str>) -> Vec<Arc<Stored>> {
        let start = ObjectKey::new(gk, namespace.unwrap_or(""), "");
        self.objects
            .range(start..)
            .take_while(|(k, _)| {
                k.group == gk.group && k.kind == gk.kind && namespace.is_none_or(|ns| k.namespace == ns)
            })
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Objects of one kind, optionally in one namespace, in key order.
    pub fn list(&self, gk: &GroupKind, namespace: Option<&str>) -> Vec<Arc<Value>> {
        self.list_stored(gk, namespace).iter().map(|v| v.value()).collect()
    }
}

/// A cloneable, read-only view of the store for threads other than the engine.
///
/// A reader sees the last committed state; it may be behind the engine by one transaction.
#[derive(Clone)]
pub struct Reader {
    state: Arc<RwLock<State>>,
    watchers: watchers::Watchers,
    /// For run snapshots (sled is safe to read from any thread).
    db: sled::Db,
    dir: PathBuf,
}

impl Reader {
    /// Subscribes to the committed changes of one kind (in one namespace, or all).
    pub fn watch(&self, gk: GroupKind, namespace: Option<String>) -> watchers::Subscription {
        self.watchers.subscribe(gk, namespace)
    }

    /// Runs `f` with the current state under a shared lock; keep `f` short.
    pub fn with<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        let guard = self.state.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&guard)
    }
}

/// Errors of the store. Object errors name the object; database errors name the path.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no API is registered for kind {kind:?} in {api_version:?}")]
    UnknownKind { api_version: String, kind: String },
    #[error("{kind} {api_version:?} is not served: the served version is {served:?}")]
    WrongVersion { api_version: String, kind: String, served: String },
    #[error("{0}")]
    Malformed(String),
    #[error("{key}: {}", errors.join(", "))]
    Invalid { key: ObjectKey, errors: Vec<String> },
    #[error("{key}: {source}")]
    Apply { key: Box<ObjectKey>, source: ApplyError },
    #[error("{key}: {message}")]
    Admission { key: Box<ObjectKey>, message: String },
    #[error("{key}: not found")]
    NotFound { key: ObjectKey },
    #[error("{0}")]
    Crd(#[from] CrdError),
    #[error("cannot redefine the built-in API {0}")]
    Builtin(String),
    #[error("database {}: {source}", path.display())]
    Db { path: PathBuf, source: sled::Error },
    #[error("database {} is in use by another choreo server", path.display())]
    Locked { path: PathBuf },
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("database {}: corrupt record {key}: {message}", path.display())]
    Corrupt { path: PathBuf, key: String, message: String },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Unsynced commits not yet handed to sled: more than this many object writes are applied as
/// one sled batch. Every sled batch allocates two fresh 512 KiB log buffers (it rolls the log
/// before and after), so a batch per reconcile churned 40k of them through malloc in a
/// 10k-object run, fragmenting the heap by tens of megabytes; one batch per this many writes
/// also keeps the memory a batch pins (see `snapshots::BLOB_BATCH`) small.
const PENDING_WRITES: usize = 512;

/// Object writes of unsynced commits, gathered for one sled batch.
#[derive(Default)]
struct Pending {
    batch: sled::Batch,
    /// The admission's records, written before the objects they go with.
    records: sled::Batch,
    writes: usize,
    /// The bodies the batch stores, by key, while a snapshot is coming (see
    /// [`Store::snapshot_coming`]).
    bodies: std::collections::HashMap<Vec<u8>, sled::IVec, xxhash_rust::xxh3::Xxh3DefaultBuilder>,
}

/// What a store is opened with besides its directory.
#[derive(Clone, Default)]
pub struct StoreOptions {
    /// Built-in APIs besides choreo's own (the identifier backends of `-r`).
    pub extra_apis: Vec<ApiResource>,
    /// The participant in every transaction (see [`Admission`]).
    pub admission: Option<Arc<dyn Admission>>,
}

/// The single writer of the API store.
pub struct Store {
    dir: PathBuf,
    db: sled::Db,
    objects: sled::Tree,
    /// Snapshot bodies by content hash (see `snapshots`).
    snapshot_blobs: sled::Tree,
    /// Format version and the edit intent (see [`Store::record_intent`]).
    meta: sled::Tree,
    /// Large commits on their way (see `redo`).
    redo: sled::Tree,
    state: Arc<RwLock<State>>,
    /// What committed since the engine last looked (bounded: one entry per object).
    changes: Changes,
    /// `get -w` subscribers.
    watchers: watchers::Watchers,
    /// Written to sled when it grows past [`PENDING_WRITES`], by the next durable commit and
    /// by [`Store::sync`]; later writes of a key replace earlier ones, as sled would.
    pending: Mutex<Pending>,
    /// The admission installed at open, and its sled tree.
    admission: Option<(Arc<dyn Admission>, sled::Tree)>,
    /// The body hashes of the newest snapshot (`None`: not read yet), so a snapshot writes only
    /// the bodies that changed since, without looking each one up.
    newest_blobs: Mutex<Option<std::collections::HashSet<[u8; 16]>>>,
    /// How many retained snapshots list each blob (`None`: not counted since the store opened, or
    /// a snapshot failed half-way), so dropping the oldest snapshot deletes its blobs no other
    /// lists without reading every list and every blob.
    blob_refs: Mutex<Option<std::collections::HashMap<[u8; 16], u32>>>,
    /// See [`Store::snapshot_coming`].
    snapshot_coming: std::sync::atomic::AtomicBool,
    /// Whether the committed state is known to hold no garbage (no object with owner
    /// references all of whose owners are gone): then [`Txn::collect_garbage`] looks only at
    /// what its transaction changed. At open, true only when no object names an owner; see
    /// `Txn::commit_inner`.
    gc_clean: std::sync::atomic::AtomicBool,
    /// What earlier commit points made durable (see `durable`).
    durable: Mutex<durable::Durable>,
    /// Applies known to change nothing (see `memo`).
    memo: memo::Memo,
    /// Applies the pending batches to sled beside the engine (declared last: dropped after the
    /// store's own `Drop` handed it the last batch).
    writer: writer::Writer,
}

impl Store {
    /// Opens (or creates) the database in `dir` and loads every object into memory.
    pub fn open(dir: &Path) -> Result<Store> {
        Store::open_with(dir, StoreOptions::default())
    }

    /// [`Store::open`] with built-in APIs and an admission besides choreo's own.
    pub fn open_with(dir: &Path, options: StoreOptions) -> Result<Store> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io { path: dir.into(), source })?;
        let db = sled::Config::new()
            .path(dir)
            // Every object is also held in memory, so sled's page cache serves the scan at open
            // and the tree nodes a batch of writes walks: at 1 MiB a 10k-object run's batches
            // re-read evicted nodes from the file (a quarter of the writer thread's time); 16 MiB
            // spares most of that at no measurable peak RSS.
            .cache_capacity(16 << 20)
            // Durability comes from our flush + fsync at commit points; sled's background flush
            // keeps the write-back of a long run's unsynced commits from piling up in memory.
            .flush_every_ms(Some(200))
            .open()
            .map_err(|source| match &source {
                sled::Error::Io(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.to_string().contains("lock") => {
                    StoreError::Locked { path: dir.into() }
                }
                _ => StoreError::Db { path: dir.into(), source },
            })?;
        let db_err = |source| StoreError::Db { path: dir.into(), source };
        let meta = db.open_tree("meta").map_err(db_err)?;
        match meta.get("format").map_err(db_err)? {
            None => {
                meta.insert("format", FORMAT_VERSION).map_err(db_err)?;
            }
            Some(v) if v.as_ref() == FORMAT_VERSION.as_bytes() => {}
            Some(v) => {
                return Err(StoreError::Corrupt {
                    path: dir.into(),
                    key: "format".into(),
                    message: format!(
                        "database format {:?} is not supported by this choreo (expects {FORMAT_VERSION})",
                        String::from_utf8_lossy(&v)
                    ),
                })
            }
        }
        // A large commit that a crash interrupted after its commit point is completed first.
        let mut durable = durable::Durable::default();
        let redo = redo::tree(&db).map_err(db_err)?;
        if !redo.is_empty() {
            let applied = redo::replay(&db).map_err(|e| match e {
                redo::ReplayError::Db(source) => StoreError::Db { path: dir.into(), source },
                redo::ReplayError::Corrupt(message) => {
                    StoreError::Corrupt { path: dir.into(), key: "redo".into(), message }
                }
            })?;
            if applied > 0 {
                log::warn!("completed a commit of {applied} writes that was interrupted by a crash");
            }
            db.flush().map_err(db_err)?;
            durable.sync(dir)?;
            redo::clear(&redo).map_err(db_err)?;
            db.flush().map_err(db_err)?;
            durable.sync(dir)?;
        }
        let objects = db.open_tree("objects").map_err(db_err)?;
        let snapshot_blobs = db.open_tree("snapshot_blobs").map_err(db_err)?;

        let mut state = State::default();
        for res in builtin_resources()?.into_iter().chain(options.extra_apis) {
            state.registry.insert(res);
        }
        for item in objects.iter() {
            let (k, v) = item.map_err(db_err)?;
            let corrupt = |message: String| StoreError::Corrupt {
                path: dir.into(),
                key: String::from_utf8_lossy(&k).replace('\0', "/"),
                message,
            };
            let key = ObjectKey::from_bytes(&k).ok_or_else(|| corrupt("bad key".into()))?;
            let value: Value = serde_json::from_slice(&v).map_err(|e| corrupt(format!("bad JSON: {e}")))?;
            state.put(key, Some(Arc::new(Stored::new(&value, v))));
        }
        // The registry is derived from the stored CRD objects, never stored on its own.
        let crd_gk = GroupKind::new(CRD_GROUP, CRD_KIND);
        for crd in state.list(&crd_gk, None) {
            match ApiResource::from_crd(&crd) {
                Ok(res) => state.registry.insert(res),
                Err(e) => log::warn!("stored CRD no longer registers: {e}"),
            }
        }
        let admission = match options.admission {
            None => None,
            Some(a) => {
                let tree = db.open_tree(a.tree()).map_err(db_err)?;
                let mut records = tree.iter().filter_map(|r| match r {
                    Ok((k, v)) => Some((k.to_vec(), v.to_vec())),
                    Err(e) => {
                        log::error!("reading {} records: {e}", a.tree());
                        None
                    }
                });
                let uid_of = |k: &ObjectKey| state.objects.get(k).map(|s| s.uid().to_string());
                let stale = a.restore(&mut records, &uid_of).map_err(|message| StoreError::Corrupt {
                    path: dir.into(),
                    key: a.tree().into(),
                    message,
                })?;
                for k in stale {
                    tree.remove(k).map_err(db_err)?;
                }
                Some((a, tree))
            }
        };
        log::debug!(
            "opened store {} with {} objects and {} APIs",
            dir.display(),
            state.objects.len(),
            state.registry.len()
        );
        // Nothing names an owner: nothing can be garbage.
        let gc_clean = state.owners.is_empty();
        let store = Store {
            dir: dir.to_path_buf(),
            db,
            objects,
            snapshot_blobs,
            meta,
            state: Arc::new(RwLock::new(state)),
            changes: Changes::default(),
            watchers: Default::default(),
            pending: Mutex::new(Pending::default()),
            admission,
            newest_blobs: Mutex::new(None),
            blob_refs: Mutex::new(None),
            snapshot_coming: Default::default(),
            memo: Default::default(),
            durable: Mutex::new(durable),
            redo,
            gc_clean: gc_clean.into(),
            writer: writer::Writer::start(),
        };
        store.sync()?;
        Ok(store)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn reader(&self) -> Reader {
        Reader {
            state: self.state.clone(),
            db: self.db.clone(),
            dir: self.dir.clone(),
            watchers: self.watchers.clone(),
        }
    }

    /// Copies what a store is made of — objects, format, the admission's records, not the
    /// snapshots or an edit intent — into a new database at `dir`, for a store that may change
    /// without touching this one (`plan`). Call [`Store::sync`] first: pending writes are not
    /// in sled yet.
    pub fn copy_to(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io { path: dir.into(), source })?;
        // No background flusher: its thread would keep the database (and its file lock) open
        // for a moment after `db` is dropped, and the copy's own opening would find it locked.
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(1 << 20)
            .flush_every_ms(None)
            .open()
            .map_err(|source| StoreError::Db { path: dir.into(), source })?;
        let err = |source| StoreError::Db { path: dir.into(), source };
        let mut trees: Vec<(&str, &sled::Tree)> = vec![("objects", &self.objects), ("meta", &self.meta)];
        if let Some((a, tree)) = &self.admission {
            trees.push((a.tree(), tree));
        }
        for (name, from) in trees {
            let to = db.open_tree(name).map_err(err)?;
            let mut batch = sled::Batch::default();
            for item in from.iter() {
                let (k, v) = item.map_err(self.db_err_fn())?;
                if name == "meta" && k.as_ref() == INTENT_KEY.as_bytes() {
                    continue;
                }
                batch.insert(k, v);
            }
            to.apply_batch(batch).map_err(err)?;
        }
        db.flush().map_err(err)?;
        drop(db);
        wait_for_release(&dir.join("db"));
        Ok(())
    }

    fn db_err_fn(&self) -> impl Fn(sled::Error) -> StoreError + '_ {
        move |source| StoreError::Db { path: self.dir.clone(), source }
    }

    /// Runs `f` on the committed state.
    pub fn with<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        let guard = self.state.read().unwrap_or_else(|p| p.into_inner());
        f(&guard)
    }

    /// Starts a transaction. `now` is the RFC 3339 time stamped on what it creates or changes.
    pub fn begin(&self) -> Txn<'_> {
        Txn::new(self)
    }

    /// The changes committed from now on, gathered per object until drained.
    pub fn changes(&self) -> Changes {
        self.changes.clone()
    }

    /// Makes everything written so far durable: pending writes to sled, sled flush, then fsync
    /// of the database files.
    pub fn sync(&self) -> Result<()> {
        self.write_objects(Vec::new(), Vec::new(), true)?;
        self.db.flush().map_err(|source| StoreError::Db { path: self.dir.clone(), source })?;
        self.durable.lock().unwrap_or_else(|p| p.into_inner()).sync(&self.dir)
    }

    /// Durably records an opaque intent: what a caller must undo if the process dies before
    /// the matching [`Txn::commit_clearing_intent`] or [`Store::clear_intent`]. The engine
    /// keeps in it how to restore the files an edit is about to change; the store does not
    /// look inside. One intent at a time: a new one replaces the old.
    pub fn record_intent(&self, intent: &[u8]) -> Result<()> {
        self.meta.insert(INTENT_KEY, intent).map_err(|source| StoreError::Db { path: self.dir.clone(), source })?;
        self.sync()
    }

    /// The intent recorded and not cleared, if any (after a crash: work to undo).
    pub fn pending_intent(&self) -> Result<Option<Vec<u8>>> {
        let found = self.meta.get(INTENT_KEY).map_err(|source| StoreError::Db { path: self.dir.clone(), source })?;
        Ok(found.map(|v| v.to_vec()))
    }

    /// Durably removes the recorded intent.
    pub fn clear_intent(&self) -> Result<()> {
        if self.meta.remove(INTENT_KEY).map_err(|source| StoreError::Db { path: self.dir.clone(), source })?.is_none() {
            return Ok(());
        }
        self.sync()
    }

    /// One commit's writes too many for one sled batch (see `redo`), durable when it returns.
    fn write_large(&self, writes: Vec<(Vec<u8>, Option<sled::IVec>)>, records: Vec<Record>) -> Result<()> {
        let db_err = self.db_err_fn();
        let records = if self.admission.is_some() { records } else { Vec::new() };
        // What came before is in sled first, so that nothing is applied out of order.
        self.write_objects(Vec::new(), Vec::new(), true)?;
        let mut log = redo::Log::new(&self.redo).map_err(&db_err)?;
        log.add(&String::from_utf8_lossy(&self.objects.name()), &writes).map_err(&db_err)?;
        if let Some((_, tree)) = &self.admission {
            log.add(&String::from_utf8_lossy(&tree.name()), &records).map_err(&db_err)?;
        }
        log.seal().map_err(&db_err)?;
        // The commit point: from here on, a crash ends with the whole commit applied at open.
        self.sync()?;
        let count = writes.len() + records.len();
        let apply = || -> Result<()> {
            let mut records = records.into_iter();
            let mut writes = writes.into_iter();
            loop {
                let r: Vec<_> = records.by_ref().take(redo::CHUNK).collect();
                let w: Vec<_> = writes.by_ref().take(redo::CHUNK).collect();
                if r.is_empty() && w.is_empty() {
                    break;
                }
                self.write_objects(w, r, false)?;
            }
            self.sync()?;
            redo::clear(&self.redo).map_err(&db_err)?;
            // Cleared for good before anything else is written: a replay must not undo later
            // writes.
            self.sync()
        };
        apply().inspect_err(|e| {
            // The caller reports a failed commit; that it is logged and will still land is said
            // here, where it is known.
            log::error!(
                "a commit of {count} writes failed after it was logged ({e}): the next start of the server \
                 completes it from {}",
                self.dir.display()
            )
        })
    }

    /// Adds one commit's object writes (key bytes, JSON or removal) to the pending batch and
    /// hands the batch to the writer thread when it has grown large; with `now`, hands it over
    /// and waits until sled holds everything written so far. A commit's writes always go in one
    /// sled batch together, so each commit stays atomic on disk — but for a commit of more than
    /// `redo::LARGE` writes, which is logged first and applied in pieces (see `redo`).
    fn write_objects(&self, writes: Vec<(Vec<u8>, Option<sled::IVec>)>, records: Vec<Record>, now: bool) -> Result<()> {
        if writes.len() + records.len() > redo::LARGE {
            return self.write_large(writes, records);
        }
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.writes += writes.len() + records.len();
        let keep_bodies = self.snapshot_coming.load(std::sync::atomic::Ordering::Relaxed);
        for (key, value) in writes {
            if keep_bodies {
                match &value {
                    Some(v) => pending.bodies.insert(key.clone(), v.clone()),
                    None => pending.bodies.remove(&key),
                };
            }
            match value {
                Some(v) => pending.batch.insert(key, v),
                None => pending.batch.remove(key),
            }
        }
        for (key, value) in records {
            match value {
                Some(v) => pending.records.insert(key, v),
                None => pending.records.remove(key),
            }
        }
        if pending.writes > 0 && (now || pending.writes > PENDING_WRITES) {
            let batch = std::mem::take(&mut *pending);
            drop(pending);
            let records = self.admission.as_ref().map(|(_, tree)| (tree.clone(), batch.records));
            let bodies = match batch.bodies.is_empty() {
                true => None,
                false => Some((self.snapshot_blobs.clone(), batch.bodies.into_values().collect())),
            };
            let job = writer::Job { records, objects: (self.objects.clone(), batch.batch), bodies };
            // A durable step follows (or the caller needs sled to hold everything): the batch is
            // applied here, after the ones handed over before it; an earlier batch that failed
            // fails this commit before its writes land, as they must not when the caller is told
            // they did not.
            match now {
                true => self.writer.write_now(job),
                false => self.writer.write(job),
            }
            .map_err(self.db_err_fn())?;
        } else {
            drop(pending);
            if now {
                // Wait for the batches handed over, and report one of an earlier unsynced commit
                // that failed.
                self.writer.drain().map_err(self.db_err_fn())?;
            }
        }
        Ok(())
    }

    pub(crate) fn admission(&self) -> Option<&Arc<dyn Admission>> {
        self.admission.as_ref().map(|(a, _)| a)
    }

    fn publish(&self, events: Vec<Event>, writes: Vec<(ObjectKey, Option<Arc<Stored>>)>, registry: Option<Registry>) {
        {
            let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
            // Commits are the hot path: the fan-out is built only when someone watches.
            if !events.is_empty() && !self.watchers.is_empty() {
                // Watchers get each object as written, or as it was before its deletion.
                let written: std::collections::HashMap<&ObjectKey, &Option<Arc<Stored>>> =
                    writes.iter().map(|(k, v)| (k, v)).collect();
                let items: Vec<(EventType, ObjectKey)> = events.iter().map(|e| (e.kind, e.key.clone())).collect();
                self.watchers.publish(&items, |k| match written.get(k) {
                    Some(Some(v)) => Some(v.clone()),
                    _ => state.objects.get(k).cloned(),
                });
            }
            for (key, value) in writes {
                state.put(key, value);
            }
            if let Some(reg) = registry {
                state.registry = reg;
                self.memo.forget_all();
            }
        }
        if !events.is_empty() {
            self.changes.record(&events);
        }
    }
}

impl Drop for Store {
    /// Hands pending writes to sled, which writes them back on its own (not durably: only
    /// [`Store::sync`] is), so a store dropped without a sync loses no more than sled would.
    fn drop(&mut self) {
        if let Err(e) = self.write_objects(Vec::new(), Vec::new(), true) {
            log::error!("cannot write the last changes to {}: {e}", self.dir.display());
        }
    }
}

/// The `meta` key of the edit intent.
const INTENT_KEY: &str = "edit-intent";

/// The current time in the RFC 3339 form Kubernetes uses (`2026-11-25T10:00:00Z`).
pub fn now_rfc3339() -> String {
    // Every transaction asks (20k times in a 10k-object run): format once per second.
    thread_local! {
        static LAST: std::cell::RefCell<(i64, String)> = const { std::cell::RefCell::new((i64::MIN, String::new())) };
    }
    let now = chrono::Utc::now();
    LAST.with_borrow_mut(|(second, text)| {
        if *second != now.timestamp() {
            *second = now.timestamp();
            *text = now.format("%Y-%m-%dT%H:%M:%SZ").to_string();
        }
        text.clone()
    })
}

/// Waits (up to two seconds) until no one holds sled's lock on its file `db`: a database just
/// dropped is closed by sled's background threads a moment later, and opening it again before
/// then fails as "in use".
fn wait_for_release(file: &Path) {
    let Ok(f) = std::fs::File::open(file) else { return };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    // Released at once, and when `f` closes.
    while !matches!(f.try_lock(), Ok(())) {
        if std::time::Instant::now() >= deadline {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let _ = f.unlock();
}

#[cfg(test)]
mod tests;

//! Transactions over the store: an overlay of writes that commits atomically or not at all.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, LazyLock};

use serde_json::Value;

use super::{Event, EventType, Result, Store, StoreError, Stored};
use crate::api::apply::{self, ApplyRequest, Change};
use crate::api::builtin::{CRD_GROUP, CRD_KIND};
use crate::api::crd::{ApiResource, Registry};
use crate::api::meta;
use crate::api::object::{self, GroupKind, ObjectKey};
use crate::api::schema::Schema;
use crate::api::validate;

/// The schema of a CRD that declares none: every field is accepted.
static PERMISSIVE: LazyLock<Schema> = LazyLock::new(|| Schema { preserve_unknown_fields: true, ..Schema::default() });

/// How to apply one object.
#[derive(Debug, Clone, Copy)]
pub struct ApplyOptions<'a> {
    /// The field manager that owns what this apply sets.
    pub manager: &'a str,
    /// Take over fields other managers own instead of reporting a conflict.
    pub force: bool,
}

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    Created,
    Updated,
    /// The write changed nothing: no new resourceVersion, no event.
    Unchanged,
    /// Finalizers hold the object: it now carries a deletionTimestamp.
    Deleting,
    Deleted,
}

/// Parsed objects a transaction keeps for reading them again: enough for the few objects a
/// reconcile reads more than once, bounded so that a load which reads every object does not
/// hold them all parsed (a parsed `Value` takes about ten times the memory of its text: 10k of
/// them held ~65 MB at a load's commit).
pub(super) const PARSED_MAX: usize = 64;

/// The objects a transaction parsed, by key; emptied when full (see [`PARSED_MAX`]).
#[derive(Default)]
struct Parsed {
    map: std::collections::HashMap<ObjectKey, Arc<Value>>,
}

impl Parsed {
    fn get(&self, key: &ObjectKey) -> Option<Arc<Value>> {
        self.map.get(key).cloned()
    }

    fn insert(&mut self, key: ObjectKey, value: Arc<Value>) {
        if self.map.len() >= PARSED_MAX {
            self.map.clear();
        }
        self.map.insert(key, value);
    }

    fn remove(&mut self, key: &ObjectKey) {
        self.map.remove(key);
    }
}

/// What an apply left: the object as stored, for callers that want it back without reading it
/// again (and parsing it: a staged object is kept as JSON).
enum Written {
    /// The object as staged (created, updated), or a copy equal to the live object (unchanged).
    Value(Value),
    /// The object shared: the live one (unchanged), or the staged one kept parsed.
    Shared(Arc<Value>),
    /// The apply removed the last finalizer of a deleting object, which is gone.
    Gone,
    /// The apply changed nothing, known without reading the object.
    Unread,
}

/// Whether an apply may use the store's memo of applies, and how its request is hashed.
#[derive(Clone, Copy)]
enum Memo<'a> {
    Off,
    /// Encode the object to hash it.
    Value,
    /// Hash the JSON text the object was parsed from.
    Text(&'a str),
}

/// A set of writes that becomes visible and durable together at [`Txn::commit`].
///
/// Staged writes are kept in their stored form (compact JSON and the metadata the store
/// indexes), parsed again only when the transaction reads them back: a load stages every input
/// at once, and 10k parsed `Value`s held ~70 MB where their text holds ~10 MB.
pub struct Txn<'s> {
    store: &'s Store,
    /// Objects this transaction parsed (stored or staged), so repeated reads of one object parse
    /// it once; an object's entry goes when the transaction writes it.
    parsed: std::cell::RefCell<Parsed>,
    writes: BTreeMap<ObjectKey, Option<Arc<Stored>>>,
    /// A modified copy of the registry, when a CRD was applied or deleted.
    registry: Option<Registry>,
    now: String,
    /// The admission's journal mark when this transaction first called it; a transaction
    /// dropped without committing rolls the admission back to it.
    admitted: Option<usize>,
    /// `Some(full)` when [`Txn::collect_garbage`] ran after the last write: then the state this
    /// transaction commits holds no garbage if the one it started from held none, or if the
    /// collection was a full one.
    gc_after_writes: Option<bool>,
}

impl<'s> Txn<'s> {
    /// The store this transaction reads and will write.
    pub fn store(&self) -> &'s Store {
        self.store
    }

    pub(super) fn new(store: &'s Store) -> Self {
        Txn {
            store,
            parsed: Default::default(),
            writes: BTreeMap::new(),
            gc_after_writes: None,
            registry: None,
            now: super::now_rfc3339(),
            admitted: None,
        }
    }

    /// The admission for objects of `gk`, if one is installed and handles the kind; marks
    /// this transaction as one that must commit or roll the admission back.
    fn admission_for(&mut self, gk: &GroupKind) -> Option<std::sync::Arc<dyn super::Admission>> {
        let a = self.store.admission()?.clone();
        if !a.handles(gk) {
            return None;
        }
        if self.admitted.is_none() {
            self.admitted = Some(a.mark());
        }
        Some(a)
    }

    /// The time stamped on what this transaction creates or changes.
    pub fn now(&self) -> &str {
        &self.now
    }

    /// Whether the transaction holds any write.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty() && self.registry.is_none()
    }

    /// The object as this transaction sees it, in its stored form (nothing parsed).
    pub fn stored(&self, key: &ObjectKey) -> Option<Arc<Stored>> {
        match self.writes.get(key) {
            Some(v) => v.clone(),
            None => self.store.with(|s| s.objects.get(key).cloned()),
        }
    }

    pub fn get(&self, key: &ObjectKey) -> Option<Arc<Value>> {
        if let Some(v) = self.parsed.borrow().get(key) {
            return Some(v);
        }
        // The stored form is taken under the read lock and parsed after it.
        let v = self.stored(key)?.value();
        self.parsed.borrow_mut().insert(key.clone(), v.clone());
        Some(v)
    }

    /// Runs `f` with the registry as this transaction sees it.
    pub fn with_registry<R>(&self, f: impl FnOnce(&Registry) -> R) -> R {
        match &self.registry {
            Some(reg) => f(reg),
            None => self.store.with(|s| f(&s.registry)),
        }
    }

    pub fn resource(&self, gk: &GroupKind) -> Option<Arc<ApiResource>> {
        self.with_registry(|r| r.get(gk).cloned())
    }

    /// Objects of one kind (optionally one namespace) as this transaction sees them, in key order.
    pub fn list(&self, gk: &GroupKind, namespace: Option<&str>) -> Vec<(ObjectKey, Arc<Value>)> {
        let in_range =
            |k: &ObjectKey| k.group == gk.group && k.kind == gk.kind && namespace.is_none_or(|ns| k.namespace == ns);
        let start = ObjectKey::new(gk, namespace.unwrap_or(""), "");
        // The stored forms are taken under the read lock and parsed after it.
        let mut out: BTreeMap<ObjectKey, Arc<Stored>> = self.store.with(|s| {
            s.objects
                .range(start.clone()..)
                .take_while(|(k, _)| in_range(k))
                .filter(|(k, _)| !self.writes.contains_key(*k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        });
        for (k, v) in self.writes.range(start..).take_while(|(k, _)| in_range(k)) {
            match v {
                Some(v) => out.insert(k.clone(), v.clone()),
                None => out.remove(k),
            };
        }
        out.into_iter().map(|(k, v)| (k, v.value())).collect()
    }

    /// Objects whose owner references name `uid`, as this transaction sees them, in key order.
    pub fn owned_by(&self, uid: &str) -> Vec<(ObjectKey, Arc<Value>)> {
        self.owned_by_where(uid, |_| true)
    }

    /// [`Txn::owned_by`] limited to the keys `wanted` accepts; only those objects are parsed.
    pub fn owned_by_where(&self, uid: &str, wanted: impl Fn(&ObjectKey) -> bool) -> Vec<(ObjectKey, Arc<Value>)> {
        let mut out: BTreeMap<ObjectKey, Arc<Stored>> = self.store.with(|s| {
            s.owned_by(uid)
                .filter(|k| wanted(k))
                .filter_map(|k| s.objects.get(k).map(|v| (k.clone(), v.clone())))
                .collect()
        });
        for (k, v) in &self.writes {
            if !wanted(k) {
                continue;
            }
            match v {
                Some(v) if v.owners().iter().any(|r| r.uid == uid) => {
                    out.insert(k.clone(), v.clone());
                }
                _ => {
                    out.remove(k);
                }
            }
        }
        out.into_iter().map(|(k, v)| (k, v.value())).collect()
    }

    /// The keys of [`Txn::owned_by_where`], without reading any object.
    pub fn owned_keys_where(&self, uid: &str, wanted: impl Fn(&ObjectKey) -> bool) -> Vec<ObjectKey> {
        let mut out: BTreeSet<ObjectKey> =
            self.store.with(|s| s.owned_by(uid).filter(|k| wanted(k)).cloned().collect());
        for (k, v) in &self.writes {
            if !wanted(k) {
                continue;
            }
            match v {
                Some(v) if v.owners().iter().any(|r| r.uid == uid) => {
                    out.insert(k.clone());
                }
                _ => {
                    out.remove(k);
                }
            }
        }
        out.into_iter().collect()
    }

    /// Every object key as this transaction sees it, in key order.
    pub fn keys(&self) -> Vec<ObjectKey> {
        let mut keys: BTreeSet<ObjectKey> = self.store.with(|s| s.objects.keys().cloned().collect());
        for (k, v) in &self.writes {
            if v.is_some() {
                keys.insert(k.clone());
            } else {
                keys.remove(k);
            }
        }
        keys.into_iter().collect()
    }

    /// Server-side applies `obj` (a full intent of `opts.manager`), validates the result and
    /// stages it. Nothing is staged when this returns an error.
    pub fn apply(&mut self, obj: &Value, opts: ApplyOptions<'_>) -> Result<(ObjectKey, WriteOutcome)> {
        self.apply_inner(obj, opts, Memo::Value).map(|(key, outcome, _)| (key, outcome))
    }

    /// [`Txn::apply`] of a request that arrived as the JSON `text` that `obj` was parsed from
    /// (a reconciler in the worker process): the memo's digest hashes the text rather than
    /// encoding `obj` again.
    pub fn apply_sent(&mut self, obj: &Value, text: &str, opts: ApplyOptions<'_>) -> Result<(ObjectKey, WriteOutcome)> {
        self.apply_inner(obj, opts, Memo::Text(text)).map(|(key, outcome, _)| (key, outcome))
    }

    /// [`Txn::apply`] that also returns the object as this transaction now holds it (`None`
    /// when the apply deleted it), without reading it back.
    pub fn apply_and_read(
        &mut self,
        obj: &Value,
        opts: ApplyOptions<'_>,
    ) -> Result<(ObjectKey, WriteOutcome, Option<Value>)> {
        let (key, outcome, written) = self.apply_inner(obj, opts, Memo::Off)?;
        let value = match written {
            Written::Value(v) => Some(v),
            Written::Shared(v) => Some((*v).clone()),
            Written::Gone => None,
            // Only an apply that may use the memo skips reading.
            Written::Unread => self.get(&key).map(|v| (*v).clone()),
        };
        Ok((key, outcome, value))
    }

    /// Applies `obj`. Unless `memo` is off, an apply the store remembers (by the request's digest,
    /// [`super::memo::digest`]) as changing nothing on this very object is answered without reading it
    /// (`Written::Unread`); the object an apply leaves (written, or found unchanged) is
    /// remembered, as applying the same request to it again changes nothing (server-side apply
    /// is idempotent: the request's fields are there, owned by its manager).
    fn apply_inner(
        &mut self,
        obj: &Value,
        opts: ApplyOptions<'_>,
        memo: Memo<'_>,
    ) -> Result<(ObjectKey, WriteOutcome, Written)> {
        let (res, applied) = self.prepare(obj)?;
        let key = ObjectKey::of(&applied).ok_or_else(|| StoreError::Malformed("object has no metadata.name".into()))?;
        let admitted = self.store.admission().is_some_and(|a| a.handles(&key.group_kind()));
        // Only under the committed registry, and not for a kind the admission sees (it acts on
        // unchanged writes too): the request is hashed only then.
        let memo = match memo {
            _ if admitted || self.registry.is_some() => None,
            Memo::Off => None,
            Memo::Value => Some(super::memo::digest(obj, opts.manager, opts.force)),
            Memo::Text(text) => Some(super::memo::digest_text(text.as_bytes(), opts.manager, opts.force)),
        };
        // The object as committed, when this transaction has not written it.
        let committed = memo
            .filter(|_| !self.writes.contains_key(&key))
            .and_then(|_| self.store.with(|s| s.objects.get(&key).cloned()));
        if let (Some(digest), Some(stored)) = (memo, &committed) {
            if self.store.memo.unchanged(stored, digest) {
                // Tests check what the memo says against the apply it saves.
                #[cfg(debug_assertions)]
                {
                    let (_, outcome, _) = self.apply_inner(obj, opts, Memo::Off)?;
                    assert_eq!(outcome, WriteOutcome::Unchanged, "{key}: the memo of applies is wrong");
                }
                return Ok((key, WriteOutcome::Unchanged, Written::Unread));
            }
        }
        let live = self.get(&key);
        let schema: &Schema = res.schema.as_deref().unwrap_or(&PERMISSIVE);
        let change = apply::apply_change(&ApplyRequest {
            schema,
            live: live.as_deref(),
            applied: &applied,
            manager: opts.manager,
            force: opts.force,
            now: &self.now,
        })
        .map_err(|source| StoreError::Apply { key: Box::new(key.clone()), source })?;
        let mut merged = match (change, &live) {
            (Change::Unchanged, Some(live)) if !admitted && !validate::needs_defaults(schema, live) => {
                // Nothing to write, and no copy of the live object to make: it only has to be
                // valid still (its CRD may have changed since it was written).
                check_valid(&key, &res, schema, live, Some(live))?;
                if let (Some(digest), Some(stored)) = (memo, &committed) {
                    self.store.memo.remember(stored, digest);
                }
                return Ok((key, WriteOutcome::Unchanged, Written::Shared(live.clone())));
            }
            (Change::Unchanged, live) => live.as_deref().cloned().unwrap_or(Value::Null),
            (Change::Merged(v), _) => v,
        };
        validate::apply_defaults(schema, &mut merged);
        check_valid(&key, &res, schema, &merged, live.as_deref())?;
        let done = self.stage(key, &res, live, merged, Some(opts.manager))?;
        if let (Some(digest), WriteOutcome::Created | WriteOutcome::Updated) = (memo, done.1) {
            if let Some(Some(staged)) = self.writes.get(&done.0) {
                self.store.memo.remember(staged, digest);
            }
        }
        Ok(done)
    }

    /// Resolves the API of `obj` and normalises the client's object (system fields dropped,
    /// namespace defaulted); the object is copied only when that changes it.
    fn prepare<'o>(&self, obj: &'o Value) -> Result<(Arc<ApiResource>, Cow<'o, Value>)> {
        let map = obj
            .as_object()
            .ok_or_else(|| StoreError::Malformed(format!("an object must be a map, got {}", type_name(obj))))?;
        // Deeper objects could not be read back: refuse them here rather than lose them later.
        if object::depth(obj) > object::MAX_DEPTH {
            return Err(StoreError::Malformed(format!("the object nests deeper than {} levels", object::MAX_DEPTH)));
        }
        let api_version = match map.get("apiVersion") {
            Some(Value::String(s)) if !s.is_empty() => s.as_str(),
            _ => return Err(StoreError::Malformed("object has no apiVersion".into())),
        };
        let kind = match map.get("kind") {
            Some(Value::String(s)) if !s.is_empty() => s.as_str(),
            _ => return Err(StoreError::Malformed("object has no kind".into())),
        };
        let (group, version) = object::split_api_version(api_version);
        let res = self
            .resource(&GroupKind::new(group, kind))
            .ok_or_else(|| StoreError::UnknownKind { api_version: api_version.into(), kind: kind.into() })?;
        if version != res.version {
            return Err(StoreError::WrongVersion {
                api_version: api_version.into(),
                kind: kind.into(),
                served: res.api_version(),
            });
        }
        if !meta::needs_normalizing(obj, res.namespaced) {
            return Ok((res, Cow::Borrowed(obj)));
        }
        let mut obj = obj.clone();
        meta::strip_system_fields(&mut obj);
        meta::default_namespace(&mut obj, res.namespaced);
        Ok((res, Cow::Owned(obj)))
    }

    /// Stages the live object again, through the admission: what it depends on changed in
    /// this transaction (a claim's index appeared, its range went). `manager` is who asks.
    pub fn readmit(&mut self, key: &ObjectKey, manager: &str) -> Result<WriteOutcome> {
        let Some(live) = self.get(key) else { return Err(StoreError::NotFound { key: key.clone() }) };
        let res = self
            .resource(&key.group_kind())
            .ok_or_else(|| StoreError::UnknownKind { api_version: key.group.clone(), kind: key.kind.clone() })?;
        let merged = (*live).clone();
        self.stage(key.clone(), &res, Some(live), merged, Some(manager)).map(|(_, outcome, _)| outcome)
    }

    /// Changes the stored object with `f` and stages it without calling the admission: for an
    /// admission's bookkeeping on an object of a kind it handles (an index's condition), which
    /// must not run its own hook again.
    pub fn update_unadmitted(&mut self, key: &ObjectKey, f: impl FnOnce(&mut Value)) -> Result<WriteOutcome> {
        let Some(live) = self.get(key) else { return Err(StoreError::NotFound { key: key.clone() }) };
        let res = self
            .resource(&key.group_kind())
            .ok_or_else(|| StoreError::UnknownKind { api_version: key.group.clone(), kind: key.kind.clone() })?;
        let mut merged = (*live).clone();
        f(&mut merged);
        self.stage(key.clone(), &res, Some(live), merged, None).map(|(_, outcome, _)| outcome)
    }

    /// Stages an object the system generates whole (an admission's Entries): no field
    /// managers (it is replaced as a unit), validated like any write, without calling the
    /// admission; content equal to the stored object writes nothing.
    pub fn put_system(&mut self, obj: &Value) -> Result<WriteOutcome> {
        let (res, prepared) = self.prepare(obj)?;
        let key =
            ObjectKey::of(&prepared).ok_or_else(|| StoreError::Malformed("object has no metadata.name".into()))?;
        let live = self.get(&key);
        let schema: &Schema = res.schema.as_deref().unwrap_or(&PERMISSIVE);
        let mut merged = prepared.into_owned();
        validate::apply_defaults(schema, &mut merged);
        check_valid(&key, &res, schema, &merged, live.as_deref())?;
        self.stage(key, &res, live, merged, None).map(|(_, outcome, _)| outcome)
    }

    /// Validates `obj` as [`Txn::apply`] would, without staging anything.
    pub fn check(&mut self, obj: &Value, opts: ApplyOptions<'_>) -> Result<(ObjectKey, WriteOutcome)> {
        let saved_writes = self.writes.clone();
        let saved_registry = self.registry.clone();
        let mark = self.store.admission().map(|a| a.mark());
        let result = self.apply(obj, opts);
        self.writes = saved_writes;
        self.registry = saved_registry;
        if let (Some(a), Some(mark)) = (self.store.admission(), mark) {
            a.rollback_to(mark);
        }
        // Nothing parsed during the check may outlive the writes it saw.
        *self.parsed.get_mut() = Parsed::default();
        result
    }

    /// Sets server-owned metadata on a merged object and stages it.
    fn stage(
        &mut self,
        key: ObjectKey,
        res: &ApiResource,
        live: Option<Arc<Value>>,
        mut merged: Value,
        manager: Option<&str>,
    ) -> Result<(ObjectKey, WriteOutcome, Written)> {
        match &live {
            Some(live) => copy_system_fields(live, &mut merged),
            None => {
                if let Some(m) = object::metadata_mut(&mut merged) {
                    m.insert("uid".into(), Value::String(uuid::Uuid::new_v4().to_string()));
                    m.insert("creationTimestamp".into(), Value::String(self.now.clone()));
                }
            }
        }
        if let Some(manager) = manager {
            if let Some(a) = self.admission_for(&key.group_kind()) {
                a.on_write(self, &key, &mut merged, live.as_deref(), manager)
                    .map_err(|message| StoreError::Admission { key: Box::new(key.clone()), message })?;
            }
        }
        let outcome = match &live {
            Some(live) => {
                if merged == **live {
                    return Ok((key, WriteOutcome::Unchanged, Written::Value(merged)));
                }
                if object::deletion_timestamp(&merged).is_some() && object::finalizers(&merged).is_empty() {
                    // The last finalizer is gone: the deletion it held completes now.
                    self.remove(&key, live.clone());
                    return Ok((key, WriteOutcome::Deleted, Written::Gone));
                }
                let rv = resource_version(live) + 1;
                let generation = generation(live) + u64::from(live.get("spec") != merged.get("spec"));
                if let Some(m) = object::metadata_mut(&mut merged) {
                    m.insert("resourceVersion".into(), Value::String(rv.to_string()));
                    m.insert("generation".into(), Value::from(generation));
                }
                WriteOutcome::Updated
            }
            None => {
                if let Some(m) = object::metadata_mut(&mut merged) {
                    m.insert("resourceVersion".into(), Value::String("1".into()));
                    m.insert("generation".into(), Value::from(1u64));
                }
                WriteOutcome::Created
            }
        };
        if res.group == CRD_GROUP && res.kind == CRD_KIND {
            let crd = ApiResource::from_crd(&merged)?;
            let gk = crd.group_kind();
            if self.resource(&gk).is_some_and(|r| r.builtin) {
                return Err(StoreError::Builtin(crd.full_name()));
            }
            if let Some(old) = &live {
                // A CRD whose object name stays but whose kind changes leaves the old kind.
                if let Ok(prev) = ApiResource::from_crd(old) {
                    if prev.group_kind() != gk {
                        self.unregister(&prev.group_kind());
                    }
                }
            }
            self.registry_mut().insert(crd);
        }
        // Kept parsed: a reconcile often writes its for-object twice (finalizer, then status).
        let merged = Arc::new(merged);
        self.stage_write(key.clone(), Some(Stored::of(&merged)));
        self.parsed.get_mut().insert(key.clone(), merged.clone());
        Ok((key, outcome, Written::Shared(merged)))
    }

    /// Deletes an object, or marks it deleting when finalizers hold it.
    pub fn delete(&mut self, key: &ObjectKey) -> Result<WriteOutcome> {
        let live = self.get(key).ok_or_else(|| StoreError::NotFound { key: key.clone() })?;
        if object::deletion_timestamp(&live).is_none() {
            if let Some(a) = self.admission_for(&key.group_kind()) {
                a.on_delete(self, key, &live)
                    .map_err(|message| StoreError::Admission { key: Box::new(key.clone()), message })?;
            }
        }
        if object::finalizers(&live).is_empty() {
            self.remove(key, live);
            return Ok(WriteOutcome::Deleted);
        }
        if object::deletion_timestamp(&live).is_some() {
            return Ok(WriteOutcome::Unchanged);
        }
        let mut marked = (*live).clone();
        let rv = resource_version(&live) + 1;
        if let Some(m) = object::metadata_mut(&mut marked) {
            m.insert("deletionTimestamp".into(), Value::String(self.now.clone()));
            m.insert("resourceVersion".into(), Value::String(rv.to_string()));
        }
        self.stage_write(key.clone(), Some(Stored::of(&marked)));
        Ok(WriteOutcome::Deleting)
    }

    /// Removes an object outright; removing a CRD object unregisters its API and removes every
    /// object of that kind, as Kubernetes does.
    fn remove(&mut self, key: &ObjectKey, live: Arc<Value>) {
        self.stage_write(key.clone(), None);
        if key.group == CRD_GROUP && key.kind == CRD_KIND {
            if let Ok(crd) = ApiResource::from_crd(&live) {
                self.unregister(&crd.group_kind());
            }
        }
    }

    fn unregister(&mut self, gk: &GroupKind) {
        self.registry_mut().remove(gk);
        for (k, _) in self.list(gk, None) {
            self.stage_write(k, None);
        }
    }

    /// Records a write; the parsed stored object it replaces is no longer needed.
    fn stage_write(&mut self, key: ObjectKey, value: Option<Arc<Stored>>) {
        self.parsed.get_mut().remove(&key);
        self.writes.insert(key, value);
        self.gc_after_writes = None;
    }

    fn registry_mut(&mut self) -> &mut Registry {
        if self.registry.is_none() {
            self.registry = Some(self.store.with(|s| s.registry.clone()));
        }
        self.registry.get_or_insert_with(Registry::default)
    }

    /// Deletes (through the normal delete, so finalizers hold) every object none of whose owners
    /// is alive: an owner is alive when it exists with the referenced uid and is not being
    /// deleted. Repeats until nothing more is collected, so whole subtrees go. Returns the keys
    /// collected.
    ///
    /// When the committed state is known to hold no garbage (see [`Store::gc_clean`]) only what
    /// this transaction's writes can have made garbage is looked at: the objects it wrote with
    /// owner references, and the dependents of objects it deleted, marked for deletion or
    /// re-created with a new uid. Otherwise (and when it changed an API) every owned object is.
    pub fn collect_garbage(&mut self) -> Vec<ObjectKey> {
        let full = !self.store.gc_clean.load(std::sync::atomic::Ordering::Relaxed) || self.registry.is_some();
        let mut collected = Vec::new();
        let mut visited = BTreeSet::new();
        loop {
            let mut round = Vec::new();
            let candidates = if full { self.all_owned() } else { self.gc_candidates() };
            for key in candidates {
                if !visited.contains(&key) && self.is_garbage(&key) {
                    round.push(key);
                }
            }
            if round.is_empty() {
                #[cfg(debug_assertions)]
                if !full {
                    // Debug builds (every test) check that looking at less found everything.
                    let missed: Vec<ObjectKey> =
                        self.all_owned().into_iter().filter(|k| !visited.contains(k) && self.is_garbage(k)).collect();
                    assert!(missed.is_empty(), "the incremental garbage collection missed {missed:?}");
                }
                self.gc_after_writes = Some(full);
                return collected;
            }
            for key in round {
                if self.delete(&key).is_ok() {
                    log::debug!("garbage collected {key}");
                }
                visited.insert(key.clone());
                collected.push(key);
            }
        }
    }

    /// Whether `key` is an object none of whose owners is alive (and is not being deleted).
    pub(super) fn is_garbage(&self, key: &ObjectKey) -> bool {
        let Some((_, owners, deleting)) = self.gc_info(key) else { return false };
        if owners.is_empty() || deleting {
            return false;
        }
        !owners.iter().any(|o| {
            let gk = GroupKind::new(o.group.clone(), o.kind.clone());
            let ns = match self.resource(&gk) {
                Some(r) if r.namespaced => key.namespace.as_str(),
                Some(_) => "",
                None => return false,
            };
            self.gc_info(&ObjectKey::new(&gk, ns, &o.name))
                .is_some_and(|(uid, _, deleting)| (o.uid.is_empty() || uid == o.uid) && !deleting)
        })
    }

    /// Every object with owner references, as this transaction sees them.
    pub(super) fn all_owned(&self) -> BTreeSet<ObjectKey> {
        // Only objects with owner references can be garbage: the owner index names them.
        let mut candidates: BTreeSet<ObjectKey> = self.store.with(|s| s.owned_keys().cloned().collect());
        for (k, v) in &self.writes {
            if v.as_ref().is_some_and(|v| !v.owners().is_empty()) {
                candidates.insert(k.clone());
            }
        }
        candidates
    }

    /// What this transaction's writes can have made garbage in a state that held none: the
    /// objects it wrote with owner references, and the committed dependents of every object it
    /// took away as an owner (deleted, being deleted, or now with another uid), including those
    /// that name their owner without a uid.
    fn gc_candidates(&self) -> BTreeSet<ObjectKey> {
        self.store.with(|s| {
            let mut candidates = BTreeSet::new();
            let mut owner_gone = false;
            for (k, v) in &self.writes {
                if v.as_ref().is_some_and(|v| !v.owners().is_empty()) {
                    candidates.insert(k.clone());
                }
                let Some(old) = s.objects.get(k) else { continue };
                let gone = match v {
                    None => true,
                    Some(v) => v.deleting() || v.uid() != old.uid(),
                };
                if gone {
                    owner_gone = true;
                    candidates.extend(s.owned_by(old.uid()).cloned());
                }
            }
            if owner_gone {
                candidates.extend(s.owned_by("").cloned());
            }
            candidates
        })
    }

    /// The uid, owner references and deletion state of an object, without parsing stored ones.
    fn gc_info(&self, key: &ObjectKey) -> Option<(String, Vec<object::OwnerRef>, bool)> {
        match self.writes.get(key) {
            Some(Some(v)) => Some((v.uid().to_string(), v.owners().to_vec(), v.deleting())),
            Some(None) => None,
            None => self
                .store
                .with(|s| s.objects.get(key).map(|st| (st.uid().to_string(), st.owners().to_vec(), st.deleting()))),
        }
    }

    /// Makes the transaction durable and visible; returns the events it produced.
    pub fn commit(self) -> Result<Vec<Event>> {
        self.commit_inner(Durability::Durable)
    }

    /// [`Txn::commit`] that also removes the recorded intent, in the same durable step: after
    /// a crash either both the writes and the removal are on disk, or the intent is still
    /// there (and the writes, if on disk, are undone by whoever recorded it).
    pub fn commit_clearing_intent(self) -> Result<Vec<Event>> {
        if self.is_empty() {
            self.store.clear_intent()?;
            return Ok(Vec::new());
        }
        self.commit_inner(Durability::ClearingIntent)
    }

    /// Makes the transaction visible without waiting for the disk: for the many small commits of
    /// a run, which is made durable as a whole with [`Store::sync`] before it is reported. Its
    /// writes may reach sled only with a later commit or sync, which then reports a database
    /// error.
    pub fn commit_unsynced(self) -> Result<Vec<Event>> {
        self.commit_inner(Durability::Unsynced)
    }

    fn commit_inner(mut self, durability: Durability) -> Result<Vec<Event>> {
        let durable = durability != Durability::Unsynced;
        let admission = self.admitted.and(self.store.admission().cloned());
        let records = admission.as_ref().map(|a| a.records()).unwrap_or_default();
        if self.is_empty() && records.is_empty() {
            if let Some(a) = &admission {
                a.committed();
                self.admitted = None;
            }
            return Ok(Vec::new());
        }
        let store = self.store;
        let mut batch = Vec::with_capacity(self.writes.len());
        let mut events = Vec::with_capacity(self.writes.len());
        let mut stored = Vec::with_capacity(self.writes.len());
        // Whether a write can have made garbage: one with owner references (they may be gone),
        // or one that takes an owner away (see `gc_candidates`).
        let mut may_leave_garbage = false;
        store.with(|state| {
            for (key, value) in &self.writes {
                let before = state.objects.get(key);
                may_leave_garbage |= match (value, before) {
                    (Some(v), before) => {
                        !v.owners().is_empty() || v.deleting() || before.is_some_and(|b| b.uid() != v.uid())
                    }
                    (None, before) => before.is_some(),
                };
                match (value, before) {
                    (Some(v), before) => {
                        batch.push((key.to_bytes(), Some(v.ivec())));
                        stored.push((key.clone(), Some(v.clone())));
                        let kind = if before.is_some() { EventType::Modified } else { EventType::Added };
                        events.push(Event { kind, key: key.clone(), owners: v.owners().to_vec() });
                    }
                    (None, Some(old)) => {
                        batch.push((key.to_bytes(), None));
                        stored.push((key.clone(), None));
                        events.push(Event {
                            kind: EventType::Deleted,
                            key: key.clone(),
                            owners: old.owners().to_vec(),
                        });
                    }
                    (None, None) => {}
                }
            }
        });
        store.write_objects(batch, records, durable)?;
        if let Some(a) = &admission {
            // Written (durably, when this commit is): the admission's journal starts over, and
            // dropping this transaction must not roll it back.
            a.committed();
            self.admitted = None;
        }
        if durability == Durability::ClearingIntent {
            store
                .meta
                .remove(super::INTENT_KEY)
                .map_err(|source| StoreError::Db { path: store.dir.clone(), source })?;
        }
        if durable {
            store.sync()?;
        }
        let was_clean = store.gc_clean.load(std::sync::atomic::Ordering::Relaxed);
        let clean = match self.gc_after_writes {
            Some(full) => was_clean || full,
            // Not collected (a reconcile's commit): still clean if none of what its writes can
            // have made garbage is (its children name the object just reconciled), so that the
            // next `apply` in continuous mode need not look at every owned object.
            None => {
                was_clean
                    && self.registry.is_none()
                    && (!may_leave_garbage || self.gc_candidates().iter().all(|k| !self.is_garbage(k)))
            }
        };
        store.publish(events.clone(), stored, self.registry.take());
        store.gc_clean.store(clean, std::sync::atomic::Ordering::Relaxed);
        Ok(events)
    }
}

impl Drop for Txn<'_> {
    /// A transaction that ends without committing takes back what the admission did for it.
    fn drop(&mut self) {
        if let (Some(mark), Some(a)) = (self.admitted, self.store.admission()) {
            a.rollback_to(mark);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Durability {
    Unsynced,
    Durable,
    /// Durable, with the intent record removed in the same sync.
    ClearingIntent,
}

/// The validation of an object about to be stored (or kept): metadata, schema and CEL rules,
/// and no new finalizers on a deleting object.
fn check_valid(
    key: &ObjectKey,
    res: &ApiResource,
    schema: &Schema,
    merged: &Value,
    live: Option<&Value>,
) -> Result<()> {
    let mut errors = meta::validate_metadata(merged, res.namespaced);
    errors.extend(validate::validate(schema, merged, live).iter().map(|e| e.to_string()));
    if let Some(live) = live {
        if object::deletion_timestamp(live).is_some() {
            let before: BTreeSet<&str> = object::finalizers(live).into_iter().collect();
            if object::finalizers(merged).iter().any(|f| !before.contains(f)) {
                errors.push(
                    "metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted"
                        .into(),
                );
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(StoreError::Invalid { key: key.clone(), errors })
    }
}

fn copy_system_fields(live: &Value, merged: &mut Value) {
    let Some(live_meta) = object::metadata(live) else { return };
    let Some(meta) = object::metadata_mut(merged) else { return };
    for f in ["uid", "creationTimestamp", "resourceVersion", "generation", "deletionTimestamp"] {
        match live_meta.get(f) {
            Some(v) => meta.insert(f.to_string(), v.clone()),
            None => meta.remove(f),
        };
    }
}

fn resource_version(obj: &Value) -> u64 {
    object::metadata(obj)
        .and_then(|m| m.get("resourceVersion"))
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn generation(obj: &Value) -> u64 {
    object::metadata(obj).and_then(|m| m.get("generation")).and_then(Value::as_u64).unwrap_or(0)
}

fn type_name(v: &Value) -> &'static str {
    crate::api::schema::json_type_name(v)
}

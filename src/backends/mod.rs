//! The identifier backends of `-r`: the glue between the store and the allocators of `ids`.
//!
//! [`Backends`] is the store's [`Admission`]: every write of an Index or a Claim of the five
//! kuid groups allocates or releases inside the store transaction that writes it (the claim is
//! stored with its `status` and `Ready` condition, its Entries are written beside it, or the
//! write is refused and nothing of it is stored); a delete releases at once. The pools live in
//! memory (`ids::pool`, `ids::rib`), every change journaled, and persist as records in the
//! sled tree `ids` committed with the objects; at open they are rebuilt from those records,
//! not by replaying claims.
//!
//! Invariant: knows objects and pools; no I/O of its own (the store persists its records), no
//! files, no engine.

mod common;
pub(crate) mod crds;
mod generic;
mod ipam;
mod records;
mod usage;

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde_json::{json, Value};

use crate::api::object::{self, GroupKind, ObjectKey};
use crate::ids::pool::{IdPool, Journal, Owner};
use crate::ids::rib::{Rib, RibJournal};
use crate::store::{Admission, Record, Remembered, Txn};

use crds::{backend_of, Backend, BackendKind};

/// The field manager of everything the backends write (entries, index-owned claims).
pub(crate) const MANAGER: &str = "backend";

/// An index: backend group, namespace, name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct IndexKey {
    pub group: String,
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for IndexKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.namespace, self.name)
    }
}

/// One index's allocations and the journal of their changes since the last commit.
#[derive(Debug, Clone)]
enum Pool {
    Ip { rib: Rib, journal: RibJournal },
    Id { pool: IdPool, journal: Journal },
}

/// A change of the set of pools, or of one pool (by its journal length before the change).
#[derive(Debug, Clone)]
enum Step {
    Created(IndexKey),
    Removed(IndexKey, Box<Pool>),
    Changed(IndexKey, usize),
}

#[derive(Debug, Default)]
struct Inner {
    pools: BTreeMap<IndexKey, Pool>,
    steps: Vec<Step>,
}

/// The identifier backends (see the module doc).
#[derive(Debug, Default)]
pub struct Backends {
    inner: Mutex<Inner>,
    /// Per index, the `NearlyFull` condition of the index object last looked at: a claim finds
    /// it without parsing the index again while the index object stays the same.
    fullness_seen: Mutex<std::collections::HashMap<IndexKey, Remembered<Option<bool>>>>,
}

impl Backends {
    pub fn new() -> Backends {
        Backends::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the RIB of `key` (which must exist), journaled.
    fn with_rib<T>(&self, key: &IndexKey, f: impl FnOnce(&mut Rib, &mut RibJournal) -> T) -> Option<T> {
        let mut inner = self.lock();
        let Inner { pools, steps } = &mut *inner;
        let Some(Pool::Ip { rib, journal }) = pools.get_mut(key) else { return None };
        steps.push(Step::Changed(key.clone(), journal.len()));
        Some(f(rib, journal))
    }

    /// Runs `f` on the id pool of `key` (which must exist), journaled.
    fn with_pool<T>(&self, key: &IndexKey, f: impl FnOnce(&mut IdPool, &mut Journal) -> T) -> Option<T> {
        let mut inner = self.lock();
        let Inner { pools, steps } = &mut *inner;
        let Some(Pool::Id { pool, journal }) = pools.get_mut(key) else { return None };
        steps.push(Step::Changed(key.clone(), journal.len()));
        Some(f(pool, journal))
    }

    /// Reads the RIB of `key` without journaling anything.
    fn read_rib<T>(&self, key: &IndexKey, f: impl FnOnce(&Rib) -> T) -> Option<T> {
        match self.lock().pools.get(key) {
            Some(Pool::Ip { rib, .. }) => Some(f(rib)),
            _ => None,
        }
    }

    /// Reads the id pool of `key` without journaling anything.
    fn read_pool<T>(&self, key: &IndexKey, f: impl FnOnce(&IdPool) -> T) -> Option<T> {
        match self.lock().pools.get(key) {
            Some(Pool::Id { pool, .. }) => Some(f(pool)),
            _ => None,
        }
    }

    /// The largest id of the id pool of `key`, if it exists.
    fn pool_max(&self, key: &IndexKey) -> Option<u128> {
        self.read_pool(key, IdPool::max)
    }

    /// Runs `f` on the pools as last committed: a transaction in progress (its steps not yet
    /// committed) is undone on a copy, never in place.
    fn committed_view<T>(&self, f: impl FnOnce(&BTreeMap<IndexKey, Pool>) -> T) -> T {
        let inner = self.lock();
        if inner.steps.is_empty() {
            return f(&inner.pools);
        }
        let mut copy = Inner { pools: inner.pools.clone(), steps: inner.steps.clone() };
        drop(inner);
        rollback(&mut copy, 0);
        f(&copy.pools)
    }

    fn has_pool(&self, key: &IndexKey) -> bool {
        self.lock().pools.contains_key(key)
    }

    fn create_pool(&self, key: &IndexKey, pool: Pool) {
        let mut inner = self.lock();
        if !inner.pools.contains_key(key) {
            inner.pools.insert(key.clone(), pool);
            inner.steps.push(Step::Created(key.clone()));
        }
    }

    fn remove_pool(&self, key: &IndexKey) {
        let mut inner = self.lock();
        if let Some(pool) = inner.pools.remove(key) {
            inner.steps.push(Step::Removed(key.clone(), Box::new(pool)));
        }
    }
}

/// Undoes the steps after `mark`.
fn rollback(inner: &mut Inner, mark: usize) {
    while inner.steps.len() > mark {
        let Some(step) = inner.steps.pop() else { break };
        match step {
            Step::Created(k) => {
                inner.pools.remove(&k);
            }
            Step::Removed(k, pool) => {
                inner.pools.insert(k, *pool);
            }
            Step::Changed(k, len) => match inner.pools.get_mut(&k) {
                Some(Pool::Ip { rib, journal }) => rib.rollback(journal, len),
                Some(Pool::Id { pool, journal }) => pool.rollback(journal, len),
                None => {}
            },
        }
    }
}

/// The backend and index an object of a backend group belongs to.
fn backend(gk: &GroupKind) -> Option<&'static Backend> {
    backend_of(&gk.group)
}

/// Sets the `type` condition of `obj` (a new transition time only when the status changes).
pub(crate) fn set_condition(obj: &mut Value, ty: &str, ok: bool, reason: &str, message: &str, now: &str) {
    let status = if ok { "True" } else { "False" };
    let Some(map) = obj.as_object_mut() else { return };
    let st = map.entry("status").or_insert_with(|| json!({}));
    if !st.is_object() {
        *st = json!({});
    }
    let conds = st.as_object_mut().map(|m| m.entry("conditions").or_insert_with(|| json!([])));
    let Some(conds) = conds else { return };
    if !conds.is_array() {
        *conds = json!([]);
    }
    let Some(list) = conds.as_array_mut() else { return };
    let prev = list.iter().position(|c| c.get("type").and_then(Value::as_str) == Some(ty));
    let since = prev
        .and_then(|i| list.get(i))
        .filter(|c| c.get("status").and_then(Value::as_str) == Some(status))
        .and_then(|c| c.get("lastTransitionTime").cloned())
        .unwrap_or_else(|| json!(now));
    let cond = json!({"type": ty, "status": status, "reason": reason, "message": message, "lastTransitionTime": since});
    match prev {
        Some(i) => list[i] = cond,
        None => list.push(cond),
    }
}

/// Sets an index's `NearlyFull` condition from how much of it is used: `True` above
/// [`usage::NEARLY_FULL_PERCENT`]. The message names the side of the line, not the count: the
/// index is written only when it crosses the line (not at every claim), so a count would go
/// stale; `choreo ids usage` has the numbers.
fn set_fullness(obj: &mut Value, used: u128, size: u128, now: &str) {
    let percent = if size == 0 { 100.0 } else { used as f64 * 100.0 / size as f64 };
    let full = percent > usage::NEARLY_FULL_PERCENT;
    let line = usage::NEARLY_FULL_PERCENT;
    let message = if full {
        format!("more than {line}% in use (`choreo ids usage` shows what is left)")
    } else {
        format!("{line}% or less in use")
    };
    let reason = if full { "NearlyFull" } else { "Available" };
    set_condition(obj, "NearlyFull", full, reason, &message, now);
}

fn fullness_of(obj: &Value) -> Option<bool> {
    obj.pointer("/status/conditions")
        .and_then(Value::as_array)?
        .iter()
        .find(|c| c["type"] == "NearlyFull")
        .map(|c| c["status"] == "True")
}

impl Backends {
    /// How much of the index `ik` is used, as (used, size), as the pools are now.
    fn index_use(&self, ik: &IndexKey) -> Option<(u128, u128)> {
        let inner = self.lock();
        match inner.pools.get(ik)? {
            Pool::Id { pool, .. } => {
                let (size, free) = usage::id_pool_use(pool);
                Some((size.saturating_sub(free), size))
            }
            Pool::Ip { rib, .. } => Some(usage::rib_use(rib)),
        }
    }

    /// After a claim of `ik` changed: when the index crossed the nearly-full line, its
    /// condition says so (the index object is written only then).
    fn refresh_fullness(&self, b: &Backend, txn: &mut Txn<'_>, ik: &IndexKey) {
        let Some((used, size)) = self.index_use(ik) else { return };
        let key = ObjectKey::new(&GroupKind::new(b.group, b.index_kind()), &ik.namespace, &ik.name);
        let Some(stored) = txn.stored(&key) else { return };
        let full = size == 0 || used as f64 * 100.0 / size as f64 > usage::NEARLY_FULL_PERCENT;
        let mut seen = self.fullness_seen.lock().unwrap_or_else(|p| p.into_inner());
        let known = seen.get(ik).and_then(|r| r.of(&stored)).copied();
        let now_full = known.unwrap_or_else(|| {
            let full = fullness_of(&stored.value());
            seen.insert(ik.clone(), Remembered::new(&stored, full));
            full
        });
        drop(seen);
        if now_full == Some(full) {
            return;
        }
        let now = txn.now().to_string();
        if let Err(e) = txn.update_unadmitted(&key, |obj| set_fullness(obj, used, size, &now)) {
            log::warn!("{key}: cannot record how full it is: {e}");
        }
    }
}

/// The owner identity of a claim object.
fn owner_of(obj: &Value) -> Owner {
    Owner {
        name: object::name(obj).unwrap_or_default().to_string(),
        uid: object::uid(obj).unwrap_or_default().to_string(),
    }
}

impl Admission for Backends {
    fn tree(&self) -> &'static str {
        "ids"
    }

    fn handles(&self, gk: &GroupKind) -> bool {
        backend(gk).is_some()
    }

    fn on_write(
        &self,
        txn: &mut Txn<'_>,
        key: &ObjectKey,
        obj: &mut Value,
        _live: Option<&Value>,
        manager: &str,
    ) -> Result<(), String> {
        let gk = key.group_kind();
        let Some(b) = backend(&gk) else { return Ok(()) };
        if gk.kind == b.entry_kind() {
            if manager != MANAGER {
                return Err(format!(
                    "{} objects are written by the {} backend: claim through a {}",
                    b.entry_kind(),
                    b.group,
                    b.claim_kind()
                ));
            }
            return Ok(());
        }
        if object::deletion_timestamp(obj).is_some() {
            // Its ids went when it was marked deleting (`on_delete`).
            return Ok(());
        }
        let index = gk.kind == b.index_kind();
        if !index && gk.kind != b.claim_kind() {
            return Ok(());
        }
        match (b.kind, index) {
            (BackendKind::Ipam, true) => ipam::write_index(self, b, txn, key, obj),
            (BackendKind::Ipam, false) => ipam::write_claim(self, b, txn, key, obj),
            (_, true) => generic::write_index(self, b, txn, key, obj),
            (_, false) => generic::write_claim(self, b, txn, key, obj),
        }
    }

    fn on_delete(&self, txn: &mut Txn<'_>, key: &ObjectKey, live: &Value) -> Result<(), String> {
        let gk = key.group_kind();
        let Some(b) = backend(&gk) else { return Ok(()) };
        match b.kind {
            BackendKind::Ipam => ipam::on_delete(self, b, txn, key, live),
            _ => generic::on_delete(self, b, txn, key, live),
        }
    }

    fn mark(&self) -> usize {
        self.lock().steps.len()
    }

    fn rollback_to(&self, mark: usize) {
        rollback(&mut self.lock(), mark);
    }

    fn records(&self) -> Vec<Record> {
        let inner = self.lock();
        records::touched(&inner)
    }

    fn committed(&self) {
        let mut inner = self.lock();
        inner.steps.clear();
        for pool in inner.pools.values_mut() {
            match pool {
                Pool::Ip { journal, .. } => *journal = RibJournal::default(),
                Pool::Id { journal, .. } => *journal = Journal::default(),
            }
        }
    }

    fn restore(
        &self,
        records: &mut dyn Iterator<Item = (Vec<u8>, Vec<u8>)>,
        uid_of: &dyn Fn(&ObjectKey) -> Option<String>,
    ) -> Result<Vec<Vec<u8>>, String> {
        let mut inner = self.lock();
        records::restore(&mut inner, records, uid_of)
    }
}

#[cfg(test)]
mod tests;

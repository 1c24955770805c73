//! Admission for the id backends (VLAN, AS, GENID, EXTCOMM): an Index write creates its pool
//! (bounds by backend and type) and its reserved ranges for `minID`/`maxID` as index-owned
//! range claims, as kuid does; a Claim write allocates a static id, a dynamic id (best fit, or
//! lowest free in the range its selector picks) or a range, fills `status.id` / `status.range`
//! and `Ready`, and keeps its Entries in step; deletes release at once.
//!
//! Invariant: the allocation rules are `ids::pool`'s; this file maps objects onto them.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::common::{claims_of, index_key, labels, readmit, replace_entries, spec, str_field, waiting};
use super::crds::{Backend, BackendKind};
use super::{owner_of, set_condition, Backends, IndexKey, Pool, MANAGER};
use crate::api::object::{self, GroupKind, ObjectKey};
use crate::ids::pool::{Granted, IdPool, Item, Owner, TableRef};
use crate::store::{ApplyOptions, Txn};

/// The largest id and the width kuid names entries with, for an index of backend `b`.
fn bounds(b: &Backend, index_spec: &Value) -> Result<(u128, u8), String> {
    let ty = str_field(index_spec, "type");
    Ok(match (b.kind, ty) {
        (BackendKind::Vlan, _) => (4095, 16),
        (BackendKind::As, _) => (u128::from(u32::MAX), 32),
        (BackendKind::Genid, Some("16bit")) => (u128::from(u16::MAX), 16),
        (BackendKind::Genid, Some("32bit")) => (u128::from(u32::MAX), 32),
        (BackendKind::Genid, Some("48bit")) => ((1u128 << 48) - 1, 64),
        (BackendKind::Genid, Some("64bit")) => (u128::from(u64::MAX), 64),
        (BackendKind::Extcomm, Some("2byteAS")) => (u128::from(u32::MAX), 32),
        (BackendKind::Extcomm, Some("4byteAS" | "ipv4Address")) => (u128::from(u16::MAX), 16),
        (BackendKind::Extcomm, Some("opaque")) => ((1u128 << 48) - 1, 64),
        (_, Some(t)) => return Err(format!("spec.type: {t:?} is not a type of {}", b.index_kind())),
        (_, None) => return Err(format!("spec.type: a {} needs a type", b.index_kind())),
    })
}

/// The width entry ids are written with.
fn width(b: &Backend, max: u128) -> u8 {
    match b.kind {
        BackendKind::Vlan => 16,
        _ if max <= u128::from(u16::MAX) => 16,
        _ if max <= u128::from(u32::MAX) => 32,
        _ => 64,
    }
}

fn id_field(v: &Value, f: &str) -> Result<Option<u128>, String> {
    match v.get(f) {
        None | Some(Value::Null) => Ok(None),
        Some(n) => n
            .as_u64()
            .map(|n| Some(u128::from(n)))
            .ok_or_else(|| format!("spec.{f}: {n} is not an id (a whole number ≥ 0)")),
    }
}

pub(super) fn on_delete(
    be: &Backends,
    b: &Backend,
    txn: &mut Txn<'_>,
    key: &ObjectKey,
    live: &Value,
) -> Result<(), String> {
    if key.kind == b.claim_kind() {
        let Some(index) = str_field(spec(live), "index") else { return Ok(()) };
        let ik = index_key(b, &key.namespace, index);
        let owner = owner_of(live);
        let orphans = be.with_pool(&ik, |p, j| p.release(j, &owner)).unwrap_or_default();
        sync_entries(be, b, txn, &ik, &owner)?;
        readmit(b, txn, &ik, orphans, clear_status);
        be.refresh_fullness(b, txn, &ik);
    } else if key.kind == b.index_kind() {
        let ik = index_key(b, &key.namespace, &key.name);
        let claims = claims_of(b, txn, &ik);
        for (_, owner) in &claims {
            be.with_pool(&ik, |p, j| p.release(j, owner));
            sync_entries(be, b, txn, &ik, owner)?;
        }
        be.remove_pool(&ik);
        readmit(b, txn, &ik, claims.into_iter().map(|(_, o)| o).collect(), clear_status);
    }
    Ok(())
}

pub(super) fn write_index(
    be: &Backends,
    b: &Backend,
    txn: &mut Txn<'_>,
    key: &ObjectKey,
    obj: &mut Value,
) -> Result<(), String> {
    let ik = index_key(b, &key.namespace, &key.name);
    let s = spec(obj).clone();
    let (max, _) = bounds(b, &s)?;
    let min_id = id_field(&s, "minID")?;
    let max_id = id_field(&s, "maxID")?;
    for (f, v) in [("minID", min_id), ("maxID", max_id)] {
        if let Some(v) = v.filter(|v| *v > max) {
            return Err(format!("spec.{f}: {v} is above the largest id {max} of this index"));
        }
    }
    if let (Some(lo), Some(hi)) = (min_id, max_id) {
        if lo > hi {
            return Err(format!("spec.minID {lo} is above spec.maxID {hi}"));
        }
    }
    match be.pool_max(&ik) {
        Some(m) if m != max => {
            return Err(format!(
                "spec.type: index {ik} was created with ids up to {m}; its type cannot change while it exists (delete it and create it again)"
            ))
        }
        Some(_) => {}
        None => be.create_pool(&ik, Pool::Id { pool: IdPool::new(max), journal: Default::default() }),
    }
    let uid = object::uid(obj).unwrap_or_default().to_string();
    let mut wanted: Vec<Value> = Vec::new();
    let reserved = |suffix: &str, lo: u128, hi: u128| {
        json!({
            "apiVersion": b.api_version(),
            "kind": b.claim_kind(),
            "metadata": {
                "name": format!("{}.{suffix}", key.name),
                "namespace": key.namespace,
                "ownerReferences": [{"apiVersion": b.api_version(), "kind": b.index_kind(), "name": key.name, "uid": uid, "controller": true}]
            },
            "spec": {"index": key.name, "range": format!("{lo}-{hi}")}
        })
    };
    if let Some(m) = min_id.filter(|m| *m > 0) {
        wanted.push(reserved("rangereservedmin", 0, m - 1));
    }
    if let Some(m) = max_id.filter(|m| *m < max) {
        wanted.push(reserved("rangereservedmax", m + 1, max));
    }
    let gk = GroupKind::new(b.group, b.claim_kind());
    let names: Vec<String> = wanted.iter().filter_map(|c| object::name(c).map(str::to_string)).collect();
    for k in txn.owned_keys_where(&uid, |k| k.group == gk.group && k.kind == gk.kind) {
        if !names.contains(&k.name) {
            txn.delete(&k).map_err(|e| e.to_string())?;
        }
    }
    for c in &wanted {
        txn.apply(c, ApplyOptions { manager: MANAGER, force: true }).map_err(|e| e.to_string())?;
    }
    let waiting = waiting(b, txn, &ik, &names);
    readmit(b, txn, &ik, waiting, clear_status);
    let now = txn.now().to_string();
    set_condition(obj, "Ready", true, "Ready", "", &now);
    if let Some((used, size)) = be.index_use(&ik) {
        super::set_fullness(obj, used, size, &now);
    }
    Ok(())
}

fn parse_range(text: &str) -> Result<(u128, u128), String> {
    let bad = || format!("spec.range: {text:?} is not a range of ids: want FIRST-LAST");
    let (a, z) = text.split_once('-').ok_or_else(bad)?;
    let a: u128 = a.trim().parse().map_err(|_| bad())?;
    let z: u128 = z.trim().parse().map_err(|_| bad())?;
    Ok((a, z))
}

/// The system labels kuid puts on an item, with the user's.
fn item_labels(b: &Backend, item: &Item) -> BTreeMap<String, String> {
    let mut l = item.labels.clone();
    l.insert("be.kuid.dev/claim-name".into(), item.owner.name.clone());
    l.insert("be.kuid.dev/claim-uid".into(), item.owner.uid.clone());
    l.insert("be.kuid.dev/claim-type".into(), item.claim_type.as_str().into());
    l.insert("be.kuid.dev/owner-kind".into(), b.claim_kind());
    l
}

pub(super) fn write_claim(
    be: &Backends,
    b: &Backend,
    txn: &mut Txn<'_>,
    key: &ObjectKey,
    obj: &mut Value,
) -> Result<(), String> {
    let s = spec(obj).clone();
    let index = str_field(&s, "index").unwrap_or_default().to_string();
    let ik = index_key(b, &key.namespace, &index);
    let id = id_field(&s, "id")?;
    let range = str_field(&s, "range").map(parse_range).transpose()?;
    if id.is_some() && range.is_some() {
        return Err("spec: a claim has an id or a range, this one has both".into());
    }
    let now = txn.now().to_string();
    if be.pool_max(&ik).is_none() {
        clear_status(obj);
        let msg = format!("index {ik} does not exist: the claim is allocated once it does");
        set_condition(obj, "Ready", false, "IndexNotFound", &msg, &now);
        return Ok(());
    }
    let owner = owner_of(obj);
    let l = labels(s.get("labels"));
    let selector = s.pointer("/selector/matchLabels").map(|v| labels(Some(v)));
    let prefer = obj.pointer("/status/id").and_then(Value::as_u64).map(u128::from);
    let granted = be
        .with_pool(&ik, |p, j| -> Result<Granted, String> {
            let r = match (id, range) {
                (Some(id), _) => p.claim_static(j, &owner, id, &l),
                (None, Some((a, z))) => p.claim_range(j, &owner, a, z, &l),
                (None, None) => {
                    let table = match &selector {
                        None => None,
                        Some(sel) => {
                            // Only ranges hand out ids by selector: look at each range's first
                            // block (a handful of ranges, however many ids are out).
                            let found = p.ranges().iter().find_map(|(name, t)| {
                                let (_, block) = p.main().item_at(t.space.lo())?;
                                let il = item_labels(b, block);
                                let hit = block.owner.name == *name && sel.iter().all(|(k, v)| il.get(k) == Some(v));
                                hit.then(|| name.clone())
                            });
                            match found {
                                Some(name) => Some(name),
                                None => return Err(format!("no range of the index matches the selector {sel:?}")),
                            }
                        }
                    };
                    p.claim_dynamic(j, &owner, table.as_deref(), prefer, &l)
                }
            };
            r.map_err(|e| e.to_string())
        })
        .unwrap_or_else(|| Err(format!("index {ik} does not exist")))
        .map_err(|e| format!("cannot claim from index {ik}: {e}"))?;
    clear_status(obj);
    let st = &mut obj["status"];
    match granted {
        Granted::Id { id, .. } => st["id"] = id_json(id),
        Granted::Range { start, end } => st["range"] = json!(format!("{start}-{end}")),
    }
    set_condition(obj, "Ready", true, "Ready", "", &now);
    sync_entries(be, b, txn, &ik, &owner)?;
    be.refresh_fullness(b, txn, &ik);
    Ok(())
}

/// An id as a JSON number (ids above `u64` do not occur: every pool is at most 64 bits wide).
fn id_json(id: u128) -> Value {
    u64::try_from(id).map(Value::from).unwrap_or_else(|_| json!(id.to_string()))
}

fn clear_status(obj: &mut Value) {
    if let Some(st) = obj.get_mut("status").and_then(Value::as_object_mut) {
        st.remove("id");
        st.remove("range");
    }
}

/// Writes `owner`'s entries as its allocations are now (kuid's names: `<index>.<id>-<len>` in
/// the main table, `<range>.<id>-<width>` inside a range) and deletes the ones it lost.
fn sync_entries(be: &Backends, b: &Backend, txn: &mut Txn<'_>, ik: &IndexKey, owner: &Owner) -> Result<(), String> {
    let owner_ref =
        json!([{"apiVersion": b.api_version(), "kind": b.claim_kind(), "name": owner.name, "uid": owner.uid}]);
    let entries: Vec<Value> = be
        .read_pool(ik, |p| {
            let w = width(b, p.max());
            let mut out = Vec::new();
            for (table, start, item) in p.held_by(owner) {
                let (base, len) = match &table {
                    TableRef::Main => {
                        let log = (item.end - start + 1).trailing_zeros() as u8;
                        (ik.name.clone(), w - log.min(w))
                    }
                    TableRef::Range(r) => (r.clone(), if w <= 32 { 32 } else { 64 }),
                };
                let name = format!("{base}.{start}-{len}");
                let mut e = json!({
                    "apiVersion": b.api_version(),
                    "kind": b.entry_kind(),
                    "metadata": {"name": name, "namespace": ik.namespace, "ownerReferences": owner_ref},
                    "spec": {
                        "index": ik.name,
                        "indexEntry": false,
                        "claimType": item.claim_type.as_str(),
                        "id": format!("{start}/{len}")
                    }
                });
                if !item.labels.is_empty() {
                    e["spec"]["labels"] = json!(item.labels);
                }
                out.push(e);
            }
            out
        })
        .unwrap_or_default();
    replace_entries(b, txn, owner, entries)
}

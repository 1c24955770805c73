//! What the IPAM and id backends share: reading a spec, finding an index's claims, admitting
//! claims again after their allocation changed, and replacing a claim's Entries.
//!
//! Invariant: no allocation rules here; only the object side every backend has alike.

use std::collections::BTreeMap;

use serde_json::Value;

use super::crds::Backend;
use super::{owner_of, set_condition, IndexKey, MANAGER};
use crate::api::object::{self, GroupKind, ObjectKey};
use crate::ids::pool::Owner;
use crate::store::Txn;

pub(super) fn spec(obj: &Value) -> &Value {
    obj.get("spec").unwrap_or(&Value::Null)
}

pub(super) fn str_field<'a>(v: &'a Value, f: &str) -> Option<&'a str> {
    v.get(f).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// A map of strings (labels, `matchLabels`); other values are left out.
pub(super) fn labels(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(Value::as_object)
        .map(|m| m.iter().filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string()))).collect())
        .unwrap_or_default()
}

pub(super) fn index_key(b: &Backend, namespace: &str, name: &str) -> IndexKey {
    IndexKey { group: b.group.to_string(), namespace: namespace.to_string(), name: name.to_string() }
}

pub(super) fn is_ready(obj: &Value) -> bool {
    obj.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|l| l.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

/// The claims (key and owner) whose `spec.index` names `ik`.
pub(super) fn claims_of(b: &Backend, txn: &Txn<'_>, ik: &IndexKey) -> Vec<(ObjectKey, Owner)> {
    let gk = GroupKind::new(b.group, b.claim_kind());
    txn.list(&gk, Some(&ik.namespace))
        .into_iter()
        .filter(|(_, o)| str_field(spec(o), "index") == Some(ik.name.as_str()))
        .map(|(k, o)| (k, owner_of(&o)))
        .collect()
}

/// The claims of `ik` that wait for it (not Ready), except `except` (the index's own).
pub(super) fn waiting(b: &Backend, txn: &Txn<'_>, ik: &IndexKey, except: &[String]) -> Vec<Owner> {
    claims_of(b, txn, ik)
        .into_iter()
        .filter(|(k, _)| !except.contains(&k.name))
        .filter(|(k, _)| txn.get(k).is_some_and(|o| !is_ready(&o)))
        .map(|(_, o)| o)
        .collect()
}

/// Stages the claims of `owners` again, so their status follows what happened to them; one
/// that lost its ids and cannot have others is marked not Ready with the reason (`clear`
/// removes the backend's status fields).
pub(super) fn readmit(b: &Backend, txn: &mut Txn<'_>, ik: &IndexKey, owners: Vec<Owner>, clear: fn(&mut Value)) {
    let gk = GroupKind::new(b.group, b.claim_kind());
    for o in owners {
        let k = ObjectKey::new(&gk, &ik.namespace, &o.name);
        if txn.get(&k).is_none_or(|v| object::uid(&v) != Some(o.uid.as_str())) {
            continue;
        }
        if let Err(e) = txn.readmit(&k, MANAGER) {
            let now = txn.now().to_string();
            let message = e.to_string();
            let marked = txn.update_unadmitted(&k, |o| {
                clear(o);
                set_condition(o, "Ready", false, "Released", &message, &now);
            });
            if let Err(e) = marked {
                log::warn!("{k}: cannot record that it lost its allocation: {e}");
            }
        }
    }
}

/// Makes `entries` the Entries of `owner`: the ones it no longer has are deleted, the others
/// staged whole.
pub(super) fn replace_entries(
    b: &Backend,
    txn: &mut Txn<'_>,
    owner: &Owner,
    entries: Vec<Value>,
) -> Result<(), String> {
    let gk = GroupKind::new(b.group, b.entry_kind());
    let names: Vec<String> = entries.iter().filter_map(|e| object::name(e).map(str::to_string)).collect();
    if !owner.uid.is_empty() {
        for k in txn.owned_keys_where(&owner.uid, |k| k.group == gk.group && k.kind == gk.kind) {
            if !names.contains(&k.name) {
                txn.delete(&k).map_err(|e| e.to_string())?;
            }
        }
    }
    for e in entries {
        txn.put_system(&e).map_err(|e| e.to_string())?;
    }
    Ok(())
}

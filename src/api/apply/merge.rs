//! Step 4 of an apply: merging the applied configuration into the live object as the schema types
//! it (granular maps by key, list-maps by item key, sets by value, everything else as a unit),
//! without copying the live object when nothing changes.
//!
//! Invariant: knows nothing of managers or field sets; ownership is decided elsewhere.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

use super::typing::{canonical_value, child_ty, list_item_keys, shape, Child, Shape, Ty};
use super::LINEAR_MAX;

/// Merges `applied` into `live`, returning `None` when the result is identical to `live` (only
/// possible when `live` is present). Detecting "no change" on the way lets a no-op apply, the
/// common case when objects are reloaded, skip building and comparing a whole new object.
pub(super) fn merge(ty: Ty<'_>, live: Option<&Value>, applied: &Value) -> Option<Value> {
    match shape(ty, applied) {
        Shape::Leaf => (live != Some(applied)).then(|| applied.clone()),
        Shape::Map(obj) => merge_map(ty, live.and_then(Value::as_object), obj),
        Shape::ListMap { items, names, item } => match list_item_keys(items, names) {
            Some(keys) => merge_list_map(item, names, live, items, &keys),
            None => (live != Some(applied)).then(|| applied.clone()),
        },
        Shape::Set(items) => merge_set(live, items),
    }
}

/// [`merge`] as a value.
fn merged_value(ty: Ty<'_>, live: Option<&Value>, applied: &Value) -> Value {
    match merge(ty, live, applied) {
        Some(v) => v,
        None => live.cloned().unwrap_or(Value::Null),
    }
}

fn merge_map(ty: Ty<'_>, live: Option<&Map<String, Value>>, applied: &Map<String, Value>) -> Option<Value> {
    let Some(live) = live else {
        let mut out = Map::new();
        for (k, av) in applied {
            let v = match child_ty(ty, k) {
                Child::Ignored => match (ty, k.as_str()) {
                    (Ty::Root(_), _) | (Ty::Meta, "name" | "namespace") if !av.is_null() => Some(av.clone()),
                    _ => None,
                },
                // Reported before merging; kept verbatim should a caller skip that check.
                Child::Undeclared => Some(av.clone()),
                Child::Typed(_) if av.is_null() => None,
                Child::Typed(cty) => Some(merged_value(cty, None, av)),
            };
            if let Some(v) = v {
                out.insert(k.clone(), v);
            }
        }
        return Some(Value::Object(out));
    };
    // Changed keys: `Some` sets the value, `None` removes the field.
    let mut changes: Vec<(&str, Option<Value>)> = Vec::new();
    for (k, av) in applied {
        let lv = live.get(k);
        let change = match child_ty(ty, k) {
            Child::Ignored => match (ty, k.as_str()) {
                // apiVersion/kind follow the applied configuration, which chose the schema.
                (Ty::Root(_), _) if !av.is_null() && lv != Some(av) => Some(Some(av.clone())),
                (Ty::Meta, "name" | "namespace") if lv.is_none() && !av.is_null() => Some(Some(av.clone())),
                _ => None,
            },
            Child::Undeclared => (lv != Some(av)).then(|| Some(av.clone())),
            // `metadata: null` cannot mean "delete the object's identity".
            Child::Typed(Ty::Meta) if av.is_null() => None,
            Child::Typed(_) if av.is_null() => lv.is_some().then_some(None),
            Child::Typed(cty) => merge(cty, lv, av).map(Some),
        };
        if let Some(change) = change {
            changes.push((k, change));
        }
    }
    if changes.is_empty() {
        return None;
    }
    changes.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let mut out = Map::new();
    for (k, lv) in live {
        match changes.binary_search_by(|c| c.0.cmp(k.as_str())) {
            Ok(i) => {
                if let Some(v) = changes.get_mut(i).and_then(|c| c.1.take()) {
                    out.insert(k.clone(), v);
                }
            }
            Err(_) => {
                out.insert(k.clone(), lv.clone());
            }
        }
    }
    for (k, change) in changes {
        if let (false, Some(v)) = (live.contains_key(k), change) {
            out.insert(k.to_string(), v);
        }
    }
    Some(Value::Object(out))
}

fn merge_list_map(
    item: Ty<'_>,
    names: &[String],
    live: Option<&Value>,
    applied: &[Value],
    applied_keys: &[String],
) -> Option<Value> {
    let live_items = live.and_then(Value::as_array);
    let live_keys = live_items.and_then(|l| list_item_keys(l, names));
    let (Some(live_items), Some(live_keys)) = (live_items, live_keys) else {
        // Nothing mergeable live: the applied items, with their nulls removed.
        return Some(Value::Array(applied.iter().map(|a| merged_value(item, None, a)).collect()));
    };
    let live_index = KeyIndex::new(&live_keys);
    let mut updates: Vec<(usize, Value)> = Vec::new();
    let mut appended: Vec<Value> = Vec::new();
    for (av, key) in applied.iter().zip(applied_keys) {
        match live_index.get(key) {
            Some(i) => {
                if let Some(v) = merge(item, live_items.get(i), av) {
                    updates.push((i, v));
                }
            }
            None => appended.push(merged_value(item, None, av)),
        }
    }
    if updates.is_empty() && appended.is_empty() {
        return None;
    }
    // Live items stay in live order, updated in place; new ones follow in applied order.
    updates.sort_unstable_by_key(|u| u.0);
    let mut updates = updates.into_iter().peekable();
    let mut out = Vec::with_capacity(live_items.len() + appended.len());
    for (i, lv) in live_items.iter().enumerate() {
        match updates.next_if(|u| u.0 == i) {
            Some((_, v)) => out.push(v),
            None => out.push(lv.clone()),
        }
    }
    out.extend(appended);
    Some(Value::Array(out))
}

fn merge_set(live: Option<&Value>, applied: &[Value]) -> Option<Value> {
    let live_items: &[Value] = live.and_then(Value::as_array).map_or(&[], Vec::as_slice);
    let mut added: Vec<&Value> = Vec::new();
    if live_items.len() + applied.len() <= 2 * LINEAR_MAX {
        for av in applied {
            if !live_items.contains(av) && !added.contains(&av) {
                added.push(av);
            }
        }
    } else {
        let mut seen: HashSet<String> = live_items.iter().map(canonical_value).collect();
        for av in applied {
            if seen.insert(canonical_value(av)) {
                added.push(av);
            }
        }
    }
    if added.is_empty() && live.is_some_and(Value::is_array) {
        return None;
    }
    let mut out = live_items.to_vec();
    out.extend(added.into_iter().cloned());
    Some(Value::Array(out))
}

/// Position of a key among a list's item keys: linear for short lists, hashed for long ones.
struct KeyIndex<'k> {
    keys: &'k [String],
    map: Option<HashMap<&'k str, usize>>,
}

impl<'k> KeyIndex<'k> {
    fn new(keys: &'k [String]) -> KeyIndex<'k> {
        let map = (keys.len() > LINEAR_MAX).then(|| keys.iter().enumerate().map(|(i, k)| (k.as_str(), i)).collect());
        KeyIndex { keys, map }
    }

    fn get(&self, key: &str) -> Option<usize> {
        match &self.map {
            Some(m) => m.get(key).copied(),
            None => self.keys.iter().position(|k| k == key),
        }
    }
}

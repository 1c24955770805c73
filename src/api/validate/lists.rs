//! List semantics for the validator: the duplicate items of a set, and the key of a list-map
//! item (a missing key field counts as its default) for finding an item's old counterpart, as
//! transition rules need.
//!
//! Invariant: pure functions of their inputs; reports no errors and runs no CEL.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

use crate::api::schema::Schema;

use super::json::{canonical, json_eq};

/// Indices of items equal to an earlier item.
pub(super) fn duplicate_indices(items: &[Value]) -> Vec<usize> {
    let mut out = Vec::new();
    // Pairwise comparison beats hashing canonical strings for the short lists that dominate.
    if items.len() <= 32 {
        for i in 1..items.len() {
            if items[..i].iter().any(|x| json_eq(x, &items[i])) {
                out.push(i);
            }
        }
    } else {
        let mut seen = HashSet::with_capacity(items.len());
        for (i, it) in items.iter().enumerate() {
            let mut key = String::new();
            canonical(it, &mut key);
            if !seen.insert(key) {
                out.push(i);
            }
        }
    }
    out
}

pub(super) fn key_default<'a>(item_schema: &'a Schema, key: &str) -> Option<&'a Value> {
    item_schema.properties.get(key).and_then(|p| p.default.as_ref())
}

/// A list-map item's key value; a missing key with a default counts as its default.
pub(super) fn key_value<'a>(map: &'a Map<String, Value>, item_schema: &'a Schema, key: &str) -> &'a Value {
    const NULL: &Value = &Value::Null;
    map.get(key).or_else(|| key_default(item_schema, key)).unwrap_or(NULL)
}

/// The items of an old list-map, for finding the old counterpart of each new item by key.
pub(super) enum OldListIndex<'a> {
    /// Short lists are scanned.
    Scan(&'a [Value]),
    Hashed(HashMap<String, &'a Value>),
}

impl<'a> OldListIndex<'a> {
    pub(super) fn new(keys: &[String], item_schema: &'a Schema, old_items: &'a [Value]) -> Self {
        if old_items.len() <= 16 {
            return OldListIndex::Scan(old_items);
        }
        let mut map = HashMap::with_capacity(old_items.len());
        for it in old_items {
            if let Value::Object(m) = it {
                map.entry(key_tuple(keys, item_schema, m)).or_insert(it);
            }
        }
        OldListIndex::Hashed(map)
    }

    pub(super) fn find(&self, keys: &[String], item_schema: &'a Schema, item: &'a Value) -> Option<&'a Value> {
        let Value::Object(m) = item else { return None };
        match self {
            OldListIndex::Scan(old) => old.iter().find(|o| match o {
                Value::Object(om) => {
                    keys.iter().all(|k| json_eq(key_value(m, item_schema, k), key_value(om, item_schema, k)))
                }
                _ => false,
            }),
            OldListIndex::Hashed(map) => map.get(&key_tuple(keys, item_schema, m)).copied(),
        }
    }
}

fn key_tuple(keys: &[String], item_schema: &Schema, m: &Map<String, Value>) -> String {
    let mut s = String::new();
    for k in keys {
        canonical(key_value(m, item_schema, k), &mut s);
        s.push('\u{0}');
    }
    s
}

//! Field sets: the trie of field paths a manager owns, and its Kubernetes `FieldsV1` JSON
//! encoding and decoding, with `k:`/`v:` keys kept canonical so that equal items always have
//! equal keys.
//!
//! Invariant: knows nothing of schemas, managers or the object being applied; pure functions of
//! their inputs.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::api::schema::json_type_name;

use super::paths::render_path;
use super::typing::encode_json;
use super::{MAX_DEPTH, META_SYSTEM_FIELDS};

/// A set of field paths as a trie keyed by FieldsV1 path elements (`f:name`, `k:{...}`,
/// `v:...`, `i:n`). `member` marks the path itself as owned; `k:`/`v:` keys are kept in
/// canonical form (compact JSON, object keys sorted) so equal items always have equal keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct FieldSet {
    pub(super) member: bool,
    pub(super) children: BTreeMap<String, FieldSet>,
}

impl FieldSet {
    pub(super) fn leaf() -> FieldSet {
        FieldSet { member: true, children: BTreeMap::new() }
    }

    pub(super) fn is_empty(&self) -> bool {
        !self.member && self.children.is_empty()
    }

    pub(super) fn union_with(&mut self, other: &FieldSet) {
        self.member |= other.member;
        for (k, c) in &other.children {
            match self.children.get_mut(k) {
                Some(mine) => mine.union_with(c),
                None => {
                    self.children.insert(k.clone(), c.clone());
                }
            }
        }
    }

    pub(super) fn is_subset_of(&self, other: &FieldSet) -> bool {
        (!self.member || other.member)
            && self.children.iter().all(|(k, c)| other.children.get(k).is_some_and(|o| c.is_subset_of(o)))
    }

    /// Clears the member at `path` and prunes nodes left empty.
    pub(super) fn remove_member(&mut self, path: &[String]) {
        match path.split_first() {
            None => self.member = false,
            Some((first, rest)) => {
                if let Some(child) = self.children.get_mut(first) {
                    child.remove_member(rest);
                    if child.is_empty() {
                        self.children.remove(first);
                    }
                }
            }
        }
    }

    pub(super) fn member_paths(&self, path: &mut Vec<String>, out: &mut Vec<String>) {
        if self.member && !path.is_empty() {
            out.push(render_path(path));
        }
        for (k, c) in &self.children {
            path.push(k.clone());
            c.member_paths(path, out);
            path.pop();
        }
    }

    /// Collects the paths of every member at or beneath this node.
    pub(super) fn push_members(&self, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        if self.member {
            out.push(path.clone());
        }
        for (k, c) in &self.children {
            path.push(k.clone());
            c.push_members(path, out);
            path.pop();
        }
    }

    /// FieldsV1 JSON: a pure leaf is `{}`; a member with children also carries `".": {}`.
    pub(super) fn to_fields_v1(&self) -> Value {
        let mut m = Map::new();
        if self.member && !self.children.is_empty() {
            m.insert(".".into(), Value::Object(Map::new()));
        }
        for (k, c) in &self.children {
            m.insert(k.clone(), c.to_fields_v1());
        }
        Value::Object(m)
    }

    /// Whether `v` is exactly [`FieldSet::to_fields_v1`] of this set, without building it.
    pub(super) fn eq_json(&self, v: &Value) -> bool {
        let Some(obj) = v.as_object() else {
            return false;
        };
        let dot = self.member && !self.children.is_empty();
        if obj.len() != self.children.len() + usize::from(dot) {
            return false;
        }
        if dot && !obj.get(".").and_then(Value::as_object).is_some_and(Map::is_empty) {
            return false;
        }
        self.children.iter().all(|(k, c)| obj.get(k).is_some_and(|cv| c.eq_json(cv)))
    }

    /// Parses FieldsV1 JSON. The root is never a member itself.
    pub(super) fn from_fields_v1(v: &Value) -> Result<FieldSet, String> {
        let mut set = FieldSet::decode(v, 0)?;
        set.member = false;
        Ok(set)
    }

    fn decode(v: &Value, depth: usize) -> Result<FieldSet, String> {
        if depth > MAX_DEPTH {
            return Err(format!("nested deeper than {MAX_DEPTH} levels"));
        }
        let obj = v.as_object().ok_or_else(|| format!("must be an object, got {}", json_type_name(v)))?;
        // `{}` is a leaf; otherwise the node is a member only when it says so with ".".
        let mut set = FieldSet { member: obj.is_empty(), children: BTreeMap::new() };
        for (k, c) in obj {
            if k == "." {
                set.member = true;
                continue;
            }
            let key = canonical_key(k)?;
            let child = FieldSet::decode(c, depth + 1).map_err(|e| format!("{k}: {e}"))?;
            match set.children.get_mut(&key) {
                Some(existing) => existing.union_with(&child),
                None => {
                    set.children.insert(key, child);
                }
            }
        }
        Ok(set)
    }

    /// Drops paths that are never tracked, in case a foreign writer recorded them.
    pub(super) fn strip_untracked(&mut self) {
        self.children.remove("f:apiVersion");
        self.children.remove("f:kind");
        if let Some(meta) = self.children.get_mut("f:metadata") {
            // Runs for every entry of every object read: no key is built.
            meta.children.retain(|k, _| !k.strip_prefix("f:").is_some_and(|name| META_SYSTEM_FIELDS.contains(&name)));
            if meta.is_empty() {
                self.children.remove("f:metadata");
            }
        }
    }
}

/// Validates a FieldsV1 key and puts `k:`/`v:` JSON into canonical form.
fn canonical_key(k: &str) -> Result<String, String> {
    if k.starts_with("f:") {
        return Ok(k.to_string());
    }
    if let Some(i) = k.strip_prefix("i:") {
        return match i.parse::<usize>() {
            Ok(_) => Ok(k.to_string()),
            Err(_) => Err(format!("invalid list index {k:?}")),
        };
    }
    if let Some(json) = k.strip_prefix("k:") {
        return match serde_json::from_str::<Value>(json) {
            Ok(v @ Value::Object(_)) if v.as_object().is_some_and(|m| !m.is_empty()) => {
                let mut s = String::from("k:");
                encode_json(&v, &mut s);
                Ok(s)
            }
            _ => Err(format!("invalid list-map key {k:?}")),
        };
    }
    if let Some(json) = k.strip_prefix("v:") {
        return match serde_json::from_str::<Value>(json) {
            Ok(v) => {
                let mut s = String::from("v:");
                encode_json(&v, &mut s);
                Ok(s)
            }
            Err(_) => Err(format!("invalid set value {k:?}")),
        };
    }
    Err(format!("unknown path element {k:?}"))
}

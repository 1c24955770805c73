//! Field paths: rendering `FieldsV1` path elements the way Kubernetes prints them
//! (`.spec.ports[port=80].name`) and finding list items by their `k:`/`v:`/`i:` key, linearly or
//! through a hash index for long lists.
//!
//! Invariant: pure functions of their inputs; never modifies the values it searches.

use std::collections::HashMap;

use serde_json::Value;

use super::typing::{canonical_value, encode_json, item_key};
use super::LINEAR_MAX;

/// Renders path elements the way Kubernetes prints field paths: `.spec.ports[port=80].name`,
/// `[type="Ready"]`, `[="a.b/c"]`, `[3]`.
pub(super) fn render_path(path: &[String]) -> String {
    let mut out = String::new();
    for key in path {
        render_key(key, &mut out);
    }
    out
}

pub(super) fn render_key(key: &str, out: &mut String) {
    if let Some(name) = key.strip_prefix("f:") {
        out.push('.');
        out.push_str(name);
    } else if let Some(json) = key.strip_prefix("k:") {
        out.push('[');
        match serde_json::from_str::<Value>(json) {
            Ok(Value::Object(m)) => {
                for (i, (name, v)) in m.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(name);
                    out.push('=');
                    encode_json(v, out);
                }
            }
            _ => out.push_str(json),
        }
        out.push(']');
    } else if let Some(json) = key.strip_prefix("v:") {
        out.push_str("[=");
        out.push_str(json);
        out.push(']');
    } else if let Some(i) = key.strip_prefix("i:") {
        out.push('[');
        out.push_str(i);
        out.push(']');
    } else {
        out.push_str(key);
    }
}

/// The names of the key fields in a `k:` JSON document.
pub(super) fn key_names(json: &str) -> Vec<String> {
    match serde_json::from_str::<Value>(json) {
        Ok(Value::Object(m)) => m.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

/// Finds list items by `k:`/`v:`/`i:` key: linearly in short lists, through a hash index built on
/// first use in long ones (keys are canonical, so the index is an exact string match).
#[derive(Default)]
pub(super) struct ItemFinder {
    index: Option<HashMap<String, usize>>,
    /// Key field names the `k:` index was built for.
    names: Vec<String>,
    values: bool,
}

impl ItemFinder {
    pub(super) fn find(&mut self, items: &[Value], key: &str) -> Option<usize> {
        if items.len() <= LINEAR_MAX || key.starts_with("i:") {
            return find_linear(items, key);
        }
        if self.index.is_none() {
            self.build(items, key);
        }
        let hit = self.index.as_ref().and_then(|idx| idx.get(key).copied());
        if hit.is_some() {
            return hit;
        }
        // A miss is final when the key is of the kind the index was built for.
        let same_kind = match key.strip_prefix("k:") {
            Some(json) => !self.values && key_names(json) == self.names,
            None => self.values && key.starts_with("v:"),
        };
        if same_kind {
            None
        } else {
            find_linear(items, key)
        }
    }

    fn build(&mut self, items: &[Value], key: &str) {
        let mut idx = HashMap::with_capacity(items.len());
        if let Some(json) = key.strip_prefix("k:") {
            self.names = key_names(json);
            let names: Vec<&str> = self.names.iter().map(String::as_str).collect();
            for (i, item) in items.iter().enumerate() {
                if let Some(k) = item_key(item, &names) {
                    idx.entry(k).or_insert(i);
                }
            }
        } else {
            self.values = true;
            for (i, item) in items.iter().enumerate() {
                idx.entry(format!("v:{}", canonical_value(item))).or_insert(i);
            }
        }
        self.index = Some(idx);
    }
}

fn find_linear(items: &[Value], key: &str) -> Option<usize> {
    if let Some(json) = key.strip_prefix("k:") {
        let Ok(Value::Object(want)) = serde_json::from_str::<Value>(json) else {
            return None;
        };
        if want.is_empty() {
            return None;
        }
        items.iter().position(|item| item.as_object().is_some_and(|o| want.iter().all(|(n, v)| o.get(n) == Some(v))))
    } else if let Some(json) = key.strip_prefix("v:") {
        let Ok(want) = serde_json::from_str::<Value>(json) else {
            return None;
        };
        items.iter().position(|item| *item == want)
    } else if let Some(i) = key.strip_prefix("i:") {
        i.parse::<usize>().ok().filter(|i| *i < items.len())
    } else {
        None
    }
}

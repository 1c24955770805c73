//! Step 3 of an apply: the fields owned by another manager whose live value the applied
//! configuration would change (only leaves are compared; equal values are shared ownership).
//!
//! Invariant: only reports paths; never modifies the object or any field set.

use serde_json::Value;

use super::fieldset::FieldSet;
use super::paths::ItemFinder;
use super::typing::{child_ty, list_item_keys, shape, Child, Shape, Ty};
use super::MAX_DEPTH;

/// Collects the paths of `their` set whose live value the applied configuration would change.
/// Walks `their` set along the applied value, typed by the schema, so that maps, list-map items
/// and set values shared by several managers are not conflicts in themselves: only leaves are
/// compared, equal values are shared ownership, and an explicit null conflicts with whatever
/// they own beneath it.
pub(super) fn find_conflicts(
    ty: Ty<'_>,
    applied: &Value,
    live: Option<&Value>,
    their: &FieldSet,
    path: &mut Vec<String>,
    out: &mut Vec<Vec<String>>,
) {
    if path.len() > MAX_DEPTH {
        return;
    }
    match shape(ty, applied) {
        Shape::Leaf => leaf_conflict(applied, live, their, path, out),
        Shape::Map(obj) => {
            if their.member && live.is_some_and(|l| !l.is_object() && !l.is_null()) {
                // They own a leaf this manager turns into a map.
                out.push(path.clone());
                return;
            }
            let live_obj = live.and_then(Value::as_object);
            for (key, tc) in &their.children {
                let Some(name) = key.strip_prefix("f:") else {
                    continue;
                };
                let Some(av) = obj.get(name) else { continue };
                let Child::Typed(cty) = child_ty(ty, name) else {
                    continue;
                };
                let lv = live_obj.and_then(|o| o.get(name));
                path.push(key.clone());
                if av.is_null() {
                    // Removing a field someone else owns changes their value.
                    if !matches!(cty, Ty::Meta) && lv.is_some_and(|l| !l.is_null()) {
                        tc.push_members(path, out);
                    }
                } else {
                    find_conflicts(cty, av, lv, tc, path, out);
                }
                path.pop();
            }
        }
        Shape::ListMap { items, names, item } => {
            // Same fall-back to atomic as `collect`.
            let Some(keys) = list_item_keys(items, names) else {
                return leaf_conflict(applied, live, their, path, out);
            };
            if their.member && live.is_some_and(|l| !l.is_array() && !l.is_null()) {
                out.push(path.clone());
                return;
            }
            let live_items = live.and_then(Value::as_array);
            let mut finder = ItemFinder::default();
            for (iv, key) in items.iter().zip(keys) {
                let Some(tc) = their.children.get(&key) else {
                    continue;
                };
                let lv = live_items.and_then(|l| finder.find(l, &key).and_then(|p| l.get(p)));
                path.push(key);
                find_conflicts(item, iv, lv, tc, path, out);
                path.pop();
            }
        }
        Shape::Set(_) => {
            // Set values are their own identity: owning the same value is shared ownership.
            if their.member && live.is_some_and(|l| !l.is_array() && !l.is_null()) {
                out.push(path.clone());
            }
        }
    }
}

fn leaf_conflict(
    applied: &Value,
    live: Option<&Value>,
    their: &FieldSet,
    path: &mut Vec<String>,
    out: &mut Vec<Vec<String>>,
) {
    if live == Some(applied) {
        return;
    }
    if their.member {
        out.push(path.clone());
    } else {
        // They own parts of a value this manager replaces as a whole.
        their.push_members(path, out);
    }
}

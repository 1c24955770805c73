//! Step 5 of an apply, and the core of `prune_foreign`: deleting from the object what one field
//! set owned and no other keeps, and pruning the containers that deletion emptied.
//!
//! Invariant: only deletes; never adds or changes a value.

use serde_json::Value;

use super::fieldset::FieldSet;
use super::paths::{key_names, ItemFinder};

fn is_empty_container(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// Deletes from `val` what `prev` owned and `keep` (the new set plus every other manager's) does
/// not. A path owned as a whole is deleted only when nobody keeps anything at or beneath it;
/// list-map items are deleted with their `.` under the same rule, and otherwise only lose fields,
/// never their key fields (`protected`). Containers emptied here are pruned unless `applied`
/// contains them.
pub(super) fn remove_unowned(
    prev: &FieldSet,
    keep: Option<&FieldSet>,
    val: &mut Value,
    applied: Option<&Value>,
    protected: &[String],
) {
    match val {
        Value::Object(map) => {
            let applied_obj = applied.and_then(Value::as_object);
            for (key, pc) in &prev.children {
                let Some(name) = key.strip_prefix("f:") else {
                    continue;
                };
                if protected.iter().any(|p| p == name) {
                    continue;
                }
                let kc = keep.and_then(|k| k.children.get(key));
                if kc.is_some_and(|k| k.member && k.children.is_empty()) {
                    // Someone else owns the whole value.
                    continue;
                }
                if pc.member && kc.is_none() {
                    map.remove(name);
                    continue;
                }
                if pc.children.is_empty() {
                    continue;
                }
                let ac = applied_obj.and_then(|a| a.get(name)).filter(|a| !a.is_null());
                let Some(child) = map.get_mut(name) else {
                    continue;
                };
                let was_filled = !is_empty_container(child);
                remove_unowned(pc, kc, child, ac, &[]);
                if was_filled && is_empty_container(child) && ac.is_none() {
                    map.remove(name);
                }
            }
        }
        Value::Array(items) => {
            let applied_items = applied.and_then(Value::as_array);
            let mut finder = ItemFinder::default();
            let mut applied_finder = ItemFinder::default();
            let mut doomed: Vec<usize> = Vec::new();
            for (key, pc) in &prev.children {
                if !key.starts_with("k:") && !key.starts_with("v:") {
                    continue;
                }
                let kc = keep.and_then(|k| k.children.get(key));
                let Some(pos) = finder.find(items, key) else {
                    continue;
                };
                if pc.member && kc.is_none() {
                    doomed.push(pos);
                    continue;
                }
                let Some(json) = key.strip_prefix("k:") else {
                    continue;
                };
                if pc.children.is_empty() {
                    continue;
                }
                let names = key_names(json);
                let ai = applied_items.and_then(|a| applied_finder.find(a, key).and_then(|p| a.get(p)));
                // Keys are protected, so the finder's positions stay valid while items change.
                if let Some(item) = items.get_mut(pos) {
                    remove_unowned(pc, kc, item, ai, &names);
                }
            }
            if !doomed.is_empty() {
                doomed.sort_unstable();
                doomed.dedup();
                let mut i = 0;
                items.retain(|_| {
                    let keep = doomed.binary_search(&i).is_err();
                    i += 1;
                    keep
                });
            }
        }
        _ => {}
    }
}

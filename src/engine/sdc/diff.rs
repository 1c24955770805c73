//! `run diff -c`: each device's final Config against its running config as the schema reads
//! it, from the latest snapshot.
//!
//! Invariant: reads snapshots only; no libyang (the engine passes the path-level diff in).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use crate::api::object::ObjectKey;
use crate::protocol::{ErrorKind, ErrorReport};
use crate::store::Reader;

use super::{crds, FINAL};
use crate::api::object::label;

/// A snapshot's objects.
pub(crate) type Objects = BTreeMap<ObjectKey, Arc<Value>>;

/// The path-level diff of a final Config: (snapshot objects, Config, running, intended) → text.
pub(crate) type Details<'a> = dyn FnMut(&Objects, &Value, &Value, &Value) -> String + 'a;

/// `run diff -c`: each final Config of the latest snapshot against its node's running
/// config as the schema reads it (`RunningConfig <node>.tree`).
///
/// `details` (the engine's, which has the schemas) lists the changed data paths of a final
/// Config, given the snapshot's objects, the Config, and the running and intended values.
pub(crate) fn final_config_diff(
    reader: &Reader,
    mut details: Option<&mut Details<'_>>,
) -> Result<Vec<crate::protocol::DiffItem>, ErrorReport> {
    use crate::protocol::DiffSymbol;
    let snaps = reader.latest_snapshots(2).map_err(crate::engine::internal)?;
    let latest = snaps.first().ok_or_else(|| {
        ErrorReport::new(ErrorKind::NotFound, "latest snapshot not available")
            .with_hint("`choreo run once` runs the reconcilers and leaves one")
    })?;
    let is_final = |v: &Value| label(v, FINAL) == Some("true");
    let config_gk = |k: &ObjectKey| k.group == crds::GROUP && k.kind == crds::CONFIG;
    let mut items = Vec::new();
    for (key, obj) in &latest.objects {
        if !config_gk(key) || !is_final(obj) {
            continue;
        }
        let tree_key =
            ObjectKey { kind: crds::RUNNING_CONFIG.into(), name: format!("{}.tree", key.name), ..key.clone() };
        let Some(running) = latest.objects.get(&tree_key).and_then(|r| r.pointer("/status/value")) else { continue };
        let intended = obj.pointer("/spec/config/0/value").cloned().unwrap_or(Value::Null);
        let equal = &intended == running;
        let detail = match details.as_mut() {
            Some(f) if !equal => Some(f(&latest.objects, obj, running, &intended)),
            _ => None,
        };
        items.push(crate::engine::run::diff_item(
            if equal { DiffSymbol::Equal } else { DiffSymbol::Modified },
            obj,
            key,
            detail,
        ));
    }
    if let Some(previous) = snaps.get(1) {
        for (key, obj) in &previous.objects {
            if config_gk(key) && is_final(obj) && !latest.objects.contains_key(key) {
                items.push(crate::engine::run::diff_item(DiffSymbol::Deleted, obj, key, None));
            }
        }
    }
    items.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    Ok(items)
}

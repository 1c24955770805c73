//! Server-side apply with `metadata.managedFields`, following the Kubernetes structured-merge-diff
//! rules the API server uses for custom resources: every field manager owns the set of leaf
//! fields it last applied; applying a configuration merges it into the live object guided by the
//! structural schema (granular maps merge key by key, `x-kubernetes-list-type: map` lists merge by
//! key, sets by value, everything else is replaced as a unit), reports conflicts when it would
//! change a value another manager owns (unless forced, which transfers ownership), and removes
//! fields the manager stopped applying when nobody else owns them. Field sets are stored in the
//! Kubernetes `FieldsV1` JSON encoding so objects round-trip with real clusters and tooling.
//! Everything here is a pure function of its inputs and never panics on malformed objects: bad
//! input becomes an [`ApplyError`].

use std::fmt;
use std::sync::LazyLock;

use serde_json::{Map, Value};

use crate::api::schema::{json_type_name, Schema};

mod collect;
mod conflicts;
mod entries;
mod fieldset;
mod merge;
mod paths;
mod remove;
mod typing;

use collect::Collector;
use conflicts::find_conflicts;
use entries::{parse_entries, take_entry, Entry};
use fieldset::FieldSet;
use merge::merge;
use paths::render_path;
use remove::remove_unowned;
use typing::Ty;

/// `chrono` format string for [`ApplyRequest::now`], matching the second-precision UTC timestamps
/// Kubernetes writes into managedFields: `chrono::Utc::now().format(FIELD_MANAGER_NOW_FORMAT)`.
pub const FIELD_MANAGER_NOW_FORMAT: &str = "%Y-%m-%dT%H:%M:%SZ";

/// The operation recorded for entries written by [`apply`].
const APPLY_OPERATION: &str = "Apply";

/// Nesting limit for applied objects and field sets. Recursion follows the input, so an absurdly
/// deep document must become an error rather than a stack overflow; serde_json's own parser stops
/// at 128 levels, so real documents never come near this.
const MAX_DEPTH: usize = 256;

/// Lists up to this length are searched linearly; longer ones get a hash index so large
/// list-maps and sets stay linear overall.
const LINEAR_MAX: usize = 8;

/// Metadata fields owned by the system: never tracked, never merged from the applied object
/// (except `name`/`namespace` on create), never removed.
const META_SYSTEM_FIELDS: [&str; 9] = [
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "managedFields",
    "selfLink",
];

/// `metadata.ownerReferences` is a list-map keyed by `uid`.
static OWNER_REFERENCE_KEYS: LazyLock<Vec<String>> = LazyLock::new(|| vec!["uid".to_string()]);

/// Why an apply was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// e.g. `.spec.x: field not declared in schema` (all of them, sorted, joined with ", ")
    #[error("{0}")]
    Undeclared(String),
    /// Values owned by other managers that the apply would change, sorted by (manager, path).
    #[error("{}", conflicts_message(.0))]
    Conflicts(Vec<Conflict>),
    /// Malformed managedFields in the live object, non-object applied value, empty manager name.
    #[error("{0}")]
    Invalid(String),
}

/// One field owned by another manager whose value the apply would change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub manager: String,
    /// Printable field path, e.g. `.spec.ports[port=80].name`.
    pub path: String,
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conflict with {:?}: {}", self.manager, self.path)
    }
}

fn conflicts_message(conflicts: &[Conflict]) -> String {
    let n = conflicts.len();
    let list: Vec<String> = conflicts.iter().map(Conflict::to_string).collect();
    format!("Apply failed with {n} conflict{}: {}", if n == 1 { "" } else { "s" }, list.join(", "))
}

/// One server-side apply.
pub struct ApplyRequest<'a> {
    /// The root `openAPIV3Schema` of the object's CRD version.
    pub schema: &'a Schema,
    /// The current stored object (with `metadata.managedFields`); `None` creates the object.
    pub live: Option<&'a Value>,
    /// The manager's full intent; system metadata in it is ignored.
    pub applied: &'a Value,
    pub manager: &'a str,
    /// Take ownership of conflicting fields instead of failing.
    pub force: bool,
    /// RFC 3339 time recorded on entries that change (see [`FIELD_MANAGER_NOW_FORMAT`]).
    pub now: &'a str,
}

/// Applies `req.applied` on behalf of `req.manager` and returns the merged object with updated
/// `metadata.managedFields`.
///
/// Rules where Kubernetes leaves room or behaves inconsistently:
/// - An explicit `null` for a map field removes that field and is not owned; if another manager
///   owns something there it is a conflict like any other change.
/// - A map or list emptied by this apply's removals is deleted as well (recursively upwards),
///   unless the applied configuration itself contains it; containers that were already empty and
///   the object root are never pruned.
/// - Merged list-maps keep live items in live order (updated in place) and append new items in
///   applied order; sets keep live order and append new values; duplicates in an applied set are
///   dropped. A list-map whose items are not all objects with distinct, non-null keys is treated
///   as atomic, as is any value whose JSON type does not match the schema (the validator reports
///   those).
/// - Entries of the same manager name with another operation (e.g. "Update") are not a source of
///   conflicts, but their fields count as owned by someone else for removal.
/// - Applying without any change returns a value equal to the live object, entry times included.
pub fn apply(req: &ApplyRequest) -> Result<Value, ApplyError> {
    Ok(match apply_change(req)? {
        Change::Unchanged => req.live.cloned().unwrap_or(Value::Null),
        Change::Merged(v) => v,
    })
}

/// The result of [`apply_change`].
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// The result is exactly the live object (managedFields and their times included).
    Unchanged,
    /// The merged object with updated `metadata.managedFields`.
    Merged(Value),
}

/// [`apply`], telling an apply that changes nothing apart without copying the live object.
/// [`Change::Unchanged`] is only returned when there is a live object.
pub fn apply_change(req: &ApplyRequest) -> Result<Change, ApplyError> {
    if req.manager.is_empty() {
        return Err(ApplyError::Invalid("field manager must not be empty".into()));
    }
    let Some(applied_obj) = req.applied.as_object() else {
        return Err(ApplyError::Invalid(format!(
            "applied configuration must be an object, got {}",
            json_type_name(req.applied)
        )));
    };
    if let Some(meta) = applied_obj.get("metadata") {
        if !meta.is_object() && !meta.is_null() {
            return Err(ApplyError::Invalid(format!(
                "applied configuration: metadata must be an object, got {}",
                json_type_name(meta)
            )));
        }
    }
    if let Some(live) = req.live {
        if !live.is_object() {
            return Err(ApplyError::Invalid(format!("live object must be an object, got {}", json_type_name(live))));
        }
        if let Some(meta) = live.get("metadata") {
            if !meta.is_object() {
                return Err(ApplyError::Invalid(format!(
                    "live object: metadata must be an object, got {}",
                    json_type_name(meta)
                )));
            }
        }
    }
    let root = Ty::Root(req.schema);

    // 1 + 2: undeclared fields and the manager's new field set, in one walk.
    let mut collector = Collector::default();
    let mut new_set = FieldSet::default();
    collector.collect(root, req.applied, &mut new_set);
    if collector.too_deep {
        return Err(ApplyError::Invalid(format!("applied configuration is nested deeper than {MAX_DEPTH} levels")));
    }
    if !collector.undeclared.is_empty() {
        let mut errs = collector.undeclared;
        errs.sort();
        errs.dedup();
        return Err(ApplyError::Undeclared(errs.join(", ")));
    }

    let mut entries = match req.live {
        Some(live) => parse_entries(live, Some((req.manager, &new_set)))?,
        None => Vec::new(),
    };
    let own = take_entry(&mut entries, req.manager, APPLY_OPERATION);

    // 3: conflicts with other managers.
    let mut found: Vec<(usize, Vec<String>)> = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        if entry.manager == req.manager || entry.set.is_empty() {
            continue;
        }
        let mut paths = Vec::new();
        find_conflicts(root, req.applied, req.live, &entry.set, &mut Vec::new(), &mut paths);
        paths.sort();
        paths.dedup();
        found.extend(paths.into_iter().map(|p| (i, p)));
    }
    if !found.is_empty() {
        if !req.force {
            let mut conflicts: Vec<Conflict> = found
                .iter()
                .filter_map(|(i, p)| {
                    entries.get(*i).map(|e| Conflict { manager: e.manager.clone(), path: render_path(p) })
                })
                .collect();
            conflicts.sort_by(|a, b| (&a.manager, &a.path).cmp(&(&b.manager, &b.path)));
            conflicts.dedup();
            return Err(ApplyError::Conflicts(conflicts));
        }
        for (i, path) in &found {
            if let Some(entry) = entries.get_mut(*i) {
                entry.set.remove_member(path);
                entry.changed = true;
            }
        }
    }

    // 4: merge. `None`: the live object as it is (copied only once something changes it).
    let mut merged = merge(root, req.live, req.applied);
    let object_changed = merged.as_ref().is_some_and(|v| req.live != Some(v));
    let live_copy = || req.live.cloned().unwrap_or(Value::Null);

    // 5: remove what the manager stopped applying and nobody else owns.
    if let Some(prev) = own.as_ref().filter(|e| !e.same_as_new).map(|e| &e.set) {
        if !prev.is_subset_of(&new_set) {
            let mut keep = new_set.clone();
            for entry in &entries {
                keep.union_with(&entry.set);
            }
            remove_unowned(prev, Some(&keep), merged.get_or_insert_with(live_copy), Some(req.applied), &[]);
        }
    }

    // 6: managedFields. Removals above imply a changed field set, so `object_changed` from
    // before them is enough to decide whether the entry moves.
    let own_changed = object_changed
        || match &own {
            Some(e) => e.changed || (!e.same_as_new && e.set != new_set),
            None => !new_set.is_empty(),
        };
    if !own_changed && !entries.iter().any(|e| e.changed) {
        // Nothing moved: the merge equals the live object (or there is none: the object is
        // created from an apply that sets nothing).
        return Ok(match merged {
            _ if req.live.is_some() => Change::Unchanged,
            Some(v) => Change::Merged(v),
            None => Change::Merged(Value::Null),
        });
    }
    let mut merged = merged.unwrap_or_else(live_copy);
    let own_entry = match own {
        Some(mut e) if !own_changed => {
            if e.same_as_new {
                e.set = new_set;
            }
            e
        }
        own => Entry {
            manager: req.manager.to_string(),
            operation: APPLY_OPERATION.to_string(),
            raw: own.and_then(|e| e.raw),
            set: new_set,
            same_as_new: false,
            changed: true,
            api_version: applied_obj
                .get("apiVersion")
                .and_then(Value::as_str)
                .or_else(|| merged.get("apiVersion").and_then(Value::as_str))
                .map(str::to_string),
        },
    };
    entries.push(own_entry);
    entries.retain(|e| !e.set.is_empty());
    entries.sort_by(|a, b| (&a.manager, &a.operation).cmp(&(&b.manager, &b.operation)));
    let list: Vec<Value> = entries.into_iter().map(|e| e.into_json(req.now)).collect();
    set_managed_fields(&mut merged, list);
    Ok(Change::Merged(merged))
}

/// A copy of `obj` without the fields that only other managers own (what upstream choreo calls
/// pruning unmanaged fields): what is left is the part of the object `manager` may apply as its
/// intent without taking over, or sharing, fields it never set. Fields nobody owns (defaults,
/// values a script just added) stay. `managedFields` itself is dropped.
pub fn prune_foreign(obj: &Value, manager: &str) -> Result<Value, ApplyError> {
    let mut mine = FieldSet::default();
    let mut foreign = FieldSet::default();
    for entry in parse_entries(obj, None)? {
        if entry.manager == manager {
            mine.union_with(&entry.set);
        } else {
            foreign.union_with(&entry.set);
        }
    }
    let mut out = copy_without_managed_fields(obj);
    remove_unowned(&foreign, Some(&mine), &mut out, None, &[]);
    if let Some(meta) = out.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
    }
    Ok(out)
}

/// A copy of `obj` whose `metadata.managedFields` (if any) is `null`: the entries are not
/// copied only to be dropped, while the key stays (so `metadata` does not count as emptied).
fn copy_without_managed_fields(obj: &Value) -> Value {
    let Some(root) = obj.as_object() else { return obj.clone() };
    let copy = |(k, v): (&String, &Value)| -> (String, Value) {
        let v = match v {
            Value::Object(meta) if k == "metadata" => Value::Object(
                meta.iter()
                    .map(|(k, v)| (k.clone(), if k == "managedFields" { Value::Null } else { v.clone() }))
                    .collect(),
            ),
            other => other.clone(),
        };
        (k.clone(), v)
    };
    Value::Object(root.iter().map(copy).collect())
}

/// The fields `manager` owns in `obj` (over all its managedFields entries), as sorted printable
/// paths such as `.spec.ports[port=80].name` or `.metadata.finalizers[="a.b/c"]`.
pub fn managed_paths(obj: &Value, manager: &str) -> Result<Vec<String>, ApplyError> {
    let mut set = FieldSet::default();
    for entry in parse_entries(obj, None)?.iter().filter(|e| e.manager == manager) {
        set.union_with(&entry.set);
    }
    let mut out = Vec::new();
    set.member_paths(&mut Vec::new(), &mut out);
    out.sort();
    Ok(out)
}

fn set_managed_fields(obj: &mut Value, list: Vec<Value>) {
    let Value::Object(root) = obj else { return };
    let meta = root.entry("metadata").or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    if let Value::Object(meta) = meta {
        if list.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(list));
        }
    }
}

#[cfg(test)]
mod tests;

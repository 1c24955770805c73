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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::{self, Write as _};
use std::sync::LazyLock;

use serde_json::{Map, Value};

use crate::api::schema::{json_type_name, ListType, MapType, Schema, SchemaType};

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

// ---------------------------------------------------------------------------------------------
// Field sets

/// A set of field paths as a trie keyed by FieldsV1 path elements (`f:name`, `k:{...}`,
/// `v:...`, `i:n`). `member` marks the path itself as owned; `k:`/`v:` keys are kept in
/// canonical form (compact JSON, object keys sorted) so equal items always have equal keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct FieldSet {
    member: bool,
    children: BTreeMap<String, FieldSet>,
}

impl FieldSet {
    fn leaf() -> FieldSet {
        FieldSet { member: true, children: BTreeMap::new() }
    }

    fn is_empty(&self) -> bool {
        !self.member && self.children.is_empty()
    }

    fn union_with(&mut self, other: &FieldSet) {
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

    fn is_subset_of(&self, other: &FieldSet) -> bool {
        (!self.member || other.member)
            && self.children.iter().all(|(k, c)| other.children.get(k).is_some_and(|o| c.is_subset_of(o)))
    }

    /// Clears the member at `path` and prunes nodes left empty.
    fn remove_member(&mut self, path: &[String]) {
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

    fn member_paths(&self, path: &mut Vec<String>, out: &mut Vec<String>) {
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
    fn push_members(&self, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
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
    fn to_fields_v1(&self) -> Value {
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
    fn eq_json(&self, v: &Value) -> bool {
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
    fn from_fields_v1(v: &Value) -> Result<FieldSet, String> {
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
    fn strip_untracked(&mut self) {
        self.children.remove("f:apiVersion");
        self.children.remove("f:kind");
        if let Some(meta) = self.children.get_mut("f:metadata") {
            for name in META_SYSTEM_FIELDS {
                meta.children.remove(&format!("f:{name}"));
            }
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

// ---------------------------------------------------------------------------------------------
// managedFields entries

struct Entry<'a> {
    manager: String,
    operation: String,
    /// The entry as stored, so unknown keys (e.g. `subresource`) survive; `None` for a new entry.
    raw: Option<&'a Map<String, Value>>,
    set: FieldSet,
    /// The stored fieldsV1 is exactly the encoding of the applying manager's new set, so it was
    /// not decoded and `set` is left empty: the no-op fast path.
    same_as_new: bool,
    /// The set changed in this apply; the entry is re-encoded with a new time.
    changed: bool,
    /// Overrides the stored apiVersion when re-encoded.
    api_version: Option<String>,
}

impl Entry<'_> {
    fn into_json(self, now: &str) -> Value {
        if let (false, Some(raw)) = (self.changed, self.raw) {
            return Value::Object(raw.clone());
        }
        let mut m = Map::new();
        for (k, v) in self.raw.into_iter().flatten() {
            if k != "fieldsV1" {
                m.insert(k.clone(), v.clone());
            }
        }
        m.insert("manager".into(), Value::String(self.manager));
        if !self.operation.is_empty() {
            m.insert("operation".into(), Value::String(self.operation));
        }
        if let Some(v) = self.api_version {
            m.insert("apiVersion".into(), Value::String(v));
        }
        m.insert("time".into(), Value::String(now.to_string()));
        m.insert("fieldsType".into(), Value::String("FieldsV1".into()));
        m.insert("fieldsV1".into(), self.set.to_fields_v1());
        Value::Object(m)
    }
}

/// Parses `metadata.managedFields`. With `own` = (manager, new set), a single Apply entry of
/// that manager whose stored fieldsV1 already encodes the new set is marked `same_as_new`
/// instead of being decoded (being equal to a canonical encoding, it is valid).
fn parse_entries<'a>(obj: &'a Value, own: Option<(&str, &FieldSet)>) -> Result<Vec<Entry<'a>>, ApplyError> {
    let list = match obj.get("metadata").and_then(|m| m.get("managedFields")) {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(list)) => list,
        Some(other) => {
            return Err(ApplyError::Invalid(format!(
                "metadata.managedFields: must be a list, got {}",
                json_type_name(other)
            )))
        }
    };
    let is_own_apply = |e: &Value, manager: &str| {
        e.get("manager").and_then(Value::as_str) == Some(manager)
            && e.get("operation").and_then(Value::as_str) == Some(APPLY_OPERATION)
    };
    let own = own.filter(|(m, _)| list.iter().filter(|e| is_own_apply(e, m)).count() == 1);
    let mut entries = Vec::with_capacity(list.len());
    for (i, e) in list.iter().enumerate() {
        let bad = |msg: String| ApplyError::Invalid(format!("metadata.managedFields[{i}]{msg}"));
        let raw = e.as_object().ok_or_else(|| bad(format!(": must be an object, got {}", json_type_name(e))))?;
        let manager = match raw.get("manager") {
            Some(Value::String(s)) => s.clone(),
            _ => return Err(bad(".manager: must be a string".into())),
        };
        let operation = match raw.get("operation") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(_) => return Err(bad(".operation: must be a string".into())),
        };
        match raw.get("fieldsType") {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if s == "FieldsV1" => {}
            Some(other) => return Err(bad(format!(".fieldsType: unsupported value {other}, must be \"FieldsV1\""))),
        }
        let fields = raw.get("fieldsV1").filter(|v| !v.is_null());
        let same_as_new = match (own, fields) {
            (Some((m, new_set)), Some(v)) => is_own_apply(e, m) && new_set.eq_json(v),
            _ => false,
        };
        let set = match fields {
            Some(v) if !same_as_new => {
                let mut set = FieldSet::from_fields_v1(v).map_err(|e| bad(format!(".fieldsV1: {e}")))?;
                set.strip_untracked();
                set
            }
            _ => FieldSet::default(),
        };
        entries.push(Entry { manager, operation, raw: Some(raw), set, same_as_new, changed: false, api_version: None });
    }
    Ok(entries)
}

/// Removes and returns the entry of (`manager`, `operation`), folding duplicates into one.
fn take_entry<'a>(entries: &mut Vec<Entry<'a>>, manager: &str, operation: &str) -> Option<Entry<'a>> {
    let mut taken: Option<Entry> = None;
    let mut i = 0;
    while i < entries.len() {
        if entries[i].manager == manager && entries[i].operation == operation {
            let e = entries.remove(i);
            match &mut taken {
                None => taken = Some(e),
                Some(t) => {
                    t.set.union_with(&e.set);
                    t.changed = true;
                }
            }
        } else {
            i += 1;
        }
    }
    taken
}

// ---------------------------------------------------------------------------------------------
// Typing

/// How a position in the object is typed for merging.
#[derive(Clone, Copy)]
enum Ty<'s> {
    /// The object root: `apiVersion`/`kind` are system fields, `metadata` is built in.
    Root(&'s Schema),
    Schema(&'s Schema),
    /// Under preserve-unknown-fields: objects are granular, lists atomic, scalars leaves.
    Untyped,
    Meta,
    /// `labels`, `annotations`: granular maps of leaves.
    StringMap,
    Finalizers,
    OwnerRefs,
    Leaf,
}

enum Child<'s> {
    Typed(Ty<'s>),
    /// Never tracked (system fields).
    Ignored,
    Undeclared,
}

enum Shape<'v, 's> {
    Leaf,
    Map(&'v Map<String, Value>),
    ListMap { items: &'v [Value], names: &'s [String], item: Ty<'s> },
    Set(&'v [Value]),
}

fn child_ty<'s>(ty: Ty<'s>, key: &str) -> Child<'s> {
    match ty {
        Ty::Root(s) => match key {
            "apiVersion" | "kind" => Child::Ignored,
            "metadata" => Child::Typed(Ty::Meta),
            _ => schema_child(s, key),
        },
        Ty::Schema(s) => schema_child(s, key),
        Ty::Untyped => Child::Typed(Ty::Untyped),
        Ty::Meta => match key {
            k if META_SYSTEM_FIELDS.contains(&k) => Child::Ignored,
            "labels" | "annotations" => Child::Typed(Ty::StringMap),
            "finalizers" => Child::Typed(Ty::Finalizers),
            "ownerReferences" => Child::Typed(Ty::OwnerRefs),
            _ => Child::Typed(Ty::Leaf),
        },
        Ty::StringMap | Ty::Finalizers | Ty::OwnerRefs | Ty::Leaf => Child::Typed(Ty::Leaf),
    }
}

fn schema_child<'s>(s: &'s Schema, key: &str) -> Child<'s> {
    if let Some(p) = s.property(key) {
        return Child::Typed(Ty::Schema(p));
    }
    if s.allows_unknown_fields() {
        return Child::Typed(Ty::Untyped);
    }
    // Embedded resources implicitly declare the KRM envelope.
    if s.embedded_resource && matches!(key, "apiVersion" | "kind" | "metadata") {
        return Child::Typed(Ty::Untyped);
    }
    Child::Undeclared
}

/// Whether an object value at `s` has fields typed by `s` (rather than being a type mismatch).
fn is_object_schema(s: &Schema) -> bool {
    match s.type_ {
        Some(t) => t == SchemaType::Object,
        None => {
            !s.properties.is_empty()
                || s.additional_properties.is_some()
                || s.preserve_unknown_fields
                || s.embedded_resource
        }
    }
}

fn shape<'v, 's>(ty: Ty<'s>, v: &'v Value) -> Shape<'v, 's> {
    match v {
        Value::Object(m) => match ty {
            Ty::Root(_) | Ty::Meta | Ty::StringMap | Ty::Untyped => Shape::Map(m),
            Ty::Schema(s) if is_object_schema(s) && s.map_type != Some(MapType::Atomic) => Shape::Map(m),
            _ => Shape::Leaf,
        },
        Value::Array(a) => match ty {
            Ty::Finalizers => Shape::Set(a),
            Ty::OwnerRefs => {
                let names: &'static [String] = &OWNER_REFERENCE_KEYS;
                Shape::ListMap { items: a, names, item: Ty::Untyped }
            }
            Ty::Schema(s) if s.type_.is_none_or(|t| t == SchemaType::Array) => {
                match s.effective_list_type() {
                    ListType::Atomic => Shape::Leaf,
                    // A set with repeated values cannot be merged by value: keep it whole so the
                    // validator reports the duplicate instead of the merge hiding it.
                    ListType::Set if has_duplicate_values(a) => Shape::Leaf,
                    ListType::Set => Shape::Set(a),
                    ListType::Map if s.list_map_keys.is_empty() => Shape::Leaf,
                    ListType::Map => Shape::ListMap {
                        items: a,
                        names: &s.list_map_keys,
                        item: s.items.as_deref().map_or(Ty::Untyped, Ty::Schema),
                    },
                }
            }
            _ => Shape::Leaf,
        },
        _ => Shape::Leaf,
    }
}

/// The `k:` keys of every item of a list-map, or `None` when the list cannot be merged by key
/// (an item is not an object, lacks a key field or has a null one, or two items share a key).
fn list_item_keys(items: &[Value], names: &[String]) -> Option<Vec<String>> {
    let mut sorted: Vec<&str> = names.iter().map(String::as_str).collect();
    sorted.sort_unstable();
    sorted.dedup();
    let mut keys: Vec<String> = Vec::with_capacity(items.len());
    let mut seen: HashSet<String> = HashSet::new();
    for item in items {
        let key = item_key(item, &sorted)?;
        let duplicate = if items.len() > LINEAR_MAX { !seen.insert(key.clone()) } else { keys.contains(&key) };
        if duplicate {
            return None;
        }
        keys.push(key);
    }
    Some(keys)
}

/// Whether two items of a list are the same JSON value.
fn has_duplicate_values(items: &[Value]) -> bool {
    let mut seen: HashSet<String> = HashSet::with_capacity(items.len());
    items.iter().any(|item| {
        let mut key = String::new();
        encode_json(item, &mut key);
        !seen.insert(key)
    })
}

/// `k:{"name":value,...}` for an item, `names` sorted.
fn item_key(item: &Value, names: &[&str]) -> Option<String> {
    let obj = item.as_object()?;
    if names.is_empty() {
        return None;
    }
    let mut s = String::from("k:{");
    for (i, name) in names.iter().enumerate() {
        let v = obj.get(*name).filter(|v| !v.is_null())?;
        if i > 0 {
            s.push(',');
        }
        push_json_string(name, &mut s);
        s.push(':');
        encode_json(v, &mut s);
    }
    s.push('}');
    Some(s)
}

/// Canonical compact JSON: object keys sorted, so it can serve as an identity.
fn encode_json(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            let _ = write!(out, "{n}");
        }
        Value::String(s) => push_json_string(s, out),
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                encode_json(x, out);
            }
            out.push(']');
        }
        Value::Object(m) => {
            let mut fields: Vec<(&String, &Value)> = m.iter().collect();
            fields.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, x)) in fields.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_json_string(k, out);
                out.push(':');
                encode_json(x, out);
            }
            out.push('}');
        }
    }
}

/// A JSON string literal, escaped exactly as serde_json does.
fn push_json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn canonical_value(v: &Value) -> String {
    let mut s = String::new();
    encode_json(v, &mut s);
    s
}

// ---------------------------------------------------------------------------------------------
// Paths

/// Renders path elements the way Kubernetes prints field paths: `.spec.ports[port=80].name`,
/// `[type="Ready"]`, `[="a.b/c"]`, `[3]`.
fn render_path(path: &[String]) -> String {
    let mut out = String::new();
    for key in path {
        render_key(key, &mut out);
    }
    out
}

fn render_key(key: &str, out: &mut String) {
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
fn key_names(json: &str) -> Vec<String> {
    match serde_json::from_str::<Value>(json) {
        Ok(Value::Object(m)) => m.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

/// Finds list items by `k:`/`v:`/`i:` key: linearly in short lists, through a hash index built on
/// first use in long ones (keys are canonical, so the index is an exact string match).
#[derive(Default)]
struct ItemFinder {
    index: Option<HashMap<String, usize>>,
    /// Key field names the `k:` index was built for.
    names: Vec<String>,
    values: bool,
}

impl ItemFinder {
    fn find(&mut self, items: &[Value], key: &str) -> Option<usize> {
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

// ---------------------------------------------------------------------------------------------
// 1 + 2: field set of the applied object and undeclared fields

enum Seg<'v> {
    Field(&'v str),
    Key(String),
    Index(usize),
}

#[derive(Default)]
struct Collector<'v> {
    stack: Vec<Seg<'v>>,
    undeclared: Vec<String>,
    too_deep: bool,
}

impl<'v> Collector<'v> {
    /// Records into `set` the fields `v` sets at the current path.
    fn collect(&mut self, ty: Ty<'_>, v: &'v Value, set: &mut FieldSet) {
        if self.stack.len() > MAX_DEPTH {
            self.too_deep = true;
            return;
        }
        match shape(ty, v) {
            Shape::Leaf => {
                set.member = true;
                self.check(ty, v);
            }
            Shape::Map(obj) => {
                for (k, cv) in obj {
                    let cty = match child_ty(ty, k) {
                        Child::Ignored => continue,
                        Child::Undeclared => {
                            self.report(Seg::Field(k));
                            continue;
                        }
                        Child::Typed(cty) => cty,
                    };
                    // An explicit null removes the field; it is not owned.
                    if cv.is_null() {
                        continue;
                    }
                    self.stack.push(Seg::Field(k));
                    let mut child = FieldSet::default();
                    self.collect(cty, cv, &mut child);
                    self.stack.pop();
                    if !child.is_empty() {
                        set.children.insert(format!("f:{k}"), child);
                    }
                }
            }
            Shape::ListMap { items, names, item } => match list_item_keys(items, names) {
                None => {
                    set.member = true;
                    self.check(ty, v);
                }
                Some(keys) => {
                    for (iv, key) in items.iter().zip(keys) {
                        self.stack.push(Seg::Key(key));
                        let mut child = FieldSet::default();
                        self.collect(item, iv, &mut child);
                        child.member = true;
                        if let Some(Seg::Key(key)) = self.stack.pop() {
                            set.children.insert(key, child);
                        }
                    }
                }
            },
            Shape::Set(items) => {
                for iv in items {
                    set.children.insert(format!("v:{}", canonical_value(iv)), FieldSet::leaf());
                }
            }
        }
    }

    /// Undeclared-field check of a value owned as a whole (atomic map or list, type mismatch).
    fn check(&mut self, ty: Ty<'_>, v: &'v Value) {
        if self.stack.len() > MAX_DEPTH {
            self.too_deep = true;
            return;
        }
        // Only schema-typed nodes can have undeclared fields: the built-in metadata types are
        // open and untyped territory accepts anything.
        let Ty::Schema(s) = ty else { return };
        match v {
            Value::Object(obj) if is_object_schema(s) => {
                for (k, cv) in obj {
                    match schema_child(s, k) {
                        Child::Undeclared => self.report(Seg::Field(k)),
                        Child::Typed(cty) => {
                            self.stack.push(Seg::Field(k));
                            self.check(cty, cv);
                            self.stack.pop();
                        }
                        Child::Ignored => {}
                    }
                }
            }
            Value::Array(items) if s.type_.is_none_or(|t| t == SchemaType::Array) => {
                if let Some(item) = s.items.as_deref() {
                    for (i, iv) in items.iter().enumerate() {
                        self.stack.push(Seg::Index(i));
                        self.check(Ty::Schema(item), iv);
                        self.stack.pop();
                    }
                }
            }
            _ => {}
        }
    }

    fn report(&mut self, last: Seg<'_>) {
        let mut path = String::new();
        for seg in self.stack.iter().chain(std::iter::once(&last)) {
            match seg {
                Seg::Field(name) => {
                    path.push('.');
                    path.push_str(name);
                }
                Seg::Key(key) => render_key(key, &mut path),
                Seg::Index(i) => {
                    let _ = write!(path, "[{i}]");
                }
            }
        }
        self.undeclared.push(format!("{path}: field not declared in schema"));
    }
}

// ---------------------------------------------------------------------------------------------
// 3: conflicts

/// Collects the paths of `their` set whose live value the applied configuration would change.
/// Walks `their` set along the applied value, typed by the schema, so that maps, list-map items
/// and set values shared by several managers are not conflicts in themselves: only leaves are
/// compared, equal values are shared ownership, and an explicit null conflicts with whatever
/// they own beneath it.
fn find_conflicts(
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

// ---------------------------------------------------------------------------------------------
// 4: merge

/// Merges `applied` into `live`, returning `None` when the result is identical to `live` (only
/// possible when `live` is present). Detecting "no change" on the way lets a no-op apply, the
/// common case when objects are reloaded, skip building and comparing a whole new object.
fn merge(ty: Ty<'_>, live: Option<&Value>, applied: &Value) -> Option<Value> {
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

// ---------------------------------------------------------------------------------------------
// 5: removal

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
fn remove_unowned(
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const T1: &str = "2026-11-25T10:00:00Z";
    const T2: &str = "2026-11-25T11:00:00Z";
    const T3: &str = "2026-11-25T12:00:00Z";

    fn schema() -> Schema {
        Schema::parse(
            &json!({
                "type": "object",
                "properties": {
                    "spec": {
                        "type": "object",
                        "properties": {
                            "greeting": {"type": "string"},
                            "replicas": {"type": "integer"},
                            "tags": {"type": "array", "items": {"type": "string"}},
                            "ports": {
                                "type": "array",
                                "x-kubernetes-list-type": "map",
                                "x-kubernetes-list-map-keys": ["port"],
                                "items": {
                                    "type": "object",
                                    "properties": {
                                        "port": {"type": "integer"},
                                        "name": {"type": "string"},
                                        "protocol": {"type": "string"}
                                    }
                                }
                            },
                            "aliases": {
                                "type": "array",
                                "x-kubernetes-list-type": "set",
                                "items": {"type": "string"}
                            },
                            "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                            "opts": {
                                "type": "object",
                                "properties": {"a": {"type": "string"}, "b": {"type": "string"}}
                            },
                            "selector": {
                                "type": "object",
                                "x-kubernetes-map-type": "atomic",
                                "additionalProperties": {"type": "string"}
                            }
                        }
                    },
                    "status": {
                        "type": "object",
                        "properties": {
                            "conditions": {
                                "type": "array",
                                "x-kubernetes-list-type": "map",
                                "x-kubernetes-list-map-keys": ["type"],
                                "items": {
                                    "type": "object",
                                    "properties": {
                                        "type": {"type": "string"},
                                        "status": {"type": "string"},
                                        "reason": {"type": "string"}
                                    }
                                }
                            }
                        }
                    }
                }
            }),
            "openAPIV3Schema",
        )
        .unwrap()
    }

    fn obj(spec: Value) -> Value {
        json!({
            "apiVersion": "example.com/v1alpha1",
            "kind": "Greeter",
            "metadata": {"name": "g", "namespace": "default"},
            "spec": spec
        })
    }

    fn run(
        s: &Schema,
        live: Option<&Value>,
        applied: &Value,
        manager: &str,
        force: bool,
        now: &str,
    ) -> Result<Value, ApplyError> {
        let req = ApplyRequest { schema: s, live, applied, manager, force, now };
        let result = apply(&req);
        // Whatever says "unchanged" must be the live object, exactly.
        if let (Ok(Change::Unchanged), Ok(v)) = (apply_change(&req), &result) {
            assert_eq!(Some(v), live);
        }
        result
    }

    fn ok(s: &Schema, live: Option<&Value>, applied: &Value, manager: &str, now: &str) -> Value {
        run(s, live, applied, manager, false, now).unwrap()
    }

    fn entries(v: &Value) -> &Vec<Value> {
        v["metadata"]["managedFields"].as_array().unwrap()
    }

    fn entry<'a>(v: &'a Value, manager: &str) -> &'a Value {
        entries(v).iter().find(|e| e["manager"] == manager).unwrap()
    }

    #[test]
    fn create_records_owned_fields() {
        let s = schema();
        let out = ok(&s, None, &obj(json!({"greeting": "hi", "replicas": 2})), "alice", T1);
        assert_eq!(out["spec"], json!({"greeting": "hi", "replicas": 2}));
        assert_eq!(out["metadata"]["name"], "g");
        assert_eq!(out["apiVersion"], "example.com/v1alpha1");
        assert_eq!(
            out["metadata"]["managedFields"],
            json!([{
                "manager": "alice",
                "operation": "Apply",
                "apiVersion": "example.com/v1alpha1",
                "time": T1,
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:spec": {"f:greeting": {}, "f:replicas": {}}}
            }])
        );
        assert_eq!(managed_paths(&out, "alice").unwrap(), vec![".spec.greeting", ".spec.replicas"]);
    }

    #[test]
    fn apply_change_tells_an_unchanged_result_apart() {
        let s = schema();
        let change = |live: Option<&Value>, applied: &Value, manager: &str, now: &str| {
            apply_change(&ApplyRequest { schema: &s, live, applied, manager, force: false, now }).unwrap()
        };
        let x = obj(json!({"greeting": "hi", "replicas": 2}));
        let first = ok(&s, None, &x, "alice", T1);
        assert_eq!(change(None, &x, "alice", T1), Change::Merged(first.clone()));
        assert_eq!(change(Some(&first), &x, "alice", T2), Change::Unchanged);
        // Same values, another manager: only managedFields change, and that is a change.
        let shared = change(Some(&first), &obj(json!({"greeting": "hi"})), "bob", T2);
        assert_eq!(shared, Change::Merged(ok(&s, Some(&first), &obj(json!({"greeting": "hi"})), "bob", T2)));
        assert_ne!(shared, Change::Merged(first.clone()));
        // A manager that stops applying a field removes it.
        let dropped = change(Some(&first), &obj(json!({"greeting": "hi"})), "alice", T2);
        let Change::Merged(dropped) = dropped else { panic!("a dropped field is a change") };
        assert_eq!(dropped["spec"], json!({"greeting": "hi"}));
    }

    #[test]
    fn reapplying_identical_object_is_a_no_op() {
        let s = schema();
        let applied = obj(json!({
            "greeting": "hi",
            "ports": [{"port": 80, "name": "http"}],
            "aliases": ["a"],
            "extra": {"x": {"y": [1, 2]}}
        }));
        let first = ok(&s, None, &applied, "alice", T1);
        let second = ok(&s, Some(&first), &applied, "alice", T2);
        assert_eq!(second, first);
        assert_eq!(entry(&second, "alice")["time"], T1);
    }

    #[test]
    fn adding_a_field_updates_entry_and_time() {
        let s = schema();
        let first = ok(&s, None, &obj(json!({"greeting": "hi"})), "alice", T1);
        let second = ok(&s, Some(&first), &obj(json!({"greeting": "hi", "replicas": 3})), "alice", T2);
        assert_eq!(second["spec"], json!({"greeting": "hi", "replicas": 3}));
        assert_eq!(entry(&second, "alice")["time"], T2);
        assert_eq!(managed_paths(&second, "alice").unwrap(), vec![".spec.greeting", ".spec.replicas"]);
    }

    #[test]
    fn field_dropped_by_its_only_manager_disappears() {
        let s = schema();
        let first = ok(&s, None, &obj(json!({"greeting": "hi", "replicas": 3})), "alice", T1);
        let second = ok(&s, Some(&first), &obj(json!({"greeting": "hi"})), "alice", T2);
        assert_eq!(second["spec"], json!({"greeting": "hi"}));
        assert_eq!(managed_paths(&second, "alice").unwrap(), vec![".spec.greeting"]);
    }

    #[test]
    fn dropped_field_survives_when_another_manager_owns_it() {
        let s = schema();
        let a = ok(&s, None, &obj(json!({"greeting": "hi", "replicas": 3})), "alice", T1);
        // Same value: shared ownership, no conflict.
        let b = ok(&s, Some(&a), &obj(json!({"replicas": 3})), "bob", T2);
        assert_eq!(entry(&b, "alice")["time"], T1);
        let c = ok(&s, Some(&b), &obj(json!({"greeting": "hi"})), "alice", T3);
        assert_eq!(c["spec"], json!({"greeting": "hi", "replicas": 3}));
        assert_eq!(managed_paths(&c, "bob").unwrap(), vec![".spec.replicas"]);
        assert_eq!(managed_paths(&c, "alice").unwrap(), vec![".spec.greeting"]);
    }

    #[test]
    fn disjoint_managers_both_survive() {
        let s = schema();
        let a = ok(&s, None, &obj(json!({"greeting": "hi"})), "alice", T1);
        let b = ok(&s, Some(&a), &obj(json!({"replicas": 5})), "bob", T2);
        let a2 = ok(&s, Some(&b), &obj(json!({"greeting": "hello"})), "alice", T3);
        assert_eq!(a2["spec"], json!({"greeting": "hello", "replicas": 5}));
        let managers: Vec<&Value> = entries(&a2).iter().map(|e| &e["manager"]).collect();
        assert_eq!(managers, vec!["alice", "bob"]);
        assert_eq!(entry(&a2, "bob")["time"], T2);
    }

    #[test]
    fn conflicts_are_reported_sorted_with_kubernetes_text() {
        let s = schema();
        let a = ok(&s, None, &obj(json!({"greeting": "hi"})), "mgr-a", T1);
        let b = ok(&s, Some(&a), &obj(json!({"replicas": 1})), "mgr-b", T1);
        let err = run(&s, Some(&b), &obj(json!({"greeting": "yo", "replicas": 2})), "c", false, T2).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Apply failed with 2 conflicts: conflict with \"mgr-a\": .spec.greeting, \
             conflict with \"mgr-b\": .spec.replicas"
        );
        let err = run(&s, Some(&b), &obj(json!({"replicas": 2})), "c", false, T2).unwrap_err();
        assert_eq!(
            err,
            ApplyError::Conflicts(vec![Conflict { manager: "mgr-b".into(), path: ".spec.replicas".into() }])
        );
        assert_eq!(err.to_string(), "Apply failed with 1 conflict: conflict with \"mgr-b\": .spec.replicas");
    }

    #[test]
    fn force_takes_ownership() {
        let s = schema();
        let a = ok(&s, None, &obj(json!({"greeting": "hi", "replicas": 1})), "alice", T1);
        let b = run(&s, Some(&a), &obj(json!({"greeting": "yo"})), "bob", true, T2).unwrap();
        assert_eq!(b["spec"], json!({"greeting": "yo", "replicas": 1}));
        assert_eq!(managed_paths(&b, "alice").unwrap(), vec![".spec.replicas"]);
        assert_eq!(managed_paths(&b, "bob").unwrap(), vec![".spec.greeting"]);
        // Alice's set changed, so her entry gets the new time.
        assert_eq!(entry(&b, "alice")["time"], T2);
        // A manager that lost everything is dropped.
        let c = run(&s, Some(&b), &obj(json!({"replicas": 9})), "bob", true, T3).unwrap();
        let managers: Vec<&Value> = entries(&c).iter().map(|e| &e["manager"]).collect();
        assert_eq!(managers, vec!["bob"]);
        // Bob dropped greeting: he was its only owner after forcing.
        assert_eq!(c["spec"], json!({"replicas": 9}));
    }

    fn status(conds: Value) -> Value {
        json!({
            "apiVersion": "example.com/v1alpha1",
            "kind": "Greeter",
            "metadata": {"name": "g"},
            "status": {"conditions": conds}
        })
    }

    #[test]
    fn list_map_conditions_merge_by_type() {
        let s = schema();
        let a = ok(&s, None, &status(json!([{"type": "Ready", "status": "True"}])), "ready-ctl", T1);
        let b = ok(
            &s,
            Some(&a),
            &status(json!([{"type": "Synced", "status": "False", "reason": "Pending"}])),
            "sync-ctl",
            T2,
        );
        assert_eq!(
            b["status"]["conditions"],
            json!([
                {"type": "Ready", "status": "True"},
                {"type": "Synced", "status": "False", "reason": "Pending"}
            ])
        );
        // Updating an owned condition in place keeps the live order.
        let c = ok(&s, Some(&b), &status(json!([{"type": "Ready", "status": "False"}])), "ready-ctl", T3);
        assert_eq!(c["status"]["conditions"][0], json!({"type": "Ready", "status": "False"}));
        assert_eq!(
            managed_paths(&c, "sync-ctl").unwrap(),
            vec![
                ".status.conditions[type=\"Synced\"]",
                ".status.conditions[type=\"Synced\"].reason",
                ".status.conditions[type=\"Synced\"].status",
                ".status.conditions[type=\"Synced\"].type",
            ]
        );
        // Dropping its condition removes only that one.
        let d = ok(&s, Some(&c), &status(json!([])), "ready-ctl", T3);
        assert_eq!(d["status"]["conditions"], json!([{"type": "Synced", "status": "False", "reason": "Pending"}]));
        let managers: Vec<&Value> = entries(&d).iter().map(|e| &e["manager"]).collect();
        assert_eq!(managers, vec!["sync-ctl"]);
    }

    #[test]
    fn list_map_conflict_is_reported_at_leaf_level() {
        let s = schema();
        let a = ok(&s, None, &status(json!([{"type": "Ready", "status": "True"}])), "a", T1);
        // Same item, same values: shared.
        let b = ok(&s, Some(&a), &status(json!([{"type": "Ready", "status": "True"}])), "b", T2);
        let err =
            run(&s, Some(&b), &status(json!([{"type": "Ready", "status": "False"}])), "c", false, T3).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Apply failed with 2 conflicts: conflict with \"a\": .status.conditions[type=\"Ready\"].status, \
             conflict with \"b\": .status.conditions[type=\"Ready\"].status"
        );
        // A new field in a shared item is no conflict.
        ok(&s, Some(&b), &status(json!([{"type": "Ready", "reason": "Fine"}])), "c", T3);
    }

    #[test]
    fn removed_item_field_keeps_item_owned_by_another_manager() {
        let s = schema();
        let a = ok(&s, None, &status(json!([{"type": "Ready", "status": "True", "reason": "Up"}])), "a", T1);
        let b = ok(&s, Some(&a), &status(json!([{"type": "Ready", "status": "True"}])), "b", T2);
        let c = ok(&s, Some(&b), &status(json!([])), "a", T3);
        // b still owns the item and its status; a's reason is gone.
        assert_eq!(c["status"]["conditions"], json!([{"type": "Ready", "status": "True"}]));
    }

    fn with_meta(meta: Value) -> Value {
        let mut m = json!({"name": "g"});
        for (k, v) in meta.as_object().unwrap() {
            m[k] = v.clone();
        }
        json!({"apiVersion": "example.com/v1alpha1", "kind": "Greeter", "metadata": m})
    }

    #[test]
    fn finalizers_merge_as_a_set() {
        let s = schema();
        let a = ok(&s, None, &with_meta(json!({"finalizers": ["a.io/x"]})), "a", T1);
        let b = ok(&s, Some(&a), &with_meta(json!({"finalizers": ["b.io/y", "a.io/x"]})), "b", T2);
        assert_eq!(b["metadata"]["finalizers"], json!(["a.io/x", "b.io/y"]));
        assert_eq!(
            entry(&b, "b")["fieldsV1"],
            json!({"f:metadata": {"f:finalizers": {"v:\"a.io/x\"": {}, "v:\"b.io/y\"": {}}}})
        );
        // a drops its finalizer, but b also owns it.
        let c = ok(&s, Some(&b), &with_meta(json!({})), "a", T3);
        assert_eq!(c["metadata"]["finalizers"], json!(["a.io/x", "b.io/y"]));
        // b drops a.io/x, now owned by nobody else.
        let d = ok(&s, Some(&c), &with_meta(json!({"finalizers": ["b.io/y"]})), "b", T3);
        assert_eq!(d["metadata"]["finalizers"], json!(["b.io/y"]));
        // b drops the last one: the emptied list is pruned.
        let e = ok(&s, Some(&d), &with_meta(json!({})), "b", T3);
        assert!(e["metadata"].get("finalizers").is_none(), "{e}");
        assert!(e["metadata"].get("managedFields").is_none(), "{e}");
    }

    #[test]
    fn finalizers_each_manager_drops_only_its_own() {
        let s = schema();
        let a = ok(&s, None, &with_meta(json!({"finalizers": ["a.io/x"]})), "a", T1);
        let b = ok(&s, Some(&a), &with_meta(json!({"finalizers": ["b.io/y"]})), "b", T2);
        let c = ok(&s, Some(&b), &with_meta(json!({"finalizers": []})), "a", T3);
        assert_eq!(c["metadata"]["finalizers"], json!(["b.io/y"]));
        let d = ok(&s, Some(&b), &with_meta(json!({})), "b", T3);
        assert_eq!(d["metadata"]["finalizers"], json!(["a.io/x"]));
    }

    #[test]
    fn owner_references_merge_by_uid() {
        let s = schema();
        let r1 = json!({"apiVersion": "v1", "kind": "A", "name": "a", "uid": "u1"});
        let r2 = json!({"apiVersion": "v1", "kind": "B", "name": "b", "uid": "u2"});
        let a = ok(&s, None, &with_meta(json!({"ownerReferences": [r1]})), "a", T1);
        let b = ok(&s, Some(&a), &with_meta(json!({"ownerReferences": [r2]})), "b", T2);
        assert_eq!(b["metadata"]["ownerReferences"], json!([r1, r2]));
        assert_eq!(
            entry(&b, "b")["fieldsV1"],
            json!({"f:metadata": {"f:ownerReferences": {"k:{\"uid\":\"u2\"}": {
                ".": {}, "f:apiVersion": {}, "f:kind": {}, "f:name": {}, "f:uid": {}
            }}}})
        );
        let c = ok(&s, Some(&b), &with_meta(json!({})), "a", T3);
        assert_eq!(c["metadata"]["ownerReferences"], json!([r2]));
    }

    #[test]
    fn labels_are_granular() {
        let s = schema();
        let a = ok(&s, None, &with_meta(json!({"labels": {"app": "x", "tier": "web"}})), "a", T1);
        let b = ok(&s, Some(&a), &with_meta(json!({"labels": {"team": "net"}})), "b", T2);
        assert_eq!(b["metadata"]["labels"], json!({"app": "x", "tier": "web", "team": "net"}));
        let c = ok(&s, Some(&b), &with_meta(json!({"labels": {"app": "x"}})), "a", T3);
        assert_eq!(c["metadata"]["labels"], json!({"app": "x", "team": "net"}));
        let err = run(&s, Some(&c), &with_meta(json!({"labels": {"team": "ops"}})), "a", false, T3).unwrap_err();
        assert_eq!(err.to_string(), "Apply failed with 1 conflict: conflict with \"b\": .metadata.labels.team");
    }

    #[test]
    fn undeclared_field_is_rejected() {
        let s = schema();
        let err = run(&s, None, &obj(json!({"greetings": "hi"})), "a", false, T1).unwrap_err();
        assert_eq!(err, ApplyError::Undeclared(".spec.greetings: field not declared in schema".into()));
        assert_eq!(err.to_string(), ".spec.greetings: field not declared in schema");
    }

    #[test]
    fn all_undeclared_fields_are_reported_sorted() {
        let s = schema();
        let applied = json!({
            "apiVersion": "example.com/v1alpha1",
            "kind": "Greeter",
            "metadata": {"name": "g", "whatever": 1},
            "spec": {
                "zzz": 1,
                "ports": [{"port": 80, "nmae": "http"}],
                "opts": {"c": "x"},
                "selector": {"k": "v"}
            },
            "bogus": true
        });
        let err = run(&s, None, &applied, "a", false, T1).unwrap_err();
        assert_eq!(
            err.to_string(),
            ".bogus: field not declared in schema, \
             .spec.opts.c: field not declared in schema, \
             .spec.ports[port=80].nmae: field not declared in schema, \
             .spec.zzz: field not declared in schema"
        );
    }

    #[test]
    fn preserve_unknown_fields_accepts_anything() {
        let s = schema();
        let extra = json!({"a": {"b": [1, {"c": null}], "d": "e"}, "f": 1.5});
        let a = ok(&s, None, &obj(json!({"extra": extra})), "a", T1);
        assert_eq!(a["spec"]["extra"], extra);
        assert_eq!(managed_paths(&a, "a").unwrap(), vec![".spec.extra.a.b", ".spec.extra.a.d", ".spec.extra.f"]);
        // Nested unknown objects are granular: another manager can add beside.
        let b = ok(&s, Some(&a), &obj(json!({"extra": {"a": {"z": true}}})), "b", T2);
        assert_eq!(b["spec"]["extra"]["a"]["z"], true);
        assert_eq!(b["spec"]["extra"]["a"]["d"], "e");
    }

    #[test]
    fn atomic_list_and_map_are_replaced_wholesale() {
        let s = schema();
        let a = ok(&s, None, &obj(json!({"tags": ["x", "y"], "selector": {"a": "1", "b": "2"}})), "a", T1);
        let b = ok(&s, Some(&a), &obj(json!({"tags": ["z"], "selector": {"c": "3"}})), "a", T2);
        assert_eq!(b["spec"]["tags"], json!(["z"]));
        assert_eq!(b["spec"]["selector"], json!({"c": "3"}));
        assert_eq!(managed_paths(&b, "a").unwrap(), vec![".spec.selector", ".spec.tags"]);
        let err = run(&s, Some(&b), &obj(json!({"tags": ["z", "w"]})), "b", false, T3).unwrap_err();
        assert_eq!(err.to_string(), "Apply failed with 1 conflict: conflict with \"a\": .spec.tags");
    }

    #[test]
    fn explicit_null_removes_the_field() {
        let s = schema();
        let a = ok(&s, None, &obj(json!({"greeting": "hi", "replicas": 1})), "a", T1);
        let b = ok(&s, Some(&a), &obj(json!({"greeting": null, "replicas": 1})), "a", T2);
        assert_eq!(b["spec"], json!({"replicas": 1}));
        assert_eq!(managed_paths(&b, "a").unwrap(), vec![".spec.replicas"]);
        // Null on a field another manager owns is a conflict; forcing removes it.
        let c = ok(&s, Some(&b), &obj(json!({"greeting": "yo"})), "b", T2);
        let err = run(&s, Some(&c), &obj(json!({"greeting": null})), "a", false, T3).unwrap_err();
        assert_eq!(err.to_string(), "Apply failed with 1 conflict: conflict with \"b\": .spec.greeting");
        let d = run(&s, Some(&c), &obj(json!({"greeting": null})), "a", true, T3).unwrap();
        assert_eq!(d["spec"], json!({}));
        assert!(managed_paths(&d, "b").unwrap().is_empty());
        // Null on create is simply absent.
        let e = ok(&s, None, &obj(json!({"greeting": null})), "a", T1);
        assert_eq!(e["spec"], json!({}));
    }

    #[test]
    fn managed_fields_use_kubernetes_fields_v1_encoding() {
        let s = schema();
        let applied = json!({
            "apiVersion": "example.com/v1alpha1",
            "kind": "Greeter",
            "metadata": {"name": "g", "finalizers": ["a.b/c"], "labels": {"app": "x"}},
            "spec": {"greeting": "hi", "ports": [{"port": 80, "protocol": "TCP"}]},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}
        });
        let out = ok(&s, None, &applied, "m", T1);
        assert_eq!(
            out["metadata"]["managedFields"],
            json!([{
                "manager": "m",
                "operation": "Apply",
                "apiVersion": "example.com/v1alpha1",
                "time": T1,
                "fieldsType": "FieldsV1",
                "fieldsV1": {
                    "f:metadata": {
                        "f:finalizers": {"v:\"a.b/c\"": {}},
                        "f:labels": {"f:app": {}}
                    },
                    "f:spec": {
                        "f:greeting": {},
                        "f:ports": {"k:{\"port\":80}": {".": {}, "f:port": {}, "f:protocol": {}}}
                    },
                    "f:status": {
                        "f:conditions": {
                            "k:{\"type\":\"Ready\"}": {".": {}, "f:status": {}, "f:type": {}}
                        }
                    }
                }
            }])
        );
        assert_eq!(
            managed_paths(&out, "m").unwrap(),
            vec![
                ".metadata.finalizers[=\"a.b/c\"]",
                ".metadata.labels.app",
                ".spec.greeting",
                ".spec.ports[port=80]",
                ".spec.ports[port=80].port",
                ".spec.ports[port=80].protocol",
                ".status.conditions[type=\"Ready\"]",
                ".status.conditions[type=\"Ready\"].status",
                ".status.conditions[type=\"Ready\"].type",
            ]
        );
    }

    #[test]
    fn composite_list_map_keys_are_sorted_and_rendered() {
        let s = Schema::parse(
            &json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
                "routes": {
                    "type": "array",
                    "x-kubernetes-list-type": "map",
                    "x-kubernetes-list-map-keys": ["prefix", "metric"],
                    "items": {"type": "object", "properties": {
                        "prefix": {"type": "string"}, "metric": {"type": "integer"}, "via": {"type": "string"}
                    }}
                }
            }}}}),
            "s",
        )
        .unwrap();
        let a = ok(&s, None, &obj(json!({"routes": [{"prefix": "10.0.0.0/8", "metric": 5, "via": "r1"}]})), "a", T1);
        assert_eq!(
            entry(&a, "a")["fieldsV1"]["f:spec"]["f:routes"],
            json!({"k:{\"metric\":5,\"prefix\":\"10.0.0.0/8\"}": {".": {}, "f:metric": {}, "f:prefix": {}, "f:via": {}}})
        );
        let err = run(
            &s,
            Some(&a),
            &obj(json!({"routes": [{"prefix": "10.0.0.0/8", "metric": 5, "via": "r2"}]})),
            "b",
            false,
            T2,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Apply failed with 1 conflict: conflict with \"a\": .spec.routes[metric=5,prefix=\"10.0.0.0/8\"].via"
        );
    }

    #[test]
    fn system_fields_are_never_tracked_or_copied() {
        let s = schema();
        let live = ok(&s, None, &obj(json!({"greeting": "hi"})), "a", T1);
        let mut live = live;
        live["metadata"]["uid"] = json!("uid-1");
        live["metadata"]["resourceVersion"] = json!("7");
        live["metadata"]["generation"] = json!(3);
        live["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
        let mut applied = obj(json!({"greeting": "hi"}));
        applied["metadata"]["uid"] = json!("forged");
        applied["metadata"]["resourceVersion"] = json!("1");
        applied["metadata"]["generation"] = json!(99);
        applied["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        applied["metadata"]["managedFields"] = json!([{"manager": "evil", "fieldsV1": {"f:spec": {}}}]);
        let out = ok(&s, Some(&live), &applied, "a", T2);
        assert_eq!(out, live);
        // On create the system fields of the applied object are dropped too.
        let created = ok(&s, None, &applied, "a", T1);
        assert_eq!(created["metadata"].get("uid"), None);
        assert_eq!(created["metadata"].get("deletionTimestamp"), None);
        assert_eq!(entries(&created).len(), 1);
        assert_eq!(created["metadata"]["namespace"], "default");
    }

    #[test]
    fn emptied_parent_map_is_pruned_unless_applied() {
        let s = schema();
        let a = ok(&s, None, &obj(json!({"greeting": "hi", "opts": {"a": "1"}})), "a", T1);
        let b = ok(&s, Some(&a), &obj(json!({"greeting": "hi"})), "a", T2);
        assert_eq!(b["spec"], json!({"greeting": "hi"}));
        let c = ok(&s, Some(&a), &obj(json!({"greeting": "hi", "opts": {}})), "a", T2);
        assert_eq!(c["spec"], json!({"greeting": "hi", "opts": {}}));
        // Dropping the whole spec prunes it; the root stays.
        let mut bare = obj(json!({}));
        bare.as_object_mut().unwrap().remove("spec");
        let d = ok(&s, Some(&a), &bare, "a", T2);
        assert!(d.get("spec").is_none(), "{d}");
        assert!(d["metadata"].get("managedFields").is_none(), "{d}");
        assert_eq!(d["metadata"]["name"], "g");
    }

    #[test]
    fn invalid_inputs_are_errors() {
        let s = schema();
        let e = run(&s, None, &json!([1]), "a", false, T1).unwrap_err();
        assert_eq!(e.to_string(), "applied configuration must be an object, got array");
        let e = run(&s, None, &obj(json!({})), "", false, T1).unwrap_err();
        assert_eq!(e.to_string(), "field manager must not be empty");
        let mut live = obj(json!({}));
        live["metadata"]["managedFields"] = json!([{"manager": "x", "fieldsV1": {"q:oops": {}}}]);
        let e = run(&s, Some(&live), &obj(json!({})), "a", false, T1).unwrap_err();
        assert_eq!(e.to_string(), "metadata.managedFields[0].fieldsV1: unknown path element \"q:oops\"");
        live["metadata"]["managedFields"] = json!({"manager": "x"});
        assert!(matches!(run(&s, Some(&live), &obj(json!({})), "a", false, T1), Err(ApplyError::Invalid(_))));
        live["metadata"]["managedFields"] = json!([{"fieldsV1": {}}]);
        assert!(matches!(managed_paths(&live, "x"), Err(ApplyError::Invalid(_))));
    }

    #[test]
    fn foreign_key_encoding_is_canonicalized() {
        let s = schema();
        let mut live = status(json!([{"type": "Ready", "status": "True"}]));
        live["metadata"]["managedFields"] = json!([{
            "manager": "kube", "operation": "Apply", "apiVersion": "example.com/v1alpha1",
            "time": T1, "fieldsType": "FieldsV1",
            "fieldsV1": {"f:status": {"f:conditions": {"k:{ \"type\": \"Ready\" }": {
                ".": {}, "f:type": {}, "f:status": {}
            }}}}
        }]);
        let err = run(&s, Some(&live), &status(json!([{"type": "Ready", "status": "False"}])), "other", false, T2)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Apply failed with 1 conflict: conflict with \"kube\": .status.conditions[type=\"Ready\"].status"
        );
        // kube drops its condition: removed even though its key was spelled differently.
        let out = ok(&s, Some(&live), &status(json!([])), "kube", T2);
        assert_eq!(out["status"]["conditions"], json!([]));
    }

    #[test]
    fn large_list_map_merges_by_index() {
        let s = schema();
        let ports: Vec<Value> = (0..500).map(|i| json!({"port": i, "name": format!("p{i}")})).collect();
        let a = ok(&s, None, &obj(json!({"ports": ports})), "a", T1);
        let mine: Vec<Value> = (250..750).map(|i| json!({"port": i, "protocol": "TCP"})).collect();
        let b = ok(&s, Some(&a), &obj(json!({"ports": mine})), "b", T2);
        assert_eq!(b["spec"]["ports"].as_array().unwrap().len(), 750);
        assert_eq!(b["spec"]["ports"][300], json!({"port": 300, "name": "p300", "protocol": "TCP"}));
        let half: Vec<Value> = (0..100).map(|i| json!({"port": i, "name": format!("p{i}")})).collect();
        let c = ok(&s, Some(&b), &obj(json!({"ports": half})), "a", T3);
        // a dropped 100..500: 100..250 had no other owner, 250..500 keep b's fields only.
        let out = c["spec"]["ports"].as_array().unwrap();
        assert_eq!(out.len(), 100 + 500);
        assert_eq!(out[100], json!({"port": 250, "protocol": "TCP"}));
    }

    #[test]
    fn list_map_with_missing_keys_is_atomic() {
        let s = schema();
        let a = ok(&s, None, &obj(json!({"ports": [{"name": "nokey"}]})), "a", T1);
        assert_eq!(managed_paths(&a, "a").unwrap(), vec![".spec.ports"]);
        let b = ok(&s, Some(&a), &obj(json!({"ports": [{"port": 1}, {"port": 1}]})), "a", T2);
        assert_eq!(b["spec"]["ports"], json!([{"port": 1}, {"port": 1}]));
    }

    #[test]
    fn same_manager_other_operation_keeps_fields_without_conflict() {
        let s = schema();
        let mut live = obj(json!({"greeting": "hi", "replicas": 1}));
        live["metadata"]["managedFields"] = json!([{
            "manager": "a", "operation": "Update", "apiVersion": "example.com/v1alpha1",
            "time": T1, "fieldsType": "FieldsV1",
            "fieldsV1": {"f:spec": {"f:greeting": {}, "f:replicas": {}}}
        }]);
        let out = ok(&s, Some(&live), &obj(json!({"greeting": "yo"})), "a", T2);
        assert_eq!(out["spec"], json!({"greeting": "yo", "replicas": 1}));
        let ops: Vec<(&Value, &Value)> = entries(&out).iter().map(|e| (&e["manager"], &e["operation"])).collect();
        assert_eq!(ops, vec![(&json!("a"), &json!("Apply")), (&json!("a"), &json!("Update"))]);
    }

    #[test]
    fn type_mismatch_is_an_atomic_leaf() {
        let s = schema();
        let a = ok(&s, None, &obj(json!({"greeting": {"x": 1}, "ports": "none"})), "a", T1);
        assert_eq!(a["spec"]["greeting"], json!({"x": 1}));
        assert_eq!(managed_paths(&a, "a").unwrap(), vec![".spec.greeting", ".spec.ports"]);
        let b = ok(&s, Some(&a), &obj(json!({"ports": [{"port": 1}]})), "a", T2);
        assert_eq!(b["spec"], json!({"ports": [{"port": 1}]}));
    }

    #[test]
    fn prune_foreign_keeps_own_and_unowned_fields_only() {
        let s = schema();
        let a = ok(&s, None, &obj(json!({"greeting": "hi", "replicas": 2})), "loader", T1);
        let b = ok(&s, Some(&a), &obj(json!({"replicas": 2, "tags": ["x"]})), "rec", T2);
        let mut with_new = b.clone();
        with_new["spec"]["aliases"] = json!(["new"]);
        let pruned = prune_foreign(&with_new, "rec").unwrap();
        assert_eq!(pruned["spec"], json!({"replicas": 2, "tags": ["x"], "aliases": ["new"]}));
        assert!(pruned["metadata"].get("managedFields").is_none());
        assert_eq!(pruned["metadata"]["name"], b["metadata"]["name"]);
    }

    #[test]
    fn entry_api_version_follows_the_applied_object() {
        let s = schema();
        let a = ok(&s, None, &obj(json!({"greeting": "hi"})), "a", T1);
        let mut v2 = obj(json!({"greeting": "hi"}));
        v2["apiVersion"] = json!("example.com/v1");
        let b = ok(&s, Some(&a), &v2, "a", T2);
        assert_eq!(b["apiVersion"], "example.com/v1");
        assert_eq!(entry(&b, "a")["apiVersion"], "example.com/v1");
        assert_eq!(entry(&b, "a")["time"], T2);
    }

    mod props {
        use super::*;
        use proptest::prelude::*;
        use std::collections::BTreeMap;

        /// A generated configuration: independent units keyed by id, each a JSON fragment.
        type Units = BTreeMap<String, Value>;

        fn scalar() -> impl Strategy<Value = Value> {
            prop_oneof![Just(json!("a")), Just(json!("b")), (0i64..3).prop_map(|i| json!(i)), Just(json!(true)),]
        }

        fn units() -> impl Strategy<Value = Units> {
            let word = || prop_oneof![Just("x"), Just("y"), Just("z")];
            (
                prop::option::of(prop_oneof![Just("hi"), Just("yo")]),
                prop::option::of(0i64..3),
                prop::option::of(prop::collection::vec(word(), 0..3)),
                (prop::option::of(word()), prop::option::of(word())),
                prop::collection::btree_map(
                    0i64..6,
                    (prop::option::of(word()), prop::option::of(prop_oneof![Just("TCP"), Just("UDP")])),
                    0..4,
                ),
                prop::collection::btree_set(word(), 0..3),
                prop::collection::btree_map(
                    word(),
                    prop_oneof![scalar(), scalar().prop_map(|v| json!({"inner": v}))],
                    0..3,
                ),
                prop::collection::btree_map(word(), word(), 0..3),
                prop::collection::btree_set(prop_oneof![Just("f.io/a"), Just("f.io/b")], 0..3),
            )
                .prop_map(|(greeting, replicas, tags, (oa, ob), ports, aliases, extra, labels, fins)| {
                    let mut u = Units::new();
                    if let Some(g) = greeting {
                        u.insert("greeting".into(), json!(g));
                    }
                    if let Some(r) = replicas {
                        u.insert("replicas".into(), json!(r));
                    }
                    if let Some(t) = tags {
                        u.insert("tags".into(), json!(t));
                    }
                    if let Some(a) = oa {
                        u.insert("opts.a".into(), json!(a));
                    }
                    if let Some(b) = ob {
                        u.insert("opts.b".into(), json!(b));
                    }
                    for (port, (name, protocol)) in ports {
                        let mut item = json!({"port": port});
                        if let Some(n) = name {
                            item["name"] = json!(n);
                        }
                        if let Some(p) = protocol {
                            item["protocol"] = json!(p);
                        }
                        u.insert(format!("port:{port}"), item);
                    }
                    for a in aliases {
                        u.insert(format!("alias:{a}"), json!(a));
                    }
                    for (k, v) in extra {
                        u.insert(format!("extra:{k}"), v);
                    }
                    for (k, v) in labels {
                        u.insert(format!("label:{k}"), json!(v));
                    }
                    for f in fins {
                        u.insert(format!("fin:{f}"), json!(f));
                    }
                    u
                })
        }

        fn build(units: &Units) -> Value {
            let mut o = json!({
                "apiVersion": "example.com/v1alpha1",
                "kind": "Greeter",
                "metadata": {"name": "g"},
                "spec": {}
            });
            for (id, v) in units {
                let (kind, key) = id.split_once(':').unwrap_or((id.as_str(), ""));
                match kind {
                    "greeting" | "replicas" | "tags" => o["spec"][id.as_str()] = v.clone(),
                    "opts.a" => o["spec"]["opts"]["a"] = v.clone(),
                    "opts.b" => o["spec"]["opts"]["b"] = v.clone(),
                    "extra" => o["spec"]["extra"][key] = v.clone(),
                    "label" => o["metadata"]["labels"][key] = v.clone(),
                    "port" | "alias" | "fin" => {
                        let slot = match kind {
                            "port" => &mut o["spec"]["ports"],
                            "alias" => &mut o["spec"]["aliases"],
                            _ => &mut o["metadata"]["finalizers"],
                        };
                        if slot.is_null() {
                            *slot = json!([]);
                        }
                        slot.as_array_mut().unwrap().push(v.clone());
                    }
                    _ => unreachable!("{id}"),
                }
            }
            o
        }

        /// Every owned leaf of an object of the test schema, with its value (`null` marks list
        /// items and set values, whose presence is what matters).
        fn flatten(o: &Value) -> BTreeMap<String, Value> {
            let mut out = BTreeMap::new();
            let spec = &o["spec"];
            for f in ["greeting", "replicas", "tags"] {
                if let Some(v) = spec.get(f) {
                    out.insert(f.to_string(), v.clone());
                }
            }
            if let Some(opts) = spec.get("opts").and_then(Value::as_object) {
                for (k, v) in opts {
                    out.insert(format!("opts.{k}"), v.clone());
                }
            }
            for item in spec.get("ports").and_then(Value::as_array).into_iter().flatten() {
                let port = &item["port"];
                out.insert(format!("ports[{port}]"), Value::Null);
                for (k, v) in item.as_object().unwrap() {
                    out.insert(format!("ports[{port}].{k}"), v.clone());
                }
            }
            for a in spec.get("aliases").and_then(Value::as_array).into_iter().flatten() {
                out.insert(format!("aliases[={a}]"), Value::Null);
            }
            if let Some(extra) = spec.get("extra").and_then(Value::as_object) {
                for (k, v) in extra {
                    match v.as_object() {
                        Some(inner) => {
                            for (ik, iv) in inner {
                                out.insert(format!("extra.{k}.{ik}"), iv.clone());
                            }
                        }
                        None => {
                            out.insert(format!("extra.{k}"), v.clone());
                        }
                    }
                }
            }
            let meta = &o["metadata"];
            if let Some(labels) = meta.get("labels").and_then(Value::as_object) {
                for (k, v) in labels {
                    out.insert(format!("labels.{k}"), v.clone());
                }
            }
            for f in meta.get("finalizers").and_then(Value::as_array).into_iter().flatten() {
                out.insert(format!("finalizers[={f}]"), Value::Null);
            }
            out
        }

        fn related(a: &str, b: &str) -> bool {
            a == b || a.starts_with(&format!("{b}.")) || b.starts_with(&format!("{a}."))
        }

        fn subset(units: &Units, mask: &[bool]) -> Units {
            units
                .iter()
                .enumerate()
                .filter(|(i, _)| mask.get(*i).copied().unwrap_or(false))
                .map(|(_, (k, v))| (k.clone(), v.clone()))
                .collect()
        }

        fn arbitrary_json() -> impl Strategy<Value = Value> {
            let key = prop_oneof![
                Just("spec"),
                Just("status"),
                Just("metadata"),
                Just("greeting"),
                Just("ports"),
                Just("port"),
                Just("name"),
                Just("aliases"),
                Just("extra"),
                Just("opts"),
                Just("a"),
                Just("labels"),
                Just("finalizers"),
                Just("ownerReferences"),
                Just("uid"),
                Just("conditions"),
                Just("type"),
                Just("managedFields"),
                Just("manager"),
                Just("fieldsV1"),
                Just("f:spec"),
                Just("f:greeting"),
                Just("k:{\"port\":1}"),
                Just("v:\"x\""),
                Just("."),
                Just("k:[]"),
                Just("selector"),
                Just("tags"),
            ];
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                (-2i64..3).prop_map(|i| json!(i)),
                Just(json!(1.5)),
                prop_oneof![Just("x"), Just("a.b/c"), Just(""), Just("Apply")].prop_map(|s| json!(s)),
            ];
            leaf.prop_recursive(5, 48, 6, move |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                    prop::collection::btree_map(key.clone(), inner, 0..6)
                        .prop_map(|m| { Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect()) }),
                ]
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// (a) Applying the same object twice gives the first result, also over other owners.
            #[test]
            fn reapply_is_idempotent(x1 in units(), y in units(), mask in prop::collection::vec(any::<bool>(), 40)) {
                let s = schema();
                let first = run(&s, None, &build(&x1), "a", false, T1).unwrap();
                prop_assert_eq!(&run(&s, Some(&first), &build(&x1), "a", false, T2).unwrap(), &first);
                let b = run(&s, Some(&first), &build(&y), "b", true, T2).unwrap();
                let x2 = build(&subset(&x1, &mask));
                let r = run(&s, Some(&b), &x2, "a", true, T3).unwrap();
                prop_assert_eq!(&run(&s, Some(&r), &x2, "a", false, "later").unwrap(), &r);
            }

            /// (b) Managers applying disjoint units keep all their values, in either order.
            #[test]
            fn disjoint_managers_keep_their_values(u in units(), mask in prop::collection::vec(any::<bool>(), 40)) {
                let s = schema();
                let inverse: Vec<bool> = mask.iter().map(|m| !m).collect();
                let (ua, ub) = (subset(&u, &mask), subset(&u, &inverse));
                let (xa, xb) = (build(&ua), build(&ub));
                for (first, second, m1, m2) in [(&xa, &xb, "a", "b"), (&xb, &xa, "b", "a")] {
                    let r1 = run(&s, None, first, m1, false, T1).unwrap();
                    let r2 = run(&s, Some(&r1), second, m2, false, T2).unwrap();
                    // Re-applying the first again must not disturb the second.
                    let r3 = run(&s, Some(&r2), first, m1, false, T3).unwrap();
                    let got = flatten(&r3);
                    for (p, v) in flatten(&xa).into_iter().chain(flatten(&xb)) {
                        prop_assert_eq!(got.get(&p), Some(&v), "{} missing in {}", p, r3);
                    }
                }
            }

            /// (c) A dropped field disappears unless another manager still owns it.
            #[test]
            fn dropped_fields_disappear_unless_owned(x1 in units(), y in units(), mask in prop::collection::vec(any::<bool>(), 40)) {
                let s = schema();
                let x2 = subset(&x1, &mask);
                let (l1, l2, ly) = (flatten(&build(&x1)), flatten(&build(&x2)), flatten(&build(&y)));
                let a = run(&s, None, &build(&x1), "a", false, T1).unwrap();
                let b = run(&s, Some(&a), &build(&y), "b", true, T2).unwrap();
                let r = run(&s, Some(&b), &build(&x2), "a", true, T3).unwrap();
                let got = flatten(&r);
                for (p, v) in &l2 {
                    prop_assert_eq!(got.get(p), Some(v), "{} lost in {}", p, r);
                }
                for p in l1.keys().filter(|p| !l2.contains_key(*p)) {
                    match ly.get(p) {
                        Some(v) => prop_assert_eq!(got.get(p), Some(v), "{} lost in {}", p, r),
                        None => prop_assert!(!got.contains_key(p), "{} kept in {}", p, r),
                    }
                }
                for (p, v) in ly.iter().filter(|(p, _)| !l1.contains_key(*p)) {
                    if l2.keys().any(|q| related(p, q)) {
                        continue;
                    }
                    prop_assert_eq!(got.get(p), Some(v), "{} lost in {}", p, r);
                }
            }

            /// (d) Arbitrary JSON never panics, as applied value, live object or managedFields.
            #[test]
            fn never_panics(
                applied in arbitrary_json(),
                live in arbitrary_json(),
                mf in arbitrary_json(),
                force in any::<bool>(),
                x in units(),
                wild in prop::collection::btree_map(
                    prop_oneof![
                        Just("greeting"), Just("replicas"), Just("tags"), Just("ports"),
                        Just("aliases"), Just("extra"), Just("opts"), Just("selector"),
                    ],
                    arbitrary_json(),
                    0..4,
                ),
            ) {
                let s = schema();
                let _ = run(&s, None, &applied, "a", force, T1);
                let mut wrapped = build(&x);
                if let Value::Object(m) = &applied {
                    for (k, v) in m {
                        wrapped["spec"][k.as_str()] = v.clone();
                    }
                }
                // Whatever is accepted is idempotent, odd values included.
                if let Ok(r) = run(&s, None, &wrapped, "a", force, T1) {
                    prop_assert_eq!(&run(&s, Some(&r), &wrapped, "a", false, T2).unwrap(), &r);
                }
                let _ = run(&s, Some(&live), &applied, "a", force, T1);
                // Declared fields with values of any shape: mismatches become atomic leaves.
                let mut typed = build(&x);
                for (k, v) in &wild {
                    typed["spec"][*k] = v.clone();
                }
                if let Ok(r) = run(&s, None, &typed, "a", force, T1) {
                    prop_assert_eq!(&run(&s, Some(&r), &typed, "a", false, T2).unwrap(), &r);
                    let r2 = run(&s, Some(&r), &build(&x), "a", false, T2);
                    if let Ok(r2) = r2 {
                        prop_assert_eq!(&run(&s, Some(&r2), &build(&x), "a", false, T3).unwrap(), &r2);
                    }
                }
                let mut base = run(&s, None, &build(&x), "b", false, T1).unwrap();
                if let Ok(r) = run(&s, Some(&base), &typed, "a", true, T2) {
                    prop_assert_eq!(&run(&s, Some(&r), &typed, "a", false, T3).unwrap(), &r);
                }
                let _ = run(&s, Some(&base), &applied, "a", force, T2);
                if let Ok(r) = run(&s, Some(&base), &wrapped, "a", true, T2) {
                    prop_assert_eq!(&run(&s, Some(&r), &wrapped, "a", false, T3).unwrap(), &r);
                }
                base["metadata"]["managedFields"] = mf.clone();
                let _ = run(&s, Some(&base), &build(&x), "a", force, T2);
                let _ = managed_paths(&base, "b");
                base["metadata"]["managedFields"] = json!([{"manager": "b", "fieldsV1": mf}]);
                let _ = run(&s, Some(&base), &build(&x), "b", force, T2);
                let _ = run(&s, Some(&base), &wrapped, "c", force, T2);
                let _ = managed_paths(&base, "b");
            }
        }
    }
}

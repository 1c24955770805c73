//! `metadata.managedFields` entries: parsing them out of the live object (with the no-op fast
//! path that leaves an unchanged entry of the applying manager undecoded), folding duplicates of
//! one manager and operation into one, and encoding them back with unknown keys preserved.
//!
//! Invariant: reads and writes entries only; never looks at or changes the object's other
//! fields.

use serde_json::{Map, Value};

use crate::api::schema::json_type_name;

use super::fieldset::FieldSet;
use super::{ApplyError, APPLY_OPERATION};

pub(super) struct Entry<'a> {
    pub(super) manager: String,
    pub(super) operation: String,
    /// The entry as stored, so unknown keys (e.g. `subresource`) survive; `None` for a new entry.
    pub(super) raw: Option<&'a Map<String, Value>>,
    pub(super) set: FieldSet,
    /// The stored fieldsV1 is exactly the encoding of the applying manager's new set, so it was
    /// not decoded and `set` is left empty: the no-op fast path.
    pub(super) same_as_new: bool,
    /// The set changed in this apply; the entry is re-encoded with a new time.
    pub(super) changed: bool,
    /// Overrides the stored apiVersion when re-encoded.
    pub(super) api_version: Option<String>,
}

impl Entry<'_> {
    pub(super) fn into_json(self, now: &str) -> Value {
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
pub(super) fn parse_entries<'a>(obj: &'a Value, own: Option<(&str, &FieldSet)>) -> Result<Vec<Entry<'a>>, ApplyError> {
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
pub(super) fn take_entry<'a>(entries: &mut Vec<Entry<'a>>, manager: &str, operation: &str) -> Option<Entry<'a>> {
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

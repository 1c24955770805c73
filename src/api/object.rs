//! Identities and accessors for dynamic KRM objects.
//!
//! Objects are `serde_json::Value` maps everywhere in choreo: the schema comes from CRDs at run
//! time, so there is no Rust struct per kind. This module gives them names ([`GroupKind`],
//! [`ObjectKey`] with the one canonical `Display` used in every log line and error) and small
//! read helpers for the metadata fields the store and the engine care about.

use std::fmt;

use serde_json::{Map, Value};

/// The annotation that records where an object came from (`{"kind":"File"}` for project files).
pub(crate) const ORIGIN_ANNOTATION: &str = "api.choreo.kform.dev/origin";
/// The origin value of objects loaded from the project's own files.
pub(crate) const ORIGIN_FILE: &str = r#"{"kind":"File"}"#;
/// The field manager of everything loaded from project files.
pub(crate) const INPUT_FIELD_MANAGER: &str = "inputfileloader";

/// An API group and kind, the identity of a registered API.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupKind {
    pub group: String,
    pub kind: String,
}

impl GroupKind {
    pub(crate) fn new(group: impl Into<String>, kind: impl Into<String>) -> Self {
        GroupKind { group: group.into(), kind: kind.into() }
    }
}

impl fmt::Display for GroupKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.group.is_empty() {
            write!(f, "{}", self.kind)
        } else {
            write!(f, "{}.{}", self.kind, self.group)
        }
    }
}

/// The identity of one stored object: group, kind, namespace (empty when cluster-scoped), name.
///
/// Ordering is by group, kind, namespace, name, which is also the order of every listing.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub group: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub(crate) fn new(gk: &GroupKind, namespace: &str, name: &str) -> Self {
        ObjectKey {
            group: gk.group.clone(),
            kind: gk.kind.clone(),
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }

    pub(crate) fn group_kind(&self) -> GroupKind {
        GroupKind::new(self.group.clone(), self.kind.clone())
    }

    /// The key as bytes for sled: the four parts joined by NUL, which no part may contain.
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(self.group.len() + self.kind.len() + self.namespace.len() + self.name.len() + 3);
        for (i, part) in [&self.group, &self.kind, &self.namespace, &self.name].iter().enumerate() {
            if i > 0 {
                out.push(0);
            }
            out.extend_from_slice(part.as_bytes());
        }
        out
    }

    pub(crate) fn from_bytes(bytes: &[u8]) -> Option<ObjectKey> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut parts = text.split('\0');
        let key = ObjectKey {
            group: parts.next()?.to_string(),
            kind: parts.next()?.to_string(),
            namespace: parts.next()?.to_string(),
            name: parts.next()?.to_string(),
        };
        parts.next().is_none().then_some(key)
    }

    /// The key of an object value, if it has apiVersion, kind and metadata.name.
    pub(crate) fn of(obj: &Value) -> Option<ObjectKey> {
        let (group, _) = split_api_version(obj.get("apiVersion")?.as_str()?);
        Some(ObjectKey {
            group: group.to_string(),
            kind: obj.get("kind")?.as_str()?.to_string(),
            namespace: namespace(obj).to_string(),
            name: name(obj)?.to_string(),
        })
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.group.is_empty() {
            write!(f, "{}", self.kind)?;
        } else {
            write!(f, "{}.{}", self.kind, self.group)?;
        }
        if self.namespace.is_empty() {
            write!(f, " {}", self.name)
        } else {
            write!(f, " {}/{}", self.namespace, self.name)
        }
    }
}

/// Splits `group/version` into its parts; a bare `v1` is the core group.
pub(crate) fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.rsplit_once('/') {
        Some((group, version)) => (group, version),
        None => ("", api_version),
    }
}

pub(crate) fn api_version(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    }
}

pub(crate) fn metadata(obj: &Value) -> Option<&Map<String, Value>> {
    obj.get("metadata")?.as_object()
}

pub(crate) fn metadata_mut(obj: &mut Value) -> Option<&mut Map<String, Value>> {
    let map = obj.as_object_mut()?;
    let meta = map.entry("metadata").or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    meta.as_object_mut()
}

/// The deepest nesting an object may have: well under the 128 levels serde_json parses back,
/// leaving room for the `managedFields` that mirror the object's structure.
pub(crate) const MAX_DEPTH: usize = 120;

/// How deeply `v` nests (a scalar is 0, `{}` and `[]` are 1), without recursion.
pub(crate) fn depth(v: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(v, 0usize)];
    while let Some((v, d)) = stack.pop() {
        match v {
            Value::Array(items) => stack.extend(items.iter().map(|c| (c, d + 1))),
            Value::Object(map) => stack.extend(map.values().map(|c| (c, d + 1))),
            _ => continue,
        }
        deepest = deepest.max(d + 1);
    }
    deepest
}

pub(crate) fn name(obj: &Value) -> Option<&str> {
    metadata(obj)?.get("name")?.as_str()
}

pub(crate) fn namespace(obj: &Value) -> &str {
    metadata(obj).and_then(|m| m.get("namespace")).and_then(Value::as_str).unwrap_or("")
}

pub(crate) fn uid(obj: &Value) -> Option<&str> {
    metadata(obj)?.get("uid")?.as_str()
}

pub(crate) fn annotation<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    metadata(obj)?.get("annotations")?.get(key)?.as_str()
}

pub(crate) fn label<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    metadata(obj)?.get("labels")?.get(key)?.as_str()
}

/// How long before `now` an RFC 3339 time was, as kubectl shortens it (`90s`, `5m`, `3h`, `2d`).
pub fn age(time: Option<&str>, now: chrono::DateTime<chrono::Utc>) -> String {
    let Some(time) = time.and_then(|c| chrono::DateTime::parse_from_rfc3339(c).ok()) else {
        return "<unknown>".into();
    };
    let secs = (now - time.with_timezone(&chrono::Utc)).num_seconds().max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

pub(crate) fn finalizers(obj: &Value) -> Vec<&str> {
    metadata(obj)
        .and_then(|m| m.get("finalizers"))
        .and_then(Value::as_array)
        .map(|list| list.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

pub(crate) fn deletion_timestamp(obj: &Value) -> Option<&str> {
    metadata(obj)?.get("deletionTimestamp")?.as_str()
}

/// Whether the manager has an entry in `metadata.managedFields`.
pub(crate) fn has_manager(obj: &Value, manager: &str) -> bool {
    metadata(obj)
        .and_then(|m| m.get("managedFields"))
        .and_then(Value::as_array)
        .is_some_and(|list| list.iter().any(|e| e.get("manager").and_then(Value::as_str) == Some(manager)))
}

/// One `metadata.ownerReferences` entry, resolved to the owner's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerRef {
    pub group: String,
    pub kind: String,
    pub name: String,
    pub uid: String,
    pub controller: bool,
}

pub(crate) fn owner_references(obj: &Value) -> Vec<OwnerRef> {
    let Some(list) = metadata(obj).and_then(|m| m.get("ownerReferences")).and_then(Value::as_array) else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|r| {
            let (group, _) = split_api_version(r.get("apiVersion")?.as_str()?);
            Some(OwnerRef {
                group: group.to_string(),
                kind: r.get("kind")?.as_str()?.to_string(),
                name: r.get("name")?.as_str()?.to_string(),
                uid: r.get("uid").and_then(Value::as_str).unwrap_or("").to_string(),
                controller: r.get("controller").and_then(Value::as_bool).unwrap_or(false),
            })
        })
        .collect()
}

/// The status of the condition of the given type, if the object has one.
pub(crate) fn condition_status<'a>(obj: &'a Value, ctype: &str) -> Option<&'a str> {
    obj.get("status")?
        .get("conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(ctype))?
        .get("status")?
        .as_str()
}

/// Renders an object as YAML (sorted keys, numbers as plain YAML numbers).
///
/// serde_json's `arbitrary_precision` feature is switched on for the whole build by the
/// `starlark` crate, and with it a `Value` number serializes as a private one-key map that YAML
/// would print verbatim; this wrapper serializes numbers as numbers instead.
pub(crate) fn to_yaml(v: &Value) -> Result<String, serde_yaml_ng::Error> {
    serde_yaml_ng::to_string(&PlainNumbers(v))
}

/// A YAML error's message without the " at line L column C" serde_yaml_ng appends: callers
/// print the location in front already.
pub(crate) fn yaml_message(e: &serde_yaml_ng::Error) -> String {
    let text = e.to_string();
    match text.find(" at line ") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

struct PlainNumbers<'a>(&'a Value);

impl serde::Serialize for PlainNumbers<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    s.serialize_i64(i)
                } else if let Some(u) = n.as_u64() {
                    s.serialize_u64(u)
                } else if let Some(f) = n.as_f64() {
                    s.serialize_f64(f)
                } else {
                    s.serialize_str(&n.to_string())
                }
            }
            Value::Array(a) => s.collect_seq(a.iter().map(PlainNumbers)),
            Value::Object(m) => s.collect_map(m.iter().map(|(k, v)| (k, PlainNumbers(v)))),
            other => other.serialize(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn yaml_numbers_stay_numbers() {
        let v = json!({"a": 1, "b": -2, "c": 1.5, "d": [3], "e": "4"});
        let text = to_yaml(&v).unwrap();
        assert_eq!(text, "a: 1\nb: -2\nc: 1.5\nd:\n- 3\ne: '4'\n");
        let back: Value = serde_yaml_ng::from_str(&text).unwrap();
        assert_eq!(back, v);
    }

    #[test]
    fn key_round_trips_through_bytes_and_displays_canonically() {
        let obj = json!({"apiVersion": "example.com/v1alpha1", "kind": "HelloWorld",
                         "metadata": {"name": "test", "namespace": "default"}});
        let key = ObjectKey::of(&obj).unwrap();
        assert_eq!(ObjectKey::from_bytes(&key.to_bytes()), Some(key.clone()));
        assert_eq!(key.to_string(), "HelloWorld.example.com default/test");
        let core = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}});
        assert_eq!(ObjectKey::of(&core).unwrap().to_string(), "ConfigMap c");
    }

    #[test]
    fn owner_references_resolve_group() {
        let obj = json!({"metadata": {"ownerReferences": [
            {"apiVersion": "example.com/v1alpha1", "kind": "HelloWorld", "name": "a", "uid": "u1", "controller": true}
        ]}});
        let refs = owner_references(&obj);
        assert_eq!(refs[0].group, "example.com");
        assert!(refs[0].controller);
    }

    #[test]
    fn depth_counts_collections() {
        use serde_json::json;
        assert_eq!(depth(&json!(1)), 0);
        assert_eq!(depth(&json!({})), 1);
        assert_eq!(depth(&json!({"a": [1, {"b": []}]})), 4);
        let mut deep = json!(0);
        for _ in 0..1000 {
            deep = json!([deep]);
        }
        assert_eq!(depth(&deep), 1000);
    }
}

//! Object metadata rules that hold for every kind, whatever its schema says.
//!
//! CRD schemas only say `metadata: {type: object}`; the API server checks the rest itself:
//! names, namespaces, label and annotation maps, finalizers and owner references. Messages use
//! the Kubernetes field-error style (`metadata.name: Invalid value: "A": …`).

use serde_json::{Map, Value};

/// Fields of `metadata` the server owns: a client's values are ignored on write.
pub(crate) const SYSTEM_FIELDS: &[&str] = &[
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
];

/// Removes server-owned metadata from a client's object (a stale `creationTimestamp: null` from a
/// compiled file, or a copied `uid`, must not leak into the stored object).
pub(crate) fn strip_system_fields(obj: &mut Value) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        for f in SYSTEM_FIELDS {
            meta.remove(*f);
        }
    }
}

/// Whether [`strip_system_fields`] or [`default_namespace`] would change `obj`.
pub(crate) fn needs_normalizing(obj: &Value, namespaced: bool) -> bool {
    let Some(meta) = obj.get("metadata").and_then(Value::as_object) else {
        return false;
    };
    SYSTEM_FIELDS.iter().any(|f| meta.contains_key(*f))
        || (namespaced && meta.get("namespace").and_then(Value::as_str).is_none_or(str::is_empty))
}

/// Fills in `metadata.namespace` for namespaced kinds (`default` when absent), as kubectl does.
pub(crate) fn default_namespace(obj: &mut Value, namespaced: bool) {
    if !namespaced {
        return;
    }
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        let empty = meta.get("namespace").and_then(Value::as_str).is_none_or(str::is_empty);
        if empty {
            meta.insert("namespace".into(), Value::String("default".into()));
        }
    }
}

/// Checks the metadata of an object about to be stored. Returns Kubernetes-style messages.
pub(crate) fn validate_metadata(obj: &Value, namespaced: bool) -> Vec<String> {
    let mut errs = Vec::new();
    let Some(meta) = obj.get("metadata").and_then(Value::as_object) else {
        errs.push("metadata: Required value".to_string());
        return errs;
    };
    match meta.get("name") {
        Some(Value::String(n)) if !n.is_empty() => {
            if let Some(why) = dns1123_subdomain(n) {
                errs.push(format!("metadata.name: Invalid value: {n:?}: {why}"));
            }
        }
        Some(Value::String(_)) | None | Some(Value::Null) => {
            errs.push("metadata.name: Required value: name is required".to_string())
        }
        Some(other) => errs.push(format!("metadata.name: Invalid value: {other}: must be a string")),
    }
    let ns = meta.get("namespace");
    match (namespaced, ns) {
        (true, Some(Value::String(n))) if !n.is_empty() => {
            if let Some(why) = dns1123_label(n) {
                errs.push(format!("metadata.namespace: Invalid value: {n:?}: {why}"));
            }
        }
        (true, _) => errs.push("metadata.namespace: Required value".to_string()),
        (false, None) | (false, Some(Value::Null)) => {}
        (false, Some(Value::String(n))) if n.is_empty() => {}
        (false, Some(_)) => errs
            .push("metadata.namespace: Forbidden: not allowed on this type (the kind is cluster-scoped)".to_string()),
    }
    for field in ["labels", "annotations"] {
        match meta.get(field) {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) => {
                for (k, v) in m {
                    if !v.is_string() {
                        errs.push(format!("metadata.{field}[{k}]: Invalid value: {v}: must be a string"));
                    }
                    if k.is_empty() {
                        errs.push(format!("metadata.{field}: Invalid value: \"\": keys must not be empty"));
                    }
                }
            }
            Some(other) => errs.push(format!("metadata.{field}: Invalid value: {other}: must be a map of strings")),
        }
    }
    match meta.get("finalizers") {
        None | Some(Value::Null) => {}
        Some(Value::Array(list)) => {
            for (i, f) in list.iter().enumerate() {
                match f.as_str() {
                    Some(s) if !s.is_empty() => {
                        if list[..i].iter().any(|p| p.as_str() == Some(s)) {
                            errs.push(format!("metadata.finalizers[{i}]: Duplicate value: {s:?}"));
                        }
                    }
                    _ => errs.push(format!("metadata.finalizers[{i}]: Invalid value: {f}: must be a non-empty string")),
                }
            }
        }
        Some(other) => errs.push(format!("metadata.finalizers: Invalid value: {other}: must be a list of strings")),
    }
    match meta.get("ownerReferences") {
        None | Some(Value::Null) => {}
        Some(Value::Array(list)) => {
            let mut controllers = 0;
            for (i, r) in list.iter().enumerate() {
                let Some(r) = r.as_object() else {
                    errs.push(format!("metadata.ownerReferences[{i}]: Invalid value: must be an object"));
                    continue;
                };
                for req in ["apiVersion", "kind", "name", "uid"] {
                    if r.get(req).and_then(Value::as_str).is_none_or(str::is_empty) {
                        errs.push(format!("metadata.ownerReferences[{i}].{req}: Required value"));
                    }
                }
                if r.get("controller").and_then(Value::as_bool) == Some(true) {
                    controllers += 1;
                }
            }
            if controllers > 1 {
                errs.push(
                    "metadata.ownerReferences: Invalid value: only one reference can have controller set to true"
                        .to_string(),
                );
            }
        }
        Some(other) => errs.push(format!("metadata.ownerReferences: Invalid value: {other}: must be a list")),
    }
    errs
}

/// Why `s` is not a DNS-1123 subdomain (lowercase alphanumerics, `-` and `.`, at most 253
/// characters, alphanumeric at both ends), or `None` if it is one.
pub(crate) fn dns1123_subdomain(s: &str) -> Option<String> {
    if s.len() > 253 {
        return Some("must be no more than 253 characters".into());
    }
    let ok = s.split('.').all(|part| {
        !part.is_empty()
            && part.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !part.starts_with('-')
            && !part.ends_with('-')
    });
    (!ok).then(|| {
        "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com')".to_string()
    })
}

/// Why `s` is not a DNS-1123 label, or `None` if it is one.
pub(crate) fn dns1123_label(s: &str) -> Option<String> {
    if s.len() > 63 {
        return Some("must be no more than 63 characters".into());
    }
    let ok = !s.is_empty()
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    (!ok).then(|| {
        "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name')".to_string()
    })
}

/// Sets or replaces one annotation.
pub(crate) fn set_annotation(obj: &mut Value, key: &str, value: &str) {
    if let Some(meta) = super::object::metadata_mut(obj) {
        let ann = meta.entry("annotations").or_insert_with(|| Value::Object(Map::new()));
        if !ann.is_object() {
            *ann = Value::Object(Map::new());
        }
        if let Some(ann) = ann.as_object_mut() {
            ann.insert(key.to_string(), Value::String(value.to_string()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_and_namespaces() {
        assert!(dns1123_subdomain("kubenet.region1.us-east.node1").is_none());
        assert!(dns1123_subdomain("Bad_Name").is_some());
        assert!(dns1123_label("default").is_none());
        assert!(dns1123_label("a.b").is_some());
        let obj = json!({"metadata": {"name": "x", "namespace": "default"}});
        assert!(validate_metadata(&obj, true).is_empty());
        let errs = validate_metadata(&obj, false);
        assert!(errs[0].starts_with("metadata.namespace: Forbidden"), "{errs:?}");
        let errs = validate_metadata(&json!({"metadata": {"name": "A"}}), true);
        assert_eq!(errs.len(), 2, "{errs:?}");
    }

    #[test]
    fn strips_system_fields_and_defaults_namespace() {
        let mut obj = json!({"metadata": {"name": "x", "uid": "u", "creationTimestamp": null}});
        strip_system_fields(&mut obj);
        default_namespace(&mut obj, true);
        assert_eq!(obj, json!({"metadata": {"name": "x", "namespace": "default"}}));
    }

    #[test]
    fn needs_normalizing_tells_when_stripping_or_defaulting_changes_something() {
        let cases = [
            json!({"metadata": {"name": "x", "namespace": "ns"}}),
            json!({"metadata": {"name": "x"}}),
            json!({"metadata": {"name": "x", "namespace": ""}}),
            json!({"metadata": {"name": "x", "namespace": 3}}),
            json!({"metadata": {"name": "x", "namespace": "ns", "managedFields": []}}),
            json!({"metadata": {"name": "x", "namespace": "ns", "creationTimestamp": null}}),
            json!({"metadata": "x"}),
            json!({"spec": {}}),
        ];
        for obj in cases {
            for namespaced in [true, false] {
                let mut normalized = obj.clone();
                strip_system_fields(&mut normalized);
                default_namespace(&mut normalized, namespaced);
                assert_eq!(needs_normalizing(&obj, namespaced), normalized != obj, "{obj} namespaced={namespaced}");
            }
        }
    }

    #[test]
    fn finalizer_and_owner_reference_checks() {
        let obj = json!({"metadata": {"name": "x", "finalizers": ["a", "a"],
            "ownerReferences": [{"apiVersion": "v1", "kind": "K", "name": "n"}]}});
        let errs = validate_metadata(&obj, false);
        assert!(errs.iter().any(|e| e.contains("Duplicate")), "{errs:?}");
        assert!(errs.iter().any(|e| e.contains("ownerReferences[0].uid")), "{errs:?}");
    }
}

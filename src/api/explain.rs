//! `choreo explain RESOURCE[.field.path]`: a field's documentation from the CRD's structural
//! schema, as `kubectl explain` prints it: type, description, and the fields below with their
//! types, `-required-` marks, enums and defaults.
//!
//! Architecture invariant: a pure function of an API's schema.

use std::fmt::Write as _;

use super::crd::ApiResource;
use super::schema::{AdditionalProperties, Schema, SchemaType};

fn type_name(s: &Schema) -> String {
    if s.int_or_string {
        return "IntOrString".into();
    }
    match s.type_ {
        Some(SchemaType::Array) => match &s.items {
            Some(i) => format!("[]{}", type_name(i)),
            None => "[]Object".into(),
        },
        Some(SchemaType::Object) => match &s.additional_properties {
            Some(AdditionalProperties::Schema(v)) => format!("map[string]{}", type_name(v)),
            _ => "Object".into(),
        },
        Some(t) => t.as_str().to_string(),
        None if s.preserve_unknown_fields => "Object".into(),
        None => "<any>".into(),
    }
}

/// Where fields of `s` live: an array's items, a map's values, or the object itself.
fn fields_of(s: &Schema) -> &Schema {
    match (&s.items, &s.additional_properties) {
        (Some(i), _) => fields_of(i),
        (None, Some(AdditionalProperties::Schema(v))) if s.properties.is_empty() => fields_of(v),
        _ => s,
    }
}

fn indent(text: &str, by: usize) -> String {
    text.lines().map(|l| format!("{}{}\n", " ".repeat(by), l.trim_end())).collect()
}

/// The explanation of `path` (field names below the object root; empty: the kind).
pub fn explain(res: &ApiResource, path: &[&str]) -> Result<String, String> {
    let schema = res.schema.as_deref().ok_or_else(|| format!("{} declares no schema", res.full_name()))?;
    let mut node = schema;
    let mut walked = Vec::new();
    for name in path {
        let parent = fields_of(node);
        node = parent.properties.get(*name).ok_or_else(|| {
            let at = if walked.is_empty() { res.kind.clone() } else { format!("{}.{}", res.kind, walked.join(".")) };
            let known: Vec<&str> = parent.properties.keys().map(String::as_str).collect();
            format!(
                "field {name:?} does not exist in {at} (its fields: {})",
                if known.is_empty() { "none".into() } else { known.join(", ") }
            )
        })?;
        walked.push(*name);
    }
    let mut out = String::new();
    let _ = writeln!(out, "GROUP:      {}", res.group);
    let _ = writeln!(out, "KIND:       {}", res.kind);
    let _ = writeln!(out, "VERSION:    {}\n", res.version);
    if walked.is_empty() {
        let _ = writeln!(out, "DESCRIPTION:");
    } else {
        let _ = writeln!(out, "FIELD: {} <{}>\n", walked.last().copied().unwrap_or_default(), type_name(node));
        let _ = writeln!(out, "DESCRIPTION:");
    }
    out.push_str(&indent(node.description.as_deref().unwrap_or("<empty>"), 4));
    describe_constraints(&mut out, node, 4);
    let fields = fields_of(node);
    if !fields.properties.is_empty() {
        let _ = writeln!(out, "\nFIELDS:");
        for (name, f) in &fields.properties {
            let required = if fields.required.iter().any(|r| r == name) { " -required-" } else { "" };
            let _ = writeln!(out, "  {name}\t<{}>{required}", type_name(f));
            if let Some(d) = &f.description {
                out.push_str(&indent(d, 4));
            }
            describe_constraints(&mut out, f, 4);
            out.push('\n');
        }
    }
    Ok(out)
}

fn describe_constraints(out: &mut String, s: &Schema, by: usize) {
    let pad = " ".repeat(by);
    if let Some(values) = &s.enum_values {
        let list: Vec<String> =
            values.iter().map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string)).collect();
        let _ = writeln!(out, "{pad}enum: {}", list.join(", "));
    }
    if let Some(d) = &s.default {
        let _ = writeln!(out, "{pad}default: {d}");
    }
    if let Some(f) = &s.format {
        let _ = writeln!(out, "{pad}format: {f}");
    }
    if let Some(p) = &s.pattern {
        let _ = writeln!(out, "{pad}pattern: {p}");
    }
    match (s.minimum, s.maximum) {
        (Some(a), Some(b)) => {
            let _ = writeln!(out, "{pad}range: {a} to {b}");
        }
        (Some(a), None) => {
            let _ = writeln!(out, "{pad}minimum: {a}");
        }
        (None, Some(b)) => {
            let _ = writeln!(out, "{pad}maximum: {b}");
        }
        (None, None) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn device() -> ApiResource {
        ApiResource::from_crd(&json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "devices.net.example.org"},
            "spec": {"group": "net.example.org", "names": {"kind": "Device", "plural": "devices"}, "scope": "Namespaced",
                "versions": [{"name": "v1alpha1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {
                    "type": "object", "description": "A network device.",
                    "properties": {"spec": {"type": "object", "required": ["role"], "properties": {
                        "role": {"type": "string", "enum": ["leaf", "spine"], "description": "What it does."},
                        "asn": {"type": "integer", "minimum": 1, "maximum": 4294967295_u64},
                        "interfaces": {"type": "array", "items": {"type": "object", "properties": {
                            "name": {"type": "string", "description": "ethernet-1/1"},
                            "mtu": {"type": "integer", "default": 9000}}}}
                    }}}}}}]}
        }))
        .unwrap()
    }

    #[test]
    fn fields_with_types_requirements_enums_and_defaults() {
        let d = device();
        let top = explain(&d, &[]).unwrap();
        assert!(top.starts_with("GROUP:      net.example.org\nKIND:       Device\nVERSION:    v1alpha1\n"), "{top}");
        assert!(top.contains("A network device.") && top.contains("  spec\t<Object>"), "{top}");
        let spec = explain(&d, &["spec"]).unwrap();
        assert!(spec.contains("  role\t<string> -required-\n    What it does.\n    enum: leaf, spine\n"), "{spec}");
        assert!(spec.contains("  asn\t<integer>\n    range: 1 to 4294967295\n"), "{spec}");
        assert!(spec.contains("  interfaces\t<[]Object>"), "{spec}");
        let mtu = explain(&d, &["spec", "interfaces", "mtu"]).unwrap();
        assert!(mtu.contains("FIELD: mtu <integer>") && mtu.contains("default: 9000"), "{mtu}");
        let e = explain(&d, &["spec", "colour"]).unwrap_err();
        assert!(e.contains("\"colour\" does not exist in Device.spec") && e.contains("asn, interfaces, role"), "{e}");
    }
}

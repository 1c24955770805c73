//! Typing of positions in the object for merging: which schema (or built-in metadata type)
//! governs a field, and what shape a value takes there (leaf, granular map, list-map, set); plus
//! the canonical compact JSON that list-map item keys and set values are identified by.
//!
//! Invariant: pure functions of the schema and the value; knows nothing of field sets or
//! managers.

use std::collections::HashSet;
use std::fmt::Write as _;

use serde_json::{Map, Value};

use crate::api::schema::{ListType, MapType, Schema, SchemaType};

use super::{LINEAR_MAX, META_SYSTEM_FIELDS, OWNER_REFERENCE_KEYS};

/// How a position in the object is typed for merging.
#[derive(Clone, Copy)]
pub(super) enum Ty<'s> {
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

pub(super) enum Child<'s> {
    Typed(Ty<'s>),
    /// Never tracked (system fields).
    Ignored,
    Undeclared,
}

pub(super) enum Shape<'v, 's> {
    Leaf,
    Map(&'v Map<String, Value>),
    ListMap { items: &'v [Value], names: &'s [String], item: Ty<'s> },
    Set(&'v [Value]),
}

pub(super) fn child_ty<'s>(ty: Ty<'s>, key: &str) -> Child<'s> {
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

pub(super) fn schema_child<'s>(s: &'s Schema, key: &str) -> Child<'s> {
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
pub(super) fn is_object_schema(s: &Schema) -> bool {
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

pub(super) fn shape<'v, 's>(ty: Ty<'s>, v: &'v Value) -> Shape<'v, 's> {
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
pub(super) fn list_item_keys(items: &[Value], names: &[String]) -> Option<Vec<String>> {
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
pub(super) fn item_key(item: &Value, names: &[&str]) -> Option<String> {
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
pub(super) fn encode_json(v: &Value, out: &mut String) {
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

pub(super) fn canonical_value(v: &Value) -> String {
    let mut s = String::new();
    encode_json(v, &mut s);
    s
}

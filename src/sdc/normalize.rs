//! Device configuration as users write it, turned into the JSON libyang reads (RFC 7951).
//!
//! Configs and running configs come in the lenient form sdcio accepts: member names without
//! their module (`interfaces`, `ipv4` where RFC 7951 wants `ietf-interfaces:interfaces` and
//! `ietf-ip:ipv4`), numbers as strings or strings as numbers, a list given as one object. The
//! walk here follows the schema beside the JSON: every member is found by its local name among
//! the schema children (choices and cases are transparent), qualified where its module differs
//! from its parent's, and every scalar is coerced to the JSON form its YANG type has in RFC 7951
//! (64-bit numbers and decimals as strings, smaller integers as numbers, booleans as booleans,
//! `empty` as `[null]`). What cannot be placed is reported with its path, all at once.
//!
//! Architecture invariant: a pure function of schema and JSON; no files, no store.

use serde_json::{Map, Value};
use yang3::context::Context;
use yang3::iter::IterSchemaFlags;
use yang3::schema::{DataValueType, SchemaLeafType, SchemaNode, SchemaNodeKind};

/// A member or value that does not fit the schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Misfit {
    /// Where, as a data path (`/interfaces/interface[0]/mtu`).
    pub path: String,
    pub message: String,
}

/// `value` (an object of top-level members) in RFC 7951 form for `ctx`'s implemented modules.
pub fn normalize(ctx: &Context, value: &Value) -> Result<Value, Vec<Misfit>> {
    let mut misfits = Vec::new();
    let out = match value {
        Value::Object(members) => {
            let tops: Vec<SchemaNode<'_>> = ctx
                .modules(true)
                .filter(|m| m.is_implemented())
                .flat_map(|m| m.top_level_nodes(IterSchemaFlags::empty()).collect::<Vec<_>>())
                .collect();
            place(&tops, None, members, "", &mut misfits)
        }
        Value::Null => Value::Object(Map::new()),
        _ => {
            misfits.push(Misfit { path: "/".into(), message: "a configuration must be an object".into() });
            Value::Null
        }
    };
    if misfits.is_empty() {
        Ok(out)
    } else {
        Err(misfits)
    }
}

fn split(name: &str) -> (Option<&str>, &str) {
    match name.split_once(':') {
        Some((m, l)) => (Some(m), l),
        None => (None, name),
    }
}

fn find<'a>(candidates: &[SchemaNode<'a>], module: Option<&str>, local: &str) -> Option<SchemaNode<'a>> {
    let mut named = candidates.iter().filter(|n| n.name() == local);
    match module {
        Some(m) => named.find(|n| n.module().name() == m).cloned(),
        // An unqualified name: the first module that has it (libyang's own order, which is
        // the order modules were loaded: sorted by file).
        None => named.next().cloned(),
    }
}

fn unknown(path: &str, local: &str) -> Misfit {
    Misfit { path: path.to_string(), message: format!("no schema node \"{local}\" here") }
}

fn children<'a>(node: &SchemaNode<'a>) -> Vec<SchemaNode<'a>> {
    node.children2(IterSchemaFlags::empty()).collect()
}

fn walk(node: &SchemaNode<'_>, value: &Value, path: &str, misfits: &mut Vec<Misfit>) -> Value {
    match node.kind() {
        SchemaNodeKind::Container => match value {
            Value::Object(m) => members(node, m, path, misfits),
            Value::Null => Value::Object(Map::new()),
            _ => {
                misfits.push(Misfit { path: path.into(), message: "a container needs an object".into() });
                Value::Null
            }
        },
        SchemaNodeKind::List => {
            let entries: Vec<&Value> = match value {
                Value::Array(a) => a.iter().collect(),
                Value::Object(_) => vec![value],
                _ => {
                    misfits.push(Misfit { path: path.into(), message: "a list needs an array of objects".into() });
                    return Value::Null;
                }
            };
            let mut out = Vec::with_capacity(entries.len());
            for (i, e) in entries.into_iter().enumerate() {
                let p = format!("{path}[{i}]");
                match e {
                    Value::Object(m) => out.push(members(node, m, &p, misfits)),
                    _ => misfits.push(Misfit { path: p, message: "a list entry needs an object".into() }),
                }
            }
            Value::Array(out)
        }
        SchemaNodeKind::Leaf => scalar(node, value, path, misfits),
        SchemaNodeKind::LeafList => {
            let items: Vec<&Value> = match value {
                Value::Array(a) => a.iter().collect(),
                one => vec![one],
            };
            Value::Array(
                items.into_iter().enumerate().map(|(i, v)| scalar(node, v, &format!("{path}[{i}]"), misfits)).collect(),
            )
        }
        // anydata / anyxml and anything else: as given.
        _ => value.clone(),
    }
}

fn members(node: &SchemaNode<'_>, m: &Map<String, Value>, path: &str, misfits: &mut Vec<Misfit>) -> Value {
    place(&children(node), Some(node.module().name()), m, path, misfits)
}

/// `m`'s members matched among `candidates` (the schema children of a node of module
/// `parent`, or the top-level nodes when none) and walked; a member is qualified with its
/// module where that differs from the parent's (always at the top).
fn place(
    candidates: &[SchemaNode<'_>],
    parent: Option<&str>,
    m: &Map<String, Value>,
    path: &str,
    misfits: &mut Vec<Misfit>,
) -> Value {
    let mut out = Map::new();
    for (name, v) in m {
        let (module, local) = split(name);
        let p = format!("{path}/{local}");
        match find(candidates, module, local) {
            Some(child) => {
                let cm = child.module();
                let key = if Some(cm.name()) == parent {
                    child.name().to_string()
                } else {
                    format!("{}:{}", cm.name(), child.name())
                };
                out.insert(key, walk(&child, v, &p, misfits));
            }
            None => misfits.push(unknown(&p, local)),
        }
    }
    Value::Object(out)
}

/// The type that decides a value's JSON form (a leafref's target type).
fn base(t: &SchemaLeafType<'_>) -> DataValueType {
    match t.base_type() {
        DataValueType::LeafRef => t.leafref_real_type().map_or(DataValueType::String, |r| base(&r)),
        other => other,
    }
}

/// The module of the identity `name` derived, at any depth, from an identityref type's bases:
/// RFC 7951 wants it as a prefix (`iana-if-type:ethernetCsmacd`), users write `ethernetCsmacd`.
fn identity_module(t: &SchemaLeafType<'_>, name: &str) -> Option<String> {
    use std::ffi::CStr;
    use yang3::ffi;
    /// The elements of a libyang sized array, whose count is the `u64` before its first element.
    ///
    /// SAFETY: `p` is null or a libyang sized array of `*mut T`.
    unsafe fn items<T>(p: *mut *mut T) -> Vec<*mut T> {
        if p.is_null() {
            return Vec::new();
        }
        let n = unsafe { *(p as *const u64).sub(1) } as usize;
        (0..n).map(|i| unsafe { *p.add(i) }).collect()
    }
    // SAFETY: the type is an identityref of a compiled context that `t` borrows, so its bases
    // and their derived identities are live, immutable libyang structures.
    unsafe {
        let raw = t.as_raw() as *const ffi::lysc_type_identityref;
        let mut pending = items((*raw).bases);
        let mut seen = std::collections::HashSet::new();
        while let Some(id) = pending.pop() {
            if id.is_null() || !seen.insert(id) {
                continue;
            }
            if !(*id).name.is_null() && CStr::from_ptr((*id).name).to_bytes() == name.as_bytes() {
                let module = (*id).module;
                if module.is_null() || (*module).name.is_null() {
                    return None;
                }
                return CStr::from_ptr((*module).name).to_str().ok().map(str::to_string);
            }
            pending.extend(items((*id).derived));
        }
    }
    None
}

fn scalar(node: &SchemaNode<'_>, value: &Value, path: &str, misfits: &mut Vec<Misfit>) -> Value {
    let Some(t) = node.leaf_type() else { return value.clone() };
    let text = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    let mut bad = |what: &str| {
        misfits.push(Misfit { path: path.into(), message: format!("{value} is not {what}") });
        Value::Null
    };
    use DataValueType as T;
    match base(&t) {
        T::Int8 | T::Int16 | T::Int32 | T::Uint8 | T::Uint16 | T::Uint32 => match value {
            Value::Number(_) => value.clone(),
            Value::String(s) => match s.trim().parse::<i64>() {
                Ok(n) => Value::from(n),
                Err(_) => bad("an integer"),
            },
            _ => bad("an integer"),
        },
        T::Int64 | T::Uint64 | T::Dec64 => match value {
            Value::Number(_) | Value::String(_) => Value::String(text(value).unwrap_or_default()),
            _ => bad("a number"),
        },
        T::Bool => match value {
            Value::Bool(_) => value.clone(),
            Value::String(s) if s == "true" || s == "false" => Value::Bool(s == "true"),
            _ => bad("a boolean"),
        },
        T::Empty => Value::Array(vec![Value::Null]),
        T::IdentityRef => match value {
            Value::String(s) if s.contains(':') => value.clone(),
            Value::String(s) => match identity_module(&t, s) {
                Some(module) => Value::String(format!("{module}:{s}")),
                None => bad("an identity derived from the type's base"),
            },
            _ => bad("an identity"),
        },
        // Unions keep what they were given (libyang tries each member type); everything else
        // is text in RFC 7951.
        T::Union => value.clone(),
        _ => match text(value) {
            Some(s) => Value::String(s),
            None => bad("a scalar"),
        },
    }
}

#[cfg(test)]
mod tests;

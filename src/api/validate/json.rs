//! JSON helpers for the validator: schema type matching, numeric checks, equality with numbers
//! compared by value (and a canonical string equal exactly when values are, for hashing), and
//! rendering values the way Kubernetes prints them in field errors.
//!
//! Invariant: pure functions of JSON values (and a schema's type); knows nothing of paths or error
//! collection.

use std::fmt::Write as _;

use serde_json::{Number, Value};

use crate::api::schema::{Schema, SchemaType};

pub(super) fn type_matches(s: &Schema, v: &Value) -> bool {
    if s.int_or_string {
        return v.is_string() || matches!(v, Value::Number(n) if is_integral(n));
    }
    match (s.type_, v) {
        (None, _) => true,
        (Some(SchemaType::Object), Value::Object(_))
        | (Some(SchemaType::Array), Value::Array(_))
        | (Some(SchemaType::String), Value::String(_))
        | (Some(SchemaType::Boolean), Value::Bool(_))
        | (Some(SchemaType::Number), Value::Number(_)) => true,
        (Some(SchemaType::Integer), Value::Number(n)) => is_integral(n),
        _ => false,
    }
}

/// Integers, and floats with no fractional part (`3.0`), as Kubernetes accepts for `integer`.
fn is_integral(n: &Number) -> bool {
    n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.is_finite() && f.fract() == 0.0)
}

pub(super) fn is_multiple_of(n: &Number, m: f64) -> bool {
    if m.fract() == 0.0 && m < 9.0e18 {
        if let Some(i) = n.as_i64() {
            // `m >= 1` here, so the division is exact and cannot overflow.
            return i % (m as i64) == 0;
        }
    }
    let Some(x) = n.as_f64() else { return false };
    let q = x / m;
    // A relative tolerance absorbs binary rounding (0.3 is a multiple of 0.1).
    q.is_finite() && (q - q.round()).abs() <= 1e-9 * q.abs().max(1.0)
}

/// JSON equality with numbers compared by value (`1 == 1.0`), as enum and set checks need.
pub(super) fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(i), Some(j)) => i == j,
            _ => match (x.as_u64(), y.as_u64()) {
                (Some(i), Some(j)) => i == j,
                _ => x.as_f64() == y.as_f64(),
            },
        },
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_eq(p, q)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, p)| y.get(k).is_some_and(|q| json_eq(p, q)))
        }
        _ => a == b,
    }
}

/// A string equal for exactly the values [`json_eq`] equates, for hashing.
pub(super) fn canonical(v: &Value, out: &mut String) {
    match v {
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => {
                let _ = write!(out, "{i}");
            }
            (None, Some(u), _) => {
                let _ = write!(out, "{u}");
            }
            (None, None, Some(f)) if f.fract() == 0.0 && f.abs() < 9.0e18 => {
                let _ = write!(out, "{}", f as i64);
            }
            _ => {
                let _ = write!(out, "{n}");
            }
        },
        Value::Array(items) => {
            out.push('[');
            for it in items {
                canonical(it, out);
                out.push(',');
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for k in keys {
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                if let Some(x) = map.get(k) {
                    canonical(x, out);
                }
                out.push(',');
            }
            out.push('}');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// A value as Kubernetes prints it in an error: strings quoted, numbers and booleans bare,
/// compound values by type name.
pub(super) fn render_value(v: &Value) -> String {
    match v {
        Value::String(s) => go_quote(s),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "\"null\"".to_string(),
        Value::Array(_) => "\"array\"".to_string(),
        Value::Object(_) => "\"object\"".to_string(),
    }
}

/// Duplicates show the item itself, compound ones as compact JSON.
pub(super) fn render_duplicate(v: &Value) -> String {
    match v {
        Value::Array(_) | Value::Object(_) => v.to_string(),
        _ => render_value(v),
    }
}

/// Enum values are listed quoted, whatever their type, as `field.NotSupported` does.
pub(super) fn quote_enum_value(v: &Value) -> String {
    match v {
        Value::String(s) => go_quote(s),
        other => go_quote(&other.to_string()),
    }
}

/// A string quoted like Go's `%q` (also a valid Go string literal).
pub(crate) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

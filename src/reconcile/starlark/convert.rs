//! Conversion between JSON objects and Starlark values.
//!
//! Objects reach a script as plain Starlark dicts and lists, built fresh on the reconcile's heap,
//! so the script may mutate them freely. The conversion is JSON-faithful: integers stay
//! integers and floats stay floats (upstream decodes every number as a float, so `str(x)` differs
//! there), `null` is `None` both ways (upstream turns `None` into `""`), and dict keys keep the
//! object's key order. Anything JSON cannot carry (functions, sets, non-string keys, integers
//! beyond 64 bits, non-finite floats) is an error naming the path where it occurs. Tuples become
//! lists, which upstream rejects; accepting them costs nothing and surprises nobody.

use serde_json::{Map, Number, Value as Json};
use starlark::values::dict::{AllocDict, DictRef};
use starlark::values::float::StarlarkFloat;
use starlark::values::list::{AllocList, ListRef};
use starlark::values::tuple::TupleRef;
use starlark::values::{Heap, UnpackValue, Value};

/// Nesting deeper than this is refused rather than risking the native stack (objects from the
/// store are nowhere near it; a self-referencing Starlark list would be infinite).
const MAX_DEPTH: usize = 256;

/// Builds a fresh, mutable Starlark value from JSON.
pub fn to_starlark<'v>(json: &Json, heap: Heap<'v>) -> Result<Value<'v>, String> {
    to_starlark_at(json, heap, 0)
}

fn to_starlark_at<'v>(json: &Json, heap: Heap<'v>, depth: usize) -> Result<Value<'v>, String> {
    if depth > MAX_DEPTH {
        return Err("object nested too deeply".into());
    }
    Ok(match json {
        Json::Null => Value::new_none(),
        Json::Bool(b) => Value::new_bool(*b),
        Json::Number(n) => number_to_starlark(n, heap)?,
        Json::String(s) => heap.alloc(s.as_str()),
        Json::Array(items) => {
            let items = items.iter().map(|i| to_starlark_at(i, heap, depth + 1)).collect::<Result<Vec<_>, _>>()?;
            heap.alloc(AllocList(items))
        }
        Json::Object(map) => {
            let mut entries = Vec::with_capacity(map.len());
            for (k, v) in map {
                entries.push((k.as_str(), to_starlark_at(v, heap, depth + 1)?));
            }
            heap.alloc(AllocDict(entries))
        }
    })
}

fn number_to_starlark<'v>(n: &Number, heap: Heap<'v>) -> Result<Value<'v>, String> {
    // The integer checks come first so that `1` stays an int; only a number written with a
    // fraction or exponent (or too big for 64 bits) becomes a float.
    if let Some(i) = n.as_i64() {
        Ok(heap.alloc(i))
    } else if let Some(u) = n.as_u64() {
        Ok(heap.alloc(u))
    } else if let Some(f) = n.as_f64().filter(|f| f.is_finite()) {
        Ok(heap.alloc(f))
    } else {
        Err(format!("number {n} cannot be represented in Starlark"))
    }
}

/// Converts a Starlark value back to JSON. `path` names the value in errors (e.g. `obj`).
pub fn to_json(value: Value, path: &str) -> Result<Json, String> {
    let mut at = path.to_string();
    to_json_at(value, &mut at, 0)
}

fn to_json_at(value: Value, path: &mut String, depth: usize) -> Result<Json, String> {
    if depth > MAX_DEPTH {
        return Err(format!("{path}: value nested too deeply (a list or dict containing itself?)"));
    }
    if value.is_none() {
        return Ok(Json::Null);
    }
    if let Some(b) = value.unpack_bool() {
        return Ok(Json::Bool(b));
    }
    if let Some(s) = value.unpack_str() {
        return Ok(Json::String(s.to_string()));
    }
    if let Some(f) = StarlarkFloat::unpack_value_opt(value) {
        return Number::from_f64(f.0).map(Json::Number).ok_or_else(|| format!("{path}: {} is not a JSON number", f.0));
    }
    if value.get_type() == "int" {
        return match i64::unpack_value(value) {
            Ok(Some(i)) => Ok(Json::Number(i.into())),
            _ => match u64::unpack_value(value) {
                Ok(Some(u)) => Ok(Json::Number(u.into())),
                _ => Err(format!("{path}: integer {value} does not fit in 64 bits")),
            },
        };
    }
    if let Some(dict) = DictRef::from_value(value) {
        let mut map = Map::new();
        for (k, v) in dict.iter() {
            let Some(key) = k.unpack_str() else {
                return Err(format!("{path}: dict key {k} is a {}, not a string", k.get_type()));
            };
            let len = path.len();
            path.push('.');
            path.push_str(key);
            let converted = to_json_at(v, path, depth + 1);
            path.truncate(len);
            map.insert(key.to_string(), converted?);
        }
        return Ok(Json::Object(map));
    }
    let items = if let Some(list) = ListRef::from_value(value) {
        list.content()
    } else if let Some(tuple) = TupleRef::from_value(value) {
        tuple.content()
    } else {
        return Err(format!("{path}: a {} cannot be stored in an object", value.get_type()));
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let len = path.len();
        path.push_str(&format!("[{i}]"));
        let converted = to_json_at(*item, path, depth + 1);
        path.truncate(len);
        out.push(converted?);
    }
    Ok(Json::Array(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use starlark::environment::Module;

    #[test]
    fn round_trip_keeps_ints_floats_nulls_and_order() {
        let obj = json!({"b": 1, "a": 2.5, "c": null, "d": [true, "x", {"z": -3}], "big": 18446744073709551615u64});
        let back = Module::with_temp_heap(|m| {
            let v = to_starlark(&obj, m.heap()).unwrap();
            assert_eq!(v.get_type(), "dict");
            to_json(v, "obj").unwrap()
        });
        assert_eq!(back, obj);
        assert_eq!(back.to_string(), obj.to_string());
    }

    #[test]
    fn unconvertible_values_name_their_path() {
        Module::with_temp_heap(|m| {
            let heap = m.heap();
            let f = heap.alloc(AllocDict([("spec", heap.alloc(AllocDict([(1, 2)])))]));
            let e = to_json(f, "obj").unwrap_err();
            assert!(e.contains("obj.spec: dict key 1 is a int"), "{e}");
            let nan = heap.alloc(AllocDict([("x", heap.alloc(f64::NAN))]));
            assert!(to_json(nan, "obj").unwrap_err().starts_with("obj.x:"));
        });
    }
}

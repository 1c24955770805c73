//! The `path` of a Config entry (`/interface[name=e1]/subinterface[index=0]`) and the value at
//! it, turned into one configuration rooted at `/`.
//!
//! sdcio lets a Config set a value below the root: the path names containers by name and list
//! entries by name plus key predicates. Placing the value means wrapping it into the members
//! the path walks through: a container becomes an object, a keyed step a one-entry list whose
//! entry carries the keys. Module prefixes in the path are kept (the normaliser accepts them).
//!
//! Architecture invariant: text and JSON only; no schema (the schema decides later whether the
//! wrapped value fits).

use serde_json::{Map, Value};

/// One step of a path: a member name and the key predicates of a list entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub name: String,
    pub keys: Vec<(String, String)>,
}

/// Why a path cannot be read or a value cannot be placed at it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("path {path:?}: {message}")]
pub struct PathError {
    pub path: String,
    pub message: String,
}

/// The steps of `path`; `/` and the empty path are the root (no steps).
pub fn parse(path: &str) -> Result<Vec<Step>, PathError> {
    let err = |message: String| PathError { path: path.to_string(), message };
    let trimmed = path.trim();
    let body = match trimmed.strip_prefix('/') {
        Some(rest) => rest,
        None if trimmed.is_empty() => "",
        None => return Err(err("a path starts with `/`".into())),
    };
    let mut steps = Vec::new();
    let chars: Vec<char> = body.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let start = i;
        while i < chars.len() && chars[i] != '/' && chars[i] != '[' {
            i += 1;
        }
        let name: String = chars[start..i].iter().collect::<String>().trim().to_string();
        if name.is_empty() {
            return Err(err(format!("an empty step at character {}", start + 1)));
        }
        if !name.chars().all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | ':')) {
            return Err(err(format!("{name:?} is not a node name")));
        }
        let mut keys = Vec::new();
        while i < chars.len() && chars[i] == '[' {
            i += 1;
            let ks = i;
            while i < chars.len() && chars[i] != '=' && chars[i] != ']' {
                i += 1;
            }
            if i >= chars.len() || chars[i] != '=' {
                return Err(err(format!("the predicate after {name:?} needs `key=value`")));
            }
            let key: String = chars[ks..i].iter().collect::<String>().trim().to_string();
            i += 1;
            while i < chars.len() && chars[i] == ' ' {
                i += 1;
            }
            let value = match chars.get(i) {
                Some(q @ ('\'' | '"')) => {
                    let q = *q;
                    i += 1;
                    let vs = i;
                    while i < chars.len() && chars[i] != q {
                        i += 1;
                    }
                    if i >= chars.len() {
                        return Err(err(format!("the value of key {key:?} has no closing {q}")));
                    }
                    let v: String = chars[vs..i].iter().collect();
                    i += 1;
                    while i < chars.len() && chars[i] == ' ' {
                        i += 1;
                    }
                    v
                }
                _ => {
                    let vs = i;
                    while i < chars.len() && chars[i] != ']' {
                        i += 1;
                    }
                    chars[vs..i].iter().collect::<String>().trim().to_string()
                }
            };
            if chars.get(i) != Some(&']') {
                return Err(err(format!("the predicate of key {key:?} has no closing `]`")));
            }
            i += 1;
            if key.is_empty() {
                return Err(err(format!("a predicate of {name:?} names no key")));
            }
            if keys.iter().any(|(k, _)| k == &key) {
                return Err(err(format!("key {key:?} is given twice")));
            }
            keys.push((key, value));
        }
        steps.push(Step { name, keys });
        match chars.get(i) {
            None => {}
            Some('/') => {
                i += 1;
                if i == chars.len() {
                    return Err(err("a path does not end with `/`".into()));
                }
            }
            Some(c) => return Err(err(format!("unexpected {c:?} at character {}", i + 1))),
        }
    }
    Ok(steps)
}

/// `value` placed at `path`: the configuration from the root that sets it.
pub fn place(path: &str, value: &Value) -> Result<Value, PathError> {
    let steps = parse(path)?;
    let err = |message: String| PathError { path: path.to_string(), message };
    let Some((last, outer)) = steps.split_last() else {
        return match value {
            Value::Object(_) => Ok(value.clone()),
            _ => Err(err("the value at `/` must be an object".into())),
        };
    };
    // The innermost member: a keyed entry is the value with its keys, anything else the value.
    let mut inner = if last.keys.is_empty() {
        value.clone()
    } else {
        let mut entry = match value {
            Value::Object(m) => m.clone(),
            Value::Null => Map::new(),
            _ => return Err(err(format!("the value of list entry {:?} must be an object", last.name))),
        };
        add_keys(&mut entry, &last.keys).map_err(err)?;
        Value::Array(vec![Value::Object(entry)])
    };
    let mut name = last.name.clone();
    for step in outer.iter().rev() {
        let mut m = Map::new();
        m.insert(name, inner);
        inner = if step.keys.is_empty() {
            Value::Object(m)
        } else {
            add_keys(&mut m, &step.keys).map_err(err)?;
            Value::Array(vec![Value::Object(m)])
        };
        name = step.name.clone();
    }
    let mut root = Map::new();
    root.insert(name, inner);
    Ok(Value::Object(root))
}

/// The path's keys set in `entry`; a key the value also sets must agree with the path.
fn add_keys(entry: &mut Map<String, Value>, keys: &[(String, String)]) -> Result<(), String> {
    for (k, v) in keys {
        match entry.get(k) {
            None => {
                entry.insert(k.clone(), Value::String(v.clone()));
            }
            Some(given) => {
                let text = match given {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                if &text != v {
                    return Err(format!("key {k:?} is {v:?} in the path but {given} in the value"));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn root_paths_keep_the_value() {
        for p in ["/", "", " / "] {
            assert_eq!(place(p, &json!({"a": 1})).unwrap(), json!({"a": 1}));
        }
        assert!(place("/", &json!(3)).is_err());
    }

    #[test]
    fn containers_and_keyed_entries_wrap_the_value() {
        assert_eq!(
            place("/interface[name=e1]/subinterface[index=0]", &json!({"description": "d"})).unwrap(),
            json!({"interface": [{"name": "e1", "subinterface": [{"index": "0", "description": "d"}]}]})
        );
        assert_eq!(place("/system/hostname", &json!("r1")).unwrap(), json!({"system": {"hostname": "r1"}}));
        assert_eq!(
            place("/ietf-interfaces:interfaces/interface[name='e 1'][unit=\"7\"]", &json!({})).unwrap(),
            json!({"ietf-interfaces:interfaces": {"interface": [{"name": "e 1", "unit": "7"}]}})
        );
        // A key the value repeats must agree (numbers compare as text).
        assert!(place("/interface[index=0]", &json!({"index": 0})).is_ok());
        let e = place("/interface[name=e1]", &json!({"name": "e2"})).unwrap_err();
        assert!(e.message.contains("\"e1\" in the path"), "{e}");
    }

    #[test]
    fn malformed_paths_are_refused_with_the_reason() {
        for (p, why) in [
            ("interface", "starts with"),
            ("/a//b", "empty step"),
            ("/a/", "end with"),
            ("/a[name]", "key=value"),
            ("/a[name='x]", "closing '"),
            ("/a[name=x", "closing `]`"),
            ("/a[=x]", "names no key"),
            ("/a[k=1][k=2]", "twice"),
            ("/a b", "not a node name"),
            ("/a[k=1]x", "unexpected"),
        ] {
            let e = parse(p).unwrap_err();
            assert!(e.message.contains(why), "{p}: {e}");
        }
        assert!(place("/a[k=1]", &json!("scalar")).is_err());
    }
}

//! kubectl's label and field selectors: `-l a=b,c!=d,e in (x,y),f notin (z),g,!h` and
//! `--field-selector metadata.name=x,status.phase!=Done`.
//!
//! Requirements are ANDed. Label values compare as text; a field path is dotted from the object's
//! root and its value compares as text (numbers and booleans as JSON prints them; a missing
//! field is the empty string, as in Kubernetes).
//!
//! Architecture invariant: parsing and matching only.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Eq,
    NotEq,
    In,
    NotIn,
    Exists,
    NotExists,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Requirement {
    key: String,
    op: Op,
    values: Vec<String>,
}

/// A parsed label selector.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LabelSelector(Vec<Requirement>);

/// Splits on commas outside parentheses.
fn split_top(text: &str) -> Result<Vec<String>, String> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut cur = String::new();
    for c in text.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        if depth < 0 {
            return Err(format!("unbalanced `)` in {text:?}"));
        }
        cur.push(c);
    }
    if depth != 0 {
        return Err(format!("unbalanced `(` in {text:?}"));
    }
    parts.push(cur);
    Ok(parts.into_iter().map(|p| p.trim().to_string()).collect())
}

fn valid_key(k: &str) -> bool {
    !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

fn valid_value(v: &str) -> bool {
    v.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl LabelSelector {
    pub fn parse(text: &str) -> Result<LabelSelector, String> {
        let mut reqs = Vec::new();
        if text.trim().is_empty() {
            return Ok(LabelSelector(reqs));
        }
        for part in split_top(text).map_err(|e| format!("label selector: {e}"))? {
            let bad = |why: &str| format!("label selector {text:?}: {part:?}: {why}");
            if part.is_empty() {
                return Err(bad("an empty requirement"));
            }
            let req = if let Some(key) = part.strip_prefix('!') {
                Requirement { key: key.trim().to_string(), op: Op::NotExists, values: vec![] }
            } else if let Some((k, v)) = part.split_once("!=") {
                Requirement { key: k.trim().into(), op: Op::NotEq, values: vec![v.trim().into()] }
            } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                Requirement { key: k.trim().into(), op: Op::Eq, values: vec![v.trim().into()] }
            } else if let Some(open) = part.find('(') {
                let head: Vec<&str> = part[..open].split_whitespace().collect();
                let (key, op) = match head.as_slice() {
                    [k, "in"] => (*k, Op::In),
                    [k, "notin"] => (*k, Op::NotIn),
                    _ => return Err(bad("expected `key in (v1,v2)` or `key notin (v1,v2)`")),
                };
                let body = part[open + 1..].strip_suffix(')').ok_or_else(|| bad("no closing `)`"))?;
                let values: Vec<String> = body.split(',').map(|v| v.trim().to_string()).collect();
                if values.iter().any(String::is_empty) {
                    return Err(bad("an empty value in the set"));
                }
                Requirement { key: key.into(), op, values }
            } else {
                Requirement { key: part.clone(), op: Op::Exists, values: vec![] }
            };
            if !valid_key(&req.key) {
                return Err(bad(&format!("{:?} is not a label key", req.key)));
            }
            if let Some(v) = req.values.iter().find(|v| !valid_value(v)) {
                return Err(bad(&format!("{v:?} is not a label value")));
            }
            reqs.push(req);
        }
        Ok(LabelSelector(reqs))
    }

    pub fn matches(&self, obj: &Value) -> bool {
        let labels = obj.pointer("/metadata/labels").and_then(Value::as_object);
        self.0.iter().all(|r| {
            let v = labels.and_then(|l| l.get(&r.key)).and_then(Value::as_str);
            match r.op {
                Op::Eq => v == Some(r.values[0].as_str()),
                Op::NotEq => v != Some(r.values[0].as_str()),
                Op::In => v.is_some_and(|v| r.values.iter().any(|x| x == v)),
                Op::NotIn => v.is_none_or(|v| r.values.iter().all(|x| x != v)),
                Op::Exists => v.is_some(),
                Op::NotExists => v.is_none(),
            }
        })
    }
}

/// A parsed field selector.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldSelector(Vec<(Vec<String>, bool, String)>);

impl FieldSelector {
    pub fn parse(text: &str) -> Result<FieldSelector, String> {
        let mut out = Vec::new();
        if text.trim().is_empty() {
            return Ok(FieldSelector(out));
        }
        for part in text.split(',') {
            let part = part.trim();
            let bad = |why: &str| format!("field selector {text:?}: {part:?}: {why}");
            let (path, eq, value) = if let Some((k, v)) = part.split_once("!=") {
                (k, false, v)
            } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                (k, true, v)
            } else {
                return Err(bad("expected `field=value` or `field!=value`"));
            };
            let path: Vec<String> = path.trim().split('.').map(str::to_string).collect();
            if path.iter().any(|s| s.is_empty()) {
                return Err(bad("a field is a dotted path such as metadata.name"));
            }
            out.push((path, eq, value.trim().to_string()));
        }
        Ok(FieldSelector(out))
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(path, eq, want)| {
            let got = path.iter().try_fold(obj, |v, k| v.get(k)).map_or(String::new(), |v| match v {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            });
            (got == *want) == *eq
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_selectors_as_kubectl_reads_them() {
        let leaf = json!({"metadata": {"labels": {"role": "leaf", "site": "ams", "tier": "1"}}});
        let spine = json!({"metadata": {"labels": {"role": "spine", "site": "fra"}}});
        let bare = json!({"metadata": {}});
        let table: &[(&str, [bool; 3])] = &[
            ("", [true, true, true]),
            ("role=leaf", [true, false, false]),
            ("role==leaf", [true, false, false]),
            ("role!=leaf", [false, true, true]),
            ("site in (ams, fra)", [true, true, false]),
            ("site notin (ams)", [false, true, true]),
            ("tier", [true, false, false]),
            ("!tier", [false, true, true]),
            ("role=leaf,site=ams", [true, false, false]),
            ("role in (leaf,spine),!tier", [false, true, false]),
            ("example.com/owner", [false, false, false]),
        ];
        for (sel, want) in table {
            let s = LabelSelector::parse(sel).unwrap_or_else(|e| panic!("{sel}: {e}"));
            let got = [s.matches(&leaf), s.matches(&spine), s.matches(&bare)];
            assert_eq!(&got, want, "{sel}");
        }
        for bad in ["role=le af", "site in (a,", "site in ()", ",", "site is (a)", "ro le"] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn field_selectors_compare_dotted_paths_as_text() {
        let o = json!({"metadata": {"name": "a", "namespace": "x"}, "spec": {"asn": 65001, "on": true}});
        for (sel, want) in [
            ("metadata.name=a", true),
            ("metadata.name!=a", false),
            ("metadata.namespace==x,spec.asn=65001", true),
            ("spec.on=true", true),
            ("status.phase=", true),
            ("status.phase!=", false),
        ] {
            assert_eq!(FieldSelector::parse(sel).unwrap().matches(&o), want, "{sel}");
        }
        assert!(FieldSelector::parse("metadata.name").is_err());
        assert!(FieldSelector::parse("metadata..name=a").is_err());
    }
}

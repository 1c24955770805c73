//! Expression selectors: which objects a reconciler's `for` and `watches` match.
//!
//! A selector is `{match: {expr: value}, matchExpressions: [{expression, operator, values}]}`,
//! all terms ANDed. Each expression is a CEL path evaluated on the object (bound as `input`, so
//! `metadata.name` means `input.metadata.name`) and its result is turned into text the way Go's
//! `%v` prints it (`true`, `10`, `[a b]`) before comparison, as upstream choreo does. A missing
//! selector matches nothing and an empty one (`{}`) matches everything. Expressions are compiled
//! once, when the reconciler is loaded.

use std::sync::Arc;

use serde_json::Value;

use crate::api::cel::{compile_cel, eval_json};

/// A compiled selector.
#[derive(Clone, Default)]
pub struct Selector {
    /// `None`: no selector at all, which matches nothing.
    terms: Option<Vec<Term>>,
    /// What it was parsed from (null for no selector), so it can be sent elsewhere and parsed
    /// again.
    source: Value,
}

#[derive(Clone)]
struct Term {
    expression: String,
    program: Arc<cel::Program>,
    operator: Operator,
    values: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    Equals,
    NotEquals,
    In,
    NotIn,
    Exists,
    DoesNotExist,
    GreaterThan,
    LessThan,
}

impl std::fmt::Debug for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.terms {
            None => write!(f, "Selector(nothing)"),
            Some(t) if t.is_empty() => write!(f, "Selector(everything)"),
            Some(t) => {
                let parts: Vec<String> =
                    t.iter().map(|t| format!("{} {:?} {:?}", t.expression, t.operator, t.values)).collect();
                write!(f, "Selector({})", parts.join(" && "))
            }
        }
    }
}

impl Selector {
    /// Matches nothing.
    pub fn nothing() -> Selector {
        Selector { terms: None, source: Value::Null }
    }

    /// Matches every object.
    pub fn everything() -> Selector {
        Selector { terms: Some(Vec::new()), source: Value::Object(serde_json::Map::new()) }
    }

    /// The value it was parsed from: `Selector::parse(Some(s.source()), ..)` is `s` again.
    pub fn source(&self) -> &Value {
        &self.source
    }

    /// Whether every object matches (`{}`), which needs no look at the object.
    pub fn matches_everything(&self) -> bool {
        self.terms.as_ref().is_some_and(Vec::is_empty)
    }

    pub fn matches_nothing(&self) -> bool {
        self.terms.is_none()
    }

    /// Parses a selector value (`None` or JSON null: no selector). `path` names it in errors.
    pub fn parse(value: Option<&Value>, path: &str) -> Result<Selector, String> {
        let map = match value {
            None | Some(Value::Null) => return Ok(Selector::nothing()),
            Some(Value::Object(m)) => m,
            Some(other) => return Err(format!("{path}: must be a map, got {other}")),
        };
        let mut terms = Vec::new();
        for (key, v) in map {
            match key.as_str() {
                "match" => {
                    let Some(m) = v.as_object() else {
                        return Err(format!("{path}.match: must be a map of expression to value"));
                    };
                    for (expr, want) in m {
                        let want = go_text_json(want);
                        terms.push(Term::new(expr, Operator::Equals, vec![want], &format!("{path}.match[{expr}]"))?);
                    }
                }
                "matchExpressions" => {
                    let Some(list) = v.as_array() else {
                        return Err(format!("{path}.matchExpressions: must be a list"));
                    };
                    for (i, e) in list.iter().enumerate() {
                        let at = format!("{path}.matchExpressions[{i}]");
                        let expr = e
                            .get("expression")
                            .and_then(Value::as_str)
                            .ok_or_else(|| format!("{at}.expression: Required value"))?;
                        let op = e
                            .get("operator")
                            .and_then(Value::as_str)
                            .ok_or_else(|| format!("{at}.operator: Required value"))?;
                        let operator = match op {
                            "Equals" | "DoubleEquals" => Operator::Equals,
                            "NotEquals" => Operator::NotEquals,
                            "In" => Operator::In,
                            "NotIn" => Operator::NotIn,
                            "Exists" => Operator::Exists,
                            "DoesNotExist" => Operator::DoesNotExist,
                            "GreaterThan" => Operator::GreaterThan,
                            "LessThan" => Operator::LessThan,
                            other => return Err(format!("{at}.operator: Unsupported value: {other:?}")),
                        };
                        let values: Vec<String> = e
                            .get("values")
                            .and_then(Value::as_array)
                            .map(|l| l.iter().map(go_text_json).collect())
                            .unwrap_or_default();
                        let count_ok = match operator {
                            Operator::In | Operator::NotIn => !values.is_empty(),
                            Operator::Equals | Operator::NotEquals => values.len() == 1,
                            Operator::Exists | Operator::DoesNotExist => values.is_empty(),
                            Operator::GreaterThan | Operator::LessThan => {
                                values.len() == 1 && values[0].parse::<i64>().is_ok()
                            }
                        };
                        if !count_ok {
                            return Err(format!(
                                "{at}.values: Invalid value: wrong number or kind of values for operator {op}"
                            ));
                        }
                        terms.push(Term::new(expr, operator, values, &at)?);
                    }
                }
                other => return Err(format!("{path}.{other}: field not declared in schema")),
            }
        }
        Ok(Selector { terms: Some(terms), source: Value::Object(map.clone()) })
    }

    /// Whether the selector has only `match` terms (what `watches` allows).
    pub fn only_match(&self) -> bool {
        self.terms.as_ref().is_some_and(|t| t.iter().all(|t| t.operator == Operator::Equals && t.values.len() == 1))
    }

    /// Whether `obj` matches.
    pub fn matches(&self, obj: &Value) -> bool {
        let Some(terms) = &self.terms else { return false };
        terms.iter().all(|t| t.matches(obj))
    }

    /// The value each `match` expression has on `obj`, for watches that map a watched object to
    /// the for-objects with the same values. `None` when an expression does not evaluate.
    pub fn evaluate_terms(&self, obj: &Value) -> Vec<(String, Option<String>)> {
        self.terms.iter().flatten().map(|t| (t.expression.clone(), t.evaluate(obj))).collect()
    }
}

impl Term {
    fn new(expression: &str, operator: Operator, values: Vec<String>, at: &str) -> Result<Term, String> {
        let program = compile_cel(&format!("input.{expression}"))
            .map_err(|e| format!("{at}: invalid expression {expression:?}: {e}"))?;
        Ok(Term { expression: expression.to_string(), program: Arc::new(program), operator, values })
    }

    /// The expression's value on `obj` as Go's `%v` text, or `None` when it does not evaluate
    /// (a missing field, a type error).
    fn evaluate(&self, obj: &Value) -> Option<String> {
        eval_json(&self.program, "input", obj).ok().and_then(|v| go_text(&v))
    }

    fn matches(&self, obj: &Value) -> bool {
        let got = self.evaluate(obj);
        match self.operator {
            Operator::Equals | Operator::In => got.is_some_and(|g| self.values.contains(&g)),
            Operator::NotEquals | Operator::NotIn => got.is_none_or(|g| !self.values.contains(&g)),
            Operator::Exists => got.is_some(),
            Operator::DoesNotExist => got.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let (Some(g), Some(w)) =
                    (got.and_then(|g| g.parse::<i64>().ok()), self.values.first().and_then(|w| w.parse::<i64>().ok()))
                else {
                    return false;
                };
                if self.operator == Operator::GreaterThan {
                    g > w
                } else {
                    g < w
                }
            }
        }
    }
}

/// A CEL value as Go's `%v` prints the equivalent Go value. `None` for null.
fn go_text(v: &cel::Value) -> Option<String> {
    Some(match v {
        cel::Value::Null => return None,
        cel::Value::Bool(b) => b.to_string(),
        cel::Value::Int(i) => i.to_string(),
        cel::Value::UInt(u) => u.to_string(),
        cel::Value::Float(f) => format_float(*f),
        cel::Value::String(s) => s.to_string(),
        cel::Value::List(items) => {
            let parts: Vec<String> = items.iter().map(|i| go_text(i).unwrap_or_else(|| "<nil>".into())).collect();
            format!("[{}]", parts.join(" "))
        }
        cel::Value::Map(m) => {
            let mut parts: Vec<String> = m
                .map
                .iter()
                .map(|(k, v)| format!("{}:{}", go_key(k), go_text(v).unwrap_or_else(|| "<nil>".into())))
                .collect();
            parts.sort();
            format!("map[{}]", parts.join(" "))
        }
        other => format!("{other:?}"),
    })
}

fn go_key(k: &cel::objects::Key) -> String {
    match k {
        cel::objects::Key::String(s) => s.to_string(),
        cel::objects::Key::Int(i) => i.to_string(),
        cel::objects::Key::Uint(u) => u.to_string(),
        cel::objects::Key::Bool(b) => b.to_string(),
    }
}

/// A JSON value as Go's `%v` prints it (selector values written in YAML may be numbers or
/// booleans; they compare as text).
fn go_text_json(v: &Value) -> String {
    match v {
        Value::Null => "<nil>".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => format_float(f),
            _ => n.to_string(),
        },
        Value::String(s) => s.clone(),
        Value::Array(items) => format!("[{}]", items.iter().map(go_text_json).collect::<Vec<_>>().join(" ")),
        Value::Object(m) => {
            format!("map[{}]", m.iter().map(|(k, v)| format!("{k}:{}", go_text_json(v))).collect::<Vec<_>>().join(" "))
        }
    }
}

fn format_float(f: f64) -> String {
    if f.fract() == 0.0 && f.abs() < 1e21 {
        format!("{}", f as i64)
    } else {
        f.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(ready: &str) -> Value {
        json!({"metadata": {"name": "kubenet.default", "labels": {"site": "a"}},
               "spec": {"port": 3, "enabled": true},
               "status": {"conditions": [{"type": "Ready", "status": ready}]}})
    }

    #[test]
    fn nothing_everything_and_match() {
        assert!(!Selector::parse(None, "s").unwrap().matches(&node("True")));
        assert!(Selector::parse(Some(&json!({})), "s").unwrap().matches(&node("True")));
        let sel = Selector::parse(
            Some(&json!({"match": {
                "metadata.name": "kubenet.default",
                "status.conditions.exists(c, c.type == 'Ready' && c.status == 'True')": "true",
                "spec.port": 3
            }})),
            "s",
        )
        .unwrap();
        assert!(sel.only_match());
        assert!(sel.matches(&node("True")));
        assert!(!sel.matches(&node("False")));
    }

    #[test]
    fn expressions_and_missing_fields() {
        let sel = |e: Value| Selector::parse(Some(&json!({"matchExpressions": [e]})), "s").unwrap();
        let n = node("True");
        assert!(sel(json!({"expression": "metadata.labels.site", "operator": "In", "values": ["a", "b"]})).matches(&n));
        assert!(sel(json!({"expression": "metadata.labels.nope", "operator": "DoesNotExist"})).matches(&n));
        assert!(!sel(json!({"expression": "metadata.labels.nope", "operator": "Exists"})).matches(&n));
        assert!(sel(json!({"expression": "metadata.labels.nope", "operator": "NotIn", "values": ["x"]})).matches(&n));
        assert!(sel(json!({"expression": "spec.port", "operator": "GreaterThan", "values": ["2"]})).matches(&n));
        assert!(!sel(json!({"expression": "spec.port", "operator": "LessThan", "values": ["2"]})).matches(&n));
        assert!(sel(json!({"expression": "spec.enabled", "operator": "Equals", "values": [true]})).matches(&n));
    }

    #[test]
    fn bad_selectors_are_load_errors() {
        assert!(Selector::parse(Some(&json!({"match": {"(": "x"}})), "spec.for.selector")
            .unwrap_err()
            .starts_with("spec.for.selector.match[(]"));
        assert!(Selector::parse(
            Some(&json!({"matchExpressions": [{"expression": "a", "operator": "In", "values": []}]})),
            "s"
        )
        .is_err());
        assert!(Selector::parse(Some(&json!({"labels": {}})), "s").is_err());
    }
}

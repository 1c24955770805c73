//! The for-object as each engine's data. Converted by hand rather than through serde: the
//! crate's `serde_json` keeps numbers exact (`arbitrary_precision`), which serializes a number
//! as a private map that neither engine understands.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Number, Value};

/// An integer when the number is one (`0` prints `0`, where Go's float64 would print
/// `%!d(float64=0)` under `%d`), else a float.
enum Num {
    Int(i64),
    Uint(u64),
    Float(f64),
}

fn number(n: &Number) -> Num {
    if let Some(i) = n.as_i64() {
        Num::Int(i)
    } else if let Some(u) = n.as_u64() {
        Num::Uint(u)
    } else {
        Num::Float(n.as_f64().unwrap_or(f64::NAN))
    }
}

pub(super) fn to_go(v: &Value) -> gotmpl::Value {
    use gotmpl::Value as G;
    match v {
        Value::Null => G::Nil,
        Value::Bool(b) => G::Bool(*b),
        Value::Number(n) => match number(n) {
            Num::Int(i) => G::Int(i),
            Num::Uint(u) => G::Uint(u),
            Num::Float(f) => G::Float(f),
        },
        Value::String(s) => G::String(Arc::from(s.as_str())),
        Value::Array(a) => G::List(a.iter().map(to_go).collect()),
        Value::Object(m) => {
            G::Map(Arc::new(m.iter().map(|(k, v)| (Arc::from(k.as_str()), to_go(v))).collect::<BTreeMap<_, _>>()))
        }
    }
}

pub(super) fn to_jinja(v: &Value) -> minijinja::Value {
    use minijinja::Value as J;
    match v {
        Value::Null => J::from(()),
        Value::Bool(b) => J::from(*b),
        Value::Number(n) => match number(n) {
            Num::Int(i) => J::from(i),
            Num::Uint(u) => J::from(u),
            Num::Float(f) => J::from(f),
        },
        Value::String(s) => J::from(s.as_str()),
        Value::Array(a) => a.iter().map(to_jinja).collect(),
        Value::Object(m) => J::from_pairs(m.iter().map(|(k, v)| (k.as_str(), to_jinja(v)))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_stay_integers() {
        let v = json!({"a": 0, "b": 1.5, "c": [true, null, "x"], "d": 18446744073709551615u64});
        let go = to_go(&v);
        assert_eq!(
            gotmpl::Template::new("t")
                .parse("{{.a}} {{.b}} {{index .c 0}} {{.d}}")
                .unwrap()
                .execute_to_string(&go)
                .unwrap(),
            "0 1.5 true 18446744073709551615"
        );
        let j = to_jinja(&v);
        let env = minijinja::Environment::new();
        assert_eq!(env.render_str("{{ a }} {{ b }} {{ c[0] }} {{ d }}", j).unwrap(), "0 1.5 True 18446744073709551615");
    }
}

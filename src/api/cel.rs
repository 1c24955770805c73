//! Kubernetes CEL for `x-kubernetes-validations` rules and selectors: the environment (standard
//! library plus extensions), compilation with the static limits that keep the interpreter's
//! recursion in bounds, evaluation that turns an interpreter panic into an error, and the
//! conversion of JSON values to CEL values typed by their structural schema.
//!
//! Invariant: no I/O and no state beyond the shared environment; nothing here panics on user
//! input (the parser and interpreter run under `catch_unwind`).

use std::borrow::Cow;
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, OnceLock};

use cel::common::types::{
    CelBool, CelBytes, CelDouble, CelDuration, CelInt, CelList, CelMap, CelMapKey, CelNull, CelString,
    CelTimestamp, CelUInt,
};
use cel::common::value::Val;
use serde_json::{Number, Value};

use crate::api::schema::{AdditionalProperties, Schema, SchemaType};
use crate::api::validate::{decode_base64, parse_date, parse_date_time, parse_go_duration};

// ---------------------------------------------------------------------------------------------
// CEL environment and compilation

/// The CEL environment every rule is compiled and evaluated with: the standard library plus the
/// strings, lists, math and base64 extensions (the nearest cel-rust has to the libraries the
/// Kubernetes API server installs). Built once; `cel::Env` is `Send + Sync`.
pub(crate) fn cel_env() -> &'static Arc<cel::Env> {
    static ENV: OnceLock<Arc<cel::Env>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = cel::Env::stdlib();
        type Extension = fn(&mut cel::Env) -> Result<(), cel::DeclarationError>;
        let extensions: [(&str, Extension); 4] = [
            ("strings", cel::extensions::strings),
            ("lists", cel::extensions::lists),
            ("math", cel::extensions::math),
            ("encoders", cel::extensions::encoders),
        ];
        for (name, ext) in extensions {
            if let Err(e) = env.add_extension(ext) {
                log::warn!("CEL {name} extension unavailable: {e}");
            }
        }
        Arc::new(env)
    })
}

// Compiled programs live in `Schema`, which is shared across threads, and the environment is a
// process-wide static: both must stay `Send + Sync` (true of cel 0.15), or this fails to build.
const _: () = {
    const fn shareable<T: Send + Sync>() {}
    shareable::<cel::Program>();
    shareable::<cel::Env>();
};

/// The longest rule accepted. cel-rust's parser and interpreter recurse once per operator in a
/// chain like `a + a + ... + a`, and overflow a 2 MiB thread stack at about 10,000 of them; rules
/// this short stay far from that.
const MAX_RULE_BYTES: usize = 8 * 1024;

/// The deepest expression tree accepted, for the same reason: evaluation recurses per level.
const MAX_RULE_DEPTH: usize = 200;

/// Compiles one CEL expression with [`cel_env`]. Used by the schema parser, so that each rule is
/// compiled once per CRD; the parser is run under `catch_unwind` since CRDs are user input.
pub(crate) fn compile_cel(source: &str) -> Result<cel::Program, String> {
    if source.len() > MAX_RULE_BYTES {
        return Err(format!("longer than {MAX_RULE_BYTES} bytes"));
    }
    let program = match catch_unwind(AssertUnwindSafe(|| cel_env().compile(source))) {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => return Err(e.to_string().replace('\n', " ")),
        Err(_) => return Err("the CEL parser panicked".to_string()),
    };
    if expression_depth(program.expression(), MAX_RULE_DEPTH) > MAX_RULE_DEPTH {
        return Err(format!("nested more than {MAX_RULE_DEPTH} levels deep"));
    }
    Ok(program)
}

/// The depth of an expression tree, walked without recursion, counting no further than `limit + 1`.
fn expression_depth(root: &cel::IdedExpr, limit: usize) -> usize {
    use cel::common::ast::{EntryExpr, Expr};
    let mut deepest = 0;
    let mut stack = vec![(root, 1usize)];
    while let Some((e, d)) = stack.pop() {
        deepest = deepest.max(d);
        if d > limit {
            break;
        }
        let d = d + 1;
        match &e.expr {
            Expr::Call(c) => {
                stack.extend(c.target.as_deref().map(|t| (t, d)));
                stack.extend(c.args.iter().map(|a| (a, d)));
            }
            Expr::Comprehension(c) => {
                for x in [
                    &c.iter_range,
                    &c.accu_init,
                    &c.loop_cond,
                    &c.loop_step,
                    &c.result,
                ] {
                    stack.push((x, d));
                }
            }
            Expr::List(l) => stack.extend(l.elements.iter().map(|x| (x, d))),
            Expr::Map(m) => push_entries(&mut stack, &m.entries, d),
            Expr::Struct(s) => push_entries(&mut stack, &s.entries, d),
            Expr::Select(s) => stack.push((&s.operand, d)),
            Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => {}
        }
    }
    return deepest;

    fn push_entries<'e>(
        stack: &mut Vec<(&'e cel::IdedExpr, usize)>,
        entries: &'e [cel::common::ast::IdedEntryExpr],
        d: usize,
    ) {
        for entry in entries {
            match &entry.expr {
                EntryExpr::MapEntry(m) => {
                    stack.push((&m.key, d));
                    stack.push((&m.value, d));
                }
                EntryExpr::StructField(f) => stack.push((&f.value, d)),
            }
        }
    }
}

/// Runs a program, turning a panic inside the interpreter into an error.
pub(crate) fn run(program: &cel::Program, ctx: &cel::Context<'_, '_>) -> Result<cel::Value, String> {
    match catch_unwind(AssertUnwindSafe(|| program.execute(ctx))) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("internal error: the CEL interpreter panicked".to_string()),
    }
}

/// Evaluates `program` with the variable `name` bound to `value`, converted without a schema
/// (integers are int, other numbers double). Used by selectors, which have no schema.
pub(crate) fn eval_json(program: &cel::Program, name: &str, value: &Value) -> Result<cel::Value, String> {
    let mut ctx = cel::Context::with_env(Arc::clone(cel_env()));
    ctx.add_variable_as_val(name, to_val(None, value, 0));
    run(program, &ctx)
}

pub(crate) fn new_context<'a>(s: &'a Schema, v: &'a Value) -> cel::Context<'a, 'a> {
    let mut ctx = cel::Context::with_env(Arc::clone(cel_env()));
    ctx.add_variable_as_val("self", to_val(Some(s), v, 0));
    ctx
}

// ---------------------------------------------------------------------------------------------
// JSON to CEL

/// Beyond this depth a schemaless subtree is handed to CEL as null rather than recursed into.
const MAX_CEL_DEPTH: usize = 256;

/// Converts a JSON value to a CEL value, typed by its schema the way the API server does:
/// `integer` → int, `number` → double, strings with format `byte`/`duration`/`date`/
/// `date-time` → bytes/duration/timestamp, declared property names escaped (`x-y` is
/// `self.x__dash__y`). Strings are borrowed, not copied.
pub(crate) fn to_val<'a>(s: Option<&'a Schema>, v: &'a Value, depth: usize) -> Box<dyn Val + 'a> {
    if depth > MAX_CEL_DEPTH {
        return Box::new(CelNull);
    }
    match v {
        Value::Null => Box::new(CelNull),
        Value::Bool(b) => Box::new(CelBool::from(*b)),
        Value::Number(n) => number_val(s, n),
        Value::String(st) => string_val(s, st),
        Value::Array(items) => {
            let item_schema = s.and_then(|s| s.items.as_deref());
            let list: Vec<Box<dyn Val + 'a>> = items
                .iter()
                .map(|it| to_val(item_schema, it, depth + 1))
                .collect();
            Box::new(CelList::from(list))
        }
        Value::Object(map) => {
            let extra = s.and_then(|s| match &s.additional_properties {
                Some(AdditionalProperties::Schema(ap)) => Some(&**ap),
                _ => None,
            });
            let mut out: HashMap<CelMapKey<'a>, Box<dyn Val + 'a>> =
                HashMap::with_capacity(map.len());
            for (k, child) in map {
                let (key, child_schema) = match s.and_then(|s| s.properties.get(k)) {
                    Some(p) => match escape_property(k) {
                        Some(name) => (name, Some(p)),
                        // Names CEL cannot spell are invisible to rules, as in Kubernetes.
                        None => continue,
                    },
                    None => (Cow::Borrowed(k.as_str()), extra),
                };
                let key = match key {
                    Cow::Borrowed(b) => CelMapKey::from(b),
                    Cow::Owned(o) => CelMapKey::from(o),
                };
                out.insert(key, to_val(child_schema, child, depth + 1));
            }
            Box::new(CelMap::from(out))
        }
    }
}

fn number_val<'a>(s: Option<&Schema>, n: &Number) -> Box<dyn Val + 'a> {
    let declared = s.filter(|s| !s.int_or_string).and_then(|s| s.type_);
    if declared == Some(SchemaType::Number) {
        return Box::new(CelDouble::from(n.as_f64().unwrap_or(f64::NAN)));
    }
    if let Some(i) = n.as_i64() {
        return Box::new(CelInt::from(i));
    }
    if let Some(u) = n.as_u64() {
        return Box::new(CelUInt::from(u));
    }
    let f = n.as_f64().unwrap_or(f64::NAN);
    let integer = declared == Some(SchemaType::Integer) || s.is_some_and(|s| s.int_or_string);
    if integer && f.fract() == 0.0 && f.abs() < 9.0e18 {
        return Box::new(CelInt::from(f as i64));
    }
    Box::new(CelDouble::from(f))
}

fn string_val<'a>(s: Option<&Schema>, st: &'a str) -> Box<dyn Val + 'a> {
    let format = s
        .filter(|s| s.type_ == Some(SchemaType::String))
        .and_then(|s| s.format.as_deref());
    // A string that does not parse has a format error already; CEL then sees the plain string.
    match format {
        Some("byte") => {
            if let Some(b) = decode_base64(st) {
                return Box::new(CelBytes::from(b));
            }
        }
        Some("duration") => {
            if let Some(ns) = parse_go_duration(st) {
                return Box::new(CelDuration::from(chrono::Duration::nanoseconds(ns)));
            }
        }
        Some("date-time") | Some("datetime") => {
            if let Some(t) = parse_date_time(st) {
                return Box::new(CelTimestamp::from(t));
            }
        }
        Some("date") => {
            if let Some(t) = parse_date(st).and_then(|d| d.and_hms_opt(0, 0, 0)) {
                let utc = chrono::FixedOffset::east_opt(0);
                if let Some(t) = utc.map(|z| chrono::DateTime::from_naive_utc_and_offset(t, z)) {
                    return Box::new(CelTimestamp::from(t));
                }
            }
        }
        _ => {}
    }
    Box::new(CelString::from(st))
}

/// The CEL name of a declared property (Kubernetes' escaping), or `None` if it has none.
fn escape_property(name: &str) -> Option<Cow<'_, str>> {
    const RESERVED: [&str; 21] = [
        "true",
        "false",
        "null",
        "in",
        "as",
        "break",
        "const",
        "continue",
        "else",
        "for",
        "function",
        "if",
        "import",
        "let",
        "loop",
        "package",
        "namespace",
        "return",
        "var",
        "void",
        "while",
    ];
    if RESERVED.contains(&name) {
        return Some(Cow::Owned(format!("__{name}__")));
    }
    let plain = name
        .bytes()
        .enumerate()
        .all(|(i, c)| c.is_ascii_alphabetic() || c == b'_' || (i > 0 && c.is_ascii_digit()))
        && !name.contains("__")
        && !name.is_empty();
    if plain {
        return Some(Cow::Borrowed(name));
    }
    let first = name.chars().next()?;
    if !(first.is_ascii_alphabetic() || first == '_') {
        return None;
    }
    let mut out = String::with_capacity(name.len() + 16);
    let mut rest = name;
    while let Some(c) = rest.chars().next() {
        if let Some(r) = rest.strip_prefix("__") {
            out.push_str("__underscores__");
            rest = r;
            continue;
        }
        match c {
            '.' => out.push_str("__dot__"),
            '-' => out.push_str("__dash__"),
            '/' => out.push_str("__slash__"),
            c if c.is_ascii_alphanumeric() || c == '_' => out.push(c),
            _ => return None,
        }
        rest = &rest[c.len_utf8()..];
    }
    Some(Cow::Owned(out))
}

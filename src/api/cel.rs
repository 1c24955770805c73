//! Kubernetes CEL for `x-kubernetes-validations` rules and selectors: the environment (standard
//! library plus extensions), compilation with the static limits that keep the interpreter's
//! recursion in bounds, cost estimates (at CRD registration from the schema's bounds, before each
//! evaluation from the object's sizes: see the Cost section), evaluation that turns an
//! interpreter panic into an error, and the conversion of JSON values to CEL values typed by their
//! structural schema.
//!
//! Invariant: no I/O and no state beyond the shared environment; nothing here panics on user
//! input (the parser and interpreter run under `catch_unwind`); the cost walks are as deep as the
//! expression (itself bounded at compilation) and linear in the object.

use std::borrow::Cow;
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, OnceLock};

use cel::common::types::{
    CelBool, CelBytes, CelDouble, CelDuration, CelInt, CelList, CelMap, CelMapKey, CelNull, CelString, CelTimestamp,
    CelUInt,
};
use cel::common::value::Val;
use serde_json::{Number, Value};

use crate::api::schema::{AdditionalProperties, Schema, SchemaError, SchemaType};
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
                for x in [&c.iter_range, &c.accu_init, &c.loop_cond, &c.loop_step, &c.result] {
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
            let list: Vec<Box<dyn Val + 'a>> = items.iter().map(|it| to_val(item_schema, it, depth + 1)).collect();
            Box::new(CelList::from(list))
        }
        Value::Object(map) => {
            let extra = s.and_then(|s| match &s.additional_properties {
                Some(AdditionalProperties::Schema(ap)) => Some(&**ap),
                _ => None,
            });
            let mut out: HashMap<CelMapKey<'a>, Box<dyn Val + 'a>> = HashMap::with_capacity(map.len());
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
    let format = s.filter(|s| s.type_ == Some(SchemaType::String)).and_then(|s| s.format.as_deref());
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
    let plain =
        name.bytes().enumerate().all(|(i, c)| c.is_ascii_alphabetic() || c == b'_' || (i > 0 && c.is_ascii_digit()))
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

// ---------------------------------------------------------------------------------------------
// Cost
//
// Kubernetes bounds CEL twice: when a CRD is registered, every rule's estimated worst-case cost
// (from the `maxItems`/`maxProperties`/`maxLength` of the schema, times the number of times the
// rule can run) must stay under a limit, and so must their total; when an object is validated,
// every call is stopped at a runtime budget. cel-rust tracks no cost, so both are estimates here,
// made by one walk of the expression: with the schema's bounds at registration, and with the
// sizes the object really has (largest value at each schema node) before each evaluation, so a
// rule whose nested comprehensions would run for minutes is refused before it starts. The cost
// units follow cel-go's estimator loosely (1 per operation, a tenth per string character, one
// per element a comprehension visits).

/// The largest estimated cost of one rule, times the times it can run (Kubernetes'
/// `StaticEstimatedCostLimit`).
pub(crate) const RULE_COST_LIMIT: u64 = 10_000_000;

/// The largest estimated cost of all the rules of a CRD (`StaticEstimatedCRDCostLimit`).
pub(crate) const CRD_COST_LIMIT: u64 = 100_000_000;

/// The largest cost of one evaluation of a rule, estimated from the object's real sizes
/// (Kubernetes' `PerCallLimit`).
pub(crate) const CALL_COST_LIMIT: u64 = 1_000_000;

/// The cost all the rule evaluations of one object may add up to (`RuntimeCELCostBudget`).
pub(crate) const OBJECT_COST_BUDGET: u64 = 10_000_000;

/// What an unbounded list, map or string is assumed to hold: as much as a request of the
/// Kubernetes API server's maximum size (3 MiB) can.
const MAX_REQUEST_BYTES: u64 = 3 * 1024 * 1024;

/// What the estimator knows about a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Str,
    List,
    Map,
    /// An integer: its size bounds its value (what `lists.range(n)` builds from).
    Int,
    /// A bool, double, null, timestamp or the like.
    Scalar,
    /// Anything (schemaless, or computed in a way not followed).
    Unknown,
}

/// An abstract value: its kind, a bound on its size (elements of a list or map, characters of a
/// string, the value of an integer), its schema when known, and a bound on its whole weight
/// (values and characters inside it), which also bounds anything inside whose schema is not
/// known.
#[derive(Debug, Clone, Copy)]
struct Abs<'s> {
    kind: Kind,
    size: u64,
    schema: Option<&'s Schema>,
    below: u64,
}

impl<'s> Abs<'s> {
    fn scalar() -> Abs<'s> {
        Abs { kind: Kind::Scalar, size: 0, schema: None, below: 0 }
    }

    fn of(kind: Kind, size: u64, below: u64) -> Abs<'s> {
        Abs { kind, size, schema: None, below }
    }

    /// Something inside this value that the schema does not describe.
    fn unknown_inside(&self) -> Abs<'s> {
        Abs::of(Kind::Unknown, self.below, self.below)
    }

    /// The length a string operation works through (0 for what is not text).
    fn text(&self) -> u64 {
        match self.kind {
            Kind::Str | Kind::Unknown => self.size,
            _ => 0,
        }
    }

    /// The elements a comprehension visits, or `in` and equality look through.
    fn count(&self) -> u64 {
        match self.kind {
            Kind::List | Kind::Map | Kind::Unknown => self.size,
            _ => 0,
        }
    }

    /// What comparing it with another value works through: a tenth per character, one per
    /// element of everything inside.
    fn weight(&self) -> u64 {
        match self.kind {
            Kind::Str => tenth(self.size),
            Kind::List | Kind::Map | Kind::Unknown => self.size.max(self.below),
            Kind::Int | Kind::Scalar => 1,
        }
    }

    /// What both of two values may be.
    fn join(self, other: Abs<'s>) -> Abs<'s> {
        let schema = match (self.schema, other.schema) {
            (Some(x), Some(y)) if std::ptr::eq(x, y) => Some(x),
            _ => None,
        };
        Abs {
            kind: if self.kind == other.kind { self.kind } else { Kind::Unknown },
            size: self.size.max(other.size),
            schema,
            below: self.below.max(other.below),
        }
    }
}

/// A tenth, rounded up: cel-go's cost factor for traversing a string.
fn tenth(n: u64) -> u64 {
    n.div_ceil(10)
}

fn kind_of(s: &Schema) -> Kind {
    match s.type_ {
        _ if s.int_or_string || s.preserve_unknown_fields && s.type_.is_none() => Kind::Unknown,
        Some(SchemaType::String) => Kind::Str,
        Some(SchemaType::Array) => Kind::List,
        Some(SchemaType::Object) => Kind::Map,
        Some(SchemaType::Integer) => Kind::Int,
        Some(SchemaType::Number) | Some(SchemaType::Boolean) => Kind::Scalar,
        None => Kind::Unknown,
    }
}

/// Where the sizes of schema nodes come from: the schema's declared bounds, or an object.
trait Sizes<'s> {
    fn node(&self, s: &'s Schema) -> Abs<'s>;
}

/// The bounds a schema declares (`maxItems`, `maxProperties`, `maxLength`, `maximum`), or what a
/// request of the largest size could hold where it declares none.
#[derive(Default)]
struct Declared {
    /// Subtree weights already worked out, by schema node.
    weights: std::cell::RefCell<HashMap<*const Schema, u64>>,
}

impl Declared {
    /// What a value of schema `s` can weigh at most: its values and characters, all the way
    /// down, and never more than a request holds.
    fn weight(&self, s: &Schema) -> u64 {
        if let Some(w) = self.weights.borrow().get(&(s as *const Schema)) {
            return *w;
        }
        let a = self.node_size(s);
        let w = match a.0 {
            Kind::Str => 1 + a.1,
            Kind::Int | Kind::Scalar => 1,
            Kind::Unknown => MAX_REQUEST_BYTES,
            Kind::List => 1u64
                .saturating_add(a.1.saturating_mul(s.items.as_deref().map_or(MAX_REQUEST_BYTES, |i| self.weight(i)))),
            Kind::Map => {
                let mut w = s
                    .properties
                    .iter()
                    .fold(1u64, |w, (k, p)| w.saturating_add(k.len() as u64).saturating_add(self.weight(p)));
                match &s.additional_properties {
                    Some(AdditionalProperties::Schema(ap)) => w = w.saturating_add(a.1.saturating_mul(self.weight(ap))),
                    _ if s.allows_unknown_fields() => w = MAX_REQUEST_BYTES,
                    _ => {}
                }
                w
            }
        }
        .min(MAX_REQUEST_BYTES);
        self.weights.borrow_mut().insert(s as *const Schema, w);
        w
    }

    fn node_size(&self, s: &Schema) -> (Kind, u64) {
        let kind = kind_of(s);
        let size = match kind {
            Kind::Str => s.max_length.unwrap_or(MAX_REQUEST_BYTES),
            Kind::List => s.max_items.unwrap_or_else(|| unbounded_count(s.items.as_deref(), false)),
            Kind::Map => match &s.additional_properties {
                Some(AdditionalProperties::Schema(ap)) => {
                    s.max_properties.unwrap_or_else(|| unbounded_count(Some(ap), true))
                }
                _ if s.allows_unknown_fields() => s.max_properties.unwrap_or_else(|| unbounded_count(None, true)),
                // Only the declared properties.
                _ => s.properties.len() as u64,
            },
            Kind::Int => match s.maximum {
                Some(m) if m >= 0.0 => m as u64,
                Some(_) => 0,
                None => i64::MAX as u64,
            },
            Kind::Scalar => 0,
            Kind::Unknown => s.max_length.or(s.max_items).or(s.max_properties).unwrap_or(MAX_REQUEST_BYTES),
        };
        (kind, size)
    }
}

impl<'s> Sizes<'s> for Declared {
    fn node(&self, s: &'s Schema) -> Abs<'s> {
        let (kind, size) = self.node_size(s);
        Abs { kind, size, schema: Some(s), below: self.weight(s) }
    }
}

/// How many elements of schema `item` a request of the largest size holds (Kubernetes divides
/// the request size by the smallest serialized element plus its comma); map entries add a key.
fn unbounded_count(item: Option<&Schema>, map: bool) -> u64 {
    let value = match item.map(kind_of) {
        Some(Kind::Int) | Some(Kind::Unknown) | None => 1,
        Some(Kind::Str) | Some(Kind::List) | Some(Kind::Map) => 2,
        Some(Kind::Scalar) => match item.and_then(|s| s.type_) {
            Some(SchemaType::Boolean) => 4,
            _ => 1,
        },
    };
    let entry = if map { value + 3 } else { value };
    MAX_REQUEST_BYTES / (entry + 1)
}

/// The sizes an object (and its previous version) really has: per schema node, the largest
/// value found there, and the largest weight (nodes plus string bytes) of a subtree there, which
/// bounds anything inside it that the schema does not describe. One walk, linear in the object.
pub(crate) struct Observed {
    by_node: HashMap<*const Schema, (u64, u64)>,
}

impl Observed {
    pub(crate) fn of(s: &Schema, v: &Value, old: Option<&Value>) -> Observed {
        let mut o = Observed { by_node: HashMap::new() };
        o.walk(Some(s), v, 0);
        if let Some(old) = old {
            o.walk(Some(s), old, 0);
        }
        o
    }

    /// Records `v` (at schema `s`) and returns its weight.
    fn walk(&mut self, s: Option<&Schema>, v: &Value, depth: usize) -> u64 {
        // Deeper than CEL sees it: the conversion stops there too.
        if depth > MAX_CEL_DEPTH {
            return 1;
        }
        let (size, weight) = match v {
            Value::String(st) => (st.len() as u64, 1 + st.len() as u64),
            Value::Number(n) => (n.as_u64().unwrap_or(0), 1),
            Value::Array(items) => {
                let item = s.and_then(|s| s.items.as_deref());
                let inside: u64 = items.iter().map(|it| self.walk(item, it, depth + 1)).fold(0, u64::saturating_add);
                (items.len() as u64, 1 + inside)
            }
            Value::Object(map) => {
                let extra = s.and_then(|s| match &s.additional_properties {
                    Some(AdditionalProperties::Schema(ap)) => Some(&**ap),
                    _ => None,
                });
                let mut inside = 0u64;
                for (k, child) in map {
                    let child_schema = s.and_then(|s| s.properties.get(k)).or(extra);
                    inside =
                        inside.saturating_add(k.len() as u64).saturating_add(self.walk(child_schema, child, depth + 1));
                }
                (map.len() as u64, 1 + inside)
            }
            Value::Bool(_) | Value::Null => (0, 1),
        };
        if let Some(s) = s {
            let e = self.by_node.entry(s as *const Schema).or_insert((0, 0));
            e.0 = e.0.max(size);
            e.1 = e.1.max(weight);
        }
        weight
    }
}

impl<'s> Sizes<'s> for Observed {
    fn node(&self, s: &'s Schema) -> Abs<'s> {
        // A node the object does not reach holds nothing.
        let (size, weight) = self.by_node.get(&(s as *const Schema)).copied().unwrap_or((0, 0));
        Abs { kind: kind_of(s), size, schema: Some(s), below: weight }
    }
}

/// The estimated cost of one evaluation of `program` at a node of schema `s`, from the bounds
/// the schema declares: what CRD registration checks (times the number of runs).
#[cfg(test)]
pub(crate) fn declared_cost(program: &cel::Program, s: &Schema) -> u64 {
    estimate(program.expression(), s, &Declared::default())
}

/// The cost of one evaluation of `program` at a node of schema `s`, estimated from the sizes an
/// object has: checked before each evaluation.
pub(crate) fn observed_cost(program: &cel::Program, s: &Schema, observed: &Observed) -> u64 {
    estimate(program.expression(), s, observed)
}

/// Checks the estimated costs of the rules (and message expressions) of a whole schema, as CRD
/// registration does: each, times the number of times it can run (the product of the sizes of
/// the lists and maps above it), must stay within [`RULE_COST_LIMIT`], and all of them within
/// [`CRD_COST_LIMIT`]. `path` names the root in errors.
pub(crate) fn check_costs(root: &Schema, path: &str) -> Result<(), SchemaError> {
    let declared = Declared::default();
    let mut total = 0u64;
    cost_walk(root, path, 1, &declared, &mut total)?;
    if total > CRD_COST_LIMIT {
        return Err(SchemaError {
            path: path.to_string(),
            message: format!(
                "Forbidden: {}",
                over_budget(
                    "x-kubernetes-validations estimated rule cost total for entire OpenAPIv3 schema",
                    total,
                    CRD_COST_LIMIT
                )
            ),
        });
    }
    Ok(())
}

fn cost_walk(s: &Schema, path: &str, times: u64, declared: &Declared, total: &mut u64) -> Result<(), SchemaError> {
    for (i, rule) in s.validations.iter().enumerate() {
        let parts = [
            ("rule", "rule", rule.program.as_deref(), Some(rule.rule.as_str())),
            (
                "messageExpression",
                "messageExpression",
                rule.message_program.as_deref(),
                rule.message_expression.as_deref(),
            ),
        ];
        for (field, what, program, source) in parts {
            let (Some(program), Some(source)) = (program, source) else { continue };
            let cost = estimate(program.expression(), s, declared).saturating_mul(times);
            if cost > RULE_COST_LIMIT {
                return Err(SchemaError {
                    path: format!("{path}.x-kubernetes-validations[{i}].{field}"),
                    message: format!(
                        "Forbidden: {}: {source:?}",
                        over_budget(&format!("estimated {what} cost"), cost, RULE_COST_LIMIT)
                    ),
                });
            }
            *total = total.saturating_add(cost);
        }
    }
    for (name, p) in &s.properties {
        cost_walk(p, &format!("{path}.properties.{name}"), times, declared, total)?;
    }
    if let Some(items) = s.items.as_deref() {
        let n = declared.node_size(s).1.max(1);
        cost_walk(items, &format!("{path}.items"), times.saturating_mul(n), declared, total)?;
    }
    if let Some(AdditionalProperties::Schema(ap)) = &s.additional_properties {
        let n = declared.node_size(s).1.max(1);
        cost_walk(ap, &format!("{path}.additionalProperties"), times.saturating_mul(n), declared, total)?;
    }
    Ok(())
}

/// Kubernetes' wording for a cost over its limit.
pub(crate) fn over_budget(what: &str, cost: u64, limit: u64) -> String {
    let factor = cost as f64 / limit as f64;
    let factor = if factor > 100.0 {
        "more than 100x".to_string()
    } else if factor < 1.5 {
        format!("{factor:.2}x")
    } else {
        format!("{factor:.1}x")
    };
    format!(
        "{what} exceeds budget by factor of {factor} (try simplifying the rule, or adding maxItems, maxProperties, and \
         maxLength where arrays, maps, and strings are declared)"
    )
}

fn estimate<'s>(expr: &'s cel::IdedExpr, s: &'s Schema, sizes: &dyn Sizes<'s>) -> u64 {
    let root = sizes.node(s);
    let mut e = Estimator { sizes, vars: vec![("self", root), ("oldSelf", root)] };
    e.expr(expr).0
}

struct Estimator<'s, 'z> {
    sizes: &'z dyn Sizes<'s>,
    /// Variables in scope, innermost last.
    vars: Vec<(&'s str, Abs<'s>)>,
}

impl<'s> Estimator<'s, '_> {
    fn lookup(&self, name: &str) -> Abs<'s> {
        match self.vars.iter().rev().find(|(n, _)| *n == name) {
            Some((_, a)) => *a,
            // A type name (`int`, `string`) or something unknown: nothing to iterate.
            None => Abs::scalar(),
        }
    }

    /// The field `name` (a CEL name, escaped) of a value.
    fn field(&self, a: Abs<'s>, name: &str) -> Abs<'s> {
        let Some(s) = a.schema else { return a.unknown_inside() };
        // Most names are their own escape; only escaped ones (`x__dash__y`) need the search.
        let declared = match s.properties.get_key_value(name) {
            Some((k, p)) if escape_property(k).is_some_and(|e| e == name) => Some(p),
            _ if name.contains("__") => {
                s.properties.iter().find(|(k, _)| escape_property(k).is_some_and(|e| e == name)).map(|(_, p)| p)
            }
            _ => None,
        };
        if let Some(p) = declared {
            return self.sizes.node(p);
        }
        match &s.additional_properties {
            Some(AdditionalProperties::Schema(ap)) => self.sizes.node(ap),
            _ => a.unknown_inside(),
        }
    }

    /// An element of a list, or a value of a map.
    fn element(&self, a: Abs<'s>) -> Abs<'s> {
        let Some(s) = a.schema else { return a.unknown_inside() };
        match (&s.items, &s.additional_properties) {
            (Some(item), _) if a.kind == Kind::List => self.sizes.node(item),
            (_, Some(AdditionalProperties::Schema(ap))) if a.kind == Kind::Map => self.sizes.node(ap),
            _ => a.unknown_inside(),
        }
    }

    /// What a comprehension over `a` binds its variable to: elements of a list, keys of a map.
    fn iterated(&self, a: Abs<'s>) -> Abs<'s> {
        match a.kind {
            Kind::Map => {
                let longest = a
                    .schema
                    .filter(|s| !s.allows_unknown_fields())
                    .map(|s| s.properties.keys().map(|k| k.len() as u64).max().unwrap_or(0));
                Abs::of(Kind::Str, longest.unwrap_or(a.below), 0)
            }
            _ => self.element(a),
        }
    }

    /// The cost of `e` and what its value is.
    fn expr(&mut self, e: &'s cel::IdedExpr) -> (u64, Abs<'s>) {
        use cel::common::ast::{EntryExpr, Expr, LiteralValue};
        match &e.expr {
            Expr::Literal(l) => {
                let a = match l {
                    LiteralValue::String(st) => Abs::of(Kind::Str, st.inner().len() as u64, 0),
                    LiteralValue::Bytes(b) => Abs::of(Kind::Str, b.inner().len() as u64, 0),
                    LiteralValue::Int(i) => Abs::of(Kind::Int, (*i.inner()).max(0) as u64, 0),
                    LiteralValue::UInt(u) => Abs::of(Kind::Int, *u.inner(), 0),
                    _ => Abs::scalar(),
                };
                (0, a)
            }
            Expr::Ident(name) => (1, self.lookup(name)),
            Expr::Select(sel) => {
                let (cost, operand) = self.expr(&sel.operand);
                let a = if sel.test { Abs::scalar() } else { self.field(operand, &sel.field) };
                (cost.saturating_add(1), a)
            }
            Expr::List(list) => {
                let mut cost = 10u64;
                let mut item: Option<Abs<'s>> = None;
                for el in &list.elements {
                    let (c, a) = self.expr(el);
                    cost = cost.saturating_add(c);
                    item = Some(item.map_or(a, |i| i.join(a)));
                }
                let below = item.map_or(0, |i| i.size.max(i.below));
                (cost, Abs::of(Kind::List, list.elements.len() as u64, below))
            }
            Expr::Map(map) => {
                let mut cost = 30u64;
                let mut below = 0u64;
                for entry in &map.entries {
                    let parts: Vec<&'s cel::IdedExpr> = match &entry.expr {
                        EntryExpr::MapEntry(m) => vec![&m.key, &m.value],
                        EntryExpr::StructField(f) => vec![&f.value],
                    };
                    for p in parts {
                        let (c, a) = self.expr(p);
                        cost = cost.saturating_add(c);
                        below = below.max(a.size).max(a.below);
                    }
                }
                (cost, Abs::of(Kind::Map, map.entries.len() as u64, below))
            }
            Expr::Struct(st) => {
                let mut cost = 40u64;
                for entry in &st.entries {
                    if let EntryExpr::StructField(f) = &entry.expr {
                        cost = cost.saturating_add(self.expr(&f.value).0);
                    }
                }
                (cost, Abs::scalar())
            }
            Expr::Comprehension(c) => self.comprehension(c),
            Expr::Call(call) => self.call(call),
            Expr::Unspecified => (0, Abs::scalar()),
        }
    }

    fn comprehension(&mut self, c: &'s cel::common::ast::ComprehensionExpr) -> (u64, Abs<'s>) {
        let (range_cost, range) = self.expr(&c.iter_range);
        let (init_cost, init) = self.expr(&c.accu_init);
        let n = range.count();
        let item = self.iterated(range);
        self.vars.push((c.accu_var.as_str(), init));
        self.vars.push((c.iter_var.as_str(), item));
        let (cond_cost, _) = self.expr(&c.loop_cond);
        // `map` and `filter` append to their result in place (cel-rust does not copy the
        // accumulator each time), so the step costs what the appended element costs.
        let (step_cost, accu) = match append_step(c) {
            Some((guard, appended)) => {
                let guard_cost = guard.map_or(0, |g| self.expr(g).0);
                let (cost, list) = self.expr(appended);
                let accu = Abs::of(Kind::List, n, list.below);
                (guard_cost.saturating_add(cost).saturating_add(1), accu)
            }
            None => (self.expr(&c.loop_step).0, init),
        };
        self.vars.pop();
        self.vars.pop();
        self.vars.push((c.accu_var.as_str(), accu));
        let (result_cost, result) = self.expr(&c.result);
        self.vars.pop();
        let per_item = cond_cost.saturating_add(step_cost).max(1);
        let cost =
            range_cost.saturating_add(init_cost).saturating_add(n.saturating_mul(per_item)).saturating_add(result_cost);
        (cost, result)
    }

    fn call(&mut self, call: &'s cel::common::ast::CallExpr) -> (u64, Abs<'s>) {
        use cel::common::ast::{operators as op, Expr};
        // `lists.range(n)` parses as a method `range` of an identifier `lists` that is no
        // variable: a namespaced function.
        let namespace = match call.target.as_deref().map(|t| &t.expr) {
            Some(Expr::Ident(ns)) if !self.vars.iter().any(|(n, _)| n == ns) => Some(ns.as_str()),
            _ => None,
        };
        let qualified = namespace.map(|ns| format!("{ns}.{}", call.func_name));
        let name = qualified.as_deref().unwrap_or(call.func_name.as_str());
        let target = call.target.as_deref().filter(|_| namespace.is_none()).map(|t| self.expr(t));
        let args: Vec<(u64, Abs<'s>)> = call.args.iter().map(|a| self.expr(a)).collect();
        let inputs = target.iter().chain(args.iter()).fold(0u64, |c, (x, _)| c.saturating_add(*x));
        // The receiver of a method, else the first argument.
        let first = target.map(|t| t.1).or_else(|| args.first().map(|a| a.1)).unwrap_or_else(Abs::scalar);
        let second = if target.is_some() { args.first() } else { args.get(1) }.map_or_else(Abs::scalar, |a| a.1);
        let text: u64 = target.iter().chain(args.iter()).fold(0u64, |t, (_, a)| t.saturating_add(a.text()));
        let (own, result) = match name {
            op::LOGICAL_AND | op::LOGICAL_OR | op::LOGICAL_NOT | op::NOT_STRICTLY_FALSE => (0, Abs::scalar()),
            op::CONDITIONAL => {
                // Only one branch runs.
                let (c0, c1, c2) =
                    (args.first().map_or(0, |a| a.0), args.get(1).map_or(0, |a| a.0), args.get(2).map_or(0, |a| a.0));
                let result = match (args.get(1), args.get(2)) {
                    (Some(a), Some(b)) => a.1.join(b.1),
                    _ => Abs::scalar(),
                };
                return (c0.saturating_add(c1.max(c2)), result);
            }
            op::EQUALS | op::NOT_EQUALS => (1 + first.weight().min(second.weight()), Abs::scalar()),
            op::LESS | op::LESS_EQUALS | op::GREATER | op::GREATER_EQUALS => {
                (1 + tenth(first.text().min(second.text())), Abs::scalar())
            }
            op::ADD => match (first.kind, second.kind) {
                (Kind::Int, Kind::Int) => (1, Abs::of(Kind::Int, first.size.saturating_add(second.size), 0)),
                (Kind::Str, _) | (_, Kind::Str) => (
                    1 + tenth(first.size.saturating_add(second.size)),
                    Abs::of(Kind::Str, first.size.saturating_add(second.size), 0),
                ),
                (Kind::Scalar, _) | (_, Kind::Scalar) => (1, Abs::scalar()),
                _ => {
                    let size = first.size.saturating_add(second.size);
                    let joined = first.join(second);
                    (1 + size, Abs { kind: joined.kind, size, schema: joined.schema, below: joined.below })
                }
            },
            op::MULTIPLY if first.kind == Kind::Int => {
                (1, Abs::of(Kind::Int, first.size.saturating_mul(second.size), 0))
            }
            op::SUBSTRACT | op::DIVIDE if first.kind == Kind::Int => (1, Abs::of(Kind::Int, first.size, 0)),
            op::MODULO if second.kind == Kind::Int => (1, Abs::of(Kind::Int, second.size, 0)),
            op::INDEX | op::OPT_INDEX => (1, self.element(first)),
            op::OPT_SELECT => (1, first.unknown_inside()),
            op::IN => (1 + second.count(), Abs::scalar()),
            "size" => (1, Abs::of(Kind::Int, first.size, 0)),
            "matches" => (1 + tenth(first.text()).saturating_mul(second.text().div_ceil(4).max(1)), Abs::scalar()),
            "split" => (
                1 + tenth(first.text()),
                Abs::of(Kind::List, first.text().saturating_add(1), first.text().saturating_mul(2).saturating_add(1)),
            ),
            "join" => (1 + first.count() + tenth(first.below), Abs::of(Kind::Str, first.below, 0)),
            "replace" => {
                let grown = first.text().saturating_mul(args.get(1).map_or(1, |a| a.1.text().max(1)));
                (1 + tenth(grown), Abs::of(Kind::Str, grown, 0))
            }
            "contains" | "startsWith" | "endsWith" | "indexOf" | "lastIndexOf" | "charAt" => {
                (1 + tenth(text), Abs::scalar())
            }
            "lowerAscii" | "upperAscii" | "trim" | "substring" | "reverse" if first.kind == Kind::Str => {
                (1 + tenth(first.size), Abs::of(Kind::Str, first.size, 0))
            }
            "format" | "strings.quote" | "string" | "base64.encode" | "base64.decode" => {
                let inside = target.iter().chain(args.iter()).fold(0u64, |t, (_, a)| match a.kind {
                    Kind::List | Kind::Map => t.saturating_add(a.below),
                    _ => t,
                });
                let out = text.saturating_add(inside).saturating_mul(2);
                (1 + tenth(out), Abs::of(Kind::Str, out, 0))
            }
            "sort" | "@sortByAssociatedKeys" => {
                let n = first.count();
                (1 + n.saturating_mul(64 - n.leading_zeros() as u64), first)
            }
            "distinct" => (1 + first.count().saturating_mul(first.count()), first),
            "reverse" | "slice" => (1 + first.count(), first),
            "flatten" => {
                let inner = self.element(first);
                let size = first.count().saturating_mul(inner.count().max(1));
                (1 + size, Abs::of(Kind::List, size, inner.below))
            }
            "lists.range" => (1 + first.size, Abs::of(Kind::List, first.size, first.size)),
            "max" | "min" | "math.greatest" | "math.least" => (1 + first.count() + second.count(), Abs::scalar()),
            "int" | "uint" | "double" | "bool" | "bytes" | "duration" | "timestamp" | "dyn" | "type" => {
                (1 + tenth(text), if name == "bytes" { Abs::of(Kind::Str, first.size, 0) } else { Abs::scalar() })
            }
            "optional.of" | "value" | "orValue" | "or" => (1, first.join(second)),
            _ => (1 + tenth(text), Abs::of(Kind::Unknown, first.size.max(second.size), first.below.max(second.below))),
        };
        (inputs.saturating_add(own), result)
    }
}

/// The guard and appended list of a `map`/`filter` step (`@result + [x]`, or
/// `cond ? @result + [x] : @result`), which cel-rust runs by appending in place.
fn append_step(c: &cel::common::ast::ComprehensionExpr) -> Option<(Option<&cel::IdedExpr>, &cel::IdedExpr)> {
    use cel::common::ast::{operators as op, Expr};
    fn is_accu(e: &cel::IdedExpr, accu: &str) -> bool {
        matches!(&e.expr, Expr::Ident(n) if n == accu)
    }
    fn appended<'e>(e: &'e cel::IdedExpr, accu: &str) -> Option<&'e cel::IdedExpr> {
        match &e.expr {
            Expr::Call(call) if call.func_name == op::ADD && call.target.is_none() => match call.args.as_slice() {
                [lhs, rhs] if is_accu(lhs, accu) && matches!(rhs.expr, Expr::List(_)) => Some(rhs),
                _ => None,
            },
            _ => None,
        }
    }
    let accu = c.accu_var.as_str();
    if !is_accu(&c.result, accu) {
        return None;
    }
    match &c.loop_step.expr {
        Expr::Call(call) if call.func_name == op::CONDITIONAL && call.target.is_none() => match call.args.as_slice() {
            [guard, step, otherwise] if is_accu(otherwise, accu) => appended(step, accu).map(|a| (Some(guard), a)),
            _ => None,
        },
        _ => appended(&c.loop_step, accu).map(|a| (None, a)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema(v: Value) -> Schema {
        Schema::parse(&v, "openAPIV3Schema").unwrap()
    }

    fn list(items: Value, max_items: Option<u64>, rule: &str) -> Schema {
        let mut s = json!({"type": "array", "items": items, "x-kubernetes-validations": [{"rule": rule}]});
        if let Some(m) = max_items {
            s["maxItems"] = json!(m);
        }
        schema(s)
    }

    fn declared(s: &Schema) -> u64 {
        declared_cost(s.validations[0].program.as_deref().unwrap(), s)
    }

    fn observed(s: &Schema, v: &Value) -> u64 {
        observed_cost(s.validations[0].program.as_deref().unwrap(), s, &Observed::of(s, v, None))
    }

    #[test]
    fn declared_bounds_drive_the_estimate() {
        let ints = json!({"type": "integer"});
        let one = list(ints.clone(), None, "self.all(x, x > 0)");
        let c = declared(&one);
        assert!(c > 1_000_000 && c < RULE_COST_LIMIT, "one pass over an unbounded list fits: {c}");
        let nested = list(ints.clone(), None, "self.all(x, self.all(y, x != y))");
        assert!(declared(&nested) > 100 * RULE_COST_LIMIT, "{}", declared(&nested));
        let bounded = list(ints.clone(), Some(100), "self.all(x, self.all(y, x != y))");
        let c = declared(&bounded);
        assert!(c > 10_000 && c < 100_000, "{c}");
        // map and filter build their result in place: linear, not quadratic.
        let mapped = list(ints, Some(1000), "self.map(x, x * 2).filter(y, y > 3).size() < 10");
        assert!(declared(&mapped) < 50_000, "{}", declared(&mapped));
        // String work is a tenth per character of maxLength (or of a whole request).
        let st = |max: Option<u64>| {
            let mut v = json!({"type": "string", "x-kubernetes-validations": [{"rule": "self.startsWith('a')"}]});
            if let Some(m) = max {
                v["maxLength"] = json!(m);
            }
            declared(&schema(v))
        };
        assert!(st(Some(100)) < 20);
        assert!(st(None) > 300_000);
        // A rule over a fixed object sees only its declared properties.
        let obj = schema(json!({
            "type": "object",
            "x-kubernetes-validations": [{"rule": "self.all(k, k != 'x') && self == oldSelf"}],
            "properties": {"a": {"type": "integer"}, "b": {"type": "string", "maxLength": 10}}
        }));
        assert!(declared(&obj) < 100, "{}", declared(&obj));
    }

    #[test]
    fn registration_refuses_costly_rules_naming_path_and_rule() {
        let s = schema(json!({
            "type": "object",
            "properties": {"spec": {"type": "object", "properties": {"items": {
                "type": "array",
                "items": {"type": "string"},
                "x-kubernetes-validations": [{"rule": "self.all(x, self.exists(y, x == y))"}]
            }}}}
        }));
        let e = check_costs(&s, "openAPIV3Schema").unwrap_err();
        assert_eq!(e.path, "openAPIV3Schema.properties.spec.properties.items.x-kubernetes-validations[0].rule");
        assert!(
            e.message.starts_with("Forbidden: estimated rule cost exceeds budget by factor of more than 100x"),
            "{e}"
        );
        assert!(e.message.ends_with(": \"self.all(x, self.exists(y, x == y))\""), "{e}");

        // A cheap rule on the items of an unbounded list runs once per item: counted that often.
        let per_item = |max_items: Option<u64>| {
            let mut l = json!({"type": "array", "items": {
                "type": "object",
                "properties": {"name": {"type": "string"}},
                "x-kubernetes-validations": [{"rule": "self.name.startsWith('x')"}]
            }});
            if let Some(m) = max_items {
                l["maxItems"] = json!(m);
            }
            check_costs(&schema(json!({"type": "object", "properties": {"l": l}})), "openAPIV3Schema")
        };
        let e = per_item(None).unwrap_err();
        assert_eq!(e.path, "openAPIV3Schema.properties.l.items.x-kubernetes-validations[0].rule");
        assert!(per_item(Some(10)).is_ok());

        // Each rule fits, together they do not.
        let rule = "self.all(x, self.all(y, x != y))";
        let one = declared(&list(json!({"type": "integer"}), Some(1200), rule));
        assert!(one > CRD_COST_LIMIT / 20 && one < RULE_COST_LIMIT, "{one}");
        let rules: Vec<Value> = (0..20).map(|_| json!({"rule": rule})).collect();
        let many = schema(
            json!({"type": "array", "maxItems": 1200, "items": {"type": "integer"}, "x-kubernetes-validations": rules}),
        );
        let e = check_costs(&many, "openAPIV3Schema").unwrap_err();
        assert_eq!(e.path, "openAPIV3Schema");
        assert!(e.message.contains("estimated rule cost total for entire OpenAPIv3 schema exceeds budget"), "{e}");
        let few = schema(
            json!({"type": "array", "maxItems": 1200, "items": {"type": "integer"}, "x-kubernetes-validations": rules[..5]}),
        );
        assert!(check_costs(&few, "openAPIV3Schema").is_ok());
    }

    #[test]
    fn observed_sizes_drive_the_runtime_estimate() {
        let nested = list(json!({"type": "integer"}), None, "self.all(x, self.all(y, x != y))");
        let small = json!((0..10).collect::<Vec<_>>());
        let large = json!((0..30_000).collect::<Vec<_>>());
        assert!(observed(&nested, &small) < 1000);
        assert!(observed(&nested, &large) > 100 * CALL_COST_LIMIT);
        // Sizes inside the elements count, as the largest found at their schema node.
        let rows = list(
            json!({"type": "object", "properties": {"cells": {"type": "array", "items": {"type": "string"}}}}),
            None,
            "self.all(r, r.cells.all(c, c.size() < 3))",
        );
        let v = json!([{"cells": ["a"]}, {"cells": (0..500).map(|i| i.to_string()).collect::<Vec<_>>()}]);
        let c = observed(&rows, &v);
        assert!((1000..10_000).contains(&c), "two rows, at most 500 cells each: {c}");
        // Schemaless parts are bounded by the weight of what holds them.
        let free = schema(json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true,
            "x-kubernetes-validations": [{"rule": "self.x.all(a, self.x.all(b, a == b))"}]}));
        assert!(observed(&free, &json!({"x": [1, 2, 3]})) < 1000);
        assert!(observed(&free, &json!({"x": (0..5000).collect::<Vec<_>>()})) > CALL_COST_LIMIT);
    }

    #[test]
    fn estimates_cover_every_expression_form() {
        // Literals, maps, lists, ternaries, indexes, optionals, string and list functions: the
        // walk handles all of them and stays small on small bounds.
        let s = schema(json!({
            "type": "object",
            "x-kubernetes-validations": [{"rule": "(self.n > 1 ? [1, 2] : [3]).size() == 2 && {'a': self.s}['a'] == self.s && self.s.split(',').join('-').lowerAscii().matches('^[a-z-]*$') && self.l[0] in self.l && self.l.sort().distinct().reverse().slice(0, 1) == [1] && lists.range(3).size() == 3 && string(self.n) != '' && self.?s.orValue('') != 'x' && [[1], [2]].flatten().size() == 2 && self.l.exists_one(x, x == 1) && cel.bind(z, self.s, z == z)"}],
            "properties": {
                "n": {"type": "integer", "maximum": 10},
                "s": {"type": "string", "maxLength": 20},
                "l": {"type": "array", "maxItems": 5, "items": {"type": "integer"}}
            }
        }));
        let c = declared(&s);
        assert!(c > 50 && c < 2_000, "{c}");
        // Escaped property names find their schema (and its bounds).
        let escaped = schema(json!({
            "type": "object",
            "x-kubernetes-validations": [{"rule": "self.x__dash__y.all(a, self.x__dash__y.all(b, a == b))"}],
            "properties": {"x-y": {"type": "array", "maxItems": 10, "items": {"type": "integer"}}}
        }));
        assert!(declared(&escaped) < 1_000, "{}", declared(&escaped));
        // lists.range of an unbounded integer could build anything.
        let r =
            schema(json!({"type": "integer", "x-kubernetes-validations": [{"rule": "lists.range(self).size() >= 0"}]}));
        assert!(declared(&r) > RULE_COST_LIMIT);
        assert!(observed(&r, &json!(5)) < 100);
    }
}

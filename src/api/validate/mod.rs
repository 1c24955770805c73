//! Structural-schema defaulting and validation of objects, with Kubernetes apiextensions
//! semantics and Kubernetes-style field errors.
//!
//! [`apply_defaults`] fills in `default` values the way the API server does before storing a
//! custom resource, and [`validate`] checks an object against its CRD version's
//! `openAPIV3Schema`: types, `nullable`, `required`, `enum`, `pattern`, formats, numeric bounds,
//! lengths and counts, list semantics (`x-kubernetes-list-type` set/map), `allOf`/`anyOf`/
//! `oneOf`/`not`, and `x-kubernetes-validations` CEL rules (including transition rules against
//! the previous object). It deliberately does not prune, does not report unknown fields (that is
//! server-side apply's business), and does not look inside `metadata` (validated elsewhere). It
//! runs no rule whose cost, estimated from the object's sizes, is over Kubernetes' per-call limit
//! or the object's budget ([`crate::api::cel`]). Neither function panics on any input: CEL
//! evaluation runs under `catch_unwind`. Paths are rendered only when an error is reported, so outside CEL evaluation
//! validating a well-formed object allocates next to nothing.

use std::collections::{HashMap, HashSet};
use std::fmt::{self, Write as _};

use cel::common::types::CelOptional;
use serde_json::{Map, Number, Value};

use crate::api::cel::{
    compile_cel, new_context, observed_cost, run, to_val, Observed, CALL_COST_LIMIT, OBJECT_COST_BUDGET,
};
use crate::api::schema::{json_type_name, AdditionalProperties, ListType, Schema, SchemaType, ValidationRule};

/// One field error, printed in Kubernetes style.
///
/// `value` is the offending value already rendered the way Kubernetes prints it (strings quoted,
/// numbers bare, `"object"`/`"array"` for compound values); it is `None` for kinds whose message
/// carries no value, such as `Required value` or `Too long`.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    pub path: String,
    pub kind: FieldErrorKind,
    pub value: Option<String>,
    pub detail: String,
}

/// The kind of a [`FieldError`], after `field.ErrorType` of k8s.io/apimachinery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldErrorKind {
    Invalid,
    Required,
    NotSupported,
    TooLong,
    TooShort,
    TooMany,
    Forbidden,
    Duplicate,
}

impl FieldErrorKind {
    /// The text Kubernetes prints for the kind.
    pub fn as_str(self) -> &'static str {
        match self {
            FieldErrorKind::Invalid => "Invalid value",
            FieldErrorKind::Required => "Required value",
            FieldErrorKind::NotSupported => "Unsupported value",
            FieldErrorKind::TooLong => "Too long",
            FieldErrorKind::TooShort => "Too short",
            FieldErrorKind::TooMany => "Too many",
            FieldErrorKind::Forbidden => "Forbidden",
            FieldErrorKind::Duplicate => "Duplicate value",
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // apimachinery prints a nil path as "<nil>"; only object-wide errors have one here.
        let path = if self.path.is_empty() { "<nil>" } else { &self.path };
        write!(f, "{path}: {}", self.kind.as_str())?;
        if let Some(v) = &self.value {
            write!(f, ": {v}")?;
        }
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        Ok(())
    }
}

impl std::error::Error for FieldError {}

/// The detail of the error reported once when CEL rules were skipped because of type errors.
const RULES_SKIPPED: &str = "some validation rules were not checked because the object was \
                             invalid; correct the existing errors to complete validation";

/// Applies structural-schema defaults in place (Kubernetes defaulting semantics).
///
/// For every object node, each declared property that is absent, or null while not nullable
/// (the API server prunes such a null, then defaults the gap), receives a deep copy of its
/// `default`; then present children (properties, `additionalProperties` values, array items) are
/// defaulted recursively, including inside the defaults just inserted. Nothing is defaulted inside
/// a null. `allOf`/`anyOf`/`oneOf`/`not` never carry defaults in a structural schema and are
/// ignored.
pub fn apply_defaults(schema: &Schema, value: &mut Value) {
    default_node(schema, value);
}

fn default_node(s: &Schema, v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (name, prop) in &s.properties {
                let Some(default) = &prop.default else {
                    continue;
                };
                match map.get_mut(name) {
                    None => {
                        map.insert(name.clone(), default.clone());
                    }
                    // The API server prunes a null it would reject, then defaults the gap.
                    Some(slot) if slot.is_null() && !prop.nullable => *slot = default.clone(),
                    Some(_) => {}
                }
            }
            let extra = match &s.additional_properties {
                Some(AdditionalProperties::Schema(ap)) => Some(&**ap),
                _ => None,
            };
            for (key, child) in map.iter_mut() {
                if let Some(prop) = s.properties.get(key) {
                    default_node(prop, child);
                } else if let Some(ap) = extra {
                    default_null(ap, child);
                    default_node(ap, child);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item) = s.items.as_deref() {
                for it in items.iter_mut() {
                    default_null(item, it);
                    default_node(item, it);
                }
            }
        }
        _ => {}
    }
}

/// Whether [`apply_defaults`] would change `value` (it may answer `true` for a default equal to
/// what it replaces; never `false` when something would change).
pub fn needs_defaults(schema: &Schema, value: &Value) -> bool {
    needs_default_node(schema, value)
}

fn needs_default_node(s: &Schema, v: &Value) -> bool {
    match v {
        Value::Object(map) => {
            let gap = s.properties.iter().any(|(name, prop)| {
                prop.default.is_some()
                    && match map.get(name) {
                        None => true,
                        Some(slot) => slot.is_null() && !prop.nullable,
                    }
            });
            if gap {
                return true;
            }
            let extra = match &s.additional_properties {
                Some(AdditionalProperties::Schema(ap)) => Some(&**ap),
                _ => None,
            };
            map.iter().any(|(key, child)| match (s.properties.get(key), extra) {
                (Some(prop), _) => needs_default_node(prop, child),
                (None, Some(ap)) => needs_default_null(ap, child) || needs_default_node(ap, child),
                (None, None) => false,
            })
        }
        Value::Array(items) => s
            .items
            .as_deref()
            .is_some_and(|item| items.iter().any(|it| needs_default_null(item, it) || needs_default_node(item, it))),
        _ => false,
    }
}

fn needs_default_null(s: &Schema, v: &Value) -> bool {
    v.is_null() && !s.nullable && s.default.is_some()
}

/// Replaces a null the schema does not allow with the schema's default, if it has one.
fn default_null(s: &Schema, v: &mut Value) {
    if v.is_null() && !s.nullable {
        if let Some(d) = &s.default {
            *v = d.clone();
        }
    }
}

/// Validates a whole object (root schema = the CRD version's openAPIV3Schema) and returns every
/// error. `old` is the previous stored object, for CEL transition rules using `oldSelf` (None on
/// create).
///
/// Unknown fields are not errors. At the root, `metadata` is only checked to be an object and
/// `apiVersion`/`kind` to be strings. CEL rules of a node run only when the node's subtree has no
/// type errors; if any rule is skipped that way, one object-wide error says so, as the API server
/// does.
pub fn validate(schema: &Schema, value: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let mut v = Validator {
        path: Vec::with_capacity(16),
        errors: Vec::new(),
        cel: true,
        skipped_rules: false,
        cel_cost: 0,
        out_of_budget: false,
    };
    v.node(schema, value, old, true);
    if v.skipped_rules {
        v.errors.push(FieldError {
            path: String::new(),
            kind: FieldErrorKind::Invalid,
            value: None,
            detail: RULES_SKIPPED.to_string(),
        });
    }
    v.errors
}

// ---------------------------------------------------------------------------------------------
// The validator

/// One step of the path from the root to the node being validated, borrowed from the schema or
/// the value so that no string is built unless an error is reported.
#[derive(Clone, Copy)]
enum Seg<'a> {
    Field(&'a str),
    Index(usize),
    Key(&'a str),
}

struct Validator<'a> {
    path: Vec<Seg<'a>>,
    errors: Vec<FieldError>,
    /// False while checking `allOf`/`anyOf`/`oneOf`/`not` branches, which are value validations
    /// only.
    cel: bool,
    skipped_rules: bool,
    /// The estimated cost of the rules evaluated so far, against [`OBJECT_COST_BUDGET`].
    cel_cost: u64,
    /// Set once that budget ran out: no further rule runs.
    out_of_budget: bool,
}

impl<'a> Validator<'a> {
    fn path_string(&self) -> String {
        let mut s = String::new();
        for seg in &self.path {
            match seg {
                Seg::Field(name) => {
                    if !s.is_empty() {
                        s.push('.');
                    }
                    s.push_str(name);
                }
                Seg::Index(i) => {
                    let _ = write!(s, "[{i}]");
                }
                Seg::Key(k) => {
                    s.push('[');
                    s.push_str(k);
                    s.push(']');
                }
            }
        }
        s
    }

    fn push_error(&mut self, path: String, kind: FieldErrorKind, value: Option<String>, detail: String) {
        self.errors.push(FieldError { path, kind, value, detail });
    }

    fn error(&mut self, kind: FieldErrorKind, value: Option<String>, detail: impl FnOnce(&str) -> String) {
        let path = self.path_string();
        let detail = detail(&path);
        self.push_error(path, kind, value, detail);
    }

    /// `kube-openapi`'s "<path> in body ..." form of a detail.
    fn invalid(&mut self, value: String, what: impl FnOnce() -> String) {
        self.error(FieldErrorKind::Invalid, Some(value), |p| in_body(p, &what()));
    }

    fn child_error(&mut self, seg: Seg<'a>, kind: FieldErrorKind, value: Option<String>, detail: String) {
        self.path.push(seg);
        self.error(kind, value, |_| detail);
        self.path.pop();
    }

    /// Validates `v` against `s`; returns whether the subtree is free of type errors (the errors
    /// that block CEL evaluation).
    fn node(&mut self, s: &'a Schema, v: &'a Value, old: Option<&'a Value>, root: bool) -> bool {
        if v.is_null() {
            // A null is acceptable where it is declared nullable, and where no type is declared
            // at all (preserve-unknown-fields nodes, value-validation branches).
            if s.nullable || (s.type_.is_none() && !s.int_or_string) {
                return true;
            }
            self.type_error(s, v);
            return false;
        }
        if !type_matches(s, v) {
            self.type_error(s, v);
            return false;
        }
        if let Some(allowed) = &s.enum_values {
            if !allowed.iter().any(|a| json_eq(a, v)) {
                let list = allowed.iter().map(quote_enum_value).collect::<Vec<_>>().join(", ");
                self.error(FieldErrorKind::NotSupported, Some(render_value(v)), |_| {
                    format!("supported values: {list}")
                });
            }
        }
        let clean = match v {
            Value::String(st) => {
                self.string(s, st);
                true
            }
            Value::Number(n) => {
                self.number(s, n);
                true
            }
            Value::Array(items) => self.array(s, items, old),
            Value::Object(map) => self.object(s, map, old, root),
            Value::Bool(_) | Value::Null => true,
        };
        if !s.all_of.is_empty() || !s.any_of.is_empty() || !s.one_of.is_empty() || s.not.is_some() {
            self.combinators(s, v);
        }
        if self.cel && !s.validations.is_empty() {
            if clean {
                self.rules(s, v, old);
            } else {
                self.skipped_rules = true;
            }
        }
        clean
    }

    fn type_error(&mut self, s: &Schema, v: &Value) {
        let want = if s.int_or_string { "integer or string" } else { s.type_.map_or("object", SchemaType::as_str) };
        let got = json_type_name(v);
        self.invalid(format!("\"{got}\""), || format!("must be of type {want}: \"{got}\""));
    }

    fn string(&mut self, s: &Schema, st: &str) {
        if s.max_length.is_some() || s.min_length.is_some() {
            let n = st.chars().count() as u64;
            if let Some(max) = s.max_length.filter(|m| n > *m) {
                self.error(FieldErrorKind::TooLong, None, |_| format!("may not be longer than {max}"));
            }
            if let Some(min) = s.min_length.filter(|m| n < *m) {
                self.error(FieldErrorKind::TooShort, None, |_| format!("may not be shorter than {min}"));
            }
        }
        if let Some(re) = &s.pattern_regex {
            if !re.is_match(st) {
                let pattern = s.pattern.as_deref().unwrap_or_else(|| re.as_str());
                self.invalid(go_quote(st), || format!("should match '{pattern}'"));
            }
        }
        // `format` constrains strings only; an int-or-string's integer never reaches here.
        if let Some(format) = s.format.as_deref() {
            if !check_format(format, st) {
                let q = go_quote(st);
                self.invalid(q.clone(), || format!("must be of type {format}: {q}"));
            }
        }
    }

    fn number(&mut self, s: &Schema, n: &Number) {
        let x = n.as_f64().unwrap_or(f64::NAN);
        if let Some(max) = s.maximum {
            if s.exclusive_maximum && x >= max {
                self.invalid(n.to_string(), || format!("should be less than {max}"));
            } else if !s.exclusive_maximum && x > max {
                self.invalid(n.to_string(), || format!("should be less than or equal to {max}"));
            }
        }
        if let Some(min) = s.minimum {
            if s.exclusive_minimum && x <= min {
                self.invalid(n.to_string(), || format!("should be greater than {min}"));
            } else if !s.exclusive_minimum && x < min {
                self.invalid(n.to_string(), || format!("should be greater than or equal to {min}"));
            }
        }
        if let Some(m) = s.multiple_of.filter(|m| *m > 0.0) {
            if !is_multiple_of(n, m) {
                self.invalid(n.to_string(), || format!("should be a multiple of {m}"));
            }
        }
        if let Some(format @ ("int32" | "int64")) = s.format.as_deref() {
            let ok = match (n.as_i64(), n.as_u64(), n.as_f64()) {
                (Some(i), _, _) => format == "int64" || i32::try_from(i).is_ok(),
                (None, Some(_), _) => false,
                // 3.0 is an integer too; fractional values are not this format's business.
                (None, None, Some(f)) if f.fract() == 0.0 => {
                    let (lo, hi) = match format {
                        "int32" => (f64::from(i32::MIN), f64::from(i32::MAX)),
                        _ => (-9.223_372_036_854_776e18, 9.223_372_036_854_776e18),
                    };
                    f >= lo && (f < hi || (format == "int32" && f == hi))
                }
                _ => true,
            };
            if !ok {
                self.invalid(n.to_string(), || format!("must be of type {format}: {n}"));
            }
        }
    }

    fn array(&mut self, s: &'a Schema, items: &'a [Value], old: Option<&'a Value>) -> bool {
        let n = items.len() as u64;
        if let Some(max) = s.max_items.filter(|m| n > *m) {
            self.error(FieldErrorKind::TooMany, Some(n.to_string()), |_| format!("must have at most {max} items"));
        }
        if let Some(min) = s.min_items.filter(|m| n < *m) {
            self.error(FieldErrorKind::TooShort, Some(n.to_string()), |_| format!("must have at least {min} items"));
        }
        let list_type = s.effective_list_type();
        let mut clean = true;
        if let Some(item_schema) = s.items.as_deref() {
            // Only list-map items correlate with the old list (by key); set and atomic items
            // have no identity, so transition rules below them never see an `oldSelf`.
            let old_index = match (list_type, old.and_then(Value::as_array)) {
                (ListType::Map, Some(old_items)) if !old_items.is_empty() => {
                    Some(OldListIndex::new(&s.list_map_keys, item_schema, old_items))
                }
                _ => None,
            };
            for (i, item) in items.iter().enumerate() {
                let old_item = old_index.as_ref().and_then(|ix| ix.find(&s.list_map_keys, item_schema, item));
                self.path.push(Seg::Index(i));
                clean &= self.node(item_schema, item, old_item, false);
                self.path.pop();
            }
        }
        match list_type {
            ListType::Set => self.duplicates(items),
            ListType::Map => {
                if let Some(item_schema) = s.items.as_deref() {
                    self.list_map_keys(&s.list_map_keys, item_schema, items);
                }
            }
            ListType::Atomic if s.unique_items => self.duplicates(items),
            ListType::Atomic => {}
        }
        clean
    }

    fn duplicates(&mut self, items: &'a [Value]) {
        for i in duplicate_indices(items) {
            self.child_error(
                Seg::Index(i),
                FieldErrorKind::Duplicate,
                Some(render_duplicate(&items[i])),
                String::new(),
            );
        }
    }

    fn list_map_keys(&mut self, keys: &'a [String], item_schema: &'a Schema, items: &'a [Value]) {
        let mut seen: HashSet<String> = HashSet::new();
        for (i, item) in items.iter().enumerate() {
            // Non-objects already have a type error from the item schema.
            let Value::Object(map) = item else { continue };
            let mut complete = true;
            for k in keys {
                if !map.contains_key(k) && key_default(item_schema, k).is_none() {
                    self.path.push(Seg::Index(i));
                    self.child_error(Seg::Field(k), FieldErrorKind::Required, None, String::new());
                    self.path.pop();
                    complete = false;
                }
            }
            if !complete {
                continue;
            }
            let mut tuple = String::new();
            for k in keys {
                canonical(key_value(map, item_schema, k), &mut tuple);
                tuple.push('\u{0}');
            }
            if !seen.insert(tuple) {
                let mut shown = Map::new();
                for k in keys {
                    shown.insert(k.clone(), key_value(map, item_schema, k).clone());
                }
                let shown = Value::Object(shown).to_string();
                self.child_error(Seg::Index(i), FieldErrorKind::Duplicate, Some(shown), String::new());
            }
        }
    }

    fn object(&mut self, s: &'a Schema, map: &'a Map<String, Value>, old: Option<&'a Value>, root: bool) -> bool {
        let n = map.len() as u64;
        if let Some(max) = s.max_properties.filter(|m| n > *m) {
            self.error(FieldErrorKind::TooMany, Some(n.to_string()), |_| format!("must have at most {max} properties"));
        }
        if let Some(min) = s.min_properties.filter(|m| n < *m) {
            self.error(FieldErrorKind::TooShort, Some(n.to_string()), |_| {
                format!("must have at least {min} properties")
            });
        }
        for name in &s.required {
            if !map.contains_key(name) {
                self.child_error(Seg::Field(name), FieldErrorKind::Required, None, String::new());
            }
        }
        let extra = match &s.additional_properties {
            Some(AdditionalProperties::Schema(ap)) => Some(&**ap),
            _ => None,
        };
        let old_map = old.and_then(Value::as_object);
        let mut clean = true;
        for (key, child) in map {
            if root && matches!(key.as_str(), "metadata" | "apiVersion" | "kind") {
                clean &= self.root_meta(key, child);
                continue;
            }
            let old_child = old_map.and_then(|o| o.get(key));
            if let Some(prop) = s.properties.get(key) {
                self.path.push(Seg::Field(key));
                clean &= self.node(prop, child, old_child, false);
                self.path.pop();
            } else if let Some(ap) = extra {
                self.path.push(Seg::Key(key));
                clean &= self.node(ap, child, old_child, false);
                self.path.pop();
            }
        }
        clean
    }

    /// `metadata` is validated by the object-meta code, `apiVersion`/`kind` by the API layer;
    /// here they only need the right JSON type.
    fn root_meta(&mut self, key: &'a str, v: &Value) -> bool {
        let (ok, want) = match key {
            "metadata" => (v.is_object(), "object"),
            _ => (v.is_string(), "string"),
        };
        if !ok {
            let got = json_type_name(v);
            self.path.push(Seg::Field(key));
            self.invalid(format!("\"{got}\""), || format!("must be of type {want}: \"{got}\""));
            self.path.pop();
        }
        ok
    }

    fn combinators(&mut self, s: &'a Schema, v: &'a Value) {
        let cel = std::mem::replace(&mut self.cel, false);
        for sub in &s.all_of {
            self.node(sub, v, None, false);
        }
        if !s.any_of.is_empty() && !s.any_of.iter().any(|sub| self.passes(sub, v)) {
            self.invalid(render_value(v), || "must validate at least one schema (anyOf)".to_string());
        }
        if !s.one_of.is_empty() {
            let valid = s.one_of.iter().filter(|sub| self.passes(sub, v)).count();
            if valid != 1 {
                let found = if valid == 0 {
                    "Found none valid".to_string()
                } else {
                    format!("Found {valid} valid alternatives")
                };
                self.invalid(render_value(v), || format!("must validate one and only one schema (oneOf). {found}"));
            }
        }
        if let Some(not) = s.not.as_deref() {
            if self.passes(not, v) {
                self.error(FieldErrorKind::Forbidden, None, |p| in_body(p, "must not validate the schema (not)"));
            }
        }
        self.cel = cel;
    }

    /// Whether `v` satisfies `sub`, without reporting anything.
    fn passes(&mut self, sub: &'a Schema, v: &'a Value) -> bool {
        let saved = std::mem::take(&mut self.errors);
        self.node(sub, v, None, false);
        let ok = self.errors.is_empty();
        self.errors = saved;
        ok
    }

    fn rules(&mut self, s: &'a Schema, v: &'a Value, old: Option<&'a Value>) {
        let type_name = match (s.type_, s.int_or_string) {
            (Some(t), false) => t.as_str(),
            _ => json_type_name(v),
        };
        // One context per node, shared by its rules; the value is converted on first use.
        let mut shared: Option<cel::Context<'a, 'a>> = None;
        // The sizes the value really has, for the cost estimates; measured on first use.
        let mut observed: Option<Observed> = None;
        for rule in &s.validations {
            if self.out_of_budget {
                return;
            }
            let compiled;
            let program: &cel::Program = match &rule.program {
                Some(p) => p,
                None => match compile_cel(&rule.rule) {
                    Ok(p) => {
                        compiled = p;
                        &compiled
                    }
                    Err(e) => {
                        self.rule_error(type_name, rule, &format!("compilation failed: {e}"));
                        continue;
                    }
                },
            };
            let transition = rule.uses_old_self
                || (rule.program.is_none()
                    && (program.references().has_variable("oldSelf")
                        || rule.message_expression.as_deref().is_some_and(|m| m.contains("oldSelf"))));
            if transition && old.is_none() && !rule.optional_old_self {
                continue;
            }
            // cel-rust has no cost tracking: a rule whose cost, estimated from the sizes this
            // object has, is over the limit is not run at all (nested comprehensions over a large
            // list would run for minutes).
            let obs = observed.get_or_insert_with(|| Observed::of(s, v, old));
            let cost = observed_cost(program, s, obs);
            if cost > CALL_COST_LIMIT {
                let e = format!(
                    "call cost exceeds the limit of {CALL_COST_LIMIT} (estimated {cost} from the sizes of this object)"
                );
                self.rule_error(type_name, rule, &e);
                continue;
            }
            self.cel_cost = self.cel_cost.saturating_add(cost);
            if self.cel_cost > OBJECT_COST_BUDGET {
                self.out_of_budget = true;
                self.error(FieldErrorKind::Invalid, Some(format!("\"{type_name}\"")), |_| {
                    format!("validation failed due to running out of cost budget ({OBJECT_COST_BUDGET}), no further validation rules will be run")
                });
                return;
            }
            let mut own;
            let ctx = if transition && rule.optional_old_self {
                // `oldSelf` is an optional for this rule only, so it gets a context of its own.
                own = new_context(s, v);
                let old_val = match old {
                    Some(o) => CelOptional::of(to_val(Some(s), o, 0)),
                    None => CelOptional::none(),
                };
                own.add_variable_as_val("oldSelf", Box::new(old_val));
                &own
            } else {
                let ctx = shared.get_or_insert_with(|| {
                    let mut ctx = new_context(s, v);
                    // Converting the old value costs as much as the new one: only when needed.
                    let needed = s.validations.iter().any(|r| r.uses_old_self || r.program.is_none());
                    if let Some(o) = old.filter(|_| needed) {
                        ctx.add_variable_as_val("oldSelf", to_val(Some(s), o, 0));
                    }
                    ctx
                });
                &*ctx
            };
            match run(program, ctx) {
                Ok(cel::Value::Bool(true)) => {}
                Ok(cel::Value::Bool(false)) => {
                    let message = self.failure_message(rule, ctx, s, observed.as_ref());
                    let path = match rule.field_path.as_deref() {
                        Some(fp) if !fp.is_empty() => join_field_path(&self.path_string(), fp),
                        _ => self.path_string(),
                    };
                    self.push_error(path, FieldErrorKind::Invalid, Some(format!("\"{type_name}\"")), message);
                }
                Ok(other) => {
                    let got = other.type_of();
                    self.rule_error(type_name, rule, &format!("rule evaluated to {got}, not a bool"));
                }
                Err(e) => self.rule_error(type_name, rule, &e),
            }
        }
    }

    fn failure_message(
        &self,
        rule: &ValidationRule,
        ctx: &cel::Context<'_, 'a>,
        s: &Schema,
        observed: Option<&Observed>,
    ) -> String {
        let compiled;
        let program = match (&rule.message_program, &rule.message_expression) {
            (Some(p), _) => Some(&**p),
            // A hand-built rule: compile on use, like its rule.
            (None, Some(source)) => {
                compiled = compile_cel(source).ok();
                compiled.as_ref()
            }
            (None, None) => None,
        };
        // One too costly for this object is not run.
        let affordable = |p: &cel::Program| observed.is_none_or(|o| observed_cost(p, s, o) <= CALL_COST_LIMIT);
        if let Some(p) = program.filter(|p| affordable(p)) {
            // Like the API server, a messageExpression that fails or yields an unusable string
            // falls back to the static message.
            if let Ok(cel::Value::String(m)) = run(p, ctx) {
                let m = m.trim();
                if !m.is_empty() && !m.contains('\n') {
                    return m.to_string();
                }
            }
        }
        match rule.message.as_deref().map(str::trim) {
            Some(m) if !m.is_empty() => m.to_string(),
            _ => format!("failed rule: {}", rule.rule.trim()),
        }
    }

    fn rule_error(&mut self, type_name: &str, rule: &ValidationRule, err: &str) {
        let detail = format!("{}: {err}", rule.rule.trim());
        self.error(FieldErrorKind::Invalid, Some(format!("\"{type_name}\"")), |_| detail);
    }
}

/// Appends a rule's `fieldPath` (`.a.b`, `['k.x']`, `[0]`) to the node's path, in this module's
/// path syntax.
fn join_field_path(base: &str, field_path: &str) -> String {
    let mut out = base.to_string();
    let mut rest = field_path.trim();
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&r[..end]);
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let Some(end) = r.find(']') else { break };
            let inner = r[..end].trim();
            let inner = inner
                .strip_prefix('\'')
                .and_then(|x| x.strip_suffix('\''))
                .or_else(|| inner.strip_prefix('"').and_then(|x| x.strip_suffix('"')))
                .unwrap_or(inner);
            out.push('[');
            out.push_str(inner);
            out.push(']');
            rest = &r[end + 1..];
        } else {
            // A bare leading name, as in `spec.x`.
            let end = rest.find(['.', '[']).unwrap_or(rest.len());
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&rest[..end]);
            rest = &rest[end..];
        }
    }
    out
}

fn in_body(path: &str, what: &str) -> String {
    if path.is_empty() {
        format!("body {what}")
    } else {
        format!("{path} in body {what}")
    }
}

// ---------------------------------------------------------------------------------------------
// Lists

/// Indices of items equal to an earlier item.
fn duplicate_indices(items: &[Value]) -> Vec<usize> {
    let mut out = Vec::new();
    // Pairwise comparison beats hashing canonical strings for the short lists that dominate.
    if items.len() <= 32 {
        for i in 1..items.len() {
            if items[..i].iter().any(|x| json_eq(x, &items[i])) {
                out.push(i);
            }
        }
    } else {
        let mut seen = HashSet::with_capacity(items.len());
        for (i, it) in items.iter().enumerate() {
            let mut key = String::new();
            canonical(it, &mut key);
            if !seen.insert(key) {
                out.push(i);
            }
        }
    }
    out
}

fn key_default<'a>(item_schema: &'a Schema, key: &str) -> Option<&'a Value> {
    item_schema.properties.get(key).and_then(|p| p.default.as_ref())
}

/// A list-map item's key value; a missing key with a default counts as its default.
fn key_value<'a>(map: &'a Map<String, Value>, item_schema: &'a Schema, key: &str) -> &'a Value {
    const NULL: &Value = &Value::Null;
    map.get(key).or_else(|| key_default(item_schema, key)).unwrap_or(NULL)
}

/// The items of an old list-map, for finding the old counterpart of each new item by key.
enum OldListIndex<'a> {
    /// Short lists are scanned.
    Scan(&'a [Value]),
    Hashed(HashMap<String, &'a Value>),
}

impl<'a> OldListIndex<'a> {
    fn new(keys: &[String], item_schema: &'a Schema, old_items: &'a [Value]) -> Self {
        if old_items.len() <= 16 {
            return OldListIndex::Scan(old_items);
        }
        let mut map = HashMap::with_capacity(old_items.len());
        for it in old_items {
            if let Value::Object(m) = it {
                map.entry(key_tuple(keys, item_schema, m)).or_insert(it);
            }
        }
        OldListIndex::Hashed(map)
    }

    fn find(&self, keys: &[String], item_schema: &'a Schema, item: &'a Value) -> Option<&'a Value> {
        let Value::Object(m) = item else { return None };
        match self {
            OldListIndex::Scan(old) => old.iter().find(|o| match o {
                Value::Object(om) => {
                    keys.iter().all(|k| json_eq(key_value(m, item_schema, k), key_value(om, item_schema, k)))
                }
                _ => false,
            }),
            OldListIndex::Hashed(map) => map.get(&key_tuple(keys, item_schema, m)).copied(),
        }
    }
}

fn key_tuple(keys: &[String], item_schema: &Schema, m: &Map<String, Value>) -> String {
    let mut s = String::new();
    for k in keys {
        canonical(key_value(m, item_schema, k), &mut s);
        s.push('\u{0}');
    }
    s
}

// ---------------------------------------------------------------------------------------------
// JSON helpers

fn type_matches(s: &Schema, v: &Value) -> bool {
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

fn is_multiple_of(n: &Number, m: f64) -> bool {
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
fn json_eq(a: &Value, b: &Value) -> bool {
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
fn canonical(v: &Value, out: &mut String) {
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
fn render_value(v: &Value) -> String {
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
fn render_duplicate(v: &Value) -> String {
    match v {
        Value::Array(_) | Value::Object(_) => v.to_string(),
        _ => render_value(v),
    }
}

/// Enum values are listed quoted, whatever their type, as `field.NotSupported` does.
fn quote_enum_value(v: &Value) -> String {
    match v {
        Value::String(s) => go_quote(s),
        other => go_quote(&other.to_string()),
    }
}

/// A string quoted like Go's `%q`.
fn go_quote(s: &str) -> String {
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

// ---------------------------------------------------------------------------------------------
// Formats

/// Checks a string against an OpenAPI `format`; formats this module does not know pass.
fn check_format(format: &str, s: &str) -> bool {
    match format {
        "date-time" | "datetime" => parse_date_time(s).is_some(),
        "date" => parse_date(s).is_some(),
        "byte" => decode_base64(s).is_some(),
        "uuid" => is_uuid(s, None),
        "uuid3" => is_uuid(s, Some(b'3')),
        "uuid4" => is_uuid(s, Some(b'4')),
        "uuid5" => is_uuid(s, Some(b'5')),
        "ipv4" => s.parse::<std::net::Ipv4Addr>().is_ok(),
        "ipv6" => s.parse::<std::net::Ipv6Addr>().is_ok(),
        "cidr" => is_cidr(s),
        "hostname" => is_hostname(s),
        "email" => is_email(s),
        "uri" => is_uri(s),
        "duration" => parse_go_duration(s).is_some(),
        "mac" => is_mac(s),
        _ => true,
    }
}

pub(super) fn parse_date_time(s: &str) -> Option<chrono::DateTime<chrono::FixedOffset>> {
    chrono::DateTime::parse_from_rfc3339(s).ok()
}

pub(super) fn parse_date(s: &str) -> Option<chrono::NaiveDate> {
    let b = s.as_bytes();
    let shape = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter().enumerate().all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if !shape {
        return None;
    }
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()
}

/// Standard, padded base64 (Go's `base64.StdEncoding`, which skips CR and LF).
pub(super) fn decode_base64(s: &str) -> Option<Vec<u8>> {
    fn sextet(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let data: Vec<u8> = s.bytes().filter(|c| *c != b'\r' && *c != b'\n').collect();
    if data.len() % 4 != 0 {
        return None;
    }
    let mut out = Vec::with_capacity(data.len() / 4 * 3);
    let chunks = data.len() / 4;
    for (ci, chunk) in data.chunks(4).enumerate() {
        let pad = chunk.iter().rev().take_while(|c| **c == b'=').count();
        if pad > 2 || (pad > 0 && ci + 1 != chunks) {
            return None;
        }
        let mut acc = 0u32;
        for c in &chunk[..4 - pad] {
            acc = (acc << 6) | sextet(*c)?;
        }
        acc <<= 6 * pad as u32;
        let bytes = [(acc >> 16) as u8, (acc >> 8) as u8, acc as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Some(out)
}

/// 32 hex digits in groups of 8-4-4-4-12, hyphens optional (kube-openapi's pattern), with the
/// version digit and RFC 4122 variant checked for the versioned formats.
fn is_uuid(s: &str, version: Option<u8>) -> bool {
    let b = s.as_bytes();
    let mut hex = [0u8; 32];
    let mut n = 0;
    let mut i = 0;
    for (g, len) in [8, 4, 4, 4, 12].into_iter().enumerate() {
        if g > 0 && b.get(i) == Some(&b'-') {
            i += 1;
        }
        for _ in 0..len {
            match b.get(i) {
                Some(c) if c.is_ascii_hexdigit() => {
                    hex[n] = c.to_ascii_lowercase();
                    n += 1;
                    i += 1;
                }
                _ => return false,
            }
        }
    }
    if i != b.len() {
        return false;
    }
    match version {
        None => true,
        Some(v) => hex[12] == v && (v == b'3' || matches!(hex[16], b'8' | b'9' | b'a' | b'b')),
    }
}

fn is_cidr(s: &str) -> bool {
    let Some((ip, bits)) = s.split_once('/') else {
        return false;
    };
    if bits.is_empty() || bits.len() > 3 || !bits.bytes().all(|c| c.is_ascii_digit()) {
        return false;
    }
    let Ok(bits) = bits.parse::<u32>() else {
        return false;
    };
    match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => bits <= 32,
        Ok(std::net::IpAddr::V6(_)) => bits <= 128,
        Err(_) => false,
    }
}

/// An RFC 1123 host name: dot-separated labels of letters, digits and inner hyphens.
fn is_hostname(s: &str) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    if s.is_empty() || s.len() > 253 {
        return false;
    }
    s.split('.').all(|label| {
        let b = label.as_bytes();
        !b.is_empty()
            && b.len() <= 63
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
    })
}

/// A plain `local@domain` address, or one in angle brackets after a display name (Go's
/// `mail.ParseAddress` accepts both).
fn is_email(s: &str) -> bool {
    let addr = match (s.rfind('<'), s.strip_suffix('>')) {
        (Some(open), Some(rest)) => &rest[open + 1..],
        _ => s,
    };
    let Some((local, domain)) = addr.rsplit_once('@') else {
        return false;
    };
    let bad = |c: char| c.is_whitespace() || c.is_control() || "<>@,;:\\\"[]".contains(c);
    !local.is_empty()
        && !domain.is_empty()
        && !local.chars().any(|c| c.is_whitespace() || c.is_control())
        && !domain.chars().any(bad)
        && !domain.starts_with('.')
        && !domain.ends_with('.')
}

/// What Go's `url.ParseRequestURI` accepts, roughly: an absolute URI with a scheme, or an
/// absolute path, without spaces or control characters.
fn is_uri(s: &str) -> bool {
    if s.is_empty() || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return false;
    }
    if s.starts_with('/') {
        return true;
    }
    let Some((scheme, _)) = s.split_once(':') else {
        return false;
    };
    let b = scheme.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphabetic()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.'))
}

fn is_mac(s: &str) -> bool {
    // Go's net.ParseMAC: 6, 8 or 20 octets separated by ':' or '-', or dotted groups of four.
    let groups: Vec<&str> = if s.contains(':') {
        s.split(':').collect()
    } else if s.contains('-') {
        s.split('-').collect()
    } else {
        let g: Vec<&str> = s.split('.').collect();
        return matches!(g.len(), 3 | 4 | 10)
            && g.iter().all(|x| x.len() == 4 && x.bytes().all(|c| c.is_ascii_hexdigit()));
    };
    matches!(groups.len(), 6 | 8 | 20)
        && groups.iter().all(|x| x.len() == 2 && x.bytes().all(|c| c.is_ascii_hexdigit()))
}

/// Parses a Go `time.ParseDuration` string (`1h30m`, `-1.5s`, `300ms`, `0`) into nanoseconds.
pub(super) fn parse_go_duration(s: &str) -> Option<i64> {
    let (neg, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let int_part = &rest[..int_len];
        rest = &rest[int_len..];
        let mut frac_part = "";
        if let Some(r) = rest.strip_prefix('.') {
            let frac_len = r.bytes().take_while(u8::is_ascii_digit).count();
            frac_part = &r[..frac_len];
            rest = &r[frac_len..];
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return None;
        }
        let unit_len = rest.find(|c: char| c == '.' || c.is_ascii_digit()).unwrap_or(rest.len());
        let unit: u128 = match &rest[..unit_len] {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        rest = &rest[unit_len..];
        let mut whole: u128 = 0;
        for c in int_part.bytes() {
            whole = whole.checked_mul(10)?.checked_add(u128::from(c - b'0'))?;
            if whole > 1 << 63 {
                return None;
            }
        }
        total = total.checked_add(whole.checked_mul(unit)?)?;
        // Digits beyond nanosecond precision of the largest unit cannot change the result.
        let mut num: u128 = 0;
        let mut scale: u128 = 1;
        for c in frac_part.bytes().take(18) {
            num = num * 10 + u128::from(c - b'0');
            scale *= 10;
        }
        total = total.checked_add(num * unit / scale)?;
        if total > 1 << 63 {
            return None;
        }
    }
    if neg {
        i64::try_from(total).ok().map(|t| -t).or((total == 1 << 63).then_some(i64::MIN))
    } else {
        i64::try_from(total).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema(v: Value) -> Schema {
        Schema::parse(&v, "openAPIV3Schema").expect("test schema parses")
    }

    /// A realistic CRD schema: a workload with replicas, an enum, a list-map of ports, a set of
    /// tags, a string map and a few formats.
    fn workload() -> Schema {
        schema(json!({
            "type": "object",
            "properties": {
                "apiVersion": {"type": "string"},
                "kind": {"type": "string"},
                "metadata": {"type": "object", "properties": {"name": {"type": "string", "maxLength": 3}}},
                "spec": {
                    "type": "object",
                    "required": ["name"],
                    "x-kubernetes-validations": [
                        {"rule": "self.minReplicas <= self.replicas", "message": "minReplicas must not exceed replicas"},
                        {"rule": "!has(oldSelf.name) || self.name == oldSelf.name", "message": "name is immutable"}
                    ],
                    "properties": {
                        "name": {"type": "string", "pattern": "^[a-z]+$", "minLength": 2, "maxLength": 5},
                        "replicas": {"type": "integer", "minimum": 1, "maximum": 10, "default": 1},
                        "minReplicas": {"type": "integer", "default": 1},
                        "mode": {"type": "string", "enum": ["a", "b"], "default": "a"},
                        "ports": {
                            "type": "array",
                            "maxItems": 3,
                            "x-kubernetes-list-type": "map",
                            "x-kubernetes-list-map-keys": ["port", "protocol"],
                            "items": {
                                "type": "object",
                                "x-kubernetes-validations": [{
                                    "rule": "!has(self.port) || self.port > 0",
                                    "messageExpression": "'port ' + string(self.port) + ' is not positive'"
                                }],
                                "properties": {
                                    "port": {"type": "integer", "format": "int32"},
                                    "protocol": {"type": "string", "default": "TCP"},
                                    "name": {"type": "string"},
                                    "options": {
                                        "type": "object",
                                        "properties": {"mtu": {"type": "integer", "default": 1500}}
                                    }
                                }
                            }
                        },
                        "tags": {"type": "array", "x-kubernetes-list-type": "set", "minItems": 1, "items": {"type": "string"}},
                        "labels": {"type": "object", "maxProperties": 2, "additionalProperties": {"type": "string", "maxLength": 3}},
                        "ratio": {"type": "number", "multipleOf": 0.5, "maximum": 2, "exclusiveMaximum": true},
                        "target": {"x-kubernetes-int-or-string": true},
                        "note": {"type": "string", "nullable": true},
                        "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                        "anything": {"x-kubernetes-preserve-unknown-fields": true}
                    }
                }
            }
        }))
    }

    fn obj(spec: Value) -> Value {
        json!({"apiVersion": "x.io/v1", "kind": "W", "metadata": {"name": "toolong"}, "spec": spec})
    }

    fn errors(s: &Schema, v: &Value) -> Vec<String> {
        validate(s, v, None).iter().map(ToString::to_string).collect()
    }

    /// Validates like the API server: defaults first.
    fn defaulted_errors(s: &Schema, v: &Value) -> Vec<String> {
        let mut v = v.clone();
        apply_defaults(s, &mut v);
        errors(s, &v)
    }

    fn spec_errors(spec: Value) -> Vec<String> {
        defaulted_errors(&workload(), &obj(spec))
    }

    #[test]
    fn valid_object_has_no_errors() {
        let spec = json!({
            "name": "web", "replicas": 3, "minReplicas": 1, "mode": "b",
            "ports": [{"port": 80, "protocol": "TCP"}, {"port": 80, "protocol": "UDP"}],
            "tags": ["a", "b"], "labels": {"x": "abc"}, "ratio": 1.5, "target": "50%",
            "note": null, "extra": {"free": [1, {"a": null}]}, "anything": null
        });
        assert_eq!(spec_errors(spec), Vec::<String>::new());
    }

    #[test]
    fn type_errors() {
        assert_eq!(
            spec_errors(json!({"name": "web", "replicas": "3"})),
            vec![
                "spec.replicas: Invalid value: \"string\": spec.replicas in body must be of type integer: \"string\"",
                "<nil>: Invalid value: some validation rules were not checked because the object was invalid; correct the existing errors to complete validation",
            ]
        );
        assert_eq!(
            spec_errors(json!({"name": "web", "replicas": 2.5, "tags": {"a": 1}})),
            vec![
                "spec.replicas: Invalid value: \"number\": spec.replicas in body must be of type integer: \"number\"",
                "spec.tags: Invalid value: \"object\": spec.tags in body must be of type array: \"object\"",
                "<nil>: Invalid value: some validation rules were not checked because the object was invalid; correct the existing errors to complete validation",
            ]
        );
        // 3.0 is an integer; booleans are not strings.
        assert_eq!(spec_errors(json!({"name": "web", "replicas": 3.0})), Vec::<String>::new());
        assert_eq!(
            spec_errors(json!({"name": true}))[0],
            "spec.name: Invalid value: \"boolean\": spec.name in body must be of type string: \"boolean\""
        );
    }

    #[test]
    fn null_needs_nullable() {
        assert_eq!(spec_errors(json!({"name": "web", "note": null})), Vec::<String>::new());
        assert_eq!(
            spec_errors(json!({"name": "web", "labels": null}))[0],
            "spec.labels: Invalid value: \"null\": spec.labels in body must be of type object: \"null\""
        );
        // A required key that is present but null is a type error, not a missing value.
        let errs = spec_errors(json!({"name": null}));
        assert_eq!(errs[0], "spec.name: Invalid value: \"null\": spec.name in body must be of type string: \"null\"");
    }

    #[test]
    fn root_meta_fields_are_only_type_checked() {
        // metadata.name violates maxLength 3 in every test object: not reported here.
        let s = workload();
        assert_eq!(defaulted_errors(&s, &obj(json!({"name": "web"}))), Vec::<String>::new());
        let errs =
            defaulted_errors(&s, &json!({"apiVersion": 1, "kind": "W", "metadata": [], "spec": {"name": "web"}}));
        assert_eq!(
            errs[..2],
            [
                "apiVersion: Invalid value: \"integer\": apiVersion in body must be of type string: \"integer\"",
                "metadata: Invalid value: \"array\": metadata in body must be of type object: \"array\"",
            ]
        );
    }

    #[test]
    fn unknown_fields_are_ignored() {
        assert_eq!(spec_errors(json!({"name": "web", "bogus": {"deep": 1}})), Vec::<String>::new());
    }

    #[test]
    fn required() {
        assert_eq!(spec_errors(json!({"replicas": 1})), vec!["spec.name: Required value"]);
        // Transition rule on the workload: name is immutable on update.
        let s = workload();
        let mut old = obj(json!({"name": "web"}));
        apply_defaults(&s, &mut old);
        let mut new = obj(json!({"name": "api"}));
        apply_defaults(&s, &mut new);
        assert!(validate(&s, &old, Some(&old)).is_empty());
        assert_eq!(
            validate(&s, &new, Some(&old)).iter().map(ToString::to_string).collect::<Vec<_>>(),
            vec!["spec: Invalid value: \"object\": name is immutable"]
        );
    }

    #[test]
    fn enum_values() {
        assert_eq!(
            spec_errors(json!({"name": "web", "mode": "x"})),
            vec!["spec.mode: Unsupported value: \"x\": supported values: \"a\", \"b\""]
        );
        let s = schema(json!({"type": "integer", "enum": [1, 2]}));
        assert!(validate(&s, &json!(2.0), None).is_empty());
        assert_eq!(errors(&s, &json!(3)), vec!["<nil>: Unsupported value: 3: supported values: \"1\", \"2\""]);
    }

    #[test]
    fn pattern_and_lengths() {
        assert_eq!(
            spec_errors(json!({"name": "Foo"})),
            vec!["spec.name: Invalid value: \"Foo\": spec.name in body should match '^[a-z]+$'"]
        );
        assert_eq!(spec_errors(json!({"name": "abcdef"})), vec!["spec.name: Too long: may not be longer than 5"]);
        assert_eq!(spec_errors(json!({"name": "a"})), vec!["spec.name: Too short: may not be shorter than 2"]);
        // Lengths count characters, not bytes.
        let s = schema(json!({"type": "string", "maxLength": 2}));
        assert!(validate(&s, &json!("éé"), None).is_empty());
        assert_eq!(validate(&s, &json!("ééé"), None)[0].kind, FieldErrorKind::TooLong);
    }

    #[test]
    fn numeric_bounds() {
        assert_eq!(
            spec_errors(json!({"name": "web", "replicas": 0, "minReplicas": 0})),
            vec!["spec.replicas: Invalid value: 0: spec.replicas in body should be greater than or equal to 1"]
        );
        assert_eq!(
            spec_errors(json!({"name": "web", "replicas": 11, "minReplicas": 1})),
            vec!["spec.replicas: Invalid value: 11: spec.replicas in body should be less than or equal to 10"]
        );
        assert_eq!(
            spec_errors(json!({"name": "web", "ratio": 2})),
            vec!["spec.ratio: Invalid value: 2: spec.ratio in body should be less than 2"]
        );
        assert_eq!(
            spec_errors(json!({"name": "web", "ratio": 0.7})),
            vec!["spec.ratio: Invalid value: 0.7: spec.ratio in body should be a multiple of 0.5"]
        );
        let s = schema(json!({"type": "number", "minimum": 0, "exclusiveMinimum": true, "multipleOf": 0.1}));
        assert!(validate(&s, &json!(0.3), None).is_empty());
        assert_eq!(errors(&s, &json!(0)), vec!["<nil>: Invalid value: 0: body should be greater than 0"]);
        let s = schema(json!({"type": "integer", "multipleOf": 3}));
        assert!(validate(&s, &json!(-9), None).is_empty());
        assert_eq!(validate(&s, &json!(10), None).len(), 1);
    }

    #[test]
    fn string_formats() {
        let cases: &[(&str, &[&str], &[&str])] = &[
            (
                "date-time",
                &["2024-01-02T03:04:05Z", "2024-01-02T03:04:05.123+02:00"],
                &["nope", "2024-01-02", "2024-13-02T03:04:05Z"],
            ),
            ("date", &["2024-02-29"], &["2023-02-29", "24-01-01", "2024-1-01"]),
            ("byte", &["", "aGVsbG8=", "aGk="], &["aGVsbG8", "a@==", "a==="]),
            (
                "uuid",
                &["123e4567-e89b-12d3-a456-426614174000", "123E4567E89B12D3A456426614174000"],
                &["123e4567-e89b-12d3-a456", "g23e4567-e89b-12d3-a456-426614174000"],
            ),
            ("uuid4", &["123e4567-e89b-42d3-a456-426614174000"], &["123e4567-e89b-12d3-a456-426614174000"]),
            ("ipv4", &["10.0.0.1"], &["10.0.0.256", "::1", "01.2.3.4"]),
            ("ipv6", &["::1", "fe80::1", "::ffff:1.2.3.4"], &["10.0.0.1", "fe80:::1"]),
            ("cidr", &["10.0.0.0/8", "fd00::/64"], &["10.0.0.0/33", "10.0.0.0", "10.0.0.0/-1"]),
            ("hostname", &["example.com", "a-b.c", "localhost."], &["-a.com", "a_b.com", "", "a..b"]),
            ("email", &["a@example.com", "Alice <a@example.com>"], &["a.example.com", "a@", "a b@c.com"]),
            ("uri", &["https://example.com/x?y=1", "/path", "urn:isbn:0451450523"], &["example.com", "http://a b", ""]),
            (
                "duration",
                &["0", "1h30m", "-1.5s", "300ms", "2h45m0.5s", "1\u{b5}s"],
                &["", "1", "1d", "h", "1.s.s", "99999999999h"],
            ),
            ("mac", &["00:1a:2b:3c:4d:5e", "00-1A-2B-3C-4D-5E"], &["00:1a:2b", "zz:1a:2b:3c:4d:5e"]),
            ("unknown-format", &["anything"], &[]),
        ];
        for (format, good, bad) in cases {
            let s = schema(json!({"type": "string", "format": format}));
            for g in *good {
                assert!(validate(&s, &json!(g), None).is_empty(), "{format}: {g:?} should be valid");
            }
            for b in *bad {
                assert_eq!(validate(&s, &json!(b), None).len(), 1, "{format}: {b:?} should be invalid");
            }
        }
        let s = schema(json!({"type": "object", "properties": {"t": {"type": "string", "format": "date-time"}}}));
        assert_eq!(
            errors(&s, &json!({"t": "nope"})),
            vec!["t: Invalid value: \"nope\": t in body must be of type date-time: \"nope\""]
        );
    }

    #[test]
    fn integer_formats() {
        assert_eq!(
            spec_errors(json!({"name": "web", "ports": [{"port": 3000000000u64}]})),
            vec!["spec.ports[0].port: Invalid value: 3000000000: spec.ports[0].port in body must be of type int32: 3000000000"]
        );
        assert_eq!(
            spec_errors(json!({"name": "web", "ports": [{"port": -1}]})),
            vec!["spec.ports[0]: Invalid value: \"object\": port -1 is not positive"]
        );
        let s = schema(json!({"type": "integer", "format": "int32"}));
        assert!(validate(&s, &json!(2147483647.0), None).is_empty());
        assert_eq!(validate(&s, &json!(2147483648.0), None).len(), 1);
        let s = schema(json!({"type": "integer", "format": "int64"}));
        assert!(validate(&s, &json!(i64::MIN), None).is_empty());
        assert_eq!(validate(&s, &json!(u64::MAX), None).len(), 1);
    }

    #[test]
    fn item_and_property_counts() {
        let ports = json!([{"port": 1}, {"port": 2}, {"port": 3}, {"port": 4}]);
        assert_eq!(
            spec_errors(json!({"name": "web", "ports": ports})),
            vec!["spec.ports: Too many: 4: must have at most 3 items"]
        );
        assert_eq!(
            spec_errors(json!({"name": "web", "tags": []})),
            vec!["spec.tags: Too short: 0: must have at least 1 items"]
        );
        assert_eq!(
            spec_errors(json!({"name": "web", "labels": {"a": "1", "b": "2", "c": "3"}})),
            vec!["spec.labels: Too many: 3: must have at most 2 properties"]
        );
        let s = schema(json!({"type": "object", "minProperties": 1}));
        assert_eq!(errors(&s, &json!({})), vec!["<nil>: Too short: 0: must have at least 1 properties"]);
    }

    #[test]
    fn additional_properties_schema_applies_to_every_key() {
        assert_eq!(
            spec_errors(json!({"name": "web", "labels": {"example.com/x": "long", "ok": 1}})),
            vec![
                "spec.labels[example.com/x]: Too long: may not be longer than 3",
                "spec.labels[ok]: Invalid value: \"integer\": spec.labels[ok] in body must be of type string: \"integer\"",
                "<nil>: Invalid value: some validation rules were not checked because the object was invalid; correct the existing errors to complete validation",
            ]
        );
    }

    #[test]
    fn list_set_duplicates() {
        assert_eq!(
            spec_errors(json!({"name": "web", "tags": ["a", "b", "a", "a"]})),
            vec!["spec.tags[2]: Duplicate value: \"a\"", "spec.tags[3]: Duplicate value: \"a\""]
        );
        // The hashed path for long lists finds the same duplicates, numbers compared by value.
        let s = schema(json!({"type": "array", "uniqueItems": true, "items": {"type": "number"}}));
        let mut long: Vec<Value> = (0..40).map(|i| json!(i)).collect();
        long.push(json!(7.0));
        assert_eq!(errors(&s, &Value::Array(long)), vec!["[40]: Duplicate value: 7.0"]);
        assert!(validate(&s, &json!([1, 2, 3]), None).is_empty());
    }

    #[test]
    fn list_map_keys_and_duplicates() {
        // `protocol` defaults to TCP, so the first two items share the key (80, TCP).
        assert_eq!(
            spec_errors(
                json!({"name": "web", "ports": [{"port": 80}, {"port": 80, "protocol": "TCP"}, {"port": 80, "protocol": "UDP"}]})
            ),
            vec!["spec.ports[1]: Duplicate value: {\"port\":80,\"protocol\":\"TCP\"}"]
        );
        assert_eq!(
            spec_errors(json!({"name": "web", "ports": [{"protocol": "TCP", "name": "x"}]})),
            vec!["spec.ports[0].port: Required value"]
        );
    }

    #[test]
    fn combinators() {
        let s = schema(json!({
            "type": "object",
            "properties": {
                "a": {"type": "string", "allOf": [{"minLength": 2}, {"pattern": "^x"}]},
                "b": {"type": "object", "anyOf": [{"required": ["x"]}, {"required": ["y"]}]},
                "c": {"type": "integer", "oneOf": [{"minimum": 5}, {"maximum": 10}]},
                "d": {"type": "string", "not": {"enum": ["forbidden"]}}
            }
        }));
        assert!(validate(&s, &json!({"a": "xy", "b": {"y": 1}, "c": 20, "d": "fine"}), None).is_empty());
        assert_eq!(
            errors(&s, &json!({"a": "y", "b": {"z": 1}, "c": 7, "d": "forbidden"})),
            vec![
                "a: Too short: may not be shorter than 2",
                "a: Invalid value: \"y\": a in body should match '^x'",
                "b: Invalid value: \"object\": b in body must validate at least one schema (anyOf)",
                "c: Invalid value: 7: c in body must validate one and only one schema (oneOf). Found 2 valid alternatives",
                "d: Forbidden: d in body must not validate the schema (not)",
            ]
        );
    }

    #[test]
    fn int_or_string() {
        assert_eq!(spec_errors(json!({"name": "web", "target": 3})), Vec::<String>::new());
        assert_eq!(spec_errors(json!({"name": "web", "target": "3%"})), Vec::<String>::new());
        assert_eq!(
            spec_errors(json!({"name": "web", "target": 1.5}))[0],
            "spec.target: Invalid value: \"number\": spec.target in body must be of type integer or string: \"number\""
        );
        assert_eq!(spec_errors(json!({"name": "web", "target": null})).len(), 2);
    }

    #[test]
    fn preserve_unknown_fields_accepts_anything() {
        for v in [json!(null), json!(1), json!("s"), json!([1, {"a": [null]}]), json!({"k": {}})] {
            assert_eq!(spec_errors(json!({"name": "web", "anything": v})), Vec::<String>::new());
        }
        assert_eq!(spec_errors(json!({"name": "web", "extra": {"x": {"y": [1]}}})), Vec::<String>::new());
        assert_eq!(spec_errors(json!({"name": "web", "extra": 1})).len(), 2);
    }

    #[test]
    fn defaults_nested_and_in_list_items() {
        let s = workload();
        let mut v = obj(json!({"name": "web", "ports": [{"port": 80, "options": {}}, {"port": 81}], "mode": null}));
        apply_defaults(&s, &mut v);
        assert_eq!(
            v["spec"],
            json!({
                "name": "web", "replicas": 1, "minReplicas": 1, "mode": "a",
                "ports": [{"port": 80, "protocol": "TCP", "options": {"mtu": 1500}}, {"port": 81, "protocol": "TCP"}]
            })
        );
        // Defaults inside an inserted default, and no defaulting inside a nullable null.
        let s = schema(json!({
            "type": "object",
            "properties": {
                "a": {"type": "object", "default": {}, "properties": {"b": {"type": "integer", "default": 7}}},
                "n": {"type": "object", "nullable": true, "properties": {"b": {"type": "integer", "default": 7}}},
                "m": {"type": "object", "additionalProperties": {"type": "object", "properties": {"z": {"type": "string", "default": "q"}}}}
            }
        }));
        let mut v = json!({"n": null, "m": {"k1": {}, "k2": {"z": "set"}}});
        apply_defaults(&s, &mut v);
        assert_eq!(v, json!({"a": {"b": 7}, "n": null, "m": {"k1": {"z": "q"}, "k2": {"z": "set"}}}));
        // Defaults do not touch scalars or mismatched types.
        let mut v = json!({"a": 5});
        apply_defaults(&s, &mut v);
        assert_eq!(v, json!({"a": 5}));
    }

    #[test]
    fn needs_defaults_tells_exactly_when_defaulting_changes_something() {
        let nested = schema(json!({
            "type": "object",
            "properties": {
                "a": {"type": "object", "default": {}, "properties": {"b": {"type": "integer", "default": 7}}},
                "n": {"type": "object", "nullable": true, "properties": {"b": {"type": "integer", "default": 7}}},
                "m": {"type": "object", "additionalProperties": {"type": "object", "default": {"z": "d"},
                    "properties": {"z": {"type": "string", "default": "q"}}}},
                "l": {"type": "array", "items": {"type": "object", "default": {"y": 1},
                    "properties": {"y": {"type": "integer", "default": 2}}}}
            }
        }));
        let cases = [
            (&nested, json!({})),
            (&nested, json!({"a": {}})),
            (&nested, json!({"a": {"b": 1}})),
            (&nested, json!({"a": {"b": null}})),
            (&nested, json!({"a": {"b": 1}, "n": null})),
            (&nested, json!({"a": {"b": 1}, "n": {}})),
            (&nested, json!({"a": {"b": 1}, "m": {"k": {}}})),
            (&nested, json!({"a": {"b": 1}, "m": {"k": null}})),
            (&nested, json!({"a": {"b": 1}, "m": {"k": {"z": "x"}}})),
            (&nested, json!({"a": {"b": 1}, "l": [{"y": 3}, null]})),
            (&nested, json!({"a": {"b": 1}, "l": [{"y": 3}, {}]})),
            (&nested, json!({"a": {"b": 1}, "l": [{"y": 3}]})),
            (&nested, json!({"a": 5})),
            (&nested, json!([1, 2])),
        ];
        let w = workload();
        let more = [
            obj(json!({"name": "web"})),
            obj(json!({"name": "web", "replicas": 1, "minReplicas": 1, "mode": "a"})),
            obj(json!({"name": "web", "replicas": 1, "minReplicas": 1, "mode": "a", "ports": [{"port": 1}]})),
            obj(
                json!({"name": "web", "replicas": 1, "minReplicas": 1, "mode": "a", "ports": [{"port": 1, "protocol": "UDP"}]}),
            ),
            obj(
                json!({"name": "web", "replicas": 1, "minReplicas": 1, "mode": "a", "ports": [{"port": 1, "protocol": "UDP", "options": {}}]}),
            ),
        ];
        for (s, v) in cases.iter().map(|(s, v)| (*s, v)).chain(more.iter().map(|v| (&w, v))) {
            let mut defaulted = v.clone();
            apply_defaults(s, &mut defaulted);
            assert_eq!(needs_defaults(s, v), defaulted != *v, "{v}");
        }
    }

    #[test]
    fn cel_passing_and_failing_rule_with_message() {
        assert_eq!(spec_errors(json!({"name": "web", "replicas": 3, "minReplicas": 2})), Vec::<String>::new());
        assert_eq!(
            spec_errors(json!({"name": "web", "replicas": 3, "minReplicas": 4})),
            vec!["spec: Invalid value: \"object\": minReplicas must not exceed replicas"]
        );
    }

    fn cel_schema(rule: Value) -> Schema {
        schema(json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "x-kubernetes-validations": [rule],
                    "properties": {
                        "replicas": {"type": "integer"},
                        "ratio": {"type": "number"},
                        "name": {"type": "string"},
                        "x-y": {"type": "string"},
                        "timeout": {"type": "string", "format": "duration"},
                        "since": {"type": "string", "format": "date-time"},
                        "ports": {
                            "type": "array",
                            "x-kubernetes-list-type": "map",
                            "x-kubernetes-list-map-keys": ["port"],
                            "items": {
                                "type": "object",
                                "properties": {"port": {"type": "integer"}, "name": {"type": "string"}},
                                "x-kubernetes-validations": [{"rule": "self.name == oldSelf.name", "message": "name is immutable"}]
                            }
                        }
                    }
                }
            }
        }))
    }

    #[test]
    fn cel_default_message_and_message_expression() {
        let s = cel_schema(json!({"rule": "self.replicas < 5"}));
        assert_eq!(
            errors(&s, &json!({"spec": {"replicas": 7}})),
            vec!["spec: Invalid value: \"object\": failed rule: self.replicas < 5"]
        );
        let s = cel_schema(json!({
            "rule": "self.replicas < 5",
            "message": "static",
            "messageExpression": "'replicas is ' + string(self.replicas) + ', want < 5'"
        }));
        assert_eq!(
            errors(&s, &json!({"spec": {"replicas": 7}})),
            vec!["spec: Invalid value: \"object\": replicas is 7, want < 5"]
        );
        // A messageExpression that fails falls back to the message.
        let s = cel_schema(json!({"rule": "self.replicas < 5", "message": "static", "messageExpression": "self.nope"}));
        assert_eq!(errors(&s, &json!({"spec": {"replicas": 7}})), vec!["spec: Invalid value: \"object\": static"]);
    }

    #[test]
    fn cel_transition_rule_uses_old_self() {
        let s =
            cel_schema(json!({"rule": "self.replicas >= oldSelf.replicas", "message": "replicas may not decrease"}));
        let new = json!({"spec": {"replicas": 2}});
        // On create there is no oldSelf: the rule is skipped.
        assert!(validate(&s, &new, None).is_empty());
        assert!(validate(&s, &new, Some(&json!({"spec": {"replicas": 1}}))).is_empty());
        assert_eq!(
            validate(&s, &new, Some(&json!({"spec": {"replicas": 3}})))
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            vec!["spec: Invalid value: \"object\": replicas may not decrease"]
        );
        // Old spec absent: still skipped.
        assert!(validate(&s, &new, Some(&json!({}))).is_empty());
    }

    #[test]
    fn cel_optional_old_self() {
        let s = cel_schema(json!({
            "rule": "!oldSelf.hasValue() || self.name == oldSelf.value().name",
            "optionalOldSelf": true,
            "message": "name is immutable"
        }));
        let new = json!({"spec": {"name": "a"}});
        assert!(validate(&s, &new, None).is_empty());
        assert!(validate(&s, &new, Some(&json!({"spec": {"name": "a"}}))).is_empty());
        assert_eq!(validate(&s, &new, Some(&json!({"spec": {"name": "b"}}))).len(), 1);
    }

    #[test]
    fn cel_list_map_items_correlate_by_key() {
        let s = cel_schema(json!({"rule": "true"}));
        let old = json!({"spec": {"ports": [{"port": 1, "name": "a"}, {"port": 2, "name": "b"}]}});
        // Reordered but unchanged: fine. Item with port 2 renamed: error at its new index.
        let new =
            json!({"spec": {"ports": [{"port": 2, "name": "b"}, {"port": 1, "name": "a"}, {"port": 3, "name": "c"}]}});
        assert!(validate(&s, &new, Some(&old)).is_empty());
        let new = json!({"spec": {"ports": [{"port": 1, "name": "a"}, {"port": 2, "name": "z"}]}});
        assert_eq!(
            validate(&s, &new, Some(&old)).iter().map(ToString::to_string).collect::<Vec<_>>(),
            vec!["spec.ports[1]: Invalid value: \"object\": name is immutable"]
        );
        // The hashed index for long old lists behaves the same.
        let old_items: Vec<Value> = (0..40).map(|i| json!({"port": i, "name": format!("n{i}")})).collect();
        let mut new_items = old_items.clone();
        new_items.reverse();
        new_items[5]["name"] = json!("changed");
        let errs = validate(&s, &json!({"spec": {"ports": new_items}}), Some(&json!({"spec": {"ports": old_items}})));
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].path, "spec.ports[5]");
    }

    #[test]
    fn cel_field_path() {
        let s = cel_schema(json!({"rule": "self.name != 'bad'", "fieldPath": ".name", "message": "bad name"}));
        assert_eq!(
            errors(&s, &json!({"spec": {"name": "bad"}})),
            vec!["spec.name: Invalid value: \"object\": bad name"]
        );
        assert_eq!(join_field_path("spec", "['a.b'].c[0]"), "spec[a.b].c[0]");
        assert_eq!(join_field_path("", ".a"), "a");
    }

    #[test]
    fn cel_runtime_error_is_reported_not_raised() {
        let s = cel_schema(json!({"rule": "self.missing > 1"}));
        let errs = errors(&s, &json!({"spec": {"replicas": 1}}));
        assert_eq!(errs.len(), 1);
        assert!(errs[0].starts_with("spec: Invalid value: \"object\": self.missing > 1: "), "{}", errs[0]);
        let s = cel_schema(json!({"rule": "self.replicas / 0 == 1"}));
        assert_eq!(errors(&s, &json!({"spec": {"replicas": 1}})).len(), 1);
        let s = cel_schema(json!({"rule": "self.replicas"}));
        assert_eq!(
            errors(&s, &json!({"spec": {"replicas": 1}})),
            vec!["spec: Invalid value: \"object\": self.replicas: rule evaluated to int, not a bool"]
        );
    }

    #[test]
    fn cel_compile_error_fails_schema_parsing() {
        let e = Schema::parse(
            &json!({"type": "object", "x-kubernetes-validations": [{"rule": "self.a >"}]}),
            "openAPIV3Schema",
        )
        .unwrap_err();
        assert_eq!(e.path, "openAPIV3Schema.x-kubernetes-validations[0].rule");
        assert!(e.message.contains("self.a >"), "{e}");
    }

    #[test]
    fn cel_rules_too_costly_for_the_object_are_not_run() {
        let nested = "self.all(x, self.all(y, x == y || x != y))";
        let s = schema(json!({"type": "object", "properties": {"items": {
            "type": "array",
            "items": {"type": "integer"},
            "x-kubernetes-validations": [{"rule": nested}, {"rule": "self.all(x, x >= 0)"}]
        }}}));
        assert!(validate(&s, &json!({"items": [1, 2, 3]}), None).is_empty());
        // 30k items: the nested rule would make 900 million steps; it is refused at once, and the
        // single pass still runs.
        let mut big: Vec<i64> = (0..30_000).collect();
        big[7] = -1;
        let errs = errors(&s, &json!({"items": big}));
        assert_eq!(errs.len(), 2, "{errs:?}");
        let want =
            format!("items: Invalid value: \"array\": {nested}: call cost exceeds the limit of 1000000 (estimated ");
        assert!(errs[0].starts_with(&want), "{}", errs[0]);
        assert_eq!(errs[1], "items: Invalid value: \"array\": failed rule: self.all(x, x >= 0)");
    }

    #[test]
    fn cel_object_budget_stops_further_rules() {
        // Each rule's estimate (a pass over 30k items) fits the call limit; a hundred of them do
        // not fit the object's budget. `exists` stops at the first item, so running them is cheap.
        let rules: Vec<Value> = (0..100).map(|_| json!({"rule": "self.exists(x, x == 0)"})).collect();
        let s = schema(json!({"type": "array", "items": {"type": "integer"}, "x-kubernetes-validations": rules}));
        let v = json!((0..30_000).collect::<Vec<_>>());
        let errs: Vec<String> = validate(&s, &v, None).iter().map(ToString::to_string).collect();
        assert_eq!(
            errs,
            ["<nil>: Invalid value: \"array\": validation failed due to running out of cost budget (10000000), no further validation rules will be run"]
        );
        assert!(validate(&s, &json!([0, 1]), None).is_empty());
    }

    #[test]
    fn cel_rules_that_could_exhaust_the_stack_are_rejected() {
        let chain = |n: usize| vec!["self"; n].join(" + ") + " != ''";
        assert!(compile_cel(&chain(150)).is_ok());
        let e = compile_cel(&chain(300)).unwrap_err();
        assert!(e.contains("nested more than 200 levels"), "{e}");
        let e = compile_cel(&chain(3000)).unwrap_err();
        assert!(e.contains("longer than 8192 bytes"), "{e}");
        // The deepest accepted chain evaluates fine on a test thread's stack.
        let s = schema(json!({"type": "string", "x-kubernetes-validations": [{"rule": chain(190)}]}));
        assert!(validate(&s, &json!("a"), None).is_empty());
    }

    #[test]
    fn cel_values_are_typed_by_schema() {
        let s = cel_schema(json!({
            "rule": "self.ratio > 0.5 && self.replicas == 3 && self.x__dash__y == 'v' && self.timeout > duration('1m') && self.since < timestamp('2030-01-01T00:00:00Z')"
        }));
        let v = json!({"spec": {"ratio": 1, "replicas": 3.0, "x-y": "v", "timeout": "90s", "since": "2024-01-01T00:00:00Z"}});
        assert_eq!(errors(&s, &v), Vec::<String>::new());
        // The strings extension is available.
        let s = cel_schema(json!({"rule": "self.name.lowerAscii() == 'abc' && self.name.matches('^[A-Z]+$')"}));
        assert_eq!(errors(&s, &json!({"spec": {"name": "ABC"}})), Vec::<String>::new());
    }

    #[test]
    fn cel_skipped_on_type_errors_below() {
        let s = cel_schema(json!({"rule": "self.replicas > 5"}));
        assert_eq!(
            errors(&s, &json!({"spec": {"replicas": "x"}})),
            vec![
                "spec.replicas: Invalid value: \"string\": spec.replicas in body must be of type integer: \"string\"",
                "<nil>: Invalid value: some validation rules were not checked because the object was invalid; correct the existing errors to complete validation",
            ]
        );
    }

    #[test]
    fn hand_built_rule_without_program_is_compiled_on_use() {
        let mut s = cel_schema(json!({"rule": "true"}));
        let spec = s.properties.get_mut("spec").expect("spec");
        spec.validations = vec![ValidationRule {
            rule: "self.replicas < oldSelf.replicas".into(),
            message: None,
            message_expression: Some("'must shrink from ' + string(oldSelf.replicas)".into()),
            reason: None,
            field_path: None,
            optional_old_self: false,
            program: None,
            message_program: None,
            uses_old_self: false,
        }];
        let v = json!({"spec": {"replicas": 2}});
        assert!(validate(&s, &v, None).is_empty());
        assert_eq!(
            validate(&s, &v, Some(&v)).iter().map(ToString::to_string).collect::<Vec<_>>(),
            vec!["spec: Invalid value: \"object\": must shrink from 2"]
        );
    }

    #[test]
    fn display_of_every_kind() {
        let e = |kind, value: Option<&str>, detail: &str| FieldError {
            path: "spec.x".into(),
            kind,
            value: value.map(str::to_string),
            detail: detail.into(),
        };
        assert_eq!(e(FieldErrorKind::Required, None, "").to_string(), "spec.x: Required value");
        assert_eq!(e(FieldErrorKind::Forbidden, None, "no").to_string(), "spec.x: Forbidden: no");
        assert_eq!(e(FieldErrorKind::Duplicate, Some("\"a\""), "").to_string(), "spec.x: Duplicate value: \"a\"");
        assert_eq!(go_quote("a\"b\\\n\u{1}"), "\"a\\\"b\\\\\\n\\x01\"");
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("1h30m"), Some(5_400_000_000_000));
        assert_eq!(parse_go_duration("-1.5s"), Some(-1_500_000_000));
        assert_eq!(parse_go_duration(".5ms"), Some(500_000));
        assert_eq!(parse_go_duration("2562047h47m16.854775807s"), Some(i64::MAX));
        assert_eq!(parse_go_duration("-2562047h47m16.854775808s"), Some(i64::MIN));
        assert_eq!(parse_go_duration("2562047h47m16.854775808s"), None);
        assert_eq!(parse_go_duration("1e3s"), None);
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn arb_json() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<i64>().prop_map(|i| json!(i)),
                any::<u64>().prop_map(|u| json!(u)),
                any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| json!(f)),
                "[a-z0-9:/.\\-]{0,12}".prop_map(Value::String),
                Just(json!("web")),
                Just(json!("TCP")),
            ];
            leaf.prop_recursive(5, 64, 6, |inner| {
                let keys = prop_oneof![
                    Just("spec".to_string()),
                    Just("name".to_string()),
                    Just("replicas".to_string()),
                    Just("minReplicas".to_string()),
                    Just("ports".to_string()),
                    Just("port".to_string()),
                    Just("protocol".to_string()),
                    Just("tags".to_string()),
                    Just("labels".to_string()),
                    Just("target".to_string()),
                    Just("metadata".to_string()),
                    Just("f".to_string()),
                    Just("c".to_string()),
                    "[a-z]{1,3}",
                ];
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                    prop::collection::btree_map(keys, inner, 0..6).prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]
            #[test]
            fn never_panics(v in arb_json(), old in arb_json(), spec in arb_json()) {
                // Every format and combinator, reached through the keys the generator favours.
                let formats = [
                    "date-time", "date", "byte", "uuid", "uuid4", "ipv4", "ipv6", "cidr",
                    "hostname", "email", "uri", "duration", "mac", "int32", "int64",
                ];
                let fuzz = schema(json!({
                    "type": "object",
                    "x-kubernetes-validations": [
                        {"rule": "self == oldSelf", "optionalOldSelf": false},
                        {"rule": "!oldSelf.hasValue() || size(self) >= 0", "optionalOldSelf": true},
                        {"rule": "self.all(k, k != '')", "fieldPath": "['a.b'].c"}
                    ],
                    "properties": {
                        "f": {"type": "object", "properties": formats.iter().map(|f| {
                            (f.to_string(), json!({"format": f, "x-kubernetes-validations": [{"rule": "self == self"}]}))
                        }).collect::<serde_json::Map<_, _>>(), "additionalProperties": {"type": "string", "format": "duration"}},
                        "c": {
                            "type": "array",
                            "uniqueItems": true,
                            "items": {
                                "anyOf": [{"type": "integer"}, {"type": "string"}],
                                "oneOf": [{"minimum": 3}, {"pattern": "^a"}],
                                "not": {"enum": [7]},
                                "allOf": [{"maxLength": 4}, {"multipleOf": 0.5}]
                            }
                        }
                    }
                }));
                let _ = validate(&fuzz, &v, Some(&old));
                let _ = validate(&fuzz, &json!({"f": spec.clone(), "c": v.clone()}), Some(&old));
                let s = workload();
                let _ = validate(&s, &v, Some(&old));
                let mut wrapped = json!({"spec": spec});
                let _ = validate(&s, &wrapped, None);
                apply_defaults(&s, &mut wrapped);
                let _ = validate(&s, &wrapped, Some(&v));
                let mut v = v;
                apply_defaults(&s, &mut v);
            }
        }
    }
}

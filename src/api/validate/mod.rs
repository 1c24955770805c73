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

use std::collections::HashSet;
use std::fmt::{self, Write as _};

use cel::common::types::CelOptional;
use serde_json::{Map, Number, Value};

use crate::api::cel::{
    compile_cel, new_context, observed_cost, run, to_val, Observed, CALL_COST_LIMIT, OBJECT_COST_BUDGET,
};
use crate::api::schema::{json_type_name, AdditionalProperties, ListType, Schema, SchemaType, ValidationRule};

mod formats;
mod json;
mod lists;

pub(super) use formats::{decode_base64, parse_date, parse_date_time, parse_go_duration};
pub(crate) use json::go_quote;

use formats::check_format;
use json::{canonical, is_multiple_of, json_eq, quote_enum_value, render_duplicate, render_value, type_matches};
use lists::{duplicate_indices, key_default, key_value, OldListIndex};

/// One field error, printed in Kubernetes style.
///
/// `value` is the offending value already rendered the way Kubernetes prints it (strings quoted,
/// numbers bare, `"object"`/`"array"` for compound values); it is `None` for kinds whose message
/// carries no value, such as `Required value` or `Too long`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FieldError {
    pub path: String,
    pub kind: FieldErrorKind,
    pub value: Option<String>,
    pub detail: String,
}

/// The kind of a [`FieldError`], after `field.ErrorType` of k8s.io/apimachinery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FieldErrorKind {
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
    pub(crate) fn as_str(self) -> &'static str {
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
pub(crate) fn apply_defaults(schema: &Schema, value: &mut Value) {
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
pub(crate) fn needs_defaults(schema: &Schema, value: &Value) -> bool {
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
pub(crate) fn validate(schema: &Schema, value: &Value, old: Option<&Value>) -> Vec<FieldError> {
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

#[cfg(test)]
mod tests;

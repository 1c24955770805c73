//! Steps 1 and 2 of an apply, in one walk of the applied configuration: the field set it sets
//! (what the applying manager will own) and the fields it sets that the schema does not declare.
//!
//! Invariant: reads the applied configuration only; knows nothing of the live object or of other
//! managers.

use std::fmt::Write as _;

use serde_json::Value;

use crate::api::schema::SchemaType;

use super::fieldset::FieldSet;
use super::paths::render_key;
use super::typing::{
    canonical_value, child_ty, is_object_schema, list_item_keys, schema_child, shape, Child, Shape, Ty,
};
use super::MAX_DEPTH;

enum Seg<'v> {
    Field(&'v str),
    Key(String),
    Index(usize),
}

#[derive(Default)]
pub(super) struct Collector<'v> {
    stack: Vec<Seg<'v>>,
    pub(super) undeclared: Vec<String>,
    pub(super) too_deep: bool,
}

impl<'v> Collector<'v> {
    /// Records into `set` the fields `v` sets at the current path.
    pub(super) fn collect(&mut self, ty: Ty<'_>, v: &'v Value, set: &mut FieldSet) {
        if self.stack.len() > MAX_DEPTH {
            self.too_deep = true;
            return;
        }
        match shape(ty, v) {
            Shape::Leaf => {
                set.member = true;
                self.check(ty, v);
            }
            Shape::Map(obj) => {
                for (k, cv) in obj {
                    let cty = match child_ty(ty, k) {
                        Child::Ignored => continue,
                        Child::Undeclared => {
                            self.report(Seg::Field(k));
                            continue;
                        }
                        Child::Typed(cty) => cty,
                    };
                    // An explicit null removes the field; it is not owned.
                    if cv.is_null() {
                        continue;
                    }
                    self.stack.push(Seg::Field(k));
                    let mut child = FieldSet::default();
                    self.collect(cty, cv, &mut child);
                    self.stack.pop();
                    if !child.is_empty() {
                        set.children.insert(format!("f:{k}"), child);
                    }
                }
            }
            Shape::ListMap { items, names, item } => match list_item_keys(items, names) {
                None => {
                    set.member = true;
                    self.check(ty, v);
                }
                Some(keys) => {
                    for (iv, key) in items.iter().zip(keys) {
                        self.stack.push(Seg::Key(key));
                        let mut child = FieldSet::default();
                        self.collect(item, iv, &mut child);
                        child.member = true;
                        if let Some(Seg::Key(key)) = self.stack.pop() {
                            set.children.insert(key, child);
                        }
                    }
                }
            },
            Shape::Set(items) => {
                for iv in items {
                    set.children.insert(format!("v:{}", canonical_value(iv)), FieldSet::leaf());
                }
            }
        }
    }

    /// Undeclared-field check of a value owned as a whole (atomic map or list, type mismatch).
    fn check(&mut self, ty: Ty<'_>, v: &'v Value) {
        if self.stack.len() > MAX_DEPTH {
            self.too_deep = true;
            return;
        }
        // Only schema-typed nodes can have undeclared fields: the built-in metadata types are
        // open and untyped territory accepts anything.
        let Ty::Schema(s) = ty else { return };
        match v {
            Value::Object(obj) if is_object_schema(s) => {
                for (k, cv) in obj {
                    match schema_child(s, k) {
                        Child::Undeclared => self.report(Seg::Field(k)),
                        Child::Typed(cty) => {
                            self.stack.push(Seg::Field(k));
                            self.check(cty, cv);
                            self.stack.pop();
                        }
                        Child::Ignored => {}
                    }
                }
            }
            Value::Array(items) if s.type_.is_none_or(|t| t == SchemaType::Array) => {
                if let Some(item) = s.items.as_deref() {
                    for (i, iv) in items.iter().enumerate() {
                        self.stack.push(Seg::Index(i));
                        self.check(Ty::Schema(item), iv);
                        self.stack.pop();
                    }
                }
            }
            _ => {}
        }
    }

    fn report(&mut self, last: Seg<'_>) {
        let mut path = String::new();
        for seg in self.stack.iter().chain(std::iter::once(&last)) {
            match seg {
                Seg::Field(name) => {
                    path.push('.');
                    path.push_str(name);
                }
                Seg::Key(key) => render_key(key, &mut path),
                Seg::Index(i) => {
                    let _ = write!(path, "[{i}]");
                }
            }
        }
        self.undeclared.push(format!("{path}: field not declared in schema"));
    }
}

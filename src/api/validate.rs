//! TEMPORARY stub, replaced by the real validator.
use serde_json::Value;
use super::schema::Schema;
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError { pub path: String, pub detail: String }
impl std::fmt::Display for FieldError { fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { write!(f, "{}: {}", self.path, self.detail) } }
pub fn apply_defaults(_schema: &Schema, _value: &mut Value) {}
pub fn validate(_schema: &Schema, _value: &Value, _old: Option<&Value>) -> Vec<FieldError> { Vec::new() }

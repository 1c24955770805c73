//! The structural OpenAPI v3 schema of a CRD version, parsed once at registration.
//!
//! A [`Schema`] is the typed form of a `JSONSchemaProps` document: everything validation,
//! defaulting and server-side apply need (types, bounds, list/map semantics, CEL rules) is a
//! field, and patterns are compiled up front so a bad CRD fails when it is registered rather than
//! when the first object arrives. Parsing never panics on user input: every problem becomes a
//! [`SchemaError`] naming the path inside the schema.

use std::collections::BTreeMap;

use serde_json::Value;

/// The JSON type a schema node admits (`type:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaType {
    Object,
    Array,
    String,
    Integer,
    Number,
    Boolean,
}

impl SchemaType {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            SchemaType::Object => "object",
            SchemaType::Array => "array",
            SchemaType::String => "string",
            SchemaType::Integer => "integer",
            SchemaType::Number => "number",
            SchemaType::Boolean => "boolean",
        }
    }
}

/// `x-kubernetes-list-type`: how a list merges under server-side apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ListType {
    /// The whole list is one value, owned and replaced as a unit (the default).
    #[default]
    Atomic,
    /// Items are scalars, unique, merged by value.
    Set,
    /// Items are objects identified by `x-kubernetes-list-map-keys`, merged by key.
    Map,
}

/// `x-kubernetes-map-type`: whether an object merges field by field or as a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MapType {
    #[default]
    Granular,
    Atomic,
}

/// `additionalProperties`: either a boolean or a schema for every extra key.
#[derive(Debug, Clone)]
pub enum AdditionalProperties {
    Allowed(bool),
    Schema(Box<Schema>),
}

/// One `x-kubernetes-validations` rule.
#[derive(Debug, Clone)]
pub struct ValidationRule {
    pub rule: String,
    pub message: Option<String>,
    pub message_expression: Option<String>,
    pub reason: Option<String>,
    pub field_path: Option<String>,
    /// `optionalOldSelf`: evaluate transition rules on create too, with `oldSelf` absent.
    pub optional_old_self: bool,
    /// `rule`, compiled once when the CRD is parsed and shared by every clone of the schema
    /// (`cel::Program` is `Send + Sync`). `None` only for rules built by hand, which validation
    /// then compiles on every use.
    pub program: Option<std::sync::Arc<cel::Program>>,
    /// `messageExpression`, compiled likewise.
    pub message_program: Option<std::sync::Arc<cel::Program>>,
    /// Whether `rule` or `messageExpression` refers to `oldSelf`, which makes this a transition
    /// rule: skipped on create unless `optionalOldSelf`.
    pub uses_old_self: bool,
}

/// One node of a structural schema.
#[derive(Debug, Clone, Default)]
pub struct Schema {
    pub type_: Option<SchemaType>,
    pub format: Option<String>,
    pub properties: BTreeMap<String, Schema>,
    pub additional_properties: Option<AdditionalProperties>,
    pub items: Option<Box<Schema>>,
    pub required: Vec<String>,
    pub enum_values: Option<Vec<Value>>,
    /// The source text of `pattern`; [`Schema::pattern_regex`] is its compiled form.
    pub pattern: Option<String>,
    pub pattern_regex: Option<regex::Regex>,
    pub minimum: Option<f64>,
    pub maximum: Option<f64>,
    pub exclusive_minimum: bool,
    pub exclusive_maximum: bool,
    pub multiple_of: Option<f64>,
    pub min_length: Option<u64>,
    pub max_length: Option<u64>,
    pub min_items: Option<u64>,
    pub max_items: Option<u64>,
    pub unique_items: bool,
    pub min_properties: Option<u64>,
    pub max_properties: Option<u64>,
    pub nullable: bool,
    pub default: Option<Value>,
    pub preserve_unknown_fields: bool,
    pub int_or_string: bool,
    pub embedded_resource: bool,
    pub list_type: Option<ListType>,
    pub list_map_keys: Vec<String>,
    pub map_type: Option<MapType>,
    pub validations: Vec<ValidationRule>,
    pub all_of: Vec<Schema>,
    pub any_of: Vec<Schema>,
    pub one_of: Vec<Schema>,
    pub not: Option<Box<Schema>>,
    /// For `explain`.
    pub description: Option<String>,
}

/// A problem in a CRD's schema, with the path inside `openAPIV3Schema`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub(crate) struct SchemaError {
    pub path: String,
    pub message: String,
}

impl Schema {
    /// Parses a `JSONSchemaProps` JSON document. `path` names the node in errors.
    pub(crate) fn parse(value: &Value, path: &str) -> Result<Schema, SchemaError> {
        let err = |message: String| SchemaError { path: path.to_string(), message };
        let map = value.as_object().ok_or_else(|| err(format!("must be an object, got {}", json_type_name(value))))?;
        let mut s = Schema::default();
        for (key, v) in map {
            let sub = |name: &str| format!("{path}.{name}");
            match key.as_str() {
                "type" => {
                    let t = v.as_str().ok_or_else(|| err("type must be a string".into()))?;
                    s.type_ = Some(match t {
                        "object" => SchemaType::Object,
                        "array" => SchemaType::Array,
                        "string" => SchemaType::String,
                        "integer" => SchemaType::Integer,
                        "number" => SchemaType::Number,
                        "boolean" => SchemaType::Boolean,
                        other => return Err(err(format!("unsupported type {other:?}"))),
                    });
                }
                "format" => s.format = Some(str_field(v, &sub("format"))?),
                "properties" => {
                    let props = v
                        .as_object()
                        .ok_or_else(|| SchemaError { path: sub("properties"), message: "must be an object".into() })?;
                    for (name, p) in props {
                        let child = Schema::parse(p, &format!("{path}.properties.{name}"))?;
                        s.properties.insert(name.clone(), child);
                    }
                }
                "additionalProperties" => {
                    s.additional_properties = Some(match v {
                        Value::Bool(b) => AdditionalProperties::Allowed(*b),
                        other => {
                            AdditionalProperties::Schema(Box::new(Schema::parse(other, &sub("additionalProperties"))?))
                        }
                    })
                }
                "items" => {
                    // A list of schemas (tuple form) is not structural; reject it clearly.
                    if v.is_array() {
                        return Err(SchemaError {
                            path: sub("items"),
                            message: "must be a schema, not a list of schemas".into(),
                        });
                    }
                    s.items = Some(Box::new(Schema::parse(v, &sub("items"))?));
                }
                "required" => s.required = str_list(v, &sub("required"))?,
                "enum" => {
                    let list = v
                        .as_array()
                        .ok_or_else(|| SchemaError { path: sub("enum"), message: "must be a list".into() })?;
                    s.enum_values = Some(list.clone());
                }
                "pattern" => {
                    let p = str_field(v, &sub("pattern"))?;
                    let re = regex::Regex::new(&p).map_err(|e| SchemaError {
                        path: sub("pattern"),
                        message: format!("invalid regular expression: {e}"),
                    })?;
                    s.pattern = Some(p);
                    s.pattern_regex = Some(re);
                }
                "minimum" => s.minimum = Some(num_field(v, &sub("minimum"))?),
                "maximum" => s.maximum = Some(num_field(v, &sub("maximum"))?),
                "exclusiveMinimum" => s.exclusive_minimum = bool_field(v, &sub("exclusiveMinimum"))?,
                "exclusiveMaximum" => s.exclusive_maximum = bool_field(v, &sub("exclusiveMaximum"))?,
                "multipleOf" => s.multiple_of = Some(num_field(v, &sub("multipleOf"))?),
                "minLength" => s.min_length = Some(uint_field(v, &sub("minLength"))?),
                "maxLength" => s.max_length = Some(uint_field(v, &sub("maxLength"))?),
                "minItems" => s.min_items = Some(uint_field(v, &sub("minItems"))?),
                "maxItems" => s.max_items = Some(uint_field(v, &sub("maxItems"))?),
                "uniqueItems" => s.unique_items = bool_field(v, &sub("uniqueItems"))?,
                "minProperties" => s.min_properties = Some(uint_field(v, &sub("minProperties"))?),
                "maxProperties" => s.max_properties = Some(uint_field(v, &sub("maxProperties"))?),
                "nullable" => s.nullable = bool_field(v, &sub("nullable"))?,
                "default" => s.default = Some(v.clone()),
                "x-kubernetes-preserve-unknown-fields" => s.preserve_unknown_fields = bool_field(v, &sub(key))?,
                "x-kubernetes-int-or-string" => s.int_or_string = bool_field(v, &sub(key))?,
                "x-kubernetes-embedded-resource" => s.embedded_resource = bool_field(v, &sub(key))?,
                "x-kubernetes-list-type" => {
                    s.list_type = Some(match str_field(v, &sub(key))?.as_str() {
                        "atomic" => ListType::Atomic,
                        "set" => ListType::Set,
                        "map" => ListType::Map,
                        other => {
                            return Err(SchemaError {
                                path: sub(key),
                                message: format!(
                                    "unsupported value {other:?}: supported values: \"atomic\", \"set\", \"map\""
                                ),
                            })
                        }
                    })
                }
                "x-kubernetes-list-map-keys" => s.list_map_keys = str_list(v, &sub(key))?,
                "x-kubernetes-map-type" => {
                    s.map_type = Some(match str_field(v, &sub(key))?.as_str() {
                        "granular" => MapType::Granular,
                        "atomic" => MapType::Atomic,
                        other => {
                            return Err(SchemaError {
                                path: sub(key),
                                message: format!(
                                    "unsupported value {other:?}: supported values: \"granular\", \"atomic\""
                                ),
                            })
                        }
                    })
                }
                "x-kubernetes-validations" => {
                    let list =
                        v.as_array().ok_or_else(|| SchemaError { path: sub(key), message: "must be a list".into() })?;
                    for (i, r) in list.iter().enumerate() {
                        s.validations.push(parse_rule(r, &format!("{path}.{key}[{i}]"))?);
                    }
                }
                "allOf" | "anyOf" | "oneOf" => {
                    let list =
                        v.as_array().ok_or_else(|| SchemaError { path: sub(key), message: "must be a list".into() })?;
                    let mut parsed = Vec::with_capacity(list.len());
                    for (i, item) in list.iter().enumerate() {
                        parsed.push(Schema::parse(item, &format!("{path}.{key}[{i}]"))?);
                    }
                    match key.as_str() {
                        "allOf" => s.all_of = parsed,
                        "anyOf" => s.any_of = parsed,
                        _ => s.one_of = parsed,
                    }
                }
                "not" => s.not = Some(Box::new(Schema::parse(v, &sub("not"))?)),
                // Documentation and keywords with no effect on validation.
                "description" => s.description = v.as_str().map(str::to_string),
                "title" | "example" | "externalDocs" | "$schema" | "id" => {}
                "$ref" => return Err(err("$ref is not allowed in a structural schema".into())),
                _ => {
                    // Unknown keywords are tolerated, as the Kubernetes API server tolerates
                    // vendor extensions it does not know.
                    log::debug!("{path}: ignoring unknown schema keyword {key}");
                }
            }
        }
        if s.list_type == Some(ListType::Map) {
            if s.list_map_keys.is_empty() {
                return Err(err("x-kubernetes-list-type map requires x-kubernetes-list-map-keys".into()));
            }
            let item = s.items.as_deref();
            if item.and_then(|i| i.type_) != Some(SchemaType::Object) {
                return Err(err("x-kubernetes-list-type map requires items of type object".into()));
            }
        }
        Ok(s)
    }

    /// Returns the schema for the property `name` of an object node, following
    /// `additionalProperties` when the property is not declared.
    pub(crate) fn property(&self, name: &str) -> Option<&Schema> {
        self.properties.get(name).or(match &self.additional_properties {
            Some(AdditionalProperties::Schema(s)) => Some(s),
            _ => None,
        })
    }

    /// Whether a field not named in `properties` is accepted under this node.
    pub(crate) fn allows_unknown_fields(&self) -> bool {
        self.preserve_unknown_fields
            || matches!(self.additional_properties, Some(AdditionalProperties::Allowed(true)))
            || matches!(self.additional_properties, Some(AdditionalProperties::Schema(_)))
    }

    /// The effective list type (`atomic` when unset).
    pub(crate) fn effective_list_type(&self) -> ListType {
        self.list_type.unwrap_or_default()
    }
}

fn parse_rule(v: &Value, path: &str) -> Result<ValidationRule, SchemaError> {
    let map =
        v.as_object().ok_or_else(|| SchemaError { path: path.to_string(), message: "must be an object".into() })?;
    let get = |k: &str| -> Result<Option<String>, SchemaError> {
        match map.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => str_field(v, &format!("{path}.{k}")).map(Some),
        }
    };
    let rule =
        get("rule")?.ok_or_else(|| SchemaError { path: format!("{path}.rule"), message: "Required value".into() })?;
    // Compile now, so that a bad rule fails CRD registration rather than every object.
    let compile = |field: &str, source: &str| {
        crate::api::cel::compile_cel(source).map_err(|e| SchemaError {
            path: format!("{path}.{field}"),
            message: format!("compilation failed for {source:?}: {e}"),
        })
    };
    let program = compile("rule", &rule)?;
    let message_expression = get("messageExpression")?;
    let message_program = match &message_expression {
        Some(m) => Some(compile("messageExpression", m)?),
        None => None,
    };
    let uses_old_self = program.references().has_variable("oldSelf")
        || message_program.as_ref().is_some_and(|p| p.references().has_variable("oldSelf"));
    Ok(ValidationRule {
        rule,
        message: get("message")?,
        message_expression,
        reason: get("reason")?,
        field_path: get("fieldPath")?,
        optional_old_self: match map.get("optionalOldSelf") {
            Some(v) => bool_field(v, &format!("{path}.optionalOldSelf"))?,
            None => false,
        },
        program: Some(std::sync::Arc::new(program)),
        message_program: message_program.map(std::sync::Arc::new),
        uses_old_self,
    })
}

fn str_field(v: &Value, path: &str) -> Result<String, SchemaError> {
    v.as_str().map(str::to_string).ok_or_else(|| SchemaError {
        path: path.to_string(),
        message: format!("must be a string, got {}", json_type_name(v)),
    })
}

fn str_list(v: &Value, path: &str) -> Result<Vec<String>, SchemaError> {
    let list = v
        .as_array()
        .ok_or_else(|| SchemaError { path: path.to_string(), message: "must be a list of strings".into() })?;
    list.iter().enumerate().map(|(i, x)| str_field(x, &format!("{path}[{i}]"))).collect()
}

fn bool_field(v: &Value, path: &str) -> Result<bool, SchemaError> {
    v.as_bool().ok_or_else(|| SchemaError {
        path: path.to_string(),
        message: format!("must be a boolean, got {}", json_type_name(v)),
    })
}

fn num_field(v: &Value, path: &str) -> Result<f64, SchemaError> {
    v.as_f64().ok_or_else(|| SchemaError {
        path: path.to_string(),
        message: format!("must be a number, got {}", json_type_name(v)),
    })
}

fn uint_field(v: &Value, path: &str) -> Result<u64, SchemaError> {
    v.as_u64().ok_or_else(|| SchemaError {
        path: path.to_string(),
        message: format!("must be a non-negative integer, got {v}"),
    })
}

/// The JSON type name of a value, as Kubernetes error messages spell it.
pub(crate) fn json_type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_nested_schema_with_extensions() {
        let s = Schema::parse(
            &json!({
                "type": "object",
                "properties": {
                    "spec": {
                        "type": "object",
                        "required": ["name"],
                        "properties": {
                            "name": {"type": "string", "pattern": "^[a-z]+$"},
                            "ports": {
                                "type": "array",
                                "x-kubernetes-list-type": "map",
                                "x-kubernetes-list-map-keys": ["port"],
                                "items": {"type": "object", "properties": {"port": {"type": "integer"}}}
                            }
                        }
                    }
                }
            }),
            "openAPIV3Schema",
        )
        .unwrap();
        let spec = s.property("spec").unwrap();
        assert_eq!(spec.required, vec!["name"]);
        assert!(spec.property("name").unwrap().pattern_regex.is_some());
        assert_eq!(spec.property("ports").unwrap().effective_list_type(), ListType::Map);
    }

    #[test]
    fn rejects_bad_pattern_and_incomplete_list_map() {
        let e = Schema::parse(&json!({"type": "string", "pattern": "("}), "s").unwrap_err();
        assert_eq!(e.path, "s.pattern");
        let e =
            Schema::parse(&json!({"type": "array", "x-kubernetes-list-type": "map", "items": {"type": "object"}}), "s")
                .unwrap_err();
        assert!(e.message.contains("list-map-keys"), "{e}");
    }
}

//! Unit tests of defaulting and validation, and a property test (`props`) that neither panics
//! on arbitrary JSON.
//!
//! Invariant: test-only code; touches no files and shares no state between tests.

use super::formats::parse_go_duration;
use super::json::go_quote;
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
    let errs = defaulted_errors(&s, &json!({"apiVersion": 1, "kind": "W", "metadata": [], "spec": {"name": "web"}}));
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
    let s = cel_schema(json!({"rule": "self.replicas >= oldSelf.replicas", "message": "replicas may not decrease"}));
    let new = json!({"spec": {"replicas": 2}});
    // On create there is no oldSelf: the rule is skipped.
    assert!(validate(&s, &new, None).is_empty());
    assert!(validate(&s, &new, Some(&json!({"spec": {"replicas": 1}}))).is_empty());
    assert_eq!(
        validate(&s, &new, Some(&json!({"spec": {"replicas": 3}}))).iter().map(ToString::to_string).collect::<Vec<_>>(),
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
    assert_eq!(errors(&s, &json!({"spec": {"name": "bad"}})), vec!["spec.name: Invalid value: \"object\": bad name"]);
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
    let want = format!("items: Invalid value: \"array\": {nested}: call cost exceeds the limit of 1000000 (estimated ");
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
    let v =
        json!({"spec": {"ratio": 1, "replicas": 3.0, "x-y": "v", "timeout": "90s", "since": "2024-01-01T00:00:00Z"}});
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

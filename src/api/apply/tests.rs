//! Unit tests of server-side apply through its entry points, and property tests (`props`) of
//! its merge and ownership rules over generated configurations.
//!
//! Invariant: test-only code; touches no files and shares no state between tests.

use super::*;
use serde_json::json;

const T1: &str = "2026-11-25T10:00:00Z";
const T2: &str = "2026-11-25T11:00:00Z";
const T3: &str = "2026-11-25T12:00:00Z";

fn schema() -> Schema {
    Schema::parse(
        &json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "properties": {
                        "greeting": {"type": "string"},
                        "replicas": {"type": "integer"},
                        "tags": {"type": "array", "items": {"type": "string"}},
                        "ports": {
                            "type": "array",
                            "x-kubernetes-list-type": "map",
                            "x-kubernetes-list-map-keys": ["port"],
                            "items": {
                                "type": "object",
                                "properties": {
                                    "port": {"type": "integer"},
                                    "name": {"type": "string"},
                                    "protocol": {"type": "string"}
                                }
                            }
                        },
                        "aliases": {
                            "type": "array",
                            "x-kubernetes-list-type": "set",
                            "items": {"type": "string"}
                        },
                        "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                        "opts": {
                            "type": "object",
                            "properties": {"a": {"type": "string"}, "b": {"type": "string"}}
                        },
                        "selector": {
                            "type": "object",
                            "x-kubernetes-map-type": "atomic",
                            "additionalProperties": {"type": "string"}
                        }
                    }
                },
                "status": {
                    "type": "object",
                    "properties": {
                        "conditions": {
                            "type": "array",
                            "x-kubernetes-list-type": "map",
                            "x-kubernetes-list-map-keys": ["type"],
                            "items": {
                                "type": "object",
                                "properties": {
                                    "type": {"type": "string"},
                                    "status": {"type": "string"},
                                    "reason": {"type": "string"}
                                }
                            }
                        }
                    }
                }
            }
        }),
        "openAPIV3Schema",
    )
    .unwrap()
}

fn obj(spec: Value) -> Value {
    json!({
        "apiVersion": "example.com/v1alpha1",
        "kind": "Greeter",
        "metadata": {"name": "g", "namespace": "default"},
        "spec": spec
    })
}

fn run(
    s: &Schema,
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    now: &str,
) -> Result<Value, ApplyError> {
    let req = ApplyRequest { schema: s, live, applied, manager, force, now };
    let result = apply(&req);
    // Whatever says "unchanged" must be the live object, exactly.
    if let (Ok(Change::Unchanged), Ok(v)) = (apply_change(&req), &result) {
        assert_eq!(Some(v), live);
    }
    result
}

fn ok(s: &Schema, live: Option<&Value>, applied: &Value, manager: &str, now: &str) -> Value {
    run(s, live, applied, manager, false, now).unwrap()
}

fn entries(v: &Value) -> &Vec<Value> {
    v["metadata"]["managedFields"].as_array().unwrap()
}

fn entry<'a>(v: &'a Value, manager: &str) -> &'a Value {
    entries(v).iter().find(|e| e["manager"] == manager).unwrap()
}

#[test]
fn create_records_owned_fields() {
    let s = schema();
    let out = ok(&s, None, &obj(json!({"greeting": "hi", "replicas": 2})), "alice", T1);
    assert_eq!(out["spec"], json!({"greeting": "hi", "replicas": 2}));
    assert_eq!(out["metadata"]["name"], "g");
    assert_eq!(out["apiVersion"], "example.com/v1alpha1");
    assert_eq!(
        out["metadata"]["managedFields"],
        json!([{
            "manager": "alice",
            "operation": "Apply",
            "apiVersion": "example.com/v1alpha1",
            "time": T1,
            "fieldsType": "FieldsV1",
            "fieldsV1": {"f:spec": {"f:greeting": {}, "f:replicas": {}}}
        }])
    );
    assert_eq!(managed_paths(&out, "alice").unwrap(), vec![".spec.greeting", ".spec.replicas"]);
}

#[test]
fn apply_change_tells_an_unchanged_result_apart() {
    let s = schema();
    let change = |live: Option<&Value>, applied: &Value, manager: &str, now: &str| {
        apply_change(&ApplyRequest { schema: &s, live, applied, manager, force: false, now }).unwrap()
    };
    let x = obj(json!({"greeting": "hi", "replicas": 2}));
    let first = ok(&s, None, &x, "alice", T1);
    assert_eq!(change(None, &x, "alice", T1), Change::Merged(first.clone()));
    assert_eq!(change(Some(&first), &x, "alice", T2), Change::Unchanged);
    // Same values, another manager: only managedFields change, and that is a change.
    let shared = change(Some(&first), &obj(json!({"greeting": "hi"})), "bob", T2);
    assert_eq!(shared, Change::Merged(ok(&s, Some(&first), &obj(json!({"greeting": "hi"})), "bob", T2)));
    assert_ne!(shared, Change::Merged(first.clone()));
    // A manager that stops applying a field removes it.
    let dropped = change(Some(&first), &obj(json!({"greeting": "hi"})), "alice", T2);
    let Change::Merged(dropped) = dropped else { panic!("a dropped field is a change") };
    assert_eq!(dropped["spec"], json!({"greeting": "hi"}));
}

#[test]
fn reapplying_identical_object_is_a_no_op() {
    let s = schema();
    let applied = obj(json!({
        "greeting": "hi",
        "ports": [{"port": 80, "name": "http"}],
        "aliases": ["a"],
        "extra": {"x": {"y": [1, 2]}}
    }));
    let first = ok(&s, None, &applied, "alice", T1);
    let second = ok(&s, Some(&first), &applied, "alice", T2);
    assert_eq!(second, first);
    assert_eq!(entry(&second, "alice")["time"], T1);
}

#[test]
fn adding_a_field_updates_entry_and_time() {
    let s = schema();
    let first = ok(&s, None, &obj(json!({"greeting": "hi"})), "alice", T1);
    let second = ok(&s, Some(&first), &obj(json!({"greeting": "hi", "replicas": 3})), "alice", T2);
    assert_eq!(second["spec"], json!({"greeting": "hi", "replicas": 3}));
    assert_eq!(entry(&second, "alice")["time"], T2);
    assert_eq!(managed_paths(&second, "alice").unwrap(), vec![".spec.greeting", ".spec.replicas"]);
}

#[test]
fn field_dropped_by_its_only_manager_disappears() {
    let s = schema();
    let first = ok(&s, None, &obj(json!({"greeting": "hi", "replicas": 3})), "alice", T1);
    let second = ok(&s, Some(&first), &obj(json!({"greeting": "hi"})), "alice", T2);
    assert_eq!(second["spec"], json!({"greeting": "hi"}));
    assert_eq!(managed_paths(&second, "alice").unwrap(), vec![".spec.greeting"]);
}

#[test]
fn dropped_field_survives_when_another_manager_owns_it() {
    let s = schema();
    let a = ok(&s, None, &obj(json!({"greeting": "hi", "replicas": 3})), "alice", T1);
    // Same value: shared ownership, no conflict.
    let b = ok(&s, Some(&a), &obj(json!({"replicas": 3})), "bob", T2);
    assert_eq!(entry(&b, "alice")["time"], T1);
    let c = ok(&s, Some(&b), &obj(json!({"greeting": "hi"})), "alice", T3);
    assert_eq!(c["spec"], json!({"greeting": "hi", "replicas": 3}));
    assert_eq!(managed_paths(&c, "bob").unwrap(), vec![".spec.replicas"]);
    assert_eq!(managed_paths(&c, "alice").unwrap(), vec![".spec.greeting"]);
}

#[test]
fn disjoint_managers_both_survive() {
    let s = schema();
    let a = ok(&s, None, &obj(json!({"greeting": "hi"})), "alice", T1);
    let b = ok(&s, Some(&a), &obj(json!({"replicas": 5})), "bob", T2);
    let a2 = ok(&s, Some(&b), &obj(json!({"greeting": "hello"})), "alice", T3);
    assert_eq!(a2["spec"], json!({"greeting": "hello", "replicas": 5}));
    let managers: Vec<&Value> = entries(&a2).iter().map(|e| &e["manager"]).collect();
    assert_eq!(managers, vec!["alice", "bob"]);
    assert_eq!(entry(&a2, "bob")["time"], T2);
}

#[test]
fn conflicts_are_reported_sorted_with_kubernetes_text() {
    let s = schema();
    let a = ok(&s, None, &obj(json!({"greeting": "hi"})), "mgr-a", T1);
    let b = ok(&s, Some(&a), &obj(json!({"replicas": 1})), "mgr-b", T1);
    let err = run(&s, Some(&b), &obj(json!({"greeting": "yo", "replicas": 2})), "c", false, T2).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Apply failed with 2 conflicts: conflict with \"mgr-a\": .spec.greeting, \
         conflict with \"mgr-b\": .spec.replicas"
    );
    let err = run(&s, Some(&b), &obj(json!({"replicas": 2})), "c", false, T2).unwrap_err();
    assert_eq!(err, ApplyError::Conflicts(vec![Conflict { manager: "mgr-b".into(), path: ".spec.replicas".into() }]));
    assert_eq!(err.to_string(), "Apply failed with 1 conflict: conflict with \"mgr-b\": .spec.replicas");
}

#[test]
fn force_takes_ownership() {
    let s = schema();
    let a = ok(&s, None, &obj(json!({"greeting": "hi", "replicas": 1})), "alice", T1);
    let b = run(&s, Some(&a), &obj(json!({"greeting": "yo"})), "bob", true, T2).unwrap();
    assert_eq!(b["spec"], json!({"greeting": "yo", "replicas": 1}));
    assert_eq!(managed_paths(&b, "alice").unwrap(), vec![".spec.replicas"]);
    assert_eq!(managed_paths(&b, "bob").unwrap(), vec![".spec.greeting"]);
    // Alice's set changed, so her entry gets the new time.
    assert_eq!(entry(&b, "alice")["time"], T2);
    // A manager that lost everything is dropped.
    let c = run(&s, Some(&b), &obj(json!({"replicas": 9})), "bob", true, T3).unwrap();
    let managers: Vec<&Value> = entries(&c).iter().map(|e| &e["manager"]).collect();
    assert_eq!(managers, vec!["bob"]);
    // Bob dropped greeting: he was its only owner after forcing.
    assert_eq!(c["spec"], json!({"replicas": 9}));
}

fn status(conds: Value) -> Value {
    json!({
        "apiVersion": "example.com/v1alpha1",
        "kind": "Greeter",
        "metadata": {"name": "g"},
        "status": {"conditions": conds}
    })
}

#[test]
fn list_map_conditions_merge_by_type() {
    let s = schema();
    let a = ok(&s, None, &status(json!([{"type": "Ready", "status": "True"}])), "ready-ctl", T1);
    let b =
        ok(&s, Some(&a), &status(json!([{"type": "Synced", "status": "False", "reason": "Pending"}])), "sync-ctl", T2);
    assert_eq!(
        b["status"]["conditions"],
        json!([
            {"type": "Ready", "status": "True"},
            {"type": "Synced", "status": "False", "reason": "Pending"}
        ])
    );
    // Updating an owned condition in place keeps the live order.
    let c = ok(&s, Some(&b), &status(json!([{"type": "Ready", "status": "False"}])), "ready-ctl", T3);
    assert_eq!(c["status"]["conditions"][0], json!({"type": "Ready", "status": "False"}));
    assert_eq!(
        managed_paths(&c, "sync-ctl").unwrap(),
        vec![
            ".status.conditions[type=\"Synced\"]",
            ".status.conditions[type=\"Synced\"].reason",
            ".status.conditions[type=\"Synced\"].status",
            ".status.conditions[type=\"Synced\"].type",
        ]
    );
    // Dropping its condition removes only that one.
    let d = ok(&s, Some(&c), &status(json!([])), "ready-ctl", T3);
    assert_eq!(d["status"]["conditions"], json!([{"type": "Synced", "status": "False", "reason": "Pending"}]));
    let managers: Vec<&Value> = entries(&d).iter().map(|e| &e["manager"]).collect();
    assert_eq!(managers, vec!["sync-ctl"]);
}

#[test]
fn list_map_conflict_is_reported_at_leaf_level() {
    let s = schema();
    let a = ok(&s, None, &status(json!([{"type": "Ready", "status": "True"}])), "a", T1);
    // Same item, same values: shared.
    let b = ok(&s, Some(&a), &status(json!([{"type": "Ready", "status": "True"}])), "b", T2);
    let err = run(&s, Some(&b), &status(json!([{"type": "Ready", "status": "False"}])), "c", false, T3).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Apply failed with 2 conflicts: conflict with \"a\": .status.conditions[type=\"Ready\"].status, \
         conflict with \"b\": .status.conditions[type=\"Ready\"].status"
    );
    // A new field in a shared item is no conflict.
    ok(&s, Some(&b), &status(json!([{"type": "Ready", "reason": "Fine"}])), "c", T3);
}

#[test]
fn removed_item_field_keeps_item_owned_by_another_manager() {
    let s = schema();
    let a = ok(&s, None, &status(json!([{"type": "Ready", "status": "True", "reason": "Up"}])), "a", T1);
    let b = ok(&s, Some(&a), &status(json!([{"type": "Ready", "status": "True"}])), "b", T2);
    let c = ok(&s, Some(&b), &status(json!([])), "a", T3);
    // b still owns the item and its status; a's reason is gone.
    assert_eq!(c["status"]["conditions"], json!([{"type": "Ready", "status": "True"}]));
}

fn with_meta(meta: Value) -> Value {
    let mut m = json!({"name": "g"});
    for (k, v) in meta.as_object().unwrap() {
        m[k] = v.clone();
    }
    json!({"apiVersion": "example.com/v1alpha1", "kind": "Greeter", "metadata": m})
}

#[test]
fn finalizers_merge_as_a_set() {
    let s = schema();
    let a = ok(&s, None, &with_meta(json!({"finalizers": ["a.io/x"]})), "a", T1);
    let b = ok(&s, Some(&a), &with_meta(json!({"finalizers": ["b.io/y", "a.io/x"]})), "b", T2);
    assert_eq!(b["metadata"]["finalizers"], json!(["a.io/x", "b.io/y"]));
    assert_eq!(
        entry(&b, "b")["fieldsV1"],
        json!({"f:metadata": {"f:finalizers": {"v:\"a.io/x\"": {}, "v:\"b.io/y\"": {}}}})
    );
    // a drops its finalizer, but b also owns it.
    let c = ok(&s, Some(&b), &with_meta(json!({})), "a", T3);
    assert_eq!(c["metadata"]["finalizers"], json!(["a.io/x", "b.io/y"]));
    // b drops a.io/x, now owned by nobody else.
    let d = ok(&s, Some(&c), &with_meta(json!({"finalizers": ["b.io/y"]})), "b", T3);
    assert_eq!(d["metadata"]["finalizers"], json!(["b.io/y"]));
    // b drops the last one: the emptied list is pruned.
    let e = ok(&s, Some(&d), &with_meta(json!({})), "b", T3);
    assert!(e["metadata"].get("finalizers").is_none(), "{e}");
    assert!(e["metadata"].get("managedFields").is_none(), "{e}");
}

#[test]
fn finalizers_each_manager_drops_only_its_own() {
    let s = schema();
    let a = ok(&s, None, &with_meta(json!({"finalizers": ["a.io/x"]})), "a", T1);
    let b = ok(&s, Some(&a), &with_meta(json!({"finalizers": ["b.io/y"]})), "b", T2);
    let c = ok(&s, Some(&b), &with_meta(json!({"finalizers": []})), "a", T3);
    assert_eq!(c["metadata"]["finalizers"], json!(["b.io/y"]));
    let d = ok(&s, Some(&b), &with_meta(json!({})), "b", T3);
    assert_eq!(d["metadata"]["finalizers"], json!(["a.io/x"]));
}

#[test]
fn owner_references_merge_by_uid() {
    let s = schema();
    let r1 = json!({"apiVersion": "v1", "kind": "A", "name": "a", "uid": "u1"});
    let r2 = json!({"apiVersion": "v1", "kind": "B", "name": "b", "uid": "u2"});
    let a = ok(&s, None, &with_meta(json!({"ownerReferences": [r1]})), "a", T1);
    let b = ok(&s, Some(&a), &with_meta(json!({"ownerReferences": [r2]})), "b", T2);
    assert_eq!(b["metadata"]["ownerReferences"], json!([r1, r2]));
    assert_eq!(
        entry(&b, "b")["fieldsV1"],
        json!({"f:metadata": {"f:ownerReferences": {"k:{\"uid\":\"u2\"}": {
            ".": {}, "f:apiVersion": {}, "f:kind": {}, "f:name": {}, "f:uid": {}
        }}}})
    );
    let c = ok(&s, Some(&b), &with_meta(json!({})), "a", T3);
    assert_eq!(c["metadata"]["ownerReferences"], json!([r2]));
}

#[test]
fn labels_are_granular() {
    let s = schema();
    let a = ok(&s, None, &with_meta(json!({"labels": {"app": "x", "tier": "web"}})), "a", T1);
    let b = ok(&s, Some(&a), &with_meta(json!({"labels": {"team": "net"}})), "b", T2);
    assert_eq!(b["metadata"]["labels"], json!({"app": "x", "tier": "web", "team": "net"}));
    let c = ok(&s, Some(&b), &with_meta(json!({"labels": {"app": "x"}})), "a", T3);
    assert_eq!(c["metadata"]["labels"], json!({"app": "x", "team": "net"}));
    let err = run(&s, Some(&c), &with_meta(json!({"labels": {"team": "ops"}})), "a", false, T3).unwrap_err();
    assert_eq!(err.to_string(), "Apply failed with 1 conflict: conflict with \"b\": .metadata.labels.team");
}

#[test]
fn undeclared_field_is_rejected() {
    let s = schema();
    let err = run(&s, None, &obj(json!({"greetings": "hi"})), "a", false, T1).unwrap_err();
    assert_eq!(err, ApplyError::Undeclared(".spec.greetings: field not declared in schema".into()));
    assert_eq!(err.to_string(), ".spec.greetings: field not declared in schema");
}

#[test]
fn all_undeclared_fields_are_reported_sorted() {
    let s = schema();
    let applied = json!({
        "apiVersion": "example.com/v1alpha1",
        "kind": "Greeter",
        "metadata": {"name": "g", "whatever": 1},
        "spec": {
            "zzz": 1,
            "ports": [{"port": 80, "nmae": "http"}],
            "opts": {"c": "x"},
            "selector": {"k": "v"}
        },
        "bogus": true
    });
    let err = run(&s, None, &applied, "a", false, T1).unwrap_err();
    assert_eq!(
        err.to_string(),
        ".bogus: field not declared in schema, \
         .spec.opts.c: field not declared in schema, \
         .spec.ports[port=80].nmae: field not declared in schema, \
         .spec.zzz: field not declared in schema"
    );
}

#[test]
fn preserve_unknown_fields_accepts_anything() {
    let s = schema();
    let extra = json!({"a": {"b": [1, {"c": null}], "d": "e"}, "f": 1.5});
    let a = ok(&s, None, &obj(json!({"extra": extra})), "a", T1);
    assert_eq!(a["spec"]["extra"], extra);
    assert_eq!(managed_paths(&a, "a").unwrap(), vec![".spec.extra.a.b", ".spec.extra.a.d", ".spec.extra.f"]);
    // Nested unknown objects are granular: another manager can add beside.
    let b = ok(&s, Some(&a), &obj(json!({"extra": {"a": {"z": true}}})), "b", T2);
    assert_eq!(b["spec"]["extra"]["a"]["z"], true);
    assert_eq!(b["spec"]["extra"]["a"]["d"], "e");
}

#[test]
fn atomic_list_and_map_are_replaced_wholesale() {
    let s = schema();
    let a = ok(&s, None, &obj(json!({"tags": ["x", "y"], "selector": {"a": "1", "b": "2"}})), "a", T1);
    let b = ok(&s, Some(&a), &obj(json!({"tags": ["z"], "selector": {"c": "3"}})), "a", T2);
    assert_eq!(b["spec"]["tags"], json!(["z"]));
    assert_eq!(b["spec"]["selector"], json!({"c": "3"}));
    assert_eq!(managed_paths(&b, "a").unwrap(), vec![".spec.selector", ".spec.tags"]);
    let err = run(&s, Some(&b), &obj(json!({"tags": ["z", "w"]})), "b", false, T3).unwrap_err();
    assert_eq!(err.to_string(), "Apply failed with 1 conflict: conflict with \"a\": .spec.tags");
}

#[test]
fn explicit_null_removes_the_field() {
    let s = schema();
    let a = ok(&s, None, &obj(json!({"greeting": "hi", "replicas": 1})), "a", T1);
    let b = ok(&s, Some(&a), &obj(json!({"greeting": null, "replicas": 1})), "a", T2);
    assert_eq!(b["spec"], json!({"replicas": 1}));
    assert_eq!(managed_paths(&b, "a").unwrap(), vec![".spec.replicas"]);
    // Null on a field another manager owns is a conflict; forcing removes it.
    let c = ok(&s, Some(&b), &obj(json!({"greeting": "yo"})), "b", T2);
    let err = run(&s, Some(&c), &obj(json!({"greeting": null})), "a", false, T3).unwrap_err();
    assert_eq!(err.to_string(), "Apply failed with 1 conflict: conflict with \"b\": .spec.greeting");
    let d = run(&s, Some(&c), &obj(json!({"greeting": null})), "a", true, T3).unwrap();
    assert_eq!(d["spec"], json!({}));
    assert!(managed_paths(&d, "b").unwrap().is_empty());
    // Null on create is simply absent.
    let e = ok(&s, None, &obj(json!({"greeting": null})), "a", T1);
    assert_eq!(e["spec"], json!({}));
}

#[test]
fn managed_fields_use_kubernetes_fields_v1_encoding() {
    let s = schema();
    let applied = json!({
        "apiVersion": "example.com/v1alpha1",
        "kind": "Greeter",
        "metadata": {"name": "g", "finalizers": ["a.b/c"], "labels": {"app": "x"}},
        "spec": {"greeting": "hi", "ports": [{"port": 80, "protocol": "TCP"}]},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]}
    });
    let out = ok(&s, None, &applied, "m", T1);
    assert_eq!(
        out["metadata"]["managedFields"],
        json!([{
            "manager": "m",
            "operation": "Apply",
            "apiVersion": "example.com/v1alpha1",
            "time": T1,
            "fieldsType": "FieldsV1",
            "fieldsV1": {
                "f:metadata": {
                    "f:finalizers": {"v:\"a.b/c\"": {}},
                    "f:labels": {"f:app": {}}
                },
                "f:spec": {
                    "f:greeting": {},
                    "f:ports": {"k:{\"port\":80}": {".": {}, "f:port": {}, "f:protocol": {}}}
                },
                "f:status": {
                    "f:conditions": {
                        "k:{\"type\":\"Ready\"}": {".": {}, "f:status": {}, "f:type": {}}
                    }
                }
            }
        }])
    );
    assert_eq!(
        managed_paths(&out, "m").unwrap(),
        vec![
            ".metadata.finalizers[=\"a.b/c\"]",
            ".metadata.labels.app",
            ".spec.greeting",
            ".spec.ports[port=80]",
            ".spec.ports[port=80].port",
            ".spec.ports[port=80].protocol",
            ".status.conditions[type=\"Ready\"]",
            ".status.conditions[type=\"Ready\"].status",
            ".status.conditions[type=\"Ready\"].type",
        ]
    );
}

#[test]
fn composite_list_map_keys_are_sorted_and_rendered() {
    let s = Schema::parse(
        &json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
            "routes": {
                "type": "array",
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["prefix", "metric"],
                "items": {"type": "object", "properties": {
                    "prefix": {"type": "string"}, "metric": {"type": "integer"}, "via": {"type": "string"}
                }}
            }
        }}}}),
        "s",
    )
    .unwrap();
    let a = ok(&s, None, &obj(json!({"routes": [{"prefix": "10.0.0.0/8", "metric": 5, "via": "r1"}]})), "a", T1);
    assert_eq!(
        entry(&a, "a")["fieldsV1"]["f:spec"]["f:routes"],
        json!({"k:{\"metric\":5,\"prefix\":\"10.0.0.0/8\"}": {".": {}, "f:metric": {}, "f:prefix": {}, "f:via": {}}})
    );
    let err = run(
        &s,
        Some(&a),
        &obj(json!({"routes": [{"prefix": "10.0.0.0/8", "metric": 5, "via": "r2"}]})),
        "b",
        false,
        T2,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "Apply failed with 1 conflict: conflict with \"a\": .spec.routes[metric=5,prefix=\"10.0.0.0/8\"].via"
    );
}

#[test]
fn system_fields_are_never_tracked_or_copied() {
    let s = schema();
    let live = ok(&s, None, &obj(json!({"greeting": "hi"})), "a", T1);
    let mut live = live;
    live["metadata"]["uid"] = json!("uid-1");
    live["metadata"]["resourceVersion"] = json!("7");
    live["metadata"]["generation"] = json!(3);
    live["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
    let mut applied = obj(json!({"greeting": "hi"}));
    applied["metadata"]["uid"] = json!("forged");
    applied["metadata"]["resourceVersion"] = json!("1");
    applied["metadata"]["generation"] = json!(99);
    applied["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    applied["metadata"]["managedFields"] = json!([{"manager": "evil", "fieldsV1": {"f:spec": {}}}]);
    let out = ok(&s, Some(&live), &applied, "a", T2);
    assert_eq!(out, live);
    // On create the system fields of the applied object are dropped too.
    let created = ok(&s, None, &applied, "a", T1);
    assert_eq!(created["metadata"].get("uid"), None);
    assert_eq!(created["metadata"].get("deletionTimestamp"), None);
    assert_eq!(entries(&created).len(), 1);
    assert_eq!(created["metadata"]["namespace"], "default");
}

#[test]
fn emptied_parent_map_is_pruned_unless_applied() {
    let s = schema();
    let a = ok(&s, None, &obj(json!({"greeting": "hi", "opts": {"a": "1"}})), "a", T1);
    let b = ok(&s, Some(&a), &obj(json!({"greeting": "hi"})), "a", T2);
    assert_eq!(b["spec"], json!({"greeting": "hi"}));
    let c = ok(&s, Some(&a), &obj(json!({"greeting": "hi", "opts": {}})), "a", T2);
    assert_eq!(c["spec"], json!({"greeting": "hi", "opts": {}}));
    // Dropping the whole spec prunes it; the root stays.
    let mut bare = obj(json!({}));
    bare.as_object_mut().unwrap().remove("spec");
    let d = ok(&s, Some(&a), &bare, "a", T2);
    assert!(d.get("spec").is_none(), "{d}");
    assert!(d["metadata"].get("managedFields").is_none(), "{d}");
    assert_eq!(d["metadata"]["name"], "g");
}

#[test]
fn invalid_inputs_are_errors() {
    let s = schema();
    let e = run(&s, None, &json!([1]), "a", false, T1).unwrap_err();
    assert_eq!(e.to_string(), "applied configuration must be an object, got array");
    let e = run(&s, None, &obj(json!({})), "", false, T1).unwrap_err();
    assert_eq!(e.to_string(), "field manager must not be empty");
    let mut live = obj(json!({}));
    live["metadata"]["managedFields"] = json!([{"manager": "x", "fieldsV1": {"q:oops": {}}}]);
    let e = run(&s, Some(&live), &obj(json!({})), "a", false, T1).unwrap_err();
    assert_eq!(e.to_string(), "metadata.managedFields[0].fieldsV1: unknown path element \"q:oops\"");
    live["metadata"]["managedFields"] = json!({"manager": "x"});
    assert!(matches!(run(&s, Some(&live), &obj(json!({})), "a", false, T1), Err(ApplyError::Invalid(_))));
    live["metadata"]["managedFields"] = json!([{"fieldsV1": {}}]);
    assert!(matches!(managed_paths(&live, "x"), Err(ApplyError::Invalid(_))));
}

#[test]
fn foreign_key_encoding_is_canonicalized() {
    let s = schema();
    let mut live = status(json!([{"type": "Ready", "status": "True"}]));
    live["metadata"]["managedFields"] = json!([{
        "manager": "kube", "operation": "Apply", "apiVersion": "example.com/v1alpha1",
        "time": T1, "fieldsType": "FieldsV1",
        "fieldsV1": {"f:status": {"f:conditions": {"k:{ \"type\": \"Ready\" }": {
            ".": {}, "f:type": {}, "f:status": {}
        }}}}
    }]);
    let err =
        run(&s, Some(&live), &status(json!([{"type": "Ready", "status": "False"}])), "other", false, T2).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Apply failed with 1 conflict: conflict with \"kube\": .status.conditions[type=\"Ready\"].status"
    );
    // kube drops its condition: removed even though its key was spelled differently.
    let out = ok(&s, Some(&live), &status(json!([])), "kube", T2);
    assert_eq!(out["status"]["conditions"], json!([]));
}

#[test]
fn large_list_map_merges_by_index() {
    let s = schema();
    let ports: Vec<Value> = (0..500).map(|i| json!({"port": i, "name": format!("p{i}")})).collect();
    let a = ok(&s, None, &obj(json!({"ports": ports})), "a", T1);
    let mine: Vec<Value> = (250..750).map(|i| json!({"port": i, "protocol": "TCP"})).collect();
    let b = ok(&s, Some(&a), &obj(json!({"ports": mine})), "b", T2);
    assert_eq!(b["spec"]["ports"].as_array().unwrap().len(), 750);
    assert_eq!(b["spec"]["ports"][300], json!({"port": 300, "name": "p300", "protocol": "TCP"}));
    let half: Vec<Value> = (0..100).map(|i| json!({"port": i, "name": format!("p{i}")})).collect();
    let c = ok(&s, Some(&b), &obj(json!({"ports": half})), "a", T3);
    // a dropped 100..500: 100..250 had no other owner, 250..500 keep b's fields only.
    let out = c["spec"]["ports"].as_array().unwrap();
    assert_eq!(out.len(), 100 + 500);
    assert_eq!(out[100], json!({"port": 250, "protocol": "TCP"}));
}

#[test]
fn list_map_with_missing_keys_is_atomic() {
    let s = schema();
    let a = ok(&s, None, &obj(json!({"ports": [{"name": "nokey"}]})), "a", T1);
    assert_eq!(managed_paths(&a, "a").unwrap(), vec![".spec.ports"]);
    let b = ok(&s, Some(&a), &obj(json!({"ports": [{"port": 1}, {"port": 1}]})), "a", T2);
    assert_eq!(b["spec"]["ports"], json!([{"port": 1}, {"port": 1}]));
}

#[test]
fn same_manager_other_operation_keeps_fields_without_conflict() {
    let s = schema();
    let mut live = obj(json!({"greeting": "hi", "replicas": 1}));
    live["metadata"]["managedFields"] = json!([{
        "manager": "a", "operation": "Update", "apiVersion": "example.com/v1alpha1",
        "time": T1, "fieldsType": "FieldsV1",
        "fieldsV1": {"f:spec": {"f:greeting": {}, "f:replicas": {}}}
    }]);
    let out = ok(&s, Some(&live), &obj(json!({"greeting": "yo"})), "a", T2);
    assert_eq!(out["spec"], json!({"greeting": "yo", "replicas": 1}));
    let ops: Vec<(&Value, &Value)> = entries(&out).iter().map(|e| (&e["manager"], &e["operation"])).collect();
    assert_eq!(ops, vec![(&json!("a"), &json!("Apply")), (&json!("a"), &json!("Update"))]);
}

#[test]
fn type_mismatch_is_an_atomic_leaf() {
    let s = schema();
    let a = ok(&s, None, &obj(json!({"greeting": {"x": 1}, "ports": "none"})), "a", T1);
    assert_eq!(a["spec"]["greeting"], json!({"x": 1}));
    assert_eq!(managed_paths(&a, "a").unwrap(), vec![".spec.greeting", ".spec.ports"]);
    let b = ok(&s, Some(&a), &obj(json!({"ports": [{"port": 1}]})), "a", T2);
    assert_eq!(b["spec"], json!({"ports": [{"port": 1}]}));
}

#[test]
fn prune_foreign_keeps_own_and_unowned_fields_only() {
    let s = schema();
    let a = ok(&s, None, &obj(json!({"greeting": "hi", "replicas": 2})), "loader", T1);
    let b = ok(&s, Some(&a), &obj(json!({"replicas": 2, "tags": ["x"]})), "rec", T2);
    let mut with_new = b.clone();
    with_new["spec"]["aliases"] = json!(["new"]);
    let pruned = prune_foreign(&with_new, "rec").unwrap();
    assert_eq!(pruned["spec"], json!({"replicas": 2, "tags": ["x"], "aliases": ["new"]}));
    assert!(pruned["metadata"].get("managedFields").is_none());
    assert_eq!(pruned["metadata"]["name"], b["metadata"]["name"]);
}

#[test]
fn entry_api_version_follows_the_applied_object() {
    let s = schema();
    let a = ok(&s, None, &obj(json!({"greeting": "hi"})), "a", T1);
    let mut v2 = obj(json!({"greeting": "hi"}));
    v2["apiVersion"] = json!("example.com/v1");
    let b = ok(&s, Some(&a), &v2, "a", T2);
    assert_eq!(b["apiVersion"], "example.com/v1");
    assert_eq!(entry(&b, "a")["apiVersion"], "example.com/v1");
    assert_eq!(entry(&b, "a")["time"], T2);
}

mod props {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// A generated configuration: independent units keyed by id, each a JSON fragment.
    type Units = BTreeMap<String, Value>;

    fn scalar() -> impl Strategy<Value = Value> {
        prop_oneof![Just(json!("a")), Just(json!("b")), (0i64..3).prop_map(|i| json!(i)), Just(json!(true)),]
    }

    fn units() -> impl Strategy<Value = Units> {
        let word = || prop_oneof![Just("x"), Just("y"), Just("z")];
        (
            prop::option::of(prop_oneof![Just("hi"), Just("yo")]),
            prop::option::of(0i64..3),
            prop::option::of(prop::collection::vec(word(), 0..3)),
            (prop::option::of(word()), prop::option::of(word())),
            prop::collection::btree_map(
                0i64..6,
                (prop::option::of(word()), prop::option::of(prop_oneof![Just("TCP"), Just("UDP")])),
                0..4,
            ),
            prop::collection::btree_set(word(), 0..3),
            prop::collection::btree_map(
                word(),
                prop_oneof![scalar(), scalar().prop_map(|v| json!({"inner": v}))],
                0..3,
            ),
            prop::collection::btree_map(word(), word(), 0..3),
            prop::collection::btree_set(prop_oneof![Just("f.io/a"), Just("f.io/b")], 0..3),
        )
            .prop_map(|(greeting, replicas, tags, (oa, ob), ports, aliases, extra, labels, fins)| {
                let mut u = Units::new();
                if let Some(g) = greeting {
                    u.insert("greeting".into(), json!(g));
                }
                if let Some(r) = replicas {
                    u.insert("replicas".into(), json!(r));
                }
                if let Some(t) = tags {
                    u.insert("tags".into(), json!(t));
                }
                if let Some(a) = oa {
                    u.insert("opts.a".into(), json!(a));
                }
                if let Some(b) = ob {
                    u.insert("opts.b".into(), json!(b));
                }
                for (port, (name, protocol)) in ports {
                    let mut item = json!({"port": port});
                    if let Some(n) = name {
                        item["name"] = json!(n);
                    }
                    if let Some(p) = protocol {
                        item["protocol"] = json!(p);
                    }
                    u.insert(format!("port:{port}"), item);
                }
                for a in aliases {
                    u.insert(format!("alias:{a}"), json!(a));
                }
                for (k, v) in extra {
                    u.insert(format!("extra:{k}"), v);
                }
                for (k, v) in labels {
                    u.insert(format!("label:{k}"), json!(v));
                }
                for f in fins {
                    u.insert(format!("fin:{f}"), json!(f));
                }
                u
            })
    }

    fn build(units: &Units) -> Value {
        let mut o = json!({
            "apiVersion": "example.com/v1alpha1",
            "kind": "Greeter",
            "metadata": {"name": "g"},
            "spec": {}
        });
        for (id, v) in units {
            let (kind, key) = id.split_once(':').unwrap_or((id.as_str(), ""));
            match kind {
                "greeting" | "replicas" | "tags" => o["spec"][id.as_str()] = v.clone(),
                "opts.a" => o["spec"]["opts"]["a"] = v.clone(),
                "opts.b" => o["spec"]["opts"]["b"] = v.clone(),
                "extra" => o["spec"]["extra"][key] = v.clone(),
                "label" => o["metadata"]["labels"][key] = v.clone(),
                "port" | "alias" | "fin" => {
                    let slot = match kind {
                        "port" => &mut o["spec"]["ports"],
                        "alias" => &mut o["spec"]["aliases"],
                        _ => &mut o["metadata"]["finalizers"],
                    };
                    if slot.is_null() {
                        *slot = json!([]);
                    }
                    slot.as_array_mut().unwrap().push(v.clone());
                }
                _ => unreachable!("{id}"),
            }
        }
        o
    }

    /// Every owned leaf of an object of the test schema, with its value (`null` marks list
    /// items and set values, whose presence is what matters).
    fn flatten(o: &Value) -> BTreeMap<String, Value> {
        let mut out = BTreeMap::new();
        let spec = &o["spec"];
        for f in ["greeting", "replicas", "tags"] {
            if let Some(v) = spec.get(f) {
                out.insert(f.to_string(), v.clone());
            }
        }
        if let Some(opts) = spec.get("opts").and_then(Value::as_object) {
            for (k, v) in opts {
                out.insert(format!("opts.{k}"), v.clone());
            }
        }
        for item in spec.get("ports").and_then(Value::as_array).into_iter().flatten() {
            let port = &item["port"];
            out.insert(format!("ports[{port}]"), Value::Null);
            for (k, v) in item.as_object().unwrap() {
                out.insert(format!("ports[{port}].{k}"), v.clone());
            }
        }
        for a in spec.get("aliases").and_then(Value::as_array).into_iter().flatten() {
            out.insert(format!("aliases[={a}]"), Value::Null);
        }
        if let Some(extra) = spec.get("extra").and_then(Value::as_object) {
            for (k, v) in extra {
                match v.as_object() {
                    Some(inner) => {
                        for (ik, iv) in inner {
                            out.insert(format!("extra.{k}.{ik}"), iv.clone());
                        }
                    }
                    None => {
                        out.insert(format!("extra.{k}"), v.clone());
                    }
                }
            }
        }
        let meta = &o["metadata"];
        if let Some(labels) = meta.get("labels").and_then(Value::as_object) {
            for (k, v) in labels {
                out.insert(format!("labels.{k}"), v.clone());
            }
        }
        for f in meta.get("finalizers").and_then(Value::as_array).into_iter().flatten() {
            out.insert(format!("finalizers[={f}]"), Value::Null);
        }
        out
    }

    fn related(a: &str, b: &str) -> bool {
        a == b || a.starts_with(&format!("{b}.")) || b.starts_with(&format!("{a}."))
    }

    fn subset(units: &Units, mask: &[bool]) -> Units {
        units
            .iter()
            .enumerate()
            .filter(|(i, _)| mask.get(*i).copied().unwrap_or(false))
            .map(|(_, (k, v))| (k.clone(), v.clone()))
            .collect()
    }

    fn arbitrary_json() -> impl Strategy<Value = Value> {
        let key = prop_oneof![
            Just("spec"),
            Just("status"),
            Just("metadata"),
            Just("greeting"),
            Just("ports"),
            Just("port"),
            Just("name"),
            Just("aliases"),
            Just("extra"),
            Just("opts"),
            Just("a"),
            Just("labels"),
            Just("finalizers"),
            Just("ownerReferences"),
            Just("uid"),
            Just("conditions"),
            Just("type"),
            Just("managedFields"),
            Just("manager"),
            Just("fieldsV1"),
            Just("f:spec"),
            Just("f:greeting"),
            Just("k:{\"port\":1}"),
            Just("v:\"x\""),
            Just("."),
            Just("k:[]"),
            Just("selector"),
            Just("tags"),
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (-2i64..3).prop_map(|i| json!(i)),
            Just(json!(1.5)),
            prop_oneof![Just("x"), Just("a.b/c"), Just(""), Just("Apply")].prop_map(|s| json!(s)),
        ];
        leaf.prop_recursive(5, 48, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::btree_map(key.clone(), inner, 0..6)
                    .prop_map(|m| { Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect()) }),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// (a) Applying the same object twice gives the first result, also over other owners.
        #[test]
        fn reapply_is_idempotent(x1 in units(), y in units(), mask in prop::collection::vec(any::<bool>(), 40)) {
            let s = schema();
            let first = run(&s, None, &build(&x1), "a", false, T1).unwrap();
            prop_assert_eq!(&run(&s, Some(&first), &build(&x1), "a", false, T2).unwrap(), &first);
            let b = run(&s, Some(&first), &build(&y), "b", true, T2).unwrap();
            let x2 = build(&subset(&x1, &mask));
            let r = run(&s, Some(&b), &x2, "a", true, T3).unwrap();
            prop_assert_eq!(&run(&s, Some(&r), &x2, "a", false, "later").unwrap(), &r);
        }

        /// (b) Managers applying disjoint units keep all their values, in either order.
        #[test]
        fn disjoint_managers_keep_their_values(u in units(), mask in prop::collection::vec(any::<bool>(), 40)) {
            let s = schema();
            let inverse: Vec<bool> = mask.iter().map(|m| !m).collect();
            let (ua, ub) = (subset(&u, &mask), subset(&u, &inverse));
            let (xa, xb) = (build(&ua), build(&ub));
            for (first, second, m1, m2) in [(&xa, &xb, "a", "b"), (&xb, &xa, "b", "a")] {
                let r1 = run(&s, None, first, m1, false, T1).unwrap();
                let r2 = run(&s, Some(&r1), second, m2, false, T2).unwrap();
                // Re-applying the first again must not disturb the second.
                let r3 = run(&s, Some(&r2), first, m1, false, T3).unwrap();
                let got = flatten(&r3);
                for (p, v) in flatten(&xa).into_iter().chain(flatten(&xb)) {
                    prop_assert_eq!(got.get(&p), Some(&v), "{} missing in {}", p, r3);
                }
            }
        }

        /// (c) A dropped field disappears unless another manager still owns it.
        #[test]
        fn dropped_fields_disappear_unless_owned(x1 in units(), y in units(), mask in prop::collection::vec(any::<bool>(), 40)) {
            let s = schema();
            let x2 = subset(&x1, &mask);
            let (l1, l2, ly) = (flatten(&build(&x1)), flatten(&build(&x2)), flatten(&build(&y)));
            let a = run(&s, None, &build(&x1), "a", false, T1).unwrap();
            let b = run(&s, Some(&a), &build(&y), "b", true, T2).unwrap();
            let r = run(&s, Some(&b), &build(&x2), "a", true, T3).unwrap();
            let got = flatten(&r);
            for (p, v) in &l2 {
                prop_assert_eq!(got.get(p), Some(v), "{} lost in {}", p, r);
            }
            for p in l1.keys().filter(|p| !l2.contains_key(*p)) {
                match ly.get(p) {
                    Some(v) => prop_assert_eq!(got.get(p), Some(v), "{} lost in {}", p, r),
                    None => prop_assert!(!got.contains_key(p), "{} kept in {}", p, r),
                }
            }
            for (p, v) in ly.iter().filter(|(p, _)| !l1.contains_key(*p)) {
                if l2.keys().any(|q| related(p, q)) {
                    continue;
                }
                prop_assert_eq!(got.get(p), Some(v), "{} lost in {}", p, r);
            }
        }

        /// (d) Arbitrary JSON never panics, as applied value, live object or managedFields.
        #[test]
        fn never_panics(
            applied in arbitrary_json(),
            live in arbitrary_json(),
            mf in arbitrary_json(),
            force in any::<bool>(),
            x in units(),
            wild in prop::collection::btree_map(
                prop_oneof![
                    Just("greeting"), Just("replicas"), Just("tags"), Just("ports"),
                    Just("aliases"), Just("extra"), Just("opts"), Just("selector"),
                ],
                arbitrary_json(),
                0..4,
            ),
        ) {
            let s = schema();
            let _ = run(&s, None, &applied, "a", force, T1);
            let mut wrapped = build(&x);
            if let Value::Object(m) = &applied {
                for (k, v) in m {
                    wrapped["spec"][k.as_str()] = v.clone();
                }
            }
            // Whatever is accepted is idempotent, odd values included.
            if let Ok(r) = run(&s, None, &wrapped, "a", force, T1) {
                prop_assert_eq!(&run(&s, Some(&r), &wrapped, "a", false, T2).unwrap(), &r);
            }
            let _ = run(&s, Some(&live), &applied, "a", force, T1);
            // Declared fields with values of any shape: mismatches become atomic leaves.
            let mut typed = build(&x);
            for (k, v) in &wild {
                typed["spec"][*k] = v.clone();
            }
            if let Ok(r) = run(&s, None, &typed, "a", force, T1) {
                prop_assert_eq!(&run(&s, Some(&r), &typed, "a", false, T2).unwrap(), &r);
                let r2 = run(&s, Some(&r), &build(&x), "a", false, T2);
                if let Ok(r2) = r2 {
                    prop_assert_eq!(&run(&s, Some(&r2), &build(&x), "a", false, T3).unwrap(), &r2);
                }
            }
            let mut base = run(&s, None, &build(&x), "b", false, T1).unwrap();
            if let Ok(r) = run(&s, Some(&base), &typed, "a", true, T2) {
                prop_assert_eq!(&run(&s, Some(&r), &typed, "a", false, T3).unwrap(), &r);
            }
            let _ = run(&s, Some(&base), &applied, "a", force, T2);
            if let Ok(r) = run(&s, Some(&base), &wrapped, "a", true, T2) {
                prop_assert_eq!(&run(&s, Some(&r), &wrapped, "a", false, T3).unwrap(), &r);
            }
            base["metadata"]["managedFields"] = mf.clone();
            let _ = run(&s, Some(&base), &build(&x), "a", force, T2);
            let _ = managed_paths(&base, "b");
            base["metadata"]["managedFields"] = json!([{"manager": "b", "fieldsV1": mf}]);
            let _ = run(&s, Some(&base), &build(&x), "b", force, T2);
            let _ = run(&s, Some(&base), &wrapped, "c", force, T2);
            let _ = managed_paths(&base, "b");
        }
    }
}

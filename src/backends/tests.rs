//! The backends in a real store: allocation inside transactions, refusal leaves nothing,
//! entries beside claims, rollback of dropped transactions, and a reopened store that serves
//! the same allocations.

use std::sync::Arc;

use serde_json::{json, Value};

use super::*;
use crate::store::{ApplyOptions, Store, StoreOptions};

fn open(dir: &std::path::Path) -> Store {
    let options = StoreOptions { extra_apis: crds::resources().unwrap(), admission: Some(Arc::new(Backends::new())) };
    Store::open_with(dir, options).unwrap()
}

fn index(name: &str, prefixes: &[(&str, &str)]) -> Value {
    let prefixes: Vec<Value> = prefixes
        .iter()
        .map(|(p, t)| json!({"prefix": p, "prefixType": t, "labels": {"purpose": "loopback"}}))
        .collect();
    json!({"apiVersion": "ipam.be.kuid.dev/v1alpha1", "kind": "IPIndex",
           "metadata": {"name": name, "namespace": "default"}, "spec": {"prefixes": prefixes}})
}

fn claim(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "ipam.be.kuid.dev/v1alpha1", "kind": "IPClaim",
           "metadata": {"name": name, "namespace": "default"}, "spec": spec})
}

const ME: ApplyOptions<'static> = ApplyOptions { manager: "test", force: false };

fn apply(store: &Store, objs: &[Value]) -> Result<(), String> {
    let mut txn = store.begin();
    for o in objs {
        txn.apply(o, ME).map_err(|e| e.to_string())?;
    }
    txn.commit().map(|_| ()).map_err(|e| e.to_string())
}

fn get(store: &Store, kind: &str, name: &str) -> Option<Value> {
    let key = ObjectKey::new(&GroupKind::new("ipam.be.kuid.dev", kind), "default", name);
    store.begin().get(&key).map(|v| (*v).clone())
}

fn address(store: &Store, name: &str) -> Option<String> {
    get(store, "IPClaim", name).and_then(|c| c.pointer("/status/address").and_then(Value::as_str).map(str::to_string))
}

fn entries(store: &Store) -> Vec<String> {
    let gk = GroupKind::new("ipam.be.kuid.dev", "IPEntry");
    store.begin().list(&gk, None).into_iter().map(|(k, _)| k.name).collect()
}

fn pool_claim(name: &str) -> Value {
    claim(
        name,
        json!({"index": "kubenet.default", "prefixType": "pool",
                        "selector": {"matchLabels": {"ipam.be.kuid.dev/address-family": "ipv4"}}}),
    )
}

#[test]
fn claims_allocate_in_the_transaction_that_writes_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    // The claim comes before its index in the same transaction: it waits, then gets allocated.
    apply(&store, &[pool_claim("node1.ipv4"), index("kubenet.default", &[("10.0.0.0/24", "pool")])]).unwrap();
    let idx = get(&store, "IPIndex", "kubenet.default").unwrap();
    assert_eq!(idx.pointer("/status/conditions/0/status"), Some(&json!("True")));
    let own = get(&store, "IPClaim", "kubenet.default.10.0.0.0-24").unwrap();
    assert_eq!(own.pointer("/status/prefix"), Some(&json!("10.0.0.0/24")));
    assert_eq!(address(&store, "node1.ipv4").as_deref(), Some("10.0.0.0/32"));
    apply(&store, &[pool_claim("node2.ipv4")]).unwrap();
    assert_eq!(address(&store, "node2.ipv4").as_deref(), Some("10.0.0.1/32"));
    // Re-applying keeps the address.
    apply(&store, &[pool_claim("node1.ipv4")]).unwrap();
    assert_eq!(address(&store, "node1.ipv4").as_deref(), Some("10.0.0.0/32"));
    assert_eq!(
        entries(&store),
        [
            "default.kubenet.default.10.0.0.0-24",
            "default.kubenet.default.10.0.0.0-32",
            "default.kubenet.default.10.0.0.1-32"
        ]
    );
}

#[test]
fn a_claim_that_cannot_be_satisfied_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    apply(&store, &[index("small", &[("10.0.0.0/31", "regular")])]).unwrap();
    let c = |n: &str| claim(n, json!({"index": "small"}));
    apply(&store, &[c("a"), c("b")]).unwrap();
    let before = entries(&store);
    let err = apply(&store, &[c("x"), c("y")]).unwrap_err();
    assert!(
        err.contains("IPClaim.ipam.be.kuid.dev default/x")
            && err.contains("no free address left in 10.0.0.0/31 of index default.small"),
        "{err}"
    );
    assert!(get(&store, "IPClaim", "x").is_none());
    assert_eq!(entries(&store), before);
    // The dropped transaction gave back what it took: a delete frees an address for the next.
    let mut txn = store.begin();
    txn.delete(&ObjectKey::new(&GroupKind::new("ipam.be.kuid.dev", "IPClaim"), "default", "a")).unwrap();
    txn.commit().unwrap();
    apply(&store, &[c("x")]).unwrap();
    assert_eq!(address(&store, "x").as_deref(), Some("10.0.0.0/32"));
}

#[test]
fn syntax_errors_name_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    apply(&store, &[index("i", &[("10.0.0.0/16", "regular")])]).unwrap();
    let err = apply(&store, &[claim("c", json!({"index": "i", "createPrefix": true}))]).unwrap_err();
    assert!(err.contains("spec.prefixLength"), "{err}");
    let err = apply(&store, &[claim("c", json!({"index": "i", "prefix": "10.0.0.0/24", "address": "10.0.0.1"}))])
        .unwrap_err();
    assert!(err.contains("address and prefix"), "{err}");
    let err = apply(&store, &[claim("c", json!({"index": "i", "addressFamily": "ipv6"}))]).unwrap_err();
    assert!(err.contains("no route of the index matches"), "{err}");
    let entry = json!({"apiVersion": "ipam.be.kuid.dev/v1alpha1", "kind": "IPEntry",
                       "metadata": {"name": "e", "namespace": "default"}, "spec": {"index": "i"}});
    let err = apply(&store, &[entry]).unwrap_err();
    assert!(err.contains("written by the ipam.be.kuid.dev backend"), "{err}");
}

#[test]
fn a_reopened_store_serves_the_same_allocations() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        apply(&store, &[index("kubenet.default", &[("10.0.0.0/24", "pool")]), pool_claim("n1"), pool_claim("n2")])
            .unwrap();
        // n1 goes; its address is free again for the next claim after the restart.
        let mut txn = store.begin();
        txn.delete(&ObjectKey::new(&GroupKind::new("ipam.be.kuid.dev", "IPClaim"), "default", "n1")).unwrap();
        txn.commit().unwrap();
    }
    let store = open(dir.path());
    assert_eq!(address(&store, "n2").as_deref(), Some("10.0.0.1/32"));
    apply(&store, &[pool_claim("n3"), pool_claim("n2")]).unwrap();
    assert_eq!(address(&store, "n3").as_deref(), Some("10.0.0.0/32"));
    assert_eq!(address(&store, "n2").as_deref(), Some("10.0.0.1/32"));
}

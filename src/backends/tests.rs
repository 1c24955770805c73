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

fn generic(group: &str, kind: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": format!("{group}/v1alpha1"), "kind": kind,
           "metadata": {"name": name, "namespace": "default"}, "spec": spec})
}

fn status_of(store: &Store, group: &str, kind: &str, name: &str) -> Value {
    let key = ObjectKey::new(&GroupKind::new(group, kind), "default", name);
    store.begin().get(&key).map(|v| v["status"].clone()).unwrap_or(Value::Null)
}

#[test]
fn vlan_ids_come_by_best_fit_around_reserved_ranges_and_stay_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let g = "vlan.be.kuid.dev";
    let dynamic = |n: &str| generic(g, "VLANClaim", n, json!({"index": "vpc"}));
    {
        let store = open(dir.path());
        apply(&store, &[generic(g, "VLANIndex", "vpc", json!({"minID": 1, "maxID": 4090}))]).unwrap();
        apply(&store, &[dynamic("a"), dynamic("b"), dynamic("c")]).unwrap();
        let ids: Vec<Value> =
            ["a", "b", "c"].iter().map(|n| status_of(&store, g, "VLANClaim", n)["id"].clone()).collect();
        assert_eq!(ids, [json!(1), json!(4090), json!(2)]);
        // kuid accepts a static id in a reserved range; the schema refuses one above 4095.
        apply(&store, &[generic(g, "VLANClaim", "s", json!({"index": "vpc", "id": 4094}))]).unwrap();
        assert_eq!(status_of(&store, g, "VLANClaim", "s")["id"], json!(4094));
        let err = apply(&store, &[generic(g, "VLANClaim", "big", json!({"index": "vpc", "id": 5000}))]).unwrap_err();
        assert!(err.contains("spec.id"), "{err}");
        let err = apply(&store, &[generic(g, "VLANClaim", "dup", json!({"index": "vpc", "id": 2}))]).unwrap_err();
        assert!(err.contains("id 2 is already claimed by claim c"), "{err}");
        let err = apply(&store, &[generic(g, "VLANClaim", "both", json!({"index": "vpc", "id": 7, "range": "10-20"}))])
            .unwrap_err();
        assert!(err.contains("has both"), "{err}");
        // A range, and dynamic ids inside it chosen by its claim name.
        apply(&store, &[generic(g, "VLANClaim", "r", json!({"index": "vpc", "range": "200-399"}))]).unwrap();
        let inside = |n: &str| {
            generic(
                g,
                "VLANClaim",
                n,
                json!({"index": "vpc", "selector": {"matchLabels": {"be.kuid.dev/claim-name": "r"}}}),
            )
        };
        apply(&store, &[inside("i1"), inside("i2")]).unwrap();
        assert_eq!(status_of(&store, g, "VLANClaim", "i2")["id"], json!(201));
        let gk = GroupKind::new(g, "VLANEntry");
        let names: Vec<String> = store.begin().list(&gk, None).into_iter().map(|(k, _)| k.name).collect();
        for want in ["vpc.1-16", "vpc.4090-16", "vpc.200-13", "r.201-32"] {
            assert!(names.iter().any(|n| n == want), "{want} in {names:?}");
        }
    }
    let store = open(dir.path());
    let g2 = |n: &str| status_of(&store, g, "VLANClaim", n)["id"].clone();
    assert_eq!((g2("a"), g2("b"), g2("i1")), (json!(1), json!(4090), json!(200)));
    apply(&store, &[dynamic("d")]).unwrap();
    assert_eq!(status_of(&store, g, "VLANClaim", "d")["id"], json!(3));
}

#[test]
fn as_genid_and_extcomm_have_their_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let a = "as.be.kuid.dev";
    apply(&store, &[generic(a, "ASIndex", "asn", json!({}))]).unwrap();
    apply(&store, &[generic(a, "ASClaim", "big", json!({"index": "asn", "id": 4_200_000_000u64}))]).unwrap();
    assert_eq!(status_of(&store, a, "ASClaim", "big")["id"], json!(4_200_000_000u64));
    let err =
        apply(&store, &[generic(a, "ASClaim", "huge", json!({"index": "asn", "id": 4_294_967_296u64}))]).unwrap_err();
    assert!(err.contains("spec.id"), "{err}");
    let gid = "genid.be.kuid.dev";
    let err = apply(&store, &[generic(gid, "GENIDIndex", "g", json!({"type": "12bit"}))]).unwrap_err();
    assert!(err.contains("spec.type"), "{err}");
    apply(&store, &[generic(gid, "GENIDIndex", "g", json!({"type": "16bit", "minID": 100}))]).unwrap();
    let err = apply(&store, &[generic(gid, "GENIDClaim", "x", json!({"index": "g", "id": 70000}))]).unwrap_err();
    assert!(err.contains("above the largest id 65535"), "{err}");
    apply(&store, &[generic(gid, "GENIDClaim", "y", json!({"index": "g"}))]).unwrap();
    assert_eq!(status_of(&store, gid, "GENIDClaim", "y")["id"], json!(100));
    let x = "extcomm.be.kuid.dev";
    apply(
        &store,
        &[generic(
            x,
            "EXTCOMMIndex",
            "rt",
            json!({"type": "2byteAS", "subType": "target", "globalID": "65000", "minID": 1}),
        )],
    )
    .unwrap();
    apply(&store, &[generic(x, "EXTCOMMClaim", "vrf1", json!({"index": "rt"}))]).unwrap();
    assert_eq!(status_of(&store, x, "EXTCOMMClaim", "vrf1")["id"], json!(1));
}

#[test]
fn usage_free_and_the_nearly_full_condition() {
    let dir = tempfile::tempdir().unwrap();
    let be = Arc::new(Backends::new());
    let options = StoreOptions { extra_apis: crds::resources().unwrap(), admission: Some(be.clone()) };
    let store = Store::open_with(dir.path(), options).unwrap();
    let g = "vlan.be.kuid.dev";
    apply(&store, &[generic(g, "VLANIndex", "small", json!({"minID": 1, "maxID": 10}))]).unwrap();
    let fullness = |store: &Store| {
        let idx = store.begin().get(&ObjectKey::new(&GroupKind::new(g, "VLANIndex"), "default", "small")).unwrap();
        fullness_of(&idx)
    };
    assert_eq!(fullness(&store), Some(false));
    let free = be.free(&crate::protocol::IdsFreeRequest {
        namespace: "default".into(),
        index: "small".into(),
        prefix_length: None,
        count: 3,
        range: None,
        backend: None,
        selector: Vec::new(),
    });
    assert_eq!(free.unwrap(), ["1", "10", "2"]);
    for i in 0..9 {
        apply(&store, &[generic(g, "VLANClaim", &format!("c{i}"), json!({"index": "small"}))]).unwrap();
    }
    let u = be.usage(&crate::protocol::IdsUsageRequest { namespace: None, index: Some("small".into()) });
    assert_eq!(u.len(), 1);
    assert_eq!((u[0].size.as_str(), u[0].used.as_str(), u[0].free.as_str()), ("10", "9", "1"));
    assert_eq!(fullness(&store), Some(false), "90% is not over 90%");
    apply(&store, &[generic(g, "VLANClaim", "last", json!({"index": "small"}))]).unwrap();
    assert_eq!(fullness(&store), Some(true));
    let mut txn = store.begin();
    txn.delete(&ObjectKey::new(&GroupKind::new(g, "VLANClaim"), "default", "c0")).unwrap();
    txn.commit().unwrap();
    assert_eq!(fullness(&store), Some(false));
    // A transaction in progress is not what usage reports.
    let mut txn = store.begin();
    txn.apply(&generic(g, "VLANClaim", "pending", json!({"index": "small"})), ME).unwrap();
    let u = be.usage(&crate::protocol::IdsUsageRequest { namespace: None, index: None });
    assert_eq!(u[0].used, "9");
    // It made the index full in its own copy; dropped, the stored index still says not full,
    // and the next claim that fills it says so (what was seen of the dropped copy is not used).
    let idx = ObjectKey::new(&GroupKind::new(g, "VLANIndex"), "default", "small");
    assert_eq!(fullness_of(&txn.get(&idx).unwrap()), Some(true));
    drop(txn);
    assert_eq!(fullness(&store), Some(false));
    apply(&store, &[generic(g, "VLANClaim", "again", json!({"index": "small"}))]).unwrap();
    assert_eq!(fullness(&store), Some(true));
    apply(&store, &[generic(g, "VLANClaim", "again", json!({"index": "small"}))]).unwrap();
    assert_eq!(fullness(&store), Some(true));
    // IPAM: per index prefix, with the largest free block.
    apply(&store, &[index("net", &[("10.0.0.0/24", "regular")]), claim("a1", json!({"index": "net"}))]).unwrap();
    let u = be.usage(&crate::protocol::IdsUsageRequest { namespace: None, index: Some("net".into()) });
    assert_eq!(u[0].pool, "10.0.0.0/24");
    assert_eq!((u[0].used.as_str(), u[0].largest_free.as_str()), ("1", "10.0.0.128/25"));
    let free = be.free(&crate::protocol::IdsFreeRequest {
        namespace: "default".into(),
        index: "net".into(),
        prefix_length: Some(26),
        count: 2,
        range: None,
        backend: None,
        selector: Vec::new(),
    });
    assert_eq!(free.unwrap(), ["10.0.0.64/26", "10.0.0.128/26"]);
}

#[test]
fn deleting_a_range_marks_the_claims_inside_it_not_ready() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let g = "vlan.be.kuid.dev";
    apply(&store, &[generic(g, "VLANIndex", "v", json!({}))]).unwrap();
    apply(&store, &[generic(g, "VLANClaim", "r", json!({"index": "v", "range": "100-109"}))]).unwrap();
    let inside = generic(
        g,
        "VLANClaim",
        "in",
        json!({"index": "v", "selector": {"matchLabels": {"be.kuid.dev/claim-name": "r"}}}),
    );
    apply(&store, &[inside]).unwrap();
    assert_eq!(status_of(&store, g, "VLANClaim", "in")["id"], json!(100));
    let mut txn = store.begin();
    txn.delete(&ObjectKey::new(&GroupKind::new(g, "VLANClaim"), "default", "r")).unwrap();
    txn.commit().unwrap();
    let st = status_of(&store, g, "VLANClaim", "in");
    assert!(st.get("id").is_none(), "{st}");
    assert_eq!(st["conditions"][0]["status"], "False");
    assert!(st["conditions"][0]["message"].as_str().unwrap().contains("no range of the index matches"), "{st}");
}

/// The pools' data (without journals), for comparing two stores.
#[derive(Debug, PartialEq)]
enum Data {
    Ip(Rib),
    Id(IdPool),
}

fn pools_of(be: &Backends) -> Vec<(IndexKey, Data)> {
    be.lock()
        .pools
        .iter()
        .map(|(k, p)| {
            let data = match p {
                Pool::Ip { rib, .. } => Data::Ip(rib.clone()),
                Pool::Id { pool, .. } => Data::Id(pool.clone()),
            };
            (k.clone(), data)
        })
        .collect()
}

mod props {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Address(u8),
        Prefix(u8, u8),
        Vlan(u8, Option<u16>),
        Delete(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..12).prop_map(Op::Address),
            (0u8..12, 26u8..30).prop_map(|(n, l)| Op::Prefix(n, l)),
            (0u8..12, proptest::option::of(1u16..40)).prop_map(|(n, id)| Op::Vlan(n, id)),
            (0u8..12).prop_map(Op::Delete),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

        /// Random claims and deletes through the store, some refused: no two claims share an
        /// address, prefix or VLAN, and a reopened store rebuilds exactly the same pools.
        #[test]
        fn a_reopened_store_has_the_same_pools(ops in proptest::collection::vec(op(), 1..30)) {
            let dir = tempfile::tempdir().unwrap();
            let be = Arc::new(Backends::new());
            let options = StoreOptions { extra_apis: crds::resources().unwrap(), admission: Some(be.clone()) };
            let store = Store::open_with(dir.path(), options).unwrap();
            let v = "vlan.be.kuid.dev";
            apply(&store, &[index("p", &[("10.0.0.0/26", "regular")]), generic(v, "VLANIndex", "p", json!({"maxID": 40}))]).unwrap();
            for op in ops {
                let _ = match op {
                    Op::Address(n) => apply(&store, &[claim(&format!("a{n}"), json!({"index": "p"}))]),
                    Op::Prefix(n, l) => apply(&store, &[claim(&format!("n{n}"), json!({"index": "p", "createPrefix": true, "prefixLength": l}))]),
                    Op::Vlan(n, id) => {
                        let mut spec = json!({"index": "p"});
                        if let Some(id) = id { spec["id"] = json!(id); }
                        apply(&store, &[generic(v, "VLANClaim", &format!("v{n}"), spec)])
                    }
                    Op::Delete(n) => {
                        let mut txn = store.begin();
                        for (g, k, name) in [("ipam.be.kuid.dev", "IPClaim", format!("a{n}")), ("ipam.be.kuid.dev", "IPClaim", format!("n{n}")), (v, "VLANClaim", format!("v{n}"))] {
                            let _ = txn.delete(&ObjectKey::new(&GroupKind::new(g, k), "default", &name));
                        }
                        txn.commit().map(|_| ()).map_err(|e| e.to_string())
                    }
                };
            }
            // Every Ready claim's value is its own.
            let mut seen = std::collections::BTreeSet::new();
            for (g, k) in [("ipam.be.kuid.dev", "IPClaim"), (v, "VLANClaim")] {
                for (_, c) in store.begin().list(&GroupKind::new(g, k), None) {
                    let st = &c["status"];
                    let value = st.get("address").or(st.get("prefix")).or(st.get("id")).or(st.get("range")).map(|v| format!("{k}:{v}"));
                    if let Some(value) = value {
                        prop_assert!(seen.insert(value.clone()), "{value} twice");
                    }
                }
            }
            let before = pools_of(&be);
            drop(store);
            let be2 = Arc::new(Backends::new());
            let options = StoreOptions { extra_apis: crds::resources().unwrap(), admission: Some(be2.clone()) };
            let _store = Store::open_with(dir.path(), options).unwrap();
            prop_assert_eq!(pools_of(&be2), before);
        }
    }
}

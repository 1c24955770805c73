use serde_json::{json, Value};

use super::*;
use crate::api::object;

fn crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
            "versions": [{"name": "v1alpha1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {
                "type": "object",
                "properties": {
                    "apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"},
                    "spec": {"type": "object", "properties": {"size": {"type": "integer"}, "color": {"type": "string"}}},
                    "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
                }}}}]}
    })
}

fn widget(name: &str, size: i64) -> Value {
    json!({"apiVersion": "example.com/v1alpha1", "kind": "Widget",
           "metadata": {"name": name}, "spec": {"size": size}})
}

const M: ApplyOptions = ApplyOptions { manager: "test", force: false };

fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db")).unwrap();
    (dir, store)
}

fn with_crd(store: &Store) {
    let mut txn = store.begin();
    txn.apply(&crd(), M).unwrap();
    txn.commit().unwrap();
}

#[test]
fn crd_registers_api_and_objects_get_system_metadata() {
    let (_d, store) = open();
    with_crd(&store);
    let mut txn = store.begin();
    let (key, outcome) = txn.apply(&widget("a", 1), M).unwrap();
    assert_eq!(outcome, WriteOutcome::Created);
    assert_eq!(key.to_string(), "Widget.example.com default/a");
    let events = txn.commit().unwrap();
    assert_eq!(events.len(), 1);
    let obj = store.with(|s| s.get(&key)).unwrap();
    let meta = object::metadata(&obj).unwrap();
    assert!(meta.get("uid").and_then(Value::as_str).is_some());
    assert_eq!(meta["resourceVersion"], "1");
    assert_eq!(meta["generation"], 1);
    assert_eq!(meta["namespace"], "default");
}

#[test]
fn no_op_write_is_suppressed_and_spec_change_bumps_generation() {
    let (_d, store) = open();
    with_crd(&store);
    let changes = store.changes();
    changes.drain();
    let mut txn = store.begin();
    txn.apply(&widget("a", 1), M).unwrap();
    txn.commit().unwrap();
    let mut txn = store.begin();
    let (key, outcome) = txn.apply(&widget("a", 1), M).unwrap();
    assert_eq!(outcome, WriteOutcome::Unchanged);
    assert!(txn.commit().unwrap().is_empty());
    let mut txn = store.begin();
    assert_eq!(txn.apply(&widget("a", 2), M).unwrap().1, WriteOutcome::Updated);
    txn.commit().unwrap();
    let obj = store.with(|s| s.get(&key)).unwrap();
    assert_eq!(obj["metadata"]["resourceVersion"], "2");
    assert_eq!(obj["metadata"]["generation"], 2);
    // One object, created then changed since the last look: one entry, still new.
    let kinds: Vec<_> = changes.drain().into_iter().map(|e| e.kind).collect();
    assert_eq!(kinds, [EventType::Added]);
}

#[test]
fn dropped_transaction_leaves_no_trace() {
    let (_d, store) = open();
    with_crd(&store);
    {
        let mut txn = store.begin();
        txn.apply(&widget("a", 1), M).unwrap();
        assert!(txn
            .get(
                &ObjectKey::of(&json!({"apiVersion": "example.com/v1alpha1", "kind": "Widget",
            "metadata": {"name": "a", "namespace": "default"}}))
                .unwrap()
            )
            .is_some());
    }
    assert_eq!(store.with(|s| s.objects.len()), 1, "only the CRD object");
}

#[test]
fn unknown_kind_and_wrong_version_are_errors() {
    let (_d, store) = open();
    let mut txn = store.begin();
    let err = txn.apply(&widget("a", 1), M).unwrap_err();
    assert!(matches!(err, StoreError::UnknownKind { .. }), "{err}");
    with_crd(&store);
    let mut txn = store.begin();
    let mut w = widget("a", 1);
    w["apiVersion"] = json!("example.com/v1");
    let err = txn.apply(&w, M).unwrap_err();
    assert!(err.to_string().contains("served version is \"example.com/v1alpha1\""), "{err}");
}

#[test]
fn finalizers_hold_deletion_until_removed() {
    let (_d, store) = open();
    with_crd(&store);
    let mut w = widget("a", 1);
    w["metadata"]["finalizers"] = json!(["example.com/hold"]);
    let mut txn = store.begin();
    let (key, _) = txn.apply(&w, M).unwrap();
    assert_eq!(txn.delete(&key).unwrap(), WriteOutcome::Deleting);
    txn.commit().unwrap();
    let obj = store.with(|s| s.get(&key)).unwrap();
    assert!(object::deletion_timestamp(&obj).is_some());
    let mut txn = store.begin();
    w["metadata"]["finalizers"] = json!([]);
    assert_eq!(txn.apply(&w, M).unwrap().1, WriteOutcome::Deleted);
    txn.commit().unwrap();
    assert!(store.with(|s| !s.objects.contains_key(&key)));
}

#[test]
fn garbage_collection_follows_owner_uid() {
    let (_d, store) = open();
    with_crd(&store);
    let mut txn = store.begin();
    let (owner_key, _) = txn.apply(&widget("owner", 1), M).unwrap();
    let owner_uid = object::uid(&txn.get(&owner_key).unwrap()).unwrap().to_string();
    let mut child = widget("child", 2);
    child["metadata"]["ownerReferences"] = json!([{"apiVersion": "example.com/v1alpha1", "kind": "Widget",
        "name": "owner", "uid": owner_uid, "controller": true}]);
    let (child_key, _) = txn.apply(&child, M).unwrap();
    let mut grandchild = widget("grandchild", 3);
    txn.commit().unwrap();
    let child_uid = store.with(|s| object::uid(&s.objects[&child_key].value()).unwrap().to_string());
    grandchild["metadata"]["ownerReferences"] = json!([{"apiVersion": "example.com/v1alpha1", "kind": "Widget",
        "name": "child", "uid": child_uid}]);
    let mut txn = store.begin();
    txn.apply(&grandchild, M).unwrap();
    let owned: Vec<_> = txn.owned_by(&child_uid).into_iter().map(|(k, _)| k.name).collect();
    assert_eq!(owned, ["grandchild"], "the owner index sees the transaction's own writes");
    assert_eq!(store.with(|s| s.owned_by(&owner_uid).count()), 1);
    assert!(txn.collect_garbage().is_empty(), "all owners alive");
    txn.delete(&owner_key).unwrap();
    let collected = txn.collect_garbage();
    assert_eq!(collected.len(), 2, "{collected:?}");
    txn.commit().unwrap();
    assert_eq!(store.with(|s| s.objects.len()), 1, "only the CRD remains");
}

/// Every object none of whose owners is alive, by a full scan of the committed state.
fn garbage(store: &Store) -> Vec<ObjectKey> {
    let txn = store.begin();
    txn.all_owned().into_iter().filter(|k| txn.is_garbage(k)).collect()
}

/// A small deterministic pseudo-random sequence (xorshift64*).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) % n
    }
}

/// Random owner trees changed by transactions that collect garbage and by ones that do not (a
/// reconcile's commit): whenever the store says it holds no garbage, a full scan agrees, and a
/// collection always leaves none, however little it looked at.
#[test]
fn garbage_collection_that_looks_only_at_changes_finds_what_a_full_scan_finds() {
    let (_d, store) = open();
    with_crd(&store);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let names: Vec<String> = (0..12).map(|i| format!("w{i}")).collect();
    for step in 0..400 {
        let mut txn = store.begin();
        for _ in 0..1 + rng.below(3) {
            let name = &names[rng.below(names.len() as u64) as usize];
            let key = ObjectKey::new(&GroupKind::new("example.com", "Widget"), "default", name);
            match rng.below(10) {
                0..=2 => {
                    let _ = txn.delete(&key);
                }
                3 => {
                    // Re-created: a new uid, its dependents' references go stale.
                    let _ = txn.delete(&key);
                    txn.apply(&widget(name, 1), M).unwrap();
                }
                _ => {
                    let mut w = widget(name, rng.below(3) as i64);
                    let owner = &names[rng.below(names.len() as u64) as usize];
                    let owner_key = ObjectKey::new(&GroupKind::new("example.com", "Widget"), "default", owner);
                    if owner != name && rng.below(10) < 7 {
                        // By the owner's current uid (alive) or a stale one.
                        let uid = match (txn.get(&owner_key), rng.below(3)) {
                            (Some(o), 0 | 1) => object::uid(&o).unwrap_or("").to_string(),
                            _ => "gone".to_string(),
                        };
                        w["metadata"]["ownerReferences"] = json!([{"apiVersion": "example.com/v1alpha1",
                            "kind": "Widget", "name": owner, "uid": uid}]);
                    }
                    txn.apply(&w, M).unwrap();
                }
            }
        }
        let collects = rng.below(2) == 0;
        if collects {
            txn.collect_garbage();
        }
        txn.commit_unsynced().unwrap();
        let left = garbage(&store);
        if collects {
            assert!(left.is_empty(), "step {step}: a collection left {left:?}");
        }
        if store.gc_clean.load(std::sync::atomic::Ordering::Relaxed) {
            assert!(left.is_empty(), "step {step}: the store says clean but holds {left:?}");
        }
    }
}

#[test]
fn deleting_a_crd_unregisters_and_removes_its_objects() {
    let (_d, store) = open();
    with_crd(&store);
    let mut txn = store.begin();
    txn.apply(&widget("a", 1), M).unwrap();
    txn.commit().unwrap();
    let mut txn = store.begin();
    let crd_key = ObjectKey::of(&crd()).unwrap();
    txn.delete(&crd_key).unwrap();
    txn.commit().unwrap();
    assert_eq!(store.with(|s| s.objects.len()), 0);
    assert!(store.with(|s| s.registry.get(&GroupKind::new("example.com", "Widget")).is_none()));
}

#[test]
fn state_survives_reopen_and_registry_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    {
        let store = Store::open(&path).unwrap();
        with_crd(&store);
        let mut txn = store.begin();
        txn.apply(&widget("a", 7), M).unwrap();
        txn.commit().unwrap();
    }
    let store = reopen(&path);
    let gk = GroupKind::new("example.com", "Widget");
    assert!(store.with(|s| s.registry.get(&gk).is_some()));
    let items = store.with(|s| s.list(&gk, None));
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["spec"]["size"], 7);
}

#[test]
fn builtin_apis_cannot_be_redefined() {
    let (_d, store) = open();
    let mut c = crd();
    c["metadata"]["name"] = json!("reconcilers.choreo.kform.dev");
    c["spec"]["group"] = json!("choreo.kform.dev");
    c["spec"]["names"] = json!({"kind": "Reconciler", "plural": "reconcilers"});
    let mut txn = store.begin();
    let err = txn.apply(&c, M).unwrap_err();
    assert!(matches!(err, StoreError::Builtin(_)), "{err}");
}

#[test]
fn conflicting_managers_are_reported_and_force_takes_over() {
    let (_d, store) = open();
    with_crd(&store);
    let mut txn = store.begin();
    txn.apply(&widget("a", 1), ApplyOptions { manager: "alice", force: false }).unwrap();
    txn.commit().unwrap();
    let mut txn = store.begin();
    let err = txn.apply(&widget("a", 2), ApplyOptions { manager: "bob", force: false }).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Widget.example.com default/a: Apply failed with 1 conflict: conflict with \"alice\": .spec.size"
    );
    // The same value is shared ownership, not a conflict.
    txn.apply(&widget("a", 1), ApplyOptions { manager: "bob", force: false }).unwrap();
    let (key, _) = txn.apply(&widget("a", 2), ApplyOptions { manager: "bob", force: true }).unwrap();
    txn.commit().unwrap();
    let obj = store.with(|s| s.get(&key)).unwrap();
    assert_eq!(obj["spec"]["size"], 2);
    assert!(crate::api::apply::managed_paths(&obj, "alice").unwrap().is_empty());
    assert_eq!(crate::api::apply::managed_paths(&obj, "bob").unwrap(), [".spec.size"]);
}

#[test]
fn unsynced_commits_reach_the_database_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let n = PENDING_WRITES + 10;
    {
        let store = Store::open(&path).unwrap();
        with_crd(&store);
        // More writes than one pending batch holds, then rewrites and a deletion of early ones,
        // all unsynced: the last write of each key must win on disk.
        for i in 0..n {
            let mut txn = store.begin();
            txn.apply(&widget(&format!("w{i}"), 1), M).unwrap();
            txn.commit_unsynced().unwrap();
        }
        let mut txn = store.begin();
        txn.apply(&widget("w0", 2), M).unwrap();
        txn.commit_unsynced().unwrap();
        let mut txn = store.begin();
        let key = ObjectKey::new(&GroupKind::new("example.com", "Widget"), "default", "w1");
        txn.delete(&key).unwrap();
        txn.commit_unsynced().unwrap();
        // Dropped without a sync: the pending writes still go to sled.
    }
    let store = reopen(&path);
    let gk = GroupKind::new("example.com", "Widget");
    let widgets = store.with(|s| s.list(&gk, None));
    assert_eq!(widgets.len(), n - 1);
    let w0 = store.with(|s| s.get(&ObjectKey::new(&gk, "default", "w0"))).unwrap();
    assert_eq!(w0["spec"]["size"], 2);
    assert!(store.with(|s| s.get(&ObjectKey::new(&gk, "default", "w1"))).is_none());
}

/// Opens a database a dropped `Store` just closed: sled's background flusher lets go of the
/// file lock a moment after the drop, so `Locked` is waited out (with a deadline).
fn reopen(path: &std::path::Path) -> Store {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match Store::open(path) {
            Ok(s) => return s,
            Err(StoreError::Locked { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10))
            }
            Err(e) => panic!("reopen {}: {e}", path.display()),
        }
    }
}

#[test]
fn apply_and_read_returns_what_a_read_gives() {
    let (_d, store) = open();
    with_crd(&store);
    let mut txn = store.begin();
    let (key, outcome, created) = txn.apply_and_read(&widget("a", 1), M).unwrap();
    assert_eq!(outcome, WriteOutcome::Created);
    assert_eq!(created.as_ref(), txn.get(&key).as_deref());
    txn.commit().unwrap();
    let mut txn = store.begin();
    let (_, outcome, same) = txn.apply_and_read(&widget("a", 1), M).unwrap();
    assert_eq!(outcome, WriteOutcome::Unchanged);
    assert_eq!(same.as_ref(), txn.get(&key).as_deref());
    let (_, outcome, updated) = txn.apply_and_read(&widget("a", 2), M).unwrap();
    assert_eq!(outcome, WriteOutcome::Updated);
    assert_eq!(updated.as_ref(), txn.get(&key).as_deref());
    assert_eq!(updated.unwrap()["metadata"]["resourceVersion"], "2");
    // The last finalizer removed from a deleting object: it is gone, nothing to read.
    let mut held = widget("b", 1);
    held["metadata"]["finalizers"] = json!(["f"]);
    txn.apply(&held, M).unwrap();
    txn.commit().unwrap();
    let mut txn = store.begin();
    let b = ObjectKey::new(&GroupKind::new("example.com", "Widget"), "default", "b");
    assert_eq!(txn.delete(&b).unwrap(), WriteOutcome::Deleting);
    let (_, outcome, gone) = txn.apply_and_read(&widget("b", 1), M).unwrap();
    assert_eq!((outcome, gone), (WriteOutcome::Deleted, None));
}

#[test]
fn an_unchanged_apply_still_defaults_and_validates_under_a_changed_crd() {
    let (_d, store) = open();
    with_crd(&store);
    let mut txn = store.begin();
    let (key, _) = txn.apply(&widget("a", 5), M).unwrap();
    txn.commit().unwrap();
    // The CRD gains a default and a bound the stored object breaks.
    let mut changed = crd();
    changed["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"] =
        json!({"size": {"type": "integer", "maximum": 3}, "color": {"type": "string", "default": "red"}});
    let mut txn = store.begin();
    txn.apply(&changed, M).unwrap();
    txn.commit().unwrap();
    let mut txn = store.begin();
    let err = txn.apply(&widget("a", 5), M).unwrap_err().to_string();
    assert!(err.contains("spec.size"), "{err}");
    // Within bounds, the same intent now writes the default.
    let mut txn = store.begin();
    txn.apply(&widget("a", 2), M).unwrap();
    txn.commit().unwrap();
    let mut loosened = changed.clone();
    loosened["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["shape"] =
        json!({"type": "string", "default": "round"});
    let mut txn = store.begin();
    txn.apply(&loosened, M).unwrap();
    txn.commit().unwrap();
    let mut txn = store.begin();
    assert_eq!(txn.apply(&widget("a", 2), M).unwrap().1, WriteOutcome::Updated);
    txn.commit().unwrap();
    let obj = store.with(|s| s.get(&key)).unwrap();
    assert_eq!(obj["spec"], json!({"size": 2, "color": "red", "shape": "round"}));
}

#[test]
fn a_transaction_reading_every_object_reads_each_correctly() {
    let (_d, store) = open();
    with_crd(&store);
    let mut txn = store.begin();
    let n = super::txn::PARSED_MAX * 3;
    for i in 0..n {
        txn.apply(&widget(&format!("w{i}"), i as i64), M).unwrap();
    }
    txn.commit().unwrap();
    let mut txn = store.begin();
    // Half of them rewritten in the transaction, then all read twice: more than the
    // transaction keeps parsed.
    for i in (0..n).step_by(2) {
        txn.apply(&widget(&format!("w{i}"), 1000 + i as i64), M).unwrap();
    }
    for _ in 0..2 {
        for i in 0..n {
            let key = ObjectKey::new(&GroupKind::new("example.com", "Widget"), "default", &format!("w{i}"));
            let want = if i % 2 == 0 { 1000 + i } else { i };
            assert_eq!(txn.get(&key).unwrap()["spec"]["size"], want);
        }
    }
}

#[test]
fn the_owner_index_keeps_one_or_many_objects_in_key_order() {
    let key = |n: &str| ObjectKey::new(&GroupKind::new("g", "K"), "ns", n);
    let mut owned = Owned::One(key("b"));
    owned.insert(key("b"));
    assert!(matches!(owned, Owned::One(_)), "the same object again is still one");
    owned.insert(key("a"));
    owned.insert(key("c"));
    let names: Vec<&str> = owned.iter().map(|k| k.name.as_str()).collect();
    assert_eq!(names, ["a", "b", "c"]);
    assert!(!owned.remove(&key("b")));
    assert!(!owned.remove(&key("x")));
    assert!(!owned.remove(&key("a")));
    assert!(owned.remove(&key("c")), "nothing left");
    let mut one = Owned::One(key("a"));
    assert!(!one.remove(&key("b")), "another object leaves it");
    assert!(one.remove(&key("a")));
}

#[test]
fn an_apply_repeated_on_the_object_it_left_is_known_unchanged_until_the_object_or_its_schema_changes() {
    let (_d, store) = open();
    with_crd(&store);
    let key = ObjectKey::new(&GroupKind::new("example.com", "Widget"), "default", "a");
    let remembered = |store: &Store, obj: &Value, manager: &str| {
        let stored = store.with(|s| s.objects.get(&key).cloned()).unwrap();
        store.memo.unchanged(&stored, memo::digest(obj, manager, false))
    };
    let mut txn = store.begin();
    assert_eq!(txn.apply(&widget("a", 1), M).unwrap().1, WriteOutcome::Created);
    txn.commit().unwrap();
    // The object the apply left is remembered (debug builds also run the apply it saves).
    assert!(remembered(&store, &widget("a", 1), "test"));
    assert!(!remembered(&store, &widget("a", 2), "test"));
    assert!(!remembered(&store, &widget("a", 1), "other"));
    let mut txn = store.begin();
    assert_eq!(txn.apply(&widget("a", 1), M).unwrap().1, WriteOutcome::Unchanged);
    // Another manager's write makes a new object: the same request is merged again.
    let color = json!({"apiVersion": "example.com/v1alpha1", "kind": "Widget", "metadata": {"name": "a"}, "spec": {"color": "red"}});
    assert_eq!(txn.apply(&color, ApplyOptions { manager: "other", force: false }).unwrap().1, WriteOutcome::Updated);
    txn.commit().unwrap();
    assert!(!remembered(&store, &widget("a", 1), "test"));
    let mut txn = store.begin();
    assert_eq!(txn.apply(&widget("a", 1), M).unwrap().1, WriteOutcome::Unchanged);
    txn.commit().unwrap();
    assert!(remembered(&store, &widget("a", 1), "test"));
    // A schema the object no longer meets: the apply is checked again, not remembered.
    let mut strict = crd();
    strict["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["size"]["maximum"] =
        json!(0);
    let mut txn = store.begin();
    txn.apply(&strict, M).unwrap();
    txn.commit().unwrap();
    assert!(!remembered(&store, &widget("a", 1), "test"));
    let mut txn = store.begin();
    let err = txn.apply(&widget("a", 1), M).unwrap_err().to_string();
    assert!(err.contains("size"), "{err}");
}

/// A commit of `n` widgets of `size` in one transaction.
fn commit_widgets(store: &Store, n: usize, size: i64) {
    let mut txn = store.begin();
    for i in 0..n {
        txn.apply(&widget(&format!("w{i}"), size), M).unwrap();
    }
    txn.commit().unwrap();
}

#[test]
fn a_commit_too_large_for_one_batch_is_stored_whole_through_the_redo_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let n = redo::LARGE + 10;
    {
        let store = Store::open(&path).unwrap();
        with_crd(&store);
        commit_widgets(&store, n, 1);
        assert!(store.redo.is_empty(), "the redo log is cleared once applied");
        // Large deletions go the same way.
        let gk = GroupKind::new("example.com", "Widget");
        let mut txn = store.begin();
        for i in 0..n / 2 {
            txn.delete(&ObjectKey::new(&gk, "default", &format!("w{i}"))).unwrap();
        }
        txn.commit().unwrap();
    }
    let store = reopen(&path);
    let gk = GroupKind::new("example.com", "Widget");
    assert_eq!(store.with(|s| s.list(&gk, None)).len(), n - n / 2);
    assert!(store.redo.is_empty());
}

#[test]
fn a_large_commit_cut_short_after_its_commit_point_is_completed_at_open_and_before_it_never_happened() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let gk = GroupKind::new("example.com", "Widget");
    let n = 10;
    // The stored form of each widget at size 2, from a store where that commit happened.
    let resized: Vec<(Vec<u8>, Option<sled::IVec>)> = {
        let (_d, other) = open();
        with_crd(&other);
        commit_widgets(&other, n, 2);
        other.with(|s| s.objects.iter().map(|(k, v)| (k.to_bytes(), Some(v.ivec()))).collect())
    };
    for sealed in [false, true] {
        {
            let store = reopen_or_open(&path);
            with_crd(&store);
            commit_widgets(&store, n, 1);
            // A crash during step 2 (sealed: the log is complete) or step 1 (not sealed): the log
            // is on disk, the objects tree still has the old values.
            let mut log = redo::Log::new(&store.redo).unwrap();
            log.add("objects", &resized).unwrap();
            if sealed {
                log.seal().unwrap();
            }
            store.sync().unwrap();
        }
        let store = reopen(&path);
        let size = store.with(|s| s.get(&ObjectKey::new(&gk, "default", "w3"))).unwrap()["spec"]["size"].clone();
        assert_eq!(size, if sealed { 2 } else { 1 }, "sealed: {sealed}");
        assert!(store.redo.is_empty(), "the log is cleared at open either way");
        assert_eq!(store.with(|s| s.list(&gk, None)).len(), n);
    }
}

fn reopen_or_open(path: &std::path::Path) -> Store {
    match path.exists() {
        true => reopen(path),
        false => Store::open(path).unwrap(),
    }
}

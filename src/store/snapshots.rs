//! Run snapshots: what every object looked like after a run, kept in sled across restarts.
//!
//! A snapshot records the run's summary (opaque JSON to the store) and, for every object, a
//! content hash; the object bodies live once per distinct content in the `snapshot_blobs` tree,
//! so fifty snapshots of a 10k-object project cost little more than one. The newest
//! [`RETAINED`] snapshots are kept; blobs no snapshot refers to are removed when an old snapshot
//! goes.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use serde_json::{json, Value};

use super::{Result, Store, StoreError};
use crate::api::object::ObjectKey;

/// How many snapshots are kept.
pub const RETAINED: usize = 50;

/// A snapshot without its objects.
#[derive(Debug, Clone)]
pub struct SnapshotMeta {
    pub seq: u64,
    pub id: String,
    pub time: String,
    /// The run summary as the engine stored it.
    pub summary: Value,
}

/// A snapshot with every object.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub meta: SnapshotMeta,
    pub objects: BTreeMap<ObjectKey, Arc<Value>>,
}

fn hash(bytes: &[u8]) -> [u8; 16] {
    xxhash_rust::xxh3::xxh3_128(bytes).to_be_bytes()
}

impl Store {
    fn tree(&self, name: &str) -> Result<sled::Tree> {
        self.db.open_tree(name).map_err(|source| StoreError::Db { path: self.dir.clone(), source })
    }

    fn db_err(&self) -> impl Fn(sled::Error) -> StoreError + '_ {
        move |source| StoreError::Db { path: self.dir.clone(), source }
    }

    /// Records the current objects as a new snapshot with `summary`; durable when it returns.
    pub fn save_snapshot(&self, id: &str, time: &str, summary: Value) -> Result<SnapshotMeta> {
        let snaps = self.tree("snapshots")?;
        let blobs = self.tree("snapshot_blobs")?;
        let seq = match snaps.last().map_err(self.db_err())? {
            Some((k, _)) => u64::from_be_bytes(k.as_ref().try_into().unwrap_or([0; 8])) + 1,
            None => 1,
        };
        let mut entries = Vec::new();
        let mut batch = sled::Batch::default();
        let mut seen = HashSet::new();
        self.with(|state| {
            for (key, obj) in &state.objects {
                let bytes = serde_json::to_vec(&**obj).unwrap_or_default();
                let h = hash(&bytes);
                if seen.insert(h) {
                    batch.insert(&h[..], bytes);
                }
                entries.push(json!([String::from_utf8_lossy(&key.to_bytes()), hex(&h)]));
            }
        });
        blobs.apply_batch(batch).map_err(self.db_err())?;
        let record = json!({"id": id, "time": time, "summary": summary, "objects": entries});
        snaps.insert(seq.to_be_bytes(), serde_json::to_vec(&record).unwrap_or_default()).map_err(self.db_err())?;
        self.prune_snapshots(&snaps, &blobs)?;
        self.sync()?;
        Ok(SnapshotMeta { seq, id: id.to_string(), time: time.to_string(), summary: record["summary"].clone() })
    }

    fn prune_snapshots(&self, snaps: &sled::Tree, blobs: &sled::Tree) -> Result<()> {
        let count = snaps.len();
        if count <= RETAINED {
            return Ok(());
        }
        for _ in 0..count - RETAINED {
            snaps.pop_min().map_err(self.db_err())?;
        }
        let mut live: HashSet<Vec<u8>> = HashSet::new();
        for item in snaps.iter() {
            let (_, v) = item.map_err(self.db_err())?;
            let record: Value = serde_json::from_slice(&v).unwrap_or(Value::Null);
            for e in record["objects"].as_array().into_iter().flatten() {
                if let Some(h) = e.get(1).and_then(Value::as_str).and_then(unhex) {
                    live.insert(h);
                }
            }
        }
        let mut batch = sled::Batch::default();
        for item in blobs.iter() {
            let (k, _) = item.map_err(self.db_err())?;
            if !live.contains(k.as_ref()) {
                batch.remove(k);
            }
        }
        blobs.apply_batch(batch).map_err(self.db_err())
    }

    /// Every snapshot, newest first.
    pub fn snapshots(&self) -> Result<Vec<SnapshotMeta>> {
        let snaps = self.tree("snapshots")?;
        let mut out = Vec::new();
        for item in snaps.iter().rev() {
            let (k, v) = item.map_err(self.db_err())?;
            out.push(self.decode_meta(&k, &v)?.0);
        }
        Ok(out)
    }

    fn decode_meta(&self, k: &[u8], v: &[u8]) -> Result<(SnapshotMeta, Value)> {
        let seq = u64::from_be_bytes(k.try_into().unwrap_or([0; 8]));
        let record: Value = serde_json::from_slice(v).map_err(|e| StoreError::Corrupt {
            path: self.dir.clone(),
            key: format!("snapshot {seq}"),
            message: e.to_string(),
        })?;
        let meta = SnapshotMeta {
            seq,
            id: record["id"].as_str().unwrap_or_default().to_string(),
            time: record["time"].as_str().unwrap_or_default().to_string(),
            summary: record["summary"].clone(),
        };
        Ok((meta, record))
    }

    /// The newest `n` snapshots with their objects, newest first.
    pub fn latest_snapshots(&self, n: usize) -> Result<Vec<Snapshot>> {
        let snaps = self.tree("snapshots")?;
        let blobs = self.tree("snapshot_blobs")?;
        let mut out = Vec::new();
        for item in snaps.iter().rev().take(n) {
            let (k, v) = item.map_err(self.db_err())?;
            let (meta, record) = self.decode_meta(&k, &v)?;
            let mut objects = BTreeMap::new();
            for e in record["objects"].as_array().into_iter().flatten() {
                let (Some(key), Some(h)) = (
                    e.get(0).and_then(Value::as_str).and_then(|k| ObjectKey::from_bytes(k.as_bytes())),
                    e.get(1).and_then(Value::as_str).and_then(unhex),
                ) else {
                    continue;
                };
                if let Some(bytes) = blobs.get(&h).map_err(self.db_err())? {
                    if let Ok(obj) = serde_json::from_slice::<Value>(&bytes) {
                        objects.insert(key, Arc::new(obj));
                    }
                }
            }
            out.push(Snapshot { meta, objects });
        }
        Ok(out)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ApplyOptions;

    #[test]
    fn snapshots_persist_share_blobs_and_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        {
            let store = Store::open(&path).unwrap();
            for i in 0..RETAINED + 3 {
                let mut txn = store.begin();
                let lib = json!({"apiVersion": "choreo.kform.dev/v1alpha1", "kind": "Library",
                    "metadata": {"name": "lib"}, "spec": {"code": format!("# {}", i % 2)}});
                txn.apply(&lib, ApplyOptions { manager: "m", force: false }).unwrap();
                txn.commit().unwrap();
                store.save_snapshot(&format!("id{i}"), "t", json!({"run": i})).unwrap();
            }
        }
        let store = Store::open(&path).unwrap();
        let list = store.snapshots().unwrap();
        assert_eq!(list.len(), RETAINED);
        assert_eq!(list[0].id, format!("id{}", RETAINED + 2));
        assert_eq!(list[0].summary["run"], RETAINED + 2);
        let latest = store.latest_snapshots(2).unwrap();
        assert_eq!(latest.len(), 2);
        let lib = |s: &Snapshot| s.objects.values().next().unwrap()["spec"]["code"].clone();
        assert_ne!(lib(&latest[0]), lib(&latest[1]));
    }
}

//! Run snapshots: what every object looked like after a run, kept in sled across restarts.
//!
//! A snapshot records the run's summary (opaque JSON to the store) and, for every object, a
//! content hash; the object bodies live once per distinct content in the `snapshot_blobs` tree,
//! so fifty snapshots of a 10k-object project cost little more than one. The newest
//! [`RETAINED`] snapshots are kept; blobs no snapshot refers to are removed when an old snapshot
//! goes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Result, Store, StoreError};
use crate::api::object::ObjectKey;

/// How many snapshots are kept.
pub const RETAINED: usize = 50;

/// Blobs written per sled batch. A sled batch pins the log and one epoch until it ends, so
/// every node version and log buffer it creates stays in memory meanwhile: one batch of the
/// 20k bodies of a 10k-object run held about 190 MB. Blobs are content-addressed and only
/// referenced once the object list is written after them, so they need no atomicity.
const BLOB_BATCH: usize = 256;

/// A snapshot without its objects.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotMeta {
    pub seq: u64,
    pub id: String,
    pub time: String,
    pub success: bool,
    /// The run summary as JSON text, as the engine stored it, when stored inline (before summaries
    /// got their own tree); empty otherwise: [`super::Reader::snapshot_summary`] reads it.
    pub summary: String,
}

/// Bytes of summary text per record of the `snapshot_summaries` tree (key: the snapshot's
/// sequence number and the chunk's, both big-endian). A large run's summary (about 200 bytes per
/// event, two events per reconcile) is streamed there: never whole in memory, and listing the
/// snapshots does not read it.
const SUMMARY_CHUNK: usize = 1 << 20;

/// Writes JSON text into `snapshot_summaries` as it is produced.
struct SummaryWriter<'a> {
    tree: &'a sled::Tree,
    seq: u64,
    chunks: u32,
    buf: Vec<u8>,
}

impl SummaryWriter<'_> {
    fn write_chunk(&mut self) -> std::io::Result<()> {
        let mut key = [0u8; 12];
        key[..8].copy_from_slice(&self.seq.to_be_bytes());
        key[8..].copy_from_slice(&self.chunks.to_be_bytes());
        self.tree.insert(key, std::mem::take(&mut self.buf)).map_err(std::io::Error::other)?;
        self.chunks += 1;
        Ok(())
    }
}

impl std::io::Write for SummaryWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if self.buf.is_empty() {
            self.buf.reserve(SUMMARY_CHUNK.min(bytes.len().max(4096)));
        }
        let n = bytes.len().min(SUMMARY_CHUNK - self.buf.len());
        self.buf.extend_from_slice(&bytes[..n]);
        if self.buf.len() == SUMMARY_CHUNK {
            self.write_chunk()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            self.write_chunk()?;
        }
        Ok(())
    }
}

/// Removes the summary chunks of snapshot `seq` (pruned, or left by a snapshot that failed).
fn remove_summary(tree: &sled::Tree, seq: &[u8]) -> std::result::Result<(), sled::Error> {
    let mut batch = sled::Batch::default();
    for item in tree.scan_prefix(seq) {
        batch.remove(item?.0);
    }
    tree.apply_batch(batch)
}

/// A snapshot with every object.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub meta: SnapshotMeta,
    pub objects: BTreeMap<ObjectKey, Arc<Value>>,
}

/// The object list of a snapshot: sled key bytes of each object and its content hash.
#[derive(Serialize, Deserialize)]
struct ObjectList(Vec<(Vec<u8>, [u8; 16])>);

pub(super) fn hash(bytes: &[u8]) -> [u8; 16] {
    xxhash_rust::xxh3::xxh3_128(bytes).to_be_bytes()
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(v, bincode::config::standard()).unwrap_or_default()
}

impl Store {
    fn tree(&self, name: &str) -> Result<sled::Tree> {
        self.db.open_tree(name).map_err(|source| StoreError::Db { path: self.dir.clone(), source })
    }

    fn db_err(&self) -> impl Fn(sled::Error) -> StoreError + '_ {
        move |source| StoreError::Db { path: self.dir.clone(), source }
    }

    /// Deletes the blobs `hashes`, in one batch.
    fn remove_blobs<'a>(&self, hashes: impl IntoIterator<Item = &'a [u8; 16]>) -> Result<()> {
        let mut dead = sled::Batch::default();
        for h in hashes {
            dead.remove(&h[..]);
        }
        self.snapshot_blobs.apply_batch(dead).map_err(self.db_err())
    }

    /// Keeps the bodies of the commits from now on as snapshot blobs while they are written (on
    /// the store's writer thread, beside the engine), so that the next [`Store::save_snapshot`]
    /// finds them stored, until [`Store::snapshot_done`]. The engine calls it when a `run once`
    /// starts, whose end saves a snapshot.
    pub fn snapshot_coming(&self) {
        // Until the snapshot, only the writer adds blobs and nothing removes any: when the tree
        // is empty, or every blob in it is counted (see `blob_refs`), the writer needs no
        // lookup to know whether a body is stored.
        let known = match self.snapshot_blobs.is_empty() {
            true => Some(HashSet::new()),
            false => {
                let refs = self.blob_refs.lock().unwrap_or_else(|p| p.into_inner());
                refs.as_ref().map(|counts| counts.keys().copied().collect())
            }
        };
        self.writer.set_known(known);
        self.snapshot_coming.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Ends [`Store::snapshot_coming`], and deletes the blobs kept since that no snapshot took
    /// (a run that ended without one): no snapshot lists them.
    pub fn snapshot_done(&self) -> Result<()> {
        self.snapshot_coming.store(false, std::sync::atomic::Ordering::Relaxed);
        let created = self.settle_kept_blobs()?;
        self.remove_blobs(&created)
    }

    /// Before blobs are written or removed outside the writer: what the writer was told it knows
    /// stops being true (unset before anything can fail; lookups are always right), everything
    /// pending reaches sled, and the blobs the writer created for it are returned.
    fn settle_kept_blobs(&self) -> Result<super::writer::Hashes> {
        self.writer.set_known(None);
        self.write_objects(Vec::new(), Vec::new(), true)?;
        Ok(self.writer.take_created())
    }

    /// Records the current objects as a new snapshot with the run's `summary` and returns its
    /// sequence number; durable when it returns. Object bodies already stored by an earlier
    /// snapshot, or kept while they were written ([`Store::snapshot_coming`]), are not written
    /// again.
    ///
    /// `summary` is written as JSON after the object list, in chunks (see [`SUMMARY_CHUNK`]).
    pub fn save_snapshot(&self, id: &str, time: &str, success: bool, summary: &impl Serialize) -> Result<u64> {
        let metas = self.tree("snapshots")?;
        let lists = self.tree("snapshot_objects")?;
        let summaries = self.tree("snapshot_summaries")?;
        let blobs = &self.snapshot_blobs;
        // Everything written so far in sled, and the blobs the writer created for it.
        let created = self.settle_kept_blobs()?;
        // Taken before anything is written, and put back only when the whole snapshot is: counts
        // that missed a list would delete blobs another snapshot shows. Without them the next
        // prune sweeps every blob (which also removes what a failed snapshot left).
        let mut refs = self.blob_refs.lock().unwrap_or_else(|p| p.into_inner()).take();
        let seq = match metas.last().map_err(self.db_err())? {
            Some((k, _)) => u64::from_be_bytes(k.as_ref().try_into().unwrap_or([0; 8])) + 1,
            None => 1,
        };
        let mut newest = self.newest_blobs.lock().unwrap_or_else(|p| p.into_inner());
        if newest.is_none() {
            *newest = Some(self.blobs_of_newest(&metas, &lists)?);
        }
        let mut known = newest.take().unwrap_or_default();
        known.extend(created.iter().copied());
        // The objects' stored forms, taken under the read lock; hashed and written after it.
        let objects: Vec<(Vec<u8>, Arc<super::Stored>)> =
            self.with(|state| state.objects.iter().map(|(k, v)| (k.to_bytes(), v.clone())).collect());
        let mut list = Vec::with_capacity(objects.len());
        let mut written = HashSet::with_capacity(objects.len());
        let mut batch = sled::Batch::default();
        let mut in_batch = 0;
        for (key, obj) in objects {
            let h = hash(obj.json());
            // Bodies of the newest snapshot are stored (it is never pruned); any other body is
            // written, which for one an older snapshot already stored rewrites the same bytes.
            if !known.contains(&h) && written.insert(h) {
                batch.insert(&h[..], obj.ivec());
                in_batch += 1;
                if in_batch == BLOB_BATCH {
                    blobs.apply_batch(std::mem::take(&mut batch)).map_err(self.db_err())?;
                    in_batch = 0;
                }
            }
            list.push((key, h));
        }
        blobs.apply_batch(batch).map_err(self.db_err())?;
        drop(written);
        let hashes: HashSet<[u8; 16]> = list.iter().map(|(_, h)| *h).collect();
        let encoded = encode(&ObjectList(list));
        lists.insert(seq.to_be_bytes(), encoded).map_err(self.db_err())?;
        // A snapshot that failed may have left chunks under this number.
        remove_summary(&summaries, &seq.to_be_bytes()).map_err(self.db_err())?;
        let writer = SummaryWriter { tree: &summaries, seq, chunks: 0, buf: Vec::new() };
        let mut out = std::io::BufWriter::with_capacity(64 << 10, writer);
        serde_json::to_writer(&mut out, summary)
            .map_err(std::io::Error::from)
            .and_then(|()| std::io::Write::flush(&mut out))
            .and_then(|()| out.into_inner().map_err(|e| e.into_error()))
            .and_then(|mut w| std::io::Write::flush(&mut w))
            .map_err(|source| StoreError::Io { path: self.dir.clone(), source })?;
        let meta = SnapshotMeta { seq, id: id.to_string(), time: time.to_string(), success, summary: String::new() };
        metas.insert(seq.to_be_bytes(), encode(&meta)).map_err(self.db_err())?;
        // Blobs created during the run for states that did not last: no snapshot refers to them
        // (they did not exist when the older ones were saved).
        self.remove_blobs(created.iter().filter(|h| !hashes.contains(*h)))?;
        self.prune_snapshots(&metas, &lists, &hashes, &mut refs)?;
        self.sync()?;
        *self.blob_refs.lock().unwrap_or_else(|p| p.into_inner()) = refs;
        // Only a snapshot that was saved whole becomes the reference for the next one.
        *newest = Some(hashes);
        Ok(seq)
    }

    /// The body hashes of the newest stored snapshot (none: empty).
    fn blobs_of_newest(&self, metas: &sled::Tree, lists: &sled::Tree) -> Result<HashSet<[u8; 16]>> {
        let Some((k, _)) = metas.last().map_err(self.db_err())? else {
            return Ok(HashSet::new());
        };
        let Some(bytes) = lists.get(&k).map_err(self.db_err())? else {
            return Ok(HashSet::new());
        };
        (View { db: &self.db, dir: &self.dir }).hashes_of(&k, &bytes)
    }

    /// Drops the snapshots beyond the newest [`RETAINED`] and the blobs no remaining snapshot
    /// lists. `new` are the hashes of the snapshot just written. Without counts (the first prune
    /// since the store opened, or after a snapshot failed) it reads every list, sweeps every blob
    /// (which also removes blobs a failed snapshot or a crash left) and counts the references;
    /// later ones only read the lists they drop.
    fn prune_snapshots(
        &self,
        metas: &sled::Tree,
        lists: &sled::Tree,
        new: &HashSet<[u8; 16]>,
        refs: &mut Option<HashMap<[u8; 16], u32>>,
    ) -> Result<()> {
        let view = View { db: &self.db, dir: &self.dir };
        let summaries = self.tree("snapshot_summaries")?;
        let count = metas.len();
        if let Some(counts) = refs {
            for h in new {
                *counts.entry(*h).or_default() += 1;
            }
            let mut dead = Vec::new();
            for _ in RETAINED..count {
                let Some((k, _)) = metas.pop_min().map_err(self.db_err())? else { break };
                remove_summary(&summaries, &k).map_err(self.db_err())?;
                let Some(bytes) = lists.remove(&k).map_err(self.db_err())? else { continue };
                for h in view.hashes_of(&k, &bytes)? {
                    if let Some(n) = counts.get_mut(&h) {
                        *n -= 1;
                        if *n == 0 {
                            counts.remove(&h);
                            dead.push(h);
                        }
                    }
                }
            }
            return self.remove_blobs(&dead);
        }
        if count <= RETAINED {
            // Nothing to drop: the sweep and the counts wait for the first snapshot that drops
            // one (sweeping reads every blob, a noticeable part of a run).
            return Ok(());
        }
        for _ in RETAINED..count {
            if let Some((k, _)) = metas.pop_min().map_err(self.db_err())? {
                remove_summary(&summaries, &k).map_err(self.db_err())?;
                lists.remove(k).map_err(self.db_err())?;
            }
        }
        let mut counts: HashMap<[u8; 16], u32> = HashMap::new();
        for item in lists.iter() {
            let (k, v) = item.map_err(self.db_err())?;
            for h in view.hashes_of(&k, &v)? {
                *counts.entry(h).or_default() += 1;
            }
        }
        let mut batch = sled::Batch::default();
        for item in self.snapshot_blobs.iter() {
            let (k, _) = item.map_err(self.db_err())?;
            let dead = <[u8; 16]>::try_from(k.as_ref()).map_or(true, |h| !counts.contains_key(&h));
            if dead {
                batch.remove(k);
            }
        }
        self.snapshot_blobs.apply_batch(batch).map_err(self.db_err())?;
        *refs = Some(counts);
        Ok(())
    }

    /// Every snapshot, newest first.
    pub fn snapshots(&self) -> Result<Vec<SnapshotMeta>> {
        View { db: &self.db, dir: &self.dir }.snapshots()
    }

    /// The newest `n` snapshots with their objects, newest first.
    pub fn latest_snapshots(&self, n: usize) -> Result<Vec<Snapshot>> {
        View { db: &self.db, dir: &self.dir }.latest_snapshots(n)
    }
}

impl super::Reader {
    /// How many snapshots are stored (for metrics: no snapshot is read).
    pub fn snapshot_count(&self) -> Result<usize> {
        Ok(View { db: &self.db, dir: &self.dir }.tree("snapshots")?.len())
    }

    /// The database's size on disk in bytes (0 when it cannot be told).
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }

    /// [`Store::snapshots`], from any thread.
    pub fn snapshots(&self) -> Result<Vec<SnapshotMeta>> {
        View { db: &self.db, dir: &self.dir }.snapshots()
    }

    /// The run summary (JSON text) of a snapshot listed by [`Reader::snapshots`].
    pub fn snapshot_summary(&self, meta: &SnapshotMeta) -> Result<String> {
        View { db: &self.db, dir: &self.dir }.summary(meta)
    }

    /// [`Store::latest_snapshots`], from any thread: a snapshot is visible once it is complete
    /// (its meta record is written last), and the newest ones are never pruned under a reader.
    pub fn latest_snapshots(&self, n: usize) -> Result<Vec<Snapshot>> {
        View { db: &self.db, dir: &self.dir }.latest_snapshots(n)
    }
}

/// Reading snapshots, shared by the store's writer and its readers.
struct View<'a> {
    db: &'a sled::Db,
    dir: &'a std::path::Path,
}

impl View<'_> {
    fn tree(&self, name: &str) -> Result<sled::Tree> {
        self.db.open_tree(name).map_err(|source| StoreError::Db { path: self.dir.to_path_buf(), source })
    }

    fn db_err(&self) -> impl Fn(sled::Error) -> StoreError + '_ {
        move |source| StoreError::Db { path: self.dir.to_path_buf(), source }
    }

    fn corrupt(&self, what: String, message: String) -> StoreError {
        StoreError::Corrupt { path: self.dir.to_path_buf(), key: what, message }
    }

    fn decode_meta(&self, v: &[u8]) -> Result<SnapshotMeta> {
        bincode::serde::decode_from_slice(v, bincode::config::standard())
            .map(|(m, _)| m)
            .map_err(|e| self.corrupt("snapshot".into(), e.to_string()))
    }

    /// The distinct body hashes of the object list `bytes` (of snapshot `k`).
    fn hashes_of(&self, k: &[u8], bytes: &[u8]) -> Result<HashSet<[u8; 16]>> {
        Ok(self.decode_list(k, bytes)?.0.into_iter().map(|(_, h)| h).collect())
    }

    fn decode_list(&self, k: &[u8], bytes: &[u8]) -> Result<ObjectList> {
        bincode::serde::decode_from_slice(bytes, bincode::config::standard()).map(|(l, _)| l).map_err(|e| {
            self.corrupt(
                format!("snapshot objects {}", u64::from_be_bytes(k.try_into().unwrap_or([0; 8]))),
                e.to_string(),
            )
        })
    }

    fn snapshots(&self) -> Result<Vec<SnapshotMeta>> {
        let metas = self.tree("snapshots")?;
        let mut out = Vec::new();
        for item in metas.iter().rev() {
            let (_, v) = item.map_err(self.db_err())?;
            out.push(self.decode_meta(&v)?);
        }
        Ok(out)
    }

    fn summary(&self, meta: &SnapshotMeta) -> Result<String> {
        if !meta.summary.is_empty() {
            return Ok(meta.summary.clone());
        }
        let mut text = Vec::new();
        for item in self.tree("snapshot_summaries")?.scan_prefix(meta.seq.to_be_bytes()) {
            text.extend_from_slice(&item.map_err(self.db_err())?.1);
        }
        String::from_utf8(text).map_err(|e| self.corrupt(format!("summary of snapshot {}", meta.seq), e.to_string()))
    }

    fn latest_snapshots(&self, n: usize) -> Result<Vec<Snapshot>> {
        let metas = self.tree("snapshots")?;
        let lists = self.tree("snapshot_objects")?;
        let blobs = self.tree("snapshot_blobs")?;
        let mut out = Vec::new();
        for item in metas.iter().rev().take(n) {
            let (k, v) = item.map_err(self.db_err())?;
            let meta = self.decode_meta(&v)?;
            let list = match lists.get(&k).map_err(self.db_err())? {
                Some(bytes) => self.decode_list(&k, &bytes)?,
                None => ObjectList(Vec::new()),
            };
            let mut objects = BTreeMap::new();
            for (key, h) in list.0 {
                let Some(key) = ObjectKey::from_bytes(&key) else { continue };
                if let Some(bytes) = blobs.get(h).map_err(self.db_err())? {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ApplyOptions;
    use serde_json::json;

    #[test]
    fn a_large_summary_is_stored_in_chunks_and_read_back_whole_and_an_inline_one_still_reads() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let events: Vec<String> = (0..150_000).map(|i| format!("event {i} ü")).collect();
        let summary = json!({"events": events});
        let seq = store.save_snapshot("big", "t", true, &summary).unwrap();
        let meta = store.snapshots().unwrap().remove(0);
        assert_eq!(meta.seq, seq);
        assert!(meta.summary.is_empty(), "listing does not carry the text");
        let summaries = store.tree("snapshot_summaries").unwrap();
        assert!(summaries.len() > 1, "over {SUMMARY_CHUNK} bytes: several chunks");
        let text = store.reader().snapshot_summary(&meta).unwrap();
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), summary);
        // A snapshot stored by an older version, with its summary inline.
        let old = SnapshotMeta { seq: 0, id: "old".into(), time: "t".into(), success: true, summary: "{}".into() };
        assert_eq!(store.reader().snapshot_summary(&old).unwrap(), "{}");
    }

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
                store.save_snapshot(&format!("id{i}"), "t", true, &json!({"run": i})).unwrap();
            }
        }
        let store = Store::open(&path).unwrap();
        let list = store.snapshots().unwrap();
        assert_eq!(list.len(), RETAINED);
        assert_eq!(list[0].id, format!("id{}", RETAINED + 2));
        assert_eq!(store.reader().snapshot_summary(&list[0]).unwrap(), format!("{{\"run\":{}}}", RETAINED + 2));
        // Pruned snapshots take their summaries along.
        let summaries = store.tree("snapshot_summaries").unwrap();
        let seqs: HashSet<Vec<u8>> = summaries.iter().keys().map(|k| k.unwrap()[..8].to_vec()).collect();
        assert_eq!(seqs, list.iter().map(|m| m.seq.to_be_bytes().to_vec()).collect());
        let latest = store.latest_snapshots(2).unwrap();
        assert_eq!(latest.len(), 2);
        let lib = |s: &Snapshot| s.objects.values().next().unwrap()["spec"]["code"].clone();
        assert_ne!(lib(&latest[0]), lib(&latest[1]));
        // After a reopen the newest snapshot's bodies are known from its list: an unchanged
        // body is not written again, a changed one (also one an older snapshot had) is.
        for (i, code) in ["# 0", "# 0", "# new", "# 1"].into_iter().enumerate() {
            let mut txn = store.begin();
            let lib = json!({"apiVersion": "choreo.kform.dev/v1alpha1", "kind": "Library",
                "metadata": {"name": "lib"}, "spec": {"code": code}});
            txn.apply(&lib, ApplyOptions { manager: "m", force: false }).unwrap();
            txn.commit().unwrap();
            store.save_snapshot(&format!("again{i}"), "t", true, &json!({})).unwrap();
            let newest = store.latest_snapshots(1).unwrap();
            assert_eq!(newest[0].meta.id, format!("again{i}"));
            assert_eq!(newest[0].objects.values().next().unwrap()["spec"]["code"], code);
        }
    }

    #[test]
    fn bodies_kept_during_a_run_serve_its_snapshot_and_intermediate_ones_go() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let lib = |name: &str, code: &str| {
            json!({"apiVersion": "choreo.kform.dev/v1alpha1", "kind": "Library",
                "metadata": {"name": name}, "spec": {"code": code}})
        };
        let put = |v: Value| {
            let mut txn = store.begin();
            txn.apply(&v, ApplyOptions { manager: "m", force: false }).unwrap();
            txn.commit_unsynced().unwrap();
        };
        put(lib("a", "# first"));
        store.save_snapshot("one", "t", true, &json!({})).unwrap();
        store.snapshot_coming();
        // More writes than one pending batch, so most reach the writer before the snapshot;
        // every object goes through states no snapshot will show.
        for i in 0..600 {
            put(lib(&format!("l{}", i % 300), &format!("# {i}")));
        }
        put(lib("a", "# first"));
        // The writer kept the bodies while it wrote them: before the snapshot, not by it.
        store.sync().unwrap();
        assert!(store.snapshot_blobs.len() > 300, "bodies are kept while written");
        store.save_snapshot("two", "t", true, &json!({})).unwrap();
        store.snapshot_done().unwrap();
        let blobs = &store.snapshot_blobs;
        let latest = store.latest_snapshots(2).unwrap();
        let live: HashSet<[u8; 16]> =
            latest.iter().flat_map(|s| s.objects.values().map(|v| hash(&serde_json::to_vec(&**v).unwrap()))).collect();
        assert_eq!(latest[0].objects.len(), 301);
        assert_eq!(latest[1].objects.len(), 1);
        for (key, obj) in &latest[0].objects {
            assert_eq!(Some(obj.clone()), store.with(|s| s.get(key)), "{key}");
        }
        let stored: HashSet<[u8; 16]> =
            blobs.iter().map(|r| <[u8; 16]>::try_from(r.unwrap().0.as_ref()).unwrap()).collect();
        assert_eq!(stored, live, "exactly the bodies the snapshots show");
    }

    /// The blobs stored, and the hashes of every object of every retained snapshot.
    fn stored_and_shown(store: &Store) -> (HashSet<[u8; 16]>, HashSet<[u8; 16]>) {
        let stored =
            store.snapshot_blobs.iter().map(|r| <[u8; 16]>::try_from(r.unwrap().0.as_ref()).unwrap()).collect();
        let shown = store
            .latest_snapshots(RETAINED + 1)
            .unwrap()
            .iter()
            .flat_map(|s| s.objects.values().map(|v| hash(&serde_json::to_vec(&**v).unwrap())).collect::<Vec<_>>())
            .collect();
        (stored, shown)
    }

    #[test]
    fn pruning_by_counts_keeps_exactly_the_blobs_retained_snapshots_show() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let save = |store: &Store, i: usize| {
            // As a run does: the writer keeps bodies (knowing every blob once counts exist), an
            // intermediate state that does not last, then the final one.
            store.snapshot_coming();
            let lib = |name: &str, code: String| {
                json!({"apiVersion": "choreo.kform.dev/v1alpha1", "kind": "Library",
                    "metadata": {"name": name}, "spec": {"code": code}})
            };
            let mut txn = store.begin();
            txn.apply(&lib("fresh", format!("# draft {i}")), ApplyOptions { manager: "m", force: false }).unwrap();
            txn.commit_unsynced().unwrap();
            let mut txn = store.begin();
            // One body that comes back every seventh run, one that changes every run, one that
            // never changes.
            for (name, code) in [("cycle", format!("# {}", i % 7)), ("fresh", format!("# {i}")), ("same", "#".into())] {
                txn.apply(&lib(name, code), ApplyOptions { manager: "m", force: false }).unwrap();
            }
            txn.commit().unwrap();
            store.save_snapshot(&format!("id{i}"), "t", true, &json!({})).unwrap();
            store.snapshot_done().unwrap();
        };
        {
            let store = Store::open(&path).unwrap();
            for i in 0..RETAINED + 20 {
                save(&store, i);
                if i >= RETAINED {
                    let (stored, shown) = stored_and_shown(&store);
                    assert_eq!(stored, shown, "after run {i}");
                }
            }
            assert_eq!(store.snapshots().unwrap().len(), RETAINED);
        }
        // Reopened: the first prune counts again from the lists.
        let store = Store::open(&path).unwrap();
        for i in RETAINED + 20..RETAINED + 30 {
            save(&store, i);
            let (stored, shown) = stored_and_shown(&store);
            assert_eq!(stored, shown, "after run {i}");
        }
    }

    #[test]
    fn a_run_that_ends_without_a_snapshot_leaves_no_bodies_behind() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let put = |name: String, code: String| {
            let mut txn = store.begin();
            let lib = json!({"apiVersion": "choreo.kform.dev/v1alpha1", "kind": "Library",
                "metadata": {"name": name}, "spec": {"code": code}});
            txn.apply(&lib, ApplyOptions { manager: "m", force: false }).unwrap();
            txn.commit_unsynced().unwrap();
        };
        put("kept".into(), "#".into());
        store.save_snapshot("one", "t", true, &json!({})).unwrap();
        for run in 0..2 {
            store.snapshot_coming();
            for i in 0..700 {
                put(format!("l{}", i % 200), format!("# {run} {i}"));
            }
            store.snapshot_done().unwrap();
        }
        let (stored, shown) = stored_and_shown(&store);
        assert_eq!(stored.len(), 1);
        assert_eq!(stored, shown);
        // The next snapshot still has every body it lists.
        store.save_snapshot("two", "t", true, &json!({})).unwrap();
        let (stored, shown) = stored_and_shown(&store);
        assert_eq!(stored, shown);
        assert_eq!(store.latest_snapshots(1).unwrap()[0].objects.len(), 201);
    }
}

//! Write-behind for the unsynced commits of a run: their sled batches are applied on a
//! `choreo-store-writer` thread, so the engine goes on reconciling while sled builds its nodes
//! and log buffers (a fifth of a run's time when done inline).
//!
//! Batches are applied in the order they were handed over, each whole (a commit's writes never
//! straddle two). The queue is bounded: an engine that writes faster than sled waits for it
//! rather than piling batches up in memory. A batch that fails is remembered and reported by the
//! next [`Writer::drain`], which every durable commit and every sync goes through — unsynced
//! commits are not acknowledged as durable, so that is where their failure belongs.
//!
//! While a run's snapshot is coming ([`Job::bodies`]), the writer also stores each written body
//! in the snapshot blob tree, unless it is there already, and remembers which blobs it created:
//! the snapshot at the run's end then finds most bodies stored, and removes the created blobs it
//! does not refer to (bodies of intermediate states), which no other snapshot can refer to.
//! Whether a body is there already is a sled lookup per body, unless the store told the writer
//! every blob the tree holds ([`Writer::set_known`]: an empty tree, or the reference counts of
//! the retained snapshots).
//!
//! *Invariant:* knows sled trees and batches, not objects, events or the in-memory state.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};

/// Batches waiting for the writer at most; the engine blocks on the next one.
const QUEUE: usize = 4;

/// One commit point's writes: the admission's records (applied first) and the objects.
pub(super) struct Job {
    pub records: Option<(sled::Tree, sled::Batch)>,
    pub objects: (sled::Tree, sled::Batch),
    /// The snapshot blob tree and the bodies the objects batch stores, when they are to be kept
    /// there too.
    pub bodies: Option<(sled::Tree, Vec<sled::IVec>)>,
}

/// Content hashes of blobs.
pub(super) type Hashes = HashSet<[u8; 16]>;

/// What the writer knows of the snapshot blob tree.
#[derive(Default)]
struct Blobs {
    /// The blobs created from [`Job::bodies`] since [`Writer::take_created`].
    created: Hashes,
    /// Every blob the tree held when this was set, if known (besides `created`).
    known: Option<Hashes>,
}

impl Blobs {
    fn exists(&self, tree: &sled::Tree, h: &[u8; 16]) -> Result<bool, sled::Error> {
        if self.created.contains(h) {
            return Ok(true);
        }
        match &self.known {
            Some(known) => Ok(known.contains(h)),
            None => tree.contains_key(h),
        }
    }
}

enum Msg {
    Write(Job),
    /// Answered once every batch handed over before it is applied.
    Barrier(Sender<()>),
}

/// The writer thread's handle; dropping it applies what is queued and joins the thread.
pub(super) struct Writer {
    tx: Option<Sender<Msg>>,
    /// Whether a job was handed to the thread since the last [`Writer::drain`]: a drain with
    /// nothing handed over need not wait for the thread.
    handed: std::sync::atomic::AtomicBool,
    failed: Arc<Mutex<Option<sled::Error>>>,
    blobs: Arc<Mutex<Blobs>>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Starts the thread. When a thread cannot be started, batches are applied inline.
    pub fn start() -> Writer {
        let (tx, rx) = crossbeam_channel::bounded(QUEUE);
        let failed = Arc::new(Mutex::new(None));
        let blobs = Arc::new(Mutex::new(Blobs::default()));
        let (f, b) = (failed.clone(), blobs.clone());
        match std::thread::Builder::new().name("choreo-store-writer".into()).spawn(move || serve(rx, f, b)) {
            Ok(thread) => Writer { tx: Some(tx), handed: Default::default(), failed, blobs, thread: Some(thread) },
            Err(e) => {
                log::warn!("cannot start the store's writer thread, writing inline: {e}");
                Writer { tx: None, handed: Default::default(), failed, blobs, thread: None }
            }
        }
    }

    /// Hands `job` over (waits while the queue is full).
    pub fn write(&self, job: Job) -> Result<(), sled::Error> {
        let Some(tx) = &self.tx else { return apply(job, &self.blobs) };
        self.handed.store(true, std::sync::atomic::Ordering::SeqCst);
        match tx.send(Msg::Write(job)) {
            Ok(()) => Ok(()),
            // The thread is gone (it only ends when the handle drops): write inline.
            Err(e) => match e.into_inner() {
                Msg::Write(job) => apply(job, &self.blobs),
                Msg::Barrier(_) => Ok(()),
            },
        }
    }

    fn blobs(&self) -> std::sync::MutexGuard<'_, Blobs> {
        self.blobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The blobs created since the last call (call after [`Writer::drain`]).
    pub fn take_created(&self) -> Hashes {
        std::mem::take(&mut self.blobs().created)
    }

    /// Tells the writer every blob the tree holds now (`None`: unknown, look each up). It must
    /// stay true until it is unset: set it only while nothing but the writer adds or removes
    /// blobs, and unset it before anything else does.
    pub fn set_known(&self, known: Option<Hashes>) {
        self.blobs().known = known;
    }

    /// Applies `job` on the calling thread once every batch handed over before it is applied:
    /// a durable commit waits for its batch anyway, and two hand-offs to the thread and back
    /// cost more than the batch. The first failure since the last drain, or this job's.
    pub fn write_now(&self, job: Job) -> Result<(), sled::Error> {
        self.drain()?;
        apply(job, &self.blobs)
    }

    /// Waits until every batch handed over is applied; the first failure since the last drain.
    pub fn drain(&self) -> Result<(), sled::Error> {
        let handed = self.handed.swap(false, std::sync::atomic::Ordering::SeqCst);
        if let (Some(tx), true) = (&self.tx, handed) {
            let (done, wait) = crossbeam_channel::bounded(1);
            if tx.send(Msg::Barrier(done)).is_ok() {
                // Answered, or the thread ended (its sender dropped): either way nothing is queued.
                let _ = wait.recv();
            }
        }
        match self.failed.lock().unwrap_or_else(|p| p.into_inner()).take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                log::error!("the store's writer thread panicked");
            }
        }
        if let Some(e) = self.failed.lock().unwrap_or_else(|p| p.into_inner()).take() {
            log::error!("cannot write the last changes to the store: {e}");
        }
    }
}

fn serve(rx: Receiver<Msg>, failed: Arc<Mutex<Option<sled::Error>>>, blobs: Arc<Mutex<Blobs>>) {
    for msg in rx {
        match msg {
            Msg::Write(job) => {
                // A panic inside sled must not pass for a written batch: it becomes the failure
                // the next drain reports, and the thread goes on.
                let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| apply(job, &blobs)))
                    .unwrap_or_else(|p| {
                        let why = p
                            .downcast_ref::<&str>()
                            .map(|s| s.to_string())
                            .or_else(|| p.downcast_ref::<String>().cloned());
                        Err(sled::Error::ReportableBug(format!(
                            "writing a batch panicked: {}",
                            why.unwrap_or_default()
                        )))
                    });
                if let Err(e) = applied {
                    log::error!("writing to the store: {e}");
                    failed.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e);
                }
            }
            Msg::Barrier(done) => {
                let _ = done.send(());
            }
        }
    }
}

/// Records first: after a crash between the two, the next open drops records whose owners never
/// made it (see `Admission::restore`).
fn apply(job: Job, state: &Mutex<Blobs>) -> Result<(), sled::Error> {
    if let Some((tree, batch)) = job.records {
        tree.apply_batch(batch)?;
    }
    let (tree, batch) = job.objects;
    tree.apply_batch(batch)?;
    let Some((blobs, bodies)) = job.bodies else { return Ok(()) };
    let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
    let mut batch = sled::Batch::default();
    let mut new = Hashes::new();
    for body in bodies {
        let h = super::snapshots::hash(&body);
        if !new.contains(&h) && !state.exists(&blobs, &h)? {
            batch.insert(&h[..], body);
            new.insert(h);
        }
    }
    // Told only once stored: a snapshot takes what is created as written.
    blobs.apply_batch(batch)?;
    state.created.extend(new);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_applied_in_order_and_drain_waits_for_them() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let tree = db.open_tree("t").unwrap();
        let writer = Writer::start();
        for i in 0..100u32 {
            let mut batch = sled::Batch::default();
            batch.insert(&b"k"[..], &i.to_be_bytes()[..]);
            batch.insert(&i.to_be_bytes()[..], &b"v"[..]);
            writer.write(Job { records: None, objects: (tree.clone(), batch), bodies: None }).unwrap();
        }
        writer.drain().unwrap();
        assert_eq!(tree.get(b"k").unwrap().unwrap().as_ref(), &99u32.to_be_bytes());
        assert_eq!(tree.len(), 101);
        // Dropping applies what is still queued.
        let mut batch = sled::Batch::default();
        batch.insert(&b"last"[..], &b"1"[..]);
        writer.write(Job { records: None, objects: (tree.clone(), batch), bodies: None }).unwrap();
        drop(writer);
        assert!(tree.get(b"last").unwrap().is_some());
    }

    /// A job that writes no object and keeps `bodies` as blobs.
    fn keep(objects: &sled::Tree, blobs: &sled::Tree, bodies: Vec<sled::IVec>) -> Job {
        Job { records: None, objects: (objects.clone(), sled::Batch::default()), bodies: Some((blobs.clone(), bodies)) }
    }

    #[test]
    fn bodies_are_kept_as_blobs_once_and_created_ones_are_told() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let (objects, blobs) = (db.open_tree("o").unwrap(), db.open_tree("b").unwrap());
        let old = sled::IVec::from(&b"{\"old\":1}"[..]);
        blobs.insert(super::super::snapshots::hash(&old), old.clone()).unwrap();
        let writer = Writer::start();
        for bodies in
            [vec![old.clone(), sled::IVec::from(&b"{\"new\":1}"[..])], vec![sled::IVec::from(&b"{\"new\":1}"[..])]]
        {
            writer.write(keep(&objects, &blobs, bodies)).unwrap();
        }
        writer.drain().unwrap();
        assert_eq!(blobs.len(), 2);
        let created = writer.take_created();
        assert_eq!(created, [super::super::snapshots::hash(b"{\"new\":1}")].into_iter().collect());
        assert!(writer.take_created().is_empty());
    }

    #[test]
    fn a_known_set_of_blobs_replaces_the_lookups_until_it_is_unset() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let (objects, blobs) = (db.open_tree("o").unwrap(), db.open_tree("b").unwrap());
        let hash = super::super::snapshots::hash;
        let stored = sled::IVec::from(&b"{\"stored\":1}"[..]);
        blobs.insert(hash(&stored), stored.clone()).unwrap();
        let (listed, new) = (sled::IVec::from(&b"{\"listed\":1}"[..]), sled::IVec::from(&b"{\"new\":1}"[..]));
        let writer = Writer::start();
        let write = |bodies: Vec<sled::IVec>| {
            writer.write(keep(&objects, &blobs, bodies)).unwrap();
            writer.drain().unwrap();
        };
        // Told what the tree holds, the writer believes it (the store only says what is true):
        // `listed` counts as stored, `new` is created.
        writer.set_known(Some([hash(&listed)].into_iter().collect()));
        write(vec![listed.clone(), new.clone()]);
        assert_eq!(writer.take_created(), [hash(&new)].into_iter().collect());
        assert!(blobs.get(hash(&listed)).unwrap().is_none(), "no lookup, no write");
        // Unset, it looks each body up again.
        writer.set_known(None);
        write(vec![stored.clone(), listed.clone()]);
        assert_eq!(writer.take_created(), [hash(&listed)].into_iter().collect());
    }
}

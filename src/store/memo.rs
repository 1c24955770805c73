//! Applies known to change nothing: a reconciler that applies the same child again and again
//! (every reconcile of its owner does) is answered without parsing the stored child and
//! merging into it.
//!
//! An entry says "the request with this digest, applied to this very stored object, changed
//! nothing". It is keyed by the stored object's allocation, which a `Weak` keeps from being
//! reused: an object written since is a new allocation and misses. Server-side apply is
//! idempotent, so the same request on the same object changes nothing again. A registry change
//! (a CRD applied or deleted) forgets everything: the object would have to be validated against
//! the new schema.
//!
//! *Invariant:* knows nothing of apply itself; the transaction decides what to remember.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use serde_json::Value;

use super::Stored;

/// Entries kept at most; all are dropped when full (each also keeps the ~100 bytes of its
/// object's allocation while that object is replaced).
const MAX: usize = 1 << 16;

/// A value known of one stored object, for as long as that object is the one asked about: an
/// object written since is a new allocation, and the `Weak` held here keeps this one's address
/// from being reused, so an equal address is the same object (its content never changes).
#[derive(Debug)]
pub struct Remembered<T> {
    object: Weak<Stored>,
    value: T,
}

impl<T> Remembered<T> {
    pub fn new(stored: &Arc<Stored>, value: T) -> Remembered<T> {
        Remembered { object: Arc::downgrade(stored), value }
    }

    /// The value, if `stored` is the object it was remembered of.
    pub fn of(&self, stored: &Arc<Stored>) -> Option<&T> {
        std::ptr::eq(self.object.as_ptr(), Arc::as_ptr(stored)).then_some(&self.value)
    }
}

#[derive(Default)]
pub(super) struct Memo {
    /// By the object's address (see [`Remembered`]), the digest of the apply.
    map: Mutex<HashMap<usize, Remembered<u128>>>,
}

impl Memo {
    /// Whether the request with `digest` is known to change nothing on `stored`.
    pub(super) fn unchanged(&self, stored: &Arc<Stored>, digest: u128) -> bool {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&address(stored)).and_then(|r| r.of(stored)) == Some(&digest)
    }

    /// Remembers that the request with `digest` changed nothing on `stored`.
    pub(super) fn remember(&self, stored: &Arc<Stored>, digest: u128) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX {
            map.clear();
        }
        map.insert(address(stored), Remembered::new(stored, digest));
    }

    /// Forgets everything (the registry changed).
    pub(super) fn forget_all(&self) {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

fn address(stored: &Arc<Stored>) -> usize {
    Arc::as_ptr(stored) as usize
}

/// The digest of an apply request: the object as sent, the field manager and `force`.
pub(super) fn digest(obj: &Value, manager: &str, force: bool) -> u128 {
    // The object's compact JSON is streamed into the hasher (no buffer per apply): the same
    // bytes a request sent as text in that form hashes to (see [`digest_text`]).
    struct Hashing(xxhash_rust::xxh3::Xxh3);
    impl std::io::Write for Hashing {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.update(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut h = Hashing(xxhash_rust::xxh3::Xxh3::new());
    // Writing into a hasher does not fail, nor does encoding a Value.
    let _ = serde_json::to_writer(&mut h, obj);
    finish(h.0, manager, force)
}

/// [`digest`] of a request that arrived as JSON text (`obj` parsed from it), without encoding
/// the object again. A text that is not in serde_json's compact form gives another digest than
/// its parsed object: a miss of the memo, never a wrong answer.
pub(super) fn digest_text(text: &[u8], manager: &str, force: bool) -> u128 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(text);
    finish(h, manager, force)
}

/// The request's options after its object's bytes.
fn finish(mut h: xxhash_rust::xxh3::Xxh3, manager: &str, force: bool) -> u128 {
    h.update(&[0, u8::from(force)]);
    h.update(manager.as_bytes());
    h.digest128()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stored(v: &Value) -> Arc<Stored> {
        Stored::of(v)
    }

    #[test]
    fn a_request_is_known_unchanged_only_on_the_same_allocation() {
        let memo = Memo::default();
        let obj = json!({"kind": "Widget", "metadata": {"name": "w"}});
        let a = stored(&obj);
        let d = digest(&obj, "m", false);
        assert!(!memo.unchanged(&a, d));
        memo.remember(&a, d);
        assert!(memo.unchanged(&a, d));
        // The same content written again is another object.
        assert!(!memo.unchanged(&stored(&obj), d));
        memo.forget_all();
        assert!(!memo.unchanged(&a, d));
    }

    #[test]
    fn the_digest_covers_the_object_the_manager_and_force() {
        let obj = json!({"spec": {"a": 1}});
        let d = digest(&obj, "m", false);
        assert_eq!(d, digest(&json!({"spec": {"a": 1}}), "m", false));
        assert_ne!(d, digest(&json!({"spec": {"a": 2}}), "m", false));
        assert_ne!(d, digest(&obj, "n", false));
        assert_ne!(d, digest(&obj, "m", true));
    }

    #[test]
    fn a_request_sent_as_compact_text_hashes_like_its_object_and_other_text_misses() {
        let obj = json!({"spec": {"a": 1}, "kind": "W"});
        let compact = serde_json::to_string(&obj).unwrap();
        assert_eq!(digest_text(compact.as_bytes(), "m", false), digest(&obj, "m", false));
        // The same request spelled otherwise only misses the memo.
        let spaced = serde_json::to_string_pretty(&obj).unwrap();
        assert_ne!(digest_text(spaced.as_bytes(), "m", false), digest(&obj, "m", false));
        assert_ne!(digest_text(compact.as_bytes(), "m", true), digest(&obj, "m", false));
    }
}

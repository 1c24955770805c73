//! The hook through which an embedded backend (the identifier allocators of `-r`) takes part
//! in store transactions: it sees every write and delete of the kinds it handles before they
//! are staged, may fill in fields (a claim's `status`) or refuse, may write other objects in the
//! same transaction, and keeps state of its own (allocations) that commits, persists and rolls
//! back with the transaction.
//!
//! Invariant: the store knows only this trait; what an admission decides and how it encodes
//! its records is its own business.

use serde_json::Value;

use super::Txn;
use crate::api::object::{GroupKind, ObjectKey};

/// One record of an admission's own sled tree: key, and the value (`None`: removed).
pub type Record = (Vec<u8>, Option<Vec<u8>>);

/// A participant in every transaction of the store it is installed in.
///
/// A store runs one writing transaction at a time (the engine thread), so an admission keeps
/// one journal: `mark`/`rollback_to` bracket a transaction (and [`Txn::check`]), `commit`
/// hands over what to persist.
pub trait Admission: Send + Sync {
    /// The name of the sled tree the admission's records live in.
    fn tree(&self) -> &'static str;

    /// Whether writes and deletes of this kind go through the admission.
    fn handles(&self, gk: &GroupKind) -> bool;

    /// Called with an object of a handled kind about to be staged (system metadata set: uid,
    /// creationTimestamp; `live` is the stored object, if any). It may change `obj`, write
    /// other objects through `txn`, or refuse with a message.
    fn on_write(
        &self,
        txn: &mut Txn<'_>,
        key: &ObjectKey,
        obj: &mut Value,
        live: Option<&Value>,
        manager: &str,
    ) -> Result<(), String>;

    /// Called before an object of a handled kind is deleted or marked deleting.
    fn on_delete(&self, txn: &mut Txn<'_>, key: &ObjectKey, live: &Value) -> Result<(), String>;

    /// A point of the admission's journal to roll back to.
    fn mark(&self) -> usize;

    /// Undoes everything since `mark`.
    fn rollback_to(&self, mark: usize);

    /// The records the changes since the last commit touched, in their final state.
    fn records(&self) -> Vec<Record>;

    /// The records were written: the journal starts over.
    fn committed(&self);

    /// Rebuilds the admission's state from its persisted records (at open). `uid_of` tells
    /// the uid of a stored object, so records of owners that are gone can be dropped; the
    /// records to drop are returned.
    fn restore(
        &self,
        records: &mut dyn Iterator<Item = (Vec<u8>, Vec<u8>)>,
        uid_of: &dyn Fn(&ObjectKey) -> Option<String>,
    ) -> Result<Vec<Vec<u8>>, String>;
}

//! The changes committed since someone last looked: one entry per object, however often it
//! changed.
//!
//! The engine dispatches committed changes to reconcilers, but only while a run is in progress;
//! between runs, loads and edits keep committing. An event queue would grow with every commit
//! for as long as nobody drains it; this set grows at most to the number of distinct objects.
//! Entries keep the order in which their objects first changed (deterministic dispatch), the
//! kind of the latest change, and the owner references of every state the object had (an owner
//! that lost its child must still hear about it). *Invariant:* knows events and keys only.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::{Event, EventType};
use crate::api::object::ObjectKey;

/// A shared handle on the set; the store records into it, the engine drains it.
#[derive(Clone, Default)]
pub struct Changes {
    inner: Arc<Mutex<Set>>,
}

#[derive(Default)]
struct Set {
    events: Vec<Event>,
    index: HashMap<ObjectKey, usize>,
}

impl Changes {
    /// Adds the events of one commit.
    pub(super) fn record(&self, events: &[Event]) {
        let mut set = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        for ev in events {
            match set.index.get(&ev.key).copied() {
                Some(i) => {
                    let merged = &mut set.events[i];
                    merged.kind = match (merged.kind, ev.kind) {
                        // Created and changed again since the last look: still new to a reader.
                        (EventType::Added, EventType::Modified) => EventType::Added,
                        (_, kind) => kind,
                    };
                    for owner in &ev.owners {
                        if !merged.owners.contains(owner) {
                            merged.owners.push(owner.clone());
                        }
                    }
                }
                None => {
                    let i = set.events.len();
                    set.index.insert(ev.key.clone(), i);
                    set.events.push(ev.clone());
                }
            }
        }
    }

    /// Takes every change recorded so far, in the order the objects first changed.
    pub fn drain(&self) -> Vec<Event> {
        let mut set = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        set.index.clear();
        std::mem::take(&mut set.events)
    }

    /// How many objects changed since the last drain.
    pub fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::object::{GroupKind, OwnerRef};

    fn ev(kind: EventType, name: &str, owner: Option<&str>) -> Event {
        Event {
            kind,
            key: ObjectKey::new(&GroupKind::new("g", "K"), "ns", name),
            owners: owner
                .map(|o| OwnerRef {
                    group: "g".into(),
                    kind: "O".into(),
                    name: o.into(),
                    uid: format!("u-{o}"),
                    controller: true,
                })
                .into_iter()
                .collect(),
        }
    }

    #[test]
    fn one_entry_per_object_in_first_change_order_with_every_owner() {
        let c = Changes::default();
        c.record(&[ev(EventType::Added, "a", Some("x")), ev(EventType::Added, "b", None)]);
        for _ in 0..1000 {
            c.record(&[ev(EventType::Modified, "a", Some("y"))]);
        }
        c.record(&[ev(EventType::Deleted, "b", None)]);
        assert_eq!(c.len(), 2, "bounded by the objects, not the commits");
        let drained = c.drain();
        assert_eq!(drained[0].key.name, "a");
        assert_eq!(drained[0].kind, EventType::Added);
        let owners: Vec<_> = drained[0].owners.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(owners, ["x", "y"], "the old owner hears about its lost child");
        assert_eq!((drained[1].key.name.as_str(), drained[1].kind), ("b", EventType::Deleted));
        assert!(c.is_empty());
        c.record(&[ev(EventType::Modified, "a", None)]);
        assert_eq!(c.drain()[0].kind, EventType::Modified);
    }
}

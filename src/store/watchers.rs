//! Subscribers to committed changes of one kind (`get -w`): each commit hands every matching
//! event to each subscriber's bounded queue, without waiting. A subscriber whose queue is full
//! has fallen behind: it is dropped and told so (its flag is raised and its channel closes),
//! instead of being buffered without bound or holding up the engine.
//!
//! Architecture invariant: fan-out only; what a watcher does with the events is not known here.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam_channel::{Receiver, Sender, TrySendError};

use super::{EventType, Stored};
use crate::api::object::{GroupKind, ObjectKey};

/// How many events a subscriber may have waiting before it is dropped.
pub const QUEUE: usize = 65_536;

/// One change a subscriber receives.
#[derive(Debug, Clone)]
pub struct WatchItem {
    pub kind: EventType,
    pub key: ObjectKey,
    /// The object after the change; the last stored state for a deletion, when known.
    pub object: Option<Arc<Stored>>,
}

struct Sub {
    gk: GroupKind,
    namespace: Option<String>,
    tx: Sender<WatchItem>,
    behind: Arc<AtomicBool>,
}

/// The subscribers of a store.
#[derive(Clone, Default)]
pub struct Watchers {
    subs: Arc<Mutex<Vec<Sub>>>,
}

/// A subscription: the events, and whether it was dropped for falling behind.
pub struct Subscription {
    pub events: Receiver<WatchItem>,
    behind: Arc<AtomicBool>,
}

impl Subscription {
    /// Whether the subscriber was dropped because its queue was full.
    pub fn fell_behind(&self) -> bool {
        self.behind.load(Ordering::SeqCst)
    }
}

impl Watchers {
    pub fn subscribe(&self, gk: GroupKind, namespace: Option<String>) -> Subscription {
        let (tx, rx) = crossbeam_channel::bounded(QUEUE);
        let behind = Arc::new(AtomicBool::new(false));
        self.lock().push(Sub { gk, namespace, tx, behind: behind.clone() });
        Subscription { events: rx, behind }
    }

    /// Whether anyone watches (a commit then skips the fan-out entirely).
    pub(super) fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Sub>> {
        self.subs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands one commit's changes to the subscribers; `object_of` finds each key's object.
    pub(super) fn publish(
        &self,
        events: &[(EventType, ObjectKey)],
        object_of: impl Fn(&ObjectKey) -> Option<Arc<Stored>>,
    ) {
        let mut subs = self.lock();
        if subs.is_empty() {
            return;
        }
        subs.retain(|s| {
            for (kind, key) in events {
                if key.group != s.gk.group || key.kind != s.gk.kind {
                    continue;
                }
                if s.namespace.as_deref().is_some_and(|ns| ns != key.namespace) {
                    continue;
                }
                let item = WatchItem { kind: *kind, key: key.clone(), object: object_of(key) };
                match s.tx.try_send(item) {
                    Ok(()) => {}
                    Err(TrySendError::Full(_)) => {
                        s.behind.store(true, Ordering::SeqCst);
                        return false;
                    }
                    Err(TrySendError::Disconnected(_)) => return false,
                }
            }
            true
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subscriber_gets_its_kind_and_one_that_falls_behind_is_dropped() {
        let w = Watchers::default();
        let gk = GroupKind::new("g", "K");
        let mine = w.subscribe(gk.clone(), Some("a".into()));
        let key =
            |ns: &str, n: &str| ObjectKey { group: "g".into(), kind: "K".into(), namespace: ns.into(), name: n.into() };
        let other = ObjectKey { kind: "Other".into(), ..key("a", "x") };
        w.publish(
            &[(EventType::Added, key("a", "x")), (EventType::Added, key("b", "y")), (EventType::Added, other)],
            |_| None,
        );
        let got: Vec<String> = mine.events.try_iter().map(|i| i.key.name).collect();
        assert_eq!(got, ["x"]);
        let slow = w.subscribe(gk, None);
        for i in 0..=QUEUE {
            w.publish(&[(EventType::Modified, key("a", &i.to_string()))], |_| None);
        }
        assert!(slow.fell_behind());
        assert_eq!(slow.events.try_iter().count(), QUEUE, "what was queued is still there, then the end");
        assert!(slow.events.recv().is_err(), "dropped");
    }
}

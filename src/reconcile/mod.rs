//! Reconcilers: their configuration, the client they talk to, and the runtimes that run them.
//!
//! A reconciler is level-triggered: it gets the current for-object and a [`Client`] (a read and
//! write view of the store that the engine provides) and returns an [`Outcome`]. It never sees
//! the event that triggered it. Runtimes (Starlark, Go templates and Jinja) implement
//! [`Runtime`]; they are compiled once per load and shared across reconciles.
//!
//! Architecture invariant: nothing here touches sled, files or git. Everything a reconciler
//! reads or writes goes through [`Client`], which the engine implements over a store
//! transaction, so a reconcile's writes commit together or not at all.

pub mod children;
pub mod config;
#[cfg(test)]
pub(crate) mod fake_client;
pub mod limits;
pub mod offline;
pub mod selector;
pub mod starlark;
pub mod template;
pub mod worker;

use std::time::Duration;

use serde_json::Value;

pub use config::{Lang, ReconcilerConfig, ResourceRef};
pub use limits::{Budget, Exhausted, Interrupt, Limits};
pub use selector::Selector;
pub use starlark::Libraries;

/// The message of a caught panic (a reconciler's panic becomes its reconcile's error).
pub fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Compiles one reconciler's code for its language, with the project's Starlark `libraries`.
pub fn compile(
    cfg: std::sync::Arc<ReconcilerConfig>,
    libraries: &std::sync::Arc<Libraries>,
) -> Result<Box<dyn Runtime>, String> {
    match cfg.lang {
        Lang::Starlark => {
            starlark::StarlarkRuntime::compile(cfg, libraries.clone()).map(|r| Box::new(r) as Box<dyn Runtime>)
        }
        Lang::GoTemplate | Lang::Jinja => template::compile(cfg).map(|r| Box::new(r) as Box<dyn Runtime>),
    }
}

/// What one reconcile asks of the engine.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Done until something changes.
    Done,
    /// Run again: after `after` if given, else with rate-limited backoff. `message` says why.
    Requeue { after: Option<Duration>, message: String },
    /// The reconcile failed; a run ends with this error.
    Error(String),
}

/// Errors the client returns to a runtime. `fatal` errors end the reconcile with an error;
/// others are reported to the script, which may requeue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientError {
    pub message: String,
    pub fatal: bool,
}

impl ClientError {
    pub fn fatal(message: impl Into<String>) -> Self {
        ClientError { message: message.into(), fatal: true }
    }

    pub fn transient(message: impl Into<String>) -> Self {
        ClientError { message: message.into(), fatal: false }
    }
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// The store as a reconciler sees it. Objects are full KRM values (with `managedFields`).
pub trait Client {
    /// One object, or `None` when it does not exist.
    fn get(&mut self, api_version: &str, kind: &str, namespace: &str, name: &str)
        -> Result<Option<Value>, ClientError>;

    /// Objects of a kind (every namespace) that match `selector`, in key order.
    fn list(&mut self, api_version: &str, kind: &str, selector: &Selector) -> Result<Vec<Value>, ClientError>;

    /// Server-side applies `obj` as `manager` and returns the stored result (or the object that
    /// was deleted, when the apply removed the last finalizer of a deleting object).
    fn apply(&mut self, obj: &Value, manager: &str) -> Result<Value, ClientError>;

    /// [`Client::apply`] when the caller does not need the result (children), which spares
    /// reading it back.
    fn apply_unread(&mut self, obj: &Value, manager: &str) -> Result<(), ClientError> {
        self.apply(obj, manager).map(|_| ())
    }

    /// [`Client::apply_unread`] of an object that arrived as JSON `text` (`obj` is its parse),
    /// for a client that can use the text as it came.
    fn apply_unread_sent(&mut self, obj: &Value, _text: &str, manager: &str) -> Result<(), ClientError> {
        self.apply_unread(obj, manager)
    }

    /// Deletes an object (finalizers hold it); a missing object is not an error.
    fn delete(&mut self, api_version: &str, kind: &str, namespace: &str, name: &str) -> Result<(), ClientError>;

    /// Objects whose owner references name `owner_uid`, limited to `kinds`. The default lists
    /// each kind; stores with an owner index answer without scanning.
    fn children_of(&mut self, owner_uid: &str, kinds: &[ResourceRef]) -> Result<Vec<Value>, ClientError> {
        let mut out = Vec::new();
        for k in kinds {
            for obj in self.list(&k.api_version(), &k.kind, &Selector::everything())? {
                if crate::api::object::owner_references(&obj).iter().any(|r| r.uid == owner_uid) {
                    out.push(obj);
                }
            }
        }
        Ok(out)
    }

    /// The keys of [`Client::children_of`]: stores that can answer without reading the objects
    /// override it.
    fn child_keys_of(
        &mut self,
        owner_uid: &str,
        kinds: &[ResourceRef],
    ) -> Result<Vec<crate::api::object::ObjectKey>, ClientError> {
        Ok(self.children_of(owner_uid, kinds)?.iter().filter_map(crate::api::object::ObjectKey::of).collect())
    }

    /// Makes every call made so far and reports the first failure among them. Clients may
    /// defer [`Client::apply_unread`] and [`Client::delete_key`] (their results are not needed)
    /// until the next call that returns something, or until this; calls still deferred when a
    /// reconcile returns are made right after it, in order, and the first failure replaces its
    /// outcome as a failed call would have (fatal: an error; otherwise a requeue).
    fn flush(&mut self) -> Result<(), ClientError> {
        Ok(())
    }

    /// Deletes the object `key` (finalizers hold it); a missing object is not an error.
    fn delete_key(&mut self, key: &crate::api::object::ObjectKey) -> Result<(), ClientError> {
        // The version does not matter for finding an object: its group and kind do.
        let api_version = crate::api::object::api_version(&key.group, "v1");
        self.delete(&api_version, &key.kind, &key.namespace, &key.name)
    }

    /// The RFC 3339 time of this reconcile (for condition transition times).
    fn now(&self) -> String;

    /// Called by a runtime once its own computation is over and only the store work of its
    /// result remains (the deferred calls and the commit): the moment a client that knows the
    /// next reconcile may start it ahead with [`Runtime::start_ahead`]. Most clients do nothing.
    fn ahead(&mut self) {}
}

/// How many queued reconciles a client offers to start ahead at once (the first ones of its
/// queue); a runtime starts those it has room for. The worker's runtime tops its queue up only
/// when at most one is left, so it is woken once per two reconciles and always has the next one.
pub const AHEAD_DEPTH: usize = 3;

/// The inputs of a reconcile started ahead: its for-object's key and the object as stored
/// (compact JSON), the keys of its children of the reconciler's `owns` kinds (sorted; `None`
/// without `owns`), the run's deadline, and whether it comes first in its offer.
#[derive(Debug, Clone)]
pub struct AheadInput {
    pub key: crate::api::object::ObjectKey,
    pub object: String,
    pub children: Option<Vec<crate::api::object::ObjectKey>>,
    pub run_deadline: Option<std::time::Instant>,
    /// The first of the inputs one [`Client::ahead`] offers (a runtime decides on it whether to
    /// take them).
    pub first: bool,
}

/// The object a reconcile is for: parsed already, or as the store holds it (compact JSON and
/// its uid), parsed at the first [`ForObject::value`]. A runtime that sends the object elsewhere
/// sends the stored text as is, and the server neither parses it nor prints it again.
pub enum ForObject {
    Parsed(std::sync::Arc<Value>),
    Stored { json: Vec<u8>, uid: String, parsed: std::cell::OnceCell<Value> },
}

impl ForObject {
    /// The object as stored (the compact JSON the store wrote, which always parses).
    pub fn stored(json: Vec<u8>, uid: String) -> ForObject {
        ForObject::Stored { json, uid, parsed: std::cell::OnceCell::new() }
    }

    pub fn value(&self) -> &Value {
        match self {
            ForObject::Parsed(v) => v,
            ForObject::Stored { json, parsed, .. } => {
                parsed.get_or_init(|| serde_json::from_slice(json).unwrap_or(Value::Null))
            }
        }
    }

    /// The object as compact JSON.
    pub fn text(&self) -> std::borrow::Cow<'_, str> {
        match self {
            ForObject::Parsed(v) => v.to_string().into(),
            ForObject::Stored { json, .. } => String::from_utf8_lossy(json),
        }
    }

    pub fn uid(&self) -> Option<&str> {
        match self {
            ForObject::Parsed(v) => crate::api::object::uid(v),
            ForObject::Stored { uid, .. } => Some(uid.as_str()).filter(|u| !u.is_empty()),
        }
    }
}

/// A compiled reconciler, ready to run any number of times (from one thread at a time).
pub trait Runtime: Send {
    /// Reconciles `object` (the current for-object, with `managedFields`), stopping with an
    /// error when `budget` runs out.
    fn reconcile(&self, object: &Value, client: &mut dyn Client, budget: &Budget<'_>) -> Outcome;

    /// [`Runtime::reconcile`] of the object as the engine has it: runtimes in the calling thread
    /// parse it (the default), a runtime that runs elsewhere ([`Runtime::runs_ahead`]) takes the
    /// stored text as is.
    fn reconcile_for(&self, object: &ForObject, client: &mut dyn Client, budget: &Budget<'_>) -> Outcome {
        self.reconcile(object.value(), client, budget)
    }

    /// Whether this runtime can start a reconcile ahead (it runs somewhere else than the
    /// calling thread, so the two overlap, and takes its for-object as text).
    fn runs_ahead(&self) -> bool {
        false
    }

    /// Starts reconciling `input` while the caller finishes the reconcile before it. The next
    /// [`Runtime::reconcile`] uses that result only if its own inputs are the same (for-object,
    /// children keys and clock): the reconcile then computed exactly what it would compute now, and
    /// its store calls are answered then, from the state of that moment. Otherwise the
    /// result is thrown away, unseen. A runtime ignores an input it has started already (the
    /// same reconciler and key) or has no room for. Runtimes that do not run ahead ignore this.
    fn start_ahead(&self, _input: AheadInput) {}
}

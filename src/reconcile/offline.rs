//! A client with no store behind it, for running one reconcile offline (`choreo dev render`):
//! the for-object is the only object there is, every apply is recorded and answered as if the
//! store had accepted it, deletes are recorded and otherwise ignored.
//!
//! Invariant: no I/O; what the reconcile did is read back from the recorded calls.

use serde_json::Value;

use super::{Client, ClientError, Selector};
use crate::api::object::{self, ObjectKey};

/// What one offline reconcile wrote.
#[derive(Debug, Default)]
pub struct OfflineClient {
    for_object: Value,
    /// Objects applied, in order; a later apply of the same object replaces the earlier one.
    pub applied: Vec<(ObjectKey, Value)>,
    /// Objects deleted.
    pub deleted: Vec<ObjectKey>,
    now: String,
}

impl OfflineClient {
    pub fn new(for_object: Value, now: String) -> OfflineClient {
        OfflineClient { for_object, applied: Vec::new(), deleted: Vec::new(), now }
    }

    /// The objects applied other than the for-object: the children.
    pub fn children(&self) -> Vec<&Value> {
        let own = ObjectKey::of(&self.for_object);
        self.applied.iter().filter(|(k, _)| Some(k) != own.as_ref()).map(|(_, v)| v).collect()
    }

    fn is_for_object(&self, kind: &str, namespace: &str, name: &str) -> bool {
        self.for_object.get("kind").and_then(Value::as_str) == Some(kind)
            && object::namespace(&self.for_object) == namespace
            && object::name(&self.for_object) == Some(name)
    }
}

impl Client for OfflineClient {
    fn get(
        &mut self,
        _api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Value>, ClientError> {
        if self.is_for_object(kind, namespace, name) {
            return Ok(Some(self.for_object.clone()));
        }
        Ok(self
            .applied
            .iter()
            .find(|(k, _)| k.kind == kind && k.namespace == namespace && k.name == name)
            .map(|(_, v)| v.clone()))
    }

    fn list(&mut self, _api_version: &str, kind: &str, selector: &Selector) -> Result<Vec<Value>, ClientError> {
        let mut out: Vec<Value> = Vec::new();
        if self.for_object.get("kind").and_then(Value::as_str) == Some(kind) && selector.matches(&self.for_object) {
            out.push(self.for_object.clone());
        }
        out.extend(self.applied.iter().filter(|(k, v)| k.kind == kind && selector.matches(v)).map(|(_, v)| v.clone()));
        Ok(out)
    }

    fn apply(&mut self, obj: &Value, _manager: &str) -> Result<Value, ClientError> {
        let key = ObjectKey::of(obj)
            .ok_or_else(|| ClientError::fatal("an object needs apiVersion, kind and metadata.name"))?;
        match self.applied.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => *v = obj.clone(),
            None => self.applied.push((key, obj.clone())),
        }
        Ok(obj.clone())
    }

    fn delete(&mut self, api_version: &str, kind: &str, namespace: &str, name: &str) -> Result<(), ClientError> {
        let obj = serde_json::json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": name, "namespace": namespace}});
        if let Some(key) = ObjectKey::of(&obj) {
            self.deleted.push(key);
        }
        Ok(())
    }

    fn children_of(&mut self, _owner_uid: &str, _kinds: &[super::ResourceRef]) -> Result<Vec<Value>, ClientError> {
        Ok(Vec::new())
    }

    fn now(&self) -> String {
        self.now.clone()
    }
}

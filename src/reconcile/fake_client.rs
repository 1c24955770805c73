//! A store in a map for the runtimes' unit tests: it records every call.

use std::collections::BTreeMap;

use serde_json::{json, Value as Json};

use crate::api::object::{self, ObjectKey};
use crate::reconcile::{Client, ClientError, Selector};

/// The time every fake reconcile runs at.
pub(crate) const NOW: &str = "2024-10-12T10:00:00Z";

/// A store in a map: apply replaces the object (keeping uid and deletionTimestamp, which only
/// the server sets), delete marks objects with finalizers and removes the rest.
#[derive(Default)]
pub(crate) struct FakeClient {
    pub(crate) objects: BTreeMap<ObjectKey, Json>,
    pub(crate) calls: Vec<String>,
    pub(crate) next_uid: u32,
    pub(crate) fail_apply: Option<ClientError>,
}

impl FakeClient {
    pub(crate) fn with(objects: &[Json]) -> FakeClient {
        let mut c = FakeClient::default();
        for o in objects {
            c.objects.insert(ObjectKey::of(o).expect("test object has a key"), o.clone());
        }
        c
    }

    pub(crate) fn object(&self, kind: &str, namespace: &str, name: &str) -> Option<&Json> {
        self.objects
            .values()
            .find(|o| o["kind"] == kind && object::namespace(o) == namespace && object::name(o) == Some(name))
    }

    pub(crate) fn writes(&self) -> Vec<&str> {
        self.calls.iter().map(String::as_str).filter(|c| !c.starts_with("get") && !c.starts_with("list")).collect()
    }
}

impl Client for FakeClient {
    fn get(
        &mut self,
        _api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Json>, ClientError> {
        self.calls.push(format!("get {kind} {namespace}/{name}"));
        Ok(self.object(kind, namespace, name).cloned())
    }

    fn list(&mut self, api_version: &str, kind: &str, selector: &Selector) -> Result<Vec<Json>, ClientError> {
        self.calls.push(format!("list {kind}"));
        Ok(self
            .objects
            .values()
            .filter(|o| o["apiVersion"] == api_version && o["kind"] == kind && selector.matches(o))
            .cloned()
            .collect())
    }

    fn apply(&mut self, obj: &Json, manager: &str) -> Result<Json, ClientError> {
        let key = ObjectKey::of(obj).ok_or_else(|| ClientError::fatal("no key"))?;
        self.calls.push(format!("apply {key} as {manager}"));
        if let Some(e) = &self.fail_apply {
            return Err(e.clone());
        }
        let mut stored = obj.clone();
        let old = self.objects.get(&key).cloned();
        let meta = object::metadata_mut(&mut stored).ok_or_else(|| ClientError::fatal("no metadata"))?;
        match old.as_ref().and_then(object::metadata) {
            Some(old_meta) => {
                for f in ["uid", "deletionTimestamp"] {
                    if let Some(v) = old_meta.get(f) {
                        meta.insert(f.into(), v.clone());
                    }
                }
            }
            None => {
                self.next_uid += 1;
                meta.insert("uid".into(), json!(format!("uid-{}", self.next_uid)));
            }
        }
        // Which managers applied the object (the server keeps their fields in managedFields).
        let mut managers: Vec<String> = old
            .as_ref()
            .and_then(|o| o["metadata"]["managedFields"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|e| e["manager"].as_str().map(str::to_string))
            .collect();
        if !managers.iter().any(|m| m == manager) {
            managers.push(manager.to_string());
        }
        if let Some(meta) = object::metadata_mut(&mut stored) {
            let entries = managers.iter().map(|m| json!({"manager": m, "operation": "Apply"})).collect();
            meta.insert("managedFields".into(), Json::Array(entries));
        }
        if object::deletion_timestamp(&stored).is_some() && object::finalizers(&stored).is_empty() {
            self.objects.remove(&key);
        } else {
            self.objects.insert(key, stored.clone());
        }
        Ok(stored)
    }

    fn delete(&mut self, api_version: &str, kind: &str, namespace: &str, name: &str) -> Result<(), ClientError> {
        self.calls.push(format!("delete {kind} {namespace}/{name}"));
        let key = ObjectKey::of(&json!({"apiVersion": api_version, "kind": kind,
            "metadata": {"name": name, "namespace": namespace}}))
        .ok_or_else(|| ClientError::fatal("no key"))?;
        let holds = self.objects.get(&key).is_some_and(|o| !object::finalizers(o).is_empty());
        if holds {
            if let Some(o) = self.objects.get_mut(&key) {
                o["metadata"]["deletionTimestamp"] = json!(NOW);
            }
        } else {
            self.objects.remove(&key);
        }
        Ok(())
    }

    fn now(&self) -> String {
        NOW.to_string()
    }
}

//! What every runtime does around the code: children with owner references, garbage
//! collection of children no longer produced, finalizers and the reconciler's condition.
//!
//! Semantics (upstream choreo's `resources` package, with its leaks fixed): a child gets one
//! controller owner reference to the for-object (replacing any the code wrote); applying the
//! children first deletes every existing child of the `owns` kinds that is owned by the
//! for-object (uid match), was applied by this reconciler (its field manager) and was not
//! produced this time, then applies the new ones in creation order as the reconciler's field
//! manager.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use super::{Client, ClientError, Outcome, ReconcilerConfig};
use crate::api::object::{self, ObjectKey};

/// The children one reconcile produces.
pub struct Children {
    owner_ref: Value,
    owner_uid: String,
    owner_namespace: String,
    /// Children in creation order; a child produced again leaves a hole where it was.
    created: Vec<Option<Value>>,
    /// Child → its slot in `created`, so recording a child costs the same at the 10,000th.
    slots: HashMap<ObjectKey, usize>,
}

impl Children {
    /// Starts an empty inventory for the for-object `owner`.
    pub fn new(owner: &Value) -> Children {
        let uid = object::uid(owner).unwrap_or("").to_string();
        Children {
            owner_ref: json!({
                "apiVersion": owner.get("apiVersion").cloned().unwrap_or(Value::Null),
                "kind": owner.get("kind").cloned().unwrap_or(Value::Null),
                "name": object::name(owner).unwrap_or(""),
                "uid": uid,
                "controller": true,
            }),
            owner_uid: uid,
            owner_namespace: object::namespace(owner).to_string(),
            created: Vec::new(),
            slots: HashMap::new(),
        }
    }

    /// Records a child: stamps the controller owner reference and returns the child as recorded.
    pub fn create(&mut self, mut child: Value) -> Result<Value, ClientError> {
        let meta = object::metadata_mut(&mut child)
            .ok_or_else(|| ClientError::fatal("a child must be an object with metadata"))?;
        meta.insert("ownerReferences".into(), Value::Array(vec![self.owner_ref.clone()]));
        if meta.get("namespace").is_none() && !self.owner_namespace.is_empty() {
            // Children of a namespaced owner live in its namespace unless the code says otherwise;
            // cluster-scoped kinds drop it again when they are applied.
            meta.insert("namespace".into(), Value::String(self.owner_namespace.clone()));
        }
        let key = child_key(&child)?;
        // Producing the same child twice in one reconcile keeps the last version, in the place
        // of the last creation.
        if let Some(old) = self.slots.insert(key, self.created.len()) {
            self.created[old] = None;
        }
        self.created.push(Some(child.clone()));
        Ok(child)
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Deletes stale children, then applies the recorded ones as `cfg.name`. The client may
    /// defer those writes: a caller that must know now whether they worked calls
    /// [`Client::flush`]; otherwise the next call that returns something reports their failure.
    pub fn apply(&mut self, cfg: &ReconcilerConfig, client: &mut dyn Client) -> Result<(), ClientError> {
        if !self.owner_uid.is_empty() {
            for key in client.child_keys_of(&self.owner_uid, &cfg.owns)? {
                if !self.slots.contains_key(&key) && self.applied_by(client, &key, &cfg.name)? {
                    client.delete_key(&key)?;
                }
            }
        }
        for child in self.created.iter().flatten() {
            client.apply_unread(child, &cfg.name)?;
        }
        Ok(())
    }

    /// Whether `manager` applied the child `key`: a stale child is only garbage to the
    /// reconciler that produced it. Two reconcilers may own the same kind for the same
    /// for-object (a device config rendered twice, in two formats); upstream deleted each
    /// other's children there, forever.
    fn applied_by(&self, client: &mut dyn Client, key: &ObjectKey, manager: &str) -> Result<bool, ClientError> {
        let api_version = object::api_version(&key.group, "v1");
        let Some(child) = client.get(&api_version, &key.kind, &key.namespace, &key.name)? else {
            return Ok(false);
        };
        let managers = child
            .get("metadata")
            .and_then(|m| m.get("managedFields"))
            .and_then(Value::as_array)
            .map(|list| list.iter().filter_map(|e| e.get("manager").and_then(Value::as_str)).collect::<Vec<_>>())
            .unwrap_or_default();
        // A child without field managers (not written by server-side apply) is left to its
        // owner's deletion.
        Ok(managers.contains(&manager))
    }

    /// Deletes every existing child (the for-object is going away).
    pub fn delete_all(&self, cfg: &ReconcilerConfig, client: &mut dyn Client) -> Result<(), ClientError> {
        for child in self.existing(cfg, client)? {
            delete_object(client, &child)?;
        }
        Ok(())
    }

    /// Children of the `owns` kinds that the for-object owns (by uid).
    fn existing(&self, cfg: &ReconcilerConfig, client: &mut dyn Client) -> Result<Vec<Value>, ClientError> {
        if self.owner_uid.is_empty() {
            return Ok(Vec::new());
        }
        client.children_of(&self.owner_uid, &cfg.owns)
    }
}

fn child_key(child: &Value) -> Result<ObjectKey, ClientError> {
    ObjectKey::of(child).ok_or_else(|| ClientError::fatal("a child needs apiVersion, kind and metadata.name"))
}

fn delete_object(client: &mut dyn Client, obj: &Value) -> Result<(), ClientError> {
    let api_version = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
    let name = object::name(obj).unwrap_or("");
    client.delete(api_version, kind, object::namespace(obj), name)
}

/// choreo's part of a deletion: delete the for-object's children, then let go of it by
/// dropping the reconciler's finalizer.
pub fn finish_delete(cfg: &ReconcilerConfig, live: &Value, client: &mut dyn Client) -> Outcome {
    if let Err(e) = Children::new(live).delete_all(cfg, client) {
        return client_outcome(e);
    }
    if !object::finalizers(live).contains(&cfg.name.as_str()) {
        return Outcome::Done;
    }
    let applied = intent(live, &cfg.name).and_then(|mut intent| {
        remove_finalizer(&mut intent, &cfg.name);
        client.apply(&intent, &cfg.name)
    });
    match applied {
        Ok(_) => Outcome::Done,
        // Gone already: exactly what the deletion wanted.
        Err(e) if e.message.to_ascii_lowercase().contains("not found") => Outcome::Done,
        Err(e) => client_outcome(e),
    }
}

/// Applies the reconciler's `intent` for its for-object with its finalizer and, when it has a
/// `conditionType`, that condition set to ready. The result is not read back: a deferring
/// client sends it with the reconcile's end, and its failure still becomes the outcome (see
/// [`Client::flush`]).
pub fn apply_with_marks(
    cfg: &ReconcilerConfig,
    mut intent: Value,
    live: &Value,
    client: &mut dyn Client,
) -> Result<(), ClientError> {
    add_finalizer(&mut intent, &cfg.name);
    if let Some(condition_type) = &cfg.condition_type {
        let now = client.now();
        set_condition(&mut intent, condition_type, "", Some(live), &now);
    }
    client.apply_unread(&intent, &cfg.name)
}

/// Whether `live` carries the marks [`apply_with_marks`] would put there: the reconciler's
/// finalizer and, with a `conditionType`, that condition ready. A runtime with nothing else to
/// apply to its for-object then skips the apply (and the merge it costs) altogether.
pub fn marks_in_place(cfg: &ReconcilerConfig, live: &Value) -> bool {
    if !object::finalizers(live).contains(&cfg.name.as_str()) {
        return false;
    }
    let Some(condition_type) = &cfg.condition_type else { return true };
    condition(live, condition_type).is_some_and(|c| condition_says(c, ""))
}

/// Records a failed reconcile on the reconciler's condition, when it has one (best effort: the
/// failure itself is what gets reported).
pub fn record_failure(cfg: &ReconcilerConfig, live: &Value, client: &mut dyn Client, message: &str) {
    let Some(condition_type) = &cfg.condition_type else { return };
    let applied = intent(live, &cfg.name).and_then(|mut intent| {
        let now = client.now();
        set_condition(&mut intent, condition_type, message, Some(live), &now);
        client.apply(&intent, &cfg.name)
    });
    if let Err(e) = applied {
        log::debug!(
            "{}: recording the failure on {}: {e}",
            cfg.name,
            ObjectKey::of(live).map_or_else(|| "the object".to_string(), |k| k.to_string())
        );
    }
}

/// A failed client call as the reconcile's outcome: fatal errors fail it, others requeue it.
pub fn client_outcome(e: ClientError) -> Outcome {
    if e.fatal {
        Outcome::Error(e.message)
    } else {
        Outcome::Requeue { after: None, message: e.message }
    }
}

/// Sets the reconciler's condition on `obj`, reducing `status.conditions` to that one type (the
/// other reconcilers' conditions survive through server-side apply, which merges by type):
/// `Ready`/`True` with an empty message on success, `Failed`/`False` with the message otherwise.
/// `lastTransitionTime` changes only when the condition does, compared with `live`.
pub fn set_condition(obj: &mut Value, condition_type: &str, message: &str, live: Option<&Value>, now: &str) {
    let (status, reason) = condition_status(message);
    let previous = live.and_then(|l| condition(l, condition_type));
    let unchanged = previous.is_some_and(|p| condition_says(p, message));
    let time = match (unchanged, previous.and_then(|p| p.get("lastTransitionTime"))) {
        (true, Some(t)) => t.clone(),
        _ => Value::String(now.to_string()),
    };
    let condition = json!({
        "type": condition_type,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": time,
    });
    let Some(map) = obj.as_object_mut() else { return };
    let status_v = map.entry("status").or_insert_with(|| Value::Object(Map::new()));
    if !status_v.is_object() {
        *status_v = Value::Object(Map::new());
    }
    if let Some(st) = status_v.as_object_mut() {
        st.insert("conditions".into(), Value::Array(vec![condition]));
    }
}

/// The status and reason of the reconciler's condition: ready without a message, failed with one.
fn condition_status(message: &str) -> (&'static str, &'static str) {
    if message.is_empty() {
        ("True", "Ready")
    } else {
        ("False", "Failed")
    }
}

/// The condition of `condition_type` on `obj`, if any.
fn condition<'a>(obj: &'a Value, condition_type: &str) -> Option<&'a Value> {
    obj.get("status")?
        .get("conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(condition_type))
}

/// Whether `condition` is what [`set_condition`] writes for `message`.
fn condition_says(condition: &Value, message: &str) -> bool {
    let (status, reason) = condition_status(message);
    condition.get("status").and_then(Value::as_str) == Some(status)
        && condition.get("reason").and_then(Value::as_str) == Some(reason)
        && condition.get("message").and_then(Value::as_str).unwrap_or("") == message
}

/// Adds `finalizer` to `metadata.finalizers` if missing.
pub fn add_finalizer(obj: &mut Value, finalizer: &str) {
    if let Some(meta) = object::metadata_mut(obj) {
        let list = meta.entry("finalizers").or_insert_with(|| Value::Array(Vec::new()));
        if !list.is_array() {
            *list = Value::Array(Vec::new());
        }
        if let Some(list) = list.as_array_mut() {
            if !list.iter().any(|f| f.as_str() == Some(finalizer)) {
                list.push(Value::String(finalizer.to_string()));
            }
        }
    }
}

/// Removes `finalizer` from `metadata.finalizers`.
pub fn remove_finalizer(obj: &mut Value, finalizer: &str) {
    if let Some(list) = object::metadata_mut(obj).and_then(|m| m.get_mut("finalizers")).and_then(Value::as_array_mut) {
        list.retain(|f| f.as_str() != Some(finalizer));
    }
}

/// The reconciler's intent for its for-object: `obj` without the fields only other managers own
/// (so it never takes over or shares the input file's fields) and without server-owned metadata.
pub fn intent(obj: &Value, manager: &str) -> Result<Value, ClientError> {
    let mut out = crate::api::apply::prune_foreign(obj, manager).map_err(|e| ClientError::fatal(e.to_string()))?;
    crate::api::meta::strip_system_fields(&mut out);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn condition_keeps_its_time_until_it_changes() {
        let mut obj = json!({"status": {"conditions": [{"type": "Other", "status": "True"}]}});
        set_condition(&mut obj, "Ready", "", None, "t1");
        assert_eq!(
            obj["status"]["conditions"],
            json!([{"type": "Ready", "status": "True", "reason": "Ready", "message": "", "lastTransitionTime": "t1"}])
        );
        let live = obj.clone();
        let mut again = json!({});
        set_condition(&mut again, "Ready", "", Some(&live), "t2");
        assert_eq!(again["status"]["conditions"][0]["lastTransitionTime"], "t1");
        set_condition(&mut again, "Ready", "boom", Some(&live), "t3");
        assert_eq!(again["status"]["conditions"][0]["status"], "False");
        assert_eq!(again["status"]["conditions"][0]["lastTransitionTime"], "t3");
    }

    #[test]
    fn finalizers_are_a_set() {
        let mut obj = json!({"metadata": {"name": "a"}});
        add_finalizer(&mut obj, "x");
        add_finalizer(&mut obj, "x");
        add_finalizer(&mut obj, "y");
        assert_eq!(obj["metadata"]["finalizers"], json!(["x", "y"]));
        remove_finalizer(&mut obj, "x");
        assert_eq!(obj["metadata"]["finalizers"], json!(["y"]));
    }

    #[test]
    fn created_children_get_one_controller_reference() {
        let owner = json!({"apiVersion": "example.com/v1alpha1", "kind": "HelloWorld",
                           "metadata": {"name": "test", "namespace": "default", "uid": "u1"}});
        let mut ch = Children::new(&owner);
        let child = ch
            .create(json!({"apiVersion": "example.com/v1alpha1", "kind": "Greeting", "metadata": {"name": "test",
                "ownerReferences": [{"apiVersion": "x/v1", "kind": "X", "name": "x", "uid": "z"}]}}))
            .unwrap();
        assert_eq!(
            child["metadata"]["ownerReferences"],
            json!([{"apiVersion": "example.com/v1alpha1", "kind": "HelloWorld", "name": "test", "uid": "u1", "controller": true}])
        );
        assert_eq!(child["metadata"]["namespace"], "default");
    }
}

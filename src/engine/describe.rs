//! `describe RESOURCE NAME`: one object as an operator wants to read it — identity, where it
//! is defined (file:line), labels, finalizers, owner and children, a summary of its spec, its
//! conditions with ages, and the reconcilers that act on it with the outcome of their last
//! reconcile of it (from the last run's events).
//!
//! Invariant: reads only (the store, the engine's reconcilers and load cache, the last snapshot).

use serde_json::Value;

use super::Engine;
use crate::api::object::{self, GroupKind, ObjectKey};
use crate::protocol::{ErrorKind, ErrorReport, GetRequest, Reply, RunSummary};

/// The spec lines shown at most.
const SPEC_LINES: usize = 40;

fn age(t: Option<&str>) -> String {
    object::age(t, chrono::Utc::now())
}

impl Engine {
    pub(super) fn describe(&self, req: &GetRequest) -> Result<Reply, ErrorReport> {
        let name =
            req.name.clone().ok_or_else(|| ErrorReport::new(ErrorKind::Invalid, "describe needs an object name"))?;
        let (res, obj, key, children) = self.store.with(|s| {
            let res = s.registry.resolve(&req.resource).map_err(super::query::resolve_error)?;
            let gk = GroupKind::new(res.group.clone(), res.kind.clone());
            let ns =
                if res.namespaced { req.namespace.clone().unwrap_or_else(|| "default".into()) } else { String::new() };
            let key = ObjectKey::new(&gk, &ns, &name);
            let obj = s.get(&key).ok_or_else(|| ErrorReport::new(ErrorKind::NotFound, format!("{key}: not found")))?;
            let uid = object::uid(&obj).unwrap_or_default().to_string();
            let mut children: Vec<String> = s.owned_by(&uid).map(|k| k.to_string()).collect();
            children.sort();
            Ok::<_, ErrorReport>((res, obj, key, children))
        })?;
        let mut out = String::new();
        let mut line = |k: &str, v: String| out.push_str(&format!("{:<13} {v}\n", format!("{k}:")));
        line("Name", name.clone());
        if res.namespaced {
            line("Namespace", key.namespace.clone());
        }
        line("Kind", format!("{} ({})", res.kind, obj.get("apiVersion").and_then(Value::as_str).unwrap_or_default()));
        let meta = object::metadata(&obj);
        let labels = meta
            .and_then(|m| m.get("labels"))
            .and_then(Value::as_object)
            .map(|l| {
                l.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default())).collect::<Vec<_>>().join(", ")
            })
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "<none>".into());
        line("Labels", labels);
        let source = self.load_cache.as_ref().and_then(|c| c.source_of(&key)).map_or_else(
            || "<not from a project file: written by a reconciler or the server>".into(),
            |l| l.to_string(),
        );
        line("Source", source);
        let created = meta.and_then(|m| m.get("creationTimestamp")).and_then(Value::as_str);
        line("Created", format!("{} ({} ago)", created.unwrap_or("?"), age(created)));
        if let Some(d) = object::deletion_timestamp(&obj) {
            line("Deleting", format!("since {d}"));
        }
        let finalizers = object::finalizers(&obj).join(", ");
        let finalizers = if finalizers.is_empty() { "<none>".into() } else { finalizers };
        line("Finalizers", finalizers);
        let owners: Vec<String> =
            object::owner_references(&obj).iter().map(|o| format!("{}.{} {}", o.kind, o.group, o.name)).collect();
        line("Owners", if owners.is_empty() { "<none>".into() } else { owners.join(", ") });
        if let Some(spec) = obj.get("spec") {
            let text = object::to_yaml(spec).unwrap_or_default();
            out.push_str("Spec:\n");
            let lines: Vec<&str> = text.lines().collect();
            for l in lines.iter().take(SPEC_LINES) {
                out.push_str(&format!("  {l}\n"));
            }
            if lines.len() > SPEC_LINES {
                out.push_str(&format!(
                    "  … {} more lines (`choreo get {} {name} -o yaml`)\n",
                    lines.len() - SPEC_LINES,
                    req.resource
                ));
            }
        }
        let conditions = obj.pointer("/status/conditions").and_then(Value::as_array).cloned().unwrap_or_default();
        if !conditions.is_empty() {
            out.push_str("Conditions:\n");
            for c in &conditions {
                let f = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or("").to_string();
                let (reason, message) = (f("reason"), f("message"));
                out.push_str(&format!(
                    "  {}={} ({} ago){}{}\n",
                    f("type"),
                    f("status"),
                    age(c.get("lastTransitionTime").and_then(Value::as_str)),
                    if reason.is_empty() { String::new() } else { format!(" {reason}") },
                    if message.is_empty() { String::new() } else { format!(": {message}") }
                ));
            }
        }
        out.push_str(&format!(
            "Children:     {}\n",
            if children.is_empty() { "<none>".to_string() } else { String::new() }
        ));
        for c in &children {
            out.push_str(&format!("  {c}\n"));
        }
        // Reconcilers whose for-kind is this object's, or that own or watch its kind.
        let gk = key.group_kind();
        let last = self.last_events(&key);
        let mut acting = Vec::new();
        for c in &self.controllers {
            let cfg = &c.cfg;
            let how = if cfg.for_.group_kind() == gk && cfg.for_selector.matches(&obj) {
                "for"
            } else if cfg.owns.iter().any(|o| o.group_kind() == gk) {
                "owns"
            } else if cfg.watches.iter().any(|(w, s)| w.group_kind() == gk && s.matches(&obj)) {
                "watches"
            } else {
                continue;
            };
            let outcome = last
                .iter()
                .rev()
                .find(|(r, op, _, _)| r == &cfg.name && op != "START")
                .map(|(_, op, time, msg)| match op.as_str() {
                    "STOP" => format!("last reconcile succeeded at {time}"),
                    "REQUEUE" => format!("last reconcile requeued at {time}: {msg}"),
                    _ => format!("last reconcile failed at {time}: {msg}"),
                })
                .unwrap_or_else(|| if how == "for" { "not reconciled in the last run".into() } else { String::new() });
            acting.push(format!(
                "  {} ({how}){}",
                cfg.name,
                if outcome.is_empty() { String::new() } else { format!(": {outcome}") }
            ));
        }
        out.push_str(&format!("Reconcilers:  {}\n", if acting.is_empty() { "<none>" } else { "" }));
        for a in acting {
            out.push_str(&a);
            out.push('\n');
        }
        Ok(Reply::Message(out.trim_end().to_string()))
    }

    /// The last run's events about `key`: (reconciler, operation, time, message).
    fn last_events(&self, key: &ObjectKey) -> Vec<(String, String, String, String)> {
        let resource = format!("{}.{}.{}.{}", key.group, key.kind, key.namespace, key.name);
        let Ok(snaps) = self.store.reader().snapshots() else { return Vec::new() };
        let Some(meta) = snaps.first() else { return Vec::new() };
        let Ok(text) = self.store.reader().snapshot_summary(meta) else { return Vec::new() };
        let Ok(summary) = serde_json::from_str::<RunSummary>(&text) else { return Vec::new() };
        summary
            .events
            .into_iter()
            .filter(|e| e.resource == resource)
            .map(|e| (e.reconciler, e.operation, e.time, e.message))
            .collect()
    }
}

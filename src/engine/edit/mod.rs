//! `apply` and `delete` from the CLI: validate against the store, then edit the project's files.
//!
//! The files stay the source of truth: an accepted object is written to the `in/` file that
//! already defines it (only its document is replaced, found again by identity in the file's
//! current text; the rest of the file is kept byte for byte) or to
//! `in/<group>.<kind>.<name>.yaml` (`plan`); a deleted one is cut from its file. Files and store
//! then change together through the edit protocol of `journal`, so what the store holds is
//! always what the files say, across failures and crashes. A rejected object is never written.

mod journal;
mod plan;

use std::collections::HashMap;
use std::path::PathBuf;

use serde_json::Value;

use super::load::input_object;
use super::{internal, query, store_error, Engine};
use crate::api::object::{GroupKind, ObjectKey, INPUT_FIELD_MANAGER};
use crate::project;
use crate::protocol::{
    ApplyRequest, DeleteRequest, DeleteTarget, ErrorKind, ErrorReport, ItemOutcome, ItemResult, Reply,
};
use crate::store::{ApplyOptions, Store, StoreError, Txn, WriteOutcome};
use plan::{FilePlan, PlannedFile};

impl Engine {
    pub(in crate::engine) fn apply(&mut self, req: ApplyRequest) -> Result<Reply, ErrorReport> {
        let layout = self.layout()?.clone();
        if !req.dry_run {
            // A production checkout is what git says; an edit would also block every rollback.
            self.refuse_in_production("apply")?;
        }
        let values: Vec<Result<Value, String>> = req
            .documents
            .iter()
            .map(|doc| {
                project::check_depth(&doc.json).map_err(|e| format!("{}: {e}", doc.source))?;
                serde_json::from_str(&doc.json).map_err(|e| format!("{}: not a valid object: {e}", doc.source))
            })
            .collect();
        // Documents whose file edit could not be planned: left out of the next attempt.
        let mut refused: HashMap<usize, String> = HashMap::new();
        loop {
            // One transaction for the whole request: each object is validated against the store
            // plus the objects before it (a CRD and objects of its kind can come in one request),
            // and the same transaction is committed once the files are written, so the store ends
            // up exactly as a reload of the files would leave it.
            let mut txn = self.store.begin();
            let opts = ApplyOptions { manager: INPUT_FIELD_MANAGER, force: req.force };
            let mut items = Vec::with_capacity(values.len());
            let mut accepted: Vec<(ObjectKey, &Value, usize)> = Vec::new();
            for (i, (doc, value)) in req.documents.iter().zip(&values).enumerate() {
                let value = match (value, refused.get(&i)) {
                    (Err(e), _) | (Ok(_), Some(e)) => {
                        items.push(item_error(&doc.source, e.clone()));
                        continue;
                    }
                    (Ok(v), None) => v,
                };
                match txn.apply(&input_object(value), opts) {
                    Ok((key, outcome)) => {
                        items.push(ItemResult {
                            object: key.to_string(),
                            outcome: outcome_word(outcome),
                            file: None,
                            error: None,
                        });
                        accepted.push((key, value, i));
                    }
                    Err(e) => items.push(item_error(&doc.source, format!("{}: {e}", doc.source))),
                }
            }
            if req.dry_run || accepted.is_empty() {
                return Ok(Reply::Items(items));
            }

            // Objects already defined in a file are edited in place (found again by identity in
            // the file's current text); new ones get files of their own.
            let mut plan = FilePlan::new(&layout.root);
            let input_dir = layout.input_dir();
            let mut created: Vec<(ObjectKey, PathBuf)> = Vec::new();
            let before = refused.len();
            for (key, value, i) in &accepted {
                let planned = crate::api::object::to_yaml(value)
                    .map_err(|e| format!("cannot render {key} as YAML: {e}"))
                    .and_then(|yaml| match self.sources.get(key) {
                        Some((file, _)) => plan.replace(file, key, &yaml).map(|()| file.clone()),
                        None => {
                            let path = plan.create(&input_dir, key, yaml)?;
                            created.push((key.clone(), path.clone()));
                            Ok(path)
                        }
                    });
                match planned {
                    Ok(file) => items[*i].file = Some(layout.relative(&file).display().to_string()),
                    Err(e) => {
                        refused.insert(*i, e);
                    }
                }
            }
            if refused.len() > before {
                // Validate again without the refused objects: the others may have depended on
                // them (a CRD refused takes its objects with it).
                continue;
            }
            let changes = plan.into_changes();
            drop(accepted);
            let done = commit_edit(&self.store, &self.staging_dir(), self.is_ready(), txn, &changes);
            return self.finish_edit(done, &changes, created, items);
        }
    }

    pub(in crate::engine) fn delete(&mut self, req: DeleteRequest) -> Result<Reply, ErrorReport> {
        let layout = self.layout()?.clone();
        self.refuse_in_production("delete")?;
        let mut items = Vec::new();
        let mut plan = FilePlan::new(&layout.root);
        let mut txn = self.store.begin();
        for target in &req.targets {
            let key = match self.delete_key(target) {
                Ok(k) => k,
                Err(e) => {
                    let source = match target {
                        DeleteTarget::Named { resource, name, .. } => format!("{resource} {name}"),
                        DeleteTarget::Object(doc) => doc.source.clone(),
                    };
                    items.push(item_error(&source, e.message));
                    continue;
                }
            };
            let mut file = None;
            if let Some((path, _)) = self.sources.get(&key) {
                if let Err(e) = plan.cut(path, &key) {
                    items.push(item_error(&key.to_string(), e));
                    continue;
                }
                file = Some(layout.relative(path).display().to_string());
            }
            // Objects not defined by a file (a reconciler's child, say) go from the store only.
            match txn.delete(&key) {
                Ok(outcome) => items.push(ItemResult {
                    object: key.to_string(),
                    outcome: outcome_word(outcome),
                    file,
                    error: None,
                }),
                Err(StoreError::NotFound { .. }) if file.is_some() => {
                    items.push(ItemResult { object: key.to_string(), outcome: ItemOutcome::Deleted, file, error: None })
                }
                Err(e) => items.push(item_error(&key.to_string(), store_error(&e).message)),
            }
        }
        let changes = plan.into_changes();
        let done = commit_edit(&self.store, &self.staging_dir(), self.is_ready(), txn, &changes);
        self.finish_edit(done, &changes, Vec::new(), items)
    }

    /// Finishes an edit after [`commit_edit`]: a reload when the files must decide, else the
    /// caches brought up to what was written.
    fn finish_edit(
        &mut self,
        done: Result<Committed, ErrorReport>,
        changes: &[(PathBuf, PlannedFile)],
        created: Vec<(ObjectKey, PathBuf)>,
        items: Vec<ItemResult>,
    ) -> Result<Reply, ErrorReport> {
        match done? {
            Committed::Store => {
                self.after_edit(changes, created);
                Ok(Reply::Items(items))
            }
            Committed::FilesOnly => self.reload_after_edit(items),
        }
    }

    /// Brings the load cache and the source index up to what the edit wrote.
    fn after_edit(&mut self, changes: &[(PathBuf, PlannedFile)], created: Vec<(ObjectKey, PathBuf)>) {
        let Some(layout) = self.layout.clone() else { return };
        let by_path: HashMap<&std::path::Path, &PlannedFile> = changes.iter().map(|(p, f)| (p.as_path(), f)).collect();
        let new_files: std::collections::HashSet<PathBuf> = created.iter().map(|(_, p)| p.clone()).collect();
        for (key, path) in created {
            let text = by_path.get(path.as_path()).and_then(|f| f.after.as_deref());
            if let (Some(cache), Some(text)) = (self.load_cache.as_mut(), text) {
                cache.wrote_file(layout.relative(&path).to_path_buf(), text, key.clone());
            }
            self.sources.insert(key, (path, 0));
        }
        // Objects whose documents were cut from an existing file: it no longer defines them.
        // Each edited file's documents are parsed once.
        let mut documents: HashMap<&std::path::Path, Vec<Value>> = HashMap::new();
        for (path, f) in changes {
            if new_files.contains(path) {
                continue;
            }
            let docs = match f.after.as_deref() {
                Some(text) => project::parse_documents(path, text).0.into_iter().map(|d| d.value).collect(),
                None => Vec::new(),
            };
            for alias in &f.via {
                documents.insert(alias.as_path(), docs.clone());
            }
            documents.insert(path.as_path(), docs);
        }
        let removed: Vec<ObjectKey> = self
            .sources
            .iter()
            .filter(|(k, (p, _))| {
                documents.get(p.as_path()).is_some_and(|docs| !docs.iter().any(|d| plan::is_object(d, k)))
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in removed {
            self.sources.remove(&k);
        }
    }

    /// Where the edit protocol stages file contents: the server's own state, never the project.
    fn staging_dir(&self) -> PathBuf {
        self.state_dir.join("staging")
    }

    /// Start-up: undo an edit a crash interrupted and remove leftover temporary files.
    pub(in crate::engine) fn recover_edits(&mut self) {
        match journal::recover(&self.store, &self.staging_dir()) {
            Ok(files) if !files.is_empty() => log::warn!(
                "undid an edit interrupted by a crash (its request was never acknowledged): {} file(s) restored",
                files.len()
            ),
            Ok(_) => {}
            Err(e) => log::error!("{e}"),
        }
        if let Some(layout) = &self.layout {
            journal::remove_stray_temporaries(&layout.input_dir());
        }
    }

    pub(in crate::engine) fn delete_key(&self, target: &DeleteTarget) -> Result<ObjectKey, ErrorReport> {
        let (resource, gk_hint, name, namespace) = match target {
            DeleteTarget::Named { resource, name, namespace } => {
                (Some(resource.clone()), None, name.clone(), namespace.clone())
            }
            DeleteTarget::Object(doc) => {
                project::check_depth(&doc.json)
                    .map_err(|e| ErrorReport::new(ErrorKind::Invalid, format!("{}: {e}", doc.source)))?;
                let v: Value = serde_json::from_str(&doc.json).map_err(|e| {
                    ErrorReport::new(ErrorKind::Invalid, format!("{}: not a valid object: {e}", doc.source))
                })?;
                let api_version = v.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
                let kind = v.get("kind").and_then(Value::as_str).unwrap_or_default();
                let name = crate::api::object::name(&v).ok_or_else(|| {
                    ErrorReport::new(ErrorKind::Invalid, format!("{}: object has no metadata.name", doc.source))
                })?;
                let ns = Some(crate::api::object::namespace(&v).to_string()).filter(|s| !s.is_empty());
                let (group, _) = crate::api::object::split_api_version(api_version);
                (None, Some(GroupKind::new(group, kind)), name.to_string(), ns)
            }
        };
        self.store.with(|s| {
            let res = match (&resource, &gk_hint) {
                (Some(r), _) => s.registry.resolve(r).map_err(query::resolve_error)?,
                (None, Some(gk)) => s.registry.get(gk).cloned().ok_or_else(|| {
                    ErrorReport::new(ErrorKind::NotFound, format!("no API is registered for kind {gk}"))
                })?,
                (None, None) => return Err(internal("delete target without identity")),
            };
            let ns = if res.namespaced { namespace.as_deref().unwrap_or("default") } else { "" };
            let key = ObjectKey::new(&res.group_kind(), ns, &name);
            if s.objects.contains_key(&key) || self.sources.contains_key(&key) {
                Ok(key)
            } else {
                Err(ErrorReport::new(ErrorKind::NotFound, format!("{key}: not found")))
            }
        })
    }

    fn reload_after_edit(&mut self, items: Vec<ItemResult>) -> Result<Reply, ErrorReport> {
        match self.reload() {
            Ok(()) => Ok(Reply::Items(items)),
            Err(mut report) => {
                report.message = format!(
                    "the files were updated, but {}",
                    report.message.replacen("the project", "the project now", 1)
                );
                Err(report)
            }
        }
    }
}

fn outcome_word(outcome: WriteOutcome) -> ItemOutcome {
    match outcome {
        WriteOutcome::Created => ItemOutcome::Created,
        WriteOutcome::Updated => ItemOutcome::Configured,
        WriteOutcome::Unchanged => ItemOutcome::Unchanged,
        WriteOutcome::Deleting => ItemOutcome::Deleting,
        WriteOutcome::Deleted => ItemOutcome::Deleted,
    }
}

fn item_error(object: &str, error: String) -> ItemResult {
    ItemResult { object: object.to_string(), outcome: ItemOutcome::Failed, file: None, error: Some(error) }
}

/// How far [`commit_edit`] went.
enum Committed {
    /// Files and store changed together.
    Store,
    /// The files changed; the project was broken before, so a reload must decide.
    FilesOnly,
}

/// The edit protocol (see `journal`): intent, files, then the transaction with the intent's
/// removal. A failure at any step leaves files and store as they were.
fn commit_edit(
    store: &Store,
    staging: &std::path::Path,
    project_ready: bool,
    mut txn: Txn<'_>,
    changes: &[(PathBuf, PlannedFile)],
) -> Result<Committed, ErrorReport> {
    if changes.is_empty() {
        txn.collect_garbage();
        txn.commit().map_err(|e| store_error(&e))?;
        return Ok(Committed::Store);
    }
    journal::write(store, staging, changes).map_err(|e| ErrorReport::new(ErrorKind::Internal, e))?;
    if !project_ready {
        // The transaction was validated against the last good state, not against what the
        // (broken) files now say: the files decide.
        drop(txn);
        if let Err(e) = store.clear_intent() {
            log::warn!("cannot clear the edit intent: {e}");
        }
        return Ok(Committed::FilesOnly);
    }
    txn.collect_garbage();
    if let Err(e) = txn.commit_clearing_intent() {
        let message = journal::abort(store, staging, changes, format!("cannot commit: {e}"));
        return Err(ErrorReport::new(ErrorKind::Internal, message));
    }
    Ok(Committed::Store)
}

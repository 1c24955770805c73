//! `apply` and `delete` from the CLI: validate against the store, then edit the project's files.
//!
//! The files stay the source of truth: an accepted object is written to the `in/` file that
//! already defines it (only its document is replaced, the rest of the file is kept byte for
//! byte) or to `in/<group>.<kind>.<name>.yaml`; a deleted one is cut from its file. The project
//! is then reloaded, so what the store holds is always what the files say. A rejected object is
//! never written.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::load::input_object;
use super::{internal, query, store_error, Engine};
use crate::api::object::{GroupKind, ObjectKey, INPUT_FIELD_MANAGER};
use crate::project::{self, files};
use crate::protocol::{ApplyRequest, DeleteRequest, DeleteTarget, ErrorKind, ErrorReport, ItemResult, Reply};
use crate::store::{ApplyOptions, StoreError, WriteOutcome};

impl Engine {
    pub(super) fn apply(&mut self, req: ApplyRequest) -> Result<Reply, ErrorReport> {
        let layout = self.layout()?.clone();
        if !req.dry_run {
            // A production checkout is what git says; an edit would also block every rollback.
            self.refuse_in_production("apply")?;
        }
        let mut items = Vec::new();
        let mut accepted: Vec<(ObjectKey, Value, usize)> = Vec::new();
        // One transaction for the whole request: each object is validated against the store plus
        // the objects before it (a CRD and objects of its kind can come in one request), and the
        // same transaction is what gets committed once the files are written, so the store ends
        // up exactly as a reload of the files would leave it.
        let mut txn = self.store.begin();
        let opts = ApplyOptions { manager: INPUT_FIELD_MANAGER, force: req.force };
        for doc in &req.documents {
            let value: Value = match serde_json::from_str(&doc.json) {
                Ok(v) => v,
                Err(e) => {
                    items.push(item_error(&doc.source, format!("{}: not a valid object: {e}", doc.source)));
                    continue;
                }
            };
            match txn.apply(&input_object(&value), opts) {
                Ok((key, outcome)) => {
                    items.push(ItemResult {
                        object: key.to_string(),
                        outcome: outcome_word(outcome, req.dry_run).into(),
                        file: None,
                        error: None,
                    });
                    accepted.push((key, value, items.len() - 1));
                }
                Err(e) => items.push(item_error(&doc.source, format!("{}: {e}", doc.source))),
            }
        }
        if req.dry_run || accepted.is_empty() {
            return Ok(Reply::Items(items));
        }

        // Objects already defined in a file are edited in place; new ones get files of their own,
        // written together with one flush.
        let mut new_files: Vec<(PathBuf, Vec<u8>)> = Vec::new();
        let mut new_keys: Vec<(ObjectKey, usize)> = Vec::new();
        // File names already used in in/ (read once) plus those this request claims.
        let input_dir = layout.input_dir();
        let mut taken: HashSet<String> = std::fs::read_dir(&input_dir)
            .map(|entries| entries.filter_map(Result::ok).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        let mut write_failed = false;
        for (key, value, i) in &accepted {
            let yaml = match crate::api::object::to_yaml(value) {
                Ok(y) => y,
                Err(e) => {
                    items[*i].outcome.clear();
                    items[*i].error = Some(format!("cannot render {key} as YAML: {e}"));
                    write_failed = true;
                    continue;
                }
            };
            if let Some((file, index)) = self.sources.get(key).cloned() {
                match replace_document(&file, index, &yaml) {
                    Ok(()) => items[*i].file = Some(layout.relative(&file).display().to_string()),
                    Err(e) => {
                        items[*i].outcome.clear();
                        items[*i].error = Some(e);
                        write_failed = true;
                    }
                }
                continue;
            }
            match new_file_name(key, &taken) {
                Ok(name) => {
                    let path = input_dir.join(&name);
                    taken.insert(name);
                    items[*i].file = Some(layout.relative(&path).display().to_string());
                    new_keys.push((key.clone(), new_files.len()));
                    new_files.push((path, yaml.into_bytes()));
                }
                Err(e) => {
                    items[*i].outcome.clear();
                    items[*i].error = Some(e);
                    write_failed = true;
                }
            }
        }
        if let Err((path, e)) = files::write_batch(&new_files) {
            write_failed = true;
            for (key, _, i) in &accepted {
                if new_keys.iter().any(|(k, _)| k == key) {
                    items[*i].outcome.clear();
                    items[*i].file = None;
                    items[*i].error = Some(format!("cannot write {}: {e}", path.display()));
                }
            }
        }
        if write_failed || !self.is_ready() {
            // Not every file says what the transaction holds (or the project was already
            // broken): the files decide.
            drop(txn);
            return self.reload_after_edit(items);
        }
        txn.collect_garbage();
        txn.commit().map_err(|e| store_error(&e))?;
        for (key, n) in new_keys {
            let (path, bytes) = &new_files[n];
            if let Some(cache) = self.load_cache.as_mut() {
                cache.wrote_file(layout.relative(path).to_path_buf(), &String::from_utf8_lossy(bytes), key.clone());
            }
            self.sources.insert(key, (path.clone(), 0));
        }
        Ok(Reply::Items(items))
    }

    pub(super) fn delete(&mut self, req: DeleteRequest) -> Result<Reply, ErrorReport> {
        let layout = self.layout()?.clone();
        self.refuse_in_production("delete")?;
        let mut items = Vec::new();
        let mut edited_files = false;
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
            if let Some((path, index)) = self.sources.get(&key).cloned() {
                match cut_document(&path, index) {
                    Ok(()) => {
                        edited_files = true;
                        self.sources.remove(&key);
                        // Later documents of the same file moved up by one.
                        for (p, i) in self.sources.values_mut() {
                            if *p == path && *i > index {
                                *i -= 1;
                            }
                        }
                        file = Some(layout.relative(&path).display().to_string());
                    }
                    Err(e) => {
                        items.push(item_error(&key.to_string(), e));
                        continue;
                    }
                }
            }
            // Objects not defined by a file (a reconciler's child, say) go from the store only.
            match txn.delete(&key) {
                Ok(outcome) => items.push(ItemResult {
                    object: key.to_string(),
                    outcome: outcome_word(outcome, false).into(),
                    file,
                    error: None,
                }),
                Err(StoreError::NotFound { .. }) if file.is_some() => items.push(ItemResult {
                    object: key.to_string(),
                    outcome: "deleted".into(),
                    file,
                    error: None,
                }),
                Err(e) => items.push(item_error(&key.to_string(), store_error(&e).message)),
            }
        }
        if edited_files && !self.is_ready() {
            drop(txn);
            return self.reload_after_edit(items);
        }
        txn.collect_garbage();
        txn.commit().map_err(|e| store_error(&e))?;
        Ok(Reply::Items(items))
    }

    fn delete_key(&self, target: &DeleteTarget) -> Result<ObjectKey, ErrorReport> {
        let (resource, gk_hint, name, namespace) = match target {
            DeleteTarget::Named { resource, name, namespace } => {
                (Some(resource.clone()), None, name.clone(), namespace.clone())
            }
            DeleteTarget::Object(doc) => {
                let v: Value = serde_json::from_str(&doc.json)
                    .map_err(|e| ErrorReport::new(ErrorKind::Invalid, format!("{}: not a valid object: {e}", doc.source)))?;
                let api_version = v.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
                let kind = v.get("kind").and_then(Value::as_str).unwrap_or_default();
                let name = crate::api::object::name(&v)
                    .ok_or_else(|| ErrorReport::new(ErrorKind::Invalid, format!("{}: object has no metadata.name", doc.source)))?;
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
                report.message = format!("the files were updated, but {}", report.message.replacen("the project", "the project now", 1));
                Err(report)
            }
        }
    }
}

/// The file name a new object is written to under `in/`: `<group>.<kind>.<name>.yaml`, or with
/// the namespace added when that name is taken by something else. Never an existing file.
fn new_file_name(key: &ObjectKey, taken: &HashSet<String>) -> Result<String, String> {
    let base = if key.group.is_empty() {
        format!("{}.{}", key.kind.to_lowercase(), key.name)
    } else {
        format!("{}.{}.{}", key.group, key.kind.to_lowercase(), key.name)
    };
    let first = format!("{base}.yaml");
    if !taken.contains(&first) {
        return Ok(first);
    }
    let ns = if key.namespace.is_empty() { "object" } else { &key.namespace };
    let second = format!("{base}.{ns}.yaml");
    if !taken.contains(&second) {
        return Ok(second);
    }
    Err(format!("in/{second} already exists and does not define {key}"))
}

fn outcome_word(outcome: WriteOutcome, dry_run: bool) -> &'static str {
    match (outcome, dry_run) {
        (WriteOutcome::Created, false) => "created",
        (WriteOutcome::Created, true) => "created (dry run)",
        (WriteOutcome::Updated, false) => "configured",
        (WriteOutcome::Updated, true) => "configured (dry run)",
        (WriteOutcome::Unchanged, _) => "unchanged",
        (WriteOutcome::Deleting, _) => "deleting",
        (WriteOutcome::Deleted, _) => "deleted",
    }
}

fn item_error(object: &str, error: String) -> ItemResult {
    ItemResult { object: object.to_string(), outcome: String::new(), file: None, error: Some(error) }
}

/// Replaces document `index` of a file with `yaml`, keeping every other byte of the file.
fn replace_document(file: &Path, index: usize, yaml: &str) -> Result<(), String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let (docs, _) = project::parse_documents(file, &text);
    let Some(doc) = docs.iter().find(|d| d.index == index) else {
        return Err(format!("{} changed since it was loaded; reload and retry", file.display()));
    };
    let mut out = String::with_capacity(text.len() + yaml.len());
    out.push_str(&text[..doc.span.start]);
    if text[doc.span.clone()].starts_with("---") {
        out.push_str("---\n");
    }
    out.push_str(yaml);
    out.push_str(&text[doc.span.end..]);
    files::write_atomic(file, out.as_bytes()).map_err(|e| format!("cannot write {}: {e}", file.display()))
}

/// Removes document `index` from a file; removes the file when no document is left.
fn cut_document(file: &Path, index: usize) -> Result<(), String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let (docs, _) = project::parse_documents(file, &text);
    let Some(doc) = docs.iter().find(|d| d.index == index) else {
        return Err(format!("{} changed since it was loaded; reload and retry", file.display()));
    };
    if docs.len() == 1 {
        return files::remove_durable(file).map_err(|e| format!("cannot remove {}: {e}", file.display()));
    }
    let mut out = String::with_capacity(text.len());
    out.push_str(&text[..doc.span.start]);
    out.push_str(&text[doc.span.end..]);
    files::write_atomic(file, out.as_bytes()).map_err(|e| format!("cannot write {}: {e}", file.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_and_cut_keep_other_documents() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("x.yaml");
        let text = "# keep me\napiVersion: v1\nkind: A\nmetadata: {name: a}\n---\napiVersion: v1\nkind: B\nmetadata: {name: b}\n";
        std::fs::write(&file, text).unwrap();
        replace_document(&file, 1, "apiVersion: v1\nkind: B\nmetadata:\n  name: b2\n").unwrap();
        let got = std::fs::read_to_string(&file).unwrap();
        assert!(got.starts_with("# keep me\napiVersion: v1\nkind: A\n"), "{got}");
        assert!(got.ends_with("---\napiVersion: v1\nkind: B\nmetadata:\n  name: b2\n"), "{got}");
        cut_document(&file, 0).unwrap();
        let got = std::fs::read_to_string(&file).unwrap();
        assert_eq!(got, "---\napiVersion: v1\nkind: B\nmetadata:\n  name: b2\n");
        cut_document(&file, 0).unwrap();
        assert!(!file.exists());
    }
}

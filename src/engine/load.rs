//! The load pipeline: project files → one store transaction.
//!
//! CRDs first (so inputs of new kinds validate), then input objects, each applied with the
//! `inputfileloader` field manager and the origin annotation; then objects that came from files
//! but are no longer in any file are deleted, and garbage collection removes orphans. Any problem
//! anywhere drops the whole transaction: the store keeps the last good state and the caller gets
//! every diagnostic, each naming file, line and column.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use serde_json::Value;

use crate::api::builtin::{CRD_GROUP, CRD_KIND};
use crate::api::meta;
use crate::api::object::{self, GroupKind, ObjectKey, INPUT_FIELD_MANAGER, ORIGIN_ANNOTATION, ORIGIN_FILE};
use crate::project::{self, Document, Layout, SourceLoc};
use crate::store::{ApplyOptions, Store, StoreError, Txn, WriteOutcome};

/// Where each loaded input object is defined: absolute file and document index.
pub type Sources = HashMap<ObjectKey, (PathBuf, usize)>;

/// What a successful load did.
#[derive(Debug, Default)]
pub struct LoadSummary {
    pub crds: usize,
    pub inputs: usize,
    pub changed: usize,
    pub removed: usize,
    pub collected: usize,
    pub sources: Sources,
}

const INPUT: ApplyOptions<'static> = ApplyOptions { manager: INPUT_FIELD_MANAGER, force: true };

/// Loads the project into the store. On error nothing is committed and every problem is
/// returned, one line each.
pub fn load(store: &Store, layout: &Layout) -> Result<LoadSummary, Vec<String>> {
    let (tree, diags) = project::read_tree(layout);
    if !diags.is_empty() {
        return Err(diags.iter().map(ToString::to_string).collect());
    }
    let mut txn = store.begin();
    let mut errors = Vec::new();
    let mut summary = LoadSummary { crds: tree.crds.len(), inputs: tree.inputs.len(), ..Default::default() };

    let crd_gk = GroupKind::new(CRD_GROUP, CRD_KIND);
    let loaded_crds = apply_documents(&mut txn, &tree.crds, &mut errors, &mut summary);
    summary.removed += remove_stale(&mut txn, |gk| *gk == crd_gk, &loaded_crds, &mut errors);
    let loaded_inputs = apply_documents(&mut txn, &tree.inputs, &mut errors, &mut summary);
    summary.removed += remove_stale(&mut txn, |gk| *gk != crd_gk, &loaded_inputs, &mut errors);
    summary.collected = txn.collect_garbage().len();
    if !errors.is_empty() {
        return Err(errors);
    }
    summary.sources = loaded_inputs
        .into_iter()
        .map(|(k, loc)| (k, (layout.root.join(&loc.0.file), loc.1)))
        .collect();
    txn.commit().map_err(|e| vec![format!("cannot commit the load: {e}")])?;
    Ok(summary)
}

/// The object a document stands for, as the loader applies it: with the origin annotation.
pub fn input_object(doc: &Value) -> Value {
    let mut v = doc.clone();
    meta::set_annotation(&mut v, ORIGIN_ANNOTATION, ORIGIN_FILE);
    v
}

fn apply_documents(
    txn: &mut Txn<'_>,
    docs: &[Document],
    errors: &mut Vec<String>,
    summary: &mut LoadSummary,
) -> BTreeMap<ObjectKey, (SourceLoc, usize)> {
    let mut loaded: BTreeMap<ObjectKey, (SourceLoc, usize)> = BTreeMap::new();
    for doc in docs {
        match txn.apply(&input_object(&doc.value), INPUT) {
            Ok((key, outcome)) => {
                if let Some((first, _)) = loaded.get(&key) {
                    errors.push(format!("{}: {key} is also defined at {first}", doc.loc));
                    continue;
                }
                if outcome != WriteOutcome::Unchanged {
                    summary.changed += 1;
                }
                loaded.insert(key, (doc.loc.clone(), doc.index));
            }
            Err(e) => errors.push(describe(&doc.loc, &e)),
        }
    }
    loaded
}

/// Deletes objects that came from project files (origin annotation and an `inputfileloader`
/// entry) but were not loaded this time: their file or document is gone.
fn remove_stale(
    txn: &mut Txn<'_>,
    select: impl Fn(&GroupKind) -> bool,
    loaded: &BTreeMap<ObjectKey, (SourceLoc, usize)>,
    errors: &mut Vec<String>,
) -> usize {
    let mut removed = 0;
    for key in txn.keys() {
        if loaded.contains_key(&key) || !select(&key.group_kind()) {
            continue;
        }
        let Some(obj) = txn.get(&key) else { continue };
        let from_file = object::annotation(&obj, ORIGIN_ANNOTATION) == Some(ORIGIN_FILE)
            && object::has_manager(&obj, INPUT_FIELD_MANAGER);
        if !from_file || object::deletion_timestamp(&obj).is_some() {
            continue;
        }
        match txn.delete(&key) {
            Ok(_) => removed += 1,
            Err(StoreError::NotFound { .. }) => {} // went with its CRD
            Err(e) => errors.push(format!("cannot remove {key}: {e}")),
        }
    }
    removed
}

/// A load error with its location.
pub fn describe(loc: &SourceLoc, e: &StoreError) -> String {
    match e {
        StoreError::UnknownKind { api_version, kind } => format!(
            "{loc}: unknown kind {kind} in {api_version}: no CRD in the project defines it"
        ),
        other => format!("{loc}: {other}"),
    }
}

//! The load pipeline: project files → one store transaction.
//!
//! CRDs first (so inputs of new kinds validate), then input objects, each applied with the
//! `inputfileloader` field manager and the origin annotation; then objects that came from files
//! but are no longer in any file are deleted, and garbage collection removes orphans. Any problem
//! anywhere drops the whole transaction: the store keeps the last good state and the caller gets
//! every diagnostic, each naming file, line and column.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use super::runner::Controller;

use serde_json::Value;

use crate::api::builtin::{CRD_GROUP, CRD_KIND};
use crate::api::meta;
use crate::api::object::{self, GroupKind, ObjectKey, INPUT_FIELD_MANAGER, ORIGIN_ANNOTATION, ORIGIN_FILE};
use crate::project::reconcilers::{read_sources, LibrarySource, ReconcilerSource};
use crate::project::{self, Document, Layout, SourceLoc};
use crate::reconcile::{Lang, ReconcilerConfig, Runtime};
use crate::store::{ApplyOptions, Store, StoreError, Txn, WriteOutcome};

/// Where each loaded input object is defined: absolute file and document index.
pub type Sources = HashMap<ObjectKey, (PathBuf, usize)>;

/// What a successful load did.
#[derive(Default)]
pub struct LoadSummary {
    pub crds: usize,
    pub inputs: usize,
    pub changed: usize,
    pub removed: usize,
    pub collected: usize,
    pub sources: Sources,
    pub controllers: Vec<Controller>,
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
    // Reconcilers are built against the transaction: the APIs they name and the compiled
    // Reconciler/Library objects of in/ are those of this load, committed or not together.
    summary.controllers = build_controllers(&txn, layout)?;
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

/// Reads reconciler and library sources, merges them with the compiled `Reconciler` and
/// `Library` objects of the transaction (a source file wins over a compiled object of the same
/// name), checks every reconciler and compiles its code. Every problem names its origin.
fn build_controllers(txn: &Txn<'_>, layout: &Layout) -> Result<Vec<Controller>, Vec<String>> {
    let (sources, lib_sources, diags) = read_sources(layout);
    let mut errors: Vec<String> = diags.iter().map(ToString::to_string).collect();
    let choreo = crate::api::builtin::CHOREO_GROUP;

    let mut reconcilers: BTreeMap<String, (Value, String)> = BTreeMap::new();
    for (key, obj) in txn.list(&GroupKind::new(choreo, "Reconciler"), None) {
        reconcilers.insert(key.name.clone(), ((*obj).clone(), format!("{key}")));
    }
    for ReconcilerSource { name, object, origin } in sources {
        reconcilers.insert(name, (object, origin.display().to_string()));
    }
    let mut libraries: BTreeMap<String, String> = BTreeMap::new();
    for (key, obj) in txn.list(&GroupKind::new(choreo, "Library"), None) {
        if obj["spec"].get("type").and_then(Value::as_str).is_none_or(|t| t == "starlark") {
            if let Some(code) = obj["spec"].get("code").and_then(Value::as_str) {
                libraries.insert(key.name.clone(), code.to_string());
            }
        }
    }
    for LibrarySource { name, code, .. } in lib_sources {
        libraries.insert(name, code);
    }
    let libs_fingerprint = {
        let mut text = String::new();
        for (n, c) in &libraries {
            text.push_str(n);
            text.push('\0');
            text.push_str(c);
            text.push('\0');
        }
        text
    };
    let libs = Arc::new(crate::reconcile::starlark::Libraries::new(libraries));

    let mut controllers = Vec::new();
    for (name, (obj, origin)) in reconcilers {
        let cfg = match ReconcilerConfig::from_object(&obj) {
            Ok(c) => Arc::new(c),
            Err(e) => {
                errors.push(format!("{origin}: reconciler {name}: {e}"));
                continue;
            }
        };
        for r in cfg.referenced() {
            match txn.resource(&r.group_kind()) {
                None => errors.push(format!("{origin}: reconciler {name}: {r} is not a registered API")),
                Some(res) if res.version != r.version => errors.push(format!(
                    "{origin}: reconciler {name}: {r} is not served; the served version is {}",
                    res.api_version()
                )),
                Some(_) => {}
            }
        }
        let runtime: Result<Box<dyn Runtime>, String> = match cfg.lang {
            Lang::Starlark => crate::reconcile::starlark::StarlarkRuntime::compile(cfg.clone(), libs.clone())
                .map(|r| Box::new(r) as Box<dyn Runtime>),
            other => Err(format!("{} reconcilers are not supported yet", other.as_str())),
        };
        match runtime {
            Ok(runtime) => {
                let mut text = serde_json::to_string(&obj["spec"]).unwrap_or_default();
                text.push_str(&libs_fingerprint);
                let fingerprint = xxhash_rust::xxh3::xxh3_128(text.as_bytes());
                controllers.push(Controller { cfg, runtime, fingerprint });
            }
            Err(e) => errors.push(format!("{origin}: reconciler {name}: {e}")),
        }
    }
    if errors.is_empty() {
        Ok(controllers)
    } else {
        Err(errors)
    }
}

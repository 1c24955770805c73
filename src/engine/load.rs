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

/// What the last good load read, so the next one only parses and applies the files that
/// changed. Any change to a CRD file makes the next load a full one (a new schema may reject or
/// default objects of unchanged files differently).
#[derive(Default)]
pub struct LoadCache {
    crd_signature: u128,
    /// Input file (relative) → content hash and the objects it defined (key, location, index).
    files: HashMap<PathBuf, (u128, Vec<(ObjectKey, SourceLoc, usize)>)>,
    /// The objects loaded from upstream packages' data.
    upstream_keys: Vec<ObjectKey>,
}

impl LoadCache {
    /// Records a file the engine wrote itself with the one object it defines, so the watcher's
    /// reload that follows does not parse and apply it again.
    pub fn wrote_file(&mut self, rel: PathBuf, text: &str, key: ObjectKey) {
        let loc = SourceLoc { file: rel.clone(), line: 1, column: 1 };
        self.files.insert(rel, (content_hash(text), vec![(key, loc, 0)]));
    }
}

fn content_hash(text: &str) -> u128 {
    xxhash_rust::xxh3::xxh3_128(text.as_bytes())
}

/// Loads the project into the store. On error nothing is committed and every problem is
/// returned, one line each. With the cache of the previous good load, files whose content did
/// not change are neither parsed nor applied again.
pub fn load(store: &Store, layout: &Layout, cache: Option<&LoadCache>) -> Result<(LoadSummary, LoadCache), Vec<String>> {
    let (packages, ref_docs) = super::upstream::resolve(layout, &mut |line| log::info!("{line}"))?;
    let (mut crd_texts, mut diags) = project::read_texts(layout, &layout.apis);
    // Packages' CRDs count like the project's own (their content is part of the signature, so
    // a package at a new commit makes a full load); their paths name the package.
    for pkg in &packages {
        let (texts, d) = project::read_texts(&pkg.layout, &pkg.layout.apis);
        diags.extend(d.into_iter().map(|mut d| {
            d.loc.file = PathBuf::from(&pkg.label).join(&d.loc.file);
            d
        }));
        crd_texts.extend(texts.into_iter().map(|(file, text)| (PathBuf::from(&pkg.label).join(file), text)));
    }
    let (input_texts, d) = project::read_texts(layout, &layout.input);
    diags.extend(d);
    let crd_signature = {
        let mut sig = String::new();
        for (file, text) in &crd_texts {
            sig.push_str(&format!("{}\0{:x}\0", file.display(), content_hash(text)));
        }
        content_hash(&sig)
    };
    let cache = cache.filter(|c| c.crd_signature == crd_signature);

    let mut crd_docs = Vec::new();
    if cache.is_none() {
        for (file, text) in &crd_texts {
            let (docs, d) = project::crd_documents(layout, file, text);
            crd_docs.extend(docs);
            diags.extend(d);
        }
    }
    // Inputs: unchanged files are carried over from the cache, the others parsed (in parallel).
    let mut reused: Vec<(ObjectKey, SourceLoc, usize)> = Vec::new();
    let mut to_parse: Vec<&(PathBuf, String)> = Vec::new();
    let mut hashes: HashMap<PathBuf, u128> = HashMap::new();
    for entry in &input_texts {
        let h = content_hash(&entry.1);
        hashes.insert(entry.0.clone(), h);
        // A file is carried over only when its objects are all still there: something other
        // than the files (garbage collection of an owned input, say) may have removed one.
        match cache.and_then(|c| c.files.get(&entry.0)) {
            Some((old, keys)) if *old == h && store.with(|s| keys.iter().all(|(k, _, _)| s.objects.contains_key(k))) => {
                reused.extend(keys.iter().cloned())
            }
            _ => to_parse.push(entry),
        }
    }
    let parsed = crate::project::files::parallel_map(&to_parse, |(file, text)| project::parse_documents(file, text));
    let mut input_docs = Vec::new();
    for (docs, d) in parsed {
        input_docs.extend(docs);
        diags.extend(d);
    }
    if !diags.is_empty() {
        return Err(diags.iter().map(ToString::to_string).collect());
    }

    let mut txn = store.begin();
    let mut errors = Vec::new();
    let mut summary = LoadSummary { crds: crd_texts.len(), inputs: input_docs.len() + reused.len(), ..Default::default() };
    let crd_gk = GroupKind::new(CRD_GROUP, CRD_KIND);
    let ref_gk = GroupKind::new(crate::api::builtin::CHOREO_GROUP, "UpstreamRef");
    if cache.is_none() {
        let loaded_crds = apply_documents(&mut txn, &crd_docs, BTreeMap::new(), &mut errors, &mut summary);
        summary.removed += remove_stale(&mut txn, |gk| *gk == crd_gk, &loaded_crds, None, from_file, &mut errors);
    }
    // The refs themselves are objects too (`get upstreamrefs`); there are few, so always applied.
    let loaded_refs = apply_documents(&mut txn, &ref_docs, BTreeMap::new(), &mut errors, &mut summary);
    summary.removed += remove_stale(&mut txn, |gk| *gk == ref_gk, &loaded_refs, None, from_file, &mut errors);
    let carried: BTreeMap<ObjectKey, (SourceLoc, usize)> = reused.into_iter().map(|(k, l, i)| (k, (l, i))).collect();
    let loaded_inputs = apply_documents(&mut txn, &input_docs, carried, &mut errors, &mut summary);
    // Only objects of changed or vanished files can have gone stale when the rest was carried.
    let candidates: Option<Vec<ObjectKey>> = cache.map(|c| {
        c.files
            .iter()
            .filter(|(file, (h, _))| hashes.get(*file) != Some(h))
            .flat_map(|(_, (_, keys))| keys.iter().map(|(k, _, _)| k.clone()))
            .collect()
    });
    summary.removed +=
        remove_stale(&mut txn, |gk| *gk != crd_gk && *gk != ref_gk, &loaded_inputs, candidates, from_file, &mut errors);
    let upstream_keys = load_package_data(&mut txn, &packages, &loaded_inputs, &mut errors, &mut summary);
    let stale_candidates = cache.map(|c| c.upstream_keys.clone());
    summary.removed += remove_stale(&mut txn, |_| true, &upstream_keys, stale_candidates, from_upstream, &mut errors);
    summary.collected = txn.collect_garbage().len();
    if !errors.is_empty() {
        return Err(errors);
    }
    // Reconcilers are built against the transaction: the APIs they name and the compiled
    // Reconciler/Library objects of in/ are those of this load, committed or not together.
    summary.controllers = build_controllers(&txn, layout, &packages)?;
    let mut new_cache =
        LoadCache { crd_signature, files: HashMap::new(), upstream_keys: upstream_keys.keys().cloned().collect() };
    for (key, (loc, index)) in &loaded_inputs {
        let h = hashes.get(&loc.file).copied().unwrap_or_default();
        new_cache.files.entry(loc.file.clone()).or_insert_with(|| (h, Vec::new())).1.push((key.clone(), loc.clone(), *index));
    }
    // Files without objects (only comments) are remembered too, so they are not re-read.
    for (file, h) in &hashes {
        new_cache.files.entry(file.clone()).or_insert_with(|| (*h, Vec::new()));
    }
    summary.sources = loaded_inputs
        .into_iter()
        .map(|(k, loc)| (k, (layout.root.join(&loc.0.file), loc.1)))
        .collect();
    txn.commit().map_err(|e| vec![format!("cannot commit the load: {e}")])?;
    Ok((summary, new_cache))
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
    mut loaded: BTreeMap<ObjectKey, (SourceLoc, usize)>,
    errors: &mut Vec<String>,
    summary: &mut LoadSummary,
) -> BTreeMap<ObjectKey, (SourceLoc, usize)> {
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
/// entry) but were not loaded this time: their file or document is gone. `candidates` limits
/// the search (default: every object).
fn remove_stale(
    txn: &mut Txn<'_>,
    select: impl Fn(&GroupKind) -> bool,
    loaded: &BTreeMap<ObjectKey, (SourceLoc, usize)>,
    candidates: Option<Vec<ObjectKey>>,
    origin: fn(Option<&str>) -> bool,
    errors: &mut Vec<String>,
) -> usize {
    let mut removed = 0;
    for key in candidates.unwrap_or_else(|| txn.keys()) {
        if loaded.contains_key(&key) || !select(&key.group_kind()) {
            continue;
        }
        let Some(obj) = txn.get(&key) else { continue };
        let ours = origin(object::annotation(&obj, ORIGIN_ANNOTATION)) && object::has_manager(&obj, INPUT_FIELD_MANAGER);
        if !ours || object::deletion_timestamp(&obj).is_some() {
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

fn from_file(origin: Option<&str>) -> bool {
    origin == Some(ORIGIN_FILE)
}

fn from_upstream(origin: Option<&str>) -> bool {
    origin.is_some_and(|o| o.contains(r#""kind":"Upstream""#))
}

/// Applies the `in/` data of packages of type `all`, with their `Upstream` origin annotation.
/// The project's own objects win: a package object the project also defines is skipped.
fn load_package_data(
    txn: &mut Txn<'_>,
    packages: &[super::upstream::Package],
    project: &BTreeMap<ObjectKey, (SourceLoc, usize)>,
    errors: &mut Vec<String>,
    summary: &mut LoadSummary,
) -> BTreeMap<ObjectKey, (SourceLoc, usize)> {
    let mut loaded: BTreeMap<ObjectKey, (SourceLoc, usize)> = BTreeMap::new();
    for pkg in packages.iter().filter(|p| p.data) {
        let (texts, diags) = project::read_texts(&pkg.layout, &pkg.layout.input);
        errors.extend(diags.iter().map(|d| format!("{}/{d}", pkg.label)));
        for (file, text) in &texts {
            let (docs, diags) = project::parse_documents(&PathBuf::from(&pkg.label).join(file), text);
            errors.extend(diags.iter().map(ToString::to_string));
            for doc in docs {
                let mut v = doc.value.clone();
                meta::set_annotation(&mut v, ORIGIN_ANNOTATION, &pkg.origin);
                let Some(key) = ObjectKey::of(&v) else { continue };
                if project.contains_key(&key) || loaded.contains_key(&key) {
                    continue;
                }
                match txn.apply(&v, INPUT) {
                    Ok((key, outcome)) => {
                        if outcome != WriteOutcome::Unchanged {
                            summary.changed += 1;
                        }
                        summary.inputs += 1;
                        loaded.insert(key, (doc.loc.clone(), doc.index));
                    }
                    Err(e) => errors.push(describe(&doc.loc, &e)),
                }
            }
        }
    }
    loaded
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
fn build_controllers(
    txn: &Txn<'_>,
    layout: &Layout,
    packages: &[super::upstream::Package],
) -> Result<Vec<Controller>, Vec<String>> {
    let mut sources = Vec::new();
    let mut lib_sources = Vec::new();
    let mut errors: Vec<String> = Vec::new();
    // Packages first, the deepest first, the project last: a later source of the same name wins.
    for pkg in packages.iter().rev() {
        let (r, l, diags) = read_sources(&pkg.layout);
        errors.extend(diags.iter().map(|d| format!("{}/{d}", pkg.label)));
        sources.extend(r.into_iter().map(|mut r| {
            r.origin = PathBuf::from(&pkg.label).join(&r.origin);
            r
        }));
        lib_sources.extend(l);
    }
    let (r, l, diags) = read_sources(layout);
    errors.extend(diags.iter().map(ToString::to_string));
    sources.extend(r);
    lib_sources.extend(l);
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

//! The load pipeline: project files → one store transaction.
//!
//! CRDs first (so inputs of new kinds validate), then input objects, each applied with the
//! `inputfileloader` field manager and the origin annotation; then objects that came from files
//! but are no longer in any file are deleted, and garbage collection removes orphans. Any problem
//! anywhere drops the whole transaction: the store keeps the last good state and the caller gets
//! every diagnostic, each naming file, line and column.
//!
//! A full load lists and reads every file and skips the unchanged ones by content hash; a
//! partial load ([`Scope::Inputs`], what the watcher asks for when only input files changed)
//! reads just the named files and takes everything else from the [`LoadCache`]. A file that
//! failed a partial load is read again by every following one until it loads.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use super::runner::Controller;

use serde_json::Value;

use crate::api::builtin::{CRD_GROUP, CRD_KIND};
use crate::api::meta;
use crate::api::object::{self, GroupKind, ObjectKey, INPUT_FIELD_MANAGER, ORIGIN_ANNOTATION, ORIGIN_FILE};
use crate::project::reconcilers::{read_sources, LibrarySource, ReconcilerSource};
use crate::project::{self, Document, Layout, SourceLoc};
use crate::reconcile::worker::Host;
use crate::reconcile::ReconcilerConfig;
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
    /// The reconcilers of this load; `None` when a partial load left them as they were.
    pub controllers: Option<Vec<Controller>>,
}

const INPUT: ApplyOptions<'static> = ApplyOptions { manager: INPUT_FIELD_MANAGER, force: true };

/// Which files a load reads.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    /// Every file of the project.
    Full,
    /// Only these input files (relative to the project, top level of the input directory),
    /// which changed, appeared or disappeared; everything else is as the last good load left
    /// it. Without a last good load this is a full load.
    Inputs(&'a [PathBuf]),
}

/// What the last good load read, so the next one only parses and applies the files that
/// changed. Any change to a CRD file makes the next load a full one (a new schema may reject or
/// default objects of unchanged files differently).
#[derive(Default)]
pub struct LoadCache {
    crd_signature: u128,
    /// Input file (relative) → content hash and the objects it defined.
    files: HashMap<PathBuf, (u128, Vec<ObjectKey>)>,
    /// Every input object → where it is defined (file relative) and its document index.
    objects: HashMap<ObjectKey, (SourceLoc, usize)>,
    /// What loads since the last good one failed on: a partial load looks at these again, so a
    /// broken file keeps failing until it is fixed, whichever file changes next.
    retry: Retry,
    /// The upstream packages of the last good full load (a partial load builds reconcilers
    /// from them too).
    packages: Vec<super::upstream::Package>,
    /// The objects loaded from upstream packages' data.
    upstream_keys: Vec<ObjectKey>,
    /// The hash of the project's own reconciler and library sources as compiled.
    sources_signature: u128,
}

#[derive(Default)]
enum Retry {
    #[default]
    Nothing,
    Inputs(BTreeSet<PathBuf>),
    Everything,
}

impl LoadCache {
    /// Where an input object is defined (file and line), if a project file defines it.
    pub(super) fn source_of(&self, key: &ObjectKey) -> Option<crate::project::SourceLoc> {
        self.objects.get(key).map(|(loc, _)| loc.clone())
    }

    /// Records a file the engine wrote itself with the one object it defines, so the watcher's
    /// reload that follows does not parse and apply it again.
    pub fn wrote_file(&mut self, rel: PathBuf, text: &str, key: ObjectKey) {
        let loc = SourceLoc { file: rel.clone(), line: 1, column: 1 };
        if let Some((_, old)) = self.files.insert(rel, (content_hash(text), vec![key.clone()])) {
            for k in old {
                self.objects.remove(&k);
            }
        }
        self.objects.insert(key, (loc, 0));
    }

    fn failed(&mut self, scope: &[PathBuf]) {
        match &mut self.retry {
            Retry::Everything => {}
            Retry::Nothing => self.retry = Retry::Inputs(scope.iter().cloned().collect()),
            Retry::Inputs(set) => set.extend(scope.iter().cloned()),
        }
    }
}

fn content_hash(text: &str) -> u128 {
    xxhash_rust::xxh3::xxh3_128(text.as_bytes())
}

/// The hash of the project's own reconcilers and libraries as read (compiled configuration,
/// origin, code), to tell whether a load would build the same reconcilers.
fn sources_signature(reconcilers: &[ReconcilerSource], libraries: &[LibrarySource]) -> u128 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for r in reconcilers {
        h.update(r.name.as_bytes());
        h.update(&[0]);
        h.update(r.object.to_string().as_bytes());
        h.update(&[0]);
        h.update(r.origin.as_os_str().as_encoded_bytes());
        h.update(&[0]);
    }
    h.update(&[1]);
    for l in libraries {
        for part in [l.name.as_bytes(), l.code.as_bytes(), l.origin.as_os_str().as_encoded_bytes()] {
            h.update(part);
            h.update(&[0]);
        }
    }
    h.digest128()
}

/// Whether a full load whose `files` input files are each as the last good load read them
/// (with every object they define still stored) would find everything else as it left it too:
/// no load since has failed, no file went, the same reconciler and library sources, and no
/// upstream packages (whose contents are compared by a load of its own).
fn unchanged(cache: &LoadCache, files: usize, sources_signature: u128) -> bool {
    matches!(cache.retry, Retry::Nothing)
        && cache.sources_signature == sources_signature
        && cache.packages.is_empty()
        && cache.upstream_keys.is_empty()
        && files == cache.files.len()
}

/// Loads the project into the store. On error nothing is committed and every problem is
/// returned, one line each; `cache` then remembers what to look at again. With the cache of the
/// previous good load, files whose content did not change are neither parsed nor applied
/// again, and a [`Scope::Inputs`] load reads only the named files. On success `sources` is
/// updated to what the project now defines.
pub fn load(
    store: &Store,
    layout: &Layout,
    cache: &mut Option<LoadCache>,
    sources: &mut Sources,
    scope: Scope<'_>,
    host: &Host,
    progress: crate::repo::Progress<'_>,
) -> Result<LoadSummary, Vec<String>> {
    // With packages that bring data, an input file removed may uncover a package object it
    // shadowed: only a full load knows, so every load is one.
    let packages_bring_data = cache.as_ref().is_some_and(|c| c.packages.iter().any(|p| p.data));
    let scope = if packages_bring_data { Scope::Full } else { scope };
    let partial = match (scope, cache.as_ref().map(|c| &c.retry)) {
        (Scope::Inputs(paths), Some(Retry::Nothing)) => Some(paths.to_vec()),
        (Scope::Inputs(paths), Some(Retry::Inputs(again))) => {
            let mut all: BTreeSet<PathBuf> = again.clone();
            all.extend(paths.iter().cloned());
            Some(all.into_iter().collect())
        }
        _ => None,
    };
    let result = match (&partial, cache.as_mut()) {
        (Some(paths), Some(c)) => load_inputs(store, layout, c, sources, paths, host),
        _ => load_full(store, layout, cache, sources, host, progress),
    };
    if result.is_err() {
        if let Some(c) = cache.as_mut() {
            match &partial {
                Some(paths) => c.failed(paths),
                None => c.retry = Retry::Everything,
            }
        }
    }
    result
}

/// A full load: every file is listed and read; unchanged ones (by content hash) are carried.
fn load_full(
    store: &Store,
    layout: &Layout,
    cache_slot: &mut Option<LoadCache>,
    sources: &mut Sources,
    host: &Host,
    progress: crate::repo::Progress<'_>,
) -> Result<LoadSummary, Vec<String>> {
    let (packages, ref_docs) = super::upstream::resolve(layout, progress)?;
    // The project's files, read once; the sources' problems are reported with the reconcilers.
    let (files, mut diags) = project::read_project(layout);
    let project::ProjectFiles { crds: mut crd_texts, inputs: input_texts, reconcilers, libraries } = files;
    let sources_signature = sources_signature(&reconcilers, &libraries);
    let own_sources = (reconcilers, libraries);
    // Packages' CRDs count like the project's own (their content is part of the signature, so
    // a package at a new commit makes a full load); their paths name the package.
    for pkg in &packages {
        let (texts, d) = pkg.read_texts(&pkg.layout.apis);
        diags.extend(d);
        crd_texts.extend(texts);
    }
    let crd_signature = {
        let mut sig = String::new();
        for (file, text) in &crd_texts {
            sig.push_str(&format!("{}\0{:x}\0", file.display(), content_hash(text)));
        }
        content_hash(&sig)
    };
    let cache = cache_slot.as_ref().filter(|c| c.crd_signature == crd_signature);

    let mut crd_docs = Vec::new();
    if cache.is_none() {
        for (file, text) in &crd_texts {
            let (docs, d) = project::crd_documents(layout, file, text);
            crd_docs.extend(docs);
            diags.extend(d);
        }
    }
    // Each input file's content hash, and whether the last good load read it so and every
    // object it defines is still stored (then it is carried over, not parsed again).
    let seen: Vec<(u128, bool)> = input_texts
        .iter()
        .map(|(file, text)| {
            let h = content_hash(text);
            let same =
                cache.and_then(|c| c.files.get(file)).is_some_and(|(old, keys)| *old == h && all_present(store, keys));
            (h, same)
        })
        .collect();
    if let Some(c) = cache {
        let clean = diags.is_empty() && packages.is_empty() && ref_docs.is_empty();
        if clean && seen.iter().all(|(_, same)| *same) && unchanged(c, input_texts.len(), sources_signature) {
            // Every file could be read and is what the last good load read, and the store still
            // holds every object they define: this load would change nothing, nor the
            // reconcilers. A `run once` of a large project starts with one of these.
            return Ok(LoadSummary { crds: crd_texts.len(), inputs: c.objects.len(), ..Default::default() });
        }
    }
    // Inputs: unchanged files are carried over from the cache, the others parsed (in parallel).
    let mut carried: BTreeMap<ObjectKey, (SourceLoc, usize)> = BTreeMap::new();
    let mut to_parse: Vec<&(PathBuf, String)> = Vec::new();
    let mut hashes: HashMap<PathBuf, u128> = HashMap::new();
    for (entry, &(h, same)) in input_texts.iter().zip(&seen) {
        hashes.insert(entry.0.clone(), h);
        match cache.filter(|_| same).and_then(|c| c.files.get(&entry.0).map(|f| (c, f))) {
            Some((c, (_, keys))) => {
                for k in keys {
                    if let Some(at) = c.objects.get(k) {
                        carried.insert(k.clone(), at.clone());
                    }
                }
            }
            None => to_parse.push(entry),
        }
    }
    let input_docs = parse_all(&to_parse, &mut diags);
    if !diags.is_empty() {
        return Err(diags.iter().map(ToString::to_string).collect());
    }

    let mut txn = store.begin();
    let mut errors = Vec::new();
    let mut summary =
        LoadSummary { crds: crd_texts.len(), inputs: input_docs.len() + carried.len(), ..Default::default() };
    let crd_gk = GroupKind::new(CRD_GROUP, CRD_KIND);
    let ref_gk = GroupKind::new(crate::api::builtin::CHOREO_GROUP, "UpstreamRef");
    if cache.is_none() {
        let loaded_crds = apply_documents(&mut txn, crd_docs, BTreeMap::new(), |_| None, &mut errors, &mut summary);
        summary.removed +=
            remove_stale(&mut txn, |gk| *gk == crd_gk, |k| loaded_crds.contains_key(k), None, from_file, &mut errors);
    }
    // The refs themselves are objects too (`get upstreamrefs`); there are few, so always applied.
    let loaded_refs = apply_documents(&mut txn, ref_docs, BTreeMap::new(), |_| None, &mut errors, &mut summary);
    summary.removed +=
        remove_stale(&mut txn, |gk| *gk == ref_gk, |k| loaded_refs.contains_key(k), None, from_file, &mut errors);
    let loaded_inputs = apply_documents(&mut txn, input_docs, carried, |_| None, &mut errors, &mut summary);
    // Only objects of changed or vanished files can have gone stale when the rest was carried.
    let candidates: Option<Vec<ObjectKey>> = cache.map(|c| {
        c.files
            .iter()
            .filter(|(file, (h, _))| hashes.get(*file) != Some(h))
            .flat_map(|(_, (_, keys))| keys.iter().cloned())
            .collect()
    });
    // Package data first: an object whose project file went but which a package still defines
    // is taken over by the package instead of being deleted.
    let upstream_keys = load_package_data(&mut txn, &packages, &loaded_inputs, &mut errors, &mut summary);
    summary.removed += remove_stale(
        &mut txn,
        |gk| *gk != crd_gk && *gk != ref_gk,
        |k| loaded_inputs.contains_key(k) || upstream_keys.contains_key(k),
        candidates,
        from_file,
        &mut errors,
    );
    let stale_candidates = cache.map(|c| c.upstream_keys.clone());
    summary.removed += remove_stale(
        &mut txn,
        |_| true,
        |k| upstream_keys.contains_key(k),
        stale_candidates,
        from_upstream,
        &mut errors,
    );
    summary.collected = txn.collect_garbage().len();
    if !errors.is_empty() {
        return Err(errors);
    }
    // Reconcilers are built against the transaction: the APIs they name and the compiled
    // Reconciler/Library objects of in/ are those of this load, committed or not together.
    summary.controllers = Some(build_controllers(&txn, Some(own_sources), layout, &packages, host)?);
    let mut new_cache = LoadCache {
        crd_signature,
        sources_signature,
        upstream_keys: upstream_keys.into_keys().collect(),
        ..Default::default()
    };
    for (key, (loc, _)) in &loaded_inputs {
        let h = hashes.get(&loc.file).copied().unwrap_or_default();
        new_cache.files.entry(loc.file.clone()).or_insert_with(|| (h, Vec::new())).1.push(key.clone());
    }
    // Files without objects (only comments) are remembered too, so they are not re-read.
    for (file, h) in &hashes {
        new_cache.files.entry(file.clone()).or_insert_with(|| (*h, Vec::new()));
    }
    txn.commit().map_err(|e| vec![format!("cannot commit the load: {e}")])?;
    *sources = loaded_inputs.iter().map(|(k, (loc, i))| (k.clone(), (layout.root.join(&loc.file), *i))).collect();
    new_cache.objects = loaded_inputs.into_iter().collect();
    new_cache.packages = packages;
    *cache_slot = Some(new_cache);
    Ok(summary)
}

/// A partial load: only `paths` (input files, relative) are read; every other file is as the
/// cache says. Unlike a full load it does not look for objects of unread files that went
/// missing from the store (garbage collection of an owned input, say): checking every object
/// would cost what this load saves; the next full load restores them.
fn load_inputs(
    store: &Store,
    layout: &Layout,
    cache: &mut LoadCache,
    sources: &mut Sources,
    paths: &[PathBuf],
    host: &Host,
) -> Result<LoadSummary, Vec<String>> {
    let (texts, gone, mut diags) = project::read_some_texts(layout, &layout.input, paths);
    let mut hashes: HashMap<PathBuf, u128> = HashMap::new();
    let mut to_parse: Vec<&(PathBuf, String)> = Vec::new();
    for entry in &texts {
        let h = content_hash(&entry.1);
        hashes.insert(entry.0.clone(), h);
        match cache.files.get(&entry.0) {
            Some((old, keys)) if *old == h && all_present(store, keys) => {}
            _ => to_parse.push(entry),
        }
    }
    // The files whose objects this load replaces: the re-parsed and the vanished ones.
    let touched: HashSet<&PathBuf> =
        to_parse.iter().map(|(f, _)| f).chain(gone.iter().filter(|f| cache.files.contains_key(*f))).collect();
    let input_docs = parse_all(&to_parse, &mut diags);
    if !diags.is_empty() {
        return Err(diags.iter().map(ToString::to_string).collect());
    }
    let old_keys: Vec<ObjectKey> =
        touched.iter().filter_map(|f| cache.files.get(*f)).flat_map(|(_, keys)| keys.iter().cloned()).collect();
    if touched.is_empty() {
        // Nothing changed (a metadata change, or an edit the engine made itself).
        cache.retry = Retry::Nothing;
        let inputs = cache.objects.len();
        return Ok(LoadSummary { inputs, ..Default::default() });
    }

    let mut txn = store.begin();
    let mut errors = Vec::new();
    let mut summary = LoadSummary::default();
    // An object defined by a file this load does not read is still defined there.
    let elsewhere = |k: &ObjectKey| {
        cache.objects.get(k).filter(|(loc, _)| !touched.contains(&loc.file)).map(|(loc, _)| loc.clone())
    };
    // Garbage appears only where an object went or one names owners; a full collection walks
    // every owned object, which on a large project costs more than the rest of this load.
    let owners_named =
        input_docs.iter().any(|d| d.value.pointer("/metadata/ownerReferences").is_some_and(|o| o != &Value::Null));
    let loaded = apply_documents(&mut txn, input_docs, BTreeMap::new(), elsewhere, &mut errors, &mut summary);
    let crd_gk = GroupKind::new(CRD_GROUP, CRD_KIND);
    summary.removed += remove_stale(
        &mut txn,
        |gk| *gk != crd_gk,
        |k| loaded.contains_key(k),
        Some(old_keys.clone()),
        from_file,
        &mut errors,
    );
    let collected = if summary.removed > 0 || owners_named { txn.collect_garbage() } else { Vec::new() };
    summary.collected = collected.len();
    if !errors.is_empty() {
        return Err(errors);
    }
    // Reconcilers depend on the files only through Reconciler and Library objects (sources and
    // CRDs are outside this scope): rebuilt only when one of those is among the changes.
    let choreo = crate::api::builtin::CHOREO_GROUP;
    let is_code = |k: &ObjectKey| k.group == choreo && (k.kind == "Reconciler" || k.kind == "Library");
    if old_keys.iter().chain(loaded.keys()).chain(collected.iter()).any(is_code) {
        summary.controllers = Some(build_controllers(&txn, None, layout, &cache.packages, host)?);
    }
    txn.commit().map_err(|e| vec![format!("cannot commit the load: {e}")])?;

    for key in &old_keys {
        cache.objects.remove(key);
        sources.remove(key);
    }
    for file in &gone {
        cache.files.remove(file);
    }
    for (file, _) in &to_parse {
        cache.files.insert(file.clone(), (hashes.get(file).copied().unwrap_or_default(), Vec::new()));
    }
    for (key, (loc, index)) in loaded {
        if let Some((_, keys)) = cache.files.get_mut(&loc.file) {
            keys.push(key.clone());
        }
        sources.insert(key.clone(), (layout.root.join(&loc.file), index));
        cache.objects.insert(key, (loc, index));
    }
    cache.retry = Retry::Nothing;
    summary.inputs = cache.objects.len();
    Ok(summary)
}

/// Whether every object a cached file defined is still in the store.
fn all_present(store: &Store, keys: &[ObjectKey]) -> bool {
    store.with(|s| keys.iter().all(|k| s.objects.contains_key(k)))
}

/// Parses files (in parallel), collecting their diagnostics.
fn parse_all(files: &[&(PathBuf, String)], diags: &mut Vec<project::Diagnostic>) -> Vec<Document> {
    let parsed = crate::project::files::parallel_map(files, |(file, text)| project::parse_documents(file, text));
    let mut docs = Vec::new();
    for (d, g) in parsed {
        docs.extend(d);
        diags.extend(g);
    }
    docs
}

/// The object a document stands for, as the loader applies it: with the origin annotation.
pub fn input_object(doc: &Value) -> Value {
    let mut v = doc.clone();
    mark_input(&mut v);
    v
}

/// [`input_object`] in place.
fn mark_input(doc: &mut Value) {
    meta::set_annotation(doc, ORIGIN_ANNOTATION, ORIGIN_FILE);
}

/// Applies documents; `loaded` holds objects already defined (carried over), `elsewhere` finds
/// objects defined by files this load does not read. A second definition is an error.
/// Each document's parsed value is dropped once applied, so a large load holds the parsed
/// documents and their stored form together only for what is still to apply.
fn apply_documents(
    txn: &mut Txn<'_>,
    docs: Vec<Document>,
    mut loaded: BTreeMap<ObjectKey, (SourceLoc, usize)>,
    elsewhere: impl Fn(&ObjectKey) -> Option<SourceLoc>,
    errors: &mut Vec<String>,
    summary: &mut LoadSummary,
) -> BTreeMap<ObjectKey, (SourceLoc, usize)> {
    for mut doc in docs {
        mark_input(&mut doc.value);
        match txn.apply(&doc.value, INPUT) {
            Ok((key, outcome)) => {
                if let Some(first) = loaded.get(&key).map(|(l, _)| l.clone()).or_else(|| elsewhere(&key)) {
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
    loaded: impl Fn(&ObjectKey) -> bool,
    candidates: Option<Vec<ObjectKey>>,
    origin: fn(Option<&str>) -> bool,
    errors: &mut Vec<String>,
) -> usize {
    let mut removed = 0;
    for key in candidates.unwrap_or_else(|| txn.keys()) {
        if loaded(&key) || !select(&key.group_kind()) {
            continue;
        }
        let Some(obj) = txn.get(&key) else { continue };
        let ours =
            origin(object::annotation(&obj, ORIGIN_ANNOTATION)) && object::has_manager(&obj, INPUT_FIELD_MANAGER);
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
        let (texts, diags) = pkg.read_texts(&pkg.layout.input);
        errors.extend(diags.iter().map(ToString::to_string));
        for (file, text) in &texts {
            let (docs, diags) = project::parse_documents(file, text);
            errors.extend(diags.iter().map(ToString::to_string));
            for doc in docs {
                let mut v = doc.value.clone();
                meta::set_annotation(&mut v, ORIGIN_ANNOTATION, &pkg.origin);
                let Some(mut key) = ObjectKey::of(&v) else {
                    errors.push(format!("{}: a document needs apiVersion, kind and metadata.name", doc.loc));
                    continue;
                };
                // As the store will key it: namespaced objects default to `default`.
                if key.namespace.is_empty() && txn.resource(&key.group_kind()).is_some_and(|r| r.namespaced) {
                    key.namespace = "default".into();
                }
                if project.contains_key(&key) {
                    continue; // the project's own definition wins
                }
                if let Some((first, _)) = loaded.get(&key) {
                    errors.push(format!("{}: {key} is also defined at {first}", doc.loc));
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
        StoreError::UnknownKind { api_version, kind } => {
            format!("{loc}: unknown kind {kind} in {api_version}: no CRD in the project defines it")
        }
        other => format!("{loc}: {other}"),
    }
}

/// Merges reconciler and library sources (the project's as read by this load, or read now
/// when `own` is `None`; the packages' read now) with the compiled `Reconciler` and `Library`
/// objects of the transaction (a source file wins over a compiled object of the same name),
/// checks every reconciler and compiles its code. Every problem names its origin.
fn build_controllers(
    txn: &Txn<'_>,
    own: Option<(Vec<ReconcilerSource>, Vec<LibrarySource>)>,
    layout: &Layout,
    packages: &[super::upstream::Package],
    host: &Host,
) -> Result<Vec<Controller>, Vec<String>> {
    let mut sources = Vec::new();
    let mut lib_sources = Vec::new();
    let mut errors: Vec<String> = Vec::new();
    // Packages first, the deepest first, the project last: a later source of the same name wins.
    for pkg in packages.iter().rev() {
        let (r, l, diags) = read_sources(&pkg.layout);
        errors.extend(diags.iter().map(|d| format!("{}/{d}", pkg.label)));
        sources.extend(r.into_iter().map(|mut r| {
            r.origin = pkg.path(&r.origin);
            r
        }));
        lib_sources.extend(l);
    }
    let (r, l) = match own {
        Some(read) => read,
        None => {
            let (r, l, diags) = read_sources(layout);
            errors.extend(diags.iter().map(ToString::to_string));
            (r, l)
        }
    };
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
    let mut checked = Vec::new();
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
        checked.push((cfg, obj, origin));
    }
    let compiled = host.compile(libraries, checked.iter().map(|(cfg, obj, _)| (cfg.clone(), obj.clone())).collect());
    let mut controllers = Vec::new();
    for ((cfg, obj, origin), runtime) in checked.into_iter().zip(compiled) {
        match runtime {
            Ok(runtime) => {
                let mut text = serde_json::to_string(&obj["spec"]).unwrap_or_default();
                text.push_str(&libs_fingerprint);
                let fingerprint = xxhash_rust::xxh3::xxh3_128(text.as_bytes());
                controllers.push(Controller { cfg, runtime, fingerprint });
            }
            Err(e) => errors.push(format!("{origin}: reconciler {}: {e}", cfg.name)),
        }
    }
    if errors.is_empty() {
        Ok(controllers)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CRD: &str = "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: widgets.example.org\nspec:\n  group: example.org\n  scope: Namespaced\n  names: {kind: Widget, plural: widgets, singular: widget}\n  versions:\n  - name: v1\n    served: true\n    storage: true\n    schema:\n      openAPIV3Schema:\n        type: object\n        properties:\n          spec:\n            type: object\n            properties:\n              size: {type: integer}\n";

    fn widget(name: &str, size: i64) -> String {
        format!("apiVersion: example.org/v1\nkind: Widget\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  size: {size}\n")
    }

    struct Project {
        dir: tempfile::TempDir,
        layout: Layout,
        store: Store,
        cache: Option<LoadCache>,
        sources: Sources,
    }

    impl Project {
        fn new(files: &[(&str, String)]) -> Project {
            let dir = tempfile::tempdir().unwrap();
            for d in ["crds", "in"] {
                std::fs::create_dir(dir.path().join(d)).unwrap();
            }
            std::fs::write(dir.path().join("crds/widgets.yaml"), CRD).unwrap();
            for (name, text) in files {
                std::fs::write(dir.path().join("in").join(name), text).unwrap();
            }
            let store = Store::open(&dir.path().join(".choreo/db")).unwrap();
            let layout = Layout::new(dir.path());
            Project { dir, layout, store, cache: None, sources: Sources::new() }
        }

        fn load(&mut self, scope: Scope<'_>) -> Result<LoadSummary, Vec<String>> {
            let host = Host::new(crate::reconcile::worker::Isolation::Thread, Default::default());
            let never = std::sync::atomic::AtomicBool::new(false);
            let progress = crate::repo::Progress { report: &mut |_| {}, cancel: &never };
            load(&self.store, &self.layout, &mut self.cache, &mut self.sources, scope, &host, progress)
        }

        fn fails(&mut self, names: &[&str]) -> Vec<String> {
            match self.changed(names) {
                Ok(_) => panic!("the load of {names:?} should fail"),
                Err(errors) => errors,
            }
        }

        fn changed(&mut self, names: &[&str]) -> Result<LoadSummary, Vec<String>> {
            let paths: Vec<PathBuf> = names.iter().map(|n| PathBuf::from("in").join(n)).collect();
            self.load(Scope::Inputs(&paths))
        }

        fn size(&self, name: &str) -> Option<i64> {
            let key = ObjectKey::new(&GroupKind::new("example.org", "Widget"), "default", name);
            self.store.with(|s| s.objects.contains_key(&key).then_some(()))?;
            let txn = self.store.begin();
            txn.get(&key)?["spec"]["size"].as_i64()
        }

        fn write(&self, name: &str, text: &str) {
            std::fs::write(self.dir.path().join("in").join(name), text).unwrap();
        }
    }

    #[test]
    fn a_partial_load_applies_only_the_named_files() {
        let mut p = Project::new(&[("a.yaml", widget("a", 1)), ("b.yaml", widget("b", 1))]);
        p.load(Scope::Full).unwrap();
        p.write("a.yaml", &widget("a", 2));
        // b changed too, but only a is named: b stays as loaded until it is named.
        p.write("b.yaml", &widget("b", 2));
        let s = p.changed(&["a.yaml"]).unwrap();
        assert_eq!((s.inputs, s.changed), (2, 1));
        assert_eq!((p.size("a"), p.size("b")), (Some(2), Some(1)));
        assert!(s.controllers.is_none(), "no reconciler changed");
        p.changed(&["b.yaml"]).unwrap();
        assert_eq!(p.size("b"), Some(2));
        assert_eq!(p.sources.len(), 2);
    }

    #[test]
    fn a_partial_load_adds_and_removes_files() {
        let mut p = Project::new(&[("a.yaml", widget("a", 1))]);
        p.load(Scope::Full).unwrap();
        p.write("c.yaml", &widget("c", 3));
        p.changed(&["c.yaml"]).unwrap();
        assert_eq!(p.size("c"), Some(3));
        std::fs::remove_file(p.dir.path().join("in/a.yaml")).unwrap();
        let s = p.changed(&["a.yaml"]).unwrap();
        assert_eq!((s.inputs, s.removed), (1, 1));
        assert_eq!(p.size("a"), None);
        assert!(!p.sources.keys().any(|k| k.name == "a"));
        // A non-YAML file and a noise file are no project content.
        p.write("notes.txt", "not: [yaml");
        p.write(".c.yaml.swp", "not: [yaml");
        p.changed(&["notes.txt", ".c.yaml.swp"]).unwrap();
    }

    #[test]
    fn a_second_definition_in_another_file_is_an_error() {
        let mut p = Project::new(&[("a.yaml", widget("a", 1))]);
        p.load(Scope::Full).unwrap();
        p.write("dup.yaml", &widget("a", 5));
        let errors = p.fails(&["dup.yaml"]);
        assert!(
            errors[0].starts_with("in/dup.yaml:1:1: ") && errors[0].contains("also defined at in/a.yaml"),
            "{errors:?}"
        );
        assert_eq!(p.size("a"), Some(1));
    }

    #[test]
    fn a_broken_file_keeps_failing_until_it_is_fixed() {
        let mut p = Project::new(&[("a.yaml", widget("a", 1)), ("b.yaml", widget("b", 1))]);
        p.load(Scope::Full).unwrap();
        p.write("a.yaml", "apiVersion: example.org/v1\nkind: Widget\nmetadata: {name: a, namespace: default\n");
        let errors = p.fails(&["a.yaml"]);
        assert!(errors[0].starts_with("in/a.yaml:"), "{errors:?}");
        // Another file's change does not hide the broken one.
        p.write("b.yaml", &widget("b", 2));
        let errors = p.fails(&["b.yaml"]);
        assert!(errors[0].starts_with("in/a.yaml:"), "{errors:?}");
        assert_eq!((p.size("a"), p.size("b")), (Some(1), Some(1)));
        p.write("a.yaml", &widget("a", 3));
        p.changed(&["a.yaml"]).unwrap();
        assert_eq!((p.size("a"), p.size("b")), (Some(3), Some(2)));
    }

    #[test]
    fn a_full_load_that_would_change_nothing_stops_after_reading() {
        let mut p = Project::new(&[("a.yaml", widget("a", 1)), ("b.yaml", widget("b", 1))]);
        assert!(p.load(Scope::Full).unwrap().controllers.is_some());
        let again = p.load(Scope::Full).unwrap();
        assert_eq!((again.inputs, again.changed), (2, 0));
        assert!(again.controllers.is_none(), "unchanged: the reconcilers are kept, not built again");
        // An object gone from the store is restored, an edited file applied, a new one loaded.
        let key = ObjectKey::new(&GroupKind::new("example.org", "Widget"), "default", "a");
        let mut txn = p.store.begin();
        txn.delete(&key).unwrap();
        txn.commit().unwrap();
        assert!(p.load(Scope::Full).unwrap().controllers.is_some());
        assert_eq!(p.size("a"), Some(1));
        p.write("b.yaml", &widget("b", 2));
        p.write("c.yaml", &widget("c", 3));
        p.load(Scope::Full).unwrap();
        assert_eq!((p.size("b"), p.size("c")), (Some(2), Some(3)));
        std::fs::remove_file(p.dir.path().join("in/c.yaml")).unwrap();
        assert_eq!(p.load(Scope::Full).unwrap().removed, 1);
        assert_eq!(p.size("c"), None);
        assert!(p.load(Scope::Full).unwrap().controllers.is_none());
        // A file that cannot be read fails the load, however unchanged the others are.
        std::os::unix::fs::symlink(p.dir.path().join("nowhere.yaml"), p.dir.path().join("in/d.yaml")).unwrap();
        let Err(errors) = p.load(Scope::Full) else { panic!("a broken link in in/ must fail the load") };
        assert!(errors[0].contains("in/d.yaml"), "{errors:?}");
    }

    #[test]
    fn the_sources_signature_follows_code_configuration_and_origin() {
        let lib =
            |code: &str| LibrarySource { name: "lib".into(), code: code.into(), origin: "reconcilers/lib.star".into() };
        let rec =
            |v: Value| ReconcilerSource { name: "r".into(), object: v, origin: "reconcilers/r/config.yaml".into() };
        let base = sources_signature(&[rec(serde_json::json!({"spec": {"code": "a"}}))], &[lib("x = 1")]);
        assert_eq!(base, sources_signature(&[rec(serde_json::json!({"spec": {"code": "a"}}))], &[lib("x = 1")]));
        assert_ne!(base, sources_signature(&[rec(serde_json::json!({"spec": {"code": "b"}}))], &[lib("x = 1")]));
        assert_ne!(base, sources_signature(&[rec(serde_json::json!({"spec": {"code": "a"}}))], &[lib("x = 2")]));
        assert_ne!(base, sources_signature(&[], &[lib("x = 1")]));
    }

    #[test]
    fn after_a_failed_full_load_the_next_load_is_full() {
        let mut p = Project::new(&[("a.yaml", widget("a", 1))]);
        p.load(Scope::Full).unwrap();
        std::fs::write(p.dir.path().join("crds/widgets.yaml"), "kind: [").unwrap();
        assert!(p.load(Scope::Full).is_err());
        p.write("a.yaml", &widget("a", 2));
        let errors = p.fails(&["a.yaml"]);
        assert!(errors[0].starts_with("crds/widgets.yaml:"), "{errors:?}");
    }
}

//! `-s` in the engine: what the device-config pipeline reads from the store and the project,
//! and what it writes back.
//!
//! A pass lists the target `Node`s and the `Config`s labelled for them, reads each node's
//! running config (`runningconfigs/<node>.json`), has `sdc::pipeline` merge and validate per
//! node in sorted order, and writes in one transaction, per node: `RunningConfig <node>` (the
//! file as given), `RunningConfig <node>.tree` (as the schema reads it) and, only when valid, the
//! final `Config <node>`; outputs of nodes that went away or became invalid are removed. The
//! inputs are fingerprinted, so the continuous runner's passes after unrelated changes cost a
//! listing and a few reads. `run once` fails when any node's configuration is invalid.
//!
//! Invariant: knows the store and the project's files, not libyang (that is `sdc`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::Hasher;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{json, Value};

use crate::api::object::{self, GroupKind, ObjectKey};
use crate::protocol::{BlameRow, ErrorKind, ErrorReport, SdcSummary};
use crate::sdc::pipeline::{self, unqualified, Category, Entry, Finding, Snippet};
use crate::sdc::schema::{SchemaCache, SchemaKey};
use crate::store::{ApplyOptions, State, Store};

use super::options::SdcOptions;
use super::{crds, FINAL, TARGET_NAME, TARGET_NAMESPACE};
use crate::api::object::label;

/// The field manager of everything a pass writes.
pub(crate) const MANAGER: &str = "choreo-sdc";
/// The priority of a Config without one (upstream's templates all write 10).
const DEFAULT_PRIORITY: i64 = 10;
/// The largest running config read.
const MAX_RUNNING_CONFIG: u64 = 64 << 20;

/// The engine's `-s` state.
pub(crate) struct Sdc {
    pub options: SdcOptions,
    cache: SchemaCache,
    /// The fingerprint of the last pass's inputs.
    inputs: Option<u64>,
    pub last: Option<SdcSummary>,
    /// Something changed that the continuous runner's next quiet moment should look at.
    pub pending: bool,
}

impl Sdc {
    pub fn new(options: SdcOptions) -> Sdc {
        Sdc { options, cache: SchemaCache::default(), inputs: None, last: None, pending: true }
    }

    /// Whether `rel` (a path relative to the project) is one of `-s`'s inputs.
    pub fn watches(&self, rel: &Path) -> bool {
        rel.starts_with(&self.options.schemas) || rel.starts_with(&self.options.running_configs)
    }
}

/// A target device.
struct Node {
    key: ObjectKey,
    api_version: String,
    uid: String,
    schema: Result<SchemaKey, String>,
}

impl Node {
    fn id(&self) -> String {
        if self.key.namespace.is_empty() {
            self.key.name.clone()
        } else {
            format!("{}/{}", self.key.namespace, self.key.name)
        }
    }
}

/// Everything a pass reads.
struct Inputs {
    nodes: Vec<Node>,
    /// By index into `nodes`.
    snippets: HashMap<usize, Vec<Pending>>,
    /// Problems found while reading, by node index.
    findings: HashMap<usize, Vec<Finding>>,
    /// The running config files by node name: the bytes, or why they cannot be read.
    running: BTreeMap<String, Result<Vec<u8>, String>>,
    warnings: Vec<String>,
    fingerprint: u64,
}

/// A Config for a node, read when the node's turn comes.
struct Pending {
    id: String,
    priority: i64,
    stored: Arc<crate::store::Stored>,
}

impl Inputs {
    /// Node `i`'s Configs with their entries.
    fn snippets(&self, i: usize) -> Vec<Snippet> {
        self.snippets
            .get(&i)
            .map(|list| {
                list.iter()
                    .map(|p| {
                        let v = p.stored.value();
                        let entries = match v.pointer("/spec/config") {
                            Some(Value::Array(items)) => items
                                .iter()
                                .map(|e| Entry {
                                    path: e.get("path").and_then(Value::as_str).unwrap_or("/").to_string(),
                                    value: e.get("value").cloned().unwrap_or(Value::Null),
                                })
                                .collect(),
                            _ => Vec::new(),
                        };
                        Snippet { id: p.id.clone(), priority: p.priority, entries }
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Node `name`'s running config: `None` when there is no file.
    fn running(&self, name: &str, opts: &SdcOptions) -> Option<Result<Value, String>> {
        let bytes = self.running.get(name)?;
        Some(bytes.as_ref().map_err(Clone::clone).and_then(|b| {
            serde_json::from_slice(b)
                .map_err(|e| format!("{}: not JSON: {e}", opts.running_configs.join(format!("{name}.json")).display()))
        }))
    }
}

/// One node's outcome, to be written.
struct NodeOutcome {
    findings: Vec<Finding>,
    raw: Option<Value>,
    outcome: Option<pipeline::Outcome>,
}

fn field<'a>(obj: &'a Value, dotted: &str) -> Option<&'a Value> {
    dotted.split('.').filter(|s| !s.is_empty()).try_fold(obj, |v, k| v.get(k))
}

/// The versions present for `provider` under `schemas`, sorted.
fn versions(schemas: &Path, provider: &str) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(schemas.join(provider))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .collect();
    out.sort();
    out
}

fn schema_key(obj: &Value, opts: &SdcOptions, schemas: &Path) -> Result<SchemaKey, String> {
    let text = |path: &str| field(obj, path).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string);
    let provider =
        text(&opts.provider_field).ok_or_else(|| format!("no provider: {} is not set", opts.provider_field))?;
    let version = match text(&opts.version_field) {
        Some(v) => v,
        // Upstream's Node API has no version: a provider with one schema version needs none.
        None => match versions(schemas, &provider).as_slice() {
            [one] => one.clone(),
            [] => {
                return Err(format!(
                    "no version ({} is not set) and no schema of provider {provider} under {}",
                    opts.version_field,
                    schemas.display()
                ))
            }
            many => {
                return Err(format!(
                    "no version ({} is not set) and provider {provider} has several schemas: {}",
                    opts.version_field,
                    many.join(", ")
                ))
            }
        },
    };
    Ok(SchemaKey { provider, version })
}

/// Whether `obj` is one of the outputs of a pass (a final Config or a RunningConfig written by
/// the pass).
fn is_output(obj: &Value) -> bool {
    object::has_manager(obj, MANAGER)
}

fn gather(state: &State, root: &Path, opts: &SdcOptions) -> Inputs {
    let schemas = root.join(&opts.schemas);
    let mut hash = xxhash_rust::xxh3::Xxh3::new();
    let mut nodes: Vec<Node> = state
        .list_stored(&GroupKind::new(&opts.node_group, &opts.node_kind), None)
        .into_iter()
        .filter(|s| !s.deleting())
        .filter_map(|s| {
            let v = s.value();
            let name = object::name(&v)?.to_string();
            hash.write(s.json());
            Some(Node {
                key: ObjectKey {
                    group: opts.node_group.clone(),
                    kind: opts.node_kind.clone(),
                    namespace: object::namespace(&v).to_string(),
                    name,
                },
                api_version: v.get("apiVersion").and_then(Value::as_str).unwrap_or_default().to_string(),
                uid: s.uid().to_string(),
                schema: schema_key(&v, opts, &schemas),
            })
        })
        .collect();
    nodes.sort_by(|a, b| (&a.key.namespace, &a.key.name).cmp(&(&b.key.namespace, &b.key.name)));
    let node_names: HashSet<&str> = nodes.iter().map(|n| n.key.name.as_str()).collect();

    let mut warnings = Vec::new();
    let mut snippets: HashMap<usize, Vec<Pending>> = HashMap::new();
    let mut findings: HashMap<usize, Vec<Finding>> = HashMap::new();
    // In key order (the store's), so the fingerprint does not depend on anything else.
    for s in state.list_stored(&GroupKind::new(crds::GROUP, crds::CONFIG), None) {
        let v = s.value();
        let (Some(name), ns) = (object::name(&v), object::namespace(&v)) else { continue };
        // The final configs (this pass's or upstream's) are outputs, not inputs.
        if label(&v, FINAL) == Some("true") || is_output(&v) || s.deleting() {
            continue;
        }
        if nodes.iter().any(|n| n.key.name == name && n.key.namespace == ns) {
            warnings
                .push(format!("config {ns}/{name}: has the name of node {name}'s final config: skipped (rename it)"));
            continue;
        }
        hash.write(s.json());
        let id = if ns.is_empty() { name.to_string() } else { format!("{ns}/{name}") };
        let Some(target) = label(&v, TARGET_NAME) else {
            warnings.push(format!("config {id}: no label {TARGET_NAME}: skipped"));
            continue;
        };
        let wanted_ns = label(&v, TARGET_NAMESPACE);
        let candidates: Vec<usize> = (0..nodes.len())
            .filter(|&i| nodes[i].key.name == target && wanted_ns.is_none_or(|w| nodes[i].key.namespace == w))
            .collect();
        let node = match candidates.as_slice() {
            [one] => *one,
            [] => {
                let where_ = wanted_ns.map(|n| format!(" in namespace {n}")).unwrap_or_default();
                warnings.push(format!("config {id}: target {target}{where_} is no {}: skipped", opts.node_kind));
                continue;
            }
            many => match many.iter().find(|&&i| nodes[i].key.namespace == ns) {
                Some(i) => *i,
                None => {
                    warnings.push(format!(
                        "config {id}: target {target} names {} nodes in different namespaces; label {TARGET_NAMESPACE} says which: skipped",
                        many.len()
                    ));
                    continue;
                }
            },
        };
        let spec = v.get("spec");
        let priority = match spec.and_then(|s| s.get("priority")) {
            None | Some(Value::Null) => DEFAULT_PRIORITY,
            Some(p) => match p.as_i64().or_else(|| p.as_str().and_then(|s| s.trim().parse().ok())) {
                Some(p) => p,
                None => {
                    findings.entry(node).or_default().push(Finding {
                        category: Category::Config,
                        path: None,
                        message: format!("spec.priority {p} is not an integer"),
                        config: Some(id),
                    });
                    continue;
                }
            },
        };
        if !matches!(spec.and_then(|s| s.get("config")), None | Some(Value::Null | Value::Array(_))) {
            findings.entry(node).or_default().push(Finding {
                category: Category::Config,
                path: None,
                message: "spec.config is not a list".into(),
                config: Some(id),
            });
            continue;
        }
        // The entries are read when the node's turn comes (all Configs parsed at once would
        // hold ten times their text in memory).
        drop(v);
        snippets.entry(node).or_default().push(Pending { id, priority, stored: s });
    }

    let running = read_running(&root.join(&opts.running_configs), &node_names, &mut warnings, &mut hash, opts);
    for n in &nodes {
        if let Ok(k) = &n.schema {
            hash.write(k.to_string().as_bytes());
        }
    }
    Inputs { nodes, snippets, findings, running, warnings, fingerprint: hash.finish() }
}

/// The top-level `*.json` files of `dir` whose name is a node's.
fn read_running(
    dir: &Path,
    nodes: &HashSet<&str>,
    warnings: &mut Vec<String>,
    hash: &mut xxhash_rust::xxh3::Xxh3,
    opts: &SdcOptions,
) -> BTreeMap<String, Result<Vec<u8>, String>> {
    let mut out = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    let mut files: Vec<(String, PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            let node = name.strip_suffix(".json")?.to_string();
            Some((node, e.path()))
        })
        .collect();
    files.sort();
    for (node, path) in files {
        let shown = opts.running_configs.join(format!("{node}.json"));
        if !nodes.contains(node.as_str()) {
            warnings.push(format!("running config {}: no {} named {node}: ignored", shown.display(), opts.node_kind));
            continue;
        }
        let read = || -> Result<Vec<u8>, String> {
            let meta = std::fs::symlink_metadata(&path).map_err(|e| format!("{}: {e}", shown.display()))?;
            if meta.file_type().is_symlink() {
                return Err(format!("{}: is a symbolic link (not followed)", shown.display()));
            }
            if !meta.is_file() {
                return Err(format!("{}: is not a file", shown.display()));
            }
            if meta.len() > MAX_RUNNING_CONFIG {
                return Err(format!(
                    "{}: {} bytes is more than the {} MiB a running config may have",
                    shown.display(),
                    meta.len(),
                    MAX_RUNNING_CONFIG >> 20
                ));
            }
            std::fs::read(&path).map_err(|e| format!("{}: {e}", shown.display()))
        };
        hash.write(node.as_bytes());
        let got = read();
        if let Ok(bytes) = &got {
            hash.write(bytes);
        }
        out.insert(node, got);
    }
    out
}

impl crate::engine::Engine {
    /// Runs a pass of `-s` when its inputs changed since the last (always with `force`);
    /// `None` without `-s` or without a project.
    pub(in crate::engine) fn sdc_pass(&mut self, force: bool, progress: &mut dyn FnMut(&str)) -> Option<SdcSummary> {
        let root = self.layout.as_ref()?.root.clone();
        let sdc = self.sdc.as_mut()?;
        sdc.pending = false;
        let started = std::time::Instant::now();
        let inputs = self.store.with(|s| gather(s, &root, &sdc.options));
        if !force && sdc.inputs == Some(inputs.fingerprint) {
            return sdc.last.clone();
        }
        progress("running config validator ...");
        let schemas = root.join(&sdc.options.schemas);
        let mut writer = Writer::new(&self.store);
        let mut errors = Vec::new();
        let mut valid = 0u32;
        let mut used = Vec::new();
        for (i, node) in inputs.nodes.iter().enumerate() {
            let mut findings = inputs.findings.get(&i).cloned().unwrap_or_default();
            let running = inputs.running(&node.key.name, &sdc.options);
            let outcome = match (&node.schema, &running) {
                (Err(why), _) => {
                    findings.push(Finding {
                        category: Category::Schema,
                        path: None,
                        message: why.clone(),
                        config: None,
                    });
                    None
                }
                (_, None) => {
                    findings.push(Finding {
                        category: Category::Running,
                        path: None,
                        message: format!(
                            "no running config: {} does not exist",
                            sdc.options.running_configs.join(format!("{}.json", node.key.name)).display()
                        ),
                        config: None,
                    });
                    None
                }
                (_, Some(Err(why))) => {
                    findings.push(Finding {
                        category: Category::Running,
                        path: None,
                        message: why.clone(),
                        config: None,
                    });
                    None
                }
                (Ok(key), Some(Ok(running))) => {
                    used.push(key.clone());
                    match sdc.cache.get(&schemas, key) {
                        Err(e) => {
                            findings.push(Finding {
                                category: Category::Schema,
                                path: None,
                                message: e.to_string(),
                                config: None,
                            });
                            None
                        }
                        Ok(schema) => {
                            let out = pipeline::intended_with(&schema, running, &inputs.snippets(i), false);
                            findings.extend(out.findings.iter().cloned());
                            Some(out)
                        }
                    }
                }
            };
            findings.sort();
            findings.dedup();
            if findings.is_empty() {
                progress(&format!("node {}: valid", node.id()));
            } else {
                progress(&format!("node {}: {} error(s)", node.id(), findings.len()));
            }
            valid += u32::from(findings.is_empty());
            errors.extend(findings.iter().map(|f| format!("node {}: {f}", node.key.name)));
            let raw = running.and_then(Result::ok);
            writer.node(node, &NodeOutcome { findings, raw, outcome });
        }
        sdc.cache.retain(&used);
        errors.extend(writer.finish());
        let summary = SdcSummary {
            time: crate::store::now_rfc3339(),
            nodes: inputs.nodes.len() as u32,
            valid,
            errors,
            warnings: inputs.warnings,
            elapsed_micros: started.elapsed().as_micros() as u64,
        };
        for w in &summary.warnings {
            log::warn!("sdc: {w}");
        }
        log::info!(
            nodes = summary.nodes, valid = summary.valid, errors = summary.errors.len();
            "sdc: {} of {} nodes valid, {} errors, in {:?}",
            summary.valid,
            summary.nodes,
            summary.errors.len(),
            started.elapsed()
        );
        crate::metrics::global().sdc_pass(started.elapsed());
        sdc.inputs = Some(inputs.fingerprint);
        sdc.last = Some(summary.clone());
        self.status.lock().unwrap_or_else(|p| p.into_inner()).sdc = Some(summary.clone());
        Some(summary)
    }

    /// `run diff -c -a`: the data paths that differ between a final Config's running and
    /// intended values, read with its node's schema (the Node as the snapshot has it).
    pub(in crate::engine) fn final_config_changes(
        &mut self,
        objects: &super::diff::Objects,
        config: &Value,
        old: &Value,
        new: &Value,
    ) -> String {
        let fail = |why: String| format!("  (no path-level diff: {why})\n");
        let (Some(root), Some(sdc)) = (self.layout.as_ref().map(|l| l.root.clone()), self.sdc.as_mut()) else {
            return fail("this server does not validate device configs".into());
        };
        let opts = &sdc.options;
        let Some(owner) = object::owner_references(config).into_iter().find(|o| o.kind == opts.node_kind) else {
            return fail(format!("the Config has no {} owner", opts.node_kind));
        };
        let key = ObjectKey {
            group: opts.node_group.clone(),
            kind: opts.node_kind.clone(),
            namespace: object::namespace(config).to_string(),
            name: owner.name.clone(),
        };
        let Some(node) = objects.get(&key) else {
            return fail(format!("{} {} is not in the snapshot", key.kind, key.name));
        };
        let schemas = root.join(&opts.schemas);
        let schema = match schema_key(node, opts, &schemas)
            .and_then(|k| sdc.cache.get(&schemas, &k).map_err(|e| e.to_string()))
        {
            Ok(s) => s,
            Err(e) => return fail(e),
        };
        match pipeline::changes(&schema, old, new) {
            Ok(lines) => lines.iter().map(|l| format!("  {l}\n")).collect(),
            Err(e) => fail(e),
        }
    }

    /// `config blame NODE [PATH]`: the node's intended configuration computed now, each leaf
    /// with its origin.
    pub(in crate::engine) fn config_blame(
        &mut self,
        req: crate::protocol::ConfigBlameRequest,
    ) -> Result<Vec<BlameRow>, ErrorReport> {
        let root = self.layout()?.root.clone();
        let sdc = self.sdc.as_mut().ok_or_else(super::no_sdc)?;
        let inputs = self.store.with(|s| gather(s, &root, &sdc.options));
        let matches: Vec<usize> = (0..inputs.nodes.len())
            .filter(|&i| {
                let k = &inputs.nodes[i].key;
                k.name == req.node && req.namespace.as_deref().is_none_or(|n| n == k.namespace)
            })
            .collect();
        let i = match matches.as_slice() {
            [one] => *one,
            [] => {
                return Err(ErrorReport::new(
                    ErrorKind::NotFound,
                    format!("no {} named {}", sdc.options.node_kind, req.node),
                ))
            }
            _ => {
                return Err(ErrorReport::new(
                    ErrorKind::Invalid,
                    format!("{} nodes are named {}", matches.len(), req.node),
                )
                .with_hint("name its namespace with -n"))
            }
        };
        let node = &inputs.nodes[i];
        let fail = |m: String| ErrorReport::new(ErrorKind::Invalid, format!("node {}: {m}", node.key.name));
        let key = node.schema.clone().map_err(fail)?;
        let running = match inputs.running(&node.key.name, &sdc.options) {
            Some(Ok(v)) => v,
            Some(Err(e)) => return Err(fail(e)),
            None => return Err(fail("no running config".into())),
        };
        let schema = sdc.cache.get(&root.join(&sdc.options.schemas), &key).map_err(|e| fail(e.to_string()))?;
        let out = pipeline::intended(&schema, &running, &inputs.snippets(i));
        if out.merged.is_none() {
            let why: Vec<String> = out.findings.iter().map(ToString::to_string).collect();
            return Err(fail(why.join("; ")));
        }
        let wanted = req.path.as_deref().map(PathFilter::new).transpose().map_err(fail)?;
        Ok(out
            .blame
            .into_iter()
            .filter(|b| wanted.as_ref().is_none_or(|w| w.covers(&b.path)))
            .map(|b| BlameRow { path: unqualified(&b.path), value: b.value, source: b.source.to_string() })
            .collect())
    }
}

/// `config blame`'s PATH: a data path whose leaves are wanted; prefixes and quotes optional.
struct PathFilter(String);

impl PathFilter {
    fn new(path: &str) -> Result<PathFilter, String> {
        let steps = crate::sdc::path::parse(path).map_err(|e| e.to_string())?;
        let mut canon = String::new();
        for s in steps {
            canon.push('/');
            canon.push_str(s.name.rsplit(':').next().unwrap_or(&s.name));
            for (k, v) in s.keys {
                canon.push_str(&format!("[{k}='{v}']"));
            }
        }
        Ok(PathFilter(canon))
    }

    fn covers(&self, path: &str) -> bool {
        let p = unqualified(path);
        self.0.is_empty()
            || p == self.0
            || p.starts_with(&format!("{}/", self.0))
            || p.starts_with(&format!("{}[", self.0))
    }
}

/// The pass's writes, one node at a time into one transaction (a node's parsed outcome is
/// dropped once its objects are staged, as compact JSON).
struct Writer<'s> {
    txn: crate::store::Txn<'s>,
    wanted: HashSet<ObjectKey>,
    problems: Vec<String>,
}

impl<'s> Writer<'s> {
    fn new(store: &'s Store) -> Writer<'s> {
        Writer { txn: store.begin(), wanted: HashSet::new(), problems: Vec::new() }
    }

    fn node(&mut self, node: &Node, out: &NodeOutcome) {
        let opts = ApplyOptions { manager: MANAGER, force: true };
        let meta = |name: String, extra: Option<(&str, &str)>| {
            let mut labels = serde_json::Map::new();
            labels.insert(TARGET_NAME.into(), json!(node.key.name));
            labels.insert(TARGET_NAMESPACE.into(), json!(node.key.namespace));
            if let Some((k, v)) = extra {
                labels.insert(k.into(), json!(v));
            }
            let mut m = json!({
                "name": name,
                "labels": labels,
                "ownerReferences": [{
                    "apiVersion": node.api_version, "kind": node.key.kind, "name": node.key.name,
                    "uid": node.uid, "controller": true
                }]
            });
            if !node.key.namespace.is_empty() {
                m["namespace"] = json!(node.key.namespace);
            }
            m
        };
        let api_version = format!("{}/{}", crds::GROUP, crds::VERSION);
        let mut objects = Vec::new();
        if let Some(raw) = &out.raw {
            objects.push(json!({"apiVersion": api_version, "kind": crds::RUNNING_CONFIG,
                "metadata": meta(node.key.name.clone(), None), "spec": {}, "status": {"value": raw}}));
        }
        if let Some(tree) = out.outcome.as_ref().and_then(|o| o.running_tree.as_ref()) {
            objects.push(json!({"apiVersion": api_version, "kind": crds::RUNNING_CONFIG,
                "metadata": meta(format!("{}.tree", node.key.name), None), "spec": {}, "status": {"value": tree}}));
        }
        if out.findings.is_empty() {
            if let Some(merged) = out.outcome.as_ref().and_then(|o| o.merged.as_ref()) {
                objects.push(json!({"apiVersion": api_version, "kind": crds::CONFIG,
                    "metadata": meta(node.key.name.clone(), Some((FINAL, "true"))),
                    "spec": {"priority": DEFAULT_PRIORITY, "config": [{"path": "/", "value": merged}]}}));
            }
        }
        for obj in objects {
            let key = ObjectKey {
                group: crds::GROUP.into(),
                kind: obj["kind"].as_str().unwrap_or_default().into(),
                namespace: node.key.namespace.clone(),
                name: obj["metadata"]["name"].as_str().unwrap_or_default().into(),
            };
            // Never take over an object someone else wrote under an output's name.
            if self.txn.get(&key).is_some_and(|live| !is_output(&live)) {
                self.problems.push(format!(
                    "node {}: cannot store {} {}: an object of that name exists that choreo did not write",
                    node.key.name, key.kind, key.name
                ));
                continue;
            }
            match self.txn.apply(&obj, opts) {
                Ok((key, _)) => {
                    self.wanted.insert(key);
                }
                Err(e) => self.problems.push(format!(
                    "node {}: cannot store {} {}: {e}",
                    node.key.name,
                    obj["kind"].as_str().unwrap_or_default(),
                    obj["metadata"]["name"].as_str().unwrap_or_default()
                )),
            }
        }
    }

    /// Removes what earlier passes wrote and this one did not (the outputs of nodes that went
    /// away or whose configuration is now invalid), commits, and returns what went wrong.
    fn finish(mut self) -> Vec<String> {
        let mut stale = Vec::new();
        for kind in [crds::CONFIG, crds::RUNNING_CONFIG] {
            for (key, obj) in self.txn.list(&GroupKind::new(crds::GROUP, kind), None) {
                if !self.wanted.contains(&key)
                    && is_output(&obj)
                    && (kind == crds::RUNNING_CONFIG || label(&obj, FINAL) == Some("true"))
                {
                    stale.push(key);
                }
            }
        }
        for key in stale {
            if let Err(e) = self.txn.delete(&key) {
                self.problems.push(format!("cannot remove {} {}: {e}", key.kind, key.name));
            }
        }
        if let Err(e) = self.txn.commit() {
            self.problems.push(format!("cannot store the device configs: {e}"));
        }
        self.problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_lose_their_prefixes_but_not_their_values() {
        assert_eq!(
            unqualified("/ietf-interfaces:interfaces/interface[name='a:b']/ietf-ip:ipv4/address[ip='1::2']/ip"),
            "/interfaces/interface[name='a:b']/ipv4/address[ip='1::2']/ip"
        );
        let f = PathFilter::new("/interfaces/interface[name=e1]").unwrap();
        assert!(f.covers("/ietf-interfaces:interfaces/interface[name='e1']/mtu"));
        assert!(!f.covers("/ietf-interfaces:interfaces/interface[name='e10']/mtu"));
        assert!(PathFilter::new("/").unwrap().covers("/x"));
    }

    #[test]
    fn a_node_without_a_version_uses_its_provider_s_only_schema() {
        let tmp = tempfile::tempdir().unwrap();
        let opts = SdcOptions::default();
        let node = json!({"spec": {"provider": "p"}});
        assert!(schema_key(&node, &opts, tmp.path()).unwrap_err().contains("no schema of provider p"));
        std::fs::create_dir_all(tmp.path().join("p/1.0")).unwrap();
        assert_eq!(schema_key(&node, &opts, tmp.path()).unwrap().to_string(), "p/1.0");
        std::fs::create_dir_all(tmp.path().join("p/2.0")).unwrap();
        assert!(schema_key(&node, &opts, tmp.path()).unwrap_err().contains("1.0, 2.0"));
        let pinned = json!({"spec": {"provider": "p", "version": "2.0"}});
        assert_eq!(schema_key(&pinned, &opts, tmp.path()).unwrap().to_string(), "p/2.0");
        assert!(schema_key(&json!({}), &opts, tmp.path()).unwrap_err().contains("spec.provider"));
    }
}

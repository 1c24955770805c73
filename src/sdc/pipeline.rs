//! One device's intended configuration: its running config, the Configs for it merged on top
//! by priority, one validation, the final tree and where each of its leaves comes from.
//!
//! Configs are merged weakest first (highest `priority` number first, then by name), each
//! entry parsed on its own without validation (a snippet alone is rarely valid: it may lack a
//! mandatory leaf the running config has), so libyang's "source wins" merge makes the strongest
//! Config win. Every node a Config's entry sets is remembered, which lets a validation error be
//! attributed to the Config that set the offending leaf, a conflict between two Configs of the
//! same priority be reported instead of being decided by their order, and `config blame` say
//! for every leaf where its value comes from. The merged tree is validated once, with every
//! error collected.
//!
//! Architecture invariant: a pure function of a compiled schema and JSON values; no store, no
//! files (the engine reads them and writes what comes out).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use serde_json::{Map, Value};
use yang3::context::Context;
use yang3::data::{Data, DataFormat, DataNodeRef, DataParserFlags, DataPrinterFlags, DataTree, DataValidationFlags};
use yang3::schema::SchemaNodeKind;

use super::log::{self, Diagnostic};
use super::normalize;
use super::path;
use super::schema::Schema;

/// One Config for the device: its entries in order.
#[derive(Debug, Clone)]
pub struct Snippet {
    /// `namespace/name` (or `name` without a namespace): how findings and blame name it.
    pub id: String,
    /// Lower is stronger, as in sdcio.
    pub priority: i64,
    pub entries: Vec<Entry>,
}

/// One `spec.config[]` item.
#[derive(Debug, Clone)]
pub struct Entry {
    pub path: String,
    pub value: Value,
}

/// What kind of problem a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Category {
    /// The device's schema could not be found or compiled.
    Schema,
    /// The running config is missing or does not fit the schema.
    Running,
    /// A Config's entry does not fit the schema (unknown node, wrong type, missing key, bad path).
    Config,
    /// Two Configs of the same priority set one leaf to different values.
    Conflict,
    /// The merged configuration breaks a rule of the schema (mandatory, leafref, must, when,
    /// range, length, pattern, min/max-elements, unique).
    Validation,
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Category::Schema => "schema",
            Category::Running => "running config",
            Category::Config => "config",
            Category::Conflict => "conflict",
            Category::Validation => "validation",
        })
    }
}

/// One problem with a device's configuration.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Finding {
    pub category: Category,
    /// The data path it is about, when there is one.
    pub path: Option<String>,
    pub message: String,
    /// The Config that set what is wrong (`namespace/name`), when one did.
    pub config: Option<String>,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(p) = &self.path {
            write!(f, "{p}: ")?;
        }
        f.write_str(&self.message)?;
        if let Some(c) = &self.config {
            write!(f, " [config {c}]")?;
        }
        Ok(())
    }
}

/// Where a leaf of the final configuration gets its value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    Running,
    Default,
    /// A Config (`namespace/name`).
    Config(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Running => f.write_str("running"),
            Source::Default => f.write_str("default"),
            Source::Config(c) => f.write_str(c),
        }
    }
}

/// One leaf of the final configuration and its origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blame {
    /// The data path without module prefixes.
    pub path: String,
    pub value: String,
    pub source: Source,
}

/// The outcome for one device.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Everything wrong, sorted by path; empty when the configuration is valid.
    pub findings: Vec<Finding>,
    /// The running config as the schema reads it (`None` when it could not be read).
    pub running_tree: Option<Value>,
    /// The merged configuration (explicit nodes), whether or not it is valid; `None` when the
    /// running config could not be read.
    pub merged: Option<Value>,
    /// Every leaf of the merged configuration, defaults included, by path.
    pub blame: Vec<Blame>,
}

impl Outcome {
    pub fn valid(&self) -> bool {
        self.findings.is_empty()
    }
}

/// Who set a node: the Configs that touched it, and for a leaf the strongest one and its value.
#[derive(Debug, Clone)]
struct Setter {
    snippet: usize,
    priority: i64,
    value: Option<String>,
}

/// `running` (the device's running config, lenient JSON) with `snippets` merged on top,
/// validated against `schema`.
pub fn intended(schema: &Schema, running: &Value, snippets: &[Snippet]) -> Outcome {
    intended_with(schema, running, snippets, true)
}

/// [`intended`], with the blame of every leaf only when asked for (it is the largest part of
/// an outcome).
pub fn intended_with(schema: &Schema, running: &Value, snippets: &[Snippet], blame: bool) -> Outcome {
    let ctx = schema.context();
    let mut out = Outcome::default();
    let mut merged = match parse(ctx, running) {
        Ok(t) => t,
        Err(problems) => {
            out.findings = problems
                .into_iter()
                .map(|(path, message)| Finding {
                    category: Category::Running,
                    path: path.as_deref().map(unqualified),
                    message,
                    config: None,
                })
                .collect();
            out.findings.sort();
            return out;
        }
    };
    out.running_tree = Some(print(&merged));
    let running_leaves: HashSet<String> =
        if blame { leaves(&merged).into_iter().map(|(p, _)| p).collect() } else { HashSet::new() };

    let mut order: Vec<usize> = (0..snippets.len()).collect();
    // Weakest first: the merge lets the later source win.
    order.sort_by(|a, b| {
        let (a, b) = (&snippets[*a], &snippets[*b]);
        b.priority.cmp(&a.priority).then_with(|| a.id.cmp(&b.id))
    });
    // Leaf path → the strongest setter so far; any node path → the Configs that touched it.
    let mut leaf_setter: HashMap<String, Setter> = HashMap::new();
    let mut touched: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for &i in &order {
        let snippet = &snippets[i];
        for (n, entry) in snippet.entries.iter().enumerate() {
            // Where in the Config: the entry's index when it has several, its path when it is
            // not the root (libyang's parse errors name a list without its keys).
            let mut at = Vec::new();
            if snippet.entries.len() > 1 {
                at.push(format!("entry {n}"));
            }
            if !matches!(entry.path.trim(), "" | "/") {
                at.push(format!("at {}", entry.path.trim()));
            }
            let at = if at.is_empty() { String::new() } else { format!(" ({})", at.join(", ")) };
            let finding = |path: Option<String>, message: String| Finding {
                category: Category::Config,
                path,
                message: format!("{message}{at}"),
                config: Some(snippet.id.clone()),
            };
            let placed = match path::place(&entry.path, &entry.value) {
                Ok(v) => v,
                Err(e) => {
                    out.findings.push(finding(None, e.to_string()));
                    continue;
                }
            };
            let tree = match parse(ctx, &placed) {
                Ok(t) => t,
                Err(problems) => {
                    out.findings.extend(problems.into_iter().map(|(p, m)| finding(p, m)));
                    continue;
                }
            };
            for node in tree.traverse() {
                let Some(p) = node_path(&node) else { continue };
                let is_leaf = matches!(node.schema().kind(), SchemaNodeKind::Leaf | SchemaNodeKind::LeafList);
                if is_leaf {
                    let value = node.value_canonical();
                    if let Some(prev) = leaf_setter.get(&p) {
                        if prev.priority == snippet.priority && prev.snippet != i && prev.value != value {
                            out.findings.push(Finding {
                                category: Category::Conflict,
                                path: Some(p.clone()),
                                message: format!(
                                    "set to {} by config {} and to {} by config {} at the same priority {}",
                                    show(&prev.value),
                                    snippets[prev.snippet].id,
                                    show(&value),
                                    snippet.id,
                                    snippet.priority
                                ),
                                config: Some(snippet.id.clone()),
                            });
                        }
                    }
                    leaf_setter.insert(p.clone(), Setter { snippet: i, priority: snippet.priority, value });
                }
                let list = touched.entry(p).or_default();
                if !list.contains(&i) {
                    list.push(i);
                }
            }
            if let (Err(e), diags) = log::capture(|| merged.merge(&tree)) {
                let problems = errors(diags, &e);
                out.findings.extend(problems.into_iter().map(|(p, m)| finding(p, m)));
            }
        }
    }

    let flags =
        DataValidationFlags::NO_STATE | DataValidationFlags::from_bits_retain(yang3::ffi::LYD_VALIDATE_MULTI_ERROR);
    if let (Err(e), diags) = log::capture(|| merged.validate(flags)) {
        for (path, message) in errors(diags, &e) {
            // The path first, then the data paths the message names (a `unique` error is
            // reported at one instance and names the other).
            let config = path
                .iter()
                .map(String::as_str)
                .chain(quoted_paths(&message))
                .find_map(|p| blame_config(p, &leaf_setter, &touched, snippets));
            out.findings.push(Finding { category: Category::Validation, path, message, config });
        }
    }
    out.merged = Some(print(&merged));
    if !blame {
        return finish(out);
    }
    out.blame = leaves(&merged)
        .into_iter()
        .map(|(path, node)| {
            let source = match leaf_setter.get(&path) {
                Some(s) => Source::Config(snippets[s.snippet].id.clone()),
                None if running_leaves.contains(&path) => Source::Running,
                None if node.is_default() => Source::Default,
                None => Source::Running,
            };
            Blame { value: node.value_canonical().unwrap_or_default(), path: unqualified(&path), source }
        })
        .collect();
    finish(out)
}

/// Paths as users write them (without module prefixes), findings sorted.
fn finish(mut out: Outcome) -> Outcome {
    for f in &mut out.findings {
        f.path = f.path.as_deref().map(unqualified);
    }
    out.findings.sort();
    out.findings.dedup();
    out
}

/// The absolute data paths quoted in a libyang message (`"/m:list[k='v']"`).
fn quoted_paths(message: &str) -> impl Iterator<Item = &str> {
    message.split('"').skip(1).step_by(2).filter(|s| s.starts_with('/'))
}

fn show(v: &Option<String>) -> String {
    match v {
        Some(s) => format!("{s:?}"),
        None => "(no value)".into(),
    }
}

/// The Config to name for an error at `path`: the one that set that leaf, else the strongest
/// of those that set anything at or below it.
fn blame_config(
    path: &str,
    leaf_setter: &HashMap<String, Setter>,
    touched: &BTreeMap<String, Vec<usize>>,
    snippets: &[Snippet],
) -> Option<String> {
    if let Some(s) = leaf_setter.get(path) {
        return Some(snippets[s.snippet].id.clone());
    }
    let below = |p: &str| p == path || p.starts_with(&format!("{path}/")) || p.starts_with(&format!("{path}["));
    touched
        .range(path.to_string()..)
        .take_while(|(p, _)| p.starts_with(path))
        .filter(|(p, _)| below(p))
        .flat_map(|(_, who)| who.iter().copied())
        .min_by(|a, b| {
            let (a, b) = (&snippets[*a], &snippets[*b]);
            a.priority.cmp(&b.priority).then_with(|| a.id.cmp(&b.id))
        })
        .map(|i| snippets[i].id.clone())
}

/// What changes from `old` to `new` (two configurations as the pipeline prints them), per
/// data path: `+ path` created (`: value` for a leaf), `- path` deleted, `~ path: old -> new`.
pub fn changes(schema: &Schema, old: &Value, new: &Value) -> Result<Vec<String>, String> {
    use yang3::data::{DataDiffFlags, DataDiffOp};
    let ctx = schema.context();
    let read = |v: &Value| {
        parse(ctx, v).map_err(|p| {
            p.into_iter()
                .map(|(path, m)| format!("{}{m}", path.map(|p| p + ": ").unwrap_or_default()))
                .collect::<Vec<_>>()
                .join("; ")
        })
    };
    let (old, new) = (read(old)?, read(new)?);
    let diff = match log::capture(|| old.diff(&new, DataDiffFlags::empty())) {
        (Ok(d), _) => d,
        (Err(e), diags) => {
            return Err(errors(diags, &e).into_iter().map(|(_, m)| m).collect::<Vec<_>>().join("; "));
        }
    };
    let mut out = Vec::new();
    for (op, node) in diff.iter() {
        let Some(path) = node_path(&node) else { continue };
        let path = unqualified(&path);
        let value = node.value_canonical();
        out.push(match (op, value) {
            (DataDiffOp::Create, Some(v)) => format!("+ {path}: {v}"),
            (DataDiffOp::Create, None) => format!("+ {path}"),
            (DataDiffOp::Delete, _) => format!("- {path}"),
            (DataDiffOp::Replace, v) => {
                let orig = node.meta().find(|m| m.name() == "orig-value").map(|m| m.value().to_string());
                format!("~ {path}: {} -> {}", orig.unwrap_or_default(), v.unwrap_or_default())
            }
        });
    }
    Ok(out)
}

/// Lenient JSON parsed into a tree of `ctx` without validation (values are still type checked);
/// every problem with its data path.
pub(crate) fn parse<'a>(ctx: &'a Context, value: &Value) -> Result<DataTree<'a>, Vec<(Option<String>, String)>> {
    let normal = normalize::normalize(ctx, value)
        .map_err(|misfits| misfits.into_iter().map(|m| (Some(m.path), m.message)).collect::<Vec<_>>())?;
    let text = normal.to_string();
    let flags = DataParserFlags::STRICT | DataParserFlags::NO_VALIDATION;
    match log::capture(|| DataTree::parse_string(ctx, &text, DataFormat::JSON, flags, DataValidationFlags::NO_STATE)) {
        (Ok(t), _) => Ok(t),
        (Err(e), diags) => Err(errors(diags, &e)),
    }
}

/// The errors libyang logged, or its last error when it logged none.
fn errors(diags: Vec<Diagnostic>, last: &yang3::Error) -> Vec<(Option<String>, String)> {
    let mut out: Vec<(Option<String>, String)> =
        diags.into_iter().filter(|d| d.error).map(|d| (d.data_path, d.message)).collect();
    if out.is_empty() {
        out.push((last.path.clone(), last.msg.clone().unwrap_or_else(|| "libyang failed without a message".into())));
    }
    out
}

/// The explicit nodes of `tree` as JSON, member names without their module unless two members
/// of one object share a name (the form sdcio and upstream choreo print).
pub(crate) fn print(tree: &DataTree<'_>) -> Value {
    if tree.reference().is_none() {
        return Value::Object(Map::new());
    }
    let text = tree
        .print_string(DataFormat::JSON, DataPrinterFlags::WITH_SIBLINGS | DataPrinterFlags::SHRINK)
        .unwrap_or_default();
    let value: Value = if text.trim().is_empty() {
        Value::Object(Map::new())
    } else {
        serde_json::from_str(&text).unwrap_or(Value::Object(Map::new()))
    };
    unqualify(value)
}

fn unqualify(v: Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut seen: HashMap<String, usize> = HashMap::new();
            for k in m.keys() {
                *seen.entry(local(k).to_string()).or_default() += 1;
            }
            Value::Object(
                m.into_iter()
                    .map(|(k, v)| {
                        let l = local(&k);
                        let name = if seen.get(l) == Some(&1) { l.to_string() } else { k };
                        (name, unqualify(v))
                    })
                    .collect(),
            )
        }
        Value::Array(a) => Value::Array(a.into_iter().map(unqualify).collect()),
        other => other,
    }
}

fn local(name: &str) -> &str {
    name.split_once(':').map_or(name, |(_, l)| l)
}

/// Every leaf and leaf-list item of `tree` (defaults included) with its data path.
fn leaves<'t, 'a>(tree: &'t DataTree<'a>) -> Vec<(String, DataNodeRef<'t>)> {
    tree.traverse()
        .filter(|n| matches!(n.schema().kind(), SchemaNodeKind::Leaf | SchemaNodeKind::LeafList))
        .filter_map(|n| node_path(&n).map(|p| (p, n)))
        .collect()
}

/// A node's data path, however long (`DataNodeRef::path` panics past 4 KiB: key values come
/// from users).
pub(crate) fn node_path(node: &DataNodeRef<'_>) -> Option<String> {
    use yang3::ffi;
    // SAFETY: `node` is a live node of its tree; with a null buffer libyang allocates the path,
    // which is freed here after copying it.
    unsafe {
        let raw = ffi::lyd_path(node.as_raw(), ffi::LYD_PATH_TYPE::LYD_PATH_STD, std::ptr::null_mut(), 0);
        if raw.is_null() {
            return None;
        }
        let s = std::ffi::CStr::from_ptr(raw).to_string_lossy().into_owned();
        libc::free(raw as *mut libc::c_void);
        Some(s)
    }
}

/// A data path without module prefixes (`/interfaces/interface[name='e1']/mtu`).
pub fn unqualified(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut in_quote: Option<char> = None;
    let mut segment_start = true;
    let mut pending = String::new();
    for c in path.chars() {
        match in_quote {
            Some(q) => {
                out.push(c);
                if c == q {
                    in_quote = None;
                }
            }
            None => match c {
                '\'' | '"' => {
                    out.push_str(&pending);
                    pending.clear();
                    in_quote = Some(c);
                    out.push(c);
                }
                '/' | '[' => {
                    out.push_str(&pending);
                    pending.clear();
                    out.push(c);
                    segment_start = true;
                }
                ':' if segment_start => pending.clear(),
                '=' | ']' => {
                    out.push_str(&pending);
                    pending.clear();
                    out.push(c);
                    segment_start = false;
                }
                _ => pending.push(c),
            },
        }
    }
    out.push_str(&pending);
    out
}

#[cfg(test)]
mod tests;

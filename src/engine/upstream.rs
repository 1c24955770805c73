//! Upstream packages: the `UpstreamRef` objects of a project's `refs/` resolved to directories
//! of files at their pinned commits, nested refs included.
//!
//! Each ref names a repository URL, a directory in it and a ref (`hash`, `tag` or `branch`).
//! The commit is fetched into a bare cache once and exported to a directory per commit
//! (`repo::fetch_commit`, `repo::export_commit`), so a load only touches the network the first
//! time a commit is needed. A package contributes its CRDs, reconcilers and libraries; with
//! `type: all` (or its synonym `full`) also its `in/` data, which is loaded with an `Upstream`
//! origin annotation. Two refs to the same URL and directory at different commits conflict.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::project::{self, Document, Layout};
use crate::repo;

/// How deep refs may nest (a package referring to a package …) before it is called a cycle.
const MAX_DEPTH: usize = 8;

/// One resolved upstream package.
#[derive(Debug, Clone)]
pub struct Package {
    /// The package's files, with the project's directory names.
    pub layout: Layout,
    /// Whether its `in/` data is loaded too.
    pub data: bool,
    /// The origin annotation of its data objects.
    pub origin: String,
    /// For messages: `URL@commit/directory`.
    pub label: String,
}

impl Package {
    /// A path of the package as messages show it: below its label.
    pub fn path(&self, rel: &Path) -> PathBuf {
        Path::new(&self.label).join(rel)
    }

    /// [`project::read_texts`] of one of the package's directories, paths (of texts and
    /// diagnostics alike) below the package's label.
    pub fn read_texts(&self, dir: &Path) -> (Vec<(PathBuf, String)>, Vec<project::Diagnostic>) {
        let (texts, mut diags) = project::read_texts(&self.layout, dir);
        for d in &mut diags {
            d.loc.file = self.path(&d.loc.file);
        }
        (texts.into_iter().map(|(file, text)| (self.path(&file), text)).collect(), diags)
    }
}

/// Resolves the refs of `layout` (and of the packages they name). `progress` hears about
/// fetches. Every problem names the refs file it comes from.
pub fn resolve(
    layout: &Layout,
    mut progress: repo::Progress<'_>,
) -> Result<(Vec<Package>, Vec<Document>), Vec<String>> {
    let mut out = Vec::new();
    let mut seen: BTreeMap<(String, String), (String, String)> = BTreeMap::new();
    let mut errors = Vec::new();
    let root_docs = collect(layout, layout, 0, &mut out, &mut seen, &mut errors, &mut progress);
    if errors.is_empty() {
        Ok((out, root_docs))
    } else {
        Err(errors)
    }
}

fn collect(
    project: &Layout,
    layout: &Layout,
    depth: usize,
    out: &mut Vec<Package>,
    seen: &mut BTreeMap<(String, String), (String, String)>,
    errors: &mut Vec<String>,
    progress: &mut repo::Progress<'_>,
) -> Vec<Document> {
    let (texts, diags) = project::read_texts(layout, &layout.refs);
    errors.extend(diags.iter().map(ToString::to_string));
    let mut docs = Vec::new();
    for (file, text) in &texts {
        let (parsed, diags) = project::parse_documents(file, text);
        errors.extend(diags.iter().map(ToString::to_string));
        docs.extend(parsed);
    }
    let cache = project.upstream_dir();
    let prefix = if depth == 0 { String::new() } else { format!("{}: ", layout.root.display()) };
    for doc in &docs {
        let at = format!("{prefix}{}", doc.loc);
        let v = &doc.value;
        if v.get("kind").and_then(Value::as_str) != Some("UpstreamRef") {
            errors.push(format!("{at}: only UpstreamRef objects belong in {}", layout.refs.display()));
            continue;
        }
        let spec = &v["spec"];
        let name = v["metadata"]["name"].as_str().unwrap_or("?");
        let Some(url) = spec.get("url").and_then(Value::as_str).filter(|u| !u.is_empty()) else {
            errors.push(format!("{at}: upstream ref {name}: spec.url is required"));
            continue;
        };
        let directory = spec.get("directory").and_then(Value::as_str).filter(|d| !d.is_empty()).unwrap_or(".");
        let kind = spec["ref"].get("type").and_then(Value::as_str).unwrap_or("hash");
        let Some(reference) = spec["ref"].get("name").and_then(Value::as_str).filter(|r| !r.is_empty()) else {
            errors.push(format!("{at}: upstream ref {name}: spec.ref.name is required"));
            continue;
        };
        if !matches!(kind, "hash" | "tag" | "branch") {
            errors.push(format!("{at}: upstream ref {name}: spec.ref.type must be hash, tag or branch, not {kind:?}"));
            continue;
        }
        if !repo::stays_inside(directory) {
            errors.push(format!(
                "{at}: upstream ref {name}: spec.directory {directory:?} must stay inside the repository"
            ));
            continue;
        }
        if depth + 1 >= MAX_DEPTH {
            // Before any fetch: a cycle would otherwise fetch until the limit.
            errors.push(format!("{at}: upstream refs nest deeper than {MAX_DEPTH} levels (a cycle?)"));
            continue;
        }
        let data = matches!(spec.get("type").and_then(Value::as_str), Some("all" | "full"));
        let (bare, oid) = match repo::fetch_commit(url, kind, reference, &cache.join("git"), progress.again()) {
            Ok(r) => r,
            Err(e) => {
                errors.push(format!("{at}: upstream ref {name}: {e}"));
                continue;
            }
        };
        let commit = oid.to_string();
        let key = (url.to_string(), directory.to_string());
        if let Some((other, first)) = seen.get(&key) {
            if *other != commit {
                errors.push(format!(
                    "{at}: upstream ref {name} wants {url} {directory} at {commit}, but {first} pins it at {other}"
                ));
            }
            continue;
        }
        seen.insert(key, (commit.clone(), at.clone()));
        let export = cache.join("exports").join(repo::cache_name(url)).join(&commit);
        if let Err(e) = repo::export_commit(&bare, oid, &export) {
            errors.push(format!("{at}: upstream ref {name}: {e}"));
            continue;
        }
        let pkg_root: PathBuf = if directory == "." { export.clone() } else { export.join(directory) };
        if !pkg_root.is_dir() {
            errors.push(format!("{at}: upstream ref {name}: {url} has no directory {directory} at {reference}"));
            continue;
        }
        let mut origin = serde_json::json!({"kind": "Upstream", "url": url, "ref": reference});
        if directory != "." {
            origin["directory"] = Value::from(directory);
        }
        // An export holds no links (their blobs are written as files), but a package is held to
        // its export all the same.
        let mut pkg_layout = project.with_root(pkg_root);
        pkg_layout.contain = Some(export.clone());
        let pkg = Package {
            layout: pkg_layout,
            data,
            origin: origin.to_string(),
            label: format!("{url}@{}/{directory}", &commit[..12]),
        };
        let child = pkg.layout.clone();
        out.push(pkg);
        collect(project, &child, depth + 1, out, seen, errors, progress);
    }
    docs
}

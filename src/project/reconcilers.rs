//! Reconciler and library sources: the developer's files, compiled to `Reconciler` and `Library`
//! objects.
//!
//! Two layouts load side by side. Current: every `reconcilers/**/config.yaml` is one reconciler
//! (named by its `metadata.name`) whose code is the other files of its directory. Legacy (the
//! upstream examples): every other top-level `reconcilers/<name>.yaml` is one reconciler named
//! after the file, whose code is the top-level files named `<name>.<something>`. The extension
//! decides the language: `.star` (one file, stored as `reconciler.star`), `.tpl` (Go
//! templates) or `.jinja2`; template files are stored under their name without the `<name>.`
//! prefix. Libraries are `crds/*.star` (named with `_` turned into `.`) and `libs/*.star` (named
//! by file name). A reconciler without code, with mixed languages or with two `.star` files is
//! an error naming its file. Links are followed as everywhere in the project ([`Bounds`]): a
//! broken one, or a link to a directory containing it (a loop), is an error naming it.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use super::files::{self, Bounds, Entry};
use super::{parse_documents, Diagnostic, Layout, SourceLoc};

/// A reconciler compiled from source files.
#[derive(Debug, Clone)]
pub struct ReconcilerSource {
    pub name: String,
    /// The compiled `Reconciler` object.
    pub object: Value,
    /// The configuration file, relative to the project.
    pub origin: PathBuf,
}

/// A Starlark library from a source file.
#[derive(Debug, Clone)]
pub struct LibrarySource {
    pub name: String,
    pub code: String,
    pub origin: PathBuf,
}

/// Reads every reconciler and library source of the project.
pub fn read_sources(layout: &Layout) -> (Vec<ReconcilerSource>, Vec<LibrarySource>, Vec<Diagnostic>) {
    let bounds = layout.bounds();
    let mut diags = Vec::new();
    let mut reconcilers = Vec::new();
    let dir = layout.root.join("reconcilers");
    match bounds.resolve(&dir) {
        Ok(Some(Entry::Dir)) => {
            let mut config_dirs = Vec::new();
            let mut walked = HashSet::new();
            let real = std::fs::canonicalize(&dir).unwrap_or_else(|_| dir.clone());
            find_config_dirs(&dir, real, &bounds, &mut walked, &mut config_dirs, &mut diags, layout);
            for d in config_dirs {
                match current_layout(layout, &bounds, &d) {
                    Ok(r) => reconcilers.push(r),
                    Err(d) => diags.push(d),
                }
            }
            // A top-level config.yaml that is a broken link was reported while walking.
            if matches!(bounds.entry(&dir.join("config.yaml")), Ok(None)) {
                legacy_layout(layout, &bounds, &dir, &mut reconcilers, &mut diags);
            }
        }
        Ok(_) => {}
        Err(e) => diags.push(whole(layout.relative(&dir), e)),
    }
    let mut seen: BTreeMap<String, PathBuf> = BTreeMap::new();
    for r in &reconcilers {
        if let Some(first) = seen.insert(r.name.clone(), r.origin.clone()) {
            diags.push(diag(&r.origin, format!("reconciler {} is also defined by {}", r.name, first.display())));
        }
    }
    let mut libraries = Vec::new();
    for (sub, rename) in [(layout.apis.as_path(), true), (Path::new("libs"), false)] {
        let d = layout.root.join(sub);
        for path in star_files(&d, &bounds, &mut diags, layout) {
            let file = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
            let name = if rename { file.replace('_', ".") } else { file };
            match std::fs::read_to_string(&path) {
                Ok(code) => libraries.push(LibrarySource { name, code, origin: layout.relative(&path).to_path_buf() }),
                Err(e) => diags.push(diag(layout.relative(&path), format!("cannot read: {e}"))),
            }
        }
    }
    reconcilers.sort_by(|a, b| a.name.cmp(&b.name));
    libraries.sort_by(|a, b| a.name.cmp(&b.name));
    (reconcilers, libraries, diags)
}

fn diag(file: &Path, message: String) -> Diagnostic {
    Diagnostic { loc: SourceLoc { file: file.to_path_buf(), line: 1, column: 1 }, message }
}

/// A problem with a file as a whole (it cannot be read), not with its content.
fn whole(file: &Path, message: String) -> Diagnostic {
    Diagnostic { loc: SourceLoc { file: file.to_path_buf(), line: 0, column: 0 }, message }
}

/// Whether `path` is a file to read (its link, if it is one, resolved inside the bounds).
/// Broken links are reported where their directory is listed.
fn is_file(bounds: &Bounds, path: &Path) -> bool {
    matches!(bounds.entry(path), Ok(Some(Entry::File)))
}

fn star_files(dir: &Path, bounds: &Bounds, diags: &mut Vec<Diagnostic>, layout: &Layout) -> Vec<PathBuf> {
    match bounds.resolve(dir) {
        Ok(Some(Entry::Dir)) => {}
        Ok(_) => return Vec::new(),
        Err(e) => {
            diags.push(whole(layout.relative(dir), e));
            return Vec::new();
        }
    }
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut out: Vec<PathBuf> = Vec::new();
    for e in entries {
        match e {
            Ok(e) => {
                let p = e.path();
                let name = e.file_name().to_string_lossy().into_owned();
                if !name.ends_with(".star") || files::is_noise(&name) {
                    continue;
                }
                match bounds.entry(&p) {
                    Ok(Some(Entry::File)) => out.push(p),
                    Ok(_) => {}
                    Err(e) => diags.push(whole(layout.relative(&p), e)),
                }
            }
            Err(e) => diags.push(diag(layout.relative(dir), format!("cannot read directory: {e}"))),
        }
    }
    out.sort();
    out
}

/// Directories (at any depth) that hold a `config.yaml`. `real` is the canonical path of `dir`;
/// a directory reached twice (through links) is walked once, and a link to a directory that
/// contains it is a loop. Every broken link of the tree is reported here.
fn find_config_dirs(
    dir: &Path,
    real: PathBuf,
    bounds: &Bounds,
    walked: &mut HashSet<PathBuf>,
    out: &mut Vec<PathBuf>,
    diags: &mut Vec<Diagnostic>,
    layout: &Layout,
) {
    if !walked.insert(real.clone()) {
        return;
    }
    if is_file(bounds, &dir.join("config.yaml")) {
        out.push(dir.to_path_buf());
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            diags.push(diag(layout.relative(dir), format!("cannot read directory: {e}")));
            return;
        }
    };
    // (is a link, path, canonical path): real directories first, so a directory also reached
    // through a link is named by its own path.
    let mut subdirs: Vec<(bool, PathBuf, PathBuf)> = Vec::new();
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        match bounds.entry(&path) {
            Ok(Some(Entry::Dir)) if !name.starts_with('.') => {
                let is_link = entry.file_type().is_ok_and(|t| t.is_symlink());
                let sub = if is_link {
                    std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone())
                } else {
                    real.join(&name)
                };
                if is_link && real.starts_with(&sub) {
                    let target = std::fs::read_link(&path).map_or_else(|_| "?".into(), |t| t.display().to_string());
                    diags.push(whole(layout.relative(&path), format!("symbolic link to {target} is a loop")));
                } else {
                    subdirs.push((is_link, path, sub));
                }
            }
            Ok(_) => {}
            Err(e) if !files::is_noise(&name) => diags.push(whole(layout.relative(&path), e)),
            Err(_) => {}
        }
    }
    subdirs.sort();
    for (_, d, sub) in subdirs {
        find_config_dirs(&d, sub, bounds, walked, out, diags, layout);
    }
}

/// The language and code key of one code file, or `None` for files that are not code.
fn code_entry(file: &str, reconciler: &str) -> Option<(&'static str, String)> {
    let stripped = file.strip_prefix(&format!("{reconciler}.")).unwrap_or(file).to_string();
    if file.ends_with(".star") {
        Some(("starlark", "reconciler.star".to_string()))
    } else if file.ends_with(".tpl") {
        Some(("gotemplate", stripped))
    } else if file.ends_with(".jinja2") {
        Some(("jinjatemplate", stripped))
    } else {
        None
    }
}

/// Reads one YAML config document into a `Reconciler` object.
fn read_config(layout: &Layout, path: &Path) -> Result<Value, Diagnostic> {
    let rel = layout.relative(path).to_path_buf();
    let text = std::fs::read_to_string(path).map_err(|e| diag(&rel, format!("cannot read: {e}")))?;
    let (docs, mut errors) = parse_documents(&rel, &text);
    if let Some(e) = errors.pop() {
        return Err(e);
    }
    let mut docs = docs.into_iter();
    let (Some(doc), None) = (docs.next(), docs.next()) else {
        return Err(diag(&rel, "a reconciler configuration holds exactly one document".into()));
    };
    let kind = doc.value.get("kind").and_then(Value::as_str).unwrap_or("");
    if kind != "Reconciler" {
        return Err(Diagnostic { loc: doc.loc, message: format!("expected a Reconciler, got kind {kind}") });
    }
    Ok(doc.value)
}

fn compile(
    layout: &Layout,
    config: &Path,
    mut object: Value,
    name: String,
    code_files: Vec<PathBuf>,
) -> Result<ReconcilerSource, Diagnostic> {
    let rel = layout.relative(config).to_path_buf();
    let mut lang: Option<&str> = None;
    let mut code = Map::new();
    for file in code_files {
        let fname = file.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        let Some((l, key)) = code_entry(&fname, &name) else { continue };
        if lang.is_some_and(|prev| prev != l) {
            return Err(diag(
                &rel,
                format!(
                    "reconciler {name} mixes {} and {l} code ({})",
                    lang.unwrap_or_default(),
                    layout.relative(&file).display()
                ),
            ));
        }
        if code.contains_key(&key) {
            return Err(diag(
                &rel,
                format!("reconciler {name} has more than one {key} ({})", layout.relative(&file).display()),
            ));
        }
        lang = Some(l);
        let text =
            std::fs::read_to_string(&file).map_err(|e| diag(layout.relative(&file), format!("cannot read: {e}")))?;
        code.insert(key, Value::String(text));
    }
    let Some(lang) = lang else {
        return Err(diag(&rel, format!("reconciler {name} has no code: add a .star, .tpl or .jinja2 file next to it")));
    };
    let map = object.as_object_mut().ok_or_else(|| diag(&rel, "a reconciler must be a map".into()))?;
    let meta = map.entry("metadata").or_insert_with(|| json!({}));
    if let Some(m) = meta.as_object_mut() {
        m.insert("name".into(), Value::String(name.clone()));
    }
    let spec = map.entry("spec").or_insert_with(|| json!({}));
    let Some(spec) = spec.as_object_mut() else {
        return Err(diag(&rel, "spec: must be a map".into()));
    };
    spec.insert("type".into(), Value::String(lang.to_string()));
    spec.insert("code".into(), Value::Object(code));
    Ok(ReconcilerSource { name, object, origin: rel })
}

fn current_layout(layout: &Layout, bounds: &Bounds, dir: &Path) -> Result<ReconcilerSource, Diagnostic> {
    let config = dir.join("config.yaml");
    let object = read_config(layout, &config)?;
    let name = object
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            diag(layout.relative(&config), "metadata.name: Required value: a config.yaml names its reconciler".into())
        })?
        .to_string();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| diag(layout.relative(dir), format!("cannot read directory: {e}")))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().is_some_and(|n| n != "config.yaml" && !files::is_noise(&n.to_string_lossy()))
                && is_file(bounds, p)
        })
        .collect();
    files.sort();
    compile(layout, &config, object, name, files)
}

fn legacy_layout(
    layout: &Layout,
    bounds: &Bounds,
    dir: &Path,
    out: &mut Vec<ReconcilerSource>,
    diags: &mut Vec<Diagnostic>,
) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut all: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| !files::is_noise(&n.to_string_lossy())) && is_file(bounds, p))
        .collect();
    all.sort();
    for config in all.iter().filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml")) {
        let file = config.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let name = file.trim_end_matches(".yaml").trim_end_matches(".yml").to_string();
        let prefix = format!("{name}.");
        let code_files: Vec<PathBuf> = all
            .iter()
            .filter(|p| *p != config)
            .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(&prefix)))
            .filter(|p| {
                // A longer reconciler name sharing this prefix owns its own files.
                let n = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                !all.iter().any(|c| {
                    c != config
                        && c.extension().is_some_and(|e| e == "yaml" || e == "yml")
                        && c.file_name().and_then(|f| f.to_str()).is_some_and(|f| {
                            let other = f.trim_end_matches(".yaml").trim_end_matches(".yml");
                            other.len() > name.len() && n.starts_with(&format!("{other}."))
                        })
                })
            })
            .cloned()
            .collect();
        match read_config(layout, config).and_then(|obj| compile(layout, config, obj, name, code_files)) {
            Ok(r) => out.push(r),
            Err(d) => diags.push(d),
        }
    }
}

/// The compiled objects `dev parse` writes, as (file name under `in/`, YAML text).
pub fn compiled_files(reconcilers: &[ReconcilerSource], libraries: &[LibrarySource]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for r in reconcilers {
        let mut obj = r.object.clone();
        crate::api::meta::set_annotation(
            &mut obj,
            crate::api::object::ORIGIN_ANNOTATION,
            crate::api::object::ORIGIN_FILE,
        );
        out.push((format!("choreo.kform.dev.reconciler.{}.yaml", r.name), to_yaml(&obj)));
    }
    for l in libraries {
        let obj = library_object(&l.name, &l.code);
        out.push((format!("choreo.kform.dev.library.{}.yaml", l.name), to_yaml(&obj)));
    }
    out
}

/// The `Library` object of a library source.
pub fn library_object(name: &str, code: &str) -> Value {
    json!({
        "apiVersion": "choreo.kform.dev/v1alpha1",
        "kind": "Library",
        "metadata": {"name": name, "annotations": {crate::api::object::ORIGIN_ANNOTATION: crate::api::object::ORIGIN_FILE}},
        "spec": {"type": "starlark", "code": code},
    })
}

fn to_yaml(v: &Value) -> String {
    crate::api::object::to_yaml(v).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(files: &[(&str, &str)]) -> (tempfile::TempDir, Layout) {
        let dir = tempfile::tempdir().unwrap();
        for (p, text) in files {
            let path = dir.path().join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        let layout = Layout::new(dir.path());
        (dir, layout)
    }

    const CONFIG: &str = "apiVersion: choreo.kform.dev/v1alpha1\nkind: Reconciler\nmetadata:\n  name: greeter\nspec:\n  for: {group: example.com, version: v1alpha1, kind: Greeter, selector: {}}\n";

    #[test]
    fn current_and_legacy_layouts_and_libraries() {
        let (_d, layout) = project(&[
            ("reconcilers/greeter/config.yaml", CONFIG),
            ("reconcilers/greeter/code.star", "def reconcile(self): pass\n"),
            ("reconcilers/old.one.yaml", &CONFIG.replace("greeter", "ignored")),
            ("reconcilers/old.one.main.tpl", "kind: X\n"),
            ("reconcilers/old.one.helper.tpl", "{{define \"h\"}}{{end}}"),
            ("crds/example.com_util.star", "def f(): pass\n"),
            ("libs/api.k8s.io.object.star", "def g(): pass\n"),
        ]);
        let (recs, libs, diags) = read_sources(&layout);
        assert!(diags.is_empty(), "{diags:?}");
        let names: Vec<_> = recs.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["greeter", "old.one"]);
        assert_eq!(recs[0].object["spec"]["type"], "starlark");
        assert!(recs[0].object["spec"]["code"]["reconciler.star"].is_string());
        assert_eq!(recs[1].object["spec"]["type"], "gotemplate");
        assert_eq!(recs[1].object["metadata"]["name"], "old.one", "legacy names come from the file");
        assert!(recs[1].object["spec"]["code"]["main.tpl"].is_string());
        assert!(recs[1].object["spec"]["code"]["helper.tpl"].is_string());
        let lib_names: Vec<_> = libs.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(lib_names, ["api.k8s.io.object.star", "example.com.util.star"]);
        let files = compiled_files(&recs, &libs);
        assert_eq!(files[0].0, "choreo.kform.dev.reconciler.greeter.yaml");
        assert!(files.iter().any(|(f, _)| f == "choreo.kform.dev.library.api.k8s.io.object.star.yaml"));
    }

    #[test]
    fn broken_loop_and_outside_links_are_errors_naming_the_file() {
        use std::os::unix::fs::symlink;
        let (d, mut layout) = project(&[
            ("reconcilers/greeter/config.yaml", CONFIG),
            ("reconcilers/greeter/code.star", "def reconcile(self): pass\n"),
            ("libs/ok.star", "def f(): pass\n"),
        ]);
        let root = d.path();
        symlink("/nowhere/helper.star", root.join("reconcilers/greeter/helper.star")).unwrap();
        symlink("..", root.join("reconcilers/greeter/up")).unwrap();
        symlink("greeter", root.join("reconcilers/alias")).unwrap();
        symlink("/nowhere/lib.star", root.join("libs/gone.star")).unwrap();
        let (recs, libs, diags) = read_sources(&layout);
        let diags: Vec<_> = diags.iter().map(ToString::to_string).collect();
        assert_eq!(
            diags,
            [
                "reconcilers/greeter/helper.star: symbolic link to /nowhere/helper.star that does not resolve",
                "reconcilers/greeter/up: symbolic link to .. is a loop",
                "libs/gone.star: symbolic link to /nowhere/lib.star that does not resolve",
            ]
        );
        assert_eq!(recs.len(), 1, "a directory reached again through a link is walked once");
        assert_eq!(libs.len(), 1);

        // Contained: a library linked from outside is refused.
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("x.star"), "def g(): pass\n").unwrap();
        std::fs::remove_file(root.join("libs/gone.star")).unwrap();
        std::fs::remove_file(root.join("reconcilers/greeter/helper.star")).unwrap();
        std::fs::remove_file(root.join("reconcilers/greeter/up")).unwrap();
        symlink(outside.path().join("x.star"), root.join("libs/x.star")).unwrap();
        let (_, libs, diags) = read_sources(&layout);
        assert!(diags.is_empty(), "static mode reads links out of the project: {diags:?}");
        assert_eq!(libs.len(), 2);
        layout.contain = Some(root.to_path_buf());
        let (_, libs, diags) = read_sources(&layout);
        assert_eq!(libs.len(), 1);
        assert_eq!(diags.len(), 1);
        assert!(diags[0].to_string().starts_with("libs/x.star: symbolic link to "), "{}", diags[0]);
        assert!(diags[0].message.contains(", outside "), "{}", diags[0]);
    }

    #[test]
    fn missing_and_mixed_code_are_errors_naming_the_file() {
        let (_d, layout) = project(&[("reconcilers/greeter/config.yaml", CONFIG)]);
        let (_, _, diags) = read_sources(&layout);
        assert_eq!(diags.len(), 1);
        assert!(
            diags[0].to_string().starts_with("reconcilers/greeter/config.yaml:1:1: reconciler greeter has no code"),
            "{}",
            diags[0]
        );
        let (_d, layout) = project(&[
            ("reconcilers/greeter/config.yaml", CONFIG),
            ("reconcilers/greeter/a.star", ""),
            ("reconcilers/greeter/b.tpl", ""),
        ]);
        let (_, _, diags) = read_sources(&layout);
        assert!(diags[0].message.contains("mixes"), "{}", diags[0]);
        let (_d, layout) = project(&[
            ("reconcilers/greeter/config.yaml", CONFIG),
            ("reconcilers/greeter/a.star", ""),
            ("reconcilers/greeter/b.star", ""),
        ]);
        let (_, _, diags) = read_sources(&layout);
        assert!(diags[0].message.contains("more than one reconciler.star"), "{}", diags[0]);
    }
}

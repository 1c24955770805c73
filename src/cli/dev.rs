//! `choreo dev`: work on a project's reconcilers without a server.
//!
//! Invariant: nothing here talks to a server; everything runs in this process on the files.

use std::path::Path;
use std::sync::Arc;

use serde_json::Value;

use super::{emit, CliError, DataFormat};
use crate::reconcile::offline::OfflineClient;
use crate::reconcile::{self, Budget, Interrupt, Libraries, Outcome, ReconcilerConfig};

/// Compiles reconciler and library sources into `in/`.
pub(super) fn parse(dir: &Path) -> Result<(), CliError> {
    let root = std::fs::canonicalize(dir)
        .map_err(|e| CliError::Usage(format!("invalid project directory {}: {e}", dir.display())))?;
    let layout = crate::project::Layout::new(root);
    let (reconcilers, libraries, diags) = crate::project::reconcilers::read_sources(&layout);
    if !diags.is_empty() {
        for d in &diags {
            eprintln!("Error: {d}");
        }
        return Err(CliError::Reported);
    }
    let mut text = String::new();
    for (file, yaml) in crate::project::reconcilers::compiled_files(&reconcilers, &libraries) {
        let path = layout.input_dir().join(&file);
        crate::project::files::write_atomic(&path, yaml.as_bytes())
            .map_err(|e| CliError::Failed(format!("cannot write {}: {e}", path.display())))?;
        text.push_str(&format!("wrote {}\n", layout.relative(&path).display()));
    }
    if text.is_empty() {
        eprintln!("no reconciler or library sources in {}", layout.root.display());
    }
    emit(&text)
}

/// Reconciles every object of `file` with `reconciler` offline and prints the children.
pub(super) fn render(dir: &Path, reconciler: &str, file: &Path, output: DataFormat) -> Result<(), CliError> {
    let root = std::fs::canonicalize(dir)
        .map_err(|e| CliError::Usage(format!("invalid project directory {}: {e}", dir.display())))?;
    let layout = crate::project::Layout::new(root);
    let (sources, library_sources, diags) = crate::project::reconcilers::read_sources(&layout);
    for d in &diags {
        eprintln!("warning: {d}");
    }
    let mut libraries: std::collections::BTreeMap<String, String> =
        library_sources.into_iter().map(|l| (l.name, l.code)).collect();
    let source = sources.into_iter().find(|s| s.name == reconciler).map(|s| s.object);
    // Compiled Reconciler and Library objects in in/ count too (the third project form), with
    // the load's precedence: sources win. Reading in/ is only needed when the reconciler is not
    // among the sources, or when it is Starlark and may load a compiled library.
    let is_starlark = |obj: &Value| obj["spec"]["type"].as_str().is_none_or(|t| t == "starlark");
    let mut compiled = None;
    if source.as_ref().is_none_or(is_starlark) {
        let (documents, _) = crate::project::read_dir_documents(&layout, &layout.input_dir());
        let choreo = crate::api::object::api_version(crate::api::builtin::CHOREO_GROUP, "v1alpha1");
        for doc in documents.into_iter().filter(|d| d.value["apiVersion"].as_str() == Some(choreo.as_str())) {
            let v = doc.value;
            let name = crate::api::object::name(&v).unwrap_or("").to_string();
            match v["kind"].as_str() {
                Some("Library") if is_starlark(&v) => {
                    if let Some(code) = v["spec"]["code"].as_str() {
                        libraries.entry(name).or_insert_with(|| code.to_string());
                    }
                }
                Some("Reconciler") if name == reconciler => compiled = Some(v),
                _ => {}
            }
        }
    }
    let object = source
        .or(compiled)
        .ok_or_else(|| CliError::Usage(format!("no reconciler named {reconciler:?} in {}", layout.root.display())))?;
    let cfg = Arc::new(
        ReconcilerConfig::from_object(&object)
            .map_err(|e| CliError::Failed(format!("reconciler {reconciler}: {e}")))?,
    );
    let runtime = reconcile::compile(cfg.clone(), &Arc::new(Libraries::new(libraries)))
        .map_err(|e| CliError::Failed(format!("reconciler {reconciler}: {e}")))?;
    let text = if file == Path::new("-") {
        std::io::read_to_string(std::io::stdin()).map_err(|e| CliError::Failed(format!("cannot read stdin: {e}")))?
    } else {
        std::fs::read_to_string(file).map_err(|e| CliError::Failed(format!("cannot read {}: {e}", file.display())))?
    };
    let source = if file == Path::new("-") { Path::new("<stdin>") } else { file };
    let (documents, diags) = crate::project::parse_documents(source, &text);
    if !diags.is_empty() {
        for d in &diags {
            eprintln!("Error: {d}");
        }
        return Err(CliError::Reported);
    }
    if documents.is_empty() {
        return Err(CliError::Usage(format!("{}: no object to render", source.display())));
    }
    let interrupt = Interrupt::default();
    let mut children = Vec::new();
    for (i, doc) in documents.into_iter().enumerate() {
        let mut obj = doc.value;
        if let Some(meta) = crate::api::object::metadata_mut(&mut obj) {
            // What the store would have given it: an identity, and the default namespace.
            meta.entry("uid").or_insert_with(|| Value::String(format!("dev-render-{i}")));
            meta.entry("namespace").or_insert_with(|| Value::String("default".into()));
        }
        let kind = obj["kind"].as_str().unwrap_or("");
        let (group, _) = crate::api::object::split_api_version(obj["apiVersion"].as_str().unwrap_or(""));
        if kind != cfg.for_.kind || group != cfg.for_.group {
            return Err(CliError::Failed(format!(
                "{}: a {kind} of group {group:?} is not what {reconciler} reconciles ({})",
                doc.loc, cfg.for_
            )));
        }
        let mut client = OfflineClient::new(obj.clone(), crate::store::now_rfc3339());
        let budget = Budget::start(cfg.limits, None, &interrupt);
        match runtime.reconcile(&obj, &mut client, &budget) {
            Outcome::Error(e) => {
                return Err(CliError::Failed(format!("{reconciler}: {}: {e}", doc.loc)));
            }
            Outcome::Requeue { message, .. } if !message.is_empty() => {
                eprintln!("{}: requeue: {message}", doc.loc);
            }
            _ => {}
        }
        children.extend(client.children().into_iter().cloned());
    }
    let text = match output {
        DataFormat::Json => {
            serde_json::to_string_pretty(&Value::Array(children)).map_err(|e| CliError::Failed(e.to_string()))? + "\n"
        }
        DataFormat::Yaml => children
            .iter()
            .map(|c| crate::api::object::to_yaml(c).map_err(|e| CliError::Failed(e.to_string())))
            .collect::<Result<Vec<_>, _>>()?
            .join("---\n"),
    };
    emit(&text)
}

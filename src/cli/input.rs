//! Reading `-f FILE|DIR|-` arguments into protocol documents, with locations.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::CliError;
use crate::project::{self, files};
use crate::protocol::Document;

/// Reads every object of the given files, directories (`recursive` descends) and `-` (stdin).
/// Parse errors are all reported at once, before anything reaches the server.
pub fn read_documents(args: &[String], recursive: bool) -> Result<Vec<Document>, CliError> {
    let mut paths: Vec<(String, Option<PathBuf>)> = Vec::new();
    for arg in args {
        if arg == "-" {
            paths.push(("-".into(), None));
            continue;
        }
        let path = PathBuf::from(arg);
        if path.is_dir() {
            collect_dir(&path, recursive, &mut paths)?;
        } else if path.exists() {
            paths.push((arg.clone(), Some(path)));
        } else {
            return Err(CliError::Failed(format!("{arg}: no such file or directory")));
        }
    }
    let mut docs = Vec::new();
    let mut errors = Vec::new();
    for (name, path) in paths {
        let text = match &path {
            None => {
                let mut s = String::new();
                std::io::stdin()
                    .read_to_string(&mut s)
                    .map_err(|e| CliError::Failed(format!("cannot read stdin: {e}")))?;
                s
            }
            Some(p) => std::fs::read_to_string(p).map_err(|e| CliError::Failed(format!("{name}: {e}")))?,
        };
        let (parsed, diags) = project::parse_documents(Path::new(&name), &text);
        errors.extend(diags.iter().map(ToString::to_string));
        for doc in parsed {
            flatten(&doc.loc.to_string(), doc.value, &mut docs);
        }
    }
    if !errors.is_empty() {
        for e in &errors {
            eprintln!("Error: {e}");
        }
        return Err(CliError::Reported);
    }
    Ok(docs)
}

fn flatten(source: &str, value: Value, out: &mut Vec<Document>) {
    let is_list = value.get("kind").and_then(Value::as_str).is_some_and(|k| k == "List" || k.ends_with("List"))
        && value.get("items").is_some_and(Value::is_array);
    if is_list {
        if let Some(Value::Array(items)) = value.get("items") {
            for (i, item) in items.iter().enumerate() {
                flatten(&format!("{source} items[{i}]"), item.clone(), out);
            }
        }
        return;
    }
    out.push(Document { source: source.to_string(), json: value.to_string() });
}

fn collect_dir(dir: &Path, recursive: bool, out: &mut Vec<(String, Option<PathBuf>)>) -> Result<(), CliError> {
    let (listed, broken) = files::list_yaml_files(dir, &files::Bounds::none())
        .map_err(|e| CliError::Failed(format!("{}: {e}", dir.display())))?;
    if let Some((path, e)) = broken.first() {
        return Err(CliError::Failed(format!("{}: {e}", path.display())));
    }
    for file in listed {
        out.push((file.display().to_string(), Some(file)));
    }
    if recursive {
        let mut subdirs: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| CliError::Failed(format!("{}: {e}", dir.display())))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_dir() && !p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.')))
            .collect();
        subdirs.sort();
        for d in subdirs {
            collect_dir(&d, true, out)?;
        }
    }
    Ok(())
}

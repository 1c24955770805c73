//! sdcio `Schema` manifests (`inv.sdcio.dev/v1alpha1`, kind `Schema`) in `schemas/*.yaml`,
//! resolved against the project's own directories.
//!
//! sdcio's config server clones each of a manifest's repositories and copies their `dirs`
//! into `<provider>/<version>/`; here those files are already in `schemas/<provider>/<version>/`
//! (nothing is fetched). What the manifest still decides is which files are what:
//! `schema.models` (files or directories) hold the modules that are implemented,
//! `schema.includes` directories are only searched for imports, and `schema.excludes` are
//! regular expressions of paths to leave out. Without a manifest every module is implemented.
//!
//! Architecture invariant: reads the manifests only; knows nothing of libyang.

use std::path::{Component, Path, PathBuf};

use serde_json::Value;

use super::schema::SchemaKey;

/// The largest manifest file read.
const MAX_MANIFEST_BYTES: u64 = 1 << 20;

/// What a manifest says about one schema's files.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The file it came from (for messages).
    pub file: PathBuf,
    /// Relative to the schema's directory; `.` is all of it.
    pub models: Vec<PathBuf>,
    pub includes: Vec<PathBuf>,
    pub excludes: Vec<regex::Regex>,
    /// A hash of the manifest's text, part of the schema's fingerprint.
    pub hash: u64,
}

/// Why a manifest cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct ManifestError {
    pub file: PathBuf,
    pub message: String,
}

impl Manifest {
    /// How the file at `rel` (relative to the schema's directory) is used.
    pub fn role(&self, rel: &Path) -> Role {
        let text = rel.to_string_lossy();
        if self.excludes.iter().any(|r| r.is_match(&text)) {
            Role::Excluded
        } else if self.models.iter().any(|m| m == Path::new(".") || rel.starts_with(m)) {
            Role::Model
        } else if self.includes.iter().any(|i| i == Path::new(".") || rel.starts_with(i)) {
            Role::Include
        } else {
            Role::Excluded
        }
    }
}

/// What a file of a schema is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Its module is implemented.
    Model,
    /// Only searched for imports.
    Include,
    /// Not read.
    Excluded,
}

/// The manifest for `key` among the top-level `*.yaml` and `*.yml` files of `root`, if any.
/// A manifest that is unreadable or wrong is an error only when it is the one for `key` (or
/// when its provider and version cannot be told).
pub fn find(root: &Path, key: &SchemaKey) -> Result<Option<Manifest>, ManifestError> {
    let Ok(entries) = std::fs::read_dir(root) else { return Ok(None) };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    let mut found: Option<Manifest> = None;
    for file in files {
        let err = |message: String| ManifestError { file: file.clone(), message };
        let meta = std::fs::symlink_metadata(&file).map_err(|e| err(e.to_string()))?;
        if !meta.is_file() {
            continue;
        }
        if meta.len() > MAX_MANIFEST_BYTES {
            return Err(err(format!("larger than {MAX_MANIFEST_BYTES} bytes")));
        }
        let text = std::fs::read_to_string(&file).map_err(|e| err(e.to_string()))?;
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let value = <Value as serde::Deserialize>::deserialize(doc).map_err(|e| err(format!("not YAML: {e}")))?;
            if value.get("kind").and_then(Value::as_str) != Some("Schema")
                || !value.get("apiVersion").and_then(Value::as_str).is_some_and(|v| v.starts_with("inv.sdcio.dev/"))
            {
                continue;
            }
            let spec = value.get("spec").cloned().unwrap_or(Value::Null);
            let text_of = |k: &str| spec.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
            let (provider, version) = (text_of("provider"), text_of("version"));
            if provider.is_empty() || version.is_empty() {
                return Err(err("a Schema needs spec.provider and spec.version".into()));
            }
            if provider != key.provider || version != key.version {
                continue;
            }
            if found.is_some() {
                return Err(err(format!("a second Schema for {key}")));
            }
            found = Some(parse(&file, &spec, &text).map_err(err)?);
        }
    }
    Ok(found)
}

fn parse(file: &Path, spec: &Value, text: &str) -> Result<Manifest, String> {
    let mut m = Manifest {
        file: file.to_path_buf(),
        models: Vec::new(),
        includes: Vec::new(),
        excludes: Vec::new(),
        hash: xxhash_rust::xxh3::xxh3_64(text.as_bytes()),
    };
    let repos = match spec.get("repositories") {
        Some(Value::Array(r)) => r.clone(),
        None | Some(Value::Null) => Vec::new(),
        Some(_) => return Err("spec.repositories is not a list".into()),
    };
    let strings = |v: Option<&Value>, what: &str| -> Result<Vec<String>, String> {
        match v {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(a)) => a
                .iter()
                .map(|s| s.as_str().map(str::to_string).ok_or_else(|| format!("{what} holds a non-string")))
                .collect(),
            Some(_) => Err(format!("{what} is not a list")),
        }
    };
    for (i, repo) in repos.iter().enumerate() {
        let schema = repo.get("schema");
        let at = |k: &str| format!("spec.repositories[{i}].schema.{k}");
        for s in strings(schema.and_then(|s| s.get("models")), &at("models"))? {
            m.models.push(relative(&s).map_err(|e| format!("{}: {e}", at("models")))?);
        }
        for s in strings(schema.and_then(|s| s.get("includes")), &at("includes"))? {
            m.includes.push(relative(&s).map_err(|e| format!("{}: {e}", at("includes")))?);
        }
        for s in strings(schema.and_then(|s| s.get("excludes")), &at("excludes"))? {
            m.excludes.push(regex::Regex::new(&s).map_err(|e| format!("{}: {s:?}: {e}", at("excludes")))?);
        }
    }
    // sdcio: no models means the whole directory.
    if m.models.is_empty() {
        m.models.push(PathBuf::from("."));
    }
    Ok(m)
}

/// A path inside the schema's directory.
fn relative(s: &str) -> Result<PathBuf, String> {
    let p = Path::new(s.trim());
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            _ => return Err(format!("{s:?} leaves the schema's directory")),
        }
    }
    Ok(if out.as_os_str().is_empty() { PathBuf::from(".") } else { out })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SchemaKey {
        SchemaKey { provider: "srl.nokia.sdcio.dev".into(), version: "24.7.2".into() }
    }

    const MANIFEST: &str = "apiVersion: inv.sdcio.dev/v1alpha1
kind: Schema
metadata: {name: srl.nokia.sdcio.dev-24.7.2}
spec:
  provider: srl.nokia.sdcio.dev
  version: 24.7.2
  repositories:
  - repoURL: https://github.com/nokia/srlinux-yang-models
    kind: tag
    ref: v24.7.2
    dirs: [{src: srlinux-yang-models, dst: .}]
    schema:
      models: [srl_nokia/models]
      includes: [ietf, openconfig/extensions]
      excludes: ['.*tools.*']
";

    #[test]
    fn a_manifest_decides_what_is_implemented_searched_and_left_out() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("srl.yaml"), format!("---\nkind: Other\n---\n{MANIFEST}")).unwrap();
        std::fs::write(tmp.path().join("notes.txt"), "not a manifest").unwrap();
        let m = find(tmp.path(), &key()).unwrap().expect("found");
        assert_eq!(m.role(Path::new("srl_nokia/models/interfaces/srl_nokia-interfaces.yang")), Role::Model);
        assert_eq!(m.role(Path::new("ietf/ietf-inet-types.yang")), Role::Include);
        assert_eq!(m.role(Path::new("srl_nokia/models/tools/srl_nokia-tools.yang")), Role::Excluded);
        assert_eq!(m.role(Path::new("openconfig/interfaces/x.yang")), Role::Excluded);
        let other = SchemaKey { provider: "srl.nokia.sdcio.dev".into(), version: "1".into() };
        assert!(find(tmp.path(), &other).unwrap().is_none());
    }

    #[test]
    fn bad_manifests_are_named() {
        let tmp = tempfile::tempdir().unwrap();
        for (text, why) in [
            (MANIFEST.replace("[srl_nokia/models]", "[../elsewhere]"), "leaves the schema's directory"),
            (MANIFEST.replace("'.*tools.*'", "'(('"), "excludes"),
            (MANIFEST.replace("  version: 24.7.2\n", ""), "spec.version"),
            (format!("{MANIFEST}---\n{MANIFEST}"), "a second Schema"),
        ] {
            std::fs::write(tmp.path().join("s.yaml"), &text).unwrap();
            let e = find(tmp.path(), &key()).unwrap_err().to_string();
            assert!(e.contains(why) && e.contains("s.yaml"), "{e}");
        }
    }
}

//! The file changes one `apply` or `delete` request makes, planned in memory before any file is
//! touched.
//!
//! Every edit of an existing file starts from the file's current text, read now, and finds the
//! object's document by identity (group, kind, namespace, name), never by a position remembered
//! from an earlier load: the user may have edited the file since. A document that cannot be found
//! exactly once is a refusal naming the file. Several edits of one file in one request apply to
//! the text the previous edit left. Nothing here writes: the plan is handed to the journal.
//! *Invariant:* knows file texts and object identities, not the store or the request.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::api::object::ObjectKey;
use crate::project;

/// Longest file name written for a new object, in bytes (Linux allows 255; the rest is headroom
/// for editors' backup and swap names next to it).
const MAX_FILE_NAME: usize = 200;

/// A planned change of one file.
#[derive(Debug)]
pub(super) struct PlannedFile {
    /// The file's content when the plan read it; `None` when it did not exist.
    pub before: Option<String>,
    /// The content the plan gives it; `None` removes it.
    pub after: Option<String>,
    /// Symbolic links the file was edited through (the loader knows it by those paths).
    pub via: Vec<PathBuf>,
}

/// Planned file changes, by absolute path.
#[derive(Debug, Default)]
pub(super) struct FilePlan {
    /// The project directory: messages name files relative to it.
    root: PathBuf,
    files: BTreeMap<PathBuf, PlannedFile>,
    /// File names this plan creates in the input directory (besides those on disk).
    created: HashSet<String>,
}

impl FilePlan {
    pub fn new(root: &Path) -> FilePlan {
        FilePlan { root: root.to_path_buf(), ..FilePlan::default() }
    }

    /// `path` as messages show it: relative to the project.
    fn show<'a>(&self, path: &'a Path) -> std::path::Display<'a> {
        path.strip_prefix(&self.root).unwrap_or(path).display()
    }
    /// The current text of `path` in this plan (read from disk the first time).
    fn text(&mut self, path: &Path) -> Result<Option<&str>, String> {
        if !self.files.contains_key(path) {
            let before = match std::fs::read_to_string(path) {
                Ok(t) => Some(t),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(format!("cannot read {}: {e}", self.show(path))),
            };
            self.files.insert(path.to_path_buf(), PlannedFile { after: before.clone(), before, via: Vec::new() });
        }
        Ok(self.files.get(path).and_then(|f| f.after.as_deref()))
    }

    /// Replaces the document of `key` in `path` with `yaml`, keeping every other byte.
    pub fn replace(&mut self, path: &Path, key: &ObjectKey, yaml: &str) -> Result<(), String> {
        let path = &self.written_path(path)?;
        let shown = self.show(path).to_string();
        let text = self.text(path)?.ok_or_else(|| gone(&shown, key))?;
        let span = find_document(&shown, text, key)?;
        let mut out = String::with_capacity(text.len() + yaml.len());
        out.push_str(&text[..span.start]);
        if text[span.clone()].starts_with("---") {
            out.push_str("---\n");
        }
        out.push_str(yaml);
        out.push_str(&text[span.end..]);
        self.set(path, Some(out));
        Ok(())
    }

    /// Cuts the document of `key` from `path`; the file goes when no document is left.
    pub fn cut(&mut self, path: &Path, key: &ObjectKey) -> Result<(), String> {
        let path = &self.written_path(path)?;
        let shown = self.show(path).to_string();
        let text = self.text(path)?.ok_or_else(|| gone(&shown, key))?;
        let span = find_document(&shown, text, key)?;
        let mut out = String::with_capacity(text.len());
        out.push_str(&text[..span.start]);
        out.push_str(&text[span.end..]);
        let (docs, _) = project::parse_documents(path, &out);
        let empty = docs.is_empty() && out.lines().all(|l| l.trim().is_empty() || l.trim() == "---");
        self.set(path, if empty { None } else { Some(out) });
        Ok(())
    }

    /// Plans a new file for `key` in `input_dir` holding `yaml`; returns its path.
    pub fn create(&mut self, input_dir: &Path, key: &ObjectKey, yaml: String) -> Result<PathBuf, String> {
        // A name is taken when this plan creates it or anything (even a broken link) has it; a
        // look at each candidate, not a listing of a directory that may hold 100k files.
        let created = &self.created;
        let taken = |name: &str| created.contains(name) || std::fs::symlink_metadata(input_dir.join(name)).is_ok();
        let name = new_file_name(key, taken)?;
        self.created.insert(name.clone());
        let path = input_dir.join(name);
        self.files.insert(path.clone(), PlannedFile { before: None, after: Some(yaml), via: Vec::new() });
        Ok(path)
    }

    /// The file an edit of `path` writes: the target of a symbolic link (the loader already held
    /// it to the project's bounds), so the link stays a link; the link is remembered on the
    /// target's entry.
    fn written_path(&mut self, path: &Path) -> Result<PathBuf, String> {
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_symlink() => {
                let target = std::fs::canonicalize(path)
                    .map_err(|e| format!("{}: symbolic link that does not resolve: {e}", self.show(path)))?;
                self.text(&target)?;
                if let Some(f) = self.files.get_mut(&target) {
                    if !f.via.iter().any(|v| v == path) {
                        f.via.push(path.to_path_buf());
                    }
                }
                Ok(target)
            }
            _ => Ok(path.to_path_buf()),
        }
    }

    fn set(&mut self, path: &Path, after: Option<String>) {
        if let Some(f) = self.files.get_mut(path) {
            f.after = after;
        }
    }

    /// The files whose content the plan changes.
    pub fn into_changes(self) -> Vec<(PathBuf, PlannedFile)> {
        self.files.into_iter().filter(|(_, f)| f.before != f.after).collect()
    }
}

fn gone(shown: &str, key: &ObjectKey) -> String {
    format!("{shown} no longer exists, so it no longer defines {key}; run `choreo run load` and retry")
}

/// The byte range of the one document of `text` that is the object `key`. Documents that do
/// not parse are skipped (they cannot be the object); none or several matches are errors.
fn find_document(shown: &str, text: &str, key: &ObjectKey) -> Result<std::ops::Range<usize>, String> {
    let (docs, _) = project::parse_documents(Path::new(shown), text);
    let mut found = docs.iter().filter(|d| is_object(&d.value, key));
    match (found.next(), found.next()) {
        (Some(doc), None) => Ok(doc.span.clone()),
        (None, _) => Err(format!(
            "{shown} no longer defines {key} (it changed since it was loaded); run `choreo run load` and retry"
        )),
        (Some(_), Some(_)) => {
            Err(format!("{shown} defines {key} more than once; fix the file before applying or deleting it"))
        }
    }
}

/// Whether a document is the object `key`. A document without a namespace matches the default
/// namespace (the loader defaults it), and a cluster-scoped key ignores the namespace.
pub(super) fn is_object(doc: &Value, key: &ObjectKey) -> bool {
    let Some(k) = ObjectKey::of(doc) else { return false };
    k.group == key.group
        && k.kind == key.kind
        && k.name == key.name
        && (key.namespace.is_empty()
            || k.namespace == key.namespace
            || (k.namespace.is_empty() && key.namespace == "default"))
}

/// The file name a new object gets under `in/`: `<group>.<kind>.<name>.yaml` (the namespace
/// added when that name is taken by something else). A name that would be longer than
/// [`MAX_FILE_NAME`] bytes is cut and made unique with a hash of the whole identity, so it is
/// short, stable and collision-free. Never an existing file.
fn new_file_name(key: &ObjectKey, taken: impl Fn(&str) -> bool) -> Result<String, String> {
    let base = if key.group.is_empty() {
        format!("{}.{}", key.kind.to_lowercase(), key.name)
    } else {
        format!("{}.{}.{}", key.group, key.kind.to_lowercase(), key.name)
    };
    let ns = if key.namespace.is_empty() { "object" } else { &key.namespace };
    let candidates = [format!("{base}.yaml"), format!("{base}.{ns}.yaml")];
    for name in &candidates {
        if name.len() <= MAX_FILE_NAME && !taken(name) {
            return Ok(name.clone());
        }
    }
    if candidates[0].len() > MAX_FILE_NAME {
        let hash = xxhash_rust::xxh3::xxh3_64(key.to_string().as_bytes());
        let suffix = format!("-{hash:016x}.yaml");
        let mut cut = MAX_FILE_NAME - suffix.len();
        while !base.is_char_boundary(cut) {
            cut -= 1;
        }
        let name = format!("{}{suffix}", &base[..cut]);
        if !taken(&name) {
            return Ok(name);
        }
        return Err(format!("in/{name} already exists and does not define {key}"));
    }
    Err(format!("in/{} already exists and does not define {key}", candidates[1]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::object::GroupKind;

    fn key(kind: &str, ns: &str, name: &str) -> ObjectKey {
        ObjectKey::new(&GroupKind::new("example.org", kind), ns, name)
    }

    const TWO: &str = "# keep me\napiVersion: example.org/v1\nkind: A\nmetadata: {name: a}\n---\napiVersion: example.org/v1\nkind: B\nmetadata: {name: b, namespace: x}\n";

    #[test]
    fn replace_and_cut_find_the_document_by_identity() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("x.yaml");
        std::fs::write(&file, TWO).unwrap();
        let mut plan = FilePlan::default();
        plan.replace(
            &file,
            &key("B", "x", "b"),
            "apiVersion: example.org/v1\nkind: B\nmetadata:\n  name: b\n  namespace: x\nspec: 1\n",
        )
        .unwrap();
        plan.cut(&file, &key("A", "default", "a")).unwrap();
        let changes = plan.into_changes();
        assert_eq!(changes.len(), 1);
        let after = changes[0].1.after.as_deref().unwrap();
        assert_eq!(after, "---\napiVersion: example.org/v1\nkind: B\nmetadata:\n  name: b\n  namespace: x\nspec: 1\n");
        assert_eq!(changes[0].1.before.as_deref(), Some(TWO));
        assert_eq!(std::fs::read_to_string(&file).unwrap(), TWO, "planning writes nothing");
    }

    #[test]
    fn an_edited_file_is_read_again_not_trusted() {
        // The user inserted a document in front of b since the last load: b is still found, and
        // the user's document is kept.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("x.yaml");
        let edited = TWO.replace("---\n", "---\napiVersion: example.org/v1\nkind: C\nmetadata: {name: new}\n---\n");
        std::fs::write(&file, &edited).unwrap();
        let mut plan = FilePlan::default();
        plan.cut(&file, &key("B", "x", "b")).unwrap();
        let after = plan.into_changes().remove(0).1.after.unwrap();
        assert!(after.contains("name: new"), "{after}");
        assert!(after.contains("kind: A"), "{after}");
        assert!(!after.contains("kind: B"), "{after}");
    }

    #[test]
    fn a_missing_or_doubled_document_is_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("x.yaml");
        std::fs::write(&file, TWO).unwrap();
        let mut plan = FilePlan::default();
        let e = plan.replace(&file, &key("B", "x", "other"), "x: 1\n").unwrap_err();
        assert!(e.contains("x.yaml no longer defines B.example.org x/other"), "{e}");
        std::fs::write(
            &file,
            format!("{TWO}---\napiVersion: example.org/v1\nkind: B\nmetadata: {{name: b, namespace: x}}\n"),
        )
        .unwrap();
        let e = FilePlan::default().cut(&file, &key("B", "x", "b")).unwrap_err();
        assert!(e.contains("more than once"), "{e}");
        let e = FilePlan::default().cut(&dir.path().join("gone.yaml"), &key("B", "x", "b")).unwrap_err();
        assert!(e.contains("gone.yaml no longer exists"), "{e}");
    }

    #[test]
    fn an_edit_through_a_symbolic_link_writes_its_target() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("shared.yaml");
        std::fs::write(&target, TWO).unwrap();
        let link = dir.path().join("in.yaml");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let mut plan = FilePlan::default();
        plan.cut(&link, &key("A", "default", "a")).unwrap();
        let changes = plan.into_changes();
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].0, std::fs::canonicalize(&target).unwrap(), "the target is written, the link stays");
        assert_eq!(changes[0].1.via, [link], "and the link it was edited through is known");
    }

    #[test]
    fn cutting_the_last_document_removes_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("x.yaml");
        std::fs::write(&file, "apiVersion: example.org/v1\nkind: A\nmetadata: {name: a}\n").unwrap();
        let mut plan = FilePlan::default();
        plan.cut(&file, &key("A", "default", "a")).unwrap();
        let changes = plan.into_changes();
        assert!(changes[0].1.after.is_none());
    }

    #[test]
    fn long_names_get_short_stable_distinct_file_names() {
        let taken = |_: &str| false;
        let long = "a".repeat(253);
        let one = new_file_name(&key("Device", "default", &long), taken).unwrap();
        let again = new_file_name(&key("Device", "default", &long), taken).unwrap();
        let other = new_file_name(&key("Device", "default", &format!("{}b", &long[..252])), taken).unwrap();
        assert!(one.len() <= MAX_FILE_NAME, "{one}");
        assert_eq!(one, again);
        assert_ne!(one, other);
        assert!(one.starts_with("example.org.device.aaaa") && one.ends_with(".yaml"), "{one}");
        let short = new_file_name(&key("Device", "default", "leaf1"), taken).unwrap();
        assert_eq!(short, "example.org.device.leaf1.yaml");
        let taken = |name: &str| name == short;
        assert_eq!(
            new_file_name(&key("Device", "default", "leaf1"), taken).unwrap(),
            "example.org.device.leaf1.default.yaml"
        );
    }
}

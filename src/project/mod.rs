//! Reading a project directory into documents, with precise locations for every problem.
//!
//! A project keeps CRDs in `crds/` and input objects in `in/` (names configurable through
//! [`Layout`]). Only top-level `*.yaml`, `*.yml` and `*.json` files are read, in file-name order;
//! hidden files, editor leftovers and whatever the directory's `.ignore` file (gitignore syntax)
//! excludes are skipped. Multi-document files are split on `---` lines so that each document
//! knows the line it starts on, and every parse error carries file, line and column.
//!
//! Unlike upstream choreo, nothing is skipped silently: a file that does not parse, a document
//! without `apiVersion`/`kind`, or a non-CRD document in `crds/` is a [`Diagnostic`]. A document
//! nested deeper than [`MAX_NESTING`] is refused before the YAML parser sees it.
//! Architecture invariant: this module reads files and returns data; it never touches the store.

pub mod depth;
pub mod files;
pub mod reconcilers;

use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::api::builtin::{CRD_GROUP, CRD_KIND};
use crate::api::object;

/// How deeply a document may nest its collections. Every YAML or JSON text from a user is scanned
/// for its depth ([`depth::check_nesting`], linear) before it is parsed: the parser's time grows
/// with the square of the depth. Kubernetes' decoders set similar limits.
pub const MAX_NESTING: usize = 200;

/// Refuses a text nested deeper than [`MAX_NESTING`], naming the line and column where it went
/// deeper, before any parser sees it.
pub fn check_depth(text: &str) -> Result<(), String> {
    match depth::check_nesting(text, MAX_NESTING) {
        Ok(_) => Ok(()),
        Err(at) => Err(format!("line {} column {}: nesting deeper than {MAX_NESTING} levels", at.line, at.column)),
    }
}

/// Where the parts of a project live.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The project directory (absolute).
    pub root: PathBuf,
    /// CRDs (and, later, Starlark libraries), relative to `root`.
    pub apis: PathBuf,
    /// Input objects, relative to `root`.
    pub input: PathBuf,
    /// Upstream package references, relative to `root`.
    pub refs: PathBuf,
    /// A directory every file read must really be in, links resolved (dynamic mode: the clone);
    /// `None`: anywhere. Not carried over by [`Layout::with_root`].
    pub contain: Option<PathBuf>,
    /// Where upstream packages are cached (absolute); default `.choreo/upstream` of the project.
    pub upstream_cache: Option<PathBuf>,
}

impl Layout {
    pub fn new(root: impl Into<PathBuf>) -> Layout {
        Layout {
            root: root.into(),
            apis: PathBuf::from("crds"),
            input: PathBuf::from("in"),
            refs: PathBuf::from("refs"),
            contain: None,
            upstream_cache: None,
        }
    }

    /// The same directory names under another root (an upstream package, a new checkout),
    /// without containment.
    pub fn with_root(&self, root: impl Into<PathBuf>) -> Layout {
        Layout { root: root.into(), contain: None, ..self.clone() }
    }

    /// Where the files of this project may really be.
    pub fn bounds(&self) -> files::Bounds {
        files::Bounds::new(&self.root, self.contain.as_deref())
    }

    /// Where clones and exports of upstream packages live.
    pub fn upstream_dir(&self) -> PathBuf {
        self.upstream_cache.clone().unwrap_or_else(|| self.state_dir().join("upstream"))
    }

    pub fn input_dir(&self) -> PathBuf {
        self.root.join(&self.input)
    }

    pub fn apis_dir(&self) -> PathBuf {
        self.root.join(&self.apis)
    }

    /// The directory of server-owned state (`.choreo/`).
    pub fn state_dir(&self) -> PathBuf {
        self.root.join(".choreo")
    }

    /// `path` relative to the project root, for messages.
    pub fn relative<'a>(&self, path: &'a Path) -> &'a Path {
        path.strip_prefix(&self.root).unwrap_or(path)
    }
}

/// A position in a project file: 1-based line and column; line 0 is the whole file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SourceLoc {
    /// Relative to the project root.
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for SourceLoc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            return write!(f, "{}", self.file.display());
        }
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

/// One YAML document of a project file.
#[derive(Debug, Clone)]
pub struct Document {
    pub loc: SourceLoc,
    /// The document's index in its file (0-based).
    pub index: usize,
    /// The byte range of the document's text in the file, separator line included.
    pub span: std::ops::Range<usize>,
    pub value: Value,
}

/// A problem with a project file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub loc: SourceLoc,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.loc, self.message)
    }
}

/// Everything a load reads from a project directory, read in one pass: the texts of the CRD
/// and input directories (paths relative to the project, sorted) and the reconciler and library
/// sources. Parsing is left to the caller, which knows which texts changed.
#[derive(Debug, Default)]
pub struct ProjectFiles {
    pub crds: Vec<(PathBuf, String)>,
    pub inputs: Vec<(PathBuf, String)>,
    pub reconcilers: Vec<reconcilers::ReconcilerSource>,
    pub libraries: Vec<reconcilers::LibrarySource>,
}

/// Reads [`ProjectFiles`] of `layout`, with a diagnostic for every file that could not be read.
pub fn read_project(layout: &Layout) -> (ProjectFiles, Vec<Diagnostic>) {
    let (crds, mut diags) = read_texts(layout, &layout.apis);
    let (inputs, d) = read_texts(layout, &layout.input);
    diags.extend(d);
    let (reconcilers, libraries, d) = reconcilers::read_sources(layout);
    diags.extend(d);
    (ProjectFiles { crds, inputs, reconcilers, libraries }, diags)
}

/// The documents of a project.
#[derive(Debug, Default)]
pub struct Tree {
    pub crds: Vec<Document>,
    pub inputs: Vec<Document>,
}

/// Reads `crds/` and `in/`. Returns every document that parsed and a diagnostic for every one
/// that did not; the caller decides whether a partial tree is usable.
pub fn read_tree(layout: &Layout) -> (Tree, Vec<Diagnostic>) {
    let mut diags = Vec::new();
    let mut tree = Tree::default();
    let (crd_files, d) = read_texts(layout, &layout.apis);
    diags.extend(d);
    for (file, text) in &crd_files {
        let (docs, d) = crd_documents(layout, file, text);
        tree.crds.extend(docs);
        diags.extend(d);
    }
    let (inputs, d) = read_dir_documents(layout, &layout.input);
    diags.extend(d);
    tree.inputs = inputs;
    (tree, diags)
}

/// The documents of a file of the CRD directory: every one must be a CRD.
pub fn crd_documents(layout: &Layout, file: &Path, text: &str) -> (Vec<Document>, Vec<Diagnostic>) {
    let (docs, mut diags) = parse_documents(file, text);
    let mut crds = Vec::new();
    for doc in docs {
        let is_crd = doc.value.get("kind").and_then(Value::as_str) == Some(CRD_KIND)
            && doc
                .value
                .get("apiVersion")
                .and_then(Value::as_str)
                .is_some_and(|v| object::split_api_version(v).0 == CRD_GROUP);
        if is_crd {
            crds.push(doc);
        } else {
            diags.push(Diagnostic {
                loc: doc.loc.clone(),
                message: format!(
                    "expected a CustomResourceDefinition (apiextensions.k8s.io/v1) in {}, got {} {}",
                    layout.apis.display(),
                    doc.value.get("apiVersion").and_then(Value::as_str).unwrap_or("?"),
                    doc.value.get("kind").and_then(Value::as_str).unwrap_or("?"),
                ),
            });
        }
    }
    (crds, diags)
}

/// Reads the text of every top-level YAML file of one project directory (in parallel), as
/// (path relative to the project, text), sorted by name.
pub fn read_texts(layout: &Layout, dir: &Path) -> (Vec<(PathBuf, String)>, Vec<Diagnostic>) {
    let abs = layout.root.join(dir);
    let whole = |file: PathBuf, message: String| Diagnostic { loc: SourceLoc { file, line: 0, column: 0 }, message };
    let (files, broken) = match files::list_yaml_files(&abs, &layout.bounds()) {
        Ok(listed) => listed,
        Err(e) => return (Vec::new(), vec![whole(dir.to_path_buf(), e)]),
    };
    let results = files::parallel_map(&files, |path| {
        let rel = layout.relative(path).to_path_buf();
        std::fs::read_to_string(path).map(|t| (rel.clone(), t)).map_err(|e| Diagnostic {
            loc: SourceLoc { file: rel, line: 0, column: 0 },
            message: format!("cannot read: {e}"),
        })
    });
    let mut texts = Vec::new();
    let mut diags: Vec<Diagnostic> =
        broken.into_iter().map(|(p, e)| whole(layout.relative(&p).to_path_buf(), e)).collect();
    for r in results {
        match r {
            Ok(t) => texts.push(t),
            Err(d) => diags.push(d),
        }
    }
    (texts, diags)
}

/// Reads the given files of one project directory (paths relative to the project), as
/// [`read_texts`] would if it listed them. Returns the texts, the paths that are not (or no
/// longer) listed files, and a diagnostic for each file that could not be read.
pub fn read_some_texts(
    layout: &Layout,
    dir: &Path,
    rels: &[PathBuf],
) -> (Vec<(PathBuf, String)>, Vec<PathBuf>, Vec<Diagnostic>) {
    let abs_dir = layout.root.join(dir);
    let mut texts = Vec::new();
    let mut gone = Vec::new();
    let mut diags = Vec::new();
    let diag = |rel: &Path, message: String| Diagnostic {
        loc: SourceLoc { file: rel.to_path_buf(), line: 0, column: 0 },
        message,
    };
    let listing = match files::Listing::new(&abs_dir, &layout.bounds()) {
        Ok(l) => l,
        Err(e) => {
            diags.push(diag(dir, e));
            return (texts, gone, diags);
        }
    };
    for rel in rels {
        let path = layout.root.join(rel);
        match listing.contains(&path) {
            Ok(true) => {}
            Ok(false) => {
                gone.push(rel.clone());
                continue;
            }
            Err(e) => {
                diags.push(diag(rel, e));
                continue;
            }
        }
        match std::fs::read_to_string(&path) {
            Ok(t) => texts.push((rel.clone(), t)),
            // Removed between the check and the read.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => gone.push(rel.clone()),
            Err(e) => diags.push(diag(rel, format!("cannot read: {e}"))),
        }
    }
    (texts, gone, diags)
}

/// Reads every YAML document of the top-level files of one project directory.
pub fn read_dir_documents(layout: &Layout, dir: &Path) -> (Vec<Document>, Vec<Diagnostic>) {
    let (texts, mut diags) = read_texts(layout, dir);
    let parsed = files::parallel_map(&texts, |(file, text)| parse_documents(file, text));
    let mut docs = Vec::new();
    for (d, g) in parsed {
        docs.extend(d);
        diags.extend(g);
    }
    (docs, diags)
}

/// The byte ranges and first lines (1-based) of the documents of a multi-document YAML text.
/// A line starting with `---` opens a new document; it can only be a separator at column 0,
/// because block scalars are always indented.
pub fn split_documents(text: &str) -> Vec<(std::ops::Range<usize>, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut start_line = 1;
    let mut offset = 0;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let is_sep = line.starts_with("---")
            && line[3..].chars().next().is_none_or(|c| c == ' ' || c == '\t' || c == '\n' || c == '\r');
        if is_sep && offset > start {
            out.push((start..offset, start_line));
            start = offset;
            start_line = i + 1;
        } else if is_sep {
            start_line = i + 1;
        }
        offset += line.len();
    }
    if offset > start {
        out.push((start..offset, start_line));
    }
    out
}

/// Parses the documents of one file. Empty documents (only comments) are skipped.
pub fn parse_documents(file: &Path, text: &str) -> (Vec<Document>, Vec<Diagnostic>) {
    let mut docs = Vec::new();
    let mut diags = Vec::new();
    let mut index = 0;
    for (span, first_line) in split_documents(text) {
        let chunk = &text[span.clone()];
        if chunk.lines().all(|l| {
            let t = l.trim();
            t.is_empty() || t.starts_with('#') || t == "---" || t == "..."
        }) {
            continue;
        }
        let loc = |line: usize, column: usize| SourceLoc { file: file.to_path_buf(), line, column };
        if let Err(at) = depth::check_nesting(chunk, MAX_NESTING) {
            let message = format!("nesting deeper than {MAX_NESTING} levels");
            diags.push(Diagnostic { loc: loc(at.line + first_line - 1, at.column), message });
            index += 1;
            continue;
        }
        match serde_yaml_ng::from_str::<Value>(chunk) {
            Ok(Value::Null) => {}
            Ok(value) => {
                let at = first_content_line(chunk) + first_line - 1;
                match check_document(&value) {
                    Ok(()) => docs.push(Document { loc: loc(at, 1), index, span, value }),
                    Err(message) => diags.push(Diagnostic { loc: loc(at, 1), message }),
                }
                index += 1;
            }
            Err(e) => {
                let (line, column) =
                    e.location().map(|l| (l.line() + first_line - 1, l.column())).unwrap_or((first_line, 1));
                diags.push(Diagnostic { loc: loc(line, column), message: crate::api::object::yaml_message(&e) });
                index += 1;
            }
        }
    }
    (docs, diags)
}

/// The 1-based line of a chunk's first line that holds YAML content.
fn first_content_line(chunk: &str) -> usize {
    chunk
        .lines()
        .position(|l| {
            let t = l.trim();
            !(t.is_empty() || t.starts_with('#') || t == "---")
        })
        .map(|i| i + 1)
        .unwrap_or(1)
}

fn check_document(v: &Value) -> Result<(), String> {
    let Some(map) = v.as_object() else {
        return Err(format!(
            "a document must be a map with apiVersion and kind, got {}",
            crate::api::schema::json_type_name(v)
        ));
    };
    for field in ["apiVersion", "kind"] {
        match map.get(field) {
            Some(Value::String(s)) if !s.is_empty() => {}
            _ => return Err(format!("{field}: Required value: the document has no {field}")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_documents_with_start_lines() {
        let text = "a: 1\n---\nb: 2\n--- # c\nc: 3\n";
        let parts: Vec<_> = split_documents(text).into_iter().map(|(r, l)| (&text[r], l)).collect();
        assert_eq!(parts, [("a: 1\n", 1), ("---\nb: 2\n", 2), ("--- # c\nc: 3\n", 4)]);
        let leading = "---\na: 1\n";
        assert_eq!(split_documents(leading), [(0..leading.len(), 1)]);
    }

    #[test]
    fn parse_errors_carry_file_line_and_column() {
        let text = "apiVersion: v1\nkind: A\nmetadata:\n  name: a\n---\napiVersion: v1\nkind: B\nspec: [unclosed\n";
        let (docs, diags) = parse_documents(Path::new("in/x.yaml"), text);
        assert_eq!(docs.len(), 1);
        assert_eq!(diags.len(), 1);
        assert_eq!(diags[0].loc.file, Path::new("in/x.yaml"));
        assert!(diags[0].loc.line >= 8, "{}", diags[0]);
        assert!(!diags[0].message.contains(" at line "), "{}", diags[0]);
    }

    #[test]
    fn documents_need_api_version_and_kind() {
        let (docs, diags) = parse_documents(Path::new("in/x.yaml"), "# only a comment\n---\nkind: A\n");
        assert!(docs.is_empty());
        assert_eq!(diags.len(), 1);
        assert_eq!(diags[0].to_string(), "in/x.yaml:3:1: apiVersion: Required value: the document has no apiVersion");
    }

    #[test]
    fn deep_documents_are_refused_before_parsing() {
        let deep = format!("apiVersion: v1\nkind: A\n---\napiVersion: v1\nkind: B\nspec: {}\n", "[".repeat(150_000));
        let (docs, diags) = parse_documents(Path::new("in/deep.yaml"), &deep);
        assert_eq!(docs.len(), 1);
        assert_eq!(diags.len(), 1);
        assert_eq!(diags[0].to_string(), "in/deep.yaml:6:206: nesting deeper than 200 levels");
        let json = format!("{}{}", "[".repeat(201), "]".repeat(201));
        let (_, diags) = parse_documents(Path::new("in/deep.json"), &json);
        assert_eq!(diags[0].to_string(), "in/deep.json:1:201: nesting deeper than 200 levels");
        assert_eq!(check_depth(&json), Err("line 1 column 201: nesting deeper than 200 levels".into()));
        assert_eq!(check_depth("[[]]"), Ok(()));
    }

    #[test]
    fn broken_links_are_load_diagnostics_not_missing_files() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        std::fs::create_dir_all(layout.input_dir()).unwrap();
        std::fs::write(layout.input_dir().join("a.yaml"), "apiVersion: v1\nkind: A\nmetadata: {name: a}\n").unwrap();
        symlink("/nowhere", layout.input_dir().join("x.yaml")).unwrap();
        let (tree, diags) = read_tree(&layout);
        assert_eq!(tree.inputs.len(), 1);
        let diags: Vec<_> = diags.iter().map(ToString::to_string).collect();
        assert_eq!(diags, ["in/x.yaml: symbolic link to /nowhere that does not resolve"]);
        // A partial load of the file does not take it for removed.
        let (texts, gone, diags) =
            read_some_texts(&layout, &layout.input, &[PathBuf::from("in/x.yaml"), PathBuf::from("in/a.yaml")]);
        assert_eq!(texts.len(), 1);
        assert!(gone.is_empty());
        assert_eq!(diags[0].to_string(), "in/x.yaml: symbolic link to /nowhere that does not resolve");
    }

    #[test]
    fn integers_stay_integers() {
        let (docs, _) = parse_documents(Path::new("a.yaml"), "apiVersion: v1\nkind: A\nspec: {n: 3, f: 1.5}\n");
        assert!(docs[0].value["spec"]["n"].is_u64());
        assert!(docs[0].value["spec"]["f"].is_f64());
    }
}

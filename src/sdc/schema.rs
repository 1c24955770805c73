//! A project's YANG schemas: found offline under `schemas/<provider>/<version>/`, compiled into
//! one libyang context each, cached until their files change.
//!
//! Every `.yang` file below a version directory (any depth) is a candidate: modules are loaded
//! and implemented, submodules are found through the search path (every directory that holds a
//! `.yang` file), with all features enabled. An sdcio `Schema` manifest in `schemas/*.yaml`
//! narrows that (`manifest`): only its models are implemented, its includes only searched. Nothing is fetched: a schema that is not in the
//! project is an error naming provider and version. Symbolic links are not followed (a schema
//! directory cannot reach outside the project), and files and counts are bounded.
//!
//! Architecture invariant: knows files and libyang, nothing of Nodes, Configs or the store.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use yang3::context::{Context, ContextFlags};

use super::log::{self, Diagnostic};

/// The largest YANG file read.
pub const MAX_FILE_BYTES: u64 = 16 << 20;
/// The most `.yang` files in one schema.
pub const MAX_FILES: usize = 10_000;

/// Which schema: the device's provider (vendor) and version, as a `Node` names them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SchemaKey {
    pub provider: String,
    pub version: String,
}

impl fmt::Display for SchemaKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.provider, self.version)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("schema {key} is not in the project: no directory {dir} (schemas are not fetched)")]
    Missing { key: SchemaKey, dir: PathBuf },
    #[error("schema {key}: {dir} holds no .yang file")]
    Empty { key: SchemaKey, dir: PathBuf },
    #[error("schema {key}: {path}: {source}")]
    Io {
        key: SchemaKey,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("schema {key}: {path} is a symbolic link, which schemas may not contain")]
    Symlink { key: SchemaKey, path: PathBuf },
    #[error("schema {key}: {path} is larger than {MAX_FILE_BYTES} bytes")]
    TooLarge { key: SchemaKey, path: PathBuf },
    #[error("schema {key}: more than {MAX_FILES} .yang files")]
    TooMany { key: SchemaKey },
    #[error("schema {key}: {path} does not start with a module or submodule statement")]
    NotYang { key: SchemaKey, path: PathBuf },
    #[error("schema {key}: {source}")]
    Manifest {
        key: SchemaKey,
        #[source]
        source: super::manifest::ManifestError,
    },
    #[error("schema {key}: {path} of manifest {manifest} is not there")]
    ModelMissing { key: SchemaKey, path: PathBuf, manifest: PathBuf },
    /// `messages` are libyang's, each with the file it is about.
    #[error("schema {key}: {}", compile_message(.file, .messages))]
    Compile { key: SchemaKey, file: PathBuf, messages: Vec<(PathBuf, Diagnostic)> },
}

fn compile_message(file: &Path, messages: &[(PathBuf, Diagnostic)]) -> String {
    let errors: Vec<&(PathBuf, Diagnostic)> = messages.iter().filter(|(_, d)| d.error).collect();
    if errors.is_empty() {
        return format!("{}: cannot be compiled", file.display());
    }
    errors
        .iter()
        .map(|(file, d)| match d.line {
            0 => format!("{}: {}", file.display(), d.message),
            line => format!("{}:{line}: {}", file.display(), d.message),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Each of `messages` with the file it is about. Loading one module parses the modules it
/// imports too, and libyang names the module only in the "Parsing module \"X\" failed." that
/// closes X's messages: every message belongs to the module that the next such line names
/// (`loading` when none follows).
fn locate(messages: Vec<Diagnostic>, files: &[YangFile], loading: &Path) -> Vec<(PathBuf, Diagnostic)> {
    let named = |d: &Diagnostic| {
        let m =
            d.message.strip_prefix("Parsing module \"").or_else(|| d.message.strip_prefix("Parsing submodule \""))?;
        let name = m.strip_suffix("\" failed.")?;
        files.iter().find(|f| f.name == name).map(|f| f.path.clone())
    };
    let mut owner = loading.to_path_buf();
    let mut located: Vec<(PathBuf, Diagnostic)> = Vec::with_capacity(messages.len());
    for d in messages.into_iter().rev() {
        if let Some(file) = named(&d) {
            owner = file;
        }
        located.push((owner.clone(), d));
    }
    located.reverse();
    located
}

/// One YANG file of a schema.
#[derive(Debug, Clone, PartialEq, Eq)]
struct YangFile {
    path: PathBuf,
    /// The module's (or submodule's) name, from its first statement.
    name: String,
    /// The revision in the file name (`name@2018-02-20.yang`), if any.
    revision: Option<String>,
    submodule: bool,
}

/// The files of one schema and a fingerprint of their metadata (path, size, modification and
/// change times, inode): a cached context is reused without reading a file again.
#[derive(Debug)]
struct Sources {
    files: Vec<PathBuf>,
    /// The files whose modules are implemented (all, without a manifest).
    implemented: std::collections::HashSet<PathBuf>,
    search: Vec<PathBuf>,
    fingerprint: u64,
}

/// A compiled schema.
pub struct Schema {
    pub key: SchemaKey,
    ctx: Context,
    /// The modules loaded and implemented, sorted.
    pub modules: Vec<String>,
    /// Warnings libyang gave while compiling (XPath it cannot check, …).
    pub warnings: Vec<Diagnostic>,
    fingerprint: u64,
}

impl Schema {
    /// The compiled libyang context, for parsing and validating data against this schema.
    pub fn context(&self) -> &Context {
        &self.ctx
    }
}

impl fmt::Debug for Schema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Schema").field("key", &self.key).field("modules", &self.modules).finish()
    }
}

/// Compiled schemas by key, rebuilt when their files change.
#[derive(Default)]
pub struct SchemaCache {
    compiled: HashMap<SchemaKey, Arc<Schema>>,
}

impl SchemaCache {
    /// The schema `key` under `root` (the project's `schemas/` directory), compiled again only
    /// when a file was added, removed or written since (the fingerprint of `scan`).
    pub fn get(&mut self, root: &Path, key: &SchemaKey) -> Result<Arc<Schema>, SchemaError> {
        let sources = scan(root, key)?;
        if let Some(s) = self.compiled.get(key) {
            if s.fingerprint == sources.fingerprint {
                return Ok(s.clone());
            }
        }
        let schema = Arc::new(compile(key, sources)?);
        self.compiled.insert(key.clone(), schema.clone());
        Ok(schema)
    }

    /// Forgets every schema not in `keep` (the ones the project still uses).
    pub fn retain(&mut self, keep: &[SchemaKey]) {
        self.compiled.retain(|k, _| keep.contains(k));
    }
}

/// The directory of schema `key` under `root`.
pub fn dir_of(root: &Path, key: &SchemaKey) -> PathBuf {
    root.join(&key.provider).join(&key.version)
}

fn scan(root: &Path, key: &SchemaKey) -> Result<Sources, SchemaError> {
    let dir = dir_of(root, key);
    // Provider and version come from objects: they may not climb out of `schemas/`.
    let plain = |s: &str| !s.is_empty() && s != "." && s != ".." && !s.contains('/') && !s.contains('\0');
    if !plain(&key.provider) || !plain(&key.version) {
        return Err(SchemaError::Missing { key: key.clone(), dir });
    }
    match std::fs::symlink_metadata(&dir) {
        Ok(m) if m.file_type().is_symlink() => return Err(SchemaError::Symlink { key: key.clone(), path: dir }),
        Ok(m) if m.is_dir() => {}
        _ => return Err(SchemaError::Missing { key: key.clone(), dir }),
    }
    let io = |path: &Path| {
        let key = key.clone();
        let path = path.to_path_buf();
        move |source| SchemaError::Io { key, path, source }
    };
    let manifest =
        super::manifest::find(root, key).map_err(|source| SchemaError::Manifest { key: key.clone(), source })?;
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    if let Some(m) = &manifest {
        hasher.update(&m.hash.to_le_bytes());
        for model in &m.models {
            if !dir.join(model).exists() {
                return Err(SchemaError::ModelMissing {
                    key: key.clone(),
                    path: dir.join(model),
                    manifest: m.file.clone(),
                });
            }
        }
    }
    let mut files = Vec::new();
    let mut implemented = std::collections::HashSet::new();
    let mut search = Vec::new();
    let mut pending = vec![dir.clone()];
    while let Some(d) = pending.pop() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&d)
            .map_err(io(&d))?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()
            .map_err(io(&d))?;
        entries.sort();
        let mut holds_yang = false;
        for path in entries {
            let meta = std::fs::symlink_metadata(&path).map_err(io(&path))?;
            if meta.file_type().is_symlink() {
                return Err(SchemaError::Symlink { key: key.clone(), path });
            }
            if meta.is_dir() {
                pending.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "yang") {
                continue;
            }
            let role = match &manifest {
                None => super::manifest::Role::Model,
                Some(m) => m.role(path.strip_prefix(&dir).unwrap_or(&path)),
            };
            if role == super::manifest::Role::Excluded {
                continue;
            }
            if meta.len() > MAX_FILE_BYTES {
                return Err(SchemaError::TooLarge { key: key.clone(), path });
            }
            if files.len() == MAX_FILES {
                return Err(SchemaError::TooMany { key: key.clone() });
            }
            use std::os::unix::fs::MetadataExt;
            hasher.update(path.as_os_str().as_encoded_bytes());
            let times = [meta.mtime(), meta.mtime_nsec(), meta.ctime(), meta.ctime_nsec()];
            for n in [meta.len(), meta.ino()].into_iter().chain(times.map(|t| t as u64)) {
                hasher.update(&n.to_le_bytes());
            }
            if role == super::manifest::Role::Model {
                implemented.insert(path.clone());
            }
            files.push(path);
            holds_yang = true;
        }
        if holds_yang {
            search.push(d);
        }
    }
    if files.is_empty() {
        return Err(SchemaError::Empty { key: key.clone(), dir });
    }
    files.sort();
    search.sort();
    Ok(Sources { files, implemented, search, fingerprint: hasher.digest() })
}

/// `(is a submodule, name)` of a YANG file's first statement, after comments.
fn first_statement(text: &[u8]) -> Option<(bool, String)> {
    let text = std::str::from_utf8(text).ok()?;
    let mut rest = text.trim_start_matches('\u{feff}');
    loop {
        rest = rest.trim_start();
        if let Some(r) = rest.strip_prefix("//") {
            rest = r.split_once('\n').map_or("", |(_, r)| r);
        } else if let Some(r) = rest.strip_prefix("/*") {
            rest = r.split_once("*/")?.1;
        } else {
            break;
        }
    }
    let (word, rest) = rest.split_once(char::is_whitespace)?;
    let submodule = match word {
        "module" => false,
        "submodule" => true,
        _ => return None,
    };
    let name: String =
        rest.trim_start().chars().take_while(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.')).collect();
    (!name.is_empty()).then_some((submodule, name))
}

/// Reads each file's first statement (what it is and its name) and its file-name revision.
fn read(key: &SchemaKey, paths: Vec<PathBuf>) -> Result<Vec<YangFile>, SchemaError> {
    paths
        .into_iter()
        .map(|path| {
            let text = match std::fs::read(&path) {
                Ok(t) => t,
                Err(source) => return Err(SchemaError::Io { key: key.clone(), path, source }),
            };
            let Some((submodule, name)) = first_statement(&text) else {
                return Err(SchemaError::NotYang { key: key.clone(), path });
            };
            let revision =
                path.file_stem().and_then(|s| s.to_str()).and_then(|s| s.split_once('@')).map(|(_, r)| r.to_string());
            Ok(YangFile { path, name, revision, submodule })
        })
        .collect()
}

fn compile(key: &SchemaKey, sources: Sources) -> Result<Schema, SchemaError> {
    let implemented = sources.implemented;
    let files = read(key, sources.files)?;
    let failed = |file: &Path, messages: Vec<Diagnostic>| SchemaError::Compile {
        key: key.clone(),
        file: file.to_path_buf(),
        messages: locate(messages, &files, file),
    };
    let root = sources.search.first().cloned().unwrap_or_default();
    let (ctx, mut warnings) =
        log::capture(|| Context::new(ContextFlags::NO_YANGLIBRARY | ContextFlags::DISABLE_SEARCHDIR_CWD));
    let mut ctx = ctx.map_err(|_| failed(&root, std::mem::take(&mut warnings)))?;
    log::install(&ctx);
    for dir in &sources.search {
        let (r, messages) = log::capture(|| ctx.set_searchdir(dir));
        r.map_err(|_| failed(dir, messages))?;
    }
    // All modules are loaded first and compiled together: compiling after each one would
    // refuse a module whose defaults name identities of a module implemented later.
    let explicit = ContextFlags::from_bits_retain(yang3::ffi::LY_CTX_EXPLICIT_COMPILE as u16);
    ctx.set_options(explicit).map_err(|_| failed(&root, Vec::new()))?;
    let mut modules = Vec::new();
    for f in files.iter().filter(|f| !f.submodule && implemented.contains(&f.path)) {
        let (r, messages) = log::capture(|| ctx.load_module(&f.name, f.revision.as_deref(), &["*"]).map(|_| ()));
        if r.is_err() {
            return Err(failed(&f.path, messages));
        }
        warnings.extend(messages.into_iter().filter(|d| !d.error));
        modules.push(f.name.clone());
    }
    let raw = ctx.into_raw();
    // SAFETY: `raw` is the live context just released from its owner; it is owned again
    // right after, whatever the compilation's outcome.
    let (ret, messages) = log::capture(|| unsafe { yang3::ffi::ly_ctx_compile(raw) });
    let ctx = unsafe { <Context as yang3::utils::Binding>::from_raw(&(), raw) };
    if ret != yang3::ffi::LY_ERR::LY_SUCCESS {
        // The module a compile error is about is the one its schema path starts with.
        let module = messages
            .iter()
            .filter(|d| d.error)
            .find_map(|d| d.schema_path.as_deref()?.strip_prefix('/')?.split(':').next().map(str::to_string));
        let file =
            module.and_then(|m| files.iter().find(|f| f.name == m)).map_or_else(|| root.clone(), |f| f.path.clone());
        return Err(failed(&file, messages));
    }
    warnings.extend(messages.into_iter().filter(|d| !d.error));
    modules.sort();
    modules.dedup();
    Ok(Schema { key: key.clone(), ctx, modules, warnings, fingerprint: sources.fingerprint })
}

#[cfg(test)]
mod tests;

#[cfg(test)]
pub(crate) mod tests_support {
    use std::path::Path;
    use std::sync::Arc;

    use super::{Schema, SchemaCache, SchemaKey};

    /// A temp `schemas/` directory holding the vendored IETF modules as `ietf.example/1.0`.
    pub(crate) fn ietf_dir() -> (tempfile::TempDir, std::path::PathBuf) {
        let tmp = tempfile::tempdir().expect("temp dir");
        let root = tmp.path().join("schemas");
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/devices/schemas/ietf/2018");
        for sub in ["ietf", "iana"] {
            let to = root.join("ietf.example/1.0").join(sub);
            std::fs::create_dir_all(&to).expect("mkdir");
            for e in std::fs::read_dir(fixtures.join(sub)).expect("fixtures") {
                let e = e.expect("entry");
                std::fs::copy(e.path(), to.join(e.file_name())).expect("copy");
            }
        }
        (tmp, root)
    }

    /// The vendored IETF modules, compiled.
    pub(crate) fn ietf() -> (tempfile::TempDir, Arc<Schema>) {
        let (tmp, root) = ietf_dir();
        let key = SchemaKey { provider: "ietf.example".into(), version: "1.0".into() };
        let schema = SchemaCache::default().get(&root, &key).expect("the IETF set compiles");
        (tmp, schema)
    }
}

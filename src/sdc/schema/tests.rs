use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::*;

fn key(provider: &str, version: &str) -> SchemaKey {
    SchemaKey { provider: provider.into(), version: version.into() }
}

fn ietf_schemas() -> (tempfile::TempDir, PathBuf) {
    super::tests_support::ietf_dir()
}

fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

#[test]
fn the_ietf_interface_models_compile() {
    let (_tmp, root) = ietf_schemas();
    let s = SchemaCache::default().get(&root, &key("ietf.example", "1.0")).unwrap();
    assert_eq!(s.modules, ["iana-if-type", "ietf-inet-types", "ietf-interfaces", "ietf-ip", "ietf-yang-types"]);
    assert!(s.context().get_module_implemented("ietf-ip").is_some());
}

#[test]
fn a_missing_schema_names_provider_and_version() {
    let (_tmp, root) = ietf_schemas();
    let err = SchemaCache::default().get(&root, &key("srl.nokia.sdcio.dev", "24.7.2")).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, SchemaError::Missing { .. }));
    assert!(text.contains("srl.nokia.sdcio.dev/24.7.2") && text.contains("not fetched"), "{text}");
    // Names from objects never leave `schemas/`.
    let err = SchemaCache::default().get(&root, &key("..", "ietf.example")).unwrap_err();
    assert!(matches!(err, SchemaError::Missing { .. }), "{err}");
}

#[test]
fn a_syntax_error_names_the_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("schemas");
    write(
        &root,
        "acme/1/acme.yang",
        "module acme {\n  namespace \"urn:acme\";\n  prefix a;\n  leaf x { type strin; }\n}\n",
    );
    let err = SchemaCache::default().get(&root, &key("acme", "1")).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, SchemaError::Compile { .. }), "{text}");
    assert!(text.contains("acme.yang"), "{text}");
    assert!(text.contains("strin"), "{text}");

    write(
        &root,
        "acme/2/acme.yang",
        "module acme {\n  namespace \"urn:acme\";\n  prefix a;\n  leaf x { type string }\n}\n",
    );
    let text = SchemaCache::default().get(&root, &key("acme", "2")).unwrap_err().to_string();
    assert!(text.contains("acme.yang:4:"), "{text}");
}

#[test]
fn an_import_that_is_not_there_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("schemas");
    write(
        &root,
        "acme/1/acme.yang",
        "module acme {\n  namespace \"urn:acme\";\n  prefix a;\n  import nowhere { prefix n; }\n  leaf x { type string; }\n}\n",
    );
    let text = SchemaCache::default().get(&root, &key("acme", "1")).unwrap_err().to_string();
    assert!(text.contains("nowhere"), "{text}");
}

#[test]
fn submodules_are_found_through_the_search_path() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("schemas");
    write(
        &root,
        "acme/1/acme.yang",
        "module acme {\n  namespace \"urn:acme\";\n  prefix a;\n  include acme-sub;\n  leaf x { type string; }\n}\n",
    );
    write(
        &root,
        "acme/1/parts/acme-sub.yang",
        "// a comment first\nsubmodule acme-sub {\n  belongs-to acme { prefix a; }\n  leaf y { type uint8; }\n}\n",
    );
    let s = SchemaCache::default().get(&root, &key("acme", "1")).unwrap();
    assert_eq!(s.modules, ["acme"]);
}

#[test]
fn compiled_once_and_again_after_a_change() {
    let (_tmp, root) = ietf_schemas();
    let mut cache = SchemaCache::default();
    let k = key("ietf.example", "1.0");
    let a = cache.get(&root, &k).unwrap();
    let b = cache.get(&root, &k).unwrap();
    assert!(Arc::ptr_eq(&a, &b));
    write(
        &root,
        "ietf.example/1.0/extra.yang",
        "module extra {\n  namespace \"urn:extra\";\n  prefix e;\n  leaf z { type string; }\n}\n",
    );
    let c = cache.get(&root, &k).unwrap();
    assert!(!Arc::ptr_eq(&a, &c));
    assert!(c.modules.contains(&"extra".to_string()));
    // Written again (same path, other content): compiled again.
    write(
        &root,
        "ietf.example/1.0/extra.yang",
        "module extra {\n  namespace \"urn:extra\";\n  prefix e;\n  leaf zz { type string; }\n}\n",
    );
    let d = cache.get(&root, &k).unwrap();
    assert!(!Arc::ptr_eq(&c, &d));
    assert!(d.context().find_path("/extra:zz").is_ok());
    cache.retain(&[]);
    assert!(cache.compiled.is_empty());
}

#[test]
fn symlinks_and_non_yang_files_are_refused() {
    let (_tmp, root) = ietf_schemas();
    let outside = root.parent().unwrap().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("ietf.example/1.0/elsewhere")).unwrap();
    let err = SchemaCache::default().get(&root, &key("ietf.example", "1.0")).unwrap_err();
    assert!(matches!(err, SchemaError::Symlink { .. }), "{err}");

    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("schemas");
    write(&root, "acme/1/notes.yang", "these are notes\n");
    let err = SchemaCache::default().get(&root, &key("acme", "1")).unwrap_err();
    assert!(matches!(err, SchemaError::NotYang { .. }), "{err}");
    write(&root, "acme/2/README.md", "nothing here\n");
    let err = SchemaCache::default().get(&root, &key("acme", "2")).unwrap_err();
    assert!(matches!(err, SchemaError::Empty { .. }), "{err}");
}

#[test]
fn first_statement_reads_past_comments() {
    assert_eq!(first_statement(b"/* x */\n// y\nmodule a-b { }"), Some((false, "a-b".into())));
    assert_eq!(first_statement(b"submodule s {"), Some((true, "s".into())));
    assert_eq!(first_statement(b"container c {"), None);
    assert_eq!(first_statement(b"/* unterminated"), None);
}

#[test]
fn an_error_in_an_imported_module_names_that_module_s_file() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("schemas");
    write(
        &root,
        "acme/1/a.yang",
        "module a {\n  namespace \"urn:a\";\n  prefix a;\n  import b { prefix b; }\n  leaf x { type string; }\n}\n",
    );
    write(&root, "acme/1/b.yang", "module b {\n  namespace \"urn:b\";\n  prefix b;\n\n\n  leaf y { type string }\n}\n");
    let text = SchemaCache::default().get(&root, &key("acme", "1")).unwrap_err().to_string();
    assert!(text.contains("b.yang:6: Invalid keyword"), "{text}");
    assert!(!text.contains("a.yang:6"), "{text}");
    assert!(text.contains("a.yang: Parsing module \"a\" failed"), "{text}");
}

/// An sdcio `Schema` manifest: only its models are implemented, its includes only searched,
/// its excludes not read; a change of the manifest compiles the schema again.
#[test]
fn a_manifest_narrows_what_is_implemented() {
    let (_tmp, root) = ietf_schemas();
    let manifest = |models: &str| {
        format!(
            "apiVersion: inv.sdcio.dev/v1alpha1
kind: Schema
metadata: {{name: ietf}}
spec:
  provider: ietf.example
  version: \"1.0\"
  repositories:
  - repoURL: https://example.invalid/yang
    schema:
      models: [{models}]
      includes: [ietf, iana]
      excludes: ['.*broken.*']
"
        )
    };
    write(&root, "ietf.example/1.0/ietf/broken.yang", "module broken { syntax error");
    write(&root, "ietf.yaml", &manifest("ietf/ietf-interfaces.yang"));
    let mut cache = SchemaCache::default();
    let s = cache.get(&root, &key("ietf.example", "1.0")).unwrap();
    assert_eq!(s.modules, ["ietf-interfaces"]);
    assert!(s.context().get_module_latest("ietf-ip").is_none_or(|m| !m.is_implemented()));
    write(&root, "ietf.yaml", &manifest("ietf/ietf-interfaces.yang, ietf/ietf-ip.yang"));
    let s = cache.get(&root, &key("ietf.example", "1.0")).unwrap();
    assert_eq!(s.modules, ["ietf-interfaces", "ietf-ip"]);
    write(&root, "ietf.yaml", &manifest("nowhere"));
    let e = cache.get(&root, &key("ietf.example", "1.0")).unwrap_err().to_string();
    assert!(e.contains("nowhere") && e.contains("ietf.yaml"), "{e}");
}

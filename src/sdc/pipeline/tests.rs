use std::sync::Arc;

use serde_json::{json, Value};

use super::*;
use crate::sdc::schema::tests_support::ietf;
use crate::sdc::schema::{SchemaCache, SchemaKey};

/// A small module of our own with one rule of each kind the validation checks.
const MINI: &str = r#"module mini-dev {
  yang-version 1.1;
  namespace "urn:choreo:test:mini-dev";
  prefix md;
  container system {
    leaf hostname {
      type string { length "1..20"; pattern "[a-z][a-z0-9-]*"; }
      mandatory true;
    }
    leaf-list dns { type string; max-elements 2; }
    leaf mgmt-interface { type leafref { path "/md:interface/md:name"; } }
    leaf mode { type enumeration { enum a; enum b; } default a; }
    leaf b-only { when "../mode = 'b'"; type string; }
  }
  list interface {
    key name;
    unique "vlan";
    leaf name { type string { pattern "e[0-9]+"; } }
    leaf mtu { type uint16 { range "68..9000"; } default 1500; }
    leaf vlan { type uint16; }
    leaf admin { type boolean; }
    leaf speed { type uint64; }
    leaf description {
      type string;
      must "string-length(.) < 30" { error-message "description too long"; }
    }
    list sub {
      key index;
      leaf index { type uint32; }
      leaf description { type string; }
    }
  }
}
"#;

fn mini() -> (tempfile::TempDir, Arc<Schema>) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("schemas");
    let dir = root.join("mini/1");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("mini-dev.yang"), MINI).unwrap();
    let schema =
        SchemaCache::default().get(&root, &SchemaKey { provider: "mini".into(), version: "1".into() }).unwrap();
    (tmp, schema)
}

fn running() -> Value {
    json!({"system": {"hostname": "r1"}, "interface": [{"name": "e1", "vlan": 1}, {"name": "e2", "vlan": 2}]})
}

fn snippet(id: &str, priority: i64, value: Value) -> Snippet {
    Snippet { id: id.into(), priority, entries: vec![Entry { path: "/".into(), value }] }
}

/// The findings as `(category, path, config)` plus whether the message mentions `needle`.
fn one(out: &Outcome) -> &Finding {
    assert_eq!(out.findings.len(), 1, "{:#?}", out.findings);
    &out.findings[0]
}

#[test]
fn a_valid_merge_prints_the_intended_configuration() {
    let (_t, schema) = mini();
    let out = intended(
        &schema,
        &running(),
        &[snippet("default/a", 10, json!({"interface": [{"name": "e1", "mtu": "9000", "description": "up"}]}))],
    );
    assert!(out.valid(), "{:#?}", out.findings);
    assert_eq!(
        out.merged.unwrap(),
        json!({"system": {"hostname": "r1"}, "interface": [
            {"name": "e1", "vlan": 1, "mtu": 9000, "description": "up"},
            {"name": "e2", "vlan": 2}
        ]})
    );
    assert_eq!(
        out.running_tree.unwrap(),
        json!({"system": {"hostname": "r1"}, "interface": [{"name": "e1", "vlan": 1}, {"name": "e2", "vlan": 2}]})
    );
    let src = |p: &str| out.blame.iter().find(|b| b.path == p).map(|b| (b.value.clone(), b.source.clone()));
    assert_eq!(src("/interface[name='e1']/mtu"), Some(("9000".into(), Source::Config("default/a".into()))));
    assert_eq!(src("/interface[name='e2']/mtu"), Some(("1500".into(), Source::Default)));
    assert_eq!(src("/system/hostname"), Some(("r1".into(), Source::Running)));
    assert_eq!(src("/system/mode"), Some(("a".into(), Source::Default)));
}

#[test]
fn the_stronger_priority_wins_whatever_the_names() {
    let (_t, schema) = mini();
    for (weak, strong) in [("default/a", "default/b"), ("default/b", "default/a")] {
        let out = intended(
            &schema,
            &running(),
            &[
                snippet(strong, 5, json!({"system": {"hostname": "strong"}})),
                snippet(weak, 20, json!({"system": {"hostname": "weak"}})),
            ],
        );
        assert!(out.valid(), "{:#?}", out.findings);
        assert_eq!(out.merged.unwrap()["system"]["hostname"], "strong");
        let b = out.blame.iter().find(|b| b.path == "/system/hostname").unwrap();
        assert_eq!(b.source, Source::Config(strong.into()));
    }
}

#[test]
fn equal_priorities_that_disagree_are_a_conflict() {
    let (_t, schema) = mini();
    let out = intended(
        &schema,
        &running(),
        &[
            snippet("default/a", 10, json!({"system": {"hostname": "x"}})),
            snippet("default/b", 10, json!({"system": {"hostname": "y"}})),
        ],
    );
    let f = one(&out);
    assert_eq!(f.category, Category::Conflict);
    assert_eq!(f.path.as_deref(), Some("/system/hostname"));
    assert!(f.message.contains("\"x\" by config default/a") && f.message.contains("\"y\" by config default/b"), "{f}");
    // Agreeing is no conflict.
    let out = intended(
        &schema,
        &running(),
        &[
            snippet("default/a", 10, json!({"system": {"hostname": "x"}})),
            snippet("default/b", 10, json!({"system": {"hostname": "x"}})),
        ],
    );
    assert!(out.valid(), "{:#?}", out.findings);
}

#[test]
fn keyed_paths_place_the_value_in_its_entry() {
    let (_t, schema) = mini();
    let s = Snippet {
        id: "default/sub".into(),
        priority: 10,
        entries: vec![
            Entry { path: "/interface[name=e2]/sub[index=3]".into(), value: json!({"description": "three"}) },
            Entry { path: "/system/dns".into(), value: json!(["1.1.1.1"]) },
        ],
    };
    let out = intended(&schema, &running(), &[s]);
    assert!(out.valid(), "{:#?}", out.findings);
    let merged = out.merged.unwrap();
    assert_eq!(merged["interface"][1], json!({"name": "e2", "vlan": 2, "sub": [{"index": 3, "description": "three"}]}));
    assert_eq!(merged["system"]["dns"], json!(["1.1.1.1"]));
}

/// The error matrix: each category, its message, and the path and Config it names.
#[test]
fn every_kind_of_error_names_its_path_and_config() {
    let (_t, schema) = mini();
    let cases: Vec<(&str, Value, Category, &str, &str)> = vec![
        // config import
        ("unknown node", json!({"system": {"colour": "red"}}), Category::Config, "/system/colour", "no schema node"),
        (
            "wrong type",
            json!({"interface": [{"name": "e1", "admin": "maybe"}]}),
            Category::Config,
            "/interface[0]/admin",
            "not a boolean",
        ),
        ("missing key", json!({"interface": [{"mtu": 1500}]}), Category::Config, "", "key"),
        ("range", json!({"interface": [{"name": "e1", "mtu": 10}]}), Category::Config, "mtu", "range"),
        ("pattern", json!({"interface": [{"name": "x1"}]}), Category::Config, "name", "pattern"),
        ("enum", json!({"system": {"mode": "c"}}), Category::Config, "mode", "enum"),
        (
            "length",
            json!({"system": {"hostname": "a-very-long-hostname-indeed"}}),
            Category::Config,
            "hostname",
            "length",
        ),
        // validation of the merged tree
        ("leafref", json!({"system": {"mgmt-interface": "e9"}}), Category::Validation, "/system/mgmt-interface", "e9"),
        (
            "must",
            json!({"interface": [{"name": "e1", "description": "a description that is far too long"}]}),
            Category::Validation,
            "/interface[name='e1']/description",
            "description too long",
        ),
        ("max-elements", json!({"system": {"dns": ["a", "b", "c"]}}), Category::Validation, "/system/dns", "too many"),
        ("unique", json!({"interface": [{"name": "e3", "vlan": 1}]}), Category::Validation, "/interface", "unique"),
        ("when", json!({"system": {"b-only": "x"}}), Category::Validation, "/system/b-only", "When"),
    ];
    for (what, value, category, path, needle) in cases {
        let out = intended(&schema, &running(), &[snippet("default/bad", 10, value)]);
        assert!(!out.findings.is_empty(), "{what}: no finding");
        let f = out
            .findings
            .iter()
            .find(|f| f.category == category)
            .unwrap_or_else(|| panic!("{what}: {:#?}", out.findings));
        let p = f.path.clone().unwrap_or_default();
        assert!(p.contains(path), "{what}: path {p:?} lacks {path:?}: {f}");
        assert!(f.message.to_lowercase().contains(&needle.to_lowercase()), "{what}: {f}");
        assert_eq!(f.config.as_deref(), Some("default/bad"), "{what}: {f}");
    }
}

#[test]
fn a_mandatory_leaf_missing_after_the_merge_is_reported() {
    let (_t, schema) = mini();
    let out = intended(&schema, &json!({"interface": [{"name": "e1"}]}), &[]);
    let f = one(&out);
    assert_eq!(f.category, Category::Validation);
    assert!(f.message.contains("hostname"), "{f}");
    assert_eq!(f.config, None, "nothing but the running config is there");
    assert!(out.merged.is_some());
}

#[test]
fn a_running_config_that_does_not_fit_is_its_own_category() {
    let (_t, schema) = mini();
    let out =
        intended(&schema, &json!({"system": {"hostname": "r1", "colour": 1}}), &[snippet("default/a", 10, json!({}))]);
    let f = one(&out);
    assert_eq!((f.category, f.path.as_deref(), f.config.as_deref()), (Category::Running, Some("/system/colour"), None));
    assert!(out.merged.is_none() && out.running_tree.is_none());
}

#[test]
fn bad_entry_paths_name_the_config_and_entry() {
    let (_t, schema) = mini();
    let s = Snippet {
        id: "ns/c".into(),
        priority: 10,
        entries: vec![
            Entry { path: "/system".into(), value: json!({"hostname": "ok"}) },
            Entry { path: "system".into(), value: json!({}) },
        ],
    };
    let out = intended(&schema, &running(), &[s]);
    let f = one(&out);
    assert_eq!(f.category, Category::Config);
    assert!(f.message.contains("starts with `/`") && f.message.ends_with("(entry 1, at system)"), "{f}");
    assert_eq!(f.to_string(), format!("{} [config ns/c]", f.message));
}

/// The IETF models: a snippet without the mandatory `type` is valid only on top of the
/// running config that has it.
#[test]
fn a_snippet_completed_by_the_running_config() {
    let (_t, schema) = ietf();
    let running = json!({"interfaces": {"interface": [{"name": "eth0", "type": "iana-if-type:ethernetCsmacd"}]}});
    let snippet = snippet(
        "default/eth0-ip",
        10,
        json!({"interfaces": {"interface": [{"name": "eth0", "description": "uplink",
            "ipv4": {"address": [{"ip": "192.0.2.1", "prefix-length": 24}]}}]}}),
    );
    let out = intended(&schema, &running, std::slice::from_ref(&snippet));
    assert!(out.valid(), "{:#?}", out.findings);
    assert_eq!(
        out.merged.unwrap(),
        json!({"interfaces": {"interface": [{"name": "eth0", "description": "uplink",
            "type": "iana-if-type:ethernetCsmacd",
            "ipv4": {"address": [{"ip": "192.0.2.1", "prefix-length": 24}]}}]}})
    );
    // Without it, the interface has no type.
    let out = intended(&schema, &json!({}), &[snippet]);
    let f = one(&out);
    assert_eq!(f.category, Category::Validation);
    assert!(f.message.contains("type"), "{f}");
    assert_eq!(f.config.as_deref(), Some("default/eth0-ip"));
}

/// The differential test: for each input, the merged configuration (as RFC 7951 JSON) is given
/// to `yanglint` (Debian's libyang2-tools, a separate libyang) with the same modules; its
/// verdict must be ours, and the error it reports first must be among ours.
#[test]
fn merged_verdicts_match_yanglint() {
    let (mini_tmp, mini_schema) = mini();
    let (ietf_tmp, ietf_schema) = ietf();
    let mini_files = vec![mini_tmp.path().join("schemas/mini/1/mini-dev.yang")];
    let ietf_dir = ietf_tmp.path().join("schemas/ietf.example/1.0");
    let ietf_files = vec![
        ietf_dir.join("ietf/ietf-interfaces.yang"),
        ietf_dir.join("ietf/ietf-ip.yang"),
        ietf_dir.join("iana/iana-if-type.yang"),
    ];
    let ietf_running = json!({"interfaces": {"interface": [{"name": "eth0", "type": "ethernetCsmacd"}]}});
    let no_type = json!({"interfaces": {"interface": [{"name": "eth0", "description": "d"}]}});
    type Case<'a> = (&'a str, bool, Value, Vec<Snippet>);
    let mini_cases: Vec<Case> = vec![
        ("merge", true, running(), vec![snippet("a", 10, json!({"interface": [{"name": "e1", "mtu": 9000}]}))]),
        ("no hostname", false, json!({"interface": [{"name": "e1"}]}), vec![]),
        ("dangling leafref", false, running(), vec![snippet("a", 10, json!({"system": {"mgmt-interface": "e7"}}))]),
        ("leafref", true, running(), vec![snippet("a", 10, json!({"system": {"mgmt-interface": "e2"}}))]),
        (
            "must",
            false,
            running(),
            vec![snippet("a", 10, json!({"interface": [{"name": "e2", "description": "x".repeat(40)}]}))],
        ),
        ("max-elements", false, running(), vec![snippet("a", 10, json!({"system": {"dns": ["a", "b", "c"]}}))]),
        ("unique", false, running(), vec![snippet("a", 10, json!({"interface": [{"name": "e2", "vlan": 1}]}))]),
        ("when", false, running(), vec![snippet("a", 10, json!({"system": {"b-only": "x"}}))]),
        ("when satisfied", true, running(), vec![snippet("a", 10, json!({"system": {"mode": "b", "b-only": "x"}}))]),
    ];
    let ietf_cases: Vec<Case> = vec![
        ("completed by running", true, ietf_running.clone(), vec![snippet("a", 10, no_type.clone())]),
        ("no type", false, json!({}), vec![snippet("a", 10, no_type)]),
    ];
    let all = mini_cases
        .into_iter()
        .map(|c| (c, &mini_schema, &mini_files))
        .chain(ietf_cases.into_iter().map(|c| (c, &ietf_schema, &ietf_files)));
    for ((name, valid, running, snippets), schema, files) in all {
        let out = intended(schema, &running, &snippets);
        assert_eq!(out.valid(), valid, "{name}: {:#?}", out.findings);
        let merged = out.merged.unwrap_or_else(|| panic!("{name}: nothing merged"));
        let data = crate::sdc::normalize::normalize(schema.context(), &merged).unwrap();
        let file = mini_tmp.path().join("merged.json");
        std::fs::write(&file, data.to_string()).unwrap();
        let mut cmd = std::process::Command::new("yanglint");
        for f in files.iter() {
            cmd.arg("-p").arg(f.parent().unwrap());
        }
        let res = cmd
            .args(["-t", "config"])
            .args(files.iter())
            .arg(&file)
            .output()
            .expect("yanglint (Debian's libyang2-tools; .ci/run installs it)");
        let stderr = String::from_utf8_lossy(&res.stderr);
        assert_eq!(res.status.success(), valid, "{name}: yanglint disagrees: {stderr}");
        if !valid {
            // "libyang err : <message> (Schema location ...)"
            let first = stderr
                .lines()
                .find_map(|l| l.strip_prefix("libyang err : "))
                .map(|l| l.split(" (Schema location").next().unwrap_or(l).split(" (Data location").next().unwrap_or(l))
                .unwrap_or_else(|| panic!("{name}: no error from yanglint: {stderr}"));
            assert!(
                out.findings.iter().any(|f| f.message == first.trim()),
                "{name}: yanglint's {first:?} is not among ours: {:#?}",
                out.findings
            );
        }
    }
}

/// The vendored OpenConfig interface set (with its sdcio manifest): a subinterface written the
/// lenient way, and a VLAN id out of range. (Addresses are left out: this release's
/// `openconfig-inet-types` patterns carry `^`/`$`, which YANG's regular expressions take as
/// literal characters, so libyang and yanglint refuse every address.)
#[test]
fn openconfig_interfaces_validate() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/devices/schemas");
    let key = SchemaKey { provider: "openconfig".into(), version: "0.1.9".into() };
    let schema = SchemaCache::default().get(&root, &key).unwrap();
    assert!(schema.modules.iter().all(|m| m.starts_with("openconfig-") || m == "iana-if-type"), "{:?}", schema.modules);
    assert!(schema.modules.contains(&"openconfig-if-ip".to_string()));
    let running = json!({"interfaces": {"interface": [{"name": "Ethernet1",
        "config": {"name": "Ethernet1", "type": "ethernetCsmacd", "mtu": "9000"}}]}});
    let address = json!({"interfaces": {"interface": [{"name": "Ethernet1", "subinterfaces": {"subinterface": [{
        "index": 0, "config": {"index": 0, "description": "to spine1", "enabled": "true"}
    }]}}]}});
    let out = intended(&schema, &running, &[snippet("default/ip", 10, address)]);
    assert!(out.valid(), "{:#?}", out.findings);
    let merged = out.merged.unwrap();
    let sub = &merged["interfaces"]["interface"][0]["subinterfaces"]["subinterface"][0];
    assert_eq!(sub["config"], json!({"index": 0, "description": "to spine1", "enabled": true}));
    assert_eq!(merged["interfaces"]["interface"][0]["config"]["mtu"], 9000);
    let vlan = json!({"interfaces": {"interface": [{"name": "Ethernet1", "subinterfaces": {"subinterface": [{
        "index": 1, "config": {"index": 1}, "vlan": {"config": {"vlan-id": 5000}}}]}}]}});
    let out = intended(&schema, &running, &[snippet("default/vlan", 10, vlan)]);
    let f = one(&out);
    assert_eq!((f.category, f.config.as_deref()), (Category::Config, Some("default/vlan")));
    assert!(f.message.contains("5000"), "{f}");
}

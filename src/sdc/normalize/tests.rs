use serde_json::json;
use yang3::data::{DataFormat, DataParserFlags, DataTree, DataValidationFlags};

use super::*;
use crate::sdc::schema::tests_support::ietf;

#[test]
fn lenient_input_becomes_rfc7951() {
    let (_tmp, schema) = ietf();
    let lenient = json!({"interfaces": {"interface": [{
        "name": "e1", "type": "iana-if-type:ethernetCsmacd", "enabled": "true",
        "ipv4": {"mtu": "1500", "address": [{"ip": "10.0.0.1", "prefix-length": "24"}]}
    }]}});
    let out = normalize(schema.context(), &lenient).unwrap();
    assert_eq!(
        out,
        json!({"ietf-interfaces:interfaces": {"interface": [{
            "name": "e1", "type": "iana-if-type:ethernetCsmacd", "enabled": true,
            "ietf-ip:ipv4": {"mtu": 1500, "address": [{"ip": "10.0.0.1", "prefix-length": 24}]}
        }]}})
    );
    // libyang reads it, strictly.
    let text = serde_json::to_string(&out).unwrap();
    DataTree::parse_string(
        schema.context(),
        text,
        DataFormat::JSON,
        DataParserFlags::NO_VALIDATION | DataParserFlags::STRICT,
        DataValidationFlags::empty(),
    )
    .unwrap();
    // Already qualified input stays as it is.
    assert_eq!(normalize(schema.context(), &out).unwrap(), out);
}

#[test]
fn a_single_object_is_a_one_entry_list() {
    let (_tmp, schema) = ietf();
    let out = normalize(schema.context(), &json!({"interfaces": {"interface": {"name": "e1"}}})).unwrap();
    assert_eq!(out, json!({"ietf-interfaces:interfaces": {"interface": [{"name": "e1"}]}}));
}

#[test]
fn every_misfit_is_reported_with_its_path() {
    let (_tmp, schema) = ietf();
    let bad = json!({
        "interfaces": {"interface": [{"name": "e1", "colour": "red", "enabled": "maybe",
            "ipv4": {"mtu": "big"}}]},
        "nonsense": {}
    });
    let misfits = normalize(schema.context(), &bad).unwrap_err();
    let got: Vec<(String, String)> = misfits.into_iter().map(|m| (m.path, m.message)).collect();
    assert_eq!(
        got,
        [
            ("/interfaces/interface[0]/colour".to_string(), "no schema node \"colour\" here".to_string()),
            ("/interfaces/interface[0]/enabled".to_string(), "\"maybe\" is not a boolean".to_string()),
            ("/interfaces/interface[0]/ipv4/mtu".to_string(), "\"big\" is not an integer".to_string()),
            ("/nonsense".to_string(), "no schema node \"nonsense\" here".to_string()),
        ]
    );
    let err = normalize(schema.context(), &json!([1])).unwrap_err();
    assert_eq!(err[0].path, "/");
}

#[test]
fn a_wrong_module_prefix_does_not_match() {
    let (_tmp, schema) = ietf();
    let err = normalize(schema.context(), &json!({"ietf-ip:interfaces": {}})).unwrap_err();
    assert_eq!(err[0].path, "/interfaces");
}

#[test]
fn identities_get_their_module() {
    let (_tmp, schema) = ietf();
    let out =
        normalize(schema.context(), &json!({"interfaces": {"interface": [{"name": "e1", "type": "ethernetCsmacd"}]}}))
            .unwrap();
    assert_eq!(
        out,
        json!({"ietf-interfaces:interfaces": {"interface": [{"name": "e1", "type": "iana-if-type:ethernetCsmacd"}]}})
    );
    let err = normalize(schema.context(), &json!({"interfaces": {"interface": [{"name": "e1", "type": "warpDrive"}]}}))
        .unwrap_err();
    assert_eq!(err[0].path, "/interfaces/interface[0]/type");
    assert_eq!(err[0].message, "\"warpDrive\" is not an identity derived from the type's base");
}

/// The verdict of libyang (ours, 3.x, via the normaliser) equals that of the reference tool,
/// Debian's `yanglint` (libyang 2.1), on the same modules and the same normalised data.
#[test]
fn verdicts_match_yanglint() {
    use yang3::data::{DataFormat, DataParserFlags, DataTree, DataValidationFlags};
    let (tmp, schema) = ietf();
    let dir = tmp.path().join("schemas/ietf.example/1.0");
    let interface = |extra: serde_json::Value| {
        let mut e = json!({"name": "e1", "type": "ethernetCsmacd"});
        e.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        json!({"interfaces": {"interface": [e]}})
    };
    let cases = [
        ("plain", true, interface(json!({}))),
        ("ipv4", true, interface(json!({"ipv4": {"mtu": 1500, "address": [{"ip": "10.0.0.1", "prefix-length": 24}]}}))),
        ("mtu below range", false, interface(json!({"ipv4": {"mtu": 10}}))),
        ("bad address", false, interface(json!({"ipv4": {"address": [{"ip": "10.0.0.300", "prefix-length": 24}]}}))),
        ("prefix too long", false, interface(json!({"ipv4": {"address": [{"ip": "10.0.0.1", "prefix-length": 33}]}}))),
        ("no type", false, json!({"interfaces": {"interface": [{"name": "e1"}]}})),
        ("description", true, interface(json!({"description": "uplink", "enabled": false}))),
    ];
    for (name, valid, input) in cases {
        let data = normalize(schema.context(), &input).unwrap_or_else(|m| panic!("{name}: {m:?}"));
        let text = serde_json::to_string(&data).unwrap();
        let ours = DataTree::parse_string(
            schema.context(),
            &text,
            DataFormat::JSON,
            DataParserFlags::STRICT | DataParserFlags::NO_STATE,
            DataValidationFlags::NO_STATE,
        )
        .is_ok();
        let file = tmp.path().join("data.json");
        std::fs::write(&file, &text).unwrap();
        let out = std::process::Command::new("yanglint")
            .arg("-p")
            .arg(dir.join("ietf"))
            .arg("-p")
            .arg(dir.join("iana"))
            .args(["-t", "config"])
            .arg(dir.join("ietf/ietf-interfaces.yang"))
            .arg(dir.join("ietf/ietf-ip.yang"))
            .arg(dir.join("iana/iana-if-type.yang"))
            .arg(&file)
            .output()
            .expect("yanglint (Debian's libyang2-tools; .ci/run installs it)");
        let theirs = out.status.success();
        assert_eq!(ours, valid, "{name}");
        assert_eq!(
            ours,
            theirs,
            "{name}: libyang 3 says {ours}, yanglint says {theirs}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

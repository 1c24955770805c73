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

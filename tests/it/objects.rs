use crate::support::*;

const LEAF3: &str =
    "apiVersion: net.example.org/v1alpha1\nkind: Device\nmetadata:\n  name: leaf3\nspec:\n  role: leaf\n  asn: 65103\n";

#[test]
fn api_resources_json_lists_builtin_and_project_apis() {
    let p = TestProject::new("network");
    let _s = p.start();
    let list = p.cli(&["api-resources", "-o", "json"]).ok().json();
    let items = list.as_array().unwrap();
    let find = |res: &str| {
        items.iter().find(|r| r["resource"] == res).cloned().unwrap_or_else(|| panic!("{res} missing: {list}"))
    };
    let dev = find("devices");
    assert_eq!(
        dev,
        serde_json::json!({"resource": "devices", "group": "net.example.org", "version": "v1alpha1", "kind": "Device", "namespaced": true})
    );
    for builtin in ["customresourcedefinitions", "reconcilers", "libraries", "upstreamrefs"] {
        find(builtin);
    }
    let names: Vec<_> = items.iter().map(|r| r["resource"].as_str().unwrap().to_string()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "sorted by resource");
}

#[test]
fn get_formats() {
    let p = TestProject::new("network");
    let _s = p.start();
    let list = p.cli(&["get", "devices.net.example.org", "-o", "json"]).ok().json();
    assert_eq!(list["apiVersion"], "v1");
    assert_eq!(list["kind"], "List");
    let names: Vec<_> =
        list["items"].as_array().unwrap().iter().map(|o| o["metadata"]["name"].as_str().unwrap().to_string()).collect();
    assert_eq!(names, ["leaf1", "spine1"]);
    assert!(list["items"][0]["metadata"].get("managedFields").is_none(), "hidden by default");
    let one = p.cli(&["get", "dev", "leaf1", "-n", "default", "-o", "yaml"]).ok();
    assert!(one.stdout.starts_with("apiVersion: net.example.org/v1alpha1\nkind: Device\n"), "{}", one.stdout);
    let names = p.cli(&["get", "device", "-o", "name"]).ok();
    assert_eq!(names.stdout, "device.net.example.org/leaf1\ndevice.net.example.org/spine1\n");
    let table = p.cli(&["get", "devices"]).ok();
    assert!(table.stdout.starts_with("NAMESPACE   NAME     READY   AGE\ndefault     leaf1    -"), "{}", table.stdout);
    let missing = p.cli(&["get", "devices", "nope"]);
    assert_eq!(missing.code, 1);
    assert!(missing.stderr.contains("Device.net.example.org default/nope: not found"), "{}", missing.stderr);
    let other_ns = p.cli(&["get", "devices", "-n", "other", "-o", "json"]).ok().json();
    assert_eq!(other_ns["items"], serde_json::json!([]));
}

#[test]
fn apply_writes_the_input_file_and_the_object_is_loaded() {
    let p = TestProject::new("network");
    let _s = p.start();
    let run = p.cli_stdin(&["apply", "-f", "-"], LEAF3).ok();
    assert_eq!(run.stdout, "Device.net.example.org default/leaf3 created (in/net.example.org.device.leaf3.yaml)\n");
    let written = std::fs::read_to_string(p.path("in/net.example.org.device.leaf3.yaml")).unwrap();
    assert!(written.contains("asn: 65103"), "{written}");
    let obj = p.cli(&["get", "devices", "leaf3", "-o", "json"]).ok().json();
    assert_eq!(obj["spec"]["asn"], 65103);
    // Applying again with a change updates the same file.
    let run = p.cli_stdin(&["apply", "-f", "-"], &LEAF3.replace("65103", "65113")).ok();
    assert!(run.stdout.contains("configured"), "{}", run.stdout);
    assert_eq!(p.cli(&["get", "devices", "leaf3", "-o", "json"]).ok().json()["spec"]["asn"], 65113);
    let run = p.cli_stdin(&["apply", "-f", "-"], &LEAF3.replace("65103", "65113")).ok();
    assert!(run.stdout.contains("unchanged"), "{}", run.stdout);
}

#[test]
fn apply_to_an_object_of_a_multi_document_file_edits_that_document_only() {
    let p = TestProject::new("network");
    let _s = p.start();
    let site =
        "apiVersion: net.example.org/v1alpha1\nkind: Site\nmetadata:\n  name: nyc1\nspec:\n  region: us-east-2\n";
    let run = p.cli_stdin(&["apply", "-f", "-"], site).ok();
    assert!(run.stdout.contains("(in/sites.yaml)"), "{}", run.stdout);
    let text = std::fs::read_to_string(p.path("in/sites.yaml")).unwrap();
    assert!(text.starts_with("# Two sites in one file"), "the rest of the file is kept: {text}");
    assert!(text.contains("region: us-east-2") && text.contains("region: eu-west"), "{text}");
    assert_eq!(p.cli(&["get", "sites", "nyc1", "-o", "json"]).ok().json()["spec"]["region"], "us-east-2");
}

#[test]
fn a_rejected_apply_writes_nothing() {
    let p = TestProject::new("network");
    let _s = p.start();
    let before = p.in_files();
    let unknown = "apiVersion: net.example.org/v1alpha1\nkind: Router\nmetadata:\n  name: r\n";
    let run = p.cli_stdin(&["apply", "-f", "-"], unknown);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("Router"), "{}", run.stderr);
    let malformed = "apiVersion: net.example.org/v1alpha1\nkind: Device\nmetadata: [\n";
    let run = p.cli_stdin(&["apply", "-f", "-"], malformed);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("-:"), "location of the YAML error: {}", run.stderr);
    let bad_name = LEAF3.replace("leaf3", "Leaf_3");
    let run = p.cli_stdin(&["apply", "-f", "-"], &bad_name);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("metadata.name: Invalid value: \"Leaf_3\""), "{}", run.stderr);
    assert_eq!(p.in_files(), before);
}

#[test]
fn apply_keeps_going_after_one_bad_object_and_exits_1() {
    let p = TestProject::new("network");
    let _s = p.start();
    let mixed = format!("{LEAF3}---\napiVersion: net.example.org/v1alpha1\nkind: Router\nmetadata:\n  name: r\n");
    let run = p.cli_stdin(&["apply", "-f", "-"], &mixed);
    assert_eq!(run.code, 1);
    assert!(run.stdout.contains("leaf3 created"), "{}", run.stdout);
    p.cli(&["get", "devices", "leaf3"]).ok();
}

#[test]
fn apply_a_directory_with_a_crd_and_objects_of_its_kind() {
    let p = TestProject::new("network");
    let _s = p.start();
    let dir = p.tmp.path().join("more");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("a-leaf.yaml"), LEAF3).unwrap();
    let run = p.cli(&["apply", "-f", dir.to_str().unwrap(), "--dry-run"]).ok();
    assert!(run.stdout.contains("created (dry run)"), "{}", run.stdout);
    assert!(!p.path("in/net.example.org.device.leaf3.yaml").exists(), "dry run writes nothing");
    p.cli(&["apply", "-f", dir.to_str().unwrap()]).ok();
    p.cli(&["get", "devices", "leaf3"]).ok();
}

#[test]
fn delete_removes_the_file_or_the_document() {
    let p = TestProject::new("network");
    let _s = p.start();
    let run = p.cli(&["delete", "devices", "spine1"]).ok();
    assert!(run.stdout.contains("deleted (in/net.example.org.device.spine1.yaml)"), "{}", run.stdout);
    assert!(!p.path("in/net.example.org.device.spine1.yaml").exists());
    assert_eq!(p.cli(&["get", "devices", "spine1"]).code, 1);
    p.cli(&["delete", "sites", "nyc1"]).ok();
    let text = std::fs::read_to_string(p.path("in/sites.yaml")).unwrap();
    assert!(text.contains("ams1") && !text.contains("nyc1"), "{text}");
    let missing = p.cli(&["delete", "devices", "ghost"]);
    assert_eq!(missing.code, 1);
    assert!(missing.stderr.contains("not found"), "{}", missing.stderr);
    let usage = p.cli(&["delete", "devices"]);
    assert_eq!(usage.code, 2);
}

#[test]
fn delete_by_file() {
    let p = TestProject::new("network");
    let _s = p.start();
    let f = p.tmp.path().join("leaf1.yaml");
    std::fs::copy(p.path("in/net.example.org.device.leaf1.yaml"), &f).unwrap();
    p.cli(&["delete", "-f", f.to_str().unwrap()]).ok();
    assert_eq!(p.cli(&["get", "devices", "leaf1"]).code, 1);
}

fn rejected(p: &TestProject, yaml: &str) -> String {
    let before = p.in_files();
    let run = p.cli_stdin(&["apply", "-f", "-"], yaml);
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(p.in_files(), before, "a rejected object is never written");
    run.stderr
}

#[test]
fn schema_violations_are_reported_kubernetes_style() {
    let p = TestProject::new("network");
    let _s = p.start();
    let err = rejected(&p, &LEAF3.replace("asn: 65103", "asn: \"x\""));
    assert!(
        err.contains("spec.asn: Invalid value: \"string\": spec.asn in body must be of type integer: \"string\""),
        "{err}"
    );
    let err = rejected(&p, &LEAF3.replace("role: leaf", "role: router"));
    assert!(
        err.contains("spec.role: Unsupported value: \"router\": supported values: \"leaf\", \"spine\", \"border\""),
        "{err}"
    );
    let err = rejected(&p, &LEAF3.replace("asn: 65103", "asn: 0"));
    assert!(err.contains("spec.asn: Invalid value: 0: spec.asn in body should be greater than or equal to 1"), "{err}");
    let err = rejected(&p, &LEAF3.replace("  asn: 65103\n", ""));
    assert!(err.contains("spec.asn: Required value"), "{err}");
    let err = rejected(&p, &format!("{LEAF3}  hostname: Leaf_3\n"));
    assert!(
        err.contains(
            "spec.hostname: Invalid value: \"Leaf_3\": spec.hostname in body should match '^[a-z][a-z0-9-]*$'"
        ),
        "{err}"
    );
    let err = rejected(&p, &format!("{LEAF3}  managementAddress: 300.1.1.1\n"));
    assert!(err.contains("spec.managementAddress: Invalid value: \"300.1.1.1\""), "{err}");
    let err = rejected(&p, &format!("{LEAF3}  tags: [a, a]\n"));
    assert!(err.contains("spec.tags[1]: Duplicate value: \"a\""), "{err}");
}

#[test]
fn cel_validation_rules_apply() {
    let p = TestProject::new("network");
    let _s = p.start();
    let spine = LEAF3.replace("role: leaf", "role: spine").replace("leaf3", "spine3");
    let err = rejected(&p, &spine);
    assert!(err.contains("spines use an AS number below 65000"), "{err}");
    p.cli_stdin(&["apply", "-f", "-"], &spine.replace("65103", "64603")).ok();
}

#[test]
fn undeclared_fields_are_rejected_by_server_side_apply() {
    let p = TestProject::new("network");
    let _s = p.start();
    let err = rejected(&p, &format!("{LEAF3}  vendor: acme\n"));
    assert!(err.contains(".spec.vendor: field not declared in schema"), "{err}");
    // Under additionalProperties anything may appear.
    let site = "apiVersion: net.example.org/v1alpha1\nkind: Site\nmetadata:\n  name: lon1\nspec:\n  labels:\n    anything: goes\n";
    p.cli_stdin(&["apply", "-f", "-"], site).ok();
}

#[test]
fn schema_defaults_are_filled_in() {
    let p = TestProject::new("network");
    let _s = p.start();
    let leaf = p.cli(&["get", "devices", "leaf1", "-o", "json"]).ok().json();
    assert_eq!(leaf["spec"]["platform"], "srlinux");
    assert_eq!(leaf["spec"]["interfaces"][0]["mtu"], 9000, "default inside a list-map item");
    assert_eq!(leaf["spec"]["interfaces"][1]["mtu"], 1500, "an explicit value wins");
}

#[test]
fn managed_fields_record_the_input_loader() {
    let p = TestProject::new("network");
    let _s = p.start();
    let leaf = p.cli(&["get", "devices", "leaf1", "-o", "json", "--show-managed-fields"]).ok().json();
    let mf = leaf["metadata"]["managedFields"].as_array().expect("managedFields");
    assert_eq!(mf.len(), 1);
    assert_eq!(mf[0]["manager"], "inputfileloader");
    assert_eq!(mf[0]["operation"], "Apply");
    let fields = &mf[0]["fieldsV1"];
    assert!(fields["f:spec"]["f:interfaces"]["k:{\"name\":\"ethernet-1/1\"}"].is_object(), "{fields}");
    assert!(fields["f:spec"]["f:tags"]["v:\"edge\""].is_object(), "{fields}");
    assert!(fields["f:spec"].get("f:platform").is_none(), "defaulted fields belong to no manager");
}

#[test]
fn what_apply_and_delete_commit_is_exactly_what_a_reload_of_the_files_gives() {
    let p = TestProject::new("network");
    let _s = p.start();
    p.cli_stdin(&["apply", "-f", "-"], LEAF3).ok();
    p.cli(&["delete", "sites", "ams1"]).ok();
    // nyc1 moved up to the first document of in/sites.yaml; editing it must hit the right one.
    let nyc = "apiVersion: net.example.org/v1alpha1\nkind: Site\nmetadata:\n  name: nyc1\nspec:\n  region: us-east-9\n";
    p.cli_stdin(&["apply", "-f", "-"], nyc).ok();
    let text = std::fs::read_to_string(p.path("in/sites.yaml")).unwrap();
    assert!(text.contains("us-east-9") && !text.contains("ams1"), "{text}");
    let snapshot = |p: &TestProject| {
        ["devices", "sites"]
            .iter()
            .map(|r| p.cli(&["get", r, "-o", "json", "--show-managed-fields"]).ok().stdout)
            .collect::<Vec<_>>()
    };
    let before = snapshot(&p);
    p.cli(&["run", "load"]).ok();
    assert_eq!(snapshot(&p), before);
}

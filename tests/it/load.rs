use crate::support::*;

fn status(p: &TestProject) -> serde_json::Value {
    p.cli(&["server", "get", "-o", "json"]).ok().json()
}

#[test]
fn static_start_loads_crds_and_inputs() {
    let p = TestProject::new("network");
    let _s = p.start();
    let st = status(&p);
    assert_eq!(st["status"], "Ready", "{st}");
    assert_eq!(st["mode"], "static");
    assert_eq!(st["context"]["path"], p.dir.canonicalize().unwrap().to_str().unwrap());
    let leaf = p.cli(&["get", "devices", "leaf1", "-o", "json"]).ok().json();
    assert_eq!(leaf["metadata"]["annotations"]["api.choreo.kform.dev/origin"], r#"{"kind":"File"}"#);
    let sites = p.cli(&["get", "sites", "-o", "json"]).ok().json();
    let names: Vec<_> = sites["items"].as_array().unwrap().iter().map(|s| s["metadata"]["name"].clone()).collect();
    assert_eq!(names, ["ams1", "nyc1"], "both documents of the multi-document file");
    let crds = p.cli(&["get", "crds", "-o", "name"]).ok();
    assert!(
        crds.stdout.contains("customresourcedefinition.apiextensions.k8s.io/devices.net.example.org"),
        "{}",
        crds.stdout
    );
}

#[test]
fn a_load_error_names_file_line_and_column_and_keeps_the_last_good_state() {
    let p = TestProject::new("network");
    let _s = p.start();
    let before = p.cli(&["get", "devices", "-o", "json"]).ok().stdout;
    p.write(
        "in/broken.yaml",
        "apiVersion: net.example.org/v1alpha1\nkind: Device\nmetadata:\n  name: x\nspec: {role: leaf\n",
    );
    let run = p.cli(&["run", "load"]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("in/broken.yaml:"), "{}", run.stderr);
    let st = status(&p);
    assert_eq!(st["status"], "Failed");
    let reason = st["reason"].as_str().unwrap();
    let loc = reason.split(": ").next().unwrap();
    let parts: Vec<_> = loc.split(':').collect();
    assert_eq!(parts[0], "in/broken.yaml", "{reason}");
    assert!(parts[1].parse::<u32>().unwrap() >= 5 && parts[2].parse::<u32>().is_ok(), "{reason}");
    assert_eq!(p.cli(&["get", "devices", "-o", "json"]).ok().stdout, before, "store unchanged");

    p.remove("in/broken.yaml");
    p.cli(&["run", "load"]).ok();
    assert_eq!(status(&p)["status"], "Ready");
}

#[test]
fn an_unknown_kind_fails_the_load_naming_the_file() {
    let p = TestProject::new("network");
    let _s = p.start();
    p.write("in/router.yaml", "apiVersion: net.example.org/v1alpha1\nkind: Router\nmetadata:\n  name: r1\n");
    assert_eq!(p.cli(&["run", "load"]).code, 1);
    let reason = status(&p)["reason"].as_str().unwrap().to_string();
    assert!(reason.starts_with("in/router.yaml:1:1: unknown kind Router"), "{reason}");
}

#[test]
fn a_document_without_kind_and_a_non_crd_in_crds_are_errors() {
    let p = TestProject::new("network");
    let _s = p.start();
    p.write("in/nokind.yaml", "apiVersion: v1\nmetadata:\n  name: a\n");
    p.write("crds/extra.yaml", "apiVersion: net.example.org/v1alpha1\nkind: Site\nmetadata:\n  name: s\n");
    assert_eq!(p.cli(&["run", "load"]).code, 1);
    let reason = status(&p)["reason"].as_str().unwrap().to_string();
    assert!(reason.contains("in/nokind.yaml:1:1: kind: Required value"), "{reason}");
    assert!(reason.contains("crds/extra.yaml:1:1: expected a CustomResourceDefinition"), "{reason}");
}

#[test]
fn a_server_started_on_a_broken_project_serves_failed_status() {
    let p = TestProject::new("network");
    p.write("in/broken.yaml", "kind: [\n");
    let _s = p.start();
    let st = status(&p);
    assert_eq!(st["status"], "Failed");
    assert!(st["reason"].as_str().unwrap().starts_with("in/broken.yaml:"), "{st}");
}

#[test]
fn objects_of_a_removed_file_or_document_disappear() {
    let p = TestProject::new("network");
    let _s = p.start();
    // Drop the second document of the multi-document file, then a whole file.
    p.write("in/sites.yaml", "apiVersion: net.example.org/v1alpha1\nkind: Site\nmetadata:\n  name: ams1\n");
    p.remove("in/net.example.org.device.spine1.yaml");
    p.cli(&["run", "load"]).ok();
    assert_eq!(p.cli(&["get", "sites", "nyc1"]).code, 1);
    assert_eq!(p.cli(&["get", "devices", "spine1"]).code, 1);
    p.cli(&["get", "sites", "ams1"]).ok();
}

#[test]
fn a_removed_crd_unregisters_its_api() {
    let p = TestProject::new("network");
    let _s = p.start();
    p.remove("crds/net.example.org_sites.yaml");
    p.remove("in/sites.yaml");
    p.cli(&["run", "load"]).ok();
    let list = p.cli(&["api-resources", "-o", "json"]).ok().json();
    assert!(!list.to_string().contains("\"sites\""), "{list}");
}

#[test]
fn orphans_are_garbage_collected_owner_identity_includes_uid() {
    let p = TestProject::new("network");
    let _s = p.start();
    // A device owned by a site that does not exist (wrong uid): collected at load.
    p.write(
        "in/orphan.yaml",
        "apiVersion: net.example.org/v1alpha1\nkind: Device\nmetadata:\n  name: orphan\n  ownerReferences:\n  - apiVersion: net.example.org/v1alpha1\n    kind: Site\n    name: ams1\n    uid: 00000000-0000-0000-0000-000000000000\nspec:\n  role: leaf\n  asn: 65111\n",
    );
    p.cli(&["run", "load"]).ok();
    assert_eq!(p.cli(&["get", "devices", "orphan"]).code, 1, "orphan collected");
    // The same reference with the owner's real uid keeps it.
    let uid =
        p.cli(&["get", "sites", "ams1", "-o", "json"]).ok().json()["metadata"]["uid"].as_str().unwrap().to_string();
    let text = std::fs::read_to_string(p.path("in/orphan.yaml"))
        .unwrap()
        .replace("00000000-0000-0000-0000-000000000000", &uid);
    p.write("in/orphan.yaml", &text);
    p.cli(&["run", "load"]).ok();
    p.cli(&["get", "devices", "orphan"]).ok();
}

#[test]
fn reloading_an_unchanged_project_changes_nothing() {
    let p = TestProject::new("network");
    let _s = p.start();
    let before = p.cli(&["get", "devices", "-o", "json", "--show-managed-fields"]).ok().stdout;
    p.cli(&["run", "load"]).ok();
    let after = p.cli(&["get", "devices", "-o", "json", "--show-managed-fields"]).ok().stdout;
    assert_eq!(before, after, "no-op writes are suppressed: same resourceVersions and timestamps");
}

#[test]
fn an_invalid_object_in_a_file_fails_the_load_with_its_location_and_field() {
    let p = TestProject::new("network");
    let _s = p.start();
    p.write(
        "in/more.yaml",
        "apiVersion: net.example.org/v1alpha1\nkind: Site\nmetadata:\n  name: ok1\n---\napiVersion: net.example.org/v1alpha1\nkind: Device\nmetadata:\n  name: bad\nspec:\n  role: leaf\n  asn: many\n",
    );
    assert_eq!(p.cli(&["run", "load"]).code, 1);
    let reason = status(&p)["reason"].as_str().unwrap().to_string();
    assert!(
        reason.starts_with("in/more.yaml:6:1: Device.net.example.org default/bad: spec.asn: Invalid value: \"string\""),
        "{reason}"
    );
    assert_eq!(p.cli(&["get", "sites", "ok1"]).code, 1, "nothing of a failed load is applied");
}

#[test]
fn a_crd_change_revalidates_inputs_whose_files_did_not_change() {
    let p = TestProject::new("network");
    let _s = p.start();
    p.cli(&["run", "load"]).ok();
    let f = "crds/net.example.org_devices.yaml";
    let text = std::fs::read_to_string(p.path(f)).unwrap().replace("maximum: 4294967295", "maximum: 100");
    p.write(f, &text);
    assert_eq!(p.cli(&["run", "load"]).code, 1);
    let reason = status(&p)["reason"].as_str().unwrap().to_string();
    assert!(
        reason.contains("in/net.example.org.device.leaf1.yaml:1:1") && reason.contains("less than or equal to 100"),
        "{reason}"
    );
}

#[test]
fn an_unchanged_file_whose_object_went_missing_is_loaded_again() {
    let p = TestProject::new("network");
    let _s = p.start();
    // An input object owned by a missing owner is collected; its file did not change, and the
    // next load must still find the object missing and apply the file again (then collect it).
    p.write("in/owned.yaml", "apiVersion: net.example.org/v1alpha1\nkind: Site\nmetadata:\n  name: owned\n");
    p.cli(&["run", "load"]).ok();
    p.cli(&["delete", "sites", "owned"]).ok();
    assert_eq!(p.cli(&["get", "sites", "owned"]).code, 1);
    p.write("in/owned.yaml", "apiVersion: net.example.org/v1alpha1\nkind: Site\nmetadata:\n  name: owned\n");
    p.cli(&["run", "load"]).ok();
    p.cli(&["get", "sites", "owned"]).ok();
}

#[test]
fn a_deeply_nested_file_is_refused_before_it_is_parsed() {
    // 150k nested `[` kept the YAML parser busy for minutes (its time is quadratic in depth).
    let p = TestProject::new("network");
    let _s = p.start();
    let deep = "[".repeat(150_000);
    p.write("in/deep.yaml", &deep);
    let run = p.cli(&["run", "load"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("in/deep.yaml:1:201: nesting deeper than 200 levels"), "{}", run.stderr);
    let st = status(&p);
    assert_eq!(st["status"], "Failed");
    assert!(st["reason"].as_str().unwrap().contains("in/deep.yaml:1:201: nesting deeper than 200 levels"), "{st}");
    p.cli(&["get", "devices", "leaf1"]).ok();

    // The CLI refuses the same text before sending anything.
    let file = p.tmp.path().join("deep.yaml");
    std::fs::write(&file, format!("apiVersion: v1\nkind: ConfigMap\ndata: {deep}\n")).unwrap();
    let apply = p.cli(&["apply", "-f", file.to_str().unwrap()]);
    assert_eq!(apply.code, 1, "{apply:?}");
    assert!(apply.stderr.contains("deep.yaml:3:206: nesting deeper than 200 levels"), "{}", apply.stderr);

    p.remove("in/deep.yaml");
    p.cli(&["run", "load"]).ok();
    assert_eq!(status(&p)["status"], "Ready");
}

#[test]
fn a_file_replaced_by_a_broken_link_fails_the_load_and_keeps_its_objects() {
    // A dangling link used to be skipped: its objects were deleted and the status said Ready.
    let p = TestProject::new("network");
    let _s = p.start();
    let leaf = p.path("in/net.example.org.device.leaf1.yaml");
    let moved = p.tmp.path().join("leaf1.yaml");
    std::fs::rename(&leaf, &moved).unwrap();
    std::os::unix::fs::symlink("/nowhere/leaf1.yaml", &leaf).unwrap();
    let run = p.cli(&["run", "load"]);
    assert_eq!(run.code, 1, "{run:?}");
    let want = "in/net.example.org.device.leaf1.yaml: symbolic link to /nowhere/leaf1.yaml that does not resolve";
    assert!(run.stderr.contains(want), "{}", run.stderr);
    let st = status(&p);
    assert_eq!(st["status"], "Failed");
    assert!(st["reason"].as_str().unwrap().contains(want), "{st}");
    p.cli(&["get", "devices", "leaf1"]).ok();

    // A link that loops, likewise.
    std::fs::remove_file(&leaf).unwrap();
    std::os::unix::fs::symlink("net.example.org.device.leaf1.yaml", &leaf).unwrap();
    let run = p.cli(&["run", "load"]);
    assert!(
        run.stderr.contains("leaf1.yaml: symbolic link to net.example.org.device.leaf1.yaml is a loop"),
        "{}",
        run.stderr
    );
    p.cli(&["get", "devices", "leaf1"]).ok();

    // A link to a file outside the project is read in static mode.
    std::fs::remove_file(&leaf).unwrap();
    std::os::unix::fs::symlink(&moved, &leaf).unwrap();
    p.cli(&["run", "load"]).ok();
    assert_eq!(status(&p)["status"], "Ready");
    p.cli(&["get", "devices", "leaf1"]).ok();
}

#[test]
fn costly_cel_rules_are_refused_at_registration_and_before_evaluation() {
    let p = TestProject::new("network");
    let _s = p.start();
    let crd = |max_items: &str| {
        format!(
            "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: pools.net.example.org\n\
             spec:\n  group: net.example.org\n  scope: Namespaced\n  names: {{kind: Pool, plural: pools, singular: pool}}\n\
             \x20 versions:\n  - name: v1alpha1\n    served: true\n    storage: true\n    schema:\n      openAPIV3Schema:\n\
             \x20       type: object\n        properties:\n          spec:\n            type: object\n            properties:\n\
             \x20             members:\n                type: array\n{max_items}                items: {{type: integer}}\n\
             \x20               x-kubernetes-validations:\n                - rule: self.all(x, self.exists_one(y, x == y))\n\
             \x20                 message: members are unique\n"
        )
    };
    // Without maxItems the nested rule could run for minutes: the CRD is refused, naming it, the
    // field path and the rule.
    p.write("crds/pools.yaml", &crd(""));
    assert_eq!(p.cli(&["run", "load"]).code, 1);
    let reason = status(&p)["reason"].as_str().unwrap().to_string();
    assert!(reason.contains("invalid crd pools.net.example.org: spec.versions[v1alpha1].schema.openAPIV3Schema.properties.spec.properties.members.x-kubernetes-validations[0].rule: Forbidden: estimated rule cost exceeds budget"), "{reason}");
    assert!(reason.contains("self.all(x, self.exists_one(y, x == y))"), "{reason}");

    // Bounded, it registers; an object far over the bound is refused by maxItems, and the rule
    // is not run on it (30k items: 900 million steps), with file, object, field and rule named.
    p.write("crds/pools.yaml", &crd("                maxItems: 500\n"));
    let members: Vec<String> = (0..30_000).map(|i| i.to_string()).collect();
    let pool = format!(
        "apiVersion: net.example.org/v1alpha1\nkind: Pool\nmetadata:\n  name: big\n  namespace: default\nspec:\n  members: [{}]\n",
        members.join(", ")
    );
    p.write("in/pool.yaml", &pool);
    let run = p.cli(&["run", "load"]);
    assert_eq!(run.code, 1, "{run:?}");
    let reason = status(&p)["reason"].as_str().unwrap().to_string();
    assert!(reason.contains("in/pool.yaml:1:1"), "{reason}");
    assert!(reason.contains("Pool.net.example.org default/big"), "{reason}");
    assert!(reason.contains("spec.members: Too many"), "{reason}");
    assert!(
        reason.contains("spec.members: Invalid value: \"array\": self.all(x, self.exists_one(y, x == y)): call cost exceeds the limit of 1000000"),
        "{reason}"
    );

    // A small object passes, the rule runs and its message reports a duplicate.
    p.write("in/pool.yaml", &pool.replace(&members.join(", "), "1, 2, 3"));
    p.cli(&["run", "load"]).ok();
    p.write("in/pool.yaml", &pool.replace(&members.join(", "), "1, 2, 2"));
    assert_eq!(p.cli(&["run", "load"]).code, 1);
    let reason = status(&p)["reason"].as_str().unwrap().to_string();
    assert!(reason.contains("spec.members: Invalid value: \"array\": members are unique"), "{reason}");
}

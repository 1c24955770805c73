//! `-s`: device configs merged onto running configs and validated against YANG, through the
//! real server with the `devices` fixture (IETF interfaces, two nodes, a gotemplate reconciler
//! rendering snippets without the mandatory `type`).

use crate::support::*;

fn start(p: &TestProject) -> Server {
    Server::start(&p.socket, &[p.dir.to_str().unwrap(), "-s"])
}

const BAD_MTU: &str = "apiVersion: network.example.org/v1alpha1
kind: Interface
metadata:
  name: leaf1-eth9
  namespace: default
spec:
  node: leaf1
  name: eth9
  mtu: 40
";

fn snapshots(p: &TestProject) -> usize {
    p.cli(&["run", "list"]).ok().stdout.lines().count()
}

#[test]
fn a_valid_run_writes_running_configs_and_final_configs() {
    let p = TestProject::new("devices");
    let _s = start(&p);
    let run = p.cli(&["run", "once"]).ok();
    assert!(run.stderr.contains("running config validator ..."), "{}", run.stderr);
    assert!(run.stdout.contains("config validation: 2 of 2 node(s) valid, 0 error(s)"), "{}", run.stdout);

    let leaf1 = p.cli(&["get", "configs", "leaf1", "-n", "default", "-o", "json"]).ok().json();
    let labels = &leaf1["metadata"]["labels"];
    assert_eq!(labels["config.sdcio.dev/finalconfig"], "true");
    assert_eq!(labels["config.sdcio.dev/targetName"], "leaf1");
    assert_eq!(labels["config.sdcio.dev/targetNamespace"], "default");
    assert_eq!(leaf1["metadata"]["ownerReferences"][0]["kind"], "Node");
    assert_eq!(leaf1["spec"]["config"][0]["path"], "/");
    let interfaces = leaf1["spec"]["config"][0]["value"]["interfaces"]["interface"].as_array().unwrap().clone();
    let eth0 = interfaces.iter().find(|i| i["name"] == "eth0").unwrap();
    // The snippet's values over the running config's, and the running config's `type` kept.
    assert_eq!(eth0["description"], "uplink to spine1");
    assert_eq!(eth0["enabled"], true);
    assert_eq!(eth0["type"], "iana-if-type:ethernetCsmacd");
    assert_eq!(eth0["ipv4"]["mtu"], 9000);
    assert!(interfaces.iter().any(|i| i["name"] == "lo0"), "running-only entries stay");

    // The raw running config as given, and as the schema reads it (prefixes dropped, typed).
    let raw = p.cli(&["get", "runningconfigs", "leaf2", "-n", "default", "-o", "json"]).ok().json();
    assert_eq!(raw["status"]["value"]["interfaces"]["interface"][0]["enabled"], "true");
    let tree = p.cli(&["get", "runningconfigs", "leaf2.tree", "-n", "default", "-o", "json"]).ok().json();
    assert_eq!(tree["status"]["value"]["interfaces"]["interface"][0]["enabled"], true);
    assert_eq!(tree["status"]["value"]["interfaces"]["interface"][0]["type"], "iana-if-type:ethernetCsmacd");

    // A second run changes nothing.
    p.cli(&["run", "once"]).ok();
    let again = p.cli(&["get", "configs", "leaf1", "-n", "default", "-o", "json"]).ok().json();
    assert_eq!(again["metadata"]["resourceVersion"], leaf1["metadata"]["resourceVersion"]);
}

#[test]
fn priorities_decide_and_blame_says_who_set_each_leaf() {
    let p = TestProject::new("devices");
    let _s = start(&p);
    p.cli(&["run", "once"]).ok();
    let leaf2 = p.cli(&["get", "configs", "leaf2", "-n", "default", "-o", "json"]).ok().json();
    let eth0 = &leaf2["spec"]["config"][0]["value"]["interfaces"]["interface"][0];
    assert_eq!(eth0["description"], "uplink to spine1 (pinned by NOC ticket 4711)", "priority 5 beats 10");

    let rows = p.cli(&["config", "blame", "leaf2", "-o", "json"]).ok().json();
    let source = |path: &str| {
        rows.as_array().unwrap().iter().find(|r| r["path"] == path).map(|r| r["source"].as_str().unwrap().to_string())
    };
    assert_eq!(source("/interfaces/interface[name='eth0']/description").as_deref(), Some("default/leaf2-pinned"));
    assert_eq!(source("/interfaces/interface[name='eth0']/enabled").as_deref(), Some("default/leaf2-eth0"));
    assert_eq!(source("/interfaces/interface[name='eth0']/type").as_deref(), Some("running"));
    assert_eq!(source("/interfaces/interface[name='eth0']/ipv4/forwarding").as_deref(), Some("default"));
    // A path narrows it; the table names source, path and value.
    let table = p.cli(&["config", "blame", "leaf2", "/interfaces/interface[name=lo0]"]).ok().stdout;
    assert!(table.starts_with("SOURCE"), "{table}");
    assert!(table.contains("running") && table.contains("198.51.100.2"), "{table}");
    assert!(!table.contains("eth0"), "{table}");
    let unknown = p.cli(&["config", "blame", "leaf9"]);
    assert_ne!(unknown.code, 0);
    assert!(unknown.stderr.contains("no Node named leaf9"), "{}", unknown.stderr);
}

#[test]
fn run_diff_c_compares_final_and_running_configs_per_path() {
    let p = TestProject::new("devices");
    let _s = start(&p);
    p.cli(&["run", "once"]).ok();
    let diff = p.cli(&["run", "diff", "-c"]).ok().stdout;
    assert_eq!(
        diff,
        "~ config.sdcio.dev/v1alpha1, Kind=Config default/leaf1\n~ config.sdcio.dev/v1alpha1, Kind=Config default/leaf2\n"
    );
    let details = p.cli(&["run", "diff", "-c", "-a"]).ok().stdout;
    for line in [
        "  ~ /interfaces/interface[name='eth0']/description: spare -> uplink to spine1",
        "  ~ /interfaces/interface[name='eth0']/enabled: false -> true",
        "  + /interfaces/interface[name='eth0']/ipv4",
        "  + /interfaces/interface[name='eth1']/description: server rack 7",
    ] {
        assert!(details.contains(line), "{line:?} missing from:\n{details}");
    }
    // Once the device runs the intended config, they are equal.
    let leaf1 = p.cli(&["get", "configs", "leaf1", "-n", "default", "-o", "json"]).ok().json();
    p.write("runningconfigs/leaf1.json", &leaf1["spec"]["config"][0]["value"].to_string());
    p.cli(&["run", "once"]).ok();
    let diff = p.cli(&["run", "diff", "-c"]).ok().stdout;
    assert!(diff.contains("= config.sdcio.dev/v1alpha1, Kind=Config default/leaf1\n"), "{diff}");
}

#[test]
fn an_invalid_config_fails_the_run_names_node_path_and_config_and_leaves_no_snapshot() {
    let p = TestProject::new("devices");
    let _s = start(&p);
    p.cli(&["run", "once"]).ok();
    let before = snapshots(&p);
    p.write("in/bad.yaml", BAD_MTU);
    let run = p.cli(&["run", "once"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout.contains("node leaf1: /interfaces/interface/ipv4/mtu: Unsatisfied range - value \"40\" is out of the allowed range. (at /interfaces/interface[name=eth9]) [config default/leaf1-eth9]"),
        "{}",
        run.stdout
    );
    assert_eq!(snapshots(&p), before, "no snapshot of a run with invalid device configs");
    // No final config for the invalid node; the other one keeps its own.
    let gone = p.cli(&["get", "configs", "leaf1", "-n", "default"]);
    assert_ne!(gone.code, 0, "{gone:?}");
    p.cli(&["get", "configs", "leaf2", "-n", "default"]).ok();
    let status = p.cli(&["server", "get", "-o", "json"]).ok().json();
    assert_eq!(status["sdc"]["valid"], 1);
    assert_eq!(status["sdc"]["errors"].as_array().map(Vec::len), Some(1));

    // A snippet for an interface the device does not have lacks the mandatory type: found at
    // validation, after the merge, and blamed on the Config that made the entry.
    p.write("in/bad.yaml", &BAD_MTU.replace("  mtu: 40\n", "  description: not cabled\n"));
    let run = p.cli(&["run", "once"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout.contains(
            "node leaf1: /interfaces/interface[name='eth9']: Mandatory node \"type\" instance does not exist. [config default/leaf1-eth9]"
        ),
        "{}",
        run.stdout
    );
    p.remove("in/bad.yaml");
    p.cli(&["run", "once"]).ok();
    p.cli(&["get", "configs", "leaf1", "-n", "default"]).ok();
    assert_eq!(snapshots(&p), before + 1);
}

#[test]
fn missing_inputs_are_named() {
    let p = TestProject::new("devices");
    p.remove("runningconfigs/leaf2.json");
    p.write(
        "in/stray.yaml",
        "apiVersion: config.sdcio.dev/v1alpha1
kind: Config
metadata: {name: stray, namespace: default, labels: {config.sdcio.dev/targetName: leaf9}}
spec: {config: [{path: /, value: {}}]}
---
apiVersion: infra.kuid.dev/v1alpha1
kind: Node
metadata: {name: router7, namespace: default}
spec: {provider: vendor.example, version: \"1.0\"}
",
    );
    p.write("runningconfigs/router7.json", "{}");
    p.write("runningconfigs/ghost.json", "{}");
    let _s = start(&p);
    let run = p.cli(&["run", "once"]);
    assert_eq!(run.code, 1, "{run:?}");
    let out = &run.stdout;
    assert!(out.contains("node leaf2: no running config: runningconfigs/leaf2.json does not exist"), "{out}");
    assert!(
        out.contains("node router7: schema vendor.example/1.0") && out.contains("not fetched"),
        "the missing schema names provider and version: {out}"
    );
    assert!(out.contains("warning: config default/stray: target leaf9 is no Node: skipped"), "{out}");
    assert!(out.contains("warning: running config runningconfigs/ghost.json: no Node named ghost: ignored"), "{out}");
    assert!(out.contains("config validation: 1 of 3 node(s) valid"), "{out}");
}

#[test]
fn continuous_mode_validates_after_changes_to_running_configs() {
    let p = TestProject::new("devices");
    let _s = start(&p);
    p.cli(&["run", "start"]).ok();
    let sdc = |p: &TestProject| p.cli(&["server", "get", "-o", "json"]).ok().json()["sdc"].clone();
    wait_for("the first pass", 30, || (sdc(&p)["valid"] == 2).then_some(()));
    // The device lost eth0: the pinned snippet for it now lacks the type.
    p.write(
        "runningconfigs/leaf2.json",
        r#"{"interfaces": {"interface": [{"name": "lo0", "type": "softwareLoopback"}]}}"#,
    );
    let errors = wait_for("the error", 30, || {
        let s = sdc(&p);
        (s["valid"] == 1).then(|| s["errors"].clone())
    });
    assert!(
        errors[0].as_str().unwrap().starts_with("node leaf2: /interfaces/interface[name='eth0']: Mandatory node"),
        "{errors}"
    );
    let result = p.cli(&["run", "result"]);
    assert!(result.stdout.contains("config validation: 1 of 2 node(s) valid, 1 error(s)"), "{result:?}");
    assert!(result.stdout.contains("node leaf2: /interfaces/interface[name='eth0']: Mandatory node"), "{result:?}");
    wait_for("leaf2's final config to go", 30, || {
        (p.cli(&["get", "configs", "leaf2", "-n", "default"]).code != 0).then_some(())
    });
}

#[test]
fn without_s_there_is_nothing_to_blame() {
    let p = TestProject::new("devices");
    let _s = p.start();
    let blame = p.cli(&["config", "blame", "leaf1"]);
    assert_ne!(blame.code, 0);
    assert!(blame.stderr.contains("does not validate device configs"), "{}", blame.stderr);
    assert!(blame.stderr.contains("-s"), "{}", blame.stderr);
}

#[test]
fn a_users_config_named_like_a_final_config_is_never_overwritten() {
    let p = TestProject::new("devices");
    p.write(
        "in/leaf1.yaml",
        "apiVersion: config.sdcio.dev/v1alpha1
kind: Config
metadata: {name: leaf1, namespace: default, labels: {config.sdcio.dev/targetName: leaf1}}
spec: {config: [{path: /, value: {}}]}
",
    );
    let _s = start(&p);
    let run = p.cli(&["run", "once"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout.contains("warning: config default/leaf1: has the name of node leaf1's final config"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("node leaf1: cannot store Config leaf1: an object of that name exists"),
        "{}",
        run.stdout
    );
    let mine = p.cli(&["get", "configs", "leaf1", "-n", "default", "-o", "json"]).ok().json();
    assert_eq!(mine["spec"]["config"][0]["value"], serde_json::json!({}), "the user's object is untouched");
}

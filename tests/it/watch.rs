use serde_json::Value;

use crate::support::*;

fn field(p: &TestProject, res: &str, name: &str, pointer: &str) -> Option<Value> {
    let r = p.cli(&["get", res, name, "-o", "json"]);
    (r.code == 0).then(|| r.json().pointer(pointer).cloned()).flatten()
}

fn status(p: &TestProject) -> Value {
    p.cli(&["server", "get", "-o", "json"]).ok().json()
}

#[test]
fn an_edit_in_place_is_loaded() {
    let p = TestProject::new("network");
    let _s = p.start();
    let f = "in/net.example.org.device.spine1.yaml";
    let text = std::fs::read_to_string(p.path(f)).unwrap().replace("asn: 64601", "asn: 64602");
    p.write(f, &text);
    wait_for("the edit to be loaded", 10, || (field(&p, "devices", "spine1", "/spec/asn")? == 64602).then_some(()));
}

#[test]
fn an_atomic_rename_and_a_removal_are_loaded() {
    let p = TestProject::new("network");
    let _s = p.start();
    let tmp = p.path("in/.leaf7.yaml.tmp");
    std::fs::write(&tmp, "apiVersion: net.example.org/v1alpha1\nkind: Device\nmetadata:\n  name: leaf7\nspec:\n  role: leaf\n  asn: 65107\n").unwrap();
    std::fs::rename(&tmp, p.path("in/leaf7.yaml")).unwrap();
    wait_for("the renamed file to be loaded", 10, || field(&p, "devices", "leaf7", "/spec/asn"));
    p.remove("in/leaf7.yaml");
    wait_for("the removed file's object to go", 10, || (p.cli(&["get", "devices", "leaf7"]).code == 1).then_some(()));
}

#[test]
fn an_invalid_file_fails_the_load_and_its_fix_recovers() {
    let p = TestProject::new("network");
    let _s = p.start();
    p.write(
        "in/half.yaml",
        "apiVersion: net.example.org/v1alpha1\nkind: Device\nmetadata:\n  name: half\nspec: {role: leaf, asn: 1\n",
    );
    let reason = wait_for("status Failed", 10, || {
        let st = status(&p);
        (st["status"] == "Failed").then(|| st["reason"].as_str().unwrap_or("").to_string())
    });
    assert!(reason.starts_with("in/half.yaml:"), "{reason}");
    p.cli(&["get", "devices", "leaf1"]).ok();
    p.write(
        "in/half.yaml",
        "apiVersion: net.example.org/v1alpha1\nkind: Device\nmetadata:\n  name: half\nspec: {role: leaf, asn: 1}\n",
    );
    wait_for("status Ready", 10, || (status(&p)["status"] == "Ready").then_some(()));
    p.cli(&["get", "devices", "half"]).ok();
}

#[test]
fn editor_noise_is_ignored() {
    let p = TestProject::new("network");
    let _s = p.start();
    for name in [".leaf1.yaml.swp", "leaf1.yaml~", "#leaf1.yaml#", ".#leaf1.yaml"] {
        p.write(&format!("in/{name}"), "not: [yaml\n");
    }
    // A real change after the noise: once it is loaded, the noise was seen and skipped.
    let f = "in/net.example.org.device.spine1.yaml";
    let text = std::fs::read_to_string(p.path(f)).unwrap().replace("asn: 64601", "asn: 64603");
    p.write(f, &text);
    wait_for("the real edit", 10, || (field(&p, "devices", "spine1", "/spec/asn")? == 64603).then_some(()));
    assert_eq!(status(&p)["status"], "Ready");
}

#[test]
fn a_burst_of_files_is_loaded() {
    let p = TestProject::new("network");
    let _s = p.start();
    for i in 0..1000 {
        p.write(
            &format!("in/burst{i}.yaml"),
            &format!("apiVersion: net.example.org/v1alpha1\nkind: Device\nmetadata:\n  name: burst{i}\nspec:\n  role: leaf\n  asn: {}\n", 1 + i),
        );
    }
    wait_for("all 1000 objects", 30, || {
        let r = p.cli(&["get", "devices", "-o", "name"]);
        (r.stdout.lines().count() == 1002).then_some(())
    });
}

#[test]
fn continuous_mode_reconciles_each_change() {
    let p = TestProject::new("fabric");
    let _s = p.start();
    p.cli(&["run", "start"]).ok();
    assert_eq!(status(&p)["runner"], "Running");
    // The runner settles without polling: the engine answers once it has nothing to do.
    p.cli(&["__quiesce"]).ok();
    assert_eq!(field(&p, "deviceconfigs", "spine1", "/spec/asn"), Some(serde_json::json!(64601)));
    let once = p.cli(&["run", "once"]);
    assert_eq!(once.code, 1);
    assert!(once.stderr.contains("runner is already running"), "{}", once.stderr);
    let text = std::fs::read_to_string(p.path("in/devices.yaml")).unwrap().replace("asn: 64601", "asn: 64609");
    p.write("in/devices.yaml", &text);
    wait_for("the edit reconciled", 10, || (field(&p, "deviceconfigs", "spine1", "/spec/asn")? == 64609).then_some(()));
    // The reconciler's own source, edited while running.
    let src = std::fs::read_to_string(p.path("reconcilers/device-config/config.star"))
        .unwrap()
        .replace("\"router bgp \"", "\"bgp \"");
    let lib = std::fs::read_to_string(p.path("crds/net.example.org_render.star"))
        .unwrap()
        .replace("\"router bgp \"", "\"bgp as \"");
    p.write("reconcilers/device-config/config.star", &src);
    p.write("crds/net.example.org_render.star", &lib);
    wait_for("the new code at work", 10, || {
        let lines = field(&p, "deviceconfigs", "leaf1", "/spec/lines")?;
        lines.as_array()?.iter().any(|l| l == "bgp as 65101").then_some(())
    });
    let obj = "apiVersion: net.example.org/v1alpha1\nkind: Device\nmetadata:\n  name: leaf9\nspec:\n  asn: 65109\n";
    p.cli_stdin(&["apply", "-f", "-"], obj).ok();
    p.cli(&["__quiesce"]).ok();
    assert_eq!(field(&p, "deviceconfigs", "leaf9", "/spec/asn"), Some(serde_json::json!(65109)));
    p.cli(&["run", "stop"]).ok();
    assert_eq!(status(&p)["runner"], "Stopped");
    assert_eq!(status(&p)["lastRun"]["success"], true);
}

#[test]
fn an_ignore_file_is_picked_up() {
    let p = TestProject::new("network");
    let _s = p.start();
    p.cli(&["get", "devices", "leaf1"]).ok();
    // Hidden, but it decides which files count: its change is a full reload.
    p.write("in/.ignore", "net.example.org.device.leaf1.yaml\n");
    wait_for("the ignored file's object to go", 10, || (p.cli(&["get", "devices", "leaf1"]).code == 1).then_some(()));
    assert_eq!(status(&p)["status"], "Ready");
}

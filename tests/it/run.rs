use serde_json::Value;

use crate::support::*;

/// Rows of the run summary table: name → (start, stop, requeue, error).
fn rows(stdout: &str) -> std::collections::BTreeMap<String, (u64, u64, u64, u64)> {
    stdout
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() != 5 {
                return None;
            }
            let n: Vec<u64> = f[1..].iter().filter_map(|x| x.parse().ok()).collect();
            (n.len() == 4).then(|| (f[0].to_string(), (n[0], n[1], n[2], n[3])))
        })
        .collect()
}

fn condition<'a>(obj: &'a Value, ctype: &str) -> Option<&'a Value> {
    obj["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == ctype)
}

fn get(p: &TestProject, res: &str, name: &str) -> Option<Value> {
    let r = p.cli(&["get", res, name, "-o", "json"]);
    (r.code == 0).then(|| r.json())
}

const CONFIG: &str = "net.example.org.devices.config";
const INVENTORY: &str = "net.example.org.devices.inventory";

#[test]
fn run_once_reconciles_children_conditions_and_finalizers() {
    let p = TestProject::new("fabric");
    let _s = p.start();
    let run = p.cli(&["run", "once"]).ok();
    assert!(run.stdout.starts_with("Run root summary\nexecution success, time(msec) "), "{}", run.stdout);
    assert!(run.stdout.ends_with("completed\n"), "{}", run.stdout);
    let r = rows(&run.stdout);
    for name in [CONFIG, INVENTORY] {
        let (start, stop, requeue, error) = r[name];
        assert!(stop >= 2 && start == stop + requeue && error == 0, "{name}: {:?}", r[name]);
    }
    assert!(run.stderr.contains("loading ...") && run.stderr.contains("running reconcilers ..."), "{}", run.stderr);

    let leaf = get(&p, "devices", "leaf1").unwrap();
    let dc = get(&p, "deviceconfigs", "leaf1").expect("child created");
    assert_eq!(
        dc["spec"]["lines"],
        serde_json::json!([
            "hostname leaf1",
            "router bgp 65101",
            "interface ethernet-1/1 mtu 9000",
            "interface ethernet-1/2 mtu 1500"
        ])
    );
    assert_eq!(dc["spec"]["asn"], 65101, "integers stay integers");
    let refs = &dc["metadata"]["ownerReferences"];
    assert_eq!(refs[0]["kind"], "Device");
    assert_eq!(refs[0]["controller"], true);
    assert_eq!(refs[0]["uid"], leaf["metadata"]["uid"]);
    // Two reconcilers share the Device: both conditions and both finalizers survive.
    assert_eq!(condition(&leaf, "Ready").unwrap()["status"], "True");
    assert_eq!(condition(&leaf, "Inventoried").unwrap()["status"], "True");
    let fins = leaf["metadata"]["finalizers"].as_array().unwrap();
    assert!(fins.contains(&Value::from(CONFIG)) && fins.contains(&Value::from(INVENTORY)), "{fins:?}");
    assert_eq!(leaf["status"]["interfaceCount"], 2);
    assert_eq!(leaf["spec"]["asn"], 65101, "the input's spec is untouched");

    let deps = p.cli(&["run", "deps"]).ok().stdout;
    let lines: Vec<&str> = deps.lines().collect();
    let i = lines.iter().position(|l| *l == "Device.net.example.org/v1alpha1 leaf1").expect(&deps);
    assert_eq!(lines[i + 1], "+-DeviceConfig.net.example.org/v1alpha1 leaf1", "{deps}");
}

#[test]
fn a_second_run_on_the_same_state_changes_nothing() {
    let p = TestProject::new("fabric");
    let _s = p.start();
    p.cli(&["run", "once"]).ok();
    let before = p.cli(&["get", "deviceconfigs", "-o", "json", "--show-managed-fields"]).ok().stdout;
    let run = p.cli(&["run", "once", "--changed"]).ok();
    assert!(rows(&run.stdout).is_empty(), "nothing changed, nothing reconciled: {}", run.stdout);
    let run = p.cli(&["run", "once"]).ok();
    assert_eq!(
        rows(&run.stdout)[CONFIG],
        (2, 2, 0, 0),
        "a full run reconciles everything, writes nothing: {}",
        run.stdout
    );
    assert_eq!(p.cli(&["get", "deviceconfigs", "-o", "json", "--show-managed-fields"]).ok().stdout, before);
    let diff = p.cli(&["run", "diff"]).ok().stdout;
    assert!(!diff.is_empty() && diff.lines().all(|l| l.starts_with("= ")), "{diff}");
    let list = p.cli(&["run", "list"]).ok().stdout;
    assert_eq!(list.lines().count(), 3, "{list}");
}

#[test]
fn an_edited_input_is_reconciled_again_and_the_diff_shows_it() {
    let p = TestProject::new("fabric");
    let _s = p.start();
    p.cli(&["run", "once"]).ok();
    let text = std::fs::read_to_string(p.path("in/devices.yaml")).unwrap().replace("asn: 64601", "asn: 64602");
    p.write("in/devices.yaml", &text);
    let run = p.cli(&["run", "once", "--changed", "-o", "resource"]).ok();
    assert!(run.stdout.contains("net.example.org.Device.default.spine1"), "{}", run.stdout);
    assert!(!run.stdout.contains("Device.default.leaf1"), "leaf1 did not change: {}", run.stdout);
    assert_eq!(get(&p, "deviceconfigs", "spine1").unwrap()["spec"]["asn"], 64602);
    let diff = p.cli(&["run", "diff", "-a"]).ok().stdout;
    assert!(diff.contains("~ net.example.org/v1alpha1, Kind=DeviceConfig default/spine1"), "{diff}");
    assert!(diff.contains("-  asn: 64601") && diff.contains("+  asn: 64602"), "{diff}");
}

#[test]
fn deletion_goes_through_the_finalizers() {
    let p = TestProject::new("greeter");
    let _s = p.start();
    p.cli(&["run", "once"]).ok();
    let alice = get(&p, "greeters", "alice").unwrap();
    assert_eq!(alice["metadata"]["finalizers"], serde_json::json!(["welcome.demo.choreo.dev/cleanup"]));
    assert_eq!(condition(&alice, "Ready").unwrap()["status"], "True");
    assert_eq!(get(&p, "welcomes", "alice").unwrap()["spec"]["text"], "hello, Alice");
    assert_eq!(get(&p, "welcomes", "bob").unwrap()["spec"]["text"], "welcome, Bob");
    p.remove("in/demo.choreo.dev.greeter.alice.yaml");
    p.cli(&["run", "once"]).ok();
    assert!(get(&p, "welcomes", "alice").is_none(), "the child went with its owner");
    assert!(get(&p, "greeters", "alice").is_none(), "the owner went when its finalizer did");
    assert!(get(&p, "welcomes", "bob").is_some());
}

#[test]
fn stale_children_are_collected() {
    let p = TestProject::new("fabric");
    p.write(
        "reconcilers/device-config/config.star",
        "def reconcile(self):\n    for itf in self.get('spec', {}).get('interfaces', []):\n        client_create({'apiVersion': 'net.example.org/v1alpha1', 'kind': 'DeviceConfig',\n            'metadata': {'name': self['metadata']['name'] + '-' + itf['name'].replace('/', '-'), 'namespace': 'default'},\n            'spec': {'hostname': itf['name']}})\n    return reconcile_result(self, False, 0, '', False)\n",
    );
    let _s = p.start();
    p.cli(&["run", "once"]).ok();
    assert!(get(&p, "deviceconfigs", "leaf1-ethernet-1-2").is_some());
    let text = std::fs::read_to_string(p.path("in/devices.yaml"))
        .unwrap()
        .replace("  - name: ethernet-1/2\n    mtu: 1500\n", "");
    p.write("in/devices.yaml", &text);
    p.cli(&["run", "once"]).ok();
    assert!(get(&p, "deviceconfigs", "leaf1-ethernet-1-2").is_none(), "a child no longer produced is deleted");
    assert!(get(&p, "deviceconfigs", "leaf1-ethernet-1-1").is_some());
}

#[test]
fn a_reconciler_that_never_converges_fails_within_the_bound() {
    let p = TestProject::new("fabric");
    p.write(
        "reconcilers/device-inventory/inventory.star",
        "def reconcile(self):\n    status = self.get('status', {})\n    status['interfaceCount'] = status.get('interfaceCount', 0) + 1\n    self['status'] = status\n    return reconcile_result(self, False, 0, '', False)\n",
    );
    let _s = p.start();
    let run = p.cli(&["run", "once"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.starts_with("execution failed\n  reason task net.example.org.devices."), "{}", run.stdout);
    assert!(run.stdout.contains("did not converge"), "{}", run.stdout);
    assert!(
        run.stdout.contains("net.example.org.devices.inventory Device.net.example.org default/"),
        "names the looping reconciler: {}",
        run.stdout
    );
}

#[test]
fn a_script_error_is_reported_with_its_line() {
    let p = TestProject::new("fabric");
    p.write(
        "reconcilers/device-inventory/inventory.star",
        "def reconcile(self):\n    x = 1\n    fail('inventory is broken')\n    return reconcile_result(self, False, 0, '', False)\n",
    );
    let _s = p.start();
    let run = p.cli(&["run", "once"]);
    assert_eq!(run.code, 1);
    let out = run.stdout;
    assert!(out.contains("execution failed") && out.contains(INVENTORY), "{out}");
    assert!(out.contains("reconciler.star:3") && out.contains("inventory is broken"), "{out}");
    assert!(out.contains("Device.net.example.org default/"), "names the object: {out}");
}

#[test]
fn an_undeclared_field_written_by_a_script_fails_the_run() {
    let p = TestProject::new("greeter");
    let text = std::fs::read_to_string(p.path("reconcilers/demo.choreo.dev.greeters.welcome.star")).unwrap().replace(
        "    add_finalizer_to(self, finalizer)\n",
        "    add_finalizer_to(self, finalizer)\n    self['spec']['greetings'] = 'x'\n",
    );
    p.write("reconcilers/demo.choreo.dev.greeters.welcome.star", &text);
    let _s = p.start();
    let run = p.cli(&["run", "once"]);
    assert_eq!(run.code, 1);
    assert!(run.stdout.contains(".spec.greetings: field not declared in schema"), "{}", run.stdout);
}

#[test]
fn runs_are_deterministic() {
    let normalized = || {
        let p = TestProject::new("fabric");
        let _s = p.start();
        p.cli(&["run", "once"]).ok();
        let mut out = String::new();
        for res in ["devices", "deviceconfigs"] {
            out.push_str(&p.cli(&["get", res, "-o", "yaml"]).ok().stdout);
        }
        // Owner references carry uids too; everything else must match exactly.
        out.lines()
            // A condition's first field follows its list dash (`- lastTransitionTime: ...`).
            .filter(|l| {
                let field = l.trim_start().trim_start_matches("- ");
                !["uid:", "creationTimestamp:", "lastTransitionTime:"].iter().any(|k| field.starts_with(k))
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let a = normalized();
    let b = normalized();
    assert_eq!(a, b);
}

#[test]
fn run_result_and_json_summary() {
    let p = TestProject::new("fabric");
    let _s = p.start();
    assert_eq!(p.cli(&["run", "result"]).code, 1, "no run yet");
    p.cli(&["run", "once"]).ok();
    let res = p.cli(&["run", "result"]).ok().stdout;
    assert!(res.contains(CONFIG) && res.contains(INVENTORY), "{res}");
    let json = p.cli(&["run", "result", "-o", "json"]).ok().json();
    assert_eq!(json["success"], true);
    assert!(json["events"].as_array().unwrap().iter().any(|e| e["operation"] == "START"));
    let raw = p.cli(&["run", "result", "-o", "raw"]).ok().stdout;
    assert!(raw.lines().nth(2).is_some_and(|l| l.starts_with("EventTime")), "{raw}");
    let status = p.cli(&["server", "get", "-o", "json"]).ok().json();
    assert_eq!(status["lastRun"]["success"], true, "{status}");
    assert_eq!(status["runner"], "Stopped");
}

#[test]
fn reconciler_load_errors_are_precise() {
    let cases: &[(&str, &str, &str)] = &[
        ("reconcilers/device-inventory/inventory.star", "def reconcile(self)\n    pass\n", "inventory"),
        ("reconcilers/device-config/config.yaml", "apiVersion: choreo.kform.dev/v1alpha1\nkind: Reconciler\nmetadata:\n  name: x\nspec:\n  for: {group: net.example.org, version: v1alpha1, kind: Router, selector: {}}\n", "Router.net.example.org/v1alpha1 is not a registered API"),
        ("reconcilers/empty/config.yaml", "apiVersion: choreo.kform.dev/v1alpha1\nkind: Reconciler\nmetadata:\n  name: empty\nspec:\n  for: {group: net.example.org, version: v1alpha1, kind: Device, selector: {}}\n", "reconcilers/empty/config.yaml:1:1: reconciler empty has no code"),
        ("crds/net.example.org_render.star", "load('net.example.org.cycle.star', 'x')\ndef config_lines(d):\n    return []\n", "cycle"),
    ];
    for (file, text, want) in cases {
        let p = TestProject::new("fabric");
        p.write(file, text);
        if want == &"cycle" {
            p.write("crds/net.example.org_cycle.star", "load('net.example.org.render.star', 'config_lines')\nx = 1\n");
        }
        let _s = p.start();
        let st = p.cli(&["server", "get", "-o", "json"]).ok().json();
        assert_eq!(st["status"], "Failed", "{file}: {st}");
        let reason = st["reason"].as_str().unwrap();
        assert!(reason.contains(want), "{file}: want {want:?} in {reason}");
        let run = p.cli(&["run", "once"]);
        assert_eq!(run.code, 1);
    }
}

#[test]
fn dev_parse_writes_compiled_objects_that_load_the_same() {
    let p = TestProject::new("greeter");
    let run = cli(&p.socket, &["dev", "parse", p.dir.to_str().unwrap()], None).ok();
    assert!(
        run.stdout.contains("wrote in/choreo.kform.dev.reconciler.demo.choreo.dev.greeters.welcome.yaml"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("wrote in/choreo.kform.dev.library.meta.star.yaml"), "{}", run.stdout);
    // Only the compiled objects remain: the project still runs the same way.
    std::fs::remove_dir_all(p.path("reconcilers")).unwrap();
    std::fs::remove_dir_all(p.path("libs")).unwrap();
    let _s = p.start();
    p.cli(&["run", "once"]).ok();
    assert_eq!(get(&p, "welcomes", "alice").unwrap()["spec"]["text"], "hello, Alice");
    let rec = get(&p, "reconcilers", "demo.choreo.dev.greeters.welcome").unwrap();
    assert_eq!(rec["spec"]["type"], "starlark");
}

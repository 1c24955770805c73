//! kubectl habits on `get`: selectors, namespaces, wide and printer columns, jsonpath,
//! custom columns, sorting, headers and labels — end to end against the real server.

use crate::support::*;

const MORE: &str = "apiVersion: net.example.org/v1alpha1
kind: Device
metadata: {name: leaf2, namespace: default, labels: {site: ams1, tier: \"1\"}}
spec: {role: leaf, asn: 65102, hostname: leaf2}
---
apiVersion: net.example.org/v1alpha1
kind: Device
metadata: {name: spine2, namespace: default, labels: {site: nyc1}}
spec: {role: spine, asn: 9, hostname: spine2}
---
apiVersion: net.example.org/v1alpha1
kind: Device
metadata: {name: leaf3, namespace: lab, labels: {site: ams1, tier: \"2\"}}
spec: {role: leaf, asn: 65103, hostname: leaf3}
";

/// The network fixture with more devices, and printer columns on the Device CRD.
pub(crate) fn project() -> TestProject {
    let p = TestProject::new("network");
    let crd = std::fs::read_to_string(p.path("crds/net.example.org_devices.yaml")).unwrap();
    let crd = crd.replacen(
        "    storage: true\n",
        "    storage: true\n    additionalPrinterColumns:\n    - {name: Role, type: string, jsonPath: .spec.role}\n    - {name: ASN, type: integer, jsonPath: .spec.asn}\n    - {name: Hostname, type: string, jsonPath: .spec.hostname, priority: 1}\n",
        1,
    );
    p.write("crds/net.example.org_devices.yaml", &crd);
    p.write("in/more.yaml", MORE);
    p
}

fn names(p: &TestProject, args: &[&str]) -> Vec<String> {
    let mut all = vec!["get", "devices", "-o", "name"];
    all.extend_from_slice(args);
    let mut out: Vec<String> =
        p.cli(&all).ok().stdout.lines().map(|l| l.rsplit('/').next().unwrap().to_string()).collect();
    out.sort();
    out
}

#[test]
fn label_and_field_selectors() {
    let p = project();
    let _s = p.start();
    let table: &[(&[&str], &[&str])] = &[
        (&["-l", "site=ams1"], &["leaf1", "leaf2", "leaf3"]),
        (&["-l", "site!=ams1"], &["spine1", "spine2"]),
        (&["-l", "tier in (1,2)"], &["leaf2", "leaf3"]),
        (&["-l", "site notin (ams1)"], &["spine1", "spine2"]),
        (&["-l", "tier"], &["leaf2", "leaf3"]),
        (&["-l", "!tier"], &["leaf1", "spine1", "spine2"]),
        (&["-l", "site=ams1,!tier"], &["leaf1"]),
        (&["--field-selector", "metadata.namespace=lab"], &["leaf3"]),
        (&["--field-selector", "spec.role=spine,metadata.name!=spine1"], &["spine2"]),
        (&["-l", "site=ams1", "--field-selector", "spec.asn=65102"], &["leaf2"]),
        (&["-n", "lab"], &["leaf3"]),
        (&["-A", "-l", "tier=2"], &["leaf3"]),
    ];
    for (args, want) in table {
        assert_eq!(names(&p, args), want.to_vec(), "{args:?}");
    }
    let bad = p.cli(&["get", "devices", "-l", "site in (ams1"]);
    assert_eq!(bad.code, 1, "{bad:?}");
    assert!(bad.stderr.contains("label selector"), "{}", bad.stderr);
    assert_eq!(p.cli(&["get", "devices", "-A", "-n", "lab"]).code, 2, "-A and -n conflict");
}

#[test]
fn tables_show_printer_columns_wide_labels_and_sort() {
    let p = project();
    let _s = p.start();
    let t = p.cli(&["get", "devices", "--sort-by", ".spec.asn"]).ok().stdout;
    let lines: Vec<&str> = t.lines().collect();
    assert!(lines[0].starts_with("NAMESPACE   NAME     ROLE    ASN     AGE"), "{t}");
    let order: Vec<&str> = lines[1..].iter().map(|l| l.split_whitespace().nth(1).unwrap()).collect();
    assert_eq!(order, ["spine2", "spine1", "leaf1", "leaf2", "leaf3"], "numeric sort: {t}");
    let wide = p.cli(&["get", "devices", "-o", "wide", "-n", "lab"]).ok().stdout;
    assert!(wide.starts_with("NAME    ROLE   ASN     HOSTNAME   AGE\nleaf3   leaf   65103   leaf3"), "{wide}");
    let labels = p.cli(&["get", "devices", "leaf2", "--show-labels", "--no-headers"]).ok().stdout;
    assert!(labels.starts_with("leaf2   leaf   65102") && labels.trim_end().ends_with("site=ams1,tier=1"), "{labels}");
    assert_eq!(labels.lines().count(), 1, "{labels}");
    let missing = p.cli(&["get", "devices", "nope"]);
    assert_eq!(missing.code, 1, "{missing:?}");
}

#[test]
fn jsonpath_and_custom_columns() {
    let p = project();
    let _s = p.start();
    let out = p
        .cli(&[
            "get",
            "devices",
            "-n",
            "default",
            "--sort-by",
            ".metadata.name",
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ])
        .ok();
    assert_eq!(out.stdout, "leaf1 leaf2 spine1 spine2\n");
    let out = p
        .cli(&[
            "get",
            "devices",
            "-l",
            "site=ams1",
            "--sort-by",
            ".metadata.name",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name}={.spec.asn}{\"\\n\"}{end}",
        ])
        .ok();
    assert_eq!(out.stdout, "leaf1=65101\nleaf2=65102\nleaf3=65103\n");
    let one = p.cli(&["get", "devices", "leaf1", "-o", "jsonpath={.spec.interfaces[?(@.mtu==1500)].name}"]).ok();
    assert_eq!(one.stdout, "ethernet-1/2\n");
    let cols = p
        .cli(&[
            "get",
            "devices",
            "-n",
            "default",
            "--sort-by",
            ".metadata.name",
            "-o",
            "custom-columns=DEVICE:.metadata.name,SITE:.metadata.labels.site",
        ])
        .ok();
    assert_eq!(cols.stdout, "DEVICE   SITE\nleaf1    ams1\nleaf2    ams1\nspine1   <none>\nspine2   nyc1\n");
    let bad = p.cli(&["get", "devices", "-o", "custom-columns=NAME"]);
    assert_eq!(bad.code, 2, "{bad:?}");
}

#[test]
fn explain_documents_kinds_and_fields() {
    let p = project();
    let _s = p.start();
    let top = p.cli(&["explain", "devices"]).ok().stdout;
    assert!(top.starts_with("GROUP:      net.example.org\nKIND:       Device\nVERSION:    v1alpha1\n"), "{top}");
    assert!(top.contains("FIELDS:") && top.contains("  spec\t<Object>"), "{top}");
    for target in ["devices.spec", "devices.net.example.org.spec", "dev.spec"] {
        let spec = p.cli(&["explain", target]).ok().stdout;
        assert!(spec.contains("FIELD: spec <Object>") && spec.contains("  asn\t<integer>"), "{target}: {spec}");
    }
    let nested = p.cli(&["explain", "devices.spec.interfaces.mtu"]).ok().stdout;
    assert!(nested.contains("FIELD: mtu <integer>"), "{nested}");
    let bad = p.cli(&["explain", "devices.spec.colour"]);
    assert_eq!(bad.code, 1);
    assert!(bad.stderr.contains("\"colour\" does not exist in Device.spec"), "{}", bad.stderr);
    let unknown = p.cli(&["explain", "widgets"]);
    assert_eq!(unknown.code, 1, "{unknown:?}");
}

#[test]
fn watch_streams_the_list_then_each_change() {
    use std::io::{BufRead, BufReader};
    let p = project();
    let _s = p.start();
    let mut child = std::process::Command::new(BIN)
        .args(["get", "devices", "-n", "default", "-w", "-o", "name", "--output-watch-events", "--socket"])
        .arg(&p.socket)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let next = || rx.recv_timeout(std::time::Duration::from_secs(20)).expect("a watch line");
    let mut initial: Vec<String> = (0..4).map(|_| next()).collect();
    initial.sort();
    assert_eq!(
        initial,
        [
            "ADDED device.net.example.org/leaf1",
            "ADDED device.net.example.org/leaf2",
            "ADDED device.net.example.org/spine1",
            "ADDED device.net.example.org/spine2"
        ]
    );
    let dev = "apiVersion: net.example.org/v1alpha1\nkind: Device\nmetadata: {name: leaf9, namespace: default}\nspec: {role: leaf, asn: 65109}\n";
    p.cli_stdin(&["apply", "-f", "-"], dev).ok();
    assert_eq!(next(), "ADDED device.net.example.org/leaf9");
    p.cli_stdin(&["apply", "-f", "-"], &dev.replace("65109", "65110")).ok();
    assert_eq!(next(), "MODIFIED device.net.example.org/leaf9");
    // Another namespace is not this watch's business.
    p.cli_stdin(&["apply", "-f", "-"], &dev.replace("default", "lab")).ok();
    p.cli(&["delete", "devices", "leaf9", "-n", "default"]).ok();
    assert_eq!(next(), "DELETED device.net.example.org/leaf9");
    let watches = || {
        let m = p.cli(&["metrics"]).ok().stdout;
        m.lines().find_map(|l| l.strip_prefix("choreo_watches ")).unwrap_or_default().to_string()
    };
    assert_eq!(watches(), "1");
    let _ = child.kill();
    let _ = child.wait();
    // The server is unharmed by the watcher going away, and notices it with nothing to send.
    p.cli(&["get", "devices", "leaf1"]).ok();
    wait_for("the idle watch of a client gone to end", 20, || (watches() == "0").then_some(()));
}

#[test]
fn wait_is_told_when_the_object_meets_the_condition() {
    let p = project();
    let _s = p.start();
    let spawn = |args: &[&str]| {
        std::process::Command::new(BIN)
            .args(args)
            .arg("--socket")
            .arg(&p.socket)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    // Met already.
    let now = p.cli(&["wait", "devices/leaf1", "--for=jsonpath={.spec.role}=leaf"]).ok();
    assert_eq!(now.stdout, "device.net.example.org/leaf1 condition met\n");
    // Met by a change that comes later.
    let waiting = spawn(&["wait", "devices", "leaf2", "--for", "jsonpath={.spec.asn}=65200", "--timeout", "60s"]);
    let dev = "apiVersion: net.example.org/v1alpha1\nkind: Device\nmetadata: {name: leaf2, namespace: default, labels: {site: ams1, tier: \"1\"}}\nspec: {role: leaf, asn: 65200, hostname: leaf2}\n";
    // Whether the apply lands before or after the wait subscribes, the wait sees it.
    p.cli_stdin(&["apply", "-f", "-"], dev).ok();
    let out = waiting.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Deletion.
    let gone = spawn(&["wait", "devices", "spine2", "--for=delete", "--timeout", "60s"]);
    p.cli(&["delete", "devices", "spine2"]).ok();
    assert!(gone.wait_with_output().unwrap().status.success());
    // A condition that never comes: exit 1 at the timeout, naming the object.
    let never = p.cli(&["wait", "devices", "leaf1", "--for=condition=Ready", "--timeout", "1s"]);
    assert_eq!(never.code, 1, "{never:?}");
    assert!(never.stderr.contains("timed out after 1s waiting for device.net.example.org/leaf1"), "{}", never.stderr);
    assert_eq!(p.cli(&["wait", "devices", "nope", "--for=condition=Ready"]).code, 1);
    assert_eq!(p.cli(&["wait", "devices", "leaf1", "--for=ready"]).code, 2);
}

#[test]
fn wait_for_a_condition_a_reconciler_sets() {
    let p = TestProject::new("fabric");
    let _s = p.start();
    let waiting = std::process::Command::new(BIN)
        .args(["wait", "devices", "leaf1", "--for=condition=Ready", "--timeout", "60s", "--socket"])
        .arg(&p.socket)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    p.cli(&["run", "once"]).ok();
    let out = waiting.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "device.net.example.org/leaf1 condition met\n");
}

#[test]
fn describe_shows_source_conditions_children_and_reconcilers() {
    let p = TestProject::new("fabric");
    let _s = p.start();
    p.cli(&["run", "once"]).ok();
    let d = p.cli(&["describe", "devices/leaf1"]).ok().stdout;
    assert!(
        d.starts_with("Name:         leaf1\nNamespace:    default\nKind:         Device (net.example.org/v1alpha1)\n"),
        "{d}"
    );
    assert!(d.contains("Source:       in/devices.yaml:"), "{d}");
    assert!(d.contains("Conditions:\n  ") && d.contains("Ready=True"), "{d}");
    assert!(d.contains("Children:") && d.contains("DeviceConfig.net.example.org default/leaf1"), "{d}");
    assert!(d.contains("Reconcilers:") && d.contains("(for): last reconcile succeeded at "), "{d}");
    assert!(d.contains("Spec:\n  "), "{d}");
    let missing = p.cli(&["describe", "devices", "nope"]);
    assert_eq!(missing.code, 1);
    assert!(missing.stderr.contains("not found"), "{}", missing.stderr);
}

/// Every new flag and verb is in `--help`, with an example where kubectl users look for one.
#[test]
fn help_explains_the_kubectl_flags_and_verbs() {
    let run = |args: &[&str]| {
        let out = std::process::Command::new(BIN).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let get = run(&["get", "--help"]);
    for needle in [
        "--selector",
        "--field-selector",
        "--all-namespaces",
        "--sort-by",
        "--no-headers",
        "--show-labels",
        "--watch",
        "--output-watch-events",
        "jsonpath='{.items[*].metadata.name}'",
        "custom-columns=NAME:.metadata.name",
        "tier in (1,2)",
    ] {
        assert!(get.contains(needle), "get --help lacks {needle:?}:\n{get}");
    }
    let top = run(&["--help"]);
    for verb in ["describe", "explain", "wait", "metrics", "config"] {
        assert!(top.lines().any(|l| l.trim_start().starts_with(verb)), "--help lacks {verb}:\n{top}");
    }
    let wait = run(&["wait", "--help"]);
    assert!(wait.contains("--for=condition=Ready") && wait.contains("--timeout"), "{wait}");
}

/// Piped, the updating progress line of a long run stays plain lines (no carriage returns).
#[test]
fn a_long_runs_progress_is_plain_lines_when_piped() {
    let p = fabric_with(
        "def reconcile(self):\n    for i in range(2000000000):\n        for j in range(2000000000):\n            pass\n    return reconcile_result(self, False, 0, '', False)\n",
        "{timeoutSeconds: 3600, steps: 1000000000000}",
    );
    let _s = p.start();
    let run = p.cli(&["run", "once", "--timeout", "2"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains(" reconciles (") && run.stderr.contains("/s), "), "{}", run.stderr);
    assert!(!run.stderr.contains('\r'), "{:?}", run.stderr);
}

/// `plan` on every fixture: it changes nothing, and the real run then makes exactly its
/// changes (a second plan finds none).
#[test]
fn plan_previews_exactly_what_the_run_does_and_changes_nothing() {
    let fixtures = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures")).unwrap();
    let mut fixtures: Vec<String> = fixtures.map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    fixtures.sort();
    assert!(fixtures.len() >= 6, "{fixtures:?}");
    for fixture in &fixtures {
        let flags: &[&str] = match fixture.as_str() {
            "idfabric" | "lab" => &["-r"],
            "devices" => &["-s"],
            _ => &[],
        };
        let p = TestProject::new(fixture);
        let mut args = vec![p.dir.to_str().unwrap()];
        args.extend_from_slice(flags);
        let _s = Server::start(&p.socket, &args);
        let before = p.cli(&["run", "list"]).ok().stdout;
        let files = p.in_files();
        let plan = p.cli(&["plan", "--exit-code"]);
        let lines: Vec<String> =
            plan.stdout.lines().filter(|l| l.starts_with(['+', '~', '-'])).map(str::to_string).collect();
        let summary = plan.stdout.lines().last().unwrap_or_default().to_string();
        if lines.is_empty() {
            assert_eq!(plan.code, 0, "{fixture}: {plan:?}");
            assert!(summary.starts_with("No changes"), "{fixture}: {summary}");
        } else {
            assert_eq!(plan.code, 4, "{fixture}: {plan:?}");
            assert!(summary.starts_with("Plan: "), "{fixture}: {summary}");
        }
        // Nothing changed: no snapshot, and no object the plan would create exists.
        assert_eq!(p.cli(&["run", "list"]).ok().stdout, before, "{fixture}");
        assert_eq!(p.in_files(), files, "{fixture}");
        let exists = |line: &str| {
            // "+ group/version, Kind=Kind ns/name"
            let kind = line.split("Kind=").nth(1).unwrap().split(' ').next().unwrap();
            let target = line.rsplit(' ').next().unwrap();
            let (ns, name) = target.split_once('/').unwrap_or(("", target));
            let mut a = vec!["get", kind, name];
            if !ns.is_empty() {
                a.extend(["-n", ns]);
            }
            p.cli(&a).code == 0
        };
        for l in lines.iter().filter(|l| l.starts_with('+')) {
            assert!(!exists(l), "{fixture}: the plan created {l}");
        }
        // The real run makes the planned changes, and then there is nothing left to plan.
        p.cli(&["run", "once"]).ok();
        for l in &lines {
            assert_eq!(exists(l), !l.starts_with('-'), "{fixture}: after the run, {l}");
        }
        let again = p.cli(&["plan", "--exit-code"]);
        assert_eq!(again.code, 0, "{fixture}: a run leaves nothing to plan: {again:?}");
        assert!(again.stdout.contains("No changes"), "{fixture}: {}", again.stdout);
    }
}

/// `apply --dry-run` says what the next run would do with the change, and writes nothing.
#[test]
fn apply_dry_run_previews_the_reconcile_outcome() {
    let p = TestProject::new("fabric");
    let _s = p.start();
    p.cli(&["run", "once"]).ok();
    let dev = "apiVersion: net.example.org/v1alpha1\nkind: Device\nmetadata: {name: leaf7, namespace: default}\nspec: {hostname: leaf7, asn: 65107}\n";
    let files = p.in_files();
    let out = p.cli_stdin(&["apply", "-f", "-", "--dry-run"], dev).ok();
    assert!(out.stdout.contains("Device.net.example.org default/leaf7 created (dry run)"), "{}", out.stdout);
    assert!(out.stdout.contains("With this change, the next run would:\n"), "{}", out.stdout);
    assert!(out.stdout.contains("+ net.example.org/v1alpha1, Kind=Device default/leaf7"), "{}", out.stdout);
    assert!(
        out.stdout.contains("+ net.example.org/v1alpha1, Kind=DeviceConfig default/leaf7"),
        "reconcile outcome: {}",
        out.stdout
    );
    assert_eq!(p.in_files(), files, "no file written");
    assert_eq!(p.cli(&["get", "devices", "leaf7"]).code, 1, "nothing stored");
}

/// `delete --dry-run` says what the next run would do without the object, deleting nothing.
#[test]
fn delete_dry_run_previews_the_children_going_too() {
    let p = TestProject::new("fabric");
    let _s = p.start();
    p.cli(&["run", "once"]).ok();
    let files = p.in_files();
    let out = p.cli(&["delete", "devices", "leaf1", "--dry-run"]).ok();
    assert!(out.stdout.starts_with("Without these objects, the next run would:\n"), "{}", out.stdout);
    assert!(out.stdout.contains("- net.example.org/v1alpha1, Kind=Device default/leaf1"), "{}", out.stdout);
    assert!(out.stdout.contains("- net.example.org/v1alpha1, Kind=DeviceConfig default/leaf1"), "{}", out.stdout);
    assert_eq!(p.in_files(), files);
    p.cli(&["get", "devices", "leaf1"]).ok();
    p.cli(&["get", "deviceconfigs", "leaf1"]).ok();
}

/// Shell completion asks the server: resource types, object names (in `-n`'s namespace),
/// RESOURCE/NAME and namespaces; a server that is not there gives no names and no error.
#[test]
fn completion_asks_the_server_for_resources_names_and_namespaces() {
    let p = project();
    let _s = p.start();
    // What bash passes: the words, and the index of the one being completed.
    let complete = |socket: &std::path::Path, words: &[&str]| {
        let out = std::process::Command::new(BIN)
            .env("COMPLETE", "bash")
            .env("_CLAP_COMPLETE_INDEX", words.len().to_string())
            .env("CHOREO_SOCKET", socket)
            .arg("--")
            .arg("choreo")
            .args(words)
            .output()
            .unwrap();
        assert!(out.status.success(), "{words:?}: {out:?}");
        assert!(out.stderr.is_empty(), "{words:?}: {}", String::from_utf8_lossy(&out.stderr));
        // Candidates are separated by bash's IFS of the registration (vertical tab).
        let text = String::from_utf8(out.stdout).unwrap();
        text.split(['\n', '\u{b}'])
            .filter(|c| !c.is_empty() && !c.starts_with('-'))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let socket = p.socket.clone();
    let c = |words: &[&str]| complete(&socket, words);
    assert_eq!(c(&["get", "dev"]), ["devices"]);
    assert!(c(&["get", ""]).contains(&"reconcilers".to_string()));
    assert_eq!(c(&["get", "devices", ""]), ["leaf1", "leaf2", "leaf3", "spine1", "spine2"]);
    assert_eq!(c(&["get", "devices", "-n", "lab", ""]), ["leaf3"]);
    assert_eq!(c(&["describe", "devices", "sp"]), ["spine1", "spine2"]);
    assert_eq!(
        c(&["--socket", socket.to_str().unwrap(), "wait", "devices/le"]),
        ["devices/leaf1", "devices/leaf2", "devices/leaf3"]
    );
    assert_eq!(c(&["delete", "--dry-run", "devices", "spine"]), ["spine1", "spine2"]);
    assert_eq!(c(&["get", "devices", "-n", ""]), ["default", "lab"]);
    assert_eq!(c(&["explain", "devi"]), ["devices"]);
    assert_eq!(c(&["explain", "devices.sp"]), ["devices.spec"]);
    assert_eq!(c(&["explain", "dev.spec.h"]), ["dev.spec.hostname"]);
    assert_eq!(c(&["explain", "devices.spec.interfaces.n"]), ["devices.spec.interfaces.name"]);
    assert!(c(&["explain", "devices.nope.x"]).is_empty());
    assert!(c(&["get", "no-such-type", ""]).is_empty());
    let gone = p.dir.join("gone.sock");
    assert!(complete(&gone, &["get", "dev"]).is_empty());
    assert!(complete(&gone, &["get", "devices", ""]).is_empty());
    // A server that never answers (nobody accepts): no candidates, and the shell gets its answer.
    let stuck = p.dir.join("stuck.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&stuck).unwrap();
    assert!(complete(&stuck, &["get", "devices", ""]).is_empty());

    let script = p.cli(&["completion", "bash"]).ok().stdout;
    assert!(script.contains("COMPLETE=\"bash\"") && script.contains("complete -o"), "{script}");
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        assert!(p.cli(&["completion", shell]).ok().stdout.contains("COMPLETE"), "{shell}");
    }
}

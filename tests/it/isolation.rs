//! Reconcilers in a worker process: what cannot be stopped inside the interpreter ends the
//! worker, fails that reconcile with an error, and leaves the server up with a new worker.

use std::process::{Command, Stdio};

use crate::support::*;

const GOOD: &str = "def reconcile(self):\n    return reconcile_result(self, False, 0, '', False)\n";

/// The pid of the server's reconcile worker (a child of the server running `__reconcile-worker`).
fn worker_pids(server: &Server) -> Vec<u32> {
    let out = Command::new("pgrep").args(["-P", &server.child.id().to_string()]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.trim().parse().ok()).collect()
}

#[test]
fn an_allocation_larger_than_the_worker_fails_the_reconcile_not_the_server() {
    // 8 GiB in one native allocation: past the worker's address space, so malloc fails there.
    let p = fabric_with(
        "def reconcile(self):\n    x = [0] * (1 << 30)\n    return reconcile_result(self, False, 0, '', False)\n",
        "{}",
    );
    let s = p.start();
    let run = p.cli(&["run", "once"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("the reconcile worker died"), "{}", run.stdout);
    assert!(run.stdout.contains("memory allocation of"), "{}", run.stdout);
    assert!(run.stdout.contains("--worker-memory-mib"), "{}", run.stdout);
    p.cli(&["server", "get"]).ok();
    // A fixed reconciler runs in a new worker.
    p.write(SCRIPT, GOOD);
    p.cli(&["run", "load"]).ok();
    let again = p.cli(&["run", "once"]);
    assert_eq!(again.code, 0, "{again:?}\n{}", s.log());
    assert_eq!(worker_pids(&s).len(), 1, "one worker runs");
}

/// A tuple whose two halves are the same tuple, 60 levels deep: hashing it visits 2^60 leaves
/// natively, without memory and without returning to the interpreter.
const NATIVE_FOREVER: &str = "def reconcile(self):\n    a = (1,)\n    for i in range(60):\n        a = (a, a)\n    h = hash(a)\n    return reconcile_result(self, False, 0, '', False)\n";

#[test]
fn a_builtin_that_never_returns_is_stopped_at_the_timeout_by_ending_its_worker() {
    let p = fabric_with(NATIVE_FOREVER, "{timeoutSeconds: 1}");
    let _s = p.start();
    let run = p.cli(&["run", "once"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("longer than its limit of 1s (spec.limits.timeoutSeconds)"), "{}", run.stdout);
    assert!(run.stdout.contains("its worker process was stopped"), "{}", run.stdout);
    p.cli(&["server", "get"]).ok();
}

#[test]
fn sigterm_ends_the_server_while_a_builtin_runs() {
    let p = fabric_with(NATIVE_FOREVER, "{timeoutSeconds: 3600}");
    let mut s = p.start();
    let run = Command::new(BIN)
        .args(["run", "once", "--socket"])
        .arg(&p.socket)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the run to start", 30, || {
        (p.cli(&["server", "get", "-o", "json"]).ok().json()["runner"] == "Once").then_some(())
    });
    let workers = worker_pids(&s);
    assert_eq!(workers.len(), 1, "{workers:?}");
    s.signal(libc::SIGTERM);
    assert_eq!(s.wait(), 0, "{}", s.log());
    let out = run.wait_with_output().unwrap();
    assert_ne!(out.status.code(), Some(0));
    // The worker went with the server.
    wait_for("the worker to end", 30, || {
        (!std::path::Path::new(&format!("/proc/{}", workers[0])).exists()).then_some(())
    });
}

#[test]
fn code_that_kills_the_worker_while_loading_is_a_load_error_naming_the_reconciler() {
    let p = fabric_with(&format!("BIG = [0] * (1 << 30)\n{GOOD}"), "{}");
    let _s = p.start();
    let status = p.cli(&["server", "get", "-o", "json"]).ok().json();
    assert_eq!(status["status"], "Failed", "{status}");
    let reason = status["reason"].as_str().unwrap();
    assert!(reason.contains("reconciler net.example.org.devices.inventory:"), "{reason}");
    assert!(reason.contains("loading its code killed the reconcile worker"), "{reason}");
    p.write(SCRIPT, GOOD);
    p.cli(&["run", "load"]).ok();
    p.cli(&["run", "once"]).ok();
}

#[test]
fn reconcilers_can_run_in_the_server_thread() {
    let p = TestProject::new("fabric");
    let s = Server::start(&p.socket, &[p.dir.to_str().unwrap(), "--reconciler-isolation", "thread"]);
    let run = p.cli(&["run", "once"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(worker_pids(&s).is_empty(), "no worker process in thread mode");
}

#[test]
fn str_of_a_value_that_shares_its_parts_exponentially_fails_the_reconcile() {
    // 2^40 leaves when printed: the text outgrows the worker's memory (or its timeout) natively.
    let p = fabric_with(
        "def reconcile(self):\n    a = [1]\n    for i in range(40):\n        a = [a, a]\n    s = str(a)\n    return reconcile_result(self, False, 0, '', False)\n",
        "{timeoutSeconds: 5}",
    );
    let _s = p.start();
    let run = p.cli(&["run", "once"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout.contains("the reconcile worker died") || run.stdout.contains("its worker process was stopped"),
        "{}",
        run.stdout
    );
    p.cli(&["server", "get"]).ok();
}

/// leaf1's reconcile labels spine1; spine1's records its label, and spine2's reads spine1's
/// status through a call. Whatever the worker starts ahead of its turn, each reconcile must see
/// the writes of the ones before it, as one at a time would.
const CHAINED: &str = r#"
def reconcile(self):
    name = self["metadata"]["name"]
    device = get_resource("net.example.org/v1alpha1", "Device")["resource"]
    status = self.get("status", {})
    if name == "leaf1":
        other = client_get("spine1", "default", device)["resource"]
        other["metadata"]["labels"] = {"touched": "by-leaf1"}
        client_update(other)
    # Each keeps its first observation: a reconcile that saw a stale state would leave it there.
    if name == "spine2" and "spine1Saw" not in status:
        spine1 = client_get("spine1", "default", device)["resource"]
        status["spine1Saw"] = spine1.get("status", {}).get("saw", "nothing yet")
    if "saw" not in status:
        status["saw"] = self["metadata"].get("labels", {}).get("touched", "no label")
    self["status"] = status
    return reconcile_result(self, False, 0, "", False)
"#;

#[test]
fn a_reconcile_started_ahead_sees_what_the_one_before_it_wrote() {
    let p = fabric_with(CHAINED, "{}");
    let crd = "crds/net.example.org_devices.yaml";
    let text = std::fs::read_to_string(p.path(crd)).unwrap();
    let fields =
        "interfaceCount: {type: integer}\n              saw: {type: string}\n              spine1Saw: {type: string}";
    p.write(crd, &text.replace("interfaceCount: {type: integer}", fields));
    p.write(
        "in/spine2.yaml",
        "apiVersion: net.example.org/v1alpha1\nkind: Device\nmetadata:\n  name: spine2\n  namespace: default\nspec:\n  asn: 64602\n",
    );
    for isolation in ["process", "thread"] {
        let _ = std::fs::remove_dir_all(p.path(".choreo"));
        let s = Server::start(&p.socket, &[p.dir.to_str().unwrap(), "--reconciler-isolation", isolation]);
        let run = p.cli(&["run", "once"]);
        assert_eq!(run.code, 0, "{isolation}: {run:?}\n{}", s.log());
        let get =
            |name: &str| p.cli(&["get", "devices.net.example.org", name, "-o", "json"]).ok().json()["status"].clone();
        assert_eq!(get("spine1")["saw"], "by-leaf1", "{isolation}");
        assert_eq!(get("leaf1")["saw"], "no label", "{isolation}");
        assert_eq!(get("spine2")["spine1Saw"], "by-leaf1", "{isolation}");
        if isolation == "process" {
            // Both paths ran: spine1's reconcile started ahead and was thrown away (leaf1 changed
            // its input), others started ahead were used.
            let metrics = p.cli(&["metrics"]).ok().stdout;
            let count = |result: &str| -> f64 {
                let line = format!("choreo_reconciles_ahead_total{{result=\"{result}\"}} ");
                metrics.lines().find_map(|l| l.strip_prefix(line.as_str())).unwrap().parse().unwrap()
            };
            assert!(count("discarded") >= 1.0, "{metrics}");
            assert!(count("used") >= 1.0, "{metrics}");
        }
        p.cli(&["server", "stop"]).ok();
        drop(s);
    }
}

#[test]
fn reconciles_sent_ahead_wait_in_the_worker_while_the_one_before_them_waits_for_an_answer() {
    // Every reconcile reads its own object back (a call that waits for the server's answer)
    // while the next ones are already in the worker's pipe: they wait their turn there, and
    // each reconcile sees its own object, not the one sent after it.
    let script = r#"
def reconcile(self):
    device = get_resource("net.example.org/v1alpha1", "Device")["resource"]
    me = client_get(self["metadata"]["name"], "default", device)["resource"]
    self["status"] = {"saw": me["metadata"]["name"] + "/" + str(me["spec"]["asn"])}
    return reconcile_result(self, False, 0, "", False)
"#;
    let p = fabric_with(script, "{}");
    let crd = "crds/net.example.org_devices.yaml";
    let text = std::fs::read_to_string(p.path(crd)).unwrap();
    p.write(
        crd,
        &text.replace(
            "interfaceCount: {type: integer}",
            "interfaceCount: {type: integer}\n              saw: {type: string}",
        ),
    );
    for i in 0..12 {
        p.write(
            &format!("in/extra{i}.yaml"),
            &format!("apiVersion: net.example.org/v1alpha1\nkind: Device\nmetadata:\n  name: extra{i}\n  namespace: default\nspec:\n  asn: {}\n", 65000 + i),
        );
    }
    let s = p.start();
    let run = p.cli(&["run", "once"]);
    assert_eq!(run.code, 0, "{run:?}\n{}", s.log());
    for i in 0..12 {
        let got = p.cli(&["get", "devices.net.example.org", &format!("extra{i}"), "-o", "json"]).ok().json();
        assert_eq!(got["status"]["saw"], format!("extra{i}/{}", 65000 + i), "{got}");
    }
    let metrics = p.cli(&["metrics"]).ok().stdout;
    let used: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("choreo_reconciles_ahead_total{result=\"used\"} "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(used >= 12.0, "{metrics}");
}

#[test]
fn a_reconcile_started_ahead_that_is_not_needed_and_does_not_end_is_stopped_with_its_worker() {
    // spine1's reconcile never ends while spine1 has no label; leaf1's, which runs just before
    // it, labels it. So the reconcile started ahead (unlabelled) must be thrown away, and as it
    // does not end, its worker is stopped; the one at spine1's turn (labelled) ends at once.
    let script = r#"
def reconcile(self):
    name = self["metadata"]["name"]
    labels = self["metadata"].get("labels", {})
    if name == "leaf1":
        device = get_resource("net.example.org/v1alpha1", "Device")["resource"]
        other = client_get("spine1", "default", device)["resource"]
        other["metadata"]["labels"] = {"touched": "by-leaf1"}
        client_update(other)
    if name == "spine1" and "touched" not in labels:
        n = 0
        for i in range(1000000000):
            n += 1
    return reconcile_result(self, False, 0, "", False)
"#;
    let p = fabric_with(script, "{timeoutSeconds: 60}");
    let s = p.start();
    let before = worker_pids(&s);
    assert_eq!(before.len(), 1, "{before:?}");
    let run = p.cli(&["run", "once"]);
    assert_eq!(run.code, 0, "{run:?}\n{}", s.log());
    let after = worker_pids(&s);
    assert_eq!(after.len(), 1, "{after:?}");
    assert_ne!(before, after, "the worker running the unneeded reconcile was stopped and a new one started");
    let spine1 = p.cli(&["get", "devices.net.example.org", "spine1", "-o", "json"]).ok().json();
    assert_eq!(spine1["metadata"]["labels"]["touched"], "by-leaf1");
}

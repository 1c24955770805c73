//! Nothing stuck: reconcilers are bounded, and the engine answers during any run.

use std::process::{Command, Stdio};

use crate::support::*;

const ENDLESS: &str = "def reconcile(self):\n    for i in range(2000000000):\n        for j in range(2000000000):\n            pass\n    return reconcile_result(self, False, 0, '', False)\n";

/// Starts `run once` in the background; returns once the runner reports it runs.
fn run_once_in_background(p: &TestProject, args: &[&str]) -> std::process::Child {
    let child = Command::new(BIN)
        .args(["run", "once"])
        .args(args)
        .arg("--socket")
        .arg(&p.socket)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the run to start", 30, || {
        (p.cli(&["server", "get", "-o", "json"]).ok().json()["runner"] == "Once").then_some(())
    });
    child
}

#[test]
fn a_reconcile_stuck_inside_the_interpreter_stops_at_its_timeout() {
    let p = fabric_with(
        "def reconcile(self):\n    big = list(range(100000))\n    for i in range(2000000000):\n        if -1 in big:\n            pass\n    return reconcile_result(self, False, 0, '', False)\n",
        "{timeoutSeconds: 1, steps: 1000000000000}",
    );
    let _s = p.start();
    let run = p.cli(&["run", "once"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("longer than its limit of 1s (spec.limits.timeoutSeconds)"), "{}", run.stdout);
    p.cli(&["server", "get"]).ok();
}

#[test]
fn the_run_timeout_stops_a_reconcile_in_the_middle_and_any_value_is_accepted() {
    let p = fabric_with(ENDLESS, "{timeoutSeconds: 3600, steps: 1000000000000}");
    let _s = p.start();
    let run = p.cli(&["run", "once", "--timeout", "1"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("run's deadline passed during the reconcile"), "{}", run.stdout);
    // The largest timeout there is: no deadline, no panic. The script stops at its step limit.
    let p2 = fabric_with(ENDLESS, "{steps: 100000}");
    let _s2 = p2.start();
    let run = p2.cli(&["run", "once", "--timeout", "18446744073709551615"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("limit of 100000 steps"), "{}", run.stdout);
    p2.cli(&["server", "get"]).ok();
}

/// Starts a CLI command in the background and returns once it printed its first progress
/// line (to stderr): proof that the server holds it.
fn held_back(p: &TestProject, args: &[&str], stdin: Option<&str>) -> (std::process::Child, String) {
    use std::io::{BufRead, Write};
    let mut child = Command::new(BIN)
        .args(args)
        .arg("--socket")
        .arg(&p.socket)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(text) = stdin {
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    }
    let mut line = String::new();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    stderr.read_line(&mut line).unwrap();
    // Keep reading, so the command never writes into a closed pipe.
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    (child, line)
}

const EXTRA: &str =
    "apiVersion: net.example.org/v1alpha1\nkind: Device\nmetadata:\n  name: extra\nspec:\n  asn: 65199\n";

#[test]
fn requests_are_answered_during_a_run_and_server_stop_ends_it() {
    let p = fabric_with(ENDLESS, "{timeoutSeconds: 3600, steps: 1000000000000}");
    let mut s = p.start();
    let run = run_once_in_background(&p, &[]);
    // Reads, run history among them, are answered while the reconcile runs.
    p.cli(&["get", "devices"]).ok();
    p.cli(&["run", "list"]).ok();
    p.cli(&["run", "deps"]).ok();
    // An edit waits for the reconcile, saying so.
    let (apply, said) = held_back(&p, &["apply", "-f", "-"], Some(EXTRA));
    assert!(said.contains("waiting"), "{said}");
    // A stop is answered at once; the run's client hears why it ended.
    p.cli(&["server", "stop"]).ok();
    assert_eq!(s.wait(), 0);
    let out = run.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("the server is stopping"), "{text}");
    // The held edit is answered too, never with "unreachable".
    let out = apply.wait_with_output().unwrap();
    assert_ne!(out.status.code(), Some(3), "{out:?}");
}

#[test]
fn edits_interleave_with_a_run_of_short_reconciles() {
    // Each reconcile is short but requeues itself, so the run goes on; an apply in the middle
    // is answered between two reconciles.
    let p = fabric_with(
        "def reconcile(self):\n    return reconcile_result(self, True, 0, '', False)\n",
        "{timeoutSeconds: 10}",
    );
    let _s = p.start();
    let run = run_once_in_background(&p, &["--timeout", "3600"]);
    let applied = p.cli_stdin(&["apply", "-f", "-"], EXTRA);
    assert_eq!(applied.code, 0, "{applied:?}");
    p.cli(&["get", "devices", "extra"]).ok();
    assert_eq!(p.cli(&["server", "get", "-o", "json"]).ok().json()["runner"], "Once", "the run goes on");
    p.cli(&["run", "stop"]).ok();
    let out = run.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn run_stop_ends_a_run_once_and_a_waiting_load_goes_after_it() {
    let p = fabric_with(ENDLESS, "{timeoutSeconds: 3600, steps: 1000000000000}");
    let _s = p.start();
    let run = run_once_in_background(&p, &[]);
    // A load waits for the run, saying so.
    let (load, said) = held_back(&p, &["run", "load"], None);
    assert!(said.contains("waiting"), "{said}");
    p.cli(&["run", "stop"]).ok();
    let out = run.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("run stop"), "{out:?}");
    let load = load.wait_with_output().unwrap();
    assert_eq!(load.status.code(), Some(0), "{load:?}");
}

#[test]
fn sigterm_during_a_run_ends_the_server() {
    let p = fabric_with(ENDLESS, "{timeoutSeconds: 3600, steps: 1000000000000}");
    let mut s = p.start();
    let run = run_once_in_background(&p, &[]);
    s.signal(libc::SIGTERM);
    assert_eq!(s.wait(), 0, "{}", s.log());
    assert!(!p.socket.exists());
    let out = run.wait_with_output().unwrap();
    assert_ne!(out.status.code(), Some(0));
}

#[test]
fn a_deeply_nested_value_fails_the_reconcile_not_the_server() {
    let p = fabric_with(
        "def reconcile(self):\n    x = 0\n    for i in range(100000000):\n        x = (x,)\n    s = str(x)\n    return reconcile_result(self, False, 0, '', False)\n",
        "{steps: 1000000000}",
    );
    let _s = p.start();
    let run = p.cli(&["run", "once"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("spec.limits.memoryMiB"), "{}", run.stdout);
    p.cli(&["server", "get"]).ok();
}

#[test]
fn thousands_of_children_in_one_reconcile() {
    // One reconcile of the spine creates 3000 Ports (the benchmark does 10k in release).
    let p = TestProject::new("fabric");
    p.write("crds/net.example.org_ports.yaml", &crd("net.example.org", "v1alpha1", "Port", "index", "integer"));
    let config = std::fs::read_to_string(p.path(CONFIG)).unwrap();
    p.write(CONFIG, &format!("{config}  owns:\n  - group: net.example.org\n    version: v1alpha1\n    kind: Port\n"));
    p.write(
        SCRIPT,
        "def reconcile(self):\n    if self['metadata']['name'] == 'spine1':\n        for i in range(3000):\n            client_create({'apiVersion': 'net.example.org/v1alpha1', 'kind': 'Port', 'metadata': {'name': 'p%d' % i}, 'spec': {'index': i}})\n    return reconcile_result(self, False, 0, '', False)\n",
    );
    let _s = p.start();
    let run = p.cli(&["run", "once", "--timeout", "600"]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    let list = p.cli(&["get", "ports", "-o", "name"]).ok();
    assert_eq!(list.stdout.lines().count(), 3000);
    // The next run produces the same children: nothing changes.
    let again = p.cli(&["run", "once", "--timeout", "600"]).ok();
    assert!(again.stdout.contains("completed"), "{}", again.stdout);
    assert_eq!(p.cli(&["get", "ports", "-o", "name"]).ok().stdout.lines().count(), 3000);
}

/// A plan runs beside the engine: while its copy reconciles (here: for ever), edits and runs of
/// the served project are answered, and the server stops at once.
#[test]
fn a_plan_does_not_hold_up_the_engine() {
    let p = fabric_with(ENDLESS, "{timeoutSeconds: 3600, steps: 1000000000000}");
    let mut s = p.start();
    // The plan's first progress line comes from its copy's run: the plan is under way.
    let (plan, said) = held_back(&p, &["plan", "--timeout", "3600"], None);
    assert!(!said.is_empty(), "{said}");
    let out = p.cli_stdin(&["apply", "-f", "-"], EXTRA).ok();
    assert!(out.stdout.contains("created"), "{}", out.stdout);
    p.cli(&["get", "devices", "extra"]).ok();
    p.cli(&["server", "stop"]).ok();
    assert_eq!(s.wait(), 0);
    let out = plan.wait_with_output().unwrap();
    assert_ne!(out.status.code(), Some(0), "the plan cannot end well: its server stopped");
    // The plan's copy of the store does not outlive the server's next start.
    let _s = p.start();
    p.cli(&["get", "devices"]).ok();
    let left = plan_copies(&p.path(".choreo"));
    assert!(left.is_empty(), "{left:?}");
}

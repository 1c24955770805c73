//! Reconcile benchmarks, run against the real `choreo` binary on a temporary socket.
//!
//! `cargo bench --bench run` measures `run once` on projects of 1k and 10k objects whose
//! Starlark reconciler creates one child each: reconciles per second, the server's peak RSS,
//! then an edit of one input and a second run that reconciles only what changed. Under
//! `cargo test` the same code runs once on a tiny project as a smoke test.

use std::path::Path;
use std::time::Instant;

use choreo::cli::Client;
use choreo::protocol::{Reply, Request, RunOnceRequest, RunSummary};

mod common;

const BIN: &str = env!("CARGO_BIN_EXE_choreo");

fn project(root: &Path, n: usize) -> std::path::PathBuf {
    common::device_project(root, &format!("p{n}"), n, false)
}

fn run_once(c: &mut Client, changed_only: bool) -> (RunSummary, f64) {
    let t = Instant::now();
    let reply = c.request(Request::RunOnce(RunOnceRequest { timeout_secs: 600, changed_only }), &mut |_| {}).unwrap();
    let secs = t.elapsed().as_secs_f64();
    match reply {
        Reply::Run(s) => {
            assert!(s.success, "{}: {}", s.task, s.message);
            (s, secs)
        }
        other => panic!("{other:?}"),
    }
}

/// The children of process `pid` (its reconcile worker).
fn worker_pids(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten() {
        let text = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        out.extend(text.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
    }
    out
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let sizes: &[usize] = if full { &[1_000, 10_000] } else { &[10] };
    let tmp = tempfile::tempdir().unwrap();
    println!("| benchmark | result |\n|---|---|");
    for &n in sizes {
        // Reconcilers in the worker process (the default) and in the server's thread, side by
        // side: the difference is what isolation costs.
        for (isolation, label) in [("process", "worker process"), ("thread", "server thread")] {
            let dir = project(tmp.path(), n);
            let dir = {
                let target = tmp.path().join(format!("p{n}-{isolation}"));
                std::fs::rename(&dir, &target).unwrap();
                target
            };
            let socket = tmp.path().join(format!("r{n}{isolation}.sock"));
            let mut child = common::start_server_isolated(BIN, &dir, &socket, isolation);
            let mut c = Client::connect(&socket).unwrap();
            let (s, secs) = run_once(&mut c, false);
            let reconciles = s.events.iter().filter(|e| e.operation == "START").count();
            let workers: Vec<f64> = worker_pids(child.id()).into_iter().map(common::peak_rss_mb).collect();
            let worker = match workers.as_slice() {
                [] => String::new(),
                w => format!(" + {:.0} MB worker", w.iter().sum::<f64>()),
            };
            println!(
                "| run once, {n} objects, one child each ({label}) | {:.2} s, {reconciles} reconciles, {:.0} reconciles/s, peak RSS {:.0} MB server{worker} |",
                secs,
                reconciles as f64 / secs,
                common::peak_rss_mb(child.id()),
            );
            let f = dir.join("in/d0.yaml");
            let text = std::fs::read_to_string(&f).unwrap().replace("asn: 64512", "asn: 65000");
            std::fs::write(&f, text).unwrap();
            let (s, secs) = run_once(&mut c, true);
            let reconciles = s.events.iter().filter(|e| e.operation == "START").count();
            println!(
                "| edit one input of {n}, `run once --changed` ({label}) | {:.0} ms, {reconciles} reconciles |",
                secs * 1e3
            );
            let (s, secs) = run_once(&mut c, false);
            let reconciles = s.events.iter().filter(|e| e.operation == "START").count();
            println!(
                "| nothing changed, full `run once` of {n} again ({label}) | {:.0} ms, {reconciles} reconciles, 0 writes |",
                secs * 1e3
            );
            let _ = c.request(Request::ServerStop, &mut |_| {});
            let _ = child.wait();
        }
    }
    children_in_one_reconcile(tmp.path(), if full { 10_000 } else { 10 });
    if !full {
        println!("1 passed, 0 failed");
    }
}

/// One Device whose reconcile creates `n` DeviceConfig children: the cost of a reconcile's
/// child bookkeeping and of applying its children (first run: all new; second: all unchanged).
fn children_in_one_reconcile(root: &Path, n: usize) {
    let dir = project(root, 1);
    let dir = {
        let target = root.join(format!("fanout{n}"));
        std::fs::rename(&dir, &target).unwrap();
        target
    };
    let script = format!(
        "def reconcile(self):\n    for i in range({n}):\n        client_create({{'apiVersion': 'net.example.org/v1alpha1', 'kind': 'DeviceConfig', 'metadata': {{'name': '%s-%d' % (self['metadata']['name'], i), 'namespace': 'default'}}, 'spec': {{'asn': i}}}})\n    return reconcile_result(self, False, 0, '', False)\n"
    );
    std::fs::write(dir.join("reconcilers/config/config.star"), script).unwrap();
    let socket = root.join(format!("f{n}.sock"));
    let mut child = common::start_server(BIN, &dir, &socket);
    let mut c = Client::connect(&socket).unwrap();
    let one = |s: &RunSummary| {
        // The reconcile of the Device that made the children: from its START to its STOP.
        let times: Vec<chrono::DateTime<chrono::FixedOffset>> = s
            .events
            .iter()
            .filter(|e| e.resource.contains(".Device.") && (e.operation == "START" || e.operation == "STOP"))
            .take(2)
            .filter_map(|e| chrono::DateTime::parse_from_rfc3339(&e.time).ok())
            .collect();
        times.get(1).zip(times.first()).map_or(0.0, |(b, a)| (*b - *a).num_microseconds().unwrap_or(0) as f64 / 1e3)
    };
    let (s, _) = run_once(&mut c, false);
    let created = one(&s);
    let (s, _) = run_once(&mut c, false);
    let again = one(&s);
    println!("| one reconcile creating {n} children (first run / all unchanged) | {created:.0} ms / {again:.0} ms |");
    let _ = c.request(Request::ServerStop, &mut |_| {});
    let _ = child.wait();
}

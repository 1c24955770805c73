//! Watch-loop benchmarks, against the real `choreo` binary in continuous mode (`run start`).
//!
//! `cargo bench --bench watch` measures the latency from writing an input file to the
//! reconciled child being readable through the socket (median and p99 over 200 edits) on a
//! 10-object and a 10k-object project, a burst of 1k changed files until all are reconciled,
//! and the CPU use of an idle, watching server. Under `cargo test` it runs once on tiny sizes.

use std::path::Path;
use std::time::{Duration, Instant};

use choreo::cli::Client;
use choreo::protocol::{GetRequest, Reply, Request};

const BIN: &str = env!("CARGO_BIN_EXE_choreo");

mod common;

use common::{CRDS, RECONCILER, SCRIPT};

fn device(i: usize, asn: u64) -> String {
    format!("apiVersion: net.example.org/v1alpha1\nkind: Device\nmetadata:\n  name: d{i}\n  namespace: default\nspec:\n  asn: {asn}\n")
}

fn child_asn(c: &mut Client, i: usize) -> Option<u64> {
    let req = Request::Get(GetRequest {
        resource: "deviceconfigs".into(),
        name: Some(format!("d{i}")),
        namespace: Some("default".into()),
        show_managed_fields: false,
        ..Default::default()
    });
    match c.request(req, &mut |_| {}) {
        Ok(Reply::Object(text)) => serde_json::from_str::<serde_json::Value>(&text).ok()?["spec"]["asn"].as_u64(),
        _ => None,
    }
}

fn wait_asn(c: &mut Client, i: usize, asn: u64, limit: Duration) -> Duration {
    let t = Instant::now();
    while child_asn(c, i) != Some(asn) {
        assert!(t.elapsed() < limit, "d{i} never reached asn {asn}");
        std::thread::sleep(Duration::from_micros(200));
    }
    t.elapsed()
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    fields.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
        + fields.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let sizes: &[usize] = if full { &[10, 10_000] } else { &[3] };
    let edits = if full { 200 } else { 3 };
    let tmp = tempfile::tempdir().unwrap();
    println!("| benchmark | result |\n|---|---|");
    for &n in sizes {
        let dir = tmp.path().join(format!("p{n}"));
        for d in ["crds", "in", "reconcilers/config"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        std::fs::write(dir.join("crds/crds.yaml"), CRDS).unwrap();
        std::fs::write(dir.join("reconcilers/config/config.yaml"), RECONCILER).unwrap();
        std::fs::write(dir.join("reconcilers/config/config.star"), SCRIPT).unwrap();
        for i in 0..n {
            std::fs::write(dir.join(format!("in/d{i}.yaml")), device(i, 1000 + i as u64)).unwrap();
        }
        let socket = tmp.path().join(format!("w{n}.sock"));
        let mut child = common::start_server(BIN, &dir, &socket);
        let mut c = Client::connect(&socket).unwrap();
        c.request(Request::RunStart, &mut |_| {}).unwrap();
        wait_asn(&mut c, n - 1, 1000 + (n - 1) as u64, Duration::from_secs(300));

        let mut lat = Vec::new();
        for e in 0..edits {
            let asn = 500_000 + e as u64;
            let f = dir.join("in/d0.yaml");
            let t = Instant::now();
            write(&f, &device(0, asn));
            wait_asn(&mut c, 0, asn, Duration::from_secs(30));
            lat.push(t.elapsed());
        }
        lat.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "| edit one input file → reconciled child readable, {n}-object project ({edits} edits) | median {:.1} ms, p99 {:.1} ms |",
            ms(lat[lat.len() / 2]),
            ms(lat[lat.len() * 99 / 100])
        );
        if n == *sizes.last().unwrap() {
            let burst = if full { 1000 } else { 3 }.min(n);
            let t = Instant::now();
            for i in 0..burst {
                write(&dir.join(format!("in/d{i}.yaml")), &device(i, 900_000 + i as u64));
            }
            for i in 0..burst {
                wait_asn(&mut c, i, 900_000 + i as u64, Duration::from_secs(120));
            }
            println!(
                "| burst of {burst} changed files until all reconciled, {n}-object project | {:.0} ms |",
                ms(t.elapsed())
            );
            let secs = if full { 10 } else { 1 };
            // sled's flusher goes on writing the burst back for several seconds after it is
            // readable: that is the burst's cost, not idleness. Idle starts once three seconds
            // in a row pass with at most one clock tick (10 ms) of CPU each (or after 60 s).
            let settle = Instant::now();
            let mut quiet = 0;
            while quiet < 3 && settle.elapsed() < Duration::from_secs(60) {
                let before = cpu_ticks(child.id());
                std::thread::sleep(Duration::from_secs(1));
                quiet = if cpu_ticks(child.id()).saturating_sub(before) <= 1 { quiet + 1 } else { 0 };
            }
            let settled = settle.elapsed();
            let before = cpu_ticks(child.id());
            std::thread::sleep(Duration::from_secs(secs));
            let used = cpu_ticks(child.id()).saturating_sub(before);
            // Clock ticks are 1/100 s on Linux.
            println!(
                "| CPU of an idle, watching server ({n} objects, {secs} s, after the burst's write-back settled in {:.0} s) | {:.2} % |",
                settled.as_secs_f64(),
                used as f64 / secs as f64
            );
        }
        let _ = c.request(Request::ServerStop, &mut |_| {});
        let _ = child.wait();
    }
    if !full {
        println!("1 passed, 0 failed");
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

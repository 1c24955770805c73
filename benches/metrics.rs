//! What metrics cost on the hot path.
//!
//! `cargo bench --bench metrics` runs `run once` on 10k objects (a Starlark reconciler creating
//! one child each: 20k reconciles) with `--metrics-listen`, alternately without and with a
//! scraper fetching `/metrics` every 100 ms, three times each, and reports the median
//! reconciles/s of both and their difference (target: under 2 %). Every run after the first
//! reconciles everything again (nothing changes, so the second and later runs of a server do
//! the same work). Under `cargo test` it runs once on 100 objects as a smoke test.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use choreo::cli::Client;
use choreo::protocol::{Reply, Request, RunOnceRequest};

mod common;

const BIN: &str = env!("CARGO_BIN_EXE_choreo");

fn project(root: &Path, n: usize) -> std::path::PathBuf {
    common::device_project(root, &format!("m{n}"), n, true)
}

/// Reconciles per second of one `run once`.
fn run_once(c: &mut Client) -> f64 {
    let t = Instant::now();
    let reply = c.request(Request::RunOnce(RunOnceRequest { timeout_secs: 3600, changed_only: false }), &mut |_| {});
    let secs = t.elapsed().as_secs_f64();
    match reply {
        Ok(Reply::Run(s)) => {
            assert!(s.success, "{}: {}", s.task, s.message);
            s.events.iter().filter(|e| e.operation == "START").count() as f64 / secs
        }
        other => panic!("{other:?}"),
    }
}

fn scrape(port: u16) -> usize {
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to /metrics");
    conn.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut body = String::new();
    conn.read_to_string(&mut body).unwrap();
    assert!(body.starts_with("HTTP/1.0 200") || body.starts_with("HTTP/1.1 200"));
    body.len()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (n, reps) = if full { (10_000, 5) } else { (100, 1) };
    let tmp = tempfile::tempdir().unwrap();
    let dir = project(tmp.path(), n);
    let socket = tmp.path().join("m.sock");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = common::start_server_with(
        BIN,
        &[dir.as_os_str(), "--metrics-listen".as_ref(), port.to_string().as_ref()],
        &socket,
        &[],
        |_| {},
    );
    let mut c = Client::connect(&socket).unwrap();
    // The first run creates the children; the measured ones reconcile the same 2n items.
    run_once(&mut c);
    let (mut quiet, mut scraped) = (Vec::new(), Vec::new());
    let scrapes = Arc::new(AtomicU64::new(0));
    for rep in 0..reps {
        // Alternate which goes first, so drift (the disk, the page cache) falls on both.
        if rep % 2 == 0 {
            quiet.push(run_once(&mut c));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let scraper = {
            let (stop, scrapes) = (stop.clone(), scrapes.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    scrape(port);
                    scrapes.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        scraped.push(run_once(&mut c));
        stop.store(true, Ordering::Relaxed);
        scraper.join().unwrap();
        if rep % 2 == 1 {
            quiet.push(run_once(&mut c));
        }
    }
    eprintln!("without: {quiet:.0?}\nwith:    {scraped:.0?}");
    let (q, s) = (median(quiet), median(scraped));
    println!("| benchmark | result |\n|---|---|");
    println!(
        "| `run once`, {n} objects ({} reconciles), without / with a scraper polling /metrics every 100 ms ({} scrapes), medians of {reps} | {q:.0} / {s:.0} reconciles/s: {:+.1} % |",
        2 * n,
        scrapes.load(Ordering::Relaxed),
        (s - q) / q * 100.0
    );
    // The two costs directly, which the noise of whole runs on this machine (±30 % between
    // runs) hides: recording one reconcile, and serving one scrape of this server.
    let m = choreo::metrics::global();
    let calls = if full { 1_000_000 } else { 1_000 };
    let t = Instant::now();
    for i in 0..calls {
        m.reconcile(
            if i % 2 == 0 { "bench.a" } else { "bench.b" },
            choreo::metrics::Outcome::Success,
            Duration::from_micros(150),
        );
    }
    let per_record = t.elapsed().as_secs_f64() / calls as f64;
    let t = Instant::now();
    let scrapes_n = if full { 200 } else { 5 };
    let mut bytes = 0;
    for _ in 0..scrapes_n {
        bytes = scrape(port);
    }
    let per_scrape = t.elapsed().as_secs_f64() / scrapes_n as f64;
    // What they add to a run of 2n reconciles at the quiet rate, with a scrape every 100 ms.
    let run_secs = 2.0 * n as f64 / q;
    let overhead = (per_record * 2.0 * n as f64 + per_scrape * (run_secs / 0.1)) / run_secs * 100.0;
    println!(
        "| recording one reconcile / serving one scrape ({bytes} bytes) | {:.0} ns / {:.2} ms: {overhead:.2} % of a run's time with a scrape every 100 ms |",
        per_record * 1e9,
        per_scrape * 1e3
    );
    let _ = c.request(Request::ServerStop, &mut |_| {});
    let _ = child.wait();
    if !full {
        println!("1 passed, 0 failed");
    }
}

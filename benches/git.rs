//! Dynamic-mode benchmarks, against the real `choreo` binary and a local bare repository.
//!
//! `cargo bench --bench git` measures `server apply` until the server is Ready for a 1k-object
//! project — the first apply (a clone) and the same apply on a restarted server whose clone
//! and store exist (a fetch) — and the time of a context switch between two refs (production, so the
//! switch includes stopping the runner, the checkout, the reload and the restart; median of
//! 10). Under `cargo test` it runs once on a tiny project.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use choreo::cli::Client;
use choreo::protocol::{Reply, Request, ServerApplyRequest};

mod common;

use common::{CRDS, RECONCILER, SCRIPT};

const BIN: &str = env!("CARGO_BIN_EXE_choreo");

fn git(dir: &Path, home: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("HOME", home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env_remove("GIT_CONFIG_GLOBAL")
        .output()
        .expect("git");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn start(work_dir: &Path, socket: &Path, home: &Path) -> std::process::Child {
    let verbose = std::env::args().any(|a| a == "--verbose");
    // The engine logs each apply's phases (fetch, checkout, load): shown with --verbose.
    let env = [("HOME", home.as_os_str()), ("RUST_LOG", std::ffi::OsStr::new("warn,choreo::engine::git=info"))];
    common::start_server_with(BIN, &["--work-dir".as_ref(), work_dir.as_os_str()], socket, &env, move |l| {
        if verbose && l.contains("applied") {
            eprintln!("{l}");
        }
    })
}

fn apply(c: &mut Client, url: &str, reference: &str) -> Duration {
    let req =
        ServerApplyRequest { url: url.into(), directory: "project".into(), reference: reference.into(), branch: None };
    let t = Instant::now();
    match c.request(Request::ServerApply(req), &mut |_| {}) {
        Ok(Reply::Message(_)) => {}
        other => panic!("apply failed: {other:?}"),
    }
    let elapsed = t.elapsed();
    match c.request(Request::ServerStatus, &mut |_| {}) {
        Ok(Reply::Status(s)) => assert_eq!(s.status, choreo::protocol::ServerState::Ready, "{}", s.reason),
        other => panic!("{other:?}"),
    }
    elapsed
}

fn stop(mut child: std::process::Child, c: &mut Client) {
    let _ = c.request(Request::ServerStop, &mut |_| {});
    let _ = child.wait();
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let n = if full { 1000 } else { 5 };
    let switches = if full { 10 } else { 2 };
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(
        home.join(".gitconfig"),
        "[user]\n\tname = bench\n\temail = bench@example.com\n[init]\n\tdefaultBranch = main\n",
    )
    .unwrap();

    let work = tmp.path().join("work");
    let project = work.join("project");
    for d in ["crds", "in", "reconcilers/config"] {
        std::fs::create_dir_all(project.join(d)).unwrap();
    }
    std::fs::write(project.join("crds/crds.yaml"), CRDS).unwrap();
    std::fs::write(project.join("reconcilers/config/config.yaml"), RECONCILER).unwrap();
    std::fs::write(project.join("reconcilers/config/config.star"), SCRIPT).unwrap();
    let write_inputs = |offset: u64| {
        for i in 0..n {
            std::fs::write(
                project.join(format!("in/d{i}.yaml")),
                format!("apiVersion: net.example.org/v1alpha1\nkind: Device\nmetadata:\n  name: d{i}\n  namespace: default\nspec:\n  asn: {}\n", 64512 + i as u64 + offset),
            )
            .unwrap();
        }
    };
    write_inputs(0);
    git(tmp.path(), &home, &["init", "-q", work.to_str().unwrap()]);
    git(&work, &home, &["add", "-A"]);
    git(&work, &home, &["commit", "-q", "-m", "one"]);
    let first = git(&work, &home, &["rev-parse", "HEAD"]);
    write_inputs(100_000);
    git(&work, &home, &["commit", "-q", "-am", "two"]);
    let second = git(&work, &home, &["rev-parse", "HEAD"]);
    let bare = tmp.path().join("remote.git");
    git(tmp.path(), &home, &["clone", "-q", "--bare", work.to_str().unwrap(), bare.to_str().unwrap()]);
    let url = format!("file://{}", bare.display());

    let state = tmp.path().join("state");
    let socket = tmp.path().join("s.sock");
    let child = start(&state, &socket, &home);
    let mut c = Client::connect(&socket).expect("connect");
    let cloned = apply(&mut c, &url, &first);
    stop(child, &mut c);

    // Without the remembered context the restarted server waits for the apply again; its
    // clone and store are on disk, so the apply is a fetch, a checkout and a load.
    std::fs::remove_file(state.join("context.json")).expect("the server remembers its context");
    let child = start(&state, &socket, &home);
    let mut c = Client::connect(&socket).expect("connect");
    let fetched = apply(&mut c, &url, &first);
    let mut times: Vec<Duration> =
        (0..switches).map(|i| apply(&mut c, &url, if i % 2 == 0 { &second } else { &first })).collect();
    stop(child, &mut c);
    times.sort();
    let median = times[times.len() / 2];

    println!("| benchmark | result |\n|---|---|");
    println!("| `server apply` to Ready, {n} objects, first apply (clone) | {:.0} ms |", cloned.as_secs_f64() * 1e3);
    println!(
        "| `server apply` to Ready, {n} objects, restarted server, clone and store on disk (fetch + load) | {:.0} ms |",
        fetched.as_secs_f64() * 1e3
    );
    println!(
        "| context switch between two refs, {n} objects all changed (median of {switches}) | {:.0} ms |",
        median.as_secs_f64() * 1e3
    );
}

//! `-s` benchmarks.
//!
//! `cargo bench --bench sdc` measures (a) the schema context build of the vendored IETF
//! interface models, cold (compiled from the files) and cached (a pass finds the files
//! unchanged), medians; (b) `run once` with `-s` on 100 and 1,000 nodes, each with a running
//! config and one Config of 50 interfaces (IETF interfaces + ip): nodes/s of the validation pass
//! and the server's peak RSS; (c) `yanglint` (Debian's libyang2-tools) validating the same merged
//! configurations, one file per node as a user would run it (it builds the context every time),
//! in the same run. Under `cargo test` the same code runs once on small inputs as a smoke test.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use choreo::cli::Client;
use choreo::protocol::{Reply, Request, RunOnceRequest};
use choreo::sdc::schema::{SchemaCache, SchemaKey};
use serde_json::{json, Value};

mod common;

const BIN: &str = env!("CARGO_BIN_EXE_choreo");

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/devices")
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

fn context_build(reps: usize) {
    let root = fixture().join("schemas");
    let key = SchemaKey { provider: "ietf".into(), version: "2018".into() };
    let cold: Vec<Duration> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            SchemaCache::default().get(&root, &key).expect("compiles");
            t.elapsed()
        })
        .collect();
    let mut cache = SchemaCache::default();
    cache.get(&root, &key).unwrap();
    let warm: Vec<Duration> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            cache.get(&root, &key).unwrap();
            t.elapsed()
        })
        .collect();
    println!(
        "| schema context, IETF interfaces (5 modules), cold | {:.1} ms (median of {reps}) |",
        median(cold).as_secs_f64() * 1e3
    );
    println!(
        "| schema context, cached (files unchanged) | {:.3} ms (median of {reps}) |",
        median(warm).as_secs_f64() * 1e3
    );
}

/// A project of `nodes` nodes, each with a running config of `interfaces` interfaces and one
/// Config setting a description and an address on each.
fn project(dir: &Path, nodes: usize, interfaces: usize) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir.join("in")).unwrap();
    std::fs::create_dir_all(dir.join("runningconfigs")).unwrap();
    copy_dir(&fixture().join("crds"), &dir.join("crds"));
    copy_dir(&fixture().join("schemas"), &dir.join("schemas"));
    let mut objects = String::new();
    for n in 0..nodes {
        let name = format!("node{n:04}");
        objects.push_str(&format!(
            "apiVersion: infra.kuid.dev/v1alpha1\nkind: Node\nmetadata: {{name: {name}, namespace: default}}\nspec: {{provider: ietf, version: \"2018\"}}\n---\n"
        ));
        let running: Vec<Value> = (0..interfaces)
            .map(|i| json!({"name": format!("eth{i}"), "type": "iana-if-type:ethernetCsmacd", "enabled": false}))
            .collect();
        std::fs::write(
            dir.join("runningconfigs").join(format!("{name}.json")),
            json!({"ietf-interfaces:interfaces": {"interface": running}}).to_string(),
        )
        .unwrap();
        let intended: Vec<Value> = (0..interfaces)
            .map(|i| {
                json!({"name": format!("eth{i}"), "enabled": true, "description": format!("port {i} of {name}"),
                    "ipv4": {"mtu": 9000, "address": [{"ip": format!("10.{}.{}.1", n % 250, i), "prefix-length": 24}]}})
            })
            .collect();
        let config = json!({"apiVersion": "config.sdcio.dev/v1alpha1", "kind": "Config",
            "metadata": {"name": format!("{name}-interfaces"), "namespace": "default",
                "labels": {"config.sdcio.dev/targetName": name, "config.sdcio.dev/targetNamespace": "default"}},
            "spec": {"priority": 10, "config": [{"path": "/", "value": {"interfaces": {"interface": intended}}}]}});
        objects.push_str(&serde_json::to_string(&config).unwrap());
        objects.push_str("\n---\n");
    }
    std::fs::write(dir.join("in/objects.yaml"), objects).unwrap();
}

/// `run once -s`: the validation pass's nodes/s (from the run's own timing), and the merged
/// configurations written for yanglint.
fn run_once(tmp: &Path, nodes: usize, interfaces: usize) -> Vec<PathBuf> {
    let dir = tmp.join(format!("sdc-{nodes}"));
    project(&dir, nodes, interfaces);
    let socket = tmp.join(format!("sdc-{nodes}.sock"));
    let mut server = common::start_server_with(BIN, &[dir.as_os_str(), "-s".as_ref()], &socket, &[], |_| {});
    let mut client = Client::connect(&socket).expect("connect");
    let started = Instant::now();
    let reply = client
        .request(Request::RunOnce(RunOnceRequest { timeout_secs: 3600, changed_only: false }), &mut |_| {})
        .expect("run once");
    let wall = started.elapsed();
    let Reply::Run(summary) = reply else { panic!("unexpected reply") };
    let sdc = summary.sdc.expect("the -s summary");
    assert!(summary.success && sdc.valid as usize == nodes, "{:?}", sdc.errors.first());
    let pass = Duration::from_micros(sdc.elapsed_micros);
    let rss = common::peak_rss_mb(server.id());
    println!(
        "| `run once -s`, {nodes} nodes × {interfaces} interfaces: validation pass | {:.0} nodes/s ({:.2} s; whole run {:.2} s; peak RSS {rss:.0} MB) |",
        nodes as f64 / pass.as_secs_f64(),
        pass.as_secs_f64(),
        wall.as_secs_f64()
    );
    // The final configs, as RFC 7951 files for yanglint.
    let out = tmp.join(format!("merged-{nodes}"));
    std::fs::create_dir_all(&out).unwrap();
    let reply = client
        .request(
            Request::Get(choreo::protocol::GetRequest {
                resource: "configs".into(),
                name: None,
                namespace: None,
                show_managed_fields: false,
                ..Default::default()
            }),
            &mut |_| {},
        )
        .expect("get configs");
    let mut files = Vec::new();
    if let Reply::List { items, .. } = reply {
        for text in items {
            let obj: Value = serde_json::from_str(&text).unwrap();
            if obj.pointer("/metadata/labels/config.sdcio.dev~1finalconfig").and_then(Value::as_str) != Some("true") {
                continue;
            }
            let value = &obj["spec"]["config"][0]["value"];
            let file = out.join(format!("{}.json", obj["metadata"]["name"].as_str().unwrap()));
            std::fs::write(&file, rfc7951(value).to_string()).unwrap();
            files.push(file);
        }
    }
    let _ = client.request(Request::ServerStop, &mut |_| {});
    let _ = server.wait();
    files
}

/// The pipeline's print (unqualified names) in RFC 7951 form for the IETF models.
fn rfc7951(v: &Value) -> Value {
    let interfaces: Vec<Value> = v["interfaces"]["interface"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            let mut i = i.clone();
            if let Some(ip) = i.as_object_mut().unwrap().remove("ipv4") {
                i["ietf-ip:ipv4"] = ip;
            }
            i
        })
        .collect();
    json!({"ietf-interfaces:interfaces": {"interface": interfaces}})
}

fn yanglint(files: &[PathBuf]) {
    let schema = fixture().join("schemas/ietf/2018");
    let started = Instant::now();
    for f in files {
        let out = std::process::Command::new("yanglint")
            .arg("-p")
            .arg(schema.join("ietf"))
            .arg("-p")
            .arg(schema.join("iana"))
            .args(["-t", "config"])
            .arg(schema.join("ietf/ietf-interfaces.yang"))
            .arg(schema.join("ietf/ietf-ip.yang"))
            .arg(schema.join("iana/iana-if-type.yang"))
            .arg(f)
            .output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => panic!("yanglint refused {}: {}", f.display(), String::from_utf8_lossy(&o.stderr)),
            Err(e) => {
                println!("| yanglint | skipped: {e} |");
                return;
            }
        }
    }
    let t = started.elapsed();
    println!(
        "| yanglint, the same {} final configs, one file per run | {:.0} nodes/s ({:.2} s) |",
        files.len(),
        files.len() as f64 / t.as_secs_f64(),
        t.as_secs_f64()
    );
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let tmp = tempfile::tempdir().unwrap();
    println!("| benchmark | result |\n|---|---|");
    context_build(if full { 20 } else { 2 });
    let sizes: &[(usize, usize)] = if full { &[(100, 50), (1_000, 50)] } else { &[(2, 5)] };
    for &(nodes, interfaces) in sizes {
        let files = run_once(tmp.path(), nodes, interfaces);
        assert_eq!(files.len(), nodes);
        yanglint(&files);
    }
    if !full {
        println!("1 passed, 0 failed");
    }
}

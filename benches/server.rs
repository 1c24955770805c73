//! Server benchmarks, run against the real `choreo` binary on a temporary socket.
//!
//! `cargo bench` (or `make bench`) measures:
//! - cold start to Ready with 1k and 10k input objects (fresh `.choreo/`), and a warm restart;
//! - one `get` round trip on an open connection;
//! - listing 10k objects;
//! - apply throughput (objects validated, written to `in/` and loaded).
//!
//! Figures are medians over repeated runs. Under `cargo test` the same code runs once on tiny
//! sizes as a smoke test, so the benchmarks cannot rot.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use choreo::cli::Client;
use choreo::protocol::{ApplyRequest, Document, GetRequest, Reply, Request};

const BIN: &str = env!("CARGO_BIN_EXE_choreo");

const CRD: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: devices.net.example.org
spec:
  group: net.example.org
  scope: Namespaced
  names: {kind: Device, plural: devices, singular: device}
  versions:
  - name: v1alpha1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          apiVersion: {type: string}
          kind: {type: string}
          metadata: {type: object}
          spec:
            type: object
            required: [role, asn]
            properties:
              role: {type: string, enum: [leaf, spine, border]}
              asn: {type: integer, minimum: 1, maximum: 4294967295}
              hostname: {type: string, pattern: '^[a-z][a-z0-9-]*$'}
              tags:
                type: array
                items: {type: string}
                x-kubernetes-list-type: set
              interfaces:
                type: array
                x-kubernetes-list-type: map
                x-kubernetes-list-map-keys: [name]
                items:
                  type: object
                  required: [name]
                  properties:
                    name: {type: string}
                    mtu: {type: integer, default: 9000}
          status:
            type: object
            x-kubernetes-preserve-unknown-fields: true
"#;

fn device(i: usize) -> String {
    format!(
        "apiVersion: net.example.org/v1alpha1\nkind: Device\nmetadata:\n  name: leaf{i}\n  namespace: default\n  labels:\n    site: site{}\nspec:\n  role: leaf\n  asn: {}\n  hostname: leaf{i}\n  tags: [edge, evpn]\n  interfaces:\n  - name: ethernet-1/1\n  - name: ethernet-1/2\n    mtu: 1500\n",
        i % 10,
        65000 + i
    )
}

fn project(root: &Path, n: usize) -> PathBuf {
    let dir = root.join(format!("p{n}"));
    std::fs::create_dir_all(dir.join("crds")).unwrap();
    std::fs::create_dir_all(dir.join("in")).unwrap();
    std::fs::write(dir.join("crds/devices.yaml"), CRD).unwrap();
    for i in 0..n {
        std::fs::write(dir.join(format!("in/leaf{i}.yaml")), device(i)).unwrap();
    }
    dir
}

struct Server {
    child: Child,
    socket: PathBuf,
}

impl Server {
    /// Starts a server and returns it with the time until its socket answered.
    fn start(dir: &Path, socket: &Path) -> (Server, Duration) {
        let t = Instant::now();
        let mut child = Command::new(BIN)
            .args(["server", "start"])
            .arg(dir)
            .arg("--socket")
            .arg(socket)
            .env("RUST_LOG", "warn")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        loop {
            match lines.next() {
                Some(Ok(l)) if l.contains("listening on") => break,
                Some(_) => {}
                None => panic!("server exited before listening"),
            }
        }
        let elapsed = t.elapsed();
        std::thread::spawn(move || for _ in lines {});
        (Server { child, socket: socket.to_path_buf() }, elapsed)
    }

    fn client(&self) -> Client {
        Client::connect(&self.socket).unwrap()
    }

    fn stop(mut self) {
        let _ = self.client().request(Request::ServerStop, &mut |_| {});
        let _ = self.child.wait();
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (sizes, repeats, round_trips): (&[usize], usize, usize) =
        if full { (&[1_000, 10_000], 5, 2_000) } else { (&[20], 1, 20) };
    let tmp = tempfile::tempdir().unwrap();
    let mut rows: Vec<(String, String)> = Vec::new();

    for &n in sizes {
        let dir = project(tmp.path(), n);
        let socket = tmp.path().join(format!("s{n}.sock"));
        let mut cold = Vec::new();
        for _ in 0..repeats {
            let _ = std::fs::remove_dir_all(dir.join(".choreo"));
            let (s, t) = Server::start(&dir, &socket);
            cold.push(t);
            s.stop();
        }
        rows.push((format!("cold start to Ready, {n} objects"), ms(median(cold))));
        let mut warm = Vec::new();
        for _ in 0..repeats {
            let (s, t) = Server::start(&dir, &socket);
            warm.push(t);
            s.stop();
        }
        rows.push((format!("restart to Ready (state on disk), {n} objects"), ms(median(warm))));

        let (s, _) = Server::start(&dir, &socket);
        let mut c = s.client();
        let get = |name: Option<&str>| {
            Request::Get(GetRequest {
                resource: "devices".into(),
                name: name.map(str::to_string),
                namespace: Some("default".into()),
                show_managed_fields: false,
                ..Default::default()
            })
        };
        let mut lists = Vec::new();
        for _ in 0..repeats.max(3) {
            let t = Instant::now();
            match c.request(get(None), &mut |_| {}).unwrap() {
                Reply::List { items, .. } => assert_eq!(items.len(), n),
                other => panic!("{other:?}"),
            }
            lists.push(t.elapsed());
        }
        rows.push((format!("list {n} objects (one request)"), ms(median(lists))));
        if n == *sizes.last().unwrap() {
            let mut rts = Vec::new();
            for i in 0..round_trips {
                let name = format!("leaf{}", i % n);
                let t = Instant::now();
                c.request(get(Some(&name)), &mut |_| {}).unwrap();
                rts.push(t.elapsed());
            }
            let med = median(rts.clone());
            rts.sort();
            let p99 = rts[rts.len() * 99 / 100];
            rows.push((
                "get round trip (median / p99)".into(),
                format!("{:.1} µs / {:.1} µs", med.as_secs_f64() * 1e6, p99.as_secs_f64() * 1e6),
            ));

            let batch = if full { 5_000 } else { 10 };
            let mut rounds = Vec::new();
            for round in 0..3 {
                let docs: Vec<Document> = (0..batch)
                    .map(|i| {
                        let v: serde_json::Value =
                            serde_yaml_ng::from_str(&device(1_000_000 * (round + 1) + i)).unwrap();
                        Document { source: format!("bench-{i}"), json: v.to_string() }
                    })
                    .collect();
                let t = Instant::now();
                match c
                    .request(
                        Request::Apply(ApplyRequest { documents: docs, force: false, dry_run: false }),
                        &mut |_| {},
                    )
                    .unwrap()
                {
                    Reply::Items(items) => assert!(
                        items.iter().all(|i| i.error.is_none()),
                        "{:?}",
                        items.iter().find(|i| i.error.is_some())
                    ),
                    other => panic!("{other:?}"),
                }
                rounds.push(t.elapsed());
            }
            let el = median(rounds);
            rows.push((
                format!(
                    "apply {batch} new objects into a {n}-object project (validate, write in/, commit; median of 3)"
                ),
                format!("{} ({:.0} objects/s)", ms(el), batch as f64 / el.as_secs_f64()),
            ));
        }
        s.stop();
    }

    println!("| benchmark | median |\n|---|---|");
    for (k, v) in &rows {
        println!("| {k} | {v} |");
    }
    if !full {
        println!("1 passed, 0 failed");
    }
}

//! Identifier allocation benchmarks (`-r`), against the real `choreo` binary.
//!
//! `cargo bench --bench ids` measures (a) one `run once` whose Starlark reconciler creates one
//! dynamic address claim per object from a /8 (10k and 100k objects) plus 4,094 VLAN claims:
//! claims per second and the server's peak RSS; (b) one claim at a time through `apply`, each
//! durable before its reply: p50 / p99 latency into pools already holding 0, 1k and 10k claims, side
//! by side with (c) a PostgreSQL allocator doing the same. Under `cargo test` the same code runs once on a
//! tiny project as a smoke test.

use std::path::Path;
use std::time::Instant;

use choreo::cli::Client;
use choreo::protocol::{ApplyRequest, Document, Reply, Request, RunOnceRequest};

mod common;
mod pg;

const BIN: &str = env!("CARGO_BIN_EXE_choreo");

const CRD: &str = "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: endpoints.net.example.org\nspec:\n  group: net.example.org\n  scope: Namespaced\n  names: {kind: Endpoint, plural: endpoints, singular: endpoint}\n  versions:\n  - name: v1alpha1\n    served: true\n    storage: true\n    schema:\n      openAPIV3Schema:\n        type: object\n        properties:\n          apiVersion: {type: string}\n          kind: {type: string}\n          metadata: {type: object}\n          spec: {type: object, properties: {vlan: {type: boolean}}}\n          status: {type: object, x-kubernetes-preserve-unknown-fields: true}\n";

const RECONCILER: &str = "apiVersion: choreo.kform.dev/v1alpha1\nkind: Reconciler\nmetadata:\n  name: bench.claims\nspec:\n  for: {group: net.example.org, version: v1alpha1, kind: Endpoint, selector: {}}\n  owns:\n  - {group: ipam.be.kuid.dev, version: v1alpha1, kind: IPClaim}\n  - {group: vlan.be.kuid.dev, version: v1alpha1, kind: VLANClaim}\n";

const SCRIPT: &str = "def reconcile(self):\n    meta = self['metadata']\n    if self['spec'].get('vlan', False):\n        client_create({'apiVersion': 'vlan.be.kuid.dev/v1alpha1', 'kind': 'VLANClaim', 'metadata': {'name': meta['name'], 'namespace': meta['namespace']}, 'spec': {'index': 'bench'}})\n    else:\n        client_create({'apiVersion': 'ipam.be.kuid.dev/v1alpha1', 'kind': 'IPClaim', 'metadata': {'name': meta['name'], 'namespace': meta['namespace']}, 'spec': {'index': 'bench'}})\n    return reconcile_result(self, False, 0, '', False)\n";

const POOLS: &str = "apiVersion: ipam.be.kuid.dev/v1alpha1\nkind: IPIndex\nmetadata:\n  name: bench\n  namespace: default\nspec:\n  prefixes:\n  - prefix: 10.0.0.0/8\n---\napiVersion: vlan.be.kuid.dev/v1alpha1\nkind: VLANIndex\nmetadata:\n  name: bench\n  namespace: default\nspec:\n  minID: 1\n  maxID: 4094\n";

fn project(root: &Path, addresses: usize, vlans: usize) -> std::path::PathBuf {
    let dir = root.join(format!("ids{addresses}"));
    for d in ["crds", "in", "reconcilers/claims"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::write(dir.join("crds/endpoints.yaml"), CRD).unwrap();
    std::fs::write(dir.join("reconcilers/claims/config.yaml"), RECONCILER).unwrap();
    std::fs::write(dir.join("reconcilers/claims/claims.star"), SCRIPT).unwrap();
    std::fs::write(dir.join("in/pools.yaml"), POOLS).unwrap();
    let endpoint = |name: String, vlan: bool| {
        format!("apiVersion: net.example.org/v1alpha1\nkind: Endpoint\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  vlan: {vlan}\n---\n")
    };
    // A thousand objects per file.
    let all: Vec<String> = (0..addresses)
        .map(|i| endpoint(format!("a{i}"), false))
        .chain((0..vlans).map(|i| endpoint(format!("v{i}"), true)))
        .collect();
    for (n, chunk) in all.chunks(1000).enumerate() {
        std::fs::write(dir.join(format!("in/endpoints{n}.yaml")), chunk.concat()).unwrap();
    }
    dir
}

fn claims_in_one_run(root: &Path, addresses: usize, vlans: usize) {
    let dir = project(root, addresses, vlans);
    let socket = root.join(format!("r{addresses}.sock"));
    let mut child = common::start_server_with(BIN, &[dir.as_os_str(), "-r".as_ref()], &socket, &[], |_| {});
    let mut c = Client::connect(&socket).unwrap();
    let t = Instant::now();
    let reply =
        c.request(Request::RunOnce(RunOnceRequest { timeout_secs: 3600, changed_only: false }), &mut |_| {}).unwrap();
    let secs = t.elapsed().as_secs_f64();
    match reply {
        Reply::Run(s) => assert!(s.success, "{}: {}", s.task, s.message),
        other => panic!("{other:?}"),
    }
    let claims = addresses + vlans;
    println!(
        "| one `run once` creating {addresses} address claims from a /8 + {vlans} VLAN claims | {secs:.1} s, {:.0} claims/s, peak RSS {:.0} MB server |",
        claims as f64 / secs,
        common::peak_rss_mb(child.id())
    );
    let _ = c.request(Request::ServerStop, &mut |_| {});
    let _ = child.wait();
}

/// The p-th quantile of sorted samples.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)]
}

/// One claim at a time through `apply`, `n` in a row, into a pool already holding `fill`
/// claims (loaded from `in/` at start); returns the p50 in ms.
fn single_claims(root: &Path, fill: usize, n: usize) -> f64 {
    let dir = project(root, 0, 0);
    let prefill: String = (0..fill)
        .map(|i| format!("apiVersion: ipam.be.kuid.dev/v1alpha1\nkind: IPClaim\nmetadata:\n  name: pre{i}\n  namespace: default\nspec:\n  index: bench\n---\n"))
        .collect();
    std::fs::write(dir.join("in/prefill.yaml"), prefill).unwrap();
    let socket = root.join(format!("single{fill}.sock"));
    let mut child = common::start_server_with(BIN, &[dir.as_os_str(), "-r".as_ref()], &socket, &[], |_| {});
    let mut c = Client::connect(&socket).unwrap();
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        let claim = format!(
            "{{\"apiVersion\":\"ipam.be.kuid.dev/v1alpha1\",\"kind\":\"IPClaim\",\"metadata\":{{\"name\":\"c{i}\",\"namespace\":\"default\"}},\"spec\":{{\"index\":\"bench\"}}}}"
        );
        let req = ApplyRequest {
            documents: vec![Document { source: format!("c{i}"), json: claim }],
            force: false,
            dry_run: false,
        };
        let t = Instant::now();
        let reply = c.request(Request::Apply(req), &mut |_| {}).unwrap();
        times.push(t.elapsed().as_secs_f64() * 1e3);
        assert!(matches!(reply, Reply::Items(_)), "{reply:?}");
    }
    times.sort_by(f64::total_cmp);
    println!(
        "| one address claim per `apply` (validated, written to in/, allocated, committed with fsync), {n} in a row, {fill} claimed before | p50 {:.2} ms, p99 {:.2} ms |",
        quantile(&times, 0.5),
        quantile(&times, 0.99)
    );
    let _ = c.request(Request::ServerStop, &mut |_| {});
    let _ = child.wait();
    std::fs::remove_dir_all(&dir).unwrap();
    quantile(&times, 0.5)
}

/// The same single-claim work against the PostgreSQL allocator of `pg`: the lowest free address
/// of a /8 whose lowest `fill` addresses are taken, one committed transaction per claim.
/// Returns the p50 in ms.
fn pg_single_claims(alloc: &mut pg::Allocator, version: &str, fill: usize, n: usize) -> f64 {
    let pool = format!("bench{fill}");
    let first: i64 = 10 << 24;
    alloc.add_pool(&pool, first + 1, first + (1 << 24) - 2, fill as i64).unwrap();
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        let address = alloc.claim(&pool, &format!("c{i}")).unwrap();
        times.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(address, first + 1 + (fill + i) as i64, "claim {i}");
    }
    times.sort_by(f64::total_cmp);
    println!(
        "| the same claims against a PostgreSQL allocator (`SELECT … FOR UPDATE`, lowest free address, one committed transaction each; PostgreSQL {version}), {fill} claimed before | p50 {:.2} ms, p99 {:.2} ms |",
        quantile(&times, 0.5),
        quantile(&times, 0.99)
    );
    quantile(&times, 0.5)
}

/// (b) and (c): single claims into pools of growing fill, choreo and PostgreSQL side by side.
fn single_claims_side_by_side(root: &Path, fills: &[usize], n: usize) {
    let server = match pg::Postgres::start() {
        Ok(server) => server,
        Err(e) => panic!("PostgreSQL: {e}"),
    };
    if server.is_none() {
        println!("| the same claims against a PostgreSQL allocator | skipped: PostgreSQL is not installed |");
    }
    let mut alloc = server.as_ref().map(|s| pg::Allocator::new(s.connect().unwrap()).unwrap());
    for &fill in fills {
        let ours = single_claims(root, fill, n);
        if let (Some(server), Some(alloc)) = (&server, alloc.as_mut()) {
            let theirs = pg_single_claims(alloc, &server.version(), fill, n);
            println!(
                "| single claim with {fill} claimed before, PostgreSQL p50 / choreo p50 | ×{:.1} |",
                theirs / ours
            );
        }
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let tmp = tempfile::tempdir().unwrap();
    println!("| benchmark | result |\n|---|---|");
    if full {
        let big = std::env::var("CHOREO_BENCH_IDS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
        // CHOREO_BENCH_ONLY=run|single measures one part alone (for profiling).
        let only = std::env::var("CHOREO_BENCH_ONLY").unwrap_or_default();
        if only.is_empty() || only == "run" {
            claims_in_one_run(tmp.path(), 10_000, 0);
            claims_in_one_run(tmp.path(), big, 4094);
        }
        if only.is_empty() || only == "single" {
            // CHOREO_BENCH_SINGLE=N claims in a row per pool (default 300).
            let n = std::env::var("CHOREO_BENCH_SINGLE").ok().and_then(|v| v.parse().ok()).unwrap_or(300);
            single_claims_side_by_side(tmp.path(), &[0, 1_000, 10_000], n);
        }
    } else {
        claims_in_one_run(tmp.path(), 10, 5);
        single_claims_side_by_side(tmp.path(), &[0, 3], 5);
        println!("1 passed, 0 failed");
    }
}

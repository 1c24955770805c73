//! Template reconciler benchmarks.
//!
//! `cargo bench --bench templates` measures (a) renders per second of one interface template
//! (an SR Linux-style subinterface with addresses, as upstream's config examples render) with
//! our `gotemplate` against Go's text/template and our `jinjatemplate` against Python's
//! Jinja2, side by side in the same run (`go` and `python3` with `jinja2` must be installed;
//! missing ones are reported as skipped); (b) `run once` on 1k and 10k objects whose template
//! reconciler renders one child each, per engine, with reconcilers in the worker process and in
//! the server's thread: reconciles/s and the server's peak RSS. Under
//! `cargo test` the same code runs once on small inputs as a smoke test.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use choreo::cli::Client;
use choreo::protocol::{Reply, Request, RunOnceRequest};
use choreo::reconcile::template::Renderer;
use choreo::reconcile::ReconcilerConfig;
use serde_json::{json, Value};

mod common;

const BIN: &str = env!("CARGO_BIN_EXE_choreo");

const GO_MAIN: &str = "apiVersion: config.example.org/v1alpha1
kind: Config
metadata:
  name: {{ .metadata.name }}
  namespace: {{ .metadata.namespace }}
  labels:
    target: {{ .spec.node }}
spec:
  priority: 10
  config:
  - path: /
    value:
{{- template \"subinterface\" .spec }}
";

const GO_HELPER: &str = "{{- define \"subinterface\" }}
      interface:
      - name: {{ .name }}
        subinterface:
        - index: {{ .id }}
          type: {{ .type }}
          description: {{ printf \"k8s-%s.%d\" .name .id }}
          admin-state: enable
        {{- if .ipv4 }}
          ipv4:
            admin-state: enable
            {{- if ne 0 (len .ipv4.addresses) }}
            address:
            {{- range $i, $a := .ipv4.addresses }}
            - ip-prefix: {{ $a }}
            {{- end }}
            {{- end }}
        {{- end }}
{{- end }}
";

const JINJA_MAIN: &str = "{%- from 'subinterface.jinja2' import subinterface -%}
apiVersion: config.example.org/v1alpha1
kind: Config
metadata:
  name: {{ metadata.name }}
  namespace: {{ metadata.namespace }}
  labels:
    target: {{ spec.node }}
spec:
  priority: 10
  config:
  - path: /
    value:
      {{ subinterface(spec) }}
";

const JINJA_HELPER: &str = "{%- macro subinterface(spec) -%}
interface:
      - name: {{ spec.name }}
        subinterface:
        - index: {{ spec.id }}
          type: {{ spec.type }}
          description: k8s-{{ spec.name }}.{{ spec.id }}
          admin-state: enable
        {%- if spec.ipv4 %}
          ipv4:
            admin-state: enable
            {%- if spec.ipv4.addresses|length > 0 %}
            address:
            {%- for a in spec.ipv4.addresses %}
            - ip-prefix: {{ a }}
            {%- endfor %}
            {%- endif %}
        {%- endif %}
{%- endmacro %}";

fn object(i: usize) -> Value {
    json!({
        "apiVersion": "net.example.org/v1alpha1",
        "kind": "Device",
        "metadata": {"name": format!("d{i}"), "namespace": "default", "uid": format!("u{i}")},
        "spec": {"node": "node1", "name": "ethernet-1/1", "id": i % 4096, "type": "routed",
                 "ipv4": {"addresses": ["10.0.0.1/24", "10.0.1.1/24"]}}
    })
}

fn files(lang: &str) -> Vec<(&'static str, &'static str)> {
    if lang == "gotemplate" {
        vec![("main.tpl", GO_MAIN), ("subinterface.tpl", GO_HELPER)]
    } else {
        vec![("main.jinja2", JINJA_MAIN), ("subinterface.jinja2", JINJA_HELPER)]
    }
}

fn config(lang: &str) -> Value {
    let code: serde_json::Map<String, Value> = files(lang).into_iter().map(|(n, s)| (n.into(), json!(s))).collect();
    json!({"apiVersion": "choreo.kform.dev/v1alpha1", "kind": "Reconciler", "metadata": {"name": "bench.render"},
        "spec": {"type": lang, "code": code,
            "for": {"group": "net.example.org", "version": "v1alpha1", "kind": "Device", "selector": {}},
            "owns": [{"group": "config.example.org", "version": "v1alpha1", "kind": "Config"}]}})
}

/// Renders per second of our engine, and of the reference (`None`: not installed).
/// Renders of one template, ours and the reference engine's, in alternating rounds (the
/// reference times only its render loop): the medians of the rounds' rates and of their ratios,
/// since either side's speed swings from one moment to the next on a shared machine.
fn renders(lang: &str, n: usize) {
    const ROUNDS: usize = 5;
    let cfg = ReconcilerConfig::from_object(&config(lang)).unwrap();
    let renderer = Renderer::new(&cfg).unwrap();
    let data = object(7);
    renderer.render(&data).unwrap();
    let input = json!({"files": files(lang).into_iter().collect::<std::collections::BTreeMap<_, _>>(), "data": data});
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/reference");
    let label = if lang == "gotemplate" { "Go text/template" } else { "Python Jinja2" };
    let cache = tempfile::tempdir().unwrap();
    let per_round = (n / ROUNDS).max(1);
    let theirs_once = || -> Option<f64> {
        let mut cmd = if lang == "gotemplate" {
            let mut c = Command::new("go");
            c.arg("run").arg(dir.join("gotemplate.go")).arg(per_round.to_string()).env("GO111MODULE", "off");
            c
        } else {
            let mut c = Command::new("python3");
            c.arg(dir.join("jinja.py")).arg(per_round.to_string());
            c
        };
        cmd.env("GOCACHE", cache.path());
        let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().ok()?;
        child.stdin.take()?.write_all(input.to_string().as_bytes()).ok()?;
        let out = child.wait_with_output().ok()?;
        if !out.status.success() {
            return None;
        }
        let secs = String::from_utf8_lossy(&out.stdout).trim().parse::<f64>().ok()?;
        Some(per_round as f64 / secs)
    };
    let (mut ours, mut theirs, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let t = Instant::now();
        for _ in 0..per_round {
            std::hint::black_box(renderer.render(&data).unwrap());
        }
        let rate = per_round as f64 / t.elapsed().as_secs_f64();
        ours.push(rate);
        if let Some(r) = theirs_once() {
            theirs.push(r);
            ratios.push(rate / r);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let ours = median(&mut ours);
    if ratios.is_empty() {
        println!("| one interface template, {n} renders: our `{lang}` / {label} | {ours:.0} / skipped ({label} not installed) |");
        return;
    }
    let (theirs, ratio) = (median(&mut theirs), median(&mut ratios));
    let (lo, hi) = (ratios[0], ratios[ratios.len() - 1]);
    println!(
        "| one interface template, {n} renders in {ROUNDS} alternating rounds: our `{lang}` / {label}, medians | {ours:.0} / {theirs:.0} renders/s (×{ratio:.1}; rounds ×{lo:.1}–×{hi:.1}) |"
    );
}

fn project(dir: &Path, lang: &str, n: usize) {
    for d in ["crds", "in", "reconcilers/render"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    let crd = |plural: &str, kind: &str, group: &str| {
        format!("apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: {plural}.{group}\nspec:\n  group: {group}\n  scope: Namespaced\n  names: {{kind: {kind}, plural: {plural}}}\n  versions:\n  - name: v1alpha1\n    served: true\n    storage: true\n    schema:\n      openAPIV3Schema:\n        type: object\n        properties:\n          apiVersion: {{type: string}}\n          kind: {{type: string}}\n          metadata: {{type: object}}\n          spec: {{type: object, x-kubernetes-preserve-unknown-fields: true}}\n          status: {{type: object, x-kubernetes-preserve-unknown-fields: true}}\n")
    };
    let crds = format!(
        "{}---\n{}",
        crd("devices", "Device", "net.example.org"),
        crd("configs", "Config", "config.example.org")
    );
    std::fs::write(dir.join("crds/crds.yaml"), crds).unwrap();
    let cfg = config(lang);
    let mut reconciler = cfg.clone();
    reconciler["spec"].as_object_mut().unwrap().remove("code");
    std::fs::write(dir.join("reconcilers/render/config.yaml"), serde_json::to_string(&reconciler).unwrap()).unwrap();
    for (name, src) in files(lang) {
        std::fs::write(dir.join("reconcilers/render").join(name), src).unwrap();
    }
    let mut text = String::new();
    for i in 0..n {
        let mut o = object(i);
        o["metadata"].as_object_mut().unwrap().remove("uid");
        text.push_str(&serde_json::to_string(&o).unwrap());
        text.push_str("\n---\n");
        if (i + 1) % 1000 == 0 || i + 1 == n {
            std::fs::write(dir.join(format!("in/d{i}.yaml")), &text).unwrap();
            text.clear();
        }
    }
}

fn run_once(root: &Path, lang: &str, n: usize, isolation: &str) {
    let dir = root.join(format!("{lang}{n}-{isolation}"));
    project(&dir, lang, n);
    let socket = root.join(format!("{lang}{n}{isolation}.sock"));
    let mut child = common::start_server_isolated(BIN, &dir, &socket, isolation);
    let mut c = Client::connect(&socket).unwrap();
    let t = Instant::now();
    let reply =
        c.request(Request::RunOnce(RunOnceRequest { timeout_secs: 3600, changed_only: false }), &mut |_| {}).unwrap();
    let secs = t.elapsed().as_secs_f64();
    let reconciles = match reply {
        Reply::Run(s) => {
            assert!(s.success, "{}: {}", s.task, s.message);
            s.events.iter().filter(|e| e.operation == "START").count()
        }
        other => panic!("{other:?}"),
    };
    println!(
        "| `run once`, {n} objects, `{lang}` reconciler rendering one child each (reconcilers in: {isolation}) | {secs:.2} s, {reconciles} reconciles, {:.0} reconciles/s, peak RSS {:.0} MB server |",
        reconciles as f64 / secs,
        common::peak_rss_mb(child.id())
    );
    let _ = c.request(Request::ServerStop, &mut |_| {});
    let _ = child.wait();
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let tmp = tempfile::tempdir().unwrap();
    println!("| benchmark | result |\n|---|---|");
    let n = if full { 100_000 } else { 100 };
    for lang in ["gotemplate", "jinjatemplate"] {
        renders(lang, n);
    }
    // CHOREO_BENCH_ONLY=renders measures the renders alone.
    if std::env::var("CHOREO_BENCH_ONLY").is_ok_and(|o| o == "renders") {
        return;
    }
    let sizes: &[usize] = if full { &[1_000, 10_000] } else { &[10] };
    for &size in sizes {
        for lang in ["gotemplate", "jinjatemplate"] {
            // The worker process (the default) and the server's thread: the difference is what
            // isolation costs.
            for isolation in ["process", "thread"] {
                run_once(tmp.path(), lang, size, isolation);
            }
        }
    }
    if !full {
        println!("1 passed, 0 failed");
    }
}

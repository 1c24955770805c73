//! Project pieces shared by the reconcile benchmarks: a Device CRD and a DeviceConfig child CRD,
//! and a Starlark reconciler that creates one DeviceConfig per Device.

#![allow(dead_code)]

pub const CRDS: &str = r#"apiVersion: apiextensions.k8s.io/v1
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
            properties:
              asn: {type: integer}
          status:
            type: object
            x-kubernetes-preserve-unknown-fields: true
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: deviceconfigs.net.example.org
spec:
  group: net.example.org
  scope: Namespaced
  names: {kind: DeviceConfig, plural: deviceconfigs, singular: deviceconfig}
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
            properties:
              asn: {type: integer}
              line: {type: string}
"#;

pub const RECONCILER: &str = "apiVersion: choreo.kform.dev/v1alpha1\nkind: Reconciler\nmetadata:\n  name: bench.config\nspec:\n  conditionType: Ready\n  for: {group: net.example.org, version: v1alpha1, kind: Device, selector: {}}\n  owns:\n  - {group: net.example.org, version: v1alpha1, kind: DeviceConfig}\n";

pub const SCRIPT: &str = "def reconcile(self):\n    meta = self['metadata']\n    client_create({'apiVersion': 'net.example.org/v1alpha1', 'kind': 'DeviceConfig',\n        'metadata': {'name': meta['name'], 'namespace': meta['namespace']},\n        'spec': {'asn': self['spec']['asn'], 'line': 'router bgp ' + str(self['spec']['asn'])}})\n    return reconcile_result(self, False, 0, '', False)\n";

/// A project of `n` Devices and the Starlark reconciler creating one DeviceConfig each, in
/// `root/name`: one input file per device, or all in one file.
pub fn device_project(root: &std::path::Path, name: &str, n: usize, one_file: bool) -> std::path::PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(dir.join("crds")).unwrap();
    std::fs::create_dir_all(dir.join("in")).unwrap();
    std::fs::create_dir_all(dir.join("reconcilers/config")).unwrap();
    std::fs::write(dir.join("crds/crds.yaml"), CRDS).unwrap();
    std::fs::write(dir.join("reconcilers/config/config.yaml"), RECONCILER).unwrap();
    std::fs::write(dir.join("reconcilers/config/config.star"), SCRIPT).unwrap();
    let device = |i: usize| {
        format!(
            "apiVersion: net.example.org/v1alpha1\nkind: Device\nmetadata:\n  name: d{i}\n  namespace: default\nspec:\n  asn: {}\n",
            64512 + i
        )
    };
    if one_file {
        let all: String = (0..n).map(|i| device(i) + "---\n").collect();
        std::fs::write(dir.join("in/devices.yaml"), all).unwrap();
    } else {
        for i in 0..n {
            std::fs::write(dir.join(format!("in/d{i}.yaml")), device(i)).unwrap();
        }
    }
    dir
}

/// Starts `choreo server start DIR` on `socket` and returns once it listens; its stderr is
/// drained on a thread so the server never blocks on a full pipe.
pub fn start_server(bin: &str, dir: &std::path::Path, socket: &std::path::Path) -> std::process::Child {
    start_server_with(bin, &[dir.as_os_str()], socket, &[], |_| {})
}

/// Starts `choreo server start DIR --reconciler-isolation ISOLATION` (`process` or `thread`).
pub fn start_server_isolated(
    bin: &str,
    dir: &std::path::Path,
    socket: &std::path::Path,
    isolation: &str,
) -> std::process::Child {
    start_server_with(
        bin,
        &[dir.as_os_str(), "--reconciler-isolation".as_ref(), isolation.as_ref()],
        socket,
        &[],
        |_| {},
    )
}

/// Starts `choreo server start ARGS` with extra environment variables; every stderr line after
/// the listening line goes to `line`.
pub fn start_server_with(
    bin: &str,
    args: &[&std::ffi::OsStr],
    socket: &std::path::Path,
    env: &[(&str, &std::ffi::OsStr)],
    mut line: impl FnMut(String) + Send + 'static,
) -> std::process::Child {
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new(bin)
        .args(["server", "start"])
        .args(args)
        .arg("--socket")
        .arg(socket)
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start the server");
    let mut lines = BufReader::new(child.stderr.take().expect("piped stderr")).lines();
    for l in lines.by_ref() {
        if l.unwrap_or_default().contains("listening on") {
            break;
        }
    }
    std::thread::spawn(move || lines.map_while(Result::ok).for_each(&mut line));
    child
}

/// The peak resident set size of process `pid` in MB (`VmHWM`), 0 when it cannot be read.
pub fn peak_rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

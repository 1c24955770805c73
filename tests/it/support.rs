//! Test support: a project in a temporary directory, a real server on a temporary socket, and
//! the real CLI. Waiting is done on the server's own signals (its "listening" line, a command
//! succeeding) with deadlines, never on fixed sleeps.

// Shared helpers: not every test module uses every one.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_choreo");

/// A project directory copied from `fixtures/` into a fresh temporary directory.
pub struct TestProject {
    pub tmp: tempfile::TempDir,
    pub dir: PathBuf,
    pub socket: PathBuf,
}

impl TestProject {
    pub fn new(fixture: &str) -> TestProject {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().join("project");
        copy_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(fixture), &dir);
        let socket = tmp.path().join("s.sock");
        TestProject { tmp, dir, socket }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    pub fn write(&self, rel: &str, text: &str) {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    pub fn remove(&self, rel: &str) {
        std::fs::remove_file(self.path(rel)).unwrap();
    }

    pub fn start(&self) -> Server {
        Server::start(&self.socket, &[self.dir.to_str().unwrap()])
    }

    /// Runs the CLI against this project's socket.
    pub fn cli(&self, args: &[&str]) -> Run {
        cli(&self.socket, args, None)
    }

    pub fn cli_stdin(&self, args: &[&str], stdin: &str) -> Run {
        cli(&self.socket, args, Some(stdin))
    }

    pub fn in_files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.path("in"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

/// The names of the plan copies (`plan-*`) left in `dir`, the server's state directory.
pub fn plan_copies(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("plan-"))
        .collect()
}

/// Copies a directory tree.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The outcome of one CLI invocation.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn ok(self) -> Run {
        assert_eq!(self.code, 0, "command failed:\nstdout: {}\nstderr: {}", self.stdout, self.stderr);
        self
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

pub fn cli(socket: &Path, args: &[&str], stdin: Option<&str>) -> Run {
    let mut cmd = Command::new(BIN);
    cmd.arg("--socket").arg(socket).args(args).env_remove("CHOREO_SOCKET").env("RUST_LOG", "warn");
    match stdin {
        None => cmd.stdin(Stdio::null()).output().expect("run choreo").into(),
        Some(text) => {
            use std::io::Write;
            let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
            child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
            child.wait_with_output().unwrap().into()
        }
    }
}

/// A running `choreo server start`; killed when dropped.
pub struct Server {
    pub child: Child,
    pub socket: PathBuf,
    pub log: Arc<Mutex<String>>,
}

impl Server {
    /// Starts the server and returns once it printed that it listens.
    pub fn start(socket: &Path, args: &[&str]) -> Server {
        let (server, listening) = Server::spawn(socket, args);
        assert!(listening, "server did not start; log:\n{}", server.log.lock().unwrap());
        server
    }

    /// Starts a server and reports whether it came up (false: it exited first).
    pub fn spawn(socket: &Path, args: &[&str]) -> (Server, bool) {
        Server::spawn_env(socket, args, &[])
    }

    /// Starts the server with extra environment variables (a git HOME, say).
    pub fn start_env(socket: &Path, args: &[&str], env: &[(&str, &Path)]) -> Server {
        let (server, listening) = Server::spawn_env(socket, args, env);
        assert!(listening, "server did not start; log:\n{}", server.log.lock().unwrap());
        server
    }

    pub fn spawn_env(socket: &Path, args: &[&str], env: &[(&str, &Path)]) -> (Server, bool) {
        let mut child = Command::new(BIN)
            .args(["server", "start"])
            .args(args)
            .arg("--socket")
            .arg(socket)
            .envs(env.iter().map(|(k, v)| (*k, *v)))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn server");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if line.contains("choreo server listening on") {
                        let _ = tx.send(());
                    }
                    let mut l = log.lock().unwrap();
                    l.push_str(&line);
                    l.push('\n');
                }
            });
        }
        // The line arrives, or the stream ends (the server exited) and the sender is dropped.
        let listening = rx.recv_timeout(Duration::from_secs(60)).is_ok();
        (Server { child, socket: socket.to_path_buf(), log }, listening)
    }

    pub fn cli(&self, args: &[&str]) -> Run {
        cli(&self.socket, args, None)
    }

    /// Waits for the process to exit and returns its exit code.
    pub fn wait(&mut self) -> i32 {
        self.child.wait().unwrap().code().unwrap_or(-1)
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Polls `f` until it returns Some or the deadline passes.
pub fn wait_for<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {secs} s waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A namespaced CRD of `kind` in `group`/`version` whose spec has the one field `field` of
/// JSON type `ty` (plural: the kind in lower case plus `s`).
pub fn crd(group: &str, version: &str, kind: &str, field: &str, ty: &str) -> String {
    let singular = kind.to_lowercase();
    format!(
        "apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: {singular}s.{group}
spec:
  group: {group}
  scope: Namespaced
  names: {{kind: {kind}, plural: {singular}s, singular: {singular}}}
  versions:
  - name: {version}
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          apiVersion: {{type: string}}
          kind: {{type: string}}
          metadata: {{type: object}}
          spec:
            type: object
            properties:
              {field}: {{type: {ty}}}
"
    )
}

/// The fabric fixture's inventory reconciler: its config and script.
pub const CONFIG: &str = "reconcilers/device-inventory/config.yaml";
pub const SCRIPT: &str = "reconcilers/device-inventory/inventory.star";

/// The fabric project with the inventory reconciler replaced by `script` under `limits`.
pub fn fabric_with(script: &str, limits: &str) -> TestProject {
    let p = TestProject::new("fabric");
    let config = std::fs::read_to_string(p.path(CONFIG)).unwrap();
    p.write(CONFIG, &format!("{config}  limits: {limits}\n"));
    p.write(SCRIPT, script);
    p
}

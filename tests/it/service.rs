//! Running as a service: sd_notify readiness, status, watchdog and stopping against a
//! notification socket the test owns; socket activation with `systemd-socket-activate`; the
//! unit files checked by `systemd-analyze verify`; `server get --wait-ready`.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

const ENDLESS: &str = "def reconcile(self):\n    for i in range(2000000000):\n        for j in range(2000000000):\n            pass\n    return reconcile_result(self, False, 0, '', False)\n";

/// The test's end of `NOTIFY_SOCKET`.
struct Notifications {
    sock: UnixDatagram,
}

impl Notifications {
    fn bind(path: &Path) -> Notifications {
        let sock = UnixDatagram::bind(path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        Notifications { sock }
    }

    /// The next datagram within `within`, if any.
    fn next(&self, within: Duration) -> Option<String> {
        let deadline = Instant::now() + within;
        let mut buf = vec![0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(n) = self.sock.recv(&mut buf) {
                return Some(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
        None
    }

    /// Datagrams until one contains `needle` (returned), failing after `within`.
    fn until(&self, needle: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            if let Some(m) = self.next(Duration::from_millis(200)) {
                if m.contains(needle) {
                    return m;
                }
                seen.push(m);
            }
        }
        panic!("no {needle:?} within {within:?}; got {seen:?}");
    }
}

#[test]
fn ready_comes_once_the_socket_answers_then_status_watchdog_and_stopping() {
    let p = fabric_with(ENDLESS, "{timeoutSeconds: 3600, steps: 1000000000000}");
    let notify_path = p.tmp.path().join("notify.sock");
    let notes = Notifications::bind(&notify_path);
    let mut server = Server::start_env(
        &p.socket,
        &[p.dir.to_str().unwrap()],
        &[("NOTIFY_SOCKET", &notify_path), ("WATCHDOG_USEC", Path::new("400000"))],
    );
    let ready = notes.until("READY=1", Duration::from_secs(30));
    // READY means the socket answers and the project is loaded.
    let status = p.cli(&["server", "get", "-o", "json"]).ok().json();
    assert_eq!(status["status"], "Ready");
    assert!(ready.contains(&format!("STATUS=serving {}", p.dir.display())), "{ready}");
    // The watchdog is pinged at half the interval while the engine loop answers.
    notes.until("WATCHDOG=1", Duration::from_secs(5));
    notes.until("WATCHDOG=1", Duration::from_secs(5));
    // STATUS follows the server: the continuous runner starts.
    p.cli(&["run", "start"]).ok();
    notes.until("runner Running", Duration::from_secs(5));
    p.cli(&["run", "stop"]).ok();

    // A reconcile that never returns holds the engine: no pings while it runs.
    let mut run = Command::new(BIN)
        .args(["run", "once", "--timeout", "3", "--socket"])
        .arg(&p.socket)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the run to start", 30, || {
        (p.cli(&["server", "get", "-o", "json"]).ok().json()["runner"] == "Once").then_some(())
    });
    // Drain what was sent before the engine got stuck, then listen for a full second.
    std::thread::sleep(Duration::from_millis(500));
    while notes.next(Duration::from_millis(10)).is_some() {}
    let started = Instant::now();
    let mut pings = 0;
    while started.elapsed() < Duration::from_secs(1) {
        if notes.next(Duration::from_millis(100)).is_some_and(|m| m.contains("WATCHDOG=1")) {
            pings += 1;
        }
    }
    assert_eq!(pings, 0, "a stuck engine must not be vouched for");
    run.wait().unwrap();
    notes.until("WATCHDOG=1", Duration::from_secs(10));
    assert!(server.log().contains("no watchdog ping"), "{}", server.log());

    server.signal(libc::SIGTERM);
    notes.until("STOPPING=1", Duration::from_secs(10));
    assert_eq!(server.wait(), 0);
}

#[test]
fn socket_activation_serves_the_socket_systemd_passes() {
    if Command::new("systemd-socket-activate").arg("--help").output().is_err() {
        eprintln!("systemd-socket-activate is not installed (Debian package systemd): skipped");
        return;
    }
    let p = TestProject::new("fabric");
    let log = std::fs::File::create(p.tmp.path().join("server.log")).unwrap();
    // systemd-socket-activate listens, and on the first connection runs the server with it.
    let mut activator = Command::new("systemd-socket-activate")
        .arg("-l")
        .arg(&p.socket)
        .arg(BIN)
        .args(["server", "start"])
        .arg(&p.dir)
        .arg("--socket")
        .arg(&p.socket)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    wait_for("the activated socket", 30, || p.socket.exists().then_some(()));
    // The first client starts the server and is answered once it has loaded.
    let status = p.cli(&["server", "get", "-o", "json"]).ok().json();
    assert_eq!(status["status"], "Ready");
    p.cli(&["get", "devices"]).ok();
    p.cli(&["server", "stop"]).ok();
    assert!(activator.wait().unwrap().success());
    let log = std::fs::read_to_string(p.tmp.path().join("server.log")).unwrap();
    assert!(log.contains("socket passed by the service manager"), "{log}");
    assert!(p.socket.exists(), "an activated socket is the service manager's: it stays");
}

#[test]
fn the_unit_files_verify() {
    let dist = Path::new(env!("CARGO_MANIFEST_DIR")).join("dist/systemd");
    if Command::new("systemd-analyze").arg("--version").output().is_err() {
        eprintln!("systemd-analyze is not installed: skipped");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    for unit in ["choreo.service", "choreo.socket"] {
        let text = std::fs::read_to_string(dist.join(unit)).unwrap().replace("/usr/local/bin/choreo", BIN);
        std::fs::write(tmp.path().join(unit), text).unwrap();
    }
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(tmp.path().join("choreo.service"))
        .arg(tmp.path().join("choreo.socket"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "systemd-analyze verify: {stderr}");
}

#[test]
fn wait_ready_answers_ready_failed_or_unreachable() {
    let p = TestProject::new("fabric");
    // Nobody listens: unreachable after the timeout, exit 3.
    let started = Instant::now();
    let none = p.cli(&["server", "get", "--wait-ready", "--timeout", "300ms"]);
    assert_eq!(none.code, 3, "{none:?}");
    assert!(started.elapsed() >= Duration::from_millis(300));
    let _s = p.start();
    let ready = p.cli(&["server", "get", "--wait-ready", "--timeout", "10s"]).ok();
    assert!(ready.stdout.contains("Ready"), "{}", ready.stdout);

    let broken = TestProject::new("fabric");
    broken.write("in/broken.yaml", "apiVersion: net.example.org/v1alpha1\nkind: Device\nmetadata: {name: x\n");
    let _b = broken.start();
    let failed = broken.cli(&["server", "get", "--wait-ready", "--timeout", "10s"]);
    assert_eq!(failed.code, 1, "{failed:?}");
    assert!(
        failed.stderr.contains("the server failed: ") && failed.stderr.contains("broken.yaml"),
        "{}",
        failed.stderr
    );
    let bad = p.cli(&["server", "get", "--wait-ready", "--timeout", "soon"]);
    assert_eq!(bad.code, 2, "{bad:?}");
}

#[test]
fn json_logs_are_one_object_per_line_with_the_run_s_fields() {
    let p = TestProject::new("fabric");
    let mut s = Server::start(&p.socket, &[p.dir.to_str().unwrap(), "--log-format", "json"]);
    p.cli(&["run", "once"]).ok();
    p.cli(&["server", "stop"]).ok();
    assert_eq!(s.wait(), 0);
    let log = s.log();
    let lines: Vec<serde_json::Value> =
        log.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}"))).collect();
    for l in &lines {
        for key in ["timestamp", "level", "target", "message"] {
            assert!(l[key].is_string(), "{key} missing in {l}");
        }
    }
    let run = lines.iter().find(|l| l["mode"] == "once").unwrap_or_else(|| panic!("no run line in {log}"));
    assert_eq!(run["level"], "INFO");
    assert_eq!(run["success"], true);
    assert!(run["reconciles"].as_u64().unwrap() > 0, "{run}");
    assert!(run["run"].as_str().is_some_and(|id| !id.is_empty()), "{run}");
    assert!(lines.iter().any(|l| l["message"].as_str().is_some_and(|m| m.starts_with("choreo server listening on"))));
}

#[test]
fn under_the_journal_text_lines_have_a_priority_and_no_timestamp() {
    let p = TestProject::new("fabric");
    let mut s = Server::start_env(&p.socket, &[p.dir.to_str().unwrap()], &[("JOURNAL_STREAM", Path::new("8:1234"))]);
    p.cli(&["run", "once"]).ok();
    p.cli(&["server", "stop"]).ok();
    assert_eq!(s.wait(), 0);
    let log = s.log();
    let lines: Vec<&str> = log.lines().filter(|l| l.starts_with('<')).collect();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("<6>choreo::engine") && l.contains("run succeeded") && l.contains(" mode=once")),
        "{log}"
    );
    assert!(!log.contains("\u{1b}["), "no colours: {log}");
    assert!(lines.iter().all(|l| !l[3..].starts_with('[') && !l.contains("Z INFO")), "no timestamps: {log}");
}

/// Parses the Prometheus text format: every sample line is `name{labels} value` with a finite
/// number, and every sample belongs to a family announced by `# TYPE`.
fn samples(text: &str) -> Vec<(String, String, f64)> {
    let mut families = std::collections::HashSet::new();
    let mut out = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            families.insert(rest.split(' ').next().unwrap().to_string());
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad line {line:?}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n.to_string(), l.trim_end_matches('}').to_string()),
            None => (series.to_string(), String::new()),
        };
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| families.contains(*f)))
            .unwrap_or(&name)
            .to_string();
        assert!(families.contains(&family), "{name} has no # TYPE");
        out.push((name, labels, value));
    }
    out
}

#[test]
fn metrics_over_the_socket_and_over_http() {
    let p = TestProject::new("fabric");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let _s = Server::start(&p.socket, &[p.dir.to_str().unwrap(), "--metrics-listen", &port.to_string()]);
    p.cli(&["run", "once"]).ok();
    let text = p.cli(&["metrics"]).ok().stdout;
    let all = samples(&text);
    let value =
        |name: &str, labels: &str| all.iter().find(|(n, l, _)| n == name && l.contains(labels)).map(|(_, _, v)| *v);
    assert_eq!(value("choreo_up", ""), Some(1.0));
    assert!(value("choreo_uptime_seconds", "").unwrap() > 0.0);
    assert!(value("choreo_loads_total", "result=\"success\"").unwrap() >= 1.0);
    assert_eq!(value("choreo_runs_total", "mode=\"once\",result=\"success\""), Some(1.0));
    assert!(value("choreo_run_duration_seconds_count", "mode=\"once\"").unwrap() >= 1.0);
    let reconciles = value("choreo_reconcile_total", "result=\"success\"").unwrap();
    assert!(reconciles >= 1.0, "{text}");
    assert!(value("choreo_reconcile_duration_seconds_bucket", "le=\"+Inf\"").unwrap() >= reconciles);
    assert!(value("choreo_store_objects", "").unwrap() > 0.0);
    assert!(value("choreo_store_size_bytes", "").unwrap() > 0.0);
    assert_eq!(value("choreo_snapshots", ""), Some(1.0));
    for family in [
        "choreo_queue_depth",
        "choreo_watch_events_total",
        "choreo_git_fetches_total",
        "choreo_load_duration_seconds_count",
    ] {
        assert!(all.iter().any(|(n, _, _)| n == family), "{family} missing:\n{text}");
    }

    // The same over HTTP, for a scrape.
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.to_lowercase().contains("content-type: text/plain; version=0.0.4"), "{head}");
    assert!(samples(body).iter().any(|(n, l, v)| n == "choreo_runs_total" && l.contains("once") && *v == 1.0));
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.write_all(b"GET /other HTTP/1.0\r\n\r\n").unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).unwrap();
    assert!(response.contains(" 404 "), "{response}");

    // server get shows the summary.
    let status = p.cli(&["server", "get", "-o", "json"]).ok().json();
    assert!(status["metrics"]["uptime_secs"].as_f64().unwrap() > 0.0, "{status}");
    assert!(status["metrics"]["runs"].as_u64().unwrap() >= 1, "{status}");
    let text = p.cli(&["server", "get"]).ok().stdout;
    assert!(text.contains("uptime") && text.contains("reconcilers:"), "{text}");
}

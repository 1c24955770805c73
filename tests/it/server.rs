use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

use crate::support::*;

/// Reads one raw frame (length + body) the way any client would.
fn read_raw_frame(stream: &mut UnixStream) -> Vec<u8> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).expect("frame header");
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    stream.read_exact(&mut body).expect("frame body");
    body
}

fn decode(body: &[u8]) -> choreo::protocol::ServerMessage {
    choreo::protocol::read_frame(&mut [&(body.len() as u32).to_be_bytes()[..], body].concat().as_slice())
        .unwrap()
        .unwrap()
}

fn error_text(msg: choreo::protocol::ServerMessage) -> String {
    match msg {
        choreo::protocol::ServerMessage::Error(e) => e.message,
        other => panic!("expected an error frame, got {other:?}"),
    }
}

#[test]
fn garbage_and_oversized_frames_get_an_error_and_the_server_survives() {
    let p = TestProject::new("network");
    let _s = p.start();
    let mut garbage = UnixStream::connect(&p.socket).unwrap();
    garbage.write_all(&5u32.to_be_bytes()).unwrap();
    garbage.write_all(&[0xff; 5]).unwrap();
    assert!(error_text(decode(&read_raw_frame(&mut garbage))).contains("malformed frame"));

    let mut big = UnixStream::connect(&p.socket).unwrap();
    big.write_all(&(100u32 << 20).to_be_bytes()).unwrap();
    let text = error_text(decode(&read_raw_frame(&mut big)));
    assert!(text.contains("a frame of 100 MiB exceeds the limit of 64 MiB"), "{text}");

    let mut http = UnixStream::connect(&p.socket).unwrap();
    http.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    assert!(error_text(decode(&read_raw_frame(&mut http))).contains("exceeds the limit"));

    p.cli(&["server", "get"]).ok();
}

#[test]
fn wrong_protocol_version_is_refused_clearly() {
    let p = TestProject::new("network");
    let _s = p.start();
    let mut stream = UnixStream::connect(&p.socket).unwrap();
    let hello = choreo::protocol::ClientMessage::Hello { protocol: 999, client_version: "9.9.9".into() };
    choreo::protocol::write_frame(&mut stream, &hello).unwrap();
    let text = error_text(decode(&read_raw_frame(&mut stream)));
    assert!(text.contains("protocol version mismatch") && text.contains("999"), "{text}");
    p.cli(&["server", "get"]).ok();
}

#[test]
fn a_request_before_hello_is_refused() {
    let p = TestProject::new("network");
    let _s = p.start();
    let mut stream = UnixStream::connect(&p.socket).unwrap();
    let req = choreo::protocol::ClientMessage::Request(choreo::protocol::Request::ServerStatus);
    choreo::protocol::write_frame(&mut stream, &req).unwrap();
    assert!(error_text(decode(&read_raw_frame(&mut stream))).contains("hello"));
}

#[test]
fn second_server_on_the_same_socket_is_refused_and_the_first_keeps_serving() {
    let p = TestProject::new("network");
    let _first = p.start();
    let other = tempfile::tempdir().unwrap();
    let (mut second, listening) = Server::spawn(&p.socket, &[other.path().to_str().unwrap()]);
    assert!(!listening);
    assert_eq!(second.wait(), 1);
    assert!(second.log().contains("already running"), "{}", second.log());
    p.cli(&["get", "devices", "leaf1"]).ok();
}

#[test]
fn a_stale_socket_of_a_killed_server_is_replaced() {
    let p = TestProject::new("network");
    let mut first = p.start();
    first.signal(libc::SIGKILL);
    first.wait();
    assert!(p.socket.exists(), "a killed server leaves its socket behind");
    let _second = p.start();
    p.cli(&["get", "devices", "leaf1"]).ok();
}

#[test]
fn server_stop_and_sigterm_shut_down_cleanly() {
    let p = TestProject::new("network");
    let mut s = p.start();
    let run = p.cli(&["server", "stop"]).ok();
    assert!(run.stderr.contains("server stopped"));
    assert_eq!(s.wait(), 0);
    assert!(!p.socket.exists(), "socket removed");

    let mut s = p.start();
    s.signal(libc::SIGTERM);
    assert_eq!(s.wait(), 0);
    assert!(!p.socket.exists(), "socket removed");
    assert_eq!(p.cli(&["server", "get"]).code, 3);
}

#[test]
fn socket_is_private_to_the_user() {
    use std::os::unix::fs::PermissionsExt;
    let p = TestProject::new("network");
    let _s = p.start();
    let mode = std::fs::metadata(&p.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn a_peer_of_another_uid_is_refused() {
    // SAFETY: getuid cannot fail.
    if unsafe { libc::getuid() } != 0 {
        eprintln!("skipped: needs root to run a client under another uid");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    // The binary must be reachable for uid 65534 (a checkout under a private home is not).
    let probe = std::process::Command::new(BIN).arg("--version").uid(65534).gid(65534).output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!("skipped: uid 65534 cannot execute {BIN}");
        return;
    }
    let p = TestProject::new("network");
    let _s = p.start();
    // Open the file-system path so that only the server's own SO_PEERCRED check stands in the
    // way of uid 65534.
    std::fs::set_permissions(p.tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&p.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out: Run = std::process::Command::new(BIN)
        .arg("--socket")
        .arg(&p.socket)
        .args(["server", "get"])
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap()
        .into();
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("uid 65534") && out.stderr.contains("may not use"), "{}", out.stderr);
    p.cli(&["server", "get"]).ok();
}

#[test]
fn acknowledged_writes_survive_kill_9() {
    let p = TestProject::new("network");
    let mut s = p.start();
    let obj = "apiVersion: net.example.org/v1alpha1\nkind: Device\nmetadata:\n  name: leaf9\nspec:\n  role: leaf\n  asn: 65109\n";
    p.cli_stdin(&["apply", "-f", "-"], obj).ok();
    let uid = p.cli(&["get", "devices", "leaf9", "-o", "json"]).ok().json()["metadata"]["uid"].clone();
    s.signal(libc::SIGKILL);
    s.wait();
    let _s = p.start();
    let again = p.cli(&["get", "devices", "leaf9", "-o", "json"]).ok().json();
    assert_eq!(again["metadata"]["uid"], uid, "the same object, not a re-created one");
}

#[test]
fn unreachable_server_is_exit_code_3_naming_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("none.sock");
    let run = cli(&sock, &["get", "devices"], None);
    assert_eq!(run.code, 3);
    assert!(run.stderr.contains(sock.to_str().unwrap()), "{}", run.stderr);
}

#[test]
fn usage_errors_are_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let run = cli(&dir.path().join("s.sock"), &["get"], None);
    assert_eq!(run.code, 2, "{run:?}");
    let run = cli(&dir.path().join("s.sock"), &["frobnicate"], None);
    assert_eq!(run.code, 2, "{run:?}");
}

#[test]
fn dynamic_mode_starts_initializing() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("s.sock");
    let work = dir.path().join("work");
    let _s = Server::start(&sock, &["--work-dir", work.to_str().unwrap()]);
    let status = cli(&sock, &["server", "get", "-o", "json"], None).ok().json();
    assert_eq!(status["mode"], "dynamic");
    assert_eq!(status["status"], "Initializing");
    assert_eq!(status["runner"], "Stopped");
}

#[test]
fn many_clients_at_once() {
    let p = TestProject::new("network");
    let _s = p.start();
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let sock = p.socket.clone();
            std::thread::spawn(move || {
                for _ in 0..5 {
                    let r = cli(&sock, &["get", "devices", "-o", "name"], None);
                    assert_eq!(r.code, 0, "client {i}: {r:?}");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

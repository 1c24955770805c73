//! The service manager: readiness, status lines, the watchdog, stopping, and socket activation
//! (systemd's `sd_notify` protocol and `LISTEN_FDS`, through the `sd-notify` crate).
//!
//! Everything here is inert unless systemd (or a compatible manager, or a test) set
//! `NOTIFY_SOCKET`, `WATCHDOG_USEC` or `LISTEN_FDS`/`LISTEN_PID`. `READY=1` goes once the socket
//! answers and the engine serves its first load (or, in dynamic mode, the remembered context);
//! `STATUS=` follows what the server does; `WATCHDOG=1` is sent at half the watchdog interval,
//! and only after the engine loop answered a ping — an engine stuck in a loop or a deadlock stops
//! the pings and systemd restarts the service.
//!
//! Architecture invariant: talks to the service manager and reads the server status; it never
//! changes server state.

use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::net::UnixListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sd_notify::NotifyState;

use crate::engine::Handle;
use crate::protocol::{Mode, ServerState, ServerStatus};

/// A listening socket passed by the service manager, if it passed one.
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    #[error("socket activation: {0}")]
    Env(std::io::Error),
    #[error(
        "socket activation passed {0} sockets; choreo serves exactly one (ListenStream= once in the .socket unit)"
    )]
    Count(usize),
    #[error("socket activation passed fd {0}, which is not a listening Unix stream socket")]
    NotUnixStream(RawFd),
}

/// The listening socket systemd passed (`LISTEN_FDS`), if any.
pub fn activated_listener() -> Result<Option<UnixListener>, ActivationError> {
    let fds: Vec<RawFd> = sd_notify::listen_fds().map_err(ActivationError::Env)?.collect();
    match fds.as_slice() {
        [] => Ok(None),
        [fd] => {
            if !is_listening_unix_stream(*fd) {
                return Err(ActivationError::NotUnixStream(*fd));
            }
            // SAFETY: the fd was passed to this process for it to own (sd_listen_fds), and is a
            // listening Unix stream socket.
            Ok(Some(unsafe { UnixListener::from_raw_fd(*fd) }))
        }
        many => Err(ActivationError::Count(many.len())),
    }
}

fn is_listening_unix_stream(fd: RawFd) -> bool {
    let int_opt = |opt: libc::c_int| {
        let mut v: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `v` and `len` are valid for writes of the sizes given.
        let rc = unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, opt, (&mut v as *mut libc::c_int).cast(), &mut len) };
        (rc == 0).then_some(v)
    };
    int_opt(libc::SO_DOMAIN) == Some(libc::AF_UNIX)
        && int_opt(libc::SO_TYPE) == Some(libc::SOCK_STREAM)
        && int_opt(libc::SO_ACCEPTCONN) == Some(1)
}

/// Whether a service manager listens for notifications.
pub fn enabled() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some()
}

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        log::warn!("cannot notify the service manager: {e}");
    }
}

/// `STATUS=`: what the server does before the notifier runs (the initial load).
pub fn status(text: &str) {
    send(&[NotifyState::Status(text)]);
}

/// `STOPPING=1`: the server is shutting down.
pub fn stopping(cause: &str) {
    send(&[NotifyState::Stopping, NotifyState::Status(&format!("stopping ({cause})"))]);
}

/// The status line for the service manager (`systemctl status` shows it).
pub fn status_line(s: &ServerStatus) -> String {
    let first = |t: &str| t.lines().next().unwrap_or_default().to_string();
    match s.status {
        ServerState::Failed => format!("failed: {}", first(&s.reason)),
        ServerState::Initializing if s.reason.is_empty() => "loading".into(),
        ServerState::Initializing => first(&s.reason),
        ServerState::Ready => {
            let c = &s.context;
            let what = match (s.mode, &c.url) {
                (Mode::Dynamic, Some(url)) => {
                    let commit = c.commit.as_deref().map(|c| &c[..c.len().min(12)]).unwrap_or("?");
                    let branch = c.branch.as_deref().map(|b| format!(", branch {b}")).unwrap_or_default();
                    format!(
                        "serving {url} {} ref {} at commit {commit}{branch}",
                        c.directory.as_deref().unwrap_or("."),
                        c.reference.as_deref().unwrap_or("?")
                    )
                }
                _ => format!("serving {}", c.path.as_deref().unwrap_or("?")),
            };
            let configs = match &s.sdc {
                Some(sdc) if !sdc.errors.is_empty() => format!("; device configs: {} error(s)", sdc.errors.len()),
                _ => String::new(),
            };
            format!("{what}; runner {}{configs}", s.runner)
        }
    }
}

/// Starts the thread that tells the service manager about readiness, status and liveness;
/// `None` when no manager listens.
pub fn spawn_notifier(handle: Handle, stopping: Arc<AtomicBool>) -> Option<std::thread::JoinHandle<()>> {
    if !enabled() {
        return None;
    }
    let watchdog = sd_notify::watchdog_enabled();
    let spawned =
        std::thread::Builder::new().name("choreo-notify".into()).spawn(move || notifier(handle, stopping, watchdog));
    match spawned {
        Ok(t) => Some(t),
        Err(e) => {
            log::error!("cannot start the service manager notifier: {e}");
            None
        }
    }
}

fn notifier(handle: Handle, stopping: Arc<AtomicBool>, watchdog: Option<Duration>) {
    // Pings at half the interval; status is looked at every second at most.
    let tick = watchdog.map_or(Duration::from_secs(1), |w| (w / 2).min(Duration::from_secs(1)));
    let mut ready = false;
    let mut last_status = String::new();
    let mut last_ping = Instant::now() - Duration::from_secs(3600);
    while !stopping.load(Ordering::SeqCst) {
        if !ready && handle.wait_served(tick) {
            ready = true;
            let status = status_line(&handle.status());
            log::info!("ready: {status}");
            send(&[NotifyState::Ready, NotifyState::Status(&status)]);
            last_status = status;
        } else if ready {
            std::thread::sleep(tick);
        }
        if stopping.load(Ordering::SeqCst) {
            break;
        }
        let status = status_line(&handle.status());
        if status != last_status {
            send(&[NotifyState::Status(&status)]);
            last_status = status;
        }
        if let Some(interval) = watchdog {
            if last_ping.elapsed() >= interval / 2 {
                // Only a live engine loop earns a ping: one that does not answer within the
                // half interval is stuck, and systemd restarts the service.
                if handle.ping(interval / 2) {
                    send(&[NotifyState::Watchdog]);
                    last_ping = Instant::now();
                } else {
                    log::warn!("the engine did not answer within {:?}: no watchdog ping", interval / 2);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Runner, StatusContext};

    #[test]
    fn status_lines_say_what_the_server_does() {
        let mut s = ServerStatus { status: ServerState::Initializing, ..ServerStatus::default() };
        assert_eq!(status_line(&s), "loading");
        s.status = ServerState::Failed;
        s.reason = "in/a.yaml:3:1: bad\nmore".into();
        assert_eq!(status_line(&s), "failed: in/a.yaml:3:1: bad");
        s.status = ServerState::Ready;
        s.mode = Mode::Dynamic;
        s.runner = Runner::Running;
        s.context = StatusContext {
            url: Some("https://example.com/intent.git".into()),
            directory: Some("fabric".into()),
            reference: Some("v2".into()),
            commit: Some("0123456789abcdef0123".into()),
            ..Default::default()
        };
        assert_eq!(
            status_line(&s),
            "serving https://example.com/intent.git fabric ref v2 at commit 0123456789ab; runner Running"
        );
    }
}

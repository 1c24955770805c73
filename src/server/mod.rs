//! The Unix-socket server: socket ownership, connections and graceful shutdown.
//!
//! Threads: `choreo-accept` accepts connections, one `choreo-conn-N` thread per connection reads
//! frames and writes answers, `choreo-signals` turns SIGTERM/SIGINT into a shutdown, and the
//! engine thread (see `engine`) owns all state. The calling thread supervises: it waits for a
//! shutdown cause, then stops accepting, removes the socket and lets the engine flush the store.
//!
//! The socket is guarded by a lock file (`<socket>.lock`, `flock`): a live server is never
//! replaced, a stale socket left by a killed one is. The socket appears only once the engine has
//! loaded the project, with mode 0600 (0660 with `--socket-group`), and peers are checked with
//! `SO_PEERCRED`: only the server's own uid, root, and the configured group may talk to it.
//! Architecture invariant: the server decodes frames and forwards requests; it has no business
//! logic of its own.

mod metrics_http;
mod peer;
pub mod systemd;

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::engine::{self, EngineError, Handle, Mode};
use crate::protocol::{
    human_size, read_frame, write_message, ClientMessage, ErrorKind, ErrorReport, FrameError, ServerMessage,
    MAX_FRAME_LEN, MAX_MESSAGE_LEN, PROTOCOL_VERSION,
};

/// Everything `server start` decided before the server runs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub mode: Mode,
    /// Where the sled database and other server-owned state live.
    pub state_dir: PathBuf,
    pub socket: PathBuf,
    /// A group whose members may connect too (socket mode 0660 instead of 0600).
    pub socket_group: Option<u32>,
    /// How the engine runs (reconciler isolation, `-r`).
    pub engine: engine::Options,
    /// `--metrics-listen`: serve `/metrics` over HTTP on this address.
    pub metrics_listen: Option<std::net::SocketAddr>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("a choreo server is already running on {}", .0.display())]
    AlreadyRunning(PathBuf),
    #[error("socket path {} is too long for a Unix socket ({} bytes, the limit is 107)", .0.display(), .0.as_os_str().len())]
    PathTooLong(PathBuf),
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{} exists and is not a socket; choose another --socket path (or $CHOREO_SOCKET)", .0.display())]
    NotASocket(PathBuf),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("cannot install signal handlers: {0}")]
    Signals(io::Error),
    #[error("cannot start thread {name}: {source}")]
    Thread { name: String, source: io::Error },
    #[error(transparent)]
    Activation(#[from] systemd::ActivationError),
    #[error("--metrics-listen {addr}: {message}")]
    Metrics { addr: std::net::SocketAddr, message: String },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ServerError + '_ {
    move |source| ServerError::Io { path: path.to_path_buf(), source }
}

/// Runs the server until `server stop`, SIGTERM or SIGINT.
pub fn run(config: ServerConfig) -> Result<(), ServerError> {
    // Signals are caught from the very start: a SIGTERM during the initial load must still
    // shut down cleanly rather than kill the process mid-write.
    let (shutdown_tx, shutdown_rx) = crossbeam_channel::bounded::<&'static str>(4);
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT])
        .map_err(ServerError::Signals)?;
    let signals_handle = signals.handle();
    let mut socket = config.socket.clone();
    // Socket activation: systemd owns the socket (path, mode, group) and passes it listening;
    // clients queue on it while the server loads.
    let activated = systemd::activated_listener()?;
    if let Some(path) =
        activated.as_ref().and_then(|l| l.local_addr().ok()).and_then(|a| a.as_pathname().map(Path::to_path_buf))
    {
        if path != socket {
            log::warn!("serving the socket systemd passed, {}, not {}", path.display(), socket.display());
        }
        socket = path;
    }
    let _lock = match activated {
        Some(_) => None,
        None => Some(prepare_socket_path(&socket)?),
    };
    fs::create_dir_all(&config.state_dir).map_err(io_err(&config.state_dir))?;
    // Server state is never project content: keep it out of `git status` and `run commit`.
    let ignore = config.state_dir.join(".gitignore");
    if !ignore.exists() {
        fs::write(&ignore, "# choreo's server state (database, socket, caches)\n*\n").map_err(io_err(&ignore))?;
    }

    if systemd::enabled() {
        systemd::status("loading");
    }
    let (handle, engine_thread, stop_requested) =
        engine::start(config.mode.clone(), config.state_dir.clone(), config.engine.clone())?;
    let is_activated = activated.is_some();
    let listener = match activated.map_or_else(|| bind(&socket, config.socket_group), Ok) {
        Ok(l) => l,
        Err(e) => {
            handle.shutdown();
            let _ = engine_thread.join();
            return Err(e);
        }
    };
    let status = handle.status();
    log::info!(
        "choreo server {} listening on {}{} ({} mode, status {})",
        env!("CARGO_PKG_VERSION"),
        socket.display(),
        if is_activated { " (socket passed by the service manager)" } else { "" },
        status.mode,
        status.status
    );
    crate::logging::announce("choreo::server", &format!("choreo server listening on {}", socket.display()));

    {
        let tx = shutdown_tx.clone();
        spawn("choreo-signals", move || {
            if let Some(sig) = signals.forever().next() {
                let _ = tx.send(if sig == signal_hook::consts::SIGINT { "SIGINT" } else { "SIGTERM" });
            }
        })?;
    }
    let stopping = Arc::new(AtomicBool::new(false));
    // Requests being answered: shutdown waits for their last frame (the reply to `server stop`
    // among them) to be written before the process exits.
    let inflight = Arc::new(AtomicUsize::new(0));
    let listener_fd = listener.as_raw_fd();
    let acceptor = {
        let stopping = stopping.clone();
        let handle = handle.clone();
        let inflight = inflight.clone();
        let peers = peer::Policy { uid: unsafe_getuid(), group: config.socket_group };
        spawn("choreo-accept", move || accept_loop(listener, handle, peers, stopping, inflight))?
    };
    // The socket answers now: readiness, status and the watchdog go to the service manager.
    let notifier = systemd::spawn_notifier(handle.clone(), stopping.clone());
    let metrics = match config.metrics_listen {
        None => None,
        Some(addr) => match metrics_http::start(addr, handle.clone()) {
            Ok(m) => Some(m),
            Err(e) => {
                stopping.store(true, Ordering::SeqCst);
                let _ = UnixStream::connect(&socket);
                handle.shutdown();
                let _ = engine_thread.join();
                return Err(e);
            }
        },
    };

    let cause = crossbeam_channel::select! {
        recv(shutdown_rx) -> sig => sig.unwrap_or("signal"),
        recv(stop_requested) -> _ => "server stop",
    };
    log::info!("shutting down ({cause})");
    stopping.store(true, Ordering::SeqCst);
    if systemd::enabled() {
        systemd::stopping(cause);
    }
    // Wake the acceptor so it sees the flag, then take the socket away from new clients (an
    // activated socket is systemd's: it stays, and queues clients for the next start).
    if UnixStream::connect(&socket).is_err() {
        // Not reachable by path (an abstract or renamed activated socket): wake the acceptor by
        // shutting the listening socket down. It is still open: the acceptor owns it and only
        // ends after seeing the flag.
        // SAFETY: shutdown on an open socket fd; at worst it fails with EBADF/ENOTCONN.
        unsafe {
            libc::shutdown(listener_fd, libc::SHUT_RDWR);
        }
    }
    if !is_activated {
        let _ = fs::remove_file(&socket);
    }
    handle.shutdown();
    if engine_thread.join().is_err() {
        log::error!("the engine thread panicked");
    }
    let _ = acceptor.join();
    if let Some(n) = notifier {
        let _ = n.join();
    }
    if let Some(m) = metrics {
        m.stop();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while inflight.load(Ordering::SeqCst) > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    signals_handle.close();
    crate::logging::announce("choreo::server", "choreo server stopped");
    Ok(())
}

/// Makes `socket` usable for a new server: its directory exists, no other server owns it (the
/// returned lock says so while it is held), and a stale socket left by a killed server is gone.
fn prepare_socket_path(socket: &Path) -> Result<File, ServerError> {
    if socket.as_os_str().len() > 107 {
        return Err(ServerError::PathTooLong(socket.to_path_buf()));
    }
    let dir = socket.parent().unwrap_or(Path::new("/")).to_path_buf();
    if !dir.exists() {
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        // A directory we create for the socket is ours alone.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).map_err(io_err(&dir))?;
    }
    check_socket_path(socket)?;
    let lock = lock_socket(socket)?;
    if socket_exists(socket)? {
        if UnixStream::connect(socket).is_ok() {
            return Err(ServerError::AlreadyRunning(socket.to_path_buf()));
        }
        log::info!("removing stale socket {}", socket.display());
        fs::remove_file(socket).map_err(io_err(socket))?;
    }
    Ok(lock)
}

fn spawn<F: FnOnce() + Send + 'static>(name: &str, f: F) -> Result<std::thread::JoinHandle<()>, ServerError> {
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(f)
        .map_err(|source| ServerError::Thread { name: name.to_string(), source })
}

fn unsafe_getuid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

/// Takes the exclusive lock that says "a server owns this socket path".
fn lock_socket(socket: &Path) -> Result<File, ServerError> {
    let mut name = socket.as_os_str().to_owned();
    name.push(".lock");
    let path = PathBuf::from(name);
    let file = OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(io_err(&path))?;
    // SAFETY: flock on a valid, owned file descriptor.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let err = io::Error::last_os_error();
        return if err.kind() == io::ErrorKind::WouldBlock {
            Err(ServerError::AlreadyRunning(socket.to_path_buf()))
        } else {
            Err(ServerError::Io { path, source: err })
        };
    }
    Ok(file)
}

/// Refuses a socket path that holds anything but a socket: only a socket that does not answer
/// is ever removed (a regular file, a directory or a symlink at the path is the user's).
fn check_socket_path(socket: &Path) -> Result<(), ServerError> {
    socket_exists(socket).map(|_| ())
}

/// Whether a socket exists at `socket`; an error when something else does.
fn socket_exists(socket: &Path) -> Result<bool, ServerError> {
    use std::os::unix::fs::FileTypeExt;
    match fs::symlink_metadata(socket) {
        Ok(meta) if meta.file_type().is_socket() => Ok(true),
        Ok(_) => Err(ServerError::NotASocket(socket.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(ServerError::Io { path: socket.to_path_buf(), source }),
    }
}

/// Binds under a temporary name, sets the mode, then renames into place, so the socket never
/// exists at its public path with looser permissions or before the server can answer.
fn bind(socket: &Path, group: Option<u32>) -> Result<UnixListener, ServerError> {
    let dir = socket.parent().unwrap_or(Path::new("/"));
    let tmp = dir.join(format!(".choreo-{}.sock.tmp", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let listener = UnixListener::bind(&tmp).map_err(io_err(&tmp))?;
    let mode = if group.is_some() { 0o660 } else { 0o600 };
    let result = (|| {
        fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))?;
        if let Some(gid) = group {
            std::os::unix::fs::chown(&tmp, None, Some(gid))?;
        }
        fs::rename(&tmp, socket)
    })();
    if let Err(source) = result {
        let _ = fs::remove_file(&tmp);
        return Err(ServerError::Io { path: socket.to_path_buf(), source });
    }
    Ok(listener)
}

fn accept_loop(
    listener: UnixListener,
    handle: Handle,
    peers: peer::Policy,
    stopping: Arc<AtomicBool>,
    inflight: Arc<AtomicUsize>,
) {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let mut backoff = AcceptBackoff::default();
    for conn in listener.incoming() {
        if stopping.load(Ordering::SeqCst) {
            break;
        }
        let stream = match conn {
            Ok(s) => {
                backoff.reset();
                s
            }
            Err(e) => {
                // Out of file descriptors (or another transient failure): the pending connection
                // stays queued, so retrying at once would spin. Wait, doubling, as Go's net/http.
                let delay = backoff.next();
                if backoff.should_log() {
                    log::warn!("accept failed: {e}; retrying in {delay:?}");
                }
                std::thread::sleep(delay);
                continue;
            }
        };
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        let handle = handle.clone();
        let inflight = inflight.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("choreo-conn-{id}"))
            .spawn(move || serve_connection(stream, handle, peers, &inflight));
        if let Err(e) = spawned {
            log::error!("cannot start a connection thread: {e}");
        }
    }
}

/// The wait after a failed `accept`: 5 ms doubling to 1 s, reset by the next success. Only the
/// first failure of a streak and then one a minute are logged.
#[derive(Debug, Default)]
struct AcceptBackoff {
    delay: Option<std::time::Duration>,
    failures: u64,
}

impl AcceptBackoff {
    const FIRST: std::time::Duration = std::time::Duration::from_millis(5);
    const MAX: std::time::Duration = std::time::Duration::from_secs(1);

    fn next(&mut self) -> std::time::Duration {
        let delay = match self.delay {
            None => Self::FIRST,
            Some(d) => (d * 2).min(Self::MAX),
        };
        self.delay = Some(delay);
        self.failures += 1;
        delay
    }

    fn should_log(&self) -> bool {
        self.failures == 1 || self.failures.is_multiple_of(60)
    }

    fn reset(&mut self) {
        self.delay = None;
        self.failures = 0;
    }
}

/// Sends one message (in parts when it is large, see `protocol::write_message`); false when the
/// connection is no longer usable. A final message too large even for parts is replaced by an
/// error saying so, so the client always gets its answer.
fn send(w: &mut BufWriter<&UnixStream>, msg: &ServerMessage) -> bool {
    match write_message(w, msg) {
        Ok(()) => true,
        Err(FrameError::MessageTooLarge(len)) if msg.is_final() => {
            log::warn!(
                "an answer of {} is over the {} message limit; sent an error instead",
                human_size(len),
                human_size(MAX_MESSAGE_LEN)
            );
            let report = ErrorReport::new(
                ErrorKind::Internal,
                format!(
                    "the answer is {}, over the {} limit of one message",
                    human_size(len),
                    human_size(MAX_MESSAGE_LEN)
                ),
            )
            .with_hint("narrow the request, e.g. to one namespace or one object");
            send(w, &ServerMessage::Error(report))
        }
        Err(e) => {
            log::debug!("client went away: {e}");
            false
        }
    }
}

/// Whether the client closed its end: a peek finds the end of the stream, or the connection
/// failed. Our client sends nothing while a watch or wait streams (and never half-closes), so
/// nothing else is there to find; what a client did send stays queued (`MSG_PEEK`).
fn hung_up(stream: &UnixStream) -> bool {
    use std::os::fd::AsRawFd;
    let mut byte = 0u8;
    // SAFETY: a one-byte buffer we own, on a socket we own; MSG_PEEK leaves any data queued.
    let n = unsafe {
        libc::recv(stream.as_raw_fd(), (&mut byte as *mut u8).cast(), 1, libc::MSG_PEEK | libc::MSG_DONTWAIT)
    };
    match n {
        0 => true,
        n if n > 0 => false,
        _ => !matches!(
            std::io::Error::last_os_error().kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
        ),
    }
}

fn protocol_error(message: impl Into<String>) -> ServerMessage {
    ServerMessage::Error(ErrorReport::new(ErrorKind::Protocol, message))
}

/// Serves one connection: peer check, hello, then requests until the client hangs up.
fn serve_connection(stream: UnixStream, handle: Handle, peers: peer::Policy, inflight: &AtomicUsize) {
    let mut writer = BufWriter::new(&stream);
    let mut reader = BufReader::new(&stream);
    if let Err(report) = peer::check(&stream, peers) {
        log::warn!("refused a connection: {}", report.message);
        // Take the client's hello first: closing a socket with unread data resets the
        // connection, and the client would see "connection reset" instead of the reason.
        let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(2)));
        let _ = read_frame::<_, ClientMessage>(&mut reader);
        send(&mut writer, &ServerMessage::Error(report));
        return;
    }
    let mut greeted = false;
    loop {
        let msg = match read_frame::<_, ClientMessage>(&mut reader) {
            Ok(Some(m)) => m,
            Ok(None) => return,
            Err(FrameError::Io(e)) => {
                log::debug!("connection closed: {e}");
                return;
            }
            // After a bad frame the stream cannot be resynchronised: answer, then hang up. The
            // client reads the answer even while it is still sending the refused frame.
            Err(FrameError::TooLarge(len)) => {
                log::warn!("refused a frame of {} (the limit is {})", human_size(len), human_size(MAX_FRAME_LEN));
                let report = ErrorReport::new(ErrorKind::Protocol, FrameError::TooLarge(len).to_string())
                    .with_hint("send the objects in smaller batches");
                send(&mut writer, &ServerMessage::Error(report));
                return;
            }
            Err(e) => {
                send(&mut writer, &protocol_error(e.to_string()));
                return;
            }
        };
        match msg {
            ClientMessage::Hello { protocol, client_version } => {
                if protocol != PROTOCOL_VERSION {
                    let report = ErrorReport::new(
                        ErrorKind::Protocol,
                        format!("protocol version mismatch: the client (choreo {client_version}) speaks version {protocol}, this server speaks version {PROTOCOL_VERSION}"),
                    )
                    .with_hint("use the choreo binary that matches the running server, or restart the server with this one");
                    send(&mut writer, &ServerMessage::Error(report));
                    return;
                }
                greeted = true;
                let hello = ServerMessage::Hello {
                    protocol: PROTOCOL_VERSION,
                    server_version: env!("CARGO_PKG_VERSION").to_string(),
                };
                if !send(&mut writer, &hello) {
                    return;
                }
            }
            ClientMessage::Request(_) if !greeted => {
                send(&mut writer, &protocol_error("a connection must start with a hello"));
                return;
            }
            ClientMessage::Request(request) => {
                let mut alive = true;
                inflight.fetch_add(1, Ordering::SeqCst);
                handle.serve_until(
                    request,
                    &mut |msg| {
                        alive = send(&mut writer, &msg);
                        alive
                    },
                    &|| hung_up(&stream),
                );
                inflight.fetch_sub(1, Ordering::SeqCst);
                if !alive {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_backoff_doubles_to_a_second_and_resets() {
        let mut b = AcceptBackoff::default();
        let delays: Vec<u128> = (0..10).map(|_| b.next().as_millis()).collect();
        assert_eq!(delays, [5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        assert!(!b.should_log());
        b.reset();
        assert_eq!(b.next().as_millis(), 5);
        assert!(b.should_log());
    }

    #[test]
    fn only_a_socket_counts_as_a_socket() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("notes.txt");
        fs::write(&file, "mine").unwrap();
        assert!(matches!(socket_exists(&file), Err(ServerError::NotASocket(_))));
        assert!(matches!(socket_exists(dir.path()), Err(ServerError::NotASocket(_))));
        let link = dir.path().join("link.sock");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert!(matches!(socket_exists(&link), Err(ServerError::NotASocket(_))));
        assert!(!socket_exists(&dir.path().join("missing.sock")).unwrap());
        let sock = dir.path().join("s.sock");
        let _listener = UnixListener::bind(&sock).unwrap();
        assert!(socket_exists(&sock).unwrap());
        assert_eq!(fs::read_to_string(&file).unwrap(), "mine");
    }
}

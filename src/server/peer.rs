//! Who may talk to the server: the peer check on every new connection (`SO_PEERCRED`).

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

use crate::protocol::{ErrorKind, ErrorReport};

/// The peers a server accepts: its own uid, root, and members of an optional group.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub uid: u32,
    pub group: Option<u32>,
}

/// The credentials of the process at the other end of a Unix socket.
#[derive(Debug, Clone, Copy)]
pub struct Credentials {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
}

pub fn credentials(stream: &UnixStream) -> std::io::Result<Credentials> {
    let mut cred = libc::ucred { pid: 0, uid: 0, gid: 0 };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes of the sizes passed; the fd is open.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(Credentials { pid: cred.pid, uid: cred.uid, gid: cred.gid })
}

/// Accepts or refuses the peer of `stream`.
pub fn check(stream: &UnixStream, policy: Policy) -> Result<(), ErrorReport> {
    let cred = credentials(stream).map_err(|e| {
        ErrorReport::new(ErrorKind::PermissionDenied, format!("cannot read the peer's credentials: {e}"))
    })?;
    if allowed(cred, policy) {
        return Ok(());
    }
    Err(ErrorReport::new(
        ErrorKind::PermissionDenied,
        format!(
            "uid {} (pid {}) may not use this choreo server, which runs as uid {}",
            cred.uid, cred.pid, policy.uid
        ),
    )
    .with_hint("start the server with --socket-group GROUP to let a group's members connect"))
}

fn allowed(cred: Credentials, policy: Policy) -> bool {
    cred.uid == policy.uid || cred.uid == 0 || policy.group.is_some_and(|g| g == cred.gid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy() {
        let p = Policy { uid: 1000, group: None };
        let c = |uid, gid| Credentials { pid: 1, uid, gid };
        assert!(allowed(c(1000, 1000), p));
        assert!(allowed(c(0, 0), p));
        assert!(!allowed(c(1001, 1000), p));
        assert!(allowed(c(1001, 50), Policy { uid: 1000, group: Some(50) }));
    }

    #[test]
    fn reads_own_credentials() {
        let (a, _b) = UnixStream::pair().unwrap();
        let cred = credentials(&a).unwrap();
        // SAFETY: getuid cannot fail.
        assert_eq!(cred.uid, unsafe { libc::getuid() });
        assert_eq!(cred.pid, std::process::id() as i32);
    }
}

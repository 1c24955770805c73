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
#[derive(Debug, Clone)]
pub struct Credentials {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups at the time the peer connected (`SO_PEERGROUPS`).
    pub groups: Vec<u32>,
}

/// `SO_PEERGROUPS` (Linux 4.13), which the libc crate does not export; its value is the same on
/// every architecture choreo builds for except MIPS and SPARC.
#[cfg(not(any(target_arch = "mips", target_arch = "mips64", target_arch = "sparc64")))]
const SO_PEERGROUPS: libc::c_int = 59;

/// The peer's supplementary groups; empty when the kernel cannot tell.
fn peer_groups(stream: &UnixStream) -> Vec<u32> {
    #[cfg(any(target_arch = "mips", target_arch = "mips64", target_arch = "sparc64"))]
    {
        let _ = stream;
        Vec::new()
    }
    #[cfg(not(any(target_arch = "mips", target_arch = "mips64", target_arch = "sparc64")))]
    {
        let mut groups: Vec<libc::gid_t> = vec![0; 64];
        for _ in 0..2 {
            let mut len = (groups.len() * std::mem::size_of::<libc::gid_t>()) as libc::socklen_t;
            // SAFETY: `groups` is valid for writes of `len` bytes; the fd is open.
            let rc = unsafe {
                libc::getsockopt(
                    stream.as_raw_fd(),
                    libc::SOL_SOCKET,
                    SO_PEERGROUPS,
                    groups.as_mut_ptr().cast(),
                    &mut len,
                )
            };
            let n = len as usize / std::mem::size_of::<libc::gid_t>();
            if rc == 0 {
                groups.truncate(n);
                return groups;
            }
            // ERANGE: `len` says how much is needed.
            if std::io::Error::last_os_error().raw_os_error() != Some(libc::ERANGE) || n <= groups.len() {
                break;
            }
            groups = vec![0; n];
        }
        Vec::new()
    }
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
    Ok(Credentials { pid: cred.pid, uid: cred.uid, gid: cred.gid, groups: peer_groups(stream) })
}

/// Accepts or refuses the peer of `stream`.
pub fn check(stream: &UnixStream, policy: Policy) -> Result<(), ErrorReport> {
    let cred = credentials(stream).map_err(|e| {
        ErrorReport::new(ErrorKind::PermissionDenied, format!("cannot read the peer's credentials: {e}"))
    })?;
    if allowed(&cred, policy) {
        return Ok(());
    }
    Err(ErrorReport::new(
        ErrorKind::PermissionDenied,
        format!("uid {} (pid {}) may not use this choreo server, which runs as uid {}", cred.uid, cred.pid, policy.uid),
    )
    .with_hint("start the server with --socket-group GROUP to let a group's members connect"))
}

/// The server's own uid, root, and members of the configured group — by primary or by
/// supplementary group, as file permissions would decide.
fn allowed(cred: &Credentials, policy: Policy) -> bool {
    cred.uid == policy.uid || cred.uid == 0 || policy.group.is_some_and(|g| g == cred.gid || cred.groups.contains(&g))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy() {
        let p = Policy { uid: 1000, group: None };
        let c = |uid, gid| Credentials { pid: 1, uid, gid, groups: vec![] };
        assert!(allowed(&c(1000, 1000), p));
        assert!(allowed(&c(0, 0), p));
        assert!(!allowed(&c(1001, 1000), p));
        assert!(allowed(&c(1001, 50), Policy { uid: 1000, group: Some(50) }));
        // A member through a supplementary group.
        let member = Credentials { pid: 1, uid: 1001, gid: 1001, groups: vec![20, 50] };
        assert!(allowed(&member, Policy { uid: 1000, group: Some(50) }));
        assert!(!allowed(&member, Policy { uid: 1000, group: Some(51) }));
    }

    #[test]
    fn reads_own_credentials() {
        let (a, _b) = UnixStream::pair().unwrap();
        let cred = credentials(&a).unwrap();
        // SAFETY: getuid cannot fail.
        assert_eq!(cred.uid, unsafe { libc::getuid() });
        assert_eq!(cred.pid, std::process::id() as i32);
        // Our own supplementary groups, as the kernel recorded them at connect time.
        let mut ours = vec![0 as libc::gid_t; 256];
        // SAFETY: the buffer holds 256 entries.
        let n = unsafe { libc::getgroups(256, ours.as_mut_ptr()) };
        ours.truncate(n.max(0) as usize);
        let mut got = cred.groups.clone();
        got.sort_unstable();
        ours.sort_unstable();
        assert_eq!(got, ours);
    }
}

//! Who is at the other end of a Unix socket, as the kernel says.
//!
//! [`peer_credentials`] reads `SO_PEERCRED` (the peer's pid and effective uid and gid)
//! and `SO_PEERGROUPS` (its supplementary groups). Both are the credentials the peer had
//! when it called `connect(2)`, recorded by the kernel: the peer cannot lie about them,
//! and a later `setuid` in the peer does not change them.

use std::io;
use std::os::fd::AsRawFd;

use tokio::net::UnixStream;

/// Most supplementary groups read (the kernel's `NGROUPS_MAX`).
const MAX_GROUPS: usize = 65_536;

/// A process's identity for permission checks: effective uid, effective gid and
/// supplementary groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// Effective user id.
    pub uid: u32,
    /// Effective (primary) group id.
    pub gid: u32,
    /// Supplementary group ids.
    pub groups: Vec<u32>,
}

impl Credentials {
    /// Whether the process is in group `gid`, as its primary or a supplementary group.
    pub fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups.contains(&gid)
    }
}

/// The connecting process of a Unix stream: its pid (`None` when the kernel does not
/// say, e.g. it is in another pid namespace) and credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The peer's pid, for logs.
    pub pid: Option<i32>,
    /// What the peer may do is decided from these.
    pub credentials: Credentials,
}

/// The credentials of the process that connected `stream`.
pub fn peer_credentials(stream: &UnixStream) -> io::Result<Peer> {
    let cred = stream.peer_cred()?;
    let groups = peer_groups(stream)?;
    Ok(Peer {
        pid: cred.pid(),
        credentials: Credentials {
            uid: cred.uid(),
            gid: cred.gid(),
            groups,
        },
    })
}

/// `getsockopt(SO_PEERGROUPS)`: the peer's supplementary groups. The kernel answers
/// `ERANGE` with the size it needs when the buffer is too small; the buffer grows once
/// to that size (at most [`MAX_GROUPS`]).
fn peer_groups(stream: &UnixStream) -> io::Result<Vec<u32>> {
    let fd = stream.as_raw_fd();
    let gid_size = std::mem::size_of::<libc::gid_t>();
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    for _ in 0..2 {
        let mut len = libc::socklen_t::try_from(groups.len() * gid_size)
            .map_err(|_| io::Error::other("group buffer too large"))?;
        // SAFETY: `groups` is a live, writable buffer of exactly `len` bytes, and `len`
        // is a valid socklen_t the kernel updates; `fd` is the stream's open descriptor,
        // borrowed for the call.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let needed = usize::try_from(len).unwrap_or(usize::MAX) / gid_size;
        if rc == 0 {
            groups.truncate(needed.min(groups.len()));
            return Ok(groups);
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ERANGE) || needed > MAX_GROUPS {
            return Err(err);
        }
        groups.resize(needed.max(groups.len() + 1), 0);
    }
    Err(io::Error::other(
        "SO_PEERGROUPS: the group list kept growing",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_connection_from_this_process_carries_its_own_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let client = UnixStream::connect(&path).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let peer = peer_credentials(&server).unwrap();
        assert_eq!(peer.pid, Some(i32::try_from(std::process::id()).unwrap()));
        assert_eq!(peer.credentials.uid, nix::unistd::geteuid().as_raw());
        assert_eq!(peer.credentials.gid, nix::unistd::getegid().as_raw());
        let mut mine: Vec<u32> = nix::unistd::getgroups()
            .unwrap()
            .iter()
            .map(|g| g.as_raw())
            .collect();
        let mut theirs = peer.credentials.groups.clone();
        mine.sort_unstable();
        theirs.sort_unstable();
        assert_eq!(theirs, mine);
        drop(client);
    }

    #[test]
    fn group_membership_counts_the_primary_group() {
        let c = Credentials {
            uid: 1000,
            gid: 1000,
            groups: vec![27, 998],
        };
        assert!(c.in_group(1000));
        assert!(c.in_group(998));
        assert!(!c.in_group(0));
    }
}

//! The sync channel between lodge-runc and the container's init: one SOCK_SEQPACKET socketpair,
//! one JSON message per packet. Errors cross with their errno.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Message {
    /// Parent → init: the process is in its cgroups and its ID maps are written.
    Go,
    /// Init → parent: unshared a user namespace; write its ID maps.
    MapRequest,
    MapsDone,
    /// Intermediate process → parent: the real init, forked into the new pid namespace.
    InitPid {
        pid: i32,
    },
    /// Init → parent: mounts are done; run the createRuntime (and prestart) hooks.
    HookPoint,
    HooksDone,
    /// Init → parent, with the seccomp notify fd attached (SCM_RIGHTS): hand it to the listener.
    SeccompFd,
    SeccompFdDone,
    /// Init (in a user namespace) → parent: open this host path, as seen in init's mount
    /// namespace, with the runtime's credentials (init may not traverse to it: Docker's data
    /// directories are root-only); with `idmap`, as a tree ID-mapped through init's own user
    /// namespace.
    OpenPath {
        path: String,
        idmap: Option<crate::rootfs::idmap::Deferred>,
    },
    /// Init → parent: the rootfs, ID-mapped as planned (`rootfs::RootfsIdmap`).
    RootfsTree,
    /// Parent → init: the fd, attached (an ID-mapped tree when `idmapped`); none when a plain
    /// open failed (init then tries the path itself and reports the usual error).
    Opened {
        idmapped: bool,
    },
    /// Init → parent: its mounts are final; make a copy of its mount namespace in which the
    /// kernel locks them (`lock_mounts`).
    LockMounts,
    /// Parent → init, with that namespace's fd attached: join it.
    MountsLocked,
    /// Init is set up and waits for `start`.
    Ready,
    Error {
        msg: String,
        errno: i32,
    },
}

pub struct Channel {
    fd: OwnedFd,
}

impl Channel {
    pub fn pair() -> io::Result<(Channel, Channel)> {
        use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(io::Error::from)?;
        Ok((Channel { fd: a }, Channel { fd: b }))
    }

    pub fn send(&self, msg: &Message) -> io::Result<()> {
        let data = serde_json::to_vec(msg).expect("message serializes");
        // SAFETY: send on our fd with a valid buffer.
        let n = unsafe {
            libc::send(
                self.fd.as_raw_fd(),
                data.as_ptr().cast(),
                data.len(),
                libc::MSG_NOSIGNAL,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Sends `msg` with `fd` attached.
    pub fn send_with_fd(&self, msg: &Message, fd: RawFd) -> io::Result<()> {
        let data = serde_json::to_vec(msg).expect("message serializes");
        crate::sys::send_fds(self.fd.as_raw_fd(), &data, &[fd])
    }

    /// The next message and the fd attached to it, if any.
    pub fn recv_with_fd(&self) -> io::Result<(Option<Message>, Option<OwnedFd>)> {
        let mut buf = vec![0u8; 64 * 1024];
        let (n, fd) = crate::sys::recv_fd(self.fd.as_raw_fd(), &mut buf)?;
        if n == 0 {
            return Ok((None, fd));
        }
        let m = serde_json::from_slice(&buf[..n])
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        Ok((Some(m), fd))
    }

    /// The next message; `None` when the other side closed without a word.
    pub fn recv(&self) -> io::Result<Option<Message>> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // SAFETY: recv into our buffer.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if n == 0 {
                return Ok(None);
            }
            return serde_json::from_slice(&buf[..n as usize])
                .map(Some)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e));
        }
    }

    /// Waits for exactly `want`; an `Error` message or anything else is turned into an error.
    pub fn expect(&self, want: Message) -> io::Result<()> {
        match self.recv()? {
            Some(m) if m == want => Ok(()),
            Some(Message::Error { msg, .. }) => Err(io::Error::other(msg)),
            other => Err(io::Error::other(format!(
                "sync: expected {want:?}, got {other:?}"
            ))),
        }
    }
}

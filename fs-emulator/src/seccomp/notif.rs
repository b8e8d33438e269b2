//! The kernel edge of seccomp user notification: receiving a notification, checking it is still
//! live, answering it (continue, an errno, a value, an injected fd) and reading the tracee's
//! memory. Everything above works with `Notification` and `io::Result`.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct SeccompData {
    nr: i32,
    arch: u32,
    instruction_pointer: u64,
    args: [u64; 6],
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct RawNotif {
    id: u64,
    pid: u32,
    flags: u32,
    data: SeccompData,
}

#[repr(C)]
struct RawResp {
    id: u64,
    val: i64,
    error: i32,
    flags: u32,
}

#[repr(C)]
struct RawAddfd {
    id: u64,
    flags: u32,
    srcfd: u32,
    newfd: u32,
    newfd_flags: u32,
}

// <linux/seccomp.h>: _IOWR('!', 0, struct seccomp_notif) and friends.
const IOCTL_NOTIF_RECV: libc::c_ulong = 0xc050_2100;
const IOCTL_NOTIF_SEND: libc::c_ulong = 0xc018_2101;
const IOCTL_NOTIF_ID_VALID: libc::c_ulong = 0x4008_2102;
const IOCTL_NOTIF_ADDFD: libc::c_ulong = 0x4018_2103;
const USER_NOTIF_FLAG_CONTINUE: u32 = 1;
const ADDFD_FLAG_SEND: u32 = 2;

/// `AUDIT_ARCH_*` of the architecture lodge-fs was built for: notifications of other ABIs
/// (32-bit x86 on x86_64) carry other syscall numbers and are let through untouched.
#[cfg(target_arch = "x86_64")]
pub const NATIVE_ARCH: u32 = 0xc000_003e;
#[cfg(target_arch = "aarch64")]
pub const NATIVE_ARCH: u32 = 0xc000_00b7;

/// One trapped syscall.
#[derive(Debug, Clone, Copy)]
pub struct Notification {
    pub id: u64,
    /// Host pid (thread id) of the caller.
    pub pid: i32,
    pub nr: i64,
    pub arch: u32,
    pub args: [u64; 6],
}

/// A listener fd, as the runtime handed it over.
pub struct Listener(OwnedFd);

fn ioctl<T>(fd: RawFd, req: libc::c_ulong, arg: *mut T) -> io::Result<()> {
    // SAFETY: `arg` points to a live value of the type this request expects.
    if unsafe { libc::ioctl(fd, req as _, arg) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl Listener {
    pub fn new(fd: OwnedFd) -> Listener {
        Listener(fd)
    }

    pub fn raw_fd(&self) -> RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.0)
    }

    /// The next notification; `None` once no process uses the filter any more.
    pub fn recv(&self) -> io::Result<Option<Notification>> {
        loop {
            let mut pfd = libc::pollfd {
                fd: self.0.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            if unsafe { libc::poll(&mut pfd, 1, -1) } < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if pfd.revents & libc::POLLIN == 0 {
                // POLLHUP: every process of the filter is gone.
                return Ok(None);
            }
            let mut raw = RawNotif::default();
            match ioctl(self.0.as_raw_fd(), IOCTL_NOTIF_RECV, &mut raw) {
                Ok(()) => {
                    return Ok(Some(Notification {
                        id: raw.id,
                        pid: raw.pid as i32,
                        nr: i64::from(raw.data.nr),
                        arch: raw.data.arch,
                        args: raw.data.args,
                    }))
                }
                // The caller was killed between poll and receive, or a signal came.
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::EINTR)) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Whether the caller is still blocked in this syscall (its memory and pid still mean what
    /// they meant when the notification came).
    pub fn still_valid(&self, id: u64) -> bool {
        let mut id = id;
        ioctl(self.0.as_raw_fd(), IOCTL_NOTIF_ID_VALID, &mut id).is_ok()
    }

    fn send(&self, id: u64, val: i64, errno: i32, flags: u32) {
        let mut resp = RawResp {
            id,
            val,
            error: -errno,
            flags,
        };
        // ENOENT: the caller died meanwhile; nothing to answer.
        let _ = ioctl(self.0.as_raw_fd(), IOCTL_NOTIF_SEND, &mut resp);
    }

    /// Lets the kernel run the syscall as the caller made it.
    pub fn allow(&self, id: u64) {
        self.send(id, 0, 0, USER_NOTIF_FLAG_CONTINUE)
    }

    pub fn fail(&self, id: u64, errno: i32) {
        self.send(id, 0, errno, 0)
    }

    pub fn succeed(&self, id: u64, val: i64) {
        self.send(id, val, 0, 0)
    }

    /// Installs `fd` in the caller and makes the syscall return its number there.
    pub fn return_fd(&self, id: u64, fd: RawFd, cloexec: bool) -> io::Result<()> {
        let mut add = RawAddfd {
            id,
            flags: ADDFD_FLAG_SEND,
            srcfd: fd as u32,
            newfd: 0,
            newfd_flags: if cloexec { libc::O_CLOEXEC as u32 } else { 0 },
        };
        ioctl(self.0.as_raw_fd(), IOCTL_NOTIF_ADDFD, &mut add)
    }
}

/// Reads `len` bytes of `pid`'s memory at `addr`, one page at a time so that a short buffer
/// ending before an unmapped page still reads.
pub fn read_memory(pid: i32, addr: u64, len: usize) -> io::Result<Vec<u8>> {
    const PAGE: u64 = 4096;
    let mut out = Vec::with_capacity(len);
    let mut at = addr;
    while out.len() < len {
        let chunk = ((PAGE - at % PAGE) as usize).min(len - out.len());
        let mut buf = vec![0u8; chunk];
        let local = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: chunk,
        };
        let remote = libc::iovec {
            iov_base: at as *mut libc::c_void,
            iov_len: chunk,
        };
        // SAFETY: one local buffer of `chunk` bytes; the remote side is checked by the kernel.
        let n = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
        if n <= 0 {
            if out.is_empty() {
                return Err(io::Error::last_os_error());
            }
            break;
        }
        out.extend_from_slice(&buf[..n as usize]);
        at += n as u64;
    }
    Ok(out)
}

/// Reads exactly `len` bytes (a struct the call passes): EFAULT, as the kernel would answer, when
/// part of it is not mapped. The caller controls `addr`; nothing here trusts it.
pub fn read_exact(pid: i32, addr: u64, len: usize) -> io::Result<Vec<u8>> {
    let bytes = read_memory(pid, addr, len)?;
    if bytes.len() < len {
        return Err(io::Error::from_raw_os_error(libc::EFAULT));
    }
    Ok(bytes)
}

/// Reads a NUL-terminated string (a path: at most PATH_MAX bytes) from `pid`'s memory.
pub fn read_string(pid: i32, addr: u64) -> io::Result<Vec<u8>> {
    const PATH_MAX: usize = 4096;
    let mut out = Vec::new();
    let mut at = addr;
    while out.len() < PATH_MAX {
        let chunk = (4096 - (at % 4096) as usize).min(PATH_MAX - out.len());
        let bytes = read_memory(pid, at, chunk)?;
        if let Some(end) = bytes.iter().position(|&b| b == 0) {
            out.extend_from_slice(&bytes[..end]);
            return Ok(out);
        }
        if bytes.is_empty() {
            break;
        }
        at += bytes.len() as u64;
        out.extend_from_slice(&bytes);
    }
    Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG))
}

/// Writes `data` into `pid`'s memory at `addr` (a buffer the caller passed in).
pub fn write_memory(pid: i32, addr: u64, data: &[u8]) -> io::Result<()> {
    let local = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: one local buffer of data.len() bytes; the remote side is checked by the kernel.
    let n = unsafe { libc::process_vm_writev(pid, &local, 1, &remote, 1, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if n as usize != data.len() {
        return Err(io::Error::from_raw_os_error(libc::EFAULT));
    }
    Ok(())
}

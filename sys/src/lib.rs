//! lodge-sys: what lodge-runc and lodge-fs both need from the kernel and libc does not wrap —
//! the fd-based mount API (`mount`), fd passing (`fdpass`) — and the mountinfo format
//! (`mountinfo`), pidfds (`pidfd`), and systemd's manager over D-Bus (`systemd`). Thin on purpose:
//! errno stays an `io::Error`, each caller gives it meaning.

pub mod fdpass;
pub mod mount;
pub mod mountinfo;
pub mod pidfd;
pub mod systemd;

use std::ffi::CString;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// A raw syscall's new fd, or its errno.
pub fn fd_result(r: libc::c_long) -> io::Result<OwnedFd> {
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us.
    Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) })
}

/// A raw syscall's success, or its errno.
pub fn unit_result(r: libc::c_long) -> io::Result<()> {
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A C string of path bytes (EINVAL for an interior NUL, as the kernel would say).
pub fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

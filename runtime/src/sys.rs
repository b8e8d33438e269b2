//! Thin wrappers over the syscalls libc or nix do not cover (clone3, pidfd, mount_setattr,
//! close_range, keyctl) plus fd passing. Errors stay `io::Error` here, at the kernel edge;
//! callers wrap them with context.

use std::ffi::CString;
use std::io;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

pub fn cstr(p: impl AsRef<std::ffi::OsStr>) -> io::Result<CString> {
    CString::new(p.as_ref().as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn check(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Result of a fork-like clone: which side we are on.
pub enum Forked {
    Parent(libc::pid_t),
    Child,
}

#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// Fork-like clone with namespace flags: clone3 first, the legacy clone syscall on ENOSYS.
///
/// Safe only because the runtime is single-threaded: the child continues on a copy of our stack.
pub fn fork_with_flags(flags: u64) -> io::Result<Forked> {
    let mut args = CloneArgs {
        flags,
        exit_signal: libc::SIGCHLD as u64,
        ..Default::default()
    };
    // SAFETY: no CLONE_VM, so this behaves like fork(2); the caller is single-threaded.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &mut args as *mut CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    let ret = if ret < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS) {
        // CLONE_NEWTIME does not fit the legacy flags word (it collides with CSIGNAL).
        if flags & libc::CLONE_NEWTIME as u64 != 0 {
            return Err(io::Error::from_raw_os_error(libc::ENOSYS));
        }
        // SAFETY: as above; a null stack means "copy-on-write the current one".
        unsafe {
            libc::syscall(
                libc::SYS_clone,
                flags | libc::SIGCHLD as u64,
                0usize,
                0usize,
                0usize,
                0usize,
            )
        }
    } else {
        ret
    };
    match check(ret)? {
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(pid as libc::pid_t)),
    }
}

pub use lodge_sys::pidfd::{pidfd_open, pidfd_send_signal, pidfd_wait_exit};

pub use lodge_sys::mount::{
    MountAttr, MOUNT_ATTR_NOATIME, MOUNT_ATTR_NODEV, MOUNT_ATTR_NODIRATIME, MOUNT_ATTR_NOEXEC,
    MOUNT_ATTR_NOSUID, MOUNT_ATTR_RDONLY, MOUNT_ATTR_RELATIME, MOUNT_ATTR_STRICTATIME,
    MOUNT_ATTR__ATIME,
};

/// mount_setattr(2) on `path`, recursively when `recursive`.
pub fn mount_setattr(path: &Path, recursive: bool, attr: &MountAttr) -> io::Result<()> {
    let flags = if recursive { libc::AT_RECURSIVE } else { 0 };
    lodge_sys::mount::mount_setattr(libc::AT_FDCWD, &cstr(path)?, flags as libc::c_uint, attr)
}

/// Marks every fd from `first` up as close-on-exec (close_range with CLOSE_RANGE_CLOEXEC),
/// falling back to a walk of /proc/self/fd.
pub fn cloexec_from(first: RawFd) -> io::Result<()> {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: plain syscall.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            !0u32,
            CLOSE_RANGE_CLOEXEC,
        )
    };
    if r == 0 {
        return Ok(());
    }
    for entry in std::fs::read_dir("/proc/self/fd")? {
        if let Some(fd) = entry?
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<RawFd>().ok())
        {
            if fd >= first {
                // SAFETY: setting a flag on a possibly-stale fd is harmless.
                unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
            }
        }
    }
    Ok(())
}

/// Joins a fresh session keyring named after the container, so containers do not share keys.
pub fn join_session_keyring(name: &str) -> io::Result<()> {
    const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
    let c = cstr(name)?;
    // SAFETY: plain syscall with a valid C string.
    check(unsafe { libc::syscall(libc::SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, c.as_ptr()) })
        .map(drop)
}

pub use lodge_sys::fdpass::{recv_fd, send_fds};

/// The start time of a process in clock ticks since boot (field 22 of /proc/PID/stat), used to
/// tell a container's init from a later process that reused its pid. None if it is gone or a zombie.
pub fn process_start_time(pid: libc::pid_t) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: parse after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

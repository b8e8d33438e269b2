//! Protection against CVE-2019-5736: a container process that reaches the runtime's binary
//! through /proc/PID/exe must not be able to overwrite it on the host.
//!
//! Before any command that runs code inside a container, lodge-runc re-executes itself from a
//! sealed memfd copy. The container can then only ever see that anonymous, immutable copy.
//! A binary already running from a sealed memfd (the second pass) is left alone.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const SEALS: libc::c_int =
    libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;

/// True if /proc/self/exe is a sealed memfd.
pub fn is_sealed() -> bool {
    let Ok(f) = std::fs::File::open("/proc/self/exe") else {
        return false;
    };
    // SAFETY: fcntl on an fd we own.
    let seals = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GET_SEALS) };
    seals >= 0 && seals & SEALS == SEALS
}

/// Re-executes the current binary from a sealed memfd unless it already runs from one.
/// Returns only on error (or when already sealed).
pub fn ensure_sealed() -> io::Result<()> {
    if is_sealed() {
        return Ok(());
    }
    let mut exe = std::fs::File::open("/proc/self/exe")?;
    let name = CString::new("lodge-runc").expect("no NUL");
    const MFD_EXEC: libc::c_uint = 0x10;
    let flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    // SAFETY: memfd_create with a valid name; MFD_EXEC is refused by kernels before 6.3.
    let mut fd = unsafe { libc::memfd_create(name.as_ptr(), flags | MFD_EXEC) };
    if fd < 0 {
        fd = unsafe { libc::memfd_create(name.as_ptr(), flags) };
    }
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just created and is ours.
    let memfd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut dst = std::fs::File::from(memfd);
    io::copy(&mut exe, &mut dst)?;
    // SAFETY: fcntl on our fd.
    if unsafe { libc::fcntl(dst.as_raw_fd(), libc::F_ADD_SEALS, SEALS) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let args: Vec<CString> = std::env::args_os()
        .map(|a| {
            CString::new(std::os::unix::ffi::OsStrExt::as_bytes(a.as_os_str())).unwrap_or_default()
        })
        .collect();
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    extern "C" {
        static environ: *const *const libc::c_char;
    }
    // SAFETY: argv is NULL-terminated and outlives the call; environ is the live environment.
    unsafe { libc::fexecve(dst.as_raw_fd(), argv.as_ptr(), environ) };
    Err(io::Error::last_os_error())
}

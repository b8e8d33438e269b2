//! Protection against CVE-2019-5736: a container process that reaches the runtime's binary
//! through /proc/PID/exe must not be able to overwrite it on the host.
//!
//! Before any command that runs code inside a container, lodge-runc re-executes itself from a
//! copy the container cannot write to, so init (a fork of it) never exposes the host binary:
//! - first choice, no copy: the binary seen through a private, detached, read-only bind mount
//!   (open_tree + mount_setattr, then execveat): writes through it fail with EROFS;
//! - fallback: a sealed memfd copy (F_SEAL_WRITE and friends).
//!
//! A binary already running from a read-only mount or a sealed memfd is left alone.
//! `LODGE_SELF_PROTECT=memfd` in the environment forces the fallback (used by the tests).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const SEALS: libc::c_int =
    libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;

/// True if /proc/self/exe can not be written: a sealed memfd or a file on a read-only mount.
pub fn is_protected() -> bool {
    let Ok(f) = std::fs::File::open("/proc/self/exe") else {
        return false;
    };
    // SAFETY: fcntl on an fd we own.
    let seals = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GET_SEALS) };
    if seals >= 0 && seals & SEALS == SEALS {
        return true;
    }
    nix::sys::statvfs::fstatvfs(&f)
        .is_ok_and(|s| s.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY))
}

/// Re-executes the current binary from a protected copy unless it already runs from one.
/// Returns only on error (or when already protected).
pub fn ensure_protected() -> io::Result<()> {
    if is_protected() {
        return Ok(());
    }
    // LODGE_SELF_PROTECT=memfd forces the fallback, so it stays tested.
    let force_memfd = std::env::var_os("LODGE_SELF_PROTECT").is_some_and(|v| v == "memfd");
    let view = if force_memfd {
        Err(io::Error::other("memfd forced"))
    } else {
        readonly_view()
    };
    let exe = match view {
        Ok(fd) => fd,
        Err(e) => {
            tracing::debug!(error = %e, "no read-only bind mount of the binary; using a sealed memfd copy");
            sealed_copy()?
        }
    };
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
    let empty = CString::default();
    // SAFETY: argv is NULL-terminated and outlives the call; environ is the live environment.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            exe.as_raw_fd(),
            empty.as_ptr(),
            argv.as_ptr(),
            environ,
            libc::AT_EMPTY_PATH,
        )
    };
    Err(io::Error::last_os_error())
}

/// An fd of the binary inside a detached, read-only clone of its mount.
fn readonly_view() -> io::Result<OwnedFd> {
    use lodge_sys::mount::{MountAttr, MOUNT_ATTR_RDONLY, OPEN_TREE_CLONE};
    let tree = lodge_sys::mount::open_tree(libc::AT_FDCWD, c"/proc/self/exe", OPEN_TREE_CLONE)?;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY,
        ..MountAttr::default()
    };
    lodge_sys::mount::mount_setattr(
        tree.as_raw_fd(),
        c"",
        libc::AT_EMPTY_PATH as libc::c_uint,
        &attr,
    )?;
    Ok(tree)
}

fn sealed_copy() -> io::Result<OwnedFd> {
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
    let mut dst = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    io::copy(&mut exe, &mut dst)?;
    // SAFETY: fcntl on our fd.
    if unsafe { libc::fcntl(dst.as_raw_fd(), libc::F_ADD_SEALS, SEALS) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(dst.into())
}

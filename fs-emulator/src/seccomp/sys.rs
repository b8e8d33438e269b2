//! Thin wrappers over the fd-based mount API, openat2, statx and setns: the only place here
//! that speaks errno.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;

use lodge_sys::{cstring, fd_result, unit_result};

pub fn open(path: &Path, flags: i32) -> io::Result<OwnedFd> {
    let c = cstring(path.as_os_str().as_encoded_bytes())?;
    // SAFETY: a valid C string.
    fd_result(unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC) } as libc::c_long)
}

pub fn openat(dir: RawFd, path: &[u8], flags: i32) -> io::Result<OwnedFd> {
    let c = cstring(path)?;
    // SAFETY: a valid C string.
    fd_result(unsafe { libc::openat(dir, c.as_ptr(), flags | libc::O_CLOEXEC) } as libc::c_long)
}

#[repr(C)]
pub struct OpenHow {
    pub flags: u64,
    pub mode: u64,
    pub resolve: u64,
}

pub const RESOLVE_NO_XDEV: u64 = 0x01;

pub fn openat2(dir: RawFd, path: &[u8], how: &OpenHow) -> io::Result<OwnedFd> {
    let c = cstring(path)?;
    // SAFETY: a valid C string and open_how of the size given.
    fd_result(unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir,
            c.as_ptr(),
            how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    })
}

/// (mount id, whether the fd is the root of its mount).
pub fn mount_of(fd: RawFd) -> io::Result<(u64, bool)> {
    // SAFETY: statx into a zeroed struct, on an fd with AT_EMPTY_PATH.
    unsafe {
        let mut st: libc::statx = std::mem::zeroed();
        let r = libc::statx(
            fd,
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_MNT_ID,
            &mut st,
        );
        unit_result(r as libc::c_long)?;
        let root = st.stx_attributes & libc::STATX_ATTR_MOUNT_ROOT as u64 != 0;
        Ok((st.stx_mnt_id, root))
    }
}

pub fn setns(fd: RawFd, kind: i32) -> io::Result<()> {
    // SAFETY: setns on an open namespace fd.
    unit_result(unsafe { libc::setns(fd, kind) } as libc::c_long)
}

pub fn unshare(flags: i32) -> io::Result<()> {
    // SAFETY: unshare of this thread's attributes.
    unit_result(unsafe { libc::unshare(flags) } as libc::c_long)
}

pub fn fchdir(fd: RawFd) -> io::Result<()> {
    // SAFETY: fchdir to an open directory fd.
    unit_result(unsafe { libc::fchdir(fd) } as libc::c_long)
}

pub fn chroot_here() -> io::Result<()> {
    // SAFETY: a static C string.
    unit_result(unsafe { libc::chroot(c".".as_ptr()) } as libc::c_long)
}

pub use lodge_sys::mount::{
    FsContext, MOUNT_ATTR_NOATIME, MOUNT_ATTR_NODEV, MOUNT_ATTR_NOEXEC, MOUNT_ATTR_NOSUID,
    MOUNT_ATTR_RDONLY, MOUNT_ATTR_STRICTATIME,
};
use lodge_sys::mount::{
    MountAttr, MOVE_MOUNT_F_EMPTY_PATH, MOVE_MOUNT_T_EMPTY_PATH, OPEN_TREE_CLONE,
};

/// A detached copy of the mount at `path` (relative to `dir`; "" for `dir` itself).
pub fn clone_mount(dir: RawFd, path: &[u8]) -> io::Result<OwnedFd> {
    let flags = OPEN_TREE_CLONE
        | if path.is_empty() {
            libc::AT_EMPTY_PATH as u32
        } else {
            0
        };
    lodge_sys::mount::open_tree(dir, &cstring(path)?, flags)
}

/// Mounts the (detached) tree `tree` on `dir`/`path` ("" for `dir` itself).
pub fn move_mount(tree: RawFd, dir: RawFd, path: &[u8]) -> io::Result<()> {
    let flags = MOVE_MOUNT_F_EMPTY_PATH
        | if path.is_empty() {
            MOVE_MOUNT_T_EMPTY_PATH
        } else {
            0
        };
    lodge_sys::mount::move_mount(tree, c"", dir, &cstring(path)?, flags)
}

/// Sets `attrs` on the mount `fd` (and everything below it).
pub fn set_attrs(fd: RawFd, attrs: u64) -> io::Result<()> {
    let attr = MountAttr {
        attr_set: attrs,
        ..MountAttr::default()
    };
    let flags = (libc::AT_EMPTY_PATH | libc::AT_RECURSIVE) as libc::c_uint;
    lodge_sys::mount::mount_setattr(fd, c"", flags, &attr)
}

/// An ioctl that returns a new fd (NS_GET_USERNS, NS_GET_PARENT).
pub fn ioctl_fd(fd: &OwnedFd, req: libc::c_ulong) -> io::Result<OwnedFd> {
    // SAFETY: the request takes no argument and returns an fd.
    fd_result(unsafe { libc::ioctl(fd.as_raw_fd(), req as _) } as libc::c_long)
}

pub fn setxattr(path: &str, name: &[u8], value: &[u8], flags: i32) -> io::Result<()> {
    let (p, n) = (cstring(path.as_bytes())?, cstring(name)?);
    // SAFETY: valid C strings and a buffer of value.len() bytes.
    unit_result(unsafe {
        libc::setxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    } as libc::c_long)
}

/// The value (or, with `size` 0, a buffer as long as the value, for the length).
pub fn getxattr(path: &str, name: &[u8], size: usize) -> io::Result<Vec<u8>> {
    let (p, n) = (cstring(path.as_bytes())?, cstring(name)?);
    let mut buf = vec![0u8; size];
    // SAFETY: valid C strings and a buffer of `size` bytes.
    let r = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), size) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.resize(r as usize, 0);
    Ok(buf)
}

pub fn removexattr(path: &str, name: &[u8]) -> io::Result<()> {
    let (p, n) = (cstring(path.as_bytes())?, cstring(name)?);
    // SAFETY: valid C strings.
    unit_result(unsafe { libc::removexattr(p.as_ptr(), n.as_ptr()) } as libc::c_long)
}

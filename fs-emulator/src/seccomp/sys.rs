//! Thin wrappers over the fd-based mount API, openat2, statx and setns: the only place here
//! that speaks errno.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

fn cstr(p: &[u8]) -> io::Result<CString> {
    CString::new(p).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn fd_or_err(r: libc::c_long) -> io::Result<OwnedFd> {
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us.
    Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) })
}

fn ok_or_err(r: libc::c_long) -> io::Result<()> {
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

pub fn open(path: &Path, flags: i32) -> io::Result<OwnedFd> {
    let c = cstr(path.as_os_str().as_encoded_bytes())?;
    // SAFETY: a valid C string.
    fd_or_err(unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC) } as libc::c_long)
}

pub fn openat(dir: RawFd, path: &[u8], flags: i32) -> io::Result<OwnedFd> {
    let c = cstr(path)?;
    // SAFETY: a valid C string.
    fd_or_err(unsafe { libc::openat(dir, c.as_ptr(), flags | libc::O_CLOEXEC) } as libc::c_long)
}

#[repr(C)]
pub struct OpenHow {
    pub flags: u64,
    pub mode: u64,
    pub resolve: u64,
}

pub const RESOLVE_NO_XDEV: u64 = 0x01;

pub fn openat2(dir: RawFd, path: &[u8], how: &OpenHow) -> io::Result<OwnedFd> {
    let c = cstr(path)?;
    // SAFETY: a valid C string and open_how of the size given.
    fd_or_err(unsafe {
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
        ok_or_err(r as libc::c_long)?;
        let root = st.stx_attributes & libc::STATX_ATTR_MOUNT_ROOT as u64 != 0;
        Ok((st.stx_mnt_id, root))
    }
}

pub fn setns(fd: RawFd, kind: i32) -> io::Result<()> {
    // SAFETY: setns on an open namespace fd.
    ok_or_err(unsafe { libc::setns(fd, kind) } as libc::c_long)
}

pub fn unshare(flags: i32) -> io::Result<()> {
    // SAFETY: unshare of this thread's attributes.
    ok_or_err(unsafe { libc::unshare(flags) } as libc::c_long)
}

pub fn fchdir(fd: RawFd) -> io::Result<()> {
    // SAFETY: fchdir to an open directory fd.
    ok_or_err(unsafe { libc::fchdir(fd) } as libc::c_long)
}

pub fn chroot_here() -> io::Result<()> {
    // SAFETY: a static C string.
    ok_or_err(unsafe { libc::chroot(c".".as_ptr()) } as libc::c_long)
}

pub fn fsopen(fstype: &str) -> io::Result<OwnedFd> {
    let c = cstr(fstype.as_bytes())?;
    const FSOPEN_CLOEXEC: u32 = 1;
    // SAFETY: a valid C string.
    fd_or_err(unsafe { libc::syscall(libc::SYS_fsopen, c.as_ptr(), FSOPEN_CLOEXEC) })
}

const FSCONFIG_SET_FLAG: u32 = 0;
const FSCONFIG_SET_STRING: u32 = 1;
const FSCONFIG_SET_FD: u32 = 5;
const FSCONFIG_CMD_CREATE: u32 = 6;

/// One `key[=value]` option of a new filesystem.
pub fn fsconfig_option(fs: &OwnedFd, key: &str, value: Option<&str>) -> io::Result<()> {
    let k = cstr(key.as_bytes())?;
    let r = match value {
        Some(v) => {
            let v = cstr(v.as_bytes())?;
            // SAFETY: valid C strings.
            unsafe {
                libc::syscall(
                    libc::SYS_fsconfig,
                    fs.as_raw_fd(),
                    FSCONFIG_SET_STRING,
                    k.as_ptr(),
                    v.as_ptr(),
                    0,
                )
            }
        }
        // SAFETY: a valid C string.
        None => unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                fs.as_raw_fd(),
                FSCONFIG_SET_FLAG,
                k.as_ptr(),
                std::ptr::null::<u8>(),
                0,
            )
        },
    };
    ok_or_err(r)
}

pub fn fsconfig_fd(fs: &OwnedFd, key: &str, fd: RawFd) -> io::Result<()> {
    let k = cstr(key.as_bytes())?;
    // SAFETY: a valid C string and an open fd.
    ok_or_err(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_SET_FD,
            k.as_ptr(),
            std::ptr::null::<u8>(),
            fd,
        )
    })
}

pub fn fsmount(fs: &OwnedFd, attrs: u64) -> io::Result<OwnedFd> {
    // SAFETY: plain integers.
    ok_or_err(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<u8>(),
            std::ptr::null::<u8>(),
            0,
        )
    })?;
    const FSMOUNT_CLOEXEC: u32 = 1;
    // SAFETY: plain integers.
    fd_or_err(unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, attrs) })
}

pub const OPEN_TREE_CLONE: u32 = 1;
pub const MOUNT_ATTR_RDONLY: u64 = 0x1;
pub const MOUNT_ATTR_NOSUID: u64 = 0x2;
pub const MOUNT_ATTR_NODEV: u64 = 0x4;
pub const MOUNT_ATTR_NOEXEC: u64 = 0x8;
pub const MOUNT_ATTR_NOATIME: u64 = 0x10;
pub const MOUNT_ATTR_STRICTATIME: u64 = 0x20;

/// A detached copy of the mount at `path` (relative to `dir`; "" for `dir` itself).
pub fn clone_mount(dir: RawFd, path: &[u8]) -> io::Result<OwnedFd> {
    let c = cstr(path)?;
    let flags = OPEN_TREE_CLONE
        | libc::O_CLOEXEC as u32
        | if path.is_empty() {
            libc::AT_EMPTY_PATH as u32
        } else {
            0
        };
    // SAFETY: a valid C string.
    fd_or_err(unsafe { libc::syscall(libc::SYS_open_tree, dir, c.as_ptr(), flags) })
}

/// Mounts the (detached) tree `tree` on `dir`/`path` ("" for `dir` itself).
pub fn move_mount(tree: RawFd, dir: RawFd, path: &[u8]) -> io::Result<()> {
    const F_EMPTY_PATH: u32 = 0x4;
    const T_EMPTY_PATH: u32 = 0x40;
    let c = cstr(path)?;
    let flags = F_EMPTY_PATH | if path.is_empty() { T_EMPTY_PATH } else { 0 };
    // SAFETY: valid C strings.
    ok_or_err(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree,
            c"".as_ptr(),
            dir,
            c.as_ptr(),
            flags,
        )
    })
}

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// Sets `attrs` on the mount `fd` (and everything below it).
pub fn set_attrs(fd: RawFd, attrs: u64) -> io::Result<()> {
    let a = MountAttr {
        attr_set: attrs,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: a mount_attr of the size given.
    ok_or_err(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd,
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_RECURSIVE,
            &a as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    })
}

/// An ioctl that returns a new fd (NS_GET_USERNS, NS_GET_PARENT).
pub fn ioctl_fd(fd: &OwnedFd, req: libc::c_ulong) -> io::Result<OwnedFd> {
    // SAFETY: the request takes no argument and returns an fd.
    fd_or_err(unsafe { libc::ioctl(fd.as_raw_fd(), req as _) } as libc::c_long)
}

pub fn setxattr(path: &str, name: &[u8], value: &[u8], flags: i32) -> io::Result<()> {
    let (p, n) = (cstr(path.as_bytes())?, cstr(name)?);
    // SAFETY: valid C strings and a buffer of value.len() bytes.
    ok_or_err(unsafe {
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
    let (p, n) = (cstr(path.as_bytes())?, cstr(name)?);
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
    let (p, n) = (cstr(path.as_bytes())?, cstr(name)?);
    // SAFETY: valid C strings.
    ok_or_err(unsafe { libc::removexattr(p.as_ptr(), n.as_ptr()) } as libc::c_long)
}

/// Reconfigures the filesystem of mount `fd` (a remount without MS_BIND): `options` (checked by
/// newfs::caller_options), and read-only with `read_only`.
pub fn reconfigure(
    fd: RawFd,
    options: &[(String, Option<String>)],
    read_only: bool,
) -> io::Result<()> {
    const FSPICK_CLOEXEC: u32 = 1;
    const FSPICK_EMPTY_PATH: u32 = 8;
    const FSCONFIG_CMD_RECONFIGURE: u32 = 7;
    // SAFETY: a static C string and plain integers.
    let fs = fd_or_err(unsafe {
        libc::syscall(
            libc::SYS_fspick,
            fd,
            c"".as_ptr(),
            FSPICK_CLOEXEC | FSPICK_EMPTY_PATH,
        )
    })?;
    for (k, v) in options {
        fsconfig_option(&fs, k, v.as_deref())?;
    }
    if read_only {
        fsconfig_option(&fs, "ro", None)?;
    }
    // SAFETY: plain integers.
    ok_or_err(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_CMD_RECONFIGURE,
            std::ptr::null::<u8>(),
            std::ptr::null::<u8>(),
            0,
        )
    })
}

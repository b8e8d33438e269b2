//! The fd-based mount API: open_tree, move_mount, mount_setattr, and filesystem contexts
//! (fsopen, fspick, fsconfig, fsmount). Every fd is opened close-on-exec.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

pub const OPEN_TREE_CLONE: libc::c_uint = 1;
pub const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
pub const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;

pub const MOUNT_ATTR_RDONLY: u64 = 0x1;
pub const MOUNT_ATTR_NOSUID: u64 = 0x2;
pub const MOUNT_ATTR_NODEV: u64 = 0x4;
pub const MOUNT_ATTR_NOEXEC: u64 = 0x8;
pub const MOUNT_ATTR__ATIME: u64 = 0x70;
pub const MOUNT_ATTR_RELATIME: u64 = 0x0;
pub const MOUNT_ATTR_NOATIME: u64 = 0x10;
pub const MOUNT_ATTR_STRICTATIME: u64 = 0x20;
pub const MOUNT_ATTR_NODIRATIME: u64 = 0x80;
pub const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// `struct mount_attr`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct MountAttr {
    pub attr_set: u64,
    pub attr_clr: u64,
    pub propagation: u64,
    pub userns_fd: u64,
}

use crate::{cstring, fd_result, unit_result};

/// open_tree(2): with OPEN_TREE_CLONE in `flags`, a detached copy of the mount at `dir`/`path`.
pub fn open_tree(dir: RawFd, path: &CStr, flags: libc::c_uint) -> io::Result<OwnedFd> {
    let flags = flags | libc::O_CLOEXEC as libc::c_uint;
    // SAFETY: a valid C string; the result is a new fd.
    fd_result(unsafe { libc::syscall(libc::SYS_open_tree, dir, path.as_ptr(), flags) })
}

/// move_mount(2).
pub fn move_mount(
    from: RawFd,
    from_path: &CStr,
    to: RawFd,
    to_path: &CStr,
    flags: libc::c_uint,
) -> io::Result<()> {
    // SAFETY: valid C strings.
    unit_result(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            from,
            from_path.as_ptr(),
            to,
            to_path.as_ptr(),
            flags,
        )
    })
}

/// mount_setattr(2) on `dir`/`path` (`flags`: AT_EMPTY_PATH, AT_RECURSIVE, …).
pub fn mount_setattr(
    dir: RawFd,
    path: &CStr,
    flags: libc::c_uint,
    attr: &MountAttr,
) -> io::Result<()> {
    // SAFETY: a valid C string and a mount_attr of the size given.
    unit_result(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            dir,
            path.as_ptr(),
            flags,
            attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    })
}

/// mount(2), the legacy call.
pub fn mount(
    source: Option<&CStr>,
    target: &CStr,
    fstype: Option<&CStr>,
    flags: libc::c_ulong,
    data: Option<&CStr>,
) -> io::Result<()> {
    let ptr = |s: Option<&CStr>| s.map_or(std::ptr::null(), CStr::as_ptr);
    // SAFETY: valid C strings or NULL.
    unit_result(unsafe {
        libc::mount(
            ptr(source),
            target.as_ptr(),
            ptr(fstype),
            flags,
            ptr(data).cast(),
        )
    } as libc::c_long)
}

/// umount2(2).
pub fn umount(target: &CStr, flags: libc::c_int) -> io::Result<()> {
    // SAFETY: a valid C string.
    unit_result(unsafe { libc::umount2(target.as_ptr(), flags) } as libc::c_long)
}

const FSCONFIG_SET_FLAG: libc::c_uint = 0;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_SET_FD: libc::c_uint = 5;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSCONFIG_CMD_RECONFIGURE: libc::c_uint = 7;

/// A filesystem context: a new filesystem (fsopen) or an existing mount's (fspick).
pub struct FsContext(OwnedFd);

impl FsContext {
    /// fsopen(2) of filesystem type `fstype`.
    pub fn open(fstype: &str) -> io::Result<FsContext> {
        const FSOPEN_CLOEXEC: libc::c_uint = 1;
        let name = cstring(fstype.as_bytes())?;
        // SAFETY: a valid C string; the result is a new fd.
        fd_result(unsafe { libc::syscall(libc::SYS_fsopen, name.as_ptr(), FSOPEN_CLOEXEC) })
            .map(FsContext)
    }

    /// A context fsopen(2) returned elsewhere (in a child that shares the fd table).
    pub fn from_fd(fd: OwnedFd) -> FsContext {
        FsContext(fd)
    }

    /// fspick(2) of the filesystem of mount `mount`, to reconfigure it.
    pub fn pick(mount: RawFd) -> io::Result<FsContext> {
        const FSPICK_CLOEXEC: libc::c_uint = 1;
        const FSPICK_EMPTY_PATH: libc::c_uint = 8;
        // SAFETY: a static C string and plain integers.
        fd_result(unsafe {
            libc::syscall(
                libc::SYS_fspick,
                mount,
                c"".as_ptr(),
                FSPICK_CLOEXEC | FSPICK_EMPTY_PATH,
            )
        })
        .map(FsContext)
    }

    fn config(
        &self,
        cmd: libc::c_uint,
        key: Option<&CStr>,
        value: *const libc::c_char,
        aux: libc::c_int,
    ) -> io::Result<()> {
        let key = key.map_or(std::ptr::null(), CStr::as_ptr);
        // SAFETY: fsconfig on our context; key and value are valid C strings or NULL.
        unit_result(unsafe {
            libc::syscall(libc::SYS_fsconfig, self.0.as_raw_fd(), cmd, key, value, aux)
        })
    }

    /// `key`, or `key=value`.
    pub fn set(&self, key: &str, value: Option<&str>) -> io::Result<()> {
        let k = cstring(key.as_bytes())?;
        match value {
            Some(v) => {
                let v = cstring(v.as_bytes())?;
                self.config(FSCONFIG_SET_STRING, Some(&k), v.as_ptr(), 0)
            }
            None => self.config(FSCONFIG_SET_FLAG, Some(&k), std::ptr::null(), 0),
        }
    }

    /// `key` given as an fd (procfs's `pidns`, …).
    pub fn set_fd(&self, key: &str, value: RawFd) -> io::Result<()> {
        let k = cstring(key.as_bytes())?;
        self.config(FSCONFIG_SET_FD, Some(&k), std::ptr::null(), value)
    }

    /// Applies the settings to the picked filesystem.
    pub fn reconfigure(&self) -> io::Result<()> {
        self.config(FSCONFIG_CMD_RECONFIGURE, None, std::ptr::null(), 0)
    }

    /// Creates the filesystem and a detached mount of it with `attrs` (MOUNT_ATTR_*).
    pub fn mount(&self, attrs: u64) -> io::Result<OwnedFd> {
        const FSMOUNT_CLOEXEC: libc::c_uint = 1;
        self.config(FSCONFIG_CMD_CREATE, None, std::ptr::null(), 0)?;
        // SAFETY: plain integers on our created context; the result is a new fd.
        fd_result(unsafe {
            libc::syscall(
                libc::SYS_fsmount,
                self.0.as_raw_fd(),
                FSMOUNT_CLOEXEC,
                attrs,
            )
        })
    }

    /// The kernel's message about the last failure, when it left one in the context's log.
    pub fn message(&self) -> Option<String> {
        let mut buf = [0u8; 512];
        // SAFETY: reading the context's message log into our buffer.
        let n = unsafe { libc::read(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        (n > 0).then(|| {
            String::from_utf8_lossy(&buf[..n as usize])
                .trim()
                .to_string()
        })
    }
}

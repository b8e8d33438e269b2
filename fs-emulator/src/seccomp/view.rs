//! Standing where the caller stands: its mount namespace, its root and its working directory,
//! so that a path it passed resolves to what it meant (absolute symlinks and ".." stay inside
//! its root). Only agent threads do this: each has its own fs_struct (`HostView::prepare_thread`)
//! and returns to the host's namespace when the `Entered` guard drops.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use super::sys;

/// The host's namespaces the agent returns to.
pub struct HostView {
    mnt: OwnedFd,
    net: OwnedFd,
    pid: OwnedFd,
}

impl HostView {
    pub fn open() -> io::Result<HostView> {
        Ok(HostView {
            mnt: sys::open(Path::new("/proc/thread-self/ns/mnt"), libc::O_RDONLY)?,
            net: sys::open(Path::new("/proc/thread-self/ns/net"), libc::O_RDONLY)?,
            pid: sys::open(Path::new("/proc/thread-self/ns/pid"), libc::O_RDONLY)?,
        })
    }

    /// Gives the calling thread its own root and working directory: setns(CLONE_NEWNS) is
    /// refused to a thread that shares them with others.
    pub fn prepare_thread() -> io::Result<()> {
        sys::unshare(libc::CLONE_FS)
    }

    /// Enters `tid`'s mount namespace, root and working directory.
    pub fn enter(&self, tid: i32) -> io::Result<Entered<'_>> {
        let ns = sys::open(Path::new(&format!("/proc/{tid}/ns/mnt")), libc::O_RDONLY)?;
        let dir = |what| {
            sys::open(
                Path::new(&format!("/proc/{tid}/{what}")),
                libc::O_PATH | libc::O_DIRECTORY,
            )
        };
        let (root, cwd) = (dir("root")?, dir("cwd")?);
        sys::setns(ns.as_raw_fd(), libc::CLONE_NEWNS)?;
        let entered = Entered { host: self };
        sys::fchdir(root.as_raw_fd())?;
        sys::chroot_here()?;
        sys::fchdir(cwd.as_raw_fd())?;
        Ok(entered)
    }

    /// Enters the mount namespace `ns` (at its root) until the guard drops.
    pub fn enter_ns(&self, ns: &OwnedFd) -> io::Result<Entered<'_>> {
        sys::setns(ns.as_raw_fd(), libc::CLONE_NEWNS)?;
        Ok(Entered { host: self })
    }

    /// Children of this thread are born in lodge-fs's own pid namespace again (after a setns
    /// into a container's).
    pub fn restore_pid_for_children(&self) -> io::Result<()> {
        sys::setns(self.pid.as_raw_fd(), libc::CLONE_NEWPID)
    }

    /// Runs `f` in `tid`'s network namespace (sysfs shows the network namespace of whoever
    /// mounts it).
    pub fn in_netns<T>(&self, tid: i32, f: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
        let ns = sys::open(Path::new(&format!("/proc/{tid}/ns/net")), libc::O_RDONLY)?;
        sys::setns(ns.as_raw_fd(), libc::CLONE_NEWNET)?;
        let out = f();
        sys::setns(self.net.as_raw_fd(), libc::CLONE_NEWNET)
            .expect("returning to the host's network namespace");
        out
    }
}

/// In a caller's view until dropped.
pub struct Entered<'a> {
    host: &'a HostView,
}

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        // setns also resets root and cwd to the namespace's root. Failing here would leave the
        // thread in a container: better to stop.
        sys::setns(self.host.mnt.as_raw_fd(), libc::CLONE_NEWNS)
            .expect("returning to the host's mount namespace");
    }
}

/// A path argument of a trapped call, made ready (on the host side) to be opened in the
/// caller's view.
pub enum PathArg {
    /// `/proc/self/…` and `/proc/thread-self/…`: "self" would be the agent, so these are
    /// opened through the host's /proc/<tid> right away.
    Opened(OwnedFd),
    /// Relative to the caller's directory fd (None: its cwd or root).
    At(Option<OwnedFd>, Vec<u8>),
}

impl PathArg {
    /// `dirfd` and `path` as the caller passed them.
    pub fn prepare(tid: i32, dirfd: i32, path: Vec<u8>, follow: bool) -> io::Result<PathArg> {
        for prefix in [&b"/proc/self"[..], b"/proc/thread-self"] {
            if let Some(rest) = path.strip_prefix(prefix) {
                if rest.is_empty() || rest[0] == b'/' {
                    let mut host = format!("/proc/{tid}").into_bytes();
                    host.extend_from_slice(rest);
                    let flags = libc::O_PATH | if follow { 0 } else { libc::O_NOFOLLOW };
                    return Ok(PathArg::Opened(sys::openat(libc::AT_FDCWD, &host, flags)?));
                }
            }
        }
        let dir = if path.first() != Some(&b'/') && dirfd != libc::AT_FDCWD {
            Some(sys::open(
                Path::new(&format!("/proc/{tid}/fd/{dirfd}")),
                libc::O_PATH,
            )?)
        } else {
            None
        };
        Ok(PathArg::At(dir, path))
    }

    /// The caller's `dirfd` itself (AT_EMPTY_PATH and friends).
    pub fn dirfd(tid: i32, dirfd: i32) -> io::Result<PathArg> {
        let path = if dirfd == libc::AT_FDCWD {
            format!("/proc/{tid}/cwd")
        } else {
            format!("/proc/{tid}/fd/{dirfd}")
        };
        Ok(PathArg::Opened(sys::open(Path::new(&path), libc::O_PATH)?))
    }

    /// An O_PATH fd of what the path names; call it in the caller's view.
    pub fn open(&self, follow: bool) -> io::Result<OwnedFd> {
        match self {
            PathArg::Opened(fd) => fd.try_clone(),
            PathArg::At(dir, path) => sys::openat(
                dir.as_ref().map_or(libc::AT_FDCWD, |d| d.as_raw_fd()),
                path,
                libc::O_PATH | if follow { 0 } else { libc::O_NOFOLLOW },
            ),
        }
    }

    pub fn dir_fd(&self) -> i32 {
        match self {
            PathArg::At(Some(d), _) => d.as_raw_fd(),
            _ => libc::AT_FDCWD,
        }
    }
}

/// Whether `tid` holds CAP_SYS_ADMIN over its mount namespace, as mount(2) requires: the
/// capability in its effective set, and its user namespace owning that mount namespace or
/// being an ancestor of the owner.
pub fn may_mount(tid: i32) -> bool {
    has_cap(tid, CAP_SYS_ADMIN) && owns_mount_ns(tid).unwrap_or(false)
}

pub const CAP_DAC_OVERRIDE: u32 = 1;
pub const CAP_SYS_ADMIN: u32 = 21;

/// Whether `cap` is in `tid`'s effective set (relative to its own user namespace).
pub fn has_cap(tid: i32, cap: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{tid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << cap) != 0)
}

/// Whether host uid `uid` is mapped in `tid`'s user namespace.
pub fn uid_mapped(tid: i32, uid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{tid}/uid_map"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<u64> = l
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            (f.len() == 3).then(|| (f[1], f[2]))
        })
        .any(|(outside, count)| (outside..outside + count).contains(&u64::from(uid)))
}

fn ns_id(fd: &OwnedFd) -> io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::File::from(fd.try_clone()?).metadata()?;
    Ok((md.dev(), md.ino()))
}

fn owns_mount_ns(tid: i32) -> io::Result<bool> {
    const NS_GET_USERNS: libc::c_ulong = 0xb701;
    const NS_GET_PARENT: libc::c_ulong = 0xb702;
    let own = ns_id(&sys::open(
        Path::new(&format!("/proc/{tid}/ns/user")),
        libc::O_RDONLY,
    )?)?;
    let mnt = sys::open(Path::new(&format!("/proc/{tid}/ns/mnt")), libc::O_RDONLY)?;
    let mut ns = sys::ioctl_fd(&mnt, NS_GET_USERNS)?;
    loop {
        if ns_id(&ns)? == own {
            return Ok(true);
        }
        match sys::ioctl_fd(&ns, NS_GET_PARENT) {
            Ok(parent) => ns = parent,
            // EPERM: past the initial namespace.
            Err(_) => return Ok(false),
        }
    }
}

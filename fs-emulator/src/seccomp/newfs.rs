//! A new procfs or sysfs for a caller inside a container, built as a detached tree on the host
//! side with the fd-based mount API and then attached where the caller asked:
//!
//! 1. the filesystem, for the caller's pid namespace (procfs's `pidns` option) or network
//!    namespace (sysfs is mounted from inside it), with the caller's options;
//! 2. on top, what covers the container's own /proc or /sys (`policy::Overlay`): its masks and
//!    lodge-fs files cloned from the container, its read-only paths as read-only binds of the new
//!    filesystem's own directories;
//! 3. the caller's read-only flag on the whole tree, then one move_mount into its namespace.
//!
//! Nothing is mounted anywhere in between, so no helper mount shows up in any mount table.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use super::policy::Overlay;
use super::sys;
use super::view::{HostView, PathArg};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Proc,
    Sys,
}

impl Kind {
    pub fn from_fstype(fstype: &[u8]) -> Option<Kind> {
        match fstype {
            b"proc" => Some(Kind::Proc),
            b"sysfs" => Some(Kind::Sys),
            _ => None,
        }
    }

    fn dir(self) -> &'static str {
        match self {
            Kind::Proc => "/proc",
            Kind::Sys => "/sys",
        }
    }
}

/// mount(2) flags → MOUNT_ATTR_* (the ones a procfs or sysfs mount can carry).
pub fn attrs_of(flags: u64) -> u64 {
    let mut a = 0;
    for (flag, attr) in [
        (libc::MS_RDONLY, sys::MOUNT_ATTR_RDONLY),
        (libc::MS_NOSUID, sys::MOUNT_ATTR_NOSUID),
        (libc::MS_NODEV, sys::MOUNT_ATTR_NODEV),
        (libc::MS_NOEXEC, sys::MOUNT_ATTR_NOEXEC),
        (libc::MS_NOATIME, sys::MOUNT_ATTR_NOATIME),
        (libc::MS_STRICTATIME, sys::MOUNT_ATTR_STRICTATIME),
    ] {
        if flags & flag != 0 {
            a |= attr;
        }
    }
    a
}

/// mount(2)'s data for a procfs or sysfs, as fsconfig options: only what a caller may choose
/// for its own view — procfs's `hidepid`, `gid` and `subset`, and the generic superblock flags
/// the legacy string may carry. Anything else is EINVAL; procfs's `pidns` in particular, which
/// lodge-fs would resolve with its own privileges (it could name the host's pid namespace).
pub fn caller_options(kind: Kind, data: &[u8]) -> io::Result<Vec<(String, Option<String>)>> {
    const GENERIC: &[&str] = &[
        "ro",
        "rw",
        "sync",
        "async",
        "dirsync",
        "lazytime",
        "nolazytime",
        "silent",
    ];
    let data = String::from_utf8_lossy(data);
    data.split(',')
        .filter(|o| !o.is_empty())
        .map(|opt| {
            let (k, v) = match opt.split_once('=') {
                Some((k, v)) => (k, Some(v.to_string())),
                None => (opt, None),
            };
            let allowed = GENERIC.contains(&k)
                || kind == Kind::Proc && matches!(k, "hidepid" | "gid" | "subset");
            if allowed {
                Ok((k.to_string(), v))
            } else {
                Err(io::Error::from_raw_os_error(libc::EINVAL))
            }
        })
        .collect()
}

pub struct Request<'a> {
    pub kind: Kind,
    /// The caller (host tid) and the container's init (host pid).
    pub tid: i32,
    pub init_pid: i32,
    /// mount(2)'s data: "hidepid=2,gid=5,…".
    pub options: &'a [u8],
    pub attrs: u64,
    pub overlays: &'a [Overlay],
}

fn strip_root(p: &Path) -> &[u8] {
    p.strip_prefix("/")
        .unwrap_or(p)
        .as_os_str()
        .as_encoded_bytes()
}

/// Whether this kernel has what `build` uses: procfs's `pidns` option (6.16's fd form) and
/// mounting onto a detached tree (6.15). Probed once, with lodge-fs's own pid namespace.
pub fn supported() -> bool {
    let probe = || -> io::Result<()> {
        let fs = sys::FsContext::open("proc")?;
        let pidns = sys::open(Path::new("/proc/self/ns/pid"), libc::O_RDONLY)?;
        fs.set_fd("pidns", pidns.as_raw_fd())?;
        let tree = fs.mount(0)?;
        let sub = sys::clone_mount(tree.as_raw_fd(), b"sys")?;
        sys::move_mount(sub.as_raw_fd(), tree.as_raw_fd(), b"sys")
    };
    probe().is_ok()
}

/// Builds the tree (detached).
pub fn build(host: &HostView, req: &Request) -> io::Result<OwnedFd> {
    let make = || -> io::Result<OwnedFd> {
        let fs = match req.kind {
            Kind::Proc => {
                let fs = sys::FsContext::open("proc")?;
                let pidns = sys::open(
                    Path::new(&format!("/proc/{}/ns/pid", req.tid)),
                    libc::O_RDONLY,
                )?;
                fs.set_fd("pidns", pidns.as_raw_fd())?;
                fs
            }
            Kind::Sys => sys::FsContext::open("sysfs")?,
        };
        for (k, v) in caller_options(req.kind, req.options)? {
            fs.set(&k, v.as_deref())?;
        }
        fs.mount(req.attrs & !sys::MOUNT_ATTR_RDONLY)
    };
    let tree = match req.kind {
        Kind::Proc => make()?,
        Kind::Sys => host.in_netns(req.tid, make)?,
    };
    // The container's own masks and files, cloned where its init sees them.
    let clones: Vec<(OwnedFd, &Path)> = {
        let _in_container = host.enter(req.init_pid)?;
        req.overlays
            .iter()
            .filter_map(|o| match o {
                Overlay::Clone(rel) => {
                    let at = Path::new(req.kind.dir()).join(strip_root_path(rel));
                    sys::clone_mount(libc::AT_FDCWD, at.as_os_str().as_encoded_bytes())
                        .ok()
                        .map(|fd| (fd, rel.as_path()))
                }
                Overlay::ReadOnlySelf(_) => None,
            })
            .collect()
    };
    let mut clones = clones.into_iter();
    for o in req.overlays {
        let (fd, rel) = match o {
            Overlay::ReadOnlySelf(rel) => {
                let Ok(fd) = sys::clone_mount(tree.as_raw_fd(), strip_root(rel)) else {
                    continue; // not in this filesystem
                };
                sys::set_attrs(fd.as_raw_fd(), sys::MOUNT_ATTR_RDONLY)?;
                (fd, rel.as_path())
            }
            Overlay::Clone(rel) => match clones.as_slice().first() {
                Some((_, r)) if *r == rel.as_path() => {
                    let (fd, rel) = clones.next().expect("peeked");
                    (fd, rel)
                }
                _ => continue,
            },
        };
        match sys::move_mount(fd.as_raw_fd(), tree.as_raw_fd(), strip_root(rel)) {
            // The path is not there in this one (another network namespace's sysfs, …).
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            other => other?,
        }
    }
    if req.attrs & sys::MOUNT_ATTR_RDONLY != 0 {
        sys::set_attrs(tree.as_raw_fd(), sys::MOUNT_ATTR_RDONLY)?;
    }
    Ok(tree)
}

fn strip_root_path(p: &Path) -> &Path {
    p.strip_prefix("/").unwrap_or(p)
}

/// Attaches `tree` on the caller's `target`.
pub fn attach(host: &HostView, tid: i32, tree: &OwnedFd, target: &PathArg) -> io::Result<()> {
    let _in_caller = host.enter(tid)?;
    let dir = target.open(true)?;
    sys::move_mount(tree.as_raw_fd(), dir.as_raw_fd(), b"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_view_options_pass() {
        let ok = caller_options(Kind::Proc, b"hidepid=2,gid=5,ro,subset=pid").unwrap();
        assert_eq!(ok.len(), 4);
        assert!(caller_options(Kind::Proc, b"pidns=/proc/1/ns/pid").is_err());
        assert!(caller_options(Kind::Sys, b"hidepid=2").is_err());
        assert!(caller_options(Kind::Sys, b"").unwrap().is_empty());
    }
}

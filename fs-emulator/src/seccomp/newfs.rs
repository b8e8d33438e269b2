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
//!
//! Kernels before 6.15 (every distribution kernel today: Debian 12's 6.1, 6.12) cannot mount onto
//! a detached tree, and before 6.16 procfs takes its pid namespace from whoever creates the
//! context. There `build_staged` does the same in three steps (`Staging`):
//! 1. the filesystem context is opened by a child cloned into the caller's pid namespace (procfs)
//!    or by the agent thread in the caller's network namespace (sysfs); the agent configures and
//!    mounts it (a detached mount made in the host's mount namespace, so the kernel's "fully
//!    visible" check that refuses the container's own procfs mounts does not apply);
//! 2. in a private mount namespace of lodge-fs's own, the filesystem is attached on a scratch
//!    directory, the overlays are mounted on it, and the whole is cloned into a detached tree;
//! 3. that tree is attached where the caller asked, as above.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

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

/// The new filesystem, mounted detached (step 1 of both builds) with the caller's options: a
/// procfs from the context `open_proc` gives, a sysfs made in the caller's network namespace
/// (sysfs shows the network namespace of whoever creates it).
fn new_fs(
    host: &HostView,
    req: &Request,
    open_proc: impl FnOnce() -> io::Result<sys::FsContext>,
) -> io::Result<OwnedFd> {
    let mount = |fs: sys::FsContext| -> io::Result<OwnedFd> {
        for (k, v) in caller_options(req.kind, req.options)? {
            fs.set(&k, v.as_deref())?;
        }
        fs.mount(req.attrs & !sys::MOUNT_ATTR_RDONLY)
    };
    match req.kind {
        Kind::Proc => mount(open_proc()?),
        Kind::Sys => host.in_netns(req.tid, || mount(sys::FsContext::open("sysfs")?)),
    }
}

/// The container's own masks and files, cloned where its init sees them, in overlay order.
fn container_clones<'r>(host: &HostView, req: &'r Request) -> io::Result<Vec<(OwnedFd, &'r Path)>> {
    let _in_container = host.enter(req.init_pid)?;
    Ok(req
        .overlays
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
        .collect())
}

/// Mounts the overlays on the tree at `dir`/`base` (`base` empty: `dir` is the detached tree).
fn mount_overlays(
    req: &Request,
    dir: RawFd,
    base: &[u8],
    clones: Vec<(OwnedFd, &Path)>,
) -> io::Result<()> {
    let at = |rel: &Path| {
        let mut p = base.to_vec();
        if !p.is_empty() {
            p.push(b'/');
        }
        p.extend_from_slice(strip_root(rel));
        p
    };
    let mut clones = clones.into_iter().peekable();
    for o in req.overlays {
        let (fd, rel) = match o {
            Overlay::ReadOnlySelf(rel) => {
                let Ok(fd) = sys::clone_mount(dir, &at(rel)) else {
                    continue; // not in this filesystem
                };
                sys::set_attrs(fd.as_raw_fd(), sys::MOUNT_ATTR_RDONLY)?;
                (fd, rel.as_path())
            }
            Overlay::Clone(rel) => match clones.peek() {
                Some((_, r)) if *r == rel.as_path() => clones.next().expect("peeked"),
                _ => continue,
            },
        };
        match sys::move_mount(fd.as_raw_fd(), dir, &at(rel)) {
            // The path is not there in this one (another network namespace's sysfs, …).
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            other => other?,
        }
    }
    Ok(())
}

/// Builds the tree (detached).
pub fn build(host: &HostView, req: &Request) -> io::Result<OwnedFd> {
    let tree = new_fs(host, req, || {
        let fs = sys::FsContext::open("proc")?;
        let pidns = sys::open(
            Path::new(&format!("/proc/{}/ns/pid", req.tid)),
            libc::O_RDONLY,
        )?;
        fs.set_fd("pidns", pidns.as_raw_fd())?;
        Ok(fs)
    })?;
    let clones = container_clones(host, req)?;
    mount_overlays(req, tree.as_raw_fd(), b"", clones)?;
    if req.attrs & sys::MOUNT_ATTR_RDONLY != 0 {
        sys::set_attrs(tree.as_raw_fd(), sys::MOUNT_ATTR_RDONLY)?;
    }
    Ok(tree)
}

/// A private mount namespace of lodge-fs's own with a scratch tmpfs, where trees are assembled
/// on kernels that cannot mount onto detached ones. Nothing mounted there is seen elsewhere.
pub struct Staging {
    mnt: OwnedFd,
    next: AtomicU64,
}

/// Where the scratch tmpfs sits in the staging namespace (any directory would do: the
/// namespace is lodge-fs's alone).
const SCRATCH: &str = "/tmp";

impl Staging {
    pub fn new() -> io::Result<Staging> {
        // A thread of its own: unshare(CLONE_NEWNS) moves only the caller.
        let mnt = std::thread::spawn(|| -> io::Result<OwnedFd> {
            sys::unshare(libc::CLONE_NEWNS)?;
            lodge_sys::mount::mount(None, c"/", None, libc::MS_REC | libc::MS_PRIVATE, None)?;
            lodge_sys::mount::mount(
                Some(c"lodge-fs-staging"),
                &lodge_sys::cstring(SCRATCH.as_bytes())?,
                Some(c"tmpfs"),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                Some(c"mode=0700"),
            )?;
            sys::open(Path::new("/proc/thread-self/ns/mnt"), libc::O_RDONLY)
        })
        .join()
        .map_err(|_| io::Error::other("staging thread panicked"))??;
        Ok(Staging {
            mnt,
            next: AtomicU64::new(0),
        })
    }
}

/// Opens a procfs context in the caller's pid namespace: a child cloned into it opens it, into
/// the fd table it shares with lodge-fs (a thread cannot change its own pid namespace).
fn proc_context_in_pidns(host: &HostView, tid: i32) -> io::Result<sys::FsContext> {
    let pidns = sys::open(Path::new(&format!("/proc/{tid}/ns/pid")), libc::O_RDONLY)?;
    let (mut r, w) = std::io::pipe()?;
    sys::setns(pidns.as_raw_fd(), libc::CLONE_NEWPID)?;
    // SAFETY: a fork-like clone (no new stack) sharing the fd table. The child makes raw
    // syscalls only (no allocation: other threads may hold the allocator's locks) and exits.
    let child = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (libc::CLONE_FILES | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if child == 0 {
        // SAFETY: raw syscalls on a static string and our own pipe, then _exit.
        unsafe {
            let fd = libc::syscall(libc::SYS_fsopen, c"proc".as_ptr(), 1 as libc::c_uint);
            let answer: i64 = if fd < 0 {
                -(*libc::__errno_location() as i64)
            } else {
                fd
            };
            libc::write(w.as_raw_fd(), (&answer as *const i64).cast(), 8);
            libc::_exit(0);
        }
    }
    let restored = host.restore_pid_for_children();
    if child < 0 {
        return Err(io::Error::last_os_error());
    }
    // The fd table is shared: the write end stays open until the child is done with it.
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(child as i32, std::ptr::null_mut(), 0) };
    drop(w);
    restored.expect("returning to lodge-fs's pid namespace for children");
    let mut answer = [0u8; 8];
    let got = std::io::Read::read(&mut r, &mut answer);
    match (got, i64::from_ne_bytes(answer)) {
        (Ok(8), fd) if fd >= 0 => {
            // SAFETY: the child opened it in our shared fd table and handed its number over.
            Ok(sys::FsContext::from_fd(unsafe {
                OwnedFd::from_raw_fd(fd as RawFd)
            }))
        }
        (Ok(8), errno) => Err(io::Error::from_raw_os_error(-errno as i32)),
        _ => Err(io::Error::other("the procfs context child did not answer")),
    }
}

/// `build` for kernels without mounts onto detached trees or procfs's `pidns` (see the module
/// comment).
pub fn build_staged(host: &HostView, staging: &Staging, req: &Request) -> io::Result<OwnedFd> {
    let fs = new_fs(host, req, || proc_context_in_pidns(host, req.tid))?;
    let clones = container_clones(host, req)?;
    let _staged = host.enter_ns(&staging.mnt)?;
    let dir = format!("{SCRATCH}/{}", staging.next.fetch_add(1, Ordering::Relaxed));
    std::fs::create_dir(&dir)?;
    let assembled = (|| {
        sys::move_mount(fs.as_raw_fd(), libc::AT_FDCWD, dir.as_bytes())?;
        mount_overlays(req, libc::AT_FDCWD, dir.as_bytes(), clones)?;
        let tree = lodge_sys::mount::open_tree(
            libc::AT_FDCWD,
            &lodge_sys::cstring(dir.as_bytes())?,
            lodge_sys::mount::OPEN_TREE_CLONE | libc::AT_RECURSIVE as libc::c_uint,
        )?;
        if req.attrs & sys::MOUNT_ATTR_RDONLY != 0 {
            sys::set_attrs(tree.as_raw_fd(), sys::MOUNT_ATTR_RDONLY)?;
        }
        Ok(tree)
    })();
    let _ = lodge_sys::mount::umount(&lodge_sys::cstring(dir.as_bytes())?, libc::MNT_DETACH);
    let _ = std::fs::remove_dir(&dir);
    assembled
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

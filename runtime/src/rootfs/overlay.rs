//! An ID-mapped overlayfs rootfs. Docker's and containerd's snapshotters hand the runtime an
//! overlay mount, and overlayfs itself cannot be ID-mapped; its layers can (kernel ≥ 5.19). So
//! lodge-runc reads the overlay's layers from mountinfo, ID-maps each lower layer, and mounts a
//! new overlay on them as a detached mount, which init puts over the rootfs in its own mount
//! namespace (Docker's overlay underneath stays as it was for the host).
//!
//! The upper layer is not ID-mapped: a file the container writes must land on disk owned by the
//! container's range. Its few existing entries are shifted into the range instead (`shift.rs`)
//! and shifted back at delete, so `docker commit` and a restart with another range see the
//! image's own IDs.
//!
//! The new overlay is built by a short-lived helper in a private mount namespace: the ID-mapped
//! layers must be attached somewhere for overlayfs to take them by path, and nothing of that may
//! show on the host.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use crate::sys::{self, Forked};

/// The layers of an overlay mount, as mountinfo shows them.
#[derive(Debug, Clone, PartialEq)]
pub struct Layers {
    /// Top-most first, as overlayfs lists them.
    pub lower: Vec<PathBuf>,
    pub upper: Option<PathBuf>,
    pub work: Option<PathBuf>,
    /// Options carried over to the new mount (`index=off` is always added: two overlays share
    /// the upper layer while the container runs).
    pub options: Vec<String>,
}

/// Options of the original mount worth keeping; the rest are defaults or conflict with
/// `index=off` (nfs_export).
const CARRIED: &[&str] = &["redirect_dir", "metacopy", "xino", "userxattr", "volatile"];

/// The layers of the overlay mounted at `rootfs`, if `rootfs` is the root of an overlay mount.
pub fn detect(rootfs: &Path) -> Option<Layers> {
    let rootfs = std::fs::canonicalize(rootfs).ok()?;
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    // The last match is the top-most mount on that point.
    let line = info.lines().rev().find(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        let Some(dash) = f.iter().position(|x| *x == "-") else {
            return false;
        };
        f.len() > dash + 3
            && f[3] == "/"
            && Path::new(&lodge_sys::mountinfo::unescape(f[4])) == rootfs
            && f[dash + 1] == "overlay"
    })?;
    let f: Vec<&str> = line.split(' ').collect();
    let dash = f.iter().position(|x| *x == "-")?;
    parse_options(f[dash + 3])
}

fn parse_options(super_options: &str) -> Option<Layers> {
    let mut layers = Layers {
        lower: vec![],
        upper: None,
        work: None,
        options: vec![],
    };
    for opt in super_options.split(',') {
        let (key, value) = opt.split_once('=').unwrap_or((opt, ""));
        match key {
            "lowerdir" => {
                layers.lower = value
                    .split(':')
                    .filter(|l| !l.is_empty())
                    .map(|l| PathBuf::from(lodge_sys::mountinfo::unescape(l)))
                    .collect()
            }
            "upperdir" => layers.upper = Some(PathBuf::from(lodge_sys::mountinfo::unescape(value))),
            "workdir" => layers.work = Some(PathBuf::from(lodge_sys::mountinfo::unescape(value))),
            k if CARRIED.contains(&k) => layers.options.push(opt.to_string()),
            _ => {}
        }
    }
    // Docker mounts with relative lower layers ("l/ABC") when the absolute ones would not fit in
    // a page; they are relative to its overlay2 directory, the upper layer's grandparent.
    let base = layers
        .upper
        .as_ref()
        .and_then(|u| u.parent()?.parent().map(Path::to_path_buf));
    for l in &mut layers.lower {
        if l.is_relative() {
            *l = base.as_ref()?.join(&*l);
        }
    }
    (!layers.lower.is_empty()).then_some(layers)
}

/// Whether this kernel can mount an overlay on ID-mapped copies of these layers (≥ 5.19, and
/// layers on a filesystem that can be ID-mapped).
pub fn supported(layers: &Layers) -> bool {
    super::idmap::kernel_version() >= (5, 19)
        && layers
            .lower
            .iter()
            .all(|l| super::idmap::fs_supports_idmap(l))
}

/// A new overlay over ID-mapped copies of `layers.lower` (through `userns`), with the original
/// upper and work directories, as a detached mount. `staging` is an existing directory the
/// helper covers with a tmpfs in its private mount namespace.
pub fn idmapped_overlay(layers: &Layers, userns: &OwnedFd, staging: &Path) -> io::Result<OwnedFd> {
    let lowers = layers
        .lower
        .iter()
        .map(|l| {
            super::idmap::idmapped_tree(l, false, userns)
                .map_err(|e| io::Error::new(e.kind(), format!("lower layer {}: {e}", l.display())))
        })
        .collect::<io::Result<Vec<_>>>()?;
    let (ours, theirs) = nix::sys::socket::socketpair(
        nix::sys::socket::AddressFamily::Unix,
        nix::sys::socket::SockType::SeqPacket,
        None,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
    )
    .map_err(io::Error::from)?;
    match sys::fork_with_flags(0)? {
        Forked::Child => {
            drop(ours);
            match build_in_private_ns(layers, &lowers, staging) {
                Ok(fd) => {
                    let _ = sys::send_fds(theirs.as_raw_fd(), b"ok", &[fd.as_raw_fd()]);
                }
                Err(e) => {
                    let msg = e.to_string();
                    // SAFETY: send on our socket with a valid buffer.
                    unsafe { libc::send(theirs.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
                }
            }
            // SAFETY: the helper is done; no destructors of the parent's state must run.
            unsafe { libc::_exit(0) }
        }
        Forked::Parent(pid) => {
            drop(theirs);
            let mut buf = [0u8; 4096];
            let received = sys::recv_fd(ours.as_raw_fd(), &mut buf);
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
            match received? {
                (_, Some(fd)) => Ok(fd),
                (n, None) => Err(io::Error::other(if n == 0 {
                    "the overlay helper died".to_string()
                } else {
                    String::from_utf8_lossy(&buf[..n]).into_owned()
                })),
            }
        }
    }
}

fn build_in_private_ns(layers: &Layers, lowers: &[OwnedFd], staging: &Path) -> io::Result<OwnedFd> {
    use nix::mount::{mount, MsFlags};
    fn step(what: &str) -> impl FnOnce(nix::Error) -> io::Error + '_ {
        move |e| io::Error::other(format!("{what}: {e}"))
    }
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).map_err(step("unshare"))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(step("making / private"))?;
    mount(
        Some("tmpfs"),
        staging,
        Some("tmpfs"),
        MsFlags::empty(),
        Some("mode=700"),
    )
    .map_err(step("tmpfs for the layers"))?;
    for (i, tree) in lowers.iter().enumerate() {
        let dir = staging.join(i.to_string());
        std::fs::create_dir(&dir)?;
        super::idmap::attach(tree, &dir).map_err(|e| io::Error::other(e.to_string()))?;
    }
    // Relative names keep the option short whatever the number of layers.
    nix::unistd::chdir(staging).map_err(step("chdir"))?;
    let lowerdir = (0..lowers.len())
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(":");
    let fs = fsopen("overlay")?;
    fs.set("lowerdir", Some(&lowerdir))?;
    if let Some(upper) = &layers.upper {
        fs.set("upperdir", Some(&upper.display().to_string()))?;
    }
    if let Some(work) = &layers.work {
        fs.set("workdir", Some(&own_workdir(work)?.display().to_string()))?;
    }
    fs.set("index", Some("off"))?;
    for opt in &layers.options {
        let (k, v) = match opt.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (opt.as_str(), None),
        };
        fs.set(k, v)?;
    }
    fs.create_and_mount()
}

/// The work directory for the new overlay: the original one, unless a volatile overlay holds it
/// (Podman mounts `--rm` containers so), which makes overlayfs refuse any other mount on it. Ours
/// then gets a directory of its own inside it: on the upper layer's filesystem, as overlayfs
/// requires, and removed with the container's storage. What a previous mount left in it is
/// cleared first (its volatile marker would refuse this mount too).
fn own_workdir(work: &Path) -> io::Result<PathBuf> {
    if !work.join("work/incompat/volatile").exists() {
        return Ok(work.to_path_buf());
    }
    let own = work.join("lodge");
    match std::fs::remove_dir_all(own.join("work")) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    std::fs::create_dir_all(&own)?;
    Ok(own)
}

/// A filesystem context whose failures carry the kernel's own message.
struct FsContext(lodge_sys::mount::FsContext);

fn fsopen(fstype: &str) -> io::Result<FsContext> {
    lodge_sys::mount::FsContext::open(fstype).map(FsContext)
}

impl FsContext {
    fn set(&self, key: &str, value: Option<&str>) -> io::Result<()> {
        self.0
            .set(key, value)
            .map_err(|e| self.error(e, &format!("{key}={}", value.unwrap_or(""))))
    }

    fn create_and_mount(self) -> io::Result<OwnedFd> {
        self.0
            .mount(0)
            .map_err(|e| self.error(e, "creating the overlay"))
    }

    /// The errno, with the kernel's own message from the context's log when it left one.
    fn error(&self, errno: io::Error, what: &str) -> io::Error {
        let detail = self
            .0
            .message()
            .map(|m| format!(" ({m})"))
            .unwrap_or_default();
        io::Error::new(errno.kind(), format!("overlay {what}: {errno}{detail}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_options_parse() {
        let l = parse_options("rw,lowerdir=/d/l/A:/d/l/B,upperdir=/d/x/diff,workdir=/d/x/work,index=off,xino=off,nfs_export=off").unwrap();
        assert_eq!(l.lower, [PathBuf::from("/d/l/A"), PathBuf::from("/d/l/B")]);
        assert_eq!(l.upper.as_deref(), Some(Path::new("/d/x/diff")));
        assert_eq!(l.options, ["xino=off"]);
        let rel =
            parse_options("rw,lowerdir=l/A:l/B,upperdir=/d/x/diff,workdir=/d/x/work").unwrap();
        assert_eq!(rel.lower[1], PathBuf::from("/d/l/B"));
        assert_eq!(lodge_sys::mountinfo::unescape("/a\\040b"), "/a b");
    }
}

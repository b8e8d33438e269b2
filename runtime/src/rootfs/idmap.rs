//! ID-mapped bind mounts (`idmap`/`ridmap`, `mounts[].uidMappings/gidMappings`).
//!
//! Setting an ID mapping on a mount needs privileges over the filesystem, which the container's
//! init (root of its user namespace only) does not have. So lodge-runc, still host root,
//! prepares each one before the clone: a detached copy of the source tree (open_tree with
//! OPEN_TREE_CLONE), ID-mapped with mount_setattr(MOUNT_ATTR_IDMAP) through a user namespace
//! holding the mappings. Init inherits the fds and attaches them with move_mount.
//!
//! The mapping works downwards: an on-disk ID is read as an ID inside the mapping's namespace and
//! shown as the matching outside ID. With the container's own mappings (0 → 100000), files owned
//! by root on disk show up owned by the container's root.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;

use oci_spec::runtime::{LinuxIdMapping, Mount, Spec};

use super::options::MountOptions;
use super::RootfsError;
use crate::sys::{self, Forked};

use lodge_sys::mount::{
    MountAttr, MOUNT_ATTR_IDMAP, MOVE_MOUNT_F_EMPTY_PATH, MOVE_MOUNT_T_EMPTY_PATH, OPEN_TREE_CLONE,
};

/// Detached, ID-mapped trees for the spec's mounts, by index in `mounts` (`ROOTFS`: the root).
pub type IdmappedTrees = Vec<(usize, OwnedFd)>;

/// The index used for the rootfs itself.
pub const ROOTFS: usize = usize::MAX;

/// Annotation asking for an ID-mapped rootfs (`"true"`), through the container's user namespace
/// mappings: a rootfs owned by host root then belongs to the container's root, without a chown.
pub const ROOTFS_ANNOTATION: &str = "org.lodge.rootfs.idmap";

struct Wanted {
    recursive: bool,
    /// Asked by the system-container rewrite, not the spec: skipped when it cannot be done.
    soft: bool,
    uid: Vec<LinuxIdMapping>,
    gid: Vec<LinuxIdMapping>,
}

/// Whether a mount asks for an ID mapping, and its mappings (its own, or the container's).
fn wanted(m: &Mount, spec: &Spec) -> Option<Wanted> {
    let opts = m.options().clone().unwrap_or_default();
    let soft = opts.iter().any(|o| o == super::options::SOFT_IDMAP);
    let recursive =
        opts.iter().any(|o| o == "ridmap") || (soft && opts.iter().any(|o| o == "rbind"));
    let asked = recursive || soft || opts.iter().any(|o| o == "idmap");
    let own = (
        m.uid_mappings().clone().unwrap_or_default(),
        m.gid_mappings().clone().unwrap_or_default(),
    );
    if !asked && own.0.is_empty() && own.1.is_empty() {
        return None;
    }
    let linux = spec.linux().as_ref();
    let uid = if own.0.is_empty() {
        linux
            .and_then(|l| l.uid_mappings().clone())
            .unwrap_or_default()
    } else {
        own.0
    };
    let gid = if own.1.is_empty() {
        linux
            .and_then(|l| l.gid_mappings().clone())
            .unwrap_or_default()
    } else {
        own.1
    };
    Some(Wanted {
        recursive,
        soft,
        uid,
        gid,
    })
}

/// How init's request for an ID-mapped mount reads: made after the clone by the runtime through
/// init's own user namespace (no extra namespace to create, the common case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Deferred {
    pub recursive: bool,
    /// Bind the source as it is when its filesystem cannot be ID-mapped.
    pub soft: bool,
}

fn container_maps(spec: &Spec) -> (Vec<LinuxIdMapping>, Vec<LinuxIdMapping>) {
    let linux = spec.linux().as_ref();
    (
        linux
            .and_then(|l| l.uid_mappings().clone())
            .unwrap_or_default(),
        linux
            .and_then(|l| l.gid_mappings().clone())
            .unwrap_or_default(),
    )
}

/// Whether mount `m` is ID-mapped through the container's own mappings in a user namespace the
/// container creates: then it is made after the clone, on init's request.
pub fn deferred(m: &Mount, spec: &Spec, new_userns: bool) -> Option<Deferred> {
    let w = wanted(m, spec)?;
    let (uid, gid) = container_maps(spec);
    if !new_userns || uid.is_empty() || w.uid != uid || w.gid != gid {
        return None;
    }
    let opts = MountOptions::parse(m.options().as_deref().unwrap_or_default());
    Some(Deferred {
        recursive: w.recursive || opts.flags.contains(nix::mount::MsFlags::MS_REC),
        soft: w.soft,
    })
}

/// Whether the annotation asks for an ID-mapped rootfs.
pub fn rootfs_annotated(spec: &Spec) -> bool {
    spec.annotations()
        .as_ref()
        .and_then(|a| a.get(ROOTFS_ANNOTATION))
        .is_some_and(|v| v == "true")
}

/// Prepares, before the clone, the ID-mapped mounts that cannot wait for init's user namespace
/// (their own mappings, or no new user namespace), and the rootfs when the annotation asks for
/// it without one. The rest is `deferred`.
pub fn prepare_all(
    spec: &Spec,
    bundle: &Path,
    rootfs: &Path,
    new_userns: bool,
) -> Result<IdmappedTrees, RootfsError> {
    let mut out: IdmappedTrees = vec![];
    if rootfs_annotated(spec) && !new_userns {
        let linux = spec.linux().as_ref();
        let uid = linux
            .and_then(|l| l.uid_mappings().clone())
            .unwrap_or_default();
        let gid = linux
            .and_then(|l| l.gid_mappings().clone())
            .unwrap_or_default();
        let fail = |reason: String| RootfsError::Idmap {
            dest: "/".into(),
            reason,
        };
        if uid.is_empty() || gid.is_empty() {
            return Err(fail(format!(
                "{ROOTFS_ANNOTATION} needs linux.uidMappings and gidMappings"
            )));
        }
        let userns = userns_with_maps(&uid, &gid).map_err(|e| fail(e.to_string()))?;
        let tree = idmapped_tree(rootfs, true, &userns)
            .map_err(|e| fail(format!("{}: {e}", rootfs.display())))?;
        out.push((ROOTFS, tree));
    }
    // One user namespace per distinct mapping (most often just the container's).
    let mut namespaces: Vec<(String, OwnedFd)> = vec![];
    for (i, m) in spec.mounts().iter().flatten().enumerate() {
        let Some(Wanted {
            recursive,
            soft,
            uid,
            gid,
        }) = wanted(m, spec)
        else {
            continue;
        };
        let deferred = deferred(m, spec, new_userns).is_some();
        let dest = m.destination().clone();
        let opts = MountOptions::parse(m.options().as_deref().unwrap_or_default());
        if !(m.typ().as_deref() == Some("bind") || opts.is_bind()) {
            return Err(RootfsError::Idmap {
                dest,
                reason: "only bind mounts can be ID-mapped".into(),
            });
        }
        if uid.is_empty() || gid.is_empty() {
            return Err(RootfsError::Idmap {
                dest,
                reason:
                    "idmap needs uidMappings and gidMappings (the mount's, or a user namespace's)"
                        .into(),
            });
        }
        if deferred {
            continue;
        }
        let source = m.source().clone().unwrap_or_default();
        let source = if source.is_absolute() {
            source
        } else {
            bundle.join(source)
        };
        let fail = |e: io::Error| RootfsError::Idmap {
            dest: dest.clone(),
            reason: format!("{}: {e}", source.display()),
        };
        let key = format!("{uid:?}/{gid:?}");
        let userns = match namespaces.iter().position(|(k, _)| *k == key) {
            Some(n) => &namespaces[n].1,
            None => {
                namespaces.push((key, userns_with_maps(&uid, &gid).map_err(fail)?));
                &namespaces.last().expect("just pushed").1
            }
        };
        let recursive = recursive || opts.flags.contains(nix::mount::MsFlags::MS_REC);
        match idmapped_tree(&source, recursive, userns) {
            Ok(tree) => out.push((i, tree)),
            Err(e) if soft => {
                tracing::debug!(source = %source.display(), error = %e, "bind mount not ID-mapped")
            }
            Err(e) => return Err(fail(e)),
        }
    }
    Ok(out)
}

/// A user namespace with these mappings, held by an fd (its short-lived owner is reaped).
pub fn userns_with_maps(uid: &[LinuxIdMapping], gid: &[LinuxIdMapping]) -> io::Result<OwnedFd> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)?;
    let child = match sys::fork_with_flags(libc::CLONE_NEWUSER as u64)? {
        Forked::Child => {
            drop(w);
            let mut b = [0u8; 1];
            // SAFETY: wait for the parent to close the pipe, then leave.
            unsafe {
                libc::read(r.as_raw_fd(), b.as_mut_ptr().cast(), 1);
                libc::_exit(0)
            }
        }
        Forked::Parent(pid) => pid,
    };
    drop(r);
    let fmt = |m: &[LinuxIdMapping]| {
        m.iter()
            .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
            .collect::<String>()
    };
    let result = (|| {
        std::fs::write(format!("/proc/{child}/uid_map"), fmt(uid))?;
        std::fs::write(format!("/proc/{child}/gid_map"), fmt(gid))?;
        Ok(std::fs::File::open(format!("/proc/{child}/ns/user"))?.into())
    })();
    drop(w);
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(child), None);
    result
}

/// A detached copy of `source` (with its submounts when `recursive`), as a slave of the host's
/// mounts: a copy of a shared mount (systemd makes every mount shared) would otherwise join its
/// peer group, so whatever the container mounts on it would show up on the host, and
/// pivot_root refuses a shared root. The copy still receives the host's mounts below it, as
/// runc's default `rslave` gives.
pub fn clone_tree(source: &Path, recursive: bool) -> io::Result<OwnedFd> {
    let mut flags = OPEN_TREE_CLONE;
    let mut at = libc::AT_EMPTY_PATH as libc::c_uint;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
        at |= libc::AT_RECURSIVE as libc::c_uint;
    }
    let tree = lodge_sys::mount::open_tree(libc::AT_FDCWD, &sys::cstr(source)?, flags)?;
    let slave = MountAttr {
        propagation: libc::MS_SLAVE,
        ..MountAttr::default()
    };
    lodge_sys::mount::mount_setattr(tree.as_raw_fd(), c"", at, &slave)?;
    Ok(tree)
}

/// A detached copy of `source` (with its submounts when `recursive`), ID-mapped through `userns`.
pub fn idmapped_tree(source: &Path, recursive: bool, userns: &OwnedFd) -> io::Result<OwnedFd> {
    let tree = clone_tree(source, recursive)?;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        userns_fd: userns.as_raw_fd() as u64,
        ..MountAttr::default()
    };
    let mut at = libc::AT_EMPTY_PATH as libc::c_uint;
    if recursive {
        at |= libc::AT_RECURSIVE as libc::c_uint;
    }
    lodge_sys::mount::mount_setattr(tree.as_raw_fd(), c"", at, &attr)?;
    Ok(tree)
}

/// Whether `path`'s filesystem supports ID-mapped mounts on this kernel, judged from its type
/// (no namespace to create, unlike trying). A wrong "yes" surfaces when the mount is made.
pub fn fs_supports_idmap(path: &Path) -> bool {
    let Ok(st) = nix::sys::statfs::statfs(path) else {
        return false;
    };
    let needs = match st.filesystem_type().0 as u64 {
        0xEF53 => (5, 12),      // ext2/3/4
        0x5846_5342 => (5, 12), // xfs
        0x4d44 => (5, 12),      // fat
        0x9123_683E => (5, 15), // btrfs
        0xF2F5_2010 => (5, 18), // f2fs
        0x0102_1994 => (6, 3),  // tmpfs
        0xE0F5_E1E2 => (5, 17), // erofs
        _ => return false,
    };
    kernel_version() >= needs
}

/// The running kernel's (major, minor).
pub fn kernel_version() -> (u32, u32) {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release
        .trim()
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// Attaches a prepared tree at `dest` (move_mount).
pub fn attach(tree: &OwnedFd, dest: &Path) -> Result<(), RootfsError> {
    let target = sys::cstr(dest).map_err(|e| RootfsError::Io {
        op: "move_mount",
        path: dest.to_path_buf(),
        source: e,
    })?;
    move_mount(tree, libc::AT_FDCWD, &target, 0, dest)
}

/// Attaches a prepared tree on the directory `target` is open on (`dest` names it in errors).
pub fn attach_at(tree: &OwnedFd, target: &OwnedFd, dest: &Path) -> Result<(), RootfsError> {
    move_mount(
        tree,
        target.as_raw_fd(),
        &CString::default(),
        MOVE_MOUNT_T_EMPTY_PATH,
        dest,
    )
}

fn move_mount(
    tree: &OwnedFd,
    dirfd: RawFd,
    target: &CString,
    flags: libc::c_uint,
    dest: &Path,
) -> Result<(), RootfsError> {
    lodge_sys::mount::move_mount(
        tree.as_raw_fd(),
        c"",
        dirfd,
        target,
        MOVE_MOUNT_F_EMPTY_PATH | flags,
    )
    .map_err(|source| RootfsError::Io {
        op: "move_mount",
        path: dest.to_path_buf(),
        source,
    })
}

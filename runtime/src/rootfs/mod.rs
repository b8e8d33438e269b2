//! Building the container's root filesystem inside its mount namespace: propagation, the
//! rootfs bind, the spec's mounts, /dev, pivot_root, masked and read-only paths.
//!
//! Everything here runs in the container's init before pivot_root (or right after it, for the
//! finishing steps), as root of the container's user namespace.

pub mod idmap;
pub mod options;
pub mod overlay;
pub mod path;
pub mod shift;

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType, Mount, Spec};
use thiserror::Error;

use crate::cgroups::Layout;
use crate::sys;
use options::{propagation_option, MountOptions, ATIME_MARKER};
pub use path::secure_join;

#[derive(Debug, Error)]
pub enum RootfsError {
    #[error("mount {what} on {dest}: {errno}")]
    Mount {
        what: String,
        dest: PathBuf,
        errno: Errno,
    },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid rootfsPropagation {0:?}")]
    Propagation(String),
    #[error("mount destination {0:?} must be an absolute path")]
    RelativeDestination(PathBuf),
    #[error("pivot_root into {path}: {errno}")]
    Pivot { path: PathBuf, errno: Errno },
    #[error("ID-mapped mount on {dest}: {reason}")]
    Idmap { dest: PathBuf, reason: String },
}

type Result<T> = std::result::Result<T, RootfsError>;

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> RootfsError + 'a {
    move |source| RootfsError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

fn do_mount(
    src: Option<&Path>,
    dest: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<()> {
    mount(src, dest, fstype, flags, data).map_err(|errno| RootfsError::Mount {
        what: match (fstype, src) {
            (Some(t), _) => t.to_string(),
            (None, Some(s)) => s.display().to_string(),
            (None, None) => format!("({flags:?})"),
        },
        dest: dest.to_path_buf(),
        errno,
    })
}

/// What the rootfs code needs to know beyond the spec.
pub struct RootfsContext<'a> {
    pub spec: &'a Spec,
    pub rootfs: &'a Path,
    pub bundle: &'a Path,
    /// Running in a new user namespace: devices are bind-mounted and locked mount flags kept.
    pub userns: bool,
    pub cgroupns: bool,
    pub netns: bool,
    pub cgroup_layout: &'a Layout,
    /// The container's cgroup directories on the host, in `cgroup_layout` order.
    pub cgroup_paths: &'a [PathBuf],
    /// ID-mapped trees prepared by the runtime, by index in `mounts`.
    pub idmapped: &'a [(usize, std::os::fd::OwnedFd)],
    /// Bind sources opened by the runtime (O_PATH, in this mount namespace), by index in `mounts`.
    pub sources: &'a [(usize, std::os::fd::OwnedFd)],
    /// ID-mapped trees the runtime made after the clone, by index in `mounts`.
    pub late_trees: &'a [(usize, std::os::fd::OwnedFd)],
}

/// How the rootfs is ID-mapped: decided before the clone, made after it by the runtime through
/// init's own user namespace, handed to init on request.
#[derive(Debug, Clone, PartialEq)]
pub enum RootfsIdmap {
    None,
    /// An ID-mapped copy of the rootfs directory.
    Bind,
    /// A new overlay on ID-mapped lower layers (`overlay.rs`).
    Overlay(overlay::Layers),
}

/// Whether a spec mount is a bind mount.
pub fn is_bind(m: &Mount) -> bool {
    m.typ().as_deref() == Some("bind")
        || MountOptions::parse(m.options().as_deref().unwrap_or_default()).is_bind()
}

fn fd_path(fd: std::os::fd::RawFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{fd}"))
}

/// Sets the propagation of `/` and makes the rootfs a mount point of its own. With `handle` (the
/// rootfs opened by the runtime) the rootfs is mounted through it, and the fd of the new mount is
/// returned: init then reaches the rootfs as /proc/self/fd/N, whatever guards its host path.
pub fn prepare_root(
    ctx: &RootfsContext,
    handle: Option<std::os::fd::OwnedFd>,
    late_tree: Option<std::os::fd::OwnedFd>,
) -> Result<Option<std::os::fd::RawFd>> {
    use std::os::fd::{AsRawFd, IntoRawFd};
    let prop = match ctx
        .spec
        .linux()
        .as_ref()
        .and_then(|l| l.rootfs_propagation().clone())
    {
        Some(p) if !p.is_empty() => propagation_option(&p).ok_or(RootfsError::Propagation(p))?,
        _ => MsFlags::MS_SLAVE | MsFlags::MS_REC,
    };
    do_mount(None, Path::new("/"), None, prop, None)?;
    // pivot_root refuses a new root whose parent mount is shared.
    make_parent_private(ctx.rootfs)?;
    let prepared = ctx.idmapped.iter().find(|(i, _)| *i == idmap::ROOTFS);
    let Some(handle) = handle else {
        return match prepared {
            // An ID-mapped rootfs: the prepared tree goes on top of the rootfs directory.
            Some((_, tree)) => idmap::attach(tree, ctx.rootfs).map(|()| None),
            None => do_mount(
                Some(ctx.rootfs),
                ctx.rootfs,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None,
            )
            .map(|()| None),
        };
    };
    let target = fd_path(handle.as_raw_fd());
    match (prepared, late_tree) {
        (Some((_, tree)), _) => {
            idmap::attach_at(tree, &handle, ctx.rootfs)?;
            Ok(Some(tree.as_raw_fd()))
        }
        (None, Some(tree)) => {
            idmap::attach_at(&tree, &handle, ctx.rootfs)?;
            // Kept open (close-on-exec) for as long as init needs the path.
            Ok(Some(tree.into_raw_fd()))
        }
        (None, None) => {
            let tree = idmap::clone_tree(&target, true).map_err(io("open_tree", ctx.rootfs))?;
            idmap::attach_at(&tree, &handle, ctx.rootfs)?;
            // Kept open (close-on-exec) for as long as init needs the path.
            Ok(Some(tree.into_raw_fd()))
        }
    }
}

fn make_parent_private(rootfs: &Path) -> Result<()> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(io("read", Path::new("/proc/self/mountinfo")))?;
    let mut best: Option<(String, bool)> = None;
    for line in info.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        if f.len() < 7 {
            continue;
        }
        let mp = f[4];
        if rootfs.starts_with(mp) && best.as_ref().is_none_or(|(b, _)| mp.len() > b.len()) {
            let shared = f[6..]
                .iter()
                .take_while(|x| **x != "-")
                .any(|x| x.starts_with("shared:"));
            best = Some((mp.to_string(), shared));
        }
    }
    if let Some((mp, true)) = best {
        do_mount(None, Path::new(&mp), None, MsFlags::MS_PRIVATE, None)?;
    }
    Ok(())
}

/// Mounts every entry of the spec's `mounts`, in order.
pub fn mount_all(ctx: &RootfsContext) -> Result<()> {
    for (i, m) in ctx.spec.mounts().iter().flatten().enumerate() {
        let tree = ctx
            .idmapped
            .iter()
            .chain(ctx.late_trees)
            .find(|(j, _)| *j == i)
            .map(|(_, fd)| fd);
        let source = ctx.sources.iter().find(|(j, _)| *j == i).map(|(_, fd)| fd);
        mount_entry(ctx, m, tree, source)?;
    }
    Ok(())
}

fn mount_entry(
    ctx: &RootfsContext,
    m: &Mount,
    idmapped: Option<&std::os::fd::OwnedFd>,
    opened: Option<&std::os::fd::OwnedFd>,
) -> Result<()> {
    if !m.destination().is_absolute() {
        return Err(RootfsError::RelativeDestination(m.destination().clone()));
    }
    let opts = MountOptions::parse(m.options().as_deref().unwrap_or_default());
    let typ = m.typ().as_deref().unwrap_or("none");
    let dest = secure_join(ctx.rootfs, m.destination()).map_err(io("resolve", m.destination()))?;
    if typ == "bind" || opts.is_bind() {
        let source = m.source().clone().unwrap_or_default();
        let source = match opened {
            Some(fd) => fd_path(std::os::fd::AsRawFd::as_raw_fd(fd)),
            None if source.is_absolute() => source,
            None => ctx.bundle.join(source),
        };
        return bind_mount(ctx, &source, &dest, &opts, idmapped);
    }
    match typ {
        "cgroup" | "cgroup2" => return mount_cgroups(ctx, &dest, &opts),
        "sysfs" if ctx.userns && !ctx.netns => {
            // sysfs can only be mounted by the owner of the network namespace; a rootless-style
            // container keeps the host's netns, so bind the host's /sys instead, like runc.
            let mut bind = opts.clone();
            bind.flags |= MsFlags::MS_BIND | MsFlags::MS_REC;
            return bind_mount(ctx, Path::new("/sys"), &dest, &bind, None);
        }
        _ => {}
    }
    mkdir_all(&dest)?;
    let source = m
        .source()
        .as_ref()
        .map(|s| s.display().to_string())
        .unwrap_or_else(|| typ.to_string());
    let flags = opts.flags - (MsFlags::MS_BIND | MsFlags::MS_REC);
    let data = opts.data_string();
    do_mount(
        Some(Path::new(&source)),
        &dest,
        Some(typ),
        flags,
        data.as_deref(),
    )?;
    finish_mount(&dest, &opts)
}

/// Propagation changes and recursive attributes, shared by every kind of mount.
fn finish_mount(dest: &Path, opts: &MountOptions) -> Result<()> {
    for p in &opts.propagation {
        do_mount(None, dest, None, *p, None)?;
    }
    if opts.recursive_set != 0 || opts.recursive_clear != 0 {
        let mut attr = sys::MountAttr {
            attr_set: opts.recursive_set & !ATIME_MARKER,
            attr_clr: opts.recursive_clear,
            propagation: 0,
            userns_fd: 0,
        };
        if opts.recursive_set & (sys::MOUNT_ATTR__ATIME | ATIME_MARKER) != 0 {
            attr.attr_clr |= sys::MOUNT_ATTR__ATIME;
        }
        sys::mount_setattr(dest, true, &attr).map_err(io("mount_setattr", dest))?;
    }
    Ok(())
}

fn bind_mount(
    ctx: &RootfsContext,
    source: &Path,
    dest: &Path,
    opts: &MountOptions,
    idmapped: Option<&std::os::fd::OwnedFd>,
) -> Result<()> {
    // A prepared tree is stat'ed itself: its host path may be out of init's reach.
    let is_dir = match idmapped {
        Some(tree) => nix::sys::stat::fstat(std::os::fd::AsRawFd::as_raw_fd(tree))
            .map(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
            .map_err(|e| io("stat bind source", source)(e.into()))?,
        None => std::fs::metadata(source)
            .map_err(io("stat bind source", source))?
            .is_dir(),
    };
    if is_dir {
        mkdir_all(dest)?;
    } else {
        create_file(dest)?;
    }
    match idmapped {
        Some(tree) => idmap::attach(tree, dest)?,
        None => do_mount(
            Some(source),
            dest,
            None,
            MsFlags::MS_BIND | (opts.flags & MsFlags::MS_REC),
            None,
        )?,
    }
    let extra = opts.flags - (MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT);
    if !extra.is_empty() {
        remount_bind(dest, extra, ctx.userns)?;
    }
    finish_mount(dest, opts)
}

/// Remounts a bind mount with `flags`. In a user namespace the kernel refuses to drop the
/// flags the source mount has locked (nodev, nosuid, noexec, ro, atime), so they are kept.
fn remount_bind(dest: &Path, flags: MsFlags, userns: bool) -> Result<()> {
    let mut flags = flags | MsFlags::MS_BIND | MsFlags::MS_REMOUNT;
    if userns {
        flags |= locked_flags(dest);
    }
    do_mount(None, dest, None, flags, None)
}

fn locked_flags(path: &Path) -> MsFlags {
    use nix::sys::statvfs::{statvfs, FsFlags};
    let Ok(st) = statvfs(path) else {
        return MsFlags::empty();
    };
    let f = st.flags();
    let mut out = MsFlags::empty();
    for (fs, ms) in [
        (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if f.contains(fs) {
            out |= ms;
        }
    }
    out
}

/// `/sys/fs/cgroup` inside the container. On a pure v2 host with a cgroup namespace, a fresh
/// cgroup2 mount; otherwise the container's own directory of every hierarchy is bind-mounted
/// (under a tmpfs on v1 and hybrid hosts), so the container sees its cgroup as the root.
fn mount_cgroups(ctx: &RootfsContext, dest: &Path, opts: &MountOptions) -> Result<()> {
    mkdir_all(dest)?;
    let ro = opts.flags.contains(MsFlags::MS_RDONLY);
    let base = opts.flags - (MsFlags::MS_RDONLY | MsFlags::MS_BIND | MsFlags::MS_REC);
    let layout = ctx.cgroup_layout;
    if layout.is_unified_only() {
        let fresh = ctx.cgroupns
            && do_mount(
                Some(Path::new("cgroup2")),
                dest,
                Some("cgroup2"),
                opts.flags,
                None,
            )
            .is_ok();
        if !fresh {
            if let Some(p) = ctx.cgroup_paths.first() {
                do_mount(
                    Some(p),
                    dest,
                    None,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None,
                )?;
                remount_bind(dest, base | (opts.flags & MsFlags::MS_RDONLY), ctx.userns)?;
            }
        }
        return finish_mount(dest, opts);
    }
    do_mount(
        Some(Path::new("tmpfs")),
        dest,
        Some("tmpfs"),
        base,
        Some("mode=755"),
    )?;
    for (h, host_path) in layout.hierarchies.iter().zip(ctx.cgroup_paths) {
        let name = if h.unified {
            "unified".to_string()
        } else {
            h.controllers
                .iter()
                .map(|c| c.strip_prefix("name=").unwrap_or(c))
                .collect::<Vec<_>>()
                .join(",")
        };
        let sub = dest.join(&name);
        mkdir_all(&sub)?;
        do_mount(
            Some(host_path),
            &sub,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        )?;
        remount_bind(
            &sub,
            base | if ro {
                MsFlags::MS_RDONLY
            } else {
                MsFlags::empty()
            },
            ctx.userns,
        )?;
        if h.controllers.len() > 1 {
            for c in &h.controllers {
                let link = dest.join(c.strip_prefix("name=").unwrap_or(c));
                let _ = std::os::unix::fs::symlink(&name, link);
            }
        }
    }
    if ro {
        do_mount(
            None,
            dest,
            None,
            base | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None,
        )?;
    }
    finish_mount(dest, opts)
}

const DEFAULT_DEVICES: &[(&str, u64, u64)] = &[
    ("/dev/null", 1, 3),
    ("/dev/zero", 1, 5),
    ("/dev/full", 1, 7),
    ("/dev/random", 1, 8),
    ("/dev/urandom", 1, 9),
    ("/dev/tty", 5, 0),
];

/// Whether the spec mounts a fresh (non-bind) /dev, in which case lodge-runc populates it.
pub fn owns_dev(spec: &Spec) -> bool {
    !spec.mounts().iter().flatten().any(|m| {
        m.destination() == Path::new("/dev")
            && (m.typ().as_deref() == Some("bind")
                || m.options()
                    .iter()
                    .flatten()
                    .any(|o| o == "bind" || o == "rbind"))
    })
}

/// Creates the default devices and `linux.devices`, and the /dev symlinks.
pub fn setup_dev(ctx: &RootfsContext) -> Result<()> {
    if !owns_dev(ctx.spec) {
        return Ok(());
    }
    let spec_devices: Vec<LinuxDevice> = ctx
        .spec
        .linux()
        .as_ref()
        .and_then(|l| l.devices().clone())
        .unwrap_or_default();
    for (path, major, minor) in DEFAULT_DEVICES {
        if spec_devices.iter().any(|d| d.path() == Path::new(path)) {
            continue;
        }
        make_device(
            ctx,
            Path::new(path),
            LinuxDeviceType::C,
            *major,
            *minor,
            0o666,
            0,
            0,
        )?;
    }
    for d in &spec_devices {
        let mode = d.file_mode().unwrap_or(0o666);
        make_device(
            ctx,
            d.path(),
            d.typ(),
            d.major() as u64,
            d.minor() as u64,
            mode,
            d.uid().unwrap_or(0),
            d.gid().unwrap_or(0),
        )?;
    }
    let dev =
        secure_join(ctx.rootfs, Path::new("/dev")).map_err(io("resolve", Path::new("/dev")))?;
    for (target, link) in [
        ("/proc/self/fd", "fd"),
        ("/proc/self/fd/0", "stdin"),
        ("/proc/self/fd/1", "stdout"),
        ("/proc/self/fd/2", "stderr"),
    ] {
        let _ = std::os::unix::fs::symlink(target, dev.join(link));
    }
    if Path::new("/proc/kcore").exists() {
        let _ = std::os::unix::fs::symlink("/proc/kcore", dev.join("core"));
    }
    // /dev/ptmx must be the container's own devpts instance.
    let ptmx = dev.join("ptmx");
    let _ = std::fs::remove_file(&ptmx);
    std::os::unix::fs::symlink("pts/ptmx", &ptmx).map_err(io("symlink", &ptmx))
}

#[allow(clippy::too_many_arguments)]
fn make_device(
    ctx: &RootfsContext,
    path: &Path,
    typ: LinuxDeviceType,
    major: u64,
    minor: u64,
    mode: u32,
    uid: u32,
    gid: u32,
) -> Result<()> {
    let dest = secure_join(ctx.rootfs, path).map_err(io("resolve", path))?;
    if let Some(parent) = dest.parent() {
        mkdir_all(parent)?;
    }
    if ctx.userns {
        // No mknod in a user namespace: bind the host's node of the same path.
        create_file(&dest)?;
        return do_mount(Some(path), &dest, None, MsFlags::MS_BIND, None);
    }
    let kind = match typ {
        LinuxDeviceType::B => SFlag::S_IFBLK,
        LinuxDeviceType::P => SFlag::S_IFIFO,
        _ => SFlag::S_IFCHR,
    };
    let _ = std::fs::remove_file(&dest);
    mknod(
        &dest,
        kind,
        Mode::from_bits_truncate(mode),
        makedev(major, minor),
    )
    .map_err(|e| io("mknod", &dest)(e.into()))?;
    // mknod is subject to the umask; the spec's mode is exact.
    std::fs::set_permissions(
        &dest,
        std::os::unix::fs::PermissionsExt::from_mode(mode & 0o7777),
    )
    .map_err(io("chmod", &dest))?;
    nix::unistd::chown(&dest, Some(uid.into()), Some(gid.into()))
        .map_err(|e| io("chown", &dest)(e.into()))
}

/// Makes `rootfs` the root: pivot_root, or MS_MOVE + chroot with `--no-pivot`.
pub fn enter_root(rootfs: &Path, no_pivot: bool) -> Result<()> {
    let fail = |errno| RootfsError::Pivot {
        path: rootfs.to_path_buf(),
        errno,
    };
    nix::unistd::chdir(rootfs).map_err(fail)?;
    if no_pivot {
        do_mount(Some(rootfs), Path::new("/"), None, MsFlags::MS_MOVE, None)?;
        nix::unistd::chroot(".").map_err(fail)?;
    } else {
        // pivot_root(".", ".") stacks the old root under the new one; detaching it from "."
        // afterwards needs no directory inside the container (the trick runc uses).
        let old = std::fs::File::open("/").map_err(io("open", Path::new("/")))?;
        nix::unistd::pivot_root(".", ".").map_err(fail)?;
        nix::unistd::fchdir(std::os::fd::AsRawFd::as_raw_fd(&old)).map_err(fail)?;
        do_mount(
            None,
            Path::new("."),
            None,
            MsFlags::MS_SLAVE | MsFlags::MS_REC,
            None,
        )?;
        umount2(".", MntFlags::MNT_DETACH).map_err(fail)?;
    }
    nix::unistd::chdir("/").map_err(fail)
}

/// Enters the rootfs with chroot only (no mount namespace: pivot_root would move the host's root).
pub fn chroot_into(rootfs: &Path) -> Result<()> {
    let fail = |errno| RootfsError::Pivot {
        path: rootfs.to_path_buf(),
        errno,
    };
    nix::unistd::chroot(rootfs).map_err(fail)?;
    nix::unistd::chdir("/").map_err(fail)
}

/// Unmounts everything mounted at or below `rootfs` on the host, deepest first (containers
/// without a mount namespace leave their mounts there).
pub fn unmount_below(rootfs: &Path) {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut mounts: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(m.replace("\\040", " ")))
        .filter(|m| m.starts_with(rootfs) && m != rootfs)
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.as_os_str().len()));
    for m in mounts {
        let _ = umount2(&m, MntFlags::MNT_DETACH);
    }
}

/// Masked paths (after pivot_root): directories get a read-only empty tmpfs, files /dev/null.
pub fn mask_paths(paths: &[String]) -> Result<()> {
    for p in paths {
        let path = Path::new(p);
        let Ok(md) = std::fs::symlink_metadata(path) else {
            continue;
        };
        if md.is_dir() {
            do_mount(
                Some(Path::new("tmpfs")),
                path,
                Some("tmpfs"),
                MsFlags::MS_RDONLY,
                None,
            )?;
        } else {
            do_mount(
                Some(Path::new("/dev/null")),
                path,
                None,
                MsFlags::MS_BIND,
                None,
            )?;
        }
    }
    Ok(())
}

/// Read-only paths (after pivot_root): bind on themselves, remounted read-only.
pub fn readonly_paths(paths: &[String], userns: bool) -> Result<()> {
    for p in paths {
        let path = Path::new(p);
        if std::fs::symlink_metadata(path).is_err() {
            continue;
        }
        do_mount(
            Some(path),
            path,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        )?;
        remount_bind(path, MsFlags::MS_RDONLY, userns)?;
    }
    Ok(())
}

/// `root.readonly`: remount `/` read-only (after pivot_root).
pub fn readonly_root(userns: bool) -> Result<()> {
    remount_bind(Path::new("/"), MsFlags::MS_RDONLY, userns)
}

pub fn mkdir_all(path: &Path) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(path)
        .map_err(io("mkdir", path))
}

fn create_file(path: &Path) -> Result<()> {
    if let Some(parent) = path.parent() {
        mkdir_all(parent)?;
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(_) => Ok(()),
        // An existing non-regular file (a device node, a directory) is a fine mount point too.
        Err(e) if path.exists() => {
            let _ = e;
            Ok(())
        }
        Err(e) => Err(io("create", path)(e)),
    }
}

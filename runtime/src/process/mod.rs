//! Creating the container's init process.
//!
//! The plan is computed up front (as crun does) so the common case is a single clone3 that
//! creates every namespace at once. Joining namespaces by path needs the general path: fork,
//! setns (user namespace first), unshare the rest, and fork once more when the pid (or time)
//! namespace only applies to children.

pub mod caps;
pub mod channel;
pub mod exec;
pub mod init;
pub mod sched;

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;
use oci_spec::runtime::{LinuxIdMapping, LinuxNamespaceType, Spec};
use thiserror::Error;

use crate::cgroups::{Cgroup, CgroupError, Layout};
use crate::sys::{self, Forked};
use channel::{Channel, Message};

#[derive(Debug, Error)]
pub enum ProcessError {
    #[error("namespace {kind} at {path}: {source}")]
    NamespacePath {
        kind: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("clone: {0}")]
    Clone(std::io::Error),
    #[error("talking to container init: {0}")]
    Sync(std::io::Error),
    #[error("writing ID maps of pid {pid}: {source}")]
    Maps { pid: i32, source: std::io::Error },
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error("{msg}")]
    Init { msg: String, errno: i32 },
    #[error("container init exited before it was ready")]
    InitDied,
    #[error("the process's setup helper ended before the process was ready ({0})")]
    ExecHelperDied(String),
    #[error("container init was killed by {0} before it was ready (SIGKILL: is the memory limit too low?)")]
    InitKilled(&'static str),
    #[error("{0}")]
    Hook(String),
    #[error(transparent)]
    Seccomp(#[from] crate::seccomp::SeccompError),
    #[error("writing oom_score_adj: {0}")]
    OomScoreAdj(std::io::Error),
}

/// Forks the process proper from the intermediate process, which reports the new pid on `chan`
/// and exits; returns in the child only. The child waits for the intermediate to be gone before
/// going on, so the pid is always the first thing the runtime reads from the channel (the
/// child's own messages, such as its seccomp listener fd, used to overtake it now and then).
pub(crate) fn fork_reporting_pid(chan: &Channel) -> std::io::Result<()> {
    let (wait_end, hold_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    match sys::fork_with_flags(0)? {
        Forked::Parent(pid) => {
            let _ = chan.send(&Message::InitPid { pid });
            // SAFETY: the intermediate process is done; its end of the pipe closes with it.
            unsafe { libc::_exit(0) }
        }
        Forked::Child => {
            drop(hold_end);
            let mut byte = [0u8; 1];
            // EOF once the intermediate has exited.
            while let Err(nix::errno::Errno::EINTR) =
                nix::unistd::read(wait_end.as_raw_fd(), &mut byte)
            {}
            Ok(())
        }
    }
}

/// Which namespaces to create, join or skip, decided before any process is made.
pub struct Plan {
    /// Namespaces the first clone creates directly (the fast path).
    pub clone_flags: CloneFlags,
    /// Namespaces to join by path, user namespace first.
    pub joins: Vec<(CloneFlags, OwnedFd)>,
    /// Namespaces to unshare after joining (the general path).
    pub unshare_flags: CloneFlags,
    /// A second fork is needed so init lands in the pid/time namespace.
    pub need_fork: bool,
    pub new_userns: bool,
    pub userns: bool,
    pub new_cgroupns: bool,
    pub mountns: bool,
    pub netns: bool,
}

fn ns_flag(t: LinuxNamespaceType) -> CloneFlags {
    match t {
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        LinuxNamespaceType::Time => CloneFlags::from_bits_retain(libc::CLONE_NEWTIME),
    }
}

impl Plan {
    pub fn new(spec: &Spec) -> Result<Plan, ProcessError> {
        let namespaces = spec
            .linux()
            .as_ref()
            .and_then(|l| l.namespaces().clone())
            .unwrap_or_default();
        let mut joins = vec![];
        let mut new = CloneFlags::empty();
        for ns in &namespaces {
            let flag = ns_flag(ns.typ());
            match ns.path() {
                Some(p) if !p.as_os_str().is_empty() => {
                    // The spec's own name ("network"), not the kernel's ("net").
                    let kind = serde_json::to_value(ns.typ())
                        .ok()
                        .and_then(|v| v.as_str().map(String::from))
                        .unwrap_or_else(|| ns.typ().to_string());
                    let fd =
                        open_namespace(p, flag).map_err(|source| ProcessError::NamespacePath {
                            kind,
                            path: p.clone(),
                            source,
                        })?;
                    joins.push((flag, fd));
                }
                _ => new |= flag,
            }
        }
        joins.sort_by_key(|(f, _)| !f.contains(CloneFlags::CLONE_NEWUSER));
        let has = |f: CloneFlags| namespaces.iter().any(|n| ns_flag(n.typ()) == f);
        let time = CloneFlags::from_bits_retain(libc::CLONE_NEWTIME);
        // A cgroup namespace is always unshared by init itself, once it sits in its cgroups:
        // its root is the cgroup of the process that creates it.
        let new_cgroupns = new.contains(CloneFlags::CLONE_NEWCGROUP);
        new -= CloneFlags::CLONE_NEWCGROUP;
        // Time offsets can only be written before a process enters the namespace, so a time
        // namespace with offsets is unshared (offsets written) and entered by a fork.
        let has_offsets = spec
            .linux()
            .as_ref()
            .and_then(|l| l.time_offsets().as_ref())
            .is_some_and(|o| !o.is_empty());
        let (clone_flags, unshare_flags, need_fork) = if has_offsets && new.contains(time) {
            // The pid namespace goes with it, so the forked init is still pid 1.
            let late = time | (new & CloneFlags::CLONE_NEWPID);
            (new - late, late, true)
        } else if joins.is_empty() {
            (new, CloneFlags::empty(), false)
        } else {
            let pid_joined = joins.iter().any(|(f, _)| *f == CloneFlags::CLONE_NEWPID);
            let fork = pid_joined || new.intersects(CloneFlags::CLONE_NEWPID | time);
            (CloneFlags::empty(), new, fork)
        };
        Ok(Plan {
            clone_flags,
            joins,
            unshare_flags,
            need_fork,
            new_userns: new.contains(CloneFlags::CLONE_NEWUSER),
            userns: has(CloneFlags::CLONE_NEWUSER),
            new_cgroupns,
            mountns: has(CloneFlags::CLONE_NEWNS),
            netns: has(CloneFlags::CLONE_NEWNET),
        })
    }
}

/// Opens a namespace file and checks it is a namespace of the expected kind.
fn open_namespace(path: &Path, flag: CloneFlags) -> std::io::Result<OwnedFd> {
    let f = File::open(path)?;
    const NS_GET_NSTYPE: libc::c_ulong = 0xb703;
    // SAFETY: ioctl query on our fd.
    let t = unsafe { libc::ioctl(f.as_raw_fd(), NS_GET_NSTYPE) };
    if t < 0 {
        return Err(std::io::Error::other("not a namespace file"));
    }
    if t != flag.bits() {
        return Err(std::io::Error::other("a namespace of another kind"));
    }
    Ok(f.into())
}

/// Everything init needs; it is a fork of lodge-runc, so it simply inherits this.
pub struct InitArgs<'a> {
    pub id: &'a str,
    pub spec: &'a Spec,
    pub rootfs: &'a Path,
    pub bundle: &'a Path,
    pub plan: &'a Plan,
    pub no_pivot: bool,
    pub no_new_keyring: bool,
    pub console_socket: Option<RawFd>,
    pub exec_listener: RawFd,
    /// The locked state directory: init must not keep the lock alive.
    pub state_dir_fd: RawFd,
    pub preserve_fds: i32,
    pub cgroup_layout: &'a Layout,
    pub cgroup_paths: &'a [PathBuf],
    /// A system container's v2 leaf (init.scope): init moves there once its cgroup namespace,
    /// rooted at the container's cgroup, exists.
    pub cgroup_leaf: Option<&'a Path>,
    /// Cgroups init joins itself, first thing (`Cgroup::split_self_join`).
    pub cgroup_self_join: &'a [PathBuf],
    /// Whether init must stop for createRuntime/prestart hooks.
    pub hook_point: bool,
    /// ID-mapped mount trees prepared by the runtime before the clone.
    pub idmapped: &'a crate::rootfs::idmap::IdmappedTrees,
    /// How the rootfs is ID-mapped (made after the clone, on init's request).
    pub rootfs_idmap: &'a crate::rootfs::RootfsIdmap,
    /// A directory the overlay helper may cover in its private mount namespace.
    pub staging: &'a Path,
    /// System containers: init moves into a copy of its mount namespace in which the kernel
    /// locks every mount it made (see `lock_mounts`).
    pub lock_mounts: bool,
}

pub struct Spawned {
    pub init_pid: i32,
    /// The direct child, when it is not init itself (general path); reap it.
    pub intermediate: Option<i32>,
}

/// Clones init and drives it until it reports ready (or fails). `on_hook_point` runs the
/// runtime-side hooks with init's pid. On error every process made here is killed.
pub fn spawn(
    args: &InitArgs,
    cgroup: &Cgroup,
    on_hook_point: &mut dyn FnMut(i32) -> Result<(), String>,
) -> Result<Spawned, ProcessError> {
    let (parent_end, child_end) = Channel::pair().map_err(ProcessError::Sync)?;
    let child = match sys::fork_with_flags(args.plan.clone_flags.bits() as u64)
        .map_err(ProcessError::Clone)?
    {
        Forked::Child => {
            drop(parent_end);
            init::run(args, child_end)
        }
        Forked::Parent(pid) => pid,
    };
    drop(child_end);
    let mut spawned = Spawned {
        init_pid: if args.plan.need_fork { 0 } else { child },
        intermediate: args.plan.need_fork.then_some(child),
    };
    let result = drive(
        args,
        cgroup,
        &parent_end,
        child,
        &mut spawned,
        on_hook_point,
    );
    if let Err(ProcessError::InitDied) = result {
        // Say how it died: a SIGKILL during setup is most often the memory limit.
        if let Ok(nix::sys::wait::WaitStatus::Signaled(_, sig, _)) =
            nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(child), None)
        {
            return Err(ProcessError::InitKilled(sig.as_str()));
        }
        return Err(ProcessError::InitDied);
    }
    if result.is_err() {
        for pid in [spawned.init_pid, child] {
            if pid > 0 {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::SIGKILL,
                );
            }
        }
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(child), None);
    }
    result.map(|()| spawned)
}

/// A copy of `init`'s mount namespace in which the kernel has locked every mount: what init set
/// up (masks, read-only paths, lodge-fs's files, the rootfs) can then no more be unmounted,
/// moved or remounted read-write from inside than host mounts can, and the kernel refuses a
/// fresh procfs or sysfs that would show what the masks hide (lodge-fs's agent builds those).
///
/// The kernel locks a mount tree when it copies a mount namespace into one owned by another
/// user namespace. So a helper (host root) joins init's mount namespace and copies it while in
/// the host's user namespace (owned by the host: locked), then joins init's user namespace and
/// copies that (owned by the container again: the locks stay). Init then joins the result.
fn lock_mounts(init: i32) -> std::io::Result<OwnedFd> {
    use std::io::{Read, Write};
    let open = |kind: &str| std::fs::File::open(format!("/proc/{init}/ns/{kind}"));
    let (mnt, user) = (open("mnt")?, open("user")?);
    let (mut ready_r, mut ready_w) = std::io::pipe()?;
    let (mut done_r, done_w) = std::io::pipe()?;
    match sys::fork_with_flags(0)? {
        Forked::Child => {
            drop((ready_r, done_w));
            let copied = (|| -> nix::Result<()> {
                use nix::sched::{setns, unshare, CloneFlags};
                setns(&mnt, CloneFlags::CLONE_NEWNS)?;
                unshare(CloneFlags::CLONE_NEWNS)?;
                setns(&user, CloneFlags::CLONE_NEWUSER)?;
                unshare(CloneFlags::CLONE_NEWNS)
            })();
            let _ = ready_w.write_all(if copied.is_ok() { b"y" } else { b"n" });
            // Stay until the runtime holds the namespace.
            let _ = done_r.read(&mut [0u8; 1]);
            // SAFETY: the helper is done; no destructors of the parent's state must run.
            unsafe { libc::_exit(0) }
        }
        Forked::Parent(pid) => {
            drop((ready_w, done_r));
            let mut answer = [0u8; 1];
            let got = ready_r.read(&mut answer);
            let ns = match (got, answer) {
                (Ok(1), [b'y']) => {
                    std::fs::File::open(format!("/proc/{pid}/ns/mnt")).map(OwnedFd::from)
                }
                _ => Err(std::io::Error::other(
                    "copying init's mount namespace failed",
                )),
            };
            drop(done_w);
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
            ns
        }
    }
}

fn drive(
    args: &InitArgs,
    cgroup: &Cgroup,
    chan: &Channel,
    child: i32,
    spawned: &mut Spawned,
    on_hook_point: &mut dyn FnMut(i32) -> Result<(), String>,
) -> Result<(), ProcessError> {
    cgroup.add_pid(child)?;
    if let Some(adj) = args.spec.process().as_ref().and_then(|p| p.oom_score_adj()) {
        std::fs::write(format!("/proc/{child}/oom_score_adj"), adj.to_string())
            .map_err(ProcessError::OomScoreAdj)?;
    }
    if args.plan.clone_flags.contains(CloneFlags::CLONE_NEWUSER) {
        write_id_maps(args.spec, child)?;
    }
    chan.send(&Message::Go).map_err(ProcessError::Sync)?;
    // Init's user namespace, opened on first need: ID-mapped mounts go through it.
    let mut init_userns: Option<OwnedFd> = None;
    loop {
        let (msg, fd) = chan.recv_with_fd().map_err(ProcessError::Sync)?;
        match msg {
            Some(Message::SeccompFd) => {
                let fd = fd.ok_or_else(|| {
                    ProcessError::Sync(std::io::Error::other("seccomp fd missing"))
                })?;
                let seccomp = args
                    .spec
                    .linux()
                    .as_ref()
                    .and_then(|l| l.seccomp().as_ref())
                    .expect("init has a filter");
                let state = serde_json::from_slice(&crate::ops::hook_state(
                    args.id,
                    crate::state::Status::Creating,
                    spawned.init_pid,
                    args.bundle,
                    args.spec,
                ))
                .unwrap_or_default();
                crate::seccomp::send_to_listener(seccomp, fd.as_raw_fd(), spawned.init_pid, state)
                    .map_err(ProcessError::Seccomp)?;
                chan.send(&Message::SeccompFdDone)
                    .map_err(ProcessError::Sync)?;
            }
            Some(Message::LockMounts) => {
                let ns = lock_mounts(spawned.init_pid).map_err(ProcessError::Sync)?;
                chan.send_with_fd(&Message::MountsLocked, ns.as_raw_fd())
                    .map_err(ProcessError::Sync)?;
            }
            Some(Message::MapRequest) => {
                write_id_maps(args.spec, child)?;
                chan.send(&Message::MapsDone).map_err(ProcessError::Sync)?;
            }
            Some(Message::InitPid { pid }) => {
                spawned.init_pid = pid;
                let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(child), None);
                spawned.intermediate = None;
            }
            Some(Message::HookPoint) => {
                let reply = match on_hook_point(spawned.init_pid) {
                    Ok(()) => Message::HooksDone,
                    Err(msg) => {
                        let _ = chan.send(&Message::Error {
                            msg: msg.clone(),
                            errno: 0,
                        });
                        return Err(ProcessError::Hook(msg));
                    }
                };
                chan.send(&reply).map_err(ProcessError::Sync)?;
            }
            Some(Message::OpenPath { path, idmap }) => {
                let pid = init_or_child(spawned, child);
                let reply = match idmap {
                    Some(d) => match idmapped_for_init(&mut init_userns, pid, |ns| {
                        crate::rootfs::idmap::idmapped_tree(Path::new(&path), d.recursive, ns)
                    }) {
                        Ok(tree) => Ok((true, Some(tree))),
                        Err(e) if d.soft => {
                            tracing::debug!(path, error = %e, "bind mount not ID-mapped");
                            Ok((false, open_in_mount_ns(pid, Path::new(&path)).ok()))
                        }
                        Err(e) => Err(format!("ID-mapped mount of {path}: {e}")),
                    },
                    None => Ok((false, open_in_mount_ns(pid, Path::new(&path)).ok())),
                };
                reply_opened(chan, reply)?;
            }
            Some(Message::RootfsTree) => {
                let pid = init_or_child(spawned, child);
                let rootfs = args.rootfs;
                let made = idmapped_for_init(&mut init_userns, pid, |ns| match args.rootfs_idmap {
                    crate::rootfs::RootfsIdmap::Bind => {
                        crate::rootfs::idmap::idmapped_tree(rootfs, true, ns)
                    }
                    crate::rootfs::RootfsIdmap::Overlay(layers) => {
                        crate::rootfs::overlay::idmapped_overlay(layers, ns, args.staging)
                    }
                    crate::rootfs::RootfsIdmap::None => {
                        Err(std::io::Error::other("no ID-mapped rootfs was planned"))
                    }
                });
                let reply = made.map(|t| (true, Some(t))).map_err(|e| {
                    format!(
                        "ID-mapping the rootfs {}: {e} (LODGE_CHOWN_ROOTFS=TRUE chowns it instead)",
                        rootfs.display()
                    )
                });
                reply_opened(chan, reply)?;
            }
            Some(Message::Ready) => return Ok(()),
            Some(Message::Error { msg, errno }) => return Err(ProcessError::Init { msg, errno }),
            Some(other) => {
                return Err(ProcessError::Sync(std::io::Error::other(format!(
                    "unexpected {other:?}"
                ))))
            }
            None => return Err(ProcessError::InitDied),
        }
    }
}

fn init_or_child(spawned: &Spawned, child: i32) -> i32 {
    if spawned.init_pid > 0 {
        spawned.init_pid
    } else {
        child
    }
}

/// Runs `make` with init's user namespace (opened once).
fn idmapped_for_init(
    cache: &mut Option<OwnedFd>,
    pid: i32,
    make: impl FnOnce(&OwnedFd) -> std::io::Result<OwnedFd>,
) -> std::io::Result<OwnedFd> {
    if cache.is_none() {
        *cache = Some(File::open(format!("/proc/{pid}/ns/user"))?.into());
    }
    make(cache.as_ref().expect("just opened"))
}

/// Answers an open request: the fd (and whether it is an ID-mapped tree), or the failure.
fn reply_opened(
    chan: &Channel,
    reply: Result<(bool, Option<OwnedFd>), String>,
) -> Result<(), ProcessError> {
    match reply {
        Ok((idmapped, Some(fd))) => {
            chan.send_with_fd(&Message::Opened { idmapped }, fd.as_raw_fd())
        }
        Ok((idmapped, None)) => chan.send(&Message::Opened { idmapped }),
        Err(msg) => chan.send(&Message::Error { msg, errno: 0 }),
    }
    .map_err(ProcessError::Sync)
}

/// An O_PATH fd for `path` in the mount namespace of `pid`, opened with our credentials: the fd
/// names a mount of that namespace, so init may mount from it and onto it.
fn open_in_mount_ns(pid: i32, path: &Path) -> std::io::Result<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt;
    // Resolved here first: an absolute symlink met under /proc/PID/root would be resolved
    // against our own root, handing init a mount of the wrong namespace.
    let canonical = std::fs::canonicalize(path)?;
    let through = PathBuf::from(format!("/proc/{pid}/root"))
        .join(canonical.strip_prefix("/").unwrap_or(&canonical));
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(through)?;
    Ok(f.into())
}

fn write_id_maps(spec: &Spec, pid: i32) -> Result<(), ProcessError> {
    let linux = spec.linux().as_ref();
    let fmt = |maps: Option<&Vec<LinuxIdMapping>>| {
        maps.into_iter()
            .flatten()
            .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
            .collect::<String>()
    };
    let uid = fmt(linux.and_then(|l| l.uid_mappings().as_ref()));
    let gid = fmt(linux.and_then(|l| l.gid_mappings().as_ref()));
    let err = |source| ProcessError::Maps { pid, source };
    if !nix::unistd::geteuid().is_root() {
        // Unprivileged writers may only map themselves, and only with setgroups denied.
        std::fs::write(format!("/proc/{pid}/setgroups"), "deny").map_err(err)?;
    }
    std::fs::write(format!("/proc/{pid}/uid_map"), uid).map_err(err)?;
    std::fs::write(format!("/proc/{pid}/gid_map"), gid).map_err(err)
}

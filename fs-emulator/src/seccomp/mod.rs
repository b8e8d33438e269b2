//! The seccomp agent: lodge-runc traps mount, umount2, move_mount, mount_setattr, openat2 and
//! sysinfo in every system container (SCMP_ACT_NOTIFY; the chown and xattr families behind
//! knobs) and hands each process's listener fd to lodge-fs over the runtime-spec's
//! `listenerPath` protocol (the state as JSON, the fd with SCM_RIGHTS).
//!
//! One thread per listener fd answers its notifications in order; none forks. For each call it
//! reads the arguments from the caller's memory, checks the notification is still live, and
//! then either lets the kernel run the call as made (most calls), refuses it with the errno the
//! kernel would give (the immutable initial mounts, `policy`), or does the work itself: a new
//! procfs or sysfs with the container's emulation on it (`newfs`), an openat2 that would fail
//! with EXDEV only because of a lodge-fs file (the fd is opened here and injected), sysinfo
//! from the container's figures. docs/syscall-interception.md has the whole table.

mod mountinfo;
mod newfs;
mod notif;
pub mod policy;
mod statmount;
mod sys;
mod view;

use std::collections::HashMap;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};

use mountinfo::Table;
use notif::{Listener, Notification};
use policy::{Initial, Verdict};
use view::{HostView, PathArg};

/// What the agent knows of one container.
struct Tracked {
    id: String,
    init_pid: i32,
    initial: Initial,
}

pub struct Agent {
    host: HostView,
    /// Registered containers: sysinfo(2) is answered from their figures.
    registry: Arc<crate::registry::Registry>,
    /// st_dev of lodge-fs's own files.
    emulated_dev: u64,
    /// How procfs and sysfs trees are built: detached (`newfs::supported`, 6.15+), or staged
    /// in lodge-fs's own mount namespace (older kernels).
    staging: Option<newfs::Staging>,
    /// Whether the kernel has statmount(2) and listmount(2) (6.8): mount lookups then need
    /// not read the caller's whole mount table.
    has_statmount: bool,
    containers: Mutex<HashMap<String, Weak<Tracked>>>,
    /// Keeps listeners (and what the agent knows of their containers) across a restart.
    continuity: std::sync::OnceLock<Arc<crate::restart::Continuity>>,
}

impl Agent {
    /// `statmount`: use statmount(2) where the kernel has it. `staged`: build procfs and sysfs
    /// trees the way kernels before 6.15 need even where detached trees would do (a test knob).
    pub fn new(
        emulated_root: &Path,
        registry: Arc<crate::registry::Registry>,
        statmount: bool,
        staged: bool,
    ) -> io::Result<Agent> {
        use std::os::unix::fs::MetadataExt;
        let staging = if staged || !newfs::supported() {
            tracing::info!(
                "procfs and sysfs mounted inside containers are assembled in a staging mount \
                 namespace (this kernel cannot mount onto detached trees, < 6.15)"
            );
            Some(newfs::Staging::new()?)
        } else {
            None
        };
        let has_statmount = statmount
            && sys::open(Path::new("/"), libc::O_PATH)
                .and_then(|root| statmount::around(root.as_raw_fd(), true))
                .is_ok();
        Ok(Agent {
            host: HostView::open()?,
            staging,
            has_statmount,
            registry,
            emulated_dev: std::fs::metadata(emulated_root)?.dev(),
            containers: Mutex::default(),
            continuity: std::sync::OnceLock::new(),
        })
    }

    pub fn keep_listeners_with(&self, continuity: Arc<crate::restart::Continuity>) {
        let _ = self.continuity.set(continuity);
    }

    /// The container `id` whose init is `init_pid`; its initial mounts are read the first time,
    /// before its init runs anything (the runtime waits for the hand-over).
    fn track(&self, id: &str, init_pid: i32) -> io::Result<Arc<Tracked>> {
        self.track_with(id, init_pid, || {
            let table = Table {
                mounts: mountinfo::read(init_pid)?,
            };
            Ok(Initial::from_table(&table))
        })
    }

    /// The container `id` whose init is `init_pid`, its initial mounts given by `initial` the
    /// first time.
    fn track_with(
        &self,
        id: &str,
        init_pid: i32,
        initial: impl FnOnce() -> io::Result<Initial>,
    ) -> io::Result<Arc<Tracked>> {
        let mut map = self.containers.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, t| t.strong_count() > 0);
        if let Some(t) = map.get(id).and_then(Weak::upgrade) {
            if t.init_pid == init_pid {
                return Ok(t);
            }
        }
        let t = Arc::new(Tracked {
            id: id.to_string(),
            init_pid,
            initial: initial()?,
        });
        map.insert(id.to_string(), Arc::downgrade(&t));
        Ok(t)
    }
}

pub fn serve(listener: UnixListener, agent: Arc<Agent>) {
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let agent = agent.clone();
        std::thread::spawn(move || match accept(&agent, conn) {
            Ok((tracked, listener, state)) => {
                let key = agent.continuity.get().and_then(|c| {
                    let saved = serde_json::json!({ "state": state, "initial": tracked.initial });
                    c.keep_listener(listener.raw_fd(), &saved)
                });
                serve_listener(&agent, &tracked, &listener);
                release(&agent, key);
            }
            Err(e) => tracing::warn!(error = %e, "seccomp listener hand-over refused"),
        });
    }
}

/// Serves a listener a previous lodge-fs was serving (`restart.rs`): `saved` is what
/// `serve` kept of it.
pub fn restore(agent: &Arc<Agent>, key: String, fd: OwnedFd, saved: &serde_json::Value) {
    let id = saved["state"]["state"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let init_pid = saved["state"]["state"]["pid"].as_i64().unwrap_or(0) as i32;
    let initial: Option<Initial> = serde_json::from_value(saved["initial"].clone()).ok();
    let (Some(initial), false) = (initial, id.is_empty()) else {
        release(agent, Some(key));
        return;
    };
    let Ok(tracked) = agent.track_with(&id, init_pid, || Ok(initial)) else {
        release(agent, Some(key));
        return;
    };
    let agent = agent.clone();
    std::thread::spawn(move || {
        serve_listener(&agent, &tracked, &Listener::new(fd));
        release(&agent, Some(key));
    });
}

fn release(agent: &Agent, key: Option<String>) {
    if let (Some(c), Some(key)) = (agent.continuity.get(), key) {
        c.release_listener(&key);
    }
}

/// Reads the hand-over: the state JSON and the listener fd.
fn accept(
    agent: &Agent,
    conn: UnixStream,
) -> io::Result<(Arc<Tracked>, Listener, serde_json::Value)> {
    let (mut data, fd) = sys_recv_fd(&conn)?;
    (&conn).read_to_end(&mut data)?;
    let fd = fd.ok_or_else(|| io::Error::other("no fd attached"))?;
    let msg: serde_json::Value =
        serde_json::from_slice(&data).map_err(|e| io::Error::other(format!("bad state: {e}")))?;
    let id = msg["state"]["id"].as_str().unwrap_or_default();
    let init_pid = msg["state"]["pid"].as_i64().unwrap_or(0) as i32;
    if id.is_empty() || init_pid <= 0 {
        return Err(io::Error::other("state without id or pid"));
    }
    let tracked = agent.track(id, init_pid)?;
    tracing::debug!(id, pid = msg["pid"].as_i64(), "seccomp listener");
    Ok((tracked, Listener::new(fd), msg))
}

fn sys_recv_fd(conn: &UnixStream) -> io::Result<(Vec<u8>, Option<OwnedFd>)> {
    let mut buf = vec![0u8; 65536];
    let (n, fd) = lodge_sys::fdpass::recv_fd(conn.as_raw_fd(), &mut buf)?;
    buf.truncate(n);
    Ok((buf, fd))
}

fn serve_listener(agent: &Agent, tracked: &Tracked, listener: &Listener) {
    if let Err(e) = HostView::prepare_thread() {
        tracing::error!(error = %e, "agent thread cannot leave the shared fs_struct");
        return;
    }
    loop {
        let n = match listener.recv() {
            Ok(Some(n)) => n,
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(id = tracked.id, error = %e, "seccomp listener");
                break;
            }
        };
        let call = Call {
            agent,
            tracked,
            listener,
            n,
        };
        call.answer();
    }
}

/// One trapped syscall being answered.
struct Call<'a> {
    agent: &'a Agent,
    tracked: &'a Tracked,
    listener: &'a Listener,
    n: Notification,
}

#[derive(Clone, Copy)]
enum XattrTarget {
    /// A path, followed or not (the l* calls).
    Path(bool),
    /// The f* calls: arg 0 is an fd.
    Fd,
}

fn is_set(nr: i64) -> bool {
    #[cfg(target_arch = "x86_64")]
    if nr == libc::SYS_setxattr || nr == libc::SYS_lsetxattr {
        return true;
    }
    nr == libc::SYS_fsetxattr
}

fn is_get(nr: i64) -> bool {
    #[cfg(target_arch = "x86_64")]
    if nr == libc::SYS_getxattr || nr == libc::SYS_lgetxattr {
        return true;
    }
    nr == libc::SYS_fgetxattr
}

/// How a call ends.
enum Outcome {
    /// The kernel runs it as made.
    Continue,
    Errno(i32),
    Value(i64),
    /// Already answered (an injected fd), or the caller is gone.
    Done,
}

impl From<Verdict> for Outcome {
    fn from(v: Verdict) -> Outcome {
        match v {
            Verdict::Allow => Outcome::Continue,
            Verdict::Fail(e) => Outcome::Errno(e),
        }
    }
}

fn errno(e: io::Error) -> Outcome {
    Outcome::Errno(e.raw_os_error().unwrap_or(libc::EINVAL))
}

macro_rules! try_call {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return errno(e),
        }
    };
}

impl Call<'_> {
    fn answer(&self) {
        let started = std::time::Instant::now();
        let outcome = if self.n.arch != notif::NATIVE_ARCH {
            Outcome::Continue
        } else {
            match self.n.nr {
                libc::SYS_mount => self.mount(),
                libc::SYS_umount2 => self.umount(),
                libc::SYS_move_mount => self.move_mount(),
                libc::SYS_mount_setattr => self.mount_setattr(),
                libc::SYS_openat2 => self.openat2(),
                libc::SYS_sysinfo => self.sysinfo(),
                #[cfg(target_arch = "x86_64")]
                libc::SYS_chown => self.chown(Some(libc::AT_FDCWD), 0, true),
                #[cfg(target_arch = "x86_64")]
                libc::SYS_lchown => self.chown(Some(libc::AT_FDCWD), 0, false),
                libc::SYS_fchown => self.chown(None, 0, true),
                libc::SYS_fchownat => {
                    let flags = self.arg(4) as i32;
                    self.chown(
                        Some(self.arg(0) as i32),
                        1,
                        flags & libc::AT_SYMLINK_NOFOLLOW == 0,
                    )
                }
                #[cfg(target_arch = "x86_64")]
                libc::SYS_setxattr | libc::SYS_getxattr | libc::SYS_removexattr => {
                    self.xattr(XattrTarget::Path(true))
                }
                #[cfg(target_arch = "x86_64")]
                libc::SYS_lsetxattr | libc::SYS_lgetxattr | libc::SYS_lremovexattr => {
                    self.xattr(XattrTarget::Path(false))
                }
                libc::SYS_fsetxattr | libc::SYS_fgetxattr | libc::SYS_fremovexattr => {
                    self.xattr(XattrTarget::Fd)
                }
                _ => Outcome::Continue,
            }
        };
        let id = self.n.id;
        match outcome {
            Outcome::Continue => self.listener.allow(id),
            Outcome::Errno(e) => self.listener.fail(id, e),
            Outcome::Value(v) => self.listener.succeed(id, v),
            Outcome::Done => {}
        }
        tracing::trace!(
            nr = self.n.nr,
            us = started.elapsed().as_micros() as u64,
            "answered"
        );
    }

    fn tid(&self) -> i32 {
        self.n.pid
    }

    fn arg(&self, i: usize) -> u64 {
        self.n.args[i]
    }

    /// A path argument; None for a NULL pointer.
    fn string(&self, i: usize) -> io::Result<Option<Vec<u8>>> {
        match self.arg(i) {
            0 => Ok(None),
            addr => notif::read_string(self.tid(), addr).map(Some),
        }
    }

    /// What a (dirfd, path) argument pair names: the dirfd itself with an "empty path" flag,
    /// else the path read from the caller, resolved from the dirfd. None for a NULL path.
    fn at_path(
        &self,
        dirfd_arg: usize,
        path_arg: usize,
        empty_path: bool,
        follow: bool,
    ) -> io::Result<Option<PathArg>> {
        let dirfd = self.arg(dirfd_arg) as i32;
        if empty_path {
            return PathArg::dirfd(self.tid(), dirfd).map(Some);
        }
        match self.string(path_arg)? {
            Some(path) => PathArg::prepare(self.tid(), dirfd, path, follow).map(Some),
            None => Ok(None),
        }
    }

    /// The mounts around the one `path` names (it, its parent, and with `below` what is below
    /// it), that mount's id and whether `path` is its root. From statmount(2) where the kernel
    /// has it, from the caller's whole mountinfo otherwise (and whenever statmount cannot tell).
    fn mount_at(
        &self,
        path: &PathArg,
        follow: bool,
        below: bool,
    ) -> io::Result<(Table, Option<u64>, bool)> {
        if self.agent.has_statmount {
            let _in_caller = self.agent.host.enter(self.tid())?;
            let fd = path.open(follow)?;
            let is_root = sys::mount_of(fd.as_raw_fd())?.1;
            if let Ok((table, id)) = statmount::around(fd.as_raw_fd(), below) {
                return Ok((table, Some(id), is_root));
            }
        }
        let table = Table {
            mounts: mountinfo::read(self.tid())?,
        };
        let _in_caller = self.agent.host.enter(self.tid())?;
        let fd = path.open(follow)?;
        let (id, is_root) = sys::mount_of(fd.as_raw_fd())?;
        Ok((table, Some(id), is_root))
    }

    /// The mountinfo id of the caller's root mount (see `Call::is_caller_root`).
    fn caller_root(&self) -> io::Result<u64> {
        let fd = sys::open(
            Path::new(&format!("/proc/{}/root", self.tid())),
            libc::O_PATH,
        )?;
        Ok(sys::mount_of(fd.as_raw_fd())?.0)
    }

    fn live(&self) -> bool {
        self.listener.still_valid(self.n.id)
    }

    fn mount(&self) -> Outcome {
        let flags = self.arg(3);
        let Some(target) = try_call!(self.string(1)) else {
            return Outcome::Continue; // EFAULT from the kernel
        };
        let target = try_call!(PathArg::prepare(self.tid(), libc::AT_FDCWD, target, true));
        if !self.live() {
            return Outcome::Done;
        }
        let initial = &self.tracked.initial;
        let has = |f: libc::c_ulong| flags & f != 0;
        if has(libc::MS_REMOUNT) {
            if has(libc::MS_RDONLY) {
                return self.remount_read_only(&target, has(libc::MS_BIND));
            }
            let (t, id, _) = try_call!(self.mount_at(&target, true, false));
            return match id.and_then(|id| t.by_id(id)) {
                Some(m) => initial.make_writable(&t, m, false).into(),
                None => Outcome::Continue,
            };
        }
        if has(libc::MS_BIND) || has(libc::MS_MOVE) {
            let Some(source) = try_call!(self.string(0)) else {
                return Outcome::Continue;
            };
            let source = try_call!(PathArg::prepare(self.tid(), libc::AT_FDCWD, source, true));
            let (t, id, is_root) = try_call!(self.mount_at(&source, true, has(libc::MS_BIND)));
            let Some(m) = id.and_then(|id| t.by_id(id)) else {
                return Outcome::Continue;
            };
            return if has(libc::MS_BIND) {
                initial.bind_from(&t, m, has(libc::MS_REC)).into()
            } else if is_root {
                initial.move_away(&t, m).into()
            } else {
                Outcome::Continue // the kernel's EINVAL
            };
        }
        if has(libc::MS_SHARED | libc::MS_PRIVATE | libc::MS_SLAVE | libc::MS_UNBINDABLE) {
            return Outcome::Continue;
        }
        let Some(fstype) = try_call!(self.string(2)) else {
            return Outcome::Continue;
        };
        let Some(kind) = newfs::Kind::from_fstype(&fstype) else {
            return Outcome::Continue;
        };
        if !view::may_mount(self.tid()) {
            return Outcome::Errno(libc::EPERM);
        }
        let options = try_call!(self.string(4)).unwrap_or_default();
        let overlays = match kind {
            newfs::Kind::Proc => &initial.proc_overlays,
            newfs::Kind::Sys => &initial.sys_overlays,
        };
        let req = newfs::Request {
            kind,
            tid: self.tid(),
            init_pid: self.tracked.init_pid,
            options: &options,
            attrs: newfs::attrs_of(flags),
            overlays,
        };
        let tree = match &self.agent.staging {
            None => try_call!(newfs::build(&self.agent.host, &req)),
            Some(staging) => try_call!(newfs::build_staged(&self.agent.host, staging, &req)),
        };
        if !self.live() {
            return Outcome::Done;
        }
        try_call!(newfs::attach(&self.agent.host, self.tid(), &tree, &target));
        tracing::debug!(
            id = self.tracked.id,
            ?kind,
            "new filesystem with the container's emulation"
        );
        Outcome::Value(0)
    }

    /// A read-only remount of a procfs or sysfs that carries the container's files: on a normal
    /// host all of /proc would turn read-only, so the files and masks on it do too (the kernel
    /// would change only the mount named). Other remounts are the kernel's.
    fn remount_read_only(&self, target: &PathArg, bind: bool) -> Outcome {
        let (t, id, is_root) = try_call!(self.mount_at(target, true, true));
        let Some(m) = id.and_then(|id| t.by_id(id)) else {
            return Outcome::Continue;
        };
        if !is_root || !matches!(m.fstype.as_str(), "proc" | "sysfs") || t.descendants(m).is_empty()
        {
            return Outcome::Continue;
        }
        if !view::may_mount(self.tid()) {
            return Outcome::Errno(libc::EPERM);
        }
        let kind = if m.fstype == "proc" {
            newfs::Kind::Proc
        } else {
            newfs::Kind::Sys
        };
        let data = try_call!(self.string(4)).unwrap_or_default();
        let options = try_call!(newfs::caller_options(kind, &data));
        let _in_caller = try_call!(self.agent.host.enter(self.tid()));
        let fd = try_call!(target.open(true));
        if !bind {
            let fs = try_call!(sys::FsContext::pick(fd.as_raw_fd()));
            for (k, v) in &options {
                try_call!(fs.set(k, v.as_deref()));
            }
            try_call!(fs.set("ro", None));
            try_call!(fs.reconfigure());
        }
        try_call!(sys::set_attrs(fd.as_raw_fd(), sys::MOUNT_ATTR_RDONLY));
        Outcome::Value(0)
    }

    fn umount(&self) -> Outcome {
        const UMOUNT_NOFOLLOW: u64 = 8;
        let follow = self.arg(1) & UMOUNT_NOFOLLOW == 0;
        let Some(target) = try_call!(self.string(0)) else {
            return Outcome::Continue;
        };
        let target = try_call!(PathArg::prepare(self.tid(), libc::AT_FDCWD, target, follow));
        if !self.live() {
            return Outcome::Done;
        }
        let (t, id, is_root) = try_call!(self.mount_at(&target, follow, false));
        match id.and_then(|id| t.by_id(id)) {
            Some(m) if is_root => {
                let root = try_call!(self.caller_root());
                self.tracked.initial.umount(&t, m, root).into()
            }
            // Not a mount point: the kernel's EINVAL.
            _ => Outcome::Continue,
        }
    }

    /// move_mount(from_dfd, from_path, to_dfd, to_path, flags).
    fn move_mount(&self) -> Outcome {
        const F_EMPTY_PATH: u64 = 0x4;
        const F_SYMLINKS: u64 = 0x1;
        let flags = self.arg(4);
        let empty_path = flags & F_EMPTY_PATH != 0;
        let Some(source) = try_call!(self.at_path(0, 1, empty_path, flags & F_SYMLINKS != 0))
        else {
            return Outcome::Continue;
        };
        if !self.live() {
            return Outcome::Done;
        }
        let (t, id, is_root) = try_call!(self.mount_at(&source, true, false));
        match id.and_then(|id| t.by_id(id)) {
            // Attached in the caller's namespace (a detached tree is not in its table).
            Some(m) if is_root => self.tracked.initial.move_away(&t, m).into(),
            _ => Outcome::Continue,
        }
    }

    /// mount_setattr(dfd, path, flags, attr, size): only clearing read-only matters.
    fn mount_setattr(&self) -> Outcome {
        let size = (self.arg(4) as usize).min(16);
        if size < 16 {
            return Outcome::Continue;
        }
        let attr = try_call!(notif::read_exact(self.tid(), self.arg(3), 16));
        let word = |i: usize| u64::from_ne_bytes(attr[i * 8..i * 8 + 8].try_into().unwrap());
        let (set, clear) = (word(0), word(1));
        if clear & sys::MOUNT_ATTR_RDONLY == 0 || set & sys::MOUNT_ATTR_RDONLY != 0 {
            return Outcome::Continue;
        }
        let flags = self.arg(2);
        let empty_path = flags & libc::AT_EMPTY_PATH as u64 != 0;
        let follow = flags & libc::AT_SYMLINK_NOFOLLOW as u64 == 0;
        let Some(path) = try_call!(self.at_path(0, 1, empty_path, follow)) else {
            return Outcome::Continue;
        };
        if !self.live() {
            return Outcome::Done;
        }
        let recursive = flags & libc::AT_RECURSIVE as u64 != 0;
        let (t, id, _) = try_call!(self.mount_at(&path, true, recursive));
        match id.and_then(|id| t.by_id(id)) {
            Some(m) => self.tracked.initial.make_writable(&t, m, recursive).into(),
            None => Outcome::Continue,
        }
    }

    /// openat2(dfd, path, how, size): a lodge-fs file is a mount of its own, so a lookup that
    /// must not cross mounts (RESOLVE_NO_XDEV, as runc ≥ 1.2 opens /proc/sys files) fails on
    /// it. Such an open is done here, without that restriction, and only if it lands on a
    /// lodge-fs file and the caller may open it; the fd is injected into the caller.
    fn openat2(&self) -> Outcome {
        let size = self.arg(3) as usize;
        if size < 24 {
            return Outcome::Continue;
        }
        let how = try_call!(notif::read_exact(self.tid(), self.arg(2), 24));
        let word = |i: usize| u64::from_ne_bytes(how[i * 8..i * 8 + 8].try_into().unwrap());
        let (flags, resolve) = (word(0), word(2));
        if resolve & sys::RESOLVE_NO_XDEV == 0 {
            return Outcome::Continue;
        }
        let Some(path) = try_call!(self.string(1)) else {
            return Outcome::Continue;
        };
        let arg = try_call!(PathArg::prepare(
            self.tid(),
            self.arg(0) as i32,
            path.clone(),
            true
        ));
        if !self.live() {
            return Outcome::Done;
        }
        // First only find what the path names (O_PATH: no side effect such as O_CREAT or
        // O_TRUNC as host root), and go on only for a lodge-fs file the caller may open.
        let lookup = sys::OpenHow {
            flags: (libc::O_PATH | libc::O_CLOEXEC) as u64 | flags & libc::O_NOFOLLOW as u64,
            mode: 0,
            resolve: resolve & !sys::RESOLVE_NO_XDEV,
        };
        let found = {
            let _in_caller = try_call!(self.agent.host.enter(self.tid()));
            let path = match &arg {
                PathArg::Opened(_) => return Outcome::Continue,
                PathArg::At(_, p) => p,
            };
            match sys::openat2(arg.dir_fd(), path, &lookup) {
                Ok(fd) => fd,
                Err(_) => return Outcome::Continue,
            }
        };
        if !self.is_emulated(&found) || !may_open(self.tid(), &found, flags) {
            return Outcome::Continue;
        }
        // Then open that very file with the caller's flags (it exists: no O_CREAT or O_EXCL).
        let reopen = flags & !((libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW) as u64)
            | libc::O_CLOEXEC as u64;
        let fd = try_call!(sys::openat(
            libc::AT_FDCWD,
            format!("/proc/self/fd/{}", found.as_raw_fd()).as_bytes(),
            reopen as i32
        ));
        let cloexec = flags & libc::O_CLOEXEC as u64 != 0;
        match self.listener.return_fd(self.n.id, fd.as_raw_fd(), cloexec) {
            Ok(()) => Outcome::Done,
            Err(e) => errno(e),
        }
    }

    /// sysinfo(2): the container's memory, uptime, load and task count (what its /proc/meminfo,
    /// uptime and loadavg say), so that busybox's `free` and `uptime`, and glibc's
    /// `sysconf(_SC_PHYS_PAGES)`, see the container. An unregistered container gets the kernel's.
    fn sysinfo(&self) -> Outcome {
        let registry = &self.agent.registry;
        let Some(c) = registry
            .slot_of(&self.tracked.id)
            .and_then(|s| registry.get(s))
        else {
            return Outcome::Continue;
        };
        let f = crate::files::proc::system_figures(&c);
        // SAFETY: a plain C struct, zeroed, then filled.
        let mut info: libc::sysinfo = unsafe { std::mem::zeroed() };
        info.uptime = f.uptime as libc::c_long;
        for (slot, load) in info.loads.iter_mut().zip(f.loads) {
            // Fixed point, SI_LOAD_SHIFT = 16.
            *slot = (load * 65536.0) as libc::c_ulong;
        }
        info.totalram = (f.total * 1024) as libc::c_ulong;
        info.freeram = (f.free * 1024) as libc::c_ulong;
        info.sharedram = (f.shared * 1024) as libc::c_ulong;
        info.procs = f.procs.min(u16::MAX as usize) as u16;
        info.mem_unit = 1;
        // SAFETY: viewing a plain C struct as its bytes.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&info as *const libc::sysinfo).cast::<u8>(),
                std::mem::size_of::<libc::sysinfo>(),
            )
        };
        if !self.live() {
            return Outcome::Done;
        }
        match notif::write_memory(self.tid(), self.arg(0), bytes) {
            Ok(()) => Outcome::Value(0),
            Err(_) => Outcome::Errno(libc::EFAULT),
        }
    }

    /// chown family (`LODGE_IGNORE_SYSFS_CHOWN`): chowning the root of a sysfs mount, which
    /// the host owns and the container's root cannot chown, succeeds and changes nothing, so
    /// images whose setup chowns /sys keep working. Everything else is the kernel's.
    /// `dirfd`: None for fchown (its fd is arg 0); `path_arg`: where the path is.
    fn chown(&self, dirfd: Option<i32>, path_arg: usize, follow: bool) -> Outcome {
        let empty_path = dirfd.is_some()
            && self.n.nr == libc::SYS_fchownat
            && self.arg(4) as i32 & libc::AT_EMPTY_PATH != 0;
        let target = match dirfd {
            None => try_call!(PathArg::dirfd(self.tid(), self.arg(0) as i32)),
            Some(dir) => {
                let Some(path) = try_call!(self.string(path_arg)) else {
                    return Outcome::Continue;
                };
                if path.is_empty() && empty_path {
                    try_call!(PathArg::dirfd(self.tid(), dir))
                } else {
                    try_call!(PathArg::prepare(self.tid(), dir, path, follow))
                }
            }
        };
        if !self.live() {
            return Outcome::Done;
        }
        let fd = {
            let _in_caller = try_call!(self.agent.host.enter(self.tid()));
            try_call!(target.open(follow))
        };
        if is_sysfs_root(&fd) {
            Outcome::Value(0)
        } else {
            Outcome::Continue
        }
    }

    /// xattr family (`LODGE_ALLOW_TRUSTED_XATTR`): `trusted.overlay.opaque`, which overlayfs
    /// inside needs on filesystems without user xattrs for overlay, can only be set by host
    /// root. lodge-fs sets, reads and removes it for a caller holding CAP_SYS_ADMIN, on files
    /// the container owns. Other names are the kernel's.
    fn xattr(&self, target: XattrTarget) -> Outcome {
        const NAME: &[u8] = b"trusted.overlay.opaque";
        let nr = self.n.nr;
        let Some(name) = try_call!(self.string(1)) else {
            return Outcome::Continue;
        };
        if name != NAME || !view::has_cap(self.tid(), view::CAP_SYS_ADMIN) {
            return Outcome::Continue;
        }
        let (path, follow) = match target {
            XattrTarget::Fd => (
                try_call!(PathArg::dirfd(self.tid(), self.arg(0) as i32)),
                true,
            ),
            XattrTarget::Path(follow) => {
                let Some(p) = try_call!(self.string(0)) else {
                    return Outcome::Continue;
                };
                (
                    try_call!(PathArg::prepare(self.tid(), libc::AT_FDCWD, p, follow)),
                    follow,
                )
            }
        };
        let value = if is_set(nr) {
            let size = (self.arg(3) as usize).min(65536);
            try_call!(notif::read_exact(self.tid(), self.arg(2), size))
        } else {
            Vec::new()
        };
        if !self.live() {
            return Outcome::Done;
        }
        let fd = {
            let _in_caller = try_call!(self.agent.host.enter(self.tid()));
            try_call!(path.open(follow))
        };
        let owner = {
            use std::os::unix::fs::MetadataExt;
            try_call!(fd
                .try_clone()
                .map(std::fs::File::from)
                .and_then(|f| f.metadata()))
            .uid()
        };
        if !view::uid_mapped(self.tid(), owner) {
            return Outcome::Errno(libc::EPERM);
        }
        let at = format!("/proc/self/fd/{}", fd.as_raw_fd());
        let result = if is_set(nr) {
            sys::setxattr(&at, NAME, &value, self.arg(4) as i32).map(|()| 0)
        } else if is_get(nr) {
            let size = (self.arg(3) as usize).min(65536);
            sys::getxattr(&at, NAME, size).and_then(|v| {
                if size > 0 {
                    notif::write_memory(self.tid(), self.arg(2), &v)?;
                }
                Ok(v.len() as i64)
            })
        } else {
            sys::removexattr(&at, NAME).map(|()| 0)
        };
        match result {
            Ok(v) => Outcome::Value(v),
            Err(e) => errno(e),
        }
    }

    fn is_emulated(&self, fd: &OwnedFd) -> bool {
        use std::os::unix::fs::MetadataExt;
        fd.try_clone()
            .map(std::fs::File::from)
            .and_then(|f| f.metadata())
            .is_ok_and(|m| m.dev() == self.agent.emulated_dev)
    }
}

/// Whether the caller's credentials allow opening `fd`'s file with `flags` (the agent opened
/// it as host root): its fsuid against the owner and mode, or CAP_DAC_OVERRIDE.
fn may_open(tid: i32, fd: &OwnedFd, flags: u64) -> bool {
    use std::os::unix::fs::MetadataExt;
    let fsuid: Option<u32> = std::fs::read_to_string(format!("/proc/{tid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().nth(3)?.parse().ok())
        });
    let Ok(md) = fd
        .try_clone()
        .map(std::fs::File::from)
        .and_then(|f| f.metadata())
    else {
        return false;
    };
    let want = match (flags & libc::O_ACCMODE as u64) as i32 {
        libc::O_WRONLY => 0o2,
        libc::O_RDWR => 0o6,
        _ => 0o4,
    };
    let bits = if fsuid == Some(md.uid()) {
        (md.mode() >> 6) & 0o7
    } else {
        md.mode() & 0o7
    };
    bits & want == want || view::has_cap(tid, view::CAP_DAC_OVERRIDE)
}

/// The root of a sysfs mount.
fn is_sysfs_root(fd: &OwnedFd) -> bool {
    const SYSFS_MAGIC: i64 = 0x6265_6572;
    // SAFETY: fstatfs into a zeroed struct.
    let magic = unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        if libc::fstatfs(fd.as_raw_fd(), &mut st) != 0 {
            return false;
        }
        st.f_type as i64
    };
    magic == SYSFS_MAGIC && sys::mount_of(fd.as_raw_fd()).is_ok_and(|(_, root)| root)
}

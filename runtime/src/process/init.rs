//! The container's init, from the clone until execve of the user's process.
//!
//! Runs in the child of lodge-runc (no re-exec). Any failure is reported to the parent over the
//! sync channel with its errno, and init exits.

use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;
use nix::unistd::{Gid, Uid};
use oci_spec::runtime::{PosixRlimitType, Process};

use super::caps::CapSets;
use super::channel::{Channel, Message};
use super::InitArgs;
use crate::rootfs::{self, RootfsContext};
use crate::sys;

/// A failure inside init: a message and the errno behind it (0 if none).
pub(super) struct Fail(pub(super) String, pub(super) i32);

impl<E: Into<std::io::Error>> From<(&str, E)> for Fail {
    fn from((what, e): (&str, E)) -> Fail {
        let e: std::io::Error = e.into();
        Fail(format!("{what}: {e}"), e.raw_os_error().unwrap_or(0))
    }
}

pub(super) fn ctx<T, E: Into<std::io::Error>>(what: &str, r: Result<T, E>) -> Result<T, Fail> {
    r.map_err(|e| Fail::from((what, e)))
}

fn rootfs_err(e: crate::rootfs::RootfsError) -> Fail {
    let errno = match &e {
        crate::rootfs::RootfsError::Mount { errno, .. }
        | crate::rootfs::RootfsError::Pivot { errno, .. } => *errno as i32,
        crate::rootfs::RootfsError::Io { source, .. } => source.raw_os_error().unwrap_or(0),
        _ => 0,
    };
    Fail(e.to_string(), errno)
}

pub fn run(args: &InitArgs, chan: Channel) -> ! {
    let code = match setup(args, &chan) {
        Ok(never) => match never {},
        Err(Fail(msg, errno)) => {
            let _ = chan.send(&Message::Error { msg, errno });
            1
        }
    };
    // SAFETY: leave without running the parent's atexit handlers or destructors.
    unsafe { libc::_exit(code) }
}

enum Never {}

fn setup(args: &InitArgs, chan: &Channel) -> Result<Never, Fail> {
    let plan = args.plan;
    // SAFETY: closing our copy of the state dir fd releases the parent's flock for later commands.
    unsafe { libc::close(args.state_dir_fd) };
    ctx("waiting for the runtime", chan.expect(Message::Go))?;
    for (flag, fd) in &plan.joins {
        ctx("setns", nix::sched::setns(fd, *flag))?;
    }
    if !plan.unshare_flags.is_empty() {
        ctx("unshare", nix::sched::unshare(plan.unshare_flags))?;
        if plan.unshare_flags.contains(CloneFlags::CLONE_NEWUSER) {
            ctx("sync", chan.send(&Message::MapRequest))?;
            ctx("waiting for ID maps", chan.expect(Message::MapsDone))?;
        }
    }
    if plan
        .unshare_flags
        .contains(CloneFlags::from_bits_retain(libc::CLONE_NEWTIME))
    {
        write_time_offsets(args.spec)?;
    }
    if plan.need_fork {
        ctx(
            "fork into the pid namespace",
            super::fork_reporting_pid(chan),
        )?;
    }
    // Still host root (its uid is unchanged until setresuid below): joining its v1 cgroups
    // needs no privilege over them.
    for dir in args.cgroup_self_join {
        ctx(
            &format!("joining cgroup {}", dir.display()),
            crate::cgroups::join_self(dir),
        )?;
    }
    if plan.userns {
        // Become root of the user namespace so files made during setup are owned by it.
        ctx(
            "setresgid(0)",
            nix::unistd::setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0)),
        )?;
        ctx(
            "setresuid(0)",
            nix::unistd::setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0)),
        )?;
    }
    if plan.new_cgroupns {
        ctx(
            "unshare cgroup namespace",
            nix::sched::unshare(CloneFlags::CLONE_NEWCGROUP),
        )?;
        if let Some(leaf) = args.cgroup_leaf {
            ctx(
                "joining init.scope",
                std::fs::write(leaf.join("cgroup.procs"), "0"),
            )?;
        }
    }
    // Every init is a session leader, as with runc.
    let _ = nix::unistd::setsid();
    if !args.no_new_keyring {
        if let Err(e) = sys::join_session_keyring(args.id) {
            // Keyrings may be unavailable (ENOSYS) or refused by policy; not fatal, as in runc.
            tracing::debug!(error = %e, "no new session keyring");
        }
    }
    let spec = args.spec;
    let process = spec.process().as_ref().expect("validated: process exists");
    // Without a mount namespace (allowed by the spec, as with runc) the mounts land in the
    // host's namespace under the rootfs: "/" is left alone, the root is entered with chroot,
    // and `delete` unmounts what was mounted.
    // In a user namespace init may be unable to reach the rootfs and bind sources by path
    // (Docker keeps them under root-only directories): the runtime opens them for it.
    let via_runtime = plan.userns && plan.mountns;
    let root_handle = if via_runtime {
        open_via_runtime(chan, args.rootfs, None)?.0
    } else {
        None
    };
    let root_tree = if via_runtime && *args.rootfs_idmap != rootfs::RootfsIdmap::None {
        ctx("sync", chan.send(&Message::RootfsTree))?;
        receive_opened(chan)?.0
    } else {
        None
    };
    let (sources, late_trees) = if via_runtime {
        bind_sources_via_runtime(chan, args)?
    } else {
        (vec![], vec![])
    };
    let mut rctx = RootfsContext {
        spec,
        rootfs: args.rootfs,
        bundle: args.bundle,
        userns: plan.userns,
        cgroupns: plan.new_cgroupns,
        netns: plan.netns,
        cgroup_layout: args.cgroup_layout,
        cgroup_paths: args.cgroup_paths,
        idmapped: args.idmapped,
        sources: &sources,
        late_trees: &late_trees,
    };
    let anchored;
    let rootfs_path;
    if plan.mountns {
        anchored = rootfs::prepare_root(&rctx, root_handle, root_tree).map_err(rootfs_err)?;
        if let Some(fd) = anchored {
            // From here on the rootfs is reached through the fd of its mount.
            rootfs_path = PathBuf::from(format!("/proc/self/fd/{fd}"));
            rctx.rootfs = &rootfs_path;
        }
    }
    let rootfs_dir = rctx.rootfs;
    rootfs::mount_all(&rctx).map_err(rootfs_err)?;
    rootfs::setup_dev(&rctx).map_err(rootfs_err)?;
    let cwd = rootfs::secure_join(rootfs_dir, process.cwd()).map_err(|e| Fail::from(("cwd", e)))?;
    rootfs::mkdir_all(&cwd).map_err(rootfs_err)?;
    if args.hook_point {
        ctx("sync", chan.send(&Message::HookPoint))?;
        ctx("createRuntime hooks", chan.expect(Message::HooksDone))?;
    }
    if let Some(hooks) = spec
        .hooks()
        .as_ref()
        .and_then(|h| h.create_container().clone())
    {
        let state = crate::ops::hook_state(
            args.id,
            crate::state::Status::Created,
            nix::unistd::getpid().as_raw(),
            args.bundle,
            spec,
        );
        crate::hooks::run_all("createContainer", &hooks, &state)
            .map_err(|e| Fail(e.to_string(), 0))?;
    }
    if plan.mountns {
        rootfs::enter_root(rootfs_dir, args.no_pivot).map_err(rootfs_err)?;
    } else {
        rootfs::chroot_into(rootfs_dir).map_err(rootfs_err)?;
    }

    let linux = spec.linux().as_ref().expect("validated: linux exists");
    if process.terminal() == Some(true) {
        let sock = args.console_socket.ok_or_else(|| {
            Fail(
                "process.terminal is true but no --console-socket was given".into(),
                0,
            )
        })?;
        setup_console(sock, process)?;
    }
    for (key, value) in linux.sysctl().iter().flatten() {
        let path = PathBuf::from("/proc/sys").join(key.replace('.', "/"));
        ctx(&format!("sysctl {key}"), std::fs::write(&path, value))?;
    }
    rootfs::mask_paths(linux.masked_paths().as_deref().unwrap_or_default()).map_err(rootfs_err)?;
    rootfs::readonly_paths(
        linux.readonly_paths().as_deref().unwrap_or_default(),
        plan.userns,
    )
    .map_err(rootfs_err)?;
    if spec.root().as_ref().and_then(|r| r.readonly()) == Some(true) {
        rootfs::readonly_root(plan.userns).map_err(rootfs_err)?;
    }
    if let Some(h) = spec.hostname().as_ref().filter(|h| !h.is_empty()) {
        ctx("sethostname", nix::unistd::sethostname(h))?;
    }
    if let Some(d) = spec.domainname().as_ref().filter(|d| !d.is_empty()) {
        let c = CString::new(d.as_str()).unwrap_or_default();
        // SAFETY: setdomainname with a valid buffer.
        if unsafe { libc::setdomainname(c.as_ptr(), d.len()) } != 0 {
            return Err(Fail::from((
                "setdomainname",
                std::io::Error::last_os_error(),
            )));
        }
    }

    if args.lock_mounts {
        ctx("sync", chan.send(&Message::LockMounts))?;
        let ns = match ctx("locking the mounts", chan.recv_with_fd())? {
            (Some(Message::MountsLocked), Some(fd)) => fd,
            (Some(Message::Error { msg, errno }), _) => return Err(Fail(msg, errno)),
            other => return Err(Fail(format!("locking the mounts: unexpected {other:?}"), 0)),
        };
        ctx(
            "joining the locked mount namespace",
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNS),
        )?;
    }
    if let Some(p) = linux.personality() {
        ctx("personality", super::sched::apply_personality(p))?;
    }
    let mut prepared = prepare(process, linux.seccomp().as_ref())?;
    prepared.hand_over_notify_fd(chan)?;

    ctx("sync", chan.send(&Message::Ready))?;
    // Block until `start` connects to the exec socket.
    let conn = loop {
        // SAFETY: accept on the inherited listening socket.
        let fd = unsafe {
            libc::accept4(
                args.exec_listener,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC,
            )
        };
        if fd >= 0 {
            // SAFETY: a fresh fd from accept.
            break unsafe { OwnedFd::from_raw_fd(fd) };
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            // Nobody is left to report to: exit quietly.
            unsafe { libc::_exit(1) }
        }
    };
    // SAFETY: the listener is not needed any more.
    unsafe { libc::close(args.exec_listener) };
    let mut conn = std::fs::File::from(conn);
    let mut byte = [0u8; 1];
    let _ = conn.read(&mut byte);
    let report = |conn: &mut std::fs::File, msg: String| -> ! {
        let _ = conn.write_all(msg.as_bytes());
        unsafe { libc::_exit(127) }
    };
    if let Some(hooks) = spec
        .hooks()
        .as_ref()
        .and_then(|h| h.start_container().clone())
    {
        let state = crate::ops::hook_state(
            args.id,
            crate::state::Status::Running,
            nix::unistd::getpid().as_raw(),
            args.bundle,
            spec,
        );
        if let Err(e) = crate::hooks::run_all("startContainer", &hooks, &state) {
            report(&mut conn, e.to_string());
        }
    }
    reset_signals();
    let err = prepared.exec(args.preserve_fds);
    report(&mut conn, err)
}

/// `linux.timeOffsets`: only possible between unshare(CLONE_NEWTIME) and the first process
/// entering the namespace (the fork that follows).
/// Asks the runtime to open `path` (see `Message::OpenPath`): the fd, and whether it is an
/// ID-mapped tree.
fn open_via_runtime(
    chan: &Channel,
    path: &Path,
    idmap: Option<rootfs::idmap::Deferred>,
) -> Result<(Option<OwnedFd>, bool), Fail> {
    ctx(
        "sync",
        chan.send(&Message::OpenPath {
            path: path.display().to_string(),
            idmap,
        }),
    )?;
    receive_opened(chan)
}

fn receive_opened(chan: &Channel) -> Result<(Option<OwnedFd>, bool), Fail> {
    match ctx("sync", chan.recv_with_fd())? {
        (Some(Message::Opened { idmapped }), fd) => Ok((fd, idmapped)),
        (Some(Message::Error { msg, errno }), _) => Err(Fail(msg, errno)),
        (other, _) => Err(Fail(format!("sync: expected Opened, got {other:?}"), 0)),
    }
}

type Indexed = Vec<(usize, OwnedFd)>;

/// The sources of the spec's bind mounts not prepared before the clone: plain handles, and the
/// trees ID-mapped through this user namespace.
fn bind_sources_via_runtime(chan: &Channel, args: &InitArgs) -> Result<(Indexed, Indexed), Fail> {
    let (mut sources, mut trees) = (vec![], vec![]);
    for (i, m) in args.spec.mounts().iter().flatten().enumerate() {
        if !rootfs::is_bind(m) || args.idmapped.iter().any(|(j, _)| *j == i) {
            continue;
        }
        let source = m.source().clone().unwrap_or_default();
        let source = if source.is_absolute() {
            source
        } else {
            args.bundle.join(source)
        };
        let idmap = rootfs::idmap::deferred(m, args.spec, args.plan.new_userns);
        match open_via_runtime(chan, &source, idmap)? {
            (Some(fd), true) => trees.push((i, fd)),
            (Some(fd), false) => sources.push((i, fd)),
            (None, _) => {}
        }
    }
    Ok((sources, trees))
}

fn write_time_offsets(spec: &oci_spec::runtime::Spec) -> Result<(), Fail> {
    let offsets = spec
        .linux()
        .as_ref()
        .and_then(|l| l.time_offsets().clone())
        .unwrap_or_default();
    let mut text = String::new();
    for (clock, off) in &offsets {
        let id = match clock.as_str() {
            "monotonic" => "monotonic",
            "boottime" => "boottime",
            other => {
                return Err(Fail(
                    format!("timeOffsets: unknown clock {other:?} (monotonic or boottime)"),
                    libc::EINVAL,
                ))
            }
        };
        text.push_str(&format!(
            "{id} {} {}\n",
            off.secs().unwrap_or(0),
            off.nanosecs().unwrap_or(0)
        ));
    }
    if !text.is_empty() {
        ctx(
            "writing timens_offsets",
            std::fs::write("/proc/self/timens_offsets", text),
        )?;
    }
    Ok(())
}

/// A process ready to execve: path resolved, environment built, privileges dropped — except
/// CAP_SYS_ADMIN while a seccomp filter still has to be loaded without no_new_privs.
pub(super) struct Prepared {
    exe: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
    filter: Option<libseccomp::ScmpFilterContext>,
    /// The filter hands syscalls to an agent: it is loaded early, see `load_for_notify`.
    notify: bool,
    caps: CapSets,
    keep_admin: bool,
}

/// Applies rlimits, the bounding set, the user, capabilities, no_new_privs, cwd and umask, and
/// resolves the executable in the (already entered) container root. Shared by init and exec.
pub(super) fn prepare(
    process: &Process,
    seccomp: Option<&oci_spec::runtime::LinuxSeccomp>,
) -> Result<Prepared, Fail> {
    let filter = match seccomp {
        Some(s) => Some(crate::seccomp::build(s).map_err(|e| Fail(e.to_string(), 0))?),
        None => None,
    };
    let nnp = process.no_new_privileges() == Some(true);
    // As runc: set while still root in the container, entered at the execve.
    if let Some(profile) =
        crate::apparmor::effective_profile(process.apparmor_profile().as_deref(), false)
    {
        crate::apparmor::change_onexec(&profile).map_err(|e| Fail(e.to_string(), 0))?;
    }
    set_rlimits(process)?;
    ctx("scheduler", super::sched::apply_scheduler(process))?;
    ctx("ioPriority", super::sched::apply_io_priority(process))?;
    let caps = CapSets::from_spec(process.capabilities().as_ref());
    ctx("dropping bounding capabilities", caps.apply_bounding())?;
    switch_user(process)?;
    // Loading a filter without no_new_privs needs CAP_SYS_ADMIN; keep it only until then.
    let keep_admin = filter.is_some() && !nnp;
    let setup_caps = if keep_admin {
        caps.with_sys_admin()
    } else {
        caps.clone()
    };
    ctx("setting capabilities", setup_caps.apply_process())?;
    if nnp {
        // SAFETY: plain prctl.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(Fail::from((
                "no_new_privs",
                std::io::Error::last_os_error(),
            )));
        }
    }
    ctx(
        &format!("chdir {}", process.cwd().display()),
        nix::unistd::chdir(process.cwd()),
    )?;
    let env = environment(process);
    let args = process.args().clone().unwrap_or_default();
    let first = args
        .first()
        .ok_or_else(|| Fail("process.args must not be empty".into(), libc::EINVAL))?;
    let exe = find_executable(first, &env)?;
    let cstrings = |v: &[String]| {
        v.iter()
            .map(|a| CString::new(a.as_str()).unwrap_or_default())
            .collect()
    };
    // SAFETY: umask never fails.
    unsafe { libc::umask(process.user().umask().unwrap_or(0o022) as libc::mode_t) };
    Ok(Prepared {
        exe,
        argv: cstrings(&args),
        envp: cstrings(&env),
        notify: seccomp.is_some_and(crate::seccomp::uses_notify),
        filter,
        caps,
        keep_admin,
    })
}

impl Prepared {
    fn load_filter(&mut self) -> Result<Option<libseccomp::ScmpFilterContext>, String> {
        let Some(filter) = self.filter.take() else {
            return Ok(None);
        };
        filter
            .load()
            .map_err(|e| format!("loading the seccomp filter: {e}"))?;
        if self.keep_admin {
            self.caps.apply_process().map_err(|e| {
                format!("dropping CAP_SYS_ADMIN after loading the seccomp filter: {e}")
            })?;
        }
        Ok(Some(filter))
    }

    /// A filter with SCMP_ACT_NOTIFY is loaded before the process is released (as runc does),
    /// so the runtime can hand its listener fd to the agent first. Returns that fd.
    fn load_for_notify(&mut self) -> Result<Option<OwnedFd>, Fail> {
        if !self.notify {
            return Ok(None);
        }
        let filter = self
            .load_filter()
            .map_err(|e| Fail(e, 0))?
            .expect("notify implies a filter");
        let fd = filter
            .get_notify_fd()
            .map_err(|e| Fail(format!("seccomp notify fd: {e}"), 0))?;
        // SAFETY: the listener fd belongs to this process; libseccomp does not close it.
        Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// With a notify filter: loads it and sends the listener fd to the runtime over `chan`,
    /// waiting until the runtime handed it to the agent.
    pub(super) fn hand_over_notify_fd(&mut self, chan: &Channel) -> Result<(), Fail> {
        if let Some(fd) = self.load_for_notify()? {
            ctx(
                "sending the seccomp notify fd",
                chan.send_with_fd(&Message::SeccompFd, fd.as_raw_fd()),
            )?;
            ctx(
                "handing the seccomp fd to the listener",
                chan.expect(Message::SeccompFdDone),
            )?;
        }
        Ok(())
    }

    /// The seccomp filter goes last, so none of the runtime's own syscalls are filtered; then
    /// fds above the preserved ones are closed on exec. Returns only if execve failed.
    pub(super) fn exec(mut self, preserve_fds: i32) -> String {
        if let Err(e) = self.load_filter() {
            return e;
        }
        if let Err(e) = sys::cloexec_from(3 + preserve_fds) {
            return format!("closing file descriptors: {e}");
        }
        let argv: Vec<*const libc::c_char> = self
            .argv
            .iter()
            .map(|a| a.as_ptr())
            .chain([std::ptr::null()])
            .collect();
        let envp: Vec<*const libc::c_char> = self
            .envp
            .iter()
            .map(|a| a.as_ptr())
            .chain([std::ptr::null()])
            .collect();
        // SAFETY: NULL-terminated argv/envp that outlive the call.
        unsafe { libc::execve(self.exe.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
        format!("exec {:?}: {}", self.exe, std::io::Error::last_os_error())
    }
}

/// Opens a pty in the container's devpts, hands the master to the console socket (as runc
/// does, SCMP_RIGHTS with "/dev/ptmx" as payload), binds the slave to /dev/console and makes it
/// the controlling terminal and stdio.
fn setup_console(sock: RawFd, process: &Process) -> Result<(), Fail> {
    let (slave, slave_path) = open_terminal(sock, process)?;
    let console = Path::new("/dev/console");
    if !console.exists() {
        ctx("create /dev/console", std::fs::File::create(console))?;
    }
    ctx(
        "mount /dev/console",
        nix::mount::mount(
            Some(slave_path.as_str()),
            console,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        ),
    )?;
    make_controlling_terminal(&slave)
}

/// Opens a new pty from /dev/ptmx, sends its master over `sock` and closes `sock`.
/// Returns the slave and its path.
pub(super) fn open_terminal(
    sock: RawFd,
    process: &Process,
) -> Result<(std::fs::File, String), Fail> {
    let master = ctx(
        "open /dev/ptmx",
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags_noctty()
            .open("/dev/ptmx"),
    )?;
    let m = master.as_raw_fd();
    let unlock: libc::c_int = 0;
    let mut n: libc::c_uint = 0;
    // SAFETY: pty ioctls on our master fd with valid pointers.
    unsafe {
        if libc::ioctl(m, libc::TIOCSPTLCK, &unlock) != 0
            || libc::ioctl(m, libc::TIOCGPTN, &mut n) != 0
        {
            return Err(Fail::from((
                "unlocking pty",
                std::io::Error::last_os_error(),
            )));
        }
    }
    if let Some(size) = process.console_size() {
        let ws = libc::winsize {
            ws_row: size.height() as u16,
            ws_col: size.width() as u16,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: valid winsize pointer.
        unsafe { libc::ioctl(m, libc::TIOCSWINSZ, &ws) };
    }
    let slave_path = format!("/dev/pts/{n}");
    let slave = ctx(
        "open pty slave",
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags_noctty()
            .open(&slave_path),
    )?;
    ctx(
        "sending pty master to --console-socket",
        sys::send_fds(sock, b"/dev/ptmx", &[m]),
    )?;
    drop(master);
    // SAFETY: the console socket fd is ours to close now.
    unsafe { libc::close(sock) };
    Ok((slave, slave_path))
}

/// Makes `slave` the controlling terminal (the caller is a session leader) and fds 0-2.
pub(super) fn make_controlling_terminal(slave: &std::fs::File) -> Result<(), Fail> {
    let s = slave.as_raw_fd();
    // SAFETY: make the slave our controlling terminal and stdio.
    unsafe {
        if libc::ioctl(s, libc::TIOCSCTTY, 0) != 0 {
            return Err(Fail::from(("TIOCSCTTY", std::io::Error::last_os_error())));
        }
        for target in 0..3 {
            if libc::dup2(s, target) < 0 {
                return Err(Fail::from(("dup2 pty", std::io::Error::last_os_error())));
            }
        }
    }
    Ok(())
}

trait NoCtty {
    fn custom_flags_noctty(&mut self) -> &mut Self;
}

impl NoCtty for std::fs::OpenOptions {
    fn custom_flags_noctty(&mut self) -> &mut Self {
        std::os::unix::fs::OpenOptionsExt::custom_flags(self, libc::O_NOCTTY | libc::O_CLOEXEC)
    }
}

fn rlimit_resource(t: PosixRlimitType) -> libc::__rlimit_resource_t {
    use PosixRlimitType::*;
    match t {
        RlimitCpu => libc::RLIMIT_CPU,
        RlimitFsize => libc::RLIMIT_FSIZE,
        RlimitData => libc::RLIMIT_DATA,
        RlimitStack => libc::RLIMIT_STACK,
        RlimitCore => libc::RLIMIT_CORE,
        RlimitRss => libc::RLIMIT_RSS,
        RlimitNproc => libc::RLIMIT_NPROC,
        RlimitNofile => libc::RLIMIT_NOFILE,
        RlimitMemlock => libc::RLIMIT_MEMLOCK,
        RlimitAs => libc::RLIMIT_AS,
        RlimitLocks => libc::RLIMIT_LOCKS,
        RlimitSigpending => libc::RLIMIT_SIGPENDING,
        RlimitMsgqueue => libc::RLIMIT_MSGQUEUE,
        RlimitNice => libc::RLIMIT_NICE,
        RlimitRtprio => libc::RLIMIT_RTPRIO,
        RlimitRttime => libc::RLIMIT_RTTIME,
    }
}

fn set_rlimits(process: &Process) -> Result<(), Fail> {
    for r in process.rlimits().iter().flatten() {
        let lim = libc::rlimit {
            rlim_cur: r.soft(),
            rlim_max: r.hard(),
        };
        // SAFETY: setrlimit with a valid struct.
        if unsafe { libc::setrlimit(rlimit_resource(r.typ()), &lim) } != 0 {
            return Err(Fail::from((
                format!("setrlimit {}", r.typ()).as_str(),
                std::io::Error::last_os_error(),
            )));
        }
    }
    Ok(())
}

fn switch_user(process: &Process) -> Result<(), Fail> {
    let user = process.user();
    // SAFETY: keep the permitted set across the uid change; capset trims it right after.
    unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) };
    let groups: Vec<Gid> = user
        .additional_gids()
        .iter()
        .flatten()
        .map(|g| Gid::from_raw(*g))
        .collect();
    if let Err(e) = nix::unistd::setgroups(&groups) {
        // With setgroups denied (an unprivileged user namespace) only an empty list is fine.
        if !(groups.is_empty() && e == nix::errno::Errno::EPERM) {
            return Err(Fail::from(("setgroups", e)));
        }
    }
    let gid = Gid::from_raw(user.gid());
    let uid = Uid::from_raw(user.uid());
    ctx(
        &format!("setresgid({})", user.gid()),
        nix::unistd::setresgid(gid, gid, gid),
    )?;
    ctx(
        &format!("setresuid({})", user.uid()),
        nix::unistd::setresuid(uid, uid, uid),
    )?;
    unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) };
    Ok(())
}

/// The process environment, with HOME filled in from the container's /etc/passwd like runc.
fn environment(process: &Process) -> Vec<String> {
    let mut env: Vec<String> = process.env().clone().unwrap_or_default();
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        let uid = process.user().uid().to_string();
        let home = std::fs::read_to_string("/etc/passwd")
            .ok()
            .and_then(|p| {
                p.lines().find_map(|l| {
                    let f: Vec<&str> = l.split(':').collect();
                    (f.len() >= 6 && f[2] == uid).then(|| f[5].to_string())
                })
            })
            .unwrap_or_else(|| "/".into());
        env.push(format!("HOME={home}"));
    }
    env
}

fn find_executable(arg0: &str, env: &[String]) -> Result<CString, Fail> {
    let executable = |p: &Path| {
        let c = CString::new(p.as_os_str().as_encoded_bytes()).unwrap_or_default();
        // SAFETY: access with a valid C string.
        p.is_file() && unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0
    };
    if arg0.contains('/') {
        let p = Path::new(arg0);
        if executable(p) {
            return Ok(CString::new(arg0).unwrap_or_default());
        }
        return Err(Fail(
            format!("exec: {arg0:?}: no such executable file in the container"),
            libc::ENOENT,
        ));
    }
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let candidate = Path::new(dir).join(arg0);
        if executable(&candidate) {
            return Ok(CString::new(candidate.as_os_str().as_encoded_bytes()).unwrap_or_default());
        }
    }
    Err(Fail(
        format!("exec: {arg0:?}: executable file not found in $PATH"),
        libc::ENOENT,
    ))
}

/// Rust ignores SIGPIPE and the caller may have blocked signals; the container starts clean.
pub(super) fn reset_signals() {
    // SAFETY: resetting dispositions and the mask of our own process.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

//! A new process in a running container (`exec`): join its cgroups and namespaces (the user
//! namespace first), fork into its pid namespace, and run the container's process setup.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use nix::sched::CloneFlags;
use oci_spec::runtime::{LinuxSeccomp, Process};

use super::channel::{Channel, Message};
use super::init::{ctx, make_controlling_terminal, open_terminal, prepare, reset_signals, Fail};
use super::ProcessError;
use crate::cgroups::Cgroup;
use crate::sys::{self, Forked};

/// The namespaces of a container init that differ from ours, user namespace first.
pub fn namespaces_of(pid: i32) -> Result<Vec<(CloneFlags, OwnedFd)>, ProcessError> {
    use std::os::unix::fs::MetadataExt;
    let kinds = [
        ("user", CloneFlags::CLONE_NEWUSER),
        ("mnt", CloneFlags::CLONE_NEWNS),
        ("pid", CloneFlags::CLONE_NEWPID),
        ("ipc", CloneFlags::CLONE_NEWIPC),
        ("uts", CloneFlags::CLONE_NEWUTS),
        ("net", CloneFlags::CLONE_NEWNET),
        ("cgroup", CloneFlags::CLONE_NEWCGROUP),
        ("time", CloneFlags::from_bits_retain(libc::CLONE_NEWTIME)),
    ];
    let mut out = vec![];
    for (name, flag) in kinds {
        let theirs = format!("/proc/{pid}/ns/{name}");
        let err = |source| ProcessError::NamespacePath {
            kind: name.into(),
            path: theirs.clone().into(),
            source,
        };
        let Ok(their_md) = std::fs::metadata(&theirs) else {
            continue;
        };
        let ours = std::fs::metadata(format!("/proc/self/ns/{name}")).map_err(err)?;
        if (their_md.dev(), their_md.ino()) != (ours.dev(), ours.ino()) {
            out.push((flag, std::fs::File::open(&theirs).map_err(err)?.into()));
        }
    }
    Ok(out)
}

pub struct ExecArgs<'a> {
    /// For the seccomp listener's state message: the container and its init's pid.
    pub id: &'a str,
    pub init_pid: i32,
    pub bundle: &'a std::path::Path,
    pub process: &'a Process,
    pub seccomp: Option<&'a LinuxSeccomp>,
    pub namespaces: &'a [(CloneFlags, OwnedFd)],
    pub console_socket: Option<RawFd>,
    pub preserve_fds: i32,
    /// Write end of a close-on-exec pipe: the process writes why its execve failed here.
    pub error_pipe: RawFd,
}

/// Starts the process; returns its host pid once it is in the container (the execve itself is
/// reported through `error_pipe`).
pub fn spawn(args: &ExecArgs, cgroup: &Cgroup) -> Result<i32, ProcessError> {
    let (parent_end, child_end) = Channel::pair().map_err(ProcessError::Sync)?;
    // The process joins its v1 cgroups itself (no global lock, see Cgroup::split_self_join).
    let (self_join, placed_by_runtime) = cgroup.split_self_join();
    let child = match sys::fork_with_flags(0).map_err(ProcessError::Clone)? {
        Forked::Child => {
            drop(parent_end);
            let code = match enter(args, &self_join, &child_end) {
                Ok(never) => match never {},
                Err(Fail(msg, errno)) => {
                    let _ = child_end.send(&Message::Error { msg, errno });
                    1
                }
            };
            // SAFETY: leave without running the parent's destructors.
            unsafe { libc::_exit(code) }
        }
        Forked::Parent(pid) => pid,
    };
    drop(child_end);
    let result = (|| {
        // The intermediate process joins the cgroups first; the final process inherits them.
        placed_by_runtime.add_pid(child)?;
        parent_end.send(&Message::Go).map_err(ProcessError::Sync)?;
        let pid = match parent_end.recv().map_err(ProcessError::Sync)? {
            Some(Message::InitPid { pid }) => pid,
            Some(Message::Error { msg, errno }) => return Err(ProcessError::Init { msg, errno }),
            _ => return Err(ProcessError::InitDied),
        };
        if let Some(seccomp) = args.seccomp.filter(|s| crate::seccomp::uses_notify(s)) {
            // The process loads its filter before execve and hands the listener fd over.
            // (Anything else means the process failed before loading its filter; the error pipe
            // says why.)
            if let (Some(Message::SeccompFd), Some(fd)) =
                parent_end.recv_with_fd().map_err(ProcessError::Sync)?
            {
                let state = serde_json::json!({
                    "ociVersion": crate::OCI_SPEC_VERSION, "id": args.id, "status": "running",
                    "pid": args.init_pid, "bundle": args.bundle,
                });
                crate::seccomp::send_to_listener(seccomp, fd.as_raw_fd(), pid, state)?;
                parent_end
                    .send(&Message::SeccompFdDone)
                    .map_err(ProcessError::Sync)?;
            }
        }
        Ok(pid)
    })();
    if result.is_err() {
        let _ =
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(child), nix::sys::signal::SIGKILL);
    }
    let status = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(child), None);
    match result {
        // Say how the helper ended: it reports its own failures, so this is a signal or a bug.
        Err(ProcessError::InitDied) => Err(ProcessError::ExecHelperDied(format!("{status:?}"))),
        other => other,
    }
}

enum Never {}

fn enter(args: &ExecArgs, self_join: &[std::path::PathBuf], chan: &Channel) -> Result<Never, Fail> {
    ctx("waiting for the runtime", chan.expect(Message::Go))?;
    for dir in self_join {
        ctx(
            &format!("joining cgroup {}", dir.display()),
            crate::cgroups::join_self(dir),
        )?;
    }
    let mut in_userns = false;
    for (flag, fd) in args.namespaces {
        ctx("setns", nix::sched::setns(fd, *flag))?;
        in_userns |= *flag == CloneFlags::CLONE_NEWUSER;
    }
    // The pid and time namespaces apply to children: the process proper is forked now.
    ctx("fork into the container", super::fork_reporting_pid(chan))?;
    // From here on the runtime reads only the error pipe.
    match finish(args, in_userns, chan) {
        Ok(never) => match never {},
        Err(Fail(msg, _)) => report(args.error_pipe, &msg),
    }
}

fn finish(args: &ExecArgs, in_userns: bool, chan: &Channel) -> Result<Never, Fail> {
    if in_userns {
        let root = nix::unistd::Gid::from_raw(0);
        ctx("setresgid(0)", nix::unistd::setresgid(root, root, root))?;
        let root = nix::unistd::Uid::from_raw(0);
        ctx("setresuid(0)", nix::unistd::setresuid(root, root, root))?;
    }
    let _ = nix::unistd::setsid();
    if args.process.terminal() == Some(true) {
        let sock = args
            .console_socket
            .ok_or_else(|| Fail("--tty (process.terminal) needs --console-socket".into(), 0))?;
        let (slave, _) = open_terminal(sock, args.process)?;
        make_controlling_terminal(&slave)?;
    }
    let mut prepared = prepare(args.process, args.seccomp)?;
    prepared.hand_over_notify_fd(chan)?;
    reset_signals();
    let err = prepared.exec(args.preserve_fds);
    report(args.error_pipe, &err)
}

fn report(pipe: RawFd, msg: &str) -> ! {
    // SAFETY: write to our pipe, then leave.
    unsafe {
        libc::write(pipe, msg.as_ptr().cast(), msg.len());
        libc::_exit(127)
    }
}

/// A close-on-exec pipe: (read end, write end).
pub fn error_pipe() -> std::io::Result<(std::fs::File, OwnedFd)> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from)?;
    Ok((std::fs::File::from(r), w))
}

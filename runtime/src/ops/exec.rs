//! `exec`: run a new process in a created or running container.

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;

use oci_spec::runtime::Process;

use crate::cgroups::Cgroup;
use crate::error::{Error, Result};
use crate::process::exec::{self, ExecArgs};
use crate::state::{write_atomic, Status};

use super::start::wait_forwarding_signals;
use super::Globals;

#[derive(Debug)]
pub struct ExecOptions {
    pub process: Process,
    pub console_socket: Option<PathBuf>,
    pub detach: bool,
    pub pid_file: Option<PathBuf>,
    pub preserve_fds: i32,
}

/// Starts the process. Detached: returns 0 once it is exec'd. Otherwise waits for it,
/// forwarding signals, and returns its exit code (128+signal when killed).
pub fn exec(g: &Globals, id: &str, opts: &ExecOptions) -> Result<i32> {
    crate::spec::check_security_labels(&opts.process)?;
    // Engines pass the container's environment to exec'd processes too: knobs never reach them.
    let mut process = opts.process.clone();
    let mut env = process.env().clone().unwrap_or_default();
    crate::knobs::take(&mut env)?;
    process.set_env(Some(env));
    let running = [Status::Created, Status::Running];
    let (dir, st) = super::open_in(
        g,
        id,
        &running,
        "cannot exec in a container that is not running",
    )?;
    if st.system_capabilities {
        crate::syscont::system_capabilities(&mut process);
    }
    if st.system {
        crate::syscont::drop_engine_apparmor_profile(&mut process);
    }
    let spec = dir.load_config();
    let seccomp = spec
        .as_ref()
        .and_then(|s| s.linux().as_ref())
        .and_then(|l| l.seccomp().as_ref());
    let namespaces = exec::namespaces_of(st.init_pid)?;
    // A terminal without --console-socket is served by exec itself (foreground only).
    let wants_tty = opts.console_socket.is_none() && process.terminal() == Some(true);
    if wants_tty && opts.detach {
        return Err(Error::Exec(
            "a terminal with --detach needs --console-socket".into(),
        ));
    }
    let own_console = wants_tty
        .then(super::console::ForegroundConsole::new)
        .transpose()?;
    let console_path = opts
        .console_socket
        .clone()
        .or_else(|| own_console.as_ref().map(|c| c.path.clone()));
    let console = console_path
        .as_deref()
        .map(|p| {
            std::os::unix::net::UnixStream::connect(p)
                .map(OwnedFd::from)
                .map_err(Error::io(format!(
                    "connecting to --console-socket {}",
                    p.display()
                )))
        })
        .transpose()?;
    let (mut errors, error_w) = exec::error_pipe().map_err(Error::io("pipe"))?;
    if !opts.detach {
        // The process is a grandchild (it must be forked inside the pid namespace): reap it.
        // SAFETY: plain prctl.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    }
    let args = ExecArgs {
        id,
        init_pid: st.init_pid,
        bundle: &st.bundle,
        process: &process,
        seccomp,
        namespaces: &namespaces,
        console_socket: console.as_ref().map(|c| c.as_raw_fd()),
        preserve_fds: opts.preserve_fds,
        error_pipe: error_w.as_raw_fd(),
    };
    let joined = if st.delegated_cgroup_paths.is_empty() {
        Cgroup::from_paths(st.cgroup_paths.clone())
    } else {
        Cgroup::from_paths(st.delegated_cgroup_paths.clone()).delegated_leaves()
    };
    let pid = exec::spawn(&args, &joined)?;
    // Other commands on this container need not wait for this process.
    drop(dir);
    drop(error_w);
    drop(console);
    let mut report = String::new();
    let _ = errors.read_to_string(&mut report);
    if !report.is_empty() {
        if !opts.detach {
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
        }
        return Err(Error::Exec(report));
    }
    if let Some(pid_file) = &opts.pid_file {
        write_atomic(pid_file, pid.to_string().as_bytes(), 0o644)?;
    }
    if opts.detach {
        return Ok(0);
    }
    match own_console {
        Some(c) => {
            let master = c.receive_master()?;
            super::start::install_forwarding(pid);
            Ok(super::console::proxy_until_exit(master, pid))
        }
        None => Ok(wait_forwarding_signals(pid)),
    }
}

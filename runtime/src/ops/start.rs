//! `start` and `run`.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicI32, Ordering};

use crate::error::{Error, Result};
use crate::hooks;
use crate::state::{StateDir, Status, EXEC_SOCKET};

use super::{create, delete, hook_state, CreateOptions, Globals};

/// Starts a created container: releases init, which execs the user's process.
/// Returns once the process is exec'd (or reports why it could not be).
pub fn start(g: &Globals, id: &str) -> Result<()> {
    let dir = StateDir::open(&g.root, id)?;
    let mut st = dir.load()?;
    let status = st.status(&dir.path);
    if status != Status::Created {
        return Err(Error::WrongStatus {
            id: id.into(),
            status,
            action: "only a created container can be started",
        });
    }
    let sock = dir.short_path(EXEC_SOCKET);
    let mut conn = std::os::unix::net::UnixStream::connect(&sock)
        .map_err(Error::io("connecting to container init"))?;
    conn.write_all(&[0])
        .map_err(Error::io("releasing container init"))?;
    let _ = std::fs::remove_file(dir.path.join(EXEC_SOCKET));
    st.started = true;
    dir.save(&st)?;
    // init closes the connection by exec'ing (close-on-exec) or writes why it failed.
    let mut report = String::new();
    let _ = conn.read_to_string(&mut report);
    if !report.is_empty() {
        return Err(Error::Exec(report));
    }
    if let Some(spec) = dir.load_config() {
        if let Some(h) = spec.hooks().as_ref().and_then(|h| h.poststart().clone()) {
            let state = hook_state(id, Status::Running, st.init_pid, &st.bundle, &spec);
            // A failing poststart hook is logged; the container keeps running (runtime-spec).
            if let Err(e) = hooks::run_all("poststart", &h, &state) {
                tracing::warn!(error = %e, "poststart hook failed");
            }
        }
    }
    Ok(())
}

static FORWARD_TO: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward(sig: libc::c_int) {
    let pid = FORWARD_TO.load(Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(pid, sig) };
    }
}

/// `run`: create and start; in the foreground, forward signals to init, wait for it, delete
/// the container and return its exit code (128+signal when killed, like a shell).
pub fn run(g: &Globals, id: &str, opts: &CreateOptions, detach: bool) -> Result<i32> {
    if !detach {
        // Init may be a grandchild (pid namespace joined by path): become its reaper.
        // SAFETY: plain prctl.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    }
    // runc's behaviour: a terminal without --console-socket is served by run itself.
    let wants_tty = opts.console_socket.is_none() && process_wants_terminal(&opts.bundle);
    if wants_tty && detach {
        return Err(Error::Exec(
            "a terminal with --detach needs --console-socket".into(),
        ));
    }
    let console = wants_tty
        .then(super::console::ForegroundConsole::new)
        .transpose()?;
    let mut opts = opts.clone();
    if let Some(c) = &console {
        opts.console_socket = Some(c.path.clone());
    }
    let pid = create(g, id, &opts)?;
    let master = match &console {
        Some(c) => match c.receive_master() {
            Ok(m) => Some(m),
            Err(e) => {
                let _ = delete(g, id, true);
                return Err(e);
            }
        },
        None => None,
    };
    if let Err(e) = start(g, id) {
        let _ = delete(g, id, true);
        return Err(e);
    }
    if detach {
        return Ok(0);
    }
    let code = match master {
        Some(m) => {
            install_forwarding(pid);
            super::console::proxy_until_exit(m, pid)
        }
        None => wait_forwarding_signals(pid),
    };
    delete(g, id, true)?;
    Ok(code)
}

/// Whether the bundle's process asks for a terminal.
fn process_wants_terminal(bundle: &std::path::Path) -> bool {
    std::fs::read(bundle.join("config.json"))
        .ok()
        .and_then(|d| serde_json::from_slice::<serde_json::Value>(&d).ok())
        .is_some_and(|c| c["process"]["terminal"] == true)
}

/// Forwards the usual signals to `pid` from now on.
pub(super) fn install_forwarding(pid: i32) {
    FORWARD_TO.store(pid, Ordering::Relaxed);
    for sig in [
        libc::SIGTERM,
        libc::SIGINT,
        libc::SIGHUP,
        libc::SIGQUIT,
        libc::SIGUSR1,
        libc::SIGUSR2,
        libc::SIGWINCH,
    ] {
        // SAFETY: installing an async-signal-safe handler.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = forward as *const () as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// Waits for `pid` (our child or, as subreaper, grandchild) while forwarding the usual signals
/// to it; returns its exit code, or 128+signal.
pub(super) fn wait_forwarding_signals(pid: i32) -> i32 {
    install_forwarding(pid);
    let code = loop {
        let mut status = 0;
        // SAFETY: waiting for any child (the process, or a reparented intermediate).
        let r = unsafe { libc::waitpid(-1, &mut status, 0) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            break 255;
        }
        if r == pid {
            if libc::WIFEXITED(status) {
                break libc::WEXITSTATUS(status);
            }
            if libc::WIFSIGNALED(status) {
                break 128 + libc::WTERMSIG(status);
            }
        }
    };
    FORWARD_TO.store(0, Ordering::Relaxed);
    code
}

//! Halting the registered containers at host shutdown (`lodge-mgr halt`, run by
//! lodge-containers.service when it stops). Containers of the cgroupfs driver live in no systemd
//! unit, and an init that is systemd takes SIGTERM as "re-execute", so without this a shutdown
//! waits 90 s on each of them. Each init gets the signal that halts it (SIGRTMIN+3 for systemd,
//! SIGTERM otherwise); what is still running after the timeout is killed.

use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use lodge_ipc::mgr::ContainerInfo;
use lodge_sys::pidfd::{pidfd_open, pidfd_send_signal, pidfd_wait_exit};

/// What `halt` did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Halted {
    /// Inits that exited on their halt signal.
    pub stopped: Vec<String>,
    /// Inits killed at the timeout.
    pub killed: Vec<String>,
}

/// The signal that asks `pid` to shut down cleanly: systemd halts on SIGRTMIN+3 (what `docker
/// stop` sends to systemd images); everything else gets SIGTERM.
pub fn halt_signal(pid: i32) -> i32 {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    if comm.trim() == "systemd" {
        libc::SIGRTMIN() + 3
    } else {
        libc::SIGTERM
    }
}

/// Signals every running container's init to halt, waits up to `timeout` for them all, then
/// kills the rest (its pid namespace goes with its init).
pub fn halt(containers: &[ContainerInfo], timeout: Duration) -> Halted {
    let mut waiting: Vec<(String, OwnedFd)> = vec![];
    for c in containers.iter().filter(|c| c.running && c.pid > 0) {
        // Through a pidfd: a pid reused since registration is never signalled by mistake after
        // this point.
        let Ok(fd) = pidfd_open(c.pid) else {
            continue;
        };
        let sig = halt_signal(c.pid);
        tracing::info!(id = c.id, pid = c.pid, signal = sig, "halting");
        let _ = pidfd_send_signal(&fd, sig);
        waiting.push((c.id.clone(), fd));
    }
    let mut done = Halted::default();
    let deadline = Instant::now() + timeout;
    while !waiting.is_empty() && Instant::now() < deadline {
        waiting.retain(|(id, fd)| {
            let gone = pidfd_wait_exit(fd, 0).unwrap_or(true);
            if gone {
                done.stopped.push(id.clone());
            }
            !gone
        });
        std::thread::sleep(Duration::from_millis(50));
    }
    for (id, fd) in waiting {
        let _ = pidfd_send_signal(&fd, libc::SIGKILL);
        done.killed.push(id);
    }
    done
}

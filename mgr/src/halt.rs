//! Halting the registered containers at host shutdown (`lodge-mgr halt`, run by
//! lodge-containers.service when it stops). Containers of the cgroupfs driver live in no systemd
//! unit, and an init that is systemd takes SIGTERM as "re-execute", so without this a shutdown
//! waits 90 s on each of them. Each init gets the signal that halts it (SIGRTMIN+3 for systemd,
//! SIGTERM otherwise); what is still running after the timeout is killed.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use lodge_ipc::mgr::ContainerInfo;

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

fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    // SAFETY: plain pidfd_open(2); the result is a new fd.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    // SAFETY: the kernel just returned it.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn signal(pidfd: &OwnedFd, sig: i32) {
    // SAFETY: pidfd_send_signal(2) on our pidfd with no siginfo.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
}

fn exited(pidfd: &OwnedFd) -> bool {
    let mut p = libc::pollfd {
        fd: pidfd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll on one pollfd, without waiting.
    unsafe { libc::poll(&mut p, 1, 0) == 1 }
}

/// Signals every running container's init to halt, waits up to `timeout` for them all, then
/// kills the rest (its pid namespace goes with its init).
pub fn halt(containers: &[ContainerInfo], timeout: Duration) -> Halted {
    let mut waiting: Vec<(String, OwnedFd)> = vec![];
    for c in containers.iter().filter(|c| c.running && c.pid > 0) {
        // Through a pidfd: a pid reused since registration is never signalled by mistake after
        // this point.
        let Some(fd) = pidfd_open(c.pid) else {
            continue;
        };
        let sig = halt_signal(c.pid);
        tracing::info!(id = c.id, pid = c.pid, signal = sig, "halting");
        signal(&fd, sig);
        waiting.push((c.id.clone(), fd));
    }
    let mut done = Halted::default();
    let deadline = Instant::now() + timeout;
    while !waiting.is_empty() && Instant::now() < deadline {
        waiting.retain(|(id, fd)| {
            let gone = exited(fd);
            if gone {
                done.stopped.push(id.clone());
            }
            !gone
        });
        std::thread::sleep(Duration::from_millis(50));
    }
    for (id, fd) in waiting {
        signal(&fd, libc::SIGKILL);
        done.killed.push(id);
    }
    done
}

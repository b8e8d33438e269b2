//! `kill`.

use crate::cgroups::Cgroup;
use crate::error::{Error, Result};
use crate::state::Status;
use crate::sys;

use super::Globals;

/// Sends `sig` to init, or with `all` to every process in the container's cgroup.
pub fn kill(g: &Globals, id: &str, sig: i32, all: bool) -> Result<()> {
    let alive = [Status::Created, Status::Running, Status::Paused];
    let (_dir, st) = super::open_in(g, id, &alive, "container not running")?;
    if all {
        for pid in Cgroup::from_paths(st.cgroup_paths.clone()).pids() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::try_from(sig).ok(),
            );
        }
        return Ok(());
    }
    signal_init(st.init_pid, st.init_start_time, sig)
}

/// Signals init through a pidfd after checking it is still the same process (no pid reuse race).
pub(crate) fn signal_init(pid: i32, start_time: u64, sig: i32) -> Result<()> {
    let fd = sys::pidfd_open(pid).map_err(Error::io(format!("pidfd_open({pid})")))?;
    if sys::process_start_time(pid) != Some(start_time) {
        return Err(Error::io("signalling container init")(
            std::io::Error::from_raw_os_error(libc::ESRCH),
        ));
    }
    sys::pidfd_send_signal(&fd, sig).map_err(Error::io(format!("sending signal {sig} to {pid}")))
}

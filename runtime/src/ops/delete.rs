//! `delete`.

use crate::cgroups::Cgroup;
use crate::error::{Error, Result};
use crate::hooks;
use crate::state::{StateDir, StateError, Status};
use crate::sys;

use super::{hook_state, Globals};

/// Deletes a container: a created one is killed first; a running one only with `force`.
/// Leaves no process, cgroup or state behind. A failing poststop hook is only logged.
pub fn delete(g: &Globals, id: &str, force: bool) -> Result<()> {
    crate::spec::validate_id(id).map_err(Error::InvalidId)?;
    let dir = match StateDir::open(&g.root, id) {
        Ok(d) => d,
        Err(StateError::NotExist(_)) if force => {
            // Whatever a crashed create left (a state dir without state.json) goes too.
            let _ = std::fs::remove_dir_all(g.root.join(id));
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    let st = dir.load()?;
    let status = st.status(&dir.path);
    if matches!(status, Status::Running | Status::Paused) && !force {
        return Err(Error::WrongStatus {
            id: id.into(),
            status,
            action: "cannot delete a container that is not stopped (use --force)",
        });
    }
    let cgroup = Cgroup::from_paths(st.cgroup_paths.clone());
    if status != Status::Stopped {
        if status == Status::Paused {
            thaw(&st.cgroup_paths);
        }
        let pidfd = sys::pidfd_open(st.init_pid).ok();
        if sys::process_start_time(st.init_pid) == Some(st.init_start_time) {
            if let Some(fd) = &pidfd {
                let _ = sys::pidfd_send_signal(fd, libc::SIGKILL);
                let _ = sys::pidfd_wait_exit(fd, 10_000);
            }
        }
    }
    // Without a pid namespace, processes may outlive init.
    for pid in cgroup.pids() {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
    }
    if let Some(unit) = &st.systemd_unit {
        if let Err(e) = crate::systemd_scope::stop(unit) {
            tracing::warn!(error = %e, "stopping the systemd scope");
        }
    }
    cgroup.remove()?;
    if st.fs_registered {
        if let Some(socket) = &g.fs_socket {
            if let Err(e) = crate::fs_client::unregister(socket, &st.id) {
                tracing::warn!(error = %e, "unregistering from lodge-fs");
            }
        }
    }
    if let Some(tree) = &st.rootfs_shift {
        if let Err(e) = tree.shift(true) {
            tracing::warn!(path = %tree.path.display(), error = %e, "shifting file owners back");
        }
    }
    let spec = dir.load_config();
    let own_mountns = spec
        .as_ref()
        .and_then(|s| s.linux().as_ref())
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|ns| {
            ns.iter()
                .any(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::Mount)
        });
    if !own_mountns {
        crate::rootfs::unmount_below(&st.rootfs);
    }
    if let Some(spec) = spec {
        if let Some(h) = spec.hooks().as_ref().and_then(|h| h.poststop().clone()) {
            let state = hook_state(id, Status::Stopped, 0, &st.bundle, &spec);
            if let Err(e) = hooks::run_all("poststop", &h, &state) {
                tracing::warn!(error = %e, "poststop hook failed");
            }
        }
    }
    if st.mgr_registered {
        let socket = g
            .mgr_socket
            .clone()
            .unwrap_or_else(|| lodge_ipc::mgr::DEFAULT_SOCKET.into());
        if let Err(e) = crate::mgr_client::unregister(&socket, id, !st.special_volumes) {
            // The container is gone either way; the manager's record is what is stale.
            tracing::warn!(error = %e, "could not unregister from lodge-mgr");
        }
    }
    dir.destroy()?;
    Ok(())
}

fn thaw(paths: &[std::path::PathBuf]) {
    for p in paths {
        let _ = std::fs::write(p.join("freezer.state"), "THAWED");
        let _ = std::fs::write(p.join("cgroup.freeze"), "0");
    }
}

//! The runtime's verbs, one module each. The binary maps the CLI onto these.

mod console;
mod create;
mod delete;
mod events;
mod exec;
mod kill;
mod pause;
mod ps;
mod spec_template;
mod start;
mod update;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;
use serde::Serialize;

pub use create::{create, CreateOptions};
pub use delete::delete;
pub use events::{events, stats};
pub use exec::{exec, ExecOptions};
pub use kill::kill;
pub use pause::{pause, resume};
pub use ps::{pids, ps_table};
pub use spec_template::{features, spec_template};
pub use start::{run, start};
pub use update::{parse_size, update};

use crate::error::Result;
use crate::state::{self, StateDir, StateView, Status};

/// Options every command shares.
#[derive(Debug, Clone)]
pub struct Globals {
    pub root: PathBuf,
    /// `--systemd-cgroup`: systemd-style cgroupsPath (a systemd scope where systemd runs).
    pub systemd_cgroup: bool,
    /// lodge-mgr's socket; `None` with `--no-mgr`.
    pub mgr_socket: Option<PathBuf>,
    /// lodge-fs's socket; `None` with `--no-fs` (system containers without emulated files).
    pub fs_socket: Option<PathBuf>,
    /// Containers are system containers unless they say otherwise (false with `--no-syscont`).
    pub syscont_default: bool,
}

/// The container state handed to hooks on stdin (runtime-spec "state").
pub fn hook_state(id: &str, status: Status, pid: i32, bundle: &Path, spec: &Spec) -> Vec<u8> {
    #[derive(Serialize)]
    struct HookState<'a> {
        #[serde(rename = "ociVersion")]
        oci_version: &'a str,
        id: &'a str,
        status: Status,
        pid: i32,
        bundle: &'a Path,
        #[serde(skip_serializing_if = "Option::is_none")]
        annotations: Option<&'a HashMap<String, String>>,
    }
    serde_json::to_vec(&HookState {
        oci_version: crate::OCI_SPEC_VERSION,
        id,
        status,
        pid,
        bundle,
        annotations: spec.annotations().as_ref(),
    })
    .expect("hook state serializes")
}

/// Opens (and locks) a container's state and reads its live status; refuses with `action` as
/// the reason when the status is not one of `allowed`.
pub(crate) fn open_in(
    g: &Globals,
    id: &str,
    allowed: &[Status],
    action: &'static str,
) -> Result<(StateDir, state::ContainerState)> {
    let dir = StateDir::open(&g.root, id)?;
    let st = dir.load()?;
    let status = st.status(&dir.path);
    if !allowed.contains(&status) {
        return Err(crate::Error::WrongStatus {
            id: id.into(),
            status,
            action,
        });
    }
    Ok((dir, st))
}

/// `state ID`.
pub fn state(g: &Globals, id: &str) -> Result<StateView> {
    let dir = StateDir::open(&g.root, id)?;
    let st = dir.load()?;
    Ok(st.view(st.status(&dir.path)))
}

/// The process a container was created with (the base of `exec`'s process).
pub fn container_process(g: &Globals, id: &str) -> Result<oci_spec::runtime::Process> {
    let dir = StateDir::open(&g.root, id)?;
    dir.load_config()
        .and_then(|s| s.process().clone())
        .ok_or_else(|| crate::Error::Io {
            what: format!("container {id}: config"),
            source: std::io::Error::other("no stored process"),
        })
}

/// `list`: every container under the root, with its owner's name.
pub fn list(g: &Globals) -> Vec<(StateView, String)> {
    state::list_ids(&g.root)
        .into_iter()
        .filter_map(|id| {
            let dir = StateDir::open(&g.root, &id).ok()?;
            let st = dir.load().ok()?;
            let owner = owner_name(&dir.path);
            Some((st.view(st.status(&dir.path)), owner))
        })
        .collect()
}

fn owner_name(path: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata(path).map(|m| m.uid()).unwrap_or(0);
    nix::unistd::User::from_uid(uid.into())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| uid.to_string())
}

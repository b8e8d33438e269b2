//! lodge-runc's side of lodge-mgr: register at create, unregister at delete.

use std::path::{Path, PathBuf};

use lodge_ipc::mgr::{IdRange, Request, Response};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum MgrError {
    #[error(
        "lodge-mgr is not reachable at {socket}: {source}. Start it (`lodge-mgr &`, or install/quickstart.sh), \
         or run lodge-runc with --no-mgr to go without it"
    )]
    Unreachable {
        socket: PathBuf,
        source: std::io::Error,
    },
    #[error("lodge-mgr: {0}")]
    Protocol(#[from] lodge_ipc::FrameError),
    #[error("lodge-mgr refused: {0}")]
    Refused(String),
}

fn ask(socket: &Path, req: &Request) -> Result<Response, MgrError> {
    lodge_ipc::ask(socket, req).map_err(|e| match e {
        lodge_ipc::AskError::Unreachable(source) => MgrError::Unreachable {
            socket: socket.to_path_buf(),
            source,
        },
        lodge_ipc::AskError::Frame(f) => MgrError::Protocol(f),
        lodge_ipc::AskError::Refused(m) => MgrError::Refused(m),
    })
}

/// Registers a container; returns its ID range.
pub fn register(
    socket: &Path,
    id: &str,
    pid: i32,
    bundle: &Path,
    rootfs: &Path,
    pod: Option<String>,
) -> Result<IdRange, MgrError> {
    let req = Request::Register {
        id: id.into(),
        pid,
        bundle: bundle.into(),
        rootfs: rootfs.into(),
        pod,
        namespaces: namespaces_of(pid),
    };
    match ask(socket, &req)? {
        Response::Registered { range } => Ok(range),
        other => Err(MgrError::Refused(format!("unexpected answer {other:?}"))),
    }
}

/// A deleted container: with `remove`, forgotten (its range freed unless a pod member holds it);
/// without, kept as stopped (its volumes copied back, released when the engine removes its
/// rootfs).
pub fn unregister(socket: &Path, id: &str, remove: bool) -> Result<(), MgrError> {
    ask(
        socket,
        &Request::Unregister {
            id: id.into(),
            remove,
        },
    )
    .map(drop)
}

/// The container's special-dir volumes (owned by `uid`/`gid` on the host).
pub fn prepare_volumes(
    socket: &Path,
    id: &str,
    uid: u32,
    gid: u32,
) -> Result<Vec<lodge_ipc::mgr::VolumeMount>, MgrError> {
    match ask(
        socket,
        &Request::PrepareVolumes {
            id: id.into(),
            uid,
            gid,
        },
    )? {
        Response::Volumes { mounts } => Ok(mounts),
        other => Err(MgrError::Refused(format!("unexpected answer {other:?}"))),
    }
}

/// `kind:inode` of each of the process's namespaces.
fn namespaces_of(pid: i32) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    ["cgroup", "ipc", "mnt", "net", "pid", "time", "user", "uts"]
        .iter()
        .filter_map(|k| {
            Some(format!(
                "{k}:{}",
                std::fs::metadata(format!("/proc/{pid}/ns/{k}")).ok()?.ino()
            ))
        })
        .collect()
}

/// The pod key of a container that joins a network namespace by path (pod members share it).
pub fn pod_key(spec: &oci_spec::runtime::Spec) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let ns = spec.linux().as_ref()?.namespaces().as_ref()?;
    let net = ns
        .iter()
        .find(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::Network)?;
    let md = std::fs::metadata(net.path().as_ref()?).ok()?;
    Some(format!("netns:{}:{}", md.dev(), md.ino()))
}

//! lodge-runc's side of lodge-fs: a system container is registered before its init mounts its
//! emulated files, and unregistered at delete.

use std::path::{Path, PathBuf};

use lodge_ipc::fs::{EmulatedMount, Request, Response};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum FsError {
    #[error(
        "lodge-fs is not reachable at {socket}: {source}. System containers get their /proc and \
         /sys files from it: start it (`lodge-fs &`, or install/quickstart.sh), or run lodge-runc \
         with --no-fs to go without the emulation"
    )]
    Unreachable {
        socket: PathBuf,
        source: std::io::Error,
    },
    #[error("lodge-fs: {0}")]
    Protocol(#[from] lodge_ipc::FrameError),
    #[error("lodge-fs refused: {0}")]
    Refused(String),
}

fn ask(socket: &Path, req: &Request) -> Result<Response, FsError> {
    lodge_ipc::ask(socket, req).map_err(|e| match e {
        lodge_ipc::AskError::Unreachable(source) => FsError::Unreachable {
            socket: socket.to_path_buf(),
            source,
        },
        lodge_ipc::AskError::Frame(f) => FsError::Protocol(f),
        lodge_ipc::AskError::Refused(m) => FsError::Refused(m),
    })
}

/// What lodge-fs gives a registered container.
pub struct Registration {
    /// The emulated files to bind-mount into it.
    pub mounts: Vec<EmulatedMount>,
    /// The seccomp agent's socket, if lodge-fs runs one.
    pub listener: Option<PathBuf>,
}

/// Registers a container.
pub fn register(
    socket: &Path,
    id: &str,
    cgroup_paths: Vec<PathBuf>,
    owner: (u32, u32),
) -> Result<Registration, FsError> {
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let req = Request::Register {
        id: id.into(),
        cgroup_paths,
        owner,
        created,
    };
    match ask(socket, &req)? {
        Response::Registered { mounts, listener } => Ok(Registration { mounts, listener }),
        other => Err(FsError::Refused(format!("unexpected answer {other:?}"))),
    }
}

pub fn unregister(socket: &Path, id: &str) -> Result<(), FsError> {
    ask(socket, &Request::Unregister { id: id.into() }).map(drop)
}

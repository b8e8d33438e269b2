//! lodge-runc ↔ lodge-fs: registering a system container for its emulated /proc and /sys files.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Where lodge-fs listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/lodge/fs.sock";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    /// Registers a container: its cgroup directories on the host (one per hierarchy), the host
    /// uid/gid of its root (owner of its emulated files), and when it was created (seconds since
    /// the epoch, for its uptime). Registering an id again replaces it.
    Register {
        id: String,
        cgroup_paths: Vec<PathBuf>,
        owner: (u32, u32),
        created: f64,
    },
    Unregister {
        id: String,
    },
    Status,
    /// Stop for good: unmount and let go of every container's files.
    Stop,
}

/// One emulated file to bind-mount: `source` (in lodge-fs's mount) over `destination`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmulatedMount {
    pub source: PathBuf,
    pub destination: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Response {
    Registered {
        mounts: Vec<EmulatedMount>,
        /// The seccomp agent's `listenerPath`, when lodge-fs runs one: lodge-runc traps the
        /// container's mount calls and hands their listener there.
        #[serde(default)]
        listener: Option<PathBuf>,
    },
    Status {
        version: String,
        mountpoint: PathBuf,
        containers: usize,
        /// How FUSE requests reach lodge-fs: "io_uring" (one queue per CPU) or "dev_fuse".
        #[serde(default)]
        transport: String,
        /// Requests answered over io_uring since start.
        #[serde(default)]
        uring_requests: u64,
        /// Whether this lodge-fs took over its containers from the previous one.
        #[serde(default)]
        resumed: bool,
    },
    Ok,
    Error {
        message: String,
    },
}

//! lodge-mgr's requests and responses.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Where lodge-mgr listens (root-only).
pub const DEFAULT_SOCKET: &str = "/run/lodge/mgr.sock";

/// A block of host IDs: container IDs 0..size map to host IDs start..start+size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdRange {
    pub start: u32,
    pub size: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    Hello {
        version: u32,
    },
    Status,
    List,
    /// Registers a container (again, after a restart: it gets the same range back). Containers
    /// with the same `pod` key (their shared network namespace) share one range.
    Register {
        id: String,
        pid: i32,
        bundle: PathBuf,
        rootfs: PathBuf,
        #[serde(default)]
        pod: Option<String>,
        /// The container's namespaces as `kind:inode` (`net:4026532001`), for the registry.
        #[serde(default)]
        namespaces: Vec<String>,
    },
    /// The container stopped (keeps its range; its volumes are copied back into the rootfs) or,
    /// with `remove`, is gone (frees its range and destroys its volumes).
    Unregister {
        id: String,
        remove: bool,
    },
    /// Host-backed volumes for the special directories of a registered container, owned by its
    /// root (`uid`/`gid` on the host); created and preloaded from the rootfs on first use.
    PrepareVolumes {
        id: String,
        uid: u32,
        gid: u32,
    },
}

/// A host directory to mount over a path in the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeMount {
    pub kind: String,
    pub source: PathBuf,
    pub destination: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerInfo {
    pub id: String,
    pub pid: i32,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub pod: Option<String>,
    #[serde(default)]
    pub namespaces: Vec<String>,
    pub range: IdRange,
    pub running: bool,
    #[serde(default)]
    pub volumes: Vec<VolumeMount>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Response {
    Hello {
        version: u32,
    },
    Status {
        version: String,
        /// The block reserved for lodge in /etc/subuid and /etc/subgid.
        reserved: IdRange,
        range_size: u32,
        ranges_total: u32,
        ranges_used: u32,
        containers: usize,
    },
    List {
        containers: Vec<ContainerInfo>,
    },
    Registered {
        range: IdRange,
    },
    Volumes {
        mounts: Vec<VolumeMount>,
    },
    Ok,
    Error {
        message: String,
    },
}

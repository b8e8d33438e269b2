//! A container's on-disk state under `--root/<id>`: written atomically (tmp + rename) and
//! guarded by an flock on the directory so concurrent commands on one container serialize.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::sys;

#[derive(Debug, Error)]
pub enum StateError {
    #[error("container {0} does not exist")]
    NotExist(String),
    #[error("container with id {0} already exists")]
    Exists(String),
    #[error("state directory {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state file {path} is corrupt: {source}")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Creating,
    Created,
    Running,
    Paused,
    Stopped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        })
    }
}

/// What lodge-runc remembers about a container between commands.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerState {
    pub id: String,
    pub init_pid: i32,
    /// Clock ticks since boot when init started; guards against pid reuse.
    pub init_start_time: u64,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: String,
    #[serde(default)]
    pub annotations: HashMap<String, String>,
    /// Every cgroup directory the container was placed in, one per hierarchy.
    #[serde(default)]
    pub cgroup_paths: Vec<PathBuf>,
    /// Whether `start` has been run (set by start; the exec socket disappearing says the same).
    #[serde(default)]
    pub started: bool,
    /// Whether lodge-mgr knows the container (unregistered at delete).
    #[serde(default)]
    pub mgr_registered: bool,
    /// The container has lodge-mgr's special-dir volumes: at delete they are copied back and
    /// kept until the engine removes the rootfs.
    #[serde(default)]
    pub special_volumes: bool,
    /// A system container's delegated cgroups, per hierarchy (`cgroups::Delegation::entry`):
    /// exec joins their leaves, update applies limits to them too. Empty: not delegated.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub delegated_cgroup_paths: Vec<PathBuf>,
    /// Registered with lodge-fs (its emulated files); unregistered at delete.
    #[serde(default)]
    pub fs_registered: bool,
    /// A system container (the full rewrite, not the light mode): exec'd processes get its
    /// rules too (no engine-default AppArmor profile).
    #[serde(default)]
    pub system: bool,
    /// A system container whose processes get capabilities by user (root: all, others: none).
    #[serde(default)]
    pub system_capabilities: bool,
    /// A tree chowned into the container's range (the rootfs when it cannot be ID-mapped, or the
    /// upper layer of an ID-mapped overlay); shifted back at delete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rootfs_shift: Option<ShiftedTree>,
    /// The transient scope registered with systemd (`--systemd-cgroup` under systemd).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub systemd_unit: Option<String>,
}

/// The runc-compatible view printed by `state` and `list --format json`.
#[derive(Debug, Serialize)]
pub struct StateView {
    #[serde(rename = "ociVersion")]
    pub oci_version: &'static str,
    pub id: String,
    pub pid: i32,
    pub status: Status,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: String,
    pub owner: String,
    #[serde(skip_serializing_if = "HashMap::is_empty")]
    pub annotations: HashMap<String, String>,
}

pub const STATE_FILE: &str = "state.json";
pub const CONFIG_FILE: &str = "config.json";
/// Unix socket init listens on while `created`; `start` connects to it.
pub const EXEC_SOCKET: &str = "exec.sock";

/// An open, locked state directory. The lock is released when this is dropped.
/// A tree whose owners were shifted into the container's range.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShiftedTree {
    pub path: PathBuf,
    pub offset: u32,
    pub size: u32,
}

impl ShiftedTree {
    pub fn shift(&self, back: bool) -> std::io::Result<()> {
        let by = crate::rootfs::shift::Shift {
            offset: self.offset,
            size: self.size,
        };
        crate::rootfs::shift::shift(&self.path, by, back)
    }
}

pub struct StateDir {
    pub path: PathBuf,
    pub id: String,
    dir: File,
}

impl StateDir {
    /// Creates `<root>/<id>` exclusively (an existing id is an error) and locks it.
    pub fn create(root: &Path, id: &str) -> Result<StateDir, StateError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(root)
            .map_err(io_err(root))?;
        let path = root.join(id);
        match std::fs::DirBuilder::new().mode(0o711).create(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(StateError::Exists(id.to_string()))
            }
            Err(e) => return Err(io_err(&path)(e)),
        }
        Self::lock(path, id)
    }

    /// Opens and locks an existing container's state directory.
    pub fn open(root: &Path, id: &str) -> Result<StateDir, StateError> {
        let path = root.join(id);
        if !path.join(STATE_FILE).exists() {
            return Err(StateError::NotExist(id.to_string()));
        }
        Self::lock(path, id)
    }

    fn lock(path: PathBuf, id: &str) -> Result<StateDir, StateError> {
        let dir = File::open(&path).map_err(io_err(&path))?;
        // SAFETY: flock on an fd we own.
        if unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io_err(&path)(std::io::Error::last_os_error()));
        }
        Ok(StateDir {
            path,
            id: id.to_string(),
            dir,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        self.dir.as_raw_fd()
    }

    /// A path to the state dir that stays short whatever `--root` is (sockets must fit in 108 bytes).
    pub fn short_path(&self, name: &str) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}/{name}", self.dir.as_raw_fd()))
    }

    pub fn load(&self) -> Result<ContainerState, StateError> {
        let p = self.path.join(STATE_FILE);
        let data = match std::fs::read(&p) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StateError::NotExist(self.id.clone()))
            }
            Err(e) => return Err(io_err(&p)(e)),
        };
        serde_json::from_slice(&data).map_err(|source| StateError::Corrupt { path: p, source })
    }

    pub fn save(&self, state: &ContainerState) -> Result<(), StateError> {
        let data = serde_json::to_vec(state).expect("state serializes");
        write_atomic(&self.path.join(STATE_FILE), &data, 0o600)
    }

    pub fn save_config(&self, raw: &[u8]) -> Result<(), StateError> {
        write_atomic(&self.path.join(CONFIG_FILE), raw, 0o600)
    }

    pub fn load_config(&self) -> Option<oci_spec::runtime::Spec> {
        let data = std::fs::read(self.path.join(CONFIG_FILE)).ok()?;
        serde_json::from_slice(&data).ok()
    }

    /// Removes the directory and everything in it (plain files only; nothing is mounted here).
    pub fn destroy(self) -> Result<(), StateError> {
        std::fs::remove_dir_all(&self.path).map_err(io_err(&self.path))
    }
}

/// Writes a file atomically: a temporary file in the same directory, fsync-free rename.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<(), StateError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("state"),
        std::process::id()
    ));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .custom_flags(libc::O_CLOEXEC)
            .open(&tmp)?;
        f.write_all(data)?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io_err(path)(e)
    })
}

impl ContainerState {
    /// The live status, derived from the init process and the exec socket rather than stored.
    pub fn status(&self, dir: &Path) -> Status {
        if self.init_pid <= 0
            || sys::process_start_time(self.init_pid) != Some(self.init_start_time)
        {
            return Status::Stopped;
        }
        if !self.started && dir.join(EXEC_SOCKET).exists() {
            return Status::Created;
        }
        if self.frozen() {
            return Status::Paused;
        }
        Status::Running
    }

    fn frozen(&self) -> bool {
        self.cgroup_paths.iter().any(|p| {
            std::fs::read_to_string(p.join("freezer.state")).is_ok_and(|s| s.trim() == "FROZEN")
                || std::fs::read_to_string(p.join("cgroup.freeze")).is_ok_and(|s| s.trim() == "1")
        })
    }

    pub fn view(&self, status: Status) -> StateView {
        StateView {
            oci_version: crate::OCI_SPEC_VERSION,
            id: self.id.clone(),
            pid: if status == Status::Stopped {
                0
            } else {
                self.init_pid
            },
            status,
            bundle: self.bundle.clone(),
            rootfs: self.rootfs.clone(),
            created: self.created.clone(),
            owner: String::new(),
            annotations: self.annotations.clone(),
        }
    }
}

/// Ids of all containers under `root`, sorted.
pub fn list_ids(root: &Path) -> Vec<String> {
    let mut ids: Vec<String> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join(STATE_FILE).exists())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    ids.sort();
    ids
}

//! Containers and their exclusive ID ranges, persisted atomically so that a restart (even after
//! SIGKILL) keeps every allocation and registration.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lodge_ipc::mgr::{ContainerInfo, IdRange, VolumeMount};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::subid::Block;
use crate::volumes::{self, VolumeError};

#[derive(Debug, Error)]
pub enum RegistryError {
    #[error("no free ID range: all {0} ranges of lodge's block are in use (free some, or reserve a larger block)")]
    Exhausted(u32),
    #[error("container {0} is not registered")]
    Unknown(String),
    #[error("invalid container id {0:?}")]
    InvalidId(String),
    #[error("state file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Volume(#[from] VolumeError),
    #[error("state file {path} is corrupt: {source}")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    pid: i32,
    bundle: PathBuf,
    rootfs: PathBuf,
    pod: Option<String>,
    #[serde(default)]
    namespaces: Vec<String>,
    /// The key its range is held under: the pod's, or the container's own.
    owner: String,
    running: bool,
    #[serde(default)]
    volumes: Vec<VolumeMount>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    containers: BTreeMap<String, Entry>,
    /// Range owner → slot index within the reserved block.
    slots: BTreeMap<String, u32>,
}

pub struct Registry {
    path: PathBuf,
    /// Volumes live under `<data_root>/volumes`.
    data_root: PathBuf,
    state: State,
    pub reserved: Block,
    pub range_size: u32,
}

impl Registry {
    /// Loads the state in `dir` (or starts empty).
    pub fn open(
        dir: &Path,
        data_root: &Path,
        reserved: Block,
        range_size: u32,
    ) -> Result<Registry, RegistryError> {
        std::fs::create_dir_all(dir).map_err(|source| RegistryError::Io {
            path: dir.into(),
            source,
        })?;
        let path = dir.join("state.json");
        let state = match std::fs::read(&path) {
            Ok(d) => serde_json::from_slice(&d).map_err(|source| RegistryError::Corrupt {
                path: path.clone(),
                source,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(source) => return Err(RegistryError::Io { path, source }),
        };
        Ok(Registry {
            path,
            data_root: data_root.to_path_buf(),
            state,
            reserved,
            range_size,
        })
    }

    pub fn slots_total(&self) -> u32 {
        (self.reserved.count / u64::from(self.range_size)) as u32
    }

    pub fn slots_used(&self) -> u32 {
        self.state.slots.len() as u32
    }

    pub fn containers(&self) -> usize {
        self.state.containers.len()
    }

    fn range(&self, slot: u32) -> IdRange {
        IdRange {
            start: (self.reserved.start + u64::from(slot) * u64::from(self.range_size)) as u32,
            size: self.range_size,
        }
    }

    /// Registers (or re-registers) a container and returns its range.
    pub fn register(
        &mut self,
        id: &str,
        pid: i32,
        bundle: PathBuf,
        rootfs: PathBuf,
        pod: Option<String>,
        namespaces: Vec<String>,
    ) -> Result<IdRange, RegistryError> {
        if id.is_empty() || id.contains('/') || id == "." || id == ".." {
            return Err(RegistryError::InvalidId(id.into()));
        }
        let owner = match (self.state.containers.get(id), &pod) {
            (Some(e), _) => e.owner.clone(),
            (None, Some(p)) => format!("pod:{p}"),
            (None, None) => format!("ctr:{id}"),
        };
        let slot = match self.state.slots.get(&owner) {
            Some(s) => *s,
            None => {
                let used: std::collections::BTreeSet<u32> =
                    self.state.slots.values().copied().collect();
                let free = (0..self.slots_total())
                    .find(|s| !used.contains(s))
                    .ok_or(RegistryError::Exhausted(self.slots_total()))?;
                self.state.slots.insert(owner.clone(), free);
                free
            }
        };
        let volumes = self
            .state
            .containers
            .get(id)
            .map(|e| e.volumes.clone())
            .unwrap_or_default();
        self.state.containers.insert(
            id.into(),
            Entry {
                pid,
                bundle,
                rootfs,
                pod,
                namespaces,
                owner,
                running: true,
                volumes,
            },
        );
        self.save()?;
        Ok(self.range(slot))
    }

    /// Marks a container stopped, or forgets it (`remove`), freeing its range when no pod member
    /// still holds it.
    pub fn unregister(&mut self, id: &str, remove: bool) -> Result<(), RegistryError> {
        if !remove {
            let e = self
                .state
                .containers
                .get_mut(id)
                .ok_or_else(|| RegistryError::Unknown(id.into()))?;
            e.running = false;
            // Stopped: the volumes' contents go back into the image (docker commit, stop/start).
            volumes::copy_back(&e.volumes, &e.rootfs)?;
            return self.save();
        }
        let e = self
            .state
            .containers
            .remove(id)
            .ok_or_else(|| RegistryError::Unknown(id.into()))?;
        volumes::destroy(&e.volumes)?;
        if !self.state.containers.values().any(|o| o.owner == e.owner) {
            self.state.slots.remove(&e.owner);
        }
        self.save()
    }

    /// The container's volumes, created and preloaded on first use.
    pub fn prepare_volumes(
        &mut self,
        id: &str,
        uid: u32,
        gid: u32,
    ) -> Result<Vec<VolumeMount>, RegistryError> {
        let e = self
            .state
            .containers
            .get(id)
            .ok_or_else(|| RegistryError::Unknown(id.into()))?;
        let mounts = volumes::prepare(&self.data_root, id, &e.rootfs, uid, gid)?;
        self.state.containers.get_mut(id).expect("checked").volumes = mounts.clone();
        self.save()?;
        Ok(mounts)
    }

    /// Forgets containers whose rootfs the engine removed, destroying their volumes and freeing
    /// their ranges. Returns their ids.
    pub fn collect_removed(&mut self) -> Vec<String> {
        let gone: Vec<String> = self
            .state
            .containers
            .iter()
            // Not the rootfs itself: engines unmount (and may remove) it at every stop. Its
            // parent (Docker's layer directory, a bundle) only goes when the container is removed.
            .filter(|(_, e)| !e.rootfs.exists() && !e.rootfs.parent().is_some_and(Path::exists))
            .map(|(id, _)| id.clone())
            .collect();
        for id in &gone {
            if let Err(e) = self.unregister(id, true) {
                tracing::warn!(id = %id, error = %e, "cleaning up a removed container");
            }
        }
        gone
    }

    pub fn list(&self) -> Vec<ContainerInfo> {
        self.state
            .containers
            .iter()
            .map(|(id, e)| ContainerInfo {
                id: id.clone(),
                pid: e.pid,
                bundle: e.bundle.clone(),
                rootfs: e.rootfs.clone(),
                pod: e.pod.clone(),
                namespaces: e.namespaces.clone(),
                range: self.range(self.state.slots[&e.owner]),
                running: e.running,
                volumes: e.volumes.clone(),
            })
            .collect()
    }

    /// Atomic: a temporary file renamed over the state, synced first so a crash never leaves a
    /// torn file.
    fn save(&self) -> Result<(), RegistryError> {
        use std::io::Write;
        let tmp = self.path.with_extension("json.tmp");
        let err = |source| RegistryError::Io {
            path: self.path.clone(),
            source,
        };
        let mut f = std::fs::File::create(&tmp).map_err(err)?;
        f.write_all(&serde_json::to_vec(&self.state).expect("state serializes"))
            .map_err(err)?;
        f.sync_all().map_err(err)?;
        std::fs::rename(&tmp, &self.path).map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(dir: &Path) -> Registry {
        Registry::open(
            dir,
            dir,
            Block {
                start: 100_000,
                count: 65536 * 4,
            },
            65536,
        )
        .unwrap()
    }

    #[test]
    fn exclusive_ranges_pods_restarts_and_exhaustion() {
        let dir = std::env::temp_dir().join(format!("lodge-mgr-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut r = reg(&dir);
        let a = r
            .register("a", 1, "/b".into(), "/r".into(), None, vec![])
            .unwrap();
        let b = r
            .register("b", 2, "/b".into(), "/r".into(), Some("ns1".into()), vec![])
            .unwrap();
        let c = r
            .register("c", 3, "/b".into(), "/r".into(), Some("ns1".into()), vec![])
            .unwrap();
        assert_ne!(a, b);
        assert_eq!(b, c, "pod members share");
        r.unregister("a", false).unwrap();
        assert_eq!(
            reg(&dir)
                .register("a", 4, "/b".into(), "/r".into(), None, vec![])
                .unwrap(),
            a,
            "same range after a restart"
        );
        let mut r = reg(&dir);
        r.register("d", 5, "/b".into(), "/r".into(), None, vec![])
            .unwrap();
        r.register("e", 6, "/b".into(), "/r".into(), None, vec![])
            .unwrap();
        assert!(matches!(
            r.register("f", 7, "/b".into(), "/r".into(), None, vec![]),
            Err(RegistryError::Exhausted(4))
        ));
        r.unregister("e", true).unwrap();
        assert!(
            r.register("f", 7, "/b".into(), "/r".into(), None, vec![])
                .is_ok(),
            "a freed range is reused"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

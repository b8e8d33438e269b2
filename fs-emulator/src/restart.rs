//! Surviving a restart. While containers are registered, lodge-fs never takes their files down
//! with it: the keeper (`keeper.rs`) holds the FUSE connection and the seccomp listeners, and
//! lodge-fs keeps its registrations (slots, so inode numbers stay the same; cgroups; owners;
//! knob values) and the listeners' container states in a state file beside its socket. A
//! lodge-fs that starts and finds a keeper, that file and its mount still in place takes all of
//! it back and goes on serving the same connection; readers that asked meanwhile just waited.
//!
//! lodge-fs stops for good (unmounts, the keeper exits, the state file goes) when it is told to
//! (`lodge-fs stop`) or when nothing is registered; SIGTERM with containers registered leaves
//! them to the next lodge-fs.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::fd::{OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use crate::cgroup::CgroupView;
use crate::files::{self, Container};
use crate::keeper::{self, Keeper, KeeperError};
use crate::registry::Registry;

/// `<dir>/<name>-<what>` beside the registration socket `<dir>/<name>.sock` (`fs.sock` →
/// `fs-seccomp.sock`, `fs-keeper.sock`, `fs-state.json`): two lodge-fs instances never share
/// them.
pub fn beside(socket: &Path, what: &str) -> PathBuf {
    let name = socket
        .file_name()
        .map(|n| n.to_string_lossy().trim_end_matches(".sock").to_string())
        .unwrap_or_else(|| "lodge-fs".into());
    socket.with_file_name(format!("{name}-{what}"))
}

/// The mount's device ("major:minor") in the mount table, if `mountpoint` is a lodge-fs FUSE
/// mount. Read from the table: a stat of the mount would wait for a server.
pub fn mount_dev(mountpoint: &Path) -> Option<String> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let want = mountpoint.to_string_lossy();
    table.lines().rev().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let f: Vec<&str> = left.split(' ').collect();
        let r: Vec<&str> = right.split(' ').collect();
        let ours = f.get(4).map(|p| lodge_sys::mountinfo::unescape(p)) == Some(want.to_string())
            && r.first()?.starts_with("fuse")
            && r.get(1) == Some(&"lodge-fs");
        ours.then(|| f[2].to_string())
    })
}

/// What a previous lodge-fs left to this one.
pub struct Adopted {
    pub fuse: OwnedFd,
    /// Whether the connection was set up for io_uring queues.
    pub uring: bool,
    /// (key, listener fd, container state JSON) of each seccomp listener.
    pub listeners: Vec<(String, OwnedFd, Value)>,
}

#[derive(Default)]
struct Meta {
    mount_dev: String,
    uring: bool,
    listeners: BTreeMap<String, Value>,
}

pub struct Continuity {
    state_path: PathBuf,
    keeper_path: PathBuf,
    registry: Arc<Registry>,
    keeper: Mutex<Option<Keeper>>,
    meta: Mutex<Meta>,
    next_listener: AtomicU64,
}

impl Continuity {
    pub fn new(socket: &Path, registry: Arc<Registry>) -> Arc<Continuity> {
        let c = Arc::new(Continuity {
            state_path: beside(socket, "state.json"),
            keeper_path: beside(socket, "keeper.sock"),
            registry: registry.clone(),
            keeper: Mutex::new(None),
            meta: Mutex::default(),
            next_listener: AtomicU64::new(1),
        });
        let saver = c.clone();
        registry.on_change(Box::new(move || saver.save()));
        c
    }

    /// Takes over from a previous lodge-fs, if it left a keeper, its state and its mount at
    /// `mountpoint`. Anything else it left is cleared away.
    pub fn adopt(&self, mountpoint: &Path) -> Option<Adopted> {
        let keeper = match Keeper::connect(&self.keeper_path) {
            Ok(Some(k)) => k,
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(error = %e, "previous lodge-fs's keeper");
                return None;
            }
        };
        let found = (|| {
            let mut fds = keeper.take().ok()?;
            let fuse = fds.remove(keeper::FUSE)?;
            let state: Value =
                serde_json::from_slice(&std::fs::read(&self.state_path).ok()?).ok()?;
            let dev = mount_dev(mountpoint)?;
            (state["mount_dev"].as_str() == Some(dev.as_str())).then_some((fuse, fds, state, dev))
        })();
        let Some((fuse, fds, state, dev)) = found else {
            tracing::info!("a previous lodge-fs's keeper held nothing usable; starting afresh");
            let _ = keeper.exit();
            return None;
        };
        for c in state["containers"].as_array().into_iter().flatten() {
            if let Some((slot, container)) = container_from(c) {
                self.registry.restore(slot, container);
            }
        }
        self.registry
            .reserve_slots(state["next_slot"].as_u64().unwrap_or(0) as usize);
        let saved: BTreeMap<String, Value> = state["listeners"]
            .as_object()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        let mut listeners = vec![];
        for (key, fd) in fds {
            match saved.get(&key) {
                Some(s) => listeners.push((key, fd, s.clone())),
                None => {
                    let _ = keeper.drop_key(&key);
                }
            }
        }
        let next = listeners
            .iter()
            .filter_map(|(k, _, _)| k.strip_prefix("listener-")?.parse::<u64>().ok())
            .max()
            .unwrap_or(0);
        self.next_listener.store(next + 1, Ordering::Relaxed);
        let uring = state["uring"] == true;
        *self.meta.lock().unwrap_or_else(|e| e.into_inner()) = Meta {
            mount_dev: dev,
            uring,
            listeners: listeners
                .iter()
                .map(|(k, _, s)| (k.clone(), s.clone()))
                .collect(),
        };
        *self.keeper.lock().unwrap_or_else(|e| e.into_inner()) = Some(keeper);
        self.save();
        Some(Adopted {
            fuse,
            uring,
            listeners,
        })
    }

    /// After a fresh mount: a new keeper holds the connection from now on.
    pub fn start_fresh(
        &self,
        fuse: RawFd,
        mountpoint: &Path,
        uring: bool,
    ) -> Result<(), KeeperError> {
        if let Ok(Some(stale)) = Keeper::connect(&self.keeper_path) {
            let _ = stale.exit();
        }
        let keeper = Keeper::spawn(&self.keeper_path)?;
        keeper.put(keeper::FUSE, fuse)?;
        {
            let mut meta = self.meta.lock().unwrap_or_else(|e| e.into_inner());
            meta.mount_dev = mount_dev(mountpoint).unwrap_or_default();
            meta.uring = uring;
        }
        *self.keeper.lock().unwrap_or_else(|e| e.into_inner()) = Some(keeper);
        self.save();
        Ok(())
    }

    /// Writes the state file (whole, then renamed into place).
    pub fn save(&self) {
        let meta = self.meta.lock().unwrap_or_else(|e| e.into_inner());
        if meta.mount_dev.is_empty() {
            return;
        }
        let containers: Vec<Value> = self
            .registry
            .all()
            .iter()
            .map(|(slot, c)| {
                let knobs = c.knobs.lock().unwrap_or_else(|e| e.into_inner()).clone();
                json!({
                    "slot": slot, "id": c.id, "cgroup_paths": c.cgroup.paths,
                    "owner": [c.owner.0, c.owner.1], "created": c.created, "knobs": knobs,
                })
            })
            .collect();
        let state = json!({
            "mount_dev": meta.mount_dev, "uring": meta.uring,
            "next_slot": self.registry.next_slot(), "containers": containers,
            "listeners": meta.listeners,
        });
        let tmp = self.state_path.with_extension("json.tmp");
        // Root's only, as the sockets beside it.
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| f.write_all(state.to_string().as_bytes()))
            .and_then(|()| std::fs::rename(&tmp, &self.state_path));
        if let Err(e) = written {
            tracing::warn!(path = %self.state_path.display(), error = %e, "saving lodge-fs state");
        }
    }

    /// Gives a seccomp listener to the keeper too; returns its key.
    pub fn keep_listener(&self, fd: RawFd, state: &Value) -> Option<String> {
        let key = format!(
            "listener-{}",
            self.next_listener.fetch_add(1, Ordering::Relaxed)
        );
        let keeper = self.keeper.lock().unwrap_or_else(|e| e.into_inner());
        keeper.as_ref()?.put(&key, fd).ok()?;
        drop(keeper);
        self.meta
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .listeners
            .insert(key.clone(), state.clone());
        self.save();
        Some(key)
    }

    /// A listener whose processes are all gone.
    pub fn release_listener(&self, key: &str) {
        if let Some(k) = self
            .keeper
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            let _ = k.drop_key(key);
        }
        self.meta
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .listeners
            .remove(key);
        self.save();
    }

    /// Stops for good: the keeper lets go of everything, the state file goes.
    pub fn stop(&self) {
        if let Some(k) = self.keeper.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = k.exit();
        }
        self.meta
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .mount_dev
            .clear();
        let _ = std::fs::remove_file(&self.state_path);
    }
}

/// A saved container: (slot, container with its knob values).
fn container_from(v: &Value) -> Option<(usize, Container)> {
    let slot = v["slot"].as_u64()? as usize;
    let id = v["id"].as_str()?.to_string();
    let paths = v["cgroup_paths"]
        .as_array()?
        .iter()
        .filter_map(|p| Some(PathBuf::from(p.as_str()?)))
        .collect();
    let owner = (
        v["owner"][0].as_u64()? as u32,
        v["owner"][1].as_u64()? as u32,
    );
    let c = Container::new(id, CgroupView { paths }, owner, v["created"].as_f64()?);
    if let Some(knobs) = v["knobs"].as_object() {
        let mut store = c.knobs.lock().unwrap_or_else(|e| e.into_inner());
        for f in files::table() {
            if let Some(value) = knobs.get(f.path).and_then(Value::as_str) {
                store.insert(f.path, value.to_string());
            }
        }
    }
    Some((slot, c))
}

//! Cgroups with the cgroupfs driver on v1, v2 and hybrid hosts.
//!
//! Each controller is driven where the host has it: a v1 hierarchy if one is mounted for it,
//! otherwise the unified (v2) hierarchy. The container gets a directory in every mounted
//! hierarchy (so it is tracked everywhere, like runc), and limits go to the owning one.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxResources};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum CgroupError {
    #[error("no cgroup hierarchy is mounted (read /proc/self/mountinfo)")]
    NoHierarchy,
    #[error("cannot create cgroup {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {value:?} to {path}: {source}")]
    Write {
        path: PathBuf,
        value: String,
        source: std::io::Error,
    },
    #[error("invalid cgroupsPath {0:?}: {1}")]
    InvalidPath(String, &'static str),
    #[error("cannot remove cgroup {path}: {source}")]
    Remove {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Unsupported(String),
}

type Result<T> = std::result::Result<T, CgroupError>;

#[derive(Debug, Clone)]
pub struct Hierarchy {
    pub mountpoint: PathBuf,
    /// The mount's root within the hierarchy (not "/" inside a cgroup namespace).
    pub root: String,
    /// v1 controllers (and `name=` options); empty for the unified hierarchy.
    pub controllers: Vec<String>,
    pub unified: bool,
}

/// The cgroup hierarchies mounted on this host.
#[derive(Debug, Clone, Default)]
pub struct Layout {
    pub hierarchies: Vec<Hierarchy>,
    /// Controllers the unified hierarchy offers (its root's cgroup.controllers), read once.
    v2_controllers: Vec<String>,
}

impl Layout {
    pub fn detect() -> Result<Layout> {
        let info = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(|_| CgroupError::NoHierarchy)?;
        let mut layout = Layout::default();
        for line in info.lines() {
            let Some((pre, post)) = line.split_once(" - ") else {
                continue;
            };
            let pre: Vec<&str> = pre.split(' ').collect();
            let post: Vec<&str> = post.split(' ').collect();
            if pre.len() < 5 || post.len() < 3 {
                continue;
            }
            let (root, mountpoint, fstype) =
                (pre[3], lodge_sys::mountinfo::unescape(pre[4]), post[0]);
            let h = match fstype {
                "cgroup2" => Hierarchy {
                    mountpoint: mountpoint.into(),
                    root: root.into(),
                    controllers: vec![],
                    unified: true,
                },
                "cgroup" => {
                    let known = [
                        "cpu",
                        "cpuacct",
                        "cpuset",
                        "memory",
                        "devices",
                        "freezer",
                        "net_cls",
                        "blkio",
                        "perf_event",
                        "net_prio",
                        "hugetlb",
                        "pids",
                        "rdma",
                        "misc",
                    ];
                    let controllers = post[2]
                        .split(',')
                        .filter(|o| known.contains(o) || o.starts_with("name="))
                        .map(String::from)
                        .collect();
                    Hierarchy {
                        mountpoint: mountpoint.into(),
                        root: root.into(),
                        controllers,
                        unified: false,
                    }
                }
                _ => continue,
            };
            let dup = layout
                .hierarchies
                .iter()
                .any(|o| o.unified == h.unified && o.controllers == h.controllers);
            if !dup {
                layout.hierarchies.push(h);
            }
        }
        if layout.hierarchies.is_empty() {
            return Err(CgroupError::NoHierarchy);
        }
        if let Some(u) = layout.unified() {
            let offered = std::fs::read_to_string(u.mountpoint.join("cgroup.controllers"))
                .unwrap_or_default();
            layout.v2_controllers = offered.split_whitespace().map(String::from).collect();
        }
        Ok(layout)
    }

    pub fn unified(&self) -> Option<&Hierarchy> {
        self.hierarchies.iter().find(|h| h.unified)
    }

    /// True on a pure cgroup v2 host.
    pub fn is_unified_only(&self) -> bool {
        self.hierarchies.iter().all(|h| h.unified)
    }

    fn v1(&self, controller: &str) -> Option<&Hierarchy> {
        self.hierarchies
            .iter()
            .find(|h| !h.unified && h.controllers.iter().any(|c| c == controller))
    }

    /// Whether `controller` is managed through the unified hierarchy on this host.
    fn on_v2(&self, controller: &str) -> bool {
        self.v1(controller).is_none() && self.v2_controllers.iter().any(|c| c == controller)
    }
}

/// The process's own cgroup in `h`, from /proc/self/cgroup.
fn own_cgroup(h: &Hierarchy) -> String {
    let data = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    for line in data.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let matches = if h.unified {
            id == "0" && ctrls.is_empty()
        } else {
            let set: BTreeSet<&str> = ctrls.split(',').collect();
            h.controllers.iter().all(|c| set.contains(c.as_str()))
        };
        if matches {
            return path.to_string();
        }
    }
    "/".into()
}

/// The (unit, slice) a systemd-style `slice:prefix:name` names (an empty slice is
/// system.slice); None if the path does not have that shape.
pub fn systemd_unit_and_slice(path: &str) -> Option<(String, String)> {
    let parts: Vec<&str> = path.split(':').collect();
    let [slice, prefix, name] = parts[..] else {
        return None;
    };
    let slice = if slice.is_empty() {
        "system.slice"
    } else {
        slice
    };
    let unit = if name.ends_with(".slice") {
        name.to_string()
    } else if prefix.is_empty() {
        format!("{name}.scope")
    } else {
        format!("{prefix}-{name}.scope")
    };
    Some((unit, slice.to_string()))
}

/// Turns a systemd-style `slice:prefix:name` into the cgroupfs path systemd would use, so
/// `--systemd-cgroup` callers get the same tree from the cgroupfs driver.
pub fn systemd_to_fs_path(path: &str) -> Result<String> {
    let (unit, slice) = systemd_unit_and_slice(path).ok_or(CgroupError::InvalidPath(
        path.into(),
        "expected slice:prefix:name",
    ))?;
    let Some(stem) = slice.strip_suffix(".slice") else {
        return Err(CgroupError::InvalidPath(
            path.into(),
            "the slice must end in .slice",
        ));
    };
    let mut out = String::new();
    if stem != "-" {
        let mut acc = String::new();
        for (i, part) in stem.split('-').enumerate() {
            if part.is_empty() {
                return Err(CgroupError::InvalidPath(
                    path.into(),
                    "empty component in slice name",
                ));
            }
            if i > 0 {
                acc.push('-');
            }
            acc.push_str(part);
            out.push_str(&format!("/{acc}.slice"));
        }
    }
    Ok(format!("{out}/{unit}"))
}

/// A container's cgroup: one directory per hierarchy.
#[derive(Debug, Clone)]
pub struct Cgroup {
    pub paths: Vec<PathBuf>,
    layout: Layout,
}

impl Cgroup {
    /// Resolves `cgroups_path` (absolute: from each hierarchy's root; relative: below our own
    /// cgroup, as runc does) to one directory per hierarchy. Nothing is created yet.
    pub fn resolve(layout: &Layout, cgroups_path: &str) -> Result<Cgroup> {
        if cgroups_path.split('/').any(|c| c == "..") {
            return Err(CgroupError::InvalidPath(
                cgroups_path.into(),
                "'..' is not allowed",
            ));
        }
        let paths = layout
            .hierarchies
            .iter()
            .map(|h| {
                let full = if cgroups_path.starts_with('/') {
                    cgroups_path.to_string()
                } else {
                    format!("{}/{}", own_cgroup(h).trim_end_matches('/'), cgroups_path)
                };
                // Paths in /proc/self/cgroup are relative to the hierarchy's root; the mount may
                // start lower (cgroup namespace, or a container's own view).
                let rel = full
                    .strip_prefix(h.root.trim_end_matches('/'))
                    .unwrap_or(&full);
                h.mountpoint.join(rel.trim_start_matches('/'))
            })
            .collect();
        Ok(Cgroup {
            paths,
            layout: layout.clone(),
        })
    }

    pub fn from_paths(paths: Vec<PathBuf>) -> Cgroup {
        Cgroup {
            paths,
            layout: Layout::detect().unwrap_or_default(),
        }
    }

    fn dir_for(&self, controller: &str) -> Option<&Path> {
        let idx = if self.layout.on_v2(controller) {
            self.layout.hierarchies.iter().position(|h| h.unified)?
        } else {
            self.layout
                .hierarchies
                .iter()
                .position(|h| !h.unified && h.controllers.iter().any(|c| c == controller))?
        };
        self.paths.get(idx).map(PathBuf::as_path)
    }

    /// Creates the directories and applies `resources`. On error, what was created is removed.
    pub fn create(&self, resources: Option<&LinuxResources>) -> Result<()> {
        let r = self.create_dirs().and_then(|()| match resources {
            Some(r) => self.apply(r),
            None => Ok(()),
        });
        if r.is_err() {
            let _ = self.remove();
        }
        r
    }

    fn create_dirs(&self) -> Result<()> {
        for (h, path) in self.layout.hierarchies.iter().zip(&self.paths) {
            let mut missing = vec![];
            let mut p = path.as_path();
            while !p.exists() && p.starts_with(&h.mountpoint) {
                missing.push(p.to_path_buf());
                p = p.parent().unwrap_or(Path::new("/"));
            }
            for dir in missing.iter().rev() {
                std::fs::create_dir(dir)
                    .or_else(|e| {
                        if e.kind() == std::io::ErrorKind::AlreadyExists {
                            Ok(())
                        } else {
                            Err(e)
                        }
                    })
                    .map_err(|source| CgroupError::Create {
                        path: dir.clone(),
                        source,
                    })?;
                if h.controllers.iter().any(|c| c == "cpuset") {
                    inherit_cpuset(dir)?;
                }
            }
            if h.unified {
                self.enable_v2_controllers(h, path)?;
            }
        }
        Ok(())
    }

    /// Enables the v2 controllers this host manages through the unified hierarchy in every
    /// ancestor's subtree_control, so the container's directory gets their interface files.
    fn enable_v2_controllers(&self, h: &Hierarchy, path: &Path) -> Result<()> {
        let wanted: Vec<&str> = ["cpu", "cpuset", "memory", "pids", "io", "hugetlb"]
            .into_iter()
            .filter(|c| self.layout.on_v2(c))
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let mut ancestors: Vec<&Path> = path
            .ancestors()
            .skip(1)
            .take_while(|a| a.starts_with(&h.mountpoint))
            .collect();
        ancestors.reverse();
        for dir in ancestors {
            let available =
                std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
            let enabled =
                std::fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap_or_default();
            let add: Vec<String> = wanted
                .iter()
                .filter(|c| available.split_whitespace().any(|a| a == **c))
                .filter(|c| !enabled.split_whitespace().any(|a| a == **c))
                .map(|c| format!("+{c}"))
                .collect();
            if !add.is_empty() {
                write(&dir.join("cgroup.subtree_control"), &add.join(" "))?;
            }
        }
        Ok(())
    }

    /// Applies memory, cpu, cpuset, pids and device limits.
    pub fn apply(&self, r: &LinuxResources) -> Result<()> {
        if let Some(m) = r.memory() {
            self.apply_memory(m)?;
        }
        if let Some(c) = r.cpu() {
            self.apply_cpu(c)?;
        }
        // As in runc, 0 means "not set" for these values (Docker and containerd send zeros).
        if let Some(p) = r.pids().filter(|p| p.limit() != 0) {
            if let Some(dir) = self.dir_for("pids") {
                let v = if p.limit() > 0 {
                    p.limit().to_string()
                } else {
                    "max".into()
                };
                write(&dir.join("pids.max"), &v)?;
            }
        }
        if let Some(devices) = r.devices() {
            self.apply_devices(devices)?;
        }
        if let Some(b) = r.block_io() {
            self.apply_block_io(b)?;
        }
        for h in r.hugepage_limits().iter().flatten() {
            self.apply_hugepages(h)?;
        }
        if let Some(n) = r.network() {
            self.apply_network(n)?;
        }
        for (device, limit) in r.rdma().iter().flatten() {
            let value = format!(
                "{device} hca_handle={} hca_object={}",
                limit
                    .hca_handles()
                    .map_or("max".to_string(), |v| v.to_string()),
                limit
                    .hca_objects()
                    .map_or("max".to_string(), |v| v.to_string())
            );
            write(&self.controller_file("rdma", "rdma.max")?, &value)?;
        }
        if let Some(unified) = r.unified() {
            self.apply_unified(unified)?;
        }
        Ok(())
    }

    /// The path of `file` in the hierarchy that drives `controller`, or a clear error when the
    /// host has neither the controller nor the file.
    fn controller_file(&self, controller: &str, file: &str) -> Result<PathBuf> {
        match self.dir_for(controller) {
            Some(dir) if dir.join(file).exists() => Ok(dir.join(file)),
            _ => Err(CgroupError::Unsupported(format!(
                "{controller} limits are not supported on this host (no {file})"
            ))),
        }
    }

    fn apply_block_io(&self, b: &oci_spec::runtime::LinuxBlockIo) -> Result<()> {
        let v2 = self.layout.on_v2("io");
        // v1 weights are 10-1000, v2 1-10000.
        let weight = |w: u16| {
            if v2 {
                (1 + (u64::from(w.clamp(10, 1000)) - 10) * 9999 / 990).to_string()
            } else {
                w.to_string()
            }
        };
        if let Some(w) = b.weight().filter(|w| *w != 0) {
            let (controller, file, value) = if v2 {
                ("io", "io.weight", format!("default {}", weight(w)))
            } else {
                ("blkio", "blkio.weight", w.to_string())
            };
            write(&self.controller_file(controller, file)?, &value)?;
        }
        for d in b.weight_device().iter().flatten() {
            if let Some(w) = d.weight().filter(|w| *w != 0) {
                let (controller, file) = if v2 {
                    ("io", "io.weight")
                } else {
                    ("blkio", "blkio.weight_device")
                };
                let value = format!("{}:{} {}", d.major(), d.minor(), weight(w));
                write(&self.controller_file(controller, file)?, &value)?;
            }
        }
        let throttles = [
            (
                b.throttle_read_bps_device(),
                "blkio.throttle.read_bps_device",
                "rbps",
            ),
            (
                b.throttle_write_bps_device(),
                "blkio.throttle.write_bps_device",
                "wbps",
            ),
            (
                b.throttle_read_iops_device(),
                "blkio.throttle.read_iops_device",
                "riops",
            ),
            (
                b.throttle_write_iops_device(),
                "blkio.throttle.write_iops_device",
                "wiops",
            ),
        ];
        for (devices, v1_file, v2_key) in throttles {
            for d in devices.iter().flatten() {
                let (controller, file, value) = if v2 {
                    (
                        "io",
                        "io.max",
                        format!("{}:{} {v2_key}={}", d.major(), d.minor(), d.rate()),
                    )
                } else {
                    (
                        "blkio",
                        v1_file,
                        format!("{}:{} {}", d.major(), d.minor(), d.rate()),
                    )
                };
                write(&self.controller_file(controller, file)?, &value)?;
            }
        }
        Ok(())
    }

    fn apply_hugepages(&self, h: &oci_spec::runtime::LinuxHugepageLimit) -> Result<()> {
        let size = h.page_size();
        if size.contains('/') || size.contains("..") {
            return Err(CgroupError::InvalidPath(size.clone(), "not a page size"));
        }
        let file = if self.layout.on_v2("hugetlb") {
            format!("hugetlb.{size}.max")
        } else {
            format!("hugetlb.{size}.limit_in_bytes")
        };
        let value = if h.limit() < 0 {
            "max".to_string()
        } else {
            h.limit().to_string()
        };
        write(&self.controller_file("hugetlb", &file)?, &value)
    }

    fn apply_network(&self, n: &oci_spec::runtime::LinuxNetwork) -> Result<()> {
        if let Some(id) = n.class_id() {
            write(
                &self.controller_file("net_cls", "net_cls.classid")?,
                &id.to_string(),
            )?;
        }
        for p in n.priorities().iter().flatten() {
            let value = format!("{} {}", p.name(), p.priority());
            write(
                &self.controller_file("net_prio", "net_prio.ifpriomap")?,
                &value,
            )?;
        }
        Ok(())
    }

    /// `unified`: raw v2 key/values, each key a file in the container's unified directory.
    fn apply_unified(&self, unified: &std::collections::HashMap<String, String>) -> Result<()> {
        if unified.is_empty() {
            return Ok(());
        }
        let idx = self.layout.hierarchies.iter().position(|h| h.unified);
        let Some(dir) = idx.and_then(|i| self.paths.get(i)) else {
            return Err(CgroupError::Unsupported(
                "linux.resources.unified needs cgroup v2 (none is mounted)".into(),
            ));
        };
        for (key, value) in unified {
            if key.contains('/') || key.starts_with('.') {
                return Err(CgroupError::InvalidPath(
                    key.clone(),
                    "unified keys are file names",
                ));
            }
            let file = dir.join(key);
            if !file.exists() {
                return Err(CgroupError::Unsupported(format!(
                    "unified key {key:?}: no such file in the container's cgroup v2 directory"
                )));
            }
            write(&file, value)?;
        }
        Ok(())
    }

    fn apply_memory(&self, m: &oci_spec::runtime::LinuxMemory) -> Result<()> {
        let mut m = *m;
        let set = |v: Option<i64>| v.filter(|v| *v != 0);
        m.set_limit(set(m.limit()));
        m.set_swap(set(m.swap()));
        m.set_reservation(set(m.reservation()));
        let m = &m;
        let Some(dir) = self.dir_for("memory") else {
            return Ok(());
        };
        let v2 = self.layout.on_v2("memory");
        let num = |v: i64| {
            if v < 0 {
                if v2 {
                    "max".to_string()
                } else {
                    "-1".to_string()
                }
            } else {
                v.to_string()
            }
        };
        if v2 {
            if let Some(l) = m.limit() {
                write(&dir.join("memory.max"), &num(l))?;
            }
            if let Some(s) = m.swap() {
                // v2 accounts swap alone; the spec's value is memory+swap.
                let v = match (s, m.limit()) {
                    (s, _) if s < 0 => "max".to_string(),
                    (s, Some(l)) if l >= 0 => (s - l).max(0).to_string(),
                    (s, _) => s.to_string(),
                };
                write_if_exists(&dir.join("memory.swap.max"), &v)?;
            }
            if let Some(r) = m.reservation() {
                write(&dir.join("memory.low"), &num(r))?;
            }
            return Ok(());
        }
        let limit_file = dir.join("memory.limit_in_bytes");
        let memsw_file = dir.join("memory.memsw.limit_in_bytes");
        match (m.limit(), m.swap()) {
            (Some(l), Some(s)) if memsw_file.exists() => {
                // memsw must never drop below the memory limit: order the writes accordingly.
                if write(&limit_file, &num(l)).is_err() {
                    write(&memsw_file, &num(s))?;
                    write(&limit_file, &num(l))?;
                } else {
                    write(&memsw_file, &num(s))?;
                }
            }
            (l, s) => {
                if let Some(l) = l {
                    write(&limit_file, &num(l))?;
                }
                if let Some(s) = s {
                    if memsw_file.exists() {
                        write(&memsw_file, &num(s))?;
                    } else {
                        tracing::warn!(
                            swap = s,
                            "swap accounting is off on this host: memory.swap ignored"
                        );
                    }
                }
            }
        }
        if let Some(r) = m.reservation() {
            write(&dir.join("memory.soft_limit_in_bytes"), &num(r))?;
        }
        if let Some(s) = m.swappiness() {
            write_if_exists(&dir.join("memory.swappiness"), &s.to_string())?;
        }
        if m.disable_oom_killer() == Some(true) {
            write(&dir.join("memory.oom_control"), "1")?;
        }
        Ok(())
    }

    fn apply_cpu(&self, c: &oci_spec::runtime::LinuxCpu) -> Result<()> {
        if let Some(dir) = self.dir_for("cpu") {
            if self.layout.on_v2("cpu") {
                if let Some(idle) = c.idle() {
                    write(&dir.join("cpu.idle"), &idle.to_string())?;
                }
                if let Some(shares) = c.shares().filter(|s| *s > 0) {
                    write(
                        &dir.join("cpu.weight"),
                        &shares_to_weight(shares).to_string(),
                    )?;
                }
                if c.quota().is_some_and(|q| q != 0) || c.period().is_some_and(|p| p != 0) {
                    let quota = match c.quota() {
                        Some(q) if q > 0 => q.to_string(),
                        _ => "max".into(),
                    };
                    let period = c.period().filter(|p| *p > 0).unwrap_or(100_000);
                    write(&dir.join("cpu.max"), &format!("{quota} {period}"))?;
                }
            } else {
                if let Some(shares) = c.shares().filter(|s| *s > 0) {
                    write(&dir.join("cpu.shares"), &shares.to_string())?;
                }
                if let Some(p) = c.period().filter(|p| *p > 0) {
                    write(&dir.join("cpu.cfs_period_us"), &p.to_string())?;
                }
                if let Some(q) = c.quota().filter(|q| *q != 0) {
                    write(&dir.join("cpu.cfs_quota_us"), &q.to_string())?;
                }
                for (value, file) in [
                    (
                        c.realtime_period().map(|v| v.to_string()),
                        "cpu.rt_period_us",
                    ),
                    (
                        c.realtime_runtime().map(|v| v.to_string()),
                        "cpu.rt_runtime_us",
                    ),
                ] {
                    if let Some(v) = value {
                        if !dir.join(file).exists() {
                            return Err(CgroupError::Unsupported(format!(
                                "realtime CPU limits are not supported on this host (no {file})"
                            )));
                        }
                        write(&dir.join(file), &v)?;
                    }
                }
            }
        }
        if let Some(dir) = self.dir_for("cpuset") {
            // Same file names on v1 and v2.
            if let Some(cpus) = c.cpus().as_ref().filter(|s| !s.is_empty()) {
                write(&dir.join("cpuset.cpus"), cpus)?;
            }
            if let Some(mems) = c.mems().as_ref().filter(|s| !s.is_empty()) {
                write(&dir.join("cpuset.mems"), mems)?;
            }
        }
        Ok(())
    }

    fn apply_devices(&self, rules: &[LinuxDeviceCgroup]) -> Result<()> {
        if rules.is_empty() {
            return Ok(());
        }
        let rules = with_default_devices(rules);
        let rules = &rules[..];
        // LODGE_DEVICE_FILTER=ebpf uses the v2 filter even where v1 has a devices hierarchy
        // (both then apply), so the eBPF path is tested on hybrid hosts too.
        let force_bpf = std::env::var_os("LODGE_DEVICE_FILTER").is_some_and(|v| v == "ebpf");
        if let Some(h) = self.layout.v1("devices").filter(|_| !force_bpf) {
            let idx = self
                .layout
                .hierarchies
                .iter()
                .position(|o| std::ptr::eq(o, h))
                .expect("own hierarchy");
            let dir = &self.paths[idx];
            for rule in rules {
                let file = if rule.allow() {
                    "devices.allow"
                } else {
                    "devices.deny"
                };
                write(&dir.join(file), &device_rule(rule))?;
            }
            return Ok(());
        }
        // No v1 devices hierarchy: filter with an eBPF program on the unified hierarchy.
        let unified = self.layout.hierarchies.iter().position(|h| h.unified);
        let Some(dir) = unified.and_then(|i| self.paths.get(i)) else {
            return Err(CgroupError::Unsupported(
                "device rules need a v1 devices hierarchy or cgroup v2".into(),
            ));
        };
        crate::devices_bpf::attach(dir, rules).map_err(|source| CgroupError::Write {
            path: dir.clone(),
            value: "eBPF device filter".into(),
            source,
        })
    }

    /// Freezes (or thaws) every process, and waits until the kernel says it is done.
    pub fn freeze(&self, frozen: bool) -> Result<()> {
        if let Some(dir) = self
            .dir_for("freezer")
            .filter(|_| !self.layout.on_v2("freezer"))
        {
            let want = if frozen { "FROZEN" } else { "THAWED" };
            write(&dir.join("freezer.state"), want)?;
            return wait_for(&dir.join("freezer.state"), want);
        }
        let unified = self.layout.hierarchies.iter().position(|h| h.unified);
        let Some(dir) = unified.and_then(|i| self.paths.get(i)) else {
            return Err(CgroupError::Unsupported(
                "no freezer: neither a v1 freezer hierarchy nor cgroup v2".into(),
            ));
        };
        write(&dir.join("cgroup.freeze"), if frozen { "1" } else { "0" })?;
        let events = dir.join("cgroup.events");
        let want = if frozen { "frozen 1" } else { "frozen 0" };
        wait_for(&events, want)
    }

    /// Reads a controller file of the container (for stats), if the host has it.
    pub fn read(&self, controller: &str, file: &str) -> Option<String> {
        std::fs::read_to_string(self.dir_for(controller)?.join(file)).ok()
    }

    /// Whether `controller` is driven through cgroup v2 on this host.
    pub fn is_v2(&self, controller: &str) -> bool {
        self.layout.on_v2(controller)
    }

    /// Moves `pid` into every hierarchy's directory.
    pub fn add_pid(&self, pid: i32) -> Result<()> {
        for path in &self.paths {
            write(&path.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// Pids in the container's cgroup and every sub-cgroup (from the first hierarchy that can
    /// list them): a system container's processes live below it.
    pub fn pids(&self) -> Vec<i32> {
        for path in &self.paths {
            let mut out = vec![];
            if collect_pids(path, &mut out).is_ok() {
                return out;
            }
        }
        vec![]
    }

    /// Where a delegated system container's processes run, from its delegation entry points
    /// (`Delegation::entry`): the same on v1, `init.scope` below it on v2.
    pub fn delegated_leaves(&self) -> Cgroup {
        let paths = self
            .layout
            .hierarchies
            .iter()
            .zip(&self.paths)
            .map(|(h, p)| {
                if h.unified {
                    p.join("init.scope")
                } else {
                    p.clone()
                }
            })
            .collect();
        self.with_paths(paths)
    }

    /// Splits the directories for placing a new process: the v1 ones, which the process joins
    /// itself by writing "0" to their `tasks` file, and the rest (v2), where the runtime writes
    /// its pid. Moving only itself, a process needs no global lock; a pid written to a v1
    /// cgroup.procs takes cgroup_threadgroup_rwsem for writing, which waits for an RCU grace
    /// period (several milliseconds) unless another writer just had it.
    pub fn split_self_join(&self) -> (Vec<PathBuf>, Cgroup) {
        let (mut own, mut rest) = (vec![], vec![]);
        for (h, p) in self.layout.hierarchies.iter().zip(&self.paths) {
            if h.unified {
                rest.push(p.clone());
            } else {
                own.push(p.clone());
            }
        }
        (own, self.with_paths(rest))
    }

    /// The same layout with other directories (a delegated sub-cgroup, one per hierarchy).
    pub fn with_paths(&self, paths: Vec<PathBuf>) -> Cgroup {
        Cgroup {
            paths,
            layout: self.layout.clone(),
        }
    }

    /// Delegates the cgroup to the container's root (`owner`), so systemd and Docker inside can
    /// make sub-cgroups while the limits set here stay out of reach:
    /// - v1 hierarchies (which have no delegation model): a child, `DELEGATED_V1`, entirely the
    ///   container's; the limits sit on its parent, which stays root's;
    /// - the v2 hierarchy: the cgroup itself with only cgroup.procs, cgroup.threads and
    ///   cgroup.subtree_control handed over (its limit files stay root's), and an `init.scope`
    ///   leaf, entirely the container's, for init and every exec.
    pub fn delegate(&self, owner: (u32, u32)) -> Result<Delegation> {
        let mut delegation = Delegation {
            entry: vec![],
            v2_leaf: None,
        };
        for (h, path) in self.layout.hierarchies.iter().zip(&self.paths) {
            let entry = if h.unified {
                let leaf = path.join("init.scope");
                make_dir(&leaf)?;
                for f in [
                    "",
                    "cgroup.procs",
                    "cgroup.threads",
                    "cgroup.subtree_control",
                ] {
                    chown(&path.join(f), owner)?;
                }
                chown_tree(&leaf, owner)?;
                delegation.v2_leaf = Some(leaf);
                path.clone()
            } else {
                let child = path.join(DELEGATED_V1);
                make_dir(&child)?;
                if h.controllers.iter().any(|c| c == "cpuset") {
                    inherit_cpuset(&child)?;
                }
                chown_tree(&child, owner)?;
                child
            };
            delegation.entry.push(entry);
        }
        Ok(delegation)
    }

    /// Removes every directory (and sub-cgroups the container made), retrying while the last
    /// processes are still exiting.
    pub fn remove(&self) -> Result<()> {
        for path in &self.paths {
            let mut tries = 0;
            loop {
                match rmdir_tree(path) {
                    Ok(()) => break,
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) && tries < 200 => {
                        tries += 1;
                        std::thread::sleep(std::time::Duration::from_millis(5));
                    }
                    Err(source) => {
                        return Err(CgroupError::Remove {
                            path: path.clone(),
                            source,
                        })
                    }
                }
            }
        }
        Ok(())
    }
}

/// Moves the calling thread's process into v1 cgroup `dir` (see `Cgroup::split_self_join`).
pub fn join_self(dir: &Path) -> std::io::Result<()> {
    std::fs::write(dir.join("tasks"), "0")
}

/// The delegated child of a system container's cgroup in each v1 hierarchy.
pub const DELEGATED_V1: &str = "delegated";

/// Where a system container's processes go, per hierarchy (`Cgroup::delegate`).
#[derive(Debug, Clone)]
pub struct Delegation {
    /// Where init is placed at clone: its cgroup namespace is rooted there (v1: the delegated
    /// child; v2: the container's cgroup).
    pub entry: Vec<PathBuf>,
    /// The v2 leaf init moves into once its cgroup namespace exists.
    pub v2_leaf: Option<PathBuf>,
}

/// The conversion runc and crun use between v1 CPU shares and the v2 weight.
pub fn shares_to_weight(shares: u64) -> u64 {
    1 + ((shares.clamp(2, 262_144) - 2) * 9999) / 262_142
}

fn make_dir(dir: &Path) -> Result<()> {
    match std::fs::create_dir(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(CgroupError::Create {
            path: dir.to_path_buf(),
            source: e,
        }),
        _ => Ok(()),
    }
}

fn chown(path: &Path, (uid, gid): (u32, u32)) -> Result<()> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(|source| CgroupError::Write {
        path: path.to_path_buf(),
        value: format!("owner {uid}:{gid}"),
        source,
    })
}

/// A fresh cgroup directory and its interface files (no sub-directories yet).
fn chown_tree(dir: &Path, owner: (u32, u32)) -> Result<()> {
    chown(dir, owner)?;
    let entries = std::fs::read_dir(dir).map_err(|source| CgroupError::Create {
        path: dir.to_path_buf(),
        source,
    })?;
    for e in entries.flatten() {
        chown(&e.path(), owner)?;
    }
    Ok(())
}

fn collect_pids(dir: &Path, out: &mut Vec<i32>) -> std::io::Result<()> {
    let procs = std::fs::read_to_string(dir.join("cgroup.procs"))?;
    out.extend(procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    for e in std::fs::read_dir(dir)?.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            let _ = collect_pids(&e.path(), out);
        }
    }
    Ok(())
}

/// Polls `file` until it holds `want` (a line of it, for cgroup.events), up to 10 s.
fn wait_for(file: &Path, want: &str) -> Result<()> {
    for _ in 0..2000 {
        let now = std::fs::read_to_string(file).unwrap_or_default();
        if now.trim() == want || now.lines().any(|l| l.trim() == want) {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    Err(CgroupError::Unsupported(format!(
        "{} never became {want:?}",
        file.display()
    )))
}

fn rmdir_tree(path: &Path) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(path) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            rmdir_tree(&entry.path())?;
        }
    }
    match std::fs::remove_dir(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// A new v1 cpuset cgroup starts with empty cpus/mems, and no task can join it until they are
/// set: copy them from the parent.
fn inherit_cpuset(dir: &Path) -> Result<()> {
    let parent = dir.parent().unwrap_or(Path::new("/"));
    for f in ["cpuset.cpus", "cpuset.mems"] {
        let cur = std::fs::read_to_string(dir.join(f)).unwrap_or_default();
        if cur.trim().is_empty() {
            let v = std::fs::read_to_string(parent.join(f)).unwrap_or_default();
            write(&dir.join(f), v.trim())?;
        }
    }
    Ok(())
}

/// The spec's rules followed by what every container needs, as runc adds them: mknod of any
/// node (using one still needs an allow rule), the default devices, ptys and tun.
fn with_default_devices(rules: &[LinuxDeviceCgroup]) -> Vec<LinuxDeviceCgroup> {
    use oci_spec::runtime::LinuxDeviceType::{B, C};
    let rule = |typ, major: Option<i64>, minor: Option<i64>, access: &str| {
        let mut r = LinuxDeviceCgroup::default();
        r.set_allow(true);
        r.set_typ(Some(typ));
        r.set_major(major);
        r.set_minor(minor);
        r.set_access(Some(access.to_string()));
        r
    };
    let mut out = rules.to_vec();
    out.push(rule(C, None, None, "m"));
    out.push(rule(B, None, None, "m"));
    for (major, minor) in [
        (1, 3),
        (1, 5),
        (1, 7),
        (1, 8),
        (1, 9),
        (5, 0),
        (5, 2),
        (10, 200),
    ] {
        out.push(rule(C, Some(major), Some(minor), "rwm"));
    }
    out.push(rule(C, Some(136), None, "rwm"));
    out
}

fn device_rule(rule: &LinuxDeviceCgroup) -> String {
    use oci_spec::runtime::LinuxDeviceType;
    let typ = match rule.typ() {
        Some(LinuxDeviceType::C) | Some(LinuxDeviceType::U) => "c",
        Some(LinuxDeviceType::B) => "b",
        Some(LinuxDeviceType::P) => "p",
        Some(LinuxDeviceType::A) | None => "a",
    };
    let num = |n: Option<i64>| {
        n.filter(|n| *n >= 0)
            .map_or("*".to_string(), |n| n.to_string())
    };
    let access = rule.access().clone().unwrap_or_else(|| "rwm".into());
    format!("{typ} {}:{} {access}", num(rule.major()), num(rule.minor()))
}

fn write(path: &Path, value: &str) -> Result<()> {
    std::fs::write(path, value).map_err(|source| CgroupError::Write {
        path: path.to_path_buf(),
        value: value.to_string(),
        source,
    })
}

fn write_if_exists(path: &Path, value: &str) -> Result<()> {
    if path.exists() {
        write(path, value)
    } else {
        tracing::warn!(path = %path.display(), "not supported on this host: setting ignored");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::systemd_to_fs_path;

    #[test]
    fn systemd_paths_expand_like_systemd() {
        assert_eq!(
            systemd_to_fs_path("system.slice:docker:abc").unwrap(),
            "/system.slice/docker-abc.scope"
        );
        assert_eq!(
            systemd_to_fs_path("a-b.slice:crio:x").unwrap(),
            "/a.slice/a-b.slice/crio-x.scope"
        );
        assert_eq!(
            systemd_to_fs_path(":lodge:y").unwrap(),
            "/system.slice/lodge-y.scope"
        );
        assert!(systemd_to_fs_path("/plain/path").is_err());
    }
}

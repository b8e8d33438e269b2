//! Reading a container's cgroup from the host: its directory in every hierarchy, whichever
//! hierarchy (v1 or v2) holds a controller's files.

use std::path::{Path, PathBuf};

use crate::kernel_files;

/// A container's cgroup directories on the host, one per hierarchy.
#[derive(Debug, Clone)]
pub struct CgroupView {
    pub paths: Vec<PathBuf>,
}

impl CgroupView {
    /// The directory holding `file` (e.g. `memory.max`), if any hierarchy has it.
    pub fn dir_with(&self, file: &str) -> Option<&Path> {
        self.paths
            .iter()
            .map(PathBuf::as_path)
            .find(|p| kernel_files::exists(&p.join(file)))
    }

    pub fn read(&self, file: &str) -> Option<String> {
        kernel_files::read(&self.dir_with(file)?.join(file))
    }

    pub fn read_u64(&self, file: &str) -> Option<u64> {
        self.read(file)?.trim().parse().ok()
    }

    /// The lowest value of `file` from the container's cgroup up to the hierarchy's root
    /// (`parse` maps "max" and the like to `None`).
    pub fn lowest_up(&self, file: &str, parse: impl Fn(&str) -> Option<u64>) -> Option<u64> {
        let mut dir = self.dir_with(file)?.to_path_buf();
        let mut lowest: Option<u64> = None;
        loop {
            match kernel_files::read(&dir.join(file)) {
                Some(v) => {
                    if let Some(x) = parse(v.trim()) {
                        lowest = Some(lowest.map_or(x, |l| l.min(x)));
                    }
                }
                None => return lowest,
            }
            if !dir.pop() {
                return lowest;
            }
        }
    }

    /// `memory.stat` as (key, value) pairs.
    pub fn memory_stat(&self) -> Vec<(String, u64)> {
        self.read("memory.stat")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let (k, v) = l.split_once(' ')?;
                Some((k.to_string(), v.trim().parse().ok()?))
            })
            .collect()
    }

    /// The CPUs the container may run on: its cpuset, capped by its CFS quota (the lowest
    /// ceil(quota / period) up the hierarchy), lowest numbers first.
    pub fn cpus(&self) -> Vec<u32> {
        let host = host_online_cpus();
        let mut cpus = self
            .read("cpuset.cpus.effective")
            .or_else(|| self.read("cpuset.effective_cpus"))
            .or_else(|| self.read("cpuset.cpus"))
            .map(|s| parse_cpu_list(s.trim()))
            .filter(|c| !c.is_empty())
            .unwrap_or_else(|| host.clone());
        cpus.retain(|c| host.contains(c));
        if let Some(n) = self.quota_cpus() {
            cpus.truncate(n.max(1) as usize);
        }
        cpus
    }

    fn quota_cpus(&self) -> Option<u64> {
        let v2 = self.lowest_up("cpu.max", |v| {
            let (quota, period) = v.split_once(' ')?;
            Some(ceil_div(quota.parse().ok()?, period.parse().ok()?))
        });
        if v2.is_some() {
            return v2;
        }
        let dir = self.dir_with("cpu.cfs_quota_us")?.to_path_buf();
        let mut lowest: Option<u64> = None;
        let mut d = dir;
        loop {
            let Some(quota) = kernel_files::read(&d.join("cpu.cfs_quota_us")) else {
                return lowest;
            };
            // -1 (no quota) is the common case: the period matters only under a quota.
            let quota = quota.trim().parse::<i64>().unwrap_or(-1);
            if quota > 0 {
                let period = kernel_files::read(&d.join("cpu.cfs_period_us"))
                    .and_then(|p| p.trim().parse::<u64>().ok())
                    .unwrap_or(0);
                if period > 0 {
                    let n = ceil_div(quota as u64, period);
                    lowest = Some(lowest.map_or(n, |l| l.min(n)));
                }
            }
            if !d.pop() {
                return lowest;
            }
        }
    }

    /// Pids in the cgroup and its sub-cgroups (from the first hierarchy that lists them).
    pub fn pids(&self) -> Vec<i32> {
        fn walk(dir: &Path, out: &mut Vec<i32>) {
            if let Ok(s) = std::fs::read_to_string(dir.join("cgroup.procs")) {
                out.extend(s.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
            }
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    walk(&e.path(), out);
                }
            }
        }
        let mut out = vec![];
        if let Some(dir) = self.paths.first() {
            walk(dir, &mut out);
        }
        out
    }
}

fn ceil_div(a: u64, b: u64) -> u64 {
    if b == 0 {
        return a;
    }
    a.div_ceil(b)
}

/// "0-3,5" → [0, 1, 2, 3, 5].
pub fn parse_cpu_list(s: &str) -> Vec<u32> {
    let mut out = vec![];
    for part in s.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.trim().parse::<u32>(), b.trim().parse::<u32>()) {
                    out.extend(a..=b);
                }
            }
            None => out.extend(part.trim().parse::<u32>().ok()),
        }
    }
    out
}

/// [0, 1, 2, 5] → "0-2,5".
pub fn format_cpu_list(cpus: &[u32]) -> String {
    let mut parts = vec![];
    let mut i = 0;
    while i < cpus.len() {
        let start = cpus[i];
        let mut end = start;
        while i + 1 < cpus.len() && cpus[i + 1] == end + 1 {
            i += 1;
            end = cpus[i];
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    parts.join(",")
}

/// The host's online CPUs, as read at most a second ago (they change only with CPU hotplug).
pub fn host_online_cpus() -> Vec<u32> {
    kernel_files::read_recent(
        Path::new("/sys/devices/system/cpu/online"),
        std::time::Duration::from_secs(1),
    )
    .map(|s| parse_cpu_list(s.trim()))
    .unwrap_or_default()
}

/// The CPUs this process may run on.
pub fn allowed_cpus() -> Vec<u32> {
    // SAFETY: sched_getaffinity into a zeroed cpu_set_t of the size given.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return host_online_cpus();
        }
        (0..libc::CPU_SETSIZE as u32)
            .filter(|&c| libc::CPU_ISSET(c as usize, &set))
            .collect()
    }
}

/// Keeps thread `tid` (0: the calling thread) on `cpu`.
pub fn pin(tid: libc::pid_t, cpu: u32) {
    if cpu >= libc::CPU_SETSIZE as u32 {
        return;
    }
    // SAFETY: a zeroed cpu_set_t with one CPU set, for one of our own threads.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu as usize, &mut set);
        libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_round_trip() {
        assert_eq!(parse_cpu_list("0-2,5"), [0, 1, 2, 5]);
        assert_eq!(format_cpu_list(&[0, 1, 2, 5]), "0-2,5");
        assert_eq!(format_cpu_list(&[3]), "3");
    }
}

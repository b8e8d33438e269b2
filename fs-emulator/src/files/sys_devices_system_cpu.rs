//! /sys/devices/system/cpu: the CPUs the container may use.

use super::{Container, EmulatedFile};

pub const FILES: &[EmulatedFile] = &[EmulatedFile::read_only(
    "sys/devices/system/cpu/online",
    online,
)];

/// The container's CPUs (cpuset, capped by its CFS quota) as a range list, renumbered from 0
/// like /proc/cpuinfo and /proc/stat.
fn online(c: &Container) -> String {
    let n = c.cgroup.cpus().len().max(1) as u32;
    let all: Vec<u32> = (0..n).collect();
    format!("{}\n", crate::cgroup::format_cpu_list(&all))
}

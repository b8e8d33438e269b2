//! `--systemd-cgroup` on a host where systemd is PID 1: the container's cgroup is a transient
//! scope (`StartTransientUnit`, `Delegate=yes`) that systemd creates, with the container's limits
//! as the unit's properties (MemoryMax, TasksMax, CPUWeight, ...), so systemd's own writes to the
//! scope agree with them. lodge-runc then writes the same limits through cgroupfs and lays the
//! delegated layout out inside (docs/architecture.md).
//!
//! A scope needs a process when it starts, and systemd moves that process into the scope's root.
//! Init cannot be it: once it sits in the root, the container can enable no controller below
//! (cgroup v2 allows no process in a cgroup that has controllers enabled for its children). So a
//! placeholder child holds the scope until init is in place, and is then killed.
//!
//! The D-Bus calls go through zbus on a current-thread tokio runtime that lives only for the
//! call: lodge-runc stays single-threaded whenever it forks (checked by `threads()`).
//!
//! Without systemd as PID 1 (no /run/systemd/system) the same `slice:prefix:name` path is
//! served by cgroupfs alone, with a warning.

use std::time::{Duration, Instant};

use lodge_sys::systemd::Value;
use lodge_sys::systemd::{self, Property, SystemdError};
use oci_spec::runtime::LinuxResources;
use thiserror::Error;

/// How long a scope's stop waits for its processes after SIGTERM, before SIGKILL (systemd's
/// default is 90 s: a host shutdown would wait that long on a container's init that ignores
/// SIGTERM, as systemd does).
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Error)]
pub enum ScopeError {
    #[error("the systemd cgroup driver: {0} (or run without --systemd-cgroup)")]
    Systemd(#[from] SystemdError),
    #[error("systemd did not put scope {unit} in place within {secs} s (journalctl -u {unit})")]
    NotStarted { unit: String, secs: u64 },
    #[error("the systemd cgroup driver: {0}")]
    Io(#[from] std::io::Error),
}

pub use systemd::booted;

/// The unit and slice named by a `slice:prefix:name` cgroupsPath (`lodge-<id>.scope` in
/// system.slice without one).
pub fn unit_and_slice(cgroups_path: &str, id: &str) -> (String, String) {
    crate::cgroups::systemd_unit_and_slice(cgroups_path)
        .unwrap_or_else(|| (format!("lodge-{id}.scope"), "system.slice".to_string()))
}

/// A transient scope in place, held by a placeholder process until the container's init is in
/// its cgroup (`release`). Dropped unreleased (a failed create), the scope is stopped.
pub struct Scope {
    pub unit: String,
    placeholder: Option<i32>,
}

impl Scope {
    /// Starts scope `unit` in `slice` with the container's limits and waits until systemd has
    /// made its cgroup (the placeholder is in it).
    pub fn start(
        unit: &str,
        slice: &str,
        id: &str,
        resources: Option<&LinuxResources>,
    ) -> Result<Scope, ScopeError> {
        let placeholder = spawn_placeholder()?;
        let scope = Scope {
            unit: unit.to_string(),
            placeholder: Some(placeholder),
        };
        let description = format!("lodge-runc container {id}");
        let mut props: Vec<Property> = vec![
            ("Delegate", true.into()),
            // Out of the shutdown transaction, as runc's scopes: the engine stops its
            // containers with their stop signal (systemd's SIGRTMIN+3), and
            // lodge-containers.service halts the rest; systemd's SIGTERM to every process
            // of the scope at the same moment would only make systemd inside re-execute.
            ("DefaultDependencies", false.into()),
            ("TimeoutStopUSec", (STOP_TIMEOUT.as_micros() as u64).into()),
            ("MemoryAccounting", true.into()),
            ("CPUAccounting", true.into()),
            ("TasksAccounting", true.into()),
            ("IOAccounting", true.into()),
        ];
        props.extend(unit_properties(resources));
        systemd::start_scope(unit, slice, &description, &[placeholder as u32], props)?;
        let threads = threads();
        if threads > 1 {
            tracing::warn!(threads, "D-Bus left threads behind in lodge-runc");
        }
        // The job runs after the call returns: wait until the placeholder is in the scope.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !systemd::in_unit(placeholder as u32, unit)? {
            if Instant::now() > deadline {
                // Dropped: stopped.
                return Err(ScopeError::NotStarted {
                    unit: unit.to_string(),
                    secs: 10,
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        tracing::debug!(unit, slice, "systemd scope in place");
        Ok(scope)
    }

    /// Init is in the scope's cgroup: the placeholder goes (the scope lives on with init).
    pub fn release(mut self) -> String {
        self.kill_placeholder();
        std::mem::take(&mut self.unit)
    }

    fn kill_placeholder(&mut self) {
        if let Some(pid) = self.placeholder.take() {
            let pid = nix::unistd::Pid::from_raw(pid);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(pid, None);
        }
    }

    fn stop(&mut self) -> Result<(), ScopeError> {
        self.kill_placeholder();
        stop(&self.unit)
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        if self.unit.is_empty() {
            return;
        }
        if let Err(e) = self.stop() {
            tracing::warn!(unit = %self.unit, error = %e, "stopping the scope of a failed create");
        }
    }
}

/// A child that only waits to be killed (and dies with lodge-runc).
fn spawn_placeholder() -> Result<i32, ScopeError> {
    match crate::sys::fork_with_flags(0)? {
        crate::sys::Forked::Child => {
            // SAFETY: async-signal-safe calls only, in a forked child of a single thread.
            unsafe {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                loop {
                    libc::pause();
                }
            }
        }
        crate::sys::Forked::Parent(pid) => Ok(pid),
    }
}

/// Stops the scope (at delete); nothing is left listed.
pub fn stop(unit: &str) -> Result<(), ScopeError> {
    Ok(systemd::stop_unit(unit)?)
}

/// `update` under systemd: the scope's properties follow, so systemd's next write to the scope
/// (a `daemon-reload`) keeps the new limits rather than the ones it started with.
pub fn update(unit: &str, resources: &LinuxResources) -> Result<(), ScopeError> {
    let props = unit_properties(Some(resources));
    if props.is_empty() {
        return Ok(());
    }
    Ok(systemd::set_properties(unit, props)?)
}

/// The unit properties for the spec's limits, converted as runc's systemd driver converts them.
fn unit_properties(r: Option<&LinuxResources>) -> Vec<(&'static str, Value<'static>)> {
    let mut props: Vec<(&'static str, Value<'static>)> = vec![];
    let Some(r) = r else { return props };
    let limit = |v: i64| if v < 0 { u64::MAX } else { v as u64 };
    if let Some(m) = r.memory() {
        if let Some(l) = m.limit().filter(|l| *l != 0) {
            props.push(("MemoryMax", limit(l).into()));
        }
        if let Some(l) = m.reservation().filter(|l| *l > 0) {
            props.push(("MemoryLow", (l as u64).into()));
        }
        // OCI's swap is memory + swap; cgroup v2's swap limit is the swap alone.
        match (m.swap(), m.limit()) {
            (Some(-1), _) => props.push(("MemorySwapMax", u64::MAX.into())),
            (Some(s), Some(l)) if s > 0 && l > 0 && s >= l => {
                props.push(("MemorySwapMax", ((s - l) as u64).into()))
            }
            _ => {}
        }
    }
    if let Some(l) = r.pids().as_ref().map(|p| p.limit()).filter(|l| *l != 0) {
        props.push(("TasksMax", limit(l).into()));
    }
    if let Some(c) = r.cpu() {
        if let Some(shares) = c.shares().filter(|s| *s > 0) {
            props.push(("CPUWeight", crate::cgroups::shares_to_weight(shares).into()));
        }
        if let Some(quota) = c.quota().filter(|q| *q > 0) {
            let period = c.period().filter(|p| *p > 0).unwrap_or(100_000);
            // Per second, rounded up to 10 ms as systemd stores it (runc does the same).
            let per_sec = (quota as u64 * 1_000_000).div_ceil(period).div_ceil(10_000) * 10_000;
            props.push(("CPUQuotaPerSecUSec", per_sec.into()));
            props.push(("CPUQuotaPeriodUSec", period.into()));
        }
        if let Some(mask) = c.cpus().as_deref().and_then(cpu_mask) {
            props.push(("AllowedCPUs", mask.into()));
        }
        if let Some(mask) = c.mems().as_deref().and_then(cpu_mask) {
            props.push(("AllowedMemoryNodes", mask.into()));
        }
    }
    props
}

/// A CPU or node list ("0-2,4") as systemd's bitmask bytes (bit i of byte i/8 is CPU i).
fn cpu_mask(list: &str) -> Option<Vec<u8>> {
    let mut mask = vec![];
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.parse::<usize>().ok()?, b.parse::<usize>().ok()?),
            None => {
                let n = part.parse::<usize>().ok()?;
                (n, n)
            }
        };
        if a > b || b >= 8192 {
            return None;
        }
        for cpu in a..=b {
            if mask.len() <= cpu / 8 {
                mask.resize(cpu / 8 + 1, 0);
            }
            mask[cpu / 8] |= 1 << (cpu % 8);
        }
    }
    (!mask.is_empty()).then_some(mask)
}

/// The threads of this process: lodge-runc forks, so it must stay single-threaded.
pub fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(
            unit_and_slice("system.slice:docker:abc", "x"),
            ("docker-abc.scope".into(), "system.slice".into())
        );
        assert_eq!(
            unit_and_slice(":lodge:y", "x"),
            ("lodge-y.scope".into(), "system.slice".into())
        );
        assert_eq!(
            unit_and_slice("", "x"),
            ("lodge-x.scope".into(), "system.slice".into())
        );
    }

    #[test]
    fn cpu_lists_become_masks() {
        assert_eq!(cpu_mask("0"), Some(vec![1]));
        assert_eq!(cpu_mask("0-2,9"), Some(vec![0b111, 0b10]));
        assert_eq!(cpu_mask("3-1"), None);
        assert_eq!(cpu_mask("x"), None);
    }

    #[test]
    fn limits_become_properties() {
        let r: LinuxResources = serde_json::from_value(serde_json::json!({
            "memory": {"limit": 268435456, "swap": 536870912, "reservation": 1048576},
            "pids": {"limit": 100},
            "cpu": {"shares": 1024, "quota": 50000, "period": 100000, "cpus": "1"}
        }))
        .unwrap();
        let props = unit_properties(Some(&r));
        let get = |k: &str| {
            props
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        };
        assert_eq!(get("MemoryMax").as_deref(), Some("uint64 268435456"));
        assert_eq!(get("MemorySwapMax").as_deref(), Some("uint64 268435456"));
        assert_eq!(get("MemoryLow").as_deref(), Some("uint64 1048576"));
        assert_eq!(get("TasksMax").as_deref(), Some("uint64 100"));
        assert_eq!(get("CPUWeight").as_deref(), Some("uint64 39"));
        assert_eq!(get("CPUQuotaPerSecUSec").as_deref(), Some("uint64 500000"));
        assert!(get("AllowedCPUs").is_some());
    }

    #[test]
    fn no_bus_is_a_clear_error() {
        if std::path::Path::new("/run/dbus/system_bus_socket").exists() {
            return;
        }
        let err = stop("lodge-none.scope").unwrap_err().to_string();
        assert!(
            err.contains("system D-Bus") && err.contains("--systemd-cgroup"),
            "{err}"
        );
    }
}

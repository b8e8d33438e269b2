//! `--systemd-cgroup` on a host where systemd is PID 1: the container's cgroup is registered with
//! systemd as a transient scope (`StartTransientUnit`, `Delegate=yes`), so systemd owns the unit
//! and leaves the container's subtree to lodge-runc, which still writes the limits through
//! cgroupfs. The D-Bus calls go through systemd's own `busctl`, which keeps lodge-runc free of a
//! D-Bus stack and single-threaded.
//!
//! Without systemd as PID 1 (no /run/systemd/system), the same `slice:prefix:name` path is served
//! by cgroupfs alone, with a warning.
//!
//! Untested on the development machine, whose PID 1 is not systemd: only the fallback is covered
//! by the integration suite (docs/architecture.md says so).

use std::path::Path;
use std::process::Command;

/// Whether systemd is the running init (sd_booted's test).
pub fn booted() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

/// The unit and slice named by a `slice:prefix:name` cgroupsPath (`lodge-<id>.scope` in
/// system.slice without one).
pub fn unit_and_slice(cgroups_path: &str, id: &str) -> (String, String) {
    crate::cgroups::systemd_unit_and_slice(cgroups_path)
        .unwrap_or_else(|| (format!("lodge-{id}.scope"), "system.slice".to_string()))
}

fn busctl(args: &[&str]) -> std::io::Result<()> {
    let out = Command::new("busctl")
        .args([
            "call",
            "org.freedesktop.systemd1",
            "/org/freedesktop/systemd1",
            "org.freedesktop.systemd1.Manager",
        ])
        .args(args)
        .output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}

/// Registers `pid` as transient scope `unit` in `slice`, delegated to lodge-runc.
pub fn start(unit: &str, slice: &str, pid: i32, id: &str) -> std::io::Result<()> {
    let description = format!("lodge-runc container {id}");
    let pid = pid.to_string();
    busctl(&[
        "StartTransientUnit",
        "ssa(sv)a(sa(sv))",
        unit,
        "replace",
        "4",
        "Description",
        "s",
        &description,
        "Slice",
        "s",
        slice,
        "Delegate",
        "b",
        "true",
        "PIDs",
        "au",
        "1",
        &pid,
        "0",
    ])
}

/// Stops the scope (at delete).
pub fn stop(unit: &str) -> std::io::Result<()> {
    busctl(&["StopUnit", "ss", unit, "replace"])
}

#[cfg(test)]
mod tests {
    use super::unit_and_slice;

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
}

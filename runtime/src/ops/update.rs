//! `update`: change a running container's cgroup limits.

use oci_spec::runtime::LinuxResources;

use crate::cgroups::Cgroup;
use crate::error::Result;
use crate::state::Status;

use super::Globals;

/// Applies `resources` to the container's cgroups.
pub fn update(g: &Globals, id: &str, resources: &LinuxResources) -> Result<()> {
    let running = [Status::Created, Status::Running, Status::Paused];
    let (_dir, st) = super::open_in(g, id, &running, "cannot update a stopped container")?;
    if let Some(unit) = &st.systemd_unit {
        crate::systemd_scope::update(unit, resources)?;
    }
    Cgroup::from_paths(st.cgroup_paths.clone()).apply(resources)?;
    if !st.delegated_cgroup_paths.is_empty() {
        Cgroup::from_paths(st.delegated_cgroup_paths.clone()).apply(resources)?;
    }
    Ok(())
}

/// Sizes as runc's update flags take them: bytes, or with a k/m/g/t suffix (powers of 1024);
/// -1 means unlimited.
pub fn parse_size(s: &str) -> std::result::Result<i64, String> {
    let t = s.trim().to_ascii_lowercase();
    if t == "-1" {
        return Ok(-1);
    }
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1i64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        Some('t') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let n: f64 = num.parse().map_err(|_| format!("invalid size {s:?}"))?;
    if n < 0.0 {
        return Err(format!("invalid size {s:?}"));
    }
    Ok((n * mult as f64) as i64)
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512m").unwrap(), 512 << 20);
        assert_eq!(parse_size("1G").unwrap(), 1 << 30);
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert_eq!(parse_size("-1").unwrap(), -1);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("-5").is_err());
    }
}

//! AppArmor: `process.apparmorProfile` applied as runc applies it (the profile takes effect at
//! the process's execve, set through the task's `attr/apparmor/exec`).
//!
//! System containers and engines' default profiles: Docker sends `docker-default` whenever
//! AppArmor is on (Podman `containers-default-*`, containerd `cri-containerd.apparmor.d`).
//! Those profiles deny mount, umount, pivot_root and writes under /proc/sys and /sys, which is
//! what systemd, Docker and containerd inside a system container must do; so a system container
//! runs without them. Their other rules are covered there by the user namespace (no host
//! capability), the masks and read-only paths the kernel locks, and lodge-fs's emulation. A
//! profile named explicitly (anything else) is applied as given. docs/security.md.

use std::io::Write;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum AppArmorError {
    #[error(
        "applying AppArmor profile {profile:?}: {source} (is it loaded? `aa-status` lists the \
         loaded profiles)"
    )]
    Apply {
        profile: String,
        source: std::io::Error,
    },
}

/// Whether the kernel enforces AppArmor here.
pub fn enabled() -> bool {
    std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .is_ok_and(|s| s.starts_with('Y'))
}

/// The default profiles container engines send without being asked (see the module comment).
pub fn is_engine_default(profile: &str) -> bool {
    profile == "docker-default"
        || profile.starts_with("containers-default-")
        || profile == "cri-containerd.apparmor.d"
}

/// The profile a process runs under: none where AppArmor is off (as runc), none for
/// `unconfined`, none for an engine's default one in a system container.
pub fn effective_profile(requested: Option<&str>, system_container: bool) -> Option<String> {
    let profile = requested.filter(|p| !p.is_empty() && *p != "unconfined")?;
    if system_container && is_engine_default(profile) {
        tracing::debug!(
            profile,
            "engine's default AppArmor profile not applied to a system container"
        );
        return None;
    }
    enabled().then(|| profile.to_string())
}

/// Makes `profile` the one the next execve of this thread enters (runc's change_onexec).
pub fn change_onexec(profile: &str) -> Result<(), AppArmorError> {
    let fail = |source| AppArmorError::Apply {
        profile: profile.to_string(),
        source,
    };
    // attr/apparmor/ is the LSM-stacking interface (5.8+); attr/exec the older shared one.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open("/proc/thread-self/attr/apparmor/exec")
        .or_else(|_| {
            std::fs::OpenOptions::new()
                .write(true)
                .open("/proc/thread-self/attr/exec")
        })
        .map_err(fail)?;
    (&file)
        .write_all(format!("exec {profile}").as_bytes())
        .map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_defaults_are_dropped_only_for_system_containers() {
        assert!(is_engine_default("docker-default"));
        assert!(is_engine_default("containers-default-0.50.1"));
        assert!(!is_engine_default("my-profile"));
        assert_eq!(effective_profile(Some("docker-default"), true), None);
        assert_eq!(effective_profile(Some("unconfined"), false), None);
        assert_eq!(effective_profile(Some(""), false), None);
        assert_eq!(effective_profile(None, false), None);
        // Elsewhere it depends on the host: applied where AppArmor is on.
        assert_eq!(
            effective_profile(Some("docker-default"), false).is_some(),
            enabled()
        );
        assert_eq!(effective_profile(Some("mine"), true).is_some(), enabled());
    }
}

//! `LODGE_*` knobs: per-container switches passed in the process environment (where Docker's
//! `-e` and Kubernetes' env can reach them). Every one is validated, an unknown one is an error,
//! and all are removed before the container's process sees its environment.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum KnobError {
    #[error("unknown knob {0} (known: {known})", known = KNOWN.join(", "))]
    Unknown(String),
    #[error("knob {name}={value}: expected TRUE or FALSE")]
    Invalid { name: String, value: String },
}

/// Every knob lodge-runc understands.
pub const KNOWN: &[&str] = &[
    "LODGE_SPECIAL_VOLUMES",
    "LODGE_SYSCONT_MODE",
    "LODGE_HONOR_CAPS",
    "LODGE_CHOWN_ROOTFS",
    "LODGE_IGNORE_SYSFS_CHOWN",
    "LODGE_ALLOW_TRUSTED_XATTR",
];

#[derive(Debug, Default, Clone, Copy)]
pub struct Knobs {
    /// Host-backed volumes from lodge-mgr over /var/lib/docker, containerd, kubelet, ...
    pub special_volumes: bool,
    /// The system-container rewrite (`syscont.rs`): `None` leaves it to the runtime's default.
    pub syscont: Option<bool>,
    /// In system-container mode, keep the spec's capabilities.
    pub honor_caps: bool,
    /// In system-container mode, chown the rootfs instead of ID-mapping it (the fallback, forced).
    pub chown_rootfs: bool,
    /// Trap the chown family: a chown of a sysfs mount's root succeeds without doing anything
    /// (docs/syscall-interception.md).
    pub ignore_sysfs_chown: bool,
    /// Trap the xattr family: `trusted.overlay.opaque` is set, read and removed by lodge-fs for
    /// the container's root (docs/syscall-interception.md).
    pub allow_trusted_xattr: bool,
}

fn boolean(name: &str, value: &str) -> Result<bool, KnobError> {
    match value.to_ascii_uppercase().as_str() {
        "TRUE" | "1" | "YES" => Ok(true),
        "FALSE" | "0" | "NO" => Ok(false),
        _ => Err(KnobError::Invalid {
            name: name.into(),
            value: value.into(),
        }),
    }
}

/// Reads and removes the knobs from `env`.
pub fn take(env: &mut Vec<String>) -> Result<Knobs, KnobError> {
    let mut knobs = Knobs::default();
    let mut kept = Vec::with_capacity(env.len());
    for entry in env.drain(..) {
        let Some(rest) = entry.strip_prefix("LODGE_") else {
            kept.push(entry);
            continue;
        };
        let (name, value) = rest.split_once('=').unwrap_or((rest, ""));
        let name = format!("LODGE_{name}");
        match name.as_str() {
            "LODGE_SPECIAL_VOLUMES" => knobs.special_volumes = boolean(&name, value)?,
            "LODGE_SYSCONT_MODE" => knobs.syscont = Some(boolean(&name, value)?),
            "LODGE_HONOR_CAPS" => knobs.honor_caps = boolean(&name, value)?,
            "LODGE_CHOWN_ROOTFS" => knobs.chown_rootfs = boolean(&name, value)?,
            "LODGE_IGNORE_SYSFS_CHOWN" => knobs.ignore_sysfs_chown = boolean(&name, value)?,
            "LODGE_ALLOW_TRUSTED_XATTR" => knobs.allow_trusted_xattr = boolean(&name, value)?,
            _ => return Err(KnobError::Unknown(name)),
        }
    }
    *env = kept;
    Ok(knobs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knobs_are_validated_and_removed() {
        let mut env = vec!["PATH=/bin".to_string(), "LODGE_SPECIAL_VOLUMES=true".into()];
        assert!(take(&mut env).unwrap().special_volumes);
        assert_eq!(env, ["PATH=/bin"]);
        assert!(matches!(
            take(&mut vec!["LODGE_NOPE=1".into()]),
            Err(KnobError::Unknown(_))
        ));
        assert!(matches!(
            take(&mut vec!["LODGE_SPECIAL_VOLUMES=maybe".into()]),
            Err(KnobError::Invalid { .. })
        ));
    }
}

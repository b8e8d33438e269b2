//! System-container mode: the rewrite that turns an OCI spec into a system container's. It is
//! the default; `LODGE_SYSCONT_MODE=FALSE` asks for a light one (user and cgroup namespaces and
//! file ownership only), and `lodge-runc --no-syscont` makes plain OCI containers the default.
//!
//! - its own user and cgroup namespaces (and time, where the kernel has it); pid, ipc, uts, mount
//!   and network must be private: sharing them with the host is refused;
//! - ID mappings from lodge-mgr's exclusive range when the spec has none; given ones are checked
//!   (contiguous from 0, at least 65536 IDs, the same for uids and gids, never host root);
//! - root gets every capability (powerless outside its user namespace), other users none,
//!   unless `LODGE_HONOR_CAPS=TRUE` keeps the spec's;
//! - the rootfs is ID-mapped to the container's root (no chown of the image; see ops::create);
//!   bind mounts are ID-mapped where their filesystem allows it;
//! - the seccomp profile, when the spec has one, also allows what system software needs
//!   (`seccomp::SYSTEM_CONTAINER_SYSCALLS`);
//! - /dev/kmsg is /dev/null; an init that is systemd gets `container=private-users` and tmpfs on
//!   /run and /run/lock.

use std::path::Path;

use lodge_ipc::mgr::IdRange;
use oci_spec::runtime::{
    Capabilities, Capability, LinuxCapabilities, LinuxIdMapping, LinuxNamespace,
    LinuxNamespaceType, Mount, Spec,
};
use serde_json::Value;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum SysContError {
    #[error("system containers need their own {0} namespace: sharing the host's is refused")]
    SharedNamespace(&'static str),
    #[error("ID mappings of a system container: {0}")]
    Mappings(String),
    #[error(
        "the spec's seccomp profile hands calls to its own agent ({0}), but a system container's \
         mount calls go to lodge-fs and a process can have only one listener: run it with \
         LODGE_SYSCONT_MODE=FALSE, or lodge-runc --no-fs"
    )]
    OwnListener(String),
    #[error("the seccomp profile with the mount trap is invalid: {0}")]
    Seccomp(String),
}

const PRIVATE: &[(LinuxNamespaceType, &str)] = &[
    (LinuxNamespaceType::Pid, "pid"),
    (LinuxNamespaceType::Ipc, "ipc"),
    (LinuxNamespaceType::Uts, "uts"),
    (LinuxNamespaceType::Mount, "mount"),
    (LinuxNamespaceType::Network, "network"),
];

/// An engine's default AppArmor profile forbids what system software does (crate::apparmor):
/// a system container's processes run without it; a profile named explicitly stays.
pub fn drop_engine_apparmor_profile(p: &mut oci_spec::runtime::Process) {
    if p.apparmor_profile()
        .as_deref()
        .is_some_and(crate::apparmor::is_engine_default)
    {
        p.set_apparmor_profile(None);
    }
}

/// Whether `path` is the runtime's own namespace of that kind: the runtime runs in the host's
/// namespaces (PID 1's may not even be readable, as in some VMs' inits).
fn same_as_host(path: &Path, kind: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    let own = format!(
        "/proc/self/ns/{}",
        match kind {
            "mount" => "mnt",
            "network" => "net",
            k => k,
        }
    );
    match (std::fs::metadata(path), std::fs::metadata(own)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

fn check_mappings(maps: &[LinuxIdMapping], what: &str) -> Result<(u32, u32), SysContError> {
    let mut sorted: Vec<&LinuxIdMapping> = maps.iter().collect();
    sorted.sort_by_key(|m| m.container_id());
    let mut next = 0u32;
    for m in &sorted {
        if m.container_id() != next {
            return Err(SysContError::Mappings(format!(
                "{what} must be contiguous from 0"
            )));
        }
        if m.host_id() == 0 {
            return Err(SysContError::Mappings(format!(
                "{what} must never map host root (hostID 0)"
            )));
        }
        next += m.size();
    }
    if next < 65536 {
        return Err(SysContError::Mappings(format!(
            "{what} cover {next} IDs; a system container needs at least 65536"
        )));
    }
    Ok((sorted[0].host_id(), next))
}

/// What a container becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The full system-container rewrite.
    System,
    /// `LODGE_SYSCONT_MODE=FALSE`: a plain container with user and cgroup namespaces added (and
    /// its files owned by its root, without which a user namespace is of little use).
    Light,
    /// `--no-syscont` with no knob: the spec as given, as runc would run it.
    Plain,
}

impl Mode {
    /// `default_system`: the runtime's default (false with `--no-syscont`); `knob`: the
    /// container's `LODGE_SYSCONT_MODE`.
    pub fn decide(default_system: bool, knob: Option<bool>) -> Mode {
        match (knob, default_system) {
            (Some(true), _) | (None, true) => Mode::System,
            (Some(false), true) => Mode::Light,
            (_, false) => Mode::Plain,
        }
    }
}

/// The light rewrite: user and cgroup namespaces, with mappings from `range` unless given.
pub fn rewrite_light(spec: &mut Spec, range: IdRange) -> Result<(), SysContError> {
    let mut linux = spec.linux().clone().unwrap_or_default();
    add_user_namespace(&mut linux, range, false)?;
    spec.set_linux(Some(linux));
    Ok(())
}

/// Adds user and cgroup namespaces (and time, with `time`) and the ID mappings: `range` when the
/// spec has none, the spec's own once checked.
fn add_user_namespace(
    linux: &mut oci_spec::runtime::Linux,
    range: IdRange,
    time: bool,
) -> Result<(), SysContError> {
    let mut namespaces = linux.namespaces().clone().unwrap_or_default();
    let mut wanted = vec![LinuxNamespaceType::User, LinuxNamespaceType::Cgroup];
    if time && Path::new("/proc/self/ns/time").exists() {
        wanted.push(LinuxNamespaceType::Time);
    }
    for kind in wanted {
        if !namespaces.iter().any(|n| n.typ() == kind) {
            let mut ns = LinuxNamespace::default();
            ns.set_typ(kind);
            namespaces.push(ns);
        }
    }
    linux.set_namespaces(Some(namespaces));
    let uids = linux.uid_mappings().clone().unwrap_or_default();
    let gids = linux.gid_mappings().clone().unwrap_or_default();
    if uids.is_empty() && gids.is_empty() {
        let m = mapping(0, range.start, range.size);
        linux.set_uid_mappings(Some(vec![m]));
        linux.set_gid_mappings(Some(vec![m]));
    } else {
        let u = check_mappings(&uids, "uidMappings")?;
        let g = check_mappings(&gids, "gidMappings")?;
        if u != g {
            return Err(SysContError::Mappings(
                "uidMappings and gidMappings must match".into(),
            ));
        }
    }
    Ok(())
}

/// Rewrites `spec` in place. `range` is lodge-mgr's allocation for the container.
pub fn rewrite(spec: &mut Spec, range: IdRange, honor_caps: bool) -> Result<(), SysContError> {
    let mut linux = spec.linux().clone().unwrap_or_default();
    let namespaces = linux.namespaces().clone().unwrap_or_default();
    for (kind, name) in PRIVATE {
        match namespaces.iter().find(|n| n.typ() == *kind) {
            None => return Err(SysContError::SharedNamespace(name)),
            Some(n) if n.path().as_ref().is_some_and(|p| same_as_host(p, name)) => {
                return Err(SysContError::SharedNamespace(name))
            }
            _ => {}
        }
    }
    add_user_namespace(&mut linux, range, true)?;
    allow_system_syscalls(&mut linux);
    clamp_ping_group_range(&mut linux);
    spec.set_linux(Some(linux));

    if let Some(p) = spec.process_mut() {
        if !honor_caps {
            system_capabilities(p);
        }
        drop_engine_apparmor_profile(p);
    }

    let mut mounts = spec.mounts().clone().unwrap_or_default();
    let has =
        |mounts: &[Mount], dest: &str| mounts.iter().any(|m| m.destination() == Path::new(dest));
    for m in mounts.iter_mut() {
        soft_idmap(m);
        if m.destination() == Path::new("/sys/fs/cgroup") {
            // Writable: the container's own cgroups are delegated to its root (ops::create);
            // file ownership, not a read-only mount, keeps its limits out of reach.
            let mut opts = m.options().clone().unwrap_or_default();
            opts.retain(|o| o != "ro");
            m.set_options(Some(opts));
        }
    }
    if !has(&mounts, "/dev/kmsg") {
        mounts.push(bind("/dev/null", "/dev/kmsg"));
    }
    let systemd = spec
        .process()
        .as_ref()
        .and_then(|p| p.args().as_ref())
        .and_then(|a| a.first())
        .is_some_and(|a| a.ends_with("/init") || a.ends_with("systemd"));
    if systemd {
        for dest in ["/run", "/run/lock"] {
            if !has(&mounts, dest) {
                mounts.push(tmpfs(dest));
            }
        }
        if let Some(p) = spec.process_mut() {
            let mut env = p.env().clone().unwrap_or_default();
            env.retain(|e| !e.starts_with("container="));
            env.push("container=private-users".into());
            p.set_env(Some(env));
        }
    }
    spec.set_mounts(Some(mounts));
    Ok(())
}

/// What system software needs beyond Docker's default profile, which allows these only to a
/// container given CAP_SYS_ADMIN (or not at all). Each acts on objects owned by the container's
/// user namespace (its mount, uts, ipc, net namespaces, its keyrings) and the kernel refuses it on
/// anything the host owns; docs/system-containers.md says why, one by one.
pub const SYSTEM_CONTAINER_SYSCALLS: &[&str] = &[
    "mount",
    "umount",
    "umount2",
    "pivot_root",
    "unshare",
    "setns",
    "clone",
    "clone3",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "open_tree",
    "move_mount",
    "mount_setattr",
    "keyctl",
    "add_key",
    "request_key",
    "sethostname",
    "setdomainname",
    "chroot",
];

/// Allows `SYSTEM_CONTAINER_SYSCALLS` in the spec's seccomp profile: the profile's own rules for
/// those names go (Docker's conditional clone rule, its clone3 → ENOSYS, an explicit deny), and a
/// deny-by-default profile gets an allow rule for them. Nothing else of the profile changes.
fn allow_system_syscalls(linux: &mut oci_spec::runtime::Linux) {
    let Some(seccomp) = linux.seccomp().clone() else {
        return;
    };
    let Ok(mut v) = serde_json::to_value(&seccomp) else {
        return;
    };
    let mut rules: Vec<Value> = v["syscalls"].as_array().cloned().unwrap_or_default();
    for rule in rules.iter_mut() {
        if let Some(names) = rule["names"].as_array_mut() {
            names.retain(|n| {
                !n.as_str()
                    .is_some_and(|n| SYSTEM_CONTAINER_SYSCALLS.contains(&n))
            });
        }
    }
    rules.retain(|r| r["names"].as_array().is_some_and(|n| !n.is_empty()));
    if v["defaultAction"] != "SCMP_ACT_ALLOW" {
        rules.push(serde_json::json!({
            "names": SYSTEM_CONTAINER_SYSCALLS,
            "action": "SCMP_ACT_ALLOW",
        }));
    }
    v["syscalls"] = Value::Array(rules);
    match serde_json::from_value(v) {
        Ok(s) => {
            linux.set_seccomp(Some(s));
        }
        Err(e) => tracing::warn!(error = %e, "seccomp profile left as given"),
    }
}

/// The calls lodge-fs's seccomp agent answers for a system container (docs/syscall-interception.md):
/// new procfs and sysfs mounts get the container's emulation, the container's initial masks and
/// read-only mounts cannot be undone, and sysinfo(2) reports the container's figures. ("umount" is the name of umount2 on some
/// architectures; names the kernel here lacks are skipped.)
pub const TRAPPED_SYSCALLS: &[&str] = &[
    "mount",
    "umount",
    "umount2",
    "move_mount",
    "mount_setattr",
    "openat2",
    "sysinfo",
];

/// Trapped with `LODGE_IGNORE_SYSFS_CHOWN=TRUE`.
pub const CHOWN_SYSCALLS: &[&str] = &["chown", "lchown", "fchown", "fchownat"];

/// Trapped with `LODGE_ALLOW_TRUSTED_XATTR=TRUE`.
pub const XATTR_SYSCALLS: &[&str] = &[
    "setxattr",
    "lsetxattr",
    "fsetxattr",
    "getxattr",
    "lgetxattr",
    "fgetxattr",
    "removexattr",
    "lremovexattr",
    "fremovexattr",
];

/// Makes the spec's seccomp profile (or an allow-all one, when it has none) hand
/// `TRAPPED_SYSCALLS` (and the `extra` ones the knobs ask for) to the agent at `listener`. Runs
/// after `allow_system_syscalls`: the trap replaces whatever the profile said of those calls.
pub fn trap_calls(spec: &mut Spec, listener: &Path, extra: &[&str]) -> Result<(), SysContError> {
    let trapped: Vec<&str> = TRAPPED_SYSCALLS.iter().chain(extra).copied().collect();
    let mut linux = spec.linux().clone().unwrap_or_default();
    let mut v = match linux.seccomp() {
        Some(s) => {
            if let Some(own) = s.listener_path() {
                return Err(SysContError::OwnListener(own.display().to_string()));
            }
            serde_json::to_value(s).unwrap_or_default()
        }
        None => serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW"}),
    };
    let mut rules: Vec<Value> = v["syscalls"].as_array().cloned().unwrap_or_default();
    for rule in rules.iter_mut() {
        if let Some(names) = rule["names"].as_array_mut() {
            names.retain(|n| !n.as_str().is_some_and(|n| trapped.contains(&n)));
        }
    }
    rules.retain(|r| r["names"].as_array().is_some_and(|n| !n.is_empty()));
    rules.push(serde_json::json!({
        "names": trapped,
        "action": "SCMP_ACT_NOTIFY",
    }));
    v["syscalls"] = Value::Array(rules);
    v["listenerPath"] = listener.display().to_string().into();
    let seccomp = serde_json::from_value(v).map_err(|e| SysContError::Seccomp(e.to_string()))?;
    linux.set_seccomp(Some(seccomp));
    spec.set_linux(Some(linux));
    Ok(())
}

/// Docker asks for `net.ipv4.ping_group_range = 0 2147483647`; in a user namespace the kernel
/// refuses gids that are not mapped, so the range is clamped to the container's gids.
fn clamp_ping_group_range(linux: &mut oci_spec::runtime::Linux) {
    let mapped: u32 = linux
        .gid_mappings()
        .iter()
        .flatten()
        .filter(|m| m.container_id() == 0)
        .map(|m| m.size())
        .next()
        .unwrap_or(1);
    let Some(mut sysctl) = linux.sysctl().clone() else {
        return;
    };
    if let Some(v) = sysctl.get_mut("net.ipv4.ping_group_range") {
        let mut parts = v.split_whitespace().map(|p| p.parse::<u64>().ok());
        if let (Some(Some(lo)), Some(Some(hi))) = (parts.next(), parts.next()) {
            let top = u64::from(mapped) - 1;
            *v = format!("{} {}", lo.min(top), hi.min(top));
        }
    }
    linux.set_sysctl(Some(sysctl));
}

/// Root gets every capability the runtime holds (it is powerless outside its user namespace),
/// any other user none: what a VM's root and users would have. Applied to init and every exec.
pub fn system_capabilities(p: &mut oci_spec::runtime::Process) {
    let all: Capabilities = if p.user().uid() == 0 {
        crate::process::caps::all_names()
            .iter()
            .filter_map(|n| serde_json::from_value::<Capability>(Value::String(n.to_string())).ok())
            .collect()
    } else {
        Capabilities::new()
    };
    let mut caps = LinuxCapabilities::default();
    caps.set_bounding(Some(all.clone()))
        .set_effective(Some(all.clone()))
        .set_permitted(Some(all))
        .set_inheritable(Some(Capabilities::new()))
        .set_ambient(Some(Capabilities::new()));
    p.set_capabilities(Some(caps));
}

/// Bind mounts are ID-mapped through the container's mappings where the filesystem allows it, so
/// host uid N is uid N inside (a file root writes inside is root's on the host). Host devices,
/// /proc and /sys are left as they are.
fn soft_idmap(m: &mut Mount) {
    let mut opts = m.options().clone().unwrap_or_default();
    let bind =
        m.typ().as_deref() == Some("bind") || opts.iter().any(|o| o == "bind" || o == "rbind");
    let explicit = opts.iter().any(|o| o == "idmap" || o == "ridmap")
        || m.uid_mappings().as_ref().is_some_and(|u| !u.is_empty())
        || m.gid_mappings().as_ref().is_some_and(|g| !g.is_empty());
    let host_special = m
        .source()
        .as_ref()
        .is_some_and(|s| ["/dev", "/proc", "/sys"].iter().any(|p| s.starts_with(p)));
    if bind && !explicit && !host_special {
        opts.push(crate::rootfs::options::SOFT_IDMAP.into());
        m.set_options(Some(opts));
    }
}

fn mapping(container: u32, host: u32, size: u32) -> LinuxIdMapping {
    serde_json::from_value(
        serde_json::json!({"containerID": container, "hostID": host, "size": size}),
    )
    .expect("a valid mapping")
}

fn bind(source: &str, dest: &str) -> Mount {
    let mut m = Mount::default();
    m.set_destination(dest.into());
    m.set_typ(Some("bind".into()));
    m.set_source(Some(source.into()));
    m.set_options(Some(vec!["bind".into()]));
    m
}

fn tmpfs(dest: &str) -> Mount {
    let mut m = Mount::default();
    m.set_destination(dest.into());
    m.set_typ(Some("tmpfs".into()));
    m.set_source(Some("tmpfs".into()));
    m.set_options(Some(vec![
        "nosuid".into(),
        "nodev".into(),
        "mode=755".into(),
    ]));
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Spec {
        serde_json::from_value(crate::ops::spec_template(false)).unwrap()
    }

    #[test]
    fn adds_namespaces_mappings_and_caps() {
        let mut s = base();
        rewrite(
            &mut s,
            IdRange {
                start: 165536,
                size: 65536,
            },
            false,
        )
        .unwrap();
        let l = s.linux().as_ref().unwrap();
        let ns: Vec<_> = l
            .namespaces()
            .as_ref()
            .unwrap()
            .iter()
            .map(|n| n.typ())
            .collect();
        assert!(ns.contains(&LinuxNamespaceType::User) && ns.contains(&LinuxNamespaceType::Cgroup));
        assert_eq!(l.uid_mappings().as_ref().unwrap()[0].host_id(), 165536);
        let caps = s
            .process()
            .as_ref()
            .unwrap()
            .capabilities()
            .as_ref()
            .unwrap();
        assert!(caps.effective().as_ref().unwrap().len() > 30);
        assert!(s
            .mounts()
            .as_ref()
            .unwrap()
            .iter()
            .any(|m| m.destination() == Path::new("/dev/kmsg")));
    }

    #[test]
    fn refuses_host_namespaces_and_bad_mappings() {
        let mut s = base();
        let mut l = s.linux().clone().unwrap();
        l.namespaces_mut()
            .as_mut()
            .unwrap()
            .retain(|n| n.typ() != LinuxNamespaceType::Network);
        s.set_linux(Some(l));
        assert!(matches!(
            rewrite(
                &mut s,
                IdRange {
                    start: 1,
                    size: 65536
                },
                false
            ),
            Err(SysContError::SharedNamespace("network"))
        ));
        let mut s = base();
        let mut l = s.linux().clone().unwrap();
        let m = mapping(0, 0, 65536);
        l.set_uid_mappings(Some(vec![m]));
        l.set_gid_mappings(Some(vec![m]));
        s.set_linux(Some(l));
        assert!(matches!(
            rewrite(
                &mut s,
                IdRange {
                    start: 1,
                    size: 65536
                },
                false
            ),
            Err(SysContError::Mappings(_))
        ));
    }
}

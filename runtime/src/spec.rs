//! Loading and validating a bundle's `config.json`.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, Spec};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum SpecError {
    #[error("bundle {0}: no such directory")]
    NoBundle(PathBuf),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid OCI runtime config: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("unsupported ociVersion {0:?}: lodge-runc accepts any 1.x version")]
    Version(String),
    #[error("config.json has no {0}")]
    Missing(&'static str),
    #[error("rootfs {0}: no such directory")]
    NoRootfs(PathBuf),
    #[error("process.args must not be empty")]
    NoArgs,
    #[error("process.cwd {0:?} must be an absolute path")]
    RelativeCwd(PathBuf),
    #[error("namespace {0} is listed twice")]
    DuplicateNamespace(String),
    #[error("a user namespace needs both uidMappings and gidMappings (or neither, when joining one by path)")]
    Mappings,
    #[error("uidMappings/gidMappings are given but no new user namespace is requested")]
    MappingsWithoutUserns,
    #[error("hostname is set but the container shares the host's UTS namespace")]
    HostnameWithoutUts,
    #[error("{0} is not supported by this lodge-runc")]
    Unsupported(&'static str),
}

/// A loaded, validated spec with its resolved bundle and rootfs paths.
pub struct LoadedSpec {
    pub spec: Spec,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    /// The file exactly as read, kept so the state dir can store the config the container ran with.
    pub raw: Vec<u8>,
}

/// Reads `<bundle>/config.json` and checks everything create needs before touching the host.
pub fn load(bundle: &Path) -> Result<LoadedSpec, SpecError> {
    let bundle =
        std::fs::canonicalize(bundle).map_err(|_| SpecError::NoBundle(bundle.to_path_buf()))?;
    if !bundle.is_dir() {
        return Err(SpecError::NoBundle(bundle));
    }
    let path = bundle.join("config.json");
    let raw = std::fs::read(&path).map_err(|source| SpecError::Read {
        path: path.clone(),
        source,
    })?;
    let spec: Spec =
        serde_json::from_slice(&raw).map_err(|source| SpecError::Parse { path, source })?;
    let rootfs = validate(&spec, &bundle)?;
    Ok(LoadedSpec {
        spec,
        bundle,
        rootfs,
        raw,
    })
}

fn validate(spec: &Spec, bundle: &Path) -> Result<PathBuf, SpecError> {
    let version = spec.version();
    if !version.starts_with("1.") {
        return Err(SpecError::Version(version.clone()));
    }
    let root = spec.root().as_ref().ok_or(SpecError::Missing("root"))?;
    let rootfs = bundle.join(root.path());
    if !rootfs.is_dir() {
        return Err(SpecError::NoRootfs(rootfs));
    }
    let rootfs = std::fs::canonicalize(&rootfs).map_err(|_| SpecError::NoRootfs(rootfs))?;
    let process = spec
        .process()
        .as_ref()
        .ok_or(SpecError::Missing("process"))?;
    if process.args().as_ref().is_none_or(|a| a.is_empty()) {
        return Err(SpecError::NoArgs);
    }
    if !process.cwd().is_absolute() {
        return Err(SpecError::RelativeCwd(process.cwd().clone()));
    }
    let linux = spec
        .linux()
        .as_ref()
        .ok_or(SpecError::Missing("linux section"))?;
    let namespaces = linux.namespaces().clone().unwrap_or_default();
    for (i, ns) in namespaces.iter().enumerate() {
        if namespaces[..i].iter().any(|o| o.typ() == ns.typ()) {
            return Err(SpecError::DuplicateNamespace(ns.typ().to_string()));
        }
    }
    let new_userns = namespaces
        .iter()
        .any(|n| n.typ() == LinuxNamespaceType::User && n.path().is_none());
    let has_maps = [linux.uid_mappings(), linux.gid_mappings()]
        .iter()
        .filter(|m| m.as_ref().is_some_and(|v| !v.is_empty()))
        .count();
    if new_userns && has_maps != 2 {
        return Err(SpecError::Mappings);
    }
    if !new_userns && has_maps > 0 {
        return Err(SpecError::MappingsWithoutUserns);
    }
    let mountns = namespaces
        .iter()
        .any(|n| n.typ() == LinuxNamespaceType::Mount);
    if !mountns && root.readonly() == Some(true) {
        // Remounting "/" read-only would hit the host's root mount.
        return Err(SpecError::Unsupported(
            "root.readonly without a mount namespace",
        ));
    }
    check_security_labels(process)?;
    if linux.mount_label().as_ref().is_some_and(|l| !l.is_empty()) {
        return Err(SpecError::Unsupported("SELinux (linux.mountLabel)"));
    }
    if linux.intel_rdt().is_some() {
        return Err(SpecError::Unsupported("linux.intelRdt"));
    }
    let time_ns = namespaces
        .iter()
        .any(|n| n.typ() == LinuxNamespaceType::Time && n.path().is_none());
    if linux.time_offsets().as_ref().is_some_and(|o| !o.is_empty()) && !time_ns {
        return Err(SpecError::Unsupported(
            "linux.timeOffsets without a new time namespace",
        ));
    }
    let has_uts = namespaces
        .iter()
        .any(|n| n.typ() == LinuxNamespaceType::Uts);
    if spec.hostname().as_ref().is_some_and(|h| !h.is_empty()) && !has_uts {
        return Err(SpecError::HostnameWithoutUts);
    }
    Ok(rootfs)
}

/// SELinux is not implemented: a label is refused rather than silently dropped. (AppArmor
/// profiles are applied: crate::apparmor.)
pub fn check_security_labels(process: &oci_spec::runtime::Process) -> Result<(), SpecError> {
    if process
        .selinux_label()
        .as_ref()
        .is_some_and(|l| !l.is_empty())
    {
        return Err(SpecError::Unsupported("SELinux (process.selinuxLabel)"));
    }
    Ok(())
}

/// Container ids as runc accepts them: no path separators, no `..`, printable ASCII.
pub fn validate_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 1024
        && id != "."
        && id != ".."
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid container id {id:?}: use letters, digits and _ + - . (no '/', not '.' or '..')"
        ))
    }
}

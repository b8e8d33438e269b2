//! Host-backed volumes for the directories inner Docker, containerd, kubelet, K3s, RKE2, k0s and
//! BuildKit need on a real filesystem (not the container's overlay).
//!
//! `<data root>/volumes/<kind>/<container>` is created on first use and preloaded with whatever
//! the image holds at that path; it is copied back into the rootfs when the container stops (so
//! `docker commit` and stop/start keep inner images) and destroyed when the container is removed.
//! Copies use `cp -a --one-file-system` and never cross into mounts.

use std::path::{Path, PathBuf};
use std::process::Command;

use lodge_ipc::mgr::VolumeMount;
use thiserror::Error;

/// (kind, path in the container).
pub const SPECIAL_DIRS: &[(&str, &str)] = &[
    ("docker", "/var/lib/docker"),
    ("containerd", "/var/lib/containerd"),
    ("kubelet", "/var/lib/kubelet"),
    ("k3s", "/var/lib/rancher/k3s"),
    ("rke2", "/var/lib/rancher/rke2"),
    ("k0s", "/var/lib/k0s"),
    ("buildkit", "/var/lib/buildkit"),
];

#[derive(Debug, Error)]
pub enum VolumeError {
    #[error("volume {path}: {reason}")]
    Failed { path: PathBuf, reason: String },
}

fn failed(path: &Path, reason: impl ToString) -> VolumeError {
    VolumeError::Failed {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Copies the contents of `from` into `to` (both directories), preserving ownership and modes.
fn copy_contents(from: &Path, to: &Path) -> Result<(), VolumeError> {
    let out = Command::new("cp")
        .args(["-a", "--one-file-system", "--"])
        .arg(from.join("."))
        .arg(to)
        .output()
        .map_err(|e| failed(to, e))?;
    if !out.status.success() {
        return Err(failed(to, String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(())
}

fn remove_tree(path: &Path) -> Result<(), VolumeError> {
    if !path.exists() {
        return Ok(());
    }
    let out = Command::new("rm")
        .args(["-rf", "--one-file-system", "--"])
        .arg(path)
        .output()
        .map_err(|e| failed(path, e))?;
    if !out.status.success() {
        return Err(failed(path, String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(())
}

/// Creates (first time: preloads) every volume of container `id`, owned by `uid`/`gid`.
pub fn prepare(
    data_root: &Path,
    id: &str,
    rootfs: &Path,
    uid: u32,
    gid: u32,
) -> Result<Vec<VolumeMount>, VolumeError> {
    let mut out = vec![];
    for (kind, dest) in SPECIAL_DIRS {
        let source = data_root.join("volumes").join(kind).join(id);
        if !source.exists() {
            let fresh = source.with_extension("new");
            remove_tree(&fresh)?;
            std::fs::create_dir_all(&fresh).map_err(|e| failed(&fresh, e))?;
            let in_image = rootfs.join(dest.trim_start_matches('/'));
            if in_image.is_dir() {
                copy_contents(&in_image, &fresh)?;
            }
            std::os::unix::fs::chown(&fresh, Some(uid), Some(gid))
                .map_err(|e| failed(&fresh, e))?;
            // Complete or absent: a crash mid-copy never leaves a half-preloaded volume.
            std::fs::rename(&fresh, &source).map_err(|e| failed(&source, e))?;
        }
        out.push(VolumeMount {
            kind: kind.to_string(),
            source,
            destination: PathBuf::from(dest),
        });
    }
    Ok(out)
}

/// Copies each volume back into the rootfs (container stopped).
pub fn copy_back(volumes: &[VolumeMount], rootfs: &Path) -> Result<(), VolumeError> {
    for v in volumes {
        if !v.source.is_dir() || !rootfs.is_dir() {
            continue;
        }
        let target = rootfs.join(v.destination.strip_prefix("/").unwrap_or(&v.destination));
        if target.exists()
            && std::fs::read_dir(&v.source)
                .map(|mut d| d.next().is_none())
                .unwrap_or(true)
        {
            continue;
        }
        remove_tree(&target)?;
        std::fs::create_dir_all(&target).map_err(|e| failed(&target, e))?;
        copy_contents(&v.source, &target)?;
    }
    Ok(())
}

/// Destroys the volumes (container removed).
pub fn destroy(volumes: &[VolumeMount]) -> Result<(), VolumeError> {
    volumes.iter().try_for_each(|v| remove_tree(&v.source))
}

//! The chown fallback for a rootfs that cannot be ID-mapped (overlayfs, older kernels): every
//! file's owner is shifted into the container's range, and shifted back at delete. The walk never
//! crosses into another filesystem (a bind mount inside must not hand host files to the range).

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Adds `offset` to every uid and gid below `root` (`back`: subtracts it from the IDs that have it).
pub fn shift(root: &Path, offset: u32, back: bool) -> io::Result<()> {
    let dev = std::fs::symlink_metadata(root)?.dev();
    walk(root, dev, offset, back)
}

fn walk(path: &Path, dev: u64, offset: u32, back: bool) -> io::Result<()> {
    let md = std::fs::symlink_metadata(path)?;
    if md.dev() != dev {
        return Ok(());
    }
    let moved = |id: u32| {
        if back {
            id.checked_sub(offset).filter(|_| id >= offset)
        } else {
            id.checked_add(offset)
        }
    };
    if let (Some(uid), Some(gid)) = (moved(md.uid()), moved(md.gid())) {
        std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
        // chown clears set-id bits: put the mode back (not for symlinks, whose mode is fixed).
        if !md.file_type().is_symlink() && md.mode() & 0o6000 != 0 {
            std::fs::set_permissions(
                path,
                std::os::unix::fs::PermissionsExt::from_mode(md.mode() & 0o7777),
            )?;
        }
    }
    if md.is_dir() {
        for entry in std::fs::read_dir(path)? {
            walk(&entry?.path(), dev, offset, back)?;
        }
    }
    Ok(())
}

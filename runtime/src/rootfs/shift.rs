//! The chown fallback for a rootfs that cannot be ID-mapped (older kernels, filesystems without
//! ID-mapped mount support), and the upper layer of an ID-mapped overlayfs rootfs: every file's
//! owner is shifted into the container's range, and shifted back at delete. Only IDs the range
//! covers move, so a second shift (a crash before the revert) never shifts twice. The walk never
//! crosses into another filesystem (a bind mount inside must not hand host files to the range).

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Which IDs move, and where: `0..size` ↔ `offset..offset+size`.
#[derive(Debug, Clone, Copy)]
pub struct Shift {
    pub offset: u32,
    pub size: u32,
}

impl Shift {
    fn apply(&self, id: u32, back: bool) -> Option<u32> {
        if back {
            (id >= self.offset && id - self.offset < self.size).then(|| id - self.offset)
        } else {
            (id < self.size).then(|| id + self.offset)
        }
    }
}

/// Shifts every uid and gid below `root` into the range (`back`: out of it).
pub fn shift(root: &Path, by: Shift, back: bool) -> io::Result<()> {
    let dev = std::fs::symlink_metadata(root)?.dev();
    walk(root, dev, by, back)
}

fn walk(path: &Path, dev: u64, by: Shift, back: bool) -> io::Result<()> {
    let md = std::fs::symlink_metadata(path)?;
    if md.dev() != dev {
        return Ok(());
    }
    let moved = |id: u32| by.apply(id, back);
    let (uid, gid) = (moved(md.uid()), moved(md.gid()));
    if uid.is_some() || gid.is_some() {
        std::os::unix::fs::lchown(path, uid, gid)?;
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
            walk(&entry?.path(), dev, by, back)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ids_the_range_covers_move() {
        let by = Shift {
            offset: 100000,
            size: 65536,
        };
        assert_eq!(by.apply(0, false), Some(100000));
        assert_eq!(by.apply(65535, false), Some(165535));
        assert_eq!(by.apply(100000, false), None, "already shifted: stays");
        assert_eq!(by.apply(100007, true), Some(7));
        assert_eq!(by.apply(7, true), None);
        assert_eq!(by.apply(165536, true), None);
    }
}

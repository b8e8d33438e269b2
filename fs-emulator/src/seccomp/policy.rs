//! What the container may do to its initial mounts, decided from a snapshot of its init's mount
//! table taken before init runs anything (docs/syscall-interception.md):
//!
//! - `/` (the caller's own root), the container's `/proc` and `/sys` cannot be unmounted: EBUSY;
//! - the masks, read-only paths and lodge-fs files over /proc and /sys cannot be unmounted or
//!   moved away (EPERM), nor left behind by a non-recursive bind of what they cover (EINVAL, as
//!   the kernel answers for a tree with locked mounts);
//! - a read-only initial mount, or a bind of one, cannot become read-write (EPERM); rw → ro is
//!   allowed;
//! - everything else, including stacking new mounts over initial ones, is the kernel's to decide.
//!
//! Mounts are recognised by `Identity`, so the rules hold in every mount namespace inside the
//! container, after unshare, pivot_root and chroot, and for the trees lodge-fs builds for new
//! procfs and sysfs mounts (their masks are clones of these).

use std::collections::HashSet;
use std::path::PathBuf;

use super::mountinfo::{below, Identity, Mount, Table};

/// What a new procfs or sysfs mount gets on top, at `rel` below its root.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Overlay {
    /// A read-only bind of the new filesystem's own `rel` (the read-only paths).
    ReadOnlySelf(PathBuf),
    /// A clone of the container's own mount there (a mask, or a lodge-fs file).
    Clone(PathBuf),
}

/// Kept in lodge-fs's state file, so that a restarted lodge-fs knows which mounts were there
/// first (the container has usually made more since).
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Initial {
    pinned: HashSet<Identity>,
    protected: HashSet<Identity>,
    /// (dev, root) of every read-only initial mount.
    read_only: Vec<(String, PathBuf)>,
    pub proc_overlays: Vec<Overlay>,
    pub sys_overlays: Vec<Overlay>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Fail(i32),
}

/// Whether `m`, mounted over `base` (a procfs or sysfs), is there to hide or freeze something.
fn overlay(base: &Mount, m: &Mount) -> Option<Overlay> {
    let rel = below(&m.mountpoint, &base.mountpoint)?;
    if m.dev == base.dev {
        return m.read_only.then_some(Overlay::ReadOnlySelf(rel));
    }
    let mask = m.root.ends_with("null") && m.fstype.contains("tmpfs")
        || m.fstype == "tmpfs" && m.read_only
        || m.fstype.starts_with("fuse");
    mask.then_some(Overlay::Clone(rel))
}

impl Initial {
    /// From the mount table of the container's init, before it runs anything.
    pub fn from_table(t: &Table) -> Initial {
        let mut initial = Initial::default();
        for m in &t.mounts {
            if m.read_only {
                initial.read_only.push((m.dev.clone(), m.root.clone()));
            }
        }
        for (dir, fstype) in [("/proc", "proc"), ("/sys", "sysfs")] {
            let Some(base) = t
                .mounts
                .iter()
                .rev()
                .find(|m| m.mountpoint.as_os_str() == dir && m.fstype == fstype)
            else {
                continue;
            };
            initial.pinned.insert(t.identity(base));
            let mut overlays = Vec::new();
            for m in t.descendants(base) {
                if let Some(o) = overlay(base, m) {
                    initial.protected.insert(t.identity(m));
                    overlays.push(o);
                }
            }
            // Parents before children.
            overlays.sort_by_key(|o| match o {
                Overlay::ReadOnlySelf(p) | Overlay::Clone(p) => p.components().count(),
            });
            match fstype {
                "proc" => initial.proc_overlays = overlays,
                _ => initial.sys_overlays = overlays,
            }
        }
        initial
    }

    fn frozen_read_only(&self, m: &Mount) -> bool {
        m.read_only
            && self
                .read_only
                .iter()
                .any(|(dev, root)| *dev == m.dev && m.root.starts_with(root))
    }

    /// umount2 of `target` (a mount root) by a caller whose root is mount `caller_root`.
    pub fn umount(&self, t: &Table, target: &Mount, caller_root: u64) -> Verdict {
        let id = t.identity(target);
        if target.id == caller_root || self.pinned.contains(&id) {
            Verdict::Fail(libc::EBUSY)
        } else if self.protected.contains(&id) {
            Verdict::Fail(libc::EPERM)
        } else {
            Verdict::Allow
        }
    }

    /// A remount (or mount_setattr) of `target` (and, with `recursive`, what is below it)
    /// that would leave it read-write.
    pub fn make_writable(&self, t: &Table, target: &Mount, recursive: bool) -> Verdict {
        let below = if recursive {
            t.descendants(target)
        } else {
            Vec::new()
        };
        if std::iter::once(target)
            .chain(below)
            .any(|m| self.frozen_read_only(m))
        {
            Verdict::Fail(libc::EPERM)
        } else {
            Verdict::Allow
        }
    }

    /// MS_MOVE or move_mount of the attached mount `source`.
    pub fn move_away(&self, t: &Table, source: &Mount) -> Verdict {
        if self.protected.contains(&t.identity(source)) {
            Verdict::Fail(libc::EPERM)
        } else {
            Verdict::Allow
        }
    }

    /// A bind from mount `source`: without `recursive`, what covers it would be left behind.
    pub fn bind_from(&self, t: &Table, source: &Mount, recursive: bool) -> Verdict {
        // Only the direct children: a non-recursive bind copies none of them.
        let exposes = !recursive
            && t.mounts
                .iter()
                .filter(|m| m.parent == source.id && m.id != source.id)
                .any(|m| self.protected.contains(&t.identity(m)));
        if exposes {
            Verdict::Fail(libc::EINVAL)
        } else {
            Verdict::Allow
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::mountinfo::parse;
    use super::*;

    const INIT: &str = "\
70 1 0:60 / / rw,relatime - overlay overlay rw
72 70 0:41 / /proc rw,nosuid - proc proc rw
73 70 0:42 / /sys ro,nosuid - sysfs sysfs ro
74 73 0:43 / /sys/fs/cgroup rw - tmpfs tmpfs rw
50 72 0:41 /bus /proc/bus ro,relatime - proc proc rw
46 72 0:6 /null /proc/keys rw,relatime - devtmpfs devtmpfs rw
45 72 0:47 / /proc/acpi ro,relatime - tmpfs tmpfs ro
101 72 0:39 /c1/proc/meminfo /proc/meminfo rw - fuse lodge-fs rw
";

    /// The same mounts in a namespace copy: other ids, same everything else.
    const COPY: &str = "\
170 1 0:60 / / rw,relatime - overlay overlay rw
172 170 0:41 / /proc rw,nosuid - proc proc rw
173 170 0:42 / /sys ro,nosuid - sysfs sysfs ro
150 172 0:41 /bus /proc/bus ro,relatime - proc proc rw
146 172 0:6 /null /proc/keys rw,relatime - devtmpfs devtmpfs rw
190 170 0:70 / /mnt rw - tmpfs tmpfs rw
191 190 0:71 / /mnt/p rw - proc proc rw
192 191 0:6 /null /mnt/p/keys rw,relatime - devtmpfs devtmpfs rw
193 170 0:42 / /sys2 ro - sysfs sysfs ro
";

    fn tables() -> (Initial, Table) {
        let init = Table {
            mounts: parse(INIT),
        };
        (
            Initial::from_table(&init),
            Table {
                mounts: parse(COPY),
            },
        )
    }

    #[test]
    fn overlays_are_the_masks_read_only_paths_and_emulated_files() {
        let (i, _) = tables();
        assert_eq!(
            i.proc_overlays,
            vec![
                Overlay::ReadOnlySelf("/bus".into()),
                Overlay::Clone("/keys".into()),
                Overlay::Clone("/acpi".into()),
                Overlay::Clone("/meminfo".into()),
            ]
        );
        assert!(i.sys_overlays.is_empty(), "cgroup mounts are not masks");
    }

    #[test]
    fn rules_hold_in_a_namespace_copy() {
        let (i, t) = tables();
        let m = |id| t.by_id(id).unwrap();
        assert_eq!(i.umount(&t, m(172), 170), Verdict::Fail(libc::EBUSY));
        assert_eq!(i.umount(&t, m(170), 170), Verdict::Fail(libc::EBUSY));
        assert_eq!(i.umount(&t, m(146), 170), Verdict::Fail(libc::EPERM));
        assert_eq!(i.umount(&t, m(150), 170), Verdict::Fail(libc::EPERM));
        // A new procfs with a cloned mask: the mask stays, the whole tree may go.
        assert_eq!(i.umount(&t, m(192), 170), Verdict::Fail(libc::EPERM));
        assert_eq!(i.umount(&t, m(191), 170), Verdict::Allow);
        assert_eq!(i.umount(&t, m(190), 170), Verdict::Allow);
        // Read-only stays read-only, in a bind too; what was rw may be remounted.
        assert_eq!(
            i.make_writable(&t, m(150), false),
            Verdict::Fail(libc::EPERM)
        );
        assert_eq!(
            i.make_writable(&t, m(193), false),
            Verdict::Fail(libc::EPERM)
        );
        assert_eq!(i.make_writable(&t, m(172), false), Verdict::Allow);
        assert_eq!(
            i.make_writable(&t, m(172), true),
            Verdict::Fail(libc::EPERM)
        );
        assert_eq!(i.make_writable(&t, m(190), true), Verdict::Allow);
        assert_eq!(i.move_away(&t, m(146)), Verdict::Fail(libc::EPERM));
        assert_eq!(i.move_away(&t, m(190)), Verdict::Allow);
        assert_eq!(i.bind_from(&t, m(172), false), Verdict::Fail(libc::EINVAL));
        assert_eq!(i.bind_from(&t, m(172), true), Verdict::Allow);
        assert_eq!(i.bind_from(&t, m(191), false), Verdict::Fail(libc::EINVAL));
        assert_eq!(i.bind_from(&t, m(190), false), Verdict::Allow);
    }
}

//! Mount options as the OCI spec and runc spell them, split into mount(2) flags, propagation,
//! recursive mount_setattr(2) attributes and the filesystem's own data string.

use nix::mount::MsFlags;

use crate::sys;

/// Added by the system-container rewrite to bind mounts: ID-map this one when its filesystem
/// allows it, bind it as it is otherwise.
pub const SOFT_IDMAP: &str = "x-lodge.idmap";

#[derive(Debug, Clone)]
pub struct MountOptions {
    pub flags: MsFlags,
    /// Flags an option explicitly clears (`rw`, `suid`, ...), needed when remounting a bind mount.
    pub cleared: MsFlags,
    pub propagation: Vec<MsFlags>,
    pub recursive_set: u64,
    pub recursive_clear: u64,
    pub data: Vec<String>,
    /// `tmpcopyup`: copy the directory's previous contents into a new tmpfs.
    pub tmpcopyup: bool,
}

impl MountOptions {
    pub fn parse(options: &[String]) -> MountOptions {
        let mut o = MountOptions {
            flags: MsFlags::empty(),
            cleared: MsFlags::empty(),
            propagation: vec![],
            recursive_set: 0,
            recursive_clear: 0,
            data: vec![],
            tmpcopyup: false,
        };
        for opt in options {
            if let Some((set, flag)) = flag_option(opt) {
                if set {
                    o.flags |= flag;
                    o.cleared -= flag;
                } else {
                    o.flags -= flag;
                    o.cleared |= flag;
                }
            } else if let Some(p) = propagation_option(opt) {
                o.propagation.push(p);
            } else if let Some((set, attr)) = recursive_option(opt) {
                if set {
                    o.recursive_set |= attr;
                } else {
                    o.recursive_clear |= attr;
                }
            } else if opt == "tmpcopyup" {
                o.tmpcopyup = true;
            } else if opt == "idmap" || opt == "ridmap" || opt == SOFT_IDMAP {
                // Prepared by the runtime before the clone (rootfs::idmap).
            } else if opt != "defaults" && !opt.is_empty() {
                o.data.push(opt.clone());
            }
        }
        o
    }

    pub fn is_bind(&self) -> bool {
        self.flags.contains(MsFlags::MS_BIND)
    }

    pub fn data_string(&self) -> Option<String> {
        (!self.data.is_empty()).then(|| self.data.join(","))
    }
}

fn flag_option(opt: &str) -> Option<(bool, MsFlags)> {
    Some(match opt {
        "ro" => (true, MsFlags::MS_RDONLY),
        "rw" => (false, MsFlags::MS_RDONLY),
        "nosuid" => (true, MsFlags::MS_NOSUID),
        "suid" => (false, MsFlags::MS_NOSUID),
        "nodev" => (true, MsFlags::MS_NODEV),
        "dev" => (false, MsFlags::MS_NODEV),
        "noexec" => (true, MsFlags::MS_NOEXEC),
        "exec" => (false, MsFlags::MS_NOEXEC),
        "sync" => (true, MsFlags::MS_SYNCHRONOUS),
        "async" => (false, MsFlags::MS_SYNCHRONOUS),
        "dirsync" => (true, MsFlags::MS_DIRSYNC),
        "remount" => (true, MsFlags::MS_REMOUNT),
        "mand" => (true, MsFlags::MS_MANDLOCK),
        "nomand" => (false, MsFlags::MS_MANDLOCK),
        "atime" => (false, MsFlags::MS_NOATIME),
        "noatime" => (true, MsFlags::MS_NOATIME),
        "diratime" => (false, MsFlags::MS_NODIRATIME),
        "nodiratime" => (true, MsFlags::MS_NODIRATIME),
        "relatime" => (true, MsFlags::MS_RELATIME),
        "norelatime" => (false, MsFlags::MS_RELATIME),
        "strictatime" => (true, MsFlags::MS_STRICTATIME),
        "nostrictatime" => (false, MsFlags::MS_STRICTATIME),
        "lazytime" => (true, MsFlags::MS_LAZYTIME),
        "nolazytime" => (false, MsFlags::MS_LAZYTIME),
        "silent" => (true, MsFlags::MS_SILENT),
        "loud" => (false, MsFlags::MS_SILENT),
        "bind" => (true, MsFlags::MS_BIND),
        "rbind" => (true, MsFlags::MS_BIND | MsFlags::MS_REC),
        _ => return None,
    })
}

/// Propagation options; shared with `rootfsPropagation`.
pub fn propagation_option(opt: &str) -> Option<MsFlags> {
    Some(match opt {
        "private" => MsFlags::MS_PRIVATE,
        "rprivate" => MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        "shared" => MsFlags::MS_SHARED,
        "rshared" => MsFlags::MS_SHARED | MsFlags::MS_REC,
        "slave" => MsFlags::MS_SLAVE,
        "rslave" => MsFlags::MS_SLAVE | MsFlags::MS_REC,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        "runbindable" => MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
        _ => return None,
    })
}

/// The recursive `r*` options runc applies with mount_setattr(AT_RECURSIVE).
fn recursive_option(opt: &str) -> Option<(bool, u64)> {
    Some(match opt {
        "rro" => (true, sys::MOUNT_ATTR_RDONLY),
        "rrw" => (false, sys::MOUNT_ATTR_RDONLY),
        "rnosuid" => (true, sys::MOUNT_ATTR_NOSUID),
        "rsuid" => (false, sys::MOUNT_ATTR_NOSUID),
        "rnodev" => (true, sys::MOUNT_ATTR_NODEV),
        "rdev" => (false, sys::MOUNT_ATTR_NODEV),
        "rnoexec" => (true, sys::MOUNT_ATTR_NOEXEC),
        "rexec" => (false, sys::MOUNT_ATTR_NOEXEC),
        "rnodiratime" => (true, sys::MOUNT_ATTR_NODIRATIME),
        "rdiratime" => (false, sys::MOUNT_ATTR_NODIRATIME),
        "rrelatime" => (true, sys::MOUNT_ATTR_RELATIME | (1 << 63)),
        "rnorelatime" => (false, sys::MOUNT_ATTR__ATIME),
        "rnoatime" => (true, sys::MOUNT_ATTR_NOATIME),
        "ratime" => (false, sys::MOUNT_ATTR__ATIME),
        "rstrictatime" => (true, sys::MOUNT_ATTR_STRICTATIME),
        "rnostrictatime" => (false, sys::MOUNT_ATTR__ATIME),
        _ => return None,
    })
}

/// Atime values in `recursive_set` are a field, not bits: the high marker bit above flags
/// "relatime" (value 0) so it still counts as requested.
pub const ATIME_MARKER: u64 = 1 << 63;

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(opts: &[&str]) -> MountOptions {
        MountOptions::parse(&opts.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn splits_flags_propagation_and_data() {
        let o = parse(&[
            "rbind",
            "ro",
            "nosuid",
            "rprivate",
            "mode=755",
            "size=65536k",
        ]);
        assert!(o.flags.contains(
            MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID
        ));
        assert_eq!(o.propagation, vec![MsFlags::MS_PRIVATE | MsFlags::MS_REC]);
        assert_eq!(o.data_string().as_deref(), Some("mode=755,size=65536k"));
        let o = parse(&["ro", "rw", "rro"]);
        assert!(!o.flags.contains(MsFlags::MS_RDONLY));
        assert!(o.cleared.contains(MsFlags::MS_RDONLY));
        assert_eq!(o.recursive_set, sys::MOUNT_ATTR_RDONLY);
    }
}

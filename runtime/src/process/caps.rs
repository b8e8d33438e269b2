//! Capabilities: names to numbers, and applying the five OCI sets with raw capset/prctl.
//!
//! A runtime can only grant what its own bounding set holds (CAP_SYS_RESOURCE is missing on some
//! hosts): requested capabilities outside it are left out with a debug log, never an error.

use std::io;

use oci_spec::runtime::{Capabilities, LinuxCapabilities};

const NAMES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// All capability names this runtime knows, in number order.
pub fn all_names() -> &'static [&'static str] {
    NAMES
}

fn number(name: &str) -> Option<u32> {
    NAMES.iter().position(|n| *n == name).map(|i| i as u32)
}

fn in_bounding(cap: u32) -> bool {
    // SAFETY: plain prctl query.
    unsafe { libc::prctl(libc::PR_CAPBSET_READ, cap as libc::c_ulong, 0, 0, 0) == 1 }
}

/// Names of the capabilities this process may grant (its bounding set).
pub fn grantable() -> Vec<&'static str> {
    NAMES
        .iter()
        .enumerate()
        .filter(|(i, _)| in_bounding(*i as u32))
        .map(|(_, n)| *n)
        .collect()
}

fn mask(set: &Option<Capabilities>) -> u64 {
    let mut m = 0u64;
    for cap in set.iter().flatten() {
        let name = serde_json::to_value(cap)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        match number(&name) {
            Some(n) if in_bounding(n) => m |= 1 << n,
            _ => tracing::debug!(capability = %name, "not in lodge-runc's bounding set: left out"),
        }
    }
    m
}

/// The five sets as bit masks, restricted to what we hold.
#[derive(Clone)]
pub struct CapSets {
    pub bounding: u64,
    pub effective: u64,
    pub permitted: u64,
    pub inheritable: u64,
    pub ambient: u64,
}

impl CapSets {
    pub fn from_spec(c: Option<&LinuxCapabilities>) -> CapSets {
        let Some(c) = c else {
            return CapSets {
                bounding: 0,
                effective: 0,
                permitted: 0,
                inheritable: 0,
                ambient: 0,
            };
        };
        CapSets {
            bounding: mask(c.bounding()),
            effective: mask(c.effective()),
            permitted: mask(c.permitted()),
            inheritable: mask(c.inheritable()),
            ambient: mask(c.ambient()),
        }
    }

    /// These sets plus CAP_SYS_ADMIN in effective and permitted (for loading a seccomp filter
    /// without no_new_privs; dropped again right after).
    pub fn with_sys_admin(&self) -> CapSets {
        const CAP_SYS_ADMIN: u64 = 1 << 21;
        CapSets {
            effective: self.effective | CAP_SYS_ADMIN,
            permitted: self.permitted | CAP_SYS_ADMIN,
            ..self.clone()
        }
    }

    /// Drops everything outside the bounding set. Needs CAP_SETPCAP: call before the user switch.
    pub fn apply_bounding(&self) -> io::Result<()> {
        for cap in 0..=last_cap() {
            if self.bounding & (1 << cap) == 0 && in_bounding(cap) {
                // SAFETY: plain prctl.
                if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) } != 0
                {
                    return Err(io::Error::last_os_error());
                }
            }
        }
        Ok(())
    }

    /// Sets effective, permitted and inheritable in one capset, then raises the ambient set.
    pub fn apply_process(&self) -> io::Result<()> {
        #[repr(C)]
        struct Header {
            version: u32,
            pid: i32,
        }
        #[repr(C)]
        #[derive(Clone, Copy)]
        struct Data {
            effective: u32,
            permitted: u32,
            inheritable: u32,
        }
        const VERSION_3: u32 = 0x2008_0522;
        let hdr = Header {
            version: VERSION_3,
            pid: 0,
        };
        let split = |m: u64| (m as u32, (m >> 32) as u32);
        // The kernel's rules: effective within permitted, inheritable within the bounding set,
        // ambient within permitted and inheritable. Ambient capabilities are raised into the
        // inheritable set (runc's default spec lists them only as ambient); the rest that falls
        // outside is left out with a warning, not fatal.
        let effective = self.effective & self.permitted;
        let inheritable = (self.inheritable | (self.ambient & self.permitted)) & self.bounding;
        let ambient = self.ambient & self.permitted & inheritable;
        for (name, want, got) in [
            ("effective", self.effective, effective),
            (
                "inheritable",
                self.inheritable,
                inheritable & self.inheritable,
            ),
            ("ambient", self.ambient, ambient),
        ] {
            if want != got {
                tracing::warn!(
                    set = name,
                    dropped = format!("{:#x}", want & !got),
                    "capabilities outside what the kernel allows were left out"
                );
            }
        }
        let (e0, e1) = split(effective);
        let (p0, p1) = split(self.permitted);
        let (i0, i1) = split(inheritable);
        let data = [
            Data {
                effective: e0,
                permitted: p0,
                inheritable: i0,
            },
            Data {
                effective: e1,
                permitted: p1,
                inheritable: i1,
            },
        ];
        // SAFETY: capset with a v3 header and two data words.
        if unsafe { libc::syscall(libc::SYS_capset, &hdr as *const Header, data.as_ptr()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        for cap in 0..=last_cap() {
            if ambient & (1 << cap) != 0 {
                // SAFETY: plain prctl.
                let r = unsafe {
                    libc::prctl(
                        libc::PR_CAP_AMBIENT,
                        libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                        cap as libc::c_ulong,
                        0,
                        0,
                    )
                };
                if r != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
        }
        Ok(())
    }
}

/// The highest capability number the kernel knows.
pub fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(NAMES.len() as u32 - 1)
        .min(63)
}

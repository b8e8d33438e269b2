//! /proc/sys: the kernel's host-wide knobs that system software sets at boot get a value per
//! container (Sysbox's set, minus what this kernel already namespaces). Everything else under
//! /proc/sys is the container's own procfs: net.* of its network namespace, kernel.hostname of
//! its UTS namespace and the other namespaced knobs are written straight to the kernel, which
//! refuses the host-only ones (their owner is host root). No process is forked per request.
//!
//! A knob's value starts as the host's (read at the container's first read) and then lives in
//! the container's store. Policies:
//! - `Container`: checked, kept for the container, never written to the host;
//! - `RaiseHost`: kept for the container; the host's value is raised when the new one is larger
//!   (so the host can serve what the container asked for, and no other container loses).

use super::{Content, EmulatedFile, WritePolicy};

const fn knob(path: &'static str, write: WritePolicy) -> EmulatedFile {
    EmulatedFile {
        path,
        mode: 0o644,
        write,
        content: Content::Knob,
    }
}

fn int_in(v: &str, lo: i64, hi: i64) -> bool {
    v.trim()
        .parse::<i64>()
        .is_ok_and(|x| (lo..=hi).contains(&x))
}

fn bool01(v: &str) -> bool {
    int_in(v, 0, 1)
}

fn any_int(v: &str) -> bool {
    v.trim().parse::<i64>().is_ok()
}

fn non_negative(v: &str) -> bool {
    int_in(v, 0, i64::MAX)
}

/// printk: up to four integers.
fn printk(v: &str) -> bool {
    let parts: Vec<&str> = v.split_whitespace().collect();
    (1..=4).contains(&parts.len()) && parts.iter().all(|p| p.parse::<i64>().is_ok())
}

pub const FILES: &[EmulatedFile] = &[
    knob("proc/sys/fs/file-max", WritePolicy::RaiseHost(non_negative)),
    knob("proc/sys/fs/nr_open", WritePolicy::RaiseHost(non_negative)),
    knob(
        "proc/sys/fs/protected_hardlinks",
        WritePolicy::Container(bool01),
    ),
    knob(
        "proc/sys/fs/protected_symlinks",
        WritePolicy::Container(bool01),
    ),
    knob(
        "proc/sys/kernel/pid_max",
        WritePolicy::Container(|v| int_in(v, 1, 4_194_304)),
    ),
    knob("proc/sys/kernel/panic", WritePolicy::Container(any_int)),
    knob(
        "proc/sys/kernel/panic_on_oops",
        WritePolicy::Container(any_int),
    ),
    knob("proc/sys/kernel/printk", WritePolicy::Container(printk)),
    knob(
        "proc/sys/kernel/kptr_restrict",
        WritePolicy::Container(|v| int_in(v, 0, 3)),
    ),
    knob(
        "proc/sys/kernel/dmesg_restrict",
        WritePolicy::Container(bool01),
    ),
    knob(
        "proc/sys/kernel/sysrq",
        WritePolicy::Container(|v| int_in(v, 0, 511)),
    ),
    knob(
        "proc/sys/kernel/yama/ptrace_scope",
        WritePolicy::Container(|v| int_in(v, 0, 3)),
    ),
    knob(
        "proc/sys/vm/overcommit_memory",
        WritePolicy::Container(|v| int_in(v, 0, 2)),
    ),
    knob(
        "proc/sys/vm/mmap_min_addr",
        WritePolicy::Container(non_negative),
    ),
    // Global (read-only in other network namespaces); kube-proxy raises it.
    knob(
        "proc/sys/net/netfilter/nf_conntrack_max",
        WritePolicy::RaiseHost(non_negative),
    ),
];

/// The host's value of a knob (`path` without the leading '/').
pub fn host_value(path: &str) -> String {
    crate::kernel_files::read(&std::path::Path::new("/").join(path)).unwrap_or_default()
}

/// Raises the host's value to `new` when it is larger.
pub fn raise_host(path: &str, new: &str) -> std::io::Result<()> {
    let host: i64 = host_value(path).trim().parse().unwrap_or(i64::MAX);
    let new_v: i64 = new.trim().parse().unwrap_or(0);
    if new_v > host {
        std::fs::write(std::path::Path::new("/").join(path), new.trim())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_checked() {
        assert!(printk("4 4 1 7") && !printk("a") && !printk("1 2 3 4 5"));
        assert!(int_in("3", 0, 3) && !int_in("4", 0, 3) && !int_in("x", 0, 3));
        assert!(!non_negative("-1"));
    }
}

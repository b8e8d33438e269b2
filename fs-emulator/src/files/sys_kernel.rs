//! /sys/kernel: the kernel's configuration, debugging, tracing and security (LSM) interfaces are
//! the host's; the container gets empty directories over them (as Sysbox; an empty
//! `security` also keeps tools from thinking AppArmor is theirs to manage).

use super::{Content, EmulatedFile, WritePolicy};

const fn empty(path: &'static str, mode: u32) -> EmulatedFile {
    EmulatedFile {
        path,
        mode,
        write: WritePolicy::ReadOnly,
        content: Content::EmptyDir,
    }
}

pub const FILES: &[EmulatedFile] = &[
    empty("sys/kernel/config", 0o755),
    empty("sys/kernel/debug", 0o700),
    empty("sys/kernel/tracing", 0o700),
    empty("sys/kernel/security", 0o755),
];

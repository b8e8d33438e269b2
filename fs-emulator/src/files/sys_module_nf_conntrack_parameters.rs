//! /sys/module/nf_conntrack/parameters: the conntrack hash table is the host's; kube-proxy inside
//! sets its size. The container gets its own value, and the host's table is grown (never
//! shrunk) to match, as `RaiseHost` knobs do.

use super::{Content, EmulatedFile, WritePolicy};

pub const FILES: &[EmulatedFile] = &[EmulatedFile {
    path: "sys/module/nf_conntrack/parameters/hashsize",
    mode: 0o600,
    write: WritePolicy::RaiseHost(|v| v.trim().parse::<u32>().is_ok_and(|n| n > 0)),
    content: Content::Knob,
}];

//! /sys/devices/virtual/dmi/id: a machine identity of the container's own.

use super::{Container, Content, EmulatedFile, WritePolicy};

pub const FILES: &[EmulatedFile] = &[EmulatedFile {
    path: "sys/devices/virtual/dmi/id/product_uuid",
    mode: 0o400,
    write: WritePolicy::ReadOnly,
    content: Content::File(product_uuid),
}];

/// Stable per container, distinct between containers: the host's product UUID up to its last
/// group (zeros when the host has none), then 12 hex digits from the container's id.
fn product_uuid(c: &Container) -> String {
    let host =
        std::fs::read_to_string("/sys/devices/virtual/dmi/id/product_uuid").unwrap_or_default();
    let host = host.trim();
    let prefix = if host.len() >= 23 {
        &host[..23]
    } else {
        "00000000-0000-0000-0000"
    };
    // Ids are often 64 hex digits (Docker); others are hashed into hex.
    let hex: String = if c.id.len() >= 12 && c.id.chars().all(|ch| ch.is_ascii_hexdigit()) {
        c.id[..12].to_ascii_lowercase()
    } else {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in c.id.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
        format!("{:012x}", h & 0xffff_ffff_ffff)
    };
    format!("{prefix}-{hex}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(id: &str) -> Container {
        Container::new(
            id.into(),
            crate::cgroup::CgroupView { paths: vec![] },
            (0, 0),
            0.0,
        )
    }

    #[test]
    fn product_uuid_is_stable_and_per_container() {
        let a = product_uuid(&container("0123456789abcdef0123"));
        assert!(a.trim_end().ends_with("-0123456789ab"), "{a}");
        assert_eq!(a.trim_end().len(), 36);
        let b = product_uuid(&container("web-1"));
        let c = product_uuid(&container("web-2"));
        assert_ne!(b, c);
        assert_eq!(b, product_uuid(&container("web-1")));
    }
}

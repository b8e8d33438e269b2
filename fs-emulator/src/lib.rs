//! lodge-fs: each system container's own view of /proc and /sys files, computed from its
//! cgroup, served over FUSE and bind-mounted into the container by lodge-runc.

pub mod cgroup;
pub mod dev_fuse;
pub mod files;
pub mod fuse_uring;
pub mod fuse_wire;
pub mod fusefs;
pub mod keeper;
pub mod kernel_files;
pub mod registry;
pub mod restart;
pub mod seccomp;
pub mod server;

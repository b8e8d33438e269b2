//! lodge-runc as a library: a runc-compatible OCI runtime.
//!
//! The binary (`main.rs`) only parses the command line and sets up logging; every verb is an
//! operation in [`ops`]. The runtime is synchronous and single-threaded on purpose: it forks.

pub mod apparmor;
pub mod cgroups;
pub mod devices_bpf;
pub mod error;
pub mod fs_client;
pub mod hooks;
pub mod knobs;
pub mod mgr_client;
pub mod ops;
pub mod process;
pub mod rootfs;
pub mod seccomp;
pub mod selfexe;
pub mod signal;
pub mod spec;
pub mod state;
pub mod sys;
pub mod syscont;
pub mod systemd_scope;
pub mod timefmt;

pub use error::Error;
pub use oci_spec;

/// Version of the runtime-spec this runtime implements (printed by `--version`, `features`).
pub const OCI_SPEC_VERSION: &str = "1.2.0";

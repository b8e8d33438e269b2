//! lodge-mgr: exclusive ID ranges for containers, the container registry, and their persisted
//! state, and host-backed volumes for the special directories of system containers.

pub mod engines;
pub mod halt;
pub mod registry;
pub mod server;
pub mod subid;
pub mod volumes;

//! lodge-mgr: exclusive ID ranges for containers, the container registry, and their persisted
//! state. (Host-backed volumes for inner Docker/containerd/kubelet come next.)

pub mod registry;
pub mod server;
pub mod subid;

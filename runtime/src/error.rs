//! The error every operation returns: module errors roll up here.

use thiserror::Error;

use crate::cgroups::CgroupError;
use crate::hooks::HookError;
use crate::process::ProcessError;
use crate::signal::UnknownSignal;
use crate::spec::SpecError;
use crate::state::{StateError, Status};

#[derive(Debug, Error)]
pub enum Error {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error(transparent)]
    Hook(#[from] HookError),
    #[error(transparent)]
    Rootfs(#[from] crate::rootfs::RootfsError),
    #[error(transparent)]
    Mgr(#[from] crate::mgr_client::MgrError),
    #[error(transparent)]
    Fs(#[from] crate::fs_client::FsError),
    #[error(transparent)]
    Knob(#[from] crate::knobs::KnobError),
    #[error(transparent)]
    SystemContainer(#[from] crate::syscont::SysContError),
    #[error(transparent)]
    Signal(#[from] UnknownSignal),
    #[error(transparent)]
    Scope(#[from] crate::systemd_scope::ScopeError),
    #[error(transparent)]
    AppArmor(#[from] crate::apparmor::AppArmorError),
    #[error("{0}")]
    InvalidId(String),
    #[error("container {id} is {status}: {action}")]
    WrongStatus {
        id: String,
        status: Status,
        action: &'static str,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("starting container process: {0}")]
    Exec(String),
}

impl Error {
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

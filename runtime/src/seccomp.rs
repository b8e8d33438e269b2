//! Seccomp filters from `linux.seccomp`, built with libseccomp.
//!
//! The filter is built before init drops privileges and loaded as the very last step before
//! execve. Without no_new_privs, loading needs CAP_SYS_ADMIN: init keeps it in its effective
//! set only until the filter is in place (see `process::init`).

use std::str::FromStr;

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag, LinuxSeccompOperator,
};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum SeccompError {
    #[error("seccomp: {0}")]
    Lib(#[from] libseccomp::error::SeccompError),
    #[error("seccomp: unknown architecture {0}")]
    Arch(String),
    #[error("seccomp: SCMP_ACT_NOTIFY needs linux.seccomp.listenerPath")]
    Notify,
    #[error("seccomp: sending the notify fd to {path}: {source} (is the agent listening there running? For system containers that is lodge-fs)")]
    Listener {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("seccomp: argument index {0} is out of range (0-5)")]
    ArgIndex(usize),
}

fn action(a: LinuxSeccompAction, errno_ret: Option<u32>) -> Result<ScmpAction, SeccompError> {
    let errno = errno_ret.map_or(libc::EPERM, |e| e as i32);
    Ok(match a {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            ScmpAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActErrno => ScmpAction::Errno(errno),
        LinuxSeccompAction::ScmpActTrace => ScmpAction::Trace(errno as u16),
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        LinuxSeccompAction::ScmpActNotify => ScmpAction::Notify,
    })
}

fn compare(arg: &oci_spec::runtime::LinuxSeccompArg) -> Result<ScmpArgCompare, SeccompError> {
    if arg.index() > 5 {
        return Err(SeccompError::ArgIndex(arg.index()));
    }
    let (op, datum) = match arg.op() {
        LinuxSeccompOperator::ScmpCmpNe => (ScmpCompareOp::NotEqual, arg.value()),
        LinuxSeccompOperator::ScmpCmpLt => (ScmpCompareOp::Less, arg.value()),
        LinuxSeccompOperator::ScmpCmpLe => (ScmpCompareOp::LessOrEqual, arg.value()),
        LinuxSeccompOperator::ScmpCmpEq => (ScmpCompareOp::Equal, arg.value()),
        LinuxSeccompOperator::ScmpCmpGe => (ScmpCompareOp::GreaterEqual, arg.value()),
        LinuxSeccompOperator::ScmpCmpGt => (ScmpCompareOp::Greater, arg.value()),
        // The spec's value is the mask, valueTwo the value compared after masking.
        LinuxSeccompOperator::ScmpCmpMaskedEq => (
            ScmpCompareOp::MaskedEqual(arg.value()),
            arg.value_two().unwrap_or(0),
        ),
    };
    Ok(ScmpArgCompare::new(arg.index() as u32, op, datum))
}

/// Whether the profile hands syscalls to a user-space agent.
pub fn uses_notify(s: &LinuxSeccomp) -> bool {
    s.default_action() == LinuxSeccompAction::ScmpActNotify
        || s.syscalls()
            .iter()
            .flatten()
            .any(|r| r.action() == LinuxSeccompAction::ScmpActNotify)
}

/// Hands the notify fd to the agent at `listenerPath`, as the runtime-spec describes: the
/// container process state as JSON, with the fd attached (SCM_RIGHTS).
pub fn send_to_listener(
    s: &LinuxSeccomp,
    fd: std::os::fd::RawFd,
    pid: i32,
    state: serde_json::Value,
) -> Result<(), SeccompError> {
    let path = s.listener_path().clone().ok_or(SeccompError::Notify)?;
    let err = |source| SeccompError::Listener {
        path: path.clone(),
        source,
    };
    let sock = std::os::unix::net::UnixStream::connect(&path).map_err(err)?;
    let msg = serde_json::json!({
        "ociVersion": crate::OCI_SPEC_VERSION,
        "fds": ["seccompFd"],
        "pid": pid,
        "metadata": s.listener_metadata().clone().unwrap_or_default(),
        "state": state,
    });
    let data = serde_json::to_vec(&msg).expect("state serializes");
    crate::sys::send_fds(std::os::fd::AsRawFd::as_raw_fd(&sock), &data, &[fd]).map_err(err)
}

/// Builds (but does not load) the filter.
pub fn build(s: &LinuxSeccomp) -> Result<ScmpFilterContext, SeccompError> {
    if uses_notify(s) && s.listener_path().is_none() {
        return Err(SeccompError::Notify);
    }
    let default = action(s.default_action(), s.default_errno_ret())?;
    let mut ctx = ScmpFilterContext::new(default)?;
    // no_new_privs is the spec's decision (process.noNewPrivileges), not libseccomp's.
    ctx.set_ctl_nnp(false)?;
    for arch in s.architectures().iter().flatten() {
        let name = serde_json::to_value(arch)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        let arch = ScmpArch::from_str(&name).map_err(|_| SeccompError::Arch(name.clone()))?;
        ctx.add_arch(arch)?;
    }
    for flag in s.flags().iter().flatten() {
        match flag {
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => ctx.set_ctl_log(true)?,
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => ctx.set_ctl_tsync(true)?,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => ctx.set_ctl_ssb(true)?,
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => {
                ctx.set_ctl_waitkill(true)?
            }
        };
    }
    for rule in s.syscalls().iter().flatten() {
        let act = action(rule.action(), rule.errno_ret())?;
        if act == default {
            // libseccomp refuses rules that repeat the default action; they change nothing.
            continue;
        }
        let conditions: Vec<ScmpArgCompare> = rule
            .args()
            .iter()
            .flatten()
            .map(compare)
            .collect::<Result<_, _>>()?;
        // Two conditions on one argument cannot share a rule: each gets its own (an OR), as in runc.
        let mut indexes: Vec<u32> = rule
            .args()
            .iter()
            .flatten()
            .map(|a| a.index() as u32)
            .collect();
        indexes.sort_unstable();
        let repeated = indexes.windows(2).any(|w| w[0] == w[1]);
        for name in rule.names() {
            let Ok(syscall) = ScmpSyscall::from_name(name) else {
                // Profiles list syscalls of newer kernels or other architectures.
                tracing::debug!(syscall = %name, "unknown to libseccomp here: rule skipped");
                continue;
            };
            if conditions.is_empty() {
                ctx.add_rule(act, syscall)?;
            } else if repeated {
                for c in &conditions {
                    ctx.add_rule_conditional(act, syscall, std::slice::from_ref(c))?;
                }
            } else {
                ctx.add_rule_conditional(act, syscall, &conditions)?;
            }
        }
    }
    Ok(ctx)
}

//! OCI hooks: run with the container's state JSON on stdin, optional env and timeout.

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oci_spec::runtime::Hook;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum HookError {
    #[error("{kind} hook {path}: cannot start: {source}")]
    Spawn {
        kind: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("{kind} hook {path} failed: {status}")]
    Failed {
        kind: &'static str,
        path: String,
        status: String,
    },
    #[error("{kind} hook {path} timed out after {secs}s")]
    Timeout {
        kind: &'static str,
        path: String,
        secs: i64,
    },
}

/// Runs `hooks` in order; the first failure stops the rest.
pub fn run_all(kind: &'static str, hooks: &[Hook], state_json: &[u8]) -> Result<(), HookError> {
    hooks.iter().try_for_each(|h| run(kind, h, state_json))
}

fn run(kind: &'static str, hook: &Hook, state_json: &[u8]) -> Result<(), HookError> {
    let path = hook.path().display().to_string();
    let args = hook.args().clone().unwrap_or_default();
    let mut cmd = Command::new(hook.path());
    if let Some(argv0) = args.first() {
        std::os::unix::process::CommandExt::arg0(&mut cmd, argv0);
    }
    cmd.args(args.iter().skip(1))
        .env_clear()
        .stdin(Stdio::piped());
    for kv in hook.env().iter().flatten() {
        if let Some((k, v)) = kv.split_once('=') {
            cmd.env(k, v);
        }
    }
    let mut child = cmd.spawn().map_err(|source| HookError::Spawn {
        kind,
        path: path.clone(),
        source,
    })?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin is fine.
        let _ = stdin.write_all(state_json);
    }
    let deadline = hook.timeout().filter(|t| *t > 0);
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) => {}
            Err(source) => return Err(HookError::Spawn { kind, path, source }),
        }
        if let Some(secs) = deadline {
            if start.elapsed() >= Duration::from_secs(secs as u64) {
                let _ = child.kill();
                let _ = child.wait();
                return Err(HookError::Timeout { kind, path, secs });
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    if status.success() {
        return Ok(());
    }
    let status = match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (_, Some(s)) => format!("killed by signal {s}"),
        _ => "unknown status".into(),
    };
    Err(HookError::Failed { kind, path, status })
}

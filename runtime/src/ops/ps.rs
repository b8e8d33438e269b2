//! `ps`: the container's processes, as pids (json) or through the host's ps.

use std::process::Command;

use crate::cgroups::Cgroup;
use crate::error::{Error, Result};
use crate::state::{StateDir, Status};

use super::Globals;

/// Pids of every process in the container's cgroup.
pub fn pids(g: &Globals, id: &str) -> Result<Vec<i32>> {
    let dir = StateDir::open(&g.root, id)?;
    let st = dir.load()?;
    let status = st.status(&dir.path);
    if status == Status::Stopped {
        return Ok(vec![]);
    }
    let mut pids = Cgroup::from_paths(st.cgroup_paths.clone()).pids();
    pids.sort_unstable();
    Ok(pids)
}

/// The host's `ps` with `ps_args` (default `-ef`), keeping the header and the container's rows.
pub fn ps_table(g: &Globals, id: &str, ps_args: &[String]) -> Result<String> {
    let pids = pids(g, id)?;
    let args: Vec<String> = if ps_args.is_empty() {
        vec!["-ef".into()]
    } else {
        ps_args.to_vec()
    };
    let out = Command::new("ps")
        .args(&args)
        .output()
        .map_err(Error::io("running ps"))?;
    if !out.status.success() {
        return Err(Error::io(format!("ps {}", args.join(" ")))(
            std::io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_string()),
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    let Some(pid_col) = header.split_whitespace().position(|c| c == "PID") else {
        return Err(Error::io("ps")(std::io::Error::other(
            "ps output has no PID column",
        )));
    };
    let mut result = format!("{header}\n");
    for line in lines {
        let pid = line
            .split_whitespace()
            .nth(pid_col)
            .and_then(|p| p.parse::<i32>().ok());
        if pid.is_some_and(|p| pids.contains(&p)) {
            result.push_str(line);
            result.push('\n');
        }
    }
    Ok(result)
}

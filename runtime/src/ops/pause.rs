//! `pause` and `resume`: the freezer, v1 or v2.

use crate::cgroups::Cgroup;
use crate::error::{Error, Result};
use crate::state::{StateDir, Status};

use super::Globals;

pub fn pause(g: &Globals, id: &str) -> Result<()> {
    set_frozen(g, id, true)
}

pub fn resume(g: &Globals, id: &str) -> Result<()> {
    set_frozen(g, id, false)
}

fn set_frozen(g: &Globals, id: &str, frozen: bool) -> Result<()> {
    let dir = StateDir::open(&g.root, id)?;
    let st = dir.load()?;
    let status = st.status(&dir.path);
    let (want, action) = if frozen {
        (Status::Running, "only a running container can be paused")
    } else {
        (Status::Paused, "only a paused container can be resumed")
    };
    if status != want {
        return Err(Error::WrongStatus {
            id: id.into(),
            status,
            action,
        });
    }
    Cgroup::from_paths(st.cgroup_paths.clone()).freeze(frozen)?;
    Ok(())
}

//! `pause` and `resume`: the freezer, v1 or v2.

use crate::cgroups::Cgroup;
use crate::error::Result;
use crate::state::Status;

use super::Globals;

pub fn pause(g: &Globals, id: &str) -> Result<()> {
    set_frozen(g, id, true)
}

pub fn resume(g: &Globals, id: &str) -> Result<()> {
    set_frozen(g, id, false)
}

fn set_frozen(g: &Globals, id: &str, frozen: bool) -> Result<()> {
    let (want, action) = if frozen {
        (Status::Running, "only a running container can be paused")
    } else {
        (Status::Paused, "only a paused container can be resumed")
    };
    let (_dir, st) = super::open_in(g, id, &[want], action)?;
    Cgroup::from_paths(st.cgroup_paths.clone()).freeze(frozen)?;
    Ok(())
}

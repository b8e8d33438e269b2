//! The mounts around one mount, from statmount(2) and listmount(2) (kernel ≥ 6.8): the mount,
//! its parent and everything below it, as a `mountinfo::Table`, without reading the caller's
//! whole mount table (which costs about 100 µs with 50 mounts). Called in the caller's view: the
//! kernel gives mount points relative to the calling thread's root, as mountinfo does to the
//! process it describes.

use std::io;
use std::os::fd::RawFd;
use std::path::PathBuf;

use super::mountinfo::{Mount, Table};

const SYS_STATMOUNT: libc::c_long = 457;
const SYS_LISTMOUNT: libc::c_long = 458;
const STATX_MNT_ID_UNIQUE: u32 = 0x4000;

const STATMOUNT_SB_BASIC: u64 = 0x1;
const STATMOUNT_MNT_BASIC: u64 = 0x2;
const STATMOUNT_MNT_ROOT: u64 = 0x8;
const STATMOUNT_MNT_POINT: u64 = 0x10;
const STATMOUNT_FS_TYPE: u64 = 0x20;

/// `struct mnt_id_req` (version 0).
#[repr(C)]
struct MntIdReq {
    size: u32,
    spare: u32,
    mnt_id: u64,
    param: u64,
}

/// Where `struct statmount`'s fields sit (include/uapi/linux/mount.h); strings follow at 512.
mod off {
    pub const SB_DEV_MAJOR: usize = 16;
    pub const SB_DEV_MINOR: usize = 20;
    pub const FS_TYPE: usize = 36;
    pub const MNT_PARENT_ID: usize = 48;
    pub const MNT_ID_OLD: usize = 56;
    pub const MNT_PARENT_ID_OLD: usize = 60;
    pub const MNT_ATTR: usize = 64;
    pub const MNT_ROOT: usize = 104;
    pub const MNT_POINT: usize = 108;
    pub const STRINGS: usize = 512;
}

/// The unique (64-bit) id of the mount `fd` is on.
pub fn unique_id(fd: RawFd) -> io::Result<u64> {
    // SAFETY: statx into a zeroed struct, on an fd with AT_EMPTY_PATH.
    unsafe {
        let mut st: libc::statx = std::mem::zeroed();
        if libc::statx(
            fd,
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            STATX_MNT_ID_UNIQUE,
            &mut st,
        ) != 0
        {
            return Err(io::Error::last_os_error());
        }
        if st.stx_mask & STATX_MNT_ID_UNIQUE == 0 {
            return Err(io::Error::from_raw_os_error(libc::ENOSYS));
        }
        Ok(st.stx_mnt_id)
    }
}

/// The mount with unique id `id`, numbered as mountinfo numbers mounts (so that the ids match
/// statx's STATX_MNT_ID), and its parent's unique id.
fn stat(id: u64) -> io::Result<(Mount, u64)> {
    let req = MntIdReq {
        size: std::mem::size_of::<MntIdReq>() as u32,
        spare: 0,
        mnt_id: id,
        param: STATMOUNT_SB_BASIC
            | STATMOUNT_MNT_BASIC
            | STATMOUNT_MNT_ROOT
            | STATMOUNT_MNT_POINT
            | STATMOUNT_FS_TYPE,
    };
    let mut buf = vec![0u8; 8192];
    // SAFETY: a request of the size given and a buffer of buf.len() bytes.
    let r = unsafe {
        libc::syscall(
            SYS_STATMOUNT,
            &req as *const MntIdReq,
            buf.as_mut_ptr(),
            buf.len(),
            0,
        )
    };
    lodge_sys::unit_result(r)?;
    let u32_at = |o: usize| u32::from_ne_bytes(buf[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_ne_bytes(buf[o..o + 8].try_into().unwrap());
    let string = |o: usize| {
        let start = off::STRINGS + u32_at(o) as usize;
        let end = buf[start..]
            .iter()
            .position(|&b| b == 0)
            .map_or(buf.len(), |n| start + n);
        String::from_utf8_lossy(&buf[start..end]).into_owned()
    };
    let mount = Mount {
        id: u64::from(u32_at(off::MNT_ID_OLD)),
        parent: u64::from(u32_at(off::MNT_PARENT_ID_OLD)),
        dev: format!(
            "{}:{}",
            u32_at(off::SB_DEV_MAJOR),
            u32_at(off::SB_DEV_MINOR)
        ),
        root: PathBuf::from(string(off::MNT_ROOT)),
        mountpoint: PathBuf::from(string(off::MNT_POINT)),
        read_only: u64_at(off::MNT_ATTR) & super::sys::MOUNT_ATTR_RDONLY != 0,
        fstype: string(off::FS_TYPE),
    };
    Ok((mount, u64_at(off::MNT_PARENT_ID)))
}

/// The mounts whose parent is `id`.
fn children(id: u64) -> io::Result<Vec<u64>> {
    let mut out = Vec::new();
    let mut last = 0u64;
    loop {
        let req = MntIdReq {
            size: std::mem::size_of::<MntIdReq>() as u32,
            spare: 0,
            mnt_id: id,
            param: last,
        };
        let mut ids = [0u64; 256];
        // SAFETY: a request of the size given and a buffer of ids.len() u64s.
        let n = unsafe {
            libc::syscall(
                SYS_LISTMOUNT,
                &req as *const MntIdReq,
                ids.as_mut_ptr(),
                ids.len(),
                0,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        out.extend_from_slice(&ids[..n]);
        if n < ids.len() {
            return Ok(out);
        }
        last = ids[n - 1];
    }
}

/// The mount `fd` is on, its parent (when the caller can see it) and, with `below`, everything
/// below it; the target's (mountinfo) id.
pub fn around(fd: RawFd, below: bool) -> io::Result<(Table, u64)> {
    let id = unique_id(fd)?;
    let (target, parent_id) = stat(id)?;
    let target_id = target.id;
    let mut mounts = vec![target];
    if parent_id != id {
        if let Ok((parent, _)) = stat(parent_id) {
            mounts.push(parent);
        }
    }
    let mut seen = vec![id];
    let mut todo = if below { vec![id] } else { Vec::new() };
    while let Some(m) = todo.pop() {
        for child in children(m)? {
            if seen.contains(&child) {
                continue;
            }
            seen.push(child);
            mounts.push(stat(child)?.0);
            todo.push(child);
        }
    }
    Ok((Table { mounts }, target_id))
}

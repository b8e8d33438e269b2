//! Serving a FUSE connection lodge-fs took over from its previous run (`restart.rs`) over
//! `/dev/fuse`: fuser only serves connections it mounted and initialized itself. With io_uring
//! queues this loop only sees what the kernel still sends this way (FORGET and INTERRUPT, which
//! need no answer); without them, it answers everything through `fuse_wire`.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use crate::fuse_wire::{self, OP_BATCH_FORGET, OP_DESTROY, OP_FORGET, OP_INTERRUPT};
use crate::fusefs::{LodgeFs, MAX_TRANSFER};

/// Reads and answers requests until the connection goes away.
pub fn serve(fs: Arc<LodgeFs>, fuse: Arc<OwnedFd>) {
    let size = MAX_TRANSFER as usize + 4096;
    let mut request = vec![0u8; size];
    let mut reply = vec![0u8; size];
    loop {
        // SAFETY: read into our buffer.
        let n = unsafe { libc::read(fuse.as_raw_fd(), request.as_mut_ptr().cast(), size) };
        if n < 0 {
            match io::Error::last_os_error().raw_os_error() {
                // Interrupted, or a request that was withdrawn meanwhile.
                Some(libc::EINTR) | Some(libc::EAGAIN) | Some(libc::ENOENT) => continue,
                // Unmounted or aborted.
                _ => return,
            }
        }
        let n = n as usize;
        if n < 40 {
            continue;
        }
        let opcode = fuse_wire::u32_at(&request, 4);
        if matches!(opcode, OP_FORGET | OP_BATCH_FORGET | OP_INTERRUPT) {
            continue;
        }
        let fixed = fuse_wire::op_in_size(opcode).min(n - 40);
        let mut op_in = [0u8; 128];
        op_in[..fixed].copy_from_slice(&request[40..40 + fixed]);
        let rest = &request[40 + fixed..n];
        reply[16..16 + rest.len()].copy_from_slice(rest);
        let answer = fuse_wire::answer(&fs, &request[..40], &op_in, &mut reply[16..], rest.len());
        answer.write_header(&mut reply[..16]);
        // SAFETY: write from our buffer. ENOENT: the request was interrupted meanwhile.
        unsafe { libc::write(fuse.as_raw_fd(), reply.as_ptr().cast(), 16 + answer.len) };
        if opcode == OP_DESTROY {
            return;
        }
    }
}

/// Tells the kernel to forget its cached entry `name` in the root directory
/// (FUSE_NOTIFY_INVAL_ENTRY), as fuser's Notifier does for a connection fuser serves.
pub fn invalidate_root_entry(fuse: &OwnedFd, name: &str) -> io::Result<()> {
    const FUSE_NOTIFY_INVAL_ENTRY: i32 = 3;
    let mut msg = Vec::with_capacity(32 + name.len() + 1);
    let len = (16 + 16 + name.len() + 1) as u32;
    msg.extend_from_slice(&len.to_ne_bytes());
    msg.extend_from_slice(&FUSE_NOTIFY_INVAL_ENTRY.to_ne_bytes());
    msg.extend_from_slice(&0u64.to_ne_bytes()); // unique 0: a notification
    msg.extend_from_slice(&crate::registry::ROOT_INO.to_ne_bytes());
    msg.extend_from_slice(&(name.len() as u32).to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes()); // flags
    msg.extend_from_slice(name.as_bytes());
    msg.push(0);
    // SAFETY: write from our buffer.
    if unsafe { libc::write(fuse.as_raw_fd(), msg.as_ptr().cast(), msg.len()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

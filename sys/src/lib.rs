//! lodge-sys: what lodge-runc and lodge-fs both need from the kernel and libc does not wrap —
//! the fd-based mount API (`mount`), fd passing (`fdpass`) — and the mountinfo format
//! (`mountinfo`). Thin on purpose:
//! errno stays an `io::Error`, each caller gives it meaning.

pub mod fdpass;
pub mod mount;
pub mod mountinfo;

//! The FUSE wire format of the requests lodge-fs answers, shared by its two transports
//! (`fuse_uring` and `dev_fuse`): decoding a request, calling `LodgeFs`, encoding the reply.

use fuser::Errno;

use crate::fusefs::{Attr, LodgeFs, TTL};

pub const OP_LOOKUP: u32 = 1;
pub const OP_GETATTR: u32 = 3;
pub const OP_SETATTR: u32 = 4;
pub const OP_OPEN: u32 = 14;
pub const OP_READ: u32 = 15;
pub const OP_WRITE: u32 = 16;
pub const OP_STATFS: u32 = 17;
pub const OP_RELEASE: u32 = 18;
pub const OP_OPENDIR: u32 = 27;
pub const OP_READDIR: u32 = 28;
pub const OP_RELEASEDIR: u32 = 29;

/// `FATTR_UID | FATTR_GID` of fuse_setattr_in.valid.
const FATTR_OWNER: u32 = (1 << 1) | (1 << 2);
/// fuse_open_out.open_flags: reads bypass the page cache (the size is not known).
const FOPEN_DIRECT_IO: u32 = 1;

pub const OP_FORGET: u32 = 2;
pub const OP_FLUSH: u32 = 25;
pub const OP_ACCESS: u32 = 34;
pub const OP_INTERRUPT: u32 = 36;
pub const OP_DESTROY: u32 = 38;
pub const OP_BATCH_FORGET: u32 = 42;
pub const OP_GETXATTR: u32 = 22;
pub const OP_LISTXATTR: u32 = 23;
pub const OP_SETXATTR: u32 = 21;

/// The size of an operation's fixed argument (its first, the one io_uring puts in `op_in`);
/// /dev/fuse sends it right after the fuse_in_header.
pub fn op_in_size(opcode: u32) -> usize {
    match opcode {
        OP_GETATTR => 16,
        OP_SETATTR => 88,
        OP_OPEN | OP_OPENDIR | OP_ACCESS | OP_GETXATTR | OP_LISTXATTR => 8,
        OP_READ | OP_READDIR | OP_WRITE => 40,
        OP_RELEASE | OP_RELEASEDIR | OP_FLUSH => 24,
        OP_SETXATTR => 16,
        _ => 0,
    }
}

pub fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(b[at..at + 4].try_into().unwrap_or_default())
}

pub fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_ne_bytes(b[at..at + 8].try_into().unwrap_or_default())
}

/// Writes little pieces of a reply into the payload buffer.
struct Out<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl Out<'_> {
    fn u32(&mut self, v: u32) -> &mut Self {
        self.bytes(&v.to_ne_bytes())
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes(&v.to_ne_bytes())
    }
    fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.buf[self.len..self.len + b.len()].copy_from_slice(b);
        self.len += b.len();
        self
    }
    fn room(&self) -> usize {
        self.buf.len() - self.len
    }

    /// `struct fuse_attr` (88 bytes).
    fn attr(&mut self, a: &Attr) -> &mut Self {
        self.u64(a.ino).u64(a.size()).u64(0); // blocks
        self.u64(0).u64(0).u64(0); // atime, mtime, ctime
        self.u32(0).u32(0).u32(0); // their nanoseconds
        self.u32(a.mode()).u32(a.nlink()).u32(a.uid).u32(a.gid);
        self.u32(0).u32(4096).u32(0) // rdev, blksize, flags
    }

    /// `struct fuse_entry_out` (128 bytes).
    fn entry(&mut self, a: &Attr) -> &mut Self {
        self.u64(a.ino).u64(0); // nodeid, generation
        self.u64(TTL.as_secs()).u64(TTL.as_secs()).u32(0).u32(0);
        self.attr(a)
    }

    /// `struct fuse_attr_out` (104 bytes).
    fn attr_out(&mut self, a: &Attr) -> &mut Self {
        self.u64(TTL.as_secs()).u32(0).u32(0).attr(a)
    }

    /// `struct fuse_open_out` (16 bytes).
    fn open_out(&mut self, fh: u64, flags: u32) -> &mut Self {
        self.u64(fh).u32(flags).u32(0)
    }
}

/// A reply's fuse_out_header fields; its arguments are in the caller's buffer.
pub struct Reply {
    pub unique: u64,
    /// 0 or a negative errno.
    pub error: i32,
    /// Bytes of reply arguments (0 with an error).
    pub len: usize,
}

impl Reply {
    /// Writes the 16-byte fuse_out_header.
    pub fn write_header(&self, out: &mut [u8]) {
        out[0..4].copy_from_slice(&((16 + self.len) as u32).to_ne_bytes());
        out[4..8].copy_from_slice(&self.error.to_ne_bytes());
        out[8..16].copy_from_slice(&self.unique.to_ne_bytes());
    }
}

/// Answers one request: `in_header` is its fuse_in_header, `op_in` the operation's fixed
/// argument, `buf[..in_len]` the rest of it (a name, written data). The reply's arguments
/// overwrite `buf`.
pub fn answer(
    fs: &LodgeFs,
    in_header: &[u8],
    op_in: &[u8; 128],
    buf: &mut [u8],
    in_len: usize,
) -> Reply {
    let opcode = u32_at(in_header, 4);
    let unique = u64_at(in_header, 8);
    let nodeid = u64_at(in_header, 16);
    let mut out = Out { buf, len: 0 };
    match dispatch(fs, opcode, nodeid, op_in, in_len, &mut out) {
        Ok(()) => Reply {
            unique,
            error: 0,
            len: out.len,
        },
        Err(e) => Reply {
            unique,
            error: -e.code(),
            len: 0,
        },
    }
}

/// One request: `op_in` holds the operation's fixed argument, `out.buf[..in_len]` the rest
/// (a name, written data), which the reply then overwrites.
fn dispatch(
    fs: &LodgeFs,
    opcode: u32,
    nodeid: u64,
    op_in: &[u8; 128],
    in_len: usize,
    out: &mut Out,
) -> Result<(), Errno> {
    match opcode {
        OP_LOOKUP => {
            let arg = &out.buf[..in_len];
            let name = arg.split(|&b| b == 0).next().unwrap_or_default();
            let attr = fs.lookup(nodeid, name)?;
            out.entry(&attr);
        }
        OP_GETATTR => {
            let attr = fs.getattr(nodeid)?;
            out.attr_out(&attr);
        }
        OP_SETATTR => {
            let valid = u32_at(op_in, 0);
            let attr = fs.setattr(nodeid, valid & FATTR_OWNER != 0)?;
            out.attr_out(&attr);
        }
        OP_OPEN => {
            let flags = u32_at(op_in, 0) as i32;
            let fh = fs.open(nodeid, flags)?;
            out.open_out(fh, FOPEN_DIRECT_IO);
        }
        OP_READ => {
            let (fh, offset, size) = (u64_at(op_in, 0), u64_at(op_in, 8), u32_at(op_in, 16));
            let size = size.min(out.room() as u32);
            let (content, range) = fs.read(nodeid, fh, offset, size)?;
            out.bytes(&content[range]);
        }
        OP_WRITE => {
            let size = (u32_at(op_in, 16) as usize).min(in_len);
            let written = fs.write(nodeid, &out.buf[..size])?;
            out.u32(written).u32(0);
        }
        OP_STATFS => {
            // struct fuse_kstatfs: no blocks or inodes to speak of.
            out.u64(0).u64(0).u64(0).u64(0).u64(0);
            out.u32(512).u32(255).u32(0).u32(0);
            out.bytes(&[0u8; 24]);
        }
        OP_RELEASE => fs.release(u64_at(op_in, 0)),
        OP_OPENDIR => {
            out.open_out(0, 0);
        }
        OP_RELEASEDIR => {}
        OP_READDIR => {
            let (offset, size) = (u64_at(op_in, 8), u32_at(op_in, 16) as usize);
            let limit = size.min(out.buf.len());
            let entries = fs.readdir(nodeid)?;
            for (i, (ino, dir, name)) in entries.iter().enumerate().skip(offset as usize) {
                // struct fuse_dirent, padded to 8 bytes.
                let record = (24 + name.len()).next_multiple_of(8);
                if out.len + record > limit {
                    break;
                }
                let kind = if *dir { libc::DT_DIR } else { libc::DT_REG };
                let end = out.len + record;
                out.u64(*ino).u64((i + 1) as u64);
                out.u32(name.len() as u32).u32(u32::from(kind));
                out.bytes(name.as_bytes());
                out.buf[out.len..end].fill(0);
                out.len = end;
            }
        }
        // FLUSH, xattrs, POLL, STATX and the rest: not implemented, as over /dev/fuse (the
        // kernel remembers and stops asking for most of them).
        _ => return Err(Errno::ENOSYS),
    }
    Ok(())
}

//! The filesystem lodge-fs serves: lookups, attributes, directory listings, reads and writes
//! over the registry, independent of how requests arrive (`/dev/fuse` through fuser, or
//! FUSE over io_uring, `fuse_uring`). A file's content is rendered once at open and served
//! from that snapshot (consistent reads, and a container deleted while a file is open does not
//! disturb the reader); a read at offset 0 after the first renders it again.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEntry,
    ReplyOpen, Request,
};

use crate::files::WritePolicy;
use crate::registry::{self, Registry, ROOT_INO};

/// Entries and attributes never change for a registered container; a removed one's inodes are
/// never reused.
pub const TTL: Duration = Duration::from_secs(60);

/// The size files report (see `Attr::size`).
const MAX_FILE: u64 = 1 << 20;

/// The largest read or write one request carries. Emulated files are a few KiB; keeping this
/// small keeps each io_uring entry's buffer small.
pub const MAX_TRANSFER: u32 = 128 * 1024;

/// What lodge-fs tells the kernel about an inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub dir: bool,
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
}

impl Attr {
    /// The size is unknown until the content is rendered at open. Files report an upper bound:
    /// with 0, readers that splice (busybox cat uses sendfile) see an empty file; reads are
    /// direct, so a reader gets exactly the content and then EOF.
    pub fn size(&self) -> u64 {
        if self.dir {
            0
        } else {
            MAX_FILE
        }
    }

    /// st_mode: type and permission bits.
    pub fn mode(&self) -> u32 {
        let kind = if self.dir {
            libc::S_IFDIR
        } else {
            libc::S_IFREG
        };
        kind | u32::from(self.perm)
    }

    pub fn nlink(&self) -> u32 {
        if self.dir {
            2
        } else {
            1
        }
    }

    fn to_fuser(self) -> FileAttr {
        FileAttr {
            ino: INodeNo(self.ino),
            size: self.size(),
            blocks: 0,
            atime: UNIX_EPOCH,
            mtime: UNIX_EPOCH,
            ctime: UNIX_EPOCH,
            crtime: UNIX_EPOCH,
            kind: if self.dir {
                FileType::Directory
            } else {
                FileType::RegularFile
            },
            perm: self.perm,
            nlink: self.nlink(),
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            flags: 0,
            blksize: 4096,
        }
    }
}

/// One directory entry: inode, whether it is a directory, name.
pub type DirEntry = (u64, bool, String);

/// An open file: its content, and whether nobody has read it yet.
struct Handle {
    content: Arc<Vec<u8>>,
    fresh: bool,
}

pub struct LodgeFs {
    pub registry: Arc<Registry>,
    handles: Mutex<HashMap<u64, Handle>>,
    next_handle: AtomicU64,
}

impl LodgeFs {
    pub fn new(registry: Arc<Registry>) -> LodgeFs {
        LodgeFs {
            registry,
            handles: Mutex::default(),
            // Handles of files opened before a restart may still be in use: new ones start
            // far from them (seconds since the epoch, shifted up).
            next_handle: AtomicU64::new(
                std::time::SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(1, |d| d.as_secs() << 24),
            ),
        }
    }

    /// The current content of a file inode.
    fn render(&self, ino: u64) -> Option<Vec<u8>> {
        let (slot, node) = registry::decode(ino)?;
        let c = self.registry.get(slot)?;
        let file = registry::nodes().get(node)?.file?;
        c.render(file).map(String::into_bytes)
    }

    pub fn attr(&self, ino: u64) -> Option<Attr> {
        if ino == ROOT_INO {
            // Host users have no business with containers' views; containers reach their files
            // through their bind mounts, never through this directory.
            return Some(Attr {
                ino,
                dir: true,
                perm: 0o700,
                uid: 0,
                gid: 0,
            });
        }
        let (slot, node) = registry::decode(ino)?;
        let c = self.registry.get(slot)?;
        let n = registry::nodes().get(node)?;
        let (dir, perm) = match n.file {
            Some(f) => (f.is_dir(), f.mode as u16),
            None => (true, 0o555),
        };
        Some(Attr {
            ino,
            dir,
            perm,
            uid: c.owner.0,
            gid: c.owner.1,
        })
    }

    pub fn lookup(&self, parent: u64, name: &[u8]) -> Result<Attr, Errno> {
        let name = std::str::from_utf8(name).map_err(|_| Errno::ENOENT)?;
        let ino = if parent == ROOT_INO {
            self.registry.slot_of(name).map(|s| registry::ino(s, 0))
        } else {
            registry::decode(parent).and_then(|(slot, node)| {
                registry::nodes()
                    .iter()
                    .enumerate()
                    .skip(1)
                    .find(|(_, n)| n.parent == node && n.name == name)
                    .map(|(i, _)| registry::ino(slot, i))
            })
        };
        // A container's directory entry is invalidated when it registers or goes away.
        ino.and_then(|i| self.attr(i)).ok_or(Errno::ENOENT)
    }

    pub fn getattr(&self, ino: u64) -> Result<Attr, Errno> {
        self.attr(ino).ok_or(Errno::ENOENT)
    }

    /// Renders the file and returns the handle serving that snapshot.
    pub fn open(&self, ino: u64, flags: i32) -> Result<u64, Errno> {
        let (slot, node) = registry::decode(ino).ok_or(Errno::EISDIR)?;
        let (Some(c), Some(file)) = (
            self.registry.get(slot),
            registry::nodes().get(node).and_then(|n| n.file),
        ) else {
            return Err(Errno::ENOENT);
        };
        let writing = flags & libc::O_ACCMODE != libc::O_RDONLY;
        if writing && matches!(file.write, WritePolicy::ReadOnly) {
            return Err(Errno::EACCES);
        }
        let content = c.render(file).ok_or(Errno::EISDIR)?;
        let fh = self.next_handle.fetch_add(1, Ordering::Relaxed);
        self.handles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                fh,
                Handle {
                    content: Arc::new(content.into_bytes()),
                    fresh: true,
                },
            );
        Ok(fh)
    }

    /// The content a read of `size` at `offset` returns: the snapshot and the range of it.
    pub fn read(
        &self,
        ino: u64,
        fh: u64,
        offset: u64,
        size: u32,
    ) -> Result<(Arc<Vec<u8>>, std::ops::Range<usize>), Errno> {
        let known = {
            let mut handles = self.handles.lock().unwrap_or_else(|e| e.into_inner());
            handles.get_mut(&fh).map(|h| {
                // `top` keeps /proc/stat open and rereads it from the start.
                let reread = offset == 0 && !h.fresh;
                h.fresh = false;
                (h.content.clone(), reread)
            })
        };
        // Rendered outside the lock: other readers go on meanwhile.
        let content = match known {
            Some((content, false)) => content,
            Some((old, true)) => match self.render(ino) {
                Some(new) => self.keep(fh, new, false),
                None => old,
            },
            // Opened before lodge-fs restarted: its snapshot is gone, so this read starts a
            // new one (as a read at offset 0 would).
            None => {
                let new = self.render(ino).ok_or(Errno::EBADF)?;
                self.keep(fh, new, true)
            }
        };
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(content.len());
        let end = start.saturating_add(size as usize).min(content.len());
        Ok((content, start..end))
    }

    /// Makes `content` the snapshot of handle `fh` (a handle released meanwhile stays released,
    /// unless `insert`).
    fn keep(&self, fh: u64, content: Vec<u8>, insert: bool) -> Arc<Vec<u8>> {
        let content = Arc::new(content);
        let mut handles = self.handles.lock().unwrap_or_else(|e| e.into_inner());
        match handles.get_mut(&fh) {
            Some(h) => h.content = content.clone(),
            None if insert => {
                handles.insert(
                    fh,
                    Handle {
                        content: content.clone(),
                        fresh: false,
                    },
                );
            }
            None => {}
        }
        content
    }

    /// Writes a knob; returns the bytes taken.
    pub fn write(&self, ino: u64, data: &[u8]) -> Result<u32, Errno> {
        let (slot, node) = registry::decode(ino).ok_or(Errno::EACCES)?;
        let (Some(c), Some(file)) = (
            self.registry.get(slot),
            registry::nodes().get(node).and_then(|n| n.file),
        ) else {
            return Err(Errno::ENOENT);
        };
        let text = std::str::from_utf8(data).map_err(|_| Errno::EINVAL)?;
        c.write(file, text).map_err(Errno::from_i32)?;
        self.registry.changed();
        Ok(data.len() as u32)
    }

    /// Only truncation (`echo value > knob` opens with O_TRUNC) is accepted, and changes
    /// nothing: a knob's value is replaced whole by the next write. Ownership never changes.
    pub fn setattr(&self, ino: u64, changes_owner: bool) -> Result<Attr, Errno> {
        if changes_owner {
            return Err(Errno::EPERM);
        }
        self.getattr(ino)
    }

    pub fn release(&self, fh: u64) {
        self.handles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&fh);
    }

    /// A directory's entries, "." and ".." first; an entry's offset is its index + 1.
    pub fn readdir(&self, ino: u64) -> Result<Vec<DirEntry>, Errno> {
        let mut entries: Vec<DirEntry> =
            vec![(ino, true, ".".into()), (ROOT_INO, true, "..".into())];
        if ino == ROOT_INO {
            for (slot, c) in self.registry.all() {
                entries.push((registry::ino(slot, 0), true, c.id.clone()));
            }
            return Ok(entries);
        }
        let (slot, node) = registry::decode(ino).ok_or(Errno::ENOENT)?;
        if self.registry.get(slot).is_none() {
            return Err(Errno::ENOENT);
        }
        for (i, n) in registry::nodes().iter().enumerate().skip(1) {
            if n.parent == node {
                let dir = n.file.is_none_or(|f| f.is_dir());
                entries.push((registry::ino(slot, i), dir, n.name.clone()));
            }
        }
        Ok(entries)
    }
}

/// Serves `LodgeFs` over `/dev/fuse` through fuser. When `io_uring` is set, INIT also asks
/// for FUSE over io_uring; whether the kernel agreed is kept in `uring_granted`.
pub struct FuserFs {
    pub fs: Arc<LodgeFs>,
    pub io_uring: bool,
    pub uring_granted: Arc<std::sync::atomic::AtomicBool>,
}

impl Filesystem for FuserFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_write(MAX_TRANSFER);
        let _ = config.set_max_readahead(MAX_TRANSFER);
        if self.io_uring
            && config
                .add_capabilities(InitFlags::FUSE_OVER_IO_URING)
                .is_ok()
        {
            self.uring_granted.store(true, Ordering::Release);
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.fs.lookup(parent.0, name.as_encoded_bytes()) {
            Ok(attr) => reply.entry(&TTL, &attr.to_fuser(), Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.fs.getattr(ino.0) {
            Ok(attr) => reply.attr(&TTL, &attr.to_fuser()),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.fs.open(ino.0, flags.0) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.fs.read(ino.0, fh.0, offset, size) {
            Ok((content, range)) => reply.data(&content[range]),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        data: &[u8],
        _write_flags: fuser::WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: fuser::ReplyWrite,
    ) {
        match self.fs.write(ino.0, data) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<fuser::TimeOrNow>,
        _mtime: Option<fuser::TimeOrNow>,
        _ctime: Option<std::time::SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<std::time::SystemTime>,
        _chgtime: Option<std::time::SystemTime>,
        _bkuptime: Option<std::time::SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        match self.fs.setattr(ino.0, uid.is_some() || gid.is_some()) {
            Ok(attr) => reply.attr(&TTL, &attr.to_fuser()),
            Err(e) => reply.error(e),
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: fuser::ReplyEmpty,
    ) {
        self.fs.release(fh.0);
        reply.ok();
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let entries = match self.fs.readdir(ino.0) {
            Ok(entries) => entries,
            Err(e) => return reply.error(e),
        };
        for (i, (ino, dir, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            let kind = if dir {
                FileType::Directory
            } else {
                FileType::RegularFile
            };
            if reply.add(INodeNo(ino), (i + 1) as u64, kind, name) {
                break;
            }
        }
        reply.ok();
    }
}

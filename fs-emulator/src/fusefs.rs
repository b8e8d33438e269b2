//! The FUSE side: lookups, attributes, directory listings and reads over the registry. A file's
//! content is rendered once at open and served from that snapshot (consistent reads, and a
//! container deleted while a file is open does not disturb the reader).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEntry, ReplyOpen, Request,
};

use crate::files::WritePolicy;
use crate::registry::{self, Registry, ROOT_INO};

/// Entries and attributes never change for a registered container; a removed one's inodes are
/// never reused.
const TTL: Duration = Duration::from_secs(60);

/// The size files report (see `make_attr`).
const MAX_FILE: u64 = 1 << 20;

/// An open file: its content, and whether nobody has read it yet (a read at offset 0 after the
/// first one renders the file again: `top` keeps /proc/stat open and rereads it from the start).
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
            next_handle: AtomicU64::new(1),
        }
    }

    /// The current content of a file inode.
    fn render(&self, ino: u64) -> Option<Vec<u8>> {
        let (slot, node) = registry::decode(ino)?;
        let c = self.registry.get(slot)?;
        let file = registry::nodes().get(node)?.file?;
        c.render(file).map(String::into_bytes)
    }

    fn attr(&self, ino: u64) -> Option<FileAttr> {
        if ino == ROOT_INO {
            // Host users have no business with containers' views; containers reach their files
            // through their bind mounts, never through this directory.
            return Some(make_attr(ino, FileType::Directory, 0o700, (0, 0)));
        }
        let (slot, node) = registry::decode(ino)?;
        let c = self.registry.get(slot)?;
        let n = registry::nodes().get(node)?;
        Some(match n.file {
            Some(f) if f.is_dir() => make_attr(ino, FileType::Directory, f.mode as u16, c.owner),
            Some(f) => make_attr(ino, FileType::RegularFile, f.mode as u16, c.owner),
            None => make_attr(ino, FileType::Directory, 0o555, c.owner),
        })
    }
}

fn make_attr(ino: u64, kind: FileType, perm: u16, (uid, gid): (u32, u32)) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino),
        // The size is unknown until the content is rendered at open. Files report an upper
        // bound: with 0, readers that splice (busybox cat uses sendfile) see an empty file;
        // reads are direct, so a reader gets exactly the content and then EOF.
        size: if kind == FileType::RegularFile {
            MAX_FILE
        } else {
            0
        },
        blocks: 0,
        atime: UNIX_EPOCH,
        mtime: UNIX_EPOCH,
        ctime: UNIX_EPOCH,
        crtime: UNIX_EPOCH,
        kind,
        perm,
        nlink: if kind == FileType::Directory { 2 } else { 1 },
        uid,
        gid,
        rdev: 0,
        flags: 0,
        blksize: 4096,
    }
}

impl Filesystem for LodgeFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let parent = u64::from(parent);
        let Some(name) = name.to_str() else {
            return reply.error(Errno::ENOENT);
        };
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
        match ino.and_then(|i| self.attr(i)) {
            Some(attr) => reply.entry(&TTL, &attr, Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.attr(u64::from(ino)) {
            Some(attr) => reply.attr(&TTL, &attr),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let Some((slot, node)) = registry::decode(u64::from(ino)) else {
            return reply.error(Errno::EISDIR);
        };
        let (Some(c), Some(file)) = (
            self.registry.get(slot),
            registry::nodes().get(node).and_then(|n| n.file),
        ) else {
            return reply.error(Errno::ENOENT);
        };
        let writing = flags.0 & libc::O_ACCMODE != libc::O_RDONLY;
        if writing && matches!(file.write, WritePolicy::ReadOnly) {
            return reply.error(Errno::EACCES);
        }
        let Some(content) = c.render(file) else {
            return reply.error(Errno::EISDIR);
        };
        let content = Arc::new(content.into_bytes());
        let fh = self.next_handle.fetch_add(1, Ordering::Relaxed);
        self.handles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                fh,
                Handle {
                    content,
                    fresh: true,
                },
            );
        reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO);
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
        let (content, reread) = {
            let mut handles = self.handles.lock().unwrap_or_else(|e| e.into_inner());
            let Some(h) = handles.get_mut(&fh.0) else {
                return reply.error(Errno::EBADF);
            };
            let reread = offset == 0 && !h.fresh;
            h.fresh = false;
            (h.content.clone(), reread)
        };
        // Rendered outside the lock: other readers go on meanwhile.
        let content = match reread.then(|| self.render(u64::from(ino))).flatten() {
            Some(new) => {
                let new = Arc::new(new);
                if let Some(h) = self
                    .handles
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get_mut(&fh.0)
                {
                    h.content = new.clone();
                }
                new
            }
            None => content,
        };
        let start = (offset as usize).min(content.len());
        let end = (start + size as usize).min(content.len());
        reply.data(&content[start..end]);
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
        let Some((slot, node)) = registry::decode(u64::from(ino)) else {
            return reply.error(Errno::EACCES);
        };
        let (Some(c), Some(file)) = (
            self.registry.get(slot),
            registry::nodes().get(node).and_then(|n| n.file),
        ) else {
            return reply.error(Errno::ENOENT);
        };
        let Ok(text) = std::str::from_utf8(data) else {
            return reply.error(Errno::EINVAL);
        };
        match c.write(file, text) {
            Ok(()) => reply.written(data.len() as u32),
            Err(errno) => reply.error(Errno::from_i32(errno)),
        }
    }

    /// Only truncation (`echo value > knob` opens with O_TRUNC) is accepted, and changes
    /// nothing: a knob's value is replaced whole by the next write.
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
        if uid.is_some() || gid.is_some() {
            return reply.error(Errno::EPERM);
        }
        match self.attr(u64::from(ino)) {
            Some(attr) => reply.attr(&TTL, &attr),
            None => reply.error(Errno::ENOENT),
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
        self.handles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&fh.0);
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
        let ino = u64::from(ino);
        let mut entries: Vec<(u64, FileType, String)> = vec![
            (ino, FileType::Directory, ".".into()),
            (ROOT_INO, FileType::Directory, "..".into()),
        ];
        if ino == ROOT_INO {
            for (slot, c) in self.registry.all() {
                entries.push((registry::ino(slot, 0), FileType::Directory, c.id.clone()));
            }
        } else {
            let Some((slot, node)) = registry::decode(ino) else {
                return reply.error(Errno::ENOENT);
            };
            if self.registry.get(slot).is_none() {
                return reply.error(Errno::ENOENT);
            }
            for (i, n) in registry::nodes().iter().enumerate().skip(1) {
                if n.parent == node {
                    let kind = match n.file {
                        Some(f) if !f.is_dir() => FileType::RegularFile,
                        _ => FileType::Directory,
                    };
                    entries.push((registry::ino(slot, i), kind, n.name.clone()));
                }
            }
        }
        for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(ino), (i + 1) as u64, kind, name) {
                break;
            }
        }
        reply.ok();
    }
}

//! FUSE over io_uring (kernel ≥ 6.14, `fuse.enable_uring`): the kernel keeps one request queue
//! per CPU and hands a request to the queue of the CPU that made it. lodge-fs runs one thread
//! per queue, pinned to that CPU, so a reader's request is answered on its own CPU: no wake-up
//! of a thread on another CPU, which is most of a `/dev/fuse` round trip's cost.
//!
//! Each queue thread owns an io_uring with 128-byte entries and keeps `DEPTH` FUSE ring entries
//! registered: a header area and a payload buffer the kernel fills with a request. The thread
//! answers in place and hands the entry back with COMMIT_AND_FETCH, which also waits for the
//! next request. INIT, FORGET, INTERRUPT and notifications still travel over `/dev/fuse`
//! (fuser serves those).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};

use io_uring::{cqueue, opcode, squeue, types, IoUring};

use crate::cgroup::{allowed_cpus, host_online_cpus, parse_cpu_list, pin};
use crate::fuse_wire;
use crate::fusefs::{LodgeFs, MAX_TRANSFER};

/// Ring entries per queue: a queue's thread answers them one after another, so more only
/// helps when several requests arrive on one CPU at once.
const DEPTH: usize = 4;

/// `enum fuse_uring_cmd` (uapi fuse.h).
const CMD_REGISTER: u32 = 1;
const CMD_COMMIT_AND_FETCH: u32 = 2;

#[derive(Debug, thiserror::Error)]
pub enum UringError {
    #[error("FUSE over io_uring is off in this kernel ({0})")]
    Unavailable(String),
    #[error("the kernel did not grant FUSE over io_uring at INIT")]
    NotGranted,
    #[error("setting up the io_uring of queue {qid}: {source}")]
    Setup { qid: usize, source: io::Error },
    #[error("registering queue {qid} with FUSE: {source}")]
    Register { qid: usize, source: io::Error },
}

const ENABLE_PARAM: &str = "/sys/module/fuse/parameters/enable_uring";

/// Makes sure the kernel lets FUSE servers ask for io_uring: turns on `fuse.enable_uring` when
/// it is off. The parameter only allows servers to opt in; other FUSE filesystems are unchanged.
pub fn enable_in_kernel() -> Result<(), UringError> {
    let current = std::fs::read_to_string(ENABLE_PARAM).map_err(|e| {
        UringError::Unavailable(format!("{ENABLE_PARAM}: {e} (kernel older than 6.14?)"))
    })?;
    if current.trim() == "Y" {
        return Ok(());
    }
    std::fs::write(ENABLE_PARAM, "Y")
        .map_err(|e| UringError::Unavailable(format!("turning on {ENABLE_PARAM}: {e}")))?;
    tracing::info!(
        parameter = ENABLE_PARAM,
        "turned on FUSE over io_uring in the kernel"
    );
    Ok(())
}

/// What `lodge-fs status` reports about the transport.
#[derive(Default)]
pub struct UringStats {
    pub queues: usize,
    pub requests: AtomicU64,
}

/// The queues to serve, one group per thread: each online CPU's queue on its own thread, and
/// the queues of CPUs that are possible but offline together on one more (the kernel makes a
/// queue for every possible CPU and starts using the ring only once each has an entry).
fn queue_groups() -> Vec<(String, Vec<usize>)> {
    // Queue ids count possible CPUs (num_possible_cpus()).
    let possible = std::fs::read_to_string("/sys/devices/system/cpu/possible")
        .map_or(0, |s| parse_cpu_list(s.trim()).len())
        .max(1);
    let online: Vec<usize> = host_online_cpus().into_iter().map(|c| c as usize).collect();
    let mut groups: Vec<(String, Vec<usize>)> = online
        .iter()
        .filter(|&&c| c < possible)
        .map(|&c| (c.to_string(), vec![c]))
        .collect();
    let rest: Vec<usize> = (0..possible).filter(|c| !online.contains(c)).collect();
    if !rest.is_empty() {
        groups.push(("offline".into(), rest));
    }
    groups
}

/// Starts one thread per queue and registers every queue's entries. Returns once the kernel
/// has taken them all (from then on every request but FORGET and INTERRUPT comes this way), or
/// with the first error (requests then keep coming over `/dev/fuse`).
pub fn start(fs: Arc<LodgeFs>, fuse: BorrowedFd) -> Result<Arc<UringStats>, UringError> {
    let fuse = fuse
        .try_clone_to_owned()
        .map_err(|source| UringError::Setup { qid: 0, source })?;
    let groups = queue_groups();
    let stats = Arc::new(UringStats {
        queues: groups.iter().map(|(_, q)| q.len()).sum(),
        requests: AtomicU64::new(0),
    });
    let fuse = Arc::new(fuse);
    let (ready_tx, ready_rx) = mpsc::channel();
    for (name, qids) in &groups {
        let (fs, fuse, stats, ready) = (fs.clone(), fuse.clone(), stats.clone(), ready_tx.clone());
        let qids = qids.clone();
        let first = qids[0];
        std::thread::Builder::new()
            .name(format!("fuse-ring-{name}"))
            .stack_size(256 * 1024)
            .spawn(move || {
                let queue = match Ring::new(&qids, &fuse) {
                    Ok(q) => q,
                    Err(e) => {
                        let _ = ready.send(Err(e));
                        return;
                    }
                };
                let _ = ready.send(Ok(()));
                drop(ready);
                if let Err(e) = queue.serve(&fs, &stats) {
                    tracing::warn!(queues = ?qids, error = %e, "FUSE io_uring queue stopped");
                }
            })
            .map_err(|source| UringError::Setup { qid: first, source })?;
    }
    drop(ready_tx);
    for _ in 0..groups.len() {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(UringError::Setup {
                    qid: 0,
                    source: io::Error::other("a queue thread ended"),
                })
            }
        }
    }
    Ok(stats)
}

/// `struct fuse_uring_req_header`: the request's fuse_in_header (and, on the way back, the
/// fuse_out_header), the operation's fixed argument, and the entry's bookkeeping.
#[repr(C, align(8))]
struct Header {
    in_out: [u8; 128],
    op_in: [u8; 128],
    /// `struct fuse_uring_ent_in_out`: flags, commit_id, payload_sz, padding, reserved.
    flags: u64,
    commit_id: u64,
    payload_sz: u32,
    padding: u32,
    reserved: u64,
}

struct Entry {
    qid: u16,
    /// The command in flight for this entry.
    last_cmd: u32,
    header: Box<Header>,
    payload: Box<[u8]>,
    /// The two buffers as the kernel reads them at registration.
    iov: Box<[libc::iovec; 2]>,
}

/// One thread's io_uring and the FUSE ring entries it keeps registered.
struct Ring {
    fuse: i32,
    ring: IoUring<squeue::Entry128, cqueue::Entry>,
    entries: Vec<Entry>,
    /// Completions (entry, result) not handled yet.
    pending: Vec<(usize, i32)>,
}

// The raw pointers in `iov` point into the entry's own boxes, which move with it.
unsafe impl Send for Entry {}

impl Ring {
    /// Registers entries for `qids`: `DEPTH` for a CPU's own queue (the thread is pinned to
    /// it), one each for the queues of offline CPUs.
    fn new(qids: &[usize], fuse: &Arc<OwnedFd>) -> Result<Ring, UringError> {
        let qid = qids[0];
        let depth = if qids.len() == 1 {
            pin_to_cpu(qid);
            DEPTH
        } else {
            1
        };
        let total = depth * qids.len();
        let ring = IoUring::<squeue::Entry128, cqueue::Entry>::builder()
            .build((total * 2).next_power_of_two() as u32)
            .map_err(|source| UringError::Setup { qid, source })?;
        // The kernel takes no buffer smaller than the largest request it may send.
        let payload_size = (MAX_TRANSFER as usize).max(8192);
        let mut entries: Vec<Entry> = qids
            .iter()
            .flat_map(|&q| std::iter::repeat_n(q as u16, depth))
            .map(|qid| Entry {
                qid,
                last_cmd: CMD_REGISTER,
                header: Box::new(Header {
                    in_out: [0; 128],
                    op_in: [0; 128],
                    flags: 0,
                    commit_id: 0,
                    payload_sz: 0,
                    padding: 0,
                    reserved: 0,
                }),
                payload: vec![0u8; payload_size].into_boxed_slice(),
                iov: Box::new(
                    [libc::iovec {
                        iov_base: std::ptr::null_mut(),
                        iov_len: 0,
                    }; 2],
                ),
            })
            .collect();
        for e in &mut entries {
            e.iov[0] = libc::iovec {
                iov_base: (&mut *e.header as *mut Header).cast(),
                iov_len: std::mem::size_of::<Header>(),
            };
            e.iov[1] = libc::iovec {
                iov_base: e.payload.as_mut_ptr().cast(),
                iov_len: e.payload.len(),
            };
        }
        let mut queue = Ring {
            fuse: fuse.as_raw_fd(),
            ring,
            entries,
            pending: vec![],
        };
        for i in 0..total {
            let sqe = queue.command(i, CMD_REGISTER, 0);
            queue.push(sqe);
        }
        queue
            .ring
            .submit()
            .map_err(|source| UringError::Register { qid, source })?;
        // A refused registration completes at once; an accepted one only when a request comes
        // (which may already have happened: those are answered first thing in `serve`).
        let early: Vec<(usize, i32)> = queue
            .ring
            .completion()
            .map(|c| (c.user_data() as usize, c.result()))
            .collect();
        if let Some(&(i, res)) = early.iter().find(|(_, res)| *res < 0) {
            return Err(UringError::Register {
                qid: queue.entries.get(i).map_or(qid, |e| e.qid as usize),
                source: io::Error::from_raw_os_error(-res),
            });
        }
        queue.pending = early;
        Ok(queue)
    }

    /// A FUSE ring command for entry `i`: REGISTER hands the kernel its two buffers,
    /// COMMIT_AND_FETCH returns an answered request and waits for the next one.
    fn command(&mut self, i: usize, cmd_op: u32, commit_id: u64) -> squeue::Entry128 {
        self.entries[i].last_cmd = cmd_op;
        // `struct fuse_uring_cmd_req`: flags, commit_id, qid.
        let mut cmd = [0u8; 80];
        cmd[8..16].copy_from_slice(&commit_id.to_ne_bytes());
        cmd[16..18].copy_from_slice(&self.entries[i].qid.to_ne_bytes());
        let mut op = opcode::UringCmd80::new(types::Fd(self.fuse), cmd_op).cmd(cmd);
        if cmd_op == CMD_REGISTER {
            op = op.addr(Some(self.entries[i].iov.as_ptr() as u64));
        }
        let sqe = op.build().user_data(i as u64);
        if cmd_op != CMD_REGISTER {
            return sqe;
        }
        // REGISTER also needs sqe->len = 2 (the iovec count), which the builder has no field
        // for: set it in the entry's bytes (struct io_uring_sqe: len is the u32 at offset 24).
        const _: () = assert!(std::mem::size_of::<squeue::Entry128>() == 128);
        let mut bytes: [u8; 128] = unsafe { std::mem::transmute(sqe) };
        bytes[24..28].copy_from_slice(&2u32.to_ne_bytes());
        unsafe { std::mem::transmute::<[u8; 128], squeue::Entry128>(bytes) }
    }

    fn push(&mut self, sqe: squeue::Entry128) {
        // Never full: each entry has at most one command in flight, and the ring has room for
        // twice as many.
        let _ = unsafe { self.ring.submission().push(&sqe) };
    }

    fn serve(mut self, fs: &LodgeFs, stats: &UringStats) -> io::Result<()> {
        loop {
            let mut done = std::mem::take(&mut self.pending);
            for (i, res) in done.drain(..) {
                if !self.complete(i, res, fs, stats)? {
                    return Ok(());
                }
            }
            self.pending = done;
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) => return Err(e),
            }
            let ring = &mut self.ring;
            self.pending.extend(
                ring.completion()
                    .map(|c| (c.user_data() as usize, c.result())),
            );
        }
    }

    /// Handles one completion: answers the request the kernel put in entry `i` and hands the
    /// entry back. False once the filesystem is gone.
    fn complete(
        &mut self,
        i: usize,
        res: i32,
        fs: &LodgeFs,
        stats: &UringStats,
    ) -> io::Result<bool> {
        if i >= self.entries.len() {
            return Ok(true);
        }
        if res == -libc::EAGAIN || res == -libc::EINTR {
            let sqe = self.command(i, CMD_REGISTER, 0);
            self.push(sqe);
            return Ok(true);
        }
        if res < 0 {
            let errno = -res;
            if matches!(
                errno,
                libc::ENOTCONN | libc::ENODEV | libc::ECANCELED | libc::ECONNABORTED
            ) {
                // The filesystem was unmounted or aborted.
                return Ok(false);
            }
            let qid = self.entries[i].qid;
            if self.entries[i].last_cmd == CMD_COMMIT_AND_FETCH {
                // The kernel did not take the answer (it drops the entry then): hand it the
                // buffers again, so the queue keeps its depth.
                tracing::warn!(
                    qid,
                    errno,
                    "FUSE io_uring commit refused; registering the entry again"
                );
                let sqe = self.command(i, CMD_REGISTER, 0);
                self.push(sqe);
            } else {
                tracing::warn!(
                    qid,
                    errno,
                    "FUSE io_uring entry refused; the queue goes on without it"
                );
            }
            return Ok(true);
        }
        let entry = &mut self.entries[i];
        let h = &mut *entry.header;
        let in_len = (h.payload_sz as usize).min(entry.payload.len());
        let reply = fuse_wire::answer(fs, &h.in_out[..40], &h.op_in, &mut entry.payload, in_len);
        reply.write_header(&mut h.in_out[..16]);
        h.payload_sz = reply.len as u32;
        stats.requests.fetch_add(1, Ordering::Relaxed);
        let commit_id = entry.header.commit_id;
        let sqe = self.command(i, CMD_COMMIT_AND_FETCH, commit_id);
        self.push(sqe);
        Ok(true)
    }
}

/// Keeps the calling thread on `cpu`, if lodge-fs may run there (otherwise its queue's thread
/// runs wherever it is allowed).
fn pin_to_cpu(cpu: usize) {
    let cpu = cpu as u32;
    if allowed_cpus().contains(&cpu) {
        pin(0, cpu);
    }
}

/// Makes a request from every online CPU (a lookup of a name that is never there). A queue
/// hands requests that arrived while it had no entries to an entry only once one of its
/// entries is answered; after a takeover (`restart.rs`) this starts every queue going.
pub fn nudge_queues(mountpoint: &std::path::Path) {
    for cpu in host_online_cpus() {
        let probe = mountpoint.join(".lodge-fs-nudge");
        std::thread::spawn(move || {
            pin_to_cpu(cpu as usize);
            let _ = std::fs::symlink_metadata(probe);
        });
    }
}

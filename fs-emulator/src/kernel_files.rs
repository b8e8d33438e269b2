//! The kernel files renders read (procfs, sysfs, cgroupfs), kept open and read again from
//! offset 0 with pread. Opening /sys/fs/cgroup/memory/… by path walks kernfs one component at a
//! time, and those walks were most of a render's cost; a pread at offset 0 makes the kernel
//! produce the file afresh (seq_file and sysfs start over there), so nothing is stale.
//!
//! Each thread reading a file gets its own open file (up to `LANES`): a read of procfs or
//! cgroupfs holds the open file's seq_file lock while the kernel formats it, so one shared fd
//! would make renders on different CPUs wait for each other.
//!
//! A file that is gone (a removed cgroup answers ENODEV) is opened again once; a path that does
//! not open is retried after a second (a container registers before its cgroup exists).

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

enum Entry {
    Open(Arc<File>),
    Missing(Instant),
}

/// Open files by path, one per lane (looked up by `&Path`: no allocation on a hit).
static FILES: LazyLock<Mutex<HashMap<PathBuf, [Option<Entry>; LANES]>>> =
    LazyLock::new(Mutex::default);

/// Threads share a lane only beyond this many.
const LANES: usize = 8;

fn lane() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static LANE: usize = NEXT.fetch_add(1, Ordering::Relaxed) % LANES;
    }
    LANE.with(|l| *l)
}

const RETRY_MISSING: Duration = Duration::from_secs(1);

fn handle(path: &Path, fresh: bool) -> Option<Arc<File>> {
    let lane = lane();
    let mut files = FILES.lock().unwrap_or_else(|e| e.into_inner());
    match files.get(path).and_then(|lanes| lanes[lane].as_ref()) {
        Some(Entry::Open(f)) if !fresh => return Some(f.clone()),
        Some(Entry::Missing(at)) if !fresh && at.elapsed() < RETRY_MISSING => return None,
        _ => {}
    }
    let opened = File::open(path).ok().map(Arc::new);
    let entry = match &opened {
        Some(f) => Entry::Open(f.clone()),
        None => Entry::Missing(Instant::now()),
    };
    files
        .entry(path.to_path_buf())
        .or_insert_with(|| std::array::from_fn(|_| None))[lane] = Some(entry);
    opened
}

fn read_from_start(f: &File) -> std::io::Result<String> {
    let mut out = Vec::with_capacity(4096);
    let mut buf = [0u8; 16384]; // (on the stack: no allocation per read)
    loop {
        let n = f.read_at(&mut buf, out.len() as u64)?;
        out.extend_from_slice(&buf[..n]);
        // procfs, sysfs and cgroupfs fill a read as far as the file goes: a short read is the
        // end (one syscall per file instead of two).
        if n < buf.len() {
            return Ok(String::from_utf8(out)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()));
        }
    }
}

/// The file's current content.
pub fn read(path: &Path) -> Option<String> {
    let f = handle(path, false)?;
    match read_from_start(&f) {
        Ok(s) => Some(s),
        Err(_) => read_from_start(&*handle(path, true)?).ok(),
    }
}

/// The file's content as read at most `max_age` ago: for host files that are costly to produce
/// and change little (the kernel formats /proc/cpuinfo for every CPU on every read; only its
/// "cpu MHz" lines move).
pub fn read_recent(path: &Path, max_age: Duration) -> Option<String> {
    static RECENT: LazyLock<Mutex<HashMap<PathBuf, (Instant, String)>>> =
        LazyLock::new(Mutex::default);
    if let Some((at, text)) = RECENT.lock().unwrap_or_else(|e| e.into_inner()).get(path) {
        if at.elapsed() < max_age {
            return Some(text.clone());
        }
    }
    let text = read(path)?;
    RECENT
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(path.to_path_buf(), (Instant::now(), text.clone()));
    Some(text)
}

/// Whether the file exists (opens).
pub fn exists(path: &Path) -> bool {
    handle(path, false).is_some()
}

/// Closes what is kept open below `dir` (a container's cgroup, at unregister).
pub fn forget_below(dir: &Path) {
    FILES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|p, _| !p.starts_with(dir));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rereads_from_the_start_and_notices_removal() {
        let dir = std::env::temp_dir().join(format!("lodge-kf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("value");
        assert!(read(&f).is_none());
        std::fs::write(&f, "1\n").unwrap();
        // Missing paths are retried only after a while.
        assert!(read(&f).is_none());
        forget_below(&dir);
        assert_eq!(read(&f).as_deref(), Some("1\n"));
        std::fs::write(&f, "22\n").unwrap();
        assert_eq!(read(&f).as_deref(), Some("22\n"));
        forget_below(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

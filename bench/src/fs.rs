//! `lodge-bench --fs`: reads per second of emulated /proc files through lodge-fs, LXCFS and the
//! kernel itself, with 1 and 2 threads, in one run; and lodge-fs's RSS idle and with 100
//! registered containers. Each reader opens, reads to the end and closes, as `cat` does.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lodge_ipc::fs::{Request, Response};

use super::rss_kib;

const FILES: &[&str] = &["meminfo", "cpuinfo", "stat", "uptime", "loadavg"];
const WINDOW: Duration = Duration::from_millis(700);

struct Daemon {
    child: Child,
    mountpoint: PathBuf,
    /// How to stop it for good first (lodge-fs hands registered containers over on SIGTERM).
    stop: Option<Command>,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(stop) = &mut self.stop {
            let _ = stop.stdout(Stdio::null()).status();
        }
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
        // Usually gone already: both daemons unmount on SIGTERM.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&self.mountpoint)
            .stderr(Stdio::null())
            .status();
    }
}

fn wait_until(what: &str, ok: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ok() {
        assert!(Instant::now() < deadline, "{what} did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The bench process's own cgroup directories, one per hierarchy (the "container").
fn own_cgroup_paths() -> Vec<PathBuf> {
    let mut out = vec![];
    for line in std::fs::read_to_string("/proc/self/cgroup")
        .unwrap_or_default()
        .lines()
    {
        let mut f = line.splitn(3, ':');
        let (Some(_), Some(ctrl), Some(path)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let dir = if ctrl.is_empty() {
            ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
                .iter()
                .map(PathBuf::from)
                .find(|p| p.join("cgroup.controllers").exists())
        } else {
            let name = ctrl.trim_start_matches("name=");
            Some(PathBuf::from("/sys/fs/cgroup").join(name))
        };
        if let Some(d) = dir {
            out.push(d.join(path.trim_start_matches('/')));
        }
    }
    out
}

/// How a reader reads.
#[derive(Clone, Copy)]
enum Mode {
    /// cat: open, read until EOF, close.
    Cat,
    /// top, free -s, vmstat: the file stays open and is read again from offset 0.
    Reread,
}

fn reads_per_second(path: &Path, threads: usize, mode: Mode) -> f64 {
    let counts: Vec<u64> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    // A fixed buffer, as cat and procps use (no size hint from stat).
                    let mut buf = vec![0u8; 128 * 1024];
                    let mut n = 0u64;
                    let kept = std::fs::File::open(path).expect("open");
                    let start = Instant::now();
                    while start.elapsed() < WINDOW {
                        match mode {
                            Mode::Cat => {
                                let mut f = std::fs::File::open(path).expect("open");
                                while f.read(&mut buf).expect("read") > 0 {}
                            }
                            Mode::Reread => {
                                use std::os::unix::fs::FileExt;
                                kept.read_at(&mut buf, 0).expect("read");
                            }
                        }
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    counts.iter().sum::<u64>() as f64 / WINDOW.as_secs_f64()
}

fn register(socket: &Path, id: &str, paths: &[PathBuf]) {
    let r: Response = lodge_ipc::call(
        socket,
        &Request::Register {
            id: id.into(),
            cgroup_paths: paths.to_vec(),
            owner: (0, 0),
            created: 0.0,
        },
    )
    .expect("registering with lodge-fs");
    assert!(matches!(r, Response::Registered { .. }), "{r:?}");
}

pub fn fs_bench(lodge_fs: &Path, dev_fuse: bool) {
    let work = std::env::temp_dir().join(format!("lodge-bench-fs-{}", std::process::id()));
    let (ours, lxcfs_mnt) = (work.join("lodge-fs"), work.join("lxcfs"));
    std::fs::create_dir_all(&ours).unwrap();
    std::fs::create_dir_all(&lxcfs_mnt).unwrap();
    let socket = work.join("fs.sock");
    let lodge = Daemon {
        child: Command::new(lodge_fs)
            .arg("--socket")
            .arg(&socket)
            .arg("--mountpoint")
            .arg(&ours)
            .args(dev_fuse.then_some("--no-io-uring"))
            .stderr(Stdio::null())
            .spawn()
            .expect("lodge-fs"),
        mountpoint: ours.clone(),
        stop: Some({
            let mut stop = Command::new(lodge_fs);
            stop.arg("--socket").arg(&socket).arg("stop");
            stop
        }),
    };
    wait_until("lodge-fs", || socket.exists());
    std::thread::sleep(Duration::from_millis(200));
    let idle = rss_kib(lodge.child.id());
    if let Ok(Response::Status { transport, .. }) = lodge_ipc::call(&socket, &Request::Status) {
        println!("lodge-fs serves FUSE over {transport}");
    }
    let paths = own_cgroup_paths();
    register(&socket, "bench", &paths);
    let lxcfs = Command::new("lxcfs")
        .arg("-l")
        .arg(&lxcfs_mnt)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()
        .map(|child| Daemon {
            child,
            mountpoint: lxcfs_mnt.clone(),
            stop: None,
        });
    if lxcfs.is_some() {
        wait_until("lxcfs", || lxcfs_mnt.join("proc/meminfo").exists());
    } else {
        println!("lxcfs: not installed, skipped (apt-get install lxcfs)");
    }
    for (mode, what) in [
        (Mode::Cat, "open, read to the end, close (cat)"),
        (
            Mode::Reread,
            "one open file read again from offset 0 (top, free -s, vmstat)",
        ),
    ] {
        println!(
            "\nreads/s, {what}, over {} ms windows, kernel {}",
            WINDOW.as_millis(),
            std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
        );
        println!(
            "{:<10} {:>7} {:>12} {:>12} {:>12} {:>14}",
            "file", "threads", "lodge-fs", "lxcfs", "kernel", "lodge-fs/lxcfs"
        );
        for file in FILES {
            for threads in [1, 2] {
                let l = reads_per_second(&ours.join("bench/proc").join(file), threads, mode);
                let x = lxcfs
                    .as_ref()
                    .map(|_| reads_per_second(&lxcfs_mnt.join("proc").join(file), threads, mode));
                let k = reads_per_second(&Path::new("/proc").join(file), threads, mode);
                let ratio = x.map_or("-".to_string(), |x| format!("{:.2}", l / x));
                println!(
                    "{file:<10} {threads:>7} {l:>12.0} {:>12} {k:>12.0} {ratio:>14}",
                    x.map_or("-".to_string(), |x| format!("{x:.0}"))
                );
            }
        }
    }
    for i in 0..100 {
        register(&socket, &format!("bench-{i}"), &paths);
    }
    std::thread::sleep(Duration::from_millis(200));
    let loaded = rss_kib(lodge.child.id());
    println!(
        "\nlodge-fs RSS: idle {idle} KiB, with 101 containers {loaded} KiB ({:.1} KiB per container)",
        loaded.saturating_sub(idle) as f64 / 101.0
    );
    drop(lxcfs);
    drop(lodge);
    let _ = std::fs::remove_dir_all(&work);
}

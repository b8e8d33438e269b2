//! lodge-bench: create → start → wait for exit → delete of the same busybox bundle with
//! lodge-runc, crun and runc interleaved in one run, plain and with a user namespace; prints
//! medians and lodge-runc's ratio to each peer.
//!
//! Usage: lodge-bench [--iterations N] [--lodge-runc PATH]
//!
//! On a hybrid cgroup host whose unified hierarchy holds a controller, crun refuses to run at
//! all. The benchmark then re-executes itself in a private mount namespace with the unified
//! mount removed, so every runtime sees the same plain v1 layout.

use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const NS_MARK: &str = "LODGE_BENCH_PRIVATE_NS";

mod fs;
mod syscalls;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mut iterations = 30usize;
    let mut lodge = default_lodge();
    let mut i = 1;
    while i < args.len() {
        match args[i].as_str() {
            "--iterations" => {
                iterations = args
                    .get(i + 1)
                    .and_then(|s| s.parse().ok())
                    .expect("--iterations N");
                i += 1;
            }
            "--lodge-runc" => {
                lodge = PathBuf::from(args.get(i + 1).expect("--lodge-runc PATH"));
                i += 1;
            }
            "--mgr" => {
                mgr_bench(&lodge.with_file_name("lodge-mgr"));
                return;
            }
            "--fs" => {
                // `--fs --no-io-uring`: lodge-fs over /dev/fuse, the transport of kernels < 6.14.
                let dev_fuse = args.get(i + 1).is_some_and(|a| a == "--no-io-uring");
                fs::fs_bench(&lodge.with_file_name("lodge-fs"), dev_fuse);
                return;
            }
            "--syscalls" => {
                syscalls::syscalls_bench(&lodge);
                return;
            }
            "--in-container" => {
                syscalls::in_container();
                return;
            }
            "--help" | "-h" => {
                println!(
                    "usage: lodge-bench [--iterations N] [--lodge-runc PATH] | --mgr | --fs [--no-io-uring] | --syscalls"
                );
                return;
            }
            other => panic!("unknown argument {other}"),
        }
        i += 1;
    }
    reexec_in_private_cgroup_view(&args);

    let work = std::env::temp_dir().join(format!("lodge-bench-{}", std::process::id()));
    let plain = make_bundle(&work.join("plain"), &lodge, false);
    let userns = make_bundle(&work.join("userns"), &lodge, true);
    let mut runtimes: Vec<(&str, PathBuf)> = vec![("lodge-runc", lodge.clone())];
    for peer in ["crun", "runc"] {
        match which(peer) {
            Some(p) => runtimes.push((peer, p)),
            None => println!("{peer}: not installed, skipped (apt-get install {peer})"),
        }
    }
    println!(
        "create → start → wait → delete, busybox `true`, {iterations} interleaved iterations, kernel {}",
        std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim()
    );
    // lodge-runc's flags per scenario: plain OCI containers (`--no-syscont`) against the peers'
    // same bundle, then lodge-runc's default, a system container (user namespace, ID-mapped
    // rootfs, cgroup namespace, the full rewrite), against the peers with a plain user namespace.
    let scenarios: [(&str, &PathBuf, &[&str]); 3] = [
        ("plain", &plain, &["--no-syscont"]),
        ("userns", &userns, &["--no-syscont"]),
        ("system container vs peers' userns", &userns, &[]),
    ];
    for (label, bundle, lodge_flags) in scenarios {
        let mut times: Vec<Vec<Duration>> = vec![vec![]; runtimes.len()];
        // Per phase: create, start → exit, delete.
        let mut phases: Vec<[Vec<Duration>; 3]> = vec![Default::default(); runtimes.len()];
        let mut broken: Vec<Option<String>> = vec![None; runtimes.len()];
        for it in 0..iterations + 2 {
            // Each round starts with another runtime: a cgroup v1 migration waits for an RCU
            // grace period unless one just happened, which favours whoever runs second.
            for j in 0..runtimes.len() {
                let k = (j + it) % runtimes.len();
                let (name, bin) = &runtimes[k];
                if broken[k].is_some() {
                    continue;
                }
                let root = work.join(format!("root-{name}"));
                let flags: &[&str] = if k == 0 { lodge_flags } else { &[] };
                let id = format!("bench-{}-{it}", label.split(' ').next().unwrap_or(label));
                match cycle(bin, flags, &root, bundle, &id) {
                    // The first two rounds warm caches and are not counted.
                    Ok((d, p)) if it >= 2 => {
                        times[k].push(d);
                        for (i, x) in p.into_iter().enumerate() {
                            phases[k][i].push(x);
                        }
                    }
                    Ok(_) => {}
                    Err(e) => broken[k] = Some(e),
                }
            }
        }
        println!("\n[{label}]");
        let med: Vec<Option<Duration>> = times.iter().map(|t| median(t)).collect();
        for (k, (name, _)) in runtimes.iter().enumerate() {
            match (&broken[k], med[k]) {
                (Some(e), _) => println!("  {name:<11} failed: {e}"),
                (None, Some(m)) => {
                    let ms = |v: &[Duration]| median(v).map_or(0.0, |d| d.as_secs_f64() * 1e3);
                    println!(
                        "  {name:<11} median {:>7.2} ms  (create {:.2}, start → exit {:.2}, delete {:.2})",
                        m.as_secs_f64() * 1e3,
                        ms(&phases[k][0]),
                        ms(&phases[k][1]),
                        ms(&phases[k][2])
                    )
                }
                (None, None) => println!("  {name:<11} no samples"),
            }
        }
        if let Some(ours) = med[0] {
            for (k, (name, _)) in runtimes.iter().enumerate().skip(1) {
                if let (None, Some(m)) = (&broken[k], med[k]) {
                    println!(
                        "  ratio lodge-runc / {name}: {:.2}",
                        ours.as_secs_f64() / m.as_secs_f64()
                    );
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&work);
}

fn default_lodge() -> PathBuf {
    let here = std::env::current_exe().unwrap();
    let sibling = here.with_file_name("lodge-runc");
    if sibling.exists() {
        sibling
    } else {
        PathBuf::from("lodge-runc")
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
}

fn reexec_in_private_cgroup_view(args: &[String]) {
    let controllers =
        std::fs::read_to_string("/sys/fs/cgroup/unified/cgroup.controllers").unwrap_or_default();
    if std::env::var_os(NS_MARK).is_some() || controllers.trim().is_empty() {
        return;
    }
    println!("hybrid host with v2 controllers ({}): benchmarking in a private mount namespace without /sys/fs/cgroup/unified, for crun", controllers.trim());
    let status = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            "umount /sys/fs/cgroup/unified && exec \"$0\" \"$@\"",
        ])
        .args(args)
        .env(NS_MARK, "1")
        .status()
        .expect("unshare (util-linux)");
    std::process::exit(status.code().unwrap_or(1));
}

fn make_bundle(dir: &Path, lodge: &Path, userns: bool) -> PathBuf {
    let rootfs = dir.join("rootfs");
    for d in ["bin", "proc", "sys", "dev", "tmp"] {
        std::fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).expect("busybox-static installed");
    std::os::unix::fs::symlink("busybox", rootfs.join("bin/true")).unwrap();
    let st = Command::new(lodge)
        .arg("spec")
        .arg("--bundle")
        .arg(dir)
        .status()
        .unwrap();
    assert!(st.success());
    let mut c: Value =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    c["ociVersion"] = "1.0.2".into();
    c["process"]["terminal"] = false.into();
    c["process"]["args"] = json!(["true"]);
    if userns {
        c["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "user"}));
        let map = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
        c["linux"]["uidMappings"] = map.clone();
        c["linux"]["gidMappings"] = map;
    }
    std::fs::write(dir.join("config.json"), c.to_string()).unwrap();
    dir.to_path_buf()
}

/// Runs one command. stderr goes to a file, not a pipe: the container's init inherits it and
/// would keep a pipe open after `create` returns.
fn run(bin: &Path, flags: &[&str], root: &Path, args: &[&str]) -> Result<(), String> {
    let err_path = root.with_extension("stderr");
    let err_file = std::fs::File::create(&err_path).map_err(|e| e.to_string())?;
    let mut cmd = Command::new(bin);
    if bin.file_name().is_some_and(|n| n == "lodge-runc") {
        // The runtime alone: registration with lodge-mgr is measured by the manager's benchmark,
        // lodge-fs's files by its own.
        cmd.args(["--no-mgr", "--no-fs"]);
    }
    cmd.args(flags);
    let status = cmd
        .arg("--root")
        .arg(root)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err_file)
        .status()
        .map_err(|e| e.to_string())?;
    if status.success() {
        Ok(())
    } else {
        let err = std::fs::read_to_string(&err_path).unwrap_or_default();
        Err(format!("{} {}: {}", bin.display(), args[0], err.trim()))
    }
}

fn cycle(
    bin: &Path,
    flags: &[&str],
    root: &Path,
    bundle: &Path,
    id: &str,
) -> Result<(Duration, [Duration; 3]), String> {
    let pid_file = bundle.join(format!("{id}.pid"));
    let t = Instant::now();
    run(
        bin,
        flags,
        root,
        &[
            "create",
            "--bundle",
            bundle.to_str().unwrap(),
            "--pid-file",
            pid_file.to_str().unwrap(),
            id,
        ],
    )?;
    let created = t.elapsed();
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .map_err(|e| e.to_string())?
        .trim()
        .parse()
        .map_err(|_| "pid file")?;
    // SAFETY: pidfd_open returns a new fd we own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let pidfd = (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) });
    run(bin, flags, root, &["start", id])?;
    if let Some(pidfd) = &pidfd {
        let mut p = libc::pollfd {
            fd: std::os::fd::AsRawFd::as_raw_fd(pidfd),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut p, 1, 10_000) };
    }
    let exited = t.elapsed();
    run(bin, flags, root, &["delete", id])?;
    let d = t.elapsed();
    let _ = std::fs::remove_file(pid_file);
    Ok((d, [created, exited - created, d - exited]))
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmRSS:")
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// lodge-mgr: idle RSS, RSS with 100 registered containers, registration latency.
/// Targets: <= 8 MiB idle, <= 32 KiB per container, < 1 ms per registration.
fn mgr_bench(mgr: &Path) {
    use lodge_ipc::mgr::{Request, Response};
    let dir = std::env::temp_dir().join(format!("lodge-bench-mgr-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["subuid", "subgid"] {
        std::fs::write(dir.join(f), "").unwrap();
    }
    let socket = dir.join("mgr.sock");
    let mut child = Command::new(mgr)
        .arg("--socket")
        .arg(&socket)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--subuid")
        .arg(dir.join("subuid"))
        .arg("--subgid")
        .arg(dir.join("subgid"))
        .stderr(Stdio::null())
        .spawn()
        .expect("lodge-mgr built beside lodge-bench");
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(200));
    let idle = rss_kib(child.id());
    let mut lat = vec![];
    for i in 0..100 {
        let t = Instant::now();
        let mut s = std::os::unix::net::UnixStream::connect(&socket).unwrap();
        let req = Request::Register {
            id: format!("c{i}"),
            pid: 1,
            bundle: "/b".into(),
            rootfs: "/b/rootfs".into(),
            pod: None,
            namespaces: vec![],
        };
        lodge_ipc::write_frame(&mut s, &req).unwrap();
        let resp: Response = lodge_ipc::read_frame(&mut s).unwrap();
        lat.push(t.elapsed());
        assert!(matches!(resp, Response::Registered { .. }), "{resp:?}");
    }
    let loaded = rss_kib(child.id());
    let med = median(&lat).unwrap();
    println!("lodge-mgr idle RSS: {idle} KiB (target <= 8192)");
    println!(
        "lodge-mgr RSS with 100 containers: {loaded} KiB, {:.1} KiB per container (target <= 32)",
        (loaded.saturating_sub(idle)) as f64 / 100.0
    );
    println!("registration latency: median {:.3} ms (target < 1 ms; includes connect and an fsync'd state write)", med.as_secs_f64() * 1e3);
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

fn median(v: &[Duration]) -> Option<Duration> {
    let mut v = v.to_vec();
    v.sort();
    v.get(v.len() / 2).copied()
}

//! `lodge-bench --syscalls`: what syscall interception costs inside a system container, against
//! a plain container (no user namespace, CAP_SYS_ADMIN so it may mount) in the same run. Both
//! have the same seccomp profile, as every Docker container has one; the system container's also
//! traps the mount calls. Measured: an untrapped syscall (getpid), a trapped mount+umount pair that the agent lets
//! through (tmpfs), and one it performs itself (procfs with the container's emulation).
//!
//! The measuring program is this binary (`--in-container`), copied into a busybox rootfs with
//! the shared libraries it needs. The system container needs lodge-mgr and lodge-fs running.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use serde_json::{json, Value};

const ROUNDS: usize = 7;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Nanoseconds per call of `f`, median of ROUNDS rounds of `n` calls.
fn per_call(n: u32, mut f: impl FnMut()) -> f64 {
    median(
        (0..ROUNDS)
            .map(|_| {
                let t = Instant::now();
                for _ in 0..n {
                    f();
                }
                t.elapsed().as_nanos() as f64 / f64::from(n)
            })
            .collect(),
    )
}

fn mount_pair(fstype: &std::ffi::CStr, dir: &std::ffi::CStr) {
    // SAFETY: valid C strings; the mount is undone right away.
    unsafe {
        assert_eq!(
            libc::mount(
                c"bench".as_ptr(),
                dir.as_ptr(),
                fstype.as_ptr(),
                0,
                std::ptr::null()
            ),
            0,
            "mount {fstype:?}: {}",
            std::io::Error::last_os_error()
        );
        assert_eq!(libc::umount2(dir.as_ptr(), libc::MNT_DETACH), 0);
    }
}

/// The measuring side, run inside the container.
pub fn in_container() {
    std::fs::create_dir_all("/tmp/bench-mnt").unwrap();
    // SAFETY: a syscall without arguments (not glibc's wrapper, which might cache).
    let getpid = per_call(200_000, || unsafe {
        libc::syscall(libc::SYS_getpid);
    });
    let tmpfs = per_call(300, || mount_pair(c"tmpfs", c"/tmp/bench-mnt"));
    let proc = per_call(100, || mount_pair(c"proc", c"/tmp/bench-mnt"));
    println!("getpid_ns {getpid:.1}");
    println!("tmpfs_pair_us {:.1}", tmpfs / 1e3);
    println!("proc_pair_us {:.1}", proc / 1e3);
}

fn copy_with_libraries(binary: &Path, rootfs: &Path) {
    std::fs::copy(binary, rootfs.join("lodge-bench")).unwrap();
    let out = Command::new("ldd").arg(binary).output().expect("ldd");
    for word in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        if word.starts_with('/') {
            let dest = rootfs.join(word.trim_start_matches('/'));
            std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
            std::fs::copy(word, &dest).unwrap();
        }
    }
}

fn measure(lodge: &Path, flags: &[&str], bundle: &Path, id: &str) -> Result<Vec<f64>, String> {
    let out = Command::new(lodge)
        .args(flags)
        .arg("--root")
        .arg(bundle.join("state"))
        .args(["run", "--bundle"])
        .arg(bundle)
        .arg(id)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!("{text}{}", String::from_utf8_lossy(&out.stderr)));
    }
    ["getpid_ns", "tmpfs_pair_us", "proc_pair_us"]
        .iter()
        .map(|k| {
            text.lines()
                .find_map(|l| l.strip_prefix(k)?.trim().parse().ok())
                .ok_or_else(|| format!("{k} missing: {text}"))
        })
        .collect()
}

pub fn syscalls_bench(lodge: &Path) {
    for (daemon, what) in [
        ("lodge-mgr", "ID ranges"),
        ("lodge-fs", "the seccomp agent"),
    ] {
        let up = Command::new(lodge.with_file_name(daemon))
            .arg("status")
            .output()
            .is_ok_and(|o| o.status.success());
        if !up {
            println!("{daemon} is not running ({what}): start it, or run install/quickstart.sh");
            return;
        }
    }
    let dir = std::env::temp_dir().join(format!("lodge-bench-sys-{}", std::process::id()));
    let bundle = super::make_bundle(&dir, lodge, false);
    copy_with_libraries(&std::env::current_exe().unwrap(), &bundle.join("rootfs"));
    let mut c: Value =
        serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap();
    c["root"]["readonly"] = false.into();
    c["process"]["args"] = json!(["/lodge-bench", "--in-container"]);
    // The plain container may mount (it is host root); a system container's root has every
    // capability anyway.
    for set in ["bounding", "effective", "permitted"] {
        if let Some(caps) = c["process"]["capabilities"][set].as_array_mut() {
            caps.push("CAP_SYS_ADMIN".into());
        }
    }
    // The same base profile for both (a filter of its own costs every syscall a little, trap or
    // not): allow by default, refuse a few calls as Docker's does.
    c["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["kexec_load", "open_by_handle_at", "bpf", "perf_event_open"],
                      "action": "SCMP_ACT_ERRNO"}],
    });
    std::fs::write(bundle.join("config.json"), c.to_string()).unwrap();
    println!(
        "syscalls inside a container: median of {ROUNDS} rounds, kernel {}",
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
    );
    let plain = measure(
        lodge,
        &["--no-syscont", "--no-fs", "--no-mgr"],
        &bundle,
        "bench-plain",
    );
    let system = measure(lodge, &[], &bundle, "bench-system");
    match (plain, system) {
        (Ok(p), Ok(s)) => {
            for (i, (name, unit)) in [
                ("getpid (untrapped)", "ns"),
                ("tmpfs mount + umount (trapped, let through)", "µs"),
                ("procfs mount + umount (trapped, built by lodge-fs)", "µs"),
            ]
            .iter()
            .enumerate()
            {
                println!(
                    "  {name:<52} plain {:>8.1} {unit}  system {:>8.1} {unit}  ratio {:.2}",
                    p[i],
                    s[i],
                    s[i] / p[i]
                );
            }
        }
        (p, s) => println!("  failed: plain {:?}, system {:?}", p.err(), s.err()),
    }
    let _ = Command::new(lodge)
        .args(["--root"])
        .arg(bundle.join("state"))
        .args(["delete", "--force", "bench-system"])
        .output();
    let _ = std::fs::remove_dir_all(&dir);
}

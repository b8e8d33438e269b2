//! lodge-fs: a system container's /proc and /sys files computed from its own cgroup, through
//! lodge-runc and the suite's lodge-fs (tests/run.sh starts one).

use std::io::Read;
use std::path::Path;

use lodge_tests::{field, unique_id, Bundle, PrivateFs, Runtime};

const MOUNT: &str = "/var/lib/lodge-fs";

fn limited(args: &[&str], memory_mib: u64) -> Bundle {
    let mut b = Bundle::new(args);
    b.edit(|c| {
        c["linux"]["resources"] = serde_json::json!({
            "memory": {"limit": memory_mib << 20},
            "cpu": {"cpus": "0", "quota": 150000, "period": 100000}
        })
    });
    b
}

#[test]
fn proc_and_sys_files_follow_the_containers_cgroup() {
    let rt = Runtime::system();
    let b = limited(
        &[
            "sh",
            "-c",
            "echo mem $(head -1 /proc/meminfo); echo cpuinfo $(grep -c ^processor /proc/cpuinfo); \
             echo online $(cat /sys/devices/system/cpu/online); echo stat $(grep -c '^cpu[0-9]' /proc/stat); \
             echo uptime $(cut -d' ' -f1 /proc/uptime); echo nproc $(nproc); echo swaps $(wc -l < /proc/swaps); \
             echo load $(cut -d' ' -f4 /proc/loadavg); echo owner $(stat -c %u /proc/meminfo); \
             echo security $(ls -A /sys/kernel/security | wc -l) $(stat -c %u /sys/kernel/security); \
             echo x > /proc/uptime 2>/dev/null && echo written || echo write-refused",
        ],
        256,
    );
    let (code, out, err) = rt.run_clean(&b);
    assert_eq!(code, 0, "{err}");
    assert_eq!(field(&out, "mem"), "MemTotal: 262144 kB");
    assert_eq!(field(&out, "cpuinfo"), "1");
    assert_eq!(field(&out, "online"), "0");
    assert_eq!(field(&out, "stat"), "1");
    let uptime: f64 = field(&out, "uptime").parse().unwrap();
    assert!(
        (0.0..30.0).contains(&uptime),
        "the container's age: {uptime}"
    );
    assert_eq!(field(&out, "nproc"), "1");
    assert_eq!(field(&out, "swaps"), "1", "swap off: the header only");
    let load: Vec<&str> = field(&out, "load").split('/').collect();
    assert!(
        load[1].parse::<u32>().unwrap() >= 2,
        "the container's tasks (sh, cut): {out}"
    );
    assert_eq!(field(&out, "owner"), "0", "the container's root owns them");
    assert_eq!(
        field(&out, "security"),
        "0 0",
        "the host's LSM interface is an empty directory of the container's root"
    );
    assert!(out.contains("write-refused"), "{out}");
}

#[test]
fn two_containers_see_their_own_memory() {
    let rt = Runtime::system();
    let (a, b) = (
        limited(&["sleep", "100"], 128),
        limited(&["sleep", "100"], 384),
    );
    let (ia, ib) = (unique_id("fsa"), unique_id("fsb"));
    rt.ok(&["run", "-d", "--bundle", a.path(), &ia]);
    rt.ok(&["run", "-d", "--bundle", b.path(), &ib]);
    let mem = |id: &str| rt.ok(&["exec", id, "head", "-1", "/proc/meminfo"]);
    assert!(mem(&ia).contains("131072 kB"), "{}", mem(&ia));
    assert!(mem(&ib).contains("393216 kB"), "{}", mem(&ib));
    for (id, bundle) in [(&ia, &a), (&ib, &b)] {
        rt.ok(&["delete", "--force", id]);
        rt.assert_no_residue(id, bundle);
        assert!(
            !Path::new(MOUNT).join(id).exists(),
            "{id} unregistered from lodge-fs"
        );
    }
}

#[test]
fn readers_outlive_a_deleted_container_and_strangers_get_nothing() {
    let rt = Runtime::system();
    let b = limited(&["sleep", "100"], 200);
    let id = unique_id("fsopen");
    rt.ok(&["run", "-d", "--bundle", b.path(), &id]);
    let path = Path::new(MOUNT).join(&id).join("proc/meminfo");
    let mut open = std::fs::File::open(&path).unwrap();
    // Read again from the start of the same open file (as top rereads /proc/stat): rendered
    // anew, so uptime moves on.
    let mut first = String::new();
    let mut uptime = std::fs::File::open(Path::new(MOUNT).join(&id).join("proc/uptime")).unwrap();
    uptime.read_to_string(&mut first).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    std::io::Seek::seek(&mut uptime, std::io::SeekFrom::Start(0)).unwrap();
    let mut second = String::new();
    uptime.read_to_string(&mut second).unwrap();
    let secs = |s: &str| s.split_whitespace().next().unwrap().parse::<f64>().unwrap();
    assert!(secs(&second) >= secs(&first) + 1.0, "{first} then {second}");
    rt.ok(&["delete", "--force", &id]);
    let mut content = String::new();
    open.read_to_string(&mut content).unwrap();
    assert!(
        content.starts_with("MemTotal:         204800 kB"),
        "an open file keeps its snapshot: {content}"
    );
    assert!(
        std::fs::File::open(&path).is_err(),
        "gone once unregistered"
    );
    assert!(std::fs::File::open(Path::new(MOUNT).join("no-such-container/proc/meminfo")).is_err());
    // Host users other than root cannot browse the containers' views.
    let nobody = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "ls",
            MOUNT,
        ])
        .output()
        .unwrap();
    assert!(!nobody.status.success(), "a host user listed {MOUNT}");
    rt.assert_no_residue(&id, &b);
}

#[test]
fn concurrent_readers_in_twenty_containers() {
    let rt = Runtime::system();
    let mut running = vec![];
    for i in 0..20u64 {
        let b = limited(&["sleep", "100"], 64 + i);
        let id = unique_id("fsmany");
        rt.ok(&["run", "-d", "--bundle", b.path(), &id]);
        running.push((id, b, 64 + i));
    }
    std::thread::scope(|s| {
        for (id, _, mib) in &running {
            let rt = &rt;
            s.spawn(move || {
                for _ in 0..5 {
                    let out = rt.ok(&["exec", id, "sh", "-c", "head -1 /proc/meminfo; cat /proc/uptime /proc/loadavg /proc/stat /proc/cpuinfo > /dev/null"]);
                    assert!(out.contains(&format!("{} kB", mib * 1024)), "{id}: {out}");
                }
            });
        }
    });
    for (id, b, _) in &running {
        rt.ok(&["delete", "--force", id]);
        rt.assert_no_residue(id, b);
    }
}

#[test]
fn create_fails_clearly_without_lodge_fs() {
    let rt = Runtime::system();
    let b = Bundle::new(&["true"]);
    let id = unique_id("nofs");
    let err = rt.fails(&[
        "--fs-socket",
        "/run/lodge/no-such-fs.sock",
        "create",
        "--bundle",
        b.path(),
        &id,
    ]);
    assert!(
        err.contains("lodge-fs is not reachable") && err.contains("--no-fs"),
        "{err}"
    );
    rt.assert_no_residue(&id, &b);
    // --no-fs runs it with the host's files.
    let out = rt.ok(&["--no-fs", "run", "--bundle", b.path(), &id]);
    assert_eq!(out, "");
    rt.assert_no_residue(&id, &b);
}

#[test]
fn proc_sys_knobs_are_per_container_and_namespaced_ones_reach_the_kernel() {
    let rt = Runtime::system();
    let host = |p: &str| {
        std::fs::read_to_string(Path::new("/proc/sys").join(p))
            .unwrap()
            .trim()
            .to_string()
    };
    let (pid_max, file_max, forward) = (
        host("kernel/pid_max"),
        host("fs/file-max"),
        host("net/ipv4/ip_forward"),
    );
    let (a, b) = (
        limited(&["sleep", "100"], 128),
        limited(&["sleep", "100"], 128),
    );
    let (ia, ib) = (unique_id("ksa"), unique_id("ksb"));
    rt.ok(&["run", "-d", "--bundle", a.path(), &ia]);
    rt.ok(&["run", "-d", "--bundle", b.path(), &ib]);
    let sh = |id: &str, script: &str| {
        let out = rt.run(&["exec", id, "sh", "-c", script]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let smaller = file_max.parse::<u64>().unwrap() / 2;
    // A new network namespace starts from the host's value: write the other one.
    let flipped = if forward == "1" { "0" } else { "1" };
    let out = sh(
        &ia,
        &format!(
            "echo 12345 > /proc/sys/kernel/pid_max; echo pid_max $(cat /proc/sys/kernel/pid_max); \
             echo 99999999 > /proc/sys/kernel/pid_max 2>/dev/null && echo range-accepted; \
             echo {smaller} > /proc/sys/fs/file-max; echo file_max $(cat /proc/sys/fs/file-max); \
             echo {flipped} > /proc/sys/net/ipv4/ip_forward; echo forward $(cat /proc/sys/net/ipv4/ip_forward); \
             echo x > /proc/sys/kernel/core_pattern 2>/dev/null && echo core-written; echo done"
        ),
    );
    assert_eq!(field(&out, "pid_max"), "12345", "{out}");
    assert!(
        !out.contains("range-accepted"),
        "pid_max is 1..4194304: {out}"
    );
    assert_eq!(field(&out, "file_max"), smaller.to_string(), "{out}");
    assert_eq!(
        field(&out, "forward"),
        flipped,
        "its own network namespace: {out}"
    );
    assert!(!out.contains("core-written"), "a host-only knob: {out}");
    // The other container, and the host, keep their own.
    let other = sh(&ib, "echo pid_max $(cat /proc/sys/kernel/pid_max); echo forward $(cat /proc/sys/net/ipv4/ip_forward)");
    assert_eq!(field(&other, "pid_max"), pid_max, "{other}");
    assert_eq!(field(&other, "forward"), forward, "{other}");
    assert_eq!(host("kernel/pid_max"), pid_max);
    assert_eq!(
        host("fs/file-max"),
        file_max,
        "smaller: the host is not lowered"
    );
    assert_eq!(host("net/ipv4/ip_forward"), forward);
    // A larger value raises the host's (kube-proxy's nf_conntrack_max); put back afterwards.
    let conntrack = "net/netfilter/nf_conntrack_max";
    if Path::new("/proc/sys").join(conntrack).exists() {
        let before = host(conntrack);
        let larger = before.parse::<u64>().unwrap() + 1024;
        let out = sh(
            &ia,
            &format!("echo {larger} > /proc/sys/{conntrack}; echo ct $(cat /proc/sys/{conntrack})"),
        );
        let raised = host(conntrack);
        let other = sh(&ib, &format!("echo ct $(cat /proc/sys/{conntrack})"));
        std::fs::write(Path::new("/proc/sys").join(conntrack), &before).unwrap();
        assert_eq!(field(&out, "ct"), larger.to_string(), "{out}");
        assert_eq!(raised, larger.to_string(), "raised on the host");
        assert_eq!(
            field(&other, "ct"),
            larger.to_string(),
            "the other container reads the host's, now larger: {other}"
        );
    }
    for (id, bundle) in [(&ia, &a), (&ib, &b)] {
        rt.ok(&["delete", "--force", id]);
        rt.assert_no_residue(id, bundle);
    }
}

/// The CPUs a thread of `pid` may run on, by thread name.
fn thread_cpus(pid: u32) -> Vec<(String, String)> {
    let mut threads = vec![];
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let status = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
        let get = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .unwrap_or_default()
                .trim()
                .to_string()
        };
        threads.push((get("Name:"), get("Cpus_allowed_list:")));
    }
    threads
}

#[test]
fn requests_are_answered_over_io_uring_on_the_readers_cpu_or_over_dev_fuse() {
    // FUSE over io_uring needs a kernel built with it (6.14+) and the fuse module's
    // enable_uring parameter on, which lodge-fs turns on itself where /sys lets it: once a
    // lodge-fs has started, the parameter says whether the kernel allows io_uring here.
    let rt = Runtime::system();
    let param = Path::new("/sys/module/fuse/parameters/enable_uring");
    for (args, io_uring) in [(vec![], true), (vec!["--no-io-uring"], false)] {
        // Off first, to see lodge-fs turn it on (other lodge-fs instances are unaffected: the
        // parameter only counts when a connection starts).
        let writable = std::fs::write(param, "N").is_ok();
        let fs = PrivateFs::start(&args);
        let allowed = std::fs::read_to_string(param).is_ok_and(|v| v.trim() == "Y");
        if io_uring && writable {
            assert!(allowed, "lodge-fs did not turn on {}", param.display());
        }
        let want = if io_uring && allowed {
            "io_uring"
        } else {
            "dev_fuse"
        };
        let status = fs.status().unwrap();
        assert_eq!(status["transport"], want, "{args:?}: {status}");
        let before = status["uring_requests"].as_u64().unwrap();
        let b = limited(&["sleep", "100"], 192);
        let id = unique_id("ring");
        let socket = fs.socket();
        fs.run_detached(&rt, &b, &id);
        let out = rt.ok(&[
            "exec",
            &id,
            "sh",
            "-c",
            "for i in 1 2 3 4 5 6 7 8 9 10; do echo mem $(head -1 /proc/meminfo); done | sort -u; \
             echo cpus $(grep -c ^processor /proc/cpuinfo); echo knob $(cat /proc/sys/kernel/pid_max); \
             ls /sys/kernel/security | wc -l",
        ]);
        let after = fs.status().unwrap()["uring_requests"].as_u64().unwrap();
        rt.ok(&["--fs-socket", &socket, "delete", "--force", &id]);
        rt.assert_no_residue(&id, &b);
        assert!(
            out.starts_with("mem MemTotal: 196608 kB\ncpus"),
            "{args:?}: {out}"
        );
        assert_eq!(field(&out, "cpus"), "1", "{out}");
        assert!(field(&out, "knob").parse::<u64>().is_ok(), "{out}");
        if want == "io_uring" {
            // Ten opens and reads of meminfo at least, all through the rings.
            assert!(after >= before + 20, "{before} -> {after}");
            // One queue thread per online CPU, each pinned to its CPU (offline CPUs' queues
            // share one more).
            let online = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap();
            let rings: Vec<_> = thread_cpus(fs.child.id())
                .into_iter()
                .filter_map(|(name, cpus)| {
                    let cpu: u32 = name.strip_prefix("fuse-ring-")?.parse().ok()?;
                    Some((cpu, cpus))
                })
                .collect();
            assert_eq!(
                rings.len(),
                online
                    .trim()
                    .split(',')
                    .map(|r| {
                        let (lo, hi) = r.split_once('-').unwrap_or((r, r));
                        hi.parse::<usize>().unwrap() - lo.parse::<usize>().unwrap() + 1
                    })
                    .sum::<usize>(),
                "{rings:?}"
            );
            for (cpu, cpus) in &rings {
                assert_eq!(cpu.to_string(), *cpus, "{rings:?}");
            }
        } else {
            assert_eq!(after, 0);
        }
    }
    // As any lodge-fs leaves it.
    let _ = std::fs::write(param, "Y");
}

#[test]
fn containers_keep_their_files_and_traps_across_a_lodge_fs_restart() {
    // Over io_uring queues, and over /dev/fuse (which the new lodge-fs reads with its own loop).
    for args in [&[][..], &["--no-io-uring"][..]] {
        survives_a_restart(args);
    }
}

fn survives_a_restart(args: &[&str]) {
    let mut fs = PrivateFs::start(args);
    let rt = Runtime::system();
    let mut b = limited(&["sleep", "1000"], 160);
    b.edit(|c| c["root"]["readonly"] = false.into());
    let id = unique_id("restart");
    let socket = fs.socket();
    fs.run_detached(&rt, &b, &id);
    rt.sh(&id, "echo 7 > /proc/sys/kernel/panic");
    // A process that reads while no lodge-fs runs: lodge-fs is killed (a crash) meanwhile.
    rt.ok(&[
        "exec",
        "-d",
        &id,
        "sh",
        "-c",
        "sleep 1; head -1 /proc/meminfo > /tmp/during; date +%s > /tmp/when",
    ]);
    fs.signal(libc::SIGKILL);
    // Meanwhile a new process cannot join (the agent must take its listener), and says why.
    let err = rt.fails(&["exec", &id, "true"]);
    assert!(
        err.contains("fs-seccomp.sock") && err.contains("lodge-fs"),
        "{err}"
    );
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let restarted_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    fs.start_again();
    let status = fs.status().unwrap();
    assert_eq!(status["resumed"], true, "{status}");
    assert_eq!(status["containers"], 1, "{status}");
    let check = "for i in $(seq 50); do [ -s /tmp/when ] && break; sleep 0.1; done; \
                 echo during $(cat /tmp/during); echo when $(cat /tmp/when); \
                 echo knob $(cat /proc/sys/kernel/panic); echo mem $(head -1 /proc/meminfo); \
                 mkdir -p /mnt/p && mount -t proc proc /mnt/p && echo inner $(head -1 /mnt/p/meminfo); \
                 umount /mnt/p; umount /proc/uptime; echo unmask $?";
    let out = rt.sh(&id, check);
    assert_eq!(field(&out, "during"), "MemTotal: 163840 kB", "{out}");
    let when: u64 = field(&out, "when").parse().unwrap();
    assert!(
        when >= restarted_at,
        "the read waited for the new lodge-fs: {when} < {restarted_at}"
    );
    assert_eq!(
        field(&out, "knob"),
        "7",
        "the container's knob value: {out}"
    );
    assert_eq!(field(&out, "mem"), "MemTotal: 163840 kB", "{out}");
    // Only the seccomp agent, with the listener it took over, builds a procfs like this.
    assert_eq!(field(&out, "inner"), "MemTotal: 163840 kB", "{out}");
    assert_ne!(field(&out, "unmask"), "0", "{out}");
    // Stopped by its supervisor (SIGTERM) with a container registered: handed over too.
    fs.signal(libc::SIGTERM);
    fs.start_again();
    assert_eq!(fs.status().unwrap()["resumed"], true);
    let out = rt.sh(
        &id,
        "echo mem $(head -1 /proc/meminfo); echo knob $(cat /proc/sys/kernel/panic)",
    );
    assert_eq!(field(&out, "mem"), "MemTotal: 163840 kB", "{out}");
    assert_eq!(field(&out, "knob"), "7", "{out}");
    rt.ok(&["--fs-socket", &socket, "delete", "--force", &id]);
    rt.assert_no_residue(&id, &b);
    // With nothing registered, SIGTERM stops for good: the next one starts afresh.
    fs.signal(libc::SIGTERM);
    fs.start_again();
    assert_eq!(fs.status().unwrap()["resumed"], false);
}

#[test]
fn a_second_lodge_fs_on_the_same_socket_is_refused() {
    let fs = PrivateFs::start(&[]);
    let out = std::process::Command::new(lodge_tests::lodge_fs_bin())
        .arg("--socket")
        .arg(&fs.socket)
        .arg("--mountpoint")
        .arg(fs.dir.join("mnt"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("already running"), "{err}");
    // The first one is undisturbed.
    assert_eq!(fs.status().unwrap()["resumed"], false);
    assert!(std::fs::read_dir(fs.dir.join("mnt")).is_ok());
}

#[test]
fn a_restart_long_after_the_mount_takes_over_without_waiting_on_it() {
    // The mount's root attributes are cached for a minute (fusefs::TTL); past that, anything that
    // touches the mountpoint before the takeover waits on a connection nobody serves yet.
    let mut fs = PrivateFs::start(&["--no-io-uring"]);
    let rt = Runtime::system();
    let b = limited(&["sleep", "1000"], 96);
    let id = unique_id("late-restart");
    fs.run_detached(&rt, &b, &id);
    std::thread::sleep(std::time::Duration::from_secs(62));
    fs.signal(libc::SIGTERM);
    // wait_ready gives it 10 s: a lodge-fs stuck on its own mountpoint never answers.
    fs.start_again();
    assert_eq!(fs.status().unwrap()["resumed"], true);
    let out = rt.sh(&id, "head -1 /proc/meminfo");
    assert!(out.contains("98304 kB"), "{out}");
    rt.ok(&["--fs-socket", &fs.socket(), "delete", "--force", &id]);
    rt.assert_no_residue(&id, &b);
}

#[test]
fn ready_is_notified_to_systemd_once_the_socket_answers() {
    // `Type=notify`: `systemctl restart lodge-fs` returns only then.
    let dir = std::path::Path::new(lodge_tests::WORK).join(unique_id("fs-notify"));
    std::fs::create_dir_all(dir.join("mnt")).unwrap();
    let notify = std::os::unix::net::UnixDatagram::bind(dir.join("notify.sock")).unwrap();
    notify
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let socket = dir.join("fs.sock");
    let mut child = std::process::Command::new(lodge_tests::lodge_fs_bin())
        .env("NOTIFY_SOCKET", dir.join("notify.sock"))
        .arg("--socket")
        .arg(&socket)
        .arg("--mountpoint")
        .arg(dir.join("mnt"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 64];
    let got = notify.recv(&mut buf);
    let status = std::process::Command::new(lodge_tests::lodge_fs_bin())
        .arg("--socket")
        .arg(&socket)
        .arg("status")
        .output()
        .unwrap();
    let stop = std::process::Command::new(lodge_tests::lodge_fs_bin())
        .arg("--socket")
        .arg(&socket)
        .arg("stop")
        .output()
        .unwrap();
    let _ = child.wait();
    let n = got.expect("READY=1 within 10 s");
    assert_eq!(&buf[..n], b"READY=1");
    assert!(status.status.success(), "serving once it said ready");
    assert!(stop.status.success());
    if std::fs::remove_dir(dir.join("mnt")).is_ok() {
        let _ = std::fs::remove_dir_all(&dir);
    }
}

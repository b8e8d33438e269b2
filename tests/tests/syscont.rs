//! System-container mode, lodge-runc's default: the spec rewrite, file ownership (ID-mapped rootfs,
//! overlay rootfs on ID-mapped layers, ID-mapped bind mounts), cgroup delegation, the seccomp
//! additions, the light mode and the refusals. Runs against the suite's lodge-mgr.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use lodge_tests::{field, remove_tree, unique_id, Bundle, Runtime, WORK};

fn writable(args: &[&str]) -> Bundle {
    let mut b = Bundle::new(args);
    b.edit(|c| c["root"]["readonly"] = false.into());
    b
}

fn full_caps() -> String {
    let last: u32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    format!("{:016x}", (1u64 << (last + 1)) - 1)
}

#[test]
fn a_container_is_a_system_container_by_default() {
    let rt = Runtime::system();
    let b = writable(&["sleep", "100"]);
    let id = unique_id("sys");
    rt.ok(&["run", "-d", "--bundle", b.path(), &id]);
    let show = "echo uidmap $(cat /proc/self/uid_map); grep CapEff /proc/self/status; \
                echo cgroup $(grep -c -e ':/$' -e '/init.scope$' /proc/self/cgroup) of $(wc -l < /proc/self/cgroup); \
                echo owner $(stat -c %u:%g / /bin/busybox); echo kmsg $(stat -c %t:%T /dev/kmsg)";
    let out = rt.ok(&["exec", &id, "sh", "-c", show]);
    let map: Vec<&str> = field(&out, "uidmap").split(' ').collect();
    assert_eq!(map[0], "0");
    let start: u32 = map[1].parse().unwrap();
    assert!(start >= 65536, "an exclusive range from lodge-mgr: {out}");
    assert_eq!(map[2], "65536");
    assert_eq!(
        field(&out, "CapEff:"),
        full_caps(),
        "exec as root: every capability"
    );
    let cg: Vec<&str> = field(&out, "cgroup").split(" of ").collect();
    assert_eq!(cg[0], cg[1], "exec runs in the delegated cgroups: {out}");
    assert_eq!(field(&out, "owner"), "0:0 0:0", "the rootfs is ID-mapped");
    assert_eq!(field(&out, "kmsg"), "1:3", "/dev/kmsg is /dev/null");
    assert_eq!(
        std::fs::metadata(b.rootfs().join("bin/busybox"))
            .unwrap()
            .uid(),
        0,
        "no chown on disk"
    );
    // Non-root users get no capabilities, whatever the engine asked for.
    let out = rt.ok(&[
        "exec",
        "--user",
        "1000:1000",
        "--cap",
        "CAP_NET_ADMIN",
        &id,
        "grep",
        "CapEff",
        "/proc/self/status",
    ]);
    assert_eq!(field(&out, "CapEff:"), "0000000000000000");
    rt.ok(&["delete", "--force", &id]);
    rt.assert_no_residue(&id, &b);
}

#[test]
fn light_mode_adds_only_user_and_cgroup_namespaces() {
    let rt = Runtime::system();
    let mut b = writable(&[
        "sh",
        "-c",
        "echo uidmap $(cat /proc/self/uid_map); grep CapEff /proc/self/status; \
         echo owner $(stat -c %u /bin/busybox); test -e /dev/kmsg && echo kmsg || echo nokmsg; \
         echo env $(env | grep -c LODGE_)",
    ]);
    b.edit(|c| {
        c["process"]["env"]
            .as_array_mut()
            .unwrap()
            .push("LODGE_SYSCONT_MODE=FALSE".into())
    });
    let (code, out, err) = rt.run_clean(&b);
    assert_eq!(code, 0, "{err}");
    assert_ne!(field(&out, "uidmap").split(' ').nth(1), Some("0"));
    assert_ne!(
        field(&out, "CapEff:"),
        full_caps(),
        "the spec's capabilities"
    );
    assert_eq!(field(&out, "owner"), "0");
    assert!(out.contains("nokmsg"), "no other rewrite: {out}");
    assert_eq!(field(&out, "env"), "0", "knobs never reach the process");
}

fn with_userns(c: &mut serde_json::Value) {
    c["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"type": "user"}));
}

#[test]
fn host_namespaces_and_bad_mappings_are_refused() {
    let rt = Runtime::system();
    type Edit = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: Vec<(&str, Edit)> = vec![
        (
            "own network namespace",
            Box::new(|c| {
                for n in c["linux"]["namespaces"].as_array_mut().unwrap() {
                    if n["type"] == "network" {
                        n["path"] = "/proc/self/ns/net".into();
                    }
                }
            }),
        ),
        (
            "own ipc namespace",
            Box::new(|c| {
                c["linux"]["namespaces"]
                    .as_array_mut()
                    .unwrap()
                    .retain(|n| n["type"] != "ipc")
            }),
        ),
        (
            "at least 65536",
            Box::new(|c| {
                let m = serde_json::json!([{"containerID": 0, "hostID": 300000, "size": 1000}]);
                with_userns(c);
                c["linux"]["uidMappings"] = m.clone();
                c["linux"]["gidMappings"] = m;
            }),
        ),
        (
            "never map host root",
            Box::new(|c| {
                let m = serde_json::json!([{"containerID": 0, "hostID": 0, "size": 65536}]);
                with_userns(c);
                c["linux"]["uidMappings"] = m.clone();
                c["linux"]["gidMappings"] = m;
            }),
        ),
        (
            "must match",
            Box::new(|c| {
                with_userns(c);
                c["linux"]["uidMappings"] =
                    serde_json::json!([{"containerID": 0, "hostID": 300000, "size": 65536}]);
                c["linux"]["gidMappings"] =
                    serde_json::json!([{"containerID": 0, "hostID": 400000, "size": 65536}]);
            }),
        ),
    ];
    for (expect, edit) in cases {
        let mut b = Bundle::new(&["true"]);
        b.edit(|c| edit(c));
        let id = unique_id("refused");
        let err = rt.fails(&["create", "--bundle", b.path(), &id]);
        assert!(err.contains(expect), "{expect}: {err}");
        rt.assert_no_residue(&id, &b);
    }
}

#[test]
fn cgroups_are_delegated_and_limits_stay_out_of_reach() {
    let rt = Runtime::system();
    let mut b = writable(&["sleep", "100"]);
    b.edit(|c| c["linux"]["resources"] = serde_json::json!({"memory": {"limit": 64u64 << 20}}));
    let id = unique_id("deleg");
    rt.ok(&["run", "-d", "--bundle", b.path(), &id]);
    let (mem, v2) = lodge_tests::controller_dir("memory", &format!("/lodge/{id}"));
    let limit_file = if v2 {
        "memory.max"
    } else {
        "memory.limit_in_bytes"
    };
    let inside = if v2 {
        "/sys/fs/cgroup"
    } else {
        "/sys/fs/cgroup/memory"
    };
    // Sub-cgroups can be made (systemd, Docker inside); raising the limit gains nothing.
    let script = format!(
        "mkdir {inside}/inner && echo made; echo 0 > {inside}/inner/cgroup.procs && echo moved; \
         echo $((1<<30)) > {inside}/{limit_file} 2>/dev/null; echo $((1<<30)) > {inside}/inner/{limit_file}; \
         dd if=/dev/zero of=/dev/null bs=200M count=1 2>/dev/null; echo dd=$?"
    );
    let out = rt.run(&["exec", &id, "sh", "-c", &script]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("made") && stdout.contains("moved"),
        "{stdout}"
    );
    assert!(
        stdout.contains("dd=137"),
        "200 MB in a 64 MB container must be OOM-killed (SIGKILL): {stdout}"
    );
    assert_eq!(
        std::fs::read_to_string(mem.join(limit_file))
            .unwrap()
            .trim(),
        (64u64 << 20).to_string(),
        "the container's own limit is untouched"
    );
    let status = std::fs::read_to_string(format!(
        "/proc/{}/cgroup",
        rt.state(&id)["pid"].as_i64().unwrap()
    ))
    .unwrap();
    assert!(
        status.contains("/delegated") || status.contains("/init.scope"),
        "init runs in the delegated cgroup: {status}"
    );
    rt.ok(&["delete", "--force", &id]);
    rt.assert_no_residue(&id, &b);
}

#[test]
fn seccomp_lets_system_software_mount_and_unshare() {
    // A profile that denies mount and unshare: a system container allows them anyway (they act
    // on namespaces its user namespace owns); a plain container keeps the denial.
    let script = "mount -t tmpfs t /tmp && unshare -m true && echo allowed";
    for (rt, expect) in [(Runtime::system(), true), (Runtime::new(), false)] {
        let mut b = writable(&["sh", "-c", script]);
        b.edit(|c| {
            c["process"]["capabilities"]["bounding"]
                .as_array_mut()
                .unwrap()
                .push("CAP_SYS_ADMIN".into());
            c["process"]["capabilities"]["effective"]
                .as_array_mut()
                .unwrap()
                .push("CAP_SYS_ADMIN".into());
            c["process"]["capabilities"]["permitted"]
                .as_array_mut()
                .unwrap()
                .push("CAP_SYS_ADMIN".into());
            c["linux"]["seccomp"] = serde_json::json!({
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["mount", "unshare"], "action": "SCMP_ACT_ERRNO"}]
            });
        });
        let (_, out, err) = rt.run_clean(&b);
        assert_eq!(
            out.contains("allowed"),
            expect,
            "system={}: {out}{err}",
            rt.system
        );
    }
}

/// An overlay mounted by hand over the bundle's rootfs, as Docker's and containerd's
/// snapshotters hand one over.
struct Overlay {
    dir: std::path::PathBuf,
    merged: std::path::PathBuf,
}

impl Overlay {
    fn over(bundle: &Bundle) -> Overlay {
        let dir = Path::new(WORK).join(unique_id("overlay"));
        for d in ["lower", "upper", "work"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        let st = std::process::Command::new("cp")
            .arg("-a")
            .arg(format!("{}/.", lodge_tests::busybox_template().display()))
            .arg(dir.join("lower"))
            .status()
            .unwrap();
        assert!(st.success());
        let merged = bundle.rootfs();
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            dir.join("lower").display(),
            dir.join("upper").display(),
            dir.join("work").display()
        );
        nix::mount::mount(
            Some("overlay"),
            &merged,
            Some("overlay"),
            nix::mount::MsFlags::empty(),
            Some(opts.as_str()),
        )
        .expect("mounting an overlay");
        Overlay { dir, merged }
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.merged, nix::mount::MntFlags::MNT_DETACH);
        remove_tree(&self.dir);
    }
}

#[test]
fn an_overlay_rootfs_is_rebuilt_on_id_mapped_layers() {
    let rt = Runtime::system();
    let b = writable(&[
        "sh",
        "-c",
        "echo owner $(stat -c %u:%g / /bin/busybox); mkdir /etc/made && touch /etc/made/file && \
         echo wrote; sleep 100",
    ]);
    let ov = Overlay::over(&b);
    let id = unique_id("ovl");
    rt.ok(&["create", "--bundle", b.path(), &id]);
    rt.ok(&["start", &id]);
    let upper = ov.dir.join("upper");
    let mut written = None;
    for _ in 0..200 {
        if let Ok(md) = std::fs::metadata(upper.join("etc/made/file")) {
            written = Some(md);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let md = written.expect("the container's write reached the upper layer");
    let range_start = md.uid();
    assert!(
        range_start >= 65536,
        "what the container writes lands on disk in its range: {range_start}"
    );
    assert_eq!(
        std::fs::metadata(ov.dir.join("lower/bin/busybox"))
            .unwrap()
            .uid(),
        0,
        "lower layers are never chowned"
    );
    rt.ok(&["delete", "--force", &id]);
    for p in ["etc", "etc/made", "etc/made/file"] {
        let md = std::fs::metadata(upper.join(p)).unwrap();
        assert_eq!((md.uid(), md.gid()), (0, 0), "{p} shifted back at delete");
    }
    assert!(
        !std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter(|l| l.contains(&format!("{}", b.rootfs().display())))
            .any(|l| l.contains("lowerdir=0")),
        "the rebuilt overlay never shows on the host"
    );
    drop(ov);
    rt.assert_no_residue(&id, &b);
}

#[test]
fn bind_mounts_are_id_mapped() {
    let rt = Runtime::system();
    let host = Path::new(WORK).join(unique_id("share"));
    std::fs::create_dir_all(&host).unwrap();
    std::fs::write(host.join("users"), "x").unwrap();
    std::os::unix::fs::chown(host.join("users"), Some(1000), Some(1000)).unwrap();
    let mut b = writable(&[
        "sh",
        "-c",
        "echo owner $(stat -c %u:%g /data /data/users); touch /data/by-root && echo wrote",
    ]);
    let src = host.display().to_string();
    b.edit(|c| {
        c["mounts"].as_array_mut().unwrap().push(
            serde_json::json!({"destination": "/data", "type": "bind", "source": src, "options": ["rbind"]}),
        )
    });
    let (code, out, err) = rt.run_clean(&b);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        field(&out, "owner"),
        "0:0 1000:1000",
        "host uid N is uid N inside"
    );
    assert!(out.contains("wrote"), "{out}");
    let md = std::fs::metadata(host.join("by-root")).unwrap();
    assert_eq!(
        (md.uid(), md.gid()),
        (0, 0),
        "root's file is root's on the host"
    );
    remove_tree(&host);
}

#[test]
fn pure_cgroup_v2_delegation() {
    // This host may be a v1 hybrid: a private mount namespace with only cgroup2 at
    // /sys/fs/cgroup gives lodge-runc a pure v2 layout (the hierarchy is the host's own).
    let rt = Runtime::system();
    let b = writable(&[
        "sh",
        "-c",
        "grep ^0:: /proc/self/cgroup; mkdir /sys/fs/cgroup/inner && echo made; \
         echo 0 > /sys/fs/cgroup/inner/cgroup.procs && echo moved; grep ^0:: /proc/self/cgroup; \
         echo 1 > /sys/fs/cgroup/cgroup.max.descendants 2>/dev/null || echo limit-refused",
    ]);
    let id = unique_id("v2");
    let out = std::process::Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c"])
        .arg("umount -l /sys/fs/cgroup && mount -t cgroup2 none /sys/fs/cgroup && exec \"$0\" \"$@\"")
        .arg(lodge_tests::runtime_bin())
        .arg("--root")
        .arg(&rt.root)
        .args(["run", "--bundle", b.path(), &id])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "0::/init.scope", "{stdout}");
    assert_eq!(
        &lines[1..5],
        ["made", "moved", "0::/inner", "limit-refused"],
        "{stdout}"
    );
    let (_, v2_root) = lodge_tests::hierarchies()
        .into_iter()
        .find(|(_, c)| c.is_empty())
        .map(|(mp, c)| (c, mp))
        .expect("a cgroup2 hierarchy");
    assert!(
        !v2_root.join("lodge").join(&id).exists(),
        "cgroup left behind"
    );
    rt.assert_no_residue(&id, &b);
}

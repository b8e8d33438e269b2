//! Cgroup placement and limits on whatever layout the host has (v1, v2 or hybrid).

use lodge_tests::{cgroup_dirs, controller_dir, unique_id, Bundle, Runtime};
use serde_json::json;

fn read(p: &std::path::Path) -> String {
    std::fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .trim()
        .to_string()
}

#[test]
fn placed_in_cgroups_path_with_limits() {
    let rt = Runtime::new();
    let id = unique_id("cg");
    let path = format!("/lodge-test/{id}");
    let mut bundle = Bundle::new(&["sleep", "1000"]);
    bundle.edit(|c| {
        c["linux"]["cgroupsPath"] = path.clone().into();
        c["linux"]["resources"]["memory"] = json!({"limit": 67108864});
        c["linux"]["resources"]["pids"] = json!({"limit": 42});
        c["linux"]["resources"]["cpu"] = json!({"quota": 50000, "period": 100000, "shares": 512});
    });
    rt.ok(&["run", "-d", "--bundle", bundle.path(), &id]);
    let pid = rt.state(&id)["pid"].as_i64().unwrap();

    // The process is in the path in every hierarchy the host has.
    let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    for line in own.lines() {
        assert!(line.ends_with(&path), "{line} (all: {own})");
    }
    for dir in cgroup_dirs(&path) {
        assert!(
            read(&dir.join("cgroup.procs"))
                .lines()
                .any(|p| p == pid.to_string()),
            "{}",
            dir.display()
        );
    }

    let (mem, v2) = controller_dir("memory", &path);
    assert_eq!(
        read(&mem.join(if v2 {
            "memory.max"
        } else {
            "memory.limit_in_bytes"
        })),
        "67108864"
    );
    let (pids, _) = controller_dir("pids", &path);
    assert_eq!(read(&pids.join("pids.max")), "42");
    let (cpu, v2) = controller_dir("cpu", &path);
    if v2 {
        assert_eq!(read(&cpu.join("cpu.max")), "50000 100000");
    } else {
        assert_eq!(read(&cpu.join("cpu.cfs_quota_us")), "50000");
        assert_eq!(read(&cpu.join("cpu.shares")), "512");
    }

    rt.ok(&["delete", "--force", &id]);
    for dir in cgroup_dirs(&path) {
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
    rt.assert_no_residue(&id, &bundle);
    for dir in cgroup_dirs("/lodge-test") {
        let _ = std::fs::remove_dir(dir);
    }
}

#[test]
fn memory_limit_is_enforced() {
    let rt = Runtime::new();
    let id = unique_id("oom");
    let mut bundle = Bundle::new(&[
        "sh",
        "-c",
        "dd if=/dev/zero of=/dev/null bs=100M count=1 2>/dev/null && echo survived",
    ]);
    bundle
        .edit(|c| c["linux"]["resources"]["memory"] = json!({"limit": 33554432, "swap": 33554432}));
    let (code, out, _) = rt.run_container(&id, &bundle);
    assert!(
        code != 0 || !out.contains("survived"),
        "a 100 MB buffer in a 32 MiB container: {code} {out}"
    );
    rt.assert_no_residue(&id, &bundle);
}

#[test]
fn container_sees_its_own_cgroup_as_root() {
    let rt = Runtime::new();
    let bundle = Bundle::new(&["sh", "-c", "cat /proc/self/cgroup; ls /sys/fs/cgroup"]);
    let id = unique_id("cgns");
    let (code, out, err) = rt.run_container(&id, &bundle);
    assert_eq!(code, 0, "{err}");
    for line in out.lines().filter(|l| l.contains(':')) {
        assert!(line.ends_with(":/"), "cgroup namespace root: {line}");
    }
    assert!(
        out.contains("memory") || out.contains("cgroup.controllers"),
        "{out}"
    );
    rt.assert_no_residue(&id, &bundle);
}

#[test]
fn systemd_cgroup_falls_back_to_cgroupfs_with_a_warning() {
    let rt = Runtime::new();
    let id = unique_id("sd");
    let mut bundle = Bundle::new(&["sleep", "1000"]);
    bundle.edit(|c| c["linux"]["cgroupsPath"] = format!("lodgetest.slice:lodge:{id}").into());
    let out = rt.run(&[
        "--systemd-cgroup",
        "run",
        "-d",
        "--bundle",
        bundle.path(),
        &id,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("systemd cgroup driver"),
        "a warning says so: {err}"
    );
    let expected = format!("/lodgetest.slice/lodge-{id}.scope");
    let pid = rt.state(&id)["pid"].as_i64().unwrap();
    let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(own.lines().all(|l| l.ends_with(&expected)), "{own}");
    rt.ok(&["--systemd-cgroup", "delete", "--force", &id]);
    for dir in cgroup_dirs(&expected) {
        assert!(!dir.exists());
    }
    for dir in cgroup_dirs("/lodgetest.slice") {
        let _ = std::fs::remove_dir(dir);
    }
}

#[test]
fn more_resources_hugetlb_blkio_unified() {
    let rt = Runtime::new();
    let id = unique_id("res");
    let path = format!("/lodge/{id}");
    let hugepages = std::path::Path::new("/sys/kernel/mm/hugepages/hugepages-2048kB").exists();
    let disk = std::fs::read_to_string("/proc/partitions")
        .unwrap()
        .lines()
        .skip(2)
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 4 && f[1] == "0" && !f[3].starts_with("loop") && !f[3].starts_with("zram"))
                .then(|| (f[0].to_string(), f[1].to_string()))
        });
    let mut bundle = Bundle::new(&["sleep", "1000"]);
    bundle.edit(|c| {
        let r = &mut c["linux"]["resources"];
        if hugepages {
            r["hugepageLimits"] = json!([{"pageSize": "2MB", "limit": 4194304}]);
        }
        if let Some((major, minor)) = &disk {
            r["blockIO"] = json!({"throttleReadBpsDevice": [{"major": major.parse::<i64>().unwrap(), "minor": minor.parse::<i64>().unwrap(), "rate": 1048576}]});
        }
        r["unified"] = json!({"cgroup.max.descendants": "7"});
    });
    rt.ok(&["run", "-d", "--bundle", bundle.path(), &id]);
    if hugepages {
        let (dir, v2) = controller_dir("hugetlb", &path);
        let file = if v2 {
            "hugetlb.2MB.max"
        } else {
            "hugetlb.2MB.limit_in_bytes"
        };
        assert_eq!(read(&dir.join(file)), "4194304");
    }
    if let Some((major, minor)) = &disk {
        let (dir, v2) = controller_dir("blkio", &path);
        if v2 {
            let (io, _) = controller_dir("io", &path);
            assert!(read(&io.join("io.max")).contains("rbps=1048576"));
        } else {
            assert_eq!(
                read(&dir.join("blkio.throttle.read_bps_device")),
                format!("{major}:{minor} 1048576")
            );
        }
    }
    let unified = cgroup_dirs(&path)
        .into_iter()
        .find(|d| d.join("cgroup.max.descendants").exists())
        .unwrap();
    assert_eq!(read(&unified.join("cgroup.max.descendants")), "7");
    rt.ok(&["delete", "--force", &id]);
    rt.assert_no_residue(&id, &bundle);
}

#[test]
fn unsupported_or_invalid_resources_fail_clearly() {
    let rt = Runtime::new();
    let net_cls = lodge_tests::hierarchies()
        .iter()
        .any(|(_, c)| c.iter().any(|x| x == "net_cls"));
    let mut cases = vec![
        (
            json!({"unified": {"cgroup.max.descendants": "-5"}}),
            "cgroup.max.descendants",
        ),
        (json!({"unified": {"no.such.file": "1"}}), "no.such.file"),
        (json!({"unified": {"../escape": "1"}}), "file names"),
        (json!({"memory": {"limit": 4096}}), "memory"),
        (json!({"cpu": {"cpus": "99999"}}), "cpuset.cpus"),
    ];
    if !net_cls {
        cases.push((
            json!({"network": {"classID": 1048577}}),
            "not supported on this host",
        ));
    }
    for (resources, expect) in cases {
        let mut bundle = Bundle::new(&["sleep", "1000"]);
        bundle.edit(|c| c["linux"]["resources"] = resources.clone());
        let id = unique_id("badres");
        let err = rt.fails(&["create", "--bundle", bundle.path(), &id]);
        assert!(err.contains(expect), "{resources}: {err}");
        rt.assert_no_residue(&id, &bundle);
    }
}

#[test]
fn ebpf_device_filter() {
    // The cgroup v2 device filter, forced on so it is the only device control here.
    let rt = Runtime::new();
    let mut bundle = Bundle::new(&[
        "sh",
        "-c",
        "head -c 3 /dev/zero | wc -c; echo x > /dev/null && echo null-ok; mknod /tmp/mem c 1 1 && echo mknod-ok; head -c 1 /tmp/mem > /dev/null || echo mem-denied; mknod /tmp/kmsg c 1 11; true >> /tmp/kmsg && echo kmsg-write-ok; head -c 1 /tmp/kmsg > /dev/null || echo kmsg-read-denied",
    ]);
    bundle.edit(|c| {
        c["root"]["readonly"] = false.into();
        let caps = json!(["CAP_MKNOD", "CAP_SYS_RAWIO", "CAP_DAC_OVERRIDE"]);
        c["process"]["capabilities"] =
            json!({"bounding": caps, "effective": caps, "permitted": caps});
        // 1:11 (/dev/kmsg) may be opened for writing but not for reading: an access mask check.
        c["linux"]["resources"]["devices"] = json!([
            {"allow": false, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 11, "access": "w"}
        ]);
    });
    let id = unique_id("bpf");
    let out = rt
        .command(&["run", "--bundle", bundle.path(), &id])
        .env("LODGE_DEVICE_FILTER", "ebpf")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout,
        "3\nnull-ok\nmknod-ok\nmem-denied\nkmsg-write-ok\nkmsg-read-denied\n"
    );
    rt.assert_no_residue(&id, &bundle);
}

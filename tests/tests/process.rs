//! What the container's process gets: user namespace, capabilities, user/env/cwd/umask,
//! rlimits, hostname, no_new_privs.

use lodge_tests::{unique_id, Bundle, Runtime};
use serde_json::json;

fn run_ok(rt: &Runtime, bundle: &Bundle) -> String {
    let (code, out, err) = rt.run_clean(bundle);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    out
}

fn status_field(out: &str, field: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("{field} not in {out}"))
        .trim()
        .to_string()
}

#[test]
fn user_namespace_maps_ids_and_owns_files() {
    let rt = Runtime::new();
    let mut bundle = Bundle::new(&[
        "sh",
        "-c",
        "cat /proc/self/uid_map /proc/self/gid_map; id -u; touch /tmp/made-inside",
    ]);
    bundle.with_userns(200000);
    // The rootfs must be writable by the container's root (host uid 200000).
    let rootfs_tmp = bundle.rootfs().join("tmp");
    std::os::unix::fs::chown(&rootfs_tmp, Some(200000), Some(200000)).unwrap();
    bundle.edit(|c| c["root"]["readonly"] = false.into());
    let out = run_ok(&rt, &bundle);
    let lines: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines[0], ["0", "200000", "65536"], "{out}");
    assert_eq!(lines[1], ["0", "200000", "65536"], "{out}");
    assert_eq!(lines[2], ["0"], "root inside");
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(bundle.rootfs().join("tmp/made-inside")).unwrap();
    assert_eq!(
        (md.uid(), md.gid()),
        (200000, 200000),
        "a file made by root inside is owned by the mapped id outside"
    );
}

#[test]
fn capabilities_follow_the_spec() {
    let rt = Runtime::new();
    let mut bundle = Bundle::new(&["cat", "/proc/self/status"]);
    bundle.edit(|c| {
        let caps = json!(["CAP_CHOWN", "CAP_NET_RAW", "CAP_KILL"]);
        c["process"]["capabilities"] = json!({
            "bounding": caps, "effective": ["CAP_CHOWN", "CAP_KILL"], "permitted": caps,
            "inheritable": ["CAP_KILL"], "ambient": ["CAP_KILL"]
        });
    });
    let (chown, kill, net_raw) = (1u64 << 0, 1u64 << 5, 1u64 << 13);
    // As root, execve grants the whole bounding set (the kernel's rule for uid 0).
    let out = run_ok(&rt, &bundle);
    let bits = |out: &str, f: &str| u64::from_str_radix(&status_field(out, f), 16).unwrap();
    assert_eq!(bits(&out, "CapBnd"), chown | kill | net_raw);
    assert_eq!(bits(&out, "CapEff"), chown | kill | net_raw);
    assert_eq!(bits(&out, "CapAmb"), kill);
    // As a user, only the ambient set survives execve.
    bundle.edit(|c| c["process"]["user"] = json!({"uid": 1000, "gid": 1000}));
    let out = run_ok(&rt, &bundle);
    assert_eq!(bits(&out, "CapBnd"), chown | kill | net_raw);
    assert_eq!(bits(&out, "CapEff"), kill);
    assert_eq!(bits(&out, "CapPrm"), kill);
    assert_eq!(bits(&out, "CapInh"), kill);
    assert_eq!(bits(&out, "CapAmb"), kill);
    // Without ambient capabilities a user has none.
    bundle.edit(|c| c["process"]["capabilities"]["ambient"] = json!([]));
    let out = run_ok(&rt, &bundle);
    assert_eq!(bits(&out, "CapEff"), 0);
    assert_eq!(bits(&out, "CapPrm"), 0);
}

#[test]
fn all_capabilities_means_all_the_runtime_holds() {
    // CAP_SYS_RESOURCE may be missing from the host's bounding set: asking for it is not an error.
    let rt = Runtime::new();
    let mut bundle = Bundle::new(&["cat", "/proc/self/status"]);
    let all: Vec<String> = serde_json::from_str::<serde_json::Value>(&rt.ok(&["features"]))
        .unwrap()["linux"]["capabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    bundle.edit(|c| {
        c["process"]["capabilities"] = json!({"bounding": all, "effective": all, "permitted": all});
    });
    let out = run_ok(&rt, &bundle);
    let own = std::fs::read_to_string("/proc/self/status").unwrap();
    assert_eq!(status_field(&out, "CapBnd"), status_field(&own, "CapBnd"));
    assert_eq!(status_field(&out, "CapEff"), status_field(&own, "CapBnd"));
}

#[test]
fn user_env_cwd_and_umask() {
    let rt = Runtime::new();
    let mut bundle = Bundle::new(&[
        "sh",
        "-c",
        "id -u; id -g; id -G; pwd; echo $GREETING; echo $HOME; umask",
    ]);
    bundle.edit(|c| {
        c["process"]["user"] =
            json!({"uid": 1000, "gid": 1000, "additionalGids": [5, 1000], "umask": 63});
        c["process"]["cwd"] = "/home/user".into();
        c["process"]["env"]
            .as_array_mut()
            .unwrap()
            .push("GREETING=hello".into());
    });
    let out = run_ok(&rt, &bundle);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "1000");
    assert_eq!(lines[1], "1000");
    let mut groups: Vec<&str> = lines[2].split_whitespace().collect();
    groups.sort();
    assert_eq!(groups, ["1000", "5"], "{out}");
    assert_eq!(lines[3], "/home/user");
    assert_eq!(lines[4], "hello");
    assert_eq!(
        lines[5], "/home/user",
        "HOME comes from the container's /etc/passwd"
    );
    assert_eq!(lines[6], "0077");
}

#[test]
fn cwd_is_created_when_missing() {
    let rt = Runtime::new();
    let mut bundle = Bundle::new(&["pwd"]);
    bundle.edit(|c| c["process"]["cwd"] = "/work/dir".into());
    assert_eq!(run_ok(&rt, &bundle), "/work/dir\n");
}

#[test]
fn rlimits_and_no_new_privileges() {
    let rt = Runtime::new();
    let mut bundle = Bundle::new(&[
        "sh",
        "-c",
        "ulimit -n; ulimit -Hn; ulimit -c; grep NoNewPrivs /proc/self/status",
    ]);
    bundle.edit(|c| {
        c["process"]["rlimits"] = json!([
            {"type": "RLIMIT_NOFILE", "soft": 512, "hard": 768},
            {"type": "RLIMIT_CORE", "soft": 0, "hard": 0}
        ]);
        c["process"]["noNewPrivileges"] = true.into();
    });
    let out = run_ok(&rt, &bundle);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(&lines[..3], ["512", "768", "0"], "{out}");
    assert_eq!(lines[3].split_whitespace().last(), Some("1"), "{out}");

    bundle.edit(|c| c["process"]["noNewPrivileges"] = false.into());
    let out = run_ok(&rt, &bundle);
    assert_eq!(
        out.lines().nth(3).unwrap().split_whitespace().last(),
        Some("0"),
        "{out}"
    );
}

#[test]
fn hostname_and_domainname() {
    let rt = Runtime::new();
    let mut bundle = Bundle::new(&["sh", "-c", "hostname; cat /proc/sys/kernel/domainname"]);
    bundle.edit(|c| {
        c["hostname"] = "lodge-test-host".into();
        c["domainname"] = "example.test".into();
    });
    assert_eq!(run_ok(&rt, &bundle), "lodge-test-host\nexample.test\n");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_ne!(
        host.trim(),
        "lodge-test-host",
        "the host's hostname is untouched"
    );
}

#[test]
fn pid_namespace_makes_the_process_pid_1() {
    let rt = Runtime::new();
    let bundle = Bundle::new(&["sh", "-c", "echo $$"]);
    assert_eq!(run_ok(&rt, &bundle), "1\n");
}

#[test]
fn joins_a_namespace_by_path() {
    // A running container's network namespace, joined by a second one (a pod).
    let rt = Runtime::new();
    let mut first = Bundle::new(&["sleep", "1000"]);
    first.edit(|c| c["hostname"] = "pod".into());
    let pod = unique_id("pod");
    rt.ok(&["run", "-d", "--bundle", first.path(), &pod]);
    let pid = rt.state(&pod)["pid"].as_i64().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(100));

    let mut second = Bundle::new(&["hostname"]);
    second.edit(|c| {
        c["hostname"] = serde_json::Value::Null;
        for ns in c["linux"]["namespaces"].as_array_mut().unwrap() {
            if ns["type"] == "uts" {
                ns["path"] = format!("/proc/{pid}/ns/uts").into();
            }
        }
    });
    assert_eq!(run_ok(&rt, &second), "pod\n");
    rt.ok(&["delete", "--force", &pod]);
    rt.assert_no_residue(&pod, &first);
}

#[test]
fn oom_score_adj_and_time_namespace() {
    let rt = Runtime::new();
    let mut bundle = Bundle::new(&[
        "sh",
        "-c",
        "cat /proc/self/oom_score_adj; readlink /proc/self/ns/time",
    ]);
    bundle.edit(|c| {
        c["process"]["oomScoreAdj"] = 500.into();
        c["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "time"}));
    });
    let out = run_ok(&rt, &bundle);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "500");
    let host = std::fs::read_link("/proc/self/ns/time").unwrap();
    assert_ne!(lines[1], host.to_str().unwrap(), "a new time namespace");
}

#[test]
fn preserve_fds_passes_extra_descriptors() {
    use std::os::unix::process::CommandExt;
    let rt = Runtime::new();
    let bundle = Bundle::new(&[
        "sh",
        "-c",
        "cat <&3; test -e /proc/self/fd/4 && echo fd4-leaked; true",
    ]);
    let data = std::path::Path::new(lodge_tests::WORK).join(unique_id("fd"));
    std::fs::write(&data, "through fd 3\n").unwrap();
    let file = std::fs::File::open(&data).unwrap();
    let leak = std::fs::File::open(&data).unwrap();
    let (f3, f4) = (
        std::os::fd::AsRawFd::as_raw_fd(&file),
        std::os::fd::AsRawFd::as_raw_fd(&leak),
    );
    let id = unique_id("pfd");
    let mut cmd = rt.command(&["run", "--preserve-fds", "1", "--bundle", bundle.path(), &id]);
    // SAFETY: only dup2 between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            // dup2 onto the same number keeps close-on-exec: clear it explicitly.
            for (from, to) in [(f3, 3), (f4, 4)] {
                if libc::dup2(from, to) < 0 || libc::fcntl(to, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "through fd 3\n",
        "fd 3 passed, fd 4 not"
    );
    rt.assert_no_residue(&id, &bundle);
    std::fs::remove_file(data).unwrap();
}

#[test]
fn time_offsets_personality_scheduler_and_io_priority() {
    let rt = Runtime::new();
    let mut bundle = Bundle::new(&[
        "sh",
        "-c",
        "echo $$; cut -d. -f1 /proc/uptime; uname -m; grep -w policy /proc/self/sched | tr -d ' '; ionice -p $$",
    ]);
    bundle.edit(|c| {
        c["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "time"}));
        c["linux"]["timeOffsets"] =
            json!({"boottime": {"secs": 864000}, "monotonic": {"secs": 864000}});
        c["linux"]["personality"] = json!({"domain": "LINUX32"});
        c["process"]["scheduler"] = json!({"policy": "SCHED_BATCH", "nice": 5});
        c["process"]["ioPriority"] = json!({"class": "IOPRIO_CLASS_IDLE", "priority": 0});
    });
    let out = run_ok(&rt, &bundle);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "1", "init is still pid 1: {out}");
    let host_uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .unwrap()
        .split('.')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let inside: f64 = lines[1].parse().unwrap();
    assert!(
        inside - host_uptime > 863_000.0,
        "boottime offset: {inside} vs {host_uptime}"
    );
    assert_eq!(lines[2], "i686", "LINUX32 personality");
    assert_eq!(lines[3], "policy:3", "SCHED_BATCH");
    assert_eq!(lines[4], "idle", "{out}");
}

#[test]
fn unsupported_linux_settings_are_refused() {
    let rt = Runtime::new();
    for (what, edit) in [
        ("intelRdt", json!({"intelRdt": {"closID": "x"}})),
        (
            "timeOffsets",
            json!({"timeOffsets": {"boottime": {"secs": 1}}}),
        ),
    ] {
        let mut bundle = Bundle::new(&["true"]);
        bundle.edit(|c| {
            for (k, v) in edit.as_object().unwrap() {
                c["linux"][k] = v.clone();
            }
        });
        let id = unique_id("unsup");
        let err = rt.fails(&["create", "--bundle", bundle.path(), &id]);
        assert!(
            err.contains(what) && err.contains("not supported"),
            "{what}: {err}"
        );
        rt.assert_no_residue(&id, &bundle);
    }
}

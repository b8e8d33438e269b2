//! The container's filesystem view: read-only root, masked and read-only paths, mounts, /dev.

use lodge_tests::{unique_id, Bundle, Runtime};
use serde_json::json;

#[test]
fn readonly_root() {
    let rt = Runtime::new();
    let mut bundle = Bundle::new(&[
        "sh",
        "-c",
        "touch /newfile && echo wrote; touch /tmp/x; echo done",
    ]);
    bundle.edit(|c| c["root"]["readonly"] = true.into());
    let (code, out, err) = rt.run_clean(&bundle);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "done\n", "writes to a read-only root must fail");
    assert!(err.contains("Read-only file system"), "{err}");
    assert!(!bundle.rootfs().join("newfile").exists());

    bundle.edit(|c| c["root"]["readonly"] = false.into());
    let (code, out, _) = rt.run_clean(&bundle);
    assert_eq!((code, out.as_str()), (0, "wrote\ndone\n"));
}

#[test]
fn masked_and_readonly_paths() {
    let rt = Runtime::new();
    // Whichever of the spec's masked files this kernel has must read empty inside.
    let masked_file = [
        "/proc/keys",
        "/proc/timer_list",
        "/proc/kcore",
        "/proc/sched_debug",
    ]
    .into_iter()
    .find(|p| std::fs::read(p).is_ok_and(|d| !d.is_empty()))
    .expect("a masked /proc file with content on the host");
    let script = format!(
        "wc -c < {masked_file}; ls /sys/firmware | wc -l; echo 1 > /proc/sys/kernel/domainname && echo wrote-sys; echo end"
    );
    let mut bundle = Bundle::new(&["sh", "-c", &script]);
    bundle.edit(|c| {
        let caps = json!(["CAP_SYS_ADMIN"]);
        c["process"]["capabilities"] =
            json!({"bounding": caps, "effective": caps, "permitted": caps});
    });
    let (code, out, err) = rt.run_clean(&bundle);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    assert_eq!(
        lines,
        ["0", "0", "end"],
        "kcore empty, /sys/firmware empty, /proc/sys read-only; stderr: {err}"
    );
}

#[test]
fn bind_mounts_with_options() {
    let rt = Runtime::new();
    let host_dir = std::path::Path::new(lodge_tests::WORK).join(unique_id("vol"));
    std::fs::create_dir_all(&host_dir).unwrap();
    std::fs::write(host_dir.join("hello"), "from host\n").unwrap();
    let mut bundle = Bundle::new(&[
        "sh",
        "-c",
        "cat /data/hello; touch /data/x 2>/dev/null && echo rw-data; touch /data2/y && echo rw-data2; grep ' /data ' /proc/self/mounts",
    ]);
    let src = host_dir.to_str().unwrap().to_string();
    bundle.edit(|c| {
        let mounts = c["mounts"].as_array_mut().unwrap();
        mounts.push(json!({"destination": "/data", "type": "bind", "source": src, "options": ["rbind", "ro", "nosuid", "nodev", "noexec", "rprivate"]}));
        mounts.push(json!({"destination": "/data2", "type": "none", "source": src, "options": ["bind", "rw"]}));
    });
    let (code, out, err) = rt.run_clean(&bundle);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "from host");
    assert_eq!(
        lines[1], "rw-data2",
        "/data is read-only, /data2 writable: {out}"
    );
    let opts = lines[2].split_whitespace().nth(3).unwrap();
    for o in ["ro", "nosuid", "nodev", "noexec"] {
        assert!(opts.split(',').any(|x| x == o), "{o} missing in {opts}");
    }
    assert!(host_dir.join("y").exists());
    std::fs::remove_dir_all(&host_dir).unwrap();
}

#[test]
fn dev_has_the_default_devices_and_links() {
    let rt = Runtime::new();
    let bundle = Bundle::new(&[
        "sh",
        "-c",
        "for d in null zero full random urandom tty; do test -c /dev/$d || echo missing $d; done; \
         for l in fd stdin ptmx; do readlink /dev/$l; done; echo x > /dev/null && head -c 4 /dev/zero | wc -c",
    ]);
    let (code, out, err) = rt.run_clean(&bundle);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out, "/proc/self/fd\n/proc/self/fd/0\npts/ptmx\n4\n",
        "{err}"
    );
}

#[test]
fn extra_devices_from_the_spec() {
    let rt = Runtime::new();
    let mut bundle = Bundle::new(&[
        "sh",
        "-c",
        "stat -c '%t:%T %a %u' /dev/mynull; echo hi > /dev/mynull && echo ok",
    ]);
    bundle.edit(|c| {
        c["linux"]["devices"] = json!([{"path": "/dev/mynull", "type": "c", "major": 1, "minor": 3, "fileMode": 438, "uid": 0, "gid": 0}]);
        c["linux"]["resources"]["devices"].as_array_mut().unwrap().push(json!({"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"}));
    });
    let (code, out, err) = rt.run_clean(&bundle);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "1:3 666 0\nok\n");
}

#[test]
fn device_cgroup_denies_other_devices() {
    // The default spec denies all devices; a node the container makes itself stays unusable.
    let rt = Runtime::new();
    let mut bundle = Bundle::new(&[
        "sh",
        "-c",
        "mknod /tmp/mem c 1 1 && head -c 1 /tmp/mem > /dev/null && echo READ",
    ]);
    bundle.edit(|c| {
        c["root"]["readonly"] = false.into();
        let caps = json!(["CAP_MKNOD", "CAP_SYS_RAWIO", "CAP_DAC_OVERRIDE"]);
        c["process"]["capabilities"] =
            json!({"bounding": caps, "effective": caps, "permitted": caps});
    });
    let (_, out, err) = rt.run_clean(&bundle);
    assert!(
        !out.contains("READ"),
        "reading /dev/mem must be denied: {out} {err}"
    );
}

#[test]
fn no_pivot_works_too() {
    let rt = Runtime::new();
    let bundle = Bundle::new(&["sh", "-c", "ls /bin/busybox"]);
    let id = unique_id("nopivot");
    let out = rt.run(&["run", "--no-pivot", "--bundle", bundle.path(), &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "/bin/busybox\n");
    rt.assert_no_residue(&id, &bundle);
}

#[test]
fn symlinked_mount_destinations_stay_inside_the_rootfs() {
    // A hostile image points a mount destination at the host: the mount must land inside.
    let rt = Runtime::new();
    let mut bundle = Bundle::new(&["true"]);
    let escape = std::path::Path::new(lodge_tests::WORK).join(unique_id("escape"));
    std::fs::create_dir_all(&escape).unwrap();
    std::os::unix::fs::symlink(&escape, bundle.rootfs().join("evil")).unwrap();
    bundle.edit(|c| {
        c["mounts"]
            .as_array_mut()
            .unwrap()
            .push(json!({"destination": "/evil", "type": "tmpfs", "source": "tmpfs"}));
    });
    let (code, _, err) = rt.run_clean(&bundle);
    assert_eq!(code, 0, "{err}");
    assert!(lodge_tests::mounts_under(&escape).is_empty());
    assert!(
        bundle
            .rootfs()
            .join(escape.strip_prefix("/").unwrap())
            .exists(),
        "created inside the rootfs instead"
    );
    std::fs::remove_dir_all(&escape).unwrap();
}

#[test]
fn recursive_readonly_and_propagation_options() {
    let rt = Runtime::new();
    let host_dir = std::path::Path::new(lodge_tests::WORK).join(unique_id("rro"));
    std::fs::create_dir_all(&host_dir).unwrap();
    let mut bundle = Bundle::new(&[
        "sh",
        "-c",
        "touch /data/x 2>/dev/null && echo writable; grep ' /data ' /proc/self/mountinfo",
    ]);
    let src = host_dir.to_str().unwrap().to_string();
    bundle.edit(|c| {
        c["linux"]["rootfsPropagation"] = "private".into();
        c["mounts"].as_array_mut().unwrap().push(json!({"destination": "/data", "type": "bind", "source": src, "options": ["rbind", "rro", "rnoexec", "rshared"]}));
    });
    let (code, out, err) = rt.run_clean(&bundle);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("writable"), "{out}");
    let line = out.lines().next().unwrap();
    let opts = line.split_whitespace().nth(5).unwrap();
    assert!(
        opts.split(',').any(|o| o == "ro") && opts.split(',').any(|o| o == "noexec"),
        "{line}"
    );
    assert!(line.contains("shared:"), "rshared: {line}");
    std::fs::remove_dir_all(&host_dir).unwrap();
}

#[test]
fn without_a_mount_namespace_mounts_are_undone_at_delete() {
    // Allowed by the spec (runc too): the mounts land in the host's namespace under the rootfs.
    let rt = Runtime::new();
    let mut bundle = Bundle::new(&[
        "sh",
        "-c",
        "ls /dev/null /proc/self/status > /dev/null && echo inside",
    ]);
    bundle.edit(|c| {
        c["root"]["readonly"] = false.into();
        c["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .retain(|n| n["type"] != "mount");
    });
    let (code, out, err) = rt.run_clean(&bundle);
    assert_eq!((code, out.as_str()), (0, "inside\n"), "{err}");

    // root.readonly would remount the host's "/": refused.
    bundle.edit(|c| c["root"]["readonly"] = true.into());
    let id = unique_id("nomntns");
    let err = rt.fails(&["create", "--bundle", bundle.path(), &id]);
    assert!(
        err.contains("root.readonly without a mount namespace"),
        "{err}"
    );
    rt.assert_no_residue(&id, &bundle);
}

/// Runs `script` in a mount namespace whose every mount is shared, as systemd leaves a host:
/// what the container mounts must not propagate back, whatever path its bundle is on.
fn on_a_shared_host(script: &str) -> String {
    let out = std::process::Command::new("unshare")
        .args(["-m", "--propagation", "unchanged", "sh", "-ec"])
        .arg(format!("mount --make-rshared /\n{script}"))
        .output()
        .unwrap();
    let text = lodge_tests::combined(&out);
    assert!(out.status.success(), "{text}");
    text
}

#[test]
fn containers_on_shared_mounts_leak_nothing_and_run_again() {
    for rt in [Runtime::system(), Runtime::new()] {
        let mut b = Bundle::new(&["sleep", "1000"]);
        let volume = std::path::Path::new(lodge_tests::WORK).join(unique_id("vol"));
        std::fs::create_dir_all(&volume).unwrap();
        b.edit(|c| {
            c["root"]["readonly"] = false.into();
            c["mounts"].as_array_mut().unwrap().push(json!({
                "destination": "/vol", "type": "bind",
                "source": volume.display().to_string(), "options": ["rbind"]
            }));
        });
        let id = unique_id("shared");
        let rt_cmd = |args: &str| {
            let c = rt.command(&[]);
            let mut line = format!("{:?}", c.get_program());
            for a in c.get_args() {
                line.push_str(&format!(" {a:?}"));
            }
            format!("{line} {args}")
        };
        let script = format!(
            "count() {{ wc -l < /proc/self/mountinfo; }}\n\
             before=$(count)\n\
             {run}\n\
             echo during $(($(count) - before))\n\
             {exec} sh -c 'mount -t tmpfs t /vol && echo inner-mounted' || true\n\
             echo after-inner $(($(count) - before))\n\
             {del}\n\
             echo left $(($(count) - before))\n\
             {run}\n\
             echo again $({exec} echo ok)\n\
             {del}",
            run = rt_cmd(&format!("run -d --bundle {} {id}", b.path())),
            exec = rt_cmd(&format!("exec {id}")),
            del = rt_cmd(&format!("delete --force {id}")),
        );
        let out = on_a_shared_host(&script);
        assert_eq!(lodge_tests::field(&out, "during"), "0", "{out}");
        // Root of a system container may mount; a plain container's root lacks CAP_SYS_ADMIN.
        assert_eq!(out.contains("inner-mounted"), rt.system, "{out}");
        assert_eq!(lodge_tests::field(&out, "after-inner"), "0", "{out}");
        assert_eq!(lodge_tests::field(&out, "left"), "0", "{out}");
        assert_eq!(lodge_tests::field(&out, "again"), "ok", "{out}");
        std::fs::remove_dir(&volume).unwrap();
        rt.assert_no_residue(&id, &b);
    }
}

//! Bad input: each case gives a clear error, a non-zero exit and no residue.

use lodge_tests::{unique_id, Bundle, Runtime};

fn assert_clean(rt: &Runtime, id: &str, bundle: &Bundle) {
    rt.assert_no_residue(id, bundle);
}

#[test]
fn missing_config() {
    let rt = Runtime::new();
    let bundle = Bundle::new(&["true"]);
    std::fs::remove_file(bundle.dir.join("config.json")).unwrap();
    let id = unique_id("noconf");
    let err = rt.fails(&["create", "--bundle", bundle.path(), &id]);
    assert!(err.contains("config.json"), "{err}");
    assert_clean(&rt, &id, &bundle);
}

#[test]
fn invalid_config() {
    let rt = Runtime::new();
    let bundle = Bundle::new(&["true"]);
    std::fs::write(bundle.dir.join("config.json"), "{ not json").unwrap();
    let id = unique_id("badconf");
    let err = rt.fails(&["create", "--bundle", bundle.path(), &id]);
    assert!(err.contains("not a valid OCI runtime config"), "{err}");
    assert_clean(&rt, &id, &bundle);

    let mut bundle = Bundle::new(&["true"]);
    bundle.edit(|c| c["ociVersion"] = "2.0.0".into());
    let err = rt.fails(&["create", "--bundle", bundle.path(), &id]);
    assert!(err.contains("ociVersion"), "{err}");
    assert_clean(&rt, &id, &bundle);
}

#[test]
fn any_1x_oci_version_is_accepted() {
    let rt = Runtime::new();
    for v in ["1.0.0", "1.0.2-dev", "1.1.0", "1.2.1", "1.3.0"] {
        let mut bundle = Bundle::new(&["true"]);
        bundle.edit(|c| c["ociVersion"] = v.into());
        let id = unique_id("ver");
        let (code, _, err) = rt.run_container(&id, &bundle);
        assert_eq!(code, 0, "{v}: {err}");
    }
}

#[test]
fn missing_rootfs() {
    let rt = Runtime::new();
    let mut bundle = Bundle::new(&["true"]);
    bundle.edit(|c| c["root"]["path"] = "no-such-rootfs".into());
    let id = unique_id("noroot");
    let err = rt.fails(&["create", "--bundle", bundle.path(), &id]);
    assert!(
        err.contains("rootfs") && err.contains("no-such-rootfs"),
        "{err}"
    );
    assert_clean(&rt, &id, &bundle);
}

#[test]
fn missing_executable() {
    let rt = Runtime::new();
    let bundle = Bundle::new(&["no-such-binary"]);
    let id = unique_id("noexe");
    let err = rt.fails(&["create", "--bundle", bundle.path(), &id]);
    assert!(
        err.contains("no-such-binary") && err.contains("not found"),
        "{err}"
    );
    assert_clean(&rt, &id, &bundle);
}

#[test]
fn duplicate_id() {
    let rt = Runtime::new();
    let bundle = Bundle::new(&["sleep", "1000"]);
    let id = unique_id("dup");
    rt.ok(&["create", "--bundle", bundle.path(), &id]);
    let pid = rt.state(&id)["pid"].clone();
    let err = rt.fails(&["create", "--bundle", bundle.path(), &id]);
    assert!(err.contains("already exists"), "{err}");
    // The first container is untouched.
    assert_eq!(rt.state(&id)["pid"], pid);
    assert_eq!(rt.status(&id), "created");
    rt.ok(&["delete", &id]);
    assert_clean(&rt, &id, &bundle);
}

#[test]
fn bad_ids() {
    let rt = Runtime::new();
    let bundle = Bundle::new(&["true"]);
    for id in ["a/b", "..", "../escape", ".", ""] {
        let err = rt.fails(&["create", "--bundle", bundle.path(), id]);
        assert!(err.contains("invalid container id"), "{id:?}: {err}");
    }
    assert!(!rt.root.exists() || std::fs::read_dir(&rt.root).unwrap().next().is_none());
    assert!(!std::path::Path::new(lodge_tests::WORK)
        .join("escape")
        .exists());
}

#[test]
fn unknown_signal() {
    let rt = Runtime::new();
    let bundle = Bundle::new(&["sleep", "1000"]);
    let id = unique_id("sig");
    rt.ok(&["run", "-d", "--bundle", bundle.path(), &id]);
    for bad in ["SIGNOPE", "NOPE", "0", "99999"] {
        let err = rt.fails(&["kill", &id, bad]);
        assert!(err.contains("unknown signal"), "{bad}: {err}");
    }
    assert_eq!(rt.status(&id), "running");
    rt.ok(&["delete", "--force", &id]);
    assert_clean(&rt, &id, &bundle);
}

#[test]
fn start_of_a_container_that_is_not_created() {
    let rt = Runtime::new();
    let bundle = Bundle::new(&["sleep", "1000"]);
    let id = unique_id("restart");
    rt.ok(&["run", "-d", "--bundle", bundle.path(), &id]);
    let err = rt.fails(&["start", &id]);
    assert!(err.contains("running") && err.contains("created"), "{err}");
    rt.ok(&["kill", &id, "9"]);
    rt.wait_status(&id, "stopped");
    let err = rt.fails(&["start", &id]);
    assert!(err.contains("stopped"), "{err}");
    let err = rt.fails(&["kill", &id]);
    assert!(err.contains("not running"), "{err}");
    rt.ok(&["delete", &id]);
    let err = rt.fails(&["start", &id]);
    assert!(err.contains("does not exist"), "{err}");
    assert_clean(&rt, &id, &bundle);
}

#[test]
fn delete_of_a_running_container_needs_force() {
    let rt = Runtime::new();
    let bundle = Bundle::new(&["sleep", "1000"]);
    let id = unique_id("run");
    rt.ok(&["run", "-d", "--bundle", bundle.path(), &id]);
    let err = rt.fails(&["delete", &id]);
    assert!(
        err.contains("not stopped") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(rt.status(&id), "running");
    rt.ok(&["delete", "-f", &id]);
    assert_clean(&rt, &id, &bundle);
    // --force on a container that does not exist is not an error (what shims rely on).
    rt.ok(&["delete", "--force", &id]);
    let err = rt.fails(&["delete", &id]);
    assert!(err.contains("does not exist"), "{err}");
}

#[test]
fn bad_namespace_path() {
    let rt = Runtime::new();
    let mut bundle = Bundle::new(&["true"]);
    bundle.edit(|c| {
        for ns in c["linux"]["namespaces"].as_array_mut().unwrap() {
            if ns["type"] == "network" {
                ns["path"] = "/proc/self/ns/uts".into();
            }
        }
    });
    let id = unique_id("nspath");
    let err = rt.fails(&["create", "--bundle", bundle.path(), &id]);
    assert!(
        err.contains("network") && err.contains("another kind"),
        "{err}"
    );
    assert_clean(&rt, &id, &bundle);
}

#[test]
fn failing_mount_leaves_nothing() {
    let rt = Runtime::new();
    let mut bundle = Bundle::new(&["true"]);
    bundle.edit(|c| {
        c["mounts"].as_array_mut().unwrap().push(
            serde_json::json!({"destination": "/x", "type": "bind", "source": "/no/such/source"}),
        );
    });
    let id = unique_id("badmount");
    let err = rt.fails(&["create", "--bundle", bundle.path(), &id]);
    assert!(err.contains("/no/such/source"), "{err}");
    assert_clean(&rt, &id, &bundle);
}

#[test]
fn json_log_format_for_containerd() {
    let rt = Runtime::new();
    let log = std::path::Path::new(lodge_tests::WORK).join(format!("{}.log", unique_id("log")));
    let out = rt.run(&[
        "--log",
        log.to_str().unwrap(),
        "--log-format",
        "json",
        "state",
        "no-such-container",
    ]);
    assert!(!out.status.success());
    let text = std::fs::read_to_string(&log).unwrap();
    let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(last["level"], "error");
    assert!(
        last["msg"].as_str().unwrap().contains("does not exist"),
        "{text}"
    );
    assert!(last["time"].is_string());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not exist"),
        "also on stderr"
    );
    std::fs::remove_file(log).unwrap();
}

#[test]
fn checkpoint_and_restore_are_refused_clearly() {
    let rt = Runtime::new();
    for verb in ["checkpoint", "restore"] {
        let err = rt.fails(&[verb, "--image-path", "/tmp/x", "some-id"]);
        assert!(err.contains("not supported"), "{verb}: {err}");
    }
}

#[test]
fn selinux_labels_are_refused_clearly() {
    let rt = Runtime::new();
    for (key, label) in [("mountLabel", "linux"), ("selinuxLabel", "process")] {
        let mut bundle = Bundle::new(&["true"]);
        bundle.edit(|c| c[label][key] = "system_u:object_r:container_file_t:s0".into());
        let id = unique_id("selinux");
        let err = rt.fails(&["create", "--bundle", bundle.path(), &id]);
        assert!(
            err.contains("SELinux") && err.contains("not supported") && err.contains(key),
            "{err}"
        );
        assert_clean(&rt, &id, &bundle);
    }
}

#[test]
fn an_unreachable_manager_fails_a_system_container_clearly_and_not_a_plain_one() {
    // A plain container (--no-syscont) needs nothing of lodge-mgr's: it runs, as with runc.
    let plain = Runtime::new();
    let bundle = Bundle::new(&["true"]);
    let id = unique_id("nomgr");
    let out = plain.run(&[
        "--mgr-socket",
        "/nonexistent/mgr.sock",
        "run",
        "--bundle",
        bundle.path(),
        &id,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_clean(&plain, &id, &bundle);
    // A system container needs its ID range: a clear error naming lodge-mgr.
    let rt = Runtime::system();
    let err = rt.fails(&[
        "--mgr-socket",
        "/nonexistent/mgr.sock",
        "create",
        "--bundle",
        bundle.path(),
        &id,
    ]);
    assert!(
        err.contains("lodge-mgr is not reachable") && err.contains("--no-mgr"),
        "{err}"
    );
    assert_clean(&rt, &id, &bundle);
    // --no-mgr says so outright: a system container then needs ID mappings in its spec.
    let err = rt.fails(&[
        "--no-mgr",
        "--mgr-socket",
        "/nonexistent/mgr.sock",
        "run",
        "--bundle",
        bundle.path(),
        &id,
    ]);
    assert!(err.contains("--no-mgr"), "{err}");
    assert_clean(&rt, &id, &bundle);
}

//! create → start → state → kill → delete, run, list, pid files and exit codes.

use std::os::unix::fs::OpenOptionsExt;

use lodge_tests::{unique_id, Bundle, Runtime};

#[test]
fn create_start_kill_delete() {
    let rt = Runtime::new();
    let bundle = Bundle::new(&["sleep", "1000"]);
    let id = unique_id("life");
    let pid_file = bundle.dir.join("init.pid");
    rt.ok(&[
        "create",
        "--bundle",
        bundle.path(),
        "--pid-file",
        pid_file.to_str().unwrap(),
        &id,
    ]);

    let st = rt.state(&id);
    assert_eq!(st["status"], "created");
    assert_eq!(st["id"], id.as_str());
    assert_eq!(st["bundle"], bundle.path());
    assert_eq!(st["rootfs"], bundle.rootfs().to_str().unwrap());
    assert!(st["ociVersion"].as_str().unwrap().starts_with("1."));
    assert!(st["created"].as_str().unwrap().ends_with('Z'));
    let pid = st["pid"].as_i64().unwrap();
    assert!(pid > 0);
    assert_eq!(std::fs::read_to_string(&pid_file).unwrap(), pid.to_string());
    // Init waits for start: it has not exec'd sleep yet.
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
    assert_ne!(comm.trim(), "sleep");

    rt.ok(&["start", &id]);
    assert_eq!(rt.status(&id), "running");
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
    assert_eq!(comm.trim(), "sleep");

    rt.ok(&["kill", &id, "KILL"]);
    rt.wait_status(&id, "stopped");
    assert_eq!(rt.state(&id)["pid"], 0);
    rt.ok(&["delete", &id]);
    rt.assert_no_residue(&id, &bundle);
    let err = rt.fails(&["state", &id]);
    assert!(err.contains("does not exist"), "{err}");
}

#[test]
fn run_returns_the_exit_code_and_cleans_up() {
    let rt = Runtime::new();
    let bundle = Bundle::new(&["sh", "-c", "echo out; echo err >&2; exit 3"]);
    let id = unique_id("exit");
    let (code, out, err) = rt.run_container(&id, &bundle);
    assert_eq!(code, 3, "stderr: {err}");
    assert_eq!(out, "out\n");
    assert!(err.contains("err"), "{err}");
    rt.assert_no_residue(&id, &bundle);
}

#[test]
fn run_detached_then_list() {
    let rt = Runtime::new();
    let bundle = Bundle::new(&["sleep", "1000"]);
    let id = unique_id("det");
    rt.ok(&["run", "-d", "--bundle", bundle.path(), &id]);
    assert_eq!(rt.status(&id), "running");

    let table = rt.ok(&["list"]);
    let header = table.lines().next().unwrap();
    for col in ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"] {
        assert!(header.contains(col), "{table}");
    }
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&id) && l.contains("running")),
        "{table}"
    );
    assert_eq!(rt.ok(&["list", "-q"]).trim(), id);
    let json: serde_json::Value =
        serde_json::from_str(&rt.ok(&["list", "--format", "json"])).unwrap();
    assert_eq!(json[0]["id"], id.as_str());
    assert_eq!(json[0]["status"], "running");

    // Options after the positional argument, as containerd and Docker may pass them.
    rt.ok(&["delete", &id, "--force"]);
    rt.assert_no_residue(&id, &bundle);
}

#[test]
fn kill_accepts_names_numbers_and_all() {
    let rt = Runtime::new();
    let script = "trap 'echo usr1 > /tmp/got; exit 0' USR1; while true; do sleep 0.05; done";
    for (n, sig) in ["USR1", "SIGUSR1", "sigusr1", "10"].iter().enumerate() {
        let mut bundle = Bundle::new(&["sh", "-c", script]);
        bundle.edit(|c| c["root"]["readonly"] = false.into());
        let id = unique_id(&format!("sig{n}"));
        rt.ok(&["run", "-d", "--bundle", bundle.path(), &id]);
        std::thread::sleep(std::time::Duration::from_millis(100));
        rt.ok(&["kill", &id, sig]);
        rt.wait_status(&id, "stopped");
        assert_eq!(
            std::fs::read_to_string(bundle.rootfs().join("tmp/got")).unwrap(),
            "usr1\n",
            "signal {sig}"
        );
        rt.ok(&["delete", &id]);
        rt.assert_no_residue(&id, &bundle);
    }

    let bundle = Bundle::new(&["sh", "-c", "sleep 1000 & sleep 1000"]);
    let id = unique_id("killall");
    rt.ok(&["run", "-d", "--bundle", bundle.path(), &id]);
    rt.ok(&["kill", "--all", &id, "9"]);
    rt.wait_status(&id, "stopped");
    rt.ok(&["delete", &id]);
    rt.assert_no_residue(&id, &bundle);
}

#[test]
fn delete_force_kills_a_running_container() {
    let rt = Runtime::new();
    let bundle = Bundle::new(&["sleep", "1000"]);
    let id = unique_id("force");
    rt.ok(&["run", "-d", "--bundle", bundle.path(), &id]);
    let pid = rt.state(&id)["pid"].as_i64().unwrap();
    rt.ok(&["delete", "--force", &id]);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}/exe")).exists() || {
            let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            s.contains(") Z")
        }
    );
    rt.assert_no_residue(&id, &bundle);
}

#[test]
fn delete_of_a_created_container_kills_init() {
    let rt = Runtime::new();
    let bundle = Bundle::new(&["true"]);
    let id = unique_id("created");
    rt.ok(&["create", "--bundle", bundle.path(), &id]);
    rt.ok(&["delete", &id]);
    rt.assert_no_residue(&id, &bundle);
}

#[test]
fn version_and_features() {
    let rt = Runtime::new();
    let v = rt.ok(&["--version"]);
    assert!(v.contains("lodge-runc version"), "{v}");
    assert!(v.contains("spec: 1."), "{v}");
    let f: serde_json::Value = serde_json::from_str(&rt.ok(&["features"])).unwrap();
    assert!(f["ociVersionMax"].as_str().unwrap().starts_with("1."));
    let ns: Vec<&str> = f["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for want in ["cgroup", "ipc", "mount", "network", "pid", "user", "uts"] {
        assert!(ns.contains(&want), "{ns:?}");
    }
}

#[test]
fn init_never_exposes_the_host_binary() {
    for fallback in [false, true] {
        check_binary_protection(fallback, Runtime::new());
    }
    // A system container (default mode) too: its root holds every capability in its namespace.
    check_binary_protection(false, Runtime::system());
}

fn check_binary_protection(memfd_fallback: bool, rt: Runtime) {
    // CVE-2019-5736: a container process grabs the runtime through /proc/PID/exe (O_PATH) and
    // reopens it for writing once the runtime is gone. It must get a read-only mount (EROFS) or
    // a sealed memfd (EPERM), never the writable binary on the host's disk.
    let bundle = Bundle::new(&["true"]);
    let id = unique_id("cve");
    let mut create = rt.command(&["create", "--bundle", bundle.path(), &id]);
    if memfd_fallback {
        create.env("LODGE_SELF_PROTECT", "memfd");
    }
    let out = create
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(out.success());
    let pid = rt.state(&id)["pid"].as_i64().unwrap();
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert_eq!(
        exe.to_string_lossy().starts_with("/memfd:lodge-runc"),
        memfd_fallback,
        "{}",
        exe.display()
    );
    let handle = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH)
        .open(format!("/proc/{pid}/exe"))
        .unwrap();
    rt.ok(&["delete", &id]);
    rt.assert_no_residue(&id, &bundle);
    let path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&handle));
    // Writing back the file's own first byte: harmless even if the protection were missing.
    let first = std::fs::read(&path).unwrap()[0];
    let try_write = || match std::fs::OpenOptions::new().write(true).open(&path) {
        Err(e) => e.raw_os_error(),
        Ok(f) => std::os::unix::fs::FileExt::write_at(&f, &[first], 0)
            .err()
            .and_then(|e| e.raw_os_error()),
    };
    // ETXTBSY only says some lodge-runc (another test's) is running the same file right now;
    // the attack waits for a quiet moment, and so does the test.
    let mut errno = try_write();
    for _ in 0..500 {
        if errno != Some(libc::ETXTBSY) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        errno = try_write();
    }
    assert!(
        matches!(errno, Some(libc::EROFS) | Some(libc::EPERM)),
        "reopening the runtime's binary for writing: {errno:?}"
    );
}

#[test]
fn containers_are_registered_with_lodge_mgr() {
    let Some(mgr) = std::env::var_os("LODGE_MGR") else {
        panic!(
            "LODGE_MGR is not set: run the suite through tests/run.sh, which serves a lodge-mgr"
        );
    };
    let rt = Runtime::new();
    let bundle = Bundle::new(&["sleep", "1000"]);
    let id = unique_id("reg");
    rt.ok(&["run", "-d", "--bundle", bundle.path(), &id]);
    let pid = rt.state(&id)["pid"].as_i64().unwrap();
    let out = std::process::Command::new(&mgr)
        .args(["list", "--format", "json"])
        .output()
        .unwrap();
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let me = list
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id.as_str())
        .expect("registered");
    assert_eq!(me["pid"], pid);
    assert_eq!(me["bundle"], bundle.path());
    assert!(me["range"]["size"].as_u64().unwrap() >= 65536);
    rt.ok(&["delete", "--force", &id]);
    rt.assert_no_residue(&id, &bundle);
}

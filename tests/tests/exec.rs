//! `exec`: a new process inside a running container — its namespaces, cgroup, user,
//! capabilities, seccomp, terminal — and the failure paths.

use std::io::Write;

use lodge_tests::{read_pty, unique_id, Bundle, ConsoleSocket, Runtime};
use serde_json::json;

/// A running `sleep` container; deleted with the runtime.
fn running(rt: &Runtime, edit: impl FnOnce(&mut serde_json::Value)) -> (String, Bundle) {
    let mut bundle = Bundle::new(&["sleep", "1000"]);
    bundle.edit(edit);
    let id = unique_id("ex");
    rt.ok(&["run", "-d", "--bundle", bundle.path(), &id]);
    (id, bundle)
}

#[test]
fn exec_joins_the_containers_namespaces_and_cgroup() {
    let rt = Runtime::new();
    let (id, bundle) = running(&rt, |c| {
        c["hostname"] = "exec-host".into();
    });
    let init = rt.state(&id)["pid"].as_i64().unwrap();
    let out = rt.ok(&[
        "exec",
        &id,
        "sh",
        "-c",
        "hostname; echo $$; cat /proc/1/cmdline | tr '\\0' ' '; echo; ls /bin/busybox",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "exec-host");
    assert_ne!(lines[1], "1", "not the container's init");
    assert_eq!(lines[2].trim(), "sleep 1000", "sees the container's pid 1");
    assert_eq!(lines[3], "/bin/busybox", "the container's root");

    let pid_file = bundle.dir.join("exec.pid");
    rt.ok(&[
        "exec",
        "-d",
        "--pid-file",
        pid_file.to_str().unwrap(),
        &id,
        "sleep",
        "100",
    ]);
    let pid: i64 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let cg = |p: i64| std::fs::read_to_string(format!("/proc/{p}/cgroup")).unwrap();
    assert_eq!(cg(pid), cg(init), "same cgroups as init");
    for ns in ["mnt", "pid", "net", "uts", "ipc", "cgroup"] {
        let link = |p: i64| std::fs::read_link(format!("/proc/{p}/ns/{ns}")).unwrap();
        assert_eq!(link(pid), link(init), "{ns} namespace");
    }
    rt.ok(&["delete", "--force", &id]);
    rt.assert_no_residue(&id, &bundle);
}

#[test]
fn exec_returns_the_exit_code() {
    let rt = Runtime::new();
    let (id, _bundle) = running(&rt, |_| {});
    let out = rt.run(&["exec", &id, "sh", "-c", "exit 7"]);
    assert_eq!(out.status.code(), Some(7));
    let out = rt.run(&["exec", &id, "sh", "-c", "kill -9 $$"]);
    assert_eq!(out.status.code(), Some(137), "128 + SIGKILL");
}

#[test]
fn exec_in_a_user_namespace() {
    let rt = Runtime::new();
    let (id, _bundle) = running(&rt, |c| {
        c["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "user"}));
        let map = json!([{"containerID": 0, "hostID": 300000, "size": 65536}]);
        c["linux"]["uidMappings"] = map.clone();
        c["linux"]["gidMappings"] = map;
    });
    let out = rt.ok(&["exec", &id, "sh", "-c", "cat /proc/self/uid_map; id -u"]);
    let lines: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines[0], ["0", "300000", "65536"]);
    assert_eq!(lines[1], ["0"]);
}

#[test]
fn exec_options_user_cwd_env_caps_nnp() {
    let rt = Runtime::new();
    let (id, _bundle) = running(&rt, |_| {});
    let out = rt.ok(&[
        "exec",
        "-u",
        "1000:1000",
        "-g",
        "5",
        "--cwd",
        "/tmp",
        "-e",
        "FOO=bar",
        "--cap",
        "CAP_NET_RAW",
        "--no-new-privs",
        &id,
        "sh",
        "-c",
        "id -u; id -g; id -G; pwd; echo $FOO; grep -E 'CapBnd|NoNewPrivs' /proc/self/status",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        &lines[..5],
        ["1000", "1000", "1000 5", "/tmp", "bar"],
        "{out}"
    );
    let bnd = u64::from_str_radix(lines[5].split_whitespace().nth(1).unwrap(), 16).unwrap();
    assert_ne!(bnd & (1 << 13), 0, "CAP_NET_RAW added: {out}");
    assert!(lines[6].ends_with('1'), "{out}");
}

#[test]
fn exec_with_a_process_file() {
    let rt = Runtime::new();
    let (id, bundle) = running(&rt, |_| {});
    let process = json!({
        "terminal": false, "user": {"uid": 0, "gid": 0}, "cwd": "/",
        "args": ["sh", "-c", "echo from-process-file $GREETING"],
        "env": ["PATH=/bin", "GREETING=hi"]
    });
    let file = bundle.dir.join("process.json");
    std::fs::write(&file, process.to_string()).unwrap();
    assert_eq!(
        rt.ok(&["exec", "--process", file.to_str().unwrap(), &id]),
        "from-process-file hi\n"
    );
    std::fs::write(&file, "{ nope").unwrap();
    let err = rt.fails(&["exec", "--process", file.to_str().unwrap(), &id]);
    assert!(err.contains("not a valid process JSON"), "{err}");
}

#[test]
fn exec_with_a_terminal() {
    let rt = Runtime::new();
    let (id, _bundle) = running(&rt, |_| {});
    let console = ConsoleSocket::new();
    let master = std::thread::scope(|s| {
        let h = s.spawn(|| console.receive_master());
        rt.ok(&[
            "exec",
            "-d",
            "-t",
            "--console-socket",
            console.path(),
            &id,
            "sh",
        ]);
        h.join().unwrap()
    });
    let mut master = master;
    master
        .write_all(b"tty; echo marker-$((6*7)); exit\n")
        .unwrap();
    let out = read_pty(&mut master, "marker-42");
    assert!(out.contains("/dev/pts/"), "{out}");
    assert!(out.contains("marker-42"), "{out}");
}

#[test]
fn exec_follows_the_containers_seccomp_profile() {
    let rt = Runtime::new();
    let (id, _bundle) = running(&rt, |c| {
        c["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]
        });
    });
    let out = rt.run(&["exec", &id, "sh", "-c", "mkdir /tmp/x || echo denied"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "denied\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("Operation not permitted"));
}

#[test]
fn exec_failures() {
    let rt = Runtime::new();
    let (id, bundle) = running(&rt, |_| {});
    let err = rt.fails(&["exec", &id, "no-such-command"]);
    assert!(
        err.contains("no-such-command") && err.contains("not found"),
        "{err}"
    );
    let err = rt.fails(&["exec", "no-such-container", "true"]);
    assert!(err.contains("does not exist"), "{err}");
    let err = rt.fails(&["exec", &id]);
    assert!(err.contains("command"), "{err}");
    rt.ok(&["kill", &id, "KILL"]);
    rt.wait_status(&id, "stopped");
    let err = rt.fails(&["exec", &id, "true"]);
    assert!(
        err.contains("stopped") && err.contains("not running"),
        "{err}"
    );
    rt.ok(&["delete", &id]);
    rt.assert_no_residue(&id, &bundle);
}

//! Seccomp filters from linux.seccomp: actions, errnoRet, argument conditions, and loading
//! without no_new_privs as a user (CAP_SYS_ADMIN must not survive into the process).

use lodge_tests::{unique_id, Bundle, Runtime};
use serde_json::json;

#[test]
fn errno_rules_with_and_without_errno_ret() {
    let rt = Runtime::new();
    let mut bundle = Bundle::new(&[
        "sh",
        "-c",
        "mkdir /tmp/d || echo mkdir-denied; chmod 700 /tmp || echo chmod-denied; echo still-alive",
    ]);
    bundle.edit(|c| {
        c["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            "syscalls": [
                {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"},
                {"names": ["chmod", "fchmodat", "fchmodat2"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
                {"names": ["no_such_syscall_in_this_kernel"], "action": "SCMP_ACT_ERRNO"}
            ]
        });
    });
    let (code, out, err) = rt.run_clean(&bundle);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "mkdir-denied\nchmod-denied\nstill-alive\n");
    assert!(
        err.contains("Operation not permitted"),
        "EPERM by default: {err}"
    );
    assert!(
        err.contains("Function not implemented"),
        "errnoRet 38 is ENOSYS: {err}"
    );
}

#[test]
fn argument_conditions() {
    // Only kill(…, SIGUSR1) is denied: the filter looks at the second argument.
    let rt = Runtime::new();
    let mut bundle = Bundle::new(&[
        "sh",
        "-c",
        "kill -USR1 $$ 2>/dev/null || echo usr1-denied; kill -0 $$ && echo sig0-allowed",
    ]);
    bundle.edit(|c| {
        c["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["kill"], "action": "SCMP_ACT_ERRNO",
                          "args": [{"index": 1, "value": 10, "op": "SCMP_CMP_EQ"}]}]
        });
    });
    let (code, out, err) = rt.run_clean(&bundle);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "usr1-denied\nsig0-allowed\n");
}

#[test]
fn kill_action_kills_the_process() {
    let rt = Runtime::new();
    let mut bundle = Bundle::new(&[
        "sh",
        "-c",
        "echo before; sh -c 'chmod 700 /tmp'; echo status $?",
    ]);
    bundle.edit(|c| {
        c["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["chmod", "fchmodat", "fchmodat2"], "action": "SCMP_ACT_KILL_PROCESS"}]
        });
    });
    let (code, out, _) = rt.run_clean(&bundle);
    // The inner shell dies of SIGSYS (31) at chmod; the outer one carries on.
    assert_eq!(code, 0);
    assert_eq!(out, "before\nstatus 159\n");
}

#[test]
fn a_user_without_no_new_privs_gets_the_filter_but_not_cap_sys_admin() {
    let rt = Runtime::new();
    let mut bundle = Bundle::new(&[
        "sh",
        "-c",
        "mkdir /tmp/u || echo denied; grep -E 'CapEff|NoNewPrivs|Seccomp:' /proc/self/status",
    ]);
    bundle.edit(|c| {
        c["process"]["user"] = json!({"uid": 1000, "gid": 1000});
        c["process"]["noNewPrivileges"] = false.into();
        c["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]
        });
    });
    let (code, out, err) = rt.run_clean(&bundle);
    assert_eq!(code, 0, "{err}");
    let field = |f: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(f))
            .unwrap_or_else(|| panic!("{f} in {out}"))
            .trim()
            .to_string()
    };
    assert!(out.starts_with("denied\n"), "{out}");
    let eff = u64::from_str_radix(&field("CapEff:"), 16).unwrap();
    assert_eq!(
        eff & (1 << 21),
        0,
        "CAP_SYS_ADMIN was only kept to load the filter: {out}"
    );
    assert_eq!(
        eff,
        (1 << 5) | (1 << 10) | (1 << 29),
        "just the spec's ambient set: {out}"
    );
    assert_eq!(
        field("NoNewPrivs:"),
        "0",
        "the filter did not impose no_new_privs"
    );
    assert_eq!(field("Seccomp:"), "2", "filter mode");
}

/// A seccomp agent: receives the listener fd and the state from the runtime, then answers each
/// notified syscall with ENOTSUP (95). Returns the state message it got.
fn agent(
    listener: std::os::unix::net::UnixListener,
    answers: usize,
) -> std::thread::JoinHandle<serde_json::Value> {
    std::thread::spawn(move || {
        use libseccomp::{ScmpNotifReq, ScmpNotifResp, ScmpNotifRespFlags};
        use std::os::fd::AsRawFd;
        let (conn, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 65536];
        let (n, notify_fd) = lodge_tests::recv_fd(&conn, &mut buf);
        let fd = notify_fd.as_raw_fd();
        let state: serde_json::Value = serde_json::from_slice(&buf[..n]).unwrap();
        for _ in 0..answers {
            let req = ScmpNotifReq::receive(fd).unwrap();
            ScmpNotifResp::new_error(req.id, -95, ScmpNotifRespFlags::empty())
                .respond(fd)
                .unwrap();
        }
        state
    })
}

#[test]
fn notify_hands_the_listener_fd_to_the_agent() {
    let rt = Runtime::new();
    let sock = std::path::Path::new(lodge_tests::WORK).join(format!("{}.sock", unique_id("agent")));
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let handle = agent(listener, 1);
    let mut bundle = Bundle::new(&["sh", "-c", "mkdir /tmp/by-agent || echo refused-by-agent"]);
    let path = sock.to_str().unwrap().to_string();
    bundle.edit(|c| {
        c["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "listenerPath": path,
            "listenerMetadata": "lodge-test",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"}]
        });
    });
    let id = unique_id("notify");
    let (code, out, err) = rt.run_container(&id, &bundle);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "refused-by-agent\n");
    assert!(
        err.contains("Operation not supported"),
        "the agent's errno: {err}"
    );
    let state = handle.join().unwrap();
    assert_eq!(state["fds"], json!(["seccompFd"]));
    assert_eq!(state["metadata"], "lodge-test");
    assert_eq!(state["state"]["id"], id.as_str());
    assert!(state["pid"].as_i64().unwrap() > 0);
    rt.assert_no_residue(&id, &bundle);
    std::fs::remove_file(&sock).unwrap();
}

#[test]
fn notify_without_a_listener_is_refused() {
    let rt = Runtime::new();
    let mut bundle = Bundle::new(&["true"]);
    bundle.edit(|c| {
        c["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mount"], "action": "SCMP_ACT_NOTIFY"}]
        });
    });
    let id = unique_id("nolistener");
    let err = rt.fails(&["create", "--bundle", bundle.path(), &id]);
    assert!(err.contains("listenerPath"), "{err}");
    rt.assert_no_residue(&id, &bundle);

    // A listener path nobody listens on fails create too, and cleanly.
    bundle.edit(|c| c["linux"]["seccomp"]["listenerPath"] = "/nonexistent/agent.sock".into());
    let err = rt.fails(&["create", "--bundle", bundle.path(), &id]);
    assert!(err.contains("/nonexistent/agent.sock"), "{err}");
    rt.assert_no_residue(&id, &bundle);
}

#[test]
fn a_bad_profile_fails_create() {
    let rt = Runtime::new();
    let mut bundle = Bundle::new(&["true"]);
    bundle.edit(|c| {
        c["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["kill"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 9, "value": 1, "op": "SCMP_CMP_EQ"}]}]
        });
    });
    let id = unique_id("badprofile");
    let err = rt.fails(&["create", "--bundle", bundle.path(), &id]);
    assert!(err.contains("argument index 9"), "{err}");
    rt.assert_no_residue(&id, &bundle);
}

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

#[test]
fn notify_is_refused_clearly() {
    let rt = Runtime::new();
    let mut bundle = Bundle::new(&["true"]);
    bundle.edit(|c| {
        c["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mount"], "action": "SCMP_ACT_NOTIFY"}]
        });
    });
    let id = unique_id("notify");
    let err = rt.fails(&["create", "--bundle", bundle.path(), &id]);
    assert!(err.contains("SCMP_ACT_NOTIFY"), "{err}");
    rt.assert_no_residue(&id, &bundle);
}

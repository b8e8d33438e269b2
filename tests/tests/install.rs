//! install/install.sh and install/uninstall.sh, with every path moved into a scratch directory
//! (the environment variables the scripts document) and the supervisor this host needs (PID 1
//! is not systemd): the daemons come up and are restarted when they die, Docker's daemon.json is
//! merged into, a second run changes nothing, and uninstall takes it all back.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use lodge_tests::{runtime_bin, unique_id, WORK};

fn script(name: &str, scratch: &Path, args: &[&str]) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let out = Command::new("bash")
        .arg(root.join("install").join(name))
        .args(args)
        .env("LODGE_PREFIX", scratch.join("prefix"))
        .env("LODGE_RUN_DIR", scratch.join("run"))
        .env("LODGE_LOG_DIR", scratch.join("log"))
        .env("LODGE_STATE_DIR", scratch.join("state"))
        .env("LODGE_FS_MOUNT", scratch.join("fs"))
        .env("LODGE_SUBUID", scratch.join("subuid"))
        .env("LODGE_SUBGID", scratch.join("subgid"))
        .env("LODGE_DOCKER_CONFIG", scratch.join("daemon.json"))
        .env("LODGE_INIT", "supervisor")
        .output()
        .unwrap();
    let text = lodge_tests::combined(&out);
    assert!(out.status.success(), "{name} failed:\n{text}");
    text
}

fn pid(path: PathBuf) -> i32 {
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .parse()
        .unwrap()
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks.
    unsafe { libc::kill(pid, 0) == 0 }
}

fn answers(scratch: &Path, daemon: &str) -> bool {
    Command::new(scratch.join("prefix/bin").join(daemon))
        .arg("--socket")
        .arg(scratch.join("run").join(format!("{}.sock", &daemon[6..])))
        .arg("status")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn install_supervises_merges_and_uninstall_reverses() {
    let scratch = Path::new(WORK).join(unique_id("install"));
    std::fs::create_dir_all(&scratch).unwrap();
    std::fs::write(
        scratch.join("daemon.json"),
        r#"{"log-level": "warn", "runtimes": {"crun": {"path": "/usr/bin/crun"}}}"#,
    )
    .unwrap();
    let bins = runtime_bin().parent().unwrap().display().to_string();
    script("install.sh", &scratch, &["--bin-dir", &bins]);
    for d in ["lodge-runc", "lodge-mgr", "lodge-fs"] {
        assert!(scratch.join("prefix/bin").join(d).exists(), "{d} installed");
    }
    assert!(answers(&scratch, "lodge-mgr") && answers(&scratch, "lodge-fs"));
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(scratch.join("daemon.json")).unwrap())
            .unwrap();
    assert_eq!(config["log-level"], "warn");
    assert_eq!(config["runtimes"]["crun"]["path"], "/usr/bin/crun");
    assert_eq!(
        config["runtimes"]["lodge-runc"]["path"],
        scratch.join("prefix/bin/lodge-runc").display().to_string()
    );
    assert!(std::fs::read_to_string(scratch.join("subuid"))
        .unwrap()
        .starts_with("lodge:"));

    // Idempotent: the same supervisors, the config untouched.
    let sup = pid(scratch.join("run/mgr.supervisor.pid"));
    let out = script("install.sh", &scratch, &["--bin-dir", &bins]);
    assert!(
        out.contains("already supervised") && out.contains("unchanged"),
        "{out}"
    );
    assert_eq!(pid(scratch.join("run/mgr.supervisor.pid")), sup);

    // A daemon that dies is restarted.
    let mgr = pid(scratch.join("run/mgr.pid"));
    // SAFETY: killing the daemon we just installed.
    unsafe { libc::kill(mgr, libc::SIGKILL) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(answers(&scratch, "lodge-mgr") && pid(scratch.join("run/mgr.pid")) != mgr) {
        assert!(Instant::now() < deadline, "lodge-mgr was not restarted");
        std::thread::sleep(Duration::from_millis(100));
    }

    let fs_sup = pid(scratch.join("run/fs.supervisor.pid"));
    let daemons = [
        pid(scratch.join("run/mgr.pid")),
        pid(scratch.join("run/fs.pid")),
    ];
    script("uninstall.sh", &scratch, &["--purge"]);
    for p in [sup, fs_sup].iter().chain(&daemons) {
        assert!(!alive(*p), "process {p} left running");
    }
    assert!(!scratch.join("prefix/bin/lodge-runc").exists());
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(scratch.join("daemon.json")).unwrap())
            .unwrap();
    assert!(config["runtimes"].get("lodge-runc").is_none(), "{config}");
    assert_eq!(config["runtimes"]["crun"]["path"], "/usr/bin/crun");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&scratch.display().to_string()),
        "a mount left behind"
    );
    assert!(!std::fs::read_to_string(scratch.join("subuid"))
        .unwrap()
        .contains("lodge:"));
    std::fs::remove_dir_all(&scratch).unwrap();
}

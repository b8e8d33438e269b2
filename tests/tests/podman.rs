//! Podman as a client: lodge-runc as its OCI runtime (`--runtime`), with private storage and run
//! directories, so the host's images and containers are never touched.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use lodge_tests::{remove_tree, runtime_bin, unique_id, WORK};

struct Podman {
    dir: PathBuf,
}

impl Podman {
    fn new() -> Podman {
        let dir = std::path::Path::new(WORK).join(unique_id("podman"));
        std::fs::create_dir_all(dir.join("tmp")).unwrap();
        Podman { dir }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("podman");
        c.arg("--root")
            .arg(self.dir.join("root"))
            .arg("--runroot")
            .arg(self.dir.join("run"))
            .arg("--tmpdir")
            .arg(self.dir.join("tmp"))
            .args(["--cgroup-manager", "cgroupfs", "--events-backend", "file"])
            .args(["--storage-driver", "overlay", "--runtime"])
            .arg(runtime_bin())
            .args(args);
        c
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.command(args).stdin(Stdio::null()).output().unwrap();
        assert!(
            out.status.success(),
            "podman {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self
            .command(&["rm", "--all", "--force"])
            .stdin(Stdio::null())
            .output();
        let _ = self
            .command(&["system", "reset", "--force"])
            .stdin(Stdio::null())
            .output();
        remove_tree(&self.dir);
    }
}

#[test]
fn podman_runs_system_containers() {
    let p = Podman::new();
    let import =
        lodge_tests::feed_busybox_rootfs(&mut p.command(&["import", "-", "lodge-test/busybox"]));
    assert!(import.status.success(), "podman import");
    // Podman asks for rlimits above what this host allows (crun refuses them too).
    let limits = [
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=4096:4096",
    ];
    let script = "id -u; cat /proc/self/uid_map; grep MemTotal /proc/meminfo; echo written > /tmp/x && cat /tmp/x";
    // --rm: Podman mounts the overlay volatile; lodge-runc's own overlay gets its own work dir.
    for rm in [true, false] {
        let name = unique_id("pod");
        let mut args = vec![
            "run",
            "--network",
            "none",
            "--memory",
            "64m",
            "--name",
            &name,
        ];
        if rm {
            args.push("--rm");
        }
        args.extend(limits);
        args.extend(["lodge-test/busybox", "sh", "-c", script]);
        let out = p.ok(&args);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "0", "root inside (--rm {rm}): {out}");
        let map: Vec<u64> = lines[1]
            .split_whitespace()
            .map(|x| x.parse().unwrap())
            .collect();
        assert!(
            map[1] >= 65536 && map[2] == 65536,
            "an exclusive range: {out}"
        );
        assert_eq!(
            lines[2].split_whitespace().collect::<Vec<_>>(),
            ["MemTotal:", "65536", "kB"],
            "lodge-fs's meminfo: {out}"
        );
        assert_eq!(lines[3], "written", "{out}");
        if !rm {
            p.ok(&["rm", &name]);
        }
    }
}

//! Docker as a real client: a private dockerd (its own sockets, data root and config file, so
//! an existing daemon and /etc/docker/daemon.json are never touched) with lodge-runc as an
//! extra runtime, and an image imported from the busybox rootfs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lodge_tests::{remove_tree, runtime_bin, unique_id, WORK};

struct Dockerd {
    dir: PathBuf,
    child: Child,
}

impl Dockerd {
    fn start() -> Dockerd {
        let dir = Path::new(WORK).join(unique_id("docker"));
        std::fs::create_dir_all(&dir).unwrap();
        let config = serde_json::json!({
            "runtimes": {"lodge-runc": {"path": runtime_bin()}},
            "storage-driver": "overlay2"
        });
        std::fs::write(dir.join("daemon.json"), config.to_string()).unwrap();
        let log = std::fs::File::create(dir.join("dockerd.log")).unwrap();
        let child = Command::new("dockerd")
            .arg("--config-file")
            .arg(dir.join("daemon.json"))
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("dockerd.pid"))
            .arg("--host")
            .arg(format!("unix://{}", dir.join("docker.sock").display()))
            .args([
                "--bridge=none",
                "--iptables=false",
                "--ip6tables=false",
                "--ip-masq=false",
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("dockerd from Debian's docker.io");
        let d = Dockerd { dir, child };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !d.docker(&["version"]).status.success() {
            assert!(
                Instant::now() < deadline,
                "dockerd did not start: {}",
                d.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        d
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default()
    }

    /// Debian's client matches Debian's daemon.
    fn client_path(&self) -> &'static str {
        if Path::new("/usr/bin/docker").exists() {
            "/usr/bin/docker"
        } else {
            "docker"
        }
    }

    /// A docker client command talking to this daemon.
    fn client(&self) -> Command {
        let mut c = Command::new(self.client_path());
        c.arg("--host")
            .arg(format!("unix://{}", self.dir.join("docker.sock").display()));
        c
    }

    /// Runs `docker ARGS` under `script`, which gives the client the terminal `-it` insists on;
    /// returns what it printed.
    fn with_tty(&self, args: &str) -> String {
        in_terminal(&format!("{} {args}", self.client_line()))
    }

    /// The client and its `--host`, as a shell command line starts.
    fn client_line(&self) -> String {
        format!(
            "{} --host unix://{}",
            self.client_path(),
            self.dir.join("docker.sock").display()
        )
    }

    fn docker(&self, args: &[&str]) -> std::process::Output {
        self.client()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {args:?}: {}\n{}\n--- dockerd log tail ---\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
                .lines()
                .rev()
                .take(30)
                .collect::<Vec<_>>()
                .join("\n")
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The Debian image tests/setup.sh builds with debootstrap.
    fn import_debian(&self, tag: &str) {
        let tar = Path::new(WORK).join("images/debian-bookworm-procps.tar");
        assert!(
            tar.exists(),
            "{} is missing: tests/setup.sh builds it",
            tar.display()
        );
        self.ok(&["import", tar.to_str().unwrap(), tag]);
    }

    fn import_busybox(&self, tag: &str) {
        let out = lodge_tests::feed_busybox_rootfs(self.client().args(["import", "-", tag]));
        assert!(out.status.success(), "docker import");
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        remove_tree(&self.dir);
    }
}

#[test]
fn docker_runs_containers_with_lodge_runc() {
    let d = Dockerd::start();
    assert!(d
        .ok(&["info", "--format", "{{json .Runtimes}}"])
        .contains("lodge-runc"));
    d.import_busybox("lodge-test/busybox:latest");

    let out = d.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--runtime=lodge-runc",
        "lodge-test/busybox",
        "echo",
        "hi",
    ]);
    assert_eq!(out, "hi\n");

    // Docker's own config: its seccomp-less default caps, masked paths, /etc/hosts binds.
    let out = d.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--runtime=lodge-runc",
        "lodge-test/busybox",
        "sh",
        "-c",
        "cat /proc/1/cgroup | head -1; hostname; id -u",
    ]);
    assert_eq!(out.lines().count(), 3, "{out}");

    let name = unique_id("dk");
    let id = d.ok(&[
        "run",
        "-d",
        "--network",
        "none",
        "--runtime=lodge-runc",
        "--name",
        &name,
        "lodge-test/busybox",
        "sleep",
        "1000",
    ]);
    let id = id.trim();
    let state = d.ok(&[
        "inspect",
        "--format",
        "{{.State.Status}} {{.State.Pid}}",
        id,
    ]);
    assert!(state.starts_with("running "), "{state}");

    // docker exec goes through `lodge-runc exec --process FILE --detach`.
    assert_eq!(
        d.ok(&[
            "exec",
            &name,
            "sh",
            "-c",
            "echo exec-$((40+2)); cat /proc/1/cmdline | tr '\\0' ' '"
        ]),
        "exec-42\nsleep 1000 "
    );
    let out = d.docker(&["exec", &name, "sh", "-c", "exit 3"]);
    assert_eq!(out.status.code(), Some(3));
    // With a terminal: `script` gives the docker client the tty it insists on.
    let tty_out = d.with_tty(&format!("exec -it {name} sh -c 'tty; echo tty-ok'"));
    assert!(
        tty_out.contains("/dev/pts/") && tty_out.contains("tty-ok"),
        "docker exec -it: {tty_out}"
    );
    let tty_out = d.with_tty("run --rm -it --network none --runtime=lodge-runc lodge-test/busybox sh -c 'tty; stty size; echo run-tty-ok'");
    assert!(
        tty_out.contains("/dev/pts/0") && tty_out.contains("run-tty-ok"),
        "docker run -it: {tty_out}"
    );
    // docker top → `lodge-runc ps --format json`; pause → the freezer; update → `update --resources -`.
    let top = d.ok(&["top", &name]);
    assert!(top.contains("sleep 1000"), "{top}");
    d.ok(&["pause", &name]);
    assert_eq!(
        d.ok(&["inspect", "--format", "{{.State.Status}}", &name])
            .trim(),
        "paused"
    );
    d.ok(&["unpause", &name]);
    assert_eq!(
        d.ok(&["inspect", "--format", "{{.State.Status}}", &name])
            .trim(),
        "running"
    );
    d.ok(&["update", "--memory", "96m", "--memory-swap", "-1", &name]);
    let pid: i64 = d
        .ok(&["inspect", "--format", "{{.State.Pid}}", &name])
        .trim()
        .parse()
        .unwrap();
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let mem_path = cgroup
        .lines()
        .find_map(|l| l.split_once(":memory:").map(|(_, p)| p.to_string()));
    if let Some(mem_path) = mem_path {
        // A system container's processes run in the delegated child; the limit is its parent's.
        let mem_path = mem_path.strip_suffix("/delegated").unwrap_or(&mem_path);
        let limit = std::fs::read_to_string(format!(
            "/sys/fs/cgroup/memory{mem_path}/memory.limit_in_bytes"
        ))
        .unwrap();
        assert_eq!(limit.trim(), (96u64 << 20).to_string());
    }
    let stats = d.ok(&["stats", "--no-stream", "--format", "{{.MemUsage}}", &name]);
    assert!(stats.contains("96MiB"), "docker stats: {stats}");

    // lodge-mgr's special volumes: /var/lib/docker on the host, surviving stop/start and commit.
    let sys = unique_id("dkvol");
    d.ok(&[
        "run",
        "-d",
        "--network",
        "none",
        "--runtime=lodge-runc",
        "-e",
        "LODGE_SPECIAL_VOLUMES=TRUE",
        "--name",
        &sys,
        "lodge-test/busybox",
        "sh",
        "-c",
        "echo kept > /var/lib/docker/inner-image; sleep 1000",
    ]);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        d.ok(&[
            "exec",
            &sys,
            "grep",
            " /var/lib/docker ",
            "/proc/self/mountinfo"
        ])
        .contains("/var/lib/docker"),
        "a mount of its own"
    );
    assert_eq!(
        d.ok(&["exec", &sys, "sh", "-c", "env | grep -c LODGE_ || true"])
            .trim(),
        "0",
        "the knob is not in the environment"
    );
    d.ok(&["stop", "--time", "1", &sys]);
    d.ok(&["start", &sys]);
    assert_eq!(
        d.ok(&["exec", &sys, "cat", "/var/lib/docker/inner-image"]),
        "kept\n",
        "survives stop + start"
    );
    d.ok(&["stop", "--time", "1", &sys]);
    d.ok(&["commit", &sys, "lodge-test/committed"]);
    assert_eq!(
        d.ok(&[
            "run",
            "--rm",
            "--network",
            "none",
            "--runtime=lodge-runc",
            "lodge-test/committed",
            "cat",
            "/var/lib/docker/inner-image"
        ]),
        "kept\n",
        "copied back, so commit keeps it"
    );
    d.ok(&["rm", &sys]);

    let started = Instant::now();
    d.ok(&["stop", "--time", "2", &name]);
    assert!(started.elapsed() < Duration::from_secs(15));
    assert!(d
        .ok(&["inspect", "--format", "{{.State.Status}}", id])
        .starts_with("exited"));
    d.ok(&["rm", &name]);
    // lodge-runc's state for the container is gone.
    let root = d.dir.join("exec/runtime-lodge-runc/moby");
    assert!(!root.join(id).exists(), "state of {id} left behind");
}

/// Docker's own checks of a system container (lodge-runc's default): root inside with the
/// container's exclusive range, VM-like root (mounts under Docker's seccomp profile), ID-mapped
/// volumes, a Debian image from debootstrap, the lifecycle, and the overlay upper layer
/// shifted back when the container stops.
#[test]
fn docker_runs_system_containers() {
    use std::os::unix::fs::MetadataExt;
    let d = Dockerd::start();
    d.import_busybox("lodge-test/busybox:latest");
    d.import_debian("lodge-test/debian:bookworm");
    let run = |image: &str, script: &str| {
        d.ok(&[
            "run",
            "--rm",
            "--network",
            "none",
            "--runtime=lodge-runc",
            image,
            "sh",
            "-c",
            script,
        ])
    };

    for image in ["lodge-test/busybox", "lodge-test/debian:bookworm"] {
        let out = run(
            image,
            "id; cat /proc/self/uid_map; stat -c %u:%g / /etc/hosts; mount -t tmpfs t /tmp && echo mounted",
        );
        let lines: Vec<&str> = out.lines().collect();
        assert!(
            lines[0].starts_with("uid=0(root) gid=0(root)"),
            "{image}: {out}"
        );
        let map: Vec<u64> = lines[1]
            .split_whitespace()
            .map(|x| x.parse().unwrap())
            .collect();
        assert_eq!((map[0], map[2]), (0, 65536), "{image}: {out}");
        assert!(
            map[1] >= 65536,
            "an exclusive range, never host root: {out}"
        );
        assert_eq!(lines[2], "0:0", "{image}: the rootfs is root's: {out}");
        assert_eq!(lines[3], "0:0", "{image}: Docker's /etc/hosts too: {out}");
        assert!(
            out.contains("mounted"),
            "{image}: mount under Docker's seccomp: {out}"
        );
    }
    let out = run(
        "lodge-test/debian:bookworm",
        "dpkg-query -W -f '${Status}' coreutils; echo; apt-get --version | head -1",
    );
    assert!(out.starts_with("install ok installed"), "{out}");

    // lodge-fs: free, nproc, cpuinfo, stat and uptime see the container's limits.
    let out = d.ok(&[
        "run", "--rm", "--network", "none", "--runtime=lodge-runc", "--memory", "256m", "--cpus",
        "1.5", "--cpuset-cpus", "0", "lodge-test/debian:bookworm", "sh", "-c",
        "free -m | awk '/^Mem:/ {print \"free\", $2}'; echo nproc $(nproc); \
         echo cpuinfo $(grep -c ^processor /proc/cpuinfo); echo stat $(grep -c '^cpu[0-9]' /proc/stat); \
         echo uptime $(cut -d. -f1 /proc/uptime)",
    ]);
    let field = |k: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(k))
            .map(str::trim)
            .unwrap_or_else(|| panic!("{k}: {out}"))
            .to_string()
    };
    assert_eq!(field("free "), "256", "{out}");
    assert_eq!(field("nproc "), "1", "{out}");
    assert_eq!(field("cpuinfo "), "1", "{out}");
    assert_eq!(field("stat "), "1", "{out}");
    assert!(field("uptime ").parse::<u32>().unwrap() < 30, "{out}");

    // docker run -v: host uid N is uid N inside; root's files are root's on the host.
    let share = Path::new(WORK).join(unique_id("dkshare"));
    std::fs::create_dir_all(&share).unwrap();
    std::fs::write(share.join("users"), "x").unwrap();
    std::os::unix::fs::chown(share.join("users"), Some(1000), Some(1000)).unwrap();
    std::os::unix::fs::chown(&share, Some(1000), Some(1000)).unwrap();
    let vol = format!("{}:/data", share.display());
    let with_share = |user: &str, script: &str| {
        d.ok(&[
            "run",
            "--rm",
            "--network",
            "none",
            "--runtime=lodge-runc",
            "-v",
            &vol,
            "-u",
            user,
            "lodge-test/busybox",
            "sh",
            "-c",
            script,
        ])
    };
    let out = with_share("0:0", "stat -c %u /data/users; touch /data/by-root");
    with_share("1000:1000", "touch /data/by-1000");
    assert!(out.starts_with("1000\n"), "{out}");
    let owner = |f: &str| {
        let md = std::fs::metadata(share.join(f)).unwrap();
        (md.uid(), md.gid())
    };
    assert_eq!(owner("by-root"), (0, 0), "{out}");
    assert_eq!(owner("by-1000"), (1000, 1000), "{out}");
    remove_tree(&share);

    // The host's network namespace is refused, with a reason.
    let out = d.docker(&[
        "run",
        "--rm",
        "--network",
        "host",
        "--runtime=lodge-runc",
        "lodge-test/busybox",
        "true",
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("own network namespace"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Lifecycle with the Debian image: run -d, exec, run -it, stop, rm; the upper layer's files
    // are the container's range while it runs and the image's own IDs once it stops.
    let name = unique_id("dkdeb");
    d.ok(&[
        "run",
        "-d",
        "--network",
        "none",
        "--runtime=lodge-runc",
        "--name",
        &name,
        "lodge-test/debian:bookworm",
        "sh",
        "-c",
        "touch /etc/made-inside; exec sleep 1000",
    ]);
    assert_eq!(d.ok(&["exec", &name, "id", "-un"]), "root\n");
    let upper = d.ok(&["inspect", "-f", "{{.GraphDriver.Data.UpperDir}}", &name]);
    let made = Path::new(upper.trim()).join("etc/made-inside");
    let mut running_owner = None;
    for _ in 0..100 {
        if let Ok(md) = std::fs::metadata(&made) {
            running_owner = Some(md.uid());
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        running_owner.is_some_and(|u| u >= 65536),
        "{running_owner:?}"
    );
    let tty_out = d.with_tty(&format!("exec -it {name} bash -c 'tty; echo deb-tty-ok'"));
    assert!(tty_out.contains("deb-tty-ok"), "docker exec -it: {tty_out}");
    let tty_out = d.with_tty("run --rm -it --network none --runtime=lodge-runc lodge-test/debian:bookworm bash -c 'tty; echo deb-run-tty-ok'");
    assert!(
        tty_out.contains("deb-run-tty-ok"),
        "docker run -it: {tty_out}"
    );
    d.ok(&["stop", "--time", "1", &name]);
    assert_eq!(
        std::fs::metadata(&made).unwrap().uid(),
        0,
        "shifted back at stop"
    );
    d.ok(&["rm", &name]);
}

/// systemd under `docker run -d`: it boots, `docker stop` halts it within its 10 s and its
/// cgroups go away; `docker run -it` and `docker exec -it` give shells with job control and the
/// client's window size.
#[test]
fn docker_runs_systemd_and_interactive_shells() {
    let d = Dockerd::start();
    let tar = Path::new(WORK).join("images/debian-bookworm-systemd.tar");
    d.ok(&["import", tar.to_str().unwrap(), "lodge-test/systemd"]);
    let name = unique_id("sysd");
    let id = d
        .ok(&[
            "run",
            "-d",
            "--runtime=lodge-runc",
            "--network",
            "none",
            "--stop-signal",
            "SIGRTMIN+3",
            "--name",
            &name,
            "lodge-test/systemd",
            "/sbin/init",
        ])
        .trim()
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(90);
    let state = loop {
        let out = d.docker(&["exec", &name, "systemctl", "is-system-running"]);
        let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let booting = matches!(state.as_str(), "initializing" | "starting" | "offline" | "");
        if !booting || Instant::now() > deadline {
            break state;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(state, "running");

    // Interactive shells: job control, and the window size of the client's terminal.
    let shell = |cmd: &str| {
        in_terminal(&format!(
            // (Docker 20.10's client sends the size just after the start: a moment later it is set.)
            "stty rows 40 cols 100; {} {cmd} bash -ic 'sleep 30 & jobs; sleep 1; stty size; kill %1'",
            d.client_line()
        ))
    };
    for cmd in [
        format!("exec -it {name}"),
        "run -it --rm --runtime=lodge-runc --network none lodge-test/systemd".to_string(),
    ] {
        let out = shell(&cmd);
        assert!(
            out.contains("Running") && out.contains("sleep 30"),
            "{cmd}: {out}"
        );
        assert!(out.contains("40 100"), "{cmd}: {out}");
    }

    let cgroups = lodge_tests::cgroup_dirs(&format!("/docker/{id}"));
    assert!(
        cgroups.iter().any(|p| p.exists()),
        "the container's cgroups: {cgroups:?}"
    );
    let t = Instant::now();
    d.ok(&["stop", "-t", "10", &name]);
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "systemd halted in {:?}",
        t.elapsed()
    );
    let code = d.ok(&["inspect", "-f", "{{.State.ExitCode}}", &name]);
    assert!(
        cgroups.iter().all(|p| !p.exists()),
        "cgroups left: {cgroups:?} (exit code {code})"
    );
    d.ok(&["rm", &name]);
}

/// Docker inside a system container that Docker runs: the inner daemon's images live on a
/// lodge-mgr volume and survive `docker stop` and `docker start` of the outer container.
#[test]
fn inner_docker_images_survive_an_outer_docker_stop_and_start() {
    let d = Dockerd::start();
    let tar = Path::new(WORK).join("images/debian-bookworm-docker.tar");
    d.ok(&["import", tar.to_str().unwrap(), "lodge-test/docker"]);
    let name = unique_id("outer");
    d.ok(&[
        "run",
        "-d",
        "--runtime=lodge-runc",
        "--network",
        "none",
        "--stop-signal",
        "SIGRTMIN+3",
        "-e",
        "LODGE_SPECIAL_VOLUMES=TRUE",
        "--name",
        &name,
        "lodge-test/docker",
        "/sbin/init",
    ]);
    // The busybox rootfs goes in as a tarball on stdin.
    let inner = |script: &str| {
        let out = d
            .client()
            .args(["exec", "-i", &name, "sh", "-c", script])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let wait_for_docker =
        "for _ in $(seq 450); do docker info >/dev/null 2>&1 && break; sleep 0.2; done; ";
    let import = lodge_tests::feed_busybox_rootfs(d.client().args([
        "exec",
        "-i",
        &name,
        "sh",
        "-c",
        &format!("{wait_for_docker} docker import - inner-busybox"),
    ]));
    assert!(
        import.status.success(),
        "inner docker import: {}",
        String::from_utf8_lossy(&import.stderr)
    );
    let out = inner("docker run --rm inner-busybox echo inner-ran; docker info --format 'root {{.DockerRootDir}} {{.Driver}}'");
    assert!(out.contains("inner-ran"), "{out}");
    assert!(out.contains("root /var/lib/docker overlay2"), "{out}");
    d.ok(&["stop", "-t", "10", &name]);
    d.ok(&["start", &name]);
    let out = inner(&format!(
        "{wait_for_docker} docker images --format 'image {{{{.Repository}}}}'; docker run --rm inner-busybox echo again"
    ));
    assert!(out.contains("image inner-busybox"), "{out}");
    assert!(out.contains("again"), "{out}");
    d.ok(&["rm", "-f", &name]);
}

/// Runs the shell command `line` under `script`, which gives it the terminal `-it` insists on;
/// returns what it printed.
fn in_terminal(line: &str) -> String {
    let out = Command::new("script")
        .args(["-qec", line, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

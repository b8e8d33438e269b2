//! lodge-mgr: exclusive ranges under concurrency, pods, restarts (even SIGKILL), /etc/subuid
//! editing, exhaustion, malformed requests and non-root clients.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use lodge_ipc::mgr::{IdRange, Request, Response};
use lodge_tests::{unique_id, WORK};

fn mgr_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("LODGE_MGR") {
        return p.into();
    }
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
    ["release", "debug"]
        .iter()
        .map(|p| target.join(p).join("lodge-mgr"))
        .find(|p| p.exists())
        .expect("lodge-mgr is built")
}

struct Mgr {
    dir: PathBuf,
    child: Option<Child>,
    extra: Vec<String>,
    env: Vec<(String, PathBuf)>,
}

impl Mgr {
    fn new(subuid: &str, subgid: &str, extra: &[&str]) -> Mgr {
        Mgr::with_env(subuid, subgid, extra, |_| vec![])
    }

    /// A manager whose environment `env(dir)` gives (dir is its private directory).
    fn with_env(
        subuid: &str,
        subgid: &str,
        extra: &[&str],
        env: impl FnOnce(&Path) -> Vec<(String, PathBuf)>,
    ) -> Mgr {
        let dir = Path::new(WORK).join(unique_id("mgr"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("subuid"), subuid).unwrap();
        std::fs::write(dir.join("subgid"), subgid).unwrap();
        std::fs::write(
            dir.join("login.defs"),
            "SUB_UID_MIN 100000\nSUB_GID_MIN 100000\n",
        )
        .unwrap();
        let env = env(&dir);
        let mut m = Mgr {
            dir,
            child: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            env,
        };
        m.start();
        m
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("mgr.sock")
    }

    fn start(&mut self) {
        let child = Command::new(mgr_bin())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .arg("--socket")
            .arg(self.socket())
            .arg("--state-dir")
            .arg(self.dir.join("state"))
            .arg("--subuid")
            .arg(self.dir.join("subuid"))
            .arg("--subgid")
            .arg(self.dir.join("subgid"))
            .arg("--login-defs")
            .arg(self.dir.join("login.defs"))
            .arg("--data-root")
            .arg(self.dir.join("data"))
            .args(["--gc-interval-ms", "200"])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.join("mgr.log")).unwrap())
            .spawn()
            .unwrap();
        self.child = Some(child);
        for _ in 0..500 {
            if UnixStream::connect(self.socket()).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!(
            "lodge-mgr did not start: {}",
            std::fs::read_to_string(self.dir.join("mgr.log")).unwrap_or_default()
        );
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn ask(&self, req: &Request) -> Response {
        let mut s = UnixStream::connect(self.socket()).unwrap();
        lodge_ipc::write_frame(&mut s, req).unwrap();
        lodge_ipc::read_frame(&mut s).unwrap()
    }

    fn register(&self, id: &str, pod: Option<&str>) -> Result<IdRange, String> {
        // A real directory: lodge-mgr releases containers whose rootfs and bundle are gone.
        let bundle = self.dir.join("b");
        std::fs::create_dir_all(bundle.join("rootfs")).unwrap();
        match self.ask(&Request::Register {
            id: id.into(),
            pid: 1,
            bundle: bundle.clone(),
            rootfs: bundle.join("rootfs"),
            pod: pod.map(String::from),
            namespaces: vec![],
        }) {
            Response::Registered { range } => Ok(range),
            Response::Error { message } => Err(message),
            other => panic!("{other:?}"),
        }
    }
}

impl Drop for Mgr {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg(c.id().to_string()).status();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn subuid_files_are_edited_carefully_and_idempotently() {
    let subuid = "# people\nalice:100000:65536\nbob:165536:65536"; // no final newline
    let subgid = "alice:100000:65536\n";
    let mut m = Mgr::new(subuid, subgid, &["--reserve", "131072"]);
    let uid = std::fs::read_to_string(m.dir.join("subuid")).unwrap();
    let gid = std::fs::read_to_string(m.dir.join("subgid")).unwrap();
    assert_eq!(
        uid,
        format!("{subuid}\nlodge:231072:131072\n"),
        "after every existing block, others untouched"
    );
    assert_eq!(
        gid,
        format!("{subgid}lodge:231072:131072\n"),
        "the same start in both files"
    );
    m.kill9();
    m.start();
    assert_eq!(
        std::fs::read_to_string(m.dir.join("subuid")).unwrap(),
        uid,
        "a rerun changes nothing"
    );
    match m.ask(&Request::Status) {
        Response::Status {
            reserved,
            ranges_total,
            ..
        } => {
            assert_eq!(
                reserved,
                IdRange {
                    start: 231072,
                    size: 131072
                }
            );
            assert_eq!(ranges_total, 2);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn concurrent_registrations_get_disjoint_ranges() {
    let m = Mgr::new("", "", &[]);
    let ranges: Vec<IdRange> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..50)
            .map(|i| {
                let m = &m;
                s.spawn(move || m.register(&format!("c{i}"), None).unwrap())
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, a) in ranges.iter().enumerate() {
        assert_eq!(a.size, 65536);
        for b in &ranges[i + 1..] {
            assert!(
                a.start + a.size <= b.start || b.start + b.size <= a.start,
                "{a:?} overlaps {b:?}"
            );
        }
    }
}

#[test]
fn pods_share_restarts_keep_and_removal_frees() {
    let mut m = Mgr::new("", "", &["--reserve", "196608"]);
    let a = m.register("a", None).unwrap();
    let p1 = m.register("p1", Some("netns:4026532000")).unwrap();
    let p2 = m.register("p2", Some("netns:4026532000")).unwrap();
    assert_eq!(p1, p2, "pod members share a range");
    assert_ne!(a, p1);
    assert!(matches!(
        m.ask(&Request::Unregister {
            id: "a".into(),
            remove: false
        }),
        Response::Ok
    ));
    assert_eq!(
        m.register("a", None).unwrap(),
        a,
        "a restarted container gets its range back"
    );
    // Killed without warning, the manager comes back with every allocation.
    m.kill9();
    m.start();
    assert_eq!(m.register("p2", Some("netns:4026532000")).unwrap(), p1);
    let c = m.register("c", None).unwrap();
    let err = m.register("d", None).unwrap_err();
    assert!(err.contains("no free ID range"), "{err}");
    assert!(matches!(
        m.ask(&Request::Unregister {
            id: "c".into(),
            remove: true
        }),
        Response::Ok
    ));
    assert_eq!(
        m.register("d", None).unwrap(),
        c,
        "a removed container's range is reused"
    );
    match m.ask(&Request::List) {
        Response::List { containers } => assert_eq!(containers.len(), 4),
        other => panic!("{other:?}"),
    }
    let out = Command::new(mgr_bin())
        .arg("--socket")
        .arg(m.socket())
        .args(["list", "--format", "json"])
        .output()
        .unwrap();
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 4);
    let out = Command::new(mgr_bin())
        .arg("--socket")
        .arg(m.socket())
        .arg("status")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("4 containers, 3/3 ranges"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn malformed_requests_get_errors_and_the_daemon_keeps_serving() {
    let m = Mgr::new("", "", &[]);
    let answer = |bytes: &[u8]| -> Option<Response> {
        let mut s = UnixStream::connect(m.socket()).unwrap();
        s.write_all(bytes).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut out = vec![];
        s.read_to_end(&mut out).unwrap();
        (out.len() > 4).then(|| serde_json::from_slice(&out[4..]).unwrap())
    };
    let mut garbage = 11u32.to_be_bytes().to_vec();
    garbage.extend_from_slice(b"not json!!!");
    assert!(
        matches!(answer(&garbage), Some(Response::Error { message }) if message.contains("malformed"))
    );
    assert!(
        matches!(answer(&u32::MAX.to_be_bytes()), Some(Response::Error { message }) if message.contains("larger"))
    );
    assert!(
        answer(&[0, 0, 0, 50, b'{']).is_none(),
        "a truncated frame is dropped"
    );
    assert!(answer(&[1, 2]).is_none(), "a truncated length is dropped");
    let unknown = br#"{"type":"launch_missiles"}"#;
    let mut frame = (unknown.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(unknown);
    assert!(matches!(answer(&frame), Some(Response::Error { .. })));
    assert!(
        matches!(m.ask(&Request::Status), Response::Status { .. }),
        "still serving"
    );
}

#[test]
fn only_root_is_served() {
    let m = Mgr::new("", "", &[]);
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(mgr_bin())
        .arg("--socket")
        .arg(m.socket())
        .arg("status")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not reachable") || err.contains("only serves root"),
        "{err}"
    );
}

fn register_at(m: &Mgr, id: &str, rootfs: &Path) -> IdRange {
    match m.ask(&Request::Register {
        id: id.into(),
        pid: 1,
        bundle: rootfs.parent().unwrap().into(),
        rootfs: rootfs.into(),
        pod: None,
        namespaces: vec![],
    }) {
        Response::Registered { range } => range,
        other => panic!("{other:?}"),
    }
}

fn volumes_of(m: &Mgr, id: &str, uid: u32) -> Vec<lodge_ipc::mgr::VolumeMount> {
    match m.ask(&Request::PrepareVolumes {
        id: id.into(),
        uid,
        gid: uid,
    }) {
        Response::Volumes { mounts } => mounts,
        other => panic!("{other:?}"),
    }
}

#[test]
fn volumes_preload_persist_copy_back_and_go() {
    use std::os::unix::fs::MetadataExt;
    let mut m = Mgr::new("", "", &[]);
    let rootfs = m.dir.join("bundle/rootfs");
    std::fs::create_dir_all(rootfs.join("var/lib/docker/image")).unwrap();
    std::fs::write(rootfs.join("var/lib/docker/image/marker"), "from the image").unwrap();
    register_at(&m, "sys", &rootfs);
    let vols = volumes_of(&m, "sys", 300000);
    assert_eq!(
        vols.len(),
        7,
        "docker, containerd, kubelet, k3s, rke2, k0s, buildkit"
    );
    let docker = vols
        .iter()
        .find(|v| v.destination == Path::new("/var/lib/docker"))
        .unwrap()
        .source
        .clone();
    assert_eq!(
        std::fs::read_to_string(docker.join("image/marker")).unwrap(),
        "from the image",
        "preloaded"
    );
    assert_eq!(
        std::fs::metadata(&docker).unwrap().uid(),
        300000,
        "owned by the container's root"
    );
    std::fs::write(docker.join("pulled"), "an inner image").unwrap();

    // Stop: copied back into the rootfs (docker commit, stop/start keep inner images).
    assert!(matches!(
        m.ask(&Request::Unregister {
            id: "sys".into(),
            remove: false
        }),
        Response::Ok
    ));
    assert_eq!(
        std::fs::read_to_string(rootfs.join("var/lib/docker/pulled")).unwrap(),
        "an inner image"
    );
    // SIGKILL and restart: the volume and its contents are still the container's.
    m.kill9();
    m.start();
    register_at(&m, "sys", &rootfs);
    let again = volumes_of(&m, "sys", 300000);
    assert_eq!(again, vols, "the same volumes after a restart");
    assert!(docker.join("pulled").exists());
    // Removed: the volumes go.
    assert!(matches!(
        m.ask(&Request::Unregister {
            id: "sys".into(),
            remove: true
        }),
        Response::Ok
    ));
    assert!(!docker.exists());
}

#[test]
fn a_removed_rootfs_releases_the_container() {
    let m = Mgr::new("", "", &[]);
    let bundle = m.dir.join("gone-bundle");
    std::fs::create_dir_all(bundle.join("rootfs")).unwrap();
    register_at(&m, "gone", &bundle.join("rootfs"));
    let vols = volumes_of(&m, "gone", 0);
    // A stopped container's unmounted rootfs is not a removal.
    std::fs::remove_dir(bundle.join("rootfs")).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(vols[0].source.exists(), "kept while the bundle is there");
    std::fs::remove_dir_all(&bundle).unwrap();
    for _ in 0..50 {
        std::thread::sleep(std::time::Duration::from_millis(100));
        if let Response::List { containers } = m.ask(&Request::List) {
            if containers.is_empty() {
                assert!(vols.iter().all(|v| !v.source.exists()), "volumes destroyed");
                return;
            }
        }
    }
    panic!("the container whose rootfs was removed is still registered");
}

#[test]
fn ready_is_notified_to_systemd() {
    let mut notify = None;
    let m = Mgr::with_env("", "", &[], |dir| {
        let path = dir.join("notify.sock");
        let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        notify = Some(sock);
        vec![("NOTIFY_SOCKET".into(), path)]
    });
    let mut buf = [0u8; 64];
    let n = notify.unwrap().recv(&mut buf).expect("READY=1 within 10 s");
    assert_eq!(&buf[..n], b"READY=1");
    assert!(
        matches!(m.ask(&Request::Status), Response::Status { .. }),
        "serving once it said ready"
    );
}

#[test]
fn running_containers_survive_a_sigkilled_manager() {
    let mut m = Mgr::new("", "", &[]);
    let rt = lodge_tests::Runtime::new();
    let bundle = lodge_tests::Bundle::new(&["sleep", "1000"]);
    let id = unique_id("survivor");
    let sock = m.socket();
    let sock = sock.to_str().unwrap();
    rt.ok(&[
        "--mgr-socket",
        sock,
        "run",
        "-d",
        "--bundle",
        bundle.path(),
        &id,
    ]);
    let listed = |m: &Mgr| match m.ask(&Request::List) {
        Response::List { containers } => containers,
        other => panic!("{other:?}"),
    };
    let before = listed(&m);
    assert_eq!(before.len(), 1);
    assert_eq!(before[0].id, id);
    assert!(
        before[0].namespaces.iter().any(|n| n.starts_with("net:")),
        "{:?}",
        before[0].namespaces
    );
    m.kill9();
    m.start();
    let after = listed(&m);
    assert_eq!(
        (after[0].id.as_str(), after[0].range, after[0].pid),
        (id.as_str(), before[0].range, before[0].pid)
    );
    assert_eq!(rt.status(&id), "running", "the container did not notice");
    rt.ok(&["--mgr-socket", sock, "delete", "--force", &id]);
    assert!(listed(&m).is_empty(), "unregistered at delete");
    rt.assert_no_residue(&id, &bundle);
}

#[test]
fn special_volumes_through_lodge_runc() {
    let m = Mgr::new("", "", &[]);
    let rt = lodge_tests::Runtime::new();
    let mut bundle = lodge_tests::Bundle::new(&[
        "sh",
        "-c",
        "cat /var/lib/docker/preloaded; ls /var/lib/docker; echo inner > /var/lib/docker/made-inside; \
         env | grep -c LODGE_; stat -c %u /var/lib/docker/preloaded",
    ]);
    let docker_dir = bundle.rootfs().join("var/lib/docker");
    std::fs::create_dir_all(&docker_dir).unwrap();
    std::fs::write(docker_dir.join("preloaded"), "from the image\n").unwrap();
    for d in [
        "containerd",
        "kubelet",
        "rancher/k3s",
        "rancher/rke2",
        "k0s",
        "buildkit",
    ] {
        std::fs::create_dir_all(bundle.rootfs().join("var/lib").join(d)).unwrap();
    }
    bundle.with_userns(600000);
    bundle.edit(|c| {
        c["root"]["readonly"] = false.into();
        c["process"]["env"]
            .as_array_mut()
            .unwrap()
            .push("LODGE_SPECIAL_VOLUMES=TRUE".into());
    });
    let sock = m.socket();
    let sock = sock.to_str().unwrap();
    let id = unique_id("sysvol");
    let stdout = rt.ok(&["--mgr-socket", sock, "run", "--bundle", bundle.path(), &id]);
    assert_eq!(
        stdout, "from the image\npreloaded\n0\n0\n",
        "preloaded, knob removed, ID-mapped to the container's root"
    );

    // Stopped: copied back into the rootfs, the volume kept.
    assert_eq!(
        std::fs::read_to_string(docker_dir.join("made-inside")).unwrap(),
        "inner\n"
    );
    let vols = match m.ask(&Request::List) {
        Response::List { containers } => {
            containers
                .into_iter()
                .find(|c| c.id == id)
                .expect("kept while the bundle exists")
                .volumes
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(vols.len(), 7);
    // Restarted: the same volume, with what it held.
    std::fs::remove_file(docker_dir.join("made-inside")).unwrap();
    let out = rt.run(&["--mgr-socket", sock, "run", "--bundle", bundle.path(), &id]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("made-inside"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Removed by its engine: the manager lets go of it and its volumes.
    drop(bundle);
    for _ in 0..50 {
        std::thread::sleep(std::time::Duration::from_millis(100));
        if vols.iter().all(|v| !v.source.exists()) {
            return;
        }
    }
    panic!("volumes of a removed container are still there");
}

#[test]
fn knobs_are_checked() {
    let m = Mgr::new("", "", &[]);
    let rt = lodge_tests::Runtime::new();
    let sock = m.socket();
    let sock = sock.to_str().unwrap();
    for (env, flag, expect) in [
        (
            "LODGE_NO_SUCH_KNOB=1",
            None,
            "unknown knob LODGE_NO_SUCH_KNOB",
        ),
        (
            "LODGE_SPECIAL_VOLUMES=maybe",
            None,
            "expected TRUE or FALSE",
        ),
        (
            "LODGE_SPECIAL_VOLUMES=TRUE",
            Some("--no-mgr"),
            "not available with --no-mgr",
        ),
    ] {
        let mut bundle = lodge_tests::Bundle::new(&["true"]);
        bundle.edit(|c| c["process"]["env"].as_array_mut().unwrap().push(env.into()));
        let id = unique_id("knob");
        let mut args = vec!["--mgr-socket", sock];
        args.extend(flag);
        args.extend(["create", "--bundle", bundle.path(), &id]);
        let err = rt.fails(&args);
        assert!(err.contains(expect), "{env}: {err}");
        rt.assert_no_residue(&id, &bundle);
    }
}

#[test]
fn system_container_mode_first_part() {
    use std::os::unix::fs::MetadataExt;
    let m = Mgr::new("", "", &[]);
    let rt = lodge_tests::Runtime::new();
    let mut bundle = lodge_tests::Bundle::new(&[
        "sh",
        "-c",
        "cat /proc/self/uid_map; grep CapEff /proc/self/status; stat -c %u /bin/busybox; touch /made-inside && stat -c %u /made-inside; readlink /dev/kmsg || stat -c %t:%T /dev/kmsg",
    ]);
    bundle.edit(|c| {
        c["root"]["readonly"] = false.into();
        c["process"]["env"]
            .as_array_mut()
            .unwrap()
            .push("LODGE_SYSCONT_MODE=TRUE".into());
    });
    let sock = m.socket();
    let sock = sock.to_str().unwrap();
    let id = unique_id("syscont");
    let stdout = rt.ok(&["--mgr-socket", sock, "run", "--bundle", bundle.path(), &id]);
    let lines: Vec<&str> = stdout.lines().collect();
    let map: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(map[0], "0");
    assert_ne!(
        map[1], "0",
        "an exclusive range from lodge-mgr, never host root"
    );
    assert_eq!(map[2], "65536");
    // A new user namespace starts with a full bounding set: root there gets every capability
    // the kernel has (CAP_SYS_RESOURCE too, which the host runtime lacks), all confined to it.
    let last: u32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let full = format!("{:016x}", (1u64 << (last + 1)) - 1);
    assert_eq!(
        lines[1].split_whitespace().nth(1),
        Some(full.as_str()),
        "root gets every capability"
    );
    assert_eq!(
        lines[2], "0",
        "the image's root-owned files are the container root's (ID-mapped rootfs)"
    );
    assert_eq!(lines[3], "0");
    assert_eq!(
        std::fs::metadata(bundle.rootfs().join("made-inside"))
            .unwrap()
            .uid(),
        0,
        "written back unshifted"
    );
    assert_eq!(lines[4], "1:3", "/dev/kmsg is /dev/null");
    rt.assert_no_residue(&id, &bundle);

    // Sharing the host's pid namespace is refused.
    bundle.edit(|c| {
        c["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .retain(|n| n["type"] != "pid")
    });
    let err = rt.fails(&[
        "--mgr-socket",
        sock,
        "create",
        "--bundle",
        bundle.path(),
        &id,
    ]);
    assert!(err.contains("own pid namespace"), "{err}");
    rt.assert_no_residue(&id, &bundle);
}

#[test]
fn system_container_chown_fallback_is_reverted() {
    use std::os::unix::fs::MetadataExt;
    let m = Mgr::new("", "", &[]);
    let rt = lodge_tests::Runtime::new();
    let mut bundle = lodge_tests::Bundle::new(&[
        "sh",
        "-c",
        "stat -c %u /bin/busybox; touch /made-inside; stat -c %u /made-inside",
    ]);
    bundle.edit(|c| {
        c["root"]["readonly"] = false.into();
        let env = c["process"]["env"].as_array_mut().unwrap();
        env.push("LODGE_SYSCONT_MODE=TRUE".into());
        env.push("LODGE_CHOWN_ROOTFS=TRUE".into());
    });
    let sock = m.socket();
    let sock = sock.to_str().unwrap();
    let id = unique_id("chown");
    rt.ok(&[
        "--mgr-socket",
        sock,
        "create",
        "--bundle",
        bundle.path(),
        &id,
    ]);
    let offset = std::fs::metadata(bundle.rootfs().join("bin/busybox"))
        .unwrap()
        .uid();
    assert!(
        offset >= 65536,
        "shifted into the container's range on disk while it exists: {offset}"
    );
    rt.ok(&["--mgr-socket", sock, "start", &id]);
    rt.wait_status(&id, "stopped");
    rt.ok(&["--mgr-socket", sock, "delete", &id]);
    assert_eq!(
        std::fs::metadata(bundle.rootfs().join("bin/busybox"))
            .unwrap()
            .uid(),
        0,
        "shifted back at delete"
    );
    assert_eq!(
        std::fs::metadata(bundle.rootfs().join("made-inside"))
            .unwrap()
            .uid(),
        0,
        "and so is what the container wrote"
    );
    rt.assert_no_residue(&id, &bundle);
}

#[test]
fn halt_stops_each_init_with_its_signal_and_kills_the_deaf() {
    let m = Mgr::new("", "", &[]);
    let rt = lodge_tests::Runtime::system();
    let sock = m.socket();
    let sock = sock.to_str().unwrap();
    // An init named systemd that halts on SIGRTMIN+3 only (as systemd does: SIGTERM re-executes
    // it), one that stops on SIGTERM, and one with no handler at all (a pid namespace's init
    // ignores what it does not handle).
    let mut systemd = lodge_tests::Bundle::new(&["/sbin/systemd"]);
    std::fs::create_dir_all(systemd.rootfs().join("sbin")).unwrap();
    std::fs::write(
        systemd.rootfs().join("sbin/systemd"),
        "#!/bin/sh\ntrap '' TERM\ntrap 'echo halted > /halted; exit 0' 37\nwhile :; do sleep 0.1; done\n",
    )
    .unwrap();
    std::fs::set_permissions(
        systemd.rootfs().join("sbin/systemd"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    systemd.edit(|c| c["root"]["readonly"] = false.into());
    let polite = lodge_tests::Bundle::new(&[
        "sh",
        "-c",
        "trap 'exit 0' TERM; while :; do sleep 0.1; done",
    ]);
    let deaf = lodge_tests::Bundle::new(&["sleep", "1000"]);
    let ids: Vec<String> = ["halt-systemd", "halt-polite", "halt-deaf"]
        .iter()
        .map(|p| unique_id(p))
        .collect();
    for (id, b) in ids.iter().zip([&systemd, &polite, &deaf]) {
        rt.ok(&["--mgr-socket", sock, "run", "-d", "--bundle", b.path(), id]);
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let started = std::time::Instant::now();
    let out = Command::new(mgr_bin())
        .args(["--socket", sock, "halt", "--timeout", "3"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(text.trim(), "halted 2, killed after 3 s 1", "{text}");
    assert!(started.elapsed() < std::time::Duration::from_secs(6));
    assert_eq!(
        std::fs::read_to_string(systemd.rootfs().join("halted")).unwrap_or_default(),
        "halted\n",
        "systemd got SIGRTMIN+3"
    );
    for (id, b) in ids.iter().zip([&systemd, &polite, &deaf]) {
        assert_eq!(rt.status(id), "stopped", "{id}");
        rt.ok(&["--mgr-socket", sock, "delete", id]);
        rt.assert_no_residue(id, b);
    }
}

//! Helpers for the black-box integration suite: bundles built from busybox-static, a runtime
//! wrapper with its own `--root`, console sockets, and residue checks.
//!
//! Every test drives the real `lodge-runc` binary (`LODGE_RUNC`, or the workspace's build).

use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use serde_json::Value;

pub const WORK: &str = "/var/tmp/lodge-tests";

/// The lodge-runc binary under test.
pub fn runtime_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("LODGE_RUNC") {
        return PathBuf::from(p);
    }
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
    for profile in ["release", "debug"] {
        let p = target.join(profile).join("lodge-runc");
        if p.exists() {
            return p.canonicalize().unwrap();
        }
    }
    panic!("lodge-runc is not built: run `cargo build --release` or set LODGE_RUNC");
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// An id unique within this machine's test runs: `prefix-PID-N`.
pub fn unique_id(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A rootfs holding busybox-static and its applets, built once and copied into each bundle.
pub fn busybox_template() -> &'static Path {
    static TEMPLATE: OnceLock<PathBuf> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let dir = Path::new(WORK).join("busybox-rootfs");
        if dir.join("bin/sh").exists() {
            return dir;
        }
        let busybox = Path::new("/bin/busybox");
        assert!(busybox.exists(), "busybox-static is not installed (apt-get install busybox-static)");
        let tmp = Path::new(WORK).join(format!("busybox-rootfs.tmp{}", std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        for d in ["bin", "proc", "sys", "dev", "etc", "tmp", "root", "home/user"] {
            fs::create_dir_all(tmp.join(d)).unwrap();
        }
        fs::copy(busybox, tmp.join("bin/busybox")).unwrap();
        let list = Command::new(busybox).arg("--list").output().unwrap();
        for applet in String::from_utf8_lossy(&list.stdout).lines() {
            if applet != "busybox" {
                let _ = std::os::unix::fs::symlink("busybox", tmp.join("bin").join(applet));
            }
        }
        fs::write(tmp.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n").unwrap();
        fs::write(tmp.join("etc/group"), "root:x:0:\ntty:x:5:\nuser:x:1000:\nnogroup:x:65534:\n").unwrap();
        fs::set_permissions(tmp.join("tmp"), std::os::unix::fs::PermissionsExt::from_mode(0o1777)).unwrap();
        // Another test process may have won the race; either copy is fine.
        if fs::rename(&tmp, &dir).is_err() {
            let _ = fs::remove_dir_all(&tmp);
        }
        dir
    })
}

/// A bundle directory: a copy of the busybox rootfs and a config.json to edit.
pub struct Bundle {
    pub dir: PathBuf,
    pub config: Value,
}

impl Bundle {
    /// A bundle with `lodge-runc spec`'s config, terminal off, running `args`.
    pub fn new(args: &[&str]) -> Bundle {
        Self::in_dir(fresh_bundle_dir("b"), args)
    }

    /// A bundle whose rootfs is an image tarball (tests/setup.sh builds them with debootstrap).
    pub fn from_image(tar: &Path, args: &[&str]) -> Bundle {
        assert!(
            tar.exists(),
            "{} is missing: tests/setup.sh builds it",
            tar.display()
        );
        let dir = Path::new(WORK).join("bundles").join(unique_id("img"));
        fs::create_dir_all(dir.join("rootfs")).unwrap();
        let st = Command::new("tar")
            .arg("-xf")
            .arg(tar)
            .arg("-C")
            .arg(dir.join("rootfs"))
            .status()
            .unwrap();
        assert!(st.success(), "extracting {}", tar.display());
        Self::in_dir(dir, args)
    }

    fn in_dir(dir: PathBuf, args: &[&str]) -> Bundle {
        let out = Command::new(runtime_bin())
            .arg("spec")
            .arg("--bundle")
            .arg(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "lodge-runc spec: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut config: Value =
            serde_json::from_slice(&fs::read(dir.join("config.json")).unwrap()).unwrap();
        config["process"]["terminal"] = false.into();
        config["process"]["args"] = args.iter().map(|a| Value::from(*a)).collect();
        let mut b = Bundle { dir, config };
        b.save();
        b
    }

    /// A bundle whose config.json is exactly what `lodge-runc spec [--rootless]` wrote.
    pub fn from_spec_command(rootless: bool) -> Bundle {
        let dir = fresh_bundle_dir("s");
        let mut cmd = Command::new(runtime_bin());
        cmd.arg("spec").current_dir(&dir);
        if rootless {
            cmd.arg("--rootless");
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "lodge-runc spec: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let config = serde_json::from_slice(&fs::read(dir.join("config.json")).unwrap()).unwrap();
        Bundle { dir, config }
    }

    pub fn edit(&mut self, f: impl FnOnce(&mut Value)) -> &mut Self {
        f(&mut self.config);
        self.save();
        self
    }

    pub fn save(&mut self) {
        fs::write(
            self.dir.join("config.json"),
            serde_json::to_vec_pretty(&self.config).unwrap(),
        )
        .unwrap();
    }

    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }

    /// Adds a new user namespace mapping container 0..65536 to host `base`..
    pub fn with_userns(&mut self, base: u32) -> &mut Self {
        self.edit(|c| {
            c["linux"]["namespaces"]
                .as_array_mut()
                .unwrap()
                .push(serde_json::json!({"type": "user"}));
            let map = serde_json::json!([{"containerID": 0, "hostID": base, "size": 65536}]);
            c["linux"]["uidMappings"] = map.clone();
            c["linux"]["gidMappings"] = map;
        })
    }

    pub fn path(&self) -> &str {
        self.dir.to_str().unwrap()
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        remove_tree(&self.dir);
    }
}

/// A new bundle directory holding a copy of the busybox rootfs.
fn fresh_bundle_dir(prefix: &str) -> PathBuf {
    let dir = Path::new(WORK).join("bundles").join(unique_id(prefix));
    fs::create_dir_all(&dir).unwrap();
    let st = Command::new("cp")
        .arg("-a")
        .arg(busybox_template())
        .arg(dir.join("rootfs"))
        .status()
        .unwrap();
    assert!(st.success(), "copying the busybox rootfs");
    dir
}

/// Removes a directory tree without ever walking into a mount: whatever is mounted below it is
/// unmounted first, deepest first, and nothing is removed while a mount remains.
pub fn remove_tree(dir: &Path) {
    let mut mounts = mounts_under(dir);
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in mounts {
        let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
    }
    if mounts_under(dir).is_empty() {
        let _ = Command::new("rm")
            .arg("-rf")
            .arg("--one-file-system")
            .arg(dir)
            .status();
    }
}

/// Mount points on the host at or below `path`.
pub fn mounts_under(path: &Path) -> Vec<String> {
    let p = path.to_str().unwrap();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(String::from))
        .filter(|m| m == p || m.starts_with(&format!("{p}/")))
        .collect()
}

/// The rest of the line of `out` that starts with `key` (test scripts print `key value` lines).
/// A command's stdout and stderr together, as text.
pub fn combined(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn field<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("{key} missing from:\n{out}"))
        .trim()
}

/// lodge-runc with a private `--root`, so tests never see each other's containers. `new()` runs
/// plain OCI containers (`--no-syscont`: the runc-compatible behaviour under test);
/// `system()` runs lodge-runc as it is by default, making system containers.
pub struct Runtime {
    pub root: PathBuf,
    pub system: bool,
}

impl Default for Runtime {
    fn default() -> Self {
        Self::new()
    }
}

impl Runtime {
    pub fn new() -> Runtime {
        let root = Path::new(WORK).join("roots").join(unique_id("r"));
        Runtime {
            root,
            system: false,
        }
    }

    pub fn system() -> Runtime {
        let mut rt = Runtime::new();
        rt.system = true;
        rt
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(runtime_bin());
        c.arg("--root").arg(&self.root);
        if !self.system {
            c.arg("--no-syscont");
        }
        c.args(args).stdin(Stdio::null());
        c
    }

    /// Runs lodge-runc to completion. Output goes through files, not pipes: a container's init
    /// inherits them and would hold a pipe open long after `create` or `run -d` returned.
    pub fn run(&self, args: &[&str]) -> Output {
        let dir = Path::new(WORK).join("out");
        fs::create_dir_all(&dir).unwrap();
        let base = dir.join(unique_id("o"));
        let (out_path, err_path) = (base.with_extension("out"), base.with_extension("err"));
        let status = self
            .command(args)
            .stdout(fs::File::create(&out_path).unwrap())
            .stderr(fs::File::create(&err_path).unwrap())
            .status()
            .expect("running lodge-runc");
        let output = Output {
            status,
            stdout: fs::read(&out_path).unwrap_or_default(),
            stderr: fs::read(&err_path).unwrap_or_default(),
        };
        let _ = fs::remove_file(out_path);
        let _ = fs::remove_file(err_path);
        output
    }

    /// Runs and expects success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "lodge-runc {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs and expects failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "lodge-runc {args:?} should have failed; stdout: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Runs `script` with sh in container `id` (exec); stdout and stderr together.
    pub fn sh(&self, id: &str, script: &str) -> String {
        let out = self.run(&["exec", id, "sh", "-c", script]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    pub fn state(&self, id: &str) -> Value {
        serde_json::from_str(&self.ok(&["state", id])).expect("state prints JSON")
    }

    pub fn status(&self, id: &str) -> String {
        self.state(id)["status"].as_str().unwrap().to_string()
    }

    /// Runs a container in the foreground; returns (exit code, stdout, stderr).
    pub fn run_container(&self, id: &str, bundle: &Bundle) -> (i32, String, String) {
        let out = self.run(&["run", "--bundle", bundle.path(), id]);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs a container in the foreground under a fresh id and checks it left nothing behind;
    /// returns (exit code, stdout, stderr).
    pub fn run_clean(&self, bundle: &Bundle) -> (i32, String, String) {
        let id = unique_id("c");
        let r = self.run_container(&id, bundle);
        self.assert_no_residue(&id, bundle);
        r
    }

    /// Waits until `id` reaches `status` (up to 10 s).
    pub fn wait_status(&self, id: &str, status: &str) {
        for _ in 0..1000 {
            if self.status(id) == status {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("container {id} never became {status}: {}", self.status(id));
    }

    /// Asserts `id` left nothing on the host: no state, no cgroup, no mount under the bundle.
    pub fn assert_no_residue(&self, id: &str, bundle: &Bundle) {
        assert!(
            !self.root.join(id).exists(),
            "state dir of {id} left behind"
        );
        for dir in cgroup_dirs(&format!("/lodge/{id}")) {
            assert!(!dir.exists(), "cgroup {} left behind", dir.display());
        }
        assert_eq!(
            mounts_under(&bundle.dir),
            Vec::<String>::new(),
            "mounts left under the bundle"
        );
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Ok(entries) = fs::read_dir(&self.root) {
            for e in entries.flatten() {
                let id = e.file_name().to_string_lossy().into_owned();
                let _ = self.run(&["delete", "--force", &id]);
            }
        }
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// One host directory per mounted cgroup hierarchy for an absolute cgroup path.
pub fn cgroup_dirs(path: &str) -> Vec<PathBuf> {
    hierarchies()
        .into_iter()
        .map(|(mp, _)| mp.join(path.trim_start_matches('/')))
        .collect()
}

/// (mount point, controllers) of every cgroup hierarchy; controllers empty for cgroup2.
pub fn hierarchies() -> Vec<(PathBuf, Vec<String>)> {
    let mut out: Vec<(PathBuf, Vec<String>)> = vec![];
    for line in fs::read_to_string("/proc/self/mountinfo").unwrap().lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let mp = PathBuf::from(pre.split(' ').nth(4).unwrap());
        let post: Vec<&str> = post.split(' ').collect();
        let ctrls: Vec<String> = match post[0] {
            "cgroup2" => vec![],
            "cgroup" => post[2]
                .split(',')
                .filter(|o| *o != "rw" && *o != "ro" && *o != "relatime")
                .map(String::from)
                .collect(),
            _ => continue,
        };
        if !out.iter().any(|(_, c)| *c == ctrls) {
            out.push((mp, ctrls));
        }
    }
    out
}

/// Where `controller`'s files live for cgroup `path`: (directory, is v2).
pub fn controller_dir(controller: &str, path: &str) -> (PathBuf, bool) {
    let hs = hierarchies();
    if let Some((mp, _)) = hs.iter().find(|(_, c)| c.iter().any(|x| x == controller)) {
        return (mp.join(path.trim_start_matches('/')), false);
    }
    let (mp, _) = hs
        .iter()
        .find(|(_, c)| c.is_empty())
        .expect("a cgroup2 hierarchy");
    (mp.join(path.trim_start_matches('/')), true)
}

/// A unix socket that receives the pty master from `--console-socket`.
pub struct ConsoleSocket {
    pub path: PathBuf,
    listener: UnixListener,
}

impl ConsoleSocket {
    pub fn new() -> ConsoleSocket {
        let path = Path::new(WORK).join(format!("{}.sock", unique_id("console")));
        let listener = UnixListener::bind(&path).unwrap();
        ConsoleSocket { path, listener }
    }

    pub fn path(&self) -> &str {
        self.path.to_str().unwrap()
    }

    /// Accepts the runtime's connection and returns the pty master it sends.
    pub fn receive_master(&self) -> fs::File {
        let (conn, _) = self.listener.accept().unwrap();
        let mut buf = [0u8; 4096];
        fs::File::from(recv_fd(&conn, &mut buf).1)
    }
}

impl Default for ConsoleSocket {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Receives one message into `buf` and the fd attached to it (SCM_RIGHTS); panics without one.
pub fn recv_fd(conn: &std::os::unix::net::UnixStream, buf: &mut [u8]) -> (usize, OwnedFd) {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(
        conn.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::empty(),
    )
    .unwrap();
    let fd = msg.cmsgs().unwrap().find_map(|c| match c {
        ControlMessageOwned::ScmRights(f) => f.first().copied(),
        _ => None,
    });
    // SAFETY: the fd was just received and is ours.
    (msg.bytes, unsafe {
        OwnedFd::from_raw_fd(fd.expect("an fd attached to the message"))
    })
}

/// Reads a pty master until the slave side is closed (EIO) or `until` appears.
pub fn read_pty(master: &mut fs::File, until: &str) -> String {
    use std::io::Read;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match master.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
        if !until.is_empty() && String::from_utf8_lossy(&out).contains(until) {
            break;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A system container running in the background for a test: deleted, and checked for
/// residue, when dropped.
pub struct Running {
    pub rt: Runtime,
    pub id: String,
    pub bundle: Bundle,
}

impl Running {
    /// Starts `bundle` detached, as lodge-runc runs it by default (a system container).
    pub fn system(bundle: Bundle, prefix: &str) -> Running {
        let rt = Runtime::system();
        let id = unique_id(prefix);
        rt.ok(&["run", "-d", "--bundle", bundle.path(), &id]);
        Running { rt, id, bundle }
    }

    /// Runs `script` as root in the container; stdout and stderr together.
    pub fn sh(&self, script: &str) -> String {
        self.rt.sh(&self.id, script)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.rt.ok(&["delete", "--force", &self.id]);
        self.rt.assert_no_residue(&self.id, &self.bundle);
    }
}

/// Copies the busybox rootfs to `dest` (an inner image: no registry is reachable).
pub fn copy_busybox_rootfs(dest: &Path) {
    let st = Command::new("cp")
        .arg("-a")
        .arg(busybox_template())
        .arg(dest)
        .status()
        .unwrap();
    assert!(
        st.success(),
        "copying the busybox rootfs to {}",
        dest.display()
    );
}

/// Runs `importer` with the busybox rootfs as a tarball on its stdin (`docker import -` and the
/// like); its output.
pub fn feed_busybox_rootfs(importer: &mut Command) -> Output {
    let mut tar = Command::new("tar")
        .arg("-C")
        .arg(busybox_template())
        .args(["-c", "."])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = importer.stdin(tar.stdout.take().unwrap()).output().unwrap();
    assert!(tar.wait().unwrap().success(), "tar of the busybox rootfs");
    out
}

/// A lodge-fs of a test's own, on a scratch socket and mountpoint, stopped for good (and so
/// unmounted) however the test ends. `lodge-runc --fs-socket <socket>` registers containers
/// with it.
pub struct PrivateFs {
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub child: std::process::Child,
    args: Vec<String>,
}

pub fn lodge_fs_bin() -> PathBuf {
    std::env::var("LODGE_FS")
        .map_or_else(|_| runtime_bin().with_file_name("lodge-fs"), PathBuf::from)
}

impl PrivateFs {
    pub fn start(args: &[&str]) -> PrivateFs {
        let dir = Path::new(WORK).join(unique_id("fs"));
        fs::create_dir_all(dir.join("mnt")).unwrap();
        let socket = dir.join("fs.sock");
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let child = PrivateFs::spawn(&dir, &socket, &args);
        let fs = PrivateFs {
            dir,
            socket,
            child,
            args,
        };
        fs.wait_ready();
        fs
    }

    fn spawn(dir: &Path, socket: &Path, args: &[String]) -> std::process::Child {
        Command::new(lodge_fs_bin())
            .arg("--socket")
            .arg(socket)
            .arg("--mountpoint")
            .arg(dir.join("mnt"))
            .args(args)
            .stderr(fs::File::create(dir.join("log")).map_or(Stdio::null(), Stdio::from))
            .spawn()
            .unwrap()
    }

    fn wait_ready(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while self.status().is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "private lodge-fs did not start: {}",
                fs::read_to_string(self.dir.join("log")).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Sends `signal` to the daemon and waits for it to end.
    pub fn signal(&mut self, signal: i32) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, signal) };
        let _ = self.child.wait();
    }

    /// Starts the daemon again with the same arguments (after `signal`).
    pub fn start_again(&mut self) {
        self.child = PrivateFs::spawn(&self.dir, &self.socket, &self.args);
        self.wait_ready();
    }

    /// `lodge-fs status` as JSON, once it answers.
    pub fn status(&self) -> Option<Value> {
        let out = Command::new(lodge_fs_bin())
            .arg("--socket")
            .arg(&self.socket)
            .arg("status")
            .output()
            .ok()?;
        serde_json::from_slice(&out.stdout).ok()
    }

    pub fn socket(&self) -> String {
        self.socket.display().to_string()
    }

    /// Starts `bundle` detached as `id` with lodge-runc registering it here.
    pub fn run_detached(&self, rt: &Runtime, bundle: &Bundle, id: &str) {
        let socket = self.socket();
        rt.ok(&[
            "--fs-socket",
            &socket,
            "run",
            "-d",
            "--bundle",
            bundle.path(),
            id,
        ]);
    }
}

impl Drop for PrivateFs {
    fn drop(&mut self) {
        // `stop` unmounts and lets go of everything even with containers registered (SIGTERM
        // would leave their files to a next lodge-fs).
        let _ = Command::new(lodge_fs_bin())
            .arg("--socket")
            .arg(&self.socket)
            .arg("stop")
            .output();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while matches!(self.child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        self.signal(libc::SIGKILL);
        // Only once its mountpoint is gone: never walk into a mount that is still there.
        let mnt = self.dir.join("mnt");
        if fs::remove_dir(&mnt).is_ok() || !mnt.exists() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

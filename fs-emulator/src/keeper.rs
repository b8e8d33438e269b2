//! The keeper: a small process beside lodge-fs that holds what running containers depend on
//! and lodge-fs must not take with it when it stops while containers are registered (a crash,
//! an upgrade, a restart by its supervisor): the FUSE connection's fd, so the containers' bind
//! mounts stay connected, and every seccomp listener fd, so trapped mount calls keep waiting
//! for an answer instead of failing. The next lodge-fs takes them back (`restart.rs`).
//!
//! It is lodge-fs's own binary (`lodge-fs keeper`), in its own session so it outlives lodge-fs.
//! It does nothing but hold fds: a single thread, a SOCK_SEQPACKET socket, one client at a time.
//! It exits when told to, or when the FUSE connection it holds is gone (unmounted).
//!
//! Messages (JSON, fds attached with SCM_RIGHTS): `{"put": key}` + fd, `{"drop": key}`,
//! `{"take": true}` (answered with `{"key": key}` + fd for each, then `{"end": true}`),
//! `{"exit": true}`.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;

use serde_json::{json, Value};

/// The key of the FUSE connection's fd.
pub const FUSE: &str = "fuse";

#[derive(Debug, thiserror::Error)]
pub enum KeeperError {
    #[error("keeper socket {path}: {source}")]
    Socket { path: String, source: io::Error },
    #[error("talking to the keeper: {0}")]
    Io(#[from] io::Error),
    #[error("the keeper answered {0:?}")]
    Protocol(String),
}

fn seqpacket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2).
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0) };
    lodge_sys::fd_result(fd.into())
}

fn sockaddr(path: &Path) -> io::Result<(libc::sockaddr_un, libc::socklen_t)> {
    // SAFETY: an all-zero sockaddr_un is valid.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_encoded_bytes();
    if bytes.len() >= addr.sun_path.len() {
        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    Ok((
        addr,
        std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
    ))
}

fn send(sock: RawFd, msg: &Value, fd: Option<RawFd>) -> io::Result<()> {
    let fds: Vec<RawFd> = fd.into_iter().collect();
    lodge_sys::fdpass::send_fds(sock, msg.to_string().as_bytes(), &fds)
}

/// The next message; None when the peer closed.
fn recv(sock: RawFd) -> io::Result<Option<(Value, Option<OwnedFd>)>> {
    let mut buf = vec![0u8; 4096];
    let (n, fd) = lodge_sys::fdpass::recv_fd(sock, &mut buf)?;
    if n == 0 && fd.is_none() {
        return Ok(None);
    }
    let msg = serde_json::from_slice(&buf[..n]).unwrap_or(Value::Null);
    Ok(Some((msg, fd)))
}

/// lodge-fs's side.
pub struct Keeper {
    sock: OwnedFd,
}

impl Keeper {
    /// Connects to a running keeper; None when there is none.
    pub fn connect(path: &Path) -> Result<Option<Keeper>, KeeperError> {
        let sock = seqpacket()?;
        let (addr, len) = sockaddr(path)?;
        // SAFETY: connect with a valid sockaddr_un.
        let r = unsafe {
            libc::connect(
                sock.as_raw_fd(),
                (&addr as *const libc::sockaddr_un).cast(),
                len,
            )
        };
        if r != 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::ENOENT) | Some(libc::ECONNREFUSED) => Ok(None),
                _ => Err(KeeperError::Socket {
                    path: path.display().to_string(),
                    source: e,
                }),
            };
        }
        Ok(Some(Keeper { sock }))
    }

    /// Starts a keeper at `path` (lodge-fs's own binary, in a session of its own) and connects.
    pub fn spawn(path: &Path) -> Result<Keeper, KeeperError> {
        use std::os::unix::process::CommandExt;
        let exe = std::env::current_exe()?;
        let mut cmd = std::process::Command::new(exe);
        cmd.arg("keeper")
            .arg("--keeper-socket")
            .arg(path)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        // SAFETY: setsid between fork and exec touches no locks or memory.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        let mut child = cmd.spawn()?;
        // Under systemd the keeper gets a unit of its own: it outlives lodge-fs.service on
        // purpose (a restart hands the containers' files over through it), so it must be
        // neither a left-over process of that unit nor killed with it; at shutdown systemd
        // stops it as it stops any scope.
        if lodge_sys::systemd::booted() {
            let unit = format!("lodge-fs-keeper-{}.scope", child.id());
            let description = "lodge-fs's keeper: containers' files across lodge-fs restarts";
            if let Err(e) = lodge_sys::systemd::start_scope(
                &unit,
                "system.slice",
                description,
                &[child.id()],
                vec![],
            ) {
                tracing::warn!(error = %e, "the keeper stays in lodge-fs's own unit");
            }
        }
        for _ in 0..200 {
            if let Some(k) = Keeper::connect(path)? {
                // Reaped by whoever inherits it; lodge-fs does not wait for it.
                std::thread::spawn(move || child.wait());
                return Ok(k);
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(KeeperError::Protocol(format!("keeper exited: {status}")));
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let _ = child.kill();
        Err(KeeperError::Protocol("keeper did not start".into()))
    }

    pub fn put(&self, key: &str, fd: RawFd) -> Result<(), KeeperError> {
        send(self.sock.as_raw_fd(), &json!({ "put": key }), Some(fd))?;
        self.ok()
    }

    pub fn drop_key(&self, key: &str) -> Result<(), KeeperError> {
        send(self.sock.as_raw_fd(), &json!({ "drop": key }), None)?;
        self.ok()
    }

    /// Copies of every fd the keeper holds, by key (it keeps holding them).
    pub fn take(&self) -> Result<BTreeMap<String, OwnedFd>, KeeperError> {
        send(self.sock.as_raw_fd(), &json!({ "take": true }), None)?;
        let mut fds = BTreeMap::new();
        loop {
            match recv(self.sock.as_raw_fd())? {
                Some((msg, Some(fd))) if msg["key"].is_string() => {
                    fds.insert(msg["key"].as_str().unwrap_or_default().to_string(), fd);
                }
                Some((msg, None)) if msg["end"] == true => return Ok(fds),
                other => return Err(KeeperError::Protocol(format!("{other:?}"))),
            }
        }
    }

    /// Tells the keeper to close everything and exit.
    pub fn exit(self) -> Result<(), KeeperError> {
        send(self.sock.as_raw_fd(), &json!({ "exit": true }), None)?;
        let _ = recv(self.sock.as_raw_fd());
        Ok(())
    }

    fn ok(&self) -> Result<(), KeeperError> {
        match recv(self.sock.as_raw_fd())? {
            Some((msg, _)) if msg["ok"] == true => Ok(()),
            other => Err(KeeperError::Protocol(format!("{other:?}"))),
        }
    }
}

/// Whether a /dev/fuse fd's connection is gone (aborted or unmounted): it then polls POLLERR.
fn connection_gone(fd: RawFd) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: 0,
        revents: 0,
    };
    // SAFETY: poll of one fd, no wait.
    unsafe { libc::poll(&mut p, 1, 0) > 0 && p.revents & (libc::POLLERR | libc::POLLHUP) != 0 }
}

/// The keeper process (`lodge-fs keeper`).
pub fn run(path: &Path) -> io::Result<()> {
    let listener = seqpacket()?;
    let (addr, len) = sockaddr(path)?;
    let _ = std::fs::remove_file(path);
    // SAFETY: bind/listen with a valid sockaddr_un.
    unsafe {
        if libc::bind(
            listener.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast(),
            len,
        ) != 0
            || libc::listen(listener.as_raw_fd(), 4) != 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    let mut held: BTreeMap<String, OwnedFd> = BTreeMap::new();
    let mut client: Option<OwnedFd> = None;
    loop {
        let mut polls = vec![libc::pollfd {
            fd: listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        if let Some(c) = &client {
            polls.push(libc::pollfd {
                fd: c.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        // Every few seconds: is the FUSE connection still there? (Not in the same poll: a
        // /dev/fuse poller is woken by every request.)
        // SAFETY: poll over our own array.
        let n = unsafe { libc::poll(polls.as_mut_ptr(), polls.len() as libc::nfds_t, 5000) };
        if n < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(io::Error::last_os_error());
        }
        if held
            .get(FUSE)
            .is_some_and(|f| connection_gone(f.as_raw_fd()))
        {
            break;
        }
        if polls[0].revents & libc::POLLIN != 0 {
            // SAFETY: accept on our listening socket.
            let fd = unsafe {
                libc::accept4(
                    listener.as_raw_fd(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_CLOEXEC,
                )
            };
            if let Ok(fd) = lodge_sys::fd_result(fd.into()) {
                // A new lodge-fs replaces the old one's connection.
                client = Some(fd);
            }
            continue;
        }
        let Some(c) = client.as_ref().map(AsRawFd::as_raw_fd) else {
            continue;
        };
        if polls.get(1).is_none_or(|p| p.revents == 0) {
            continue;
        }
        let Ok(Some((msg, fd))) = recv(c) else {
            client = None;
            continue;
        };
        if let (Some(key), Some(fd)) = (msg["put"].as_str(), fd) {
            held.insert(key.to_string(), fd);
            let _ = send(c, &json!({ "ok": true }), None);
        } else if let Some(key) = msg["drop"].as_str() {
            held.remove(key);
            let _ = send(c, &json!({ "ok": true }), None);
        } else if msg["take"] == true {
            for (key, fd) in &held {
                let _ = send(c, &json!({ "key": key }), Some(fd.as_raw_fd()));
            }
            let _ = send(c, &json!({ "end": true }), None);
        } else if msg["exit"] == true {
            let _ = send(c, &json!({ "ok": true }), None);
            break;
        } else {
            let _ = send(c, &json!({ "error": "unknown message" }), None);
        }
    }
    let _ = std::fs::remove_file(path);
    Ok(())
}

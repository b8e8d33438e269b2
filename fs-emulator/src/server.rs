//! The registration socket: lodge-runc registers a system container before its init mounts its
//! files, and unregisters it at delete. One thread per connection, one request per connection.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use lodge_ipc::fs::{EmulatedMount, Request, Response};

use crate::cgroup::CgroupView;
use crate::files::{self, Container};
use crate::registry::Registry;

/// Binds `socket` (root only), replacing a stale one.
pub fn listen(socket: &Path) -> io::Result<UnixListener> {
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(socket) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let listener = UnixListener::bind(socket)?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// What answering registrations needs.
pub struct Server {
    pub registry: Arc<Registry>,
    pub mountpoint: PathBuf,
    /// Drops the kernel's cached entry for a container's directory.
    pub invalidate: Option<Invalidate>,
    /// The seccomp agent's socket, told to lodge-runc at registration.
    pub listener: Option<PathBuf>,
    /// Set when requests come over FUSE io_uring queues.
    pub uring: Option<Arc<crate::fuse_uring::UringStats>>,
    /// Whether this lodge-fs took over from a previous one.
    pub resumed: bool,
}

pub type Invalidate = Box<dyn Fn(&str) + Send + Sync>;

pub fn serve(listener: UnixListener, server: Arc<Server>) {
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        let server = server.clone();
        std::thread::spawn(move || {
            let handled = lodge_ipc::read_frame(&mut conn)
                .map_err(anyhow::Error::from)
                .and_then(|req| {
                    let resp = server.answer(req);
                    Ok(lodge_ipc::write_frame(&mut conn, &resp)?)
                });
            if let Err(e) = handled {
                tracing::debug!(error = %e, "registration connection");
            }
        });
    }
}

/// Drops the kernel's cached entry for a container's directory (it changed or went away).
fn invalidate(notifier: Option<&Invalidate>, id: &str) {
    if let Some(n) = notifier {
        n(id);
    }
}

impl Server {
    pub fn answer(&self, req: Request) -> Response {
        let (registry, mountpoint, notifier) =
            (&self.registry, &self.mountpoint, self.invalidate.as_ref());
        match req {
            Request::Register {
                id,
                cgroup_paths,
                owner,
                created,
            } => {
                if id.is_empty() || id.contains('/') || id.starts_with('.') {
                    return Response::Error {
                        message: format!("invalid container id {id:?}"),
                    };
                }
                // Only over what the host has: the container's /sys mirrors the host's, and a
                // mount point cannot be made in sysfs.
                let mounts = files::table()
                    .filter(|f| Path::new("/").join(f.path).exists())
                    .map(|f| EmulatedMount {
                        source: mountpoint.join(&id).join(f.path),
                        destination: PathBuf::from("/").join(f.path),
                    })
                    .collect();
                registry.register(Container::new(
                    id.clone(),
                    CgroupView {
                        paths: cgroup_paths,
                    },
                    owner,
                    created,
                ));
                invalidate(notifier, &id);
                tracing::info!(id, "registered");
                Response::Registered {
                    mounts,
                    listener: self.listener.clone(),
                }
            }
            Request::Unregister { id } => {
                let gone = registry.slot_of(&id).and_then(|s| registry.get(s));
                if registry.unregister(&id) {
                    for dir in gone.iter().flat_map(|c| &c.cgroup.paths) {
                        crate::kernel_files::forget_below(dir);
                    }
                    invalidate(notifier, &id);
                    tracing::info!(id, "unregistered");
                }
                // Unknown ids are fine: delete may run twice, or after a lodge-fs restart.
                Response::Ok
            }
            Request::Status => Response::Status {
                version: env!("CARGO_PKG_VERSION").into(),
                mountpoint: mountpoint.to_path_buf(),
                containers: registry.len(),
                transport: if self.uring.is_some() {
                    "io_uring"
                } else {
                    "dev_fuse"
                }
                .into(),
                uring_requests: self
                    .uring
                    .as_ref()
                    .map_or(0, |u| u.requests.load(std::sync::atomic::Ordering::Relaxed)),
                resumed: self.resumed,
            },
            Request::Stop => {
                tracing::info!("stop requested");
                // SAFETY: signalling ourselves; main takes SIGUSR1 with sigwait.
                unsafe { libc::kill(libc::getpid(), libc::SIGUSR1) };
                Response::Ok
            }
        }
    }
}

//! The daemon: one task per connection on a root-only unix socket, one request and response per
//! frame. A malformed request gets an error response; the daemon keeps serving.

use std::path::Path;
use std::sync::{Arc, Mutex};

use lodge_ipc::mgr::{Request, Response};
use lodge_ipc::{FrameError, MAX_FRAME, VERSION};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

use crate::registry::Registry;

pub type Shared = Arc<Mutex<Registry>>;

/// Answers one request.
pub fn handle(reg: &Shared, req: Request) -> Response {
    let mut reg = reg.lock().expect("registry lock");
    let result = match req {
        Request::Hello { version } if version == VERSION => {
            Ok(Response::Hello { version: VERSION })
        }
        Request::Hello { version } => Ok(Response::Error {
            message: format!(
                "protocol version {version} is not supported (lodge-mgr speaks {VERSION})"
            ),
        }),
        Request::Status => Ok(Response::Status {
            version: env!("CARGO_PKG_VERSION").into(),
            reserved: lodge_ipc::mgr::IdRange {
                start: reg.reserved.start as u32,
                size: reg.reserved.count as u32,
            },
            range_size: reg.range_size,
            ranges_total: reg.slots_total(),
            ranges_used: reg.slots_used(),
            containers: reg.containers(),
        }),
        Request::List => Ok(Response::List {
            containers: reg.list(),
        }),
        Request::Register {
            id,
            pid,
            bundle,
            rootfs,
            pod,
            namespaces,
        } => reg
            .register(&id, pid, bundle, rootfs, pod, namespaces)
            .map(|range| Response::Registered { range }),
        Request::Unregister { id, remove } => reg.unregister(&id, remove).map(|()| Response::Ok),
        Request::PrepareVolumes { id, uid, gid } => reg
            .prepare_volumes(&id, uid, gid)
            .map(|mounts| Response::Volumes { mounts }),
    };
    result.unwrap_or_else(|e| Response::Error {
        message: e.to_string(),
    })
}

async fn write(stream: &mut UnixStream, resp: &Response) -> std::io::Result<()> {
    let data = serde_json::to_vec(resp).expect("response serializes");
    stream.write_all(&(data.len() as u32).to_be_bytes()).await?;
    stream.write_all(&data).await
}

async fn serve_connection(reg: Shared, mut stream: UnixStream) {
    // Only host root may allocate IDs or see the registry.
    match stream.peer_cred() {
        Ok(cred) if cred.uid() == 0 => {}
        _ => {
            let _ = write(
                &mut stream,
                &Response::Error {
                    message: "lodge-mgr only serves root".into(),
                },
            )
            .await;
            return;
        }
    }
    loop {
        let mut len = [0u8; 4];
        if stream.read_exact(&mut len).await.is_err() {
            return; // closed, or a truncated frame
        }
        let len = u32::from_be_bytes(len) as usize;
        if len > MAX_FRAME {
            let _ = write(
                &mut stream,
                &Response::Error {
                    message: FrameError::TooLarge(len).to_string(),
                },
            )
            .await;
            return; // the rest of the stream cannot be framed any more
        }
        let mut data = vec![0u8; len];
        if stream.read_exact(&mut data).await.is_err() {
            return;
        }
        let resp = match serde_json::from_slice::<Request>(&data) {
            Ok(req) => handle(&reg, req),
            Err(e) => Response::Error {
                message: FrameError::Malformed(e).to_string(),
            },
        };
        if write(&mut stream, &resp).await.is_err() {
            return;
        }
    }
}

/// Binds `socket` (root-only; a stale socket is replaced, a live one is an error).
pub fn bind(socket: &Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if socket.exists() {
        if std::os::unix::net::UnixStream::connect(socket).is_ok() {
            return Err(std::io::Error::other(format!(
                "another lodge-mgr is serving {}",
                socket.display()
            )));
        }
        std::fs::remove_file(socket)?;
    }
    let listener = UnixListener::bind(socket)?;
    std::fs::set_permissions(socket, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    Ok(listener)
}

/// Every `every`, forgets containers whose rootfs is gone (removed by the engine).
pub async fn collect_removed(reg: Shared, every: std::time::Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let gone = reg.lock().expect("registry lock").collect_removed();
        for id in gone {
            tracing::info!(id = %id, "rootfs removed: container, volumes and range released");
        }
    }
}

pub async fn serve(reg: Shared, listener: UnixListener) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve_connection(reg.clone(), stream));
            }
            Err(e) => tracing::warn!(error = %e, "accept"),
        }
    }
}

//! lodge-mgr: the manager daemon, and `status`/`list` clients.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use lodge_ipc::mgr::{Request, Response, DEFAULT_SOCKET};
use lodge_mgr::{registry::Registry, server, subid};

#[derive(Parser)]
#[command(
    name = "lodge-mgr",
    version,
    about = "Lodge's manager: exclusive ID ranges and the container registry"
)]
struct Cli {
    /// Unix socket to serve (root-only)
    #[arg(long, global = true, default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Where the state lives
    #[arg(long, default_value = "/var/lib/lodge/mgr")]
    state_dir: PathBuf,
    /// Volumes go under DIR/volumes
    #[arg(long, default_value = "/var/lib/lodge")]
    data_root: PathBuf,
    /// How often to look for containers whose rootfs was removed (ms)
    #[arg(long, default_value_t = 10_000)]
    gc_interval_ms: u64,
    /// IDs per container
    #[arg(long, default_value_t = 65536)]
    range_size: u32,
    /// IDs reserved for lodge in /etc/subuid and /etc/subgid
    #[arg(long, default_value_t = 65536 * 4096)]
    reserve: u64,
    #[arg(long, default_value = "/etc/subuid")]
    subuid: PathBuf,
    #[arg(long, default_value = "/etc/subgid")]
    subgid: PathBuf,
    #[arg(long, default_value = "/etc/login.defs", hide = true)]
    login_defs: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// The daemon's state in brief
    Status,
    /// Registered containers
    List {
        #[arg(long, default_value = "table")]
        format: String,
    },
    /// Halt every registered container (systemd inits with SIGRTMIN+3, others with SIGTERM),
    /// killing what still runs after the timeout: what the host's shutdown runs
    Halt {
        /// Seconds to wait before killing
        #[arg(long, default_value_t = 10)]
        timeout: u64,
    },
    /// Add lodge-runc to Docker's daemon.json (merged into what is there), or remove it
    DockerRuntime {
        /// add or remove
        action: String,
        #[arg(long, default_value = "/etc/docker/daemon.json")]
        config: PathBuf,
        #[arg(long, default_value = "lodge-runc")]
        name: String,
        /// The runtime binary Docker runs
        #[arg(long, default_value = "/usr/local/bin/lodge-runc")]
        runtime_path: PathBuf,
    },
}

fn request(socket: &PathBuf, req: &Request) -> Result<Response> {
    let mut s = std::os::unix::net::UnixStream::connect(socket).with_context(|| {
        format!(
            "lodge-mgr is not reachable at {} (start it with `lodge-mgr`)",
            socket.display()
        )
    })?;
    lodge_ipc::write_frame(&mut s, req)?;
    Ok(lodge_ipc::read_frame(&mut s)?)
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::DockerRuntime {
            action,
            config,
            name,
            runtime_path,
        }) => {
            let changed = match action.as_str() {
                "add" => lodge_mgr::engines::add_docker_runtime(&config, &name, &runtime_path)?,
                "remove" => lodge_mgr::engines::remove_docker_runtime(&config, &name)?,
                other => anyhow::bail!("docker-runtime: unknown action {other:?} (add or remove)"),
            };
            println!(
                "{}: {}",
                config.display(),
                if changed { "updated" } else { "unchanged" }
            );
            Ok(())
        }
        Some(Command::Halt { timeout }) => match request(&cli.socket, &Request::List)? {
            Response::List { containers } => {
                let done =
                    lodge_mgr::halt::halt(&containers, std::time::Duration::from_secs(timeout));
                println!(
                    "halted {}, killed after {timeout} s {}",
                    done.stopped.len(),
                    done.killed.len()
                );
                Ok(())
            }
            other => bail!("unexpected answer: {other:?}"),
        },
        Some(Command::Status) => match request(&cli.socket, &Request::Status)? {
            Response::Status {
                version,
                reserved,
                range_size,
                ranges_total,
                ranges_used,
                containers,
            } => {
                println!("lodge-mgr {version}: {containers} containers, {ranges_used}/{ranges_total} ranges of {range_size} IDs used, block {}+{}", reserved.start, reserved.size);
                Ok(())
            }
            other => bail!("unexpected answer: {other:?}"),
        },
        Some(Command::List { format }) => match request(&cli.socket, &Request::List)? {
            Response::List { containers } if format == "json" => {
                println!("{}", serde_json::to_string(&containers)?);
                Ok(())
            }
            Response::List { containers } => {
                println!("ID\tPID\tRUNNING\tRANGE\tPOD\tBUNDLE");
                for c in containers {
                    println!(
                        "{}\t{}\t{}\t{}+{}\t{}\t{}",
                        c.id,
                        c.pid,
                        c.running,
                        c.range.start,
                        c.range.size,
                        c.pod.unwrap_or_default(),
                        c.bundle.display()
                    );
                }
                Ok(())
            }
            other => bail!("unexpected answer: {other:?}"),
        },
        None => daemon(cli),
    }
}

fn daemon(cli: Cli) -> Result<()> {
    if cli.range_size == 0 || u64::from(cli.range_size) > cli.reserve {
        bail!("--range-size must be between 1 and --reserve");
    }
    let block = subid::reserve(
        "lodge",
        cli.reserve,
        &cli.subuid,
        &cli.subgid,
        &cli.login_defs,
    )?;
    let registry = Registry::open(&cli.state_dir, &cli.data_root, block, cli.range_size)?;
    tracing::info!(
        start = block.start,
        count = block.count,
        containers = registry.containers(),
        "lodge-mgr starting"
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = server::bind(&cli.socket)?;
        if let Err(e) = lodge_sys::systemd::notify_ready() {
            tracing::warn!(error = %e, "sd_notify");
        }
        let shared = Arc::new(Mutex::new(registry));
        let every = std::time::Duration::from_millis(cli.gc_interval_ms.max(100));
        tokio::select! {
            () = server::serve(shared.clone(), listener) => {}
            () = server::collect_removed(shared, every) => {}
            _ = tokio::signal::ctrl_c() => {}
            _ = async { tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?.recv().await; Ok::<_, std::io::Error>(()) } => {}
        }
        let _ = std::fs::remove_file(&cli.socket);
        Ok(())
    })
}

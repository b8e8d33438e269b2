//! lodge-fs: the per-container /proc and /sys FUSE emulator.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use fuser::{Config, MountOption, SessionACL};
use std::os::fd::OwnedFd;

use lodge_fs::fusefs::{FuserFs, LodgeFs};
use lodge_fs::restart::Continuity;
use lodge_fs::{dev_fuse, fuse_uring, registry::Registry, server};

/// lodge-fs: each system container's own /proc and /sys files, from its cgroup (FUSE)
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// The registration socket lodge-runc talks to
    #[arg(long, default_value = lodge_ipc::fs::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Where the FUSE filesystem is mounted (one directory per container)
    #[arg(long, default_value = "/var/lib/lodge-fs")]
    mountpoint: PathBuf,
    /// Where the seccomp agent takes containers' listener fds (`linux.seccomp.listenerPath`);
    /// by default beside --socket: /run/lodge/fs.sock → /run/lodge/fs-seccomp.sock
    #[arg(long)]
    seccomp_socket: Option<PathBuf>,
    /// Run without the seccomp agent: containers' mount calls are not trapped
    #[arg(long)]
    no_seccomp: bool,
    /// The agent reads callers' whole mount tables even where statmount(2) exists (tests the
    /// older kernels' path)
    #[arg(long, hide = true)]
    no_statmount: bool,
    /// Procfs and sysfs mounted inside containers are assembled in a staging mount namespace,
    /// as on kernels before 6.15, even where this one could build them detached (tests that path)
    #[arg(long, hide = true)]
    staged_mounts: bool,
    /// FUSE worker threads (default: one per CPU it may use, at most 8; pinned one per CPU when
    /// that covers them all)
    #[arg(long)]
    threads: Option<usize>,
    #[arg(long)]
    no_io_uring: bool,
    /// Debug logging
    #[arg(long)]
    debug: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Print the daemon's status
    Status,
    /// Stop the daemon for good: unmount, and let go of every container's files (SIGTERM
    /// leaves registered containers' files to the next lodge-fs)
    Stop,
    /// (internal) hold the FUSE connection and seccomp listeners across restarts
    #[command(hide = true)]
    Keeper {
        #[arg(long)]
        keeper_socket: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_max_level(if cli.debug {
            tracing::Level::DEBUG
        } else {
            tracing::Level::INFO
        })
        .with_writer(std::io::stderr)
        .init();
    let request = match &cli.command {
        Some(Command::Keeper { keeper_socket }) => {
            return lodge_fs::keeper::run(keeper_socket).context("keeper");
        }
        Some(Command::Status) => Some(lodge_ipc::fs::Request::Status),
        Some(Command::Stop) => Some(lodge_ipc::fs::Request::Stop),
        None => None,
    };
    if let Some(request) = request {
        let stopping = matches!(request, lodge_ipc::fs::Request::Stop);
        let mut s = match std::os::unix::net::UnixStream::connect(&cli.socket) {
            Ok(s) => s,
            // No daemon: what a stopped one left for its successor is let go of here.
            Err(_) if stopping => return stop_leftovers(&cli),
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("lodge-fs is not reachable at {}", cli.socket.display())
                })
            }
        };
        lodge_ipc::write_frame(&mut s, &request)?;
        let resp: lodge_ipc::fs::Response = lodge_ipc::read_frame(&mut s)?;
        println!("{}", serde_json::to_string(&resp_json(resp))?);
        return Ok(());
    }
    // Renders keep the kernel files they read open (kernel_files): a few per container.
    raise_open_files_limit();
    // SIGTERM, SIGINT and SIGUSR1 (`lodge-fs stop`) are taken with sigwait below, so block
    // them before any thread starts.
    let signals = block_signals();
    // The mountpoint is not touched before the takeover: under a previous instance's live mount
    // a stat would wait on the very connection this process is about to serve.
    if std::os::unix::net::UnixStream::connect(&cli.socket).is_ok() {
        anyhow::bail!(
            "lodge-fs is already running at {} (`lodge-fs --socket {} stop` stops it)",
            cli.socket.display(),
            cli.socket.display()
        );
    }
    let registry = Arc::new(Registry::default());
    let fs = Arc::new(LodgeFs::new(registry.clone()));
    let continuity = Continuity::new(&cli.socket, registry.clone());
    let cpus = lodge_fs::cgroup::allowed_cpus();
    let (serving, adopted_listeners) = match continuity.adopt(&cli.mountpoint) {
        Some(adopted) => {
            tracing::info!(
                containers = registry.len(),
                listeners = adopted.listeners.len(),
                "took over from the previous lodge-fs"
            );
            let threads = cli.threads.unwrap_or(cpus.len().clamp(1, 8)).max(1);
            (
                resume(&cli, fs.clone(), adopted.fuse, adopted.uring, threads),
                adopted.listeners,
            )
        }
        None => (mount_fresh(&cli, fs.clone(), &continuity, &cpus)?, vec![]),
    };
    let listener = server::listen(&cli.socket)
        .with_context(|| format!("listening on {}", cli.socket.display()))?;
    let agent_socket = if cli.no_seccomp {
        for (key, _, _) in &adopted_listeners {
            continuity.release_listener(key);
        }
        None
    } else {
        let agent = lodge_fs::seccomp::Agent::new(
            &cli.mountpoint,
            registry.clone(),
            !cli.no_statmount,
            cli.staged_mounts,
        )
        .context("starting the seccomp agent")?;
        agent.keep_listeners_with(continuity.clone());
        let socket = cli
            .seccomp_socket
            .clone()
            .unwrap_or_else(|| lodge_fs::restart::beside(&cli.socket, "seccomp.sock"));
        let agent_listener = server::listen(&socket)
            .with_context(|| format!("listening on {}", socket.display()))?;
        let agent = Arc::new(agent);
        for (key, fd, saved) in adopted_listeners {
            lodge_fs::seccomp::restore(&agent, key, fd, &saved);
        }
        std::thread::spawn(move || lodge_fs::seccomp::serve(agent_listener, agent));
        Some(socket)
    };
    let server = Arc::new(server::Server {
        registry: registry.clone(),
        mountpoint: cli.mountpoint.clone(),
        invalidate: Some(serving.invalidate),
        listener: agent_socket.clone(),
        uring: serving.uring,
        resumed: serving.session.is_none(),
    });
    std::thread::spawn(move || server::serve(listener, server));
    {
        let registry = registry.clone();
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_secs(5));
            for (_, c) in registry.all() {
                lodge_fs::files::proc::sample_load(&c);
            }
        });
    }
    tracing::info!(mountpoint = %cli.mountpoint.display(), socket = %cli.socket.display(), "lodge-fs ready");
    // `Type=notify`: `systemctl restart lodge-fs` returns once the socket answers.
    if let Err(e) = lodge_sys::systemd::notify_ready() {
        tracing::warn!(error = %e, "sd_notify");
    }
    let sig = wait_for(&signals);
    let _ = std::fs::remove_file(&cli.socket);
    if let Some(s) = &agent_socket {
        let _ = std::fs::remove_file(s);
    }
    if sig != libc::SIGUSR1 && !registry.is_empty() {
        // Containers still use the files: the keeper holds the connection and the listeners
        // for the next lodge-fs, which takes them over (restart.rs). Leave without unmounting.
        continuity.save();
        tracing::info!(
            signal = sig,
            containers = registry.len(),
            "stopping; the containers' files stay mounted for the next lodge-fs"
        );
        std::process::exit(0);
    }
    tracing::info!(signal = sig, "stopping");
    continuity.stop();
    match serving.session {
        Some(session) => drop(session),
        None => {
            let _ = nix_umount(&cli.mountpoint);
        }
    }
    Ok(())
}

/// `lodge-fs stop` with no daemon running: the keeper (if any) exits, the mount goes.
fn stop_leftovers(cli: &Cli) -> anyhow::Result<()> {
    let keeper = lodge_fs::restart::beside(&cli.socket, "keeper.sock");
    if let Some(k) = lodge_fs::keeper::Keeper::connect(&keeper)? {
        k.exit()?;
        println!("the keeper let go of the containers' files");
    }
    let _ = std::fs::remove_file(lodge_fs::restart::beside(&cli.socket, "state.json"));
    if lodge_fs::restart::mount_dev(&cli.mountpoint).is_some() {
        nix_umount(&cli.mountpoint)
            .with_context(|| format!("unmounting {}", cli.mountpoint.display()))?;
        println!("unmounted {}", cli.mountpoint.display());
    }
    Ok(())
}

/// How FUSE requests are being served.
struct Serving {
    /// fuser's session when this lodge-fs mounted the filesystem (dropping it unmounts).
    session: Option<fuser::BackgroundSession>,
    uring: Option<Arc<fuse_uring::UringStats>>,
    invalidate: server::Invalidate,
}

/// Mounts the filesystem and serves it: over io_uring queues where the kernel has them, with
/// fuser's /dev/fuse workers for the rest or as the fallback.
fn mount_fresh(
    cli: &Cli,
    fs: Arc<LodgeFs>,
    continuity: &Continuity,
    cpus: &[u32],
) -> anyhow::Result<Serving> {
    // A previous instance that died leaves a dead mount ("transport endpoint is not connected").
    let _ = nix_umount(&cli.mountpoint);
    std::fs::create_dir_all(&cli.mountpoint)
        .with_context(|| format!("creating {}", cli.mountpoint.display()))?;
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName("lodge-fs".into()),
        MountOption::DefaultPermissions,
        MountOption::NoDev,
        MountOption::NoSuid,
        MountOption::NoExec,
    ];
    // Containers read as their own root, never as lodge-fs's user.
    config.acl = SessionACL::All;
    // FUSE over io_uring answers each request on the CPU that made it; /dev/fuse workers are
    // the fallback (kernels before 6.14, or --no-io-uring).
    let want_uring = !cli.no_io_uring
        && match fuse_uring::enable_in_kernel() {
            Ok(()) => true,
            Err(e) => {
                tracing::info!(reason = %e, "serving FUSE over /dev/fuse");
                false
            }
        };
    let threads = if want_uring {
        // Left to /dev/fuse: forgets, interrupts, and requests before the queues are ready.
        1
    } else {
        cli.threads.unwrap_or(cpus.len().clamp(1, 8)).max(1)
    };
    config.n_threads = Some(threads);
    config.clone_fd = true;
    let granted = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let fuser_fs = FuserFs {
        fs: fs.clone(),
        io_uring: want_uring,
        uring_granted: granted.clone(),
    };
    let session = fuser::Session::new(fuser_fs, &cli.mountpoint, &config)
        .with_context(|| format!("mounting FUSE at {}", cli.mountpoint.display()))?;
    let uring = if want_uring {
        match start_uring(&session, fs, &granted) {
            Ok(stats) => {
                tracing::info!(queues = stats.queues, "serving FUSE over io_uring");
                Some(stats)
            }
            Err(e) => {
                tracing::warn!(error = %e, "FUSE over io_uring unavailable; serving over /dev/fuse with one worker");
                None
            }
        }
    } else {
        None
    };
    {
        use std::os::fd::{AsFd, AsRawFd};
        if let Err(e) = continuity.start_fresh(
            session.as_fd().as_raw_fd(),
            &cli.mountpoint,
            uring.is_some(),
        ) {
            tracing::warn!(error = %e, "no keeper: containers' files will not survive a lodge-fs restart");
        }
    }
    let notifier = session.notifier();
    let session = session.spawn().context("starting the FUSE session")?;
    if uring.is_none() && threads >= cpus.len() {
        pin_workers(cpus, threads);
    }
    Ok(Serving {
        session: Some(session),
        uring,
        invalidate: Box::new(move |id| {
            let _ = notifier.inval_entry(
                fuser::INodeNo(lodge_fs::registry::ROOT_INO),
                std::ffi::OsStr::new(id),
            );
        }),
    })
}

/// Serves the connection a previous lodge-fs left with the keeper: its io_uring queues (if it
/// had them) registered anew, /dev/fuse read by our own loop (fuser cannot take over a
/// connection it did not start).
fn resume(cli: &Cli, fs: Arc<LodgeFs>, fuse: OwnedFd, uring: bool, threads: usize) -> Serving {
    let fuse = Arc::new(fuse);
    for _ in 0..if uring { 1 } else { threads } {
        let (fs, fuse) = (fs.clone(), fuse.clone());
        std::thread::spawn(move || dev_fuse::serve(fs, fuse));
    }
    let stats = if uring {
        match fuse_uring::start(fs, std::os::fd::AsFd::as_fd(&*fuse)) {
            Ok(stats) => {
                // Requests made while no lodge-fs was running wait in their CPU's queue until
                // that queue hands back an answer: make one on each CPU.
                fuse_uring::nudge_queues(&cli.mountpoint);
                Some(stats)
            }
            Err(e) => {
                tracing::error!(error = %e, "the connection's io_uring queues could not be served again");
                None
            }
        }
    } else {
        None
    };
    let notify = fuse.clone();
    Serving {
        session: None,
        uring: stats,
        invalidate: Box::new(move |id| {
            let _ = dev_fuse::invalidate_root_entry(&notify, id);
        }),
    }
}

fn start_uring(
    session: &fuser::Session<FuserFs>,
    fs: Arc<LodgeFs>,
    granted: &std::sync::atomic::AtomicBool,
) -> Result<Arc<fuse_uring::UringStats>, fuse_uring::UringError> {
    use std::os::fd::AsFd;
    if !granted.load(std::sync::atomic::Ordering::Acquire) {
        return Err(fuse_uring::UringError::NotGranted);
    }
    fuse_uring::start(fs, session.as_fd())
}

fn resp_json(r: lodge_ipc::fs::Response) -> serde_json::Value {
    serde_json::to_value(r).unwrap_or_default()
}

fn block_signals() -> libc::sigset_t {
    // SAFETY: plain sigset manipulation on a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGUSR1);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn wait_for(set: &libc::sigset_t) -> i32 {
    let mut sig = 0;
    // SAFETY: sigwait on the blocked set.
    unsafe { libc::sigwait(set, &mut sig) };
    sig
}

/// Detaches the mount at `path`.
fn nix_umount(path: &std::path::Path) -> std::io::Result<()> {
    let c = lodge_sys::cstring(path.as_os_str().as_encoded_bytes())?;
    lodge_sys::mount::umount(&c, libc::MNT_DETACH)
}

fn raise_open_files_limit() {
    // SAFETY: getrlimit/setrlimit on a local struct.
    unsafe {
        let mut l: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 && l.rlim_cur < l.rlim_max {
            l.rlim_cur = l.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        }
    }
}

/// The CPUs this process may run on (its affinity: a cpuset may allow fewer than are online).
/// Keeps FUSE worker N on the Nth CPU it may use. A request is served by whichever worker waits
/// longest; when that one sits on the reader's CPU, neither side waits for a wake-up on another
/// CPU, which on a VM costs more than the request itself (docs/performance.md).
fn pin_workers(cpus: &[u32], workers: usize) {
    if cpus.is_empty() {
        return;
    }
    // fuser names its workers fuser-0, fuser-1, …; its session thread starts them shortly
    // after spawn_mount returns.
    let mut pinned = std::collections::HashSet::new();
    for _ in 0..200 {
        pin_new_workers(cpus, &mut pinned);
        if pinned.len() >= workers {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    tracing::warn!(
        pinned = pinned.len(),
        workers,
        "not every FUSE worker was found to pin"
    );
}

fn pin_new_workers(cpus: &[u32], pinned: &mut std::collections::HashSet<usize>) {
    for task in std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        let Some(n) = comm
            .trim()
            .strip_prefix("fuser-")
            .and_then(|n| n.parse::<usize>().ok())
        else {
            continue;
        };
        let Ok(tid) = task.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if !pinned.insert(n) {
            continue;
        }
        lodge_fs::cgroup::pin(tid, cpus[n % cpus.len()]);
    }
}

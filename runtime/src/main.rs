//! lodge-runc: the command line. Parses runc 1.1's CLI, sets up logging, calls the library.

mod observability;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use lodge_runtime::ops::{self, CreateOptions, Globals};

#[derive(Parser)]
#[command(
    name = "lodge-runc",
    about = "A runc-compatible OCI runtime for system containers",
    disable_version_flag = true
)]
struct Cli {
    /// Directory for container state
    #[arg(long, global = true, default_value = "/run/lodge-runc")]
    root: PathBuf,
    /// Log file (default: stderr)
    #[arg(long, global = true)]
    log: Option<PathBuf>,
    /// Log format
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Debug logging
    #[arg(long, global = true)]
    debug: bool,
    /// Accept systemd-style cgroupsPath (slice:prefix:name); served by the cgroupfs driver
    #[arg(long, global = true)]
    systemd_cgroup: bool,
    /// Accepted for runc compatibility; unused
    #[arg(long, global = true, hide = true)]
    criu: Option<String>,
    /// lodge-mgr's socket
    #[arg(long, global = true, default_value = lodge_ipc::mgr::DEFAULT_SOCKET)]
    mgr_socket: PathBuf,
    /// Run without lodge-mgr (no registration, no managed ID ranges)
    #[arg(long, global = true)]
    no_mgr: bool,
    /// lodge-fs's socket (system containers' emulated /proc and /sys files)
    #[arg(long, global = true, default_value = lodge_ipc::fs::DEFAULT_SOCKET)]
    fs_socket: PathBuf,
    /// Run system containers without lodge-fs (the host's /proc and /sys files, masked as given)
    #[arg(long, global = true)]
    no_fs: bool,
    /// Plain OCI containers by default (as runc runs them); a container still becomes a system
    /// container with LODGE_SYSCONT_MODE=TRUE
    #[arg(long, global = true)]
    no_syscont: bool,
    /// Print the version
    #[arg(short = 'v', long)]
    version: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Args)]
struct CreateArgs {
    /// Container id
    id: String,
    /// Bundle directory (holds config.json)
    #[arg(short, long, default_value = ".")]
    bundle: PathBuf,
    /// Write init's pid to this file
    #[arg(long)]
    pid_file: Option<PathBuf>,
    /// Unix socket that receives the pty master when process.terminal is true
    #[arg(long)]
    console_socket: Option<PathBuf>,
    /// Use MS_MOVE + chroot instead of pivot_root
    #[arg(long)]
    no_pivot: bool,
    /// Do not create a new session keyring
    #[arg(long)]
    no_new_keyring: bool,
    /// Pass this many extra fds (from 3 up) to the container
    #[arg(long, default_value_t = 0)]
    preserve_fds: u32,
}

impl CreateArgs {
    fn options(&self) -> CreateOptions {
        CreateOptions {
            bundle: self.bundle.clone(),
            pid_file: self.pid_file.clone(),
            console_socket: self.console_socket.clone(),
            no_pivot: self.no_pivot,
            no_new_keyring: self.no_new_keyring,
            preserve_fds: self.preserve_fds as i32,
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Create a container (init waits for `start`)
    Create(CreateArgs),
    /// Start a created container
    Start { id: String },
    /// Create and start a container
    Run {
        #[command(flatten)]
        create: CreateArgs,
        /// Detach from the container's process
        #[arg(short, long)]
        detach: bool,
    },
    /// Print a container's state as JSON
    State { id: String },
    /// Send a signal to a container's init (default SIGTERM)
    Kill {
        id: String,
        signal: Option<String>,
        /// Signal every process in the container
        #[arg(short, long)]
        all: bool,
    },
    /// Delete a container and everything it holds on the host
    Delete {
        id: String,
        /// Kill a running container first
        #[arg(short, long)]
        force: bool,
    },
    /// List containers
    List {
        #[arg(short, long, value_enum, default_value_t = ListFormat::Table)]
        format: ListFormat,
        /// Print only ids
        #[arg(short, long)]
        quiet: bool,
    },
    /// Write a default config.json
    Spec {
        #[arg(short, long, default_value = ".")]
        bundle: PathBuf,
        /// A config for running without privileges (user namespace, no network namespace)
        #[arg(long)]
        rootless: bool,
    },
    /// Print the OCI features JSON
    Features,
    /// Run a new process in a running container
    Exec(ExecArgs),
    /// Freeze every process of a container
    Pause { id: String },
    /// Thaw a paused container
    Resume { id: String },
    /// List a container's processes
    Ps {
        id: String,
        #[arg(short, long, value_enum, default_value_t = ListFormat::Table)]
        format: ListFormat,
        /// Options for ps(1) (default -ef)
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        ps_args: Vec<String>,
    },
    /// Change a container's resource limits
    Update(UpdateArgs),
    /// Not supported: checkpointing needs CRIU
    #[command(hide = true)]
    Checkpoint {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Not supported: restoring needs CRIU
    #[command(hide = true)]
    Restore {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Resource usage: once with --stats, else a stream every --interval
    Events {
        id: String,
        /// Print one sample and exit
        #[arg(long)]
        stats: bool,
        /// Time between samples (e.g. 5s, 500ms)
        #[arg(long, default_value = "5s")]
        interval: String,
    },
}

#[derive(Args)]
struct UpdateArgs {
    id: String,
    /// LinuxResources JSON from a file, or - for stdin
    #[arg(short, long)]
    resources: Option<String>,
    #[arg(long)]
    memory: Option<String>,
    #[arg(long)]
    memory_swap: Option<String>,
    #[arg(long)]
    memory_reservation: Option<String>,
    /// Accepted for runc compatibility; kernel memory limits no longer exist
    #[arg(long, hide = true)]
    kernel_memory: Option<String>,
    #[arg(long)]
    cpu_shares: Option<u64>,
    #[arg(long)]
    cpu_period: Option<u64>,
    #[arg(long)]
    cpu_quota: Option<i64>,
    #[arg(long)]
    cpu_rt_period: Option<u64>,
    #[arg(long)]
    cpu_rt_runtime: Option<i64>,
    #[arg(long)]
    cpuset_cpus: Option<String>,
    #[arg(long)]
    cpuset_mems: Option<String>,
    #[arg(long)]
    pids_limit: Option<i64>,
    #[arg(long)]
    blkio_weight: Option<u16>,
}

#[derive(Args)]
struct ExecArgs {
    /// Container id
    id: String,
    /// Command and arguments (unless --process is given)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
    /// A JSON file holding the process (runtime-spec `process`)
    #[arg(short, long)]
    process: Option<PathBuf>,
    /// Allocate a pseudo-TTY (needs --console-socket)
    #[arg(short, long)]
    tty: bool,
    /// Unix socket that receives the pty master
    #[arg(long)]
    console_socket: Option<PathBuf>,
    /// Do not wait for the process
    #[arg(short, long)]
    detach: bool,
    /// Write the process's pid to this file
    #[arg(long)]
    pid_file: Option<PathBuf>,
    /// Working directory in the container
    #[arg(long)]
    cwd: Option<PathBuf>,
    /// Extra environment variables (KEY=VALUE)
    #[arg(short, long)]
    env: Vec<String>,
    /// User as uid[:gid]
    #[arg(short, long)]
    user: Option<String>,
    /// Additional group ids
    #[arg(short = 'g', long)]
    additional_gids: Vec<u32>,
    /// Add a capability (to every set)
    #[arg(short, long)]
    cap: Vec<String>,
    /// Set no_new_privs
    #[arg(long)]
    no_new_privs: bool,
    /// Pass this many extra fds (from 3 up)
    #[arg(long, default_value_t = 0)]
    preserve_fds: u32,
    /// AppArmor profile for the process
    #[arg(long)]
    apparmor: Option<String>,
    /// SELinux label for the process (refused: no SELinux support)
    #[arg(long)]
    process_label: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum ListFormat {
    Table,
    Json,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 1 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let log = match observability::init(cli.log.as_deref(), cli.log_format, cli.debug) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("lodge-runc: {e:#}");
            return ExitCode::from(1);
        }
    };
    match dispatch(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            log.fatal(&chain(&e));
            ExitCode::from(1)
        }
    }
}

/// The error and its causes, skipping a cause whose text the message before already holds.
fn chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
    }
    out
}

fn dispatch(cli: Cli) -> Result<u8> {
    if cli.version {
        println!("lodge-runc version {}", env!("CARGO_PKG_VERSION"));
        println!(
            "commit: {}",
            option_env!("LODGE_COMMIT").unwrap_or("unknown")
        );
        println!("spec: {}", lodge_runtime::OCI_SPEC_VERSION);
        return Ok(0);
    }
    let Some(command) = cli.command else {
        let _ = <Cli as clap::CommandFactory>::command().print_help();
        return Ok(0);
    };
    let g = Globals {
        root: cli.root,
        systemd_cgroup: cli.systemd_cgroup,
        mgr_socket: (!cli.no_mgr).then_some(cli.mgr_socket),
        fs_socket: (!cli.no_fs).then_some(cli.fs_socket),
        syscont_default: !cli.no_syscont,
    };
    match command {
        Command::Create(a) => {
            seal()?;
            ops::create(&g, &a.id, &a.options())?;
        }
        Command::Start { id } => ops::start(&g, &id)?,
        Command::Run { create, detach } => {
            seal()?;
            let code = ops::run(&g, &create.id, &create.options(), detach)?;
            return Ok(code.clamp(0, 255) as u8);
        }
        Command::State { id } => {
            let view = ops::state(&g, &id)?;
            println!("{}", serde_json::to_string_pretty(&view)?);
        }
        Command::Kill { id, signal, all } => {
            let sig = lodge_runtime::signal::parse(signal.as_deref().unwrap_or("SIGTERM"))?;
            ops::kill(&g, &id, sig, all)?;
        }
        Command::Delete { id, force } => ops::delete(&g, &id, force)?,
        Command::List { format, quiet } => list(&g, format, quiet)?,
        Command::Spec { bundle, rootless } => {
            let path = bundle.join("config.json");
            if path.exists() {
                bail!("File {} exists. Remove it first", path.display());
            }
            let text = serde_json::to_string_pretty(&ops::spec_template(rootless))?;
            std::fs::write(&path, text + "\n")
                .with_context(|| format!("writing {}", path.display()))?;
        }
        Command::Features => println!("{}", serde_json::to_string_pretty(&ops::features())?),
        Command::Checkpoint { .. } | Command::Restore { .. } => {
            bail!("checkpoint and restore (CRIU) are not supported by lodge-runc")
        }
        Command::Pause { id } => ops::pause(&g, &id)?,
        Command::Resume { id } => ops::resume(&g, &id)?,
        Command::Ps {
            id,
            format,
            ps_args,
        } => match format {
            ListFormat::Json => println!("{}", serde_json::to_string(&ops::pids(&g, &id)?)?),
            ListFormat::Table => print!("{}", ops::ps_table(&g, &id, &ps_args)?),
        },
        Command::Update(a) => {
            let id = a.id.clone();
            ops::update(&g, &id, &update_resources(a)?)?;
        }
        Command::Events {
            id,
            stats,
            interval,
        } => {
            let every = if stats {
                None
            } else {
                Some(parse_duration(&interval)?)
            };
            ops::events(&g, &id, every, &mut std::io::stdout().lock())?;
        }
        Command::Exec(a) => {
            seal()?;
            let opts = exec_options(&g, a)?;
            let code = ops::exec(&g, &opts.0, &opts.1)?;
            return Ok(code.clamp(0, 255) as u8);
        }
    }
    Ok(0)
}

/// The process to exec: `--process FILE`, or the container's own process with the command
/// line's overrides applied, as runc does.
fn exec_options(g: &Globals, a: ExecArgs) -> Result<(String, ops::ExecOptions)> {
    use oci_spec::runtime::{Capability, Process};
    let mut process: Process = match &a.process {
        Some(file) => {
            let data = std::fs::read(file)
                .with_context(|| format!("reading --process {}", file.display()))?;
            serde_json::from_slice(&data)
                .with_context(|| format!("{} is not a valid process JSON", file.display()))?
        }
        None => {
            if a.command.is_empty() {
                bail!("exec needs a command (or --process FILE)");
            }
            let mut p = ops::container_process(g, &a.id)?;
            p.set_args(Some(a.command.clone()));
            p.set_terminal(Some(a.tty));
            p
        }
    };
    if a.tty {
        process.set_terminal(Some(true));
    }
    if let Some(cwd) = a.cwd {
        process.set_cwd(cwd);
    }
    if !a.env.is_empty() {
        let mut env = process.env().clone().unwrap_or_default();
        env.extend(a.env);
        process.set_env(Some(env));
    }
    if let Some(user) = &a.user {
        let (uid, gid) = match user.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (user.as_str(), None),
        };
        let uid: u32 = uid
            .parse()
            .with_context(|| format!("--user {user:?}: expected uid[:gid] as numbers"))?;
        process.user_mut().set_uid(uid);
        if let Some(gid) = gid {
            let gid: u32 = gid
                .parse()
                .with_context(|| format!("--user {user:?}: expected uid[:gid] as numbers"))?;
            process.user_mut().set_gid(gid);
        }
    }
    if !a.additional_gids.is_empty() {
        process
            .user_mut()
            .set_additional_gids(Some(a.additional_gids));
    }
    if !a.cap.is_empty() {
        let mut caps = process.capabilities().clone().unwrap_or_default();
        for name in &a.cap {
            let name = if name.starts_with("CAP_") {
                name.clone()
            } else {
                format!("CAP_{name}")
            };
            let cap: Capability = serde_json::from_value(name.clone().into())
                .map_err(|_| anyhow::anyhow!("--cap {name}: unknown capability"))?;
            let with = |set: &Option<oci_spec::runtime::Capabilities>| {
                let mut s = set.clone().unwrap_or_default();
                s.insert(cap);
                Some(s)
            };
            let (b, e, p, i, am) = (
                with(caps.bounding()),
                with(caps.effective()),
                with(caps.permitted()),
                with(caps.inheritable()),
                with(caps.ambient()),
            );
            caps.set_bounding(b)
                .set_effective(e)
                .set_permitted(p)
                .set_inheritable(i)
                .set_ambient(am);
        }
        process.set_capabilities(Some(caps));
    }
    if a.no_new_privs {
        process.set_no_new_privileges(Some(true));
    }
    if let Some(profile) = a.apparmor {
        process.set_apparmor_profile(Some(profile));
    }
    if let Some(label) = a.process_label {
        process.set_selinux_label(Some(label));
    }
    if process.args().as_ref().is_none_or(|v| v.is_empty()) {
        bail!("the process to exec has no args");
    }
    Ok((
        a.id,
        ops::ExecOptions {
            process,
            console_socket: a.console_socket,
            detach: a.detach,
            pid_file: a.pid_file,
            preserve_fds: a.preserve_fds as i32,
        },
    ))
}

/// `update`'s resources: the JSON document if given, then the flags on top.
fn update_resources(a: UpdateArgs) -> Result<oci_spec::runtime::LinuxResources> {
    use oci_spec::runtime::{LinuxBlockIo, LinuxCpu, LinuxPids, LinuxResources};
    let mut r: LinuxResources = match a.resources.as_deref() {
        Some("-") => {
            serde_json::from_reader(std::io::stdin().lock()).context("resources JSON on stdin")?
        }
        Some(file) => {
            serde_json::from_slice(&std::fs::read(file).with_context(|| format!("reading {file}"))?)
                .with_context(|| format!("{file} is not a valid resources JSON"))?
        }
        None => LinuxResources::default(),
    };
    let size = |flag: &str, v: &Option<String>| -> Result<Option<i64>> {
        v.as_deref()
            .map(|s| ops::parse_size(s).map_err(|e| anyhow::anyhow!("--{flag}: {e}")))
            .transpose()
    };
    let (limit, swap, reservation) = (
        size("memory", &a.memory)?,
        size("memory-swap", &a.memory_swap)?,
        size("memory-reservation", &a.memory_reservation)?,
    );
    if limit.or(swap).or(reservation).is_some() {
        let mut m = r.memory().unwrap_or_default();
        if limit.is_some() {
            m.set_limit(limit);
        }
        if swap.is_some() {
            m.set_swap(swap);
        }
        if reservation.is_some() {
            m.set_reservation(reservation);
        }
        r.set_memory(Some(m));
    }
    let cpu_flags = a.cpu_shares.is_some()
        || a.cpu_period.is_some()
        || a.cpu_quota.is_some()
        || a.cpu_rt_period.is_some()
        || a.cpu_rt_runtime.is_some()
        || a.cpuset_cpus.is_some()
        || a.cpuset_mems.is_some();
    if cpu_flags {
        let mut c: LinuxCpu = r.cpu().clone().unwrap_or_default();
        if a.cpu_shares.is_some() {
            c.set_shares(a.cpu_shares);
        }
        if a.cpu_period.is_some() {
            c.set_period(a.cpu_period);
        }
        if a.cpu_quota.is_some() {
            c.set_quota(a.cpu_quota);
        }
        if a.cpu_rt_period.is_some() {
            c.set_realtime_period(a.cpu_rt_period);
        }
        if a.cpu_rt_runtime.is_some() {
            c.set_realtime_runtime(a.cpu_rt_runtime);
        }
        if a.cpuset_cpus.is_some() {
            c.set_cpus(a.cpuset_cpus);
        }
        if a.cpuset_mems.is_some() {
            c.set_mems(a.cpuset_mems);
        }
        r.set_cpu(Some(c));
    }
    if let Some(limit) = a.pids_limit {
        let mut p = LinuxPids::default();
        p.set_limit(limit);
        r.set_pids(Some(p));
    }
    if let Some(w) = a.blkio_weight {
        let mut b: LinuxBlockIo = r.block_io().clone().unwrap_or_default();
        b.set_weight(Some(w));
        r.set_block_io(Some(b));
    }
    // Device rules are fixed at create time; an update never rewrites them.
    r.set_devices(None);
    Ok(r)
}

/// `5s`, `500ms`, `1m`, or plain seconds.
fn parse_duration(s: &str) -> Result<std::time::Duration> {
    let (num, unit) = s.trim().split_at(
        s.trim()
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.trim().len()),
    );
    let n: f64 = num
        .parse()
        .with_context(|| format!("invalid interval {s:?}"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => bail!("invalid interval {s:?}: use s, ms, m or h"),
    };
    if secs <= 0.0 {
        bail!("invalid interval {s:?}: must be positive");
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}

/// CVE-2019-5736: commands that run code in a container re-exec from a sealed copy first.
fn seal() -> Result<()> {
    lodge_runtime::selfexe::ensure_protected()
        .context("re-executing from a protected copy of lodge-runc")
}

fn list(g: &Globals, format: ListFormat, quiet: bool) -> Result<()> {
    let containers = ops::list(g);
    let mut out = std::io::stdout().lock();
    if quiet {
        for (v, _) in &containers {
            writeln!(out, "{}", v.id)?;
        }
        return Ok(());
    }
    match format {
        ListFormat::Json => {
            #[derive(serde::Serialize)]
            struct Item<'a> {
                #[serde(flatten)]
                view: &'a lodge_runtime::state::StateView,
            }
            let items: Vec<serde_json::Value> = containers
                .iter()
                .map(|(v, owner)| {
                    let mut j = serde_json::to_value(Item { view: v }).unwrap_or_default();
                    j["owner"] = owner.clone().into();
                    j
                })
                .collect();
            writeln!(out, "{}", serde_json::to_string(&items)?)?;
        }
        ListFormat::Table => {
            let rows: Vec<[String; 6]> = containers
                .iter()
                .map(|(v, owner)| {
                    [
                        v.id.clone(),
                        v.pid.to_string(),
                        v.status.to_string(),
                        v.bundle.display().to_string(),
                        v.created.clone(),
                        owner.clone(),
                    ]
                })
                .collect();
            let header = ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"].map(String::from);
            let mut widths = header.clone().map(|h| h.len());
            for r in &rows {
                for (w, c) in widths.iter_mut().zip(r) {
                    *w = (*w).max(c.len());
                }
            }
            for r in std::iter::once(&header).chain(&rows) {
                let line: Vec<String> = r
                    .iter()
                    .zip(widths)
                    .map(|(c, w)| format!("{c:<w$}"))
                    .collect();
                writeln!(out, "{}", line.join("   ").trim_end())?;
            }
        }
    }
    Ok(())
}

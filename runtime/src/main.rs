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
    /// Accepted for runc compatibility; not applied (no AppArmor/SELinux support)
    #[arg(long, hide = true)]
    apparmor: Option<String>,
    /// Accepted for runc compatibility; not applied (no AppArmor/SELinux support)
    #[arg(long, hide = true)]
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

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
    }
    Ok(0)
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

//! lodge-fs: the per-container /proc and /sys FUSE emulator and seccomp-notify agent.
//!
//! Not implemented yet: this binary only answers --help and --version, and says so otherwise.

use std::process::ExitCode;

const USAGE: &str =
    "lodge-fs the per-container /proc and /sys FUSE emulator and seccomp-notify agent

Usage: lodge-fs [--help | --version]

Status: not implemented yet. lodge-runc works without it today; see README.md.";

fn main() -> ExitCode {
    let arg = std::env::args().nth(1);
    match arg.as_deref() {
        Some("--version") | Some("-V") => {
            println!("lodge-fs version {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Some("--help") | Some("-h") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("lodge-fs: not implemented yet; only --help and --version work");
            ExitCode::from(2)
        }
    }
}

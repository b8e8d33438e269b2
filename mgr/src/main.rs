//! lodge-mgr: the manager daemon (ID ranges, container registry, host-backed volumes).
//!
//! Not implemented yet: this binary only answers --help and --version, and says so otherwise.

use std::process::ExitCode;

const USAGE: &str =
    "lodge-mgr the manager daemon (ID ranges, container registry, host-backed volumes)

Usage: lodge-mgr [--help | --version]

Status: not implemented yet. lodge-runc works without it today; see README.md.";

fn main() -> ExitCode {
    let arg = std::env::args().nth(1);
    match arg.as_deref() {
        Some("--version") | Some("-V") => {
            println!("lodge-mgr version {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Some("--help") | Some("-h") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("lodge-mgr: not implemented yet; only --help and --version work");
            ExitCode::from(2)
        }
    }
}

//! Signal names as `kill` accepts them: `TERM`, `SIGTERM`, `sigterm`, `15`, `RTMIN+3`.

use thiserror::Error;

#[derive(Debug, Error)]
#[error("unknown signal {0:?}")]
pub struct UnknownSignal(pub String);

const NAMES: &[(&str, i32)] = &[
    ("HUP", libc::SIGHUP),
    ("INT", libc::SIGINT),
    ("QUIT", libc::SIGQUIT),
    ("ILL", libc::SIGILL),
    ("TRAP", libc::SIGTRAP),
    ("ABRT", libc::SIGABRT),
    ("IOT", libc::SIGIOT),
    ("BUS", libc::SIGBUS),
    ("FPE", libc::SIGFPE),
    ("KILL", libc::SIGKILL),
    ("USR1", libc::SIGUSR1),
    ("SEGV", libc::SIGSEGV),
    ("USR2", libc::SIGUSR2),
    ("PIPE", libc::SIGPIPE),
    ("ALRM", libc::SIGALRM),
    ("TERM", libc::SIGTERM),
    ("STKFLT", libc::SIGSTKFLT),
    ("CHLD", libc::SIGCHLD),
    ("CONT", libc::SIGCONT),
    ("STOP", libc::SIGSTOP),
    ("TSTP", libc::SIGTSTP),
    ("TTIN", libc::SIGTTIN),
    ("TTOU", libc::SIGTTOU),
    ("URG", libc::SIGURG),
    ("XCPU", libc::SIGXCPU),
    ("XFSZ", libc::SIGXFSZ),
    ("VTALRM", libc::SIGVTALRM),
    ("PROF", libc::SIGPROF),
    ("WINCH", libc::SIGWINCH),
    ("IO", libc::SIGIO),
    ("POLL", libc::SIGPOLL),
    ("PWR", libc::SIGPWR),
    ("SYS", libc::SIGSYS),
];

/// Parses a signal the way runc's `kill` does: a number, or a name with or without `SIG`.
pub fn parse(s: &str) -> Result<i32, UnknownSignal> {
    let unknown = || UnknownSignal(s.to_string());
    let max = libc::SIGRTMAX();
    if let Ok(n) = s.parse::<i32>() {
        return if (1..=max).contains(&n) {
            Ok(n)
        } else {
            Err(unknown())
        };
    }
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Some(&(_, n)) = NAMES.iter().find(|(n, _)| *n == name) {
        return Ok(n);
    }
    let rt = |base: i32, rest: &str, sign: i32| -> Option<i32> {
        let off = if rest.is_empty() {
            0
        } else {
            rest.parse::<i32>().ok()?
        };
        let n = base + sign * off;
        (libc::SIGRTMIN()..=max).contains(&n).then_some(n)
    };
    if let Some(rest) = name.strip_prefix("RTMIN") {
        return rt(libc::SIGRTMIN(), rest.trim_start_matches('+'), 1).ok_or_else(unknown);
    }
    if let Some(rest) = name.strip_prefix("RTMAX") {
        return rt(max, rest.trim_start_matches('-'), -1).ok_or_else(unknown);
    }
    Err(unknown())
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn names_numbers_and_realtime() {
        assert_eq!(parse("KILL").unwrap(), 9);
        assert_eq!(parse("SIGTERM").unwrap(), 15);
        assert_eq!(parse("sigusr1").unwrap(), libc::SIGUSR1);
        assert_eq!(parse("9").unwrap(), 9);
        assert_eq!(parse("RTMIN+1").unwrap(), libc::SIGRTMIN() + 1);
        assert!(parse("NOPE").is_err());
        assert!(parse("0").is_err());
        assert!(parse("1000").is_err());
    }
}

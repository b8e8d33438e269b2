//! A terminal for foreground `run` and `exec` without `--console-socket`, as runc gives one:
//! lodge-runc receives the pty master itself and copies between it and its own stdio, with the
//! caller's terminal in raw mode and its window size passed on.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Error, Result};

/// A private console socket, removed when dropped.
pub(super) struct ForegroundConsole {
    pub path: PathBuf,
    listener: UnixListener,
}

impl ForegroundConsole {
    pub fn new() -> Result<ForegroundConsole> {
        let path =
            std::env::temp_dir().join(format!("lodge-runc-console-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path)
            .map_err(Error::io(format!("console socket {}", path.display())))?;
        Ok(ForegroundConsole { path, listener })
    }

    /// The pty master the container's init (or exec'd process) sent.
    pub fn receive_master(&self) -> Result<File> {
        let (conn, _) = self
            .listener
            .accept()
            .map_err(Error::io("console socket"))?;
        let mut buf = [0u8; 256];
        match crate::sys::recv_fd(conn.as_raw_fd(), &mut buf)
            .map_err(Error::io("console socket"))?
        {
            (_, Some(fd)) => Ok(File::from(fd)),
            _ => Err(Error::io("console socket")(std::io::Error::other(
                "no pty master received",
            ))),
        }
    }
}

impl Drop for ForegroundConsole {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

static WINCH: AtomicBool = AtomicBool::new(false);

extern "C" fn on_winch(_: libc::c_int) {
    WINCH.store(true, Ordering::Relaxed);
}

fn copy_window_size(master: &File) {
    // SAFETY: ioctls with a valid winsize.
    unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        if libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) == 0 {
            libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws);
        }
    }
}

/// Our terminal in raw mode while it lives (if stdin is one), restored on drop.
struct RawMode(Option<libc::termios>);

impl RawMode {
    fn enter() -> RawMode {
        // SAFETY: termios calls on fd 0 with valid structs.
        unsafe {
            if libc::isatty(0) != 1 {
                return RawMode(None);
            }
            let mut saved: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut saved) != 0 {
                return RawMode(None);
            }
            let mut raw = saved;
            libc::cfmakeraw(&mut raw);
            libc::tcsetattr(0, libc::TCSANOW, &raw);
            RawMode(Some(saved))
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            // SAFETY: restoring the saved attributes.
            unsafe { libc::tcsetattr(0, libc::TCSANOW, saved) };
        }
    }
}

/// Copies stdin → master and master → stdout until `pid` exits and its output is drained;
/// other signals are forwarded by the caller's handlers. Returns the exit code.
pub(super) fn proxy_until_exit(mut master: File, pid: i32) -> i32 {
    let _raw = RawMode::enter();
    copy_window_size(&master);
    // SAFETY: installing an async-signal-safe handler.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_winch as *const () as usize;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigaction(libc::SIGWINCH, &sa, std::ptr::null_mut());
    }
    let mut stdin_open = true;
    let mut exit: Option<i32> = None;
    let mut buf = [0u8; 8192];
    let mut stdout = std::io::stdout();
    loop {
        if WINCH.swap(false, Ordering::Relaxed) {
            copy_window_size(&master);
        }
        let mut fds = [
            libc::pollfd {
                fd: master.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: if stdin_open { 0 } else { -1 },
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: two valid pollfds.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, if exit.is_some() { 0 } else { 50 }) };
        if n > 0 && fds[0].revents != 0 {
            match master.read(&mut buf) {
                Ok(k) if k > 0 => {
                    let _ = stdout.write_all(&buf[..k]);
                    let _ = stdout.flush();
                }
                // EIO: every slave fd is closed.
                _ => {
                    if exit.is_some() {
                        break;
                    }
                }
            }
        } else if exit.is_some() {
            break;
        }
        if n > 0 && fds[1].revents != 0 {
            // SAFETY: read from our stdin.
            let k = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
            if k <= 0 {
                stdin_open = false;
            } else {
                let _ = master.write_all(&buf[..k as usize]);
            }
        }
        if exit.is_none() {
            exit = reap(pid);
        }
    }
    exit.unwrap_or(255)
}

/// Reaps children without blocking; Some(exit code) once `pid` has exited.
fn reap(pid: i32) -> Option<i32> {
    loop {
        let mut status = 0;
        // SAFETY: non-blocking wait for any child.
        let r = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if r <= 0 {
            return None;
        }
        if r == pid {
            if libc::WIFEXITED(status) {
                return Some(libc::WEXITSTATUS(status));
            }
            if libc::WIFSIGNALED(status) {
                return Some(128 + libc::WTERMSIG(status));
            }
        }
    }
}

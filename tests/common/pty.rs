//! The binary on a real pseudo-terminal: it runs with a pty as its stdin,
//! stdout and stderr, in a session of its own whose controlling terminal is that
//! pty (so Ctrl-C is a signal); what it writes is fed to a terminal emulator
//! (`vt100`), and tests look at the screen a person would see.
//!
//! Every wait has a deadline and polls the screen. Part of [`super`] (and so
//! under its `#![allow(dead_code)]`): use it with `mod common;` and
//! `use common::pty::{Pty, Term};`.

use super::{BIN, TIMEOUT, open_pty, tmp_path, wait_until};
use std::fs::File;
use std::io::{Read, Write};
use std::num::NonZeroU16;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// The terminal a [`Pty`] starts with, and how its rows are read.
#[derive(Debug, Clone, Copy)]
pub struct Term {
    pub rows: u16,
    pub cols: u16,
    /// Whether [`Pty::rows`] (and so [`Pty::wait`]) keeps the blank rows that
    /// stand between others; trailing blank rows are dropped either way.
    pub keep_blank_rows: bool,
}

/// `sockmod` running on a pty, its screen emulated. The child is killed and its
/// directory removed when this is dropped.
pub struct Pty {
    child: Child,
    master: OwnedFd,
    input: File,
    screen: Arc<Mutex<vt100::Parser>>,
    term: Term,
    /// A directory of the test's own (it exists; removed on drop).
    pub dir: PathBuf,
    /// The child's `XDG_STATE_HOME` (its history files): `dir/state`.
    pub state: PathBuf,
}

impl Pty {
    /// Runs `sockmod ARGS...` on a fresh pty.
    pub fn spawn(term: Term, args: &[&str]) -> Pty {
        Pty::spawn_with(term, "pty", |_| {
            let mut cmd = Command::new(BIN);
            cmd.args(args);
            cmd
        })
    }

    /// Runs the command `command(dir)` makes on a fresh pty, `dir` being a new
    /// directory (named after `name`) for the test's files. `TERM` and
    /// `XDG_STATE_HOME` are set, and the pty is its stdin, stdout and stderr.
    pub fn spawn_with(term: Term, name: &str, command: impl FnOnce(&Path) -> Command) -> Pty {
        let dir = tmp_path(name);
        std::fs::create_dir_all(&dir).unwrap();
        let state = dir.join("state");
        let (master, slave) = open_pty(term.rows, term.cols);
        let mut cmd = command(&dir);
        cmd.env("TERM", "xterm-256color")
            .env("XDG_STATE_HOME", &state)
            .stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave));
        // SAFETY: only async-signal-safe calls between fork and exec: a new
        // session whose controlling terminal is the pty (so Ctrl-C is a signal).
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                libc::ioctl(0, libc::TIOCSCTTY, 0);
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn sockmod on a pty");
        drop(cmd); // our copies of the slave: the reader sees EIO once the child exits
        let input = File::from(master.try_clone().unwrap());
        let screen = Arc::new(Mutex::new(vt100::Parser::new(
            NonZeroU16::new(term.rows).unwrap(),
            NonZeroU16::new(term.cols).unwrap(),
            0,
        )));
        let s = screen.clone();
        let mut out = File::from(master.try_clone().unwrap());
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            // Ends with EIO once the child has exited and the slave is closed.
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                s.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .process(&buf[..n]);
            }
        });
        Pty {
            child,
            master,
            input,
            screen,
            term,
            dir,
            state,
        }
    }

    fn parser(&self) -> MutexGuard<'_, vt100::Parser> {
        self.screen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Types `keys` (all at once, as a paste or fast typing does).
    pub fn keys(&mut self, keys: &str) {
        self.input.write_all(keys.as_bytes()).unwrap();
        self.input.flush().unwrap();
    }

    /// The screen's rows, trailing blanks trimmed, trailing empty rows dropped
    /// (and the other empty rows too, unless [`Term::keep_blank_rows`]).
    pub fn rows(&self) -> Vec<String> {
        let p = self.parser();
        let cols = p.screen().size().1;
        let mut rows: Vec<String> = p
            .screen()
            .rows(0, cols.into())
            .map(|r| r.trim_end().to_string())
            .collect();
        if self.term.keep_blank_rows {
            while rows.last().is_some_and(|r| r.is_empty()) {
                rows.pop();
            }
        } else {
            rows.retain(|r| !r.is_empty());
        }
        rows
    }

    /// Waits until `pred` holds for the screen's [`rows`](Pty::rows) and
    /// returns them; panics with the screen if it does not within [`TIMEOUT`].
    pub fn wait(&self, what: &str, mut pred: impl FnMut(&[String]) -> bool) -> Vec<String> {
        let mut last = Vec::new();
        let ok = wait_until(TIMEOUT, || {
            last = self.rows();
            pred(&last)
        });
        assert!(
            ok,
            "timed out waiting for {what}; screen:\n{}",
            last.join("\n")
        );
        last
    }

    /// Waits until the screen shows exactly `want` (as rows).
    pub fn wait_exactly(&self, want: &[String]) {
        self.wait("the expected screen", |r| r == want);
    }

    /// The terminal becomes `rows` × `cols`: the emulator first (as a terminal
    /// window does), then the pty (TIOCSWINSZ), then SIGWINCH to the child.
    pub fn resize(&self, rows: u16, cols: u16) {
        self.parser().screen_mut().set_size(
            NonZeroU16::new(rows).unwrap(),
            NonZeroU16::new(cols).unwrap(),
        );
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ on the master we own; kill on our child.
        unsafe {
            assert_eq!(
                libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &ws),
                0
            );
            libc::kill(self.child.id() as libc::pid_t, libc::SIGWINCH);
        }
    }

    /// Waits (up to [`TIMEOUT`]) for the child to exit; returns its exit code.
    pub fn exit_code(&mut self) -> i32 {
        let mut status = None;
        wait_until(TIMEOUT, || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        let status = status.expect("sockmod did not exit");
        // Whatever it wrote last reaches the emulator.
        std::thread::sleep(Duration::from_millis(300));
        status.code().expect("exit status")
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

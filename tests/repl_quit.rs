//! The prompt while a filer quits: Ctrl-C with a file going out keeps a usable
//! prompt (commands still run), a second Ctrl-C stops at once, and nothing of
//! the progress block is left on screen; the block follows a resize.

mod common;

use common::*;
use serde_json::Value;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const ROWS: u16 = 30;
const COLS: u16 = 120;

/// A filer on a pseudo-terminal, its screen emulated.
struct Pty {
    child: Child,
    master: OwnedFd,
    input: File,
    screen: Arc<Mutex<vt100::Parser>>,
    dir: PathBuf,
}

impl Pty {
    fn filer(id: &str) -> Pty {
        let (master, slave) = open_pty(ROWS, COLS);
        let dir = tmp_path(&format!("repl-quit-{id}"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut cmd = lone_filer_command(id, &dir.join("inbox"), &[]);
        cmd.env("TERM", "xterm-256color")
            .env("XDG_STATE_HOME", tmp_path("state"))
            .stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave));
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                libc::ioctl(0, libc::TIOCSCTTY, 0);
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn sockmod on a pty");
        let input = File::from(master.try_clone().unwrap());
        let screen = Arc::new(Mutex::new(vt100::Parser::new(
            std::num::NonZeroU16::new(ROWS).unwrap(),
            std::num::NonZeroU16::new(COLS).unwrap(),
            0,
        )));
        let s = screen.clone();
        let mut out = File::from(master.try_clone().unwrap());
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                s.lock().unwrap().process(&buf[..n]);
            }
        });
        Pty {
            child,
            master,
            input,
            screen,
            dir,
        }
    }

    fn keys(&mut self, keys: &str) {
        self.input.write_all(keys.as_bytes()).unwrap();
        self.input.flush().unwrap();
    }

    /// The non-blank rows of the screen, trimmed at the end.
    fn rows(&self) -> Vec<String> {
        let p = self.screen.lock().unwrap();
        let cols = p.screen().size().1;
        p.screen()
            .rows(0, cols.into())
            .map(|r| r.trim_end().to_string())
            .filter(|r| !r.is_empty())
            .collect()
    }

    fn wait(&self, what: &str, mut pred: impl FnMut(&[String]) -> bool) -> Vec<String> {
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

    /// The terminal becomes `cols` wide: the emulator first (as a terminal
    /// window does), then the pty, then SIGWINCH.
    fn resize(&self, cols: u16) {
        self.screen.lock().unwrap().screen_mut().set_size(
            std::num::NonZeroU16::new(ROWS).unwrap(),
            std::num::NonZeroU16::new(cols).unwrap(),
        );
        let ws = libc::winsize {
            ws_row: ROWS,
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

    fn exit_code(&mut self) -> i32 {
        let mut status = None;
        wait_until(TIMEOUT, || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        let status = status.expect("the filer did not exit");
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

/// Lets a SIGSTOPped receiver run for a moment now and then, so a file goes
/// out slowly but steadily (the sender has a rate and an ETA to show).
struct Pacer {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    pid: libc::pid_t,
}

impl Pacer {
    fn new(pid: u32) -> Pacer {
        let pid = pid as libc::pid_t;
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(pid, libc::SIGSTOP) };
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(200));
                // SAFETY: as above.
                unsafe { libc::kill(pid, libc::SIGCONT) };
                std::thread::sleep(Duration::from_millis(2));
                // SAFETY: as above.
                unsafe { libc::kill(pid, libc::SIGSTOP) };
            }
        });
        Pacer {
            stop,
            thread: Some(thread),
            pid,
        }
    }
}

impl Drop for Pacer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.pid, libc::SIGCONT) };
    }
}

/// Alice on a pty, connected to bob (piped, `--json`), sending him a 512 MiB
/// file that goes out slowly; returns once her progress line shows.
fn sending() -> (Pty, Proc, Pacer) {
    let bob_dir = tmp_path("repl-quit-bob");
    let bob = Proc::spawn_cmd(lone_filer_command(
        "bob",
        &bob_dir.join("inbox"),
        &["--json", "--accept-files", "yes"],
    ));
    let bob_addr = bob.listening_addr();
    let mut alice = Pty::filer("alice");
    alice.wait("the first prompt", |r| {
        r.last().is_some_and(|l| l == "filer>")
    });
    alice.keys(&format!("connect {bob_addr}\r"));
    bob.expect_event("identified", &[("name", Value::from("alice"))]);
    alice.wait("bob's name", |r| r.iter().any(|l| l.ends_with(" is bob")));
    let big = alice.dir.join("big.bin");
    File::create(&big).unwrap().set_len(512 << 20).unwrap();
    let pacer = Pacer::new(bob.pid());
    alice.keys(&format!("sendfile bob {}\r", big.display()));
    alice.wait("the progress line", |r| {
        r.iter().any(|l| is_progress(l) && l.contains("/s"))
    });
    (alice, bob, pacer)
}

/// A row of the progress block (not a `transfers` table row, `t1  send`).
fn is_progress(l: &str) -> bool {
    l.starts_with("t1 send") || l.contains("ETA")
}

#[test]
fn ctrl_c_while_a_file_goes_out_keeps_the_prompt_and_a_second_one_stops() {
    let (mut alice, _bob, _pacer) = sending();
    alice.keys("\x03");
    alice.wait("the waiting prompt", |r| {
        r.iter()
            .any(|l| l.starts_with("waiting for 1 transfer to finish"))
            && r.last()
                .is_some_and(|l| l == "filer (waiting for transfers)>")
    });
    // The prompt is usable: a command typed runs and prints.
    alice.keys("transfers\r");
    let rows = alice.wait("the transfers table", |r| {
        r.iter().any(|l| l.starts_with("#   dir"))
            && r.iter()
                .any(|l| l.starts_with("t1  send") && l.contains("active"))
            && r.last()
                .is_some_and(|l| l == "filer (waiting for transfers)>")
    });
    assert_eq!(
        rows.iter().filter(|l| is_progress(l)).count(),
        1,
        "one progress line:\n{}",
        rows.join("\n")
    );
    // A half-typed line: Ctrl-C clears it and does not stop.
    alice.keys("cancel");
    alice.wait("the typed word", |r| {
        r.last()
            .is_some_and(|l| l == "filer (waiting for transfers)> cancel")
    });
    alice.keys("\x03");
    alice.wait("the cleared line", |r| {
        r.last()
            .is_some_and(|l| l == "filer (waiting for transfers)>")
    });
    // A second Ctrl-C on the empty line stops at once.
    alice.keys("\x03");
    assert_eq!(alice.exit_code(), 0);
    let rows = alice.rows();
    let screen = rows.join("\n");
    assert!(
        !rows.iter().any(|l| is_progress(l)),
        "a progress line is left:\n{screen}"
    );
    assert!(
        rows.iter()
            .any(|l| l.starts_with("~ transfer t1 failed") && l.contains("stopped: quitting")),
        "{screen}"
    );
    assert!(
        rows.last().is_some_and(|l| !l.starts_with("filer")),
        "a prompt is left:\n{screen}"
    );
}

#[test]
fn quit_typed_while_waiting_stops_at_once() {
    let (mut alice, _bob, _pacer) = sending();
    alice.keys("quit\r");
    alice.wait("the waiting prompt", |r| {
        r.last()
            .is_some_and(|l| l == "filer (waiting for transfers)>")
    });
    alice.keys("quit\r");
    assert_eq!(alice.exit_code(), 0);
    let rows = alice.rows();
    assert!(
        !rows.iter().any(|l| is_progress(l)),
        "a progress line is left:\n{}",
        rows.join("\n")
    );
}

#[test]
fn progress_follows_a_resize_to_40_columns() {
    let (mut alice, _bob, _pacer) = sending();
    alice.resize(40);
    let rows = alice.wait("the progress line at 40 columns", |r| {
        r.iter().any(|l| {
            l.starts_with("t1 ")
                && l.chars().count() < 40
                && l.contains('%')
                && l.contains("/s")
                && l.contains("ETA")
                && !l.contains("ETA -")
        })
    });
    let progress: Vec<&String> = rows.iter().filter(|l| is_progress(l)).collect();
    assert_eq!(
        progress.len(),
        1,
        "stale progress lines:\n{}",
        rows.join("\n")
    );
    assert!(
        !rows.iter().any(|l| l.contains(" to bob ")),
        "the peer is dropped first:\n{}",
        rows.join("\n")
    );
    // The prompt is still there, and a wider terminal brings the peer back.
    assert_eq!(rows.last().map(String::as_str), Some("filer>"));
    alice.resize(100);
    let rows = alice.wait("the progress line at 100 columns", |r| {
        r.iter()
            .any(|l| l.starts_with("t1 send") && l.contains(" to bob "))
    });
    assert_eq!(
        rows.iter().filter(|l| is_progress(l)).count(),
        1,
        "stale progress lines:\n{}",
        rows.join("\n")
    );
    alice.keys("\x03");
    alice.wait("the waiting prompt", |r| {
        r.last()
            .is_some_and(|l| l == "filer (waiting for transfers)>")
    });
    alice.keys("\x03");
    assert_eq!(alice.exit_code(), 0);
    let rows = alice.rows();
    assert!(
        !rows.iter().any(|l| is_progress(l)),
        "a progress line is left:\n{}",
        rows.join("\n")
    );
}

#[test]
fn a_waiting_quit_that_ends_by_itself_leaves_no_prompt_behind() {
    let (mut alice, mut bob, pacer) = sending();
    alice.keys("\x03");
    alice.wait("the waiting prompt", |r| {
        r.last()
            .is_some_and(|l| l == "filer (waiting for transfers)>")
    });
    // The receiver goes away: the file fails, nothing is left to wait for,
    // and the filer stops while its prompt is being read.
    drop(pacer);
    bob.kill();
    assert_eq!(alice.exit_code(), 0);
    let rows = alice.rows();
    let screen = rows.join("\n");
    assert!(
        rows.iter().any(|l| l.starts_with("~ transfer t1 failed")),
        "{screen}"
    );
    assert!(
        !rows.iter().any(|l| is_progress(l)),
        "a progress line is left:\n{screen}"
    );
    assert!(
        rows.last().is_some_and(|l| !l.starts_with("filer")),
        "a prompt is left:\n{screen}"
    );
}

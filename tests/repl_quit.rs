//! The prompt while a filer quits: Ctrl-C with a file going out keeps a usable
//! prompt (commands still run), a second Ctrl-C stops at once, and nothing of
//! the progress block is left on screen; the block follows a resize.

mod common;

use common::pty::{Pty, Term};
use common::*;
use serde_json::Value;
use std::fs::File;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const TERM: Term = Term {
    rows: 30,
    cols: 120,
    keep_blank_rows: false,
};

/// A filer named `id` on a pty, alone (its ipserver unreachable), its inbox in
/// the pty's directory.
fn filer(id: &str) -> Pty {
    Pty::spawn_with(TERM, &format!("repl-quit-{id}"), |dir| {
        lone_filer_command(id, &dir.join("inbox"), &[])
    })
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
    let mut alice = filer("alice");
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
    alice.resize(TERM.rows, 40);
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
    alice.resize(TERM.rows, 100);
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

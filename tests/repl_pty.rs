//! The REPL on a real pseudo-terminal: the binary runs with a pty as its stdin,
//! stdout and stderr; what it writes is fed to a terminal emulator (`vt100`), and
//! the tests look at the screen a person would see.
//!
//! Every wait has a deadline and polls the screen; nothing sleeps blindly.

mod common;

use common::pty::{Pty, Term};
use common::*;
use std::net::TcpListener;

/// A tall screen whose blank rows count: a line lost or doubled shows.
const TERM: Term = Term {
    rows: 60,
    cols: 120,
    keep_blank_rows: true,
};

/// The `listening on` address on the screen.
fn listening(rows: &[String]) -> std::net::SocketAddr {
    rows.iter()
        .find_map(|r| r.strip_prefix("listening on "))
        .and_then(|a| a.split_whitespace().next())
        .expect("a listening line")
        .parse()
        .expect("an address")
}

fn count(rows: &[String], pred: impl Fn(&str) -> bool) -> usize {
    rows.iter().filter(|r| pred(r)).count()
}

#[test]
fn every_event_line_stays_on_screen() {
    let mut t = Pty::spawn(TERM, &["serve", "--bind", "127.0.0.1:0"]);
    // The first line (printed before the first prompt, or while it is drawn) stays.
    let rows = t.wait("the first prompt", |r| {
        r.first().is_some_and(|l| l.starts_with("listening on "))
            && r.last().is_some_and(|l| l == "serve>")
    });
    let addr = listening(&rows);
    let mut want = vec![rows[0].clone()];

    // Lines typed one after the other: each error follows its line, none lost,
    // no blank rows.
    for i in 0..12 {
        t.keys(&format!("send 9 x{i}\r"));
        want.push(format!("serve> send 9 x{i}"));
        want.push("error: no connection #9".into());
        let mut screen = want.clone();
        screen.push("serve>".into());
        t.wait_exactly(&screen);
    }

    // An event arriving while the prompt waits (and while a line is half typed)
    // goes above it, the line kept.
    let mut c = Client::connect(addr);
    want.push(format!("+ #1 in {} (1 alive)", c.local_addr()));
    let mut screen = want.clone();
    screen.push("serve>".into());
    t.wait_exactly(&screen);
    t.keys("send 1 half");
    c.send_info("hello");
    want.push(format!("< #1 {} info=hello", c.local_addr()));
    let mut screen = want.clone();
    screen.push("serve> send 1 half".into());
    t.wait_exactly(&screen);
    t.keys(" typed\r");
    assert_eq!(info(&c.expect_frame()), "half typed");
}

#[test]
fn typed_ahead_and_pasted_lines_all_run_in_order() {
    let mut t = Pty::spawn(TERM, &["serve", "--bind", "127.0.0.1:0"]);
    let rows = t.wait("the first prompt", |r| {
        r.first().is_some_and(|l| l.starts_with("listening on "))
            && r.last().is_some_and(|l| l == "serve>")
    });
    let mut c = Client::connect(listening(&rows));
    t.wait("the connection", |r| {
        count(r, |l| l.starts_with("+ #1 in")) == 1
    });

    // Typed ahead: three lines in one write.
    t.keys("send 1 typeahead A\rsend 1 typeahead B\rsend 1 typeahead C\r");
    let got: Vec<String> = c
        .expect_frames(3, TIMEOUT)
        .iter()
        .map(|m| info(m).to_string())
        .collect();
    assert_eq!(got, ["typeahead A", "typeahead B", "typeahead C"]);

    // A paste without bracketed paste: 50 lines, each a command.
    let lines: String = (0..50).map(|i| format!("send 1 paste {i}\r")).collect();
    t.keys(&lines);
    let got: Vec<String> = c
        .expect_frames(50, TIMEOUT)
        .iter()
        .map(|m| info(m).to_string())
        .collect();
    let want: Vec<String> = (0..50).map(|i| format!("paste {i}")).collect();
    assert_eq!(got, want);

    // A bracketed paste: inserted whole, then Enter runs each of its lines.
    t.keys("\x1b[200~send 1 p1\nsend 1 p2\r\n\nsend 1 p3\n\x1b[201~");
    t.keys("\r");
    let got: Vec<String> = c
        .expect_frames(3, TIMEOUT)
        .iter()
        .map(|m| info(m).to_string())
        .collect();
    assert_eq!(got, ["p1", "p2", "p3"]);
    // Each command's output follows its own line, as in a shell.
    t.keys("bogus1\rbogus2\r");
    let rows = t.wait("both errors", |r| {
        count(r, |l| l.starts_with("error: unknown command")) == 2
            && r.last().is_some_and(|l| l == "serve>")
    });
    let n = rows.len();
    assert_eq!(
        rows[n - 5..],
        [
            "serve> bogus1",
            "error: unknown command \"bogus1\" (type `help` for the list)",
            "serve> bogus2",
            "error: unknown command \"bogus2\" (type `help` for the list)",
            "serve>",
        ]
    );
}

#[test]
fn the_progress_line_leaves_no_copies_when_lines_are_entered() {
    // A receiver that never reads: the transfer stalls, its progress line stays.
    let sink = TcpListener::bind("127.0.0.1:0").unwrap();
    let file = tmp_path("big.bin");
    std::fs::write(&file, vec![7u8; 64 << 20]).unwrap();
    let inbox = tmp_path("inbox");
    let mut t = Pty::spawn(
        TERM,
        &[
            "filer",
            "--id",
            "ann",
            "--bind",
            "127.0.0.1:0",
            "--ipserver",
            &refused_addr().to_string(),
            "--report-interval",
            "5s",
            "--inbox",
            inbox.to_str().unwrap(),
        ],
    );
    t.wait("the prompt", |r| r.last().is_some_and(|l| l == "filer>"));
    t.keys(&format!("connect {}\r", sink.local_addr().unwrap()));
    let _peer = accept_within(&sink, TIMEOUT);
    let rows = t.wait("the connection", |r| {
        r.iter()
            .any(|l| l.starts_with("+ #") && l.contains(" out "))
    });
    let id = rows
        .iter()
        .find(|l| l.starts_with("+ #") && l.contains(" out "))
        .and_then(|l| l[3..].split(' ').next())
        .unwrap()
        .to_string();
    t.keys(&format!("sendfile {id} {}\r", file.display()));
    let progress = |l: &str| l.starts_with("t1 send \"") && l.contains('%');
    t.wait("the progress line", |r| count(r, progress) == 1);
    for _ in 0..6 {
        t.keys("\r");
    }
    t.keys("list\r");
    let rows = t.wait("the list", |r| {
        count(r, |l| l.starts_with("id  dir")) == 1 && r.last().is_some_and(|l| l == "filer>")
    });
    assert_eq!(count(&rows, progress), 1, "{}", rows.join("\n"));
    // The one copy is right above the prompt.
    let n = rows.len();
    assert!(progress(&rows[n - 2]), "{}", rows.join("\n"));
    assert_eq!(count(&rows, |l| l == "filer>"), 7, "{}", rows.join("\n"));
    t.keys("cancel 1\r");
    t.wait("the progress line gone", |r| {
        count(r, progress) == 0 && r.last().is_some_and(|l| l == "filer>")
    });
}

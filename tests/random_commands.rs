//! Thousands of random command lines (odd words, quotes, control bytes,
//! invalid UTF-8, long tokens) piped into `sockmod serve` and `sockmod connect`:
//! clear one-line errors, never a panic.
//!
//! Tests print their figures as `figure: NAME = VALUE` lines on stderr; run
//! `cargo test --test random_commands -- --nocapture --test-threads=1` to see them.
//! Process figures come from /proc: VmRSS and VmHWM (peak RSS) from
//! /proc/PID/status, descriptors from /proc/PID/fd, CPU time (utime + stime)
//! from /proc/PID/stat. Speed bounds are checked only with `SOCKMOD_TIMING=1`
//! (see `common::timing_checked`).

mod common;

use common::*;
use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, v: &[&'a str]) -> &'a str {
        v[(self.next() % v.len() as u64) as usize]
    }
}

/// A random command line: command words, targets, options, quotes, odd
/// characters and long tokens. Never `quit`/`exit`, and never a host name that
/// would need DNS (only numeric loopback addresses are dialled).
fn random_line(r: &mut Rng, dial: &str) -> String {
    const WORDS: &[&str] = &[
        "help",
        "list",
        "ls",
        "connect",
        "send",
        "broadcast",
        "bc",
        "multicast",
        "mc",
        "close",
        "peers",
        "dial",
        "sendfile",
        "transfers",
        "cancel",
        "frobnicate",
        "#",
        "HELP",
        "send*",
        "",
    ];
    const ARGS: &[&str] = &[
        "1",
        "#1",
        "*",
        "all",
        "1,2",
        "#x",
        "1,,2",
        "2,1",
        "127.0.0.1:1",
        "[::1]:1",
        "a:b",
        "99999999999999999999",
        "alice",
        "-H",
        "k=v",
        "=v",
        "CL=5",
        "TP=Check",
        "-b",
        "body",
        "-f",
        "/nonexistent/file",
        "/dev/zero",
        "/tmp",
        "--",
        "-",
        "'",
        "\"",
        "\\",
        "'a b'",
        "\"x y\"",
        "ü",
        "你好",
        "\u{202e}",
        "\t",
        "%3A",
        ";",
        ":",
        "k=v;w",
        " ",
        "-H",
        "-b",
        "#",
        "0",
        "-1",
        "#-1",
        "1e3",
        "\u{7f}",
        "\u{1b}[2J",
    ];
    let mut words: Vec<String> = Vec::new();
    let first = r.pick(WORDS);
    words.push(first.to_string());
    if first == "connect" {
        // Numeric loopback only: a name would need DNS, and tests stay on loopback.
        let to = r.pick(&[dial, "127.0.0.1:99999", "127.0.0.1:0", "127.0.0.1:1"]);
        words.push(to.to_string());
    } else {
        for _ in 0..r.next() % 7 {
            let w = match r.next() % 20 {
                0 => "x".repeat((r.next() % 20_000) as usize),
                1 => {
                    let n = (r.next() % 40) as usize;
                    random_bytes(n, r.next())
                        .iter()
                        .map(|b| char::from(b % 95 + 32))
                        .collect()
                }
                _ => r.pick(ARGS).to_string(),
            };
            words.push(w);
        }
    }
    let mut line = words.join(" ");
    if r.next().is_multiple_of(50) {
        // Raw control bytes and invalid UTF-8 are handled by the reader.
        line.push('\u{0}');
    }
    line
}

fn random_input(seed: u64, n: usize, dial: &str) -> Vec<u8> {
    let mut r = Rng(seed | 1);
    let mut out = Vec::new();
    for i in 0..n {
        out.extend_from_slice(random_line(&mut r, dial).as_bytes());
        if i % 97 == 0 {
            out.extend_from_slice(&[0xff, 0xfe, b' ', 0xc3]);
        }
        out.push(if i % 13 == 0 { b'\r' } else { b' ' });
        out.push(b'\n');
    }
    out
}

fn assert_no_panic(p: &Proc) {
    let panics: Vec<String> = p
        .err
        .texts()
        .into_iter()
        .filter(|l| l.contains("panicked") || l.contains("RUST_BACKTRACE"))
        .collect();
    assert!(panics.is_empty(), "{panics:?}\n{}", p.context());
}

#[test]
fn thousands_of_random_command_lines_never_panic_serve() {
    let (mut srv, addr) = serve(&["--body-format", "none"]);
    // A peer to send to, reading and discarding.
    let peer = TcpStream::connect(addr).unwrap();
    let mut sink = peer.try_clone().unwrap();
    std::thread::spawn(move || {
        let mut b = vec![0u8; 1 << 16];
        while matches!(sink.read(&mut b), Ok(n) if n > 0) {}
    });
    let dial = addr.to_string();
    let t0 = Instant::now();
    let input = random_input(0x5eed, 3000, &dial);
    srv.write_stdin(&input);
    srv.send_line("marker-end-of-random-input");
    srv.expect_err_line("the end marker's error", |l| {
        l.contains("unknown command \"marker-end-of-random-input\"")
    });
    let took = t0.elapsed();
    assert!(srv.is_running(), "{}", srv.context());
    let errors = srv.err.count(|l| l.text.starts_with("error: "));
    let longest = srv.err.texts().iter().map(|l| l.len()).max().unwrap_or(0);
    figure("random lines: serve ran 3000 lines in", format!("{took:?}"));
    figure(
        "random lines: serve errors / longest stderr line",
        format!("{errors} / {longest} bytes"),
    );
    assert!(errors > 1000, "expected many clear errors, got {errors}");
    assert!(
        longest <= 400,
        "an error line of {longest} bytes is not clear"
    );
    srv.sigterm();
    let code = srv.expect_exit(TIMEOUT);
    assert_no_panic(&srv);
    assert_eq!(code, 0);
    let _ = peer.shutdown(std::net::Shutdown::Both);
}

#[test]
fn thousands_of_random_command_lines_never_panic_connect() {
    let (_srv, addr) = serve(&["--quiet"]);
    let dial = addr.to_string();
    let mut total_errors = 0;
    for seed in 1..=3u64 {
        let mut p = Proc::spawn(&["connect", &dial]);
        let t0 = Instant::now();
        p.write_stdin(&random_input(seed * 7919, 1000, &dial));
        p.close_stdin();
        let code = p.expect_exit(Duration::from_secs(30));
        let took = t0.elapsed();
        assert_no_panic(&p);
        // Piped mode: a failed command makes the exit status 1.
        assert_eq!(code, 1, "{}", p.context());
        let errors = p.err.count(|l| l.text.starts_with("error: "));
        let longest = p.err.texts().iter().map(|l| l.len()).max().unwrap_or(0);
        assert!(
            longest <= 400,
            "an error line of {longest} bytes is not clear"
        );
        figure(
            "random lines: connect (1000 lines) exit / errors / time",
            format!("{code} / {errors} / {took:?}"),
        );
        total_errors += errors;
    }
    assert!(total_errors > 1000);
}

//! Standard output under pressure (issue "Flow control end to end", item 3):
//! a reader that goes away stops sockmod cleanly, and a reader that stalls
//! pauses reading from peers without stopping the loop or losing output.
//!
//! These tests drive the child's stdout themselves (the [`common::Proc`]
//! harness always reads it): they stop reading it, or close it.

mod common;

use common::*;
use serde_json::Value;
use sockmod::protocol::Header;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A `sockmod` whose stdout the test reads (or not) itself; stdin stays open
/// and stderr is collected for failure messages. Killed on drop.
struct Raw {
    child: Child,
    stdout: Option<BufReader<ChildStdout>>,
    stderr: Arc<Mutex<String>>,
    /// Reaped by [`Raw::wait_exit`]: nothing to kill.
    reaped: bool,
}

impl Raw {
    fn spawn(args: &[&str]) -> Raw {
        let mut child = Command::new(BIN)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run sockmod");
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut e = child.stderr.take().expect("stderr");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = e.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let stdout = BufReader::with_capacity(1 << 16, child.stdout.take().expect("stdout"));
        Raw {
            child,
            stdout: Some(stdout),
            stderr,
            reaped: false,
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Reads stdout's first line (the `listening` event) on a helper thread,
    /// bounded by [`TIMEOUT`]; returns it with the bound address.
    fn first_line(&mut self) -> (String, SocketAddr) {
        let mut r = self.stdout.take().expect("stdout taken");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = r.read_line(&mut line);
            let _ = tx.send((line, r));
        });
        let (line, r) = rx
            .recv_timeout(TIMEOUT)
            .unwrap_or_else(|_| panic!("no first line on stdout\n{}", self.stderr()));
        self.stdout = Some(r);
        let v: Value = serde_json::from_str(line.trim_end())
            .unwrap_or_else(|e| panic!("first line {line:?} is not JSON: {e}"));
        assert_eq!(v["event"], "listening", "{line}");
        let addr = v["addr"].as_str().expect("addr").parse().expect("address");
        (line, addr)
    }

    /// Waits (on a helper thread, bounded by `timeout`) for the child to exit.
    fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let pid = self.child.id() as libc::pid_t;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut status = 0;
            // SAFETY: waits for our own child; the status is an int we own.
            let r = unsafe { libc::waitpid(pid, &mut status, 0) };
            let _ = tx.send((r, status));
        });
        let (r, status) = rx.recv_timeout(timeout).ok()?;
        assert_eq!(r, pid, "waitpid failed");
        self.reaped = true;
        use std::os::unix::process::ExitStatusExt;
        Some(std::process::ExitStatus::from_raw(status))
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        if self.reaped {
            return;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `sockmod serve --json | head -1`: once the reader of stdout is gone, sockmod
/// exits 0 promptly although it has nothing more to print (no peer connects).
#[test]
fn reader_gone_stops_serve_cleanly() {
    let mut p = Raw::spawn(&["serve", "--json", "--bind", "127.0.0.1:0"]);
    let (line, _addr) = p.first_line();
    assert!(line.starts_with("{\"event\":\"listening\""), "{line}");
    // `head` exits: the read end of the pipe closes.
    let closed = Instant::now();
    drop(p.stdout.take());
    let status = p.wait_exit(TIMEOUT).unwrap_or_else(|| {
        panic!(
            "still running {TIMEOUT:?} after stdout closed\n{}",
            p.stderr()
        )
    });
    let took = closed.elapsed();
    eprintln!("exited {took:?} after its stdout reader went away: {status:?}");
    assert_eq!(status.code(), Some(0), "{status:?}\n{}", p.stderr());
    assert!(
        took < Duration::from_secs(2),
        "took {took:?} to exit after stdout closed\n{}",
        p.stderr()
    );
}

/// Messages sent while stdout is stalled.
const MESSAGES: usize = 10_000;
/// Body of each: 10,000 of them render to about 40 MB of JSON, ten times the
/// 4 MiB sockmod queues before pausing its reads.
const BODY: usize = 4000;

/// Stdout not read for 3 s while a client sends 10,000 messages: the loop keeps
/// sending heartbeats to another client (no gap over 1 s), memory stays bounded
/// (reading from the sender pauses), and afterwards every message is printed,
/// in order.
#[test]
fn stalled_stdout_pauses_reads_not_the_loop() {
    let mut p = Raw::spawn(&[
        "serve",
        "--json",
        "--bind",
        "127.0.0.1:0",
        "--heartbeat",
        "200ms",
    ]);
    let (_, addr) = p.first_line();
    let pid = p.child.id();
    let mut stdout = p.stdout.take().expect("stdout");

    // A client that only listens: the arrival time of every probe.
    let mut hb = Client::connect(addr);
    let stop = Arc::new(AtomicBool::new(false));
    let (beat_tx, beat_rx) = mpsc::channel::<Instant>();
    let hb_stop = stop.clone();
    let hb_thread = std::thread::spawn(move || {
        let mut other = Vec::new();
        while !hb_stop.load(Ordering::Relaxed) {
            for m in hb.read_frames(1, Duration::from_millis(200)) {
                if m.header.len() == 1 && m.header.is_check() {
                    let _ = beat_tx.send(Instant::now());
                } else {
                    other.push(format!("{:?}", m.header));
                }
            }
            if hb.is_closed() {
                other.push("closed".into());
                break;
            }
        }
        other
    });

    // The sender: 10,000 frames, `info:N` and a body, as fast as TCP lets it.
    let sent = Arc::new(AtomicUsize::new(0));
    let mut tx = Client::connect(addr);
    let sent_by = sent.clone();
    let sender = std::thread::spawn(move || {
        let body = vec![b'a'; BODY];
        for i in 0..MESSAGES {
            tx.send(&Header::new().with("info", i.to_string()), &body);
            sent_by.store(i + 1, Ordering::Relaxed);
        }
        tx
    });

    // The stall: stdout is not read for 3 s (its pipe fills at 64 KiB).
    let pause = Duration::from_secs(3);
    let paused_at = Instant::now();
    let mut beats = vec![paused_at];
    while paused_at.elapsed() < pause {
        let left = pause.saturating_sub(paused_at.elapsed());
        if let Ok(t) = beat_rx.recv_timeout(left) {
            beats.push(t);
        }
    }
    let resumed_at = Instant::now();
    beats.push(resumed_at);
    let rss_paused = status_kib(pid, "VmRSS");
    let sent_in_pause = sent.load(Ordering::Relaxed);

    // Read stdout again: every message event, in order.
    let (lines_tx, lines_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut got: Vec<u64> = Vec::with_capacity(MESSAGES);
        let mut bad = Vec::new();
        let mut line = String::new();
        while got.len() < MESSAGES {
            line.clear();
            match stdout.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            if !line.starts_with("{\"event\":\"message\"") {
                continue;
            }
            let v: Value = serde_json::from_str(line.trim_end()).expect("JSON line");
            if v["body_len"] != BODY as u64 || v["body"].as_str().map(str::len) != Some(BODY) {
                bad.push(format!(
                    "message {} with body_len {}",
                    got.len(),
                    v["body_len"]
                ));
            }
            got.push(
                v["header"]["info"]
                    .as_str()
                    .unwrap_or("")
                    .parse()
                    .unwrap_or(u64::MAX),
            );
        }
        let _ = lines_tx.send((got, bad, stdout));
    });
    let (got, bad, _stdout) = lines_rx
        .recv_timeout(Duration::from_secs(120))
        .unwrap_or_else(|_| panic!("the messages were not all printed\n{}", p.stderr()));
    let drained = resumed_at.elapsed();
    let _tx = sender.join().expect("sender");
    let peak = status_kib(pid, "VmHWM");
    stop.store(true, Ordering::Relaxed);
    let other = hb_thread.join().expect("heartbeat reader");
    let later: Vec<Instant> = beat_rx.try_iter().collect();

    let max_gap = beats
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();
    let all: Vec<Instant> = beats[1..beats.len() - 1]
        .iter()
        .copied()
        .chain(later)
        .collect();
    let max_gap_overall = all
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();
    eprintln!(
        "stall of {pause:?}: {} probes, longest gap {max_gap:?} (over the whole run \
         {max_gap_overall:?}); {sent_in_pause} of {MESSAGES} messages sent by its end; \
         RSS {rss_paused} KiB then, peak {peak} KiB; all printed {drained:?} after resuming",
        beats.len() - 2
    );

    assert!(other.is_empty(), "the listening client got {other:?}");
    assert!(
        max_gap < Duration::from_secs(1),
        "a gap of {max_gap:?} between probes while stdout was stalled\n{}",
        p.stderr()
    );
    assert_eq!(got.len(), MESSAGES, "messages printed\n{}", p.stderr());
    let first_out_of_order = got.iter().enumerate().find(|(i, n)| **n != *i as u64);
    assert_eq!(first_out_of_order, None, "messages out of order");
    assert!(bad.is_empty(), "{bad:?}");
    // The whole output is about 40 MB: had reading not paused, most of it
    // would have waited in sockmod's memory.
    assert!(
        peak < 32 << 10,
        "peak RSS {peak} KiB: output was not held back by pausing reads"
    );
}

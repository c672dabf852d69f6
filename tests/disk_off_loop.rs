//! "Disk off the loop" (Transfers v2): while a 1 GiB file moves between two
//! filers, chat between them still gets through quickly, because file reads,
//! hashing and writes run on worker threads and the loop never waits for the
//! disk. The round-trip figures are printed; the bound is asserted only with
//! `SOCKMOD_TIMING=1` (a loaded machine would fail it for no fault of ours).

mod common;

use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(300);

struct Peer {
    p: Proc,
    addr: std::net::SocketAddr,
    dir: PathBuf,
    inbox: PathBuf,
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.p.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn filer(id: &str) -> Peer {
    let dir = tmp_path(&format!("offloop-{id}"));
    std::fs::create_dir_all(&dir).unwrap();
    let inbox = dir.join("inbox");
    let cmd: Command = lone_filer_command(id, &inbox, &["--json", "--accept-files", "yes"]);
    let p = Proc::spawn_cmd(cmd);
    let addr = p.listening_addr();
    Peer {
        p,
        addr,
        dir,
        inbox,
    }
}

fn is_transfer(v: &Value, dir: &str, state: &str, name: &str) -> bool {
    v["event"] == "transfer" && v["dir"] == dir && v["state"] == state && v["name"] == name
}

fn chat_from(p: &Proc, text: &str) -> bool {
    p.wait_json(
        |v| v["event"] == "message" && v["header"]["info"] == text,
        Duration::from_secs(60),
    )
    .is_some()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

#[test]
fn chat_round_trip_during_a_1_gib_transfer() {
    let mut alice = filer("alice");
    let mut bob = filer("bob");
    alice.p.send_line(&format!("connect {}", bob.addr));
    alice
        .p
        .expect_event("identified", &[("name", Value::from("bob"))]);
    bob.p
        .expect_event("identified", &[("name", Value::from("alice"))]);

    let size: u64 = 1 << 30;
    let big = alice.dir.join("big.bin");
    std::fs::File::create(&big).unwrap().set_len(size).unwrap();
    alice
        .p
        .send_line(&format!("sendfile bob '{}'", big.display()));
    alice.p.expect_json("send started", |v| {
        is_transfer(v, "send", "started", "big.bin")
    });

    let t0 = Instant::now();
    let mut rtts = Vec::new();
    let mut n = 0u64;
    let done = |p: &Proc| {
        p.out.count(|l| {
            l.json.as_ref().is_some_and(|v| {
                is_transfer(v, "recv", "done", "big.bin")
                    || is_transfer(v, "recv", "failed", "big.bin")
            })
        }) > 0
    };
    while !done(&bob.p) && t0.elapsed() < LONG {
        n += 1;
        let start = Instant::now();
        alice.p.send_line(&format!("send bob ping {n}"));
        assert!(chat_from(&bob.p, &format!("ping {n}")), "ping {n} lost");
        bob.p.send_line(&format!("send alice pong {n}"));
        assert!(chat_from(&alice.p, &format!("pong {n}")), "pong {n} lost");
        rtts.push(start.elapsed());
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = t0.elapsed();
    let v = bob.p.expect_json_within(
        "recv done",
        |v| {
            is_transfer(v, "recv", "done", "big.bin") || is_transfer(v, "recv", "failed", "big.bin")
        },
        LONG,
    );
    assert_eq!(v["state"], "done", "{v}");
    let got: &Path = &bob.inbox.join("big.bin");
    assert_eq!(std::fs::metadata(got).unwrap().len(), size);

    rtts.sort();
    assert!(!rtts.is_empty());
    let (p50, p99, max) = (
        percentile(&rtts, 0.50),
        percentile(&rtts, 0.99),
        *rtts.last().unwrap(),
    );
    eprintln!(
        "1 GiB filer to filer in {took:.2?}; chat round trip over {} pings: p50 {p50:.2?}, p99 {p99:.2?}, max {max:.2?}",
        rtts.len()
    );
    if timing_checked() {
        assert!(p99 < Duration::from_millis(50), "p99 {p99:?}");
    }
}

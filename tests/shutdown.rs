//! How `sockmod serve` shuts down, through the real binary on loopback: SIGTERM
//! while a client floods, SIGTERM with output stuck in a queue, and the order
//! of the closed events.
//!
//! Tests print their figures as `figure: NAME = VALUE` lines on stderr; run
//! `cargo test --test shutdown -- --nocapture --test-threads=1` to see them.
//! Process figures come from /proc: VmRSS and VmHWM (peak RSS) from
//! /proc/PID/status, descriptors from /proc/PID/fd, CPU time (utime + stime)
//! from /proc/PID/stat. Speed bounds are checked only with `SOCKMOD_TIMING=1`
//! (see `common::timing_checked`).

mod common;

use common::*;
use sockmod::protocol::Header;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[test]
fn sigterm_while_a_client_floods_exits_zero_promptly() {
    let (mut srv, addr) = serve(&["--body-format", "none"]);
    let mut c = Client::connect(addr);
    srv.expect_connected(&c);
    let sent = Arc::new(AtomicU64::new(0));
    let s2 = sent.clone();
    let mut w = c.stream.try_clone().unwrap();
    let flooder = std::thread::spawn(move || {
        let f = frame(&Header::new().with("info", "flood"), &vec![1u8; 64 << 10]);
        let small = frame(&Header::new().with("info", "x"), b"");
        loop {
            let r = w.write_all(&f).and_then(|_| w.write_all(&small));
            if r.is_err() {
                break;
            }
            s2.fetch_add((f.len() + small.len()) as u64, Ordering::SeqCst);
        }
    });
    assert!(wait_until(TIMEOUT, || sent.load(Ordering::SeqCst) > 32 << 20));
    // One busy peer does not starve the others.
    let (served, _) = good_client_round_trip(&mut srv, addr);
    figure(
        "flooding client: good client served meanwhile",
        format!("{served:?}"),
    );
    // Speed bounds: checked only with SOCKMOD_TIMING=1 (see `timing_checked`).
    if timing_checked() {
        assert!(served < Duration::from_secs(2), "{served:?}");
    }
    let t0 = Instant::now();
    srv.sigterm();
    let code = srv.expect_exit(TIMEOUT);
    let took = t0.elapsed();
    figure(
        "sigterm: bytes flooded before the signal",
        sent.load(Ordering::SeqCst),
    );
    figure(
        "sigterm: exit status / time to exit while flooded",
        format!("{code} / {took:?}"),
    );
    assert_eq!(code, 0);
    if timing_checked() {
        assert!(took < Duration::from_secs(2), "took {took:?}");
    }
    assert!(c.wait_closed(TIMEOUT));
    flooder.join().unwrap();
}

#[test]
fn sigterm_with_a_stuck_queue_exits_within_the_flush_bound() {
    let (mut srv, addr) = serve(&["--quiet"]);
    let sleeper = Client::connect(addr);
    let id = srv.expect_connected(&sleeper);
    // Fill the kernel buffers and leave output queued for a peer that never reads.
    let path = tmp_path("stuck-body");
    std::fs::write(&path, vec![0u8; 8 << 20]).unwrap();
    for _ in 0..4 {
        srv.send_line(&format!("send {id} -f {}", path.display()));
    }
    srv.send_line("list");
    let v = srv.expect_json("list", |v| v["event"] == "list");
    let bytes_out = v["conns"][0]["bytes_out"].as_u64().unwrap_or(0);
    assert!(
        bytes_out < 32 << 20,
        "the peer cannot have taken everything"
    );
    let t0 = Instant::now();
    srv.sigterm();
    let code = srv.expect_exit(TIMEOUT);
    let took = t0.elapsed();
    figure(
        "sigterm with 32 MiB queued to a non-reader: exit status / time",
        format!("{code} / {took:?}"),
    );
    assert_eq!(code, 0);
    // A speed bound: checked only with SOCKMOD_TIMING=1 (see `timing_checked`).
    if timing_checked() {
        assert!(took < Duration::from_secs(3), "took {took:?}");
    }
    let _ = std::fs::remove_file(&path);
}

/// At shutdown the closed events come in id order (they came in hash order).
#[test]
fn shutdown_closes_connections_in_id_order() {
    let (mut srv, addr) = serve(&[]);
    let clients: Vec<Client> = (0..12).map(|_| Client::connect(addr)).collect();
    assert!(
        srv.out.wait_count(
            |l| l.json.as_ref().is_some_and(|v| v["event"] == "connected"),
            clients.len(),
            TIMEOUT
        ) >= clients.len(),
        "{}",
        srv.context()
    );
    srv.send_line("quit");
    assert_eq!(srv.expect_exit(TIMEOUT), 0, "{}", srv.context());
    let closed: Vec<u64> = srv
        .out
        .all()
        .into_iter()
        .filter_map(|l| l.json)
        .filter(|v| v["event"] == "closed")
        .filter_map(|v| v["peer"].as_u64())
        .collect();
    assert_eq!(closed, (1..=12).collect::<Vec<u64>>(), "{}", srv.context());
}

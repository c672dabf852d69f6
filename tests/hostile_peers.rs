//! Hostile and broken peers against `sockmod serve` through the real binary on
//! loopback: stalled and garbage-sending peers, peers that stall until the idle
//! timeout, and thousands of connect/close cycles.
//!
//! Tests print their figures as `figure: NAME = VALUE` lines on stderr; run
//! `cargo test --test hostile_peers -- --nocapture --test-threads=1` to see them.
//! Process figures come from /proc: VmRSS and VmHWM (peak RSS) from
//! /proc/PID/status, descriptors from /proc/PID/fd, CPU time (utime + stime)
//! from /proc/PID/stat. Speed bounds are checked only with `SOCKMOD_TIMING=1`
//! (see `common::timing_checked`).

mod common;

use common::*;
use socket2::Socket;
use sockmod::protocol::Header;
use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn is_event(l: &Line, event: &str) -> bool {
    is_event_line(l, event, &[])
}

#[test]
fn stalled_and_garbage_peers_do_not_delay_a_good_client() {
    raise_own_limit();
    let (mut srv, addr) = serve(&["--body-format", "none"]);
    let pid = srv.pid();
    let fds0 = fd_count(pid);
    let (served0, _) = good_client_round_trip(&mut srv, addr);

    // 500 peers send one byte of a length prefix and stall.
    let mut stalled = Vec::new();
    for _ in 0..500 {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.write_all(&[0x20]).expect("one byte");
        stalled.push(s);
    }
    // 50 peers send random bytes (most are protocol errors, some stall mid-frame).
    let mut garbage = Vec::new();
    for i in 0..50u64 {
        let mut s = TcpStream::connect(addr).expect("connect");
        // Even ones send more than any header can hold (a protocol error is
        // certain), odd ones a few hundred bytes (most stall mid-header).
        let n = if i % 2 == 0 {
            70_000
        } else {
            100 + 97 * i as usize
        };
        let _ = s.write_all(&random_bytes(n, i + 1));
        garbage.push(s);
    }
    let n = srv
        .out
        .wait_count(|l| is_event(l, "connected"), 1 + 550, TIMEOUT);
    assert_eq!(n, 551, "every peer accepted\n{}", srv.context());
    let (served, round_trip) = good_client_round_trip(&mut srv, addr);
    figure(
        "hostile: good client served (message shown), idle server",
        format!("{served0:?}"),
    );
    figure(
        "hostile: good client served with 500 stalled + 50 garbage peers",
        format!("{served:?}"),
    );
    figure(
        "hostile: good client round trip (message + reply via stdin)",
        format!("{round_trip:?}"),
    );
    // A speed bound: checked only with SOCKMOD_TIMING=1 (see `timing_checked`).
    if timing_checked() {
        assert!(
            served < Duration::from_secs(2),
            "good client waited {served:?}"
        );
    }
    // The stalled peers are still held open (no idle timeout set), the server runs.
    assert!(srv.is_running());
    let closed = srv.out.wait_count(|l| is_event(l, "closed"), 25, TIMEOUT);
    figure("hostile: garbage peers closed for protocol errors", closed);
    assert!(closed >= 25, "the 25 long garbage peers must be closed");
    let fds = fd_count(pid);
    figure(
        "hostile: server descriptors before / with 550 peers",
        format!("{fds0} / {fds}"),
    );
    assert!(fds >= fds0 + 500 - closed, "{fds0} -> {fds}");
    let rss = status_kib(pid, "VmRSS");
    figure("hostile: server RSS with 550 peers", format!("{rss} KiB"));
    drop(stalled);
    drop(garbage);
    srv.out.wait_count(|l| is_event(l, "closed"), 552, TIMEOUT);
    assert!(
        wait_until(TIMEOUT, || fd_count(pid) <= fds0),
        "descriptors {} after all left, {fds0} before",
        fd_count(pid)
    );
}

#[test]
fn idle_timeout_closes_stalled_peers_under_load() {
    raise_own_limit();
    let (srv, addr) = serve(&["--idle-timeout", "1s"]);
    let pid = srv.pid();
    let fds0 = fd_count(pid);
    let t0 = Instant::now();
    let mut stalled = Vec::new();
    for _ in 0..200 {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.write_all(&[0x05, 0x00, b'C']).expect("partial header");
        stalled.push(s);
    }
    // One peer that keeps talking is never idle.
    let mut live = Client::connect(addr);
    let n = srv
        .out
        .wait_count(|l| is_event(l, "connected"), 201, TIMEOUT);
    assert_eq!(n, 201);
    let closed = |srv: &Proc| {
        srv.out.count(|l| {
            l.json.as_ref().is_some_and(|v| {
                v["event"] == "closed"
                    && v["reason"]
                        .as_str()
                        .is_some_and(|r| r.starts_with("idle timeout"))
            })
        })
    };
    while closed(&srv) < 200 && t0.elapsed() < TIMEOUT {
        live.send(&Header::new().with("TP", "Check"), b"");
        std::thread::sleep(Duration::from_millis(100));
    }
    let took = t0.elapsed();
    assert_eq!(closed(&srv), 200, "{}", srv.context());
    figure(
        "idle timeout 1s: 200 stalled peers all closed after",
        format!("{took:?}"),
    );
    assert!(
        took >= Duration::from_millis(900),
        "closed too early: {took:?}"
    );
    // A speed bound: checked only with SOCKMOD_TIMING=1 (see `timing_checked`).
    if timing_checked() {
        assert!(took < Duration::from_secs(4), "closed too late: {took:?}");
    }
    for s in &mut stalled {
        assert!(time_to_close(s, Duration::from_secs(1)).is_some());
    }
    live.send_info("still here");
    live.expect_silence(Duration::from_millis(100));
    assert!(!live.is_closed(), "the talking peer was closed");
    let live_addr = live.local_addr().to_string();
    assert!(
        srv.out.count(|l| is_event(l, "closed")
            && l.json
                .as_ref()
                .is_some_and(|v| v["addr"] == live_addr.as_str()))
            == 0
    );
    drop(live);
    assert!(wait_until(TIMEOUT, || fd_count(pid) <= fds0));
}

#[test]
fn connect_close_cycles_leave_no_stray_descriptors() {
    let (srv, addr) = serve(&["--body-format", "none"]);
    let pid = srv.pid();
    let fds0 = fd_count(pid);
    let t0 = Instant::now();
    let mut peak = fds0;
    for i in 0..3000u32 {
        let mut s = TcpStream::connect(addr).expect("connect");
        match i % 4 {
            // Clean close.
            0 => {}
            // Half a frame, then close.
            1 => {
                let _ = s.write_all(&raw_header("CL:10;info:x")[..7]);
            }
            // A whole frame, then close.
            2 => {
                let _ = s.write_all(&frame(&Header::new().with("n", i.to_string()), b"x"));
            }
            // Reset (SO_LINGER 0) with unread data in flight.
            _ => {
                let _ = s.write_all(&raw_header("CL:100;a:b"));
                let sock = Socket::from(s);
                sock.set_linger(Some(Duration::ZERO)).unwrap();
                drop(sock);
                continue;
            }
        }
        drop(s);
        if i % 500 == 0 {
            peak = peak.max(fd_count(pid));
        }
    }
    let n = srv
        .out
        .wait_count(|l| is_event(l, "closed"), 3000, Duration::from_secs(30));
    assert_eq!(n, 3000, "{}", srv.context());
    let took = t0.elapsed();
    assert!(
        wait_until(TIMEOUT, || fd_count(pid) == fds0),
        "descriptors: {fds0} before, {} after",
        fd_count(pid)
    );
    figure(
        "cycles: 3000 connect/close cycles took",
        format!("{took:?}"),
    );
    figure(
        "cycles: server descriptors before / sampled peak / after",
        format!("{fds0} / {peak} / {}", fd_count(pid)),
    );
    assert_eq!(srv.count_events("connected", &[]), 3000);
}

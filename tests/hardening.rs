//! Hostile and broken peers, resource exhaustion and access rules, through the
//! real binary on loopback (issue 6).
//!
//! Each test prints its figures as `figure: NAME = VALUE` lines on stderr; run
//! `cargo test --test hardening -- --nocapture --test-threads=1` to see them.
//! Process figures come from /proc: VmRSS and VmHWM (peak RSS) from
//! /proc/PID/status, descriptors from /proc/PID/fd, CPU time (utime + stime)
//! from /proc/PID/stat.

mod common;

use common::*;
use serde_json::Value;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use sockmod::protocol::{Decoder, Header, encode};
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// Measuring the server process
// ---------------------------------------------------------------------------

fn figure(name: &str, value: impl std::fmt::Display) {
    eprintln!("figure: {name} = {value}");
}

/// CPU time (user + system) of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &s[s.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat(5); `rest` starts at field 3.
    f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime")
}

fn ticks_per_second() -> u64 {
    // SAFETY: sysconf has no memory effects.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as u64 } else { 100 }
}

/// The test process itself opens hundreds of sockets.
fn raise_own_limit() {
    sockmod::net::raise_nofile_limit();
}

fn is_event(l: &Line, event: &str) -> bool {
    is_event_line(l, event, &[])
}

/// Waits until `f()` has not changed for `quiet`; returns the settled value.
fn settle(timeout: Duration, quiet: Duration, mut f: impl FnMut() -> usize) -> usize {
    let deadline = Instant::now() + timeout;
    let mut last = f();
    let mut since = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(20));
        let now = f();
        if now != last {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= quiet || Instant::now() >= deadline {
            return last;
        }
    }
}

// ---------------------------------------------------------------------------
// Raw sockets
// ---------------------------------------------------------------------------

/// Connects to `dst` from source address `src` (e.g. 127.0.0.2).
fn connect_from(src: IpAddr, dst: SocketAddr) -> std::io::Result<TcpStream> {
    let s = Socket::new(Domain::for_address(dst), Type::STREAM, Some(Protocol::TCP))?;
    s.bind(&SockAddr::from(SocketAddr::new(src, 0)))?;
    s.connect_timeout(&SockAddr::from(dst), TIMEOUT)?;
    Ok(s.into())
}

/// Waits for the server to end a raw connection; returns how long it took, or
/// `None` if it is still open after `timeout` (data that arrives is discarded).
fn time_to_close(s: &mut TcpStream, timeout: Duration) -> Option<Duration> {
    let t0 = Instant::now();
    let mut buf = [0u8; 4096];
    while t0.elapsed() < timeout {
        s.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("read timeout");
        match s.read(&mut buf) {
            Ok(0) => return Some(t0.elapsed()),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return Some(t0.elapsed()),
        }
    }
    None
}

/// True when nothing ended the connection within `window`.
fn stays_open(s: &mut TcpStream, window: Duration) -> bool {
    time_to_close(s, window).is_none()
}

fn frame(h: &Header, body: &[u8]) -> Vec<u8> {
    encode(h, body).expect("encode")
}

/// A frame's length prefix and header text, with any `CL` (no body).
fn raw_header(text: &str) -> Vec<u8> {
    raw_frame(text, b"")
}

/// A good client checks in: returns (time until the server showed its message,
/// time until it got the server's reply).
fn good_client_round_trip(srv: &mut Proc, addr: SocketAddr) -> (Duration, Duration) {
    let t0 = Instant::now();
    let mut c = Client::connect(addr);
    c.send_info("good client");
    let me = c.local_addr().to_string();
    let v = srv.expect_json("the good client's message", |v| {
        v["event"] == "message" && v["addr"] == me.as_str()
    });
    let served = t0.elapsed();
    let id = v["peer"].as_u64().expect("peer id");
    srv.send_line(&format!("send {id} reply"));
    assert_eq!(info(&c.expect_frame()), "reply");
    (served, t0.elapsed())
}

// ---------------------------------------------------------------------------
// Hostile peers
// ---------------------------------------------------------------------------

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
    assert!(
        served < Duration::from_secs(2),
        "good client waited {served:?}"
    );
    // The stalled peers are still held open (no idle timeout set), the server runs.
    assert!(srv.is_running());
    let closed = srv
        .out
        .wait_count(|l| is_event(l, "closed"), 25, Duration::from_secs(2));
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
    assert!(took < Duration::from_secs(4), "closed too late: {took:?}");
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
fn oversized_cl_is_refused_before_any_body_is_buffered() {
    let (srv, addr) = serve(&["--max-body", "1MiB", "--body-format", "none"]);
    let pid = srv.pid();
    let hwm0 = status_kib(pid, "VmHWM");
    let rss0 = status_kib(pid, "VmRSS");
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_nodelay(true).unwrap();
    let local = s.local_addr().unwrap().to_string();
    let t0 = Instant::now();
    s.write_all(&raw_header("CL:1000000000;info:huge"))
        .expect("header");
    // Then push up to 64 MiB of body as fast as the server takes it.
    let mut w = s.try_clone().unwrap();
    let pusher = std::thread::spawn(move || {
        let chunk = vec![0x55u8; 1 << 20];
        let mut sent = 0usize;
        while sent < 64 << 20 {
            match w.write(&chunk) {
                Ok(n) => sent += n,
                Err(_) => break,
            }
        }
        sent
    });
    let v = srv.expect_json("closed with the body limit", |v| {
        v["event"] == "closed" && v["addr"] == local.as_str()
    });
    let refused_after = t0.elapsed();
    let reason = v["reason"].as_str().unwrap_or_default().to_string();
    assert!(
        reason.contains("1000000000 bytes is larger than the limit (1048576 bytes)"),
        "{reason}"
    );
    assert!(time_to_close(&mut s, TIMEOUT).is_some());
    let pushed = pusher.join().unwrap();
    let hwm1 = status_kib(pid, "VmHWM");
    let rss1 = status_kib(pid, "VmRSS");
    figure(
        "max-body: declared CL 1e9 over 1 MiB refused after",
        format!("{refused_after:?}"),
    );
    figure(
        "max-body: body bytes the client got written before the reset",
        pushed,
    );
    figure(
        "max-body: server RSS before / after",
        format!("{rss0} / {rss1} KiB"),
    );
    figure(
        "max-body: server peak RSS (VmHWM) before / after",
        format!("{hwm0} / {hwm1} KiB"),
    );
    assert!(
        hwm1 < hwm0 + 1024,
        "peak RSS grew {} KiB on a refused body",
        hwm1 - hwm0
    );
    assert_eq!(srv.count_events("message", &[]), 0);

    // Control: a body under the limit IS buffered, and the same measure sees it.
    let (srv2, addr2) = serve(&["--max-body", "64MiB", "--body-format", "none"]);
    let pid2 = srv2.pid();
    let hwm0 = status_kib(pid2, "VmHWM");
    let mut c = Client::connect(addr2);
    c.send(&Header::new().with("info", "big"), &vec![7u8; 32 << 20]);
    srv2.expect_event("message", &[("body_len", Value::from(32u64 << 20))]);
    let hwm1 = status_kib(pid2, "VmHWM");
    figure(
        "max-body control: peak RSS growth for a 32 MiB body under the limit",
        format!("{} KiB", hwm1 - hwm0),
    );
    assert!(hwm1 >= hwm0 + 30 * 1024, "the control did not register");
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

/// `sockmod serve` with the open-files limit at `n` (soft and hard, so the
/// server's raise-to-hard cannot lift it).
fn serve_with_nofile(n: u64, extra: &[&str]) -> (Proc, SocketAddr) {
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--bind", "127.0.0.1:0", "--json"]);
    cmd.args(extra);
    // SAFETY: setrlimit is async-signal-safe; the closure touches only a local.
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: n,
                rlim_max: n,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let p = Proc::spawn_cmd(cmd);
    let a = p.listening_addr();
    (p, a)
}

#[test]
fn descriptor_exhaustion_pauses_accepting_without_spinning() {
    raise_own_limit();
    let (mut srv, addr) = serve_with_nofile(64, &["--body-format", "none"]);
    let pid = srv.pid();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .to_string();
    assert!(
        line.split_whitespace().filter(|w| *w == "64").count() == 2,
        "{line}"
    );
    let fds0 = fd_count(pid);

    // 150 clients connect; the kernel completes every handshake (listen backlog),
    // the server can take only what its descriptors allow.
    let mut clients: Vec<TcpStream> = (0..150)
        .map(|_| TcpStream::connect_timeout(&addr, TIMEOUT).expect("connect"))
        .collect();
    srv.expect_err_line("the accept pause notice", |l| {
        l.starts_with("cannot accept on") && l.contains("too many open files")
    });
    let accepted = settle(TIMEOUT, Duration::from_millis(500), || {
        srv.count_events("connected", &[])
    });
    let fds_full = fd_count(pid);
    figure(
        "nofile 64: descriptors at start / when stuck",
        format!("{fds0} / {fds_full}"),
    );
    figure("nofile 64: clients accepted of 150", accepted);
    assert!((40..64).contains(&accepted), "accepted {accepted}");
    assert!(srv.is_running());

    // Stuck: 150 - accepted connections wait in the backlog. The loop must idle.
    let tps = ticks_per_second();
    let c0 = cpu_ticks(pid);
    let window = Duration::from_millis(1500);
    std::thread::sleep(window);
    let used = cpu_ticks(pid) - c0;
    let cpu = used as f64 / tps as f64 / window.as_secs_f64();
    figure(
        "nofile 64: server CPU while stuck (1.5 s window)",
        format!("{used} ticks at {tps}/s = {:.1}%", cpu * 100.0),
    );
    assert!(
        cpu < 0.10,
        "the server spins while it cannot accept: {cpu:.2}"
    );
    // One notice for the pause, not one per retry.
    let notices = srv.err.count(|l| l.text.starts_with("cannot accept on"));
    figure("nofile 64: accept-pause notices", notices);
    assert_eq!(notices, 1);

    // 20 accepted clients leave. No new connection arrives, so no new listener
    // readiness event comes: the pending ones must still be taken.
    let accepted_addrs: Vec<String> = srv
        .out
        .all()
        .iter()
        .filter(|l| is_event(l, "connected"))
        .filter_map(|l| l.json.as_ref()?["addr"].as_str().map(String::from))
        .collect();
    let t_leave = Instant::now();
    let mut left = 0;
    clients.retain(|c| {
        let a = c.local_addr().unwrap().to_string();
        if left < 20 && accepted_addrs.contains(&a) {
            left += 1;
            false
        } else {
            true
        }
    });
    assert_eq!(left, 20);
    let n = srv
        .out
        .wait_count(|l| is_event(l, "connected"), accepted + 20, TIMEOUT);
    figure(
        "nofile 64: after 20 left, pending clients taken within",
        format!("{:?}", t_leave.elapsed()),
    );
    assert_eq!(
        n,
        accepted + 20,
        "pending connections not accepted\n{}",
        srv.context()
    );

    // Still at the limit with clients waiting: no new notice for that.
    assert_eq!(srv.err.count(|l| l.text.starts_with("cannot accept on")), 1);
    // Everyone leaves; every pending connection is eventually taken and closed.
    drop(clients);
    let closed = srv
        .out
        .wait_count(|l| is_event(l, "closed"), 150, Duration::from_secs(20));
    assert_eq!(closed, 150, "{}", srv.context());
    assert_eq!(srv.count_events("connected", &[]), 150);
    srv.expect_err_line("the recovery notice", |l| {
        l.starts_with("accepting again on")
    });
    // A new client is served.
    let (served, _) = good_client_round_trip(&mut srv, addr);
    figure(
        "nofile 64: new client served after the others left",
        format!("{served:?}"),
    );
    assert!(
        wait_until(TIMEOUT, || fd_count(pid) == fds0),
        "descriptors {} at the end, {fds0} at start",
        fd_count(pid)
    );
    assert!(srv.is_running());
}

#[test]
fn max_conns_closes_exactly_the_extra_connections() {
    raise_own_limit();
    let (srv, addr) = serve(&["--max-conns", "50"]);
    let mut clients: Vec<TcpStream> = (0..60)
        .map(|_| TcpStream::connect(addr).expect("connect"))
        .collect();
    let notices = srv.err.wait_count(
        |l| l.text.starts_with("refused ") && l.text.ends_with("too many connections (max 50)"),
        10,
        TIMEOUT,
    );
    assert_eq!(notices, 10, "{}", srv.context());
    let mut closed = 0;
    let mut slowest = Duration::ZERO;
    let mut open = Vec::new();
    for mut c in clients.drain(..) {
        match time_to_close(&mut c, Duration::from_millis(50)) {
            Some(t) => {
                closed += 1;
                slowest = slowest.max(t);
            }
            None => open.push(c),
        }
    }
    figure("max-conns 50, 60 clients: closed at once", closed);
    assert_eq!(closed, 10);
    assert_eq!(srv.count_events("connected", &[]), 50);
    // The 50 stay open, and the refused ones never counted as connections.
    for c in &mut open {
        assert!(stays_open(c, Duration::from_millis(5)));
    }
    assert_eq!(srv.count_events("closed", &[]), 0);
    // 5 leave: exactly 5 of 6 newcomers get in.
    open.truncate(45);
    srv.out.wait_count(|l| is_event(l, "closed"), 5, TIMEOUT);
    let mut newcomers: Vec<TcpStream> = (0..6)
        .map(|_| TcpStream::connect(addr).expect("connect"))
        .collect();
    srv.err.wait_count(
        |l| l.text.ends_with("too many connections (max 50)"),
        11,
        TIMEOUT,
    );
    let mut refused = 0;
    for c in &mut newcomers {
        if time_to_close(c, Duration::from_millis(300)).is_some() {
            refused += 1;
        }
    }
    assert_eq!(refused, 1);
    assert_eq!(srv.count_events("connected", &[]), 55);
}

// ---------------------------------------------------------------------------
// Slow consumers and shutdown
// ---------------------------------------------------------------------------

#[test]
fn broadcast_flood_drops_only_the_slow_consumer_and_memory_stays_bounded() {
    const BODY: usize = 64 << 10;
    const BATCH: u64 = 32;
    const BATCHES: u64 = 64; // 2048 frames, 128 MiB per reader
    let max_queue_mib = 16u64;
    let body_path = tmp_path("flood-body");
    std::fs::write(&body_path, random_bytes(BODY, 99)).unwrap();
    let mq = format!("{max_queue_mib}MiB");
    // Commands wait while the never-reading client's queue is over 3/4 of
    // --max-queue, until --write-timeout drops it.
    let (mut srv, addr) = serve(&["--max-queue", &mq, "--quiet", "--write-timeout", "2s"]);
    let pid = srv.pid();

    // A never reads.
    let sleeper = Client::connect(addr);
    let a_id = srv.expect_connected(&sleeper);
    // B reads everything, checking the order.
    let reader = Client::connect(addr);
    srv.expect_connected(&reader);
    let got = Arc::new(AtomicU64::new(0));
    let bad = Arc::new(AtomicBool::new(false));
    let (g, b) = (got.clone(), bad.clone());
    let mut rstream = reader.stream.try_clone().unwrap();
    let rthread = std::thread::spawn(move || {
        let mut dec = Decoder::new(1 << 20);
        let mut buf = vec![0u8; 256 << 10];
        let mut msgs = Vec::new();
        rstream
            .set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
        while g.load(Ordering::SeqCst) < BATCH * BATCHES {
            let n = match rstream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            dec.feed(&buf[..n], &mut msgs).expect("valid frames");
            for m in msgs.drain(..) {
                let want = g.load(Ordering::SeqCst);
                if m.header.get("n") != Some(want.to_string().as_str()) || m.body.len() != BODY {
                    b.store(true, Ordering::SeqCst);
                }
                g.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    let hwm0 = status_kib(pid, "VmHWM");
    let t0 = Instant::now();
    let path = body_path.display().to_string();
    for batch in 0..BATCHES {
        let mut lines = String::new();
        for k in 0..BATCH {
            lines.push_str(&format!("bc -H n={} -f {path}\n", batch * BATCH + k));
        }
        srv.write_stdin(lines.as_bytes());
        let want = (batch + 1) * BATCH;
        assert!(
            wait_until(TIMEOUT, || got.load(Ordering::SeqCst) >= want),
            "reader got {} of {want}\n{}",
            got.load(Ordering::SeqCst),
            srv.context()
        );
    }
    let took = t0.elapsed();
    rthread.join().unwrap();
    assert!(
        !bad.load(Ordering::SeqCst),
        "the reader got frames out of order"
    );
    assert_eq!(got.load(Ordering::SeqCst), BATCH * BATCHES);
    let v = srv.expect_event("closed", &[("peer", Value::from(a_id))]);
    let reason = v["reason"].as_str().unwrap_or_default();
    assert!(reason.starts_with("slow consumer"), "{reason}");
    let hwm1 = status_kib(pid, "VmHWM");
    let growth_mib = (hwm1 - hwm0) as f64 / 1024.0;
    figure(
        "flood: 2048 x 64 KiB broadcast to 2 clients took",
        format!("{took:?}"),
    );
    figure("flood: never-reading client closed", reason);
    figure(
        "flood: reader received",
        format!("{} of {} in order", BATCH * BATCHES, BATCH * BATCHES),
    );
    figure(
        "flood: server peak RSS (VmHWM) before / after / growth",
        format!("{hwm0} / {hwm1} KiB / {growth_mib:.1} MiB (--max-queue {mq}, 128 MiB sent)"),
    );
    assert!(
        growth_mib < max_queue_mib as f64 + 12.0,
        "peak RSS grew {growth_mib:.1} MiB with --max-queue {mq}"
    );
    let _ = std::fs::remove_file(&body_path);
}

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
    assert!(served < Duration::from_secs(2), "{served:?}");
    let t0 = Instant::now();
    srv.sigterm();
    let code = srv.expect_exit(Duration::from_secs(5));
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
    assert!(took < Duration::from_secs(2), "took {took:?}");
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
    let code = srv.expect_exit(Duration::from_secs(6));
    let took = t0.elapsed();
    figure(
        "sigterm with 32 MiB queued to a non-reader: exit status / time",
        format!("{code} / {took:?}"),
    );
    assert_eq!(code, 0);
    assert!(took < Duration::from_secs(3), "took {took:?}");
    let _ = std::fs::remove_file(&path);
}

// ---------------------------------------------------------------------------
// Access rules
// ---------------------------------------------------------------------------

const LO1: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
const LO2: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
const LO3: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));
const LO6: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);

/// Connects from `src`; asserts the server admits it (a `connected` event and an
/// answer) — returns the time to be served.
fn expect_admitted(srv: &mut Proc, src: IpAddr, dst: SocketAddr) -> Duration {
    let t0 = Instant::now();
    let mut s = connect_from(src, dst).expect("connect");
    s.write_all(&frame(&Header::new().with("info", "let me in"), b""))
        .unwrap();
    let me = s.local_addr().unwrap().to_string();
    let v = srv.expect_json("the admitted peer's message", |v| {
        v["event"] == "message" && v["addr"] == me.as_str()
    });
    let took = t0.elapsed();
    assert!(stays_open(&mut s, Duration::from_millis(50)));
    srv.send_line(&format!("close {}", v["peer"]));
    took
}

/// Connects from `src`; asserts the server closes it at once with a notice
/// naming the peer and `rule`. Returns the time to close.
fn expect_refused(srv: &Proc, src: IpAddr, dst: SocketAddr, rule: &str) -> Duration {
    let mut s = connect_from(src, dst).expect("connect");
    let me = s.local_addr().unwrap();
    let took = time_to_close(&mut s, Duration::from_secs(2))
        .unwrap_or_else(|| panic!("{me} was not closed\n{}", srv.context()));
    let notice = srv.expect_err_line("the refusal notice", |l| {
        l.starts_with("refused ") && l.contains(&me.port().to_string())
    });
    assert!(
        notice.ends_with(rule),
        "{notice:?} should end with {rule:?}"
    );
    let me_s = me.to_string();
    let mapped = format!("[::ffff:{}]:{}", me.ip(), me.port());
    assert!(
        notice.contains(&me_s) || notice.contains(&mapped),
        "{notice:?} should name {me}"
    );
    assert_eq!(
        srv.out.count(|l| is_event(l, "connected")
            && l.json
                .as_ref()
                .is_some_and(|v| { v["addr"] == me_s.as_str() || v["addr"] == mapped.as_str() })),
        0,
        "a refused peer must not be reported connected"
    );
    took
}

#[test]
fn deny_and_allow_refuse_the_right_ipv4_peers() {
    let (mut srv, addr) = serve(&["--deny", "127.0.0.2"]);
    let t = expect_refused(&srv, LO2, addr, "denied by --deny 127.0.0.2");
    figure("access: denied IPv4 peer closed after", format!("{t:?}"));
    expect_admitted(&mut srv, LO1, addr);
    expect_admitted(&mut srv, LO3, addr);
    drop(srv);

    let (mut srv, addr) = serve(&["--allow", "127.0.0.1"]);
    expect_refused(&srv, LO2, addr, "not in --allow 127.0.0.1");
    expect_admitted(&mut srv, LO1, addr);
    drop(srv);

    // Deny wins over allow.
    let (mut srv, addr) = serve(&["--allow", "127.0.0.0/8", "--deny", "127.0.0.2/32"]);
    expect_refused(&srv, LO2, addr, "denied by --deny 127.0.0.2");
    expect_admitted(&mut srv, LO1, addr);
    expect_admitted(&mut srv, LO3, addr);
    drop(srv);

    // Several rules; a network.
    let (mut srv, addr) = serve(&[
        "--allow",
        "127.0.0.1",
        "--allow",
        "127.0.0.3",
        "--deny",
        "10.0.0.0/8",
    ]);
    expect_refused(&srv, LO2, addr, "not in --allow 127.0.0.1,127.0.0.3");
    expect_admitted(&mut srv, LO3, addr);
}

fn ipv6_loopback() -> bool {
    TcpListener::bind("[::1]:0").is_ok()
}

#[test]
fn deny_and_allow_on_ipv6_loopback_and_dual_stack() {
    if !ipv6_loopback() {
        eprintln!("skipped: this machine has no IPv6 loopback (::1)");
        return;
    }
    let (srv, addr) = spawn_listening(&["serve", "--bind", "[::1]:0", "--json", "--deny", "::1"]);
    let t = expect_refused(&srv, LO6, addr, "denied by --deny ::1");
    figure("access: denied IPv6 peer closed after", format!("{t:?}"));
    drop(srv);
    let (mut srv, addr) =
        spawn_listening(&["serve", "--bind", "[::1]:0", "--json", "--allow", "::1/128"]);
    expect_admitted(&mut srv, LO6, addr);
    drop(srv);
    let (srv, addr) = spawn_listening(&[
        "serve",
        "--bind",
        "[::1]:0",
        "--json",
        "--allow",
        "127.0.0.0/8",
    ]);
    expect_refused(&srv, LO6, addr, "not in --allow 127.0.0.0/8");
    drop(srv);

    // A dual-stack listener sees IPv4 peers as ::ffff:a.b.c.d; IPv4 rules apply.
    let (mut srv, addr) =
        spawn_listening(&["serve", "--bind", "[::]:0", "--json", "--deny", "127.0.0.2"]);
    let v4 = SocketAddr::new(LO1, addr.port());
    let v6 = SocketAddr::new(LO6, addr.port());
    expect_refused(&srv, LO2, v4, "denied by --deny 127.0.0.2");
    expect_admitted(&mut srv, LO1, v4);
    expect_admitted(&mut srv, LO6, v6);
}

#[test]
fn access_rules_work_on_ipserver_and_filer_and_are_refused_by_connect() {
    let (srv, addr) =
        spawn_listening(&["ipserver", "--bind", "127.0.0.1:0", "--allow", "127.0.0.2"]);
    expect_refused(&srv, LO1, addr, "not in --allow 127.0.0.2");
    drop(srv);

    let inbox = tmp_path("access-inbox");
    let ipserver = refused_addr().to_string();
    let (srv, addr) = spawn_listening(&[
        "filer",
        "--id",
        "guard",
        "--bind",
        "127.0.0.1:0",
        "--ipserver",
        &ipserver,
        "--inbox",
        inbox.to_str().unwrap(),
        "--deny",
        "127.0.0.0/8",
    ]);
    expect_refused(&srv, LO1, addr, "denied by --deny 127.0.0.0/8");
    drop(srv);

    // `connect` has no listener: the options are a usage error there.
    let mut p = Proc::spawn(&["connect", "127.0.0.1:1", "--deny", "127.0.0.2"]);
    assert_eq!(p.expect_exit(TIMEOUT), 2);
    // A bad rule is a usage error naming it.
    let mut p = Proc::spawn(&["serve", "--bind", "127.0.0.1:0", "--deny", "10.0.0.0/33"]);
    assert_eq!(p.expect_exit(TIMEOUT), 2);
    assert!(
        p.err
            .texts()
            .iter()
            .any(|l| l.contains("prefix length 33 is over 32")),
        "{}",
        p.context()
    );
}

// ---------------------------------------------------------------------------
// Random command lines
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// Filer
// ---------------------------------------------------------------------------

/// Roster entries `(id, port)` of a `Broadcast` body, sorted.
fn roster_of(body: &[u8]) -> Vec<(String, u16)> {
    let mut v: Vec<(String, u16)> = String::from_utf8_lossy(body)
        .split(';')
        .filter(|s| !s.is_empty())
        .map(|e| {
            let f: Vec<&str> = e.split(',').collect();
            assert_eq!(f.len(), 3, "bad roster entry {e:?}");
            assert_eq!(f[1], "127.0.0.1", "roster IP of {e:?}");
            (f[0].to_string(), f[2].parse().expect("port"))
        })
        .collect();
    v.sort();
    v
}

/// Reads roster frames until one equals `want`; returns how many were read.
fn wait_roster(c: &mut Client, want: &[(String, u16)], timeout: Duration) -> Result<usize, String> {
    let deadline = Instant::now() + timeout;
    let mut n = 0;
    let mut last = Vec::new();
    while Instant::now() < deadline {
        for m in c.read_frames(1, Duration::from_millis(200)) {
            if m.header.contains("Broadcast") {
                n += 1;
                last = roster_of(&m.body);
                if last == want {
                    return Ok(n);
                }
            }
        }
    }
    Err(format!("last roster {last:?}, want {want:?}"))
}

/// A filer reporting to `ipserver` every 100 ms; returns it with its port.
fn filer(id: &str, ipserver: SocketAddr) -> (Proc, u16) {
    let (p, a) = spawn_filer(id, ipserver, "100ms", &[]);
    (p, a.port())
}

/// An ipserver sending the roster every 100 ms, keeping silent peers for a minute.
fn ipserver() -> (Proc, SocketAddr) {
    spawn_ipserver("127.0.0.1:0", "100ms", &["--alive", "60s"])
}

/// A raw peer that reports as `watcher` (port 9), to read the roster with.
fn watcher(ipserver: SocketAddr) -> Client {
    let mut c = Client::connect(ipserver);
    c.send(&Header::new().with("ID", "watcher").with("Port", "9"), b"");
    c
}

fn ipserver_state_events(p: &Proc, state: &str) -> usize {
    p.count_events("ipserver", &[("state", Value::from(state))])
}

#[test]
fn fifty_filer_reconnects_to_the_ipserver_leave_no_stray_descriptors() {
    let (mut ips, ips_addr) = ipserver();
    let (alice, alice_port) = filer("alice", ips_addr);
    let (bob, bob_port) = filer("bob", ips_addr);
    // A raw peer that reports and watches the roster.
    let mut watcher = watcher(ips_addr);
    let want = vec![
        ("alice".to_string(), alice_port),
        ("bob".to_string(), bob_port),
        ("watcher".to_string(), 9),
    ];
    wait_roster(&mut watcher, &want, TIMEOUT).unwrap_or_else(|e| panic!("{e}\n{}", ips.context()));
    // Bob is in alice's address book.
    alice.expect_event("peer_online", &[("id", Value::from("bob"))]);
    let fds = |p: &Proc| fd_count(p.pid());
    let (ips0, alice0, bob0) = (fds(&ips), fds(&alice), fds(&bob));
    let is_report =
        |who: &'static str| move |l: &Line| is_event_line(l, "peer_online", &[("id", who.into())]);

    let t0 = Instant::now();
    for round in 1..=50usize {
        // The ipserver drops both filers; each must notice, reconnect and report.
        ips.send_line("close alice,bob");
        for (who, f) in [("alice", &alice), ("bob", &bob)] {
            let n = f.out.wait_count(
                |l| is_event_line(l, "ipserver", &[("state", "connected".into())]),
                round + 1,
                TIMEOUT,
            );
            assert_eq!(
                n,
                round + 1,
                "{who} did not reconnect in round {round}\n{}",
                f.context()
            );
            let n = ips.out.wait_count(is_report(who), round + 1, TIMEOUT);
            assert_eq!(
                n,
                round + 1,
                "no report from {who} in round {round}\n{}",
                ips.context()
            );
        }
    }
    let took = t0.elapsed();
    assert_eq!(ipserver_state_events(&alice, "lost"), 50);
    assert_eq!(ipserver_state_events(&bob, "lost"), 50);
    // Exactly the three peers, once each, at their listening ports: read the
    // backlog of rosters for a while; the latest ones must be exact.
    let mut rosters = Vec::new();
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        for m in watcher.read_frames(64, Duration::from_millis(100)) {
            if m.header.contains("Broadcast") {
                rosters.push(roster_of(&m.body));
            }
        }
    }
    assert!(rosters.len() >= 3, "{rosters:?}");
    for r in &rosters[rosters.len() - 3..] {
        assert_eq!(r, &want, "{}", ips.context());
    }
    // The filers' address books end with each other online.
    let last_about = |p: &Proc, who: &str| {
        p.out
            .all()
            .iter()
            .rev()
            .filter_map(|l| l.json.clone())
            .find(|v| {
                (v["event"] == "peer_online" || v["event"] == "peer_offline") && v["id"] == who
            })
    };
    assert!(
        wait_until(TIMEOUT, || last_about(&alice, "bob").is_some_and(
            |v| v["event"] == "peer_online" && v["port"] == bob_port
        )),
        "{}",
        alice.context()
    );
    assert!(wait_until(TIMEOUT, || last_about(&bob, "alice")
        .is_some_and(
            |v| v["event"] == "peer_online" && v["port"] == alice_port
        )));
    // No descriptor left behind by 50 reconnects, on either side.
    assert!(
        wait_until(TIMEOUT, || fds(&ips) == ips0
            && fds(&alice) == alice0
            && fds(&bob) == bob0),
        "descriptors ipserver {ips0}->{}, alice {alice0}->{}, bob {bob0}->{}",
        fds(&ips),
        fds(&alice),
        fds(&bob)
    );
    figure(
        "filer: 50 ipserver reconnects of 2 filers took",
        format!("{took:?}"),
    );
    figure(
        "filer: descriptors ipserver / alice / bob (before = after)",
        format!("{ips0} / {alice0} / {bob0}"),
    );
}

#[test]
fn filer_retrying_an_unreachable_ipserver_leaks_nothing_and_says_so_once() {
    let down = refused_addr();
    let (lonely, _) = filer("lonely", down);
    let pid = lonely.pid();
    lonely.expect_err_line("the unreachable notice", |l| {
        l.starts_with("ipserver ") && l.contains("unreachable")
    });
    let fds0 = fd_count(pid);
    let c0 = cpu_ticks(pid);
    let window = Duration::from_secs(2);
    std::thread::sleep(window);
    let fds1 = fd_count(pid);
    let used = cpu_ticks(pid) - c0;
    let notices = lonely.err.count(|l| l.text.contains("unreachable"));
    figure(
        "filer: 2 s of retries every 100 ms to a dead ipserver: descriptors / CPU ticks / notices",
        format!("{fds0} -> {fds1} / {used} / {notices}"),
    );
    assert_eq!(fds0, fds1);
    assert_eq!(notices, 1);
    assert!(used < 20, "{used} ticks in 2 s");
}

#[test]
fn sender_killed_mid_file_leaves_no_descriptors_no_file_and_a_correct_roster() {
    let (ips, ips_addr) = ipserver();
    let (mut alice, alice_port) = filer("alice", ips_addr);
    let bob_inbox = tmp_path("inbox-bob-killed");
    let bob = Proc::spawn_cmd(filer_command(
        "bob",
        &ips_addr.to_string(),
        "100ms",
        &bob_inbox,
        &["--json"],
    ));
    let bob_port = bob.listening_addr().port();
    let mut watcher = watcher(ips_addr);
    let all = vec![
        ("alice".to_string(), alice_port),
        ("bob".to_string(), bob_port),
        ("watcher".to_string(), 9),
    ];
    wait_roster(&mut watcher, &all, TIMEOUT).unwrap_or_else(|e| panic!("{e}\n{}", ips.context()));
    bob.expect_event("peer_online", &[("id", Value::from("alice"))]);
    alice.expect_event("peer_online", &[("id", Value::from("bob"))]);
    let bob_fds0 = fd_count(bob.pid());

    // alice dials bob by name and starts a 64 MiB file; bob is stopped, so she
    // can only fill the socket buffers and is mid-file when she is killed.
    alice.send_line("dial bob");
    alice.expect_event("connected", &[("name", Value::from("bob"))]);
    bob.expect_event("identified", &[("name", Value::from("alice"))]);
    let src = tmp_path("killed-source.bin");
    std::fs::write(&src, random_bytes(64 << 20, 5)).unwrap();
    bob.signal(libc::SIGSTOP);
    alice.send_line(&format!("sendfile bob {}", src.display()));
    alice.expect_json("alice's send started", |v| {
        v["event"] == "transfer" && v["dir"] == "send" && v["state"] == "started"
    });
    // `started` comes before the first chunk is written: wait for a progress
    // report, so bob certainly has part of the file when alice dies.
    alice.expect_json("alice's first progress", |v| {
        v["event"] == "transfer" && v["state"] == "progress" && v["bytes"].as_u64() > Some(0)
    });
    alice.kill();
    bob.signal(libc::SIGCONT);

    let v = bob.expect_json("bob's receive failed", |v| {
        v["event"] == "transfer" && v["dir"] == "recv" && v["state"] == "failed"
    });
    let got = v["bytes"].as_u64().unwrap_or(0);
    assert!(got < 64 << 20, "{v}");
    figure(
        "killed sender: bob received before the failure",
        format!("{got} of {} bytes: {}", 64 << 20, v["reason"]),
    );
    // Nothing that looks like a complete file.
    let name = src.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        wait_until(TIMEOUT, || !dir_entries(&bob_inbox)
            .iter()
            .any(|e| !e.starts_with('.'))),
        "inbox {:?}",
        dir_entries(&bob_inbox)
    );
    assert!(!bob_inbox.join(&name).exists());
    // The roster loses alice at once; bob's address book follows.
    wait_roster(
        &mut watcher,
        &[("bob".to_string(), bob_port), ("watcher".to_string(), 9)],
        TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", ips.context()));
    bob.expect_event("peer_offline", &[("id", Value::from("alice"))]);
    // bob holds no descriptor for the dead connection or the part file.
    assert!(
        wait_until(TIMEOUT, || fd_count(bob.pid()) == bob_fds0),
        "bob's descriptors: {bob_fds0} before, {} after; inbox {:?}",
        fd_count(bob.pid()),
        dir_entries(&bob_inbox)
    );
    figure(
        "killed sender: bob's descriptors before / after",
        format!("{bob_fds0} / {}", fd_count(bob.pid())),
    );
    let _ = std::fs::remove_file(&src);
}
